//! `ws-fanout` mode: alert fan-out latency to many websocket clients.
//!
//! The embedded system runs in this process; the client fleet (`--clients`, default
//! 10,000 tokio-tungstenite connections) runs in a child process (`ws-fanout-clients`),
//! because one process may not hold 20,000 sockets here (`ulimit -n` is 20,000). The
//! clients subscribe with `subscribe` messages spread over filters: everything, per-meter
//! subsets, kinds with a meter subset, `min_severity`, user events only (no alerts), one
//! meter with a snapshot. Then `--meters` meters alternate over-voltage and normal
//! readings through the in-process log at `--rate` readings/s for `--duration`; every
//! reading raises or resolves an alert. Latency of each delivery = the client's receive
//! time − the time the hub numbered the event (both wall clock, one machine). The server
//! and the client fleet share this machine's cores; the figures say how many.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use gridpulse_api::{EmbeddedConfig, EmbeddedSystem};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::embedded::{Accepted, Generator, wait_applied};
use crate::payloads::Fleet;
use crate::report::{self, parse_duration};

/// Options of the fan-out benchmark.
#[derive(Debug, Args)]
pub struct WsFanoutArgs {
    /// Websocket clients.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Meters that raise and resolve alerts.
    #[arg(long, default_value_t = 1_000)]
    meters: usize,
    /// Alert events created per second (each reading raises or resolves one).
    #[arg(long, default_value_t = 50)]
    rate: u64,
    /// How long alerts are created (e.g. 20s).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// HTTP worker threads of the server (websocket connections are spread over them;
    /// 2 measured p99 29 ms against 99 ms with 1).
    #[arg(long, default_value_t = 2)]
    http_workers: usize,
    /// Threads of the client fleet's runtime.
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
}

/// Options of the client fleet (the child process).
#[derive(Debug, Args)]
pub struct ClientsArgs {
    /// The server.
    #[arg(long)]
    addr: std::net::SocketAddr,
    /// Clients to open.
    #[arg(long)]
    clients: usize,
    /// Meters the server's alerts come from (for the filters).
    #[arg(long)]
    meters: usize,
    /// Where to write the deliveries (seq u64, receive time Unix µs i64, little endian).
    #[arg(long)]
    samples: std::path::PathBuf,
    /// Runtime threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// How long the fleet may take to connect.
const CONNECT_LIMIT: Duration = Duration::from_secs(300);
/// Connections opened at once while connecting.
const CONNECT_CONCURRENCY: usize = 256;

/// Runs the benchmark and prints its figures.
pub fn run(args: WsFanoutArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.clients > 0 && args.meters > 0 && args.rate > 0,
        "--clients, --meters and --rate must be at least 1"
    );
    let cores = report::cores();
    println!(
        "ws-fanout benchmark: {} clients, {} meters, {} alert events/s for {:?}, {} cores shared by the server and the client fleet",
        args.clients, args.meters, args.rate, args.duration, cores
    );
    actix_web::rt::System::new().block_on(run_in_system(args, cores))
}

async fn run_in_system(args: WsFanoutArgs, cores: usize) -> anyhow::Result<()> {
    let mut config = EmbeddedConfig {
        n_partitions: 2,
        n_workers: 1,
        n_http_workers: args.http_workers,
        ..EmbeddedConfig::default()
    };
    // The run is longer than the no-data timeout; silence is not what is measured.
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
    let fanout = Arc::clone(&system.state.fanout);

    // Round 0 (normal readings, no alert) so that every meter exists.
    let now_ms = gridpulse_actors::Clock::now_ms(&gridpulse_actors::SystemClock);
    let accepted: Accepted = Arc::default();
    let mut generator = Generator::new(Fleet::new(args.meters), args.meters, 256, now_ms, accepted);
    let prime_log = Arc::clone(&log);
    let n_meters = args.meters as u64;
    let mut generator = tokio::task::spawn_blocking(move || -> anyhow::Result<Generator> {
        generator.produce(&prime_log, n_meters)?;
        generator.flush(&prime_log)?;
        Ok(generator)
    })
    .await??;
    wait_applied(&meters, n_meters, Duration::from_secs(60)).await?;

    // The client fleet.
    let samples =
        std::env::temp_dir().join(format!("gridpulse-ws-fanout-{}.bin", std::process::id()));
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "ws-fanout-clients",
            "--addr",
            &addr.to_string(),
            "--clients",
            &args.clients.to_string(),
            "--meters",
            &args.meters.to_string(),
            "--threads",
            &args.client_threads.to_string(),
            "--samples",
        ])
        .arg(&samples)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the client fleet")?;
    let mut child_stdin = child.stdin.take().context("fleet stdin")?;
    let child_stdout = child.stdout.take().context("fleet stdout")?;
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(child_stdout).lines().map_while(Result::ok) {
            println!("  fleet: {line}");
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    let connect_started = Instant::now();
    let ready = loop {
        let line = tokio::time::timeout(CONNECT_LIMIT, lines.recv())
            .await
            .context("the fleet did not connect in time")?
            .context("the fleet exited before it was ready")?;
        if line.starts_with("ready") {
            break line;
        }
    };
    let connect_s = connect_started.elapsed().as_secs_f64();
    println!("fleet ready after {connect_s:.1} s: {ready}");
    let rss_connected = report::resident_bytes().unwrap_or(0);

    // Alert events at a fixed rate.
    let first_seq = hub.last_seq() + 1;
    let rate_log = Arc::clone(&log);
    let (rate, duration) = (args.rate, args.duration);
    generator.batch_size = (rate / 200).clamp(1, 256) as usize;
    let generator = tokio::task::spawn_blocking(move || -> anyhow::Result<Generator> {
        generator.produce_at_rate(&rate_log, rate as f64, duration)?;
        Ok(generator)
    })
    .await??;
    wait_applied(&meters, generator.n_readings, Duration::from_secs(60)).await?;
    let last_seq = hub.last_seq();
    // Let the last deliveries arrive, then stop the fleet.
    tokio::time::sleep(Duration::from_secs(3)).await;
    writeln!(child_stdin, "stop")?;
    drop(child_stdin);
    let summary = loop {
        let line = tokio::time::timeout(Duration::from_secs(120), lines.recv())
            .await
            .context("the fleet did not stop in time")?
            .context("the fleet exited without its summary")?;
        if line.starts_with("summary") {
            break line;
        }
    };
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "the client fleet failed: {status}");

    // Latency of every delivery from the event's publication.
    let published = hub
        .events_after(first_seq - 1)
        .map_err(|gap| anyhow::anyhow!("the replay ring lost the benchmark's events: {gap}"))?;
    let published_us: std::collections::HashMap<u64, i64> = published
        .iter()
        .filter(|event| event.seq <= last_seq)
        .map(|event| (event.seq, event.published_unix_us))
        .collect();
    let mut bytes = Vec::new();
    std::fs::File::open(&samples)?.read_to_end(&mut bytes)?;
    let _ = std::fs::remove_file(&samples);
    let mut latencies_ms = Vec::with_capacity(bytes.len() / 16);
    for record in bytes.chunks_exact(16) {
        let seq = u64::from_le_bytes(record[..8].try_into()?);
        let received_us = i64::from_le_bytes(record[8..].try_into()?);
        if let Some(published) = published_us.get(&seq) {
            latencies_ms.push((received_us - published) as f64 / 1000.0);
        }
    }
    let deliveries = latencies_ms.len();
    let p50 = report::quantile(&mut latencies_ms, 0.50).unwrap_or(f64::NAN);
    let p99 = report::quantile(&mut latencies_ms, 0.99).unwrap_or(f64::NAN);
    let p999 = report::quantile(&mut latencies_ms, 0.999).unwrap_or(f64::NAN);
    let max = latencies_ms.last().copied().unwrap_or(f64::NAN);
    let alerts = published_us.len();
    let field = |key: &str| -> String {
        summary
            .split_whitespace()
            .find_map(|pair| pair.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .unwrap_or("?")
            .to_owned()
    };
    println!(
        "fan-out: {alerts} alert events to {} clients = {deliveries} deliveries; latency from publication p50 {p50:.2} ms, p99 {p99:.2} ms, p99.9 {p999:.2} ms, max {max:.2} ms",
        args.clients
    );
    println!(
        "server resident memory with the fleet connected: {:.1} MiB; clients closed for overflow: {}",
        rss_connected as f64 / 1048576.0,
        fanout.n_overflowed()
    );
    server.stop(false).await;
    report::print_key_values(&[
        ("mode", "ws-fanout".into()),
        ("cores", cores.to_string()),
        (
            "shared_cores",
            "server and client fleet on the same cores".replace(' ', "_"),
        ),
        ("clients", args.clients.to_string()),
        ("clients_connected", field("connected")),
        ("connect_s", format!("{connect_s:.1}")),
        ("http_workers", args.http_workers.to_string()),
        ("rate_per_sec", rate.to_string()),
        ("alerts", alerts.to_string()),
        ("deliveries", deliveries.to_string()),
        ("p50_ms", format!("{p50:.3}")),
        ("p99_ms", format!("{p99:.3}")),
        ("p999_ms", format!("{p999:.3}")),
        ("max_ms", format!("{max:.3}")),
        ("dropped_clients", fanout.n_overflowed().to_string()),
        ("closed_clients", field("closed")),
        (
            "server_rss_mib",
            format!("{:.1}", rss_connected as f64 / 1048576.0),
        ),
    ]);
    Ok(())
}

/// The filters of client `index` (a spread: 5 % everything, 5 % critical only, 40 %
/// ten meters, 20 % over-voltage of a hundred meters, 10 % user events only, 10 % one
/// meter with a snapshot, 10 % two hundred meters).
fn subscription(index: usize, fleet: &Fleet) -> serde_json::Value {
    let mut random = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut next_meter = || {
        random ^= random << 13;
        random ^= random >> 7;
        random ^= random << 17;
        fleet.id((random % fleet.len() as u64) as usize).to_owned()
    };
    let mut meters = |n: usize| -> Vec<String> { (0..n).map(|_| next_meter()).collect() };
    match index % 20 {
        0 => serde_json::json!({"type": "subscribe"}),
        1 => serde_json::json!({"type": "subscribe", "filters": {"min_severity": "critical"}}),
        2..=9 => serde_json::json!({"type": "subscribe", "filters": {"meters": meters(10)}}),
        10..=13 => serde_json::json!({"type": "subscribe",
            "filters": {"meters": meters(100), "kinds": ["over_voltage"]}}),
        14 | 15 => {
            serde_json::json!({"type": "subscribe", "filters": {"types": ["budget", "credit"]}})
        }
        16 | 17 => {
            serde_json::json!({"type": "subscribe", "snapshot": true, "filters": {"meters": meters(1)}})
        }
        _ => serde_json::json!({"type": "subscribe", "filters": {"meters": meters(200)}}),
    }
}

/// The child process: opens the clients, says `ready`, records every alert delivery
/// until `stop` on stdin (or its own time limit), writes the samples, says `summary`.
pub fn run_clients(args: ClientsArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(clients(args))
}

async fn clients(args: ClientsArgs) -> anyhow::Result<()> {
    let fleet = Arc::new(Fleet::new(args.meters));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let n_connected = Arc::new(AtomicU64::new(0));
    let n_failed = Arc::new(AtomicU64::new(0));
    let n_closed = Arc::new(AtomicU64::new(0));
    let (samples_tx, mut samples_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<(u64, i64)>>();
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let permits = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
    for index in 0..args.clients {
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let (fleet, mut stop, samples_tx, ready_tx) = (
            Arc::clone(&fleet),
            stop_rx.clone(),
            samples_tx.clone(),
            ready_tx.clone(),
        );
        let n_closed = Arc::clone(&n_closed);
        let addr = args.addr;
        tokio::spawn(async move {
            let connected = tokio::time::timeout(Duration::from_secs(60), async {
                // Small buffers: tungstenite's default 128 KiB read buffer, allocated and
                // zeroed per connection, made the fleet itself the bottleneck on cores
                // it shares with the server (memset was its top symbol in `perf`).
                let config = WebSocketConfig::default()
                    .read_buffer_size(4096)
                    .write_buffer_size(0);
                let (mut ws, _) = tokio_tungstenite::connect_async_with_config(
                    format!("ws://{addr}/ws/alerts?deferred=true"),
                    Some(config),
                    true,
                )
                .await
                .ok()?;
                ws.send(Message::Text(
                    subscription(index, &fleet).to_string().into(),
                ))
                .await
                .ok()?;
                // Up to the `subscribed` answer (the snapshot, if any, follows).
                loop {
                    match ws.next().await? {
                        Ok(Message::Text(text)) if text.starts_with(r#"{"type":"subscribed""#) => {
                            return Some(ws);
                        }
                        Ok(Message::Text(_)) | Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
                        _ => return None,
                    }
                }
            })
            .await
            .ok()
            .flatten();
            drop(permit);
            let Some(mut ws) = connected else {
                let _ = ready_tx.send(false);
                return;
            };
            let _ = ready_tx.send(true);
            let mut deliveries: Vec<(u64, i64)> = Vec::new();
            while !*stop.borrow_and_update() {
                tokio::select! {
                    message = ws.next() => match message {
                        Some(Ok(Message::Text(text))) => {
                            if let Some(seq) = alert_seq(&text) {
                                deliveries.push((seq, gridpulse_actors::stream::unix_now_us()));
                            }
                        }
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                            n_closed.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Some(Ok(_)) => {}
                    },
                    _ = stop.changed() => break,
                }
            }
            let _ = samples_tx.send(deliveries);
        });
    }
    drop(samples_tx);
    drop(ready_tx);
    let deadline = tokio::time::Instant::now() + CONNECT_LIMIT;
    for _ in 0..args.clients {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(true)) => {
                n_connected.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Some(false)) => {
                n_failed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(None) | Err(_) => break,
        }
    }
    println!(
        "ready connected={} failed={}",
        n_connected.load(Ordering::Relaxed),
        n_failed.load(Ordering::Relaxed)
    );
    std::io::stdout().flush()?;
    // Wait for `stop` (or the parent's end), at most an hour.
    let stdin_closed = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    });
    let _ = tokio::time::timeout(Duration::from_secs(3600), stdin_closed).await;
    let _ = stop_tx.send(true);
    drop(stop_rx);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&args.samples)?);
    let mut n_samples = 0_u64;
    let collect_deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Ok(Some(deliveries)) =
        tokio::time::timeout_at(collect_deadline, samples_rx.recv()).await
    {
        for (seq, received_us) in deliveries {
            file.write_all(&seq.to_le_bytes())?;
            file.write_all(&received_us.to_le_bytes())?;
            n_samples += 1;
        }
    }
    file.flush()?;
    println!(
        "summary connected={} failed={} closed={} deliveries={n_samples}",
        n_connected.load(Ordering::Relaxed),
        n_failed.load(Ordering::Relaxed),
        n_closed.load(Ordering::Relaxed),
    );
    std::io::stdout().flush()?;
    Ok(())
}

/// The `seq` of an `alert` frame, read without parsing the whole JSON.
pub(crate) fn alert_seq(text: &str) -> Option<u64> {
    let rest = text.strip_prefix(r#"{"type":"alert","seq":"#)?;
    let end = rest.find(|c: char| !c.is_ascii_digit())?;
    rest[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_frames_give_their_seq() {
        assert_eq!(
            alert_seq(r#"{"type":"alert","seq":42,"event":"raised"}"#),
            Some(42)
        );
        assert_eq!(alert_seq(r#"{"type":"snapshot","seq":42}"#), None);
    }
}
