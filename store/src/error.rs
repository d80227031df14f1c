//! Store errors: what failed, and where (file, table), never just "io error".

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The embedded engine failed.
    #[error("embedded store at {path}: {message}")]
    Embedded {
        /// The data directory or file concerned.
        path: PathBuf,
        /// What the engine said.
        message: String,
    },
    /// A stored value could not be decoded: corrupt, or written by another version.
    #[error("corrupt {what} in {location}: {message}")]
    Corrupt {
        /// What was being decoded (e.g. "reading", "snapshot").
        what: &'static str,
        /// The file, table or key concerned.
        location: String,
        /// The decoder's complaint.
        message: String,
    },
    /// The data directory was written by an incompatible version of gridpulse.
    #[error(
        "data directory {path} has format version {found}, this gridpulse reads version {expected}: \
         {advice}"
    )]
    IncompatibleVersion {
        /// The data directory.
        path: PathBuf,
        /// Version found on disk.
        found: String,
        /// Version this build reads.
        expected: u32,
        /// What the user should do.
        advice: &'static str,
    },
    /// Plain I/O on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The Scylla cluster or driver failed.
    #[error("scylla: {0}")]
    Scylla(String),
    /// A request the store refuses (bad range, bad cursor).
    #[error("{field}: {reason}")]
    BadRequest {
        /// The offending input.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

impl StoreError {
    /// A value that could not be decoded: what it was, where, and why.
    pub fn corrupt(
        what: &'static str,
        location: impl Into<String>,
        message: impl std::fmt::Display,
    ) -> StoreError {
        StoreError::Corrupt {
            what,
            location: location.into(),
            message: message.to_string(),
        }
    }

    /// Wraps an I/O error with its file.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> StoreError {
        StoreError::Io {
            path: path.into(),
            source,
        }
    }
}
