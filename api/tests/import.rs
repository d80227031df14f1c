//! Bulk import end to end in embedded mode: `POST /api/import` with generated CSV and
//! NDJSON files (plain and gzip) against the whole persistent system; the report is
//! checked line by line and the stored rows are counted through
//! `GET /api/meters/{id}/readings`. Also the `gridpulse import` command against the
//! real binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;
use support::{fresh_data_dir, http, with_system};

const HOUR: i64 = 3_600_000;

fn base_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // Two days ago, on a whole hour: history.
    (now - 48 * HOUR) / HOUR * HOUR
}

/// POSTs raw bytes; returns the status and the (de-chunked) body text.
async fn post_bytes(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.unwrap();
        let text = String::from_utf8_lossy(&response).into_owned();
        let status: u16 = text[9..12].parse().unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let body = if head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        (status, body)
    };
    tokio::time::timeout(Duration::from_secs(60), exchange)
        .await
        .expect("no answer within 60 s")
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// The report's row lines as (line, field, code), and the summary.
fn parse_report(body: &str) -> (Vec<(u64, String, String)>, Value) {
    let mut rows = Vec::new();
    let mut summary = Value::Null;
    for line in body.lines() {
        let value: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("{line}"));
        if let Some(found) = value.get("summary") {
            summary = found.clone();
        } else {
            rows.push((
                value["line"].as_u64().unwrap(),
                value["field"].as_str().unwrap().to_owned(),
                value["code"].as_str().unwrap().to_owned(),
            ));
        }
    }
    assert!(summary.is_object(), "no summary line in {body}");
    (rows, summary)
}

async fn register(addr: SocketAddr, meter: &str) {
    let (status, body) = http(
        addr,
        "POST",
        "/api/meters",
        &json!({"id": meter}).to_string(),
    )
    .await;
    assert!(status == 201 || status == 200, "{status} {body}");
}

/// Stored readings of `meter` in `[from, to)`, counted over every page.
async fn stored(addr: SocketAddr, meter: &str, from: i64, to: i64) -> usize {
    let mut count = 0;
    let mut cursor = String::new();
    for _ in 0..100 {
        let path = format!(
            "/api/meters/{meter}/readings?from={from}&to={to}&limit=10000{}",
            if cursor.is_empty() {
                String::new()
            } else {
                format!("&cursor={cursor}")
            }
        );
        let (status, body) = http(addr, "GET", &path, "").await;
        assert_eq!(status, 200, "{body}");
        count += body["readings"].as_array().unwrap().len();
        match body["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => return count,
        }
    }
    panic!("too many pages");
}

/// Waits (bounded) until `meter` has `n` stored readings in the window; returns the
/// last count.
async fn wait_stored(addr: SocketAddr, meter: &str, from: i64, to: i64, n: usize) -> usize {
    let mut last = 0;
    for _ in 0..200 {
        last = stored(addr, meter, from, to).await;
        if last >= n {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}

/// A CSV of `n` rows per meter for `m-a` and `m-b` (every 10 s), with known bad rows:
/// every 50th row has a text voltage, every 70th a negative current, and every 90th
/// row is repeated (a duplicate); plus rows of the unregistered `m-x`. Returns the
/// file, the expected report (line, field, code), the good rows per meter and the
/// number of duplicates.
struct Generated {
    csv: String,
    expected: Vec<(u64, String, String)>,
    good_per_meter: [usize; 2],
    duplicates: u64,
    rows: u64,
}

fn generate(base: i64, n: usize) -> Generated {
    let mut csv = String::from("ts,meter,energy_wh,power_w,voltage,current\n");
    let mut line = 1u64;
    let mut expected = Vec::new();
    let mut good_per_meter = [0usize; 2];
    let mut duplicates = 0;
    let mut rows = 0;
    for idx in 0..n {
        for (meter_idx, meter) in ["m-a", "m-b"].iter().enumerate() {
            let ts = base + idx as i64 * 10_000;
            let energy = 1000 + idx;
            let (voltage, current, bad) = if idx % 50 == 49 {
                (
                    "x230".to_owned(),
                    "2".to_owned(),
                    Some(("voltage", "wrong_type")),
                )
            } else if idx % 70 == 69 {
                (
                    "230".to_owned(),
                    "-2".to_owned(),
                    Some(("current", "negative")),
                )
            } else {
                ("230".to_owned(), "2".to_owned(), None)
            };
            let row = format!("{ts},{meter},{energy},400,{voltage},{current}\n");
            csv.push_str(&row);
            line += 1;
            rows += 1;
            match bad {
                Some((field, code)) => expected.push((line, field.to_owned(), code.to_owned())),
                None => {
                    good_per_meter[meter_idx] += 1;
                    if idx % 90 == 89 {
                        csv.push_str(&row);
                        line += 1;
                        rows += 1;
                        duplicates += 1;
                    }
                }
            }
        }
        if idx % 100 == 0 {
            csv.push_str(&format!("{},m-x,5,400,230,2\n", base + idx as i64 * 10_000));
            line += 1;
            rows += 1;
            expected.push((line, "meter".to_owned(), "unknown_meter".to_owned()));
        }
    }
    Generated {
        csv,
        expected,
        good_per_meter,
        duplicates,
        rows,
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn csv_import_reports_bad_rows_stores_good_ones_once_and_gzip_works() {
    let dir = fresh_data_dir("import", "csv");
    with_system(Some(dir.clone()), |addr| async move {
        let base = base_ms();
        let (from, to) = (base, base + 2 * HOUR);
        register(addr, "m-a").await;
        register(addr, "m-b").await;
        let generated = generate(base, 600);

        let (status, body) = post_bytes(addr, "/api/import", &[], generated.csv.as_bytes()).await;
        assert_eq!(status, 200, "{body}");
        let (rows, summary) = parse_report(&body);
        assert_eq!(rows, generated.expected);
        let good = (generated.good_per_meter[0] + generated.good_per_meter[1]) as u64;
        assert_eq!(summary["rows"], json!(generated.rows), "{summary}");
        assert_eq!(summary["accepted"], json!(good), "{summary}");
        assert_eq!(
            summary["rejected"],
            json!(generated.expected.len()),
            "{summary}"
        );
        assert_eq!(
            summary["duplicates"],
            json!(generated.duplicates),
            "{summary}"
        );
        assert_eq!(summary["complete"], json!(true), "{summary}");
        assert_eq!(summary["format"], json!("csv"));
        for (meter, good) in [
            ("m-a", generated.good_per_meter[0]),
            ("m-b", generated.good_per_meter[1]),
        ] {
            assert_eq!(
                wait_stored(addr, meter, from, to, good).await,
                good,
                "{meter}"
            );
        }

        // Again, gzip, with one new row per meter at the end: only those are new.
        let mut again = generated.csv.clone();
        let late = base + HOUR + 59 * 60_000;
        again.push_str(&format!(
            "{late},m-a,9999,400,230,2\n{late},m-b,9999,400,230,2\n"
        ));
        let packed = gzip(again.as_bytes());
        let (status, body) = post_bytes(
            addr,
            "/api/import?report=ndjson",
            &[("Content-Encoding", "gzip")],
            &packed,
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (rows, summary) = parse_report(&body);
        assert_eq!(rows, generated.expected);
        assert_eq!(summary["gzip"], json!(true));
        assert_eq!(summary["accepted"], json!(good + 2));
        for (meter, good) in [
            ("m-a", generated.good_per_meter[0]),
            ("m-b", generated.good_per_meter[1]),
        ] {
            assert_eq!(
                wait_stored(addr, meter, from, to, good + 1).await,
                good + 1,
                "{meter}"
            );
            // Settled: the re-imported rows replaced themselves, nothing doubled.
            tokio::time::sleep(Duration::from_millis(300)).await;
            assert_eq!(stored(addr, meter, from, to).await, good + 1, "{meter}");
        }

        // A truncated gzip: the rows before the cut are imported, the summary says so.
        let mut single = String::from("meter,ts,voltage,current,power_w,energy_wh\n");
        let cut_base = base + 3 * HOUR;
        for idx in 0..20_000i64 {
            single.push_str(&format!(
                "m-a,{},231,2,400,{}\n",
                cut_base + idx * 1000,
                5000 + idx
            ));
        }
        let packed = gzip(single.as_bytes());
        let cut = &packed[..packed.len() * 2 / 3];
        let (status, body) = post_bytes(addr, "/api/import", &[], cut).await;
        assert_eq!(status, 200, "{body}");
        let (rows, summary) = parse_report(&body);
        assert!(rows.is_empty(), "{rows:?}");
        assert_eq!(summary["complete"], json!(false), "{summary}");
        assert_eq!(summary["error"]["code"], json!("truncated"), "{summary}");
        let message = summary["error"]["message"].as_str().unwrap();
        assert!(message.contains("gzip stream is truncated"), "{message}");
        let accepted = summary["accepted"].as_u64().unwrap() as usize;
        assert!(accepted > 5_000 && accepted < 20_000, "{summary}");
        let window = (cut_base, cut_base + 20_000 * 1000);
        assert_eq!(
            wait_stored(addr, "m-a", window.0, window.1, accepted).await,
            accepted
        );

        // The CSV report.
        let (status, body) = post_bytes(
            addr,
            "/api/import?report=csv",
            &[],
            generated.csv.as_bytes(),
        )
        .await;
        assert_eq!(status, 200);
        let lines: Vec<&str> = body.lines().collect();
        assert_eq!(lines[0], "line,field,code,reason");
        assert_eq!(lines.len(), generated.expected.len() + 2, "{body}");
        assert!(lines.last().unwrap().starts_with("# summary {"), "{body}");

        // Bad options name the parameter.
        let (status, body) = post_bytes(addr, "/api/import?ts=minutes", &[], b"").await;
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("\"field\":\"ts\""), "{body}");
    });
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn ndjson_unknown_meters_are_refused_unless_registered_and_history_raises_no_alert() {
    let dir = fresh_data_dir("import", "ndjson");
    with_system(Some(dir.clone()), |addr| async move {
        let base = base_ms();
        // Over-voltage history (270 V, the default limit is 253 V) of an unregistered
        // meter, in both JSON formats.
        let mut ndjson = String::new();
        for idx in 0..30i64 {
            let ts = base + idx * 10_000;
            if idx % 2 == 0 {
                ndjson.push_str(&json!({"meter": "m-new", "ts_ms": ts, "voltage": 270.0, "current": 2.0, "power_w": 500.0, "energy_wh": 100.0 + idx as f64}).to_string());
            } else {
                ndjson.push_str(&json!({"deviceId": "m-new", "timestamp": ts / 1000, "voltage": 270.0, "current": 2.0, "power": 500.0, "energy": (100.0 + idx as f64) / 1000.0}).to_string());
            }
            ndjson.push('\n');
        }
        let (status, body) = post_bytes(addr, "/api/import", &[], ndjson.as_bytes()).await;
        assert_eq!(status, 200, "{body}");
        let (rows, summary) = parse_report(&body);
        assert_eq!(rows.len(), 30);
        assert!(
            rows.iter()
                .enumerate()
                .all(|(idx, row)| *row == (idx as u64 + 1, "meter".into(), "unknown_meter".into())),
            "{rows:?}"
        );
        assert_eq!(
            (summary["accepted"].as_u64(), summary["format"].as_str()),
            (Some(0), Some("ndjson"))
        );

        let (status, body) = post_bytes(
            addr,
            "/api/import?register_meters=true",
            &[],
            ndjson.as_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let (rows, summary) = parse_report(&body);
        assert!(rows.is_empty(), "{rows:?}");
        assert_eq!(summary["accepted"], json!(30), "{summary}");
        assert_eq!(summary["meters_registered"], json!(1), "{summary}");
        assert_eq!(wait_stored(addr, "m-new", base, base + HOUR, 30).await, 30);
        // Registered like POST /api/meters {"id": "m-new"} does: the same again is a 200.
        let (status, _) = http(
            addr,
            "POST",
            "/api/meters",
            &json!({"id": "m-new"}).to_string(),
        )
        .await;
        assert_eq!(status, 200);

        // The history was applied (the meter's state knows its last reading) and raised
        // no alert.
        let mut applied = Value::Null;
        for _ in 0..100 {
            let (status, body) = http(addr, "GET", "/api/meters/m-new", "").await;
            if status == 200 && body.to_string().contains(&(base + 29 * 10_000).to_string()) {
                applied = body;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            applied.is_object(),
            "the imported history never reached the meter"
        );
        let (_, alerts) = http(addr, "GET", "/api/alerts?meter=m-new", "").await;
        assert_eq!(
            alerts["alerts"].as_array().map(Vec::len),
            Some(0),
            "{alerts}"
        );

        // Control: the same voltage live does raise one.
        let live = json!({"meter": "m-new", "ts_ms": base + 40 * HOUR, "voltage": 270.0, "current": 2.0, "power_w": 500.0, "energy_wh": 200.0});
        let (status, body) = http(addr, "POST", "/api/readings", &live.to_string()).await;
        assert_eq!(status, 202, "{body}");
        let mut raised = false;
        for _ in 0..100 {
            let (_, alerts) = http(addr, "GET", "/api/alerts?meter=m-new", "").await;
            if alerts.to_string().contains("over_voltage") {
                raised = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            raised,
            "a live over-voltage reading raised no alert: the check above proves nothing"
        );
    });
    let _ = std::fs::remove_dir_all(dir);
}

/// The real binary, started without a key (so it prints its development tokens).
struct Server {
    child: std::process::Child,
    addr: SocketAddr,
    utility_token: String,
    ops_token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_server(dir: &std::path::Path) -> Server {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gridpulse"))
        .args(["run", "--listen", "127.0.0.1:0", "--partitions", "2"])
        .args(["--workers", "1", "--http-workers", "1", "--data-dir"])
        .arg(dir)
        .env("GRIDPULSE_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (mut addr, mut utility, mut ops) = (None, None, None);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "gridpulse did not start"
        );
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
        } else if let Some(token) = line.strip_prefix("dev utility token") {
            utility = Some(token.trim().to_owned());
        } else if let Some(token) = line.strip_prefix("dev ops token") {
            ops = Some(token.trim().to_owned());
        } else if line.starts_with("press Ctrl-C") {
            break;
        }
    }
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        addr: addr.expect("no address printed"),
        utility_token: utility.expect("no utility token printed"),
        ops_token: ops.expect("no ops token printed"),
    }
}

fn cli(args: &[&str], token: Option<&str>) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_gridpulse"));
    command.arg("import").args(args).arg("--quiet");
    command
        .env_remove("GRIDPULSE_TOKEN")
        .env("GRIDPULSE_LOG", "warn");
    if let Some(token) = token {
        command.env("GRIDPULSE_TOKEN", token);
    }
    command.output().unwrap()
}

#[test]
fn the_cli_streams_files_and_ends_with_the_summary() {
    let dir = fresh_data_dir("import", "cli");
    let server = start_server(&dir.join("data"));
    let api = format!("http://{}", server.addr);
    let base = base_ms();
    let mut csv = String::from("meter,ts,voltage,current,power_w,energy_wh\n");
    for idx in 0..1000i64 {
        let voltage = if idx == 10 { "volts" } else { "230" };
        csv.push_str(&format!(
            "m-cli,{},{voltage},2,400,{}\n",
            base + idx * 10_000,
            100 + idx
        ));
    }
    std::fs::create_dir_all(&dir).unwrap();
    let plain = dir.join("history.csv");
    std::fs::write(&plain, &csv).unwrap();
    let packed = dir.join("history2.csv.gz");
    std::fs::write(&packed, gzip(csv.as_bytes())).unwrap();
    let report = dir.join("report.ndjson");

    // No token: a clear 401.
    let output = cli(&[plain.to_str().unwrap(), "--api", &api], None);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("401") && stderr.contains("--token"),
        "{stderr}"
    );

    // Nobody listening: says so.
    let output = cli(
        &[plain.to_str().unwrap(), "--api", "http://127.0.0.1:9"],
        Some(&server.utility_token),
    );
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("cannot reach the gridpulse API"),
        "{stderr}"
    );

    // The meter is not registered: every row refused, the first errors printed.
    let output = cli(
        &[plain.to_str().unwrap(), "--api", &api],
        Some(&server.utility_token),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout} {stderr}");
    assert!(
        stdout.contains("rows=1000 accepted=0 rejected=1000"),
        "{stdout}"
    );
    assert!(
        stderr.contains("unknown_meter") && stderr.contains("980 more refused rows"),
        "{stderr}"
    );

    // Registered on request, both files, the report to a file.
    let output = cli(
        &[
            plain.to_str().unwrap(),
            packed.to_str().unwrap(),
            "--api",
            &api,
            "--register-meters",
            "--report",
            report.to_str().unwrap(),
        ],
        Some(&server.ops_token),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains(
            "history.csv: rows=1000 accepted=999 rejected=1 duplicates=0 out_of_order=0 meters_registered=1"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "history2.csv.gz: rows=1000 accepted=999 rejected=1 duplicates=0 out_of_order=0 meters_registered=0"
        ),
        "{stdout}"
    );
    let written = std::fs::read_to_string(&report).unwrap();
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), 2, "{written}");
    assert!(
        lines
            .iter()
            .all(|line| line.contains("\"line\":12,\"field\":\"voltage\",\"code\":\"wrong_type\"")),
        "{written}"
    );

    // Stored once.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let token = server.ops_token.clone();
    let addr = server.addr;
    let count = runtime.block_on(async move {
        let mut last = 0;
        for _ in 0..100 {
            let (status, body) = support::http_as(
                addr,
                &token,
                "GET",
                &format!(
                    "/api/meters/m-cli/readings?from={base}&to={}&limit=10000",
                    base + HOUR * 3
                ),
                "",
            )
            .await;
            assert_eq!(status, 200, "{body}");
            last = body["readings"].as_array().unwrap().len();
            if last >= 999 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        last
    });
    assert_eq!(count, 999);
    drop(server);
    let _ = std::fs::remove_dir_all(dir);
}
