//! The store conformance suite: one set of checks of the `Store` interface, run against
//! the embedded backend always and against ScyllaDB when `GRIDPULSE_SCYLLA_NODES` is set
//! (e.g. `GRIDPULSE_SCYLLA_NODES=127.0.0.1:9042 cargo test -p gridpulse-store --test
//! conformance`). Ids are unique per run, so a shared Scylla keyspace is fine.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicU64, Ordering};

use gridpulse_domain::{
    AlertEventKind, AlertKind, AlertRecord, AlertState, MeterId, Reading, Severity, alert_id,
};
use gridpulse_store::embedded::EmbeddedStore;
use gridpulse_store::{
    AlertHistoryEntry, AlertQuery, ConfigKind, ReadingQuery, Retention, SnapshotRow, Store,
};

const DAY_MS: i64 = 86_400_000;
/// 2025-02-19 22:00 UTC: two hours before a day boundary.
const T0: i64 = 1_740_002_400_000;

fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}-{:x}-{}",
        nanos % 0xffff_ffff,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

fn reading(meter: MeterId, ts_ms: i64, energy_wh: f64) -> Reading {
    Reading {
        meter,
        ts_ms,
        voltage: 230.5,
        current: 1.25,
        power_w: 250.0,
        energy_wh,
        credit: (ts_ms % 2 == 0).then_some(12.5),
        seq: Some(ts_ms as u64 / 1000),
    }
}

fn alert(meter: MeterId, kind: AlertKind, first_seen_ms: i64, state: AlertState) -> AlertRecord {
    AlertRecord {
        id: alert_id(&meter, kind, first_seen_ms),
        meter,
        kind,
        severity: Severity::Critical,
        state,
        first_seen_ms,
        last_seen_ms: first_seen_ms + 10_000,
        count: 3,
        value: 262.0,
        threshold: 253.0,
        acknowledged_by: None,
        acknowledged_at_ms: None,
        resolved_by: None,
        resolved_at_ms: None,
    }
}

/// Readings across a day boundary: ranges, paging with cursors, idempotent re-writes.
async fn readings_across_buckets(store: &dyn Store) {
    let meter = MeterId::new(&unique("conf-r")).unwrap();
    let other = MeterId::new(&unique("conf-r")).unwrap();
    // Every 10 minutes for 6 hours: crosses midnight at T0 + 2 h.
    let readings: Vec<Reading> = (0..36)
        .map(|i| reading(meter, T0 + i * 600_000, 1000.0 + i as f64))
        .collect();
    store.write_readings(&readings).await.unwrap();
    store
        .write_readings(&[reading(other, T0, 1.0)])
        .await
        .unwrap();
    // Writing the same rows again changes nothing (idempotent upsert).
    store.write_readings(&readings[10..20]).await.unwrap();

    let query = |from_ms, to_ms, limit, cursor| ReadingQuery {
        meter,
        from_ms,
        to_ms,
        limit,
        cursor,
    };
    let all = store
        .read_readings(&query(T0 - DAY_MS, T0 + DAY_MS, 1000, None))
        .await
        .unwrap();
    assert_eq!(
        all.readings, readings,
        "every reading once, in order, nothing of the other meter"
    );
    assert_eq!(all.next_cursor, None);

    // A range inside: [from, to) semantics.
    let part = store
        .read_readings(&query(T0 + 600_000, T0 + 3 * 600_000, 1000, None))
        .await
        .unwrap();
    assert_eq!(part.readings, readings[1..3].to_vec());

    // Paging 7 at a time across the day boundary reproduces the whole range.
    let mut paged = Vec::new();
    let mut cursor = None;
    let mut n_pages = 0;
    loop {
        let page = store
            .read_readings(&query(T0, T0 + DAY_MS, 7, cursor))
            .await
            .unwrap();
        assert!(page.readings.len() <= 7);
        paged.extend(page.readings);
        n_pages += 1;
        match page.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(n_pages < 20, "paging does not terminate");
    }
    assert_eq!(paged, readings);
    assert_eq!(n_pages, 6);

    // Bad ranges are refused with the field named.
    let error = store
        .read_readings(&query(T0, T0, 10, None))
        .await
        .unwrap_err();
    assert!(error.to_string().starts_with("to:"), "{error}");
    let error = store
        .read_readings(&query(T0, T0 + 1000, 10, Some("garbage".into())))
        .await
        .unwrap_err();
    assert!(error.to_string().starts_with("cursor:"), "{error}");
}

/// Snapshots and checkpoints: upsert, read back, overwrite.
async fn snapshots_and_checkpoints(store: &dyn Store) {
    let meter = MeterId::new(&unique("conf-s")).unwrap();
    assert_eq!(store.get_snapshot(meter).await.unwrap(), None);
    let mut row = SnapshotRow {
        meter,
        partition: 3,
        applied_offset: Some(41),
        state: vec![1, 2, 3, 250],
        written_at_ms: T0,
    };
    store
        .put_snapshots(std::slice::from_ref(&row))
        .await
        .unwrap();
    assert_eq!(store.get_snapshot(meter).await.unwrap(), Some(row.clone()));
    row.applied_offset = Some(99);
    row.state = vec![9; 1000];
    store
        .put_snapshots(std::slice::from_ref(&row))
        .await
        .unwrap();
    assert_eq!(store.get_snapshot(meter).await.unwrap(), Some(row));

    // Checkpoints: a partition number unlikely to be used by a live system.
    let partition = 900_000 + (T0 as u32 % 1000);
    store.put_checkpoint(partition, 10).await.unwrap();
    store.put_checkpoint(partition, 12).await.unwrap();
    assert_eq!(store.get_checkpoint(partition).await.unwrap(), Some(12));
    assert_eq!(store.get_checkpoint(partition + 1).await.unwrap(), None);
    store.flush().await.unwrap();
}

/// Alerts with history; queries by meter and by time; replays write the same rows.
async fn alert_history(store: &dyn Store) {
    let meter = MeterId::new(&unique("conf-a")).unwrap();
    let raised = alert(meter, AlertKind::OverVoltage, T0, AlertState::Firing);
    let mut acked = raised.clone();
    acked.state = AlertState::Acknowledged;
    acked.acknowledged_by = Some("alice".into());
    acked.acknowledged_at_ms = Some(T0 + 60_000);
    let mut resolved = acked.clone();
    resolved.state = AlertState::Resolved;
    resolved.resolved_by = Some("system".into());
    resolved.resolved_at_ms = Some(T0 + 120_000);
    let entries = vec![
        AlertHistoryEntry::from_change(AlertEventKind::Raised, raised.clone()),
        AlertHistoryEntry::from_change(AlertEventKind::Acknowledged, acked.clone()),
        AlertHistoryEntry::from_change(AlertEventKind::Resolved, resolved.clone()),
    ];
    store.write_alert_events(&entries).await.unwrap();
    // A replay writes the same entries again: nothing duplicates.
    store.write_alert_events(&entries[..1]).await.unwrap();
    store.write_alert_events(&entries[1..]).await.unwrap();

    let stored = store.get_alert(&raised.id).await.unwrap().unwrap();
    assert_eq!(stored.alert, resolved);
    assert_eq!(
        stored.history, entries,
        "three entries, oldest first, no duplicate"
    );
    assert_eq!(stored.history[1].by, "alice");
    assert!(
        store
            .get_alert("no-such.over_voltage.1")
            .await
            .unwrap()
            .is_none()
    );

    // A second, later alert on the same meter, still open.
    let later = alert(meter, AlertKind::NoData, T0 + 3_600_000, AlertState::Firing);
    store
        .write_alert_events(&[AlertHistoryEntry::from_change(
            AlertEventKind::Raised,
            later.clone(),
        )])
        .await
        .unwrap();
    let by_meter = store
        .query_alerts(&AlertQuery {
            meter: Some(meter),
            limit: 10,
            ..AlertQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(
        by_meter,
        vec![later.clone(), resolved.clone()],
        "newest first"
    );
    let open = store
        .query_alerts(&AlertQuery {
            meter: Some(meter),
            state: Some(AlertState::Firing),
            limit: 10,
            ..AlertQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(open, vec![later.clone()]);
    let since = store
        .query_alerts(&AlertQuery {
            since_ms: Some(T0 + 1),
            kind: Some(AlertKind::NoData),
            limit: 1000,
            ..AlertQuery::default()
        })
        .await
        .unwrap();
    assert!(since.contains(&later));
    assert!(!since.iter().any(|alert| alert.id == raised.id));
}

/// Configuration documents: upsert, list, delete.
async fn configuration(store: &dyn Store) {
    let id = unique("conf-c");
    store
        .put_config(ConfigKind::Tariff, &id, br#"{"flat":0.25}"#)
        .await
        .unwrap();
    store
        .put_config(ConfigKind::Tariff, &id, br#"{"flat":0.30}"#)
        .await
        .unwrap();
    assert_eq!(
        store
            .get_config(ConfigKind::Tariff, &id)
            .await
            .unwrap()
            .as_deref(),
        Some(br#"{"flat":0.30}"#.as_slice())
    );
    assert_eq!(
        store.get_config(ConfigKind::User, &id).await.unwrap(),
        None,
        "kinds are separate"
    );
    let listed = store.list_config(ConfigKind::Tariff).await.unwrap();
    assert!(listed.iter().any(|(listed_id, _)| *listed_id == id));
    store.delete_config(ConfigKind::Tariff, &id).await.unwrap();
    assert_eq!(
        store.get_config(ConfigKind::Tariff, &id).await.unwrap(),
        None
    );
}

async fn check_all(store: &dyn Store) {
    readings_across_buckets(store).await;
    snapshots_and_checkpoints(store).await;
    alert_history(store).await;
    configuration(store).await;
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn embedded_backend_conforms() {
    let dir = temp_dir("gridpulse-conformance");
    let store = EmbeddedStore::open(&dir, Retention::default()).unwrap();
    check_all(&store).await;
    drop(store);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn embedded_data_survives_reopen_and_retention_drops_old_days() {
    let dir = temp_dir("gridpulse-reopen");
    let meter = MeterId::new("reopen-1").unwrap();
    let now = T0 + 30 * DAY_MS;
    {
        let store = EmbeddedStore::open(&dir, Retention::default()).unwrap();
        store
            .write_readings(&[reading(meter, T0, 1.0), reading(meter, now - 1000, 2.0)])
            .await
            .unwrap();
        store.flush().await.unwrap();
    }
    let store = EmbeddedStore::open(
        &dir,
        Retention {
            readings_days: Some(7),
            alerts_days: Some(7),
        },
    )
    .unwrap();
    let query = ReadingQuery {
        meter,
        from_ms: T0 - DAY_MS,
        to_ms: now,
        limit: 10,
        cursor: None,
    };
    assert_eq!(
        store.read_readings(&query).await.unwrap().readings.len(),
        2,
        "survives reopen"
    );
    // Retention: the 30-day-old day bucket goes, the recent one stays; resolved alerts
    // older than 7 days go, open ones stay.
    let old_resolved = alert(meter, AlertKind::OverVoltage, T0, AlertState::Resolved);
    let old_open = alert(meter, AlertKind::NoData, T0, AlertState::Firing);
    store
        .write_alert_events(&[
            AlertHistoryEntry::from_change(AlertEventKind::Resolved, old_resolved.clone()),
            AlertHistoryEntry::from_change(AlertEventKind::Raised, old_open.clone()),
        ])
        .await
        .unwrap();
    let removed = store.apply_retention(now).await.unwrap();
    assert_eq!(removed, 2, "one day partition and one resolved alert");
    let left = store.read_readings(&query).await.unwrap().readings;
    assert_eq!(left, vec![reading(meter, now - 1000, 2.0)]);
    assert!(store.get_alert(&old_resolved.id).await.unwrap().is_none());
    assert!(store.get_alert(&old_open.id).await.unwrap().is_some());
    drop(store);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn embedded_refuses_an_incompatible_data_directory() {
    let dir = temp_dir("gridpulse-version");
    {
        let keyspace = fjall::Config::new(&dir).open().unwrap();
        let meta = keyspace.open_partition("meta", Default::default()).unwrap();
        meta.insert("format", "999").unwrap();
        keyspace.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    let error = EmbeddedStore::open(&dir, Retention::default())
        .unwrap_err()
        .to_string();
    assert!(error.contains("format version 999"), "{error}");
    assert!(error.contains(&dir.display().to_string()), "{error}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn scylla_backend_conforms_when_configured() {
    let Some(config) = gridpulse_store::scylla_store::ScyllaConfig::from_env().unwrap() else {
        eprintln!(
            "skipped: set GRIDPULSE_SCYLLA_NODES=host:port to run the conformance suite against ScyllaDB"
        );
        return;
    };
    gridpulse_store::scylla_store::migrate(&config)
        .await
        .unwrap();
    let store = gridpulse_store::scylla_store::ScyllaStore::connect(config)
        .await
        .unwrap();
    check_all(&store).await;
}
