//! gridpulse benchmarks: drive the real pipeline, print human figures and a closing
//! block of `key=value` lines (always with `cores=`) so runs compare by script.
//!
//! Modes: `embedded` (parse → route → meter actor → alert evaluation → websocket) and
//! `persist` (the same with every reading durably stored; restart time) and `kafka`
//! (the processor on a real broker against a raw consumer) and `rollup` (the hourly
//! rollup stream job on generated NDJSON) and `ws-fanout` (alert fan-out latency to
//! 10,000 websocket clients in a child process) and `dashboard` (the ops page in headless
//! Chromium with 100,000 meters and 100 alert events/s) and `import` (bulk import of a
//! CSV file into the in-process log) and `mqtt` (Mosquitto → bridge → log with QoS 1,
//! against Mosquitto's own rate).
//! Every loop is bounded in count and time, and every server is on loopback.

mod dashboard;
mod embedded;
mod import;
mod kafka;
mod mqtt;
mod payloads;
mod persist;
mod report;
mod rollup;
mod ws_fanout;

use clap::{Parser, Subcommand};

/// The allocator of the `gridpulse` binary, so the figures are the product's.
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Benchmarks of gridpulse.
#[derive(Debug, Parser)]
#[command(name = "load-tests", about)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// The embedded pipeline: throughput, alert latency, memory per meter.
    Embedded(embedded::EmbeddedArgs),
    /// With persistence: durable throughput, bytes on disk per reading, restart time.
    Persist(persist::PersistArgs),
    /// The processor on a real Kafka-protocol broker, against a raw consumer.
    Kafka(kafka::KafkaArgs),
    /// The hourly per-meter rollup stream job on generated NDJSON: readings/s, memory.
    Rollup(rollup::RollupArgs),
    /// The ops dashboard in headless Chromium under many meters and a steady alert rate.
    Dashboard(dashboard::DashboardArgs),
    /// Alert fan-out latency to many websocket clients (filters spread over them).
    WsFanout(ws_fanout::WsFanoutArgs),
    /// Bulk import of generated CSV into the in-process log: rows/s, MB/s.
    Import(import::ImportArgs),
    /// Mosquitto → MQTT bridge → reading log (QoS 1), against Mosquitto alone.
    Mqtt(mqtt::MqttArgs),
    /// The client fleet of `ws-fanout` (started by it as a child process).
    #[command(hide = true)]
    WsFanoutClients(ws_fanout::ClientsArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.mode {
        Mode::Embedded(args) => embedded::run(args),
        Mode::Persist(args) => persist::run(args),
        Mode::Kafka(args) => kafka::run(args),
        Mode::Rollup(args) => rollup::run(args),
        Mode::Dashboard(args) => dashboard::run(args),
        Mode::WsFanout(args) => ws_fanout::run(args),
        Mode::Import(args) => import::run(args),
        Mode::Mqtt(args) => mqtt::run(args),
        Mode::WsFanoutClients(args) => ws_fanout::run_clients(args),
    }
}
