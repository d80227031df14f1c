//! End to end on a real Kafka-protocol broker (tansu on a free loopback port): readings
//! posted over HTTP are produced to `readings`, consumed by the meter actors as a
//! consumer-group member, and their alerts reach websocket clients of the processor and
//! of a separate API replica (through the `alerts` topic).

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::time::Duration;

use futures_util::StreamExt;
use gridpulse_actors::{Clock, SystemClock};
use gridpulse_api::{EmbeddedConfig, EmbeddedSystem};
use gridpulse_ingest::kafka::KafkaConfig;
use gridpulse_ingest::kafka::admin::create_topics;
use gridpulse_ingest::kafka::test_broker::TestBroker;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::{http, step};

#[actix_rt::test]
async fn http_to_kafka_to_actors_to_websocket() {
    let _watchdog = gridpulse_ingest::kafka::test_broker::watchdog(
        "http_to_kafka_to_actors_to_websocket",
        Duration::from_secs(180),
    );
    step("start broker");
    let broker = TestBroker::start().expect("a tansu broker (run `make deps`)");
    let mut kafka = KafkaConfig::new(broker.bootstrap());
    kafka.partitions = 4;
    step("create topics");
    create_topics(&kafka).await.unwrap();
    // An API replica (no meters) beside the processor: its websocket gets the alerts
    // through the `alerts` topic.
    step("start replica");
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
    step("replica websocket");
    let (mut replica_ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{replica_addr}/ws/alerts?snapshot=false"))
            .await
            .unwrap();
    let config = EmbeddedConfig {
        n_workers: 1,
        n_http_workers: 1,
        kafka: Some(kafka),
        ..EmbeddedConfig::default()
    };
    step("start processor");
    let system =
        EmbeddedSystem::start_default_clock(config, TcpListener::bind("127.0.0.1:0").unwrap())
            .await
            .unwrap();
    let addr = system.local_addr;
    actix_rt::spawn(system.server);
    step("processor websocket");
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws/alerts?snapshot=false"))
            .await
            .unwrap();

    let now = SystemClock.now_ms();
    let body = json!([
        {"meter": "kafka-1", "ts_ms": now - 10_000, "voltage": 230.0, "current": 1.0, "power_w": 200.0, "energy_wh": 10.0},
        {"meter": "kafka-1", "ts_ms": now - 5_000, "voltage": 265.0, "current": 1.0, "power_w": 200.0, "energy_wh": 10.2},
        {"meter": "kafka-2", "ts_ms": now - 5_000, "voltage": 190.0, "current": 1.0, "power_w": 200.0, "energy_wh": 3.0},
    ]);
    // Readings posted to the replica go through Kafka to the processor.
    step("post readings");
    let (status, answer) = http(replica_addr, "POST", "/api/readings", &body.to_string()).await;
    assert_eq!((status, &answer["accepted"]), (202, &json!(3)), "{answer}");

    // The consumers join their groups first (a few seconds on tansu), then the alerts
    // come: on the processor's own websocket and on the replica's.
    let expected = vec![
        ("kafka-1".to_owned(), "over_voltage".to_owned()),
        ("kafka-2".to_owned(), "under_voltage".to_owned()),
    ];
    step("await alerts");
    assert_eq!(two_alerts(&mut ws).await, expected, "processor websocket");
    assert_eq!(
        two_alerts(&mut replica_ws).await,
        expected,
        "replica websocket"
    );
    step("list alerts");
    let (status, list) = http(replica_addr, "GET", "/api/alerts?meter=kafka-1", "").await;
    assert_eq!(
        (status, &list["alerts"][0]["kind"]),
        (200, &json!("over_voltage")),
        "{list}"
    );
    // Operations: consumer lag is reported per partition (librdkafka statistics, 1 s).
    step("lag metric");
    let mut lag_seen = false;
    for _ in 0..50 {
        let (_, metrics) = http(addr, "GET", "/metrics", "").await;
        if metrics
            .as_str()
            .unwrap_or_default()
            .contains("gridpulse_ingest_kafka_consumer_lag_records{partition=")
        {
            lag_seen = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(lag_seen, "consumer lag metric missing");
    // The meter state came through Kafka in order.
    let (status, meter) = http(addr, "GET", "/api/meters/kafka-1", "").await;
    assert_eq!((status, &meter["n_readings"]), (200, &json!(2)), "{meter}");

    // Usage re-keyed by user: kafka-3's closed minutes go through `usage-by-user` to the
    // user consumer group, which hosts the user actors.
    let (status, answer) = http(
        addr,
        "PUT",
        "/api/meters/kafka-3",
        r#"{"owner":"kafka-user"}"#,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let minute0 = (now - 600_000) - (now - 600_000).rem_euclid(60_000);
    let body: Vec<Value> = (0..13)
        .map(|k| json!({"meter": "kafka-3", "ts_ms": minute0 + k * 10_000, "voltage": 230.0, "current": 1.0, "power_w": 200.0, "energy_wh": 100.0 + 2.0 * k as f64}))
        .collect();
    let (status, answer) = http(
        replica_addr,
        "POST",
        "/api/readings",
        &Value::Array(body).to_string(),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    step("await usage");
    let mut usage = Value::Null;
    for _ in 0..300 {
        let (status, value) = http(addr, "GET", "/api/users/kafka-user/usage", "").await;
        if status == 200 && value["n_deltas"] == 2 {
            usage = value;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        usage["energy_total_wh"], 22.0,
        "usage deltas reached the user actor: {usage}"
    );
    assert_eq!(usage["last_minute_ms"], minute0 + 60_000, "{usage}");
    // An API replica hosts no users and says where they are.
    let (status, answer) = http(replica_addr, "GET", "/api/users/kafka-user/usage", "").await;
    assert_eq!(status, 503, "{answer}");
    step("done");
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The (meter, kind) of the next two alert events, sorted.
async fn two_alerts(ws: &mut Ws) -> Vec<(String, String)> {
    let mut kinds = Vec::new();
    // One deadline for both (pings arrive every 20 s and must not extend it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while kinds.len() < 2 {
        let message = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("alerts within 30 s")
            .unwrap()
            .unwrap();
        if let Message::Text(text) = message {
            let event: Value = serde_json::from_str(&text).unwrap();
            kinds.push((
                event["alert"]["meter"].as_str().unwrap().to_owned(),
                event["alert"]["kind"].as_str().unwrap().to_owned(),
            ));
        }
    }
    kinds.sort();
    kinds
}
