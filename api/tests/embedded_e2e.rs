//! End to end: the whole embedded system on port 0, readings over HTTP, alerts over a
//! real websocket client (tokio-tungstenite), lifecycle over REST.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use gridpulse_actors::{Clock, ManualClock, SystemClock};
use gridpulse_api::{EmbeddedConfig, EmbeddedSystem};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::http;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("an event within 10 s")
            .expect("stream open")
            .expect("no websocket error");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Reads events until one matches `pred`, failing after 10 s.
async fn wait_for(ws: &mut Ws, pred: impl Fn(&Value) -> bool) -> Value {
    let wanted = async {
        loop {
            let value = next_json(ws).await;
            if pred(&value) {
                return value;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), wanted)
        .await
        .expect("the wanted event within 10 s")
}

fn reading(
    meter: &str,
    ts_ms: i64,
    voltage: f64,
    current: f64,
    power_w: f64,
    energy_wh: f64,
) -> Value {
    json!({"meter": meter, "ts_ms": ts_ms, "voltage": voltage, "current": current, "power_w": power_w, "energy_wh": energy_wh})
}

#[actix_rt::test]
async fn readings_in_alerts_out_lifecycle_and_bad_input() {
    let now = SystemClock.now_ms();
    let clock = ManualClock::new(now);
    let config = EmbeddedConfig {
        n_partitions: 4,
        n_workers: 2,
        n_http_workers: 1,
        max_body_bytes: 64 * 1024,
        no_data_sweep: Duration::from_millis(50),
        ..EmbeddedConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let system = EmbeddedSystem::start(config, listener, Arc::clone(&clock) as Arc<dyn Clock>)
        .await
        .unwrap();
    let addr = system.local_addr;
    let server = system.server.handle();
    actix_rt::spawn(system.server);

    // A websocket client subscribes first and gets an (empty) snapshot.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/alerts"))
        .await
        .unwrap();
    let snapshot = next_json(&mut ws).await;
    assert_eq!(snapshot["type"], "snapshot");
    assert_eq!(snapshot["alerts"], json!([]));
    // A second client filtered to another meter must not see e2e-1's alerts.
    let (mut other_ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{addr}/ws/alerts?meter=e2e-2&snapshot=false"
    ))
    .await
    .unwrap();

    // Normal readings, then one over the voltage limit.
    let t0 = now - 60_000;
    let body = json!([
        reading("e2e-1", t0, 230.0, 2.0, 440.0, 1000.0),
        reading("e2e-1", t0 + 5_000, 231.0, 2.0, 440.0, 1000.6),
        reading("e2e-1", t0 + 10_000, 262.5, 2.0, 440.0, 1001.2),
    ]);
    let (status, answer) = http(addr, "POST", "/api/readings", &body.to_string()).await;
    assert_eq!((status, &answer["accepted"]), (202, &json!(3)), "{answer}");

    let raised = wait_for(&mut ws, |v| v["type"] == "alert").await;
    assert_eq!(raised["event"], "raised");
    assert_eq!(raised["alert"]["kind"], "over_voltage");
    assert_eq!(raised["alert"]["state"], "firing");
    assert_eq!(raised["alert"]["value"], 262.5);
    let alert_id = raised["alert"]["id"].as_str().unwrap().to_owned();
    assert_eq!(alert_id, format!("e2e-1.over_voltage.{}", t0 + 10_000));
    let first_seq = raised["seq"].as_u64().unwrap();

    // REST shows it, with filters.
    let (status, list) = http(addr, "GET", "/api/alerts?meter=e2e-1&state=firing", "").await;
    assert_eq!(status, 200);
    assert_eq!(list["alerts"][0]["id"], alert_id.as_str());
    let (_, none) = http(
        addr,
        "GET",
        "/api/alerts?meter=e2e-1&kind=under_voltage",
        "",
    )
    .await;
    assert_eq!(none["alerts"], json!([]));

    // The same body again (a client retry) changes nothing: no second alert.
    let (status, _) = http(addr, "POST", "/api/readings", &body.to_string()).await;
    assert_eq!(status, 202);

    // Acknowledge, then resolve; each change reaches the websocket in sequence order.
    let (status, acked) = http(
        addr,
        "POST",
        &format!("/api/alerts/{alert_id}/ack"),
        r#"{"by":"alice"}"#,
    )
    .await;
    assert_eq!(
        (status, &acked["state"]),
        (200, &json!("acknowledged")),
        "{acked}"
    );
    assert_eq!(acked["acknowledged_by"], "alice");
    let event = wait_for(&mut ws, |v| v["type"] == "alert").await;
    assert_eq!(
        (&event["event"], event["seq"].as_u64().unwrap()),
        (&json!("acknowledged"), first_seq + 1)
    );

    let (status, resolved) =
        http(addr, "POST", &format!("/api/alerts/{alert_id}/resolve"), "").await;
    assert_eq!(
        (status, &resolved["state"]),
        (200, &json!("resolved")),
        "{resolved}"
    );
    let event = wait_for(&mut ws, |v| v["type"] == "alert").await;
    assert_eq!(
        (&event["event"], event["seq"].as_u64().unwrap()),
        (&json!("resolved"), first_seq + 2)
    );
    let (status, _) = http(addr, "POST", &format!("/api/alerts/{alert_id}/resolve"), "").await;
    assert_eq!(status, 409, "resolving twice conflicts");
    let (status, detail) = http(addr, "GET", &format!("/api/alerts/{alert_id}"), "").await;
    assert_eq!(
        (status, &detail["resolved_by"]),
        (200, &json!("insecure-dev"))
    );

    // A batch with bad readings: per-reading errors, good ones still processed.
    let batch = json!([
        reading("e2e-1", t0 + 15_000, 230.0, 2.0, 440.0, 1001.8),
        {"meter": "e2e-1", "ts_ms": t0 + 20_000, "voltage": "high", "current": 1, "power_w": 1, "energy_wh": 1},
        {"deviceId": "e2e-3", "voltage": 229.0, "current": 1.0, "power": 200.0, "energy": 2.5, "timestamp": (t0 + 20_000) / 1000},
        {"meter": "e2e-1", "ts_ms": now + 3_600_000, "voltage": 230, "current": 1, "power_w": 1, "energy_wh": 1},
        {"meter": "e2e-1", "ts_ms": t0 + 25_000, "voltage": 230, "current": 1, "power_w": 9000, "energy_wh": 1},
    ]);
    let (status, report) = http(addr, "POST", "/api/readings", &batch.to_string()).await;
    assert_eq!(status, 400, "{report}");
    assert_eq!(report["accepted"], 2);
    let rejected: Vec<(u64, String, String)> = report["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["index"].as_u64().unwrap(),
                r["field"].as_str().unwrap().to_owned(),
                r["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        vec![
            (1, "voltage".into(), "wrong_type".into()),
            (3, "ts_ms".into(), "future_timestamp".into()),
            (4, "power_w".into(), "power_exceeds_apparent".into()),
        ]
    );
    // The good readings arrived: 3 + 1 for e2e-1 (the retried body was stale), and the
    // seed-firmware meter exists with its kWh register converted to Wh.
    let meter = poll_meter(addr, "e2e-1", |m| m["n_readings"] == 4).await;
    assert_eq!(meter["n_stale_readings"], 3);
    let seed_meter = poll_meter(addr, "e2e-3", |m| m["n_readings"] == 1).await;
    assert_eq!(seed_meter["last_reading"]["energy_wh"], 2500.0);

    // Bad requests are named precisely, never a panic.
    let (status, error) = http(addr, "POST", "/api/readings", "{\"meter\": ").await;
    assert_eq!(status, 400);
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"),
        "{error}"
    );
    let huge = format!(
        "[{}]",
        vec![reading("e2e-1", t0, 230.0, 1.0, 1.0, 1.0).to_string(); 1000].join(",")
    );
    let (status, error) = http(addr, "POST", "/api/readings", &huge).await;
    assert_eq!(status, 413, "{error}");
    let (status, error) = http(addr, "GET", "/api/alerts?kind=meltdown", "").await;
    assert_eq!((status, &error["error"]["field"]), (400, &json!("kind")));
    let (status, error) = http(addr, "GET", "/api/meters?limit=0", "").await;
    assert_eq!((status, &error["error"]["field"]), (400, &json!("limit")));
    let (status, _) = http(addr, "GET", "/api/meters/nobody", "").await;
    assert_eq!(status, 404);
    let (status, error) = http(addr, "GET", "/api/meters/bad%2Fid", "").await;
    assert_eq!((status, &error["error"]["field"]), (400, &json!("id")));
    let (status, _) = http(addr, "POST", "/api/alerts/e2e-1.over_voltage.1/ack", "").await;
    assert_eq!(status, 404);

    // Paged meter list.
    let (status, page) = http(addr, "GET", "/api/meters?limit=1", "").await;
    assert_eq!(
        (status, &page["total"], &page["next"]),
        (200, &json!(2), &json!("e2e-1"))
    );
    let (_, page) = http(addr, "GET", "/api/meters?limit=1&after=e2e-1", "").await;
    assert_eq!(page["meters"][0]["meter"], "e2e-3");
    assert!(page.get("next").is_none());

    // Silence: two minutes later (wall clock) both meters raise "no data".
    clock.advance(120_000);
    let no_data = wait_for(&mut ws, |v| {
        v["type"] == "alert" && v["alert"]["kind"] == "no_data"
    })
    .await;
    assert_eq!(no_data["event"], "raised");

    // The filtered client saw none of this.
    let quiet = tokio::time::timeout(Duration::from_millis(300), other_ws.next()).await;
    assert!(quiet.is_err(), "filtered client got {quiet:?}");

    // Health and metrics.
    let (status, _) = http(addr, "GET", "/healthz", "").await;
    assert_eq!(status, 200);
    let (status, _) = http(addr, "GET", "/readyz", "").await;
    assert_eq!(status, 200);
    let (status, metrics) = http(addr, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap().to_owned();
    for name in [
        "gridpulse_ingest_readings_accepted_total",
        "gridpulse_ingest_readings_rejected_total",
        "gridpulse_actors_meters_live",
        "gridpulse_actors_alert_events_total",
        "gridpulse_api_websocket_clients",
        "gridpulse_actors_mailbox_depth_messages",
    ] {
        assert!(metrics.contains(name), "{name} missing from /metrics");
    }

    // Usage re-keyed by user: meters send closed minutes to their owner's actor.
    let (status, answer) = http(addr, "PUT", "/api/meters/e2e-u1", r#"{"owner":"alice"}"#).await;
    assert_eq!(
        (status, &answer["owner"]),
        (200, &json!("alice")),
        "{answer}"
    );
    let (status, answer) = http(addr, "PUT", "/api/meters/e2e-u1", r#"{"owner":"a b"}"#).await;
    assert_eq!(
        (status, &answer["error"]["field"]),
        (400, &json!("owner")),
        "{answer}"
    );
    let (status, answer) = http(addr, "PUT", "/api/meters/e2e-u1", r#"{"tarif":"x"}"#).await;
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tarif"),
        "{answer}"
    );
    let (status, _) = http(addr, "GET", "/api/users/nobody/usage", "").await;
    assert_eq!(status, 404);
    let minute0 = (now - 600_000) - (now - 600_000).rem_euclid(60_000);
    // Two minutes of readings every 10 s, +2 Wh each, and one that opens minute 2.
    let body: Vec<Value> = (0..13)
        .map(|k| {
            reading(
                "e2e-u1",
                minute0 + k * 10_000,
                230.0,
                1.0,
                200.0,
                500.0 + 2.0 * k as f64,
            )
        })
        .collect();
    let (status, answer) = http(
        addr,
        "POST",
        "/api/readings",
        &Value::Array(body).to_string(),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let mut usage = Value::Null;
    for _ in 0..200 {
        let (status, value) = http(addr, "GET", "/api/users/alice/usage", "").await;
        if status == 200 && value["n_deltas"] == 2 {
            usage = value;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Minute 0: 5 steps of 2 Wh (its first reading has no predecessor); minute 1: 6.
    assert_eq!(usage["energy_total_wh"], 22.0, "{usage}");
    assert_eq!(usage["meters"]["e2e-u1"]["readings"], 12, "{usage}");
    assert_eq!(usage["last_minute_ms"], minute0 + 60_000, "{usage}");
    server.stop(false).await;
}

async fn poll_meter(
    addr: std::net::SocketAddr,
    meter: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    for _ in 0..200 {
        let (status, value) = http(addr, "GET", &format!("/api/meters/{meter}"), "").await;
        if status == 200 && done(&value) {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("meter {meter} never reached the expected state");
}
