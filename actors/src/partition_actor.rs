//! `PartitionActor`: owns the meter actors of one log partition.
//!
//! A pump task on the same arbiter reads the partition in batches and hands each batch
//! to this actor, which routes readings to meter actors (creating them on first sight)
//! in log order. The pump stops reading while the meters' in-flight readings exceed the
//! high-water mark (backpressure to the log, never an unbounded buffer). A sweep every
//! second raises "no data" for meters silent past their timeout.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, AsyncContext, Context, Handler, Message, Supervisor};
use gridpulse_domain::MeterId;
use rustc_hash::FxHashMap;

use crate::clock::Clock;
use crate::log::{LogError, LogRecord, PartitionReader};
use crate::meter_actor::{ApplyReading, CheckNoData, MeterActor, PartitionShared, SetThresholds};
use crate::metrics;
use crate::thresholds::Thresholds;

/// Settings of a partition actor.
#[derive(Debug, Clone)]
pub struct PartitionConfig {
    /// Most records read from the log per batch.
    pub max_batch: usize,
    /// Thresholds of meters without their own.
    pub default_thresholds: Arc<Thresholds>,
    /// Wall clock for "no data".
    pub clock: Arc<dyn Clock>,
    /// How often to look for silent meters.
    pub no_data_sweep: Duration,
}

#[derive(Debug)]
struct MeterEntry {
    addr: Addr<MeterActor>,
    last_arrival_ms: i64,
    no_data_timeout_ms: i64,
    no_data_checked: bool,
}

/// The owner of one partition's meter actors.
#[derive(Debug)]
pub struct PartitionActor {
    partition: u32,
    config: PartitionConfig,
    shared: Rc<PartitionShared>,
    meters: FxHashMap<MeterId, MeterEntry>,
    /// Sorted meter ids for paging, rebuilt after new meters appear.
    sorted_ids: Option<Vec<MeterId>>,
    reader: Option<Box<dyn PartitionReader>>,
}

impl PartitionActor {
    /// A partition actor that will read `reader` once started.
    pub fn new(
        partition: u32,
        config: PartitionConfig,
        shared: Rc<PartitionShared>,
        reader: Box<dyn PartitionReader>,
    ) -> PartitionActor {
        PartitionActor {
            partition,
            config,
            shared,
            meters: FxHashMap::default(),
            sorted_ids: None,
            reader: Some(reader),
        }
    }

    fn sweep_no_data(&mut self) {
        let now_ms = self.config.clock.now_ms();
        for entry in self.meters.values_mut() {
            if !entry.no_data_checked && now_ms - entry.last_arrival_ms > entry.no_data_timeout_ms {
                entry.no_data_checked = true;
                entry.addr.do_send(CheckNoData {
                    now_ms,
                    last_arrival_ms: entry.last_arrival_ms,
                });
            }
        }
        metrics::record_mailbox_depth(self.partition, self.shared.in_flight.get());
    }
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4);
        ctx.run_interval(self.config.no_data_sweep, |actor, _ctx| {
            actor.sweep_no_data()
        });
        let Some(reader) = self.reader.take() else {
            return;
        };
        actix::spawn(pump(
            self.partition,
            reader,
            ctx.address(),
            Rc::clone(&self.shared),
            self.config.max_batch,
        ));
    }
}

/// Reads the partition and feeds the actor until the log closes or the actor stops.
async fn pump(
    partition: u32,
    mut reader: Box<dyn PartitionReader>,
    actor: Addr<PartitionActor>,
    shared: Rc<PartitionShared>,
    max_batch: usize,
) {
    loop {
        match reader.next_batch(max_batch).await {
            Ok(records) => {
                let Some(next_offset) = records.last().map(|record| record.offset + 1) else {
                    continue;
                };
                if actor.send(RouteBatch(records)).await.is_err() {
                    break;
                }
                reader.commit(next_offset);
                if shared.in_flight.get() > shared.high_water {
                    shared.pump_waiting.set(true);
                    shared.drained.notified().await;
                }
            }
            Err(LogError::Closed) => break,
            Err(error) => {
                tracing::warn!(partition, %error, "reading the log failed, retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tracing::debug!(partition, "partition pump stopped");
}

/// Route a batch of records to their meter actors.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RouteBatch(pub Vec<LogRecord>);

impl Handler<RouteBatch> for PartitionActor {
    type Result = ();

    fn handle(&mut self, batch: RouteBatch, _ctx: &mut Self::Context) {
        let now_ms = self.config.clock.now_ms();
        let n_records = batch.0.len() as u64;
        for record in batch.0 {
            let meter = record.reading.meter;
            let entry = match self.meters.get_mut(&meter) {
                Some(entry) => entry,
                None => {
                    let thresholds = Arc::clone(&self.config.default_thresholds);
                    let shared = Rc::clone(&self.shared);
                    let no_data_timeout_ms = i64::from(thresholds.no_data_timeout_s) * 1000;
                    let addr =
                        Supervisor::start(move |_ctx| MeterActor::new(meter, thresholds, shared));
                    metrics::record_meters_live(1);
                    self.sorted_ids = None;
                    self.meters.entry(meter).or_insert(MeterEntry {
                        addr,
                        last_arrival_ms: now_ms,
                        no_data_timeout_ms,
                        no_data_checked: false,
                    })
                }
            };
            entry.last_arrival_ms = now_ms;
            entry.no_data_checked = false;
            entry.addr.do_send(ApplyReading(record.reading));
        }
        self.shared
            .in_flight
            .set(self.shared.in_flight.get() + n_records);
        let n_stale = self.shared.n_stale.replace(0);
        metrics::record_readings(n_records, n_stale);
    }
}

/// Look up a meter's actor.
#[derive(Debug, Message)]
#[rtype(result = "Option<Addr<MeterActor>>")]
pub struct FindMeter(pub MeterId);

impl Handler<FindMeter> for PartitionActor {
    type Result = Option<Addr<MeterActor>>;

    fn handle(&mut self, message: FindMeter, _ctx: &mut Self::Context) -> Self::Result {
        self.meters.get(&message.0).map(|entry| entry.addr.clone())
    }
}

/// Page through this partition's meter ids in order.
#[derive(Debug, Message)]
#[rtype(result = "Vec<MeterId>")]
pub struct ListMeterIds {
    /// Only ids after this one.
    pub after: Option<MeterId>,
    /// At most this many.
    pub limit: usize,
}

impl Handler<ListMeterIds> for PartitionActor {
    type Result = Vec<MeterId>;

    fn handle(&mut self, message: ListMeterIds, _ctx: &mut Self::Context) -> Self::Result {
        let meters = &self.meters;
        let sorted = self.sorted_ids.get_or_insert_with(|| {
            let mut ids: Vec<MeterId> = meters.keys().copied().collect();
            ids.sort_unstable();
            ids
        });
        let start = match message.after {
            Some(after) => sorted.partition_point(|id| *id <= after),
            None => 0,
        };
        sorted[start..]
            .iter()
            .take(message.limit)
            .copied()
            .collect()
    }
}

/// How many meters this partition owns.
#[derive(Debug, Message)]
#[rtype(result = "usize")]
pub struct CountMeters;

impl Handler<CountMeters> for PartitionActor {
    type Result = usize;

    fn handle(&mut self, _message: CountMeters, _ctx: &mut Self::Context) -> usize {
        self.meters.len()
    }
}

/// Replace one meter's thresholds; answers whether the meter exists.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct SetMeterThresholds {
    /// The meter.
    pub meter: MeterId,
    /// Its new thresholds (already validated).
    pub thresholds: Arc<Thresholds>,
}

impl Handler<SetMeterThresholds> for PartitionActor {
    type Result = bool;

    fn handle(&mut self, message: SetMeterThresholds, _ctx: &mut Self::Context) -> bool {
        let Some(entry) = self.meters.get_mut(&message.meter) else {
            return false;
        };
        entry.no_data_timeout_ms = i64::from(message.thresholds.no_data_timeout_s) * 1000;
        entry.addr.do_send(SetThresholds(message.thresholds));
        true
    }
}
