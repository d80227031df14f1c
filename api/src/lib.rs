//! The gridpulse API server and the embedded system it fronts.
//!
//! REST (`/api/...`), the alert websocket (`/ws/alerts`), `/metrics`, `/healthz`,
//! `/readyz` and the live page at `/`, over actix-web; [`embedded`] assembles the whole
//! one-process system used by `gridpulse run`, the tests and the benchmarks.
//!
//! Architecture invariant: `api` is the only crate that knows HTTP; it reaches meters
//! only through `MeterSystem` and the log, never by holding actor state.
//! Architecture invariant: errors map to HTTP statuses in one place (`error.rs`).

pub mod access;
pub mod audit;
pub mod auth;
pub mod embedded;
pub mod error;
pub mod import_cli;
pub mod metrics;
pub mod openapi;
pub mod rollup_recompute;
pub mod rollups;
pub mod routes;
pub mod state;
pub mod ws;

pub use embedded::{EmbeddedConfig, EmbeddedSystem};
