//! The import driver against an in-memory target: reports, counts, gzip, truncation.

use std::io::Write;

use super::*;

const NOW: i64 = 1_750_000_000_000;

#[derive(Default)]
struct Target {
    /// Appends to refuse as `Full` first.
    full_for: usize,
    appended: Vec<Reading>,
    appends: usize,
    registered: Vec<MeterId>,
    known: Vec<&'static str>,
}

impl ImportTarget for Target {
    fn append(&mut self, readings: &[Reading]) -> Result<(), LogError> {
        if self.full_for > 0 {
            self.full_for -= 1;
            return Err(LogError::Full {
                partition: 0,
                capacity: 1,
            });
        }
        self.appends += 1;
        self.appended.extend_from_slice(readings);
        Ok(())
    }
    fn resolve_meter(&mut self, meter: MeterId, register: bool) -> Result<MeterStatus, String> {
        if self.known.contains(&meter.as_str()) {
            Ok(MeterStatus::Known)
        } else if register {
            self.registered.push(meter);
            Ok(MeterStatus::Registered)
        } else {
            Ok(MeterStatus::Unknown)
        }
    }
}

fn import(
    input: &[u8],
    options: &ImportOptions,
    target: &mut Target,
) -> (ImportSummary, Vec<String>) {
    let mut report = ReportWriter::new(ReportFormat::Ndjson, Vec::new());
    let summary = run_import(input, options, target, &mut report, NOW, &Limits::default());
    report.summary(&summary).unwrap();
    let text = String::from_utf8(report.into_inner()).unwrap();
    (summary, text.lines().map(str::to_owned).collect())
}

fn known() -> Target {
    Target {
        known: vec!["m-1", "m-2"],
        ..Target::default()
    }
}

fn codes(report: &[String]) -> Vec<(u64, String, String)> {
    report[..report.len() - 1]
        .iter()
        .map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).unwrap();
            (
                value["line"].as_u64().unwrap(),
                value["field"].as_str().unwrap().to_owned(),
                value["code"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

const CSV: &str = "meter,ts,voltage,current,power_w,energy_wh\n\
m-1,1700000000000,230,2,400,1000\n\
m-1,1700000005000,abc,2,400,1001\n\
\n\
m-2,1700000000000,230,2,400,50\n\
m-1,1700000005000,231,2,400,1002\n\
m-1,1700000005000,231,2,400,1002\n\
m-9,1700000000000,230,2,400,50\n\
m-2,1700000010000,230,2\n";

#[test]
fn csv_rows_are_imported_and_bad_ones_reported_by_line() {
    let mut target = known();
    let options = ImportOptions {
        batch_size: 2,
        ..ImportOptions::default()
    };
    let (summary, report) = import(CSV.as_bytes(), &options, &mut target);
    assert_eq!(
        codes(&report),
        vec![
            (3, "voltage".into(), "wrong_type".into()),
            (8, "meter".into(), "unknown_meter".into()),
            (9, "".into(), "wrong_column_count".into()),
        ]
    );
    assert_eq!(
        (
            summary.rows,
            summary.accepted,
            summary.rejected,
            summary.duplicates
        ),
        (7, 3, 3, 1)
    );
    assert!(summary.complete && summary.error.is_none() && !summary.gzip);
    assert_eq!(summary.format, Format::Csv);
    assert_eq!(target.appended.len(), 3);
    assert_eq!(target.appends, 2, "batches of 2");
    assert!(target.appended.iter().all(|reading| reading.backfill));
    assert!(report.last().unwrap().starts_with("{\"summary\":"));
}

#[test]
fn unknown_meters_are_registered_on_request() {
    let mut target = known();
    let options = ImportOptions {
        register_meters: true,
        ..ImportOptions::default()
    };
    let (summary, _) = import(CSV.as_bytes(), &options, &mut target);
    assert_eq!((summary.accepted, summary.meters_registered), (4, 1));
    assert_eq!(target.registered, vec![MeterId::new("m-9").unwrap()]);
}

#[test]
fn ndjson_in_both_formats() {
    let input = "{\"meter\":\"m-1\",\"ts_ms\":1700000000000,\"voltage\":230,\"current\":1,\"power_w\":100,\"energy_wh\":5}\n\
{\"deviceId\":\"m-2\",\"timestamp\":1700000000,\"voltage\":230,\"current\":1,\"power\":100,\"energy\":0.5}\n\
{\"meter\":\"m-1\",\"ts_ms\":1700000001000,\"voltage\":-1,\"current\":1,\"power_w\":100,\"energy_wh\":5}\n\
{\"meter\":\n";
    let mut target = known();
    let (summary, report) = import(input.as_bytes(), &ImportOptions::default(), &mut target);
    assert_eq!(summary.format, Format::Ndjson);
    assert_eq!(
        codes(&report),
        vec![
            (3, "voltage".into(), "negative".into()),
            (4, "".into(), "malformed_json".into())
        ]
    );
    assert_eq!((summary.rows, summary.accepted), (4, 2));
    assert_eq!(target.appended[1].energy_wh, 500.0);
    assert!(target.appended.iter().all(|reading| reading.backfill));
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

fn many_rows(n: usize) -> String {
    let mut text = String::from("meter,ts,voltage,current,power_w,energy_wh\n");
    for idx in 0..n {
        text.push_str(&format!(
            "m-1,{},230,2,400,{}\n",
            1_700_000_000_000i64 + idx as i64 * 1000,
            idx
        ));
    }
    text
}

#[test]
fn gzip_is_detected_and_a_truncated_stream_keeps_what_came_before() {
    let plain = many_rows(20_000);
    let packed = gzip(plain.as_bytes());
    let mut target = known();
    let (summary, _) = import(&packed, &ImportOptions::default(), &mut target);
    assert!(summary.gzip && summary.complete);
    assert_eq!(summary.accepted, 20_000);
    assert_eq!(summary.bytes, plain.len() as u64);

    let cut = &packed[..packed.len() / 2];
    let mut target = known();
    let (summary, report) = import(cut, &ImportOptions::default(), &mut target);
    assert!(!summary.complete);
    let error = summary.error.clone().unwrap();
    assert_eq!(error.code, "truncated", "{error:?}");
    assert!(
        error.message.contains("gzip stream is truncated"),
        "{}",
        error.message
    );
    assert!(
        summary.accepted > 1000,
        "rows before the cut are kept: {summary:?}"
    );
    assert_eq!(summary.accepted, target.appended.len() as u64);
    assert_eq!(
        summary.accepted,
        error.after_line - 1,
        "every complete line before the cut"
    );
    assert!(report.last().unwrap().contains("\"truncated\""));
}

#[test]
fn declared_gzip_that_is_not_is_refused() {
    let options = ImportOptions {
        gzip: Some(true),
        ..ImportOptions::default()
    };
    let (summary, _) = import(CSV.as_bytes(), &options, &mut known());
    assert_eq!(summary.error.map(|error| error.code), Some("bad_gzip"));
}

#[test]
fn long_lines_are_row_errors() {
    let mut input = String::from("meter,ts,voltage,current,power_w,energy_wh\n");
    input.push_str(&"x".repeat(100));
    input.push_str("\nm-1,1700000000000,230,2,400,1000\n");
    let options = ImportOptions {
        max_line_bytes: 64,
        ..ImportOptions::default()
    };
    let (summary, report) = import(input.as_bytes(), &options, &mut known());
    assert_eq!(codes(&report), vec![(2, "".into(), "line_too_long".into())]);
    assert_eq!(
        (summary.rows, summary.accepted, summary.rejected),
        (2, 1, 1)
    );
}

#[test]
fn a_bad_header_stops_before_any_row() {
    let (summary, _) = import(
        b"meter,ts,volts\nm-1,1,2\n",
        &ImportOptions::default(),
        &mut known(),
    );
    let error = summary.error.unwrap();
    assert_eq!(
        (error.code, error.field.as_deref()),
        ("bad_header", Some("volts"))
    );
    assert_eq!(summary.rows, 0);
}

#[test]
fn csv_report_format() {
    let mut report = ReportWriter::new(ReportFormat::Csv, Vec::new());
    let summary = run_import(
        CSV.as_bytes(),
        &ImportOptions::default(),
        &mut known(),
        &mut report,
        NOW,
        &Limits::default(),
    );
    report.summary(&summary).unwrap();
    let text = String::from_utf8(report.into_inner()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "line,field,code,reason");
    assert!(
        lines[1].starts_with("3,voltage,wrong_type,\"`voltage` must be a number"),
        "{}",
        lines[1]
    );
    assert!(
        lines
            .last()
            .unwrap()
            .starts_with("# summary {\"format\":\"csv\"")
    );
    assert_eq!(lines.len(), 5);
}

#[test]
fn a_full_log_is_waited_for_not_a_failure() {
    let mut target = Target {
        full_for: 3,
        ..known()
    };
    let (summary, _) = import(CSV.as_bytes(), &ImportOptions::default(), &mut target);
    assert!(summary.complete, "{summary:?}");
    assert_eq!((summary.accepted, target.appended.len()), (3, 3));
}

#[test]
fn duplicates_are_exact_for_rows_in_time_order_per_meter_and_out_of_order_rows_are_counted() {
    // Meters interleaved, each in ascending time: every repeat is caught, adjacent or not.
    let csv = "meter,ts,voltage,current,power_w,energy_wh\n\
m-1,1700000001000,230,2,400,1\n\
m-2,1700000001000,230,2,400,1\n\
m-1,1700000002000,230,2,400,2\n\
m-2,1700000001000,230,2,400,1\n\
m-1,1700000002000,230,2,400,2\n\
m-2,1700000002000,230,2,400,2\n";
    let mut target = known();
    let (summary, _) = import(csv.as_bytes(), &ImportOptions::default(), &mut target);
    assert_eq!(
        (summary.accepted, summary.duplicates, summary.out_of_order),
        (4, 2, 0)
    );
    // Out of order: counted, appended; a repeat of an older row is not caught.
    let csv = "meter,ts,voltage,current,power_w,energy_wh\n\
m-1,1700000003000,230,2,400,3\n\
m-1,1700000001000,230,2,400,1\n\
m-1,1700000001000,230,2,400,1\n\
m-1,1700000002000,230,2,400,2\n\
m-1,1700000001000,230,2,400,1\n\
m-1,1700000003000,230,2,400,3\n";
    let mut target = known();
    let (summary, _) = import(csv.as_bytes(), &ImportOptions::default(), &mut target);
    assert_eq!(
        (summary.accepted, summary.duplicates, summary.out_of_order),
        (4, 2, 3)
    );
    assert_eq!(target.appended.len(), 4);
}
