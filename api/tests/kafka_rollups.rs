//! The rollup job on Kafka (`gridpulse stream-jobs`), on a real broker (tansu on a free
//! loopback port): readings produced to `readings` are rolled up by timely workers
//! reading each partition at the job's stored checkpoint, upserted into the store; a
//! restarted job resumes from its checkpoints and neither loses nor repeats an hour.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use gridpulse_domain::{Granularity, Limits, MeterId, MeterRollup, Reading};
use gridpulse_ingest::kafka::KafkaConfig;
use gridpulse_ingest::kafka::admin::create_topics;
use gridpulse_ingest::kafka::producer::KafkaReadingProducer;
use gridpulse_ingest::kafka::stream_source::KafkaStreamSource;
use gridpulse_ingest::kafka::test_broker::{TestBroker, watchdog};
use gridpulse_store::embedded::EmbeddedStore;
use gridpulse_store::{MeterRollupQuery, Retention, Store};

/// 2026-11-10T00:00:00Z.
const T0: i64 = 1_794_268_800_000;
const HOUR: i64 = 3_600_000;

fn readings(meter: &MeterId, from: i64, to: i64) -> Vec<Reading> {
    (0..)
        .map(|k| from + k * 10_000)
        .take_while(|ts| *ts < to)
        .map(|ts| Reading {
            meter: *meter,
            ts_ms: ts,
            voltage: 230.0,
            current: 2.0,
            power_w: 360.0,
            energy_wh: 100.0 + ((ts - T0) / 10_000) as f64,
            credit: None,
            seq: None,
            backfill: false,
        })
        .collect()
}

async fn hours(store: &dyn Store, meter: MeterId, n: usize) -> Vec<MeterRollup> {
    let mut rows = Vec::new();
    for _ in 0..600 {
        rows = store
            .read_meter_rollups(&MeterRollupQuery {
                subject: meter,
                granularity: Granularity::Hour,
                from_ms: T0,
                to_ms: T0 + 24 * HOUR,
                limit: 100,
                cursor: None,
            })
            .await
            .unwrap()
            .rollups;
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{n} hourly rollups not stored: {rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_readings_rolled_up_and_resumed_after_restart() {
    let _watchdog = watchdog(
        "kafka_readings_rolled_up_and_resumed_after_restart",
        Duration::from_secs(180),
    );
    let broker = TestBroker::start().expect("a tansu broker (run `make deps`)");
    let mut kafka = KafkaConfig::new(broker.bootstrap());
    kafka.partitions = 2;
    create_topics(&kafka).await.unwrap();
    let dir = std::env::temp_dir().join(format!("gridpulse-kafka-rollups-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(&dir, Retention::default()).unwrap());
    let producer = KafkaReadingProducer::new(&kafka).unwrap();
    let (a, b) = (
        MeterId::new("k-roll-a").unwrap(),
        MeterId::new("k-roll-b").unwrap(),
    );

    let start = |store: Arc<dyn Store>, kafka: KafkaConfig| async move {
        let source = tokio::task::spawn_blocking(move || KafkaStreamSource::new(&kafka).unwrap())
            .await
            .unwrap();
        gridpulse_api::rollups::start_on(store, Arc::new(source), 2, None, Limits::default())
            .await
            .unwrap()
    };
    let job = start(Arc::clone(&store), kafka.clone()).await;
    for meter in [&a, &b] {
        producer
            .append(&readings(meter, T0, T0 + 3 * HOUR + 60_000))
            .await
            .unwrap();
    }
    for meter in [a, b] {
        let rows = hours(&*store, meter, 3).await;
        assert_eq!(rows.len(), 3, "{rows:?}");
        assert!(rows.iter().all(|row| row.readings == 360), "{rows:?}");
        assert_eq!(rows[0].energy_wh, 359.0, "{rows:?}");
        assert_eq!(rows[1].energy_wh, 360.0, "{rows:?}");
    }
    job.shutdown().await;

    // Restart from the stored checkpoints; two more hours arrive.
    let job = start(Arc::clone(&store), kafka.clone()).await;
    for meter in [&a, &b] {
        producer
            .append(&readings(
                meter,
                T0 + 3 * HOUR + 60_000,
                T0 + 5 * HOUR + 60_000,
            ))
            .await
            .unwrap();
    }
    for meter in [a, b] {
        let rows = hours(&*store, meter, 5).await;
        assert_eq!(rows.len(), 5, "each hour once: {rows:?}");
        assert!(rows.iter().all(|row| row.readings == 360), "{rows:?}");
        assert_eq!(
            rows[3].energy_wh, 360.0,
            "the step across the restart counts once: {rows:?}"
        );
    }
    job.shutdown().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
