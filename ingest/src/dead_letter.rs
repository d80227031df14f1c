//! The dead-letter path: payloads that could not become readings, kept with where they
//! came from and why, so nothing a device sent is silently dropped.
//!
//! * Embedded mode: [`DeadLetterFile`], an append-only NDJSON file
//!   `dead-letters.ndjson` in the data directory, fsynced before the messages it holds
//!   are acknowledged, rotated at a size cap to `dead-letters.1.ndjson` (the previous
//!   rotation is replaced, so at most twice the cap is on disk). One line per dead
//!   letter: `{"at_ms","source","topic","code","reason","payload_base64"}`.
//! * Kafka mode: the `readings-dlq` topic, same shape as the consumer's dead letters
//!   (original bytes as the record value; `reason`, `code`, `source`, `mqtt_topic`
//!   headers).
//!
//! Every dead letter is counted in `gridpulse_ingest_dead_letters_total{source,reason}`
//! (reason: the short code, never free text, so the label set stays small).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use parking_lot::Mutex;

use crate::kafka::KafkaConfig;
use crate::kafka::dead_letters::KafkaDeadLetters;
use crate::metrics;

/// File name of the current dead-letter file in the data directory.
pub const DEAD_LETTER_FILE: &str = "dead-letters.ndjson";
/// File name the current file is renamed to when it reaches its cap.
pub const ROTATED_DEAD_LETTER_FILE: &str = "dead-letters.1.ndjson";
/// Default size cap of one dead-letter file, bytes.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 64 << 20;

/// One payload refused as a whole or in part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// When it was refused, Unix ms.
    pub at_ms: i64,
    /// Where it came from (`mqtt`, ...).
    pub source: &'static str,
    /// The topic (MQTT) it arrived on.
    pub topic: String,
    /// Short machine-readable reason (`malformed_json`, `meter_mismatch`, ...).
    pub code: &'static str,
    /// What was wrong, for people (names the field).
    pub reason: String,
    /// The original bytes.
    pub payload: Vec<u8>,
}

#[derive(serde::Serialize)]
struct DeadLetterLine<'a> {
    at_ms: i64,
    source: &'a str,
    topic: &'a str,
    code: &'a str,
    reason: &'a str,
    payload_base64: String,
}

/// Why dead letters could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum DeadLetterError {
    /// The file could not be written or synced.
    #[error("dead-letter file {path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Kafka did not take the record.
    #[error("dead-letter topic: {0}")]
    Kafka(String),
}

#[derive(Debug)]
struct OpenFile {
    file: File,
    bytes: u64,
}

/// The embedded dead-letter file (append-only, fsynced, rotated at a cap).
#[derive(Debug)]
pub struct DeadLetterFile {
    dir: PathBuf,
    max_bytes: u64,
    open: Mutex<Option<OpenFile>>,
}

impl DeadLetterFile {
    /// Dead letters in `dir/dead-letters.ndjson`, rotated once it passes `max_bytes`.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> DeadLetterFile {
        DeadLetterFile {
            dir: dir.into(),
            max_bytes: max_bytes.max(1),
            open: Mutex::new(None),
        }
    }

    /// The current file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(DEAD_LETTER_FILE)
    }

    fn io_error(&self, source: std::io::Error) -> DeadLetterError {
        DeadLetterError::Io {
            path: self.path(),
            source,
        }
    }

    /// Appends `letters` as NDJSON lines and fsyncs (blocking: call off the runtime).
    pub fn write_blocking(&self, letters: &[DeadLetter]) -> Result<(), DeadLetterError> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut text = Vec::with_capacity(letters.len() * 256);
        for letter in letters {
            let line = DeadLetterLine {
                at_ms: letter.at_ms,
                source: letter.source,
                topic: &letter.topic,
                code: letter.code,
                reason: &letter.reason,
                payload_base64: base64::engine::general_purpose::STANDARD.encode(&letter.payload),
            };
            serde_json::to_writer(&mut text, &line)
                .map_err(|error| self.io_error(std::io::Error::other(error)))?;
            text.push(b'\n');
        }
        let mut open = self.open.lock();
        if open
            .as_ref()
            .is_some_and(|file| file.bytes >= self.max_bytes)
        {
            *open = None;
            std::fs::rename(self.path(), self.dir.join(ROTATED_DEAD_LETTER_FILE))
                .map_err(|error| self.io_error(error))?;
        }
        if open.is_none() {
            std::fs::create_dir_all(&self.dir).map_err(|error| self.io_error(error))?;
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path())
                .map_err(|error| self.io_error(error))?;
            let bytes = file.metadata().map_err(|error| self.io_error(error))?.len();
            *open = Some(OpenFile { file, bytes });
        }
        let Some(current) = open.as_mut() else {
            return Ok(());
        };
        current
            .file
            .write_all(&text)
            .and_then(|()| current.file.sync_data())
            .map_err(|error| self.io_error(error))?;
        current.bytes += text.len() as u64;
        Ok(())
    }
}

/// Where dead letters go.
#[derive(Clone)]
pub enum DeadLetterSink {
    /// The embedded file.
    File(Arc<DeadLetterFile>),
    /// The Kafka dead-letter topic (`readings-dlq` unless configured otherwise).
    Kafka(Arc<KafkaDeadLetters>),
    /// Nowhere durable (in-memory mode): counted and logged only.
    LogOnly,
}

impl std::fmt::Debug for DeadLetterSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeadLetterSink::File(file) => f.debug_tuple("File").field(&file.path()).finish(),
            DeadLetterSink::Kafka(kafka) => f.debug_tuple("Kafka").field(&kafka.topic()).finish(),
            DeadLetterSink::LogOnly => f.write_str("LogOnly"),
        }
    }
}

impl DeadLetterSink {
    /// The file sink under `data_dir` with the default cap.
    pub fn file_in(data_dir: &Path) -> DeadLetterSink {
        DeadLetterSink::File(Arc::new(DeadLetterFile::new(
            data_dir,
            DEFAULT_MAX_FILE_BYTES,
        )))
    }

    /// The Kafka sink (`config.dlq_topic`).
    pub fn kafka(config: &KafkaConfig) -> Result<DeadLetterSink, String> {
        Ok(DeadLetterSink::Kafka(Arc::new(KafkaDeadLetters::new(
            config,
        )?)))
    }

    /// Keeps `letters` durably (returns once they are), counting each one.
    pub async fn write(&self, letters: Vec<DeadLetter>) -> Result<(), DeadLetterError> {
        if letters.is_empty() {
            return Ok(());
        }
        for letter in &letters {
            tracing::warn!(
                source = letter.source,
                topic = %letter.topic,
                code = letter.code,
                reason = %letter.reason,
                "dead letter"
            );
        }
        let counts: Vec<(&'static str, &'static str)> =
            letters.iter().map(|l| (l.source, l.code)).collect();
        match self {
            DeadLetterSink::File(file) => {
                let file = Arc::clone(file);
                tokio::task::spawn_blocking(move || file.write_blocking(&letters))
                    .await
                    .map_err(|error| DeadLetterError::Kafka(format!("write task: {error}")))??;
            }
            DeadLetterSink::Kafka(kafka) => {
                kafka
                    .write(&letters)
                    .await
                    .map_err(DeadLetterError::Kafka)?;
            }
            DeadLetterSink::LogOnly => {}
        }
        for (source, code) in counts {
            metrics::record_dead_letter(source, code);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(payload: &[u8]) -> DeadLetter {
        DeadLetter {
            at_ms: 1,
            source: "mqtt",
            topic: "gridpulse/meters/m-1/readings".into(),
            code: "malformed_json",
            reason: "malformed JSON: expected value".into(),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn lines_keep_the_bytes_and_the_file_rotates_at_its_cap() {
        let dir = std::env::temp_dir().join(format!("gp-dlq-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let file = DeadLetterFile::new(&dir, 300);
        file.write_blocking(&[letter(b"\xffnot json")])
            .expect("first write");
        let text = std::fs::read_to_string(file.path()).expect("read");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("one JSON line");
        assert_eq!(line["code"], "malformed_json");
        assert_eq!(line["topic"], "gridpulse/meters/m-1/readings");
        let payload = base64::engine::general_purpose::STANDARD
            .decode(line["payload_base64"].as_str().expect("string"))
            .expect("base64");
        assert_eq!(payload, b"\xffnot json");
        // Past the cap: the next write rotates, the rotated file holds the old lines.
        for _ in 0..3 {
            file.write_blocking(&[letter(b"x")]).expect("write");
        }
        assert!(dir.join(ROTATED_DEAD_LETTER_FILE).exists());
        let current = std::fs::metadata(file.path()).expect("current").len();
        assert!(current < 600, "current file stays near the cap: {current}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
