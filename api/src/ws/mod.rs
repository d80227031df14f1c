//! `GET /ws/alerts`: live alert and user events over a websocket, with filters that
//! can change on the fly, gap-free resume and per-connection backpressure.
//!
//! Query parameters (`meter`, `kind`, `min_severity`, `user`, `types`, `snapshot`) are
//! the initial filters, as before: the connection starts with a `snapshot` (unless
//! `snapshot=false`) and streams at once. With `deferred=true` nothing is sent until
//! the client's first `subscribe` message, which is how a reconnecting client resumes.
//! A client can send `subscribe` at any time to replace its filters; each is answered
//! with `subscribed` (the effective filters, the epoch and the positions), then a
//! `reset` if the requested resume is impossible, a `snapshot` if asked for (or after a
//! reset of the alert stream), the replayed events, and live events — in sequence order
//! per stream, with no gap and no duplicate. See [`protocol`] for the messages.
//!
//! Each connection has a bounded queue ([`fanout`]); a client that falls more than
//! [`WsConfig::client_queue`] events behind is closed with code 1013 and a reason
//! naming the sequences to resume from, without slowing anybody else. The server pings
//! every [`WsConfig::ping_interval`] and closes connections silent for
//! [`WsConfig::idle_timeout`].
//!
//! Authentication: the caller passes the [`Principal`] if the upgrade request carried
//! credentials; otherwise the first message must be `{"type":"auth","token":".."}`. A
//! consumer principal only ever receives alerts of their own meters and their own user
//! events ([`subscription`]). Tokens are never logged.

pub mod fanout;
pub mod protocol;
pub mod subscription;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, get, web};
use actix_ws::{CloseCode, CloseReason, Message};
use bytestring::ByteString;
use futures_util::StreamExt;
use gridpulse_domain::{AlertRecord, UserId};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::auth::{AuthError, Principal};
use crate::error::ApiError;
use crate::routes::alerts::parse_kind;
use crate::routes::parse_meter;
use crate::state::AppState;
use fanout::{ConnectionSignal, Frame, Registration};
use protocol::{ClientMessage, ProtocolError, SubscribeRequest};
use subscription::{Filters, OWNERSHIP_REFRESH, Subscription, effective, owned_meters};

/// Websocket settings (part of the embedded configuration).
#[derive(Debug, Clone)]
pub struct WsConfig {
    /// How often the server pings each client.
    pub ping_interval: Duration,
    /// A client silent this long (no message, no pong) is closed.
    pub idle_timeout: Duration,
    /// Events queued per connection before it is closed as too slow.
    pub client_queue: usize,
    /// How long a connection without credentials may take to send its `auth` message.
    pub auth_timeout: Duration,
    /// How long a close frame may wait behind unread data before the session is dropped.
    pub close_timeout: Duration,
}

impl Default for WsConfig {
    fn default() -> WsConfig {
        WsConfig {
            ping_interval: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            client_queue: 8192,
            auth_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(10),
        }
    }
}

/// Frames one connection sends in a row before it looks at its other duties again.
const SEND_BURST: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WsQuery {
    meter: Option<String>,
    kind: Option<String>,
    min_severity: Option<String>,
    snapshot: Option<bool>,
    user: Option<String>,
    types: Option<String>,
    deferred: Option<bool>,
}

fn parse_types(text: &str) -> Result<Vec<&'static str>, ApiError> {
    text.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            protocol::known_type(name).ok_or_else(|| {
                ApiError::bad_field(
                    "types",
                    format!(
                        "unknown event type `{name}`: one of {}",
                        subscription::EVENT_TYPES.join(", ")
                    ),
                )
            })
        })
        .collect()
}

/// The initial subscription of the query parameters (`None` with `deferred=true`).
fn initial_request(query: &WsQuery) -> Result<Option<SubscribeRequest>, ApiError> {
    let filters = Filters {
        meters: query
            .meter
            .as_deref()
            .map(|text| parse_meter("meter", text).map(|meter| vec![meter]))
            .transpose()?,
        kinds: query
            .kind
            .as_deref()
            .map(|text| parse_kind(text).map(|kind| vec![kind]))
            .transpose()?,
        min_severity: match query.min_severity.as_deref() {
            None => gridpulse_domain::Severity::Info,
            Some(text) => subscription::parse_severity(text).ok_or_else(|| {
                ApiError::bad_field("min_severity", "must be one of info, warning, critical")
            })?,
        },
        user: query
            .user
            .as_deref()
            .map(|text| {
                UserId::new(text).map_err(|error| ApiError::bad_field("user", error.to_string()))
            })
            .transpose()?,
        types: query.types.as_deref().map(parse_types).transpose()?,
    };
    if query.deferred.unwrap_or(false) {
        return Ok(None);
    }
    Ok(Some(SubscribeRequest {
        filters,
        snapshot: query.snapshot.unwrap_or(true),
        resume: None,
    }))
}

/// Upgrades to a websocket streaming alert and user events.
#[utoipa::path(
    get,
    path = "/ws/alerts",
    tag = "websocket",
    responses(
        (status = 101, description = "Switching to the websocket protocol"),
        (status = 400, description = "A parameter or body field is invalid (`error.field` names it)", body = crate::openapi::ErrorResponse),
        (status = 401, description = "No valid token (`error.code` says why)", body = crate::openapi::ErrorResponse),
        (status = 403, description = "The caller's role may not do this", body = crate::openapi::ErrorResponse),
        (status = 429, description = "Rate limit exceeded (see `Retry-After`)", body = crate::openapi::ErrorResponse),
    ),
)]
#[get("/ws/alerts")]
pub async fn ws_alerts(
    state: web::Data<AppState>,
    request: HttpRequest,
    body: web::Payload,
    query: web::Query<WsQuery>,
) -> Result<HttpResponse, actix_web::Error> {
    let initial = initial_request(&query)?;
    // Credentials on the upgrade request, if any; without them (and without the
    // insecure development mode) the first message must authenticate.
    let principal = match request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
    {
        Some(header) => match state
            .auth
            .authenticate_header(Some(header.as_bytes()))
            .and_then(may_subscribe)
        {
            Ok(principal) => Some(principal),
            Err(error) => return Ok(unauthorized(error)),
        },
        None if state.auth.is_insecure() => Some(Principal::insecure_dev()),
        None => None,
    };
    let (response, session, messages) = actix_ws::handle(&request, body)?;
    let state = state.get_ref().clone();
    let auth = state.auth.clone();
    actix_web::rt::spawn(async move {
        crate::metrics::record_websocket_clients(1);
        serve_connection(state, session, messages, initial, principal, move |token| {
            auth.authenticate_token(token).and_then(may_subscribe)
        })
        .await;
        crate::metrics::record_websocket_clients(-1);
    });
    Ok(response)
}

fn unauthorized(error: AuthError) -> HttpResponse {
    actix_web::ResponseError::error_response(&crate::error::ApiError::Unauthorized(error))
}

/// Who may subscribe: the readers (a `service` token ingests, it does not watch).
fn may_subscribe(principal: Principal) -> Result<Principal, AuthError> {
    match principal.role {
        crate::auth::Role::Service => Err(AuthError::RoleNotAllowed),
        _ => Ok(principal),
    }
}

/// Why a connection stops.
enum Stop {
    /// The client went away (or closed): nothing more to send.
    Gone,
    /// Close with this reason.
    Close(CloseReason),
}

fn close_reason(code: CloseCode, text: String) -> Stop {
    // A close frame's reason is at most 123 bytes.
    let mut text = text;
    if text.len() > 123 {
        let mut end = 123;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    Stop::Close(CloseReason {
        code,
        description: Some(text),
    })
}

/// Serves one upgraded connection until it closes. `principal` is the caller if the
/// upgrade request authenticated it; otherwise the connection waits for an `auth`
/// message and checks its token with `authenticate`. `initial` is the subscription of
/// the query parameters (`None`: wait for a `subscribe` message).
pub async fn serve_connection(
    state: AppState,
    session: actix_ws::Session,
    mut messages: actix_ws::MessageStream,
    initial: Option<SubscribeRequest>,
    principal: Option<Principal>,
    authenticate: impl Fn(&str) -> Result<Principal, AuthError>,
) {
    let config = state.ws.clone();
    let mut connection = Connection {
        fanout: Arc::clone(&state.fanout),
        state,
        session,
        config,
        principal: None,
        registration: None,
        queue: None,
        filters: Filters::default(),
        subscription: None,
        alerts_at: 0,
        user_events_at: 0,
        last_heard: Instant::now(),
    };
    let outcome = async {
        connection.principal = Some(match principal {
            Some(principal) => principal,
            None => {
                connection
                    .authenticate(&mut messages, &authenticate)
                    .await?
            }
        });
        if let Some(request) = initial {
            connection.subscribe(request, false).await?;
        }
        connection.run(&mut messages).await
    }
    .await;
    let Connection {
        session,
        config,
        registration,
        ..
    } = connection;
    drop(registration);
    if let Err(Stop::Close(reason)) = outcome {
        // Behind unread data the close frame may wait; bounded.
        let _ = tokio::time::timeout(config.close_timeout, session.close(Some(reason))).await;
    }
}

struct Connection {
    state: AppState,
    fanout: Arc<fanout::Fanout>,
    session: actix_ws::Session,
    config: WsConfig,
    principal: Option<Principal>,
    registration: Option<Registration>,
    queue: Option<mpsc::Receiver<Frame>>,
    /// The filters as last asked for (ownership refreshes re-apply them).
    filters: Filters,
    subscription: Option<Arc<Subscription>>,
    /// The last alert sequence this connection is past (sent or filtered out).
    alerts_at: u64,
    /// The last user event stream sequence this connection is past.
    user_events_at: u64,
    last_heard: Instant,
}

impl Connection {
    /// Sends `text`; gives up when the dispatcher dropped the connection (overflow) or
    /// the client has been silent past the idle timeout.
    async fn send(&mut self, text: impl Into<ByteString>) -> Result<(), Stop> {
        let deadline = self.last_heard + self.config.idle_timeout;
        let signal = self.registration.as_ref().map(|r| Arc::clone(&r.signal));
        tokio::select! {
            biased;
            sent = self.session.text(text) => sent.map_err(|_| Stop::Gone),
            () = dropped(signal.as_deref()) => Err(self.dropped_reason()),
            () = tokio::time::sleep_until(deadline) => {
                Err(close_reason(CloseCode::Away, "idle timeout".into()))
            }
        }
    }

    async fn send_error(&mut self, error: &ProtocolError) -> Result<(), Stop> {
        self.send(error.frame()).await
    }

    fn dropped_reason(&self) -> Stop {
        let signal = self.registration.as_ref().map(|r| &r.signal);
        let (alerts, user_events) = (self.alerts_at, self.user_events_at);
        if signal.is_some_and(|signal| signal.overflowed()) {
            let capacity = self.registration.as_ref().map_or(0, |r| r.capacity);
            close_reason(
                CloseCode::Again,
                format!(
                    "client too slow: {capacity} events behind; resume from seq {alerts} (user_events {user_events})"
                ),
            )
        } else {
            close_reason(
                CloseCode::Again,
                format!(
                    "server fell behind the event stream; resume from seq {alerts} (user_events {user_events})"
                ),
            )
        }
    }

    /// Waits for the `auth` message (bounded by the auth timeout).
    async fn authenticate(
        &mut self,
        messages: &mut actix_ws::MessageStream,
        authenticate: &impl Fn(&str) -> Result<Principal, AuthError>,
    ) -> Result<Principal, Stop> {
        let deadline = Instant::now() + self.config.auth_timeout;
        loop {
            let message = match tokio::time::timeout_at(deadline, messages.next()).await {
                Err(_) => {
                    return Err(close_reason(
                        CloseCode::Policy,
                        r#"authentication required: send {"type":"auth","token":"..."} first"#
                            .into(),
                    ));
                }
                Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return Err(Stop::Gone),
                Ok(Some(Ok(message))) => message,
            };
            self.last_heard = Instant::now();
            let text = match message {
                Message::Text(text) => text,
                Message::Ping(bytes) => {
                    self.session.pong(&bytes).await.map_err(|_| Stop::Gone)?;
                    continue;
                }
                Message::Binary(_) => {
                    self.send_error(&not_text()).await?;
                    continue;
                }
                _ => continue,
            };
            match protocol::decode(&text) {
                Ok(ClientMessage::Auth { token }) => match authenticate(&token) {
                    Ok(principal) => {
                        self.send(protocol::authenticated_frame(&principal)).await?;
                        return Ok(principal);
                    }
                    Err(error) => {
                        tracing::info!(reason = error.code(), "websocket authentication failed");
                        self.send_error(&ProtocolError::field(
                            error.code(),
                            "token",
                            error.to_string(),
                        ))
                        .await?;
                        return Err(close_reason(
                            CloseCode::Policy,
                            format!("authentication failed: {error}"),
                        ));
                    }
                },
                Ok(ClientMessage::Subscribe(_)) => {
                    self.send_error(&ProtocolError::field(
                        "auth_required",
                        "type",
                        r#"authenticate first: {"type":"auth","token":"..."}"#,
                    ))
                    .await?;
                }
                Err(error) => self.send_error(&error).await?,
            }
        }
    }

    /// Applies a subscription: registers the filters with the dispatcher, then catches
    /// up (replay, reset, snapshot) from the hubs. `announce` sends `subscribed` first
    /// (every `subscribe` message; not the query parameters' initial subscription, whose
    /// first frame stays the snapshot).
    async fn subscribe(&mut self, request: SubscribeRequest, announce: bool) -> Result<(), Stop> {
        let tenant = self.principal.as_ref().and_then(Principal::tenant);
        let owned = match tenant {
            Some(tenant) => {
                Some(owned_meters(&self.state, tenant, request.filters.meters.as_deref()).await)
            }
            None => None,
        };
        let subscription = Arc::new(effective(&request.filters, tenant, owned.as_ref()));
        self.filters = request.filters;
        // Register (or re-index) before the catch-up: nothing after it is missed.
        let was_streaming = match &self.registration {
            Some(registration) => {
                registration.update(Arc::clone(&subscription));
                true
            }
            None => {
                let (registration, queue) = self
                    .fanout
                    .register(Arc::clone(&subscription), self.config.client_queue);
                self.registration = Some(registration);
                self.queue = Some(queue);
                false
            }
        };
        self.subscription = Some(Arc::clone(&subscription));

        // Where each stream starts: the client's resume, this connection's own position
        // (a live filter change), or now.
        let mut resets: Vec<&'static str> = Vec::new();
        let mut reasons: Vec<String> = Vec::new();
        let (alerts_resume, user_events_resume, resumed) = match &request.resume {
            Some(resume) if resume.epoch == self.fanout.epoch() => {
                (resume.alerts, resume.user_events, true)
            }
            Some(resume) => {
                if resume.alerts.is_some() || resume.user_events.is_some() {
                    resets.extend(["alerts", "user_events"]);
                }
                reasons.push(format!(
                    "epoch `{}` is not this server's stream (`{}`): it restarted, or this is another replica",
                    resume.epoch,
                    self.fanout.epoch()
                ));
                (None, None, false)
            }
            None if was_streaming && !request.snapshot => {
                (Some(self.alerts_at), Some(self.user_events_at), false)
            }
            None => (None, None, false),
        };
        let (user_events_seq, user_replay) = self.fanout.user_events().catch_up(user_events_resume);
        let user_replay = match user_replay {
            Some(Err(gap)) => {
                resets.push("user_events");
                reasons.push(format!(
                    "user events: {gap}; read GET /api/users/{{id}}/events for what was missed"
                ));
                Vec::new()
            }
            Some(Ok(events)) => events,
            None => Vec::new(),
        };
        let mut snapshot = request.snapshot || resets.contains(&"alerts");
        let mut catch_up = self.fanout.alerts().catch_up(alerts_resume, snapshot);
        let alert_replay = match catch_up.replay.take() {
            Some(Err(gap)) => {
                resets.push("alerts");
                reasons.push(format!("alerts: {gap}"));
                snapshot = true;
                Vec::new()
            }
            Some(Ok(events)) => events,
            None => Vec::new(),
        };
        resets.dedup();
        let epoch = self.fanout.epoch().to_owned();
        if announce {
            let frame = protocol::subscribed_frame(
                &epoch,
                &subscription.echo(),
                subscription.tenant,
                catch_up.last_seq,
                user_events_seq,
                resumed && resets.is_empty(),
            );
            self.send(frame).await?;
        }
        if !resets.is_empty() {
            let frame = protocol::reset_frame(&epoch, &resets, &reasons.join("; "));
            self.send(frame).await?;
        }
        if snapshot {
            let open = catch_up.open.take().unwrap_or_default();
            let alerts: Vec<&AlertRecord> = open
                .iter()
                .filter(|alert| subscription.matches_alert(alert))
                .collect();
            let frame =
                protocol::snapshot_frame(&epoch, catch_up.last_seq, user_events_seq, &alerts);
            self.send(frame).await?;
        }
        // Positions advance with what was sent, so a close mid-replay names where the
        // client really is.
        self.alerts_at = alert_replay
            .first()
            .map_or(catch_up.last_seq, |first| first.seq - 1);
        self.user_events_at = user_replay
            .first()
            .map_or(user_events_seq, |first| first.seq - 1);
        for event in &alert_replay {
            if subscription.matches_alert(&event.event.alert) {
                self.send(protocol::alert_wire(event).clone()).await?;
            }
            self.alerts_at = event.seq;
        }
        for event in &user_replay {
            if subscription.matches_user_event(&event.event) {
                self.send(protocol::user_event_wire(event).clone()).await?;
            }
            self.user_events_at = event.seq;
        }
        self.alerts_at = catch_up.last_seq;
        self.user_events_at = user_events_seq;
        Ok(())
    }

    /// Sends one queued event unless it is at or before this connection's position or
    /// no longer passes its filters.
    async fn deliver(&mut self, frame: Frame) -> Result<(), Stop> {
        let Some(subscription) = self.subscription.clone() else {
            return Ok(());
        };
        match frame {
            Frame::Alert(event) => {
                if event.seq <= self.alerts_at {
                    return Ok(());
                }
                if subscription.matches_alert(&event.event.alert) {
                    self.send(protocol::alert_wire(&event).clone()).await?;
                }
                self.alerts_at = event.seq;
            }
            Frame::User(event) => {
                if event.seq <= self.user_events_at {
                    return Ok(());
                }
                if subscription.matches_user_event(&event.event) {
                    self.send(protocol::user_event_wire(&event).clone()).await?;
                }
                self.user_events_at = event.seq;
            }
        }
        Ok(())
    }

    /// Reads the consumer's meters again; a change re-indexes the subscription from now
    /// on (no replay: the meters were not theirs before).
    async fn refresh_ownership(&mut self) {
        let Some(tenant) = self.principal.as_ref().and_then(Principal::tenant) else {
            return;
        };
        let Some(current) = self.subscription.clone() else {
            return;
        };
        let owned = owned_meters(&self.state, tenant, self.filters.meters.as_deref()).await;
        let refreshed = effective(&self.filters, Some(tenant), Some(&owned));
        if refreshed != *current
            && let Some(registration) = &self.registration
        {
            let refreshed = Arc::new(refreshed);
            registration.update(Arc::clone(&refreshed));
            self.subscription = Some(refreshed);
        }
    }

    async fn handle_message(&mut self, message: Message) -> Result<(), Stop> {
        self.last_heard = Instant::now();
        match message {
            Message::Text(text) => match protocol::decode(&text) {
                Ok(ClientMessage::Subscribe(request)) => self.subscribe(request, true).await,
                Ok(ClientMessage::Auth { .. }) => {
                    self.send_error(&ProtocolError::field(
                        "already_authenticated",
                        "type",
                        "this connection is already authenticated",
                    ))
                    .await
                }
                Err(error) => self.send_error(&error).await,
            },
            Message::Binary(_) => self.send_error(&not_text()).await,
            Message::Ping(bytes) => self.session.pong(&bytes).await.map_err(|_| Stop::Gone),
            Message::Close(_) => Err(Stop::Gone),
            _ => Ok(()),
        }
    }

    async fn run(&mut self, messages: &mut actix_ws::MessageStream) -> Result<(), Stop> {
        let mut ping = tokio::time::interval(self.config.ping_interval);
        ping.tick().await;
        let mut ownership = tokio::time::interval(OWNERSHIP_REFRESH);
        ownership.tick().await;
        let is_tenant = self
            .principal
            .as_ref()
            .and_then(Principal::tenant)
            .is_some();
        loop {
            let signal = self.registration.as_ref().map(|r| Arc::clone(&r.signal));
            tokio::select! {
                biased;
                () = dropped(signal.as_deref()) => return Err(self.dropped_reason()),
                frame = next_frame(self.queue.as_mut()) => {
                    let Some(frame) = frame else {
                        return Err(close_reason(CloseCode::Restart, "server shutting down".into()));
                    };
                    self.deliver(frame).await?;
                    // A burst: what is already queued, without going round the select.
                    for _ in 0..SEND_BURST {
                        let Some(frame) = self.queue.as_mut().and_then(|queue| queue.try_recv().ok()) else {
                            break;
                        };
                        self.deliver(frame).await?;
                    }
                }
                message = messages.next() => match message {
                    Some(Ok(message)) => self.handle_message(message).await?,
                    None | Some(Err(_)) => return Err(Stop::Gone),
                },
                _ = ping.tick() => {
                    if self.last_heard.elapsed() > self.config.idle_timeout {
                        return Err(close_reason(CloseCode::Away, "idle timeout".into()));
                    }
                    self.session.ping(b"").await.map_err(|_| Stop::Gone)?;
                }
                _ = ownership.tick(), if is_tenant => self.refresh_ownership().await,
            }
        }
    }
}

fn not_text() -> ProtocolError {
    ProtocolError::whole(
        "not_text",
        "binary messages are not understood: send JSON text",
    )
}

async fn dropped(signal: Option<&ConnectionSignal>) {
    match signal {
        Some(signal) => signal.dropped().await,
        None => std::future::pending().await,
    }
}

async fn next_frame(queue: Option<&mut mpsc::Receiver<Frame>>) -> Option<Frame> {
    match queue {
        Some(queue) => queue.recv().await,
        None => std::future::pending().await,
    }
}
