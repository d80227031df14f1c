//! Numbered event streams with an epoch and a bounded replay ring: what lets a
//! subscriber that lost its connection resume without a gap or a duplicate.
//!
//! Each hub ([`crate::AlertHub`], [`crate::user_events::UserEventHub`]) numbers its
//! events 1, 2, 3, … under its lock and keeps the most recent ones in a
//! [`ReplayRing`]. The numbering is only meaningful within one hub instance, so every
//! ring has an [`epoch`](ReplayRing::epoch): a string distinct per instance (start time
//! and random bits), which a resuming subscriber sends back. Another epoch (a restarted
//! server, another API replica) or a sequence the ring no longer holds is a
//! [`ReplayGap`], never a silent skip.
//!
//! Each event is shared as one `Arc<StreamEvent<T>>` by the ring, the broadcast channel
//! and every subscriber, with a cache for its wire encoding, so a thousand subscribers
//! serialize it once.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// One numbered event of a stream.
#[derive(Debug)]
pub struct StreamEvent<T> {
    /// Position in the stream (monotonic from 1 within the epoch).
    pub seq: u64,
    /// When the hub numbered it, Unix µs (wall clock; for latency measurement only).
    pub published_unix_us: i64,
    /// The event.
    pub event: T,
    /// The encoding subscribers send, made once by the first one that needs it.
    wire: OnceLock<bytestring::ByteString>,
}

impl<T> StreamEvent<T> {
    /// A numbered event stamped now.
    pub fn new(seq: u64, event: T) -> StreamEvent<T> {
        StreamEvent {
            seq,
            published_unix_us: unix_now_us(),
            event,
            wire: OnceLock::new(),
        }
    }

    /// The event's wire encoding: made by `encode` the first time, shared afterwards
    /// (every caller must pass the same encoding).
    pub fn wire(
        &self,
        encode: impl FnOnce(&StreamEvent<T>) -> bytestring::ByteString,
    ) -> &bytestring::ByteString {
        self.wire.get_or_init(|| encode(self))
    }
}

/// Why a resume cannot be served from the ring.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayGap {
    /// The sequence is past the newest event: not a position of this epoch.
    #[error("sequence {requested} is ahead of the stream (last {last})")]
    Ahead {
        /// What the subscriber asked to resume after.
        requested: u64,
        /// The newest sequence.
        last: u64,
    },
    /// Events after the sequence were already dropped from the ring.
    #[error(
        "events after sequence {requested} are no longer kept (the replay ring starts at {oldest})"
    )]
    Evicted {
        /// What the subscriber asked to resume after.
        requested: u64,
        /// The oldest sequence still in the ring.
        oldest: u64,
    },
}

/// The numbering, the epoch and the most recent events of one stream. Not
/// synchronised: the hub holding it locks it.
#[derive(Debug)]
pub struct ReplayRing<T> {
    epoch: Arc<str>,
    last_seq: u64,
    capacity: usize,
    events: VecDeque<Arc<StreamEvent<T>>>,
}

impl<T> ReplayRing<T> {
    /// An empty stream keeping up to `capacity` events for replay, in a fresh epoch.
    pub fn new(capacity: usize) -> ReplayRing<T> {
        ReplayRing {
            epoch: new_epoch(),
            last_seq: 0,
            capacity,
            events: VecDeque::with_capacity(capacity.min(4096)),
        }
    }

    /// This stream's epoch.
    pub fn epoch(&self) -> &Arc<str> {
        &self.epoch
    }

    /// The newest sequence (0 before the first event).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The next sequence number.
    pub fn next_seq(&self) -> u64 {
        self.last_seq + 1
    }

    /// Numbers `event` with the next sequence, keeps it and returns it.
    pub fn push(&mut self, event: T) -> Arc<StreamEvent<T>> {
        self.last_seq += 1;
        let numbered = Arc::new(StreamEvent::new(self.last_seq, event));
        if self.capacity > 0 {
            if self.events.len() == self.capacity {
                self.events.pop_front();
            }
            self.events.push_back(Arc::clone(&numbered));
        }
        numbered
    }

    /// Every kept event after `seq`, oldest first; a gap if the ring does not hold all
    /// of them.
    pub fn after(&self, seq: u64) -> Result<Vec<Arc<StreamEvent<T>>>, ReplayGap> {
        if seq > self.last_seq {
            return Err(ReplayGap::Ahead {
                requested: seq,
                last: self.last_seq,
            });
        }
        if seq == self.last_seq {
            return Ok(Vec::new());
        }
        let oldest = self.events.front().map_or(self.last_seq + 1, |e| e.seq);
        if seq + 1 < oldest {
            return Err(ReplayGap::Evicted {
                requested: seq,
                oldest,
            });
        }
        // The ring holds consecutive sequences: the event after `seq` is at this index.
        let start = usize::try_from(seq + 1 - oldest).unwrap_or(usize::MAX);
        Ok(self.events.range(start..).cloned().collect())
    }
}

/// A string distinct per stream instance: the start time and random bits.
fn new_epoch() -> Arc<str> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    // std's RandomState is seeded from the OS once per thread and varied per instance.
    let random = std::collections::hash_map::RandomState::new().hash_one((
        count,
        std::process::id(),
        unix_now_us(),
    ));
    Arc::from(format!("{:x}-{random:016x}", unix_now_us() / 1000).as_str())
}

/// Now, Unix µs.
pub fn unix_now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_micros()).unwrap_or(i64::MAX)
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn seqs(events: &[Arc<StreamEvent<u32>>]) -> Vec<u64> {
        events.iter().map(|event| event.seq).collect()
    }

    #[test]
    fn replays_what_the_ring_holds_and_names_the_gap_otherwise() {
        let mut ring = ReplayRing::new(3);
        assert!(ring.after(0).unwrap().is_empty());
        for value in 1..=5_u32 {
            assert_eq!(ring.push(value).seq, u64::from(value));
        }
        assert_eq!(seqs(&ring.after(2).unwrap()), [3, 4, 5]);
        assert_eq!(seqs(&ring.after(4).unwrap()), [5]);
        assert!(ring.after(5).unwrap().is_empty());
        assert_eq!(
            ring.after(1).unwrap_err(),
            ReplayGap::Evicted {
                requested: 1,
                oldest: 3
            }
        );
        assert_eq!(
            ring.after(6).unwrap_err(),
            ReplayGap::Ahead {
                requested: 6,
                last: 5
            }
        );
    }

    #[test]
    fn a_ring_without_capacity_resumes_only_at_the_head() {
        let mut ring = ReplayRing::new(0);
        ring.push(1_u32);
        ring.push(2);
        assert!(ring.after(2).unwrap().is_empty());
        assert!(matches!(ring.after(1), Err(ReplayGap::Evicted { .. })));
    }

    #[test]
    fn epochs_differ_per_instance_and_wire_is_encoded_once() {
        let (a, b) = (ReplayRing::<u32>::new(1), ReplayRing::<u32>::new(1));
        assert_ne!(a.epoch(), b.epoch());
        let event = StreamEvent::new(1, 7_u32);
        let mut calls = 0;
        for _ in 0..3 {
            let text = event.wire(|event| {
                calls += 1;
                event.event.to_string().into()
            });
            assert_eq!(text, "7");
        }
        assert_eq!(calls, 1);
    }
}
