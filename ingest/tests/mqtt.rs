//! The MQTT bridge against a real Mosquitto (started by the test on a free loopback
//! port) and a real MQTT publisher (rumqttc): readings of both formats reach the log,
//! bad payloads reach the dead-letter file with their reason while their neighbours
//! are appended, and a bridge killed mid-stream loses nothing (persistent session, acks
//! only after the append).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gridpulse_actors::{Clock, ReadingSource, SystemClock};
use gridpulse_domain::{Limits, MeterId, Reading};
use gridpulse_ingest::dead_letter::{DeadLetterFile, DeadLetterSink};
use gridpulse_ingest::mqtt::test_broker::TestMosquitto;
use gridpulse_ingest::mqtt::{BridgeStatus, MqttBridge, MqttBridgeConfig};
use gridpulse_ingest::{InProcessLog, ReadingLog};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

fn now_ms() -> i64 {
    SystemClock.now_ms()
}

fn start_bridge(
    broker: &TestMosquitto,
    log: &Arc<InProcessLog>,
    dead_letters: DeadLetterSink,
    client_id: &str,
) -> MqttBridge {
    let mut config = MqttBridgeConfig::new("127.0.0.1", broker.addr().port());
    config.client_id = client_id.to_owned();
    config.min_backoff = Duration::from_millis(50);
    config.max_backoff = Duration::from_millis(200);
    MqttBridge::start(
        &config,
        ReadingLog::InProcess(Arc::clone(log)),
        dead_letters,
        Limits::default(),
        Arc::new(SystemClock),
    )
    .expect("bridge starts")
}

/// Waits (bounded) until `condition` holds.
async fn wait_for(what: &str, timeout: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn wait_connected(status: &BridgeStatus) {
    wait_for("the bridge to connect", Duration::from_secs(10), || {
        status.is_connected()
    })
    .await;
    // The subscriptions are queued right after the CONNACK; give the SUBACK a moment.
    tokio::time::sleep(Duration::from_millis(200)).await;
}

/// A publisher whose event loop runs in a task; `acked` counts PUBACKs it received.
fn publisher(broker: &TestMosquitto, id: &str) -> (AsyncClient, Arc<std::sync::atomic::AtomicU64>) {
    let mut options = MqttOptions::new(id, "127.0.0.1", broker.addr().port());
    options
        .set_keep_alive(Duration::from_secs(10))
        .set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut event_loop) = AsyncClient::new(options, 1024);
    let acked = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = Arc::clone(&acked);
    tokio::spawn(async move {
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    (client, acked)
}

/// Everything the log holds, read through its partitions (bounded waits).
async fn read_log(log: &Arc<InProcessLog>) -> Vec<Reading> {
    let mut readings = Vec::new();
    for partition in 0..log.n_partitions() {
        let mut reader = log.open_partition(partition, None);
        while let Ok(Ok(batch)) =
            tokio::time::timeout(Duration::from_millis(50), reader.next_batch(100_000)).await
        {
            readings.extend(batch.into_iter().map(|record| record.reading));
        }
    }
    readings
}

fn canonical(meter: &str, ts_ms: i64, voltage: f64) -> String {
    format!(
        r#"{{"meter":"{meter}","ts_ms":{ts_ms},"voltage":{voltage},"current":2.0,"power_w":400,"energy_wh":{}}}"#,
        ts_ms / 1000
    )
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gp-mqtt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_formats_single_and_batch_reach_the_log_and_bad_payloads_the_dead_letters() {
    let broker = TestMosquitto::start().expect("mosquitto starts");
    let log = InProcessLog::new(4, 1 << 16);
    let dir = temp_dir("formats");
    let letters = Arc::new(DeadLetterFile::new(&dir, 1 << 20));
    let bridge = start_bridge(
        &broker,
        &log,
        DeadLetterSink::File(Arc::clone(&letters)),
        "bridge-formats",
    );
    wait_connected(bridge.status()).await;
    let (client, acked) = publisher(&broker, "meters-formats");
    let base_s = now_ms() / 1000 - 600;
    let messages: Vec<(String, String)> = vec![
        (
            "/energy/meter-01/data".into(),
            format!(
                r#"{{"deviceId":"meter-01","voltage":231.5,"current":1.5,"power":300,"energy":12.5,"timestamp":{base_s}}}"#
            ),
        ),
        ("gridpulse/meters/m-2/readings".into(), "{not json".into()),
        (
            "gridpulse/meters/m-2/readings".into(),
            canonical("m-2", base_s * 1000 + 1000, 230.0),
        ),
        (
            // Topic and payload disagree: refused whole.
            "gridpulse/meters/m-2/readings".into(),
            canonical("m-9", base_s * 1000 + 2000, 230.0),
        ),
        (
            // The offline buffer: out of order, one bad reading among them.
            "gridpulse/meters/m-3/readings".into(),
            format!(
                "[{},{},{}]",
                canonical("m-3", base_s * 1000 + 9000, 230.0),
                canonical("m-3", base_s * 1000 + 3000, -1.0),
                canonical("m-3", base_s * 1000 + 5000, 229.0)
            ),
        ),
        ("gridpulse/meters/m-3/status".into(), "online".into()),
        ("gridpulse/meters/meter-01/status".into(), "offline".into()),
    ];
    for (topic, payload) in &messages {
        client
            .publish(
                topic.as_str(),
                QoS::AtLeastOnce,
                false,
                payload.clone().into_bytes(),
            )
            .await
            .expect("publish queued");
    }
    let n_messages = messages.len() as u64;
    wait_for("the broker's acks", Duration::from_secs(10), || {
        acked.load(std::sync::atomic::Ordering::SeqCst) == n_messages
    })
    .await;
    wait_for("the bridge's acks", Duration::from_secs(10), || {
        bridge.status().messages_acked() == n_messages
    })
    .await;

    let mut stored: Vec<(String, i64, bool, f64)> = read_log(&log)
        .await
        .into_iter()
        .map(|r| (r.meter.to_string(), r.ts_ms, r.backfill, r.energy_wh))
        .collect();
    stored.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(&b.1)));
    let base_ms = base_s * 1000;
    assert_eq!(
        stored,
        vec![
            ("m-2".to_owned(), base_ms + 1000, false, (base_s + 1) as f64),
            ("m-3".to_owned(), base_ms + 5000, true, (base_s + 5) as f64),
            ("m-3".to_owned(), base_ms + 9000, true, (base_s + 9) as f64),
            // Seed format: kWh and seconds became Wh and milliseconds.
            ("meter-01".to_owned(), base_ms, false, 12_500.0),
        ]
    );

    let text = std::fs::read_to_string(letters.path()).expect("dead-letter file");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).expect("a JSON line"))
        .collect();
    let summary: Vec<(&str, &str)> = lines
        .iter()
        .map(|l| {
            (
                l["topic"].as_str().unwrap_or(""),
                l["code"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("gridpulse/meters/m-2/readings", "malformed_json"),
            ("gridpulse/meters/m-2/readings", "meter_mismatch"),
            ("gridpulse/meters/m-3/readings", "negative"),
        ]
    );
    assert!(
        lines[2]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("1 of 3 readings refused") && r.contains("`voltage`")),
        "{}",
        lines[2]
    );
    assert_eq!(bridge.status().dead_letters(), 3);
    assert_eq!(bridge.status().readings_accepted(), 4);

    let meter = |id: &str| MeterId::new(id).expect("meter id");
    assert_eq!(
        bridge.status().meter(&meter("m-3")).map(|l| l.online),
        Some(true)
    );
    assert_eq!(
        bridge.status().meter(&meter("meter-01")).map(|l| l.online),
        Some(false)
    );
    assert!(
        bridge
            .status()
            .meter(&meter("meter-01"))
            .and_then(|l| l.last_reading_ms)
            .is_some()
    );
    bridge.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_killed_while_meters_publish_loses_nothing() {
    const N_METERS: i64 = 10;
    const PER_METER: i64 = 300;
    let broker = TestMosquitto::start().expect("mosquitto starts");
    let log = InProcessLog::new(4, 1 << 20);
    let bridge = start_bridge(&broker, &log, DeadLetterSink::LogOnly, "bridge-restart");
    wait_connected(bridge.status()).await;
    let (client, acked) = publisher(&broker, "meters-restart");
    let base_ms = now_ms() - 3_600_000;
    let publishing = tokio::spawn(async move {
        let mut published = BTreeSet::new();
        for step in 0..PER_METER {
            for meter_idx in 0..N_METERS {
                let meter = format!("m-{meter_idx}");
                let ts_ms = base_ms + step * 1000;
                client
                    .publish(
                        format!("gridpulse/meters/{meter}/readings"),
                        QoS::AtLeastOnce,
                        false,
                        canonical(&meter, ts_ms, 230.0).into_bytes(),
                    )
                    .await
                    .expect("publish queued");
                published.insert((meter, ts_ms));
            }
            // ~1.5 s of publishing in all.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        published
    });
    // Kill the bridge mid-stream (no disconnect: like a crash), publish on, come back.
    wait_for("some readings", Duration::from_secs(10), || {
        bridge.status().readings_accepted() > 200
    })
    .await;
    bridge.abort();
    let before_crash = bridge.status().readings_accepted();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bridge = start_bridge(&broker, &log, DeadLetterSink::LogOnly, "bridge-restart");
    let published = publishing.await.expect("publisher");
    let n_published = published.len() as u64;
    wait_for(
        "the broker's acks to the publisher",
        Duration::from_secs(20),
        || acked.load(std::sync::atomic::Ordering::SeqCst) == n_published,
    )
    .await;
    wait_for(
        "the restarted bridge to catch up",
        Duration::from_secs(20),
        || before_crash + bridge.status().readings_accepted() >= n_published,
    )
    .await;
    // Let a redelivery in flight land before reading.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let readings = read_log(&log).await;
    let mut copies: BTreeMap<(String, i64), usize> = BTreeMap::new();
    for reading in &readings {
        *copies
            .entry((reading.meter.to_string(), reading.ts_ms))
            .or_default() += 1;
    }
    let stored: BTreeSet<(String, i64)> = copies.keys().cloned().collect();
    assert_eq!(
        stored.len(),
        published.len(),
        "distinct readings in the log"
    );
    assert_eq!(stored, published, "every published reading is in the log");
    // At-least-once: a message appended but not yet acknowledged at the crash comes
    // again (the store's (meter, ts) key makes that harmless); never more than twice.
    let duplicated = copies.values().filter(|&&n| n > 1).count();
    assert!(
        copies.values().all(|&n| n <= 2),
        "a reading appended 3+ times"
    );
    eprintln!(
        "published={n_published} log_records={} redelivered_duplicates={duplicated} appended_before_crash={before_crash}",
        readings.len()
    );
    bridge.shutdown().await;
}

/// Kafka mode (`gridpulse mqtt-bridge`): readings reach `readings`, a bad payload
/// reaches `readings-dlq` with its original bytes and the bridge's headers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_kafka_mode_readings_reach_the_topic_and_dead_letters_the_dlq() {
    use gridpulse_ingest::kafka::KafkaConfig;
    use gridpulse_ingest::kafka::admin::create_topics;
    use gridpulse_ingest::kafka::producer::KafkaReadingProducer;
    use gridpulse_ingest::kafka::test_broker::{TestBroker, watchdog};
    use rdkafka::Message;
    use rdkafka::consumer::{Consumer, StreamConsumer};

    let _watchdog = watchdog(
        "in_kafka_mode_readings_reach_the_topic_and_dead_letters_the_dlq",
        Duration::from_secs(120),
    );
    let kafka_broker = TestBroker::start().expect("a tansu broker (run `make deps`)");
    let mut kafka = KafkaConfig::new(kafka_broker.bootstrap());
    kafka.partitions = 1;
    create_topics(&kafka).await.expect("topics");
    let mqtt_broker = TestMosquitto::start().expect("mosquitto starts");
    let mut config = MqttBridgeConfig::new("127.0.0.1", mqtt_broker.addr().port());
    config.client_id = "bridge-kafka".into();
    let bridge = MqttBridge::start(
        &config,
        ReadingLog::Kafka(Arc::new(
            KafkaReadingProducer::new(&kafka).expect("producer"),
        )),
        DeadLetterSink::kafka(&kafka).expect("dlq producer"),
        Limits::default(),
        Arc::new(SystemClock),
    )
    .expect("bridge starts");
    wait_connected(bridge.status()).await;
    let (client, acked) = publisher(&mqtt_broker, "meters-kafka");
    let ts_ms = now_ms() - 60_000;
    for (topic, payload) in [
        (
            "gridpulse/meters/k-1/readings",
            canonical("k-1", ts_ms, 230.0),
        ),
        ("gridpulse/meters/k-1/readings", "[1, 2".to_owned()),
    ] {
        client
            .publish(topic, QoS::AtLeastOnce, false, payload.into_bytes())
            .await
            .expect("publish queued");
    }
    wait_for("the bridge's acks", Duration::from_secs(30), || {
        bridge.status().messages_acked() == 2
    })
    .await;
    assert_eq!(acked.load(std::sync::atomic::Ordering::SeqCst), 2);

    let read_first = |topic: &'static str, group: &'static str| {
        let consumer: StreamConsumer = kafka
            .client()
            .set("group.id", group)
            .create()
            .expect("consumer");
        let mut assignment = rdkafka::TopicPartitionList::new();
        assignment
            .add_partition_offset(topic, 0, rdkafka::Offset::Beginning)
            .expect("partition");
        consumer.assign(&assignment).expect("assign");
        consumer
    };
    let readings = read_first("readings", "mqtt-readings-reader");
    let message = tokio::time::timeout(Duration::from_secs(20), readings.recv())
        .await
        .expect("a reading on `readings`")
        .expect("kafka message");
    let value: serde_json::Value =
        serde_json::from_slice(message.payload().unwrap_or_default()).expect("JSON");
    assert_eq!(
        (value["meter"].as_str(), value["ts_ms"].as_i64()),
        (Some("k-1"), Some(ts_ms))
    );

    let dlq = read_first("readings-dlq", "mqtt-dlq-reader");
    let letter = tokio::time::timeout(Duration::from_secs(20), dlq.recv())
        .await
        .expect("a dead letter on `readings-dlq`")
        .expect("kafka message");
    assert_eq!(letter.payload(), Some(b"[1, 2".as_slice()));
    let headers: BTreeMap<String, String> = letter
        .headers()
        .map(|headers| {
            use rdkafka::message::Headers;
            headers
                .iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        headers.get("code").map(String::as_str),
        Some("malformed_json")
    );
    assert_eq!(headers.get("source").map(String::as_str), Some("mqtt"));
    assert_eq!(
        headers.get("mqtt_topic").map(String::as_str),
        Some("gridpulse/meters/k-1/readings")
    );
    assert!(
        headers
            .get("reason")
            .is_some_and(|r| r.contains("malformed JSON"))
    );
    bridge.shutdown().await;
}
