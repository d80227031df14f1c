//! The websocket protocol's messages: decoding what clients send (every error names its
//! field, e.g. `filters.kinds[1]`) and encoding what the server sends.
//!
//! Client → server (JSON text):
//! * `{"type":"auth","token":"<JWT>"}`: the first message when the upgrade request
//!   carried no credentials.
//! * `{"type":"subscribe","filters":{"meters":[..],"user":"..","kinds":[..],
//!   "min_severity":"warning","types":[..]},"snapshot":true,"resume":{"epoch":"..",
//!   "alerts":N,"user_events":M}}`: sets or replaces the filters; every key is optional.
//!
//! Server → client: `snapshot`, `subscribed`, `reset`, `error`, `authenticated`,
//! `alert` events and user events (see the README's protocol section).

use gridpulse_actors::HubEvent;
use gridpulse_actors::user_events::{UserEvent, UserHubEvent};
use gridpulse_domain::{AlertEvent, AlertKind, AlertRecord, MeterId, UserId};
use serde::Serialize;
use serde_json::{Map, Value};

use super::subscription::{EVENT_TYPES, Filters, FiltersEcho, parse_severity};

/// Most meters one filter may name.
pub const MAX_FILTER_METERS: usize = 10_000;

/// A decoded client message.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// Credentials for a connection that has none yet.
    Auth {
        /// The bearer token (never logged).
        token: String,
    },
    /// New filters and where to start.
    Subscribe(SubscribeRequest),
}

/// A `subscribe` message.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubscribeRequest {
    /// The filters (absent keys: no restriction).
    pub filters: Filters,
    /// Send the open alerts that pass the filters first.
    pub snapshot: bool,
    /// Resume after these sequences instead of starting now.
    pub resume: Option<Resume>,
}

/// Where a reconnecting client left off.
#[derive(Debug, Clone, PartialEq)]
pub struct Resume {
    /// The epoch of the stream the sequences belong to.
    pub epoch: String,
    /// The last `seq` of an `alert` event received (absent: from now).
    pub alerts: Option<u64>,
    /// The last `stream_seq` of a user event received (absent: from now).
    pub user_events: Option<u64>,
}

/// Why a client message is refused: sent back as an `error` frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// Stable code: `malformed_json`, `missing_field`, `unknown_field`, `unknown_type`,
    /// `invalid_value`, `too_many`, `not_text`, `auth_required`, or an auth failure code.
    pub code: &'static str,
    /// What is wrong, for people.
    pub message: String,
    /// Path of the field to blame, e.g. `filters.kinds[1]`.
    pub field: Option<String>,
}

impl ProtocolError {
    /// An error about one field.
    pub fn field(code: &'static str, field: impl Into<String>, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// An error about the message as a whole.
    pub fn whole(code: &'static str, message: impl Into<String>) -> Self {
        ProtocolError {
            code,
            message: message.into(),
            field: None,
        }
    }

    /// The `error` frame.
    pub fn frame(&self) -> String {
        #[derive(Serialize)]
        struct Body<'a> {
            code: &'static str,
            message: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            field: Option<&'a str>,
        }
        encode(&serde_json::json!({
            "type": "error",
            "error": Body { code: self.code, message: &self.message, field: self.field.as_deref() },
        }))
    }
}

/// Decodes one text message.
pub fn decode(text: &str) -> Result<ClientMessage, ProtocolError> {
    let value: Value = serde_json::from_str(text).map_err(|error| {
        ProtocolError::whole(
            "malformed_json",
            format!(
                "not JSON: {error} (line {}, column {})",
                error.line(),
                error.column()
            ),
        )
    })?;
    let Value::Object(object) = value else {
        return Err(ProtocolError::whole(
            "invalid_value",
            "a message must be a JSON object with a `type`",
        ));
    };
    let kind = match object.get("type") {
        None => {
            return Err(ProtocolError::field(
                "missing_field",
                "type",
                "`type` is required: `subscribe` or `auth`",
            ));
        }
        Some(Value::String(kind)) => kind.as_str(),
        Some(_) => {
            return Err(ProtocolError::field(
                "invalid_value",
                "type",
                "`type` must be a string: `subscribe` or `auth`",
            ));
        }
    };
    match kind {
        "auth" => {
            only_keys(&object, "", &["type", "token"])?;
            match object.get("token") {
                Some(Value::String(token)) if !token.trim().is_empty() => Ok(ClientMessage::Auth {
                    token: token.clone(),
                }),
                None => Err(ProtocolError::field(
                    "missing_field",
                    "token",
                    "`token` is required",
                )),
                Some(_) => Err(ProtocolError::field(
                    "invalid_value",
                    "token",
                    "`token` must be a non-empty string",
                )),
            }
        }
        "subscribe" => decode_subscribe(&object).map(ClientMessage::Subscribe),
        other => Err(ProtocolError::field(
            "unknown_type",
            "type",
            format!("unknown message type `{other}`: `subscribe` or `auth`"),
        )),
    }
}

fn decode_subscribe(object: &Map<String, Value>) -> Result<SubscribeRequest, ProtocolError> {
    only_keys(object, "", &["type", "filters", "snapshot", "resume"])?;
    let filters = match object.get("filters") {
        None | Some(Value::Null) => Filters::default(),
        Some(Value::Object(filters)) => decode_filters(filters)?,
        Some(_) => {
            return Err(ProtocolError::field(
                "invalid_value",
                "filters",
                "`filters` must be an object",
            ));
        }
    };
    let snapshot = match object.get("snapshot") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(snapshot)) => *snapshot,
        Some(_) => {
            return Err(ProtocolError::field(
                "invalid_value",
                "snapshot",
                "`snapshot` must be true or false",
            ));
        }
    };
    let resume = match object.get("resume") {
        None | Some(Value::Null) => None,
        Some(Value::Object(resume)) => Some(decode_resume(resume)?),
        Some(_) => {
            return Err(ProtocolError::field(
                "invalid_value",
                "resume",
                "`resume` must be an object {\"epoch\", \"alerts\", \"user_events\"}",
            ));
        }
    };
    Ok(SubscribeRequest {
        filters,
        snapshot,
        resume,
    })
}

fn decode_filters(object: &Map<String, Value>) -> Result<Filters, ProtocolError> {
    only_keys(
        object,
        "filters.",
        &["meters", "user", "kinds", "min_severity", "types"],
    )?;
    let mut filters = Filters::default();
    if let Some(items) = array(object, "filters.meters", "meters")? {
        if items.len() > MAX_FILTER_METERS {
            return Err(ProtocolError::field(
                "too_many",
                "filters.meters",
                format!("at most {MAX_FILTER_METERS} meters per subscription"),
            ));
        }
        let meters = items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                let field = format!("filters.meters[{index}]");
                let text = string(item, &field)?;
                MeterId::new(text).map_err(|error| {
                    ProtocolError::field("invalid_value", field, error.to_string())
                })
            })
            .collect::<Result<Vec<MeterId>, ProtocolError>>()?;
        filters.meters = Some(meters);
    }
    match object.get("user") {
        None | Some(Value::Null) => {}
        Some(item) => {
            let text = string(item, "filters.user")?;
            filters.user = Some(UserId::new(text).map_err(|error| {
                ProtocolError::field("invalid_value", "filters.user", error.to_string())
            })?);
        }
    }
    if let Some(items) = array(object, "filters.kinds", "kinds")? {
        let kinds = items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                let field = format!("filters.kinds[{index}]");
                let text = string(item, &field)?;
                AlertKind::parse(text).ok_or_else(|| {
                    let names: Vec<&str> =
                        AlertKind::ALL.iter().map(|kind| kind.as_str()).collect();
                    ProtocolError::field(
                        "invalid_value",
                        field,
                        format!("unknown alert kind `{text}`: one of {}", names.join(", ")),
                    )
                })
            })
            .collect::<Result<Vec<AlertKind>, ProtocolError>>()?;
        filters.kinds = Some(kinds);
    }
    match object.get("min_severity") {
        None | Some(Value::Null) => {}
        Some(item) => {
            let text = string(item, "filters.min_severity")?;
            filters.min_severity = parse_severity(text).ok_or_else(|| {
                ProtocolError::field(
                    "invalid_value",
                    "filters.min_severity",
                    "must be one of info, warning, critical",
                )
            })?;
        }
    }
    if let Some(items) = array(object, "filters.types", "types")? {
        let types = items
            .iter()
            .enumerate()
            .map(|(index, item)| {
                let field = format!("filters.types[{index}]");
                let text = string(item, &field)?;
                known_type(text).ok_or_else(|| {
                    ProtocolError::field(
                        "invalid_value",
                        field,
                        format!(
                            "unknown event type `{text}`: one of {}",
                            EVENT_TYPES.join(", ")
                        ),
                    )
                })
            })
            .collect::<Result<Vec<&'static str>, ProtocolError>>()?;
        filters.types = Some(types);
    }
    Ok(filters)
}

fn decode_resume(object: &Map<String, Value>) -> Result<Resume, ProtocolError> {
    only_keys(object, "resume.", &["epoch", "alerts", "user_events"])?;
    let epoch = match object.get("epoch") {
        None | Some(Value::Null) => {
            return Err(ProtocolError::field(
                "missing_field",
                "resume.epoch",
                "`resume.epoch` is required: the `epoch` of the snapshot or subscribed message",
            ));
        }
        Some(item) => string(item, "resume.epoch")?.to_owned(),
    };
    let sequence = |key: &str| -> Result<Option<u64>, ProtocolError> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(item) => item.as_u64().map(Some).ok_or_else(|| {
                ProtocolError::field(
                    "invalid_value",
                    format!("resume.{key}"),
                    "must be a sequence number (an integer ≥ 0)",
                )
            }),
        }
    };
    Ok(Resume {
        epoch,
        alerts: sequence("alerts")?,
        user_events: sequence("user_events")?,
    })
}

/// The known event type `name`, as the static string filters keep.
pub fn known_type(name: &str) -> Option<&'static str> {
    EVENT_TYPES.iter().copied().find(|known| *known == name)
}

fn only_keys(
    object: &Map<String, Value>,
    prefix: &str,
    known: &[&str],
) -> Result<(), ProtocolError> {
    match object.keys().find(|key| !known.contains(&key.as_str())) {
        None => Ok(()),
        Some(key) => Err(ProtocolError::field(
            "unknown_field",
            format!("{prefix}{key}"),
            format!(
                "unknown field `{key}`: expected one of {}",
                known.join(", ")
            ),
        )),
    }
}

fn array<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    key: &str,
) -> Result<Option<&'a Vec<Value>>, ProtocolError> {
    match object.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => Ok(Some(items)),
        Some(_) => Err(ProtocolError::field(
            "invalid_value",
            field,
            "must be an array",
        )),
    }
}

fn string<'a>(value: &'a Value, field: &str) -> Result<&'a str, ProtocolError> {
    value
        .as_str()
        .ok_or_else(|| ProtocolError::field("invalid_value", field, "must be a string"))
}

/// JSON text of a server message (these types always serialize).
fn encode(message: &impl Serialize) -> String {
    serde_json::to_string(message).unwrap_or_else(|error| {
        tracing::error!(%error, "websocket message not encodable");
        r#"{"type":"error","error":{"code":"internal","message":"message not encodable"}}"#
            .to_owned()
    })
}

/// `{"type":"snapshot","epoch","seq","user_events_seq","alerts"}`.
pub fn snapshot_frame(
    epoch: &str,
    seq: u64,
    user_events_seq: u64,
    alerts: &[&AlertRecord],
) -> String {
    #[derive(Serialize)]
    struct Snapshot<'a> {
        r#type: &'static str,
        epoch: &'a str,
        seq: u64,
        user_events_seq: u64,
        alerts: &'a [&'a AlertRecord],
    }
    encode(&Snapshot {
        r#type: "snapshot",
        epoch,
        seq,
        user_events_seq,
        alerts,
    })
}

/// `{"type":"subscribed",...}`: the effective filters and the positions the stream
/// continues from.
pub fn subscribed_frame(
    epoch: &str,
    filters: &FiltersEcho<'_>,
    tenant: Option<UserId>,
    alerts_seq: u64,
    user_events_seq: u64,
    resumed: bool,
) -> String {
    #[derive(Serialize)]
    struct Subscribed<'a> {
        r#type: &'static str,
        epoch: &'a str,
        filters: &'a FiltersEcho<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        tenant: Option<&'a str>,
        alerts_seq: u64,
        user_events_seq: u64,
        resumed: bool,
    }
    encode(&Subscribed {
        r#type: "subscribed",
        epoch,
        filters,
        tenant: tenant.as_ref().map(UserId::as_str),
        alerts_seq,
        user_events_seq,
        resumed,
    })
}

/// `{"type":"reset","epoch","streams","reason"}`: the requested resume of `streams` is
/// impossible; for `alerts` a snapshot follows.
pub fn reset_frame(epoch: &str, streams: &[&str], reason: &str) -> String {
    encode(&serde_json::json!({
        "type": "reset",
        "epoch": epoch,
        "streams": streams,
        "reason": reason,
    }))
}

/// `{"type":"authenticated","subject","role","user"}`.
pub fn authenticated_frame(principal: &crate::auth::Principal) -> String {
    encode(&serde_json::json!({
        "type": "authenticated",
        "subject": &*principal.subject,
        "role": principal.role.as_str(),
        "user": principal.user.as_ref().map(UserId::as_str),
    }))
}

/// The wire text of an alert event: `{"type":"alert","seq",..,"event",..,"alert":{..}}`
/// (made once per event, shared by every client).
pub fn alert_wire(event: &HubEvent) -> &bytestring::ByteString {
    #[derive(Serialize)]
    struct EventMessage<'a> {
        r#type: &'static str,
        #[serde(flatten)]
        event: &'a AlertEvent,
    }
    event.wire(|event| {
        encode(&EventMessage {
            r#type: "alert",
            event: &event.event,
        })
        .into()
    })
}

/// The wire text of a user event: the event (`type`, `seq` of the user, `id`, …) and
/// `stream_seq`, its position in the user event stream (made once per event).
pub fn user_event_wire(event: &UserHubEvent) -> &bytestring::ByteString {
    #[derive(Serialize)]
    struct UserEventMessage<'a> {
        #[serde(flatten)]
        event: &'a UserEvent,
        stream_seq: u64,
    }
    event.wire(|numbered| {
        encode(&UserEventMessage {
            event: &numbered.event,
            stream_seq: numbered.seq,
        })
        .into()
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn check_error(text: &str, code: &str, field: Option<&str>) {
        let error = decode(text).unwrap_err();
        assert_eq!(
            (error.code, error.field.as_deref()),
            (code, field),
            "{text}: {}",
            error.message
        );
        let frame: Value = serde_json::from_str(&error.frame()).unwrap();
        assert_eq!(frame["type"], "error");
        assert_eq!(frame["error"]["code"], code);
    }

    #[test]
    fn bad_messages_name_their_field() {
        check_error("{", "malformed_json", None);
        check_error("[1]", "invalid_value", None);
        check_error("{}", "missing_field", Some("type"));
        check_error(r#"{"type":"unsubscribe"}"#, "unknown_type", Some("type"));
        check_error(
            r#"{"type":"subscribe","filter":{}}"#,
            "unknown_field",
            Some("filter"),
        );
        check_error(
            r#"{"type":"subscribe","filters":{"kinds":["over_voltage","overvoltage"]}}"#,
            "invalid_value",
            Some("filters.kinds[1]"),
        );
        check_error(
            r#"{"type":"subscribe","filters":{"meters":["m-1","bad meter"]}}"#,
            "invalid_value",
            Some("filters.meters[1]"),
        );
        check_error(
            r#"{"type":"subscribe","filters":{"meters":"m-1"}}"#,
            "invalid_value",
            Some("filters.meters"),
        );
        check_error(
            r#"{"type":"subscribe","filters":{"min_severity":"high"}}"#,
            "invalid_value",
            Some("filters.min_severity"),
        );
        check_error(
            r#"{"type":"subscribe","filters":{"types":["alert",3]}}"#,
            "invalid_value",
            Some("filters.types[1]"),
        );
        check_error(
            r#"{"type":"subscribe","filters":{"colour":"red"}}"#,
            "unknown_field",
            Some("filters.colour"),
        );
        check_error(
            r#"{"type":"subscribe","resume":{"alerts":3}}"#,
            "missing_field",
            Some("resume.epoch"),
        );
        check_error(
            r#"{"type":"subscribe","resume":{"epoch":"e","alerts":-3}}"#,
            "invalid_value",
            Some("resume.alerts"),
        );
        check_error(
            r#"{"type":"subscribe","snapshot":"yes"}"#,
            "invalid_value",
            Some("snapshot"),
        );
        check_error(r#"{"type":"auth"}"#, "missing_field", Some("token"));
        let many: Vec<String> = (0..=MAX_FILTER_METERS).map(|i| format!("m-{i}")).collect();
        check_error(
            &serde_json::json!({"type": "subscribe", "filters": {"meters": many}}).to_string(),
            "too_many",
            Some("filters.meters"),
        );
    }

    #[test]
    fn subscribe_messages_decode() {
        let message = decode(
            r#"{"type":"subscribe","filters":{"meters":["m-1"],"user":"u-1","kinds":["over_voltage"],
                "min_severity":"warning","types":["alert","budget"]},"snapshot":true,
                "resume":{"epoch":"e-1","alerts":7}}"#,
        )
        .unwrap();
        let ClientMessage::Subscribe(request) = message else {
            panic!("not a subscribe: {message:?}");
        };
        assert!(request.snapshot);
        assert_eq!(request.filters.meters.unwrap()[0].as_str(), "m-1");
        assert_eq!(request.filters.kinds, Some(vec![AlertKind::OverVoltage]));
        assert_eq!(request.filters.types, Some(vec!["alert", "budget"]));
        assert_eq!(
            request.resume,
            Some(Resume {
                epoch: "e-1".into(),
                alerts: Some(7),
                user_events: None
            })
        );
        assert_eq!(
            decode(r#"{"type":"subscribe"}"#).unwrap(),
            ClientMessage::Subscribe(SubscribeRequest::default())
        );
        assert_eq!(
            decode(r#"{"type":"auth","token":"abc"}"#).unwrap(),
            ClientMessage::Auth {
                token: "abc".into()
            }
        );
    }
}
