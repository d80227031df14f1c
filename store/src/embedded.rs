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
//! | `alert_history` | alert id, at, event | JSON [`AlertHistoryEntry`] |
//! | `config` | kind, id | JSON document |
//! | `meta` | `format` | format version |
//!
//! Raw readings get a partition per day so retention drops whole days at once, like
//! Scylla's time-window compaction with TTLs. Keys sort so that every query is one
//! prefix or range scan. fjall's own journal makes writes crash-safe; [`Store::flush`]
//! fsyncs it. The engine is blocking, so every operation runs on tokio's blocking pool.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fjall::{Config, Keyspace, PartitionCreateOptions, PartitionHandle, PersistMode};
use gridpulse_domain::{AlertRecord, MeterId, Reading};
use parking_lot::RwLock;

use crate::error::StoreError;
use crate::model::{
    AlertHistoryEntry, AlertQuery, ConfigKind, DAY_MS, ReadingPage, ReadingQuery, Retention,
    SnapshotRow, StoredAlert, day_bucket, reading_cursor,
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
    let id = meter.as_str().as_bytes();
    let mut key = Vec::with_capacity(1 + id.len() + 8);
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

fn history_key(entry: &AlertHistoryEntry) -> Vec<u8> {
    let mut key = history_prefix(&entry.alert.id);
    key.extend_from_slice(&ts_key(entry.at_ms));
    key.push(entry.event as u8);
    key
}

fn config_key(kind: ConfigKind, id: &str) -> Vec<u8> {
    let mut key = kind.as_str().as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(id.as_bytes());
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
        let events = events.to_vec();
        self.blocking(move |inner| {
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
            let mut found = Vec::new();
            for item in index.prefix(prefix) {
                let (key, _) = item.map_err(|error| inner.engine(error))?;
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
            };
            prop_assert_eq!(decode_reading(reading.meter, reading.ts_ms, &encode_reading(&reading)), Some(reading));
        }
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
