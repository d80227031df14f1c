//! The durable, partitioned reading journal of embedded mode: the stand-in for Kafka's
//! `readings` topic.
//!
//! In embedded mode there is no broker to hold readings between "the HTTP client got its
//! 200" and "the meter actors applied them and the store checkpointed". This journal is
//! that broker: a reading is acknowledged only once [`Journal::append`] has written it
//! and `fdatasync`ed its segment, and after a crash (`kill -9` at any point, or power
//! loss) the process replays each partition with [`Journal::read_from`] from its last
//! checkpoint offset, then drops what every checkpoint covers with
//! [`Journal::truncate_before`]. Offsets are per partition, start at 0, and are
//! contiguous for the life of the directory — the same contract as a Kafka partition.
//!
//! # Layout on disk
//!
//! ```text
//! {dir}/FORMAT                            "1\npartitions=8\n": format version, then
//!                                         the partition count the directory was made for
//! {dir}/LOCK                              advisory lock held by the process using it
//! {dir}/0000/00000000000000000000.seg     partition 0, segment whose first offset is 0
//! {dir}/0000/00000000000001048201.seg     partition 0, next segment (first offset 1048201)
//! {dir}/0001/00000000000000000000.seg     partition 1 ...
//! ```
//!
//! A partition is a sequence of segment files named by their first offset (20 digits, so
//! names sort like offsets). Only the last one, the *active* segment, is ever written;
//! a new one is started when the active one has reached
//! [`JournalOptions::segment_bytes`]. Whole segments are the unit of deletion.
//!
//! All integers are little-endian. A segment is a 32-byte header then records:
//!
//! ```text
//! header   0..8   magic "GPJRNSEG"
//!          8..12  format version (u32) = FORMAT_VERSION
//!         12..16  partition (u32)
//!         16..24  first offset (u64), equal to the number in the file name
//!         24..28  reserved, zero
//!         28..32  CRC-32 of bytes 0..28
//! record   0..4   payload length n (u32)
//!          4..8   CRC-32 of bytes 0..4, 8..16 and the payload (length, offset, payload)
//!          8..16  offset (u64)
//!         16..    payload, n bytes
//! payload  u8     flags: bit 0 = credit present, bit 1 = seq present, bit 2 = backfill
//!                 (others zero; journals written before bit 2 existed read unchanged)
//!          u8     meter id length m (1..=47), then the m ASCII bytes of the id
//!          i64    ts_ms
//!          f64 ×4 voltage, current, power_w, energy_wh (IEEE-754 bits)
//!          f64    credit, only if flag bit 0
//!          u64    seq, only if flag bit 1
//! ```
//!
//! The payload is a fixed layout written by hand rather than postcard, so the on-disk
//! format is pinned by this file and [`FORMAT_VERSION`] alone: a serde attribute added to
//! `Reading` for the JSON API (a rename, or a `skip_serializing_if`, which a
//! non-self-describing format cannot read back) can never silently change old journals.
//! A reading with an 8-character meter id takes 66 bytes on disk (16 + 50), plus 8 for
//! each of credit and seq when present.
//!
//! # Durability and recovery
//!
//! [`Journal::append`] writes every record of a call, then syncs each segment it touched
//! once (group commit), and the partition directory when it created a segment, before
//! returning. If anything fails, every partition of the call is rolled back to where it
//! was (file truncated, new segments deleted), so an error means nothing was appended.
//!
//! [`Journal::open`] reads and checks every segment (the CRC of every record):
//!
//! * a *torn tail* in the last segment of a partition — a partial record, or records
//!   failing their checksum with no valid record after them — is what a crash in the
//!   middle of an append leaves; those records were never acknowledged, so the file is
//!   truncated after the last valid record, with a `warn!` naming the file and the number
//!   of bytes cut. A last segment shorter than its header, or all zeros, is a crash while
//!   it was being created and gets a fresh header;
//! * anything else is [`StoreError::Corrupt`], naming the file and the byte position:
//!   a bad header or record in a segment that is not the last, a bad record in the last
//!   segment followed by a valid one, or offsets that are not contiguous (within a
//!   segment or across segment files). Nothing acknowledged is ever dropped silently.
//!
//! One limit: after a *power loss* (not a process crash) on a file system that
//! writes pages back out of order, the un-synced tail of an append can contain a hole
//! followed by intact records. That is reported as corruption rather than guessed at;
//! the error names the byte where the file would have to be cut.
//!
//! To seek without an on-disk index, each segment keeps in memory one (offset, byte
//! position) entry per 64 KiB, built while scanning at open and while appending.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use gridpulse_domain::{MeterId, Reading};

use crate::error::StoreError;

/// Version of the journal's on-disk format, written in `FORMAT` and in every segment
/// header.
pub const FORMAT_VERSION: u32 = 1;

const SEGMENT_MAGIC: [u8; 8] = *b"GPJRNSEG";
const HEADER_LEN: u64 = 32;
const RECORD_HEADER_LEN: u64 = 16;
/// Smallest payload this format can produce: flags, length, a 1-byte id, ts, 4 × f64.
const MIN_PAYLOAD: u32 = 1 + 1 + 1 + 8 + 32;
/// Largest payload this format can produce is 105 bytes; anything above this bound is
/// a torn or corrupt length, not a record.
const MAX_PAYLOAD: u32 = 256;
/// One in-memory seek entry per this many bytes of segment.
const INDEX_INTERVAL: u64 = 64 * 1024;
/// Buffer size for sequential segment reads.
const READ_BUFFER: u64 = 256 * 1024;
/// Encoded records are written to the file in chunks of about this size.
const WRITE_CHUNK: usize = 1024 * 1024;
const FORMAT_FILE: &str = "FORMAT";
const FORMAT_TMP_FILE: &str = "FORMAT.tmp";
const LOCK_FILE: &str = "LOCK";
const SEGMENT_SUFFIX: &str = ".seg";
const VERSION_ADVICE: &str = "move the directory away or run a matching gridpulse version";

/// How a [`Journal`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalOptions {
    /// A new segment file is started once the active one has reached this size
    /// (default 64 MiB). Smaller segments let [`Journal::truncate_before`] free space
    /// sooner; larger ones mean fewer files.
    pub segment_bytes: u64,
    /// `fdatasync` the touched segments before [`Journal::append`] returns (default
    /// `true`). Turning it off keeps crash safety against `kill -9` (the data is in the
    /// page cache) but not against power loss; for tests and throwaway runs.
    pub sync: bool,
}

impl Default for JournalOptions {
    fn default() -> Self {
        JournalOptions {
            segment_bytes: 64 * 1024 * 1024,
            sync: true,
        }
    }
}

/// The durable, partitioned reading log of embedded mode (see the [module
/// documentation](self) for the format and the recovery rules).
///
/// All methods take `&self` and are safe to call from several threads: each partition
/// has its own lock, and an append over several partitions takes their locks in
/// ascending partition order. The I/O is blocking; call it off async runtimes.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    options: JournalOptions,
    partitions: Vec<Mutex<Partition>>,
    /// Held (advisory lock on `LOCK`) for as long as the journal is open.
    _lock: File,
}

impl Journal {
    /// Opens the journal in `dir`, creating the directory and its `FORMAT` file if
    /// needed, and recovers every partition (see the module documentation).
    ///
    /// Fails with [`StoreError::IncompatibleVersion`] if the directory was written by
    /// another format version, with [`StoreError::BadRequest`] (naming the `FORMAT`
    /// file) if it was created for another number of partitions, with
    /// [`StoreError::Corrupt`] if a segment is damaged anywhere but its torn tail, and
    /// with [`StoreError::Io`] on `LOCK` if another `Journal` has the directory open.
    pub fn open(
        dir: &Path,
        n_partitions: u32,
        options: JournalOptions,
    ) -> Result<Journal, StoreError> {
        if n_partitions == 0 {
            return Err(StoreError::BadRequest {
                field: "n_partitions",
                reason: "a journal needs at least one partition".to_owned(),
            });
        }
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let lock = lock_directory(dir)?;
        check_format(dir, n_partitions)?;
        let mut partitions = Vec::with_capacity(n_partitions as usize);
        for id in 0..n_partitions {
            partitions.push(Mutex::new(Partition::open(dir, id)?));
        }
        sync_dir(dir)?;
        let journal = Journal {
            dir: dir.to_path_buf(),
            options,
            partitions,
            _lock: lock,
        };
        tracing::info!(
            dir = %dir.display(),
            partitions = n_partitions,
            bytes = journal.disk_bytes(),
            "journal opened"
        );
        Ok(journal)
    }

    /// The directory this journal lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The number of partitions.
    pub fn n_partitions(&self) -> u32 {
        self.partitions.len() as u32
    }

    /// The offset the next reading appended to `partition` will get (0 for a partition
    /// that does not exist).
    pub fn next_offset(&self, partition: u32) -> u64 {
        self.lock(partition).map_or(0, |p| p.next_offset)
    }

    /// The oldest offset still stored in `partition` (everything before it was removed by
    /// [`Journal::truncate_before`]); equal to [`Journal::next_offset`] when the
    /// partition holds nothing. 0 for a partition that does not exist.
    pub fn first_offset(&self, partition: u32) -> u64 {
        self.lock(partition).map_or(0, |p| p.first_offset())
    }

    /// Total size of all segment files, in bytes.
    pub fn disk_bytes(&self) -> u64 {
        (0..self.n_partitions())
            .filter_map(|id| self.lock(id).ok())
            .map(|p| p.sealed.iter().map(|s| s.len).sum::<u64>() + p.active.len)
            .sum()
    }

    /// Appends readings durably: each `(partition, readings)` entry gets consecutive
    /// offsets in its partition (in input order; a partition may appear in several
    /// entries), every record is written, then each touched segment is synced once
    /// before this returns (with [`JournalOptions::sync`]).
    ///
    /// Returns, for each entry in input order, its partition and the offset of its first
    /// reading (for an empty entry, the offset the next reading would get). On error
    /// nothing of the call was appended.
    pub fn append(&self, batch: &[(u32, &[Reading])]) -> Result<Vec<(u32, u64)>, StoreError> {
        let mut by_partition: BTreeMap<u32, Vec<&[Reading]>> = BTreeMap::new();
        for &(partition, readings) in batch {
            self.check_partition(partition)?;
            by_partition.entry(partition).or_default().push(readings);
        }
        // Ascending partition order (BTreeMap) for every multi-lock: no deadlock.
        let mut guards = Vec::with_capacity(by_partition.len());
        for (&id, chunks) in &by_partition {
            guards.push((self.lock(id)?, chunks.as_slice()));
        }

        let mut next: BTreeMap<u32, u64> =
            guards.iter().map(|(p, _)| (p.id, p.next_offset)).collect();
        let mut firsts = Vec::with_capacity(batch.len());
        for &(partition, readings) in batch {
            let next = next.entry(partition).or_default();
            firsts.push((partition, *next));
            *next += readings.len() as u64;
        }

        let mut marks = Vec::with_capacity(guards.len());
        let mut buf = Vec::new();
        let mut failure = None;
        for (partition, chunks) in &mut guards {
            if let Err(e) = partition.usable() {
                failure = Some(e);
                break;
            }
            marks.push(partition.mark());
            if let Err(e) = partition.write(chunks, self.options.segment_bytes, &mut buf) {
                failure = Some(e);
                break;
            }
        }
        if failure.is_none() && self.options.sync {
            for (partition, _) in &mut guards {
                if let Err(e) = partition.sync() {
                    // After a failed fsync the page cache cannot be trusted: refuse further
                    // appends to this partition until the journal is reopened and rescanned.
                    partition.broken = Some(format!("sync failed: {e}"));
                    failure = Some(e);
                    break;
                }
            }
        }
        match failure {
            None => {
                for (partition, _) in &mut guards {
                    partition.commit();
                }
                Ok(firsts)
            }
            Some(e) => {
                for ((partition, _), mark) in guards.iter_mut().zip(marks) {
                    partition.rollback(mark);
                }
                Err(e)
            }
        }
    }

    /// Reads up to `max` records of `partition` with offset `>= from_offset`, in offset
    /// order. Fewer than `max` (possibly none) means the end of the partition was
    /// reached; callers loop from the last offset + 1.
    ///
    /// Only appended (acknowledged) records are visible. Reading from an offset that
    /// [`Journal::truncate_before`] removed is a [`StoreError::BadRequest`] rather than
    /// a silent skip; [`Journal::first_offset`] says where the partition now starts.
    pub fn read_from(
        &self,
        partition: u32,
        from_offset: u64,
        max: usize,
    ) -> Result<Vec<(u64, Reading)>, StoreError> {
        // A concurrent `truncate_before` may delete a planned file before it is opened:
        // plan again, which then reports the truncation (or reads the new first file).
        let mut attempts = 0;
        loop {
            let plan = self.lock(partition)?.plan_read(from_offset, max)?;
            match read_plan(&plan, from_offset, max) {
                Err(ReadFailure::Vanished(path, e)) => {
                    attempts += 1;
                    if attempts >= 3 {
                        return Err(StoreError::io(path, e));
                    }
                }
                Err(ReadFailure::Store(e)) => return Err(e),
                Ok(records) => return Ok(records),
            }
        }
    }

    /// Deletes the segment files of `partition` whose records all have offsets below
    /// `offset` (never the active segment) and returns how many were deleted. Call it
    /// with the partition's checkpoint offset once every consumer is past it.
    pub fn truncate_before(&self, partition: u32, offset: u64) -> Result<u64, StoreError> {
        let mut p = self.lock(partition)?;
        let mut deleted = 0;
        while let Some(first) = p.sealed.first() {
            let end = p.sealed.get(1).map_or(p.active.base, |s| s.base);
            if end > offset {
                break;
            }
            let path = first.path.clone();
            fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
            p.sealed.remove(0);
            // Make each deletion durable before the next, so a crash can only leave a
            // prefix of them undone, never a hole in the offsets.
            sync_dir(&p.dir)?;
            deleted += 1;
        }
        if deleted > 0 {
            tracing::debug!(
                partition,
                deleted,
                first_offset = p.first_offset(),
                "journal truncated"
            );
        }
        Ok(deleted)
    }

    fn check_partition(&self, partition: u32) -> Result<(), StoreError> {
        if (partition as usize) < self.partitions.len() {
            Ok(())
        } else {
            Err(self.no_such_partition(partition))
        }
    }

    fn no_such_partition(&self, partition: u32) -> StoreError {
        StoreError::BadRequest {
            field: "partition",
            reason: format!(
                "partition {partition} does not exist: the journal at {} has {} partitions",
                self.dir.display(),
                self.partitions.len()
            ),
        }
    }

    fn lock(&self, partition: u32) -> Result<MutexGuard<'_, Partition>, StoreError> {
        let mutex = self
            .partitions
            .get(partition as usize)
            .ok_or_else(|| self.no_such_partition(partition))?;
        Ok(mutex.lock().unwrap_or_else(|poisoned| {
            let mut partition = poisoned.into_inner();
            if partition.broken.is_none() {
                partition.broken =
                    Some("a thread panicked while holding this partition's lock".to_owned());
            }
            partition
        }))
    }
}

/// One segment file, as known in memory.
#[derive(Debug)]
struct Segment {
    /// Offset of its first record (also its file name).
    base: u64,
    path: PathBuf,
    /// Bytes of header and complete, appended records.
    len: u64,
    /// Seek points (offset, byte position), increasing, about one per
    /// [`INDEX_INTERVAL`]; the implicit first one is (`base`, [`HEADER_LEN`]).
    index: Vec<(u64, u64)>,
}

impl Segment {
    /// Where to start reading to find `offset`: the last seek point at or before it.
    fn seek_point(&self, offset: u64) -> (u64, u64) {
        let i = self.index.partition_point(|&(o, _)| o <= offset);
        match i.checked_sub(1).and_then(|i| self.index.get(i)) {
            Some(&point) => point,
            None => (self.base, HEADER_LEN),
        }
    }
}

/// The state of a partition before an append, to roll back to.
#[derive(Debug)]
struct Mark {
    n_sealed: usize,
    active_len: u64,
    index_len: usize,
    next_offset: u64,
}

/// One partition: sealed segments, the active one and its open file.
#[derive(Debug)]
struct Partition {
    id: u32,
    dir: PathBuf,
    /// Full segments, oldest first.
    sealed: Vec<Segment>,
    /// The segment being appended to.
    active: Segment,
    /// The active segment's file, positioned at `active.len`.
    file: File,
    next_offset: u64,
    /// Segments sealed by the append in progress, still to be synced.
    retired: Vec<(PathBuf, File)>,
    /// The append in progress wrote to `file`.
    dirty: bool,
    /// The append in progress created a segment (the directory needs a sync).
    dir_dirty: bool,
    /// Why appends are refused until the journal is reopened, after a failure that left
    /// the files in an unknown state.
    broken: Option<String>,
}

impl Partition {
    /// Opens (creating if needed) and recovers the partition directory.
    fn open(root: &Path, id: u32) -> Result<Partition, StoreError> {
        let dir = root.join(format!("{id:04}"));
        fs::create_dir_all(&dir).map_err(|e| StoreError::io(&dir, e))?;
        let files = list_segments(&dir)?;
        let n_files = files.len();
        let mut segments: Vec<Segment> = Vec::with_capacity(n_files.max(1));
        let mut next_offset = None;
        for (i, (base, path)) in files.into_iter().enumerate() {
            if let Some(expected) = next_offset
                && base != expected
            {
                return Err(corrupt(
                    "journal segment",
                    &path,
                    0,
                    format!(
                        "this segment starts at offset {base} but the previous one ends at offset {expected}: \
                         offsets are not contiguous (a segment file is missing or misnamed)"
                    ),
                ));
            }
            let scan = scan_segment(&path, id, base, i + 1 == n_files)?;
            next_offset = Some(scan.next_offset);
            segments.push(Segment {
                base,
                path,
                len: scan.len,
                index: scan.index,
            });
        }
        let (active, file) = match segments.pop() {
            Some(active) => {
                let mut file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(&active.path)
                    .map_err(|e| StoreError::io(&active.path, e))?;
                file.seek(SeekFrom::Start(active.len))
                    .map_err(|e| StoreError::io(&active.path, e))?;
                (active, file)
            }
            None => {
                let path = segment_path(&dir, 0);
                let file = create_segment(&path, id, 0)?;
                file.sync_data().map_err(|e| StoreError::io(&path, e))?;
                sync_dir(&dir)?;
                let active = Segment {
                    base: 0,
                    path,
                    len: HEADER_LEN,
                    index: Vec::new(),
                };
                (active, file)
            }
        };
        Ok(Partition {
            id,
            dir,
            next_offset: next_offset.unwrap_or(active.base),
            sealed: segments,
            active,
            file,
            retired: Vec::new(),
            dirty: false,
            dir_dirty: false,
            broken: None,
        })
    }

    fn first_offset(&self) -> u64 {
        self.sealed.first().map_or(self.active.base, |s| s.base)
    }

    fn usable(&self) -> Result<(), StoreError> {
        match &self.broken {
            None => Ok(()),
            Some(reason) => Err(StoreError::io(
                &self.dir,
                io::Error::other(format!(
                    "journal partition {} refuses appends after an earlier failure ({reason}); \
                     reopen the journal to recover it",
                    self.id
                )),
            )),
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            n_sealed: self.sealed.len(),
            active_len: self.active.len,
            index_len: self.active.index.len(),
            next_offset: self.next_offset,
        }
    }

    /// Encodes and writes `chunks`, rotating segments as needed (nothing synced yet).
    fn write(
        &mut self,
        chunks: &[&[Reading]],
        segment_bytes: u64,
        buf: &mut Vec<u8>,
    ) -> Result<(), StoreError> {
        buf.clear();
        for reading in chunks.iter().flat_map(|chunk| chunk.iter()) {
            let pos = self.active.len + buf.len() as u64;
            if pos >= segment_bytes && pos > HEADER_LEN {
                self.flush(buf)?;
                self.rotate()?;
            } else if buf.len() >= WRITE_CHUNK {
                self.flush(buf)?;
            }
            let pos = self.active.len + buf.len() as u64;
            let last_point = self.active.index.last().map_or(HEADER_LEN, |&(_, p)| p);
            if pos - last_point >= INDEX_INTERVAL {
                self.active.index.push((self.next_offset, pos));
            }
            encode_record(buf, self.next_offset, reading);
            self.next_offset += 1;
        }
        self.flush(buf)
    }

    fn flush(&mut self, buf: &mut Vec<u8>) -> Result<(), StoreError> {
        if buf.is_empty() {
            return Ok(());
        }
        self.dirty = true;
        self.file
            .write_all(buf)
            .map_err(|e| StoreError::io(&self.active.path, e))?;
        self.active.len += buf.len() as u64;
        buf.clear();
        Ok(())
    }

    /// Seals the active segment and starts a new one at `next_offset`.
    fn rotate(&mut self) -> Result<(), StoreError> {
        let base = self.next_offset;
        let path = segment_path(&self.dir, base);
        let file = create_segment(&path, self.id, base)?;
        let new = Segment {
            base,
            path,
            len: HEADER_LEN,
            index: Vec::new(),
        };
        let old = std::mem::replace(&mut self.active, new);
        let old_file = std::mem::replace(&mut self.file, file);
        self.retired.push((old.path.clone(), old_file));
        self.sealed.push(old);
        self.dirty = true;
        self.dir_dirty = true;
        Ok(())
    }

    /// Syncs every file the append in progress wrote, once each.
    fn sync(&mut self) -> Result<(), StoreError> {
        for (path, file) in &self.retired {
            file.sync_data().map_err(|e| StoreError::io(path, e))?;
        }
        if self.dirty {
            self.file
                .sync_data()
                .map_err(|e| StoreError::io(&self.active.path, e))?;
        }
        if self.dir_dirty {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    fn commit(&mut self) {
        self.retired.clear();
        self.dirty = false;
        self.dir_dirty = false;
    }

    /// Undoes the append in progress: deletes the segments it created and truncates the
    /// segment it was appending to. If that fails too, the partition is marked broken.
    fn rollback(&mut self, mark: Mark) {
        let mut problems = Vec::new();
        while self.sealed.len() > mark.n_sealed {
            let (Some(previous), Some((_, previous_file))) =
                (self.sealed.pop(), self.retired.pop())
            else {
                problems.push("segment bookkeeping out of step".to_owned());
                break;
            };
            let created = std::mem::replace(&mut self.active, previous);
            self.file = previous_file;
            if let Err(e) = fs::remove_file(&created.path) {
                problems.push(format!("removing {}: {e}", created.path.display()));
            }
        }
        self.retired.clear();
        self.active.len = mark.active_len;
        self.active.index.truncate(mark.index_len);
        self.next_offset = mark.next_offset;
        if let Err(e) = self.file.set_len(mark.active_len) {
            problems.push(format!("truncating {}: {e}", self.active.path.display()));
        }
        if let Err(e) = self.file.seek(SeekFrom::Start(mark.active_len)) {
            problems.push(format!("seeking {}: {e}", self.active.path.display()));
        }
        if self.dir_dirty
            && let Err(e) = sync_dir(&self.dir)
        {
            problems.push(e.to_string());
        }
        self.dirty = false;
        self.dir_dirty = false;
        if !problems.is_empty() {
            let reason = format!("rolling back a failed append: {}", problems.join("; "));
            tracing::error!(partition = self.id, %reason, "journal partition unusable until reopened");
            self.broken.get_or_insert(reason);
        }
    }

    /// Which byte ranges of which files hold the records `from_offset..` (at most
    /// about `max` of them); taken under the lock, read without it.
    fn plan_read(&self, from_offset: u64, max: usize) -> Result<ReadPlan, StoreError> {
        if max == 0 || from_offset >= self.next_offset {
            return Ok(ReadPlan {
                parts: Vec::new(),
                records: 0,
            });
        }
        let first = self.first_offset();
        if from_offset < first {
            return Err(StoreError::BadRequest {
                field: "from_offset",
                reason: format!(
                    "offset {from_offset} of journal partition {} was deleted by truncate_before; \
                     the earliest offset kept is {first}",
                    self.id
                ),
            });
        }
        let segments: Vec<&Segment> = self
            .sealed
            .iter()
            .chain(std::iter::once(&self.active))
            .collect();
        // The segment holding `from_offset` is the last one whose base is <= it (there is
        // one: `from_offset >= first`).
        let skip = segments
            .partition_point(|s| s.base <= from_offset)
            .saturating_sub(1);
        let mut plan = Vec::new();
        let mut planned_records = 0u64;
        for (i, segment) in segments.iter().enumerate().skip(skip) {
            let end_offset = segments.get(i + 1).map_or(self.next_offset, |s| s.base);
            let (start_offset, start_pos) = segment.seek_point(from_offset);
            plan.push(PlannedRead {
                path: segment.path.clone(),
                start_pos,
                start_offset,
                end_pos: segment.len,
            });
            planned_records += end_offset.saturating_sub(from_offset.max(segment.base));
            if planned_records >= max as u64 {
                break;
            }
        }
        let records = (self.next_offset - from_offset).min(max as u64) as usize;
        Ok(ReadPlan {
            parts: plan,
            records,
        })
    }
}

/// What [`Journal::read_from`] will read.
#[derive(Debug)]
struct ReadPlan {
    parts: Vec<PlannedRead>,
    /// How many records it will return (at most `max`).
    records: usize,
}

/// A byte range of one segment to read: from a record boundary to the appended end.
#[derive(Debug)]
struct PlannedRead {
    path: PathBuf,
    start_pos: u64,
    start_offset: u64,
    end_pos: u64,
}

#[derive(Debug)]
enum ReadFailure {
    /// A planned file was deleted (by `truncate_before`) before it could be opened.
    Vanished(PathBuf, io::Error),
    Store(StoreError),
}

impl From<StoreError> for ReadFailure {
    fn from(e: StoreError) -> Self {
        ReadFailure::Store(e)
    }
}

/// Reads the planned ranges sequentially, checking every record's CRC and offset.
fn read_plan(
    plan: &ReadPlan,
    from_offset: u64,
    max: usize,
) -> Result<Vec<(u64, Reading)>, ReadFailure> {
    let mut out = Vec::with_capacity(plan.records.min(64 * 1024));
    let mut head = [0u8; RECORD_HEADER_LEN as usize];
    let mut payload = [0u8; MAX_PAYLOAD as usize];
    for part in &plan.parts {
        if out.len() >= max {
            break;
        }
        let mut file = match File::open(&part.path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ReadFailure::Vanished(part.path.clone(), e));
            }
            Err(e) => return Err(StoreError::io(&part.path, e).into()),
        };
        file.seek(SeekFrom::Start(part.start_pos))
            .map_err(|e| StoreError::io(&part.path, e))?;
        let capacity = (part.end_pos - part.start_pos).clamp(4096, READ_BUFFER) as usize;
        let mut reader = BufReader::with_capacity(capacity, file);
        let mut pos = part.start_pos;
        let mut expected = part.start_offset;
        while pos < part.end_pos && out.len() < max {
            let at = |message: String| corrupt("journal record", &part.path, pos, message);
            read_exact_or_corrupt(&mut reader, &mut head, &part.path, pos)?;
            let header = RecordHeader::parse(&head);
            let len = u64::from(header.len);
            if !header.plausible() || pos + RECORD_HEADER_LEN + len > part.end_pos {
                return Err(at(format!("impossible record length {}", header.len)).into());
            }
            let body = payload
                .get_mut(..header.len as usize)
                .ok_or_else(|| at("record too long".into()))?;
            read_exact_or_corrupt(&mut reader, body, &part.path, pos)?;
            if !header.crc_matches(&head, body) {
                return Err(at("checksum mismatch".into()).into());
            }
            if header.offset != expected {
                return Err(at(format!(
                    "offset {} where {expected} was expected",
                    header.offset
                ))
                .into());
            }
            if header.offset >= from_offset {
                let reading = decode_payload(body).map_err(at)?;
                out.push((header.offset, reading));
            }
            pos += RECORD_HEADER_LEN + len;
            expected += 1;
        }
    }
    Ok(out)
}

fn read_exact_or_corrupt(
    reader: &mut impl Read,
    buf: &mut [u8],
    path: &Path,
    pos: u64,
) -> Result<(), StoreError> {
    reader.read_exact(buf).map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            corrupt(
                "journal record",
                path,
                pos,
                "the file ends before its last acknowledged record".to_owned(),
            )
        } else {
            StoreError::io(path, e)
        }
    })
}

/// What scanning a segment at open found.
#[derive(Debug)]
struct Scan {
    len: u64,
    next_offset: u64,
    index: Vec<(u64, u64)>,
}

/// Checks one segment; truncates a torn tail if it is the partition's last.
fn scan_segment(path: &Path, partition: u32, base: u64, last: bool) -> Result<Scan, StoreError> {
    let file = OpenOptions::new()
        .read(true)
        .write(last)
        .open(path)
        .map_err(|e| StoreError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| StoreError::io(path, e))?.len();
    let fresh = Scan {
        len: HEADER_LEN,
        next_offset: base,
        index: Vec::new(),
    };
    if file_len < HEADER_LEN {
        if !last {
            return Err(corrupt(
                "journal segment",
                path,
                0,
                format!(
                    "the file is {file_len} bytes, shorter than the {HEADER_LEN}-byte segment header"
                ),
            ));
        }
        tracing::warn!(
            file = %path.display(),
            cut_bytes = file_len,
            "journal: segment created just before a crash has a torn header; rewriting it"
        );
        rewrite_header(&file, path, partition, base)?;
        return Ok(fresh);
    }

    let mut reader = BufReader::with_capacity(file_len.min(READ_BUFFER) as usize, &file);
    let mut header = [0u8; HEADER_LEN as usize];
    reader
        .read_exact(&mut header)
        .map_err(|e| StoreError::io(path, e))?;
    match check_header(&header, partition, base) {
        Ok(()) => {}
        Err(HeaderProblem::Version(found)) => {
            return Err(StoreError::IncompatibleVersion {
                path: path.to_path_buf(),
                found: found.to_string(),
                expected: FORMAT_VERSION,
                advice: VERSION_ADVICE,
            });
        }
        Err(HeaderProblem::Bad(message)) => {
            drop(reader);
            if last && all_zero(&file, path)? {
                tracing::warn!(
                    file = %path.display(),
                    cut_bytes = file_len,
                    "journal: segment created just before a crash is all zeros; rewriting its header"
                );
                rewrite_header(&file, path, partition, base)?;
                return Ok(fresh);
            }
            return Err(corrupt("journal segment header", path, 0, message));
        }
    }

    let mut pos = HEADER_LEN;
    let mut expected = base;
    let mut index = Vec::new();
    let mut last_point = HEADER_LEN;
    let mut head = [0u8; RECORD_HEADER_LEN as usize];
    let mut payload = [0u8; MAX_PAYLOAD as usize];
    while pos < file_len {
        let problem = match next_record(&mut reader, file_len - pos, &mut head, &mut payload) {
            Err(e) => return Err(StoreError::io(path, e)),
            Ok(Err(problem)) => problem,
            Ok(Ok(record)) => {
                if record.offset != expected {
                    return Err(corrupt(
                        "journal record",
                        path,
                        pos,
                        format!(
                            "offset {} where {expected} was expected: offsets are not contiguous",
                            record.offset
                        ),
                    ));
                }
                if pos - last_point >= INDEX_INTERVAL {
                    index.push((expected, pos));
                    last_point = pos;
                }
                pos += RECORD_HEADER_LEN + u64::from(record.len);
                expected += 1;
                continue;
            }
        };
        // An invalid record at `pos`: a torn tail, or corruption.
        if !last {
            return Err(corrupt(
                "journal record",
                path,
                pos,
                format!("{problem}, in a segment that is not the last of its partition"),
            ));
        }
        drop(reader);
        let rest = read_range(&file, path, pos, file_len)?;
        if let Some((at, offset)) = find_valid_record(&rest, expected) {
            return Err(corrupt(
                "journal record",
                path,
                pos,
                format!(
                    "{problem}, yet a valid record (offset {offset}) follows at byte {}: \
                     this is damage, not a torn write",
                    pos + at as u64
                ),
            ));
        }
        tracing::warn!(
            file = %path.display(),
            at_byte = pos,
            cut_bytes = file_len - pos,
            reason = %problem,
            "journal: truncating the torn tail of a write interrupted by a crash (never acknowledged)"
        );
        file.set_len(pos).map_err(|e| StoreError::io(path, e))?;
        file.sync_all().map_err(|e| StoreError::io(path, e))?;
        return Ok(Scan {
            len: pos,
            next_offset: expected,
            index,
        });
    }
    Ok(Scan {
        len: pos,
        next_offset: expected,
        index,
    })
}

/// Reads the next record from a segment reader with `remaining` bytes left in the
/// file: the record, or why the bytes there are not one.
fn next_record(
    reader: &mut impl Read,
    remaining: u64,
    head: &mut [u8; RECORD_HEADER_LEN as usize],
    payload: &mut [u8; MAX_PAYLOAD as usize],
) -> io::Result<Result<RecordHeader, String>> {
    if remaining < RECORD_HEADER_LEN {
        return Ok(Err(format!(
            "partial record header ({remaining} of {RECORD_HEADER_LEN} bytes)"
        )));
    }
    reader.read_exact(head)?;
    let header = RecordHeader::parse(head);
    if !header.plausible() {
        return Ok(Err(format!("impossible record length {}", header.len)));
    }
    let need = RECORD_HEADER_LEN + u64::from(header.len);
    if need > remaining {
        return Ok(Err(format!(
            "record of {need} bytes runs past the end of the file ({remaining} bytes left)"
        )));
    }
    let Some(body) = payload.get_mut(..header.len as usize) else {
        return Ok(Err(format!("impossible record length {}", header.len)));
    };
    reader.read_exact(body)?;
    if !header.crc_matches(head, body) {
        return Ok(Err("checksum mismatch".to_owned()));
    }
    Ok(Ok(header))
}

/// Looks for a valid record starting anywhere after byte 0 of `bytes` (the rest of a
/// segment from a bad record on) with an offset that could follow `expected`: the
/// position (relative to `bytes`) and offset of the first one found.
fn find_valid_record(bytes: &[u8], expected: u64) -> Option<(usize, u64)> {
    let record_min = (RECORD_HEADER_LEN + u64::from(MIN_PAYLOAD)) as usize;
    let max_records = (bytes.len() / record_min) as u64 + 1;
    for at in 1..bytes.len().saturating_sub(record_min - 1) {
        let Some(head) = bytes.get(at..at + RECORD_HEADER_LEN as usize) else {
            break;
        };
        let header = RecordHeader::parse(head);
        if !header.plausible() || header.offset < expected || header.offset - expected > max_records
        {
            continue;
        }
        let end = at + (RECORD_HEADER_LEN as usize) + header.len as usize;
        let Some(body) = bytes.get(at + RECORD_HEADER_LEN as usize..end) else {
            continue;
        };
        if header.crc_matches(head, body) {
            return Some((at, header.offset));
        }
    }
    None
}

/// The fixed 16 bytes before each record's payload.
#[derive(Debug, Clone, Copy)]
struct RecordHeader {
    len: u32,
    crc: u32,
    offset: u64,
}

impl RecordHeader {
    /// Parses the first 16 bytes of `head` (zeros where it is shorter).
    fn parse(head: &[u8]) -> RecordHeader {
        RecordHeader {
            len: le_u32(head, 0),
            crc: le_u32(head, 4),
            offset: le_u64(head, 8),
        }
    }

    fn plausible(&self) -> bool {
        (MIN_PAYLOAD..=MAX_PAYLOAD).contains(&self.len)
    }

    fn crc_matches(&self, head: &[u8], payload: &[u8]) -> bool {
        match (head.get(0..4), head.get(8..16)) {
            (Some(len), Some(offset)) => record_crc(len, offset, payload) == self.crc,
            _ => false,
        }
    }
}

fn record_crc(len: &[u8], offset: &[u8], payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(len);
    hasher.update(offset);
    hasher.update(payload);
    hasher.finalize()
}

/// Appends one record (header and payload) for `reading` at `offset` to `out`.
fn encode_record(out: &mut Vec<u8>, offset: u64, reading: &Reading) {
    let start = out.len();
    out.extend_from_slice(&[0u8; 8]);
    out.extend_from_slice(&offset.to_le_bytes());
    encode_payload(reading, out);
    let payload_len = (out.len() - start) as u32 - RECORD_HEADER_LEN as u32;
    let len = payload_len.to_le_bytes();
    let crc = record_crc(
        &len,
        &offset.to_le_bytes(),
        out.get(start + 16..).unwrap_or_default(),
    );
    if let Some(slot) = out.get_mut(start..start + 8) {
        slot[..4].copy_from_slice(&len);
        slot[4..].copy_from_slice(&crc.to_le_bytes());
    }
}

/// The payload layout of the module documentation.
fn encode_payload(reading: &Reading, out: &mut Vec<u8>) {
    let meter = reading.meter.as_str().as_bytes();
    let flags = u8::from(reading.credit.is_some())
        | (u8::from(reading.seq.is_some()) << 1)
        | (u8::from(reading.backfill) << 2);
    out.push(flags);
    out.push(meter.len() as u8);
    out.extend_from_slice(meter);
    out.extend_from_slice(&reading.ts_ms.to_le_bytes());
    for value in [
        reading.voltage,
        reading.current,
        reading.power_w,
        reading.energy_wh,
    ] {
        out.extend_from_slice(&value.to_bits().to_le_bytes());
    }
    if let Some(credit) = reading.credit {
        out.extend_from_slice(&credit.to_bits().to_le_bytes());
    }
    if let Some(seq) = reading.seq {
        out.extend_from_slice(&seq.to_le_bytes());
    }
}

fn decode_payload(payload: &[u8]) -> Result<Reading, String> {
    let mut cursor = Cursor {
        bytes: payload,
        at: 0,
    };
    let flags = cursor.u8()?;
    if flags & !0b111 != 0 {
        return Err(format!("unknown payload flags {flags:#04x}"));
    }
    let meter_len = cursor.u8()? as usize;
    let meter_bytes = cursor.take(meter_len)?;
    let meter = std::str::from_utf8(meter_bytes)
        .ok()
        .and_then(|text| MeterId::new(text).ok())
        .ok_or_else(|| "invalid meter id".to_owned())?;
    let ts_ms = cursor.u64()? as i64;
    let voltage = cursor.f64()?;
    let current = cursor.f64()?;
    let power_w = cursor.f64()?;
    let energy_wh = cursor.f64()?;
    let credit = if flags & 1 != 0 {
        Some(cursor.f64()?)
    } else {
        None
    };
    let seq = if flags & 2 != 0 {
        Some(cursor.u64()?)
    } else {
        None
    };
    if cursor.at != payload.len() {
        return Err(format!(
            "{} unexpected bytes after the reading",
            payload.len() - cursor.at
        ));
    }
    Ok(Reading {
        meter,
        ts_ms,
        voltage,
        current,
        power_w,
        energy_wh,
        credit,
        seq,
        backfill: flags & 4 != 0,
    })
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let slice = self
            .bytes
            .get(self.at..self.at.saturating_add(n))
            .ok_or_else(|| "payload too short for a reading".to_owned())?;
        self.at += n;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn u64(&mut self) -> Result<u64, String> {
        Ok(le_u64(self.take(8)?, 0))
    }

    fn f64(&mut self) -> Result<f64, String> {
        Ok(f64::from_bits(self.u64()?))
    }
}

fn le_u32(bytes: &[u8], at: usize) -> u32 {
    let mut raw = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        raw.copy_from_slice(src);
    }
    u32::from_le_bytes(raw)
}

fn le_u64(bytes: &[u8], at: usize) -> u64 {
    let mut raw = [0u8; 8];
    if let Some(src) = bytes.get(at..at + 8) {
        raw.copy_from_slice(src);
    }
    u64::from_le_bytes(raw)
}

fn encode_header(partition: u32, base: u64) -> [u8; HEADER_LEN as usize] {
    let mut header = [0u8; HEADER_LEN as usize];
    header[0..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&partition.to_le_bytes());
    header[16..24].copy_from_slice(&base.to_le_bytes());
    let crc = crc32fast::hash(&header[..28]);
    header[28..32].copy_from_slice(&crc.to_le_bytes());
    header
}

#[derive(Debug)]
enum HeaderProblem {
    /// A segment header of another format version.
    Version(u32),
    Bad(String),
}

fn check_header(
    header: &[u8; HEADER_LEN as usize],
    partition: u32,
    base: u64,
) -> Result<(), HeaderProblem> {
    if header[0..8] != SEGMENT_MAGIC {
        return Err(HeaderProblem::Bad(
            "not a journal segment (bad magic)".to_owned(),
        ));
    }
    let version = le_u32(header, 8);
    if version != FORMAT_VERSION {
        return Err(HeaderProblem::Version(version));
    }
    if crc32fast::hash(&header[..28]) != le_u32(header, 28) {
        return Err(HeaderProblem::Bad(
            "segment header checksum mismatch".to_owned(),
        ));
    }
    let (found_partition, found_base) = (le_u32(header, 12), le_u64(header, 16));
    if found_partition != partition || found_base != base {
        return Err(HeaderProblem::Bad(format!(
            "header says partition {found_partition} from offset {found_base}, \
             but the file is partition {partition}'s segment from offset {base}"
        )));
    }
    Ok(())
}

/// Creates (or empties) a segment file and writes its header; not synced.
fn create_segment(path: &Path, partition: u32, base: u64) -> Result<File, StoreError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| StoreError::io(path, e))?;
    file.write_all(&encode_header(partition, base))
        .map_err(|e| StoreError::io(path, e))?;
    Ok(file)
}

fn rewrite_header(file: &File, path: &Path, partition: u32, base: u64) -> Result<(), StoreError> {
    let mut writer = file;
    file.set_len(0).map_err(|e| StoreError::io(path, e))?;
    writer
        .seek(SeekFrom::Start(0))
        .and_then(|_| writer.write_all(&encode_header(partition, base)))
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io(path, e))
}

fn all_zero(file: &File, path: &Path) -> Result<bool, StoreError> {
    let mut reader = BufReader::new(file);
    reader
        .seek(SeekFrom::Start(0))
        .map_err(|e| StoreError::io(path, e))?;
    let mut chunk = [0u8; 8192];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => return Ok(true),
            Ok(n) => {
                if chunk[..n].iter().any(|&b| b != 0) {
                    return Ok(false);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(StoreError::io(path, e)),
        }
    }
}

fn read_range(file: &File, path: &Path, from: u64, to: u64) -> Result<Vec<u8>, StoreError> {
    let mut reader = file;
    reader
        .seek(SeekFrom::Start(from))
        .map_err(|e| StoreError::io(path, e))?;
    let mut bytes = Vec::with_capacity(to.saturating_sub(from) as usize);
    reader
        .take(to.saturating_sub(from))
        .read_to_end(&mut bytes)
        .map_err(|e| StoreError::io(path, e))?;
    Ok(bytes)
}

fn segment_path(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}{SEGMENT_SUFFIX}"))
}

/// The segment files of a partition directory, by first offset.
fn list_segments(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StoreError> {
    let mut segments = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let entry = entry.map_err(|e| StoreError::io(dir, e))?;
        let name = entry.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SEGMENT_SUFFIX)) else {
            continue;
        };
        let base = stem
            .parse::<u64>()
            .ok()
            .filter(|_| stem.len() == 20)
            .ok_or_else(|| {
                corrupt(
                    "journal segment name",
                    &entry.path(),
                    0,
                    "a segment file must be named by its first offset, 20 digits".to_owned(),
                )
            })?;
        segments.push((base, entry.path()));
    }
    segments.sort_unstable_by_key(|&(base, _)| base);
    Ok(segments)
}

/// Takes the advisory lock on `{dir}/LOCK`, so two processes never append to the same
/// files.
fn lock_directory(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::io(
            &path,
            io::Error::new(
                io::ErrorKind::WouldBlock,
                "the journal is already open (another gridpulse process, or another Journal in this one)",
            ),
        )),
        Err(fs::TryLockError::Error(e)) => Err(StoreError::io(&path, e)),
    }
}

/// Checks `{dir}/FORMAT`, or writes it (atomically) in a new, empty directory.
fn check_format(dir: &Path, n_partitions: u32) -> Result<(), StoreError> {
    let path = dir.join(FORMAT_FILE);
    let text = match fs::read(&path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            ensure_fresh(dir)?;
            return write_format(dir, &path, n_partitions);
        }
        Err(e) => return Err(StoreError::io(&path, e)),
    };
    let mut lines = text.lines();
    let first = lines.next().unwrap_or_default().trim();
    if first.parse::<u32>().ok() != Some(FORMAT_VERSION) {
        let found = if first.is_empty() {
            "<none>".to_owned()
        } else {
            first.chars().take(40).collect()
        };
        return Err(StoreError::IncompatibleVersion {
            path: dir.to_path_buf(),
            found,
            expected: FORMAT_VERSION,
            advice: VERSION_ADVICE,
        });
    }
    let found = lines
        .find_map(|line| line.trim().strip_prefix("partitions="))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .ok_or_else(|| StoreError::Corrupt {
            what: "journal FORMAT file",
            location: path.display().to_string(),
            message: "no `partitions=N` line".to_owned(),
        })?;
    if found != n_partitions {
        return Err(StoreError::BadRequest {
            field: "n_partitions",
            reason: format!(
                "the journal was created with {found} partitions (see {}) but {n_partitions} were asked for; \
                 meters are assigned to partitions by hash, so the count cannot change under existing data: \
                 run with {found} partitions, or move the directory away to start afresh",
                path.display()
            ),
        });
    }
    Ok(())
}

/// A directory without `FORMAT` may only hold what an interrupted creation leaves.
fn ensure_fresh(dir: &Path) -> Result<(), StoreError> {
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io(dir, e))? {
        let name = entry.map_err(|e| StoreError::io(dir, e))?.file_name();
        if name != LOCK_FILE && name != FORMAT_TMP_FILE {
            return Err(StoreError::Corrupt {
                what: "journal directory",
                location: dir.display().to_string(),
                message: format!(
                    "it has no {FORMAT_FILE} file but is not empty (found `{}`): not a gridpulse journal, \
                     or one whose {FORMAT_FILE} file was lost; give the journal an empty or new directory",
                    name.to_string_lossy()
                ),
            });
        }
    }
    Ok(())
}

fn write_format(dir: &Path, path: &Path, n_partitions: u32) -> Result<(), StoreError> {
    let tmp = dir.join(FORMAT_TMP_FILE);
    let mut file = File::create(&tmp).map_err(|e| StoreError::io(&tmp, e))?;
    file.write_all(format!("{FORMAT_VERSION}\npartitions={n_partitions}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| StoreError::io(&tmp, e))?;
    fs::rename(&tmp, path).map_err(|e| StoreError::io(path, e))?;
    sync_dir(dir)
}

/// Makes a directory's entries (created, renamed or deleted files) durable.
fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::io(dir, e))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

fn corrupt(what: &'static str, path: &Path, pos: u64, message: String) -> StoreError {
    StoreError::Corrupt {
        what,
        location: format!("{} at byte {pos}", path.display()),
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fresh directory under the system temp dir, removed on drop.
    struct TestDir(PathBuf);

    impl TestDir {
        fn new(name: &str) -> TestDir {
            static COUNTER: AtomicU32 = AtomicU32::new(0);
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir().join(format!(
                "gridpulse-journal-{name}-{}-{n}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&path);
            TestDir(path)
        }
    }

    impl Drop for TestDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn small() -> JournalOptions {
        JournalOptions {
            segment_bytes: 1024,
            sync: true,
        }
    }

    fn reading(i: u64) -> Reading {
        Reading {
            meter: MeterId::new(&format!("meter-{:02}", i % 17)).unwrap(),
            ts_ms: 1_700_000_000_000 + i as i64 * 1000,
            voltage: 230.0 + (i % 7) as f64 * 0.1,
            current: 1.5 + i as f64 * 0.01,
            power_w: 345.0 + i as f64,
            energy_wh: 1000.0 + i as f64 * 0.1,
            credit: i.is_multiple_of(3).then_some(12.5),
            seq: i.is_multiple_of(2).then_some(i),
            // Every flag combination appears in the round trips.
            backfill: i.is_multiple_of(5),
        }
    }

    fn readings(range: std::ops::Range<u64>) -> Vec<Reading> {
        range.map(reading).collect()
    }

    /// Everything in a partition, read in small pages like a replaying consumer.
    fn read_all(journal: &Journal, partition: u32, from: u64) -> Vec<(u64, Reading)> {
        let mut out = Vec::new();
        let mut next = from;
        loop {
            let page = journal.read_from(partition, next, 7).unwrap();
            let Some(&(last, _)) = page.last() else { break };
            next = last + 1;
            out.extend(page);
        }
        out
    }

    fn segment_files(dir: &Path, partition: u32) -> Vec<PathBuf> {
        list_segments(&dir.join(format!("{partition:04}")))
            .unwrap()
            .into_iter()
            .map(|(_, path)| path)
            .collect()
    }

    fn append_one(journal: &Journal, partition: u32, rs: &[Reading]) -> u64 {
        journal.append(&[(partition, rs)]).unwrap()[0].1
    }

    #[test]
    fn round_trip_across_partitions_and_segment_rotation() {
        let dir = TestDir::new("round-trip");
        let journal = Journal::open(&dir.0, 3, small()).unwrap();
        let (a, b, c) = (readings(0..50), readings(50..53), readings(53..120));
        let firsts = journal.append(&[(0, &a), (2, &b), (1, &c)]).unwrap();
        assert_eq!(firsts, vec![(0, 0), (2, 0), (1, 0)]);
        let firsts = journal.append(&[(2, &a), (0, &b)]).unwrap();
        assert_eq!(firsts, vec![(2, 3), (0, 50)]);

        let expect = |parts: &[&Vec<Reading>]| -> Vec<(u64, Reading)> {
            parts
                .iter()
                .flat_map(|p| p.iter().copied())
                .enumerate()
                .map(|(i, r)| (i as u64, r))
                .collect()
        };
        assert_eq!(read_all(&journal, 0, 0), expect(&[&a, &b]));
        assert_eq!(read_all(&journal, 1, 0), expect(&[&c]));
        assert_eq!(read_all(&journal, 2, 0), expect(&[&b, &a]));
        // Reading from the middle, across a segment boundary, with a large page.
        let middle = journal.read_from(0, 20, 1000).unwrap();
        assert_eq!(middle, expect(&[&a, &b])[20..].to_vec());
        assert!(
            segment_files(&dir.0, 0).len() > 2,
            "small segments must have rotated"
        );
        assert!(journal.disk_bytes() > 0);
        assert_eq!(journal.n_partitions(), 3);
    }

    #[test]
    fn offsets_are_contiguous_per_partition() {
        let dir = TestDir::new("offsets");
        let journal = Journal::open(&dir.0, 2, small()).unwrap();
        let firsts = journal
            .append(&[
                (1, &readings(0..4)),
                (0, &readings(4..6)),
                (1, &[]),
                (1, &readings(6..9)),
            ])
            .unwrap();
        assert_eq!(firsts, vec![(1, 0), (0, 0), (1, 4), (1, 4)]);
        assert_eq!((journal.next_offset(0), journal.next_offset(1)), (2, 7));
        let offsets: Vec<u64> = read_all(&journal, 1, 0)
            .into_iter()
            .map(|(o, _)| o)
            .collect();
        assert_eq!(offsets, (0..7).collect::<Vec<_>>());
        let ts: Vec<i64> = read_all(&journal, 1, 0)
            .into_iter()
            .map(|(_, r)| r.ts_ms)
            .collect();
        let expected: Vec<i64> = [0..4, 6..9]
            .into_iter()
            .flatten()
            .map(|i| reading(i).ts_ms)
            .collect();
        assert_eq!(ts, expected);
        assert!(journal.read_from(1, 7, 10).unwrap().is_empty());
        assert!(journal.read_from(1, 100, 10).unwrap().is_empty());
        assert!(journal.read_from(1, 0, 0).unwrap().is_empty());
        assert_eq!(journal.read_from(1, 2, 3).unwrap().len(), 3);
        assert!(matches!(
            journal.append(&[(2, &readings(0..1))]),
            Err(StoreError::BadRequest {
                field: "partition",
                ..
            })
        ));
        assert!(journal.read_from(5, 0, 1).is_err());
    }

    #[test]
    fn reopen_continues_offsets() {
        let dir = TestDir::new("reopen");
        {
            let journal = Journal::open(&dir.0, 2, small()).unwrap();
            append_one(&journal, 0, &readings(0..30));
            append_one(&journal, 1, &readings(0..3));
        }
        let journal = Journal::open(&dir.0, 2, small()).unwrap();
        assert_eq!((journal.next_offset(0), journal.next_offset(1)), (30, 3));
        assert_eq!(append_one(&journal, 0, &readings(30..40)), 30);
        drop(journal);
        let journal = Journal::open(&dir.0, 2, small()).unwrap();
        let all = read_all(&journal, 0, 0);
        assert_eq!(
            all,
            readings(0..40)
                .into_iter()
                .enumerate()
                .map(|(i, r)| (i as u64, r))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn second_open_of_the_same_directory_is_refused() {
        let dir = TestDir::new("lock");
        let journal = Journal::open(&dir.0, 1, small()).unwrap();
        let err = Journal::open(&dir.0, 1, small()).unwrap_err();
        assert!(err.to_string().contains("LOCK"), "{err}");
        drop(journal);
        Journal::open(&dir.0, 1, small()).unwrap();
    }

    #[test]
    fn torn_tail_is_truncated_and_journal_stays_appendable() {
        let dir = TestDir::new("torn");
        let last_segment = || segment_files(&dir.0, 0).pop().unwrap();
        {
            let journal = Journal::open(&dir.0, 1, JournalOptions::default()).unwrap();
            append_one(&journal, 0, &readings(0..10));
        }
        // A crash mid-append: half a record after the last good one.
        let good_len = fs::metadata(last_segment()).unwrap().len();
        let mut record = Vec::new();
        encode_record(&mut record, 10, &reading(10));
        let mut file = OpenOptions::new()
            .append(true)
            .open(last_segment())
            .unwrap();
        file.write_all(&record[..record.len() / 2]).unwrap();
        drop(file);

        let journal = Journal::open(&dir.0, 1, JournalOptions::default()).unwrap();
        assert_eq!(journal.next_offset(0), 10);
        assert_eq!(fs::metadata(last_segment()).unwrap().len(), good_len);
        assert_eq!(append_one(&journal, 0, &readings(10..12)), 10);
        drop(journal);

        // A crash that cut the file mid-record: the cut record was never acknowledged.
        let len = fs::metadata(last_segment()).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(last_segment())
            .unwrap()
            .set_len(len - 5)
            .unwrap();
        let journal = Journal::open(&dir.0, 1, JournalOptions::default()).unwrap();
        assert_eq!(journal.next_offset(0), 11);
        drop(journal);

        // Garbage (a bad checksum) in the final record.
        let len = fs::metadata(last_segment()).unwrap().len();
        flip_byte(&last_segment(), len - 3);
        let journal = Journal::open(&dir.0, 1, JournalOptions::default()).unwrap();
        assert_eq!(journal.next_offset(0), 10);
        assert_eq!(append_one(&journal, 0, &readings(10..15)), 10);
        drop(journal);

        let journal = Journal::open(&dir.0, 1, JournalOptions::default()).unwrap();
        let all = read_all(&journal, 0, 0);
        assert_eq!(
            all,
            readings(0..15)
                .into_iter()
                .enumerate()
                .map(|(i, r)| (i as u64, r))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn empty_or_header_only_last_segment_is_fine() {
        let dir = TestDir::new("empty-last");
        let partition_dir = dir.0.join("0000");
        drop(Journal::open(&dir.0, 1, small()).unwrap());
        // A fresh partition is one header-only segment.
        assert_eq!(
            segment_files(&dir.0, 0),
            vec![segment_path(&partition_dir, 0)]
        );
        {
            let journal = Journal::open(&dir.0, 1, small()).unwrap();
            assert_eq!(journal.next_offset(0), 0);
            append_one(&journal, 0, &readings(0..40));
        }
        // A crash while creating the next segment: its file exists, its header does not.
        let empty = segment_path(&partition_dir, 40);
        File::create(&empty).unwrap();
        {
            let journal = Journal::open(&dir.0, 1, small()).unwrap();
            assert_eq!(journal.next_offset(0), 40);
            assert_eq!(fs::metadata(&empty).unwrap().len(), HEADER_LEN);
            assert_eq!(append_one(&journal, 0, &readings(40..41)), 40);
        }
        // Same with an all-zero file (allocated, never written back).
        let zero = segment_path(&partition_dir, 41);
        fs::write(&zero, [0u8; 100]).unwrap();
        drop(Journal::open(&dir.0, 1, small()).unwrap());
        assert_eq!(fs::metadata(&zero).unwrap().len(), HEADER_LEN);
        // And the now header-only last segment reopens as it is.
        let journal = Journal::open(&dir.0, 1, small()).unwrap();
        assert_eq!(journal.next_offset(0), 41);
        let all = read_all(&journal, 0, 0);
        assert_eq!(all.len(), 41);
        assert_eq!(all[40], (40, reading(40)));
    }

    fn journal_base(path: &Path) -> u64 {
        path.file_stem().unwrap().to_str().unwrap().parse().unwrap()
    }

    fn flip_byte(path: &Path, at: u64) {
        let mut bytes = fs::read(path).unwrap();
        bytes[at as usize] ^= 0x5a;
        fs::write(path, bytes).unwrap();
    }

    fn assert_corrupt_naming(err: StoreError, file: &Path) {
        match &err {
            StoreError::Corrupt { location, .. } => {
                assert!(location.contains(&file.display().to_string()), "{err}");
                assert!(location.contains("at byte"), "{err}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn corruption_in_a_non_last_segment_is_an_error_naming_the_file() {
        let dir = TestDir::new("corrupt-early");
        {
            let journal = Journal::open(&dir.0, 1, small()).unwrap();
            append_one(&journal, 0, &readings(0..60));
        }
        let first = segment_files(&dir.0, 0).remove(0);
        assert!(fs::metadata(&first).unwrap().len() > HEADER_LEN + 200);
        // A byte in the payload of the second record (records are about 67 bytes).
        flip_byte(&first, HEADER_LEN + 100);
        let err = Journal::open(&dir.0, 1, small()).unwrap_err();
        assert_corrupt_naming(err, &first);

        // A bad header (magic) of a non-last segment.
        flip_byte(&first, HEADER_LEN + 100);
        flip_byte(&first, 3);
        let err = Journal::open(&dir.0, 1, small()).unwrap_err();
        assert_corrupt_naming(err, &first);
    }

    #[test]
    fn corruption_mid_last_segment_followed_by_valid_records_is_an_error() {
        let dir = TestDir::new("corrupt-mid-last");
        {
            let journal = Journal::open(&dir.0, 1, JournalOptions::default()).unwrap();
            append_one(&journal, 0, &readings(0..20));
        }
        let only = segment_files(&dir.0, 0).remove(0);
        let len_before = fs::metadata(&only).unwrap().len();
        flip_byte(&only, HEADER_LEN + 150);
        let err = Journal::open(&dir.0, 1, JournalOptions::default()).unwrap_err();
        assert_corrupt_naming(err, &only);
        assert_eq!(
            fs::metadata(&only).unwrap().len(),
            len_before,
            "nothing may be cut"
        );

        // Same when the damage is in a length field (the chain of records is lost).
        flip_byte(&only, HEADER_LEN + 150);
        flip_byte(&only, HEADER_LEN + 1);
        let err = Journal::open(&dir.0, 1, JournalOptions::default()).unwrap_err();
        assert_corrupt_naming(err, &only);
        assert_eq!(
            fs::metadata(&only).unwrap().len(),
            len_before,
            "nothing may be cut"
        );
    }

    #[test]
    fn corruption_found_while_reading_is_an_error() {
        let dir = TestDir::new("corrupt-read");
        let journal = Journal::open(&dir.0, 1, JournalOptions::default()).unwrap();
        append_one(&journal, 0, &readings(0..5));
        let only = segment_files(&dir.0, 0).remove(0);
        flip_byte(&only, HEADER_LEN + 40);
        assert_corrupt_naming(journal.read_from(0, 0, 10).unwrap_err(), &only);
    }

    #[test]
    fn missing_segment_makes_offsets_non_contiguous() {
        let dir = TestDir::new("gap");
        {
            let journal = Journal::open(&dir.0, 1, small()).unwrap();
            append_one(&journal, 0, &readings(0..80));
        }
        let files = segment_files(&dir.0, 0);
        assert!(files.len() >= 3);
        fs::remove_file(&files[1]).unwrap();
        let err = Journal::open(&dir.0, 1, small()).unwrap_err();
        assert_corrupt_naming(err, &files[2]);
    }

    #[test]
    fn wrong_format_version_is_refused() {
        let dir = TestDir::new("version");
        drop(Journal::open(&dir.0, 2, small()).unwrap());
        fs::write(dir.0.join("FORMAT"), "2\npartitions=2\n").unwrap();
        let err = Journal::open(&dir.0, 2, small()).unwrap_err();
        match &err {
            StoreError::IncompatibleVersion {
                found, expected, ..
            } => {
                assert_eq!((found.as_str(), *expected), ("2", FORMAT_VERSION));
                assert!(err.to_string().contains("move the directory away"));
            }
            other => panic!("expected IncompatibleVersion, got {other:?}"),
        }

        // A non-empty directory that is not a journal is refused, not written into.
        let other = TestDir::new("not-a-journal");
        fs::create_dir_all(&other.0).unwrap();
        fs::write(other.0.join("notes.txt"), "hello").unwrap();
        assert!(matches!(
            Journal::open(&other.0, 1, small()),
            Err(StoreError::Corrupt {
                what: "journal directory",
                ..
            })
        ));
    }

    #[test]
    fn different_partition_count_is_refused() {
        let dir = TestDir::new("partitions");
        drop(Journal::open(&dir.0, 4, small()).unwrap());
        let err = Journal::open(&dir.0, 8, small()).unwrap_err();
        let text = err.to_string();
        assert!(matches!(
            err,
            StoreError::BadRequest {
                field: "n_partitions",
                ..
            }
        ));
        assert!(
            text.contains(&dir.0.join("FORMAT").display().to_string()),
            "{text}"
        );
        assert!(text.contains("created with 4 partitions"), "{text}");
        assert!(Journal::open(&dir.0, 0, small()).is_err());
        Journal::open(&dir.0, 4, small()).unwrap();
    }

    #[test]
    fn truncate_before_deletes_only_fully_covered_segments() {
        let dir = TestDir::new("truncate");
        let journal = Journal::open(&dir.0, 2, small()).unwrap();
        append_one(&journal, 0, &readings(0..100));
        append_one(&journal, 1, &readings(0..5));
        let bases: Vec<u64> = segment_files(&dir.0, 0)
            .iter()
            .map(|p| journal_base(p))
            .collect();
        assert!(bases.len() >= 4, "{bases:?}");
        let bytes_before = journal.disk_bytes();

        // An offset inside the third segment: only the first two are fully below it.
        let cut = bases[2] + 1;
        assert_eq!(journal.truncate_before(0, cut).unwrap(), 2);
        let left: Vec<u64> = segment_files(&dir.0, 0)
            .iter()
            .map(|p| journal_base(p))
            .collect();
        assert_eq!(left, bases[2..].to_vec());
        assert_eq!(journal.first_offset(0), bases[2]);
        assert!(journal.disk_bytes() < bytes_before);
        // Reads from the kept part still work; from the deleted part is an error.
        let all = read_all(&journal, 0, cut);
        assert_eq!(all.first().map(|&(o, _)| o), Some(cut));
        assert_eq!(all.len() as u64, 100 - cut);
        assert_eq!(all[0].1, reading(cut));
        assert!(matches!(
            journal.read_from(0, 0, 10),
            Err(StoreError::BadRequest {
                field: "from_offset",
                ..
            })
        ));
        // Exactly at a boundary: that segment's records are all below, so it goes.
        assert_eq!(journal.truncate_before(0, bases[3]).unwrap(), 1);
        assert_eq!(journal.truncate_before(0, bases[3]).unwrap(), 0);
        assert_eq!(read_all(&journal, 0, bases[3]).len() as u64, 100 - bases[3]);

        // Never the active segment, even past the end; the partition stays appendable.
        journal.truncate_before(0, u64::MAX).unwrap();
        assert_eq!(segment_files(&dir.0, 0).len(), 1);
        assert_eq!(journal.truncate_before(1, 1000).unwrap(), 0);
        assert_eq!(append_one(&journal, 0, &readings(100..101)), 100);
        drop(journal);

        let journal = Journal::open(&dir.0, 2, small()).unwrap();
        let first = journal.first_offset(0);
        assert_eq!(
            read_all(&journal, 0, first).last().map(|&(o, _)| o),
            Some(100)
        );
        assert_eq!(journal.next_offset(0), 101);
    }

    #[test]
    fn concurrent_appends_keep_offsets_unique_and_contiguous() {
        let dir = TestDir::new("threads");
        let journal = Journal::open(&dir.0, 3, small()).unwrap();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let journal = &journal;
                s.spawn(move || {
                    for i in 0..25u64 {
                        let rs = readings(t * 1000 + i * 3..t * 1000 + i * 3 + 3);
                        // Different partition orders per thread: locks must not deadlock.
                        let (p, q) = if t % 2 == 0 { (0, 2) } else { (2, 0) };
                        journal
                            .append(&[(p, &rs), (q, &rs[..1]), (1, &rs)])
                            .unwrap();
                    }
                });
            }
        });
        let mut sizes = Vec::new();
        for p in 0..3 {
            let all = read_all(&journal, p, 0);
            assert!(all.iter().enumerate().all(|(i, &(o, _))| o == i as u64));
            sizes.push(all.len());
        }
        // Per append: 3 to `p`, 1 to `q`, 3 to partition 1; two threads of each order.
        assert_eq!(
            sizes,
            vec![2 * 25 * 3 + 2 * 25, 4 * 25 * 3, 2 * 25 * 3 + 2 * 25]
        );
    }

    #[test]
    fn payload_round_trips_extremes() {
        let mut r = reading(1);
        r.meter = MeterId::new(&"Z".repeat(47)).unwrap();
        r.ts_ms = i64::MIN;
        r.credit = Some(-0.0);
        r.seq = Some(u64::MAX);
        for r in [
            r,
            reading(3),
            reading(5),
            Reading {
                credit: None,
                seq: None,
                ..r
            },
        ] {
            let mut buf = Vec::new();
            encode_record(&mut buf, 9, &r);
            let header = RecordHeader::parse(&buf);
            assert!(header.plausible());
            assert_eq!(header.offset, 9);
            assert!(header.crc_matches(&buf, &buf[16..]));
            assert_eq!(decode_payload(&buf[16..]).unwrap(), r);
        }
        assert!(decode_payload(&[4, 1, b'a']).is_err());
    }

    #[test]
    fn find_valid_record_sees_records_after_damage() {
        let mut bytes = vec![0xffu8; 10];
        encode_record(&mut bytes, 5, &reading(5));
        assert_eq!(find_valid_record(&bytes, 4), Some((10, 5)));
        assert_eq!(
            find_valid_record(&bytes, 6),
            None,
            "offset before the expected one"
        );
        assert_eq!(find_valid_record(&bytes[..bytes.len() - 1], 4), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn random_batches_read_back_equal(
            batches in prop::collection::vec(
                prop::collection::vec(
                    (0u32..3, prop::collection::vec(arb_reading(), 0..40)),
                    0..4,
                ),
                1..6,
            ),
            segment_bytes in 200u64..4000,
        ) {
            let dir = TestDir::new("proptest");
            let options = JournalOptions { segment_bytes, sync: false };
            let mut expected: Vec<Vec<Reading>> = vec![Vec::new(); 3];
            {
                let journal = Journal::open(&dir.0, 3, options).unwrap();
                for batch in &batches {
                    let entries: Vec<(u32, &[Reading])> =
                        batch.iter().map(|(p, rs)| (*p, rs.as_slice())).collect();
                    let firsts = journal.append(&entries).unwrap();
                    for ((p, rs), (fp, first)) in batch.iter().zip(firsts) {
                        prop_assert_eq!(*p, fp);
                        prop_assert_eq!(first, expected[*p as usize].len() as u64);
                        expected[*p as usize].extend_from_slice(rs);
                    }
                }
            }
            let journal = Journal::open(&dir.0, 3, options).unwrap();
            for (p, want) in expected.iter().enumerate() {
                let got: Vec<Reading> = read_all(&journal, p as u32, 0).into_iter().map(|(_, r)| r).collect();
                prop_assert_eq!(&got, want);
                prop_assert_eq!(journal.next_offset(p as u32), want.len() as u64);
            }
        }
    }

    fn arb_reading() -> impl Strategy<Value = Reading> {
        (
            "[A-Za-z0-9_.:-]{1,47}",
            any::<i64>(),
            prop::array::uniform4(-1e12f64..1e12),
            prop::option::of(-1e6f64..1e6),
            prop::option::of(any::<u64>()),
        )
            .prop_map(
                |(meter, ts_ms, [voltage, current, power_w, energy_wh], credit, seq)| Reading {
                    meter: MeterId::new(&meter).unwrap(),
                    ts_ms,
                    voltage,
                    current,
                    power_w,
                    energy_wh,
                    credit,
                    seq,
                    backfill: false,
                },
            )
    }
}
