//! `GET /api/overview`: the dashboard's figures follow what the system holds.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::{http, with_system};

fn reading(meter: &str, ts_ms: i64, voltage: f64) -> Value {
    json!({"meter": meter, "ts_ms": ts_ms, "voltage": voltage, "current": 2.0,
           "power_w": 440.0, "energy_wh": 1000.0})
}

#[test]
fn the_overview_counts_meters_readings_and_open_alerts() {
    with_system(None, |addr| async move {
        let (status, empty) = http(addr, "GET", "/api/overview", "").await;
        assert_eq!(status, 200, "{empty}");
        assert_eq!(empty["mode"], "embedded");
        assert_eq!(empty["meters"]["live"], 0, "{empty}");
        assert_eq!(empty["alerts_open"]["total"], 0, "{empty}");
        assert_eq!(
            empty["alerts_open"]["by_kind"]["over_voltage"], 0,
            "{empty}"
        );
        assert_eq!(empty["consumer_lag"], Value::Null, "no Kafka here");

        let now = gridpulse_actors::Clock::now_ms(&gridpulse_actors::SystemClock);
        let mut body = Vec::new();
        for meter in ["ov-1", "ov-2", "ov-3"] {
            body.push(reading(meter, now - 10_000, 230.0));
        }
        // One meter over the voltage limit.
        body.push(reading("ov-2", now - 5_000, 262.0));
        let (status, answer) = http(
            addr,
            "POST",
            "/api/readings",
            &Value::Array(body).to_string(),
        )
        .await;
        assert_eq!(status, 202, "{answer}");

        let deadline = Instant::now() + Duration::from_secs(10);
        let overview = loop {
            let (_, overview) = http(addr, "GET", "/api/overview", "").await;
            if overview["readings_applied_total"] == 4 && overview["alerts_open"]["total"] == 1 {
                break overview;
            }
            assert!(Instant::now() < deadline, "never caught up: {overview}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(overview["meters"]["live"], 3, "{overview}");
        assert_eq!(overview["meters"]["offline"], 0, "{overview}");
        assert_eq!(
            overview["alerts_open"]["by_kind"]["over_voltage"], 1,
            "{overview}"
        );
        assert_eq!(
            overview["alerts_open"]["by_state"]["firing"], 1,
            "{overview}"
        );
        let by_severity = overview["alerts_open"]["by_severity"].as_object().unwrap();
        assert_eq!(
            by_severity
                .values()
                .map(|n| n.as_u64().unwrap())
                .sum::<u64>(),
            1,
            "{overview}"
        );

        // The meters table searches by id prefix, server side, with its cursor.
        let ids = |page: &Value| -> Vec<String> {
            page["meters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["meter"].as_str().unwrap().to_owned())
                .collect()
        };
        let (_, all) = http(addr, "GET", "/api/meters?search=ov-", "").await;
        assert_eq!(ids(&all), ["ov-1", "ov-2", "ov-3"], "{all}");
        let (_, one) = http(addr, "GET", "/api/meters?search=ov-2", "").await;
        assert_eq!(ids(&one), ["ov-2"], "{one}");
        let (_, none) = http(addr, "GET", "/api/meters?search=zz", "").await;
        assert!(ids(&none).is_empty(), "{none}");
        let (_, first) = http(addr, "GET", "/api/meters?search=ov&limit=2", "").await;
        assert_eq!(ids(&first), ["ov-1", "ov-2"], "{first}");
        let next = first["next"].as_str().unwrap();
        let (_, rest) = http(
            addr,
            "GET",
            &format!("/api/meters?search=ov&limit=2&after={next}"),
            "",
        )
        .await;
        assert_eq!(ids(&rest), ["ov-3"], "{rest}");
        let (status, bad) = http(addr, "GET", "/api/meters?search=a%20b", "").await;
        assert_eq!(
            (status, bad["error"]["field"].as_str()),
            (400, Some("search"))
        );

        // Acknowledged alerts are still open, in the other state.
        let (_, alerts) = http(addr, "GET", "/api/alerts", "").await;
        let id = alerts["alerts"][0]["id"].as_str().unwrap().to_owned();
        let (status, _) = http(addr, "POST", &format!("/api/alerts/{id}/ack"), "").await;
        assert_eq!(status, 200);
        let (_, acked) = http(addr, "GET", "/api/overview", "").await;
        assert_eq!(
            acked["alerts_open"]["by_state"]["acknowledged"], 1,
            "{acked}"
        );
        assert_eq!(acked["alerts_open"]["by_state"]["firing"], 0, "{acked}");
    });
}
