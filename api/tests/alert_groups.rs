//! Grouping of per-meter `no_data` alerts end to end (embedded system with its store,
//! journal, actors and websocket; a manual clock): half of a feeder's meters go silent
//! and one `no_data_group` alert (`feeder:F1`) stands for them on the websocket of
//! everyone who did not subscribe to a member's meter; members stay real alerts
//! carrying the group's id; the group is updated with its member count and resolves
//! when the feeder is back; acknowledging / resolving a group does it to its members.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use gridpulse_actors::{Clock, ManualClock, SystemClock};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::{Ws, fresh_data_dir, http, step, with_system_clock};

const TIMEOUT_S: u32 = 60;

fn reading(meter: &str, ts_ms: i64) -> Value {
    json!({"meter": meter, "ts_ms": ts_ms, "voltage": 230.0, "current": 1.0,
           "power_w": 200.0, "energy_wh": 10.0 + (ts_ms % 100_000) as f64 / 1000.0})
}

async fn post_readings(addr: SocketAddr, meters: &[&str], ts_ms: i64) {
    let readings: Vec<Value> = meters.iter().map(|meter| reading(meter, ts_ms)).collect();
    let (status, answer) = http(addr, "POST", "/api/readings", &json!(readings).to_string()).await;
    assert_eq!(
        (status, &answer["accepted"]),
        (202, &json!(meters.len())),
        "{answer}"
    );
}

/// Waits until every meter applied `n` readings (arrival is taken when routed, so the
/// clock must not move before).
async fn wait_applied(addr: SocketAddr, meters: &[&str], n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for meter in meters {
        loop {
            let (_, state) = http(addr, "GET", &format!("/api/meters/{meter}"), "").await;
            if state["n_readings"] == n {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{meter}: {state}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn connect(addr: SocketAddr, query: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws/alerts?{query}"))
        .await
        .unwrap();
    ws
}

/// Alert events until `done` holds, within 10 s (then whatever came).
async fn collect(ws: &mut Ws, seen: &mut Vec<Value>, done: impl Fn(&[Value]) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
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

/// Drains what arrives within `wait`.
async fn drain(ws: &mut Ws, seen: &mut Vec<Value>, wait: Duration) {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, ws.next()).await {
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == "alert" {
                seen.push(value);
            }
        }
    }
}

fn events(seen: &[Value], kind: &str, event: &str) -> Vec<Value> {
    seen.iter()
        .filter(|e| e["alert"]["kind"] == kind && e["event"] == event)
        .cloned()
        .collect()
}

async fn no_data_alerts(addr: SocketAddr, state: &str) -> Vec<Value> {
    let (status, page) = http(
        addr,
        "GET",
        &format!("/api/alerts?kind=no_data&state={state}&limit=1000"),
        "",
    )
    .await;
    assert_eq!(status, 200, "{page}");
    page["alerts"].as_array().unwrap().clone()
}

#[test]
fn a_silent_feeder_is_one_group_alert_with_real_members() {
    let dir = fresh_data_dir("alert_groups", "feeder");
    let t0 = SystemClock.now_ms() / 1000 * 1000;
    let clock = ManualClock::new(t0);
    let phase_clock = Arc::clone(&clock);
    with_system_clock(Some(dir.clone()), clock, move |addr| async move {
        let clock = phase_clock;
        let feeder: Vec<String> = (1..=6).map(|n| format!("f1-m{n}")).collect();
        let feeder: Vec<&str> = feeder.iter().map(String::as_str).collect();
        step("registering six meters on feeder F1 and one on none");
        let (status, answer) = http(
            addr,
            "POST",
            "/api/meters",
            r#"{"id": "bad-f", "feeder": "F 1"}"#,
        )
        .await;
        assert_eq!(
            (status, &answer["error"]["field"]),
            (400, &json!("feeder")),
            "{answer}"
        );
        for meter in feeder.iter().chain(&["solo"]) {
            let mut body = json!({"id": meter, "thresholds": {"no_data_timeout_s": TIMEOUT_S}});
            if *meter != "solo" {
                body["feeder"] = json!("F1");
            }
            let (status, answer) = http(addr, "POST", "/api/meters", &body.to_string()).await;
            assert_eq!(status, 201, "{answer}");
            if *meter != "solo" {
                assert_eq!(answer["feeder"], "F1", "{answer}");
            }
        }
        let mut all = connect(addr, "").await;
        let mut one = connect(addr, "meter=f1-m1").await;
        let (mut seen_all, mut seen_one) = (Vec::new(), Vec::new());

        post_readings(addr, &[&feeder[..], &["solo"]].concat(), t0).await;
        wait_applied(addr, &[&feeder[..], &["solo"]].concat(), 1).await;
        clock.advance(30_000);
        let late = [&feeder[3..], &["solo"]].concat();
        post_readings(addr, &late, t0 + 30_000).await;
        wait_applied(addr, &late, 2).await;

        step("three of six silent: the third forms the group");
        clock.advance(31_000);
        collect(&mut all, &mut seen_all, |seen| {
            !events(seen, "no_data_group", "updated").is_empty()
        })
        .await;
        let raised = events(&seen_all, "no_data_group", "raised");
        assert_eq!(raised.len(), 1, "{seen_all:#?}");
        let group = &raised[0]["alert"];
        let group_id = group["id"].as_str().unwrap().to_owned();
        assert_eq!(group["meter"], "feeder:F1");
        assert_eq!(group_id, format!("feeder:F1.no_data_group.{}", t0 + 60_000));
        assert_eq!(group["threshold"], 3.0);
        let updated = events(&seen_all, "no_data_group", "updated");
        assert_eq!(
            updated.last().unwrap()["alert"]["value"],
            3.0,
            "{updated:?}"
        );
        assert_eq!(updated.last().unwrap()["alert"]["count"], 3);
        // Before the group formed, two were pushed one by one (ungrouped); none after.
        let singles = events(&seen_all, "no_data", "raised");
        assert_eq!(singles.len(), 2, "{seen_all:#?}");
        assert!(singles.iter().all(|e| e["alert"]["group"].is_null()));
        assert!(
            seen_all
                .iter()
                .filter(|e| e["alert"]["kind"] == "no_data")
                .all(|e| e["event"] == "raised"),
            "no member event after the group formed: {seen_all:#?}"
        );
        // The subscriber of f1-m1 sees its meter's alert, tagged with the group.
        collect(&mut one, &mut seen_one, |seen| {
            seen.iter()
                .any(|e| e["alert"]["group"] == group_id.as_str())
        })
        .await;
        assert!(
            seen_one.iter().all(|e| e["alert"]["meter"] == "f1-m1"),
            "{seen_one:#?}"
        );
        assert!(
            seen_one
                .iter()
                .any(|e| e["alert"]["group"] == group_id.as_str()),
            "{seen_one:#?}"
        );
        // Members are real alerts carrying the group's id; the group lists them.
        let open = no_data_alerts(addr, "firing").await;
        assert_eq!(open.len(), 3, "{open:#?}");
        assert!(
            open.iter().all(|a| a["group"] == group_id.as_str()),
            "{open:#?}"
        );
        let (status, detail) = http(addr, "GET", &format!("/api/alerts/{group_id}"), "").await;
        assert_eq!(status, 200, "{detail}");
        assert_eq!(detail["kind"], "no_data_group");
        assert_eq!(
            detail["members"],
            json!(["f1-m1", "f1-m2", "f1-m3"].map(|m| format!("{m}.no_data.{}", t0 + 60_000)))
        );

        step("the other three (and the feederless meter) go silent too");
        clock.advance(30_000);
        collect(&mut all, &mut seen_all, |seen| {
            events(seen, "no_data_group", "updated")
                .last()
                .is_some_and(|e| e["alert"]["value"] == 6.0)
                && !events(seen, "no_data", "raised")
                    .iter()
                    .all(|e| e["alert"]["meter"] != "solo")
        })
        .await;
        let singles: Vec<String> = events(&seen_all, "no_data", "raised")
            .iter()
            .map(|e| e["alert"]["meter"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            singles.len(),
            3,
            "only solo joins the two early ones: {singles:?}"
        );
        assert!(singles.contains(&"solo".to_owned()));

        step("the feeder is back: members resolve, then the group");
        let now = t0 + 91_000;
        post_readings(addr, &feeder, now).await;
        collect(&mut all, &mut seen_all, |seen| {
            !events(seen, "no_data_group", "resolved").is_empty()
        })
        .await;
        let resolved = events(&seen_all, "no_data_group", "resolved");
        assert_eq!(resolved.len(), 1, "{seen_all:#?}");
        assert_eq!(resolved[0]["alert"]["id"], group_id.as_str());
        assert_eq!(resolved[0]["alert"]["resolved_by"], "system");
        drain(&mut all, &mut seen_all, Duration::from_millis(1_500)).await;
        assert!(
            events(&seen_all, "no_data", "resolved").is_empty(),
            "grouped members' resolves are not pushed to everyone: {seen_all:#?}"
        );
        let members = no_data_alerts(addr, "resolved").await;
        assert_eq!(members.len(), 6, "{members:#?}");
        assert!(members.iter().all(|a| a["group"] == group_id.as_str()));

        step("silent again: acknowledging and resolving the group does it to its members");
        clock.advance(61_000);
        let mut seen = Vec::new();
        collect(&mut all, &mut seen, |seen| {
            !events(seen, "no_data_group", "raised").is_empty()
        })
        .await;
        let second = events(&seen, "no_data_group", "raised");
        assert_eq!(second.len(), 1, "{seen:#?}");
        let second_id = second[0]["alert"]["id"].as_str().unwrap().to_owned();
        assert_ne!(second_id, group_id);
        // Everyone has joined by the next tick.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (_, detail) = http(addr, "GET", &format!("/api/alerts/{second_id}"), "").await;
            if detail["members"].as_array().map(Vec::len) == Some(6) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{detail}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (status, answer) = http(
            addr,
            "POST",
            &format!("/api/alerts/{second_id}/assign"),
            r#"{"to": "dana"}"#,
        )
        .await;
        assert_eq!(
            (status, &answer["error"]["field"]),
            (400, &json!("id")),
            "{answer}"
        );
        let (status, answer) = http(
            addr,
            "POST",
            &format!("/api/alerts/{second_id}/ack"),
            r#"{"by": "ops-1"}"#,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["state"], "acknowledged");
        let acked = no_data_alerts(addr, "acknowledged").await;
        assert_eq!(acked.len(), 6, "{acked:#?}");
        assert!(acked.iter().all(|a| a["acknowledged_by"] == "ops-1"));
        let (status, answer) = http(
            addr,
            "POST",
            &format!("/api/alerts/{second_id}/resolve"),
            r#"{"by": "ops-1"}"#,
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["state"], "resolved");
        assert_eq!(answer["resolved_by"], "ops-1");
        let still_open: Vec<Value> = no_data_alerts(addr, "acknowledged")
            .await
            .into_iter()
            .chain(no_data_alerts(addr, "firing").await)
            .filter(|a| a["meter"] != "solo")
            .collect();
        assert!(still_open.is_empty(), "{still_open:#?}");
    });
    let _ = std::fs::remove_dir_all(&dir);
}
