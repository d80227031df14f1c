//! The embedded backend: a crash-safe, pure-Rust LSM (`fjall`) under the data directory.
//!
//! Tables mirror the Scylla schema, one fjall partition each:
//!
//! | partition | key | value |
//! |---|---|---|
//! | `readings_{day}` (one per day bucket) | meter, ts | fixed 50-byte reading |
//! | `snapshots` | meter | postcard [`SnapshotRow`] |
//! | `checkpoints` | log partition (u32 BE) | offset (u64 BE) |
//! | `alerts` | alert id | JSON `AlertRecord` |
//! | `alerts_by_meter` | meter, first_seen desc, id | — |
//! | `alerts_by_time` | first_seen desc, id | — |
//! | `alert_history` | alert id, at, event (workflow: mark, action seq) | JSON [`AlertHistoryEntry`] |
//! | `config` | kind, id | JSON document |
//! | `meter_rollups` | meter, granularity, window start | fixed 84-byte rollup |
//! | `user_rollups` | user, granularity, window start | 33 bytes, then cost, currency |
//! | `stream_offsets` | job, log partition (u32 BE) | next offset (u64 BE) |
//! | `audit` | at desc, seq desc | JSON [`AuditEntry`] |
//! | `audit_by_subject` | subject, at desc, seq desc | JSON [`AuditEntry`] (a copy) |
//! | `meta` | `format` | format version |
//!
//! Raw readings get a partition per day so retention drops whole days at once, like
//! Scylla's time-window compaction with TTLs. Keys sort so that every query is one
//! prefix or range scan: ids and job names are length-prefixed (so `a` never
//! interleaves with `ab`), a granularity is one byte ([`granularity_code`]), times are
//! big-endian with the sign bit flipped. Floats are stored bit-for-bit (exact, unlike
//! JSON). fjall's own journal makes writes crash-safe and recovers a prefix of them (a
//! stream job's offsets are never back without the rollups written before them);
//! [`Store::flush`] fsyncs it. The engine is blocking, so every operation runs on tokio's
//! blocking pool. The rollup, offset and audit partitions were added without a format
//! change: a directory of an older build simply gets them, and an older build ignores
//! them.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use gridpulse_domain::{
    AlertEventKind, AlertRecord, Amount, Granularity, MeterId, MeterRollup, Reading, UserId,
    UserRollup,
};
use parking_lot::RwLock;

use crate::error::StoreError;
use crate::model::{
    AlertHistoryEntry, AlertQuery, AuditEntry, AuditQuery, ConfigKind, DAY_MS, MeterRollupQuery,
    ReadingPage, ReadingQuery, Retention, RollupPage, SnapshotRow, StoredAlert, UserRollupQuery,
    check_audit_entry, check_history_entry, check_job_name, check_user_rollup, day_bucket,
    reading_cursor, rollup_cursor,
};
use crate::{Store, StoreFuture};

/// Format version of the embedded store's layout.
pub const FORMAT_VERSION: u32 = 1;
const READINGS_PREFIX: &str = "readings_";

/// The embedded store (cheap to clone).
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    keyspace: Keyspace,
    snapshots: PartitionHandle,
    checkpoints: PartitionHandle,
    alerts: PartitionHandle,
    alerts_by_meter: PartitionHandle,
    alerts_by_time: PartitionHandle,
    alert_history: PartitionHandle,
    config: PartitionHandle,
    meter_rollups: PartitionHandle,
    user_rollups: PartitionHandle,
    stream_offsets: PartitionHandle,
    audit: PartitionHandle,
    audit_by_subject: PartitionHandle,
    reading_days: RwLock<BTreeMap<i32, PartitionHandle>>,
    retention: Retention,
    /// Held while the store is open (declared last: released after the engine closes),
    /// so two processes never open one directory.
    _lock: std::fs::File,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens (or creates) the store under `path`. Refuses a directory written by an
    /// incompatible version, naming it and saying what to do.
    pub fn open(path: &Path, retention: Retention) -> Result<EmbeddedStore, StoreError> {
        std::fs::create_dir_all(path).map_err(|error| StoreError::io(path, error))?;
        let lock_path = path.join("LOCK");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|error| StoreError::io(&lock_path, error))?;
        lock.try_lock().map_err(|_| StoreError::Embedded {
            path: path.to_owned(),
            message: "in use by another gridpulse process (its LOCK file is held)".into(),
        })?;
        let engine = |error: fjall::Error| StoreError::Embedded {
            path: path.to_owned(),
            message: error.to_string(),
        };
        let keyspace = Config::new(path).open().map_err(engine)?;
        let open = |name: &str| {
            keyspace
                .open_partition(name, PartitionCreateOptions::default())
                .map_err(engine)
        };
        let meta = open("meta")?;
        match meta.get("format").map_err(engine)? {
            None => meta
                .insert("format", FORMAT_VERSION.to_string())
                .map_err(engine)?,
            Some(found) if found.as_ref() == FORMAT_VERSION.to_string().as_bytes() => {}
            Some(found) => {
                return Err(StoreError::IncompatibleVersion {
                    path: path.to_owned(),
                    found: String::from_utf8_lossy(&found).into_owned(),
                    expected: FORMAT_VERSION,
                    advice: "run the gridpulse version that wrote it, or move the directory away to start empty",
                });
            }
        }
        let mut reading_days = BTreeMap::new();
        for name in keyspace.list_partitions() {
            if let Some(day) = name.strip_prefix(READINGS_PREFIX) {
                let day: i32 = day.parse().map_err(|_| StoreError::Corrupt {
                    what: "readings partition name",
                    location: format!("{}/{name}", path.display()),
                    message: "expected readings_<day number>".into(),
                })?;
                reading_days.insert(day, open(&name)?);
            }
        }
        let inner = Inner {
            path: path.to_owned(),
            snapshots: open("snapshots")?,
            checkpoints: open("checkpoints")?,
            alerts: open("alerts")?,
            alerts_by_meter: open("alerts_by_meter")?,
            alerts_by_time: open("alerts_by_time")?,
            alert_history: open("alert_history")?,
            config: open("config")?,
            meter_rollups: open("meter_rollups")?,
            user_rollups: open("user_rollups")?,
            stream_offsets: open("stream_offsets")?,
            audit: open("audit")?,
            audit_by_subject: open("audit_by_subject")?,
            reading_days: RwLock::new(reading_days),
            retention,
            keyspace,
            _lock: lock,
        };
        Ok(EmbeddedStore {
            inner: Arc::new(inner),
        })
    }

    /// Bytes the store occupies on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.inner.keyspace.disk_space()
    }

    /// Runs `work` on the blocking pool.
    fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> StoreFuture<'static, T> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            tokio::task::spawn_blocking(move || work(&inner))
                .await
                .map_err(|error| StoreError::Embedded {
                    path: PathBuf::new(),
                    message: format!("store task failed: {error}"),
                })?
        })
    }
}

impl Inner {
    fn engine(&self, error: fjall::Error) -> StoreError {
        StoreError::Embedded {
            path: self.path.clone(),
            message: error.to_string(),
        }
    }

    fn day_partition(&self, day: i32) -> Result<PartitionHandle, StoreError> {
        if let Some(partition) = self.reading_days.read().get(&day) {
            return Ok(partition.clone());
        }
        let mut days = self.reading_days.write();
        if let Some(partition) = days.get(&day) {
            return Ok(partition.clone());
        }
        let partition = self
            .keyspace
            .open_partition(
                &format!("{READINGS_PREFIX}{day}"),
                PartitionCreateOptions::default(),
            )
            .map_err(|error| self.engine(error))?;
        days.insert(day, partition.clone());
        Ok(partition)
    }
}

// ---- key and value encodings ------------------------------------------------------

/// Maps a signed time to bytes that sort like the number.
fn ts_key(ts_ms: i64) -> [u8; 8] {
    ((ts_ms as u64) ^ (1 << 63)).to_be_bytes()
}

fn ts_from_key(bytes: &[u8]) -> Option<i64> {
    let raw: [u8; 8] = bytes.try_into().ok()?;
    Some((u64::from_be_bytes(raw) ^ (1 << 63)) as i64)
}

/// Bytes that sort in *descending* time order.
fn ts_key_desc(ts_ms: i64) -> [u8; 8] {
    let mut key = ts_key(ts_ms);
    for byte in &mut key {
        *byte = !*byte;
    }
    key
}

fn meter_prefix(meter: &MeterId) -> Vec<u8> {
    id_prefix(meter.as_str())
}

/// A length-prefixed id (meter and user ids are at most 47 bytes, job names
/// [`crate::model::MAX_JOB_NAME_LEN`]).
fn id_prefix(id: &str) -> Vec<u8> {
    let id = id.as_bytes();
    let mut key = Vec::with_capacity(1 + id.len() + 1 + 8);
    key.push(id.len() as u8);
    key.extend_from_slice(id);
    key
}

fn reading_key(meter: &MeterId, ts_ms: i64) -> Vec<u8> {
    let mut key = meter_prefix(meter);
    key.extend_from_slice(&ts_key(ts_ms));
    key
}

const READING_VALUE_LEN: usize = 4 * 8 + 1 + 8 + 8;

/// Fixed layout: voltage, current, power, energy (f64 LE), flags (bit 0 credit, bit 1
/// seq), credit (f64 LE), seq (u64 LE).
fn encode_reading(reading: &Reading) -> [u8; READING_VALUE_LEN] {
    let mut value = [0u8; READING_VALUE_LEN];
    value[0..8].copy_from_slice(&reading.voltage.to_le_bytes());
    value[8..16].copy_from_slice(&reading.current.to_le_bytes());
    value[16..24].copy_from_slice(&reading.power_w.to_le_bytes());
    value[24..32].copy_from_slice(&reading.energy_wh.to_le_bytes());
    let mut flags = 0u8;
    if let Some(credit) = reading.credit {
        flags |= 1;
        value[33..41].copy_from_slice(&credit.to_le_bytes());
    }
    if let Some(seq) = reading.seq {
        flags |= 2;
        value[41..49].copy_from_slice(&seq.to_le_bytes());
    }
    value[32] = flags;
    value
}

fn decode_reading(meter: MeterId, ts_ms: i64, value: &[u8]) -> Option<Reading> {
    if value.len() != READING_VALUE_LEN {
        return None;
    }
    let f64_at = |at: usize| value[at..at + 8].try_into().ok().map(f64::from_le_bytes);
    let flags = value[32];
    Some(Reading {
        meter,
        ts_ms,
        voltage: f64_at(0)?,
        current: f64_at(8)?,
        power_w: f64_at(16)?,
        energy_wh: f64_at(24)?,
        credit: if flags & 1 != 0 {
            Some(f64_at(33)?)
        } else {
            None
        },
        seq: if flags & 2 != 0 {
            Some(u64::from_le_bytes(value[41..49].try_into().ok()?))
        } else {
            None
        },
        backfill: false,
    })
}

fn alert_by_meter_key(alert: &AlertRecord) -> Vec<u8> {
    let mut key = meter_prefix(&alert.meter);
    key.extend_from_slice(&ts_key_desc(alert.first_seen_ms));
    key.extend_from_slice(alert.id.as_bytes());
    key
}

fn alert_by_time_key(alert: &AlertRecord) -> Vec<u8> {
    let mut key = ts_key_desc(alert.first_seen_ms).to_vec();
    key.extend_from_slice(alert.id.as_bytes());
    key
}

fn history_prefix(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(id.len() + 12);
    key.extend_from_slice(&(id.len() as u16).to_be_bytes());
    key.extend_from_slice(id.as_bytes());
    key
}

/// (id, at, event) for lifecycle changes, as ever; (id, at, [`WORKFLOW_MARK`],
/// `action_seq` big-endian) for workflow events: several in one millisecond are kept
/// apart and come in the order they happened, after that millisecond's lifecycle
/// changes.
fn history_key(entry: &AlertHistoryEntry) -> Vec<u8> {
    let mut key = history_prefix(&entry.alert.id);
    key.extend_from_slice(&ts_key(entry.at_ms));
    if entry.event.is_workflow() {
        key.push(WORKFLOW_MARK);
        key.extend_from_slice(&entry.action_seq.to_be_bytes());
    } else {
        key.push(lifecycle_code(entry.event));
    }
    key
}

/// Follows the time in the key of a workflow event (above every lifecycle code).
const WORKFLOW_MARK: u8 = 0x80;

/// The stored byte of a lifecycle event (explicit, so reordering the domain enum never
/// changes the format); sorts the changes of one millisecond in lifecycle order.
fn lifecycle_code(event: AlertEventKind) -> u8 {
    match event {
        AlertEventKind::Raised => 0,
        AlertEventKind::Updated => 1,
        AlertEventKind::Acknowledged => 2,
        AlertEventKind::Resolved => 3,
        AlertEventKind::Assigned
        | AlertEventKind::Commented
        | AlertEventKind::Snoozed
        | AlertEventKind::Unsnoozed
        | AlertEventKind::Reminder => WORKFLOW_MARK,
    }
}

fn config_key(kind: ConfigKind, id: &str) -> Vec<u8> {
    let mut key = kind.as_str().as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The stored byte of a granularity (explicit, so reordering the domain enum never
/// changes the format).
fn granularity_code(granularity: Granularity) -> u8 {
    match granularity {
        Granularity::Hour => 0,
        Granularity::Day => 1,
        Granularity::Month => 2,
    }
}

/// The key prefix of one subject's windows of one granularity.
fn rollup_prefix(subject: &str, granularity: Granularity) -> Vec<u8> {
    let mut key = id_prefix(subject);
    key.push(granularity_code(granularity));
    key
}

fn rollup_key(subject: &str, granularity: Granularity, window_start_ms: i64) -> Vec<u8> {
    let mut key = rollup_prefix(subject, granularity);
    key.extend_from_slice(&ts_key(window_start_ms));
    key
}

/// Reads little-endian fixed-size fields in order.
struct Fields<'v> {
    rest: &'v [u8],
}

impl<'v> Fields<'v> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.rest.split_first_chunk::<N>()?;
        self.rest = rest;
        Some(*head)
    }
    fn i64(&mut self) -> Option<i64> {
        self.take().map(i64::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn f64(&mut self) -> Option<f64> {
        self.take().map(f64::from_le_bytes)
    }
}

const METER_ROLLUP_VALUE_LEN: usize = 8 + 8 + 6 * 8 + 8 + 8 + 4;

/// Fixed layout (LE): window_end, readings, energy, power min/avg/max, voltage min/max,
/// expected readings, completeness, revision. The key holds meter, granularity and start.
fn encode_meter_rollup(rollup: &MeterRollup) -> Vec<u8> {
    let mut value = Vec::with_capacity(METER_ROLLUP_VALUE_LEN);
    value.extend_from_slice(&rollup.window_end_ms.to_le_bytes());
    value.extend_from_slice(&rollup.readings.to_le_bytes());
    for float in [
        rollup.energy_wh,
        rollup.power_min_w,
        rollup.power_avg_w,
        rollup.power_max_w,
        rollup.voltage_min,
        rollup.voltage_max,
    ] {
        value.extend_from_slice(&float.to_le_bytes());
    }
    value.extend_from_slice(&rollup.expected_readings.to_le_bytes());
    value.extend_from_slice(&rollup.completeness_pct.to_le_bytes());
    value.extend_from_slice(&rollup.revision.to_le_bytes());
    value
}

fn decode_meter_rollup(
    meter: MeterId,
    granularity: Granularity,
    window_start_ms: i64,
    value: &[u8],
) -> Option<MeterRollup> {
    if value.len() != METER_ROLLUP_VALUE_LEN {
        return None;
    }
    let mut fields = Fields { rest: value };
    Some(MeterRollup {
        meter,
        granularity,
        window_start_ms,
        window_end_ms: fields.i64()?,
        readings: fields.u64()?,
        energy_wh: fields.f64()?,
        power_min_w: fields.f64()?,
        power_avg_w: fields.f64()?,
        power_max_w: fields.f64()?,
        voltage_min: fields.f64()?,
        voltage_max: fields.f64()?,
        expected_readings: fields.u64()?,
        completeness_pct: fields.f64()?,
        revision: fields.u32()?,
    })
}

const USER_ROLLUP_FIXED_LEN: usize = 8 + 4 + 8 + 8 + 4 + 1;
const HAS_COST: u8 = 1;
const HAS_CURRENCY: u8 = 2;

/// Layout (LE): window_end, meters, readings, energy, revision, flags (bit 0 cost, bit 1
/// currency), then the cost in micro-units (i128) if present, then the currency's UTF-8
/// bytes (the rest of the value) if present.
fn encode_user_rollup(rollup: &UserRollup) -> Vec<u8> {
    let mut value = Vec::with_capacity(USER_ROLLUP_FIXED_LEN + 16 + 3);
    value.extend_from_slice(&rollup.window_end_ms.to_le_bytes());
    value.extend_from_slice(&rollup.meters.to_le_bytes());
    value.extend_from_slice(&rollup.readings.to_le_bytes());
    value.extend_from_slice(&rollup.energy_wh.to_le_bytes());
    value.extend_from_slice(&rollup.revision.to_le_bytes());
    let flags = if rollup.cost.is_some() { HAS_COST } else { 0 }
        | if rollup.currency.is_some() {
            HAS_CURRENCY
        } else {
            0
        };
    value.push(flags);
    if let Some(cost) = rollup.cost {
        value.extend_from_slice(&cost.micro_units().to_le_bytes());
    }
    if let Some(currency) = &rollup.currency {
        value.extend_from_slice(currency.as_bytes());
    }
    value
}

fn decode_user_rollup(
    user: UserId,
    granularity: Granularity,
    window_start_ms: i64,
    value: &[u8],
) -> Result<UserRollup, String> {
    let short = || format!("value of {} bytes", value.len());
    let mut fields = Fields { rest: value };
    let window_end_ms = fields.i64().ok_or_else(short)?;
    let meters = fields.u32().ok_or_else(short)?;
    let readings = fields.u64().ok_or_else(short)?;
    let energy_wh = fields.f64().ok_or_else(short)?;
    let revision = fields.u32().ok_or_else(short)?;
    let [flags] = fields.take::<1>().ok_or_else(short)?;
    if flags & !(HAS_COST | HAS_CURRENCY) != 0 {
        return Err(format!("unknown flags {flags:#04x}"));
    }
    let cost = if flags & HAS_COST != 0 {
        let micro_units = fields
            .take::<16>()
            .map(i128::from_le_bytes)
            .ok_or_else(short)?;
        Some(Amount::from_micro_units(micro_units).map_err(|error| format!("cost: {error}"))?)
    } else {
        None
    };
    let currency = if flags & HAS_CURRENCY != 0 {
        Some(
            String::from_utf8(fields.rest.to_vec())
                .map_err(|error| format!("currency: {error}"))?,
        )
    } else if fields.rest.is_empty() {
        None
    } else {
        return Err(short());
    };
    Ok(UserRollup {
        user,
        granularity,
        window_start_ms,
        window_end_ms,
        meters,
        readings,
        energy_wh,
        cost,
        currency,
        revision,
    })
}

/// The key of an audit entry after its subject prefix (if any): newest first, by time
/// then seq, so a forward scan reads the log backwards in time.
fn audit_key(at_ms: i64, seq: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&ts_key_desc(at_ms));
    key[8..].copy_from_slice(&(!seq).to_be_bytes());
    key
}

// Audit subjects are length-prefixed with one byte.
const _: () = assert!(crate::model::MAX_AUDIT_SUBJECT_BYTES <= u8::MAX as usize);

// Job names are length-prefixed with one byte.
const _: () = assert!(crate::model::MAX_JOB_NAME_LEN <= u8::MAX as usize);

fn offset_key(job: &str, partition: u32) -> Vec<u8> {
    let mut key = id_prefix(job);
    key.extend_from_slice(&partition.to_be_bytes());
    key
}

/// Shorthand for [`StoreError::corrupt`].
fn corrupt(
    what: &'static str,
    location: impl Into<String>,
    message: impl std::fmt::Display,
) -> StoreError {
    StoreError::corrupt(what, location, message)
}

// ---- the Store implementation -------------------------------------------------------

/// One encoded key and value.
type Row = (Vec<u8>, Vec<u8>);

impl Inner {
    /// Writes `(key, value)` pairs as one batch; a key named twice keeps its last value.
    fn put_all(
        &self,
        partition: &PartitionHandle,
        rows: impl IntoIterator<Item = Row>,
    ) -> Result<(), StoreError> {
        let rows: BTreeMap<Vec<u8>, Vec<u8>> = rows.into_iter().collect();
        let mut batch = self.keyspace.batch();
        for (key, value) in rows {
            batch.insert(partition, key, value);
        }
        batch.commit().map_err(|error| self.engine(error))
    }

    /// One page of `[start_ms, to_ms)` under `prefix` (one subject and granularity of a
    /// rollup table), decoding each value with its window start.
    fn rollup_page<R>(
        &self,
        (partition, table): (&PartitionHandle, &str),
        prefix: Vec<u8>,
        (start_ms, to_ms, limit): (i64, i64, usize),
        decode: impl Fn(i64, &[u8]) -> Result<R, String>,
    ) -> Result<RollupPage<R>, StoreError> {
        let limit = limit.max(1);
        let mut from_key = prefix.clone();
        from_key.extend_from_slice(&ts_key(start_ms));
        let mut to_key = prefix;
        to_key.extend_from_slice(&ts_key(to_ms));
        let mut rollups = Vec::with_capacity(limit.min(1000));
        for item in partition.range(from_key..to_key) {
            let (key, value) = item.map_err(|error| self.engine(error))?;
            let location = || format!("{}/{table}", self.path.display());
            let window_start_ms = key
                .len()
                .checked_sub(8)
                .and_then(|at| ts_from_key(&key[at..]))
                .ok_or_else(|| corrupt("rollup key", location(), "short key"))?;
            if rollups.len() == limit {
                return Ok(RollupPage {
                    rollups,
                    next_cursor: Some(rollup_cursor(window_start_ms)),
                });
            }
            let rollup = decode(window_start_ms, &value).map_err(|message| {
                corrupt(
                    "rollup",
                    format!("{} at window {window_start_ms}", location()),
                    message,
                )
            })?;
            rollups.push(rollup);
        }
        Ok(RollupPage {
            rollups,
            next_cursor: None,
        })
    }
}

impl Store for EmbeddedStore {
    fn write_readings<'a>(&'a self, readings: &'a [Reading]) -> StoreFuture<'a, ()> {
        let readings = readings.to_vec();
        self.blocking(move |inner| {
            let mut batch = inner.keyspace.batch();
            let mut current: Option<(i32, PartitionHandle)> = None;
            for reading in &readings {
                let day = day_bucket(reading.ts_ms);
                let partition = match &current {
                    Some((current_day, partition)) if *current_day == day => partition.clone(),
                    _ => {
                        let partition = inner.day_partition(day)?;
                        current = Some((day, partition.clone()));
                        partition
                    }
                };
                batch.insert(
                    &partition,
                    reading_key(&reading.meter, reading.ts_ms),
                    encode_reading(reading),
                );
            }
            batch.commit().map_err(|error| inner.engine(error))
        })
    }

    fn read_readings<'a>(&'a self, query: &'a ReadingQuery) -> StoreFuture<'a, ReadingPage> {
        let query = query.clone();
        self.blocking(move |inner| {
            let start_ms = query.start_ms()?;
            let limit = query.limit.max(1);
            let days: Vec<(i32, PartitionHandle)> = inner
                .reading_days
                .read()
                .range(day_bucket(start_ms)..=day_bucket(query.to_ms - 1))
                .map(|(day, partition)| (*day, partition.clone()))
                .collect();
            let mut readings = Vec::with_capacity(limit.min(10_000));
            let (from_key, to_key) = (
                reading_key(&query.meter, start_ms),
                reading_key(&query.meter, query.to_ms),
            );
            for (day, partition) in days {
                for item in partition.range(from_key.as_slice()..to_key.as_slice()) {
                    let (key, value) = item.map_err(|error| inner.engine(error))?;
                    let location = || format!("{}/{READINGS_PREFIX}{day}", inner.path.display());
                    let ts_ms = ts_from_key(&key[key.len() - 8..])
                        .ok_or_else(|| corrupt("reading key", location(), "short key"))?;
                    if readings.len() == limit {
                        return Ok(ReadingPage {
                            readings,
                            next_cursor: Some(reading_cursor(ts_ms)),
                        });
                    }
                    let reading = decode_reading(query.meter, ts_ms, &value).ok_or_else(|| {
                        corrupt(
                            "reading",
                            location(),
                            format!("value of {} bytes", value.len()),
                        )
                    })?;
                    readings.push(reading);
                }
            }
            Ok(ReadingPage {
                readings,
                next_cursor: None,
            })
        })
    }

    fn put_snapshots<'a>(&'a self, snapshots: &'a [SnapshotRow]) -> StoreFuture<'a, ()> {
        let snapshots = snapshots.to_vec();
        self.blocking(move |inner| {
            let mut batch = inner.keyspace.batch();
            for snapshot in &snapshots {
                let value = postcard::to_stdvec(snapshot)
                    .map_err(|error| corrupt("snapshot", snapshot.meter.to_string(), error))?;
                batch.insert(&inner.snapshots, meter_prefix(&snapshot.meter), value);
            }
            batch.commit().map_err(|error| inner.engine(error))
        })
    }

    fn get_snapshot(&self, meter: MeterId) -> StoreFuture<'_, Option<SnapshotRow>> {
        self.blocking(move |inner| {
            let Some(value) = inner
                .snapshots
                .get(meter_prefix(&meter))
                .map_err(|error| inner.engine(error))?
            else {
                return Ok(None);
            };
            let row: SnapshotRow = postcard::from_bytes(&value).map_err(|error| {
                corrupt(
                    "snapshot",
                    format!("{}/snapshots/{meter}", inner.path.display()),
                    error,
                )
            })?;
            Ok(Some(row))
        })
    }

    fn put_checkpoint(&self, partition: u32, offset: u64) -> StoreFuture<'_, ()> {
        self.blocking(move |inner| {
            inner
                .checkpoints
                .insert(partition.to_be_bytes(), offset.to_be_bytes())
                .map_err(|error| inner.engine(error))
        })
    }

    fn get_checkpoint(&self, partition: u32) -> StoreFuture<'_, Option<u64>> {
        self.blocking(move |inner| {
            let Some(value) = inner
                .checkpoints
                .get(partition.to_be_bytes())
                .map_err(|error| inner.engine(error))?
            else {
                return Ok(None);
            };
            let raw: [u8; 8] = value.as_ref().try_into().map_err(|_| {
                corrupt(
                    "checkpoint",
                    format!("{}/checkpoints/{partition}", inner.path.display()),
                    "not 8 bytes",
                )
            })?;
            Ok(Some(u64::from_be_bytes(raw)))
        })
    }

    fn write_alert_events<'a>(&'a self, events: &'a [AlertHistoryEntry]) -> StoreFuture<'a, ()> {
        let checked = events.iter().try_for_each(check_history_entry);
        let events = events.to_vec();
        self.blocking(move |inner| {
            checked?;
            let mut batch = inner.keyspace.batch();
            for entry in &events {
                let record = serde_json::to_vec(&entry.alert)
                    .map_err(|error| corrupt("alert", entry.alert.id.clone(), error))?;
                let history = serde_json::to_vec(entry)
                    .map_err(|error| corrupt("alert history", entry.alert.id.clone(), error))?;
                batch.insert(&inner.alerts, entry.alert.id.as_bytes(), record);
                batch.insert(&inner.alerts_by_meter, alert_by_meter_key(&entry.alert), []);
                batch.insert(&inner.alerts_by_time, alert_by_time_key(&entry.alert), []);
                batch.insert(&inner.alert_history, history_key(entry), history);
            }
            batch.commit().map_err(|error| inner.engine(error))
        })
    }

    fn get_alert<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<StoredAlert>> {
        let id = id.to_owned();
        self.blocking(move |inner| {
            let Some(value) = inner
                .alerts
                .get(id.as_bytes())
                .map_err(|error| inner.engine(error))?
            else {
                return Ok(None);
            };
            let location = || format!("{}/alerts/{id}", inner.path.display());
            let alert: AlertRecord = serde_json::from_slice(&value)
                .map_err(|error| corrupt("alert", location(), error))?;
            let mut history = Vec::new();
            for item in inner.alert_history.prefix(history_prefix(&id)) {
                let (_, value) = item.map_err(|error| inner.engine(error))?;
                history.push(
                    serde_json::from_slice(&value)
                        .map_err(|error| corrupt("alert history", location(), error))?,
                );
            }
            Ok(Some(StoredAlert { alert, history }))
        })
    }

    fn query_alerts<'a>(&'a self, query: &'a AlertQuery) -> StoreFuture<'a, Vec<AlertRecord>> {
        let query = query.clone();
        self.blocking(move |inner| {
            let limit = query.limit.max(1);
            let (index, prefix_len, prefix) = match &query.meter {
                Some(meter) => {
                    let prefix = meter_prefix(meter);
                    (&inner.alerts_by_meter, prefix.len(), prefix)
                }
                None => (&inner.alerts_by_time, 0, Vec::new()),
            };
            // Newest first; a cursor starts the scan just after its own key.
            let start = match &query.before {
                Some((at_ms, id)) => {
                    let mut key = prefix.clone();
                    key.extend_from_slice(&ts_key_desc(*at_ms));
                    key.extend_from_slice(id.as_bytes());
                    std::ops::Bound::Excluded(key)
                }
                None => std::ops::Bound::Included(prefix.clone()),
            };
            let mut found = Vec::new();
            for item in index.range((start, std::ops::Bound::Unbounded)) {
                let (key, _) = item.map_err(|error| inner.engine(error))?;
                if !key.starts_with(&prefix) {
                    break;
                }
                let rest = &key[prefix_len..];
                if rest.len() < 8 {
                    return Err(corrupt(
                        "alert index key",
                        inner.path.display().to_string(),
                        "short key",
                    ));
                }
                let mut desc = [0u8; 8];
                for (out, byte) in desc.iter_mut().zip(&rest[..8]) {
                    *out = !*byte;
                }
                let first_seen_ms = ts_from_key(&desc).unwrap_or(i64::MIN);
                if query.since_ms.is_some_and(|since| first_seen_ms < since) {
                    break;
                }
                let Some(value) = inner
                    .alerts
                    .get(&rest[8..])
                    .map_err(|error| inner.engine(error))?
                else {
                    continue;
                };
                let alert: AlertRecord = serde_json::from_slice(&value).map_err(|error| {
                    corrupt(
                        "alert",
                        String::from_utf8_lossy(&rest[8..]).into_owned(),
                        error,
                    )
                })?;
                if query.matches(&alert) {
                    found.push(alert);
                    if found.len() == limit {
                        break;
                    }
                }
            }
            Ok(found)
        })
    }

    fn put_config<'a>(
        &'a self,
        kind: ConfigKind,
        id: &'a str,
        json: &'a [u8],
    ) -> StoreFuture<'a, ()> {
        let (key, json) = (config_key(kind, id), json.to_vec());
        self.blocking(move |inner| {
            inner
                .config
                .insert(key, json)
                .map_err(|error| inner.engine(error))
        })
    }

    fn get_config<'a>(&'a self, kind: ConfigKind, id: &'a str) -> StoreFuture<'a, Option<Vec<u8>>> {
        let key = config_key(kind, id);
        self.blocking(move |inner| {
            Ok(inner
                .config
                .get(key)
                .map_err(|error| inner.engine(error))?
                .map(|value| value.to_vec()))
        })
    }

    fn delete_config<'a>(&'a self, kind: ConfigKind, id: &'a str) -> StoreFuture<'a, ()> {
        let key = config_key(kind, id);
        self.blocking(move |inner| {
            inner
                .config
                .remove(key)
                .map_err(|error| inner.engine(error))
        })
    }

    fn list_config(&self, kind: ConfigKind) -> StoreFuture<'_, Vec<(String, Vec<u8>)>> {
        let prefix = config_key(kind, "");
        self.blocking(move |inner| {
            let mut documents = Vec::new();
            for item in inner.config.prefix(prefix.clone()) {
                let (key, value) = item.map_err(|error| inner.engine(error))?;
                let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                documents.push((id, value.to_vec()));
            }
            Ok(documents)
        })
    }

    fn put_meter_rollups<'a>(&'a self, rollups: &'a [MeterRollup]) -> StoreFuture<'a, ()> {
        let rows: Vec<Row> = rollups
            .iter()
            .map(|rollup| {
                (
                    rollup_key(
                        rollup.meter.as_str(),
                        rollup.granularity,
                        rollup.window_start_ms,
                    ),
                    encode_meter_rollup(rollup),
                )
            })
            .collect();
        self.blocking(move |inner| inner.put_all(&inner.meter_rollups, rows))
    }

    fn read_meter_rollups<'a>(
        &'a self,
        query: &'a MeterRollupQuery,
    ) -> StoreFuture<'a, RollupPage<MeterRollup>> {
        let query = query.clone();
        self.blocking(move |inner| {
            let start_ms = query.start_ms()?;
            let (meter, granularity) = (query.subject, query.granularity);
            inner.rollup_page(
                (&inner.meter_rollups, "meter_rollups"),
                rollup_prefix(meter.as_str(), granularity),
                (start_ms, query.to_ms, query.limit),
                |window_start_ms, value| {
                    decode_meter_rollup(meter, granularity, window_start_ms, value)
                        .ok_or_else(|| format!("value of {} bytes", value.len()))
                },
            )
        })
    }

    fn put_user_rollups<'a>(&'a self, rollups: &'a [UserRollup]) -> StoreFuture<'a, ()> {
        let rows: Result<Vec<Row>, StoreError> = rollups
            .iter()
            .map(|rollup| {
                check_user_rollup(rollup)?;
                Ok((
                    rollup_key(
                        rollup.user.as_str(),
                        rollup.granularity,
                        rollup.window_start_ms,
                    ),
                    encode_user_rollup(rollup),
                ))
            })
            .collect();
        self.blocking(move |inner| inner.put_all(&inner.user_rollups, rows?))
    }

    fn read_user_rollups<'a>(
        &'a self,
        query: &'a UserRollupQuery,
    ) -> StoreFuture<'a, RollupPage<UserRollup>> {
        let query = query.clone();
        self.blocking(move |inner| {
            let start_ms = query.start_ms()?;
            let (user, granularity) = (query.subject, query.granularity);
            inner.rollup_page(
                (&inner.user_rollups, "user_rollups"),
                rollup_prefix(user.as_str(), granularity),
                (start_ms, query.to_ms, query.limit),
                |window_start_ms, value| {
                    decode_user_rollup(user, granularity, window_start_ms, value)
                },
            )
        })
    }

    fn put_stream_offsets<'a>(
        &'a self,
        job: &'a str,
        offsets: &'a [(u32, u64)],
    ) -> StoreFuture<'a, ()> {
        let rows: Result<Vec<Row>, StoreError> = check_job_name(job).map(|()| {
            offsets
                .iter()
                .map(|&(partition, offset)| {
                    (offset_key(job, partition), offset.to_be_bytes().to_vec())
                })
                .collect()
        });
        self.blocking(move |inner| inner.put_all(&inner.stream_offsets, rows?))
    }

    fn get_stream_offsets<'a>(&'a self, job: &'a str) -> StoreFuture<'a, Vec<(u32, u64)>> {
        let job = job.to_owned();
        self.blocking(move |inner| {
            check_job_name(&job)?;
            let prefix = id_prefix(&job);
            let location = || format!("{}/stream_offsets/{job}", inner.path.display());
            let mut offsets = Vec::new();
            for item in inner.stream_offsets.prefix(prefix.as_slice()) {
                let (key, value) = item.map_err(|error| inner.engine(error))?;
                let partition: [u8; 4] = key[prefix.len()..]
                    .try_into()
                    .map_err(|_| corrupt("stream offset key", location(), "not job + 4 bytes"))?;
                let offset: [u8; 8] = value
                    .as_ref()
                    .try_into()
                    .map_err(|_| corrupt("stream offset", location(), "not 8 bytes"))?;
                offsets.push((u32::from_be_bytes(partition), u64::from_be_bytes(offset)));
            }
            Ok(offsets)
        })
    }

    fn append_audit<'a>(&'a self, entries: &'a [AuditEntry]) -> StoreFuture<'a, ()> {
        // (key in `audit`, key in `audit_by_subject`, value) per entry.
        type AuditRow = (Vec<u8>, Vec<u8>, Vec<u8>);
        let rows: Result<Vec<AuditRow>, StoreError> = entries
            .iter()
            .map(|entry| {
                check_audit_entry(entry)?;
                let value = serde_json::to_vec(entry)
                    .map_err(|error| corrupt("audit entry", entry.subject.clone(), error))?;
                let key = audit_key(entry.at_ms, entry.seq);
                let mut by_subject = id_prefix(&entry.subject);
                by_subject.extend_from_slice(&key);
                Ok((key.to_vec(), by_subject, value))
            })
            .collect();
        self.blocking(move |inner| {
            let mut batch = inner.keyspace.batch();
            for (key, by_subject, value) in rows? {
                batch.insert(&inner.audit, key, value.clone());
                batch.insert(&inner.audit_by_subject, by_subject, value);
            }
            batch.commit().map_err(|error| inner.engine(error))
        })
    }

    fn read_audit<'a>(&'a self, query: &'a AuditQuery) -> StoreFuture<'a, Vec<AuditEntry>> {
        let query = query.clone();
        self.blocking(move |inner| {
            let limit = query.limit.max(1);
            let (partition, prefix, table) = match &query.subject {
                Some(subject) => (
                    &inner.audit_by_subject,
                    id_prefix(subject),
                    "audit_by_subject",
                ),
                None => (&inner.audit, Vec::new(), "audit"),
            };
            let start = match query.before {
                // Strictly older: every key after the cursor's own.
                Some((at_ms, seq)) => {
                    let mut key = prefix.clone();
                    key.extend_from_slice(&audit_key(at_ms, seq));
                    Bound::Excluded(key)
                }
                None => Bound::Included(prefix.clone()),
            };
            let mut found = Vec::with_capacity(limit.min(1000));
            for item in partition.range((start, Bound::Unbounded)) {
                let (key, value) = item.map_err(|error| inner.engine(error))?;
                if !key.starts_with(&prefix) || found.len() == limit {
                    break;
                }
                let entry: AuditEntry = serde_json::from_slice(&value).map_err(|error| {
                    corrupt(
                        "audit entry",
                        format!("{}/{table}", inner.path.display()),
                        error,
                    )
                })?;
                found.push(entry);
            }
            Ok(found)
        })
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        self.blocking(|inner| {
            inner
                .keyspace
                .persist(PersistMode::SyncAll)
                .map_err(|error| inner.engine(error))
        })
    }

    fn apply_retention(&self, now_ms: i64) -> StoreFuture<'_, u64> {
        self.blocking(move |inner| {
            let mut removed = 0u64;
            if let Some(days) = inner.retention.readings_days {
                let oldest_kept = day_bucket(now_ms) - days as i32;
                let expired: Vec<(i32, PartitionHandle)> = inner
                    .reading_days
                    .read()
                    .range(..oldest_kept)
                    .map(|(day, partition)| (*day, partition.clone()))
                    .collect();
                for (day, partition) in expired {
                    inner.reading_days.write().remove(&day);
                    inner
                        .keyspace
                        .delete_partition(partition)
                        .map_err(|error| inner.engine(error))?;
                    removed += 1;
                }
            }
            if let Some(days) = inner.retention.alerts_days {
                let cutoff_ms = now_ms - i64::from(days) * DAY_MS;
                // Newest first: everything after the first expired key is older still.
                let mut expired = Vec::new();
                for item in inner
                    .alerts_by_time
                    .range(ts_key_desc(cutoff_ms).to_vec()..)
                {
                    let (key, _) = item.map_err(|error| inner.engine(error))?;
                    expired.push(key[8..].to_vec());
                }
                for id in expired {
                    let Some(value) = inner.alerts.get(&id).map_err(|error| inner.engine(error))?
                    else {
                        continue;
                    };
                    let Ok(alert) = serde_json::from_slice::<AlertRecord>(&value) else {
                        continue;
                    };
                    if alert.state.is_open() {
                        continue;
                    }
                    let mut batch = inner.keyspace.batch();
                    batch.remove(&inner.alerts, id.clone());
                    batch.remove(&inner.alerts_by_meter, alert_by_meter_key(&alert));
                    batch.remove(&inner.alerts_by_time, alert_by_time_key(&alert));
                    for item in inner.alert_history.prefix(history_prefix(&alert.id)) {
                        let (key, _) = item.map_err(|error| inner.engine(error))?;
                        batch.remove(&inner.alert_history, key);
                    }
                    batch.commit().map_err(|error| inner.engine(error))?;
                    removed += 1;
                }
            }
            Ok(removed)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn time_keys_sort_like_times(a in any::<i64>(), b in any::<i64>()) {
            prop_assert_eq!(ts_key(a).cmp(&ts_key(b)), a.cmp(&b));
            prop_assert_eq!(ts_key_desc(a).cmp(&ts_key_desc(b)), b.cmp(&a));
            prop_assert_eq!(ts_from_key(&ts_key(a)), Some(a));
        }

        #[test]
        fn readings_encode_and_decode(voltage in 0.0f64..1000.0, energy in 0.0f64..1e12, credit in proptest::option::of(-1e6f64..1e6), seq in proptest::option::of(any::<u64>())) {
            let reading = Reading {
                meter: MeterId::new("m").unwrap(),
                ts_ms: 1_700_000_000_000,
                voltage,
                current: 1.5,
                power_w: 100.0,
                energy_wh: energy,
                credit,
                seq,
                backfill: false,
            };
            prop_assert_eq!(decode_reading(reading.meter, reading.ts_ms, &encode_reading(&reading)), Some(reading));
        }
    }

    fn float() -> impl Strategy<Value = f64> {
        // Any bit pattern but NaN (which is not equal to itself; stored bit-for-bit anyway).
        any::<u64>()
            .prop_map(f64::from_bits)
            .prop_filter("not NaN", |value| !value.is_nan())
    }

    fn granularity() -> impl Strategy<Value = Granularity> {
        prop::sample::select(Granularity::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn meter_rollups_encode_and_decode(
            granularity in granularity(),
            window_start_ms in any::<i64>(),
            window_end_ms in any::<i64>(),
            readings in any::<u64>(),
            expected_readings in any::<u64>(),
            floats in proptest::array::uniform8(float()),
            revision in any::<u32>(),
        ) {
            let rollup = MeterRollup {
                meter: MeterId::new("site.7:m-1").unwrap(),
                granularity,
                window_start_ms,
                window_end_ms,
                readings,
                energy_wh: floats[0],
                power_min_w: floats[1],
                power_avg_w: floats[2],
                power_max_w: floats[3],
                voltage_min: floats[4],
                voltage_max: floats[5],
                expected_readings,
                completeness_pct: floats[6],
                revision,
            };
            let value = encode_meter_rollup(&rollup);
            prop_assert_eq!(value.len(), METER_ROLLUP_VALUE_LEN);
            prop_assert_eq!(
                decode_meter_rollup(rollup.meter, granularity, window_start_ms, &value),
                Some(rollup)
            );
            prop_assert_eq!(decode_meter_rollup(MeterId::new("m").unwrap(), granularity, 0, &value[1..]), None);
        }

        #[test]
        fn user_rollups_encode_and_decode(
            granularity in granularity(),
            window_start_ms in any::<i64>(),
            window_end_ms in any::<i64>(),
            meters in any::<u32>(),
            readings in any::<u64>(),
            energy_wh in float(),
            cost in proptest::option::of(-gridpulse_domain::money::MAX_AMOUNT_MICRO_UNITS..=gridpulse_domain::money::MAX_AMOUNT_MICRO_UNITS),
            currency in proptest::option::of("\\PC{0,8}"),
            revision in any::<u32>(),
        ) {
            let rollup = UserRollup {
                user: UserId::new("u-1").unwrap(),
                granularity,
                window_start_ms,
                window_end_ms,
                meters,
                readings,
                energy_wh,
                cost: cost.map(|micro| Amount::from_micro_units(micro).unwrap()),
                currency,
                revision,
            };
            let value = encode_user_rollup(&rollup);
            prop_assert_eq!(
                decode_user_rollup(rollup.user, granularity, window_start_ms, &value),
                Ok(rollup.clone())
            );
            // Cut short, the value is refused rather than misread (a currency shrinks,
            // so check only values without one).
            if rollup.currency.is_none() {
                prop_assert!(decode_user_rollup(rollup.user, granularity, 0, &value[..value.len() - 1]).is_err());
            }
        }

        #[test]
        fn rollup_keys_sort_by_subject_granularity_then_start(a in any::<i64>(), b in any::<i64>()) {
            let g = Granularity::Day;
            prop_assert_eq!(rollup_key("m", g, a).cmp(&rollup_key("m", g, b)), a.cmp(&b));
            prop_assert!(rollup_key("m", g, a).starts_with(&rollup_prefix("m", g)));
            prop_assert!(!rollup_key("m", Granularity::Hour, a).starts_with(&rollup_prefix("m", g)));
            prop_assert!(!rollup_key("m0", g, a).starts_with(&rollup_prefix("m", g)));
        }
    }

    #[test]
    fn user_rollup_values_that_do_not_decode_exactly_are_refused() {
        let rollup = UserRollup {
            user: UserId::new("u").unwrap(),
            granularity: Granularity::Month,
            window_start_ms: 0,
            window_end_ms: 1,
            meters: 1,
            readings: 1,
            energy_wh: 1.0,
            cost: None,
            currency: None,
            revision: 0,
        };
        let value = encode_user_rollup(&rollup);
        assert_eq!(value.len(), USER_ROLLUP_FIXED_LEN);
        let decode = |value: &[u8]| decode_user_rollup(rollup.user, Granularity::Month, 0, value);
        assert!(decode(&value).is_ok());
        // Trailing bytes without a currency flag, an unknown flag, a bad cost, bad UTF-8.
        let mut trailing = value.clone();
        trailing.push(b'x');
        assert!(decode(&trailing).unwrap_err().contains("bytes"));
        let mut flags = value.clone();
        flags[USER_ROLLUP_FIXED_LEN - 1] = 4;
        assert!(decode(&flags).unwrap_err().contains("flags"));
        let mut cost = value.clone();
        cost[USER_ROLLUP_FIXED_LEN - 1] = HAS_COST;
        cost.extend_from_slice(&i128::MAX.to_le_bytes());
        assert!(decode(&cost).unwrap_err().starts_with("cost"));
        let mut currency = value;
        currency[USER_ROLLUP_FIXED_LEN - 1] = HAS_CURRENCY;
        currency.push(0xff);
        assert!(decode(&currency).unwrap_err().starts_with("currency"));
    }

    #[test]
    fn granularity_codes_are_distinct_and_stable() {
        let codes: Vec<u8> = Granularity::ALL.into_iter().map(granularity_code).collect();
        assert_eq!(codes, vec![0, 1, 2]);
    }

    #[test]
    fn stream_offset_keys_group_by_job() {
        assert!(offset_key("job", u32::MAX) < offset_key("job0", 0));
        assert!(offset_key("job", 1) < offset_key("job", 256));
        assert!(offset_key("job", 7).starts_with(&id_prefix("job")));
        assert!(!offset_key("job0", 7).starts_with(&id_prefix("job")));
    }

    #[test]
    fn reading_keys_group_by_meter_then_time() {
        let a = MeterId::new("a").unwrap();
        let ab = MeterId::new("ab").unwrap();
        // Length-prefixed ids: "a" readings never interleave with "ab" readings.
        assert!(reading_key(&a, i64::MAX) < reading_key(&ab, i64::MIN));
        assert!(reading_key(&a, -5) < reading_key(&a, 5));
    }
}
