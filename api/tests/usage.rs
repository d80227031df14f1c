//! Usage rollups end to end in embedded mode: readings posted over HTTP are journaled,
//! the in-process hourly rollup job (timely workers) stores their rollups, and
//! `GET /api/meters/{id}/usage` / `GET /api/users/{id}/usage` answer hours, days and
//! months, priced by the user's tariff; a restart on the same data resumes the job
//! without changing or duplicating the stored hours.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

mod support;
use support::{fresh_data_dir, http, with_system};

/// 2026-11-10T00:00:00Z.
const T0: i64 = 1_794_268_800_000;
const HOUR: i64 = 3_600_000;

/// One reading of `m-roll` every 10 s over `[from, to)`, the register rising 1 Wh each.
fn readings(from: i64, to: i64) -> Vec<Value> {
    readings_of("m-roll", from, to)
}

fn readings_of(meter: &str, from: i64, to: i64) -> Vec<Value> {
    (0..)
        .map(|k| from + k * 10_000)
        .take_while(|ts| *ts < to)
        .map(|ts| {
            json!({"meter": meter, "ts_ms": ts, "voltage": 231.0, "current": 2.0,
                   "power_w": 360.0, "energy_wh": 5000.0 + ((ts - T0) / 10_000) as f64})
        })
        .collect()
}

async fn post(addr: SocketAddr, readings: &[Value]) {
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

/// Waits until `path` lists `n` rollups.
async fn rollups(addr: SocketAddr, path: &str, n: usize) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        let (status, body) = http(addr, "GET", path, "").await;
        assert_eq!(status, 200, "{body}");
        if body["rollups"].as_array().unwrap().len() >= n {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path}: not {n} rollups: {last}");
}

#[test]
fn hourly_rollups_stored_days_and_user_cost_and_restart() {
    let dir = fresh_data_dir("usage", "rollups");
    let hours = format!(
        "/api/meters/m-roll/usage?granularity=hour&from={T0}&to={}",
        T0 + 3 * HOUR
    );
    let hours_path = hours.clone();
    with_system(Some(dir.clone()), |addr| async move {
        let tariff = json!({"id": "flat", "name": "Flat", "definition": {"currency": "GBP",
            "time_zone": "UTC", "billing_period_start_day": 1, "standing_charge_per_day": "0.40",
            "energy": {"kind": "flat", "rate_per_kwh": "0.50"}}});
        assert_eq!(
            http(addr, "POST", "/api/tariffs", &tariff.to_string())
                .await
                .0,
            201
        );
        let account = json!({"id": "u-roll", "name": "Roll", "tariff": "flat"});
        assert_eq!(
            http(addr, "POST", "/api/users", &account.to_string())
                .await
                .0,
            201
        );
        assert_eq!(
            http(addr, "PUT", "/api/meters/m-roll", r#"{"owner":"u-roll"}"#)
                .await
                .0,
            200
        );
        // Three full hours and a minute: hours 0–2 pass the watermark.
        post(addr, &readings(T0, T0 + 3 * HOUR + 60_000)).await;
        let body = rollups(addr, &hours_path, 3).await;
        let rows = body["rollups"].as_array().unwrap();
        assert_eq!(rows.len(), 3, "{body}");
        for (idx, row) in rows.iter().enumerate() {
            assert_eq!(row["window_start_ms"], T0 + idx as i64 * HOUR, "{row}");
            assert_eq!(row["readings"], 360, "{row}");
            assert_eq!(row["expected_readings"], 360, "{row}");
            assert_eq!(row["completeness_pct"], 100.0, "{row}");
            assert_eq!(row["power_max_w"], 360.0, "{row}");
            assert_eq!(row["voltage_min"], 231.0, "{row}");
            // The first reading of all has no step before it.
            let steps = if idx == 0 { 359.0 } else { 360.0 };
            assert_eq!(row["energy_wh"], steps, "{row}");
        }
        // Days are sums of hours (UTC).
        let (status, day) = http(
            addr,
            "GET",
            &format!(
                "/api/meters/m-roll/usage?granularity=day&from={T0}&to={}",
                T0 + 86_400_000
            ),
            "",
        )
        .await;
        assert_eq!(status, 200, "{day}");
        assert_eq!(day["rollups"][0]["readings"], 1080, "{day}");
        assert_eq!(day["rollups"][0]["energy_wh"], 1079.0, "{day}");
        assert_eq!(
            day["rollups"][0]["completeness_pct"], 12.5,
            "3 of 24 hours: {day}"
        );
        // The user's usage, priced by the flat tariff (energy only).
        let (status, user) = http(
            addr,
            "GET",
            &format!(
                "/api/users/u-roll/usage?granularity=hour&from={T0}&to={}",
                T0 + 3 * HOUR
            ),
            "",
        )
        .await;
        assert_eq!(status, 200, "{user}");
        let rows = user["rollups"].as_array().unwrap();
        assert_eq!(rows.len(), 3, "{user}");
        assert_eq!(rows[1]["energy_wh"], 360.0, "{user}");
        assert_eq!(rows[1]["cost"], "0.18", "0.36 kWh × 0.50: {user}");
        assert_eq!(rows[1]["currency"], "GBP", "{user}");
        assert_eq!(rows[1]["meters"], 1, "{user}");
        let (status, month) = http(
            addr,
            "GET",
            &format!(
                "/api/users/u-roll/usage?granularity=month&from={T0}&to={}",
                T0 + HOUR
            ),
            "",
        )
        .await;
        assert_eq!(status, 200, "{month}");
        assert_eq!(
            month["rollups"][0]["window_start_ms"], 1_793_491_200_000_i64,
            "November 2026 in UTC: {month}"
        );
        // Bad input names the parameter.
        let (status, body) =
            http(addr, "GET", "/api/meters/m-roll/usage?granularity=week", "").await;
        assert_eq!(
            (status, &body["error"]["field"]),
            (400, &json!("granularity")),
            "{body}"
        );
        let (status, body) = http(
            addr,
            "GET",
            &format!("/api/meters/m-roll/usage?from={T0}&to={T0}"),
            "",
        )
        .await;
        assert_eq!(
            (status, &body["error"]["field"]),
            (400, &json!("to")),
            "{body}"
        );
    });
    // Restart: the job resumes from its checkpoint; two more hours arrive.
    let hours_path = format!(
        "/api/meters/m-roll/usage?granularity=hour&from={T0}&to={}",
        T0 + 5 * HOUR
    );
    with_system(Some(dir.clone()), |addr| async move {
        post(
            addr,
            &readings(T0 + 3 * HOUR + 60_000, T0 + 5 * HOUR + 60_000),
        )
        .await;
        let body = rollups(addr, &hours_path, 5).await;
        let rows = body["rollups"].as_array().unwrap();
        assert_eq!(rows.len(), 5, "one row per hour, none twice: {body}");
        for row in rows {
            assert_eq!(row["readings"], 360, "{row}");
        }
        assert_eq!(
            rows[3]["energy_wh"], 360.0,
            "the step across the restart counts once: {body}"
        );
        // Days follow the tariff's time zone: Berlin is UTC+1 in November, so its
        // 11 November starts at 23:00 UTC on the 10th. (After the other meter's
        // readings: a partition's watermark only moves forward.)
        let berlin = json!({"id": "berlin", "name": "Berlin", "definition": {"currency": "EUR",
            "time_zone": "Europe/Berlin", "billing_period_start_day": 1, "standing_charge_per_day": "0",
            "energy": {"kind": "flat", "rate_per_kwh": "0.30"}}});
        assert_eq!(
            http(addr, "POST", "/api/tariffs", &berlin.to_string())
                .await
                .0,
            201
        );
        let account = json!({"id": "u-ber", "name": "Berlin", "tariff": "berlin"});
        assert_eq!(
            http(addr, "POST", "/api/users", &account.to_string())
                .await
                .0,
            201
        );
        assert_eq!(
            http(addr, "PUT", "/api/meters/m-ber", r#"{"owner":"u-ber"}"#)
                .await
                .0,
            200
        );
        post(
            addr,
            &readings_of("m-ber", T0 + 22 * HOUR, T0 + 25 * HOUR + 60_000),
        )
        .await;
        let range = format!("from={}&to={}", T0 + 22 * HOUR, T0 + 25 * HOUR);
        rollups(
            addr,
            &format!("/api/meters/m-ber/usage?granularity=hour&{range}"),
            3,
        )
        .await;
        let (status, days) = http(
            addr,
            "GET",
            &format!("/api/meters/m-ber/usage?granularity=day&{range}"),
            "",
        )
        .await;
        assert_eq!(status, 200, "{days}");
        let rows = days["rollups"].as_array().unwrap();
        assert_eq!(rows.len(), 2, "{days}");
        assert_eq!(
            rows[0]["window_start_ms"],
            T0 - HOUR,
            "Berlin's 10 November: {days}"
        );
        assert_eq!(
            (&rows[1]["window_start_ms"], &rows[1]["readings"]),
            (&json!(T0 + 23 * HOUR), &json!(720)),
            "{days}"
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
