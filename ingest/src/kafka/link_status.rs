//! A meter's link status (its MQTT status topic, e.g. its last will) as a record of the
//! `readings` topic, for a bridge that does not host the meters (`gridpulse
//! mqtt-bridge --kafka-brokers`).
//!
//! Key = the meter id (so the record lands in the meter's partition, after the readings
//! the bridge produced before it), header [`RECORD_HEADER`] = [`LINK_STATUS`], payload
//! `{"meter":"m-1","status":"offline","at_ms":1764600000000}` (`status`: `online` /
//! `offline`; `at_ms`: when the bridge received it). The processor's consumer turns it
//! into the same link change the embedded bridge makes; a record with another
//! [`RECORD_HEADER`] value, or a malformed status record, is a dead letter with its
//! reason. Records without the header are readings.

use gridpulse_domain::MeterId;

/// The header that marks a record of `readings` that is not a reading.
pub const RECORD_HEADER: &str = "gridpulse-record";
/// Its value for a link status.
pub const LINK_STATUS: &str = "link-status";

/// What the header says a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum RecordKind {
    /// No header: a reading (the hot path).
    #[default]
    Reading,
    /// A link status.
    LinkStatus,
    /// A `gridpulse-record` this version does not know.
    Unknown,
}

impl RecordKind {
    /// The kind of a record by its headers (no header: a reading, without a lookup).
    pub(crate) fn of(headers: Option<&rdkafka::message::BorrowedHeaders>) -> RecordKind {
        use rdkafka::message::Headers;
        let Some(headers) = headers else {
            return RecordKind::Reading;
        };
        match headers.iter().find(|header| header.key == RECORD_HEADER) {
            None => RecordKind::Reading,
            Some(header) if header.value == Some(LINK_STATUS.as_bytes()) => RecordKind::LinkStatus,
            Some(_) => RecordKind::Unknown,
        }
    }
}

/// The payload of a link status record.
pub fn encode(meter: &MeterId, online: bool, at_ms: i64) -> Vec<u8> {
    serde_json::json!({
        "meter": meter.as_str(),
        "status": if online { "online" } else { "offline" },
        "at_ms": at_ms,
    })
    .to_string()
    .into_bytes()
}

#[derive(serde::Deserialize)]
struct Payload<'a> {
    meter: &'a str,
    status: &'a str,
    at_ms: i64,
}

/// A link status record's (meter, online, at_ms), or a dead letter's (code, reason).
pub fn decode(
    key: Option<&[u8]>,
    payload: &[u8],
) -> Result<(MeterId, bool, i64), (&'static str, String)> {
    let parsed: Payload<'_> = serde_json::from_slice(payload)
        .map_err(|error| ("malformed_status", format!("link status: {error}")))?;
    let meter = MeterId::new(parsed.meter)
        .map_err(|error| ("invalid_meter", format!("link status `meter`: {error}")))?;
    if key.is_some_and(|key| key != meter.as_str().as_bytes()) {
        return Err((
            "meter_mismatch",
            "record key names a different meter than the link status".to_owned(),
        ));
    }
    let online = match parsed.status {
        "online" => true,
        "offline" => false,
        other => {
            return Err((
                "unknown_status",
                format!("link status `status`: `{other}` is neither `online` nor `offline`"),
            ));
        }
    };
    if parsed.at_ms <= 0 {
        return Err((
            "invalid_value",
            "link status `at_ms`: must be a positive Unix time in ms".to_owned(),
        ));
    }
    Ok((meter, online, parsed.at_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_round_trips_and_bad_ones_name_their_reason() {
        let meter = MeterId::new("m-1").unwrap_or_else(|_| unreachable!());
        let payload = encode(&meter, false, 1_764_600_000_000);
        assert_eq!(
            decode(Some(b"m-1"), &payload),
            Ok((meter, false, 1_764_600_000_000))
        );
        assert_eq!(decode(None, &encode(&meter, true, 5)), Ok((meter, true, 5)));
        let code = |key: Option<&[u8]>, payload: &[u8]| decode(key, payload).map_err(|e| e.0);
        assert_eq!(code(Some(b"m-2"), &payload), Err("meter_mismatch"));
        assert_eq!(code(None, b"{oops"), Err("malformed_status"));
        assert_eq!(
            code(None, br#"{"meter":"m-1","status":"asleep","at_ms":5}"#),
            Err("unknown_status")
        );
        assert_eq!(
            code(
                None,
                br#"{"meter":"bad meter","status":"online","at_ms":5}"#
            ),
            Err("invalid_meter")
        );
        assert_eq!(
            code(None, br#"{"meter":"m-1","status":"online","at_ms":-1}"#),
            Err("invalid_value")
        );
        assert_eq!(
            code(None, br#"{"meter":"m-1","status":"online"}"#),
            Err("malformed_status")
        );
    }
}
