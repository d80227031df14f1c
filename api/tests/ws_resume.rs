//! The alert websocket's subscriptions, sequences and backpressure, end to end on the
//! embedded system: a client that disconnects mid-burst and resumes gets every alert
//! once and in order; filters change on the fly (bad messages answered with an error
//! naming the field); a foreign epoch or a sequence the ring lost is a `reset` and a
//! snapshot; a client that reads nothing neither delays a fast one nor stays open
//! without a reason; a consumer never receives another tenant's events.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use gridpulse_actors::{Clock, SystemClock};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

mod support;
use support::{Ws, fresh_data_dir, http_as, step, with_system_state};

/// How long any single wait in these tests may take.
const WAIT: Duration = Duration::from_secs(20);

async fn connect(addr: std::net::SocketAddr, query: &str) -> Ws {
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws/alerts{query}")),
    )
    .await
    .expect("websocket connects in time")
    .expect("websocket connects");
    ws
}

async fn send(ws: &mut Ws, message: Value) {
    ws.send(Message::Text(message.to_string().into()))
        .await
        .unwrap();
}

/// The next JSON text frame, or `None` if the stream ended or `within` passed.
async fn next_json_within(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => return Some(serde_json::from_str(&text).unwrap()),
            Ok(Some(Ok(Message::Close(frame)))) => {
                step(&format!("closed by the server: {frame:?}"));
                return None;
            }
            Ok(Some(Err(_)) | None) | Err(_) => return None,
            Ok(Some(Ok(_))) => {}
        }
    }
}

async fn next_json(ws: &mut Ws) -> Value {
    next_json_within(ws, WAIT)
        .await
        .expect("a message within the wait")
}

/// Reads until a frame of `kind` (`type`), failing on anything but alerts before it.
async fn expect_type(ws: &mut Ws, kind: &str) -> Value {
    let message = next_json(ws).await;
    assert_eq!(message["type"], kind, "expected {kind}: {message}");
    message
}

/// Alert events until `n` arrived (or the wait passed).
async fn alerts(ws: &mut Ws, n: usize) -> Vec<Value> {
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while events.len() < n {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(message) = next_json_within(ws, left).await else {
            break;
        };
        if message["type"] == "alert" {
            events.push(message);
        }
    }
    events
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

fn reading(meter: &str, ts_ms: i64, voltage: f64) -> Value {
    json!({"meter": meter, "ts_ms": ts_ms, "voltage": voltage, "current": 2.0,
           "power_w": 440.0, "energy_wh": 1000.0 + (ts_ms % 1_000_000) as f64 / 1e5})
}

/// Raises one over-voltage alert on each meter (a normal reading, then one over the
/// limit), in batches of at most 100 meters.
async fn raise(addr: std::net::SocketAddr, meters: &[String], at_ms: i64) {
    for chunk in meters.chunks(100) {
        let body: Vec<Value> = chunk
            .iter()
            .flat_map(|meter| {
                [
                    reading(meter, at_ms, 230.0),
                    reading(meter, at_ms + 5_000, 262.5),
                ]
            })
            .collect();
        // A service token (ignored by servers without auth).
        let (status, answer) = http_as(
            addr,
            &token("service", None),
            "POST",
            "/api/readings",
            &json!(body).to_string(),
        )
        .await;
        assert_eq!(status, 202, "{answer}");
    }
}

fn meters(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

fn base_ms() -> i64 {
    SystemClock.now_ms() - 600_000
}

fn system_clock() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

/// The tests' settings: no "no data" alerts (they count every alert).
fn quiet(config: &mut gridpulse_api::EmbeddedConfig) {
    config.default_thresholds.no_data_timeout_s = 3_600;
}

#[test]
fn a_client_that_disconnects_mid_burst_resumes_with_every_alert_once_in_order() {
    with_system_state(None, system_clock(), quiet, |addr, _state| async move {
        // The client that stays connected, and the one that will drop mid-burst.
        let mut steady = connect(addr, "?deferred=true").await;
        send(&mut steady, json!({"type": "subscribe"})).await;
        let subscribed = expect_type(&mut steady, "subscribed").await;
        let epoch = subscribed["epoch"].as_str().unwrap().to_owned();
        assert!(!epoch.is_empty());
        let mut flaky = connect(addr, "?deferred=true").await;
        send(&mut flaky, json!({"type": "subscribe", "filters": {}})).await;
        assert_eq!(
            expect_type(&mut flaky, "subscribed").await["epoch"],
            epoch.as_str()
        );

        // A burst of 600 alerts over ~1 s, posted while the flaky client disconnects.
        let burst = meters("burst", 600);
        let at_ms = base_ms();
        let poster = actix_rt::spawn(async move {
            for chunk in burst.chunks(20) {
                raise(addr, chunk, at_ms).await;
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        });
        let before = alerts(&mut flaky, 100).await;
        assert_eq!(before.len(), 100);
        drop(flaky); // abruptly: no close frame
        step("flaky client dropped after 100 alerts");
        let last_seen = *seqs(&before).last().unwrap();

        // Reconnect and resume after the last sequence it saw, while the burst goes on.
        let mut resumed = connect(addr, "?deferred=true").await;
        send(
            &mut resumed,
            json!({"type": "subscribe", "resume": {"epoch": epoch, "alerts": last_seen}}),
        )
        .await;
        let subscribed = expect_type(&mut resumed, "subscribed").await;
        assert_eq!(subscribed["resumed"], true, "{subscribed}");
        poster.await.unwrap();

        let all = alerts(&mut steady, 600).await;
        assert_eq!(all.len(), 600, "the steady client gets every alert");
        let last = *seqs(&all).last().unwrap();
        let mut after = Vec::new();
        while after
            .last()
            .is_none_or(|e: &Value| e["seq"].as_u64().unwrap() < last)
        {
            let more = alerts(&mut resumed, 1).await;
            assert!(
                !more.is_empty(),
                "the resumed client stalled after {} alerts",
                after.len()
            );
            after.extend(more);
        }
        let mut flaky_seqs = seqs(&before);
        flaky_seqs.extend(seqs(&after));
        assert_eq!(flaky_seqs, seqs(&all), "every alert exactly once, in order");
        assert!(
            seqs(&all).windows(2).all(|w| w[1] == w[0] + 1),
            "no gap in the stream"
        );
        let ids = |events: &[Value]| -> Vec<String> {
            events
                .iter()
                .map(|e| e["alert"]["id"].as_str().unwrap().to_owned())
                .collect()
        };
        let mut flaky_ids = ids(&before);
        flaky_ids.extend(ids(&after));
        assert_eq!(flaky_ids, ids(&all));
        // Nothing more: no duplicate at the end either.
        let extra = next_json_within(&mut resumed, Duration::from_millis(300)).await;
        assert!(extra.is_none(), "an extra message: {extra:?}");
    });
}

#[test]
fn filters_change_on_the_fly_and_bad_messages_name_their_field() {
    with_system_state(None, system_clock(), quiet, |addr, _state| async move {
        // Initial filters from the query string, as before: the snapshot comes first.
        let mut ws = connect(addr, "?meter=f-1").await;
        let snapshot = expect_type(&mut ws, "snapshot").await;
        assert!(
            snapshot["epoch"].is_string() && snapshot["seq"].is_u64(),
            "{snapshot}"
        );
        let at_ms = base_ms();
        raise(addr, &meters("f", 3), at_ms).await; // f-0, f-1, f-2
        let got = alerts(&mut ws, 1).await;
        assert_eq!(got[0]["alert"]["meter"], "f-1");

        // A bad message: an error naming the field, and the connection stays open.
        send(
            &mut ws,
            json!({"type": "subscribe", "filters": {"kinds": ["over_voltage", "overvoltage"]}}),
        )
        .await;
        let error = expect_type(&mut ws, "error").await;
        assert_eq!(error["error"]["field"], "filters.kinds[1]", "{error}");
        assert_eq!(error["error"]["code"], "invalid_value");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("overvoltage")
        );
        ws.send(Message::Text("{not json".into())).await.unwrap();
        assert_eq!(
            expect_type(&mut ws, "error").await["error"]["code"],
            "malformed_json"
        );
        send(&mut ws, json!({"type": "subscribe", "filter": {}})).await;
        assert_eq!(
            expect_type(&mut ws, "error").await["error"]["field"],
            "filter"
        );

        // New filters: two other meters, critical only, with a snapshot of their open
        // alerts (f-0 and f-2 are open).
        send(
            &mut ws,
            json!({"type": "subscribe", "snapshot": true,
                   "filters": {"meters": ["f-2", "f-0", "f-3"], "min_severity": "critical",
                               "kinds": ["over_voltage"], "types": ["alert"]}}),
        )
        .await;
        let subscribed = expect_type(&mut ws, "subscribed").await;
        assert_eq!(
            subscribed["filters"]["meters"],
            json!(["f-0", "f-2", "f-3"])
        );
        assert_eq!(subscribed["filters"]["min_severity"], "critical");
        let snapshot = expect_type(&mut ws, "snapshot").await;
        let mut open: Vec<&str> = snapshot["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["meter"].as_str().unwrap())
            .collect();
        open.sort_unstable();
        assert_eq!(open, ["f-0", "f-2"]);
        assert_eq!(snapshot["seq"], subscribed["alerts_seq"]);

        // Alerts on f-1 (no longer wanted) and f-3 (newly wanted).
        raise(addr, &["f-1".to_owned()], at_ms + 60_000).await; // resolved + raised: not wanted
        raise(addr, &["f-3".to_owned()], at_ms + 60_000).await;
        let got = alerts(&mut ws, 1).await;
        assert_eq!(got[0]["alert"]["meter"], "f-3", "{got:?}");
        assert_eq!(got[0]["event"], "raised");

        // Back to everything, continuing from where the connection is: nothing lost.
        let position = got[0]["seq"].as_u64().unwrap();
        send(&mut ws, json!({"type": "subscribe"})).await;
        let subscribed = expect_type(&mut ws, "subscribed").await;
        assert_eq!(subscribed["filters"]["meters"], Value::Null);
        assert_eq!(subscribed["alerts_seq"], position);
        raise(addr, &["f-4".to_owned()], at_ms).await;
        assert_eq!(alerts(&mut ws, 1).await[0]["alert"]["meter"], "f-4");
    });
}

#[test]
fn a_foreign_epoch_or_a_lost_sequence_is_a_reset_then_a_snapshot() {
    let configure = |config: &mut gridpulse_api::EmbeddedConfig| {
        quiet(config);
        config.replay_capacity = 8;
    };
    with_system_state(None, system_clock(), configure, |addr, _state| async move {
        let mut watcher = connect(addr, "?snapshot=false").await;
        raise(addr, &meters("e", 20), base_ms()).await;
        let seen = alerts(&mut watcher, 20).await;
        assert_eq!(seen.len(), 20);

        // Another epoch (a restarted server, another replica).
        let mut ws = connect(addr, "?deferred=true").await;
        send(
            &mut ws,
            json!({"type": "subscribe", "resume": {"epoch": "not-this-server", "alerts": 3}}),
        )
        .await;
        let subscribed = expect_type(&mut ws, "subscribed").await;
        assert_eq!(subscribed["resumed"], false);
        let epoch = subscribed["epoch"].as_str().unwrap().to_owned();
        let reset = expect_type(&mut ws, "reset").await;
        assert!(
            reset["reason"].as_str().unwrap().contains("epoch"),
            "{reset}"
        );
        assert_eq!(reset["streams"], json!(["alerts", "user_events"]));
        let snapshot = expect_type(&mut ws, "snapshot").await;
        assert_eq!(snapshot["alerts"].as_array().unwrap().len(), 20);
        assert_eq!(snapshot["seq"], 20);

        // The right epoch, but a sequence the 8-event ring no longer holds.
        let mut ws = connect(addr, "?deferred=true").await;
        send(
            &mut ws,
            json!({"type": "subscribe", "resume": {"epoch": epoch, "alerts": 5}}),
        )
        .await;
        assert_eq!(expect_type(&mut ws, "subscribed").await["resumed"], false);
        let reset = expect_type(&mut ws, "reset").await;
        assert!(
            reset["reason"].as_str().unwrap().contains("no longer kept"),
            "{reset}"
        );
        assert_eq!(reset["streams"], json!(["alerts"]));
        assert_eq!(expect_type(&mut ws, "snapshot").await["seq"], 20);

        // A sequence the ring holds replays the rest exactly.
        let mut ws = connect(addr, "?deferred=true").await;
        send(
            &mut ws,
            json!({"type": "subscribe", "resume": {"epoch": epoch, "alerts": 15}}),
        )
        .await;
        assert_eq!(expect_type(&mut ws, "subscribed").await["resumed"], true);
        assert_eq!(seqs(&alerts(&mut ws, 5).await), [16, 17, 18, 19, 20]);
    });
}

/// Raises one alert on each meter, 100 per POST, and reads each batch from `ws` before
/// the next: the total time and the slowest batch (POST to the last alert received).
async fn burst_through(
    addr: std::net::SocketAddr,
    ws: &mut Ws,
    meters: &[String],
    at_ms: i64,
) -> (Duration, Duration) {
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    for chunk in meters.chunks(100) {
        let batch_started = Instant::now();
        raise(addr, chunk, at_ms).await;
        let got = alerts(ws, chunk.len()).await;
        assert_eq!(got.len(), chunk.len(), "the fast client gets every alert");
        slowest = slowest.max(batch_started.elapsed());
    }
    (started.elapsed(), slowest)
}

/// A websocket client on a socket with a tiny receive buffer, so that a client which
/// stops reading fills it and the server's buffers quickly.
async fn connect_small_buffer(addr: std::net::SocketAddr, query: &str) -> Ws {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(2048).unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(
            format!("ws://{addr}/ws/alerts{query}"),
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    ws
}

#[test]
fn a_slow_client_does_not_delay_a_fast_one_and_is_closed_with_a_reason() {
    let configure = |config: &mut gridpulse_api::EmbeddedConfig| {
        quiet(config);
        // Room for the 100-event bursts of one POST, not for a client that reads nothing.
        config.ws.client_queue = 1024;
        config.ws.close_timeout = Duration::from_secs(60);
    };
    with_system_state(None, system_clock(), configure, |addr, _state| async move {
        // More than the kernel buffers on loopback (the sender's socket buffer grows up to
        // 4 MiB; an alert frame is ~400 bytes).
        const BURST: usize = 20_000;
        let mut fast = connect(addr, "?snapshot=false").await;
        let at_ms = base_ms();

        // Without a slow client: 100 alerts per POST, each batch read by the fast client
        // before the next (a debug-build test client reads slower than ingest raises).
        let (alone, alone_worst) =
            burst_through(addr, &mut fast, &meters("alone", BURST), at_ms).await;

        // With a client that reads nothing at all.
        let mut slow = connect_small_buffer(addr, "?snapshot=false").await;
        // Its subscription is in place once an event reaches a client connected after it.
        let mut probe = connect(addr, "?snapshot=false").await;
        raise(addr, &["probe".to_owned()], at_ms).await;
        assert_eq!(alerts(&mut probe, 1).await.len(), 1);
        assert_eq!(alerts(&mut fast, 1).await.len(), 1);
        drop(probe);
        let (crowded, crowded_worst) =
            burst_through(addr, &mut fast, &meters("crowded", BURST), at_ms).await;
        step(&format!(
            "fast client: {BURST} alerts in {alone:?} (slowest batch {alone_worst:?}) alone, \
             {crowded:?} (slowest batch {crowded_worst:?}) beside a stalled client"
        ));
        // A loose bound: the stalled client must not hold the fast one up.
        assert!(
            crowded_worst < Duration::from_secs(2),
            "a batch took {crowded_worst:?}"
        );

        // The slow client now reads: what was buffered, then a close frame saying why.
        let deadline = tokio::time::Instant::now() + WAIT;
        let (mut n_events, mut last_seq) = (0_usize, 0_u64);
        let close = loop {
            match tokio::time::timeout_at(deadline, slow.next()).await {
                Ok(Some(Ok(Message::Text(text)))) => {
                    let event: Value = serde_json::from_str(&text).unwrap();
                    n_events += 1;
                    last_seq = event["seq"].as_u64().unwrap();
                }
                Ok(Some(Ok(Message::Close(frame)))) => break frame.expect("a close reason"),
                Ok(Some(Ok(_))) => {}
                other => {
                    panic!("no close frame after {n_events} alerts (last {last_seq}): {other:?}")
                }
            }
        };
        assert_eq!(close.code, CloseCode::Again, "{close:?}");
        let reason = close.reason.to_string();
        assert!(reason.contains("client too slow"), "{reason}");
        assert!(
            reason.contains(&format!("resume from seq {last_seq}")),
            "{reason}"
        );
        assert!(n_events < BURST, "it was closed before the whole burst");
        step(&format!(
            "slow client got {n_events} alerts, then: {reason}"
        ));
    });
}

const SECRET: &[u8] = b"ws-resume-test-secret-32-bytes!!";

fn token(role: &str, user: Option<&str>) -> String {
    let now = gridpulse_api::auth::unix_now();
    gridpulse_api::auth::issue(
        &gridpulse_api::auth::Claims {
            sub: format!("{role}-{}", user.unwrap_or("staff")),
            role: role.into(),
            user: user.map(str::to_owned),
            exp: now + 600,
            nbf: None,
            iat: Some(now),
            iss: gridpulse_api::auth::DEFAULT_ISSUER.into(),
            aud: gridpulse_api::auth::DEFAULT_AUDIENCE.into(),
        },
        &gridpulse_api::auth::SigningKey::Hs256(SECRET.to_vec()),
        None,
    )
    .unwrap()
}

/// Connects without credentials and authenticates with the first message.
async fn connect_as(addr: std::net::SocketAddr, token: &str) -> Ws {
    let mut ws = connect(addr, "?deferred=true").await;
    send(&mut ws, json!({"type": "auth", "token": token})).await;
    expect_type(&mut ws, "authenticated").await;
    ws
}

fn user_event(user: &str, seq: u64) -> gridpulse_actors::user_events::UserEvent {
    serde_json::from_value(json!({
        "seq": seq, "id": format!("{user}:progress:{seq}"), "user": user, "at_ms": 0,
        "type": "session_progress", "session": "s-1",
        "progress": {"elapsed_ms": 0, "elapsed_slots": 0, "baseline_so_far_wh": 0.0,
                     "actual_so_far_wh": 0.0, "saved_so_far_wh": 0.0, "missing_slots": 0,
                     "on_track": false}
    }))
    .unwrap()
}

/// Everything received until `done` holds for it.
async fn collect(ws: &mut Ws, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let mut seen = Vec::new();
    while !done(&seen) {
        seen.push(next_json(ws).await);
    }
    seen
}

/// Checks the alerts and the user events of `messages`, each stream in its order.
fn check_streams(messages: &[Value], alerts: &[&str], user_events: &[&str]) {
    let (seen_alerts, seen_user_events): (Vec<String>, Vec<String>) = described(messages)
        .into_iter()
        .partition(|name| name.starts_with("alert:"));
    assert_eq!(seen_alerts, alerts);
    assert_eq!(seen_user_events, user_events);
}

fn described(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m["type"].as_str().unwrap() {
            "alert" => format!("alert:{}", m["alert"]["meter"].as_str().unwrap()),
            other => format!("{other}:{}", m["user"].as_str().unwrap_or("-")),
        })
        .collect()
}

#[test]
fn a_consumer_never_receives_another_tenants_events() {
    let dir = fresh_data_dir("ws_resume", "tenants");
    let configure = |config: &mut gridpulse_api::EmbeddedConfig| {
        quiet(config);
        let verifier = gridpulse_api::auth::Verifier::new(
            gridpulse_api::auth::DEFAULT_ISSUER,
            gridpulse_api::auth::DEFAULT_AUDIENCE,
        )
        .with_hs256_secret(SECRET)
        .unwrap();
        config.auth = gridpulse_api::auth::Auth::Tokens(Arc::new(verifier));
    };
    with_system_state(
        Some(dir),
        system_clock(),
        configure,
        |addr, state| async move {
            for (meter, owner) in [("a-1", "alice"), ("a-2", "alice"), ("b-1", "bob")] {
                let body = json!({"id": meter, "owner": owner}).to_string();
                let (status, answer) =
                    http_as(addr, &token("utility", None), "POST", "/api/meters", &body).await;
                assert_eq!(status, 201, "{answer}");
            }

            // Without credentials nothing but `auth` is accepted; a bad token is refused.
            let mut anonymous = connect(addr, "?deferred=true").await;
            send(&mut anonymous, json!({"type": "subscribe"})).await;
            assert_eq!(
                expect_type(&mut anonymous, "error").await["error"]["code"],
                "auth_required"
            );
            send(
                &mut anonymous,
                json!({"type": "auth", "token": "not-a-jwt"}),
            )
            .await;
            let refused = expect_type(&mut anonymous, "error").await;
            assert_eq!(refused["error"]["field"], "token");
            assert_eq!(refused["error"]["code"], "malformed_token");
            assert!(
                next_json_within(&mut anonymous, WAIT).await.is_none(),
                "closed after"
            );

            // Alice asks for her meter and Bob's, and for Bob's user events.
            let mut alice_asks_bob = connect_as(addr, &token("consumer", Some("alice"))).await;
            send(
                &mut alice_asks_bob,
                json!({"type": "subscribe", "snapshot": true,
                   "filters": {"meters": ["a-1", "b-1"], "user": "bob"}}),
            )
            .await;
            let subscribed = expect_type(&mut alice_asks_bob, "subscribed").await;
            assert_eq!(
                subscribed["filters"]["meters"],
                json!(["a-1"]),
                "{subscribed}"
            );
            assert_eq!(subscribed["tenant"], "alice");
            expect_type(&mut alice_asks_bob, "snapshot").await;
            // Alice with no filters: her meters and her user events.
            let mut alice = connect_as(addr, &token("consumer", Some("alice"))).await;
            send(&mut alice, json!({"type": "subscribe"})).await;
            let subscribed = expect_type(&mut alice, "subscribed").await;
            assert_eq!(subscribed["filters"]["meters"], json!(["a-1", "a-2"]));
            assert_eq!(subscribed["filters"]["user"], "alice");
            // Bob with a header token and query filters naming Alice's meter and user.
            let mut request = format!("ws://{addr}/ws/alerts?meter=a-1&user=alice")
                .into_client_request()
                .unwrap();
            request.headers_mut().insert(
                "authorization",
                format!("Bearer {}", token("consumer", Some("bob")))
                    .parse()
                    .unwrap(),
            );
            let (mut bob, _) = tokio_tungstenite::connect_async(request).await.unwrap();
            assert_eq!(expect_type(&mut bob, "snapshot").await["alerts"], json!([]));
            // Operations see everything.
            let mut ops = connect_as(addr, &token("ops", None)).await;
            send(&mut ops, json!({"type": "subscribe"})).await;
            expect_type(&mut ops, "subscribed").await;

            // Foreign events first, then a sentinel each client is allowed to see. Each
            // alert is seen by the operator before the next is raised, so the hub's order
            // is the order they were raised in (meters live on different partitions).
            let at_ms = base_ms();
            let mut ops_seen = Vec::new();
            for meter in ["b-1", "a-2", "a-1"] {
                raise(addr, &[meter.to_owned()], at_ms).await;
                ops_seen.extend(
                    collect(&mut ops, |seen| {
                        seen.iter().any(|m| m["alert"]["meter"] == meter)
                    })
                    .await,
                );
            }
            state
                .user_events
                .publish([user_event("bob", 1), user_event("alice", 1)]);
            ops_seen
                .extend(collect(&mut ops, |seen| seen.iter().any(|m| m["user"] == "alice")).await);
            raise(addr, &["b-1".to_owned()], at_ms + 60_000).await; // bob's sentinel
            let sentinel_ms = at_ms + 65_000;
            ops_seen.extend(
                collect(&mut ops, |seen| {
                    seen.iter()
                        .any(|m| m["alert"]["first_seen_ms"] == sentinel_ms)
                })
                .await,
            );
            check_streams(
                &ops_seen,
                &[
                    "alert:b-1",
                    "alert:a-2",
                    "alert:a-1",
                    "alert:b-1",
                    "alert:b-1",
                ],
                &["session_progress:bob", "session_progress:alice"],
            );
            let alice_seen = collect(&mut alice, |seen| {
                seen.iter().any(|m| m["alert"]["meter"] == "a-1")
                    && seen.iter().any(|m| m["type"] == "session_progress")
            })
            .await;
            check_streams(
                &alice_seen,
                &["alert:a-2", "alert:a-1"],
                &["session_progress:alice"],
            );
            let asked_bob = collect(&mut alice_asks_bob, |seen| !seen.is_empty()).await;
            check_streams(&asked_bob, &["alert:a-1"], &[]);
            let seen = |messages: &[Value]| described(messages);

            // One more of Alice's alerts (a-1 resolves and is raised again), after all of
            // Bob's: it is the next thing each of Alice's connections receives.
            raise(addr, &["a-1".to_owned()], at_ms + 60_000).await;
            for ws in [&mut alice, &mut alice_asks_bob] {
                let next = next_json(ws).await;
                assert_eq!(seen(std::slice::from_ref(&next)), ["alert:a-1"], "{next}");
                assert_eq!(next["event"], "resolved");
            }
            // Bob asked for Alice's meter and user only: he received nothing at all, though
            // everyone else has every event by now.
            collect(&mut ops, |seen| {
                seen.iter()
                    .any(|m| m["alert"]["meter"] == "a-1" && m["event"] == "raised")
            })
            .await;
            let leaked = next_json_within(&mut bob, Duration::from_millis(500)).await;
            assert!(leaked.is_none(), "bob received {leaked:?}");
        },
    );
}
