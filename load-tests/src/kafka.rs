//! `kafka` mode: the processor against a real Kafka-protocol broker.
//!
//! Preloads `--readings` canonical readings into `readings` (produced by gridpulse's own
//! producer), then measures, on the same broker and partitions: a plain rdkafka consumer
//! that does nothing with the records (`raw_consume_per_sec`), and the embedded system
//! consuming them as a processor — decode, validate, route, meter actors, alert
//! evaluation — until every reading is applied (`readings_per_sec`). Both clocks start
//! at the first record received, so the consumer-group join is not counted. Starts its
//! own tansu on loopback unless `--brokers` is given.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use gridpulse_api::{EmbeddedConfig, EmbeddedSystem};
use gridpulse_domain::{MeterId, Reading};
use gridpulse_ingest::kafka::KafkaConfig;
use gridpulse_ingest::kafka::admin::create_topics;
use gridpulse_ingest::kafka::producer::KafkaReadingProducer;
use gridpulse_ingest::kafka::test_broker::TestBroker;
use rdkafka::consumer::{Consumer, StreamConsumer};

use crate::report;

/// Options of the Kafka benchmark.
#[derive(Debug, Args)]
pub struct KafkaArgs {
    /// Readings preloaded and consumed.
    #[arg(long, default_value_t = 2_000_000)]
    readings: u64,
    /// Meters they belong to.
    #[arg(long, default_value_t = 100_000)]
    meters: usize,
    /// Partitions of the readings topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Actor worker threads of the processor (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Use this broker instead of starting tansu on loopback.
    #[arg(long)]
    brokers: Option<String>,
    /// Length of the latency phase, seconds (readings at half the measured processor
    /// rate, with threshold crossings; 0 skips it).
    #[arg(long, default_value_t = 10)]
    latency_secs: u64,
    /// Readings/s of the latency phase (default: half the measured processor rate).
    #[arg(long)]
    latency_rate: Option<u64>,
    /// Extra librdkafka settings for every client (`key=value`, repeatable).
    #[arg(long = "kafka-set", value_name = "KEY=VALUE")]
    kafka_set: Vec<String>,
}

/// Runs the benchmark and prints its figures.
pub fn run(args: KafkaArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.readings > 0 && args.meters > 0,
        "--readings and --meters must be at least 1"
    );
    let cores = report::cores();
    let broker = match &args.brokers {
        Some(_) => None,
        None => Some(TestBroker::start().map_err(anyhow::Error::msg)?),
    };
    let brokers = args
        .brokers
        .clone()
        .or_else(|| broker.as_ref().map(TestBroker::bootstrap))
        .context("no broker")?;
    println!(
        "kafka benchmark: {} readings of {} meters over {} partitions on {brokers}, {cores} cores",
        args.readings, args.meters, args.partitions
    );
    actix_web::rt::System::new().block_on(run_in_system(args, brokers, cores))
}

async fn run_in_system(args: KafkaArgs, brokers: String, cores: usize) -> anyhow::Result<()> {
    let mut config = KafkaConfig::new(brokers);
    config.partitions = args.partitions;
    config.overrides = KafkaConfig::parse_overrides(&args.kafka_set).map_err(anyhow::Error::msg)?;
    create_topics(&config).await.map_err(anyhow::Error::msg)?;

    // Preload.
    let producer = KafkaReadingProducer::new(&config).map_err(anyhow::Error::msg)?;
    let ids: Vec<MeterId> = (0..args.meters)
        .map(|idx| MeterId::new(&format!("kb-{idx:07}")))
        .collect::<Result<_, _>>()?;
    let base_ms = gridpulse_actors::Clock::now_ms(&gridpulse_actors::SystemClock) - 12 * 3_600_000;
    let produce_start = Instant::now();
    let mut produced = 0u64;
    let mut batch = Vec::with_capacity(10_000);
    while produced < args.readings {
        let idx = (produced % args.meters as u64) as usize;
        let round = produced / args.meters as u64;
        batch.push(Reading {
            meter: ids[idx],
            ts_ms: base_ms + round as i64 * 5_000,
            voltage: if idx.is_multiple_of(100) && round % 2 == 1 {
                262.0
            } else {
                231.0
            },
            current: 2.0,
            power_w: 420.0,
            energy_wh: 1_000.0 + round as f64 * 0.6,
            credit: None,
            seq: Some(round),
            backfill: false,
        });
        produced += 1;
        if batch.len() == batch.capacity() || produced == args.readings {
            producer.append(&batch).await?;
            batch.clear();
        }
    }
    let produce_per_sec = produced as f64 / produce_start.elapsed().as_secs_f64();
    println!("produced {produced} readings at {produce_per_sec:.0} readings/s");

    // Raw consume: a consumer that does nothing.
    let raw: StreamConsumer = config
        .client()
        .set("group.id", "bench-raw")
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .set("max.poll.interval.ms", "6000")
        .create()?;
    raw.subscribe(&[&config.readings_topic])?;
    let mut first = None;
    let mut n_raw = 0u64;
    while n_raw < produced {
        let message = tokio::time::timeout(Duration::from_secs(60), raw.recv())
            .await
            .context("raw consumer stalled")??;
        first.get_or_insert_with(Instant::now);
        std::hint::black_box(rdkafka::Message::payload(&message));
        n_raw += 1;
    }
    let raw_per_sec = n_raw as f64 / first.map_or(f64::NAN, |t| t.elapsed().as_secs_f64());
    drop(raw);
    println!("raw consume: {raw_per_sec:.0} records/s");

    // The processor: the embedded system consuming the same topic in a fresh group.
    config.group_id = "bench-processor".into();
    let system = EmbeddedSystem::start_default_clock(
        EmbeddedConfig {
            n_http_workers: 1,
            n_workers: args.workers,
            kafka: Some(config),
            ..EmbeddedConfig::default()
        },
        TcpListener::bind("127.0.0.1:0")?,
    )
    .await?;
    let server = system.server.handle();
    let addr = system.local_addr;
    actix_web::rt::spawn(system.server);
    let meters = system.state.meters.clone();
    let deadline = Instant::now() + Duration::from_secs(600);
    while meters.n_applied() == 0 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the processor never received a record"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let start = Instant::now();
    while meters.n_applied() < produced {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {produced} readings applied",
            meters.n_applied()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let processor_per_sec = produced as f64 / start.elapsed().as_secs_f64();
    let ratio = processor_per_sec / raw_per_sec;
    println!(
        "processor: {processor_per_sec:.0} readings/s = {:.0} % of the raw consume rate",
        ratio * 100.0
    );

    // Latency: half the processor's rate, produced through Kafka, alerts on websockets.
    let latency_rate = args
        .latency_rate
        .unwrap_or((processor_per_sec / 2.0).max(1.0) as u64);
    let latency = if args.latency_secs > 0 {
        Some(
            latency_phase(
                &producer,
                addr,
                &meters,
                latency_rate,
                Duration::from_secs(args.latency_secs),
            )
            .await?,
        )
    } else {
        None
    };
    server.stop(false).await;
    report::print_key_values(&[
        ("mode", "kafka".into()),
        ("readings", produced.to_string()),
        ("produce_per_sec", format!("{produce_per_sec:.0}")),
        ("raw_consume_per_sec", format!("{raw_per_sec:.0}")),
        ("readings_per_sec", format!("{processor_per_sec:.0}")),
        ("ratio", format!("{ratio:.3}")),
        ("latency_rate", latency_rate.to_string()),
        (
            "alerts_measured",
            latency.map_or(0, |l| l.n_alerts).to_string(),
        ),
        (
            "alert_p50_ms",
            format!("{:.3}", latency.map_or(f64::NAN, |l| l.p50_ms)),
        ),
        (
            "alert_p99_ms",
            format!("{:.3}", latency.map_or(f64::NAN, |l| l.p99_ms)),
        ),
        ("cores", cores.to_string()),
    ]);
    Ok(())
}

/// Alert latency figures.
#[derive(Debug, Clone, Copy)]
struct Latency {
    n_alerts: usize,
    p50_ms: f64,
    p99_ms: f64,
}

/// Meters of the latency phase, and how many of them cross the voltage limit.
const LATENCY_METERS: usize = 10_000;
const ALERT_EVERY: usize = 100;

/// Produces readings at `rate` for `duration` (one round of `LATENCY_METERS` meters
/// every `1/rounds_per_sec`; every `ALERT_EVERY`th meter alternates between over-voltage
/// and normal, so it raises an alert every other round) and measures, for every
/// `raised` event on the processor's websocket, the time from the start of producing
/// its reading to the event's arrival.
async fn latency_phase(
    producer: &KafkaReadingProducer,
    addr: std::net::SocketAddr,
    meters: &gridpulse_actors::MeterSystem,
    rate: u64,
    duration: Duration,
) -> anyhow::Result<Latency> {
    use futures_util::StreamExt;
    use std::collections::HashMap;
    use std::sync::Arc;

    let sent: Arc<parking_lot::Mutex<HashMap<(String, i64), Instant>>> = Arc::default();
    let latencies: Arc<parking_lot::Mutex<Vec<f64>>> = Arc::default();
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws/alerts?snapshot=false"))
            .await
            .context("websocket connect")?;
    {
        let (sent, latencies) = (Arc::clone(&sent), Arc::clone(&latencies));
        actix_web::rt::spawn(async move {
            while let Some(Ok(message)) = ws.next().await {
                let received = Instant::now();
                let Ok(event) = serde_json::from_slice::<serde_json::Value>(&message.into_data())
                else {
                    continue;
                };
                if event["event"] != "raised" {
                    continue;
                }
                let key = (
                    event["alert"]["meter"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    event["alert"]["first_seen_ms"].as_i64().unwrap_or_default(),
                );
                if let Some(at) = sent.lock().remove(&key) {
                    latencies
                        .lock()
                        .push(received.duration_since(at).as_secs_f64() * 1000.0);
                }
            }
        });
    }
    let ids: Vec<MeterId> = (0..LATENCY_METERS)
        .map(|idx| MeterId::new(&format!("kl-{idx:05}")))
        .collect::<Result<_, _>>()?;
    let base_ms = gridpulse_actors::Clock::now_ms(&gridpulse_actors::SystemClock) - 3_600_000;
    let applied_before = meters.n_applied();
    let start = Instant::now();
    let mut n_produced = 0u64;
    let mut appends = Vec::new();
    while start.elapsed() < duration {
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        if due <= n_produced {
            tokio::time::sleep(Duration::from_micros(500)).await;
            continue;
        }
        let now = Instant::now();
        let mut batch = Vec::with_capacity((due - n_produced) as usize);
        for n in n_produced..due {
            let idx = (n % LATENCY_METERS as u64) as usize;
            let round = n / LATENCY_METERS as u64;
            // 100 ms of event time per round: never in the future within the phase.
            let ts_ms = base_ms + round as i64 * 100;
            let alerting = idx.is_multiple_of(ALERT_EVERY) && round % 2 == 1;
            if alerting {
                sent.lock().insert((ids[idx].to_string(), ts_ms), now);
            }
            batch.push(Reading {
                meter: ids[idx],
                ts_ms,
                voltage: if alerting { 262.0 } else { 231.0 },
                current: 2.0,
                power_w: 420.0,
                energy_wh: 1_000.0 + round as f64 * 0.01,
                credit: None,
                seq: Some(round),
                backfill: false,
            });
        }
        n_produced = due;
        // Produce without waiting for the acknowledgement before the next batch.
        let producer = producer.clone();
        appends.push(tokio::spawn(async move {
            producer.append(&batch).await?;
            Ok::<f64, anyhow::Error>(now.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut acks_ms = Vec::with_capacity(appends.len());
    for append in appends {
        acks_ms.push(append.await??);
    }
    println!(
        "produce acknowledged after: p50 {:.2} ms, p99 {:.2} ms",
        report::quantile(&mut acks_ms, 0.5).unwrap_or(f64::NAN),
        report::quantile(&mut acks_ms, 0.99).unwrap_or(f64::NAN)
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    while meters.n_applied() < applied_before + n_produced {
        anyhow::ensure!(
            Instant::now() < deadline,
            "latency-phase readings not applied"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut samples = latencies.lock().clone();
    let latency = Latency {
        n_alerts: samples.len(),
        p50_ms: report::quantile(&mut samples, 0.50).unwrap_or(f64::NAN),
        p99_ms: report::quantile(&mut samples, 0.99).unwrap_or(f64::NAN),
    };
    println!(
        "alert latency through kafka at {rate} readings/s ({n_produced} readings, {} alerts): p50 {:.2} ms, p99 {:.2} ms",
        latency.n_alerts, latency.p50_ms, latency.p99_ms
    );
    Ok(latency)
}
