//! Crash test: the real `gridpulse` binary, under load, killed with SIGKILL at random
//! points several times and restarted each time; then a clean SIGTERM shutdown. Every
//! acknowledged reading must be stored exactly once, no alert may be duplicated, and
//! meter state (energy today, last reading, open alerts) must equal a run that never
//! crashed (the same binary, in memory, fed the same readings).

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const N_METERS: usize = 30;
const N_STEPS: usize = 120;
const STEP_MS: i64 = 5_000;

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(extra: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_gridpulse"))
            .args([
                "run",
                "--listen",
                "127.0.0.1:0",
                "--partitions",
                "4",
                "--workers",
                "1",
            ])
            .args(["--http-workers", "1", "--insecure-dev"])
            .args(extra)
            .env("GRIDPULSE_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            assert!(
                Instant::now() < deadline,
                "gridpulse did not print its address"
            );
            let line = lines
                .next()
                .expect("gridpulse exited before listening")
                .unwrap();
            if let Some(url) = line.trim().strip_prefix("live alerts page") {
                let url = url
                    .trim()
                    .trim_start_matches("http://")
                    .trim_end_matches('/');
                break url.parse().unwrap();
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server { child, addr }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    fn terminate(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "clean shutdown exits 0, got {status}");
                return;
            }
            assert!(Instant::now() < deadline, "SIGTERM did not stop gridpulse");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    /// A failing test must not leave a gridpulse process behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; `None` when the connection fails (server killed).
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, Value)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text.get(9..12)?.parse().ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Some((
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    ))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size + 2 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

fn meter(idx: usize) -> String {
    format!("crash-{idx:03}")
}

/// Step `step`'s readings: one per meter, with over-voltage episodes and a register reset.
fn batch(base_ms: i64, step: usize) -> String {
    let readings: Vec<Value> = (0..N_METERS)
        .map(|idx| {
            let voltage = if (step + idx) % 20 < 4 { 262.0 } else { 231.0 };
            let energy_wh = if idx == 0 && step >= 70 {
                (step - 70) as f64
            } else {
                1000.0 + step as f64 * 1.5
            };
            json!({
                "meter": meter(idx),
                "ts_ms": base_ms + step as i64 * STEP_MS,
                "voltage": voltage,
                "current": 2.0,
                "power_w": 400.0 + idx as f64,
                "energy_wh": energy_wh,
            })
        })
        .collect();
    Value::Array(readings).to_string()
}

/// Waits until every meter's last reading is the final step.
fn wait_processed(addr: SocketAddr, base_ms: i64) {
    let last_ts = base_ms + (N_STEPS as i64 - 1) * STEP_MS;
    let deadline = Instant::now() + Duration::from_secs(60);
    for idx in 0..N_METERS {
        loop {
            let (_, state) = http(addr, "GET", &format!("/api/meters/{}", meter(idx)), "").unwrap();
            if state["last_reading"]["ts_ms"] == last_ts {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "meter {} never caught up: {state}",
                meter(idx)
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What must be equal between the crashed and the uncrashed run, per meter.
fn meter_states(addr: SocketAddr) -> BTreeMap<String, Value> {
    (0..N_METERS)
        .map(|idx| {
            let (status, state) =
                http(addr, "GET", &format!("/api/meters/{}", meter(idx)), "").unwrap();
            assert_eq!(status, 200, "{state}");
            let open: BTreeSet<String> = state["open_alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|alert| {
                    format!(
                        "{} {} count={}",
                        alert["id"], alert["state"], alert["count"]
                    )
                })
                .collect();
            let essentials = json!({
                "energy_today_wh": state["energy_today_wh"],
                "last_reading": state["last_reading"],
                "n_readings": state["n_readings"],
                "baseline_power_w": state["baseline_power_w"],
                "open_alerts": open,
            });
            (meter(idx), essentials)
        })
        .collect()
}

fn alert_ids(addr: SocketAddr) -> Vec<String> {
    let mut ids = Vec::new();
    for idx in 0..N_METERS {
        let (status, list) = http(
            addr,
            "GET",
            &format!("/api/alerts?meter={}&limit=1000", meter(idx)),
            "",
        )
        .unwrap();
        assert_eq!(status, 200, "{list}");
        ids.extend(
            list["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].as_str().unwrap().to_owned()),
        );
    }
    ids.sort();
    ids
}

/// A deterministic pseudo-random sequence (xorshift), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn temp_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gridpulse-crash-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Meters of user A (even) and B (odd): their usage minutes re-key to the user actors.
const USERS: [&str; 2] = ["crash-user-a", "crash-user-b"];

fn assign_owners(server: &Server) {
    for idx in 0..N_METERS {
        let body = json!({ "owner": USERS[idx % 2] }).to_string();
        let (status, answer) = http(
            server.addr,
            "PUT",
            &format!("/api/meters/{}", meter(idx)),
            &body,
        )
        .unwrap();
        assert_eq!(status, 200, "{answer}");
    }
}

/// Each user's usage once every closed minute of every meter has reached it.
fn user_usage(addr: SocketAddr, base_ms: i64) -> BTreeMap<String, Value> {
    let minutes: BTreeSet<i64> = (0..N_STEPS as i64)
        .map(|step| {
            let ts = base_ms + step * STEP_MS;
            ts - ts.rem_euclid(60_000)
        })
        .collect();
    // The last minute stays open (no later reading closes it).
    let per_meter = minutes.len() as u64 - 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    USERS
        .iter()
        .map(|user| {
            let expected = per_meter * (N_METERS as u64 / 2);
            loop {
                let (status, usage) =
                    http(addr, "GET", &format!("/api/users/{user}/usage"), "").unwrap();
                if status == 200 && usage["n_deltas"] == expected {
                    let essentials = json!({
                        "energy_total_wh": usage["energy_total_wh"],
                        "energy_today_wh": usage["energy_today_wh"],
                        "n_deltas": usage["n_deltas"],
                        "meters": usage["meters"],
                    });
                    break ((*user).to_owned(), essentials);
                }
                assert!(
                    Instant::now() < deadline,
                    "{user} never received its {expected} usage minutes: {status} {usage}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        })
        .collect()
}

fn post_all(server: &Server, base_ms: i64) {
    for step in 0..N_STEPS {
        let (status, answer) =
            http(server.addr, "POST", "/api/readings", &batch(base_ms, step)).unwrap();
        assert_eq!(status, 202, "{answer}");
    }
}

#[test]
fn kill_9_under_load_loses_and_duplicates_nothing() {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // In the past, inside one UTC day, so "energy today" is comparable.
    let base_ms = (now_ms - 2 * 3_600_000).max(now_ms - now_ms % 86_400_000);

    // The reference: the same binary, never crashed, nothing on disk.
    let reference = Server::start(&["--in-memory"]);
    assign_owners(&reference);
    post_all(&reference, base_ms);
    wait_processed(reference.addr, base_ms);
    let expected_states = meter_states(reference.addr);
    let expected_usage = user_usage(reference.addr, base_ms);
    let expected_alerts = alert_ids(reference.addr);
    reference.kill9();
    assert!(
        expected_alerts.len() > N_METERS,
        "the load raises alerts: {}",
        expected_alerts.len()
    );

    let dir = temp_dir();
    let data_dir = dir.to_str().unwrap().to_owned();
    let args = [
        "--data-dir",
        data_dir.as_str(),
        "--checkpoint-interval",
        "0.1",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut acknowledged: BTreeSet<usize> = BTreeSet::new();
    let mut n_kills = 0;
    let mut server = Server::start(&args);
    assign_owners(&server);
    let mut step = 0;
    while step < N_STEPS {
        // Up to five times, a killer fires after a random delay while batches are in flight.
        let killer = (n_kills < 5).then(|| {
            let pid = server.child.id();
            let delay = Duration::from_millis(20 + rng.next(150));
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            })
        });
        loop {
            if step == N_STEPS {
                break;
            }
            match http(server.addr, "POST", "/api/readings", &batch(base_ms, step)) {
                Some((202, _)) => {
                    acknowledged.insert(step);
                    step += 1;
                    // A steady load (~200 batches/s), so kills land mid-stream.
                    std::thread::sleep(Duration::from_millis(4));
                }
                Some((status, answer)) => panic!("step {step}: {status} {answer}"),
                // Killed mid-request: the client retries this batch after the restart.
                None => break,
            }
        }
        if let Some(killer) = killer {
            killer.join().unwrap();
            let _ = server.child.wait();
            n_kills += 1;
            server = Server::start(&args);
        }
    }
    eprintln!("crash test: {n_kills} kills with SIGKILL while posting {N_STEPS} batches");
    assert!(
        n_kills >= 3,
        "the test must really crash the server ({n_kills} kills)"
    );
    assert_eq!(acknowledged.len(), N_STEPS);

    wait_processed(server.addr, base_ms);
    assert_eq!(
        meter_states(server.addr),
        expected_states,
        "state equals the uncrashed run"
    );
    let ids = alert_ids(server.addr);
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no alert stored twice");
    assert_eq!(ids, expected_alerts, "the same alerts, with the same ids");
    check_readings_stored_once(server.addr, base_ms);
    assert_eq!(
        user_usage(server.addr, base_ms),
        expected_usage,
        "every usage minute reached its user exactly once"
    );

    // Clean shutdown: SIGTERM checkpoints everything, so a restart replays nothing.
    server.terminate();
    let server = Server::start(&args);
    let (_, metrics) = http(server.addr, "GET", "/metrics", "").unwrap();
    let replayed = metrics
        .as_str()
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("gridpulse_actors_readings_applied_total "))
        .map_or(0, |value| value.trim().parse::<u64>().unwrap());
    assert_eq!(replayed, 0, "nothing replayed after a clean shutdown");
    assert_eq!(
        meter_states(server.addr),
        expected_states,
        "state restored from snapshots"
    );
    assert_eq!(alert_ids(server.addr), expected_alerts);
    assert_eq!(
        user_usage(server.addr, base_ms),
        expected_usage,
        "users restored from snapshots"
    );

    // Human actions are not in the log: thresholds and an acknowledgement must survive
    // a kill -9 right after they were answered.
    let target = meter(1);
    let (status, answer) = http(
        server.addr,
        "PUT",
        &format!("/api/meters/{target}/thresholds"),
        r#"{"over_voltage_v": 300, "over_voltage_clear_v": 290}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    let (_, state) = http(server.addr, "GET", &format!("/api/meters/{target}"), "").unwrap();
    let open_id = state["open_alerts"][0]["id"].as_str().map(str::to_owned);
    if let Some(id) = &open_id {
        let (status, answer) = http(
            server.addr,
            "POST",
            &format!("/api/alerts/{id}/ack"),
            r#"{"by":"ops-1"}"#,
        )
        .unwrap();
        assert_eq!(status, 200, "{answer}");
    }
    server.kill9();
    let server = Server::start(&args);
    let (_, state) = http(server.addr, "GET", &format!("/api/meters/{target}"), "").unwrap();
    assert_eq!(state["thresholds"]["over_voltage_v"], 300.0, "{state}");
    if let Some(id) = open_id {
        let (_, alert) = http(server.addr, "GET", &format!("/api/alerts/{id}"), "").unwrap();
        assert_eq!(alert["state"], "acknowledged", "{alert}");
        assert_eq!(alert["acknowledged_by"], "ops-1");
        let events: Vec<&str> = alert["history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event"].as_str().unwrap())
            .collect();
        assert_eq!(events.first(), Some(&"raised"), "{alert}");
        assert_eq!(events.last(), Some(&"acknowledged"), "{alert}");
        assert_eq!(state["open_alerts"][0]["state"], "acknowledged", "{state}");
    }
    // A second process on the same data directory is refused, naming the directory.
    let second = Command::new(env!("CARGO_BIN_EXE_gridpulse"))
        .args([
            "run",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data_dir.as_str(),
        ])
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("in use by another gridpulse process") && stderr.contains(&data_dir),
        "{stderr}"
    );
    server.kill9();
    remove_dir(&dir);
}

fn check_readings_stored_once(addr: SocketAddr, base_ms: i64) {
    let expected: Vec<i64> = (0..N_STEPS)
        .map(|step| base_ms + step as i64 * STEP_MS)
        .collect();
    // The raw readings reach the store through a batch writer behind the actors, so
    // the last batch may land a moment after the meter state shows it.
    let deadline = Instant::now() + Duration::from_secs(10);
    for idx in 0..N_METERS {
        let path = format!(
            "/api/meters/{}/readings?from={base_ms}&to={}&limit=10000",
            meter(idx),
            base_ms + N_STEPS as i64 * STEP_MS
        );
        loop {
            let (status, page) = http(addr, "GET", &path, "").unwrap();
            assert_eq!(status, 200, "{page}");
            let stored: Vec<i64> = page["readings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["ts_ms"].as_i64().unwrap())
                .collect();
            // A prefix is a write still in flight; anything else (a duplicate, a gap
            // that stays) fails at the deadline.
            if stored == expected || Instant::now() > deadline || !expected.starts_with(&stored) {
                assert_eq!(
                    stored,
                    expected,
                    "meter {}: every acknowledged reading stored exactly once",
                    meter(idx)
                );
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn remove_dir(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}
