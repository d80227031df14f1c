//! The dashboard in a real browser: `gridpulse run --simulate` (the real binary) and
//! headless Chromium driven by playwright-core (`api/tests/browser/dashboard.mjs`).
//!
//! Checks: the overview's numbers change; a threshold-crossing reading appears in the
//! alert feed within seconds; ack from the page changes its state in the page and in
//! the API; a meter's power chart gains points; a consumer sees their own meter and gets
//! 404 for another user's. Screenshots are kept under the target directory
//! (`browser-artifacts/`), not committed. `make deps` installs Chromium (Debian) and
//! playwright-core (npm) when missing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{fresh_data_dir, http_as};

struct Server {
    child: Child,
    addr: SocketAddr,
    ops: String,
    utility: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data_dir: &Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gridpulse"))
        .args(["run", "--listen", "127.0.0.1:0", "--partitions", "2"])
        .args(["--workers", "1", "--http-workers", "1", "--simulate", "50"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("GRIDPULSE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut addr, mut ops, mut utility) = (None, None, None);
    loop {
        assert!(Instant::now() < deadline, "gridpulse did not start");
        let line = lines.next().expect("gridpulse exited early").unwrap();
        let line = line.trim();
        if let Some(url) = line.strip_prefix("live alerts page") {
            let url = url
                .trim()
                .trim_start_matches("http://")
                .trim_end_matches('/');
            addr = Some(url.parse().unwrap());
        } else if let Some(token) = line.strip_prefix("dev ops token") {
            ops = Some(token.trim().to_owned());
        } else if let Some(token) = line.strip_prefix("dev utility token") {
            utility = Some(token.trim().to_owned());
        } else if line.starts_with("press Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        addr: addr.expect("no address printed"),
        ops: ops.expect("no ops token printed"),
        utility: utility.expect("no utility token printed"),
    }
}

fn mint(data_dir: &Path, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_gridpulse"))
        .arg("token")
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Chromium and playwright-core, or a message saying how to get them.
fn browser_tools() -> (PathBuf, PathBuf) {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    let scripts = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    assert!(
        chromium.exists(),
        "{} not found: `make deps` installs Debian's chromium (or set CHROMIUM)",
        chromium.display()
    );
    assert!(
        scripts.join("node_modules/playwright-core").exists(),
        "playwright-core not installed in {}: run `make deps`",
        scripts.display()
    );
    (chromium, scripts)
}

#[test]
fn the_dashboard_works_in_a_real_browser() {
    let (chromium, scripts) = browser_tools();
    let dir = fresh_data_dir("dashboard_browser", "dashboard");
    let server = start(&dir);
    let service = mint(&dir, &["--sub", "head-end", "--role", "service"]);
    let consumer = mint(
        &dir,
        &["--sub", "alice", "--role", "consumer", "--user", "u-alice"],
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let tariff = json!({"id": "flat", "name": "Flat", "definition": {
            "currency": "GBP", "time_zone": "UTC", "billing_period_start_day": 1,
            "standing_charge_per_day": "0", "energy": {"kind": "flat", "rate_per_kwh": "0.30"}}});
        let (status, body) = http_as(
            server.addr,
            &server.utility,
            "POST",
            "/api/tariffs",
            &tariff.to_string(),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        for user in ["u-alice", "u-bob"] {
            let account =
                json!({"id": user, "name": user, "tariff": "flat", "monthly_budget": "50.00"})
                    .to_string();
            let (status, body) =
                http_as(server.addr, &server.utility, "POST", "/api/users", &account).await;
            assert_eq!(status, 201, "{body}");
        }
        for (meter, owner) in [("m-alice", "u-alice"), ("m-bob", "u-bob")] {
            let registration = json!({"id": meter, "owner": owner}).to_string();
            let (status, body) = http_as(
                server.addr,
                &server.utility,
                "POST",
                "/api/meters",
                &registration,
            )
            .await;
            assert_eq!(status, 201, "{body}");
            let now = gridpulse_actors::Clock::now_ms(&gridpulse_actors::SystemClock);
            let reading = json!([{"meter": meter, "ts_ms": now - 5000, "voltage": 230.0,
                                  "current": 2.0, "power_w": 440.0, "energy_wh": 900.0}]);
            let (status, body) = http_as(
                server.addr,
                &service,
                "POST",
                "/api/readings",
                &reading.to_string(),
            )
            .await;
            assert_eq!(status, 202, "{body}");
        }
        // Three meters of feeder F1 that fall silent after 2 s: one group alert.
        for meter in ["f1-a", "f1-b", "f1-c"] {
            let registration =
                json!({"id": meter, "feeder": "F1", "thresholds": {"no_data_timeout_s": 2}});
            let (status, body) = http_as(
                server.addr,
                &server.utility,
                "POST",
                "/api/meters",
                &registration.to_string(),
            )
            .await;
            assert_eq!(status, 201, "{body}");
            let now = gridpulse_actors::Clock::now_ms(&gridpulse_actors::SystemClock);
            let reading = json!([{"meter": meter, "ts_ms": now - 500, "voltage": 230.0,
                                  "current": 1.0, "power_w": 230.0, "energy_wh": 10.0}]);
            let (status, body) = http_as(
                server.addr,
                &service,
                "POST",
                "/api/readings",
                &reading.to_string(),
            )
            .await;
            assert_eq!(status, 202, "{body}");
        }
        // Alice's meter is prepaid with 20.00 of credit; a saving session is planned.
        let prepaid = json!({"owner": "u-alice", "tariff": "flat", "prepaid": true});
        let (status, body) = http_as(
            server.addr,
            &server.utility,
            "PUT",
            "/api/meters/m-alice",
            &prepaid.to_string(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let topup = json!({"amount": "20.00", "idempotency_key": "browser-1"});
        let (status, body) = http_as(
            server.addr,
            &server.utility,
            "POST",
            "/api/meters/m-alice/topups",
            &topup.to_string(),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        let half_hour = 1_800_000;
        let now = gridpulse_actors::Clock::now_ms(&gridpulse_actors::SystemClock);
        let start = (now / half_hour + 2) * half_hour;
        let session = json!({"id": "s-browser", "name": "Evening peak", "start_ms": start,
                             "end_ms": start + 2 * half_hour, "time_zone": "UTC"});
        let (status, body) = http_as(
            server.addr,
            &server.utility,
            "POST",
            "/api/sessions",
            &session.to_string(),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    });

    let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser-artifacts");
    std::fs::create_dir_all(&shots).unwrap();
    let output = Command::new("node")
        .arg(scripts.join("dashboard.mjs"))
        .current_dir(&scripts)
        .env("BASE_URL", format!("http://{}", server.addr))
        .env("OPS_TOKEN", &server.ops)
        .env("SERVICE_TOKEN", &service)
        .env("CONSUMER_TOKEN", &consumer)
        .env("OWN_METER", "m-alice")
        .env("OTHER_METER", "m-bob")
        .env("SHOTS_DIR", &shots)
        .env("CHROMIUM", &chromium)
        .output()
        .expect("node runs (Node.js is on the machine; `make deps` checks)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    println!("{stdout}");
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "browser checks failed:\n{stdout}");
    let appear_ms: u64 = stdout
        .lines()
        .find_map(|line| line.strip_prefix("result alert_appear_ms="))
        .expect("the script reports how long the alert took")
        .trim()
        .parse()
        .unwrap();
    assert!(
        appear_ms <= 5_000,
        "the alert took {appear_ms} ms to appear"
    );
    for shot in [
        "overview.png",
        "alerts.png",
        "meter.png",
        "users.png",
        "consumer.png",
    ] {
        assert!(shots.join(shot).exists(), "no screenshot {shot}");
    }
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
