//! Users and money in Kafka mode, on a real broker (tansu on a free loopback port):
//! readings posted over HTTP are produced to `readings`, the meter actors (a consumer
//! group member) produce closed minutes to `usage-by-user`, the user consumer group
//! hosts the user actors, and every money event kind — budget 70/90/100 %, low credit,
//! running out, exhausted, auto top-up requested, confirmed — reaches the processor's
//! websocket, each once, and an API replica's websocket through `user-events`.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::time::Duration;

use futures_util::StreamExt;
use gridpulse_api::embedded::Persistence;
use gridpulse_api::{EmbeddedConfig, EmbeddedSystem};
use gridpulse_ingest::kafka::KafkaConfig;
use gridpulse_ingest::kafka::admin::create_topics;
use gridpulse_ingest::kafka::test_broker::{TestBroker, watchdog};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::{fresh_data_dir, http, step};

/// 2026-11-10T10:00:00Z, mid-period.
const MINUTE0: i64 = 1_794_304_800_000;

/// Readings every 10 s, the register rising 5 Wh each (30 Wh = 3.00 a minute at
/// 100.00/kWh).
fn readings(meter: &str, steps: std::ops::Range<i64>) -> Value {
    Value::Array(
        steps
            .map(|k| {
                json!({"meter": meter, "ts_ms": MINUTE0 + k * 10_000, "voltage": 230.0,
                       "current": 8.0, "power_w": 1800.0, "energy_wh": 1000.0 + 5.0 * k as f64})
            })
            .collect(),
    )
}

/// `type:kind` of every user event until all of `wanted` were seen or 60 s passed.
async fn events_until(ws: &mut support::Ws, wanted: &[&str]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !wanted.iter().all(|w| seen.iter().any(|s| s == w)) {
        let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, ws.next()).await else {
            break;
        };
        if let Message::Text(text) = message {
            let event: Value = serde_json::from_str(&text).unwrap();
            seen.push(match event["type"].as_str().unwrap() {
                "budget" => format!("budget:{}", event["threshold_percent"]),
                "credit" => format!(
                    "credit:{}:{}",
                    event["event"]["type"].as_str().unwrap(),
                    event["event"]["alert"].as_str().unwrap()
                ),
                "top_up" => format!("top_up:{}", event["event"]["type"].as_str().unwrap()),
                other => other.to_owned(),
            });
        }
    }
    seen
}

#[actix_rt::test]
async fn every_money_event_kind_through_kafka() {
    let _watchdog = watchdog(
        "every_money_event_kind_through_kafka",
        Duration::from_secs(240),
    );
    step("start broker");
    let broker = TestBroker::start().expect("a tansu broker (run `make deps`)");
    let mut kafka = KafkaConfig::new(broker.bootstrap());
    kafka.partitions = 2;
    create_topics(&kafka).await.unwrap();
    // An API replica beside the processor: its websocket gets the user events through
    // the `user-events` topic.
    let replica = EmbeddedSystem::start_default_clock(
        EmbeddedConfig {
            n_partitions: 1,
            n_workers: 1,
            n_http_workers: 1,
            kafka: Some(kafka.clone()),
            api_only: true,
            ..EmbeddedConfig::default()
        },
        TcpListener::bind("127.0.0.1:0").unwrap(),
    )
    .await
    .unwrap();
    let replica_addr = replica.local_addr;
    actix_rt::spawn(replica.server);
    let dir = fresh_data_dir("kafka-money", "events");
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

    let tariff = json!({"id": "dear", "name": "Test", "definition": {"currency": "GBP",
        "time_zone": "UTC", "billing_period_start_day": 1, "standing_charge_per_day": "0",
        "energy": {"kind": "flat", "rate_per_kwh": "100.00"}}});
    let (status, body) = http(addr, "POST", "/api/tariffs", &tariff.to_string()).await;
    assert_eq!(status, 201, "{body}");
    let account = json!({"id": "u-k", "name": "Kafka user", "tariff": "dear", "monthly_budget": "10.00",
        "credit": {"low_credit_threshold": "5", "run_out_warning_hours": 1,
                   "auto_top_up": {"trigger": "3", "amount": "10"}}});
    let (status, body) = http(addr, "POST", "/api/users", &account.to_string()).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = http(
        addr,
        "PUT",
        "/api/meters/m-k",
        r#"{"owner":"u-k","tariff":"dear","prepaid":true}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/ws/alerts?snapshot=false&user=u-k&types=budget,credit,top_up"
    ))
    .await
    .unwrap();
    let (mut replica_ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{replica_addr}/ws/alerts?snapshot=false&user=u-k&types=budget,credit,top_up"
    ))
    .await
    .unwrap();
    let (status, body) = http(
        addr,
        "POST",
        "/api/meters/m-k/topups",
        r#"{"amount":"13.00","idempotency_key":"k1"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");

    step("readings through kafka");
    let (status, body) = http(
        addr,
        "POST",
        "/api/readings",
        &readings("m-k", 0..26).to_string(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let first = [
        "top_up:top_up_completed",
        "budget:70",
        "budget:90",
        "budget:100",
        "credit:alert_raised:running_out",
        "credit:alert_raised:low_credit",
        "top_up:auto_top_up_requested",
    ];
    let seen = events_until(&mut ws, &first).await;
    for kind in first {
        assert_eq!(
            seen.iter().filter(|s| *s == kind).count(),
            1,
            "{kind} once in {seen:?}"
        );
    }
    step("the replica relays them");
    let relayed = events_until(&mut replica_ws, &first).await;
    for kind in first {
        assert_eq!(
            relayed.iter().filter(|s| *s == kind).count(),
            1,
            "{kind} once on the replica: {relayed:?}"
        );
    }
    let (status, credit) = http(addr, "GET", "/api/meters/m-k/credit", "").await;
    assert_eq!(status, 200, "{credit}");
    let request = credit["pending_auto_top_up"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = http(addr, "POST", &format!("/api/topups/{request}/confirm"), "").await;
    assert_eq!(status, 200, "{body}");

    step("more readings: exhausted");
    let (status, body) = http(
        addr,
        "POST",
        "/api/readings",
        &readings("m-k", 26..60).to_string(),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let later = [
        "top_up:auto_top_up_confirmed",
        "credit:alert_raised:exhausted",
    ];
    let seen = events_until(&mut ws, &later).await;
    for kind in later {
        assert_eq!(
            seen.iter().filter(|s| *s == kind).count(),
            1,
            "{kind} once in {seen:?}"
        );
    }
    assert!(
        !seen.iter().any(|s| s.starts_with("budget:")),
        "no budget threshold twice: {seen:?}"
    );
    let (status, cost) = http(addr, "GET", "/api/users/u-k/cost", "").await;
    assert_eq!(status, 200, "{cost}");
    assert_eq!(
        cost["budget"]["thresholds_reported"],
        json!([70, 90, 100]),
        "{cost}"
    );
    step("done");
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
