//! The real binary's authentication out of the box: `gridpulse run` without a key
//! prints a development ops token that works (and nothing works without one), `gridpulse
//! token --data-dir` mints tokens the same server accepts, and `--insecure-dev` turns
//! authentication off, saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{fresh_data_dir, http, http_as};

struct Server {
    child: Child,
    addr: SocketAddr,
    dev_token: Option<String>,
    auth_line: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(extra: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gridpulse"))
        .args(["run", "--listen", "127.0.0.1:0", "--partitions", "2"])
        .args(["--workers", "1", "--http-workers", "1"])
        .args(extra)
        .env("GRIDPULSE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut addr, mut dev_token, mut auth_line) = (None, None, String::new());
    loop {
        assert!(Instant::now() < deadline, "gridpulse did not start");
        let line = lines.next().expect("gridpulse exited early").unwrap();
        let line = line.trim();
        if let Some(url) = line.strip_prefix("live alerts page") {
            addr = Some(
                url.trim()
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .parse()
                    .unwrap(),
            );
        } else if let Some(token) = line.strip_prefix("dev ops token") {
            dev_token = Some(token.trim().to_owned());
        } else if line.starts_with("auth ") {
            auth_line = line.to_owned();
        } else if line.starts_with("press Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        addr: addr.expect("no address printed"),
        dev_token,
        auth_line,
    }
}

fn mint(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_gridpulse"))
        .arg("token")
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "gridpulse token failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[tokio::test]
async fn the_printed_dev_token_and_minted_tokens_work_and_nothing_else_does() {
    let dir = fresh_data_dir("auth-cli", "dev-token");
    let dir_text = dir.display().to_string();
    let server = start(&["--data-dir", &dir_text]);
    let token = server.dev_token.clone().expect("no dev token printed");
    assert!(
        server.auth_line.contains("dev-jwt-secret"),
        "{}",
        server.auth_line
    );
    let addr = server.addr;
    let (status, body) = http(addr, "GET", "/api/meters", "").await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = http_as(addr, &token, "GET", "/api/meters", "").await;
    assert_eq!(status, 200, "{body}");
    // A consumer token minted from the same data directory is accepted, as a consumer.
    let consumer = mint(&[
        "--data-dir",
        &dir_text,
        "--sub",
        "carol",
        "--role",
        "consumer",
        "--user",
        "u-carol",
        "--ttl",
        "5m",
    ]);
    let (status, body) = http_as(addr, &consumer, "GET", "/api/users/u-carol", "").await;
    assert_ne!(status, 401, "{body}");
    let (status, body) = http_as(addr, &consumer, "POST", "/api/meters", "{}").await;
    assert_eq!(status, 403, "{body}");
    // A token of another data directory's secret is not.
    let other_dir = fresh_data_dir("auth-cli", "other-secret");
    let foreign = mint(&[
        "--data-dir",
        &other_dir.display().to_string(),
        "--sub",
        "x",
        "--role",
        "ops",
    ]);
    let (status, body) = http_as(addr, &foreign, "GET", "/api/meters", "").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("bad_signature"))
    );
    // Bad arguments are refused with a reason.
    let output = Command::new(env!("CARGO_BIN_EXE_gridpulse"))
        .args([
            "token",
            "--sub",
            "c",
            "--role",
            "consumer",
            "--data-dir",
            &dir_text,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--user"));
}

#[tokio::test]
async fn insecure_dev_needs_no_token_and_says_so() {
    let server = start(&["--in-memory", "--insecure-dev"]);
    assert!(server.dev_token.is_none());
    assert!(server.auth_line.contains("OFF"), "{}", server.auth_line);
    let (status, body) = http(server.addr, "GET", "/api/meters", "").await;
    assert_eq!(status, 200, "{body}");
}
