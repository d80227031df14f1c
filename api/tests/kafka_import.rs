//! Bulk import in Kafka mode on a real Kafka-protocol broker (tansu on a free loopback
//! port): `POST /api/import` on a processor (`gridpulse run --kafka-brokers`) produces
//! the good rows of a CSV with bad ones to `readings`; the processor's meter actors
//! consume them as backfill and store them, and the report names every bad row.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use gridpulse_actors::{Clock, SystemClock};
use gridpulse_api::embedded::Persistence;
use gridpulse_api::{EmbeddedConfig, EmbeddedSystem};
use gridpulse_ingest::kafka::KafkaConfig;
use gridpulse_ingest::kafka::admin::create_topics;
use gridpulse_ingest::kafka::test_broker::{TestBroker, watchdog};
use serde_json::Value;

mod support;
use support::{fresh_data_dir, http, http_with, step};

const HOUR: i64 = 3_600_000;

/// Stored readings of `meter` in `[from, to)` (one page is enough here).
async fn stored(addr: SocketAddr, meter: &str, from: i64, to: i64) -> Vec<Value> {
    let path = format!("/api/meters/{meter}/readings?from={from}&to={to}&limit=10000");
    let (status, body) = http(addr, "GET", &path, "").await;
    assert_eq!(status, 200, "{body}");
    body["readings"].as_array().unwrap().clone()
}

#[actix_rt::test]
async fn import_on_kafka_produces_the_good_rows_and_reports_the_bad_ones() {
    let _watchdog = watchdog(
        "import_on_kafka_produces_the_good_rows_and_reports_the_bad_ones",
        Duration::from_secs(180),
    );
    step("start broker");
    let broker = TestBroker::start().expect("a tansu broker (run `make deps`)");
    let mut kafka = KafkaConfig::new(broker.bootstrap());
    kafka.partitions = 2;
    create_topics(&kafka).await.unwrap();
    let dir = fresh_data_dir("kafka-import", "import");
    let config = EmbeddedConfig {
        n_workers: 1,
        n_http_workers: 1,
        kafka: Some(kafka),
        persistence: Some(Persistence::new(&dir)),
        ..EmbeddedConfig::default()
    };
    step("start processor");
    let system =
        EmbeddedSystem::start_default_clock(config, TcpListener::bind("127.0.0.1:0").unwrap())
            .await
            .unwrap();
    let addr = system.local_addr;
    actix_rt::spawn(system.server);

    // A day ago, on a whole hour: 3 meters × 100 rows, and 4 bad rows among them.
    let base = (SystemClock.now_ms() - 24 * HOUR) / HOUR * HOUR;
    let meters = ["k-imp-1", "k-imp-2", "k-imp-3"];
    let mut csv = String::from("meter,ts,voltage,current,power_w,energy_wh\n");
    let mut bad_lines = Vec::new();
    let mut line = 1;
    for k in 0..100i64 {
        for meter in meters {
            line += 1;
            csv.push_str(&format!(
                "{meter},{},231,1.2,250,{}\n",
                base + k * 10_000,
                500 + k
            ));
        }
        if k % 25 == 10 {
            line += 1;
            bad_lines.push((line, "voltage"));
            csv.push_str(&format!(
                "{},{},high,1,1,1\n",
                meters[0],
                base + k * 10_000 + 1
            ));
        }
    }
    assert_eq!(bad_lines.len(), 4);

    step("import");
    let (status, _, body) = http_with(
        addr,
        "POST",
        "/api/import?format=csv&register_meters=true",
        &[],
        &csv,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let report: Vec<Value> = body
        .as_str()
        .expect("an NDJSON report")
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let (summary, rows) = report.split_last().unwrap();
    let refused: Vec<(u64, &str)> = rows
        .iter()
        .map(|row| {
            (
                row["line"].as_u64().unwrap(),
                row["field"].as_str().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(u64, &str)> = bad_lines.iter().map(|(l, f)| (*l as u64, *f)).collect();
    assert_eq!(refused, expected, "{report:?}");
    let summary = &summary["summary"];
    assert_eq!(summary["rows"], 304, "{summary}");
    assert_eq!(summary["accepted"], 300, "{summary}");
    assert_eq!(summary["rejected"], 4, "{summary}");
    assert_eq!(summary["duplicates"], 0, "{summary}");
    assert_eq!(summary["meters_registered"], 3, "{summary}");
    assert_eq!(summary["complete"], true, "{summary}");

    // Through `readings` to the meter actors, stored as backfill (no live alert).
    step("await stored readings");
    for meter in meters {
        let mut rows = Vec::new();
        for _ in 0..600 {
            rows = stored(addr, meter, base, base + HOUR).await;
            if rows.len() >= 100 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(rows.len(), 100, "{meter}: {rows:?}");
        assert_eq!(rows[99]["energy_wh"], 599.0, "{meter}");
        assert_eq!(rows[0]["ts_ms"], base, "{meter}");
    }
    let (status, alerts) = http(addr, "GET", "/api/alerts?meter=k-imp-1", "").await;
    assert_eq!(status, 200, "{alerts}");
    assert_eq!(alerts["alerts"].as_array().unwrap().len(), 0, "{alerts}");
    step("done");
}
