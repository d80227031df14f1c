//! `gridpulse run --mqtt` end to end: a real Mosquitto (started here on a free loopback
//! port), a real MQTT publisher (rumqttc) and the embedded system with its bridge.
//! Seed-format and canonical readings raise live alerts on `/ws/alerts` and are stored;
//! a backfill batch (the offline buffer, over voltage in the past) is stored but raises
//! nothing; a bad payload between good ones lands in `dead-letters.ndjson`.
//! A last will raises `no_data` at once; a bridge cut off from its broker (Mosquitto
//! killed, then restarted on the same port) groups the silent meters' `no_data` into one
//! `no_data_group` alert for `mqtt_bridge`, which resolves once the bridge is back.

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

/// Alert events (event, alert) for `meter` until `done` says enough, within `within`.
async fn events_for(
    ws: &mut Ws,
    meter: &str,
    within: Duration,
    mut done: impl FnMut(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + within;
    let mut seen = Vec::new();
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "alert" && value["alert"]["meter"] == meter {
                    seen.push(value);
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => break,
        }
    }
    seen
}

/// Publishes one message from a short-lived client (QoS 1, acknowledged by the broker).
async fn publish_once(port: u16, topic: &str, payload: &str, retain: bool) {
    let mut options = MqttOptions::new("one-shot", "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut event_loop) = AsyncClient::new(options, 16);
    client
        .publish(topic, QoS::AtLeastOnce, retain, payload.to_owned())
        .await
        .unwrap();
    tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Event::Incoming(rumqttc::Packet::PubAck(_))) = event_loop.poll().await {
                break;
            }
        }
    })
    .await
    .expect("the broker acknowledged");
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), event_loop.poll()).await;
}

async fn open_no_data(addr: std::net::SocketAddr, meter: &str) -> Vec<Value> {
    let (status, page) = http(
        addr,
        "GET",
        &format!("/api/alerts?meter={meter}&kind=no_data"),
        "",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    page["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|alert| alert["state"] != "resolved")
        .cloned()
        .collect()
}

/// The last will raises `no_data` at once (the no-data timeout is an hour), durable
/// before the bridge acknowledges it: after a crash (no final checkpoint) and a restart
/// the same alert is open, the retained `offline` the restarted bridge receives on
/// subscribing raises nothing new, and `online` resolves it.
#[test]
fn a_last_will_raises_no_data_at_once_and_online_clears_it_across_a_crash() {
    let broker = TestMosquitto::start().expect("mosquitto starts");
    let port = broker.addr().port();
    let data_dir = fresh_data_dir("mqtt", "last-will");
    let configure = move |config: &mut gridpulse_api::EmbeddedConfig| {
        config.default_thresholds.no_data_timeout_s = 3_600;
        if let Some(persistence) = config.persistence.as_mut() {
            // No checkpoint during the test: only the link change's own write counts.
            persistence.checkpoint_interval = Duration::from_secs(3_600);
        }
        let mut mqtt = MqttBridgeConfig::new("127.0.0.1", port);
        mqtt.client_id = "bridge-lwt".into();
        mqtt.min_backoff = Duration::from_millis(50);
        config.mqtt = Some(mqtt);
    };
    let alert_id = Arc::new(std::sync::Mutex::new(String::new()));
    let first_id = Arc::clone(&alert_id);
    with_system_config(
        Some(data_dir.clone()),
        Arc::new(SystemClock),
        configure,
        support::Shutdown::NoCheckpoint,
        move |addr| async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/alerts"))
                .await
                .expect("websocket");
            step("waiting for the bridge to connect");
            support::bridge_connected(addr, true).await;
            let ts_ms = SystemClock.now_ms() - 1_000;
            let meter =
                support::meter_with_last_will(port, "lw-1", canonical("lw-1", ts_ms, 230.0)).await;
            // The reading reached the meter (stored) before its link drops.
            let deadline = Instant::now() + WAIT;
            while stored(addr, "lw-1", ts_ms - 1).await.is_empty() {
                assert!(Instant::now() < deadline, "the reading never arrived");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            step("cutting the meter's TCP connection");
            let cut_at = Instant::now();
            meter.abort();
            let events = events_for(&mut ws, "lw-1", Duration::from_secs(15), |seen| {
                seen.iter().any(|event| event["alert"]["kind"] == "no_data")
            })
            .await;
            let (_, bridge) = http(addr, "GET", "/api/mqtt/status", "").await;
            let raised = events
                .iter()
                .find(|event| event["alert"]["kind"] == "no_data")
                .unwrap_or_else(|| {
                    panic!("no no_data alert after the last will: {events:?}; bridge {bridge}")
                });
            let took = cut_at.elapsed();
            assert!(took < Duration::from_secs(10), "took {took:?}");
            assert_eq!(raised["event"], "raised");
            assert_eq!(raised["alert"]["first_seen_ms"], ts_ms + 1);
            assert_eq!(raised["note"]["by"], "mqtt");
            assert!(
                raised["note"]["text"]
                    .as_str()
                    .unwrap()
                    .contains("last will"),
                "{raised}"
            );
            let open = open_no_data(addr, "lw-1").await;
            assert_eq!(open.len(), 1, "{open:?}");
            *first_id.lock().unwrap() = open[0]["id"].as_str().unwrap().to_owned();
            let (status, bridge) = http(addr, "GET", "/api/mqtt/status", "").await;
            assert_eq!(status, 200, "{bridge}");
            assert_eq!(bridge["running"], true);
            assert_eq!(bridge["broker"], format!("127.0.0.1:{port}"));
            assert_eq!(bridge["client_id"], "bridge-lwt");
            assert_eq!(bridge["meters_offline"], 1, "{bridge}");
            assert!(
                bridge["last_connected_ms"].as_i64().unwrap() > 0,
                "{bridge}"
            );
            eprintln!("last will -> no_data on the websocket in {took:?}");
        },
    );
    let expected_id = alert_id.lock().unwrap().clone();
    assert!(expected_id.starts_with("lw-1.no_data."), "{expected_id}");
    with_system_config(
        Some(data_dir.clone()),
        Arc::new(SystemClock),
        configure,
        support::Shutdown::Clean,
        move |addr| async move {
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/alerts"))
                .await
                .expect("websocket");
            step("restarted: the alert is still open, under the same id");
            let open = open_no_data(addr, "lw-1").await;
            assert_eq!(open.len(), 1, "{open:?}");
            assert_eq!(open[0]["id"], expected_id.as_str());
            support::bridge_connected(addr, true).await;
            // The retained `offline` came with the subscription: no second alert.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let open = open_no_data(addr, "lw-1").await;
            assert_eq!(open.len(), 1, "{open:?}");
            step("the meter says online");
            publish_once(port, "gridpulse/meters/lw-1/status", "online", true).await;
            let events = events_for(&mut ws, "lw-1", Duration::from_secs(10), |seen| {
                seen.iter().any(|event| event["event"] == "resolved")
            })
            .await;
            let resolved = events
                .iter()
                .find(|event| event["event"] == "resolved")
                .unwrap_or_else(|| panic!("online did not resolve it: {events:?}"));
            assert_eq!(resolved["alert"]["id"], expected_id.as_str());
            assert!(open_no_data(addr, "lw-1").await.is_empty());
        },
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&data_dir);
}

/// Alert events of every meter seen within `within`, added to `seen`, until `done` holds.
async fn collect_until(
    ws: &mut Ws,
    seen: &mut Vec<Value>,
    within: Duration,
    done: impl Fn(&[Value]) -> bool,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !done(seen) {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "alert" {
                    seen.push(value);
                }
            }
            Ok(Some(Ok(_))) => {}
            _ => return,
        }
    }
}

fn of_kind<'a>(seen: &'a [Value], kind: &str, event: &str) -> Vec<&'a Value> {
    seen.iter()
        .filter(|e| e["alert"]["kind"] == kind && e["event"] == event)
        .collect()
}

/// A publisher of live canonical readings on `port` (its event loop polled by a task).
fn reading_publisher(port: u16, client_id: &str) -> (AsyncClient, tokio::task::JoinHandle<()>) {
    let mut options = MqttOptions::new(client_id, "127.0.0.1", port);
    options.set_keep_alive(Duration::from_secs(5));
    let (client, mut event_loop) = AsyncClient::new(options, 256);
    let task = tokio::spawn(async move {
        loop {
            if event_loop.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    });
    (client, task)
}

async fn publish_live(client: &AsyncClient, meters: &[&str]) {
    let ts_ms = SystemClock.now_ms();
    for meter in meters {
        client
            .publish(
                format!("gridpulse/meters/{meter}/readings"),
                QoS::AtLeastOnce,
                false,
                canonical(meter, ts_ms, 230.0),
            )
            .await
            .unwrap();
    }
}

/// The bridge loses its broker (Mosquitto killed): the meters it feeds go silent, and
/// instead of one `no_data` per meter a subscriber without a meter filter gets one
/// `no_data_group` alert for `mqtt_bridge` carrying the member count; a subscriber of
/// one meter still gets that meter's `no_data` (tagged with the group). Mosquitto
/// restarted on the same port and readings again: the group resolves, and so do the
/// members (pushed only to the meter's subscriber).
#[test]
fn a_bridge_cut_off_from_its_broker_groups_the_silent_meters_into_one_alert() {
    let broker = TestMosquitto::start().expect("mosquitto starts");
    let port = broker.addr().port();
    let broker = Arc::new(std::sync::Mutex::new(Some(broker)));
    let in_test = Arc::clone(&broker);
    let data_dir = fresh_data_dir("mqtt", "groups");
    with_system_config(
        Some(data_dir.clone()),
        Arc::new(SystemClock),
        move |config| {
            config.default_thresholds.no_data_timeout_s = 3_600;
            let mut mqtt = MqttBridgeConfig::new("127.0.0.1", port);
            mqtt.client_id = "bridge-groups".into();
            mqtt.min_backoff = Duration::from_millis(50);
            mqtt.max_backoff = Duration::from_millis(200);
            config.mqtt = Some(mqtt);
        },
        support::Shutdown::Clean,
        move |addr| async move {
            let broker = in_test;
            let meters = ["mg-1", "mg-2", "mg-3"];
            step("registering three meters with a 2 s no-data timeout");
            for meter in meters {
                let body = serde_json::json!({"id": meter, "thresholds": {"no_data_timeout_s": 2}});
                let (status, answer) = http(addr, "POST", "/api/meters", &body.to_string()).await;
                assert_eq!(status, 201, "{answer}");
            }
            let connect = |query: &'static str| async move {
                let (ws, _) = tokio::time::timeout(
                    WAIT,
                    tokio_tungstenite::connect_async(format!("ws://{addr}/ws/alerts{query}")),
                )
                .await
                .expect("websocket in time")
                .expect("websocket");
                ws
            };
            let mut all = connect("").await;
            let mut one = connect("?meter=mg-1").await;
            let (mut seen_all, mut seen_one) = (Vec::new(), Vec::new());
            support::bridge_connected(addr, true).await;

            step("meters publishing through the bridge");
            let (client, publisher) = reading_publisher(port, "meters-groups");
            let t0 = SystemClock.now_ms();
            let deadline = Instant::now() + WAIT;
            loop {
                publish_live(&client, &meters).await;
                let mut heard = 0;
                for meter in meters {
                    heard += usize::from(!stored(addr, meter, t0 - 1).await.is_empty());
                }
                if heard == meters.len() {
                    break;
                }
                assert!(Instant::now() < deadline, "the bridge never delivered");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // A few more live readings (well within the 2 s timeout), then the cut.
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_millis(200)).await;
                publish_live(&client, &meters).await;
            }
            step("killing mosquitto");
            drop(broker.lock().unwrap().take());
            publisher.abort();
            drop(client);
            let bridge = support::bridge_connected(addr, false).await;
            let down_since = bridge["last_disconnected_ms"].as_i64().unwrap();

            step("one group alert instead of three no_data raises");
            collect_until(&mut all, &mut seen_all, WAIT, |seen| {
                of_kind(seen, "no_data_group", "updated")
                    .last()
                    .is_some_and(|e| e["alert"]["value"] == 3.0)
            })
            .await;
            let raised = of_kind(&seen_all, "no_data_group", "raised");
            assert_eq!(raised.len(), 1, "{seen_all:#?}");
            let group = &raised[0]["alert"];
            let group_id = group["id"].as_str().unwrap().to_owned();
            assert_eq!(group["meter"], "mqtt_bridge");
            assert_eq!(group["state"], "firing");
            assert_eq!(group["threshold"], 1.0);
            assert_eq!(
                group_id,
                format!("mqtt_bridge.no_data_group.{down_since}"),
                "{group}"
            );
            let updated = of_kind(&seen_all, "no_data_group", "updated");
            let last = &updated.last().unwrap()["alert"];
            assert_eq!(
                (&last["value"], &last["count"]),
                (&json_f(3.0), &json_u(3)),
                "{last}"
            );
            // Silence for a moment more: still no per-meter no_data on this socket.
            collect_until(&mut all, &mut seen_all, Duration::from_secs(2), |_| false).await;
            assert!(
                seen_all
                    .iter()
                    .all(|e| e["alert"]["kind"] == "no_data_group"),
                "the subscriber without a filter got member events: {seen_all:#?}"
            );
            let (status, detail) = http(addr, "GET", &format!("/api/alerts/{group_id}"), "").await;
            assert_eq!(status, 200, "{detail}");
            let members = detail["members"].as_array().unwrap();
            assert_eq!(members.len(), 3, "{detail}");
            for meter in meters {
                let open = open_no_data(addr, meter).await;
                assert_eq!(open.len(), 1, "{meter}: {open:?}");
                assert_eq!(open[0]["group"], group_id.as_str(), "{meter}: {open:?}");
            }

            step("the subscriber of mg-1 gets its no_data, tagged with the group");
            collect_until(&mut one, &mut seen_one, WAIT, |seen| {
                !of_kind(seen, "no_data", "raised").is_empty()
            })
            .await;
            let mine = of_kind(&seen_one, "no_data", "raised");
            assert_eq!(mine.len(), 1, "{seen_one:#?}");
            assert_eq!(mine[0]["alert"]["meter"], "mg-1");
            assert_eq!(mine[0]["alert"]["group"], group_id.as_str());
            assert!(
                seen_one.iter().all(|e| e["alert"]["meter"] == "mg-1"),
                "{seen_one:#?}"
            );
            let (_, bridge) = http(addr, "GET", "/api/mqtt/status", "").await;
            assert_eq!(bridge["connected"], false, "{bridge}");

            step("mosquitto back on the same port, readings again");
            *broker.lock().unwrap() =
                Some(TestMosquitto::start_on(port).expect("mosquitto restarts"));
            support::bridge_connected(addr, true).await;
            let (client, publisher) = reading_publisher(port, "meters-groups-2");
            let deadline = Instant::now() + WAIT;
            loop {
                publish_live(&client, &meters).await;
                let mut open = 0;
                for meter in meters {
                    open += open_no_data(addr, meter).await.len();
                }
                if open == 0 {
                    break;
                }
                assert!(Instant::now() < deadline, "{open} no_data still open");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            collect_until(&mut all, &mut seen_all, WAIT, |seen| {
                !of_kind(seen, "no_data_group", "resolved").is_empty()
            })
            .await;
            let resolved = of_kind(&seen_all, "no_data_group", "resolved");
            assert_eq!(resolved.len(), 1, "{seen_all:#?}");
            assert_eq!(resolved[0]["alert"]["id"], group_id.as_str());
            assert_eq!(resolved[0]["alert"]["resolved_by"], "system");
            collect_until(&mut one, &mut seen_one, WAIT, |seen| {
                !of_kind(seen, "no_data", "resolved").is_empty()
            })
            .await;
            let mine = of_kind(&seen_one, "no_data", "resolved");
            assert_eq!(mine.len(), 1, "{seen_one:#?}");
            assert_eq!(mine[0]["alert"]["group"], group_id.as_str());
            // The members' resolves stayed off the unfiltered socket.
            collect_until(&mut all, &mut seen_all, Duration::from_secs(1), |_| false).await;
            assert!(
                seen_all
                    .iter()
                    .all(|e| e["alert"]["kind"] == "no_data_group"),
                "{seen_all:#?}"
            );
            let (status, page) = http(addr, "GET", "/api/alerts?kind=no_data_group", "").await;
            assert_eq!(status, 200, "{page}");
            let groups = page["alerts"].as_array().unwrap();
            assert_eq!(groups.len(), 1, "{page}");
            assert_eq!(groups[0]["state"], "resolved", "{page}");
            publisher.abort();
        },
    );
    drop(broker.lock().unwrap().take());
    let _ = std::fs::remove_dir_all(&data_dir);
}

fn json_f(value: f64) -> Value {
    serde_json::json!(value)
}

fn json_u(value: u64) -> Value {
    serde_json::json!(value)
}

/// Without `--mqtt` the status route says plainly that no bridge runs.
#[test]
fn mqtt_status_says_when_no_bridge_runs() {
    support::with_system(None, |addr| async move {
        let (status, body) = http(addr, "GET", "/api/mqtt/status", "").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["running"], false);
        assert!(
            body["message"].as_str().unwrap().contains("--mqtt"),
            "{body}"
        );
        assert!(body.get("connected").is_none(), "{body}");
    });
}
