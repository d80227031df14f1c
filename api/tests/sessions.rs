//! Saving sessions end to end in embedded mode, on a manual clock: two weeks of stored
//! history for two users' meters, a session scheduled and opted in to (baselines from
//! the stored readings), live progress over the websocket during the session, the
//! results (saved kWh, points, streak) and the leaderboard after it; bad input and late
//! or data-less opt-ins refused.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use gridpulse_actors::ManualClock;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::{fresh_data_dir, http, with_system_clock};

/// 2026-11-26T17:00:00Z, a Thursday: the session runs 17:00–18:00 UTC.
const SESSION_START: i64 = 1_795_712_400_000;
const MINUTE: i64 = 60_000;
const DAY: i64 = 86_400_000;

/// Readings of `meter` every minute over `[from, to)`, the register rising `wh_per_minute`
/// from `register`; answers the register after.
fn minute_readings(
    meter: &str,
    from: i64,
    to: i64,
    register: &mut f64,
    wh_per_minute: f64,
) -> Vec<Value> {
    let mut out = Vec::new();
    let mut ts = from;
    while ts < to {
        out.push(
            json!({"meter": meter, "ts_ms": ts, "voltage": 230.0, "current": 10.0,
                        "power_w": wh_per_minute * 60.0, "energy_wh": *register}),
        );
        *register += wh_per_minute;
        ts += MINUTE;
    }
    out
}

async fn post_all(addr: std::net::SocketAddr, readings: &[Value]) {
    for chunk in readings.chunks(300) {
        let (status, body) = http(
            addr,
            "POST",
            "/api/readings",
            &Value::Array(chunk.to_vec()).to_string(),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
}

/// Waits until the store holds `n` readings of `meter` in `[from, to)`.
async fn stored(addr: std::net::SocketAddr, meter: &str, from: i64, to: i64, n: usize) {
    for _ in 0..200 {
        let (_, page) = http(
            addr,
            "GET",
            &format!("/api/meters/{meter}/readings?from={from}&to={to}&limit=10000"),
            "",
        )
        .await;
        if page["readings"].as_array().map_or(0, Vec::len) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{meter}: {n} readings not stored");
}

#[test]
fn baselines_progress_results_and_leaderboard() {
    let dir = fresh_data_dir("sessions", "e2e");
    // History is posted "live" at the session day's 16:45.
    let clock = ManualClock::new(SESSION_START - 15 * MINUTE);
    let phase_clock = Arc::clone(&clock);
    with_system_clock(Some(dir.clone()), clock, |addr| async move {
        let clock = phase_clock;
        for (user, meter) in [
            ("u-saver", "m-saver"),
            ("u-spender", "m-spender"),
            ("u-new", "m-new"),
        ] {
            let (status, body) = http(
                addr,
                "POST",
                "/api/users",
                &json!({"id": user, "name": user}).to_string(),
            )
            .await;
            assert_eq!(status, 201, "{body}");
            let (status, body) = http(
                addr,
                "PUT",
                &format!("/api/meters/{meter}"),
                &json!({"owner": user}).to_string(),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
        // 14 days of history, 16:30–18:10 each day, 20 Wh a minute (600 Wh a half-hour).
        let mut registers = [1000.0, 1000.0];
        for (idx, meter) in ["m-saver", "m-spender"].into_iter().enumerate() {
            let mut history = Vec::new();
            for back in (1..=14).rev() {
                let day_start = SESSION_START - back * DAY - 30 * MINUTE;
                history.extend(minute_readings(
                    meter,
                    day_start,
                    day_start + 100 * MINUTE,
                    &mut registers[idx],
                    20.0,
                ));
            }
            post_all(addr, &history).await;
            stored(
                addr,
                meter,
                SESSION_START - 15 * DAY,
                SESSION_START - DAY / 2,
                history.len(),
            )
            .await;
        }
        // u-new has one reading: no baseline.
        post_all(
            addr,
            &minute_readings(
                "m-new",
                SESSION_START - DAY,
                SESSION_START - DAY + MINUTE,
                &mut 0.0,
                1.0,
            ),
        )
        .await;

        // Schedule; bad windows name the field.
        let session = json!({"id": "s-1", "name": "Thursday peak", "start_ms": SESSION_START,
                             "end_ms": SESSION_START + 60 * MINUTE, "time_zone": "UTC"});
        let (status, body) = http(addr, "POST", "/api/sessions", &session.to_string()).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = http(addr, "POST", "/api/sessions", &session.to_string()).await;
        assert_eq!(status, 200, "the same again: {body}");
        let mut unaligned = session.clone();
        unaligned["id"] = json!("s-bad");
        unaligned["end_ms"] = json!(SESSION_START + 45 * MINUTE);
        let (status, body) = http(addr, "POST", "/api/sessions", &unaligned.to_string()).await;
        assert_eq!(
            (status, &body["error"]["field"]),
            (400, &json!("end_ms")),
            "{body}"
        );

        // Opt in: baselines from the stored history (the last 10 weekdays).
        for user in ["u-saver", "u-spender"] {
            let (status, body) = http(
                addr,
                "POST",
                "/api/sessions/s-1/participants",
                &json!({"user": user}).to_string(),
            )
            .await;
            assert_eq!(status, 201, "{body}");
            assert_eq!(
                body["baseline"]["per_slot_wh"],
                json!([600.0, 600.0]),
                "{body}"
            );
            assert_eq!(
                body["baseline"]["days_used"].as_array().unwrap().len(),
                10,
                "{body}"
            );
            assert!(
                body["baseline"]["days_used"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(
                        |d| !["2026-11-21", "2026-11-22", "2026-11-15", "2026-11-14"]
                            .contains(&d.as_str().unwrap())
                    ),
                "weekdays only: {body}"
            );
        }
        let (status, body) = http(
            addr,
            "POST",
            "/api/sessions/s-1/participants",
            &json!({"user": "u-new"}).to_string(),
        )
        .await;
        assert_eq!(status, 409, "insufficient data: {body}");
        let (status, body) = http(
            addr,
            "POST",
            "/api/sessions/s-1/participants",
            &json!({"user": "nobody"}).to_string(),
        )
        .await;
        assert_eq!(status, 404, "{body}");

        let (mut ws, _) = tokio_tungstenite::connect_async(format!(
            "ws://{addr}/ws/alerts?snapshot=false&user=u-saver&types=session_progress,session_result"
        ))
        .await
        .unwrap();
        // The session: the saver uses 10 Wh a minute, the spender 25.
        clock.advance(90 * MINUTE);
        let (status, body) = http(
            addr,
            "POST",
            "/api/sessions/s-1/participants",
            &json!({"user": "u-new"}).to_string(),
        )
        .await;
        assert_eq!(status, 409, "too late: {body}");
        for (idx, (meter, wh)) in [("m-saver", 10.0), ("m-spender", 25.0)]
            .into_iter()
            .enumerate()
        {
            let readings = minute_readings(
                meter,
                SESSION_START - 5 * MINUTE,
                SESSION_START + 66 * MINUTE,
                &mut registers[idx],
                wh,
            );
            post_all(addr, &readings).await;
        }
        let mut progress = Vec::new();
        let mut result = Value::Null;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while result.is_null() {
            let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, ws.next()).await else {
                panic!(
                    "no session result within 20 s; progress: {}",
                    progress.len()
                );
            };
            if let Message::Text(text) = message {
                let event: Value = serde_json::from_str(&text).unwrap();
                match event["type"].as_str().unwrap() {
                    "session_progress" => progress.push(event),
                    "session_result" => result = event,
                    other => panic!("unexpected {other}"),
                }
            }
        }
        assert!(
            progress.len() >= 55,
            "live progress each minute: {}",
            progress.len()
        );
        let last = &progress[progress.len() - 1]["progress"];
        assert!(last["saved_so_far_wh"].as_f64().unwrap() > 500.0, "{last}");
        assert_eq!(result["result"]["saved_wh"], 600.0, "{result}");
        assert_eq!(result["result"]["points"], 480, "0.6 kWh × 800: {result}");
        assert_eq!(result["streak"]["current"], 1, "{result}");

        // The standing: results and the leaderboard.
        let mut standing = Value::Null;
        for _ in 0..100 {
            let (status, body) = http(addr, "GET", "/api/sessions/s-1", "").await;
            assert_eq!(status, 200, "{body}");
            if body["leaderboard"].as_array().unwrap().len() == 2 {
                standing = body;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let board = standing["leaderboard"].as_array().unwrap();
        assert_eq!(
            (
                board[0]["user"].as_str(),
                board[0]["rank"].as_u64(),
                board[0]["points"].as_u64()
            ),
            (Some("u-saver"), Some(1), Some(480)),
            "{standing}"
        );
        assert_eq!(
            (board[1]["user"].as_str(), board[1]["points"].as_u64()),
            (Some("u-spender"), Some(0)),
            "{standing}"
        );
        let (status, list) = http(addr, "GET", "/api/sessions", "").await;
        assert_eq!(
            (status, &list["sessions"][0]["participants"]),
            (200, &json!(2)),
            "{list}"
        );
        let (status, page) = http(addr, "GET", "/api/sessions?limit=1", "").await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(page["sessions"].as_array().unwrap().len(), 1, "{page}");
        let more = list["sessions"].as_array().unwrap().len() > 1;
        assert_eq!(page.get("next").is_some(), more, "{list} {page}");
        let (status, bad) = http(addr, "GET", "/api/sessions?after=soon", "").await;
        assert_eq!(
            (status, bad["error"]["field"].as_str()),
            (400, Some("after"))
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
