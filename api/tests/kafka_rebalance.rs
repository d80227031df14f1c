//! Two processors in one consumer group on a real broker (tansu), sharing one store (as
//! processors share ScyllaDB in production): partitions split when the second joins,
//! move back when it leaves, and every meter's state and alerts survive the moves —
//! each reading applied exactly once, no alert duplicated. A revoked partition
//! checkpoints and commits before it is handed over.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridpulse_actors::{Clock, SystemClock};
use gridpulse_api::embedded::Persistence;
use gridpulse_api::{EmbeddedConfig, EmbeddedSystem};
use gridpulse_domain::{MeterId, Reading};
use gridpulse_ingest::kafka::KafkaConfig;
use gridpulse_ingest::kafka::admin::create_topics;
use gridpulse_ingest::kafka::producer::KafkaReadingProducer;
use gridpulse_ingest::kafka::test_broker::TestBroker;
use gridpulse_store::embedded::EmbeddedStore;
use gridpulse_store::{AlertQuery, Retention, Store};

mod support;
use support::http;

const N_METERS: usize = 20;
const PER_BATCH: usize = 10;

fn batch(base_ms: i64, batch_idx: usize) -> Vec<Reading> {
    let mut readings = Vec::new();
    for step in 0..PER_BATCH {
        let n = batch_idx * PER_BATCH + step;
        for meter in 0..N_METERS {
            readings.push(Reading {
                meter: MeterId::new(&format!("rb-{meter:02}")).unwrap(),
                ts_ms: base_ms + n as i64 * 5_000,
                // One over-voltage reading per batch: one alert per meter per batch.
                voltage: if step == 5 { 262.0 } else { 231.0 },
                current: 1.0,
                power_w: 200.0,
                energy_wh: 100.0 + n as f64,
                credit: None,
                seq: Some(n as u64),
                backfill: false,
            });
        }
    }
    readings
}

async fn start(kafka: &KafkaConfig, store: &Arc<dyn Store>) -> EmbeddedSystem {
    let mut persistence = Persistence::new(std::env::temp_dir());
    persistence.store = Some(Arc::clone(store));
    // No timed checkpoints: offsets are committed only when a partition is handed over
    // (revoked) or at shutdown, so the test sees that hand-overs commit.
    persistence.checkpoint_interval = Duration::from_secs(3_600);
    let config = EmbeddedConfig {
        n_workers: 1,
        n_http_workers: 1,
        kafka: Some(kafka.clone()),
        persistence: Some(persistence),
        ..EmbeddedConfig::default()
    };
    EmbeddedSystem::start_default_clock(config, TcpListener::bind("127.0.0.1:0").unwrap())
        .await
        .unwrap()
}

#[actix_rt::test]
async fn meters_move_between_processors_without_loss_or_duplicates() {
    let _watchdog = gridpulse_ingest::kafka::test_broker::watchdog(
        "meters_move_between_processors_without_loss_or_duplicates",
        Duration::from_secs(240),
    );
    let broker = TestBroker::start().expect("a tansu broker (run `make deps`)");
    let mut kafka = KafkaConfig::new(broker.bootstrap());
    kafka.partitions = 4;
    kafka.group_id = "rebalance-test".into();
    create_topics(&kafka).await.unwrap();
    let dir = std::env::temp_dir().join(format!("gridpulse-rebalance-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir, Retention::default()).unwrap());
    let producer = KafkaReadingProducer::new(&kafka).unwrap();
    let base_ms = SystemClock.now_ms() - 3_600_000;

    // Processor A alone.
    let a = start(&kafka, &store).await;
    let a_addr = a.local_addr;
    actix_rt::spawn(a.server);
    producer.append(&batch(base_ms, 0)).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.state.meters.n_applied() < (N_METERS * PER_BATCH) as u64 {
        assert!(Instant::now() < deadline, "A never consumed batch 0");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Processor B joins: partitions split; batch 1 is shared between them.
    let b = start(&kafka, &store).await;
    let b_server = b.server.handle();
    actix_rt::spawn(b.server);
    let b_state = b.state.clone();
    drop(b.state);
    let deadline = Instant::now() + Duration::from_secs(60);
    while b_state.meters.n_applied() == 0 {
        if Instant::now() > deadline {
            panic!("B never got a partition");
        }
        producer.append(&batch(base_ms, 1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A handed its partitions over at the rebalance: the snapshots of batch 0 are stored
    // and their offsets committed (nothing else commits here before a shutdown).
    let committed = gridpulse_ingest::kafka::admin::committed_reading_offsets(&kafka, 4).unwrap();
    let n_committed: i64 = committed.iter().map(|offset| offset.unwrap_or(0)).sum();
    assert!(
        n_committed >= (N_METERS * PER_BATCH) as i64,
        "hand-over commits cover batch 0: {committed:?}"
    );

    // B leaves cleanly (final checkpoint, then its consumer leaves the group).
    b_server.stop(false).await;
    EmbeddedSystem::shutdown(&b_state).await.unwrap();
    drop(b_state);

    // Batch 2 goes to A, which gets every partition back and restores B's meters.
    producer.append(&batch(base_ms, 2)).await.unwrap();
    let last_ts = base_ms + (3 * PER_BATCH as i64 - 1) * 5_000;
    let deadline = Instant::now() + Duration::from_secs(90);
    for meter in 0..N_METERS {
        loop {
            let (status, state) =
                http(a_addr, "GET", &format!("/api/meters/rb-{meter:02}"), "").await;
            if status == 200 && state["last_reading"]["ts_ms"] == last_ts {
                // Every reading applied exactly once across the moves (batch 1 may have
                // been produced several times: duplicates are stale and not counted).
                assert_eq!(state["n_readings"], 3 * PER_BATCH, "rb-{meter:02}: {state}");
                assert!(
                    state["open_alerts"].as_array().unwrap().is_empty(),
                    "{state}"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "rb-{meter:02} never caught up on A: {status} {state}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Alerts: exactly one per meter per batch, stable ids, nothing twice.
    a.state.meters.checkpoint_all().await.unwrap();
    let stored = store
        .query_alerts(&AlertQuery {
            limit: 10_000,
            ..AlertQuery::default()
        })
        .await
        .unwrap();
    let ids: Vec<String> = stored.iter().map(|alert| alert.id.clone()).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "duplicated alerts: {ids:?}");
    let expected: BTreeSet<String> = (0..3)
        .flat_map(|b| {
            (0..N_METERS).map(move |m| {
                format!(
                    "rb-{m:02}.over_voltage.{}",
                    base_ms + (b * PER_BATCH as i64 + 5) * 5_000
                )
            })
        })
        .collect();
    assert_eq!(ids.iter().cloned().collect::<BTreeSet<_>>(), expected);
    let _ = std::fs::remove_dir_all(&dir);
}
