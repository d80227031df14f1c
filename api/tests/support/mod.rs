//! Helpers shared by the API integration tests.

// Not every test file uses every helper.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A minimal HTTP/1.1 client (one request per connection) so the test needs no HTTP
/// client library: returns status and parsed JSON body (or the text as a JSON string).
pub async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Value) {
    // A server that never answers fails the test instead of hanging it.
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        http_unbounded(addr, method, path, body),
    )
    .await
    .unwrap_or_else(|_| panic!("{method} {path}: no answer within 60 s"))
}

/// [`http`] with a bearer token.
pub async fn http_as(
    addr: std::net::SocketAddr,
    token: &str,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Value) {
    let (status, _, value) = http_with(
        addr,
        method,
        path,
        &[("Authorization", &format!("Bearer {token}"))],
        body,
    )
    .await;
    (status, value)
}

/// [`http`] with extra request headers; also returns the response head (lowercased).
pub async fn http_with(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Value) {
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        http_raw(addr, method, path, headers, body),
    )
    .await
    .unwrap_or_else(|_| panic!("{method} {path}: no answer within 60 s"))
}

async fn http_unbounded(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> (u16, Value) {
    let (status, _, value) = http_raw(addr, method, path, &[], body).await;
    (status, value)
}

async fn http_raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response);
    let status: u16 = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, head.to_ascii_lowercase(), value)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// Marks progress on the raw stderr (not captured by the test harness), so a test the
/// watchdog aborts shows the last step it reached.
pub fn step(what: &str) {
    use std::io::Write;
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let elapsed = START.get_or_init(std::time::Instant::now).elapsed();
    let _ = writeln!(
        std::io::stderr(),
        "[step +{:.1}s] {what}",
        elapsed.as_secs_f64()
    );
}

/// A fresh data directory for one test.
pub fn fresh_data_dir(suite: &str, test_name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "gridpulse-{suite}-{test_name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Runs `phase` against a whole embedded system (persistent under `data_dir`, or in
/// memory) in its own thread and actix `System`, then shuts the system down cleanly and
/// stops that `System`, so that its store is closed and a later phase can open the same
/// directory: a restart, as far as the data directory can tell.
pub fn with_system<Phase, PhaseFuture>(data_dir: Option<std::path::PathBuf>, phase: Phase)
where
    Phase: FnOnce(std::net::SocketAddr) -> PhaseFuture + Send + 'static,
    PhaseFuture: std::future::Future<Output = ()>,
{
    with_system_clock(
        data_dir,
        std::sync::Arc::new(gridpulse_actors::SystemClock),
        phase,
    );
}

/// [`with_system`] on a clock of the test's choosing (e.g. a `ManualClock`).
pub fn with_system_clock<Phase, PhaseFuture>(
    data_dir: Option<std::path::PathBuf>,
    clock: std::sync::Arc<dyn gridpulse_actors::Clock>,
    phase: Phase,
) where
    Phase: FnOnce(std::net::SocketAddr) -> PhaseFuture + Send + 'static,
    PhaseFuture: std::future::Future<Output = ()>,
{
    with_system_ending(
        data_dir,
        clock,
        |_| {},
        Shutdown::Clean,
        |addr, _state| phase(addr),
    );
}

/// How a phase of [`with_system_config`] ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// The final checkpoint of every partition, then the system stops.
    Clean,
    /// The system stops without it (like a crash, as far as the data directory can
    /// tell: what was not stored before is not there).
    NoCheckpoint,
}

/// [`with_system_clock`] with the test's changes to the configuration, ending as told.
pub fn with_system_config<Phase, PhaseFuture>(
    data_dir: Option<std::path::PathBuf>,
    clock: std::sync::Arc<dyn gridpulse_actors::Clock>,
    configure: impl FnOnce(&mut gridpulse_api::EmbeddedConfig) + Send + 'static,
    shutdown: Shutdown,
    phase: Phase,
) where
    Phase: FnOnce(std::net::SocketAddr) -> PhaseFuture + Send + 'static,
    PhaseFuture: std::future::Future<Output = ()>,
{
    with_system_ending(data_dir, clock, configure, shutdown, |addr, _state| {
        phase(addr)
    });
}

/// [`with_system_clock`] with the test's changes to the configuration, handing the
/// phase the system's shared state too (its hubs, for tests that publish directly).
pub fn with_system_state<Configure, Phase, PhaseFuture>(
    data_dir: Option<std::path::PathBuf>,
    clock: std::sync::Arc<dyn gridpulse_actors::Clock>,
    configure: Configure,
    phase: Phase,
) where
    Configure: FnOnce(&mut gridpulse_api::EmbeddedConfig) + Send + 'static,
    Phase: FnOnce(std::net::SocketAddr, gridpulse_api::state::AppState) -> PhaseFuture
        + Send
        + 'static,
    PhaseFuture: std::future::Future<Output = ()>,
{
    with_system_ending(data_dir, clock, configure, Shutdown::Clean, phase);
}

/// The system of every helper above: configured, its phase handed the address and the
/// shared state, ended as told.
pub fn with_system_ending<Configure, Phase, PhaseFuture>(
    data_dir: Option<std::path::PathBuf>,
    clock: std::sync::Arc<dyn gridpulse_actors::Clock>,
    configure: Configure,
    shutdown: Shutdown,
    phase: Phase,
) where
    Configure: FnOnce(&mut gridpulse_api::EmbeddedConfig) + Send + 'static,
    Phase: FnOnce(std::net::SocketAddr, gridpulse_api::state::AppState) -> PhaseFuture
        + Send
        + 'static,
    PhaseFuture: std::future::Future<Output = ()>,
{
    let thread = std::thread::spawn(move || {
        let runner = actix_rt::System::new();
        runner.block_on(async move {
            let mut config = gridpulse_api::EmbeddedConfig {
                n_partitions: 2,
                n_workers: 1,
                n_http_workers: 1,
                max_body_bytes: 64 * 1024,
                persistence: data_dir.map(gridpulse_api::embedded::Persistence::new),
                ..gridpulse_api::EmbeddedConfig::default()
            };
            configure(&mut config);
            // The previous phase's store closes as its threads wind down.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
            let system = loop {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let clock = std::sync::Arc::clone(&clock);
                match gridpulse_api::EmbeddedSystem::start(config.clone(), listener, clock).await {
                    Ok(system) => break system,
                    Err(gridpulse_api::embedded::StartError::Store(error))
                        if error.to_string().contains("in use")
                            && std::time::Instant::now() < deadline =>
                    {
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                    Err(error) => panic!("the embedded system did not start: {error}"),
                }
            };
            let server = system.server.handle();
            actix_rt::spawn(system.server);
            phase(system.local_addr, system.state.clone()).await;
            server.stop(true).await;
            match shutdown {
                Shutdown::Clean => gridpulse_api::EmbeddedSystem::shutdown(&system.state)
                    .await
                    .unwrap(),
                // The rollup job's threads would keep the store open; the meters get no
                // final checkpoint.
                Shutdown::NoCheckpoint => {
                    if let Some(rollups) = &system.state.rollups {
                        rollups.shutdown().await;
                    }
                }
            }
            actix_rt::System::current().stop();
        });
        runner.run().unwrap();
    });
    if let Err(panic) = thread.join() {
        std::panic::resume_unwind(panic);
    }
}

/// A websocket client connection.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// [`with_system_clock`] with the configuration changed by `tweak` first (e.g. auth).
pub fn with_config<Tweak, Phase, PhaseFuture>(
    data_dir: Option<std::path::PathBuf>,
    clock: std::sync::Arc<dyn gridpulse_actors::Clock>,
    tweak: Tweak,
    phase: Phase,
) where
    Tweak: FnOnce(&mut gridpulse_api::EmbeddedConfig) + Send + 'static,
    Phase: FnOnce(std::net::SocketAddr) -> PhaseFuture + Send + 'static,
    PhaseFuture: std::future::Future<Output = ()>,
{
    with_system_state(data_dir, clock, tweak, |addr, _state| phase(addr));
}

/// A meter on Mosquitto (`port`) with a last will (`offline`, retained) on its status
/// topic: publishes `online`, then `reading` (a canonical payload) to its readings topic,
/// both acknowledged by the broker. Answers the task polling its event loop: aborting
/// it cuts the TCP connection without DISCONNECT, so the broker publishes the will. The
/// task holds a client handle: with every handle dropped, rumqttc's event loop would end
/// the session itself (a clean DISCONNECT, which cancels the will) before the cut.
pub async fn meter_with_last_will(
    port: u16,
    meter: &str,
    reading: String,
) -> tokio::task::JoinHandle<()> {
    use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Packet, QoS};
    use std::time::Duration;
    let topic = format!("gridpulse/meters/{meter}/status");
    let mut options = MqttOptions::new(format!("{meter}-client"), "127.0.0.1", port);
    options
        .set_keep_alive(Duration::from_secs(5))
        .set_last_will(LastWill::new(&topic, "offline", QoS::AtLeastOnce, true));
    let (client, mut event_loop) = AsyncClient::new(options, 16);
    let acked = std::sync::Arc::new(tokio::sync::Notify::new());
    let notify = std::sync::Arc::clone(&acked);
    let handle = client.clone();
    let task = tokio::spawn(async move {
        let _handle = handle;
        loop {
            match event_loop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => notify.notify_one(),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    client
        .publish(&topic, QoS::AtLeastOnce, true, "online")
        .await
        .unwrap();
    client
        .publish(
            format!("gridpulse/meters/{meter}/readings"),
            QoS::AtLeastOnce,
            false,
            reading,
        )
        .await
        .unwrap();
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(20), acked.notified())
            .await
            .expect("the broker acknowledged the meter's messages");
    }
    task
}

/// Waits (at most 20 s) until `GET /api/mqtt/status` says `connected` is `connected`;
/// answers that status.
pub async fn bridge_connected(addr: std::net::SocketAddr, connected: bool) -> Value {
    use std::time::{Duration, Instant};
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, bridge) = http(addr, "GET", "/api/mqtt/status", "").await;
        assert_eq!(status, 200, "{bridge}");
        if bridge["connected"] == connected {
            return bridge;
        }
        assert!(
            Instant::now() < deadline,
            "bridge never got connected = {connected}: {bridge}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
