//! HTTP routes, one file per resource.

pub mod alerts;
pub mod audit;
pub mod credit;
pub mod import;
pub mod meters;
pub mod money;
pub mod mqtt;
pub mod overview;
pub mod readings;
pub mod sessions;
pub mod system;
pub mod tariffs;
pub mod usage;
pub mod users;

use actix_web::web;
use futures_util::StreamExt;
use gridpulse_actors::AccountBook;
use gridpulse_domain::MeterId;
use serde::de::DeserializeOwned;

use crate::state::AppState;

use crate::error::ApiError;

/// Mounts every route.
pub fn configure(config: &mut web::ServiceConfig) {
    config
        .service(readings::post_readings)
        .service(import::post_import)
        .service(meters::list_meters)
        .service(meters::get_meter)
        .service(meters::put_thresholds)
        .service(meters::put_meter)
        .service(meters::create_meter)
        .service(tariffs::create_tariff)
        .service(tariffs::list_tariffs)
        .service(tariffs::get_tariff)
        .service(users::create_user)
        .service(users::list_users)
        .service(users::get_user)
        .service(users::put_user)
        .service(users::get_budget)
        .service(users::put_budget)
        .service(users::get_usage)
        .service(money::get_cost)
        .service(money::get_meter_cost)
        .service(money::get_bill)
        .service(money::get_events)
        .service(credit::post_topup)
        .service(credit::confirm_topup)
        .service(credit::fail_topup)
        .service(credit::get_credit)
        .service(credit::get_transactions)
        .service(sessions::create_session)
        .service(sessions::list_sessions)
        .service(sessions::opt_in)
        .service(sessions::get_session)
        .service(meters::get_readings)
        .service(usage::get_meter_usage)
        .service(audit::get_audit)
        .service(overview::get_overview)
        .service(mqtt::get_mqtt_status)
        .service(alerts::list_alerts)
        .service(alerts::get_alert)
        .service(alerts::ack_alert)
        .service(alerts::resolve_alert)
        .service(alerts::assign_alert)
        .service(alerts::comment_alert)
        .service(alerts::snooze_alert)
        .service(alerts::unsnooze_alert)
        .service(crate::ws::ws_alerts)
        .service(system::healthz)
        .service(system::readyz)
        .service(system::metrics)
        .service(system::openapi)
        .service(system::index);
}

/// Reads a request body, refusing more than `limit` bytes without buffering them.
pub async fn read_body(mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, ApiError> {
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|error| {
            ApiError::BadBody(format!("reading the request body failed: {error}"))
        })?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Parses a meter id from a path or query parameter named `field`.
pub fn parse_meter(field: &str, text: &str) -> Result<MeterId, ApiError> {
    MeterId::new(text).map_err(|error| ApiError::bad_field(field, error.to_string()))
}

/// The account book over the process's store; 503 without one: accounts and tariffs
/// are configuration that must survive a restart, and `--in-memory` has no store.
pub fn account_book(state: &AppState) -> Result<AccountBook, ApiError> {
    state
        .store
        .as_ref()
        .map(|store| AccountBook::new(std::sync::Arc::clone(store)))
        .ok_or_else(|| {
            ApiError::Unavailable(
                "accounts and tariffs need persistence: this process runs without a store \
                 (started with --in-memory)"
                    .into(),
            )
        })
}

/// Decodes a JSON body into `T`. Malformed JSON is a 400 saying where (line and
/// column); a value that does not fit — an unknown or missing key, a wrong type, a bad
/// amount — is a 400 naming the field by its path from the root (e.g.
/// `definition.energy.tiers[1].rate_per_kwh`) with a code (`unknown_field`,
/// `missing_field`, `invalid_value`).
pub fn decode_json<T: DeserializeOwned>(what: &str, body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| json_decode_error(what, body, &error))
}

fn json_decode_error(what: &str, body: &[u8], error: &serde_json::Error) -> ApiError {
    if !error.is_data() {
        return ApiError::BadBody(format!("{what}: malformed JSON: {error}"));
    }
    let message = error.to_string();
    let named_key = |prefix: &str| {
        message
            .strip_prefix(prefix)
            .and_then(|rest| rest.split_once('`'))
            .map(|(key, _)| key.to_owned())
    };
    let (code, key) = match (named_key("unknown field `"), named_key("missing field `")) {
        (Some(key), _) => ("unknown_field", Some(key)),
        (None, Some(key)) => ("missing_field", Some(key)),
        (None, None) => ("invalid_value", None),
    };
    let offset = byte_offset_of(body, error.line(), error.column());
    let unknown_key = (code == "unknown_field")
        .then_some(key.as_deref())
        .flatten();
    let located = locate_json_path(body, offset, unknown_key);
    let mut path = match located.last_occurrence_of_key {
        // Inside a tagged enum the decoder reports an unknown key after the enum's
        // whole object: the key's own position is its last occurrence in that object.
        Some(occurrence) if occurrence.starts_with(&located.path) => occurrence,
        _ => located.path,
    };
    // A missing key is reported at the end of its object.
    if let Some(key) = key
        && path.last() != Some(&JsonPathSegment::Key(key.clone()))
    {
        path.push(JsonPathSegment::Key(key));
    }
    if path.is_empty() {
        return ApiError::BadBody(format!("{what}: {message}"));
    }
    ApiError::InvalidField {
        field: format_json_path(&path),
        code,
        reason: message,
    }
}

/// The byte offset of serde_json's (1-based line, column = bytes into the line).
fn byte_offset_of(body: &[u8], line: usize, column: usize) -> usize {
    let start_of_line = if line <= 1 {
        0
    } else {
        body.iter()
            .enumerate()
            .filter(|(_, byte)| **byte == b'\n')
            .nth(line - 2)
            .map_or(body.len(), |(index, _)| index + 1)
    };
    start_of_line.saturating_add(column).min(body.len())
}

/// One step of a path into a JSON document.
#[derive(Debug, Clone, PartialEq, Eq)]
enum JsonPathSegment {
    Key(String),
    Index(usize),
}

fn format_json_path(path: &[JsonPathSegment]) -> String {
    let mut text = String::new();
    for segment in path {
        match segment {
            JsonPathSegment::Key(key) => {
                if !text.is_empty() {
                    text.push('.');
                }
                text.push_str(key);
            }
            JsonPathSegment::Index(index) => text.push_str(&format!("[{index}]")),
        }
    }
    text
}

/// Where a position in a JSON text is.
#[derive(Debug, Default)]
struct LocatedJsonPath {
    /// The path of the value being read there.
    path: Vec<JsonPathSegment>,
    /// The path of the last object key equal to the key asked for, before there.
    last_occurrence_of_key: Option<Vec<JsonPathSegment>>,
}

/// The path of the value being read after the first `offset` bytes of `body` (a JSON
/// text valid up to there): the keys and indices of the containers still open, with
/// the last key read in the innermost object; and where `key` last occurred as an
/// object key before that.
fn locate_json_path(body: &[u8], offset: usize, key: Option<&str>) -> LocatedJsonPath {
    enum Frame {
        Object {
            key: Option<String>,
            expecting_key: bool,
        },
        Array {
            index: usize,
        },
    }
    fn path_of(frames: &[Frame]) -> Vec<JsonPathSegment> {
        frames
            .iter()
            .filter_map(|frame| match frame {
                Frame::Object { key, .. } => key.clone().map(JsonPathSegment::Key),
                Frame::Array { index } => Some(JsonPathSegment::Index(*index)),
            })
            .collect()
    }
    let body = &body[..offset.min(body.len())];
    let mut frames: Vec<Frame> = Vec::new();
    let mut last_occurrence_of_key = None;
    let mut position = 0;
    while position < body.len() {
        match body[position] {
            b'{' => frames.push(Frame::Object {
                key: None,
                expecting_key: true,
            }),
            b'[' => frames.push(Frame::Array { index: 0 }),
            b'}' | b']' => {
                frames.pop();
            }
            b',' => match frames.last_mut() {
                Some(Frame::Object { expecting_key, .. }) => *expecting_key = true,
                Some(Frame::Array { index }) => *index += 1,
                None => {}
            },
            b':' => {
                if let Some(Frame::Object { expecting_key, .. }) = frames.last_mut() {
                    *expecting_key = false;
                }
            }
            b'"' => {
                let start = position + 1;
                let mut end = start;
                while end < body.len() && body[end] != b'"' {
                    end += if body[end] == b'\\' { 2 } else { 1 };
                }
                if let Some(Frame::Object {
                    key: current_key,
                    expecting_key: true,
                }) = frames.last_mut()
                {
                    let text = String::from_utf8_lossy(&body[start..end.min(body.len())]);
                    let is_key_asked_for = key == Some(text.as_ref());
                    *current_key = Some(text.into_owned());
                    if is_key_asked_for {
                        last_occurrence_of_key = Some(path_of(&frames));
                    }
                }
                position = end;
            }
            _ => {}
        }
        position += 1;
    }
    LocatedJsonPath {
        path: path_of(&frames),
        last_occurrence_of_key,
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        items: Vec<Inner>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Tagged {
        shape: Shape,
    }

    #[derive(Debug, Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
    #[allow(dead_code)]
    enum Shape {
        Boxes { items: Vec<Inner> },
    }

    #[test]
    fn unknown_keys_inside_tagged_enums_are_found_where_they_are() {
        let body =
            r#"{"shape": {"kind": "boxes", "items": [{"count": 1}, {"count": 2, "lid": true}]}}"#;
        match decode_json::<Tagged>("tagged", body.as_bytes()) {
            Err(ApiError::InvalidField { field, code, .. }) => {
                assert_eq!(
                    (field.as_str(), code),
                    ("shape.items[1].lid", "unknown_field")
                );
            }
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    fn field_and_code(body: &str) -> (String, &'static str) {
        match decode_json::<Outer>("outer", body.as_bytes()) {
            Err(ApiError::InvalidField { field, code, .. }) => (field, code),
            other => panic!("expected a field error, got {other:?}"),
        }
    }

    #[test]
    fn decode_errors_name_the_field_by_its_path() {
        assert_eq!(
            field_and_code(r#"{"name": "a", "items": [{"count": 1}, {"count": -1}]}"#),
            ("items[1].count".into(), "invalid_value")
        );
        assert_eq!(
            field_and_code("{\"name\": \"a\",\n \"items\": [{\"count\": 1, \"colour\": 2}]}"),
            ("items[0].colour".into(), "unknown_field")
        );
        assert_eq!(
            field_and_code(r#"{"name": "a", "items": [{}]}"#),
            ("items[0].count".into(), "missing_field")
        );
        assert_eq!(
            field_and_code(r#"{"items": []}"#),
            ("name".into(), "missing_field")
        );
        assert_eq!(
            field_and_code(r#"{"name": "a\"b", "items": [], "extra": true}"#),
            ("extra".into(), "unknown_field")
        );
    }

    #[test]
    fn malformed_json_says_where() {
        match decode_json::<Outer>("outer", b"{\"name\": \"a\",\n  \"items\": [}") {
            Err(ApiError::BadBody(message)) => {
                assert!(message.contains("line 2 column"), "{message}");
            }
            other => panic!("expected a body error, got {other:?}"),
        }
        assert!(matches!(
            decode_json::<Outer>("outer", b""),
            Err(ApiError::BadBody(_))
        ));
        assert!(matches!(
            decode_json::<Outer>("outer", b"\"text\""),
            Err(ApiError::BadBody(_))
        ));
    }
}
