//! A clean shutdown releases the data directory inside the same process: the
//! background tasks (websocket fan-out, grouping timer, retention sweep, simulator)
//! end with the system instead of holding the hub and the store, so a restart on the
//! same directory — without a new actix `System` — opens it again. They used to keep
//! the store's lock held until the process exited (the persist benchmark failed with
//! "the first system never released the store").

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use gridpulse_api::embedded::Persistence;
use gridpulse_api::{EmbeddedConfig, EmbeddedSystem};
use gridpulse_ingest::simulator::SimulatorConfig;
use gridpulse_store::Retention;
use gridpulse_store::embedded::EmbeddedStore;

#[actix_rt::test]
async fn a_shut_down_system_releases_its_store_within_the_same_process() {
    let data_dir = support::fresh_data_dir("shutdown", "releases_store");
    let config = EmbeddedConfig {
        n_http_workers: 1,
        persistence: Some(Persistence::new(&data_dir)),
        simulate: Some(SimulatorConfig {
            meters: 20,
            ..SimulatorConfig::default()
        }),
        ..EmbeddedConfig::default()
    };
    let system =
        EmbeddedSystem::start_default_clock(config, TcpListener::bind("127.0.0.1:0").unwrap())
            .await
            .unwrap();
    let server = system.server.handle();
    actix_rt::spawn(system.server);
    let state = system.state.clone();
    // The simulator is producing and the fan-out is running.
    let deadline = Instant::now() + Duration::from_secs(20);
    while state.meters.n_applied() == 0 {
        assert!(Instant::now() < deadline, "the simulator never produced");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // While it runs, the directory is locked.
    assert!(EmbeddedStore::open(&data_dir.join("store"), Retention::default()).is_err());

    server.stop(false).await;
    EmbeddedSystem::shutdown(&state).await.unwrap();
    drop(state);
    drop(system.state);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match EmbeddedStore::open(&data_dir.join("store"), Retention::default()) {
            Ok(_) => break,
            Err(error) => {
                assert!(
                    Instant::now() < deadline,
                    "the store is still held 20 s after the shutdown: {error}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    let _ = std::fs::remove_dir_all(&data_dir);
}
