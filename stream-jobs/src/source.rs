//! Where lines come from: partitions of NDJSON lines, each line at an offset.
//!
//! A [`Source`] lists its partitions and opens a [`PartitionReader`] at an offset. The
//! job reads each partition on exactly one worker (`partition % workers`), in offset
//! order. This crate ships an in-memory source (tests, benchmarks) and a file source
//! (one NDJSON file per partition, offset = line number); the binary wires the
//! in-process log and Kafka's `readings` topic behind the same trait.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::Arc;

use gridpulse_domain::Reading;

/// A source could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The partition is not in the source.
    #[error("partition {partition} is not in the source")]
    UnknownPartition {
        /// The partition.
        partition: u32,
    },
    /// Reading failed.
    #[error("partition {partition}: {source}")]
    Io {
        /// The partition.
        partition: u32,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Any other failure of a caller's source.
    #[error("partition {partition}: {message}")]
    Other {
        /// The partition.
        partition: u32,
        /// What went wrong.
        message: String,
    },
}

/// What one read call found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadStatus {
    /// This many lines were handed over (possibly 0 with more to come).
    Lines(usize),
    /// Nothing available now (a live source); the job waits a little and asks again.
    Idle,
    /// The partition has no more lines (a bounded source).
    End,
}

/// One record of a partition: an NDJSON line to parse, or a reading a trusted log already
/// parsed and validated (the in-process log holds `Reading`s; re-encoding them as JSON
/// would only cost time).
#[derive(Debug, Clone, Copy)]
pub enum SourceRecord<'a> {
    /// A line, without its newline: parsed and validated by `gridpulse-domain`.
    Line(&'a [u8]),
    /// A reading validated when it entered the log.
    Reading(&'a Reading),
}

/// Partitions of lines.
pub trait Source: Send + Sync {
    /// The partition ids (the same list on every worker and process).
    fn partitions(&self) -> Vec<u32>;

    /// Opens `partition` so that its next line is the one at `offset`.
    fn open(&self, partition: u32, offset: u64) -> Result<Box<dyn PartitionReader>, SourceError>;
}

/// One partition's records in offset order.
pub trait PartitionReader {
    /// Hands up to `max_records` records to `record(offset, record)`, in offset order.
    fn read(
        &mut self,
        max_records: usize,
        record: &mut dyn FnMut(u64, SourceRecord<'_>),
    ) -> Result<ReadStatus, SourceError>;
}

/// NDJSON held in memory, one buffer per partition; offset = line number.
#[derive(Debug, Clone, Default)]
pub struct MemorySource {
    partitions: Vec<(u32, Arc<Vec<u8>>)>,
}

impl MemorySource {
    /// A source of the given partitions' NDJSON buffers.
    pub fn new(partitions: Vec<(u32, Vec<u8>)>) -> MemorySource {
        MemorySource {
            partitions: partitions
                .into_iter()
                .map(|(partition, bytes)| (partition, Arc::new(bytes)))
                .collect(),
        }
    }

    /// Total bytes held.
    pub fn n_bytes(&self) -> usize {
        self.partitions.iter().map(|(_, bytes)| bytes.len()).sum()
    }
}

impl Source for MemorySource {
    fn partitions(&self) -> Vec<u32> {
        self.partitions
            .iter()
            .map(|(partition, _)| *partition)
            .collect()
    }

    fn open(&self, partition: u32, offset: u64) -> Result<Box<dyn PartitionReader>, SourceError> {
        let bytes = self
            .partitions
            .iter()
            .find(|(id, _)| *id == partition)
            .map(|(_, bytes)| Arc::clone(bytes))
            .ok_or(SourceError::UnknownPartition { partition })?;
        // Skip `offset` lines.
        let mut position = 0;
        let mut next_offset = 0;
        for newline in memchr::memchr_iter(b'\n', &bytes) {
            if next_offset == offset {
                break;
            }
            position = newline + 1;
            next_offset += 1;
        }
        if next_offset < offset {
            position = bytes.len();
        }
        Ok(Box::new(MemoryReader {
            bytes,
            position,
            next_offset: offset,
        }))
    }
}

#[derive(Debug)]
struct MemoryReader {
    bytes: Arc<Vec<u8>>,
    position: usize,
    next_offset: u64,
}

impl PartitionReader for MemoryReader {
    fn read(
        &mut self,
        max_lines: usize,
        record: &mut dyn FnMut(u64, SourceRecord<'_>),
    ) -> Result<ReadStatus, SourceError> {
        let bytes = &self.bytes[..];
        if self.position >= bytes.len() {
            return Ok(ReadStatus::End);
        }
        let mut n_lines = 0;
        while n_lines < max_lines && self.position < bytes.len() {
            let rest = &bytes[self.position..];
            let (text, advance) = match memchr::memchr(b'\n', rest) {
                Some(newline) => (&rest[..newline], newline + 1),
                None => (rest, rest.len()),
            };
            record(self.next_offset, SourceRecord::Line(text));
            self.position += advance;
            self.next_offset += 1;
            n_lines += 1;
        }
        Ok(ReadStatus::Lines(n_lines))
    }
}

/// One NDJSON file per partition; offset = line number (0-based).
#[derive(Debug, Clone, Default)]
pub struct FileSource {
    files: Vec<(u32, PathBuf)>,
}

impl FileSource {
    /// A source of the given partitions' files.
    pub fn new(files: Vec<(u32, PathBuf)>) -> FileSource {
        FileSource { files }
    }
}

impl Source for FileSource {
    fn partitions(&self) -> Vec<u32> {
        self.files.iter().map(|(partition, _)| *partition).collect()
    }

    fn open(&self, partition: u32, offset: u64) -> Result<Box<dyn PartitionReader>, SourceError> {
        let path = self
            .files
            .iter()
            .find(|(id, _)| *id == partition)
            .map(|(_, path)| path.clone())
            .ok_or(SourceError::UnknownPartition { partition })?;
        let io = |source| SourceError::Io { partition, source };
        let mut reader = BufReader::with_capacity(1 << 20, File::open(&path).map_err(io)?);
        let mut buffer = Vec::with_capacity(256);
        let mut next_offset = 0;
        while next_offset < offset {
            buffer.clear();
            if reader.read_until(b'\n', &mut buffer).map_err(io)? == 0 {
                break;
            }
            next_offset += 1;
        }
        Ok(Box::new(FileReader {
            partition,
            reader,
            buffer,
            next_offset: offset,
        }))
    }
}

#[derive(Debug)]
struct FileReader {
    partition: u32,
    reader: BufReader<File>,
    buffer: Vec<u8>,
    next_offset: u64,
}

impl PartitionReader for FileReader {
    fn read(
        &mut self,
        max_lines: usize,
        record: &mut dyn FnMut(u64, SourceRecord<'_>),
    ) -> Result<ReadStatus, SourceError> {
        let mut n_lines = 0;
        while n_lines < max_lines {
            self.buffer.clear();
            let n_bytes = self
                .reader
                .read_until(b'\n', &mut self.buffer)
                .map_err(|source| SourceError::Io {
                    partition: self.partition,
                    source,
                })?;
            if n_bytes == 0 {
                return Ok(if n_lines == 0 {
                    ReadStatus::End
                } else {
                    ReadStatus::Lines(n_lines)
                });
            }
            let text = self.buffer.strip_suffix(b"\n").unwrap_or(&self.buffer);
            record(self.next_offset, SourceRecord::Line(text));
            self.next_offset += 1;
            n_lines += 1;
        }
        Ok(ReadStatus::Lines(n_lines))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(source: &dyn Source, partition: u32, offset: u64) -> Vec<(u64, String)> {
        let mut reader = source.open(partition, offset).unwrap();
        let mut lines = Vec::new();
        for _ in 0..100 {
            let status = reader
                .read(2, &mut |offset, record| {
                    if let SourceRecord::Line(bytes) = record {
                        lines.push((offset, String::from_utf8_lossy(bytes).into_owned()))
                    }
                })
                .unwrap();
            if status == ReadStatus::End {
                break;
            }
        }
        lines
    }

    #[test]
    fn memory_and_file_sources_agree_on_offsets() {
        let text = b"a\nb\n\nd\ne".to_vec();
        let memory = MemorySource::new(vec![(3, text.clone())]);
        let dir = std::env::temp_dir().join(format!("gp-stream-source-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("p3.ndjson");
        std::fs::write(&path, &text).unwrap();
        let file = FileSource::new(vec![(3, path)]);
        let expected: Vec<(u64, String)> = ["a", "b", "", "d", "e"]
            .iter()
            .enumerate()
            .map(|(idx, s)| (idx as u64, (*s).to_owned()))
            .collect();
        assert_eq!(collect(&memory, 3, 0), expected);
        assert_eq!(collect(&file, 3, 0), expected);
        assert_eq!(collect(&memory, 3, 3), expected[3..].to_vec());
        assert_eq!(collect(&file, 3, 3), expected[3..].to_vec());
        assert_eq!(collect(&memory, 3, 9), vec![]);
        assert!(memory.open(4, 0).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
