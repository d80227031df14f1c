//! From an MQTT message (topic and bytes) to readings, a status change or a refusal.
//!
//! Topics:
//! * `/energy/<id>/data`: the seed firmware's payload
//!   (`{"deviceId","voltage","current","power","energy","timestamp"}`).
//! * `gridpulse/meters/<id>/readings`: the canonical payload, one object or an array.
//! * `gridpulse/meters/<id>/status`: `online` or `offline` (retained; the meter's
//!   last will sets `offline`).
//!
//! The meter id comes from the topic; a reading whose payload names another meter is
//! refused (`meter_mismatch`). Both payload formats carry their id (`meter`,
//! `deviceId`), as `gridpulse_domain::parse_batch` requires.
//!
//! Backfill rule: an array payload is a meter's offline buffer flushed at once, so every
//! reading in it is marked `backfill` (history, energy and rollups; no live alerts);
//! a single object is live unless it says `"backfill": true`.

use gridpulse_domain::{Limits, MeterId, Reading, parse_batch};

/// Subscription of the seed firmware's readings.
pub const SEED_TOPIC_FILTER: &str = "/energy/+/data";
/// Subscription of canonical readings.
pub const READINGS_TOPIC_FILTER: &str = "gridpulse/meters/+/readings";
/// Subscription of meters' status (online/offline, last will).
pub const STATUS_TOPIC_FILTER: &str = "gridpulse/meters/+/status";

/// What a topic is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic<'a> {
    /// `/energy/<id>/data`.
    SeedData(&'a str),
    /// `gridpulse/meters/<id>/readings`.
    Readings(&'a str),
    /// `gridpulse/meters/<id>/status`.
    Status(&'a str),
    /// Anything else.
    Unknown,
}

/// Classifies a topic name.
pub fn classify(topic: &str) -> Topic<'_> {
    if let Some(rest) = topic.strip_prefix("/energy/")
        && let Some(id) = rest.strip_suffix("/data")
        && !id.contains('/')
    {
        return Topic::SeedData(id);
    }
    if let Some(rest) = topic.strip_prefix("gridpulse/meters/") {
        if let Some(id) = rest.strip_suffix("/readings")
            && !id.contains('/')
        {
            return Topic::Readings(id);
        }
        if let Some(id) = rest.strip_suffix("/status")
            && !id.contains('/')
        {
            return Topic::Status(id);
        }
    }
    Topic::Unknown
}

/// What became of one message.
#[derive(Debug, Clone, PartialEq)]
pub enum MessageOutcome {
    /// `accepted` readings were pushed; `refused` (code and reason) says why the others
    /// of the message were not (it then goes to the dead-letter path too).
    Readings {
        /// The topic's meter.
        meter: MeterId,
        /// Readings pushed to the output.
        accepted: usize,
        /// Why some or all readings were refused.
        refused: Option<(&'static str, String)>,
    },
    /// A meter announced its status.
    Status {
        /// The topic's meter.
        meter: MeterId,
        /// `online` (true) or `offline`.
        online: bool,
    },
    /// Nothing usable: dead letter with this code and reason.
    Refused(&'static str, String),
}

/// Decodes one message, pushing its valid readings onto `readings`.
pub fn decode(
    topic: &str,
    payload: &[u8],
    now_ms: i64,
    limits: &Limits,
    readings: &mut Vec<Reading>,
) -> MessageOutcome {
    let (id, is_readings) = match classify(topic) {
        Topic::SeedData(id) | Topic::Readings(id) => (id, true),
        Topic::Status(id) => (id, false),
        Topic::Unknown => {
            return MessageOutcome::Refused(
                "unknown_topic",
                format!("topic `{topic}` is not a gridpulse meter topic"),
            );
        }
    };
    let meter = match MeterId::new(id) {
        Ok(meter) => meter,
        Err(error) => {
            return MessageOutcome::Refused(
                "bad_topic_meter_id",
                format!("meter id `{id}` in the topic: {error}"),
            );
        }
    };
    if !is_readings {
        return match payload.trim_ascii() {
            b"online" => MessageOutcome::Status {
                meter,
                online: true,
            },
            b"offline" => MessageOutcome::Status {
                meter,
                online: false,
            },
            other => MessageOutcome::Refused(
                "bad_status",
                format!(
                    "status payload must be `online` or `offline`, got `{}`",
                    String::from_utf8_lossy(&other[..other.len().min(64)])
                ),
            ),
        };
    }
    let is_batch = payload.trim_ascii_start().first() == Some(&b'[');
    let parsed = match parse_batch(payload, now_ms, limits) {
        Ok(parsed) => parsed,
        Err(error) => return MessageOutcome::Refused("malformed_json", error.to_string()),
    };
    if parsed.is_empty() {
        return MessageOutcome::Refused("empty_batch", "the batch holds no reading".into());
    }
    let n_readings = parsed.len();
    let mut accepted = 0;
    let mut n_refused = 0;
    let mut first_refusal: Option<(usize, &'static str, String)> = None;
    for (reading_idx, result) in parsed.into_iter().enumerate() {
        let refusal = match result {
            Ok(reading) if reading.meter != meter => Some((
                "meter_mismatch",
                format!(
                    "payload meter `{}` does not match the topic's meter `{meter}`",
                    reading.meter
                ),
            )),
            Ok(mut reading) => {
                reading.backfill |= is_batch;
                readings.push(reading);
                accepted += 1;
                None
            }
            Err(error) => Some((error.reason.code(), error.to_string())),
        };
        if let Some((code, reason)) = refusal {
            n_refused += 1;
            if first_refusal.is_none() {
                first_refusal = Some((reading_idx, code, reason));
            }
        }
    }
    let refused = first_refusal.map(|(reading_idx, code, reason)| {
        if n_readings == 1 {
            (code, reason)
        } else {
            (
                code,
                format!(
                    "{n_refused} of {n_readings} readings refused; first, reading {reading_idx}: {reason}"
                ),
            )
        }
    });
    MessageOutcome::Readings {
        meter,
        accepted,
        refused,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: i64 = 1_760_000_000_000;

    fn run(topic: &str, payload: &str) -> (MessageOutcome, Vec<Reading>) {
        let mut readings = Vec::new();
        let outcome = decode(
            topic,
            payload.as_bytes(),
            NOW_MS,
            &Limits::default(),
            &mut readings,
        );
        (outcome, readings)
    }

    fn refused_code(outcome: &MessageOutcome) -> Option<&'static str> {
        match outcome {
            MessageOutcome::Refused(code, _) => Some(code),
            MessageOutcome::Readings {
                refused: Some((code, _)),
                ..
            } => Some(code),
            _ => None,
        }
    }

    #[test]
    fn topics() {
        assert_eq!(
            classify("/energy/meter-01/data"),
            Topic::SeedData("meter-01")
        );
        assert_eq!(
            classify("gridpulse/meters/m-1/readings"),
            Topic::Readings("m-1")
        );
        assert_eq!(
            classify("gridpulse/meters/m-1/status"),
            Topic::Status("m-1")
        );
        assert_eq!(classify("gridpulse/meters/a/b/readings"), Topic::Unknown);
        assert_eq!(classify("/energy/x/other"), Topic::Unknown);
    }

    #[test]
    fn seed_payload_in_kwh_and_seconds() {
        let (outcome, readings) = run(
            "/energy/meter-01/data",
            r#"{"deviceId":"meter-01","voltage":230.1,"current":2.0,"power":400,"energy":1.5,"timestamp":1760000000}"#,
        );
        assert_eq!(refused_code(&outcome), None, "{outcome:?}");
        assert_eq!(readings.len(), 1);
        assert_eq!(readings[0].energy_wh, 1500.0);
        assert_eq!(readings[0].ts_ms, 1_760_000_000_000);
        assert!(!readings[0].backfill);
    }

    #[test]
    fn batches_are_backfill_and_singles_are_live_unless_flagged() {
        let one = |ts: i64, backfill: &str| {
            format!(
                r#"{{"meter":"m-1","ts_ms":{ts},"voltage":230,"current":1,"power_w":200,"energy_wh":10{backfill}}}"#
            )
        };
        let (_, readings) = run(
            "gridpulse/meters/m-1/readings",
            &format!("[{},{}]", one(NOW_MS - 2000, ""), one(NOW_MS - 5000, "")),
        );
        assert_eq!(readings.len(), 2);
        assert!(readings.iter().all(|r| r.backfill));
        let (_, readings) = run("gridpulse/meters/m-1/readings", &one(NOW_MS, ""));
        assert!(!readings[0].backfill);
        let (_, readings) = run(
            "gridpulse/meters/m-1/readings",
            &one(NOW_MS, r#","backfill":true"#),
        );
        assert!(readings[0].backfill);
    }

    #[test]
    fn refusals_name_the_reason() {
        let canonical = r#"{"meter":"m-2","ts_ms":1760000000000,"voltage":230,"current":1,"power_w":200,"energy_wh":10}"#;
        let (outcome, readings) = run("gridpulse/meters/m-1/readings", canonical);
        assert_eq!(refused_code(&outcome), Some("meter_mismatch"));
        assert!(readings.is_empty());
        let (outcome, _) = run("gridpulse/meters/m-1/readings", "not json");
        assert_eq!(refused_code(&outcome), Some("malformed_json"));
        let (outcome, _) = run("gridpulse/meters/m-1/readings", "[]");
        assert_eq!(refused_code(&outcome), Some("empty_batch"));
        let (outcome, _) = run(
            "gridpulse/meters/m-1/readings",
            r#"{"meter":"m-1","ts_ms":1760000000000,"voltage":"high","current":1,"power_w":200,"energy_wh":10}"#,
        );
        assert_eq!(refused_code(&outcome), Some("wrong_type"));
        let (outcome, _) = run("gridpulse/meters/bad id/readings", canonical);
        assert_eq!(refused_code(&outcome), Some("bad_topic_meter_id"));
        let (outcome, _) = run("gridpulse/meters/m-1/status", "sleeping");
        assert_eq!(refused_code(&outcome), Some("bad_status"));
        let (outcome, _) = run("gridpulse/meters/m-1/status", "offline");
        assert!(matches!(
            outcome,
            MessageOutcome::Status { online: false, .. }
        ));
    }

    #[test]
    fn a_batch_keeps_its_good_readings_and_reports_the_first_bad_one() {
        let good = r#"{"meter":"m-1","ts_ms":1760000000000,"voltage":230,"current":1,"power_w":200,"energy_wh":10}"#;
        let bad = r#"{"meter":"m-1","ts_ms":1760000001000,"voltage":-5,"current":1,"power_w":200,"energy_wh":10}"#;
        let (outcome, readings) = run("gridpulse/meters/m-1/readings", &format!("[{good},{bad}]"));
        assert_eq!(readings.len(), 1);
        let MessageOutcome::Readings {
            accepted,
            refused: Some((code, reason)),
            ..
        } = outcome
        else {
            panic!("expected a partial batch: {outcome:?}");
        };
        assert_eq!((accepted, code), (1, "negative"));
        assert!(
            reason.contains("1 of 2 readings refused; first, reading 1: `voltage`"),
            "{reason}"
        );
    }
}
