//! Kafka against a real Kafka-protocol broker (tansu, started on a free loopback port):
//! topics, producing readings, the processor's consumer with per-partition order, dead
//! letters with their reason, and resuming from committed (checkpointed) offsets.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use gridpulse_actors::ReadingSource;
use gridpulse_domain::{Limits, MeterId, Reading};
use gridpulse_ingest::kafka::KafkaConfig;
use gridpulse_ingest::kafka::admin::{TopicOutcome, create_topics};
use gridpulse_ingest::kafka::consumer::KafkaSource;
use gridpulse_ingest::kafka::producer::KafkaReadingProducer;
use gridpulse_ingest::kafka::test_broker::TestBroker;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};

fn reading(meter: &str, ts_ms: i64) -> Reading {
    Reading {
        meter: MeterId::new(meter).unwrap(),
        ts_ms,
        voltage: 230.0,
        current: 1.0,
        power_w: 200.0,
        energy_wh: ts_ms as f64 / 1e9,
        credit: None,
        seq: None,
        backfill: false,
    }
}

fn config(broker: &TestBroker, group: &str) -> KafkaConfig {
    let mut config = KafkaConfig::new(broker.bootstrap());
    config.partitions = 4;
    config.group_id = group.into();
    config
}

/// Reads every partition until `expected` records arrived or 30 s passed. Each reader
/// runs in its own local task and is never cancelled mid-batch (a batch that was taken
/// from its queue is delivered; the processor's pump never cancels a read either).
/// Must run inside a `LocalSet`.
async fn drain(source: &KafkaSource, expected: usize) -> BTreeMap<u32, Vec<(u64, Reading)>> {
    let (records_tx, mut records_rx) = tokio::sync::mpsc::unbounded_channel();
    let tasks: Vec<_> = (0..source.n_partitions())
        .map(|partition| {
            let mut reader = source.open_partition(partition, None);
            let records_tx = records_tx.clone();
            tokio::task::spawn_local(async move {
                while let Ok(batch) = reader.next_batch(100).await {
                    for record in batch {
                        let _ = records_tx.send((partition, record.offset, record.reading));
                    }
                }
            })
        })
        .collect();
    let mut got: BTreeMap<u32, Vec<(u64, Reading)>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while got.values().map(Vec::len).sum::<usize>() < expected {
        match tokio::time::timeout_at(deadline, records_rx.recv()).await {
            Ok(Some((partition, offset, reading))) => {
                got.entry(partition).or_default().push((offset, reading))
            }
            _ => panic!("only {got:?} of {expected} records"),
        }
    }
    for task in tasks {
        task.abort();
    }
    got
}

#[tokio::test(flavor = "current_thread")]
async fn readings_flow_through_a_real_broker_with_dead_letters_and_resume() {
    let _watchdog = gridpulse_ingest::kafka::test_broker::watchdog(
        "readings_flow_through_a_real_broker_with_dead_letters_and_resume",
        Duration::from_secs(180),
    );
    let broker = TestBroker::start().expect("a tansu broker (run `make deps`)");
    let config = config(&broker, "test-processors");
    let created = create_topics(&config).await.unwrap();
    assert_eq!(created.len(), 5, "{created:?}");
    assert!(
        created
            .iter()
            .all(|t| matches!(t, TopicOutcome::Created(_))),
        "{created:?}"
    );
    // Idempotent: a second run finds them.
    let again = create_topics(&config).await.unwrap();
    assert!(
        again.iter().all(|t| matches!(t, TopicOutcome::Exists(_))),
        "{again:?}"
    );

    // 5 meters x 20 readings, plus two poison records in the middle.
    let producer = KafkaReadingProducer::new(&config).unwrap();
    let base = 1_739_930_000_000;
    let first: Vec<Reading> = (0..10)
        .flat_map(|i| (0..5).map(move |m| reading(&format!("k-{m}"), base + i * 5000)))
        .collect();
    producer.append(&first).await.unwrap();
    let raw: FutureProducer = config.client().create().unwrap();
    for (key, payload) in [("k-0", b"{\"meter\":".as_slice()), ("k-1", br#"{"meter":"k-1","ts_ms":1739930000000,"voltage":"high","current":1,"power_w":1,"energy_wh":1}"#.as_slice())] {
        raw.send(FutureRecord::to("readings").key(key).payload(payload), Duration::from_secs(5)).await.unwrap();
    }
    let second: Vec<Reading> = (10..20)
        .flat_map(|i| (0..5).map(move |m| reading(&format!("k-{m}"), base + i * 5000)))
        .collect();
    producer.append(&second).await.unwrap();

    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let source = KafkaSource::start(&config, Limits::default())
                .await
                .unwrap();
            assert_eq!(source.n_partitions(), 4);
            let got = drain(&source, 100).await;
            // Every good reading exactly once; each meter's in order and in one partition.
            let mut per_meter: BTreeMap<String, Vec<i64>> = BTreeMap::new();
            for (partition, records) in &got {
                assert!(
                    records.windows(2).all(|w| w[0].0 < w[1].0),
                    "offsets ordered in partition {partition}"
                );
                for (_, reading) in records {
                    assert_eq!(
                        reading.meter.partition(4),
                        *partition,
                        "librdkafka's partitioner and ours differ"
                    );
                    per_meter
                        .entry(reading.meter.to_string())
                        .or_default()
                        .push(reading.ts_ms);
                }
            }
            assert_eq!(per_meter.len(), 5);
            for (meter, ts) in &per_meter {
                let expected: Vec<i64> = (0..20).map(|i| base + i * 5000).collect();
                assert_eq!(ts, &expected, "meter {meter}");
            }
            // Commit what was processed (as a checkpoint does) for every partition.
            for (partition, records) in &got {
                let next = records.last().unwrap().0 + 1;
                source.checkpointed(*partition, next);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        })
        .await;

    // The dead letters carry the original bytes and the reason.
    let dlq: StreamConsumer = config
        .client()
        .set("group.id", "dlq-reader")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset("readings-dlq", 0, rdkafka::Offset::Beginning)
        .unwrap();
    dlq.assign(&assignment).unwrap();
    let mut letters = Vec::new();
    while letters.len() < 2 {
        let message = tokio::time::timeout(Duration::from_secs(20), dlq.recv())
            .await
            .expect("2 dead letters")
            .unwrap();
        let headers: BTreeMap<String, String> = message
            .headers()
            .map(|headers| {
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
        letters.push((
            String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
            headers,
        ));
    }
    letters.sort();
    assert!(letters[0].0.starts_with("{\"meter\":"), "{letters:?}");
    assert_eq!(letters[0].1["code"], "malformed_json");
    assert_eq!(letters[1].1["code"], "wrong_type");
    assert!(letters[1].1["reason"].contains("voltage"), "{letters:?}");
    assert_eq!(letters[1].1["source-topic"], "readings");
    assert!(letters[1].1.contains_key("source-offset"));

    // A new member of the same group resumes after the committed offsets: only new
    // readings arrive.
    producer
        .append(&[reading("k-2", base + 999_000)])
        .await
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let source = KafkaSource::start(&config, Limits::default())
                .await
                .unwrap();
            let got = drain(&source, 1).await;
            let all: Vec<&Reading> = got.values().flatten().map(|(_, r)| r).collect();
            assert_eq!(all.len(), 1, "{all:?}");
            assert_eq!(all[0].ts_ms, base + 999_000);
        })
        .await;
}

/// Committed offsets of `topic`'s partitions in `consumer`'s group.
fn committed(consumer: &BaseConsumer, partitions: i32) -> BTreeMap<i32, rdkafka::Offset> {
    let mut list = rdkafka::TopicPartitionList::new();
    for partition in 0..partitions {
        list.add_partition("readings", partition);
    }
    consumer
        .committed_offsets(list, Duration::from_secs(5))
        .unwrap()
        .elements()
        .iter()
        .map(|element| (element.partition(), element.offset()))
        .collect()
}

#[tokio::test(flavor = "current_thread")]
async fn a_member_commits_only_the_partitions_it_owns() {
    let _watchdog = gridpulse_ingest::kafka::test_broker::watchdog(
        "a_member_commits_only_the_partitions_it_owns",
        Duration::from_secs(180),
    );
    let broker = TestBroker::start().expect("a tansu broker (run `make deps`)");
    let config = config(&broker, "owners");
    create_topics(&config).await.unwrap();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let source = KafkaSource::start(&config, Limits::default())
                .await
                .unwrap();
            // A second member of the group: the partitions split between the two.
            let other: BaseConsumer = config
                .client()
                .set("group.id", "owners")
                .set("enable.auto.commit", "false")
                .set("session.timeout.ms", "6000")
                .set("heartbeat.interval.ms", "1000")
                .create()
                .unwrap();
            other.subscribe(&["readings"]).unwrap();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let owned_by_other: Vec<i32> = loop {
                // Polling serves the group protocol (and the rebalance callback).
                let _ = other.poll(Duration::ZERO);
                let assignment = other.assignment().unwrap();
                if (1..4).contains(&assignment.count()) {
                    break assignment
                        .elements()
                        .iter()
                        .map(|element| element.partition())
                        .collect();
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the group never split: {assignment:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            let mut own = rdkafka::TopicPartitionList::new();
            for partition in &owned_by_other {
                own.add_partition_offset("readings", *partition, rdkafka::Offset::Offset(7))
                    .unwrap();
            }
            other.commit(&own, CommitMode::Sync).unwrap();

            // The source checkpoints every partition, again and again, as partition
            // actors do (their timer runs whether or not the partition is assigned).
            // Its own partitions' commits land; the other member's offsets stay.
            let mine: Vec<i32> = (0..4).filter(|p| !owned_by_other.contains(p)).collect();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                for partition in 0..4 {
                    source.checkpointed(partition, 3);
                }
                let _ = other.poll(Duration::ZERO);
                let offsets = committed(&other, 4);
                if mine
                    .iter()
                    .all(|p| offsets.get(p) == Some(&rdkafka::Offset::Offset(3)))
                {
                    for partition in &owned_by_other {
                        assert_eq!(
                            offsets.get(partition),
                            Some(&rdkafka::Offset::Offset(7)),
                            "partition {partition} is the other member's: {offsets:?}"
                        );
                    }
                    break;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the owner's commits never landed: {offsets:?} (mine: {mine:?})"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            source.close().await;
        })
        .await;
}

/// A partition whose actor does not keep up is paused, not the whole consumer: the
/// other partitions' records keep arriving, and the slow one resumes without losing or
/// repeating a record once it is read again.
#[tokio::test(flavor = "current_thread")]
async fn a_slow_partition_is_paused_and_the_others_go_on() {
    let _watchdog = gridpulse_ingest::kafka::test_broker::watchdog(
        "a_slow_partition_is_paused_and_the_others_go_on",
        Duration::from_secs(180),
    );
    let broker = TestBroker::start().expect("a tansu broker (run `make deps`)");
    let mut config = config(&broker, "pauses");
    config.partitions = 2;
    // Two batches may wait per partition; beyond that the partition pauses.
    config.partition_queue_batches = 2;
    create_topics(&config).await.unwrap();
    let meter_in = |partition: u32| {
        (0..)
            .map(|n| format!("pause-{n}"))
            .find(|id| MeterId::new(id).unwrap().partition(2) == partition)
            .unwrap()
    };
    let (slow_meter, fast_meter) = (meter_in(0), meter_in(1));
    let producer = KafkaReadingProducer::new(&config).unwrap();
    let t0 = 1_700_000_000_000;
    // The slow partition's records first, so a consumer blocked on it would never
    // reach the fast partition's.
    const N_SLOW: usize = 20_000;
    const N_FAST: usize = 500;
    for chunk in 0..(N_SLOW / 1_000) {
        let batch: Vec<Reading> = (0..1_000)
            .map(|k| reading(&slow_meter, t0 + ((chunk * 1_000 + k) as i64) * 1_000))
            .collect();
        producer.append(&batch).await.unwrap();
    }
    let fast: Vec<Reading> = (0..N_FAST)
        .map(|k| reading(&fast_meter, t0 + k as i64 * 1_000))
        .collect();
    producer.append(&fast).await.unwrap();

    let pauses_before = pause_count();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let source = KafkaSource::start(&config, Limits::default())
                .await
                .unwrap();
            let mut slow = source.open_partition(0, None);
            let mut fast = source.open_partition(1, None);
            // Only the fast partition is read.
            let mut n_fast = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while n_fast < N_FAST {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the fast partition starved behind the slow one: {n_fast} of {N_FAST}"
                );
                if let Ok(Ok(batch)) =
                    tokio::time::timeout(Duration::from_millis(100), fast.next_batch(1_000)).await
                {
                    n_fast += batch.len();
                }
            }
            // Its queue fills (the fast records may all have come first): it pauses.
            while pause_count() <= pauses_before {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slow partition was never paused"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            // Now the slow partition is read: every record once, in order.
            let mut offsets = Vec::new();
            while offsets.len() < N_SLOW {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the slow partition did not resume: {} of {N_SLOW}",
                    offsets.len()
                );
                if let Ok(Ok(batch)) =
                    tokio::time::timeout(Duration::from_millis(100), slow.next_batch(1_000)).await
                {
                    offsets.extend(batch.iter().map(|record| record.offset));
                }
            }
            let expected: Vec<u64> = (0..N_SLOW as u64).collect();
            assert_eq!(
                offsets, expected,
                "no record lost or repeated across the pause"
            );
        })
        .await;
}

fn pause_count() -> f64 {
    prometheus::gather()
        .iter()
        .find(|family| family.name() == "gridpulse_ingest_kafka_partition_pauses_total")
        .and_then(|family| {
            family
                .get_metric()
                .first()
                .map(|m| m.get_counter().get_value())
        })
        .unwrap_or(0.0)
}

/// Link status records (`gridpulse-record: link-status`, as the MQTT bridge's
/// `LinkSink` produces them) come out of the reader as link changes, after their
/// meter's readings and never as readings; malformed, unknown-status and unknown-kind
/// records are dead letters with their reason.
#[tokio::test(flavor = "current_thread")]
async fn link_status_records_become_link_changes_and_bad_ones_dead_letters() {
    let _watchdog = gridpulse_ingest::kafka::test_broker::watchdog(
        "link_status_records_become_link_changes_and_bad_ones_dead_letters",
        Duration::from_secs(180),
    );
    let broker = TestBroker::start().expect("a tansu broker (run `make deps`)");
    let config = config(&broker, "link-processors");
    create_topics(&config).await.unwrap();
    let producer = KafkaReadingProducer::new(&config).unwrap();
    let base = 1_739_930_000_000;
    producer.append(&[reading("kl-1", base)]).await.unwrap();
    producer
        .append_link_status(MeterId::new("kl-1").unwrap(), false, base + 7_000)
        .await
        .unwrap();
    let raw: FutureProducer = config.client().create().unwrap();
    for (kind, payload) in [
        ("link-status", b"{oops".as_slice()),
        (
            "link-status",
            br#"{"meter":"kl-2","status":"asleep","at_ms":1739930000000}"#.as_slice(),
        ),
        ("firmware-update", b"v2".as_slice()),
    ] {
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: "gridpulse-record",
            value: Some(kind),
        });
        raw.send(
            FutureRecord::to("readings")
                .key("kl-2")
                .payload(payload)
                .headers(headers),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
    }
    producer.append(&[reading("kl-2", base)]).await.unwrap();

    let local = tokio::task::LocalSet::new();
    local
        .run_until(async {
            let source = KafkaSource::start(&config, Limits::default())
                .await
                .unwrap();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let tasks: Vec<_> = (0..source.n_partitions())
                .map(|partition| {
                    let mut reader = source.open_partition(partition, None);
                    let tx = tx.clone();
                    tokio::task::spawn_local(async move {
                        while let Ok(batch) = reader.next_batch(100).await {
                            for record in batch {
                                let _ = tx.send(Err((record.offset, record.reading)));
                            }
                            for link in reader.take_links() {
                                let _ = tx.send(Ok(link));
                            }
                        }
                    })
                })
                .collect();
            let (mut readings, mut links) = (Vec::new(), Vec::new());
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while readings.len() < 2 || links.is_empty() {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(Ok(link))) => links.push(link),
                    Ok(Some(Err(reading))) => readings.push(reading),
                    _ => panic!("readings {readings:?}, links {links:?}"),
                }
            }
            // Nothing more trickles in (the bad records are no readings, no links).
            tokio::time::sleep(Duration::from_millis(500)).await;
            while let Ok(more) = rx.try_recv() {
                match more {
                    Ok(link) => links.push(link),
                    Err(reading) => readings.push(reading),
                }
            }
            for task in tasks {
                task.abort();
            }
            assert_eq!(readings.len(), 2, "{readings:?}");
            assert_eq!(links.len(), 1, "{links:?}");
            let link = links[0];
            assert_eq!(link.meter.as_str(), "kl-1");
            assert!(!link.online);
            assert_eq!(link.at_ms, base + 7_000);
            let (reading_offset, _) = readings
                .iter()
                .find(|(_, reading)| reading.meter.as_str() == "kl-1")
                .unwrap();
            assert!(link.offset > *reading_offset, "{link:?} after {readings:?}");
        })
        .await;

    let dlq: StreamConsumer = config
        .client()
        .set("group.id", "dlq-link-reader")
        .create()
        .unwrap();
    let mut assignment = rdkafka::TopicPartitionList::new();
    assignment
        .add_partition_offset("readings-dlq", 0, rdkafka::Offset::Beginning)
        .unwrap();
    dlq.assign(&assignment).unwrap();
    let mut codes = Vec::new();
    while codes.len() < 3 {
        let message = tokio::time::timeout(Duration::from_secs(20), dlq.recv())
            .await
            .expect("3 dead letters")
            .unwrap();
        let header = |name: &str| {
            message
                .headers()
                .and_then(|headers| headers.iter().find(|h| h.key == name))
                .map(|h| String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
                .unwrap_or_default()
        };
        assert_eq!(header("source-topic"), "readings");
        assert!(!header("reason").is_empty());
        codes.push(header("code"));
    }
    codes.sort();
    assert_eq!(
        codes,
        vec!["malformed_status", "unknown_record", "unknown_status"]
    );
}
