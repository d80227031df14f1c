//! Kafka processors as real `gridpulse run --kafka-brokers` processes on a real broker
//! (tansu on a free loopback port):
//!
//! * killed with SIGKILL mid-stream several times and restarted on the same data
//!   directory, a processor ends with exactly the state and alerts of a processor that
//!   consumed the same topic (in another consumer group) without ever crashing;
//! * stopped with SIGTERM, a processor checkpoints, commits and leaves its group, so a
//!   restart replays nothing and a surviving group member takes its partitions over at
//!   once instead of after the session timeout.
//!
//! Every wait has a deadline; every child process is killed if the test fails, and the
//! tail of its log (stdout and stderr, kept in a file) is shown.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gridpulse_domain::{MeterId, Reading};
use gridpulse_ingest::kafka::KafkaConfig;
use gridpulse_ingest::kafka::admin::create_topics;
use gridpulse_ingest::kafka::producer::KafkaReadingProducer;
use gridpulse_ingest::kafka::test_broker::TestBroker;
use serde_json::{Value, json};

const N_METERS: usize = 24;
const N_PARTITIONS: i32 = 4;
const STEP_MS: i64 = 5_000;
/// The consumer's `session.timeout.ms` (ingest/src/kafka/consumer.rs): how long a
/// member that vanished without leaving keeps its partitions.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// The tests start brokers and several processes each: one at a time keeps the
/// measured times meaningful on a small machine.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A `gridpulse run` processor on Kafka; killed on drop.
struct Processor {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Processor {
    /// Starts the binary and waits (bounded) for the banner that names its address.
    fn start(brokers: &str, group: &str, data_dir: &Path, log: &Path) -> Processor {
        let mut log_file = File::options().create(true).append(true).open(log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gridpulse"))
            .args(["processor", "--listen", "127.0.0.1:0", "--workers", "1"])
            .args([
                "--http-workers",
                "1",
                "--insecure-dev",
                "--kafka-brokers",
                brokers,
            ])
            .args(["--kafka-group", group, "--checkpoint-interval", "0.1"])
            .arg("--data-dir")
            .arg(data_dir)
            .env("NO_COLOR", "1")
            .env(
                "GRIDPULSE_LOG",
                std::env::var("GRIDPULSE_LOG").unwrap_or_else(|_| "info".into()),
            )
            // Logs go to stdout, with the banner; stderr gets panics and fatal errors.
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file.try_clone().unwrap()))
            .spawn()
            .unwrap();
        // Read stdout on a thread so the wait for the banner can time out; the thread
        // copies every line to the log file and keeps draining after the banner, so the
        // child never blocks on a full pipe.
        let stdout = child.stdout.take().unwrap();
        let (lines_tx, lines_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = writeln!(log_file, "{line}");
                let _ = lines_tx.send(line);
            }
        });
        let mut processor = Processor {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log: log.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines_rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.trim().strip_prefix("live alerts page") {
                        let url = url
                            .trim()
                            .trim_start_matches("http://")
                            .trim_end_matches('/');
                        processor.addr = url.parse().unwrap();
                        return processor;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    processor.fail("did not print its address within 30 s")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = processor.child.wait().unwrap();
                    processor.fail(&format!("exited before listening ({status})"))
                }
            }
        }
    }

    /// Panics with `what` and the tail of the processor's log.
    fn fail(&self, what: &str) -> ! {
        panic!(
            "processor {}: {what}\n--- its log (tail) ---\n{}",
            self.addr,
            log_tail(&self.log)
        )
    }

    /// SIGKILL (if it is still running) and reap.
    fn kill9(mut self) {
        let _ = self.child.kill();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits (bounded) for a clean exit; answers how long it took.
    fn terminate(mut self) -> Duration {
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = started + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if !status.success() {
                    self.fail(&format!("clean shutdown exits 0, got {status}"));
                }
                return started.elapsed();
            }
            if Instant::now() > deadline {
                self.fail("SIGTERM did not stop it within 20 s");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// GET `path`; fails the test (with the log) when the processor does not answer.
    fn get(&self, path: &str) -> (u16, Value) {
        http(self.addr, "GET", path, "")
            .unwrap_or_else(|| self.fail(&format!("no answer to GET {path}")))
    }

    /// The last reading's time of `meter`, if this processor serves the meter.
    fn last_ts(&self, meter: &str) -> Option<i64> {
        let (status, state) = self.get(&format!("/api/meters/{meter}"));
        (status == 200)
            .then(|| state["last_reading"]["ts_ms"].as_i64())
            .flatten()
    }

    /// The value of an unlabelled counter or gauge in `/metrics` (0 when absent).
    fn metric(&self, name: &str) -> f64 {
        let (_, metrics) = self.get("/metrics");
        metrics
            .as_str()
            .unwrap_or_default()
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .map_or(0.0, |value| value.trim().parse().unwrap())
    }

    /// Consumer lag per partition, as far as the processor reports it.
    fn lags(&self) -> BTreeMap<i32, f64> {
        let (_, metrics) = self.get("/metrics");
        let prefix = "gridpulse_ingest_kafka_consumer_lag_records{partition=\"";
        metrics
            .as_str()
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (partition, value) = line.strip_prefix(prefix)?.split_once("\"} ")?;
                Some((partition.parse().ok()?, value.trim().parse().ok()?))
            })
            .collect()
    }
}

impl Drop for Processor {
    /// A failing test must not leave a gridpulse process behind.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
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
    format!("kcrash-{idx:03}")
}

fn ts(base_ms: i64, step: usize) -> i64 {
    base_ms + step as i64 * STEP_MS
}

/// Step `step`'s readings: one per meter, with over-voltage episodes (alerts raised and
/// cleared) and a register reset of meter 0.
fn step_readings(base_ms: i64, step: usize) -> Vec<Reading> {
    (0..N_METERS)
        .map(|idx| Reading {
            meter: MeterId::new(&meter(idx)).unwrap(),
            ts_ms: ts(base_ms, step),
            voltage: if (step + idx) % 20 < 4 { 262.0 } else { 231.0 },
            current: 2.0,
            power_w: 400.0 + idx as f64,
            energy_wh: if idx == 0 && step >= 70 {
                (step - 70) as f64
            } else {
                1000.0 + step as f64 * 1.5
            },
            credit: None,
            seq: Some(step as u64),
            backfill: false,
        })
        .collect()
}

/// The broker, its topics and a producer; `block_on` drives rdkafka's futures.
struct Kafka {
    broker: TestBroker,
    producer: KafkaReadingProducer,
    runtime: tokio::runtime::Runtime,
}

impl Kafka {
    fn start() -> Kafka {
        let broker = TestBroker::start().expect("a tansu broker (run `make deps`)");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut config = KafkaConfig::new(broker.bootstrap());
        config.partitions = N_PARTITIONS;
        runtime.block_on(create_topics(&config)).unwrap();
        let producer = KafkaReadingProducer::new(&config).unwrap();
        Kafka {
            broker,
            producer,
            runtime,
        }
    }

    fn brokers(&self) -> String {
        self.broker.bootstrap()
    }

    /// Produces `step` and waits for the broker's acknowledgement.
    fn produce(&self, base_ms: i64, step: usize) {
        let readings = step_readings(base_ms, step);
        self.runtime
            .block_on(async {
                tokio::time::timeout(Duration::from_secs(20), self.producer.append(&readings)).await
            })
            .expect("the broker acknowledges within 20 s")
            .unwrap();
    }
}

/// Waits until every meter's last reading on `processor` is `step`'s.
fn wait_step(processor: &Processor, base_ms: i64, step: usize, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    for idx in 0..N_METERS {
        while processor.last_ts(&meter(idx)) != Some(ts(base_ms, step)) {
            if Instant::now() > deadline {
                let (_, state) = processor.get(&format!("/api/meters/{}", meter(idx)));
                processor.fail(&format!(
                    "{what}: meter {} did not reach step {step} within {within:?}: {state}",
                    meter(idx)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What must be equal between the crashed and the uncrashed processor, per meter.
fn meter_states(processor: &Processor) -> BTreeMap<String, Value> {
    (0..N_METERS)
        .map(|idx| {
            let (status, state) = processor.get(&format!("/api/meters/{}", meter(idx)));
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

/// Every alert id of every meter, sorted, duplicates kept.
fn alert_ids(processor: &Processor) -> Vec<String> {
    let mut ids = Vec::new();
    for idx in 0..N_METERS {
        let (status, list) = processor.get(&format!("/api/alerts?meter={}&limit=1000", meter(idx)));
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

/// Every meter's raw reading history holds each step exactly once.
fn readings_stored_once(processor: &Processor, base_ms: i64, n_steps: usize) {
    let expected: Vec<i64> = (0..n_steps).map(|step| ts(base_ms, step)).collect();
    for idx in 0..N_METERS {
        let (status, page) = processor.get(&format!(
            "/api/meters/{}/readings?from={base_ms}&to={}&limit=10000",
            meter(idx),
            ts(base_ms, n_steps)
        ));
        assert_eq!(status, 200, "{page}");
        let stored: Vec<i64> = page["readings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["ts_ms"].as_i64().unwrap())
            .collect();
        assert_eq!(
            stored,
            expected,
            "meter {}: every reading stored exactly once",
            meter(idx)
        );
    }
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

/// A fresh directory for one test's data and logs, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("gridpulse-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// Readings in the past, inside one UTC day, so "energy today" is comparable.
fn base_ms(n_steps: usize) -> i64 {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let span = n_steps as i64 * STEP_MS;
    (now_ms - span - 60_000).max(now_ms - now_ms % 86_400_000)
}

#[test]
fn kill_9_mid_stream_applies_every_reading_once() {
    let _watchdog = gridpulse_ingest::kafka::test_broker::watchdog(
        "kill_9_mid_stream_applies_every_reading_once",
        Duration::from_secs(300),
    );
    const ROUNDS: usize = 4;
    const STEPS_PER_ROUND: usize = 40;
    const N_STEPS: usize = ROUNDS * STEPS_PER_ROUND;
    let _serial = serial();
    let started = Instant::now();
    let tmp = TempDir::new("kafka-crash");
    let kafka = Kafka::start();
    let brokers = kafka.brokers();
    let base_ms = base_ms(N_STEPS);

    // The reference consumes the same topic in its own group and is never killed.
    let reference = Processor::start(
        &brokers,
        "reference",
        &tmp.0.join("reference"),
        &tmp.0.join("reference.log"),
    );
    let crashing_dir = tmp.0.join("crashing");
    let crashing_log = tmp.0.join("crashing.log");
    let start_crashing = || Processor::start(&brokers, "crashing", &crashing_dir, &crashing_log);
    let mut processor = start_crashing();

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut restarts = Vec::new();
    for round in 0..ROUNDS {
        let first = round * STEPS_PER_ROUND;
        // The round's first step, once applied, shows the (re)started processor
        // consumes: it has joined the group and owns every partition.
        let restarted = Instant::now();
        kafka.produce(base_ms, first);
        wait_step(
            &processor,
            base_ms,
            first,
            Duration::from_secs(30),
            &format!("round {round}"),
        );
        if round > 0 {
            restarts.push(restarted.elapsed());
        }
        if round + 1 == ROUNDS {
            for step in first + 1..N_STEPS {
                kafka.produce(base_ms, step);
            }
            break;
        }
        // Produce the rest of the round at a steady pace; SIGKILL lands in the middle.
        let kill_after = Duration::from_millis(50 + rng.next(300));
        let round_started = Instant::now();
        let mut killed = false;
        for step in first + 1..first + STEPS_PER_ROUND {
            kafka.produce(base_ms, step);
            if !killed && round_started.elapsed() >= kill_after {
                let pid = processor.child.id();
                let status = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status()
                    .unwrap();
                assert!(status.success());
                killed = true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(killed, "round {round}: the kill must land mid-stream");
        eprintln!(
            "round {round}: SIGKILL {kill_after:?} into {:?} of producing",
            round_started.elapsed()
        );
        processor.kill9();
        processor = start_crashing();
    }
    let last = N_STEPS - 1;
    wait_step(
        &reference,
        base_ms,
        last,
        Duration::from_secs(30),
        "reference",
    );
    wait_step(
        &processor,
        base_ms,
        last,
        Duration::from_secs(30),
        "crashed processor",
    );
    eprintln!(
        "kafka crash test: {} kills with SIGKILL; consuming again after each restart in {restarts:?}",
        ROUNDS - 1
    );

    let expected_states = meter_states(&reference);
    let expected_alerts = alert_ids(&reference);
    assert!(
        expected_alerts.len() > N_METERS,
        "the stream raises alerts: {expected_alerts:?}"
    );
    assert_eq!(
        meter_states(&processor),
        expected_states,
        "every reading applied exactly once: state equals the uncrashed processor's"
    );
    let ids = alert_ids(&processor);
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "no alert id twice: {ids:?}");
    assert_eq!(ids, expected_alerts, "the same alerts, with the same ids");
    readings_stored_once(&processor, base_ms, N_STEPS);

    // A clean stop commits the final checkpoint and leaves the group: the restart
    // replays nothing and does not wait for a dead member's session to expire.
    let stopped_in = processor.terminate();
    let restarted = Instant::now();
    let processor = start_crashing();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let lags = processor.lags();
        if lags.len() == N_PARTITIONS as usize && lags.values().all(|lag| *lag == 0.0) {
            break;
        }
        if Instant::now() > deadline {
            processor.fail(&format!(
                "no assignment with zero lag within 30 s: {lags:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let caught_up_in = restarted.elapsed();
    // After kill -9 the restart waits for the dead member's session (~11 s on tansu).
    assert!(
        caught_up_in < SESSION_TIMEOUT,
        "the restart after SIGTERM took {caught_up_in:?} to own every partition: the \
         stopped processor did not leave the group"
    );
    assert_eq!(
        processor.metric("gridpulse_actors_readings_applied_total"),
        0.0,
        "nothing replayed after a clean shutdown"
    );
    assert_eq!(
        meter_states(&processor),
        expected_states,
        "state restored from snapshots"
    );
    eprintln!(
        "kafka crash test: SIGTERM stopped the processor in {stopped_in:?}; the restart owned \
         every partition with zero lag after {caught_up_in:?}; whole test {:?}",
        started.elapsed()
    );
    processor.kill9();
    reference.kill9();
}

#[test]
fn sigterm_leaves_the_group_so_the_survivor_takes_over_at_once() {
    let _watchdog = gridpulse_ingest::kafka::test_broker::watchdog(
        "sigterm_leaves_the_group_so_the_survivor_takes_over_at_once",
        Duration::from_secs(300),
    );
    const MAX_STEPS: usize = 200;
    let _serial = serial();
    let tmp = TempDir::new("kafka-leave");
    let kafka = Kafka::start();
    let brokers = kafka.brokers();
    let base_ms = base_ms(MAX_STEPS);
    let partition_of = |idx: usize| {
        MeterId::new(&meter(idx))
            .unwrap()
            .partition(N_PARTITIONS as u32)
    };
    let covered: BTreeSet<u32> = (0..N_METERS).map(partition_of).collect();
    assert_eq!(
        covered.len(),
        N_PARTITIONS as usize,
        "the meters cover every partition"
    );

    let survivor = Processor::start(
        &brokers,
        "takeover",
        &tmp.0.join("survivor"),
        &tmp.0.join("survivor.log"),
    );
    let leaving = Processor::start(
        &brokers,
        "takeover",
        &tmp.0.join("leaving"),
        &tmp.0.join("leaving.log"),
    );

    // Produce a step at a time until the group has split the partitions: every meter's
    // latest reading is applied by one of the two, and each owns some.
    let deadline = Instant::now() + Duration::from_secs(45);
    let mut step = 0;
    let leaving_partitions = loop {
        assert!(step < MAX_STEPS, "the group never split the partitions");
        kafka.produce(base_ms, step);
        let step_deadline = Instant::now() + Duration::from_secs(2);
        let (mut on_survivor, mut on_leaving) = (BTreeSet::new(), BTreeSet::new());
        let mut all_applied = false;
        while !all_applied && Instant::now() < step_deadline {
            all_applied = true;
            for idx in 0..N_METERS {
                if survivor.last_ts(&meter(idx)) == Some(ts(base_ms, step)) {
                    on_survivor.insert(partition_of(idx));
                } else if leaving.last_ts(&meter(idx)) == Some(ts(base_ms, step)) {
                    on_leaving.insert(partition_of(idx));
                } else {
                    all_applied = false;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if all_applied && !on_survivor.is_empty() && !on_leaving.is_empty() {
            break on_leaving;
        }
        if Instant::now() > deadline {
            survivor.fail(&format!(
                "the group did not split the partitions within 45 s \
                 (step {step}: survivor {on_survivor:?}, leaving {on_leaving:?})\n\
                 --- the other member's log ---\n{}",
                log_tail(&leaving.log)
            ));
        }
        step += 1;
    };

    // SIGTERM: final checkpoint, then the consumer leaves the group. The survivor must
    // own every partition again well before the session timeout would have expired.
    let sigterm = Instant::now();
    let stopped_in = leaving.terminate();
    step += 1;
    kafka.produce(base_ms, step);
    wait_step(
        &survivor,
        base_ms,
        step,
        Duration::from_secs(30),
        "takeover after SIGTERM",
    );
    let takeover = sigterm.elapsed();
    eprintln!(
        "kafka leave test: the leaving member owned partitions {leaving_partitions:?}; it \
         stopped {stopped_in:?} after SIGTERM; the survivor applied new readings of every \
         partition {takeover:?} after SIGTERM (session timeout {SESSION_TIMEOUT:?})"
    );
    // Without a LeaveGroup the group cannot move the partitions before the member's
    // session has expired (measured: ~9.9 s after kill -9 on tansu).
    assert!(
        takeover < SESSION_TIMEOUT,
        "takeover took {takeover:?}: the leaving member did not leave the group (the \
         survivor waited for its session to time out)\n--- survivor log ---\n{}",
        log_tail(&survivor.log)
    );
    survivor.kill9();
}
