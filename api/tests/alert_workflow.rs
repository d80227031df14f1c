//! The alert workflow end to end on the embedded system (real store, journal, actors and
//! websocket; a manual clock): assign, comment, snooze and unsnooze in the alert's
//! history (`GET /api/alerts/{id}`) and on `/ws/alerts`, bad bodies answered 400 naming
//! the field; reminders after the delay, none while snoozed, resumed after, never twice
//! across a restart; threshold readings measured while the meter was offline raise no
//! threshold alert.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use gridpulse_actors::{Clock, ManualClock, SystemClock};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::{Shutdown, Ws, fresh_data_dir, http, with_system_clock, with_system_config};

const MINUTE: i64 = 60_000;
/// How long a test listens to be sure nothing comes: the sweep runs every second.
const QUIET: Duration = Duration::from_millis(2_500);

/// Now, to the second (readings must not be far from the clock).
fn now_ms() -> i64 {
    SystemClock.now_ms() / 1000 * 1000
}

fn reading(meter: &str, ts_ms: i64, voltage: f64, current: f64, energy_wh: f64) -> Value {
    json!({"meter": meter, "ts_ms": ts_ms, "voltage": voltage, "current": current,
           "power_w": 200.0, "energy_wh": energy_wh})
}

async fn post_readings(addr: std::net::SocketAddr, readings: Value) {
    let n = readings.as_array().unwrap().len();
    let (status, answer) = http(addr, "POST", "/api/readings", &readings.to_string()).await;
    assert_eq!((status, &answer["accepted"]), (202, &json!(n)), "{answer}");
}

/// Registers `meter` with its own no-data timeout (a manual clock moved by minutes must
/// not make every meter silent).
async fn register(addr: std::net::SocketAddr, meter: &str, no_data_timeout_s: u32) {
    let body = json!({"id": meter, "thresholds": {"no_data_timeout_s": no_data_timeout_s}});
    let (status, answer) = http(addr, "POST", "/api/meters", &body.to_string()).await;
    assert_eq!(status, 201, "{answer}");
}

/// Waits (at most 10 s) until `meter` has applied `n` readings: the time they arrived
/// is taken when they are routed, so the clock must not move before.
async fn wait_applied(addr: std::net::SocketAddr, meter: &str, n: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, state) = http(addr, "GET", &format!("/api/meters/{meter}"), "").await;
        if status == 200 && state["n_readings"] == n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{meter} did not apply {n} readings within 10 s: {state}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Connects to `/ws/alerts?{query}`; answers the socket and its snapshot.
async fn connect(addr: std::net::SocketAddr, query: &str) -> (Ws, Value) {
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws/alerts?{query}")),
    )
    .await
    .expect("websocket connects within 10 s")
    .unwrap();
    let snapshot = next_json(&mut ws, Duration::from_secs(10))
        .await
        .expect("a snapshot within 10 s");
    assert_eq!(snapshot["type"], "snapshot", "{snapshot}");
    (ws, snapshot)
}

/// The next JSON message within `wait`, or `None`.
async fn next_json(ws: &mut Ws, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next()).await.ok()?;
        let message = message.expect("stream open").expect("no websocket error");
        if let Message::Text(text) = message {
            return Some(serde_json::from_str(&text).unwrap());
        }
    }
}

/// Alert events until one is `event`, within 10 s; answers it and those before it.
async fn wait_for(ws: &mut Ws, event: &str) -> (Value, Vec<Value>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut before = Vec::new();
    loop {
        let wait = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(message) = next_json(ws, wait).await else {
            panic!("no `{event}` event within 10 s; got {before:?}");
        };
        if message["type"] == "alert" && message["event"] == event {
            return (message, before);
        }
        before.push(message);
    }
}

/// Asserts that no alert event arrives for `wait`.
async fn quiet(ws: &mut Ws, wait: Duration, why: &str) {
    if let Some(message) = next_json(ws, wait).await {
        panic!("{why}, yet: {message}");
    }
}

async fn alert_detail(addr: std::net::SocketAddr, id: &str) -> Value {
    let (status, detail) = http(addr, "GET", &format!("/api/alerts/{id}"), "").await;
    assert_eq!(status, 200, "{detail}");
    detail
}

fn history_events(detail: &Value) -> Vec<String> {
    detail["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["event"].as_str().unwrap().to_owned())
        .collect()
}

/// POSTs `body` to `/api/alerts/{id}/{action}` and expects a 400 naming `field`.
async fn refused(addr: std::net::SocketAddr, id: &str, action: &str, body: &str, field: &str) {
    let (status, answer) = http(addr, "POST", &format!("/api/alerts/{id}/{action}"), body).await;
    assert_eq!(status, 400, "{action} {body}: {answer}");
    assert_eq!(answer["error"]["field"], field, "{action} {body}: {answer}");
}

#[test]
fn assign_comment_snooze_and_unsnooze_are_in_the_history_and_on_the_websocket() {
    let dir = fresh_data_dir("alert_workflow", "workflow");
    let t0 = now_ms();
    let clock = ManualClock::new(t0);
    let alert_id = format!("wf-1.over_voltage.{}", t0 - 1000);

    let (phase_clock, id) = (Arc::clone(&clock), alert_id.clone());
    with_system_clock(Some(dir.clone()), clock.clone(), move |addr| async move {
        let clock = phase_clock;
        register(addr, "wf-1", 86_400).await;
        let (mut ws, _) = connect(addr, "meter=wf-1").await;
        post_readings(addr, json!([reading("wf-1", t0 - 1000, 262.0, 1.0, 1.0)])).await;
        let (raised, _) = wait_for(&mut ws, "raised").await;
        assert_eq!(raised["alert"]["id"], id.as_str());
        let path = |action: &str| format!("/api/alerts/{id}/{action}");

        // Assign: the record answers the assignee, the event says who and when.
        let (status, alert) = http(
            addr,
            "POST",
            &path("assign"),
            r#"{"to": "dana", "by": "ops-1"}"#,
        )
        .await;
        assert_eq!(
            (status, &alert["assignee"]),
            (200, &json!("dana")),
            "{alert}"
        );
        let (assigned, _) = wait_for(&mut ws, "assigned").await;
        assert_eq!(assigned["alert"]["assignee"], "dana");
        assert_eq!(assigned["note"]["by"], "ops-1");
        assert_eq!(assigned["note"]["at_ms"], t0);
        // The same assignment again changes nothing (no event: see the history below).
        let (status, _) = http(addr, "POST", &path("assign"), r#"{"to": "dana"}"#).await;
        assert_eq!(status, 200);

        // Two comments in one millisecond: two events, each with its text.
        clock.advance(1000);
        for (text, n) in [("on my way", 1), ("fuse replaced", 2)] {
            let body = json!({"text": text, "by": "dana"}).to_string();
            let (status, alert) = http(addr, "POST", &path("comments"), &body).await;
            assert_eq!((status, &alert["comments"]), (200, &json!(n)), "{alert}");
            let (commented, _) = wait_for(&mut ws, "commented").await;
            assert_eq!(commented["note"]["text"], text);
            assert_eq!(commented["note"]["by"], "dana");
            assert_eq!(commented["alert"]["comments"], n);
        }

        // Snooze for an hour, then lift it (no body: the caller, `insecure-dev`).
        let until = t0 + 60 * MINUTE;
        let body = json!({"until": until, "by": "dana"}).to_string();
        let (status, alert) = http(addr, "POST", &path("snooze"), &body).await;
        assert_eq!((status, &alert["snoozed_until_ms"]), (200, &json!(until)));
        let (snoozed, _) = wait_for(&mut ws, "snoozed").await;
        assert_eq!(snoozed["alert"]["snoozed_until_ms"], until);
        clock.advance(1000);
        let (status, alert) = http(addr, "DELETE", &path("snooze"), "").await;
        assert_eq!((status, &alert["snoozed_until_ms"]), (200, &Value::Null));
        let (unsnoozed, _) = wait_for(&mut ws, "unsnoozed").await;
        assert_eq!(unsnoozed["note"]["by"], "insecure-dev");
        assert_eq!(unsnoozed["note"]["at_ms"], t0 + 2000);

        // Unassign.
        let (status, alert) = http(
            addr,
            "POST",
            &path("assign"),
            r#"{"to": null, "by": "ops-1"}"#,
        )
        .await;
        assert_eq!((status, &alert["assignee"]), (200, &Value::Null));
        let (unassigned, _) = wait_for(&mut ws, "assigned").await;
        assert_eq!(unassigned["alert"]["assignee"], Value::Null);

        // Bad bodies: 400 naming the field, and nothing changes.
        let long_name = "n".repeat(101);
        refused(addr, &id, "assign", "{}", "to").await;
        refused(addr, &id, "assign", "", "to").await;
        refused(addr, &id, "assign", r#"{"to": "  "}"#, "to").await;
        refused(addr, &id, "assign", r#"{"to": 7}"#, "to").await;
        refused(
            addr,
            &id,
            "assign",
            &json!({"to": long_name}).to_string(),
            "to",
        )
        .await;
        refused(addr, &id, "assign", r#"{"to": "x", "by": ""}"#, "by").await;
        refused(addr, &id, "comments", "{}", "text").await;
        refused(addr, &id, "comments", r#"{"text": ""}"#, "text").await;
        refused(addr, &id, "comments", r#"{"text": " \n "}"#, "text").await;
        refused(addr, &id, "comments", r#"{"text": 5}"#, "text").await;
        let too_long = json!({ "text": "x".repeat(2001) }).to_string();
        refused(addr, &id, "comments", &too_long, "text").await;
        refused(
            addr,
            &id,
            "comments",
            r#"{"text": "x", "colour": 1}"#,
            "colour",
        )
        .await;
        refused(
            addr,
            &id,
            "comments",
            &json!({"text": "x", "by": long_name}).to_string(),
            "by",
        )
        .await;
        let now = clock.now_ms();
        for until in [
            json!(t0 - 1),
            json!(now),
            json!(now + 30 * 24 * 60 * MINUTE + 1),
            json!("tomorrow"),
            json!(1.5),
        ] {
            let body = json!({ "until": until }).to_string();
            refused(addr, &id, "snooze", &body, "until").await;
        }
        refused(addr, &id, "snooze", "{}", "until").await;
        let (status, answer) = http(addr, "POST", &path("snooze"), r#"{"until": 1"#).await;
        assert_eq!(status, 400, "malformed JSON: {answer}");
        let (status, answer) = http(addr, "POST", &path("snooze"), r#"{"until": 0}"#).await;
        assert!(
            status == 400
                && answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("future"),
            "{answer}"
        );
        let unknown = "/api/alerts/wf-1.over_voltage.5/comments";
        let (status, _) = http(addr, "POST", unknown, r#"{"text": "x"}"#).await;
        assert_eq!(status, 404);

        // A comment is counted in characters, not bytes: 2000 `é` (4000 bytes) fit.
        let body = json!({ "text": "é".repeat(2000) }).to_string();
        let (status, alert) = http(addr, "POST", &path("comments"), &body).await;
        assert_eq!((status, &alert["comments"]), (200, &json!(3)), "{alert}");
        wait_for(&mut ws, "commented").await;

        // The history: oldest first, who, when and what.
        let detail = alert_detail(addr, &id).await;
        assert_eq!(
            history_events(&detail),
            [
                "raised",
                "assigned",
                "commented",
                "commented",
                "snoozed",
                "unsnoozed",
                "assigned",
                "commented"
            ]
        );
        let history = &detail["history"];
        assert_eq!(history[1]["by"], "ops-1");
        assert_eq!(history[1]["at_ms"], t0);
        assert_eq!(history[1]["alert"]["assignee"], "dana");
        assert_eq!(history[2]["comment"], "on my way");
        assert_eq!(history[2]["by"], "dana");
        assert_eq!(history[2]["at_ms"], t0 + 1000);
        assert_eq!(history[3]["comment"], "fuse replaced");
        assert_eq!(history[4]["alert"]["snoozed_until_ms"], until);
        assert_eq!(history[5]["by"], "insecure-dev");
        assert_eq!(history[6]["alert"]["assignee"], Value::Null);
        assert_eq!(
            history[7]["comment"].as_str().unwrap().chars().count(),
            2000
        );
        assert_eq!(detail["comments"], 3);
        assert_eq!(detail["state"], "firing");
    });

    // Restarted on the same directory: nothing is lost, and the meter's own state kept
    // the workflow (the next comment is the fourth, and the eighth workflow event).
    let id = alert_id;
    with_system_clock(Some(dir.clone()), clock, move |addr| async move {
        let detail = alert_detail(addr, &id).await;
        assert_eq!(history_events(&detail).len(), 8, "{detail}");
        assert_eq!(detail["comments"], 3);
        let (mut ws, snapshot) = connect(addr, "meter=wf-1").await;
        assert_eq!(snapshot["alerts"][0]["id"], id.as_str());
        assert_eq!(snapshot["alerts"][0]["comments"], 3);
        let path = |action: &str| format!("/api/alerts/{id}/{action}");
        let (status, alert) = http(addr, "POST", &path("comments"), r#"{"text": "back"}"#).await;
        assert_eq!((status, &alert["comments"]), (200, &json!(4)), "{alert}");
        let (commented, _) = wait_for(&mut ws, "commented").await;
        assert_eq!(commented["note"]["action_seq"], 8);
        // A resolved alert takes no more comments.
        let (status, _) = http(addr, "POST", &path("resolve"), "").await;
        assert_eq!(status, 200);
        let (status, answer) = http(addr, "POST", &path("comments"), r#"{"text": "x"}"#).await;
        assert_eq!(status, 409, "{answer}");
        let (status, _) = http(
            addr,
            "POST",
            &path("snooze"),
            &json!({"until": t0 + 10 * MINUTE}).to_string(),
        )
        .await;
        assert_eq!(status, 409);
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reminders_come_after_the_delay_not_while_snoozed_and_never_twice_across_a_restart() {
    let dir = fresh_data_dir("alert_workflow", "reminders");
    let t0 = now_ms();
    let clock = ManualClock::new(t0);
    let alert_id = format!("rm-1.over_voltage.{}", t0 - 1000);
    // Only the actions themselves store the meter's snapshot: no periodic checkpoint,
    // and the first phase ends without the final one (like a crash).
    let configure = |config: &mut gridpulse_api::EmbeddedConfig| {
        config.alert_reminder_after = Some(Duration::from_secs(15 * 60));
        config.rollup_workers = 0;
        if let Some(persistence) = config.persistence.as_mut() {
            persistence.checkpoint_interval = Duration::from_secs(3600);
        }
    };

    let (phase_clock, id) = (Arc::clone(&clock), alert_id.clone());
    with_system_config(
        Some(dir.clone()),
        clock.clone(),
        configure,
        Shutdown::NoCheckpoint,
        move |addr| async move {
            let clock = phase_clock;
            register(addr, "rm-1", 86_400).await;
            let (mut ws, _) = connect(addr, "meter=rm-1").await;
            post_readings(addr, json!([reading("rm-1", t0 - 1000, 262.0, 1.0, 1.0)])).await;
            wait_for(&mut ws, "raised").await;

            // Raised when the reading arrived (t0): due at t0 + 15 min, not before.
            clock.advance(15 * MINUTE - 1000);
            quiet(&mut ws, QUIET, "no reminder before 15 minutes").await;
            clock.advance(2000);
            let (reminder, _) = wait_for(&mut ws, "reminder").await;
            assert_eq!(reminder["alert"]["id"], id.as_str());
            assert_eq!(reminder["note"]["by"], "system");
            assert_eq!(reminder["note"]["at_ms"], t0 + 15 * MINUTE);
            assert_eq!(reminder["alert"]["reminders"], 1);
            assert_eq!(reminder["alert"]["last_reminder_ms"], t0 + 15 * MINUTE);

            // Snoozed until t0 + 40 min: the one due at t0 + 30 min does not come.
            let body = json!({"until": t0 + 40 * MINUTE, "by": "dana"}).to_string();
            let path = format!("/api/alerts/{id}/snooze");
            let (status, _) = http(addr, "POST", &path, &body).await;
            assert_eq!(status, 200);
            wait_for(&mut ws, "snoozed").await;
            clock.advance(16 * MINUTE);
            quiet(&mut ws, QUIET, "no reminder while snoozed").await;
            // The snooze runs out: unsnoozed by the system at its end; reminders resume
            // an interval later (t0 + 55 min).
            clock.set(t0 + 40 * MINUTE + 1000);
            let (ended, _) = wait_for(&mut ws, "unsnoozed").await;
            assert_eq!(ended["note"]["by"], "system");
            assert_eq!(ended["note"]["at_ms"], t0 + 40 * MINUTE);
            assert_eq!(ended["alert"]["snoozed_until_ms"], Value::Null);
            quiet(&mut ws, QUIET, "the next reminder is not due yet").await;
        },
    );

    // Restarted without a final checkpoint: the meter starts at boot (it has an open
    // alert) from the snapshot its reminder and snooze stored, so nothing is repeated.
    let (phase_clock, id) = (Arc::clone(&clock), alert_id.clone());
    with_system_config(
        Some(dir.clone()),
        clock.clone(),
        configure,
        Shutdown::Clean,
        move |addr| async move {
            let clock = phase_clock;
            let (mut ws, snapshot) = connect(addr, "meter=rm-1").await;
            assert_eq!(snapshot["alerts"][0]["id"], id.as_str());
            assert_eq!(snapshot["alerts"][0]["reminders"], 1);
            quiet(
                &mut ws,
                QUIET,
                "no reminder or unsnooze repeated after the restart",
            )
            .await;
            let (status, meter) = http(addr, "GET", "/api/meters/rm-1", "").await;
            assert_eq!(status, 200, "{meter}");
            let open = &meter["open_alerts"][0];
            assert_eq!(
                (&open["reminders"], &open["snoozed_until_ms"]),
                (&json!(1), &Value::Null)
            );

            clock.set(t0 + 55 * MINUTE + 1000);
            let (reminder, _) = wait_for(&mut ws, "reminder").await;
            assert_eq!(reminder["note"]["at_ms"], t0 + 55 * MINUTE);
            assert_eq!(reminder["alert"]["reminders"], 2);
            // Reminder, snoozed, unsnoozed, reminder: the fourth workflow event.
            assert_eq!(reminder["note"]["action_seq"], 4);

            // Acknowledged: no more reminders.
            let (status, _) = http(addr, "POST", &format!("/api/alerts/{id}/ack"), "").await;
            assert_eq!(status, 200);
            wait_for(&mut ws, "acknowledged").await;
            clock.set(t0 + 80 * MINUTE);
            quiet(&mut ws, QUIET, "no reminder once acknowledged").await;

            let detail = alert_detail(addr, &id).await;
            assert_eq!(
                history_events(&detail),
                [
                    "raised",
                    "reminder",
                    "snoozed",
                    "unsnoozed",
                    "reminder",
                    "acknowledged"
                ]
            );
            let reminders: Vec<&Value> = detail["history"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|entry| entry["event"] == "reminder")
                .map(|entry| &entry["at_ms"])
                .collect();
            assert_eq!(
                reminders,
                [&json!(t0 + 15 * MINUTE), &json!(t0 + 55 * MINUTE)]
            );
        },
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn threshold_readings_measured_while_offline_raise_no_threshold_alert() {
    let dir = fresh_data_dir("alert_workflow", "inhibition");
    let t0 = now_ms();
    let clock = ManualClock::new(t0);
    let phase_clock = Arc::clone(&clock);
    with_system_clock(Some(dir.clone()), clock, move |addr| async move {
        let clock = phase_clock;
        // Default thresholds: no data after 60 s of silence.
        let (mut ws, _) = connect(addr, "meter=in-1").await;
        post_readings(addr, json!([reading("in-1", t0 - 1000, 230.0, 1.0, 1.0)])).await;
        wait_applied(addr, "in-1", 1).await;
        clock.advance(5 * MINUTE);
        let (no_data, _) = wait_for(&mut ws, "raised").await;
        assert_eq!(no_data["alert"]["kind"], "no_data");
        let offline_from = t0 - 1000 + 60_000;
        assert_eq!(no_data["alert"]["first_seen_ms"], offline_from);

        // The meter comes back with its buffer: over-voltage at +2 min, under-voltage
        // and over-current at +4 min, all measured while it was offline. No data is
        // resolved; none of them raises an alert.
        post_readings(
            addr,
            json!([
                reading("in-1", t0 + 2 * MINUTE, 262.0, 1.0, 2.0),
                reading("in-1", t0 + 4 * MINUTE, 190.0, 80.0, 3.0),
            ]),
        )
        .await;
        let (resolved, _) = wait_for(&mut ws, "resolved").await;
        assert_eq!(resolved["alert"]["kind"], "no_data");
        // A reading measured after the reconnect (t0 + 5 min) is live: it raises. The
        // meter applies its readings in order, so every earlier event came before this.
        clock.advance(2000);
        post_readings(
            addr,
            json!([reading("in-1", t0 + 5 * MINUTE + 1000, 262.0, 1.0, 4.0)]),
        )
        .await;
        let (raised, between) = wait_for(&mut ws, "raised").await;
        assert_eq!(raised["alert"]["kind"], "over_voltage");
        assert_eq!(raised["alert"]["first_seen_ms"], t0 + 5 * MINUTE + 1000);
        assert!(
            between.is_empty(),
            "nothing raised from the backlog: {between:?}"
        );

        let (status, meter) = http(addr, "GET", "/api/meters/in-1", "").await;
        assert_eq!(status, 200, "{meter}");
        assert_eq!(meter["n_inhibited_alerts"], 3, "{meter}");
        assert_eq!(meter["n_readings"], 4);
        let (status, list) = http(addr, "GET", "/api/alerts?meter=in-1", "").await;
        assert_eq!(status, 200);
        let kinds: Vec<(&Value, &Value)> = list["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|alert| (&alert["kind"], &alert["state"]))
            .collect();
        assert_eq!(
            kinds,
            [
                (&json!("over_voltage"), &json!("firing")),
                (&json!("no_data"), &json!("resolved"))
            ]
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
