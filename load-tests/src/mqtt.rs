//! `load-tests mqtt`: readings/s from Mosquitto through the bridge into the reading log
//! (QoS 1, a PUBACK only after the durable append), against Mosquitto's own rate for
//! the same publisher and messages to a plain subscriber that only acknowledges,
//! measured in the same run on the same broker (started here on loopback).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use gridpulse_actors::{Clock, SystemClock};
use gridpulse_domain::Limits;
use gridpulse_ingest::dead_letter::DeadLetterSink;
use gridpulse_ingest::mqtt::test_broker::TestMosquitto;
use gridpulse_ingest::mqtt::{MqttBridge, MqttBridgeConfig};
use gridpulse_ingest::{InProcessLog, ReadingLog};
use gridpulse_store::journal::{Journal, JournalOptions};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use crate::report::{cores, parse_duration, print_key_values};

/// Options of the MQTT benchmark.
#[derive(Debug, Args)]
pub struct MqttArgs {
    /// Messages published in each phase (baseline, then bridge).
    #[arg(long, default_value_t = 100_000)]
    messages: u64,
    /// Readings per message (more than 1: batch arrays, the offline-buffer shape).
    #[arg(long, default_value_t = 1)]
    readings_per_message: u64,
    /// Meters the messages are spread over.
    #[arg(long, default_value_t = 1_000)]
    meters: u64,
    /// Partitions of the log.
    #[arg(long, default_value_t = 8)]
    partitions: u32,
    /// Do not fsync the journal (the page cache only; fsync is on by default, as in
    /// `gridpulse run`).
    #[arg(long)]
    no_sync: bool,
    /// Longest a phase may take (e.g. 60s).
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    timeout: Duration,
}

fn payload(meter: u64, ts_ms: i64, n: u64) -> Vec<u8> {
    let one = |idx: u64| {
        let ts = ts_ms + idx as i64;
        format!(
            r#"{{"meter":"bench-{meter}","ts_ms":{ts},"voltage":230.0,"current":2.0,"power_w":440.0,"energy_wh":{}}}"#,
            (ts % 100_000_000) as f64 / 1000.0
        )
    };
    if n <= 1 {
        one(0).into_bytes()
    } else {
        format!("[{}]", (0..n).map(one).collect::<Vec<_>>().join(",")).into_bytes()
    }
}

/// A publisher on its own connection; counts its PUBACKs.
fn publisher(port: u16, id: &str) -> (AsyncClient, Arc<AtomicU64>) {
    let mut options = MqttOptions::new(id, "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(1000)
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut event_loop) = AsyncClient::new(options, 10_000);
    let acked = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&acked);
    tokio::spawn(async move {
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    (client, acked)
}

/// Publishes `n` messages (QoS 1), timestamps starting at `ts0`.
async fn publish_all(client: &AsyncClient, args: &MqttArgs, ts0: i64) -> anyhow::Result<()> {
    for idx in 0..args.messages {
        let meter = idx % args.meters;
        let ts_ms = ts0 + (idx / args.meters) as i64 * 1000;
        client
            .publish(
                format!("gridpulse/meters/bench-{meter}/readings"),
                QoS::AtLeastOnce,
                false,
                payload(meter, ts_ms, args.readings_per_message),
            )
            .await?;
    }
    Ok(())
}

async fn wait_until(timeout: Duration, what: &str, done: impl Fn() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            anyhow::bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(())
}

/// Mosquitto alone: the same publisher and messages to a subscriber that only acks.
async fn baseline(port: u16, args: &MqttArgs, ts0: i64) -> anyhow::Result<f64> {
    let mut options = MqttOptions::new("bench-baseline-sub", "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (subscriber, mut event_loop) = AsyncClient::new(options, 10_000);
    let received = Arc::new(AtomicU64::new(0));
    let subscribed = Arc::new(AtomicU64::new(0));
    let (count, suback) = (Arc::clone(&received), Arc::clone(&subscribed));
    let task = tokio::spawn(async move {
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    count.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    suback.store(1, Ordering::Relaxed);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    });
    subscriber
        .subscribe("gridpulse/meters/+/readings", QoS::AtLeastOnce)
        .await?;
    wait_until(Duration::from_secs(10), "the baseline SUBACK", || {
        subscribed.load(Ordering::Relaxed) == 1
    })
    .await?;
    let (client, _acked) = publisher(port, "bench-publisher-baseline");
    let started = Instant::now();
    publish_all(&client, args, ts0).await?;
    wait_until(args.timeout, "the baseline subscriber", || {
        received.load(Ordering::Relaxed) >= args.messages
    })
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    let _ = subscriber.unsubscribe("gridpulse/meters/+/readings").await;
    let _ = subscriber.disconnect().await;
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    task.abort();
    Ok(args.messages as f64 / elapsed)
}

/// Runs the benchmark.
pub fn run(args: MqttArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_async(args))
}

async fn run_async(args: MqttArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.messages > 0 && args.meters > 0,
        "--messages and --meters must be > 0"
    );
    anyhow::ensure!(
        (1..=1000).contains(&args.readings_per_message),
        "--readings-per-message must be 1 to 1000"
    );
    let broker = TestMosquitto::start().map_err(anyhow::Error::msg)?;
    let port = broker.addr().port();
    // Timestamps in the last day: every phase's readings are valid and distinct.
    let ts0 = SystemClock.now_ms() - 86_400_000;
    println!(
        "mqtt: {} messages x {} readings over {} meters, QoS 1, Mosquitto on 127.0.0.1:{port}",
        args.messages, args.readings_per_message, args.meters
    );
    let baseline_msgs_per_s = baseline(port, &args, ts0).await?;
    println!(
        "mosquitto alone (publisher -> ack-only subscriber): {baseline_msgs_per_s:.0} messages/s"
    );

    let dir = std::env::temp_dir().join(format!("gridpulse-bench-mqtt-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let journal = Journal::open(
        &dir.join("journal"),
        args.partitions,
        JournalOptions {
            sync: !args.no_sync,
            ..JournalOptions::default()
        },
    )?;
    let capacity = (args.messages * args.readings_per_message) as usize + 1;
    let log = InProcessLog::open_durable(Arc::new(journal), capacity);
    let bridge = MqttBridge::start(
        &MqttBridgeConfig::new("127.0.0.1", port),
        ReadingLog::InProcess(Arc::clone(&log)),
        DeadLetterSink::LogOnly,
        Limits::default(),
        Arc::new(SystemClock),
    )
    .map_err(anyhow::Error::msg)?;
    let status = bridge.status().clone();
    wait_until(Duration::from_secs(10), "the bridge to connect", || {
        status.is_connected()
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (client, acked) = publisher(port, "bench-publisher-bridge");
    let n_readings = args.messages * args.readings_per_message;
    let started = Instant::now();
    publish_all(&client, &args, ts0 + 1).await?;
    wait_until(args.timeout, "the bridge", || {
        status.readings_accepted() >= n_readings
    })
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    wait_until(Duration::from_secs(10), "the publisher's acks", || {
        acked.load(Ordering::Relaxed) >= args.messages
    })
    .await?;
    let bridge_msgs_per_s = args.messages as f64 / elapsed;
    let bridge_readings_per_s = n_readings as f64 / elapsed;
    println!(
        "bridge (publisher -> mosquitto -> bridge -> journal{}, ack after append): {bridge_msgs_per_s:.0} messages/s, {bridge_readings_per_s:.0} readings/s",
        if args.no_sync { "" } else { " fsync" }
    );
    let dead_letters = status.dead_letters();
    bridge.shutdown().await;
    let _ = client.disconnect().await;
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
    print_key_values(&[
        ("mode", "mqtt".into()),
        ("cores", cores().to_string()),
        ("messages", args.messages.to_string()),
        (
            "readings_per_message",
            args.readings_per_message.to_string(),
        ),
        ("journal_sync", (!args.no_sync).to_string()),
        ("mosquitto_msgs_per_s", format!("{baseline_msgs_per_s:.0}")),
        ("bridge_msgs_per_s", format!("{bridge_msgs_per_s:.0}")),
        (
            "bridge_readings_per_s",
            format!("{bridge_readings_per_s:.0}"),
        ),
        (
            "ratio_to_mosquitto",
            format!("{:.3}", bridge_msgs_per_s / baseline_msgs_per_s),
        ),
        ("dead_letters", dead_letters.to_string()),
    ]);
    Ok(())
}
