//! The in-process log: embedded mode's stand-in for Kafka's `readings` topic.
//!
//! Partitioned like the topic (a meter always maps to the same partition, see
//! `MeterId::partition`), ordered within a partition, with offsets, batched reads and
//! commits. Appends are all-or-nothing across partitions and bounded: a full partition
//! refuses the append (`LogError::Full`) so producers slow down instead of the process
//! growing without bound.
//!
//! Durable mode ([`InProcessLog::open_durable`]): every append is first written to the
//! [`Journal`] and fsynced, so a reading acknowledged to a client survives `kill -9`; the
//! memory part holds only records not yet read. A reader positioned before the memory
//! part (replay from a checkpoint after a restart) reads the journal until it catches up.
//! Checkpoints let the journal drop whole segments before the checkpoint offset.

use std::collections::VecDeque;
use std::sync::Arc;

use gridpulse_actors::log::{LocalFuture, LogError, LogRecord, PartitionReader, ReadingSource};
use gridpulse_domain::Reading;
use gridpulse_store::journal::Journal;
use parking_lot::Mutex;
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct PartitionState {
    /// Offset of `records[0]`.
    base_offset: u64,
    records: VecDeque<Reading>,
    closed: bool,
}

#[derive(Debug, Default)]
struct Partition {
    state: Mutex<PartitionState>,
    /// One consumer per partition: `notify_one` keeps a permit, so no wake-up is lost.
    appended: Notify,
}

/// A bounded, partitioned log of readings, in memory or journaled to disk.
#[derive(Debug)]
pub struct InProcessLog {
    partitions: Vec<Arc<Partition>>,
    capacity: usize,
    journal: Option<Arc<Journal>>,
    /// Per partition, the lowest offset another consumer of the journal (the stream
    /// jobs) still needs: the journal is never truncated past it. `u64::MAX`: none.
    floors: Vec<std::sync::atomic::AtomicU64>,
}

impl InProcessLog {
    /// A log of `n_partitions` partitions holding at most `capacity` unconsumed records
    /// each.
    pub fn new(n_partitions: u32, capacity: usize) -> Arc<InProcessLog> {
        Arc::new(InProcessLog {
            partitions: (0..n_partitions.max(1)).map(|_| Arc::default()).collect(),
            capacity: capacity.max(1),
            journal: None,
            floors: (0..n_partitions.max(1))
                .map(|_| std::sync::atomic::AtomicU64::new(u64::MAX))
                .collect(),
        })
    }

    /// A log whose appends are durable in `journal` before they return. Offsets continue
    /// from the journal's; readers can start anywhere the journal still holds.
    pub fn open_durable(journal: Arc<Journal>, capacity: usize) -> Arc<InProcessLog> {
        let partitions = (0..journal.n_partitions())
            .map(|partition| {
                Arc::new(Partition {
                    state: Mutex::new(PartitionState {
                        base_offset: journal.next_offset(partition),
                        records: VecDeque::new(),
                        closed: false,
                    }),
                    appended: Notify::new(),
                })
            })
            .collect();
        let floors = (0..journal.n_partitions())
            .map(|_| std::sync::atomic::AtomicU64::new(u64::MAX))
            .collect();
        Arc::new(InProcessLog {
            partitions,
            capacity: capacity.max(1),
            journal: Some(journal),
            floors,
        })
    }

    /// The journal, in durable mode.
    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.as_ref()
    }

    /// Keeps the journal of `partition` from `offset` on for another consumer (a stream
    /// job reading it with [`Journal::read_from`]); raise it as that consumer commits.
    pub fn hold_from(&self, partition: u32, offset: u64) {
        if let Some(floor) = self.floors.get(partition as usize) {
            floor.store(offset, std::sync::atomic::Ordering::SeqCst);
        }
    }

    /// The offset the next record appended to `partition` will get (`None`: no such
    /// partition): everything appended so far lies before it.
    pub fn end_offset(&self, partition: u32) -> Option<u64> {
        let partition = self.partitions.get(partition as usize)?;
        let state = partition.state.lock();
        Some(state.base_offset + state.records.len() as u64)
    }

    /// Appends readings, each to its meter's partition; all or none.
    pub fn append(&self, readings: &[Reading]) -> Result<(), LogError> {
        if readings.is_empty() {
            return Ok(());
        }
        let n_partitions = self.partitions.len() as u32;
        let mut per_partition = vec![0usize; self.partitions.len()];
        for reading in readings {
            per_partition[reading.meter.partition(n_partitions) as usize] += 1;
        }
        // Lock the partitions involved in index order (no deadlock), check, then append.
        let mut guards = Vec::with_capacity(self.partitions.len());
        for (idx, partition) in self.partitions.iter().enumerate() {
            if per_partition[idx] == 0 {
                guards.push(None);
                continue;
            }
            let state = partition.state.lock();
            if state.closed {
                return Err(LogError::Closed);
            }
            if state.records.len() + per_partition[idx] > self.capacity {
                return Err(LogError::Full {
                    partition: idx as u32,
                    capacity: self.capacity,
                });
            }
            guards.push(Some(state));
        }
        if let Some(journal) = &self.journal {
            // Durable before visible: one journal write and fsync per touched partition.
            let mut groups: Vec<Vec<Reading>> = vec![Vec::new(); self.partitions.len()];
            for reading in readings {
                groups[reading.meter.partition(n_partitions) as usize].push(*reading);
            }
            let batch: Vec<(u32, &[Reading])> = groups
                .iter()
                .enumerate()
                .filter(|(_, group)| !group.is_empty())
                .map(|(idx, group)| (idx as u32, group.as_slice()))
                .collect();
            let assigned = journal
                .append(&batch)
                .map_err(|error| LogError::Backend(error.to_string()))?;
            for (partition, first_offset) in assigned {
                if let Some(state) = guards[partition as usize].as_ref() {
                    let expected = state.base_offset + state.records.len() as u64;
                    if first_offset != expected {
                        return Err(LogError::Backend(format!(
                            "journal partition {partition} assigned offset {first_offset}, memory expected {expected}"
                        )));
                    }
                }
            }
        }
        for reading in readings {
            let idx = reading.meter.partition(n_partitions) as usize;
            if let Some(state) = guards[idx].as_mut() {
                state.records.push_back(*reading);
            }
        }
        drop(guards);
        for (idx, partition) in self.partitions.iter().enumerate() {
            if per_partition[idx] > 0 {
                partition.appended.notify_one();
            }
        }
        Ok(())
    }

    /// Records appended and not yet committed, over all partitions.
    pub fn pending(&self) -> usize {
        self.partitions
            .iter()
            .map(|p| p.state.lock().records.len())
            .sum()
    }

    /// Closes the log: appends fail and readers end once drained.
    pub fn close(&self) {
        for partition in &self.partitions {
            partition.state.lock().closed = true;
            partition.appended.notify_one();
        }
    }
}

impl ReadingSource for InProcessLog {
    fn n_partitions(&self) -> u32 {
        self.partitions.len() as u32
    }

    fn open_partition(&self, partition: u32, from_offset: Option<u64>) -> Box<dyn PartitionReader> {
        let partition = partition % self.partitions.len() as u32;
        let log = Arc::clone(&self.partitions[partition as usize]);
        let base_offset = log.state.lock().base_offset;
        // Without a journal, nothing before the memory part can be read.
        let position = match (&self.journal, from_offset) {
            (Some(_), Some(offset)) => offset.min(base_offset),
            (Some(_), None) => 0,
            (None, _) => base_offset,
        };
        Box::new(InProcessReader {
            log,
            position,
            partition,
            journal: self.journal.clone(),
        })
    }

    fn checkpointed(&self, partition: u32, offset: u64) {
        let floor = self
            .floors
            .get(partition as usize)
            .map_or(u64::MAX, |floor| {
                floor.load(std::sync::atomic::Ordering::SeqCst)
            });
        let offset = offset.min(floor);
        if let Some(journal) = &self.journal
            && let Err(error) = journal.truncate_before(partition, offset)
        {
            tracing::warn!(partition, offset, %error, "could not drop checkpointed journal segments");
        }
    }
}

/// Reads one partition of the in-process log.
#[derive(Debug)]
pub struct InProcessReader {
    log: Arc<Partition>,
    /// Next offset to read.
    position: u64,
    partition: u32,
    journal: Option<Arc<Journal>>,
}

impl PartitionReader for InProcessReader {
    fn next_batch(&mut self, max: usize) -> LocalFuture<'_, Result<Vec<LogRecord>, LogError>> {
        Box::pin(async move {
            // Replay: records before the memory part come from the journal.
            if let Some(journal) = &self.journal {
                let base_offset = self.log.state.lock().base_offset;
                if self.position < base_offset {
                    let limit = max.max(1).min((base_offset - self.position) as usize);
                    let records = journal
                        .read_from(self.partition, self.position, limit)
                        .map_err(|error| LogError::Backend(error.to_string()))?;
                    if let Some((last, _)) = records.last() {
                        self.position = last + 1;
                        return Ok(records
                            .into_iter()
                            .map(|(offset, reading)| LogRecord { offset, reading })
                            .collect());
                    }
                    return Err(LogError::Backend(format!(
                        "journal partition {} has no record at offset {} (expected up to {base_offset})",
                        self.partition, self.position
                    )));
                }
            }
            loop {
                {
                    let state = self.log.state.lock();
                    let start = self.position.saturating_sub(state.base_offset) as usize;
                    if start < state.records.len() {
                        let end = (start + max.max(1)).min(state.records.len());
                        let records = state
                            .records
                            .range(start..end)
                            .zip(self.position..)
                            .map(|(reading, offset)| LogRecord {
                                offset,
                                reading: *reading,
                            })
                            .collect();
                        self.position += (end - start) as u64;
                        return Ok(records);
                    }
                    if state.closed {
                        return Err(LogError::Closed);
                    }
                }
                self.log.appended.notified().await;
            }
        })
    }

    fn commit(&mut self, next_offset: u64) {
        let mut state = self.log.state.lock();
        let n_done = next_offset
            .saturating_sub(state.base_offset)
            .min(state.records.len() as u64);
        state.records.drain(..n_done as usize);
        state.base_offset += n_done;
        // Give back the memory of a burst once it has been consumed.
        if state.records.is_empty() && state.records.capacity() > 65_536 {
            state.records.shrink_to(4096);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridpulse_domain::MeterId;

    fn reading(meter: &str, ts_ms: i64) -> Reading {
        Reading {
            meter: MeterId::new(meter).unwrap(),
            ts_ms,
            voltage: 230.0,
            current: 1.0,
            power_w: 100.0,
            energy_wh: 0.0,
            credit: None,
            seq: None,
            backfill: false,
        }
    }

    /// A checkpoint truncates the journal only as far as a stream job's hold allows.
    #[test]
    fn checkpoints_never_truncate_past_a_hold() {
        use gridpulse_store::journal::{Journal, JournalOptions};
        let dir = std::env::temp_dir().join(format!("gridpulse-hold-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let options = JournalOptions {
            segment_bytes: 256,
            sync: false,
        };
        let journal = Arc::new(Journal::open(&dir, 1, options).unwrap());
        let log = InProcessLog::open_durable(Arc::clone(&journal), 10_000);
        for ts in 0..200 {
            log.append(&[reading("m", ts)]).unwrap();
        }
        log.hold_from(0, 50);
        log.checkpointed(0, 150);
        let first = journal.first_offset(0);
        assert!(
            first <= 50,
            "the hold keeps offset 50 readable: first is {first}"
        );
        assert!(
            first > 0,
            "segments before the hold are dropped: first is {first}"
        );
        assert_eq!(journal.read_from(0, 50, 1).unwrap()[0].0, 50);
        // The job moved on: the next checkpoint may truncate further.
        log.hold_from(0, 150);
        log.checkpointed(0, 150);
        assert!(journal.first_offset(0) > 50, "{}", journal.first_offset(0));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn keeps_per_meter_order_offsets_and_commits() {
        let log = InProcessLog::new(4, 100);
        let readings: Vec<Reading> = (0..40)
            .map(|i| reading(&format!("m{}", i % 5), i))
            .collect();
        log.append(&readings).unwrap();
        let mut seen = Vec::new();
        for partition in 0..4 {
            let mut reader = log.open_partition(partition, None);
            let mut expected_offset = 0;
            while log.partitions[partition as usize]
                .state
                .lock()
                .records
                .len() as u64
                > expected_offset
            {
                let batch = reader.next_batch(3).await.unwrap();
                assert!(batch.len() <= 3);
                for record in &batch {
                    assert_eq!(record.offset, expected_offset);
                    assert_eq!(record.reading.meter.partition(4), partition);
                    expected_offset += 1;
                    seen.push(record.reading);
                }
            }
            reader.commit(expected_offset);
        }
        assert_eq!(log.pending(), 0);
        // Every reading once, and each meter's readings in append order.
        assert_eq!(seen.len(), 40);
        for meter in 0..5 {
            let ts: Vec<i64> = seen
                .iter()
                .filter(|r| r.meter.as_str() == format!("m{meter}"))
                .map(|r| r.ts_ms)
                .collect();
            assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
            assert_eq!(ts.len(), 8);
        }
    }

    #[tokio::test]
    async fn a_full_partition_refuses_the_whole_append() {
        let log = InProcessLog::new(1, 3);
        log.append(&[reading("a", 1), reading("a", 2)]).unwrap();
        assert_eq!(
            log.append(&[reading("b", 1), reading("a", 3)]),
            Err(LogError::Full {
                partition: 0,
                capacity: 3
            })
        );
        assert_eq!(log.pending(), 2);
        let mut reader = log.open_partition(0, None);
        let batch = reader.next_batch(10).await.unwrap();
        reader.commit(batch[1].offset + 1);
        log.append(&[reading("b", 1), reading("a", 3)]).unwrap();
        let batch = reader.next_batch(10).await.unwrap();
        assert_eq!(
            batch.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![2, 3]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn readers_wait_for_appends_and_end_on_close() {
        let log = InProcessLog::new(1, 10);
        let mut reader = log.open_partition(0, None);
        // Partition readers are not `Send` (they run on one arbiter): use a LocalSet.
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let waiter = tokio::task::spawn_local(async move {
                    let first = reader.next_batch(10).await;
                    let second = reader.next_batch(10).await;
                    (first, second)
                });
                tokio::task::yield_now().await;
                log.append(&[reading("a", 1)]).unwrap();
                tokio::task::yield_now().await;
                log.close();
                let (first, second) = waiter.await.unwrap();
                assert_eq!(first.unwrap().len(), 1);
                assert_eq!(second, Err(LogError::Closed));
            })
            .await;
        assert_eq!(log.append(&[reading("a", 2)]), Err(LogError::Closed));
    }
}
