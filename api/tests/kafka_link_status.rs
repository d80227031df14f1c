//! A meter's MQTT link status through Kafka (tansu on a free loopback port): the
//! bridge's `LinkSink` in Kafka mode produces a `link-status` record to `readings`
//! (key = meter, after the meter's readings); the processor's consumer turns it into the
//! link change: `offline` raises the meter's `no_data` at once (the no-data timeout is
//! an hour), counted from just after the reading before it, and `online` clears it.
//! End to end with the real bridge too: a Kafka processor's own `--mqtt` bridge on a
//! real Mosquitto, a meter whose TCP connection is cut publishes its last will.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gridpulse_actors::{Clock, SystemClock};
use gridpulse_api::{EmbeddedConfig, EmbeddedSystem};
use gridpulse_domain::{MeterId, Reading};
use gridpulse_ingest::kafka::KafkaConfig;
use gridpulse_ingest::kafka::admin::create_topics;
use gridpulse_ingest::kafka::producer::KafkaReadingProducer;
use gridpulse_ingest::kafka::test_broker::TestBroker;
use gridpulse_ingest::mqtt::LinkSink;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::{Ws, http, step};

fn reading(meter: &str, ts_ms: i64) -> Reading {
    Reading {
        meter: MeterId::new(meter).unwrap(),
        ts_ms,
        voltage: 230.0,
        current: 1.0,
        power_w: 200.0,
        energy_wh: 10.0 + (ts_ms % 100_000) as f64 / 1e4,
        credit: None,
        seq: None,
        backfill: false,
    }
}

/// The next alert event of `meter` within `within`.
async fn next_event(ws: &mut Ws, meter: &str, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "alert" && value["alert"]["meter"] == meter {
                    return Some(value);
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => return None,
        }
    }
}

async fn n_readings(addr: std::net::SocketAddr, meter: &str) -> Value {
    let (_, state) = http(addr, "GET", &format!("/api/meters/{meter}"), "").await;
    state["n_readings"].clone()
}

/// Topics on `broker` for `group`, and a processor on them (no-data timeout an hour,
/// so only link changes raise `no_data`) with `mqtt` as its own bridge if given, and a
/// websocket on its unfiltered alerts.
async fn start_processor(
    broker: &TestBroker,
    group: &str,
    mqtt: Option<gridpulse_ingest::mqtt::MqttBridgeConfig>,
) -> (KafkaConfig, std::net::SocketAddr, Ws) {
    let mut kafka = KafkaConfig::new(broker.bootstrap());
    kafka.partitions = 4;
    kafka.group_id = group.into();
    create_topics(&kafka).await.unwrap();
    let mut config = EmbeddedConfig {
        n_workers: 1,
        n_http_workers: 1,
        kafka: Some(kafka.clone()),
        mqtt,
        ..EmbeddedConfig::default()
    };
    config.default_thresholds.no_data_timeout_s = 3_600;
    let system =
        EmbeddedSystem::start_default_clock(config, TcpListener::bind("127.0.0.1:0").unwrap())
            .await
            .unwrap();
    let addr = system.local_addr;
    actix_rt::spawn(system.server);
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/alerts?snapshot=false"))
        .await
        .unwrap();
    (kafka, addr, ws)
}

#[actix_rt::test]
async fn a_link_status_in_readings_raises_no_data_through_the_processor_and_online_clears_it() {
    let _watchdog = gridpulse_ingest::kafka::test_broker::watchdog(
        "a_link_status_in_readings_raises_no_data_through_the_processor",
        Duration::from_secs(180),
    );
    step("start broker");
    let broker = TestBroker::start().expect("a tansu broker (run `make deps`)");
    step("start processor");
    let (kafka, addr, mut ws) = start_processor(&broker, "link-status-processors", None).await;
    // The bridge's side: readings, then the status, through the same producer.
    let bridge = KafkaReadingProducer::new(&kafka).unwrap();
    let meter = MeterId::new("kl-1").unwrap();
    step("a first reading, through the consumer group");
    let t0 = SystemClock.now_ms() - 5_000;
    bridge.append(&[reading("kl-1", t0)]).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while n_readings(addr, "kl-1").await != 1 {
        assert!(Instant::now() < deadline, "the processor never applied it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    step("a second reading and at once the last will");
    let t1 = t0 + 2_000;
    bridge.append(&[reading("kl-1", t1)]).await.unwrap();
    let sent = Instant::now();
    let at_ms = SystemClock.now_ms();
    bridge.link_changed(meter, false, at_ms).await.unwrap();
    let raised = next_event(&mut ws, "kl-1", Duration::from_secs(20))
        .await
        .expect("no_data raised by the link-status record");
    let took = sent.elapsed();
    assert_eq!(raised["event"], "raised", "{raised}");
    assert_eq!(raised["alert"]["kind"], "no_data", "{raised}");
    // Ordered after the reading produced before it.
    assert_eq!(raised["alert"]["first_seen_ms"], t1 + 1, "{raised}");
    assert_eq!(raised["note"]["by"], "mqtt", "{raised}");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_eq!(n_readings(addr, "kl-1").await, 2);
    let (_, alerts) = http(addr, "GET", "/api/alerts?meter=kl-1&kind=no_data", "").await;
    let open: Vec<&Value> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|alert| alert["state"] != "resolved")
        .collect();
    assert_eq!(open.len(), 1, "{alerts}");
    eprintln!("link-status record -> no_data on the websocket in {took:?}");

    step("online clears it");
    bridge
        .link_changed(meter, true, SystemClock.now_ms())
        .await
        .unwrap();
    let resolved = next_event(&mut ws, "kl-1", Duration::from_secs(20))
        .await
        .expect("online resolved it");
    assert_eq!(resolved["event"], "resolved", "{resolved}");
    assert_eq!(resolved["alert"]["id"], raised["alert"]["id"]);
    // Never a reading: the meter applied exactly its two readings.
    assert_eq!(n_readings(addr, "kl-1").await, 2);
    step("done");
}

#[actix_rt::test]
async fn a_last_will_through_a_kafka_processors_bridge_raises_no_data_at_once() {
    let _watchdog = gridpulse_ingest::kafka::test_broker::watchdog(
        "a_last_will_through_a_kafka_processors_bridge_raises_no_data_at_once",
        Duration::from_secs(180),
    );
    step("start brokers");
    let broker = TestBroker::start().expect("a tansu broker (run `make deps`)");
    let mosquitto =
        gridpulse_ingest::mqtt::test_broker::TestMosquitto::start().expect("mosquitto starts");
    let port = mosquitto.addr().port();
    let mut mqtt = gridpulse_ingest::mqtt::MqttBridgeConfig::new("127.0.0.1", port);
    mqtt.client_id = "bridge-kafka-lwt".into();
    mqtt.min_backoff = Duration::from_millis(50);
    step("start processor with its bridge");
    let (_kafka, addr, mut ws) = start_processor(&broker, "last-will-processors", Some(mqtt)).await;
    support::bridge_connected(addr, true).await;
    let ts_ms = SystemClock.now_ms() - 1_000;
    let meter = support::meter_with_last_will(
        port,
        "kw-1",
        serde_json::to_string(&reading("kw-1", ts_ms)).unwrap(),
    )
    .await;
    step("the reading reaches the meter through Kafka");
    let deadline = Instant::now() + Duration::from_secs(60);
    while n_readings(addr, "kw-1").await != 1 {
        assert!(Instant::now() < deadline, "the processor never applied it");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    step("cutting the meter's TCP connection");
    let cut_at = Instant::now();
    meter.abort();
    let raised = next_event(&mut ws, "kw-1", Duration::from_secs(30))
        .await
        .expect("no_data raised by the last will, through Kafka");
    let took = cut_at.elapsed();
    assert_eq!(raised["event"], "raised", "{raised}");
    assert_eq!(raised["alert"]["kind"], "no_data", "{raised}");
    assert_eq!(raised["alert"]["first_seen_ms"], ts_ms + 1, "{raised}");
    assert_eq!(raised["note"]["by"], "mqtt", "{raised}");
    // The keep-alive (5 s) times 1.5 bounds when the broker notices; an hour is the
    // no-data timeout.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    eprintln!("last will -> Kafka -> no_data on the websocket in {took:?}");
    drop(mosquitto);
    step("done");
}
