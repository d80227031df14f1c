//! Users and money end to end in embedded mode: a tariff, an account with a monthly
//! budget, a meter it owns, readings posted over HTTP → meter actor → usage minutes →
//! user actor → budget events on the websocket (70, 90, 100 %, each once) and live
//! cost; a restart on the same data directory with the same readings posted again
//! repeats no event; account changes take effect at once; bad input names the field.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

mod support;
use support::{fresh_data_dir, http, with_system};

/// 2026-11-10T10:00:00Z: mid-period, so the period cannot roll over during the test.
const MINUTE0: i64 = 1_794_304_800_000;

/// 100.00 GBP per kWh: 10 Wh costs 1.00, so a 10.00 budget is crossed within minutes.
fn dear_tariff() -> Value {
    json!({
        "id": "dear",
        "name": "Test tariff",
        "definition": {
            "currency": "GBP",
            "time_zone": "UTC",
            "billing_period_start_day": 1,
            "standing_charge_per_day": "0",
            "energy": {"kind": "flat", "rate_per_kwh": "100.00"}
        }
    })
}

/// Readings of one meter every 10 s from `MINUTE0`, the register rising 5 Wh each
/// (30 Wh = 3.00 per minute).
fn readings(meter: &str, steps: std::ops::Range<i64>) -> Value {
    Value::Array(
        steps
            .map(|k| {
                json!({"meter": meter, "ts_ms": MINUTE0 + k * 10_000, "voltage": 230.0,
                       "current": 8.0, "power_w": 1800.0, "energy_wh": 1000.0 + 5.0 * k as f64})
            })
            .collect(),
    )
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// User events from the websocket until `n` arrived or `within` passed.
async fn user_events(ws: &mut Ws, n: usize, within: Duration) -> Vec<Value> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while events.len() < n {
        let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, ws.next()).await else {
            break;
        };
        if let Message::Text(text) = message {
            events.push(serde_json::from_str(&text).unwrap());
        }
    }
    events
}

fn thresholds(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .filter(|event| event["type"] == "budget")
        .map(|event| event["threshold_percent"].as_i64().unwrap())
        .collect()
}

#[test]
fn budget_thresholds_once_live_cost_and_no_repeat_after_restart() {
    let dir = fresh_data_dir("money", "budget");
    with_system(Some(dir.clone()), |addr| async move {
        let (status, body) = http(addr, "POST", "/api/tariffs", &dear_tariff().to_string()).await;
        assert_eq!(status, 201, "{body}");
        let account = json!({"id": "u-budget", "name": "Budget user", "tariff": "dear", "monthly_budget": "10.00"});
        let (status, body) = http(addr, "POST", "/api/users", &account.to_string()).await;
        assert_eq!(status, 201, "{body}");
        let (status, body) = http(
            addr,
            "PUT",
            "/api/meters/m-budget",
            r#"{"owner":"u-budget"}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (mut ws, _) = tokio_tungstenite::connect_async(format!(
            "ws://{addr}/ws/alerts?snapshot=false&user=u-budget&types=budget"
        ))
        .await
        .unwrap();

        // 4 closed minutes (readings up to 4:10): 3.00, 6.00, 9.00, 12.00 spent.
        let (status, body) = http(
            addr,
            "POST",
            "/api/readings",
            &readings("m-budget", 0..26).to_string(),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let events = user_events(&mut ws, 3, Duration::from_secs(20)).await;
        assert_eq!(
            thresholds(&events),
            [70, 90, 100],
            "each threshold once, in order: {events:?}"
        );
        for event in &events {
            assert_eq!(event["user"], "u-budget", "{event}");
            assert_eq!(event["period"], "2026-11", "{event}");
            assert_eq!(
                event["id"],
                format!("u-budget.budget.2026-11.{}", event["threshold_percent"]),
                "stable id: {event}"
            );
        }
        // Nothing more arrives for the same period.
        let more = user_events(&mut ws, 1, Duration::from_secs(3)).await;
        assert!(thresholds(&more).is_empty(), "no repeat: {more:?}");

        // Live cost: energy by the user's minutes × 100.00/kWh, exactly.
        let (status, usage) = http(addr, "GET", "/api/users/u-budget/usage", "").await;
        assert_eq!(status, 200, "{usage}");
        let energy_wh = usage["energy_total_wh"].as_f64().unwrap();
        assert!(energy_wh > 100.0, "the minutes reached the user: {usage}");
        let (status, cost) = http(addr, "GET", "/api/users/u-budget/cost", "").await;
        assert_eq!(status, 200, "{cost}");
        let expected_total = format!(
            "{:.2}",
            (energy_wh / 1000.0 * 100.0 * 100.0).round() / 100.0
        );
        assert_eq!(cost["period_to_date"]["total"], expected_total, "{cost}");
        assert_eq!(
            cost["today"]["total"], cost["period_to_date"]["total"],
            "one day so far: {cost}"
        );
        assert_eq!(
            cost["budget"]["thresholds_reported"],
            json!([70, 90, 100]),
            "{cost}"
        );
        assert_eq!(
            cost["budget"]["projected_date_budget_reached"], "2026-11-10",
            "already reached today: {cost}"
        );
        // The itemised bill of the current period.
        let (status, bill) = http(addr, "GET", "/api/users/u-budget/bill?period=2026-11", "").await;
        assert_eq!(status, 200, "{bill}");
        assert_eq!(bill["complete"], false, "{bill}");
        assert_eq!(
            bill["bill"]["total"], cost["period_to_date"]["total"],
            "{bill}"
        );
        assert_eq!(
            bill["bill"]["energy_lines"][0]["item"]["kind"], "flat",
            "{bill}"
        );

        // An account change takes effect without a restart.
        let (status, body) = http(
            addr,
            "PUT",
            "/api/users/u-budget/budget",
            r#"{"monthly_budget":"1000.00"}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (_, cost) = http(addr, "GET", "/api/users/u-budget/cost", "").await;
        assert_eq!(cost["budget"]["monthly_budget"], "1000", "{cost}");
        assert!(
            cost["budget"]["used_basis_points"].as_i64().unwrap() < 7_000,
            "a bigger budget is less used: {cost}"
        );

        // Bad input names the field; unknown users are 404.
        let (status, body) = http(addr, "GET", "/api/users/u-budget/bill?period=2026-13", "").await;
        assert_eq!((status, &body["field"]), (400, &json!("period")), "{body}");
        let (status, body) = http(addr, "GET", "/api/users/u-budget/bill?period=2025-01", "").await;
        assert_eq!(status, 404, "no usage in that period: {body}");
        let (status, body) = http(addr, "GET", "/api/users/nobody/cost", "").await;
        assert_eq!(status, 404, "{body}");
        let (status, body) = http(addr, "GET", "/ws/alerts?types=bogus", "").await;
        assert_eq!((status, &body["field"]), (400, &json!("types")), "{body}");
    });

    // Restart on the same data: the same readings posted again (a replay) and the
    // stored events say each threshold happened once.
    with_system(Some(dir.clone()), |addr| async move {
        let (mut ws, _) = tokio_tungstenite::connect_async(format!(
            "ws://{addr}/ws/alerts?snapshot=false&user=u-budget&types=budget"
        ))
        .await
        .unwrap();
        let (status, body) = http(
            addr,
            "POST",
            "/api/readings",
            &readings("m-budget", 0..26).to_string(),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let replayed = user_events(&mut ws, 1, Duration::from_secs(3)).await;
        assert!(
            thresholds(&replayed).is_empty(),
            "a replay repeats nothing: {replayed:?}"
        );
        let (status, log) = http(addr, "GET", "/api/users/u-budget/events", "").await;
        assert_eq!(status, 200, "{log}");
        let budget_events: Vec<Value> = log["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| event["type"] == "budget")
            .cloned()
            .collect();
        assert_eq!(thresholds(&budget_events), [70, 90, 100], "{log}");
        let seqs: Vec<i64> = log["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_i64().unwrap())
            .collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "increasing sequence: {seqs:?}"
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
}
