//! `gridpulse run --mqtt` end to end: a real Mosquitto (started here on a free loopback
//! port), a real MQTT publisher (rumqttc) and the embedded system with its bridge.
//! Seed-format and canonical readings raise live alerts on `/ws/alerts` and are stored;
//! a backfill batch (the offline buffer, over voltage in the past) is stored but raises
//! nothing; a bad payload between good ones lands in `dead-letters.ndjson`.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use gridpulse_actors::{Clock, SystemClock};
use gridpulse_ingest::mqtt::MqttBridgeConfig;
use gridpulse_ingest::mqtt::test_broker::TestMosquitto;
use rumqttc::{AsyncClient, Event, MqttOptions, QoS};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::{Ws, fresh_data_dir, http, step, with_system_config};

const WAIT: Duration = Duration::from_secs(20);

fn canonical(meter: &str, ts_ms: i64, voltage: f64) -> String {
    format!(
        r#"{{"meter":"{meter}","ts_ms":{ts_ms},"voltage":{voltage},"current":2.0,"power_w":440,"energy_wh":{}}}"#,
        1000.0 + (ts_ms % 1_000_000) as f64 / 1e5
    )
}

fn seed(meter: &str, ts_s: i64, voltage: f64) -> String {
    format!(
        r#"{{"deviceId":"{meter}","voltage":{voltage},"current":2.0,"power":440,"energy":{},"timestamp":{ts_s}}}"#,
        1.0 + (ts_s % 1_000_000) as f64 / 1e8
    )
}

async fn stored(addr: std::net::SocketAddr, meter: &str, from_ms: i64) -> Vec<i64> {
    let (status, page) = http(
        addr,
        "GET",
        &format!("/api/meters/{meter}/readings?from={from_ms}"),
        "",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    page["readings"]
        .as_array()
        .map(|readings| {
            readings
                .iter()
                .filter_map(|r| r["ts_ms"].as_i64())
                .collect()
        })
        .unwrap_or_default()
}

/// Alert events (meter, kind) seen within `within`.
async fn alerts_within(ws: &mut Ws, within: Duration) -> Vec<(String, String)> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == "alert" && value["event"] == "raised" {
                seen.push((
                    value["alert"]["meter"].as_str().unwrap_or("").to_owned(),
                    value["alert"]["kind"].as_str().unwrap_or("").to_owned(),
                ));
            }
        }
    }
    seen
}

#[test]
fn mqtt_readings_raise_alerts_backfill_does_not_and_bad_payloads_are_dead_letters() {
    let broker = TestMosquitto::start().expect("mosquitto starts");
    let port = broker.addr().port();
    let data_dir = fresh_data_dir("mqtt", "bridge");
    let dead_letter_file = data_dir.join("dead-letters.ndjson");
    with_system_config(
        Some(data_dir.clone()),
        Arc::new(SystemClock),
        move |config| {
            config.default_thresholds.no_data_timeout_s = 3_600;
            if let Some(persistence) = config.persistence.as_mut() {
                persistence.checkpoint_interval = Duration::from_millis(200);
            }
            let mut mqtt = MqttBridgeConfig::new("127.0.0.1", port);
            mqtt.client_id = "bridge-e2e".into();
            mqtt.min_backoff = Duration::from_millis(50);
            config.mqtt = Some(mqtt);
        },
        support::Shutdown::Clean,
        move |addr| async move {
            let (mut ws, _) = tokio::time::timeout(
                WAIT,
                tokio_tungstenite::connect_async(format!("ws://{addr}/ws/alerts")),
            )
            .await
            .expect("websocket in time")
            .expect("websocket");
            let mut options = MqttOptions::new("meters-e2e", "127.0.0.1", port);
            options.set_keep_alive(Duration::from_secs(10));
            let (client, mut event_loop) = AsyncClient::new(options, 256);
            tokio::spawn(async move {
                loop {
                    match event_loop.poll().await {
                        Ok(Event::Incoming(_) | Event::Outgoing(_)) => {}
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                }
            });
            let now = SystemClock.now_ms();
            let t0 = now - 120_000;
            // Until the bridge has subscribed, probes are lost: publish one every 200 ms
            // until one is stored.
            step("waiting for the bridge to subscribe");
            let deadline = Instant::now() + WAIT;
            let mut probe_ts = t0;
            while stored(addr, "probe", t0 - 1).await.is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "the bridge never delivered a probe"
                );
                client
                    .publish(
                        "gridpulse/meters/probe/readings",
                        QoS::AtLeastOnce,
                        false,
                        canonical("probe", probe_ts, 230.0),
                    )
                    .await
                    .unwrap();
                probe_ts += 1000;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            step("publishing");
            let t0_s = t0 / 1000;
            let messages: Vec<(String, String)> = vec![
                // Seed firmware: normal, then over voltage.
                ("/energy/mq-seed/data".into(), seed("mq-seed", t0_s, 230.0)),
                (
                    "/energy/mq-seed/data".into(),
                    seed("mq-seed", t0_s + 5, 262.5),
                ),
                // Not JSON, between good ones.
                ("gridpulse/meters/mq-live/readings".into(), "{oops".into()),
                (
                    "gridpulse/meters/mq-live/readings".into(),
                    canonical("mq-live", t0, 230.0),
                ),
                (
                    "gridpulse/meters/mq-live/readings".into(),
                    canonical("mq-live", t0 + 5_000, 263.0),
                ),
                // The offline buffer, out of order, over voltage an hour ago: stored, no alert.
                (
                    "gridpulse/meters/mq-back/readings".into(),
                    format!(
                        "[{},{},{}]",
                        canonical("mq-back", t0 - 3_600_000 + 10_000, 231.0),
                        canonical("mq-back", t0 - 3_600_000, 230.0),
                        canonical("mq-back", t0 - 3_600_000 + 5_000, 270.0)
                    ),
                ),
            ];
            for (topic, payload) in messages {
                client
                    .publish(topic, QoS::AtLeastOnce, false, payload)
                    .await
                    .unwrap();
            }
            let mut alerts = alerts_within(&mut ws, Duration::from_secs(4)).await;
            alerts.sort();
            assert_eq!(
                alerts,
                vec![
                    ("mq-live".to_owned(), "over_voltage".to_owned()),
                    ("mq-seed".to_owned(), "over_voltage".to_owned()),
                ],
                "live over-voltage alerts only; none for the backfilled past"
            );
            step("checking the store");
            let deadline = Instant::now() + WAIT;
            loop {
                let back = stored(addr, "mq-back", t0 - 3_700_000).await;
                let seed = stored(addr, "mq-seed", t0_s * 1000 - 1).await;
                let live = stored(addr, "mq-live", t0 - 1).await;
                if back.len() == 3 && seed.len() == 2 && live.len() == 2 {
                    assert_eq!(back, vec![t0 - 3_600_000, t0 - 3_595_000, t0 - 3_590_000]);
                    assert_eq!(seed, vec![t0_s * 1000, t0_s * 1000 + 5000]);
                    assert_eq!(live, vec![t0, t0 + 5_000]);
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "stored: back {back:?} seed {seed:?} live {live:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        },
    );
    let text = std::fs::read_to_string(&dead_letter_file).expect("dead-letter file");
    let lines: Vec<Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert_eq!(lines[0]["topic"], "gridpulse/meters/mq-live/readings");
    assert_eq!(lines[0]["code"], "malformed_json");
    assert_eq!(lines[0]["source"], "mqtt");
    assert_eq!(lines[0]["payload_base64"], "e29vcHM=");
    drop(broker);
    let _ = std::fs::remove_dir_all(&data_dir);
}
