//! Where readings enter gridpulse: the in-process log, the shared accept path, the
//! meter simulator, bulk import of files (`import`), the MQTT bridge for meters
//! (`mqtt`) and the Kafka log (`kafka`).
//!
//! Architecture invariant: every reading is parsed and validated by
//! `gridpulse_domain` before it reaches a log; ingest never talks to actors directly,
//! only through the log — except the MQTT bridge's meter link changes (last wills),
//! which are not readings and reach the meters through the `mqtt::LinkSink` the
//! caller gives (the API's embedded mode wires it to the meter system).

pub mod accept;
pub mod dead_letter;
pub mod import;
pub mod kafka;
pub mod memory_log;
pub mod metrics;
pub mod mqtt;
pub mod simulator;

pub use accept::{IngestError, IngestReport, ReadingLog, ingest, validate_body};
pub use memory_log::InProcessLog;
