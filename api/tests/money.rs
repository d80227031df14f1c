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
        // The meter's own cost: its only meter, by the same tariff.
        let (status, meter_cost) = http(addr, "GET", "/api/meters/m-budget/cost", "").await;
        assert_eq!(status, 200, "{meter_cost}");
        assert_eq!(meter_cost["owner"], "u-budget", "{meter_cost}");
        assert_eq!(
            meter_cost["period_to_date"]["total"], cost["period_to_date"]["total"],
            "{meter_cost}"
        );
        let (status, body) = http(addr, "GET", "/api/meters/unowned/cost", "").await;
        assert_eq!(status, 404, "{body}");
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
        assert_eq!(
            (status, &body["error"]["field"]),
            (400, &json!("period")),
            "{body}"
        );
        let (status, body) = http(addr, "GET", "/api/users/u-budget/bill?period=2025-01", "").await;
        assert_eq!(status, 404, "no usage in that period: {body}");
        let (status, body) = http(addr, "GET", "/api/users/nobody/cost", "").await;
        assert_eq!(status, 404, "{body}");
        let (status, body) = http(addr, "GET", "/ws/alerts?types=bogus", "").await;
        assert_eq!(
            (status, &body["error"]["field"]),
            (400, &json!("types")),
            "{body}"
        );
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

/// The credit events (type `credit` or `top_up`) from the websocket within `within`.
async fn credit_events(ws: &mut Ws, within: Duration) -> Vec<Value> {
    user_events(ws, usize::MAX, within).await
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            let inner = &e["event"];
            match inner["type"].as_str().unwrap() {
                "alert_raised" | "alert_cleared" => format!(
                    "{}:{}",
                    inner["type"].as_str().unwrap(),
                    inner["alert"].as_str().unwrap()
                ),
                other => other.to_owned(),
            }
        })
        .collect()
}

fn balance(credit: &Value) -> f64 {
    credit["balance"].as_str().unwrap().parse().unwrap()
}

#[test]
fn prepaid_credit_burns_down_with_idempotent_top_ups_alerts_and_one_auto_top_up() {
    let dir = fresh_data_dir("money", "prepaid");
    with_system(Some(dir.clone()), |addr| async move {
        let (status, body) = http(addr, "POST", "/api/tariffs", &dear_tariff().to_string()).await;
        assert_eq!(status, 201, "{body}");
        let account = json!({"id": "u-pre", "name": "Prepaid user", "tariff": "dear",
            "credit": {"low_credit_threshold": "5", "run_out_warning_hours": 1,
                       "auto_top_up": {"trigger": "3", "amount": "10"}}});
        let (status, body) = http(addr, "POST", "/api/users", &account.to_string()).await;
        assert_eq!(status, 201, "{body}");
        // Bad settings name the field and store nothing.
        let bad = json!({"id": "u-bad", "name": "x", "tariff": "dear",
            "credit": {"low_credit_threshold": "-1"}});
        let (status, body) = http(addr, "POST", "/api/users", &bad.to_string()).await;
        assert_eq!(
            (status, &body["error"]["field"]),
            (400, &json!("credit.low_credit_threshold")),
            "{body}"
        );
        // A prepaid meter needs an owner and a tariff.
        let (status, body) = http(
            addr,
            "PUT",
            "/api/meters/m-pre",
            r#"{"tariff":"dear","prepaid":true}"#,
        )
        .await;
        assert_eq!(
            (status, &body["error"]["field"]),
            (400, &json!("owner")),
            "{body}"
        );
        let (status, body) = http(
            addr,
            "PUT",
            "/api/meters/m-pre",
            r#"{"owner":"u-pre","tariff":"dear","prepaid":true}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (mut ws, _) = tokio_tungstenite::connect_async(format!(
            "ws://{addr}/ws/alerts?snapshot=false&user=u-pre&types=credit,top_up"
        ))
        .await
        .unwrap();

        // Top-ups: idempotent by key; a different amount under the same key is a conflict.
        let topup =
            |key: &str, amount: &str| json!({"amount": amount, "idempotency_key": key}).to_string();
        let (status, first) = http(
            addr,
            "POST",
            "/api/meters/m-pre/topups",
            &topup("k1", "12.00"),
        )
        .await;
        assert_eq!(status, 201, "{first}");
        let (status, again) = http(
            addr,
            "POST",
            "/api/meters/m-pre/topups",
            &topup("k1", "12.00"),
        )
        .await;
        assert_eq!((status, &again["replayed"]), (200, &json!(true)), "{again}");
        assert_eq!(
            again["transaction_seq"], first["transaction_seq"],
            "{again}"
        );
        let (status, body) = http(
            addr,
            "POST",
            "/api/meters/m-pre/topups",
            &topup("k1", "5.00"),
        )
        .await;
        assert_eq!(status, 409, "{body}");
        let (status, body) = http(
            addr,
            "POST",
            "/api/meters/m-pre/topups",
            r#"{"amount":"1.00"}"#,
        )
        .await;
        assert_eq!(
            (status, &body["error"]["field"]),
            (400, &json!("idempotency_key")),
            "{body}"
        );
        let (status, body) =
            http(addr, "POST", "/api/meters/m-pre/topups", &topup("k2", "-1")).await;
        assert_eq!(
            (status, &body["error"]["field"]),
            (400, &json!("amount")),
            "{body}"
        );
        let (status, body) =
            http(addr, "POST", "/api/meters/nobody/topups", &topup("k3", "1")).await;
        assert_eq!(status, 404, "not a prepaid meter: {body}");
        // The same key sent concurrently credits once.
        let parallel = (0..5).map(|_| {
            let body = topup("k-par", "1.00");
            async move { http(addr, "POST", "/api/meters/m-pre/topups", &body).await }
        });
        let answers = futures_util::future::join_all(parallel).await;
        let mut statuses: Vec<u16> = answers.iter().map(|(status, _)| *status).collect();
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 200, 200, 200, 201], "{answers:?}");
        let (status, credit) = http(addr, "GET", "/api/meters/m-pre/credit", "").await;
        assert_eq!(
            (status, balance(&credit)),
            (200, 13.0),
            "12 + 1 once: {credit}"
        );

        // 4 closed minutes of 3.00 or so: 13.00 → about 1.50; running out within the hour
        // at once, low credit below 5, exactly one auto top-up request below 3.
        let (status, body) = http(
            addr,
            "POST",
            "/api/readings",
            &readings("m-pre", 0..26).to_string(),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let events = credit_events(&mut ws, Duration::from_secs(4)).await;
        let seen = kinds(&events);
        let wanted = [
            "top_up_completed",
            "alert_raised:running_out",
            "alert_raised:low_credit",
            "auto_top_up_requested",
        ];
        for kind in wanted {
            assert_eq!(
                seen.iter().filter(|k| *k == kind).count(),
                if kind == "top_up_completed" { 2 } else { 1 },
                "{kind} in {seen:?}"
            );
        }
        assert!(
            !seen.iter().any(|k| k == "alert_raised:exhausted"),
            "{seen:?}"
        );
        let (_, usage) = http(addr, "GET", "/api/users/u-pre/usage", "").await;
        let used = usage["energy_total_wh"].as_f64().unwrap() / 1000.0 * 100.0;
        let (_, credit) = http(addr, "GET", "/api/meters/m-pre/credit", "").await;
        assert!(
            (balance(&credit) - (13.0 - used)).abs() < 0.011,
            "burnt by the tariff: {credit} {usage}"
        );
        assert!(
            credit["days_of_credit_left"].as_f64().unwrap() < 0.01,
            "{credit}"
        );
        let request = credit["pending_auto_top_up"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            request, "m-pre:2026-11:1",
            "meter + cycle + sequence: {credit}"
        );

        // The gateway confirms: credited once, however often it says so.
        let path = format!("/api/topups/{request}/confirm");
        let (status, body) = http(addr, "POST", &path, "").await;
        assert_eq!((status, &body["already"]), (200, &json!(false)), "{body}");
        let (status, body) = http(addr, "POST", &path, "").await;
        assert_eq!((status, &body["already"]), (200, &json!(true)), "{body}");
        let (_, after) = http(addr, "GET", "/api/meters/m-pre/credit", "").await;
        assert!(
            (balance(&after) - (balance(&credit) + 10.0)).abs() < 0.001,
            "{after}"
        );
        let (status, body) = http(addr, "POST", &format!("/api/topups/{request}/fail"), "").await;
        assert_eq!(status, 409, "a confirmed request cannot fail: {body}");
        let (status, body) = http(addr, "POST", "/api/topups/m-pre:2026-11:9/confirm", "").await;
        assert_eq!(status, 404, "{body}");

        // Four more minutes: below the trigger again (request 2), then exhausted.
        let (status, body) = http(
            addr,
            "POST",
            "/api/readings",
            &readings("m-pre", 26..50).to_string(),
        )
        .await;
        assert_eq!(status, 202, "{body}");
        let later = kinds(&credit_events(&mut ws, Duration::from_secs(4)).await);
        assert!(
            later.contains(&"alert_raised:exhausted".to_owned()),
            "{later:?}"
        );
        assert_eq!(
            later
                .iter()
                .filter(|k| *k == "auto_top_up_requested")
                .count(),
            1,
            "{later:?}"
        );
        let (_, credit) = http(addr, "GET", "/api/meters/m-pre/credit", "").await;
        assert_eq!(
            credit["pending_auto_top_up"]["id"], "m-pre:2026-11:2",
            "{credit}"
        );
        assert!(balance(&credit) <= 0.0, "{credit}");
        let (status, body) = http(
            addr,
            "POST",
            "/api/topups/m-pre:2026-11:2/fail",
            r#"{"reason":"card declined"}"#,
        )
        .await;
        assert_eq!(status, 200, "{body}");

        // The log: append-only, top-ups and the confirmed auto top-up, balances chained.
        let (status, log) = http(addr, "GET", "/api/meters/m-pre/transactions", "").await;
        assert_eq!(status, 200, "{log}");
        let entries = log["transactions"].as_array().unwrap();
        let kinds_logged: Vec<&str> = entries
            .iter()
            .map(|t| t["kind"].as_str().unwrap())
            .collect();
        assert_eq!(kinds_logged, ["top_up", "top_up", "auto_top_up"], "{log}");
        let mut running = 0.0;
        for entry in entries {
            running += entry["amount"].as_str().unwrap().parse::<f64>().unwrap();
            let after: f64 = entry["balance_after"].as_str().unwrap().parse().unwrap();
            assert!((after - running).abs() < 1e-9, "{log}");
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
}
