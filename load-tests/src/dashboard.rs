//! `dashboard` mode: the ops dashboard in headless Chromium while the embedded system
//! holds `--meters` meters and `--rate` alert events a second arrive.
//!
//! The system runs in this process (in memory); `api/tests/browser/dashboard_load.mjs`
//! (playwright-core, installed by `make deps`) opens the alert feed and records, for
//! every alert raised during the run, when its row appeared (wall clock) and the
//! renderer's main-thread busy time (Chrome's Performance metrics). Latency = row shown
//! − the hub's publication of the `raised` event, both wall clock on one machine. The
//! browser, the server and the generator share this machine's cores. A plain websocket
//! client with the page's subscription runs beside the browser (the server's part of
//! the latency), and the page records how late a 50 ms timer fires (what a click would
//! wait for). Alert meters are spread evenly over the fleet, so the alert events arrive
//! at `--rate` a second rather than in one burst per round of readings.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use gridpulse_api::{EmbeddedConfig, EmbeddedSystem};

use crate::embedded::{Accepted, Generator, wait_applied};
use crate::payloads::Fleet;
use crate::report::{self, parse_duration};

/// Options of the dashboard benchmark.
#[derive(Debug, Args)]
pub struct DashboardArgs {
    /// Meters in the system (all get a reading first).
    #[arg(long, default_value_t = 100_000)]
    meters: usize,
    /// Of those, the meters that alternate over-voltage and normal readings.
    #[arg(long, default_value_t = 2_000)]
    alert_meters: usize,
    /// Alert events per second (each reading of an alert meter raises or resolves one).
    #[arg(long, default_value_t = 100)]
    rate: u64,
    /// How long alerts are created (e.g. 30s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    duration: Duration,
    /// The browser script (default: the repository's).
    #[arg(long)]
    script: Option<PathBuf>,
}

/// Runs the benchmark and prints its figures.
pub fn run(args: DashboardArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.meters > 0
            && args.rate > 0
            && args.alert_meters > 0
            && args.alert_meters <= args.meters,
        "--meters, --rate and --alert-meters must be at least 1, and --alert-meters at most --meters"
    );
    let cores = report::cores();
    println!(
        "dashboard benchmark: {} meters, {} alert events/s for {:?} in headless Chromium, {} cores shared by the server, the generator and the browser",
        args.meters, args.rate, args.duration, cores
    );
    actix_web::rt::System::new().block_on(run_in_system(args, cores))
}

async fn run_in_system(args: DashboardArgs, cores: usize) -> anyhow::Result<()> {
    let script = args.script.clone().unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../api/tests/browser/dashboard_load.mjs")
    });
    anyhow::ensure!(
        script.exists(),
        "{} not found (pass --script)",
        script.display()
    );
    let mut config = EmbeddedConfig {
        n_workers: 1,
        n_http_workers: 1,
        ..EmbeddedConfig::default()
    };
    config.default_thresholds.no_data_timeout_s = 3_600;
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let system = EmbeddedSystem::start_default_clock(config, listener).await?;
    let addr = system.local_addr;
    let server = system.server.handle();
    actix_web::rt::spawn(system.server);
    let log = Arc::clone(
        system
            .state
            .log
            .in_process()
            .context("embedded mode uses the in-process log")?,
    );
    let meters = system.state.meters.clone();
    let hub = Arc::clone(meters.hub());

    // Every meter gets a normal reading first.
    let now_ms = gridpulse_actors::Clock::now_ms(&gridpulse_actors::SystemClock);
    let accepted: Accepted = Arc::default();
    let mut generator = Generator::new(
        Fleet::new(args.meters),
        args.alert_meters,
        4096,
        now_ms,
        accepted,
    );
    let prime_log = Arc::clone(&log);
    let n_meters = args.meters as u64;
    let primed = Instant::now();
    let mut generator = tokio::task::spawn_blocking(move || -> anyhow::Result<Generator> {
        generator.produce(&prime_log, n_meters)?;
        generator.flush(&prime_log)?;
        Ok(generator)
    })
    .await??;
    wait_applied(&meters, n_meters, Duration::from_secs(120)).await?;
    println!(
        "{} meters live after {:.1} s",
        args.meters,
        primed.elapsed().as_secs_f64()
    );

    // The browser.
    let samples =
        std::env::temp_dir().join(format!("gridpulse-dashboard-{}.txt", std::process::id()));
    let mut child = Command::new("node")
        .arg(&script)
        .current_dir(script.parent().context("the script's folder")?)
        .env("BASE_URL", format!("http://{addr}"))
        .env("SAMPLES", &samples)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting node (make deps installs Chromium and playwright-core)")?;
    let mut child_stdin = child.stdin.take().context("browser stdin")?;
    let child_stdout = child.stdout.take().context("browser stdout")?;
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(child_stdout).lines().map_while(Result::ok) {
            println!("  browser: {line}");
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.recv())
            .await
            .context("the browser did not get ready in time")?
            .context("the browser exited before it was ready")?;
        if line == "ready" {
            break;
        }
    }

    // A plain websocket client with the page's subscription, beside the browser: it
    // tells the server's delivery time apart from the browser's.
    let probe = Probe::start(addr)?;

    // Alert events at a fixed rate.
    let first_seq = hub.last_seq() + 1;
    let rate_log = Arc::clone(&log);
    let (rate, duration) = (args.rate, args.duration);
    generator.batch_size = ((rate as usize * args.meters / args.alert_meters) / 200).clamp(1, 256);
    // The generator visits every meter in turn; a reading of one of the alert meters
    // raises or resolves an alert, so readings/s = rate × meters / alert meters (the
    // other meters' readings are the background a real fleet sends too).
    let readings_per_sec = rate as f64 * args.meters as f64 / args.alert_meters as f64;
    println!("{readings_per_sec:.0} readings/s, {rate} of them alert events");
    let generator = tokio::task::spawn_blocking(move || -> anyhow::Result<Generator> {
        generator.produce_at_rate(&rate_log, readings_per_sec, duration)?;
        Ok(generator)
    })
    .await??;
    wait_applied(&meters, generator.n_readings, Duration::from_secs(60)).await?;
    let last_seq = hub.last_seq();
    tokio::time::sleep(Duration::from_secs(3)).await;
    writeln!(child_stdin, "stop")?;
    drop(child_stdin);
    let result = loop {
        let line = tokio::time::timeout(Duration::from_secs(60), lines.recv())
            .await
            .context("the browser did not report in time")?
            .context("the browser exited without its result")?;
        if line.starts_with("result") {
            break line;
        }
    };
    let probe_samples = probe.stop()?;
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "the browser script failed: {status}");

    let published = hub
        .events_after(first_seq - 1)
        .map_err(|gap| anyhow::anyhow!("the replay ring lost the benchmark's events: {gap}"))?;
    let raised: std::collections::HashMap<u64, i64> = published
        .iter()
        .filter(|event| {
            event.seq <= last_seq && event.event.event == gridpulse_domain::AlertEventKind::Raised
        })
        .map(|event| (event.seq, event.published_unix_us))
        .collect();
    // Latencies (ms) of the raised events in a samples file of "seq wall_ms" lines.
    let latencies = |path: &std::path::Path| -> anyhow::Result<Vec<f64>> {
        let text = std::fs::read_to_string(path)?;
        let _ = std::fs::remove_file(path);
        Ok(text
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (seq, ms) = (fields.next()?, fields.next()?);
                let published_us = raised.get(&seq.parse().ok()?)?;
                let at_ms: i64 = ms.parse().ok()?;
                Some((at_ms * 1000 - published_us) as f64 / 1000.0)
            })
            .collect())
    };
    let mut probe_ms: Vec<f64> = probe_samples
        .iter()
        .filter_map(|(seq, at_us)| Some((at_us - raised.get(seq)?) as f64 / 1000.0))
        .collect();
    let probe_p50 = report::quantile(&mut probe_ms, 0.50).unwrap_or(f64::NAN);
    let probe_p95 = report::quantile(&mut probe_ms, 0.95).unwrap_or(f64::NAN);
    let mut latencies_ms = latencies(&samples)?;
    let mut received_ms = latencies(&samples.with_extension("txt.received"))?;
    let received_p50 = report::quantile(&mut received_ms, 0.50).unwrap_or(f64::NAN);
    let received_p95 = report::quantile(&mut received_ms, 0.95).unwrap_or(f64::NAN);
    let shown = latencies_ms.len();
    let p50 = report::quantile(&mut latencies_ms, 0.50).unwrap_or(f64::NAN);
    let p95 = report::quantile(&mut latencies_ms, 0.95).unwrap_or(f64::NAN);
    let p99 = report::quantile(&mut latencies_ms, 0.99).unwrap_or(f64::NAN);
    let field = |key: &str| -> String {
        result
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .unwrap_or("?")
            .to_owned()
    };
    println!(
        "alert raised → frame received by a plain websocket client: p50 {probe_p50:.1} ms, p95 {probe_p95:.1} ms"
    );
    println!(
        "alert raised → frame received by the page: p50 {received_p50:.0} ms, p95 {received_p95:.0} ms"
    );
    println!(
        "alert raised → row shown: {shown} of {} raised alerts seen in the feed; p50 {p50:.0} ms, p95 {p95:.0} ms, p99 {p99:.0} ms; renderer main thread busy {} ms/s (script {} ms/s, layout {} ms/s, style {} ms/s); a 50 ms timer fires late by p95 {} ms, at most {} ms",
        raised.len(),
        field("task_ms_per_s"),
        field("script_ms_per_s"),
        field("layout_ms_per_s"),
        field("style_ms_per_s"),
        field("timer_lag_p95_ms"),
        field("timer_lag_max_ms"),
    );
    server.stop(false).await;
    report::print_key_values(&[
        ("mode", "dashboard".into()),
        ("cores", cores.to_string()),
        ("meters", args.meters.to_string()),
        ("rate_per_sec", rate.to_string()),
        ("raised", raised.len().to_string()),
        ("rows_shown", shown.to_string()),
        ("p50_ms", format!("{p50:.1}")),
        ("p95_ms", format!("{p95:.1}")),
        ("p99_ms", format!("{p99:.1}")),
        ("probe_p50_ms", format!("{probe_p50:.1}")),
        ("probe_p95_ms", format!("{probe_p95:.1}")),
        ("received_p50_ms", format!("{received_p50:.1}")),
        ("received_p95_ms", format!("{received_p95:.1}")),
        ("main_thread_busy_ms_per_s", field("task_ms_per_s")),
        ("script_ms_per_s", field("script_ms_per_s")),
        ("layout_ms_per_s", field("layout_ms_per_s")),
        ("timer_lag_p95_ms", field("timer_lag_p95_ms")),
        ("timer_lag_max_ms", field("timer_lag_max_ms")),
        ("page_errors", field("page_errors")),
    ]);
    Ok(())
}

/// A plain websocket client (its own thread and runtime) subscribed like the page.
struct Probe {
    stop: tokio::sync::oneshot::Sender<()>,
    thread: std::thread::JoinHandle<anyhow::Result<Vec<(u64, i64)>>>,
}

impl Probe {
    fn start(addr: std::net::SocketAddr) -> anyhow::Result<Probe> {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let thread = std::thread::spawn(move || -> anyhow::Result<Vec<(u64, i64)>> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let connected = async {
                    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
                        "ws://{addr}/ws/alerts?deferred=true"
                    ))
                    .await?;
                    let subscribe =
                        r#"{"type":"subscribe","snapshot":true,"filters":{"types":["alert"]}}"#;
                    ws.send(Message::Text(subscribe.into())).await?;
                    loop {
                        match ws.next().await {
                            Some(Ok(Message::Text(text)))
                                if text.starts_with(r#"{"type":"subscribed""#) =>
                            {
                                return anyhow::Ok(ws);
                            }
                            Some(Ok(_)) => {}
                            Some(Err(error)) => return Err(error.into()),
                            None => anyhow::bail!("the server closed the probe"),
                        }
                    }
                };
                let mut ws = match connected.await {
                    Ok(ws) => {
                        let _ = ready_tx.send(Ok(()));
                        ws
                    }
                    Err(error) => {
                        let message = format!("{error:#}");
                        let _ = ready_tx.send(Err(error));
                        anyhow::bail!("probe: {message}");
                    }
                };
                let mut deliveries = Vec::new();
                loop {
                    tokio::select! {
                        message = ws.next() => match message {
                            Some(Ok(Message::Text(text))) => {
                                if let Some(seq) = crate::ws_fanout::alert_seq(&text) {
                                    deliveries.push((seq, gridpulse_actors::stream::unix_now_us()));
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(error)) => anyhow::bail!("probe: {error}"),
                            None => anyhow::bail!("the server closed the probe"),
                        },
                        _ = &mut stopped => return Ok(deliveries),
                    }
                }
            })
        });
        ready_rx
            .recv_timeout(Duration::from_secs(30))
            .context("the probe did not connect in time")??;
        Ok(Probe { stop, thread })
    }

    fn stop(self) -> anyhow::Result<Vec<(u64, i64)>> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?
    }
}
