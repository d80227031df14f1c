//! Rollups of imported history older than the rollup job's lateness, end to end in
//! embedded mode: live readings move the partitions' watermarks to now, then a CSV of
//! two-day-old history for the same meters is imported (`POST /api/import`); the job
//! judges every row too late, the hours are queued, recomputed from the stored readings
//! and `GET /api/meters/{id}/usage?granularity=hour` shows them with the exact figures.
//! Importing the file again changes no value (revision included), also across a stop
//! without a final checkpoint and a restart.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

mod support;
use support::{Shutdown, fresh_data_dir, http, http_with, with_system_config};

const HOUR: i64 = 3_600_000;
const METERS: [&str; 2] = ["m-hist-a", "m-hist-b"];
/// Hours of history per meter.
const HOURS: i64 = 3;

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Two days ago, on a whole hour.
fn base_ms() -> i64 {
    (now_ms() - 48 * HOUR) / HOUR * HOUR
}

/// One row every 10 s per meter over `HOURS` hours from `base`, the register rising
/// 0.5 Wh per row (exact in binary), power and voltage varying; plus one bad row.
fn history_csv(base: i64) -> String {
    let mut csv = String::from("meter,ts,voltage,current,power_w,energy_wh\n");
    for (m, meter) in METERS.iter().enumerate() {
        for k in 0..HOURS * 360 {
            let ts = base + k * 10_000;
            let voltage = 228 + (k % 5) + m as i64;
            let power = 100 + (k % 7) * 25;
            let energy = 1000.0 + k as f64 * 0.5;
            csv.push_str(&format!("{meter},{ts},{voltage},1.5,{power},{energy}\n"));
        }
    }
    csv.push_str(&format!("{},{base},oops,1,1,1\n", METERS[0]));
    csv
}

/// What the hour `h` of meter number `m` must hold.
fn expected_hour(base: i64, m: usize, h: i64) -> Value {
    let ks: Vec<i64> = (h * 360..(h + 1) * 360).collect();
    let powers: Vec<f64> = ks.iter().map(|k| (100 + (k % 7) * 25) as f64).collect();
    let voltages: Vec<f64> = ks
        .iter()
        .map(|k| (228 + (k % 5) + m as i64) as f64)
        .collect();
    // Steps of 0.5 Wh; the very first row has no reading before it.
    let energy = if h == 0 { 359.0 * 0.5 } else { 360.0 * 0.5 };
    let mut sum = 0.0;
    for power in &powers {
        sum += power;
    }
    json!({
        "window_start_ms": base + h * HOUR,
        "readings": 360,
        "energy_wh": energy,
        "power_min_w": powers.iter().copied().fold(f64::INFINITY, f64::min),
        "power_avg_w": sum / 360.0,
        "power_max_w": powers.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "voltage_min": voltages.iter().copied().fold(f64::INFINITY, f64::min),
        "voltage_max": voltages.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        "expected_readings": 360,
        "completeness_pct": 100.0,
    })
}

async fn import(addr: SocketAddr, csv: &str) -> Value {
    let (status, _, body) = http_with(addr, "POST", "/api/import?format=csv", &[], csv).await;
    assert_eq!(status, 200, "{body}");
    let text = body.as_str().expect("an NDJSON report").to_owned();
    let summary = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|line| line.get("summary").cloned())
        .unwrap_or_else(|| panic!("no summary in {text}"));
    assert_eq!(summary["rows"], 2 * HOURS * 360 + 1, "{summary}");
    assert_eq!(summary["accepted"], 2 * HOURS * 360, "{summary}");
    assert_eq!(summary["rejected"], 1, "{summary}");
    assert_eq!(summary["complete"], true, "{summary}");
    summary
}

async fn hours_of(addr: SocketAddr, meter: &str, base: i64) -> Value {
    let path = format!(
        "/api/meters/{meter}/usage?granularity=hour&from={base}&to={}",
        base + HOURS * HOUR
    );
    let (status, body) = http(addr, "GET", &path, "").await;
    assert_eq!(status, 200, "{body}");
    body["rollups"].clone()
}

/// Waits until every meter shows `HOURS` hours, each matching `expected_hour`.
async fn wait_exact(addr: SocketAddr, base: i64) -> Vec<Value> {
    let mut last = Vec::new();
    for _ in 0..600 {
        last.clear();
        let mut all = true;
        for (m, meter) in METERS.iter().enumerate() {
            let rows = hours_of(addr, meter, base).await;
            let rows = rows.as_array().unwrap().clone();
            all &= rows.len() == HOURS as usize
                && rows.iter().enumerate().all(|(h, row)| {
                    let expected = expected_hour(base, m, h as i64);
                    expected
                        .as_object()
                        .unwrap()
                        .iter()
                        .all(|(key, value)| row[key] == *value)
                });
            last.push(Value::Array(rows));
        }
        if all {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expected: Vec<Value> = (0..HOURS).map(|h| expected_hour(base, 0, h)).collect();
    panic!("hours not exact within 60 s: {last:?}\nexpected (meter 0): {expected:?}");
}

/// The `gridpulse_stream_hours_recomputed_total{outcome}` counter.
async fn recomputed(addr: SocketAddr, outcome: &str) -> u64 {
    let (status, body) = http(addr, "GET", "/metrics", "").await;
    assert_eq!(status, 200);
    let text = body.as_str().unwrap_or_default().to_owned();
    let prefix = format!("gridpulse_stream_hours_recomputed_total{{outcome=\"{outcome}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |value| value.trim().parse().unwrap())
}

async fn wait_recomputed(addr: SocketAddr, outcome: &str, at_least: u64) {
    for _ in 0..600 {
        if recomputed(addr, outcome).await >= at_least {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "not {at_least} hours recomputed `{outcome}` within 60 s: {}",
        recomputed(addr, outcome).await
    );
}

fn fast_checkpoints(config: &mut gridpulse_api::EmbeddedConfig) {
    if let Some(persistence) = &mut config.persistence {
        persistence.checkpoint_interval = Duration::from_millis(300);
    }
}

#[test]
fn history_behind_live_data_is_rolled_up_exactly_and_reimports_change_nothing() {
    let dir = fresh_data_dir("import_rollups", "history");
    let base = base_ms();
    let csv = Arc::new(history_csv(base));
    let first: Arc<parking_lot::Mutex<Vec<Value>>> = Arc::default();

    let (csv1, first1) = (Arc::clone(&csv), Arc::clone(&first));
    with_system_config(
        Some(dir.clone()),
        Arc::new(gridpulse_actors::SystemClock),
        fast_checkpoints,
        Shutdown::Clean,
        move |addr| async move {
            for meter in METERS {
                let (status, body) = http(
                    addr,
                    "POST",
                    "/api/meters",
                    &json!({"id": meter}).to_string(),
                )
                .await;
                assert!(status == 201 || status == 200, "{status} {body}");
            }
            // Live readings: each meter's partition watermark is now.
            let now = now_ms();
            let live: Vec<Value> = METERS
                .iter()
                .flat_map(|meter| {
                    (0..3).map(move |k| {
                        json!({"meter": meter, "ts_ms": now - 20_000 + k * 10_000,
                               "voltage": 230.0, "current": 1.0, "power_w": 200.0,
                               "energy_wh": 90_000.0 + k as f64})
                    })
                })
                .collect();
            let (status, body) = http(
                addr,
                "POST",
                "/api/readings",
                &Value::Array(live).to_string(),
            )
            .await;
            assert_eq!(status, 202, "{body}");

            import(addr, &csv1).await;
            let rows = wait_exact(addr, base).await;
            for meter_rows in &rows {
                for row in meter_rows.as_array().unwrap() {
                    assert_eq!(row["revision"], 1, "recomputed once: {row}");
                }
            }
            // Days are sums of the hours.
            let (status, day) = http(
                addr,
                "GET",
                &format!(
                    "/api/meters/{}/usage?granularity=day&from={}&to={}",
                    METERS[0],
                    base / 86_400_000 * 86_400_000,
                    base / 86_400_000 * 86_400_000 + 86_400_000
                ),
                "",
            )
            .await;
            assert_eq!(status, 200, "{day}");
            let day_energy: f64 = day["rollups"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| row["energy_wh"].as_f64().unwrap())
                .sum();
            // The history may straddle a UTC midnight: its days sum to its hours.
            if base / 86_400_000 == (base + HOURS * HOUR - 1) / 86_400_000 {
                assert_eq!(
                    day_energy,
                    359.0 * 0.5 + (HOURS - 1) as f64 * 180.0,
                    "{day}"
                );
            }

            // The same file again: every hour recomputed, nothing changes.
            let unchanged = recomputed(addr, "unchanged").await;
            import(addr, &csv1).await;
            wait_recomputed(addr, "unchanged", unchanged + 2 * HOURS as u64).await;
            let again = wait_exact(addr, base).await;
            assert_eq!(again, rows, "a re-import changes no value");
            *first1.lock() = rows;
        },
    );

    // A third import, stopped without a final checkpoint right after it: whatever
    // was or was not recomputed, the restart leaves every hour exact and unchanged.
    let csv3 = Arc::clone(&csv);
    with_system_config(
        Some(dir.clone()),
        Arc::new(gridpulse_actors::SystemClock),
        fast_checkpoints,
        Shutdown::NoCheckpoint,
        move |addr| async move {
            import(addr, &csv3).await;
        },
    );
    let first4 = Arc::clone(&first);
    with_system_config(
        Some(dir),
        Arc::new(gridpulse_actors::SystemClock),
        fast_checkpoints,
        Shutdown::Clean,
        move |addr| async move {
            let rows = wait_exact(addr, base).await;
            // Give a pending queue time to drain, then compare again.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let rows_later = wait_exact(addr, base).await;
            assert_eq!(rows, rows_later);
            assert_eq!(rows, *first4.lock(), "the restart changed a value");
        },
    );
}
