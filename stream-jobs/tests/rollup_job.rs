//! The rollup job end to end on generated data: against the reference aggregation,
//! across restarts, across worker counts, and with bad lines.

mod support;

use std::collections::BTreeMap;

use gridpulse_domain::Granularity;
use gridpulse_stream_jobs::RollupConfig;
use support::*;

fn check_against_reference(dataset: &Dataset, rollup: RollupConfig, workers: usize) {
    let expected = reference(dataset, &rollup);
    let (collected, report) = run_job(job_config(workers, rollup), dataset.source());
    let actual = upserted(&collected.rollups);
    assert_same(&actual, &expected.rollups);

    let mut too_late: Vec<(u32, u64)> = collected
        .late
        .iter()
        .map(|late| (late.partition, late.offset))
        .collect();
    too_late.sort();
    assert_eq!(too_late, expected.too_late, "too-late readings");
    let mut bad: Vec<(u32, u64)> = collected
        .errors
        .iter()
        .map(|error| (error.partition, error.offset))
        .collect();
    bad.sort();
    assert_eq!(bad, expected.bad, "bad lines");
    assert_eq!(report.stats.too_late, expected.too_late.len() as u64);
    assert_eq!(report.stats.errors, expected.bad.len() as u64);
    assert_eq!(report.stats.duplicates, expected.duplicates);
    assert_eq!(report.stats.lines, dataset.n_lines() as u64);
}

#[test]
fn matches_the_reference_with_resets_rollovers_gaps_duplicates_and_late_data() {
    let dataset = generate(7, 12, 3, 4, Trouble::ALL);
    let expected = reference(&dataset, &test_rollup_config());
    // The data set exercises what it claims to.
    assert!(
        expected.too_late.len() > 10,
        "{} too late",
        expected.too_late.len()
    );
    assert!(expected.duplicates > 10);
    assert!(expected.bad.len() > 10);
    assert!(
        expected.rollups.values().any(|r| r.revision > 0),
        "no late revision in the data"
    );
    assert!(expected.rollups.values().any(|r| r.completeness_pct < 90.0));
    check_against_reference(&dataset, test_rollup_config(), 1);
}

#[test]
fn matches_the_reference_in_a_half_hour_zone_with_days_and_months() {
    let dataset = generate(11, 8, 2, 3, Trouble::ALL);
    let rollup = RollupConfig {
        granularities: vec![Granularity::Hour, Granularity::Day, Granularity::Month],
        ..test_rollup_config()
    }
    .with_time_zone("Asia/Kolkata")
    .unwrap();
    let expected = reference(&dataset, &rollup);
    // Local midnight cuts an hour: two day rollups per meter.
    let days = expected
        .rollups
        .keys()
        .filter(|(meter, granularity, _)| {
            *granularity == Granularity::Day && meter.as_str() == "meter-0"
        })
        .count();
    assert_eq!(days, 2);
    check_against_reference(&dataset, rollup, 2);
}

/// Lateness longer than an hour: a late reading can become the step start of a later,
/// already due hour, which is revised too.
fn long_lateness() -> (RollupConfig, Trouble) {
    let rollup = RollupConfig {
        granularities: vec![Granularity::Hour],
        allowed_lateness_ms: 90 * 60_000,
        max_gap_ms: 3 * HOUR_MS,
        ..test_rollup_config()
    };
    let trouble = Trouble {
        late_pct: 3,
        late_delay_ms: 75 * 60_000,
        too_late_delay_ms: 160 * 60_000,
        ..Trouble::ALL
    };
    (rollup, trouble)
}

#[test]
fn matches_the_reference_when_lateness_spans_hours() {
    let (rollup, trouble) = long_lateness();
    let dataset = generate(13, 10, 2, 5, trouble);
    let expected = reference(&dataset, &rollup);
    assert!(expected.rollups.values().any(|r| r.revision > 1));
    assert!(!expected.too_late.is_empty());
    check_against_reference(&dataset, rollup, 2);
}

#[test]
fn out_of_order_within_the_allowed_disorder_equals_in_order() {
    let in_order = generate(3, 6, 2, 2, Trouble::NONE);
    let shuffled = generate(
        3,
        6,
        2,
        2,
        Trouble {
            swap_pct: 30,
            ..Trouble::NONE
        },
    );
    assert_ne!(in_order.partitions, shuffled.partitions);
    let (a, _) = run_job(job_config(1, test_rollup_config()), in_order.source());
    let (b, _) = run_job(job_config(1, test_rollup_config()), shuffled.source());
    let a = upserted(&a.rollups);
    assert!(a.values().all(|r| r.revision == 0));
    assert_same(&upserted(&b.rollups), &a);
}

#[test]
fn two_workers_equal_one() {
    let dataset = generate(5, 16, 4, 3, Trouble::ALL);
    let (one, one_report) = run_job(job_config(1, test_rollup_config()), dataset.source());
    let (two, two_report) = run_job(job_config(2, test_rollup_config()), dataset.source());
    let one_map = upserted(&one.rollups);
    assert!(one_map.len() > 50);
    assert_same(&upserted(&two.rollups), &one_map);
    // Every emitted (window, revision) holds the same content in both runs.
    let mut all = one.rollups.clone();
    all.extend(two.rollups.iter().cloned());
    let mut by_revision = BTreeMap::new();
    for rollup in &all {
        let key = (
            rollup.meter,
            rollup.granularity,
            rollup.window_start_ms,
            rollup.revision,
        );
        if let Some(previous) = by_revision.insert(key, rollup.clone()) {
            assert_eq!(&previous, rollup);
        }
    }
    assert_eq!(one_report.stats.too_late, two_report.stats.too_late);
    assert_eq!(one_report.stats.duplicates, two_report.stats.duplicates);
    assert_eq!(one_report.checkpoints, two_report.checkpoints);
}

#[test]
fn restart_in_the_middle_of_a_window_reproduces_the_uninterrupted_run() {
    let hours_only = RollupConfig {
        granularities: vec![Granularity::Hour],
        ..test_rollup_config()
    };
    check_restarts(&generate(9, 10, 3, 4, Trouble::ALL), hours_only, true);
    // With days, the commit offset trails to the start of the open day.
    check_restarts(
        &generate(9, 10, 3, 4, Trouble::ALL),
        test_rollup_config(),
        false,
    );
    let (rollup, trouble) = long_lateness();
    check_restarts(&generate(21, 10, 3, 5, trouble), rollup, true);
}

fn check_restarts(dataset: &Dataset, rollup: RollupConfig, offsets_move: bool) {
    let (full, full_report) = run_job(job_config(2, rollup.clone()), dataset.source());
    let full_map = upserted(&full.rollups);
    let shortest = dataset
        .partitions
        .iter()
        .map(|(_, lines)| lines.len())
        .min()
        .expect("partitions");
    // Cut at several points, each in the middle of an hour.
    let cuts = [
        shortest / 2 + 17,
        shortest * 2 / 3 + 101,
        shortest * 9 / 10 + 7,
    ];
    for (cut_idx, cut) in cuts.into_iter().enumerate() {
        let mut prefix_config = job_config(2, rollup.clone());
        prefix_config.close_windows_at_end = false;
        let (first, first_report) = run_job(prefix_config, dataset.source_prefix(cut));
        let checkpoints = first_report.checkpoints.clone();
        assert_eq!(checkpoints.len(), dataset.partitions.len());
        for checkpoint in &checkpoints {
            assert_eq!(checkpoint.replay_until, cut as u64);
            assert!(
                checkpoint.offset < checkpoint.replay_until,
                "the restart must read open windows again: {checkpoint:?}"
            );
        }
        if offsets_move && cut_idx == cuts.len() - 1 {
            assert!(
                checkpoints.iter().any(|checkpoint| checkpoint.offset > 0),
                "nothing was committable: {checkpoints:?}"
            );
        }
        let mut resumed_config = job_config(1, rollup.clone());
        resumed_config.resume = checkpoints;
        let (second, second_report) = run_job(resumed_config, dataset.source());

        let mut map = BTreeMap::new();
        upsert(&mut map, &first.rollups);
        upsert(&mut map, &second.rollups);
        assert_same(&map, &full_map);
        // Nothing reported twice, nothing lost.
        assert_eq!(
            first.late.len() + second.late.len(),
            full.late.len(),
            "too-late readings at cut {cut}"
        );
        assert_eq!(first.errors.len() + second.errors.len(), full.errors.len());
        assert_eq!(second_report.checkpoints, full_report.checkpoints);
    }
}

#[test]
fn bad_lines_go_to_the_error_stream_and_good_ones_around_them_are_kept() {
    let t = START_MS;
    let lines = vec![
        line("m-1", t, 230.0, 100.0, 10.0),
        "{not json".to_owned(),
        line("m-1", t + 10_000, 230.0, 100.0, 10.5),
        r#"{"meter":"m-1","ts_ms":1773075620000,"voltage":"high","current":1,"power_w":100,"energy_wh":11}"#.to_owned(),
        String::new(),
        r#"{"meter":"m 1","ts_ms":1773075620000,"voltage":230,"current":1,"power_w":100,"energy_wh":11}"#.to_owned(),
        line("m-1", t + 20_000, 230.0, 100.0, 11.0),
    ];
    let dataset = Dataset {
        partitions: vec![(0, lines)],
    };
    let (collected, report) = run_job(job_config(1, test_rollup_config()), dataset.source());
    let errors: Vec<(u64, &str)> = collected
        .errors
        .iter()
        .map(|error| (error.offset, error.code.as_str()))
        .collect();
    assert_eq!(
        errors,
        vec![
            (1, "malformed_json"),
            (3, "wrong_type"),
            (5, "bad_meter_id")
        ]
    );
    assert!(
        collected.errors[1].message.contains("voltage"),
        "{:?}",
        collected.errors[1]
    );
    assert_eq!(collected.errors[0].line, b"{not json");
    assert_eq!(report.stats.errors, 3);
    let hour = collected
        .rollups
        .iter()
        .find(|r| r.granularity == Granularity::Hour)
        .unwrap();
    assert_eq!(hour.readings, 3);
    assert_eq!(hour.energy_wh, 1.0);
}

/// A source of already-parsed readings (as the in-process log holds them).
struct ParsedSource(Vec<(u32, Vec<Option<gridpulse_domain::Reading>>)>);

struct ParsedReader {
    readings: Vec<Option<gridpulse_domain::Reading>>,
    next: usize,
}

impl gridpulse_stream_jobs::Source for ParsedSource {
    fn partitions(&self) -> Vec<u32> {
        self.0.iter().map(|(partition, _)| *partition).collect()
    }
    fn open(
        &self,
        partition: u32,
        offset: u64,
    ) -> Result<Box<dyn gridpulse_stream_jobs::PartitionReader>, gridpulse_stream_jobs::SourceError>
    {
        let readings = self
            .0
            .iter()
            .find(|(p, _)| *p == partition)
            .map(|(_, readings)| readings.clone())
            .ok_or(gridpulse_stream_jobs::SourceError::UnknownPartition { partition })?;
        Ok(Box::new(ParsedReader {
            readings,
            next: offset as usize,
        }))
    }
}

impl gridpulse_stream_jobs::PartitionReader for ParsedReader {
    fn read(
        &mut self,
        max_records: usize,
        record: &mut dyn FnMut(u64, gridpulse_stream_jobs::SourceRecord<'_>),
    ) -> Result<gridpulse_stream_jobs::ReadStatus, gridpulse_stream_jobs::SourceError> {
        if self.next >= self.readings.len() {
            return Ok(gridpulse_stream_jobs::ReadStatus::End);
        }
        let end = (self.next + max_records).min(self.readings.len());
        for idx in self.next..end {
            match &self.readings[idx] {
                Some(reading) => record(
                    idx as u64,
                    gridpulse_stream_jobs::SourceRecord::Reading(reading),
                ),
                // A record the log could not hand over as a reading.
                None => record(idx as u64, gridpulse_stream_jobs::SourceRecord::Line(b"?")),
            }
        }
        let n = end - self.next;
        self.next = end;
        Ok(gridpulse_stream_jobs::ReadStatus::Lines(n))
    }
}

#[test]
fn parsed_readings_and_files_give_what_ndjson_in_memory_gives() {
    let dataset = generate(17, 6, 2, 2, Trouble::ALL);
    let (from_memory, _) = run_job(job_config(2, test_rollup_config()), dataset.source());
    let expected = upserted(&from_memory.rollups);
    assert!(!expected.is_empty());

    let limits = gridpulse_domain::Limits::default();
    let parsed = ParsedSource(
        dataset
            .partitions
            .iter()
            .map(|(partition, lines)| {
                let readings = lines
                    .iter()
                    .map(|line| {
                        gridpulse_domain::parse_reading(line.as_bytes(), i64::MAX, &limits).ok()
                    })
                    .collect();
                (*partition, readings)
            })
            .collect(),
    );
    let collector = std::sync::Arc::new(Collector::default());
    let report = gridpulse_stream_jobs::run(
        job_config(2, test_rollup_config()),
        std::sync::Arc::new(parsed),
        collector.clone(),
    )
    .unwrap();
    let from_parsed = std::mem::take(&mut *collector.0.lock().unwrap());
    assert_same(&upserted(&from_parsed.rollups), &expected);
    assert_eq!(from_parsed.errors.len(), from_memory.errors.len());
    assert_eq!(report.stats.too_late as usize, from_memory.late.len());

    let dir = std::env::temp_dir().join(format!("gp-rollup-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (partition, lines) in &dataset.partitions {
        let path = dir.join(format!("p{partition}.ndjson"));
        std::fs::write(&path, lines.join("\n")).unwrap();
        files.push((*partition, path));
    }
    let collector = std::sync::Arc::new(Collector::default());
    gridpulse_stream_jobs::run(
        job_config(1, test_rollup_config()),
        std::sync::Arc::new(gridpulse_stream_jobs::FileSource::new(files)),
        collector.clone(),
    )
    .unwrap();
    let from_files = std::mem::take(&mut *collector.0.lock().unwrap());
    assert_same(&upserted(&from_files.rollups), &expected);
    std::fs::remove_dir_all(&dir).unwrap();
}
