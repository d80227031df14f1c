//! The simulator, run through the real embedded pipeline on a fast-forwarded clock,
//! produces every alert kind within a few simulated minutes — what a newcomer sees after
//! `gridpulse run --simulate 100`.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use gridpulse_actors::{Clock, ManualClock, SystemClock};
use gridpulse_api::{EmbeddedConfig, EmbeddedSystem};
use gridpulse_domain::AlertKind;
use gridpulse_ingest::simulator::SimulatorConfig;
use gridpulse_store::AlertQuery;

#[actix_rt::test]
async fn every_alert_kind_appears_within_five_simulated_minutes() {
    let clock = ManualClock::new(SystemClock.now_ms());
    let config = EmbeddedConfig {
        n_partitions: 4,
        n_workers: 1,
        n_http_workers: 1,
        no_data_sweep: Duration::from_millis(20),
        simulate: Some(SimulatorConfig {
            meters: 100,
            seed: 7,
            ..SimulatorConfig::default()
        }),
        ..EmbeddedConfig::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let system = EmbeddedSystem::start(config, listener, Arc::clone(&clock) as Arc<dyn Clock>)
        .await
        .unwrap();
    let hub = Arc::clone(system.state.meters.hub());

    // The simulator ticks every 100 ms of real time and reads the clock: advance one
    // simulated second per 10 ms, so five simulated minutes take ~3 s.
    // At least three simulated minutes, so the rare bad payloads (0.2 %) show up too.
    let mut seen = BTreeSet::new();
    for second in 0..300 {
        clock.advance(1_000);
        tokio::time::sleep(Duration::from_millis(10)).await;
        seen = hub
            .query(&AlertQuery {
                limit: 100_000,
                ..AlertQuery::default()
            })
            .into_iter()
            .map(|alert| alert.kind)
            .collect();
        // Meters raise every kind but the hub's group alert.
        if seen.len() == AlertKind::N_METER_KINDS && second >= 180 {
            break;
        }
    }
    let missing: Vec<AlertKind> = AlertKind::ALL[..AlertKind::N_METER_KINDS]
        .iter()
        .copied()
        .filter(|kind| !seen.contains(kind))
        .collect();
    assert!(
        missing.is_empty(),
        "never raised: {missing:?} (saw {seen:?})"
    );
    // Bad payloads were rejected along the way and meters are live.
    assert_eq!(system.state.meters.count_meters().await.unwrap(), 100);
    let metrics = gridpulse_api::metrics::render();
    assert!(
        metrics.contains("gridpulse_ingest_readings_rejected_total{reason="),
        "{metrics}"
    );
}
