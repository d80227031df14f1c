//! `PartitionActor`: owns the meter actors of one log partition.
//!
//! A pump task on the same arbiter reads the partition in batches and hands each batch
//! to this actor, which routes readings to meter actors (creating them on first sight)
//! in log order. The pump stops reading while the meters' in-flight readings exceed the
//! high-water mark (backpressure to the log, never an unbounded buffer). A sweep every
//! second raises "no data" for meters silent past their timeout and runs the alert
//! timers (reminders, snoozes that ran out) of meters whose next one is due — each meter
//! reports that time ([`AlertTimer`]), so no alert has a timer of its own.
//!
//! With a store, the pump hands each batch's readings to the partition's
//! [`BatchWriter`] (raw readings history) before routing it, and a periodic
//! [`Checkpoint`] makes the partition's state durable up to an offset: every changed
//! meter snapshots itself (its mailbox is FIFO, so the snapshot covers exactly the
//! readings routed before), the readings and alert writers flush, the snapshots and then
//! the checkpoint offset are stored, and the log may forget what came before it.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, AsyncContext, Context, Handler, Message, Supervisor};
use gridpulse_domain::MeterId;
use rustc_hash::FxHashMap;

use actix::{ActorFutureExt, ResponseActFuture, WrapFuture};
use gridpulse_domain::Reading;

use crate::clock::Clock;
use crate::log::{LinkRecord, LogError, LogRecord, PartitionReader, ReadingSource};
use crate::meter_actor::{
    ApplyReading, CheckAlertTimers, CheckNoData, LinkChanged, MeterActor, PartitionShared,
    SetThresholds, TakeSnapshot,
};
use crate::metrics;
use crate::thresholds::Thresholds;
use crate::writer::BatchWriter;

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
    /// How often to checkpoint (with a store).
    pub checkpoint_interval: Duration,
    /// The log, told about checkpoints so it can forget what they cover.
    pub source: Arc<dyn ReadingSource>,
}

#[derive(Debug)]
struct MeterEntry {
    addr: Addr<MeterActor>,
    last_arrival_ms: i64,
    no_data_timeout_ms: i64,
    no_data_checked: bool,
    /// When the meter's next alert timer is due (wall clock, Unix ms), as it reported.
    alert_timer_ms: Option<i64>,
    /// Changed since the last checkpoint (readings, or a sweep's check).
    dirty: bool,
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
    /// Writes raw readings to the store (with persistence).
    readings_writer: Option<BatchWriter<Reading>>,
    /// Offset after the last routed record.
    next_offset: u64,
    /// Meters with readings since the last checkpoint.
    dirty: Vec<MeterId>,
    checkpoint_running: bool,
    /// Link changes waiting for the readings appended before them to be routed.
    pending_links: Vec<(LinkStatus, tokio::sync::oneshot::Sender<Result<(), String>>)>,
}

impl PartitionActor {
    /// A partition actor that will read `reader` once started.
    pub fn new(
        partition: u32,
        config: PartitionConfig,
        shared: Rc<PartitionShared>,
        reader: Box<dyn PartitionReader>,
        start_offset: u64,
    ) -> PartitionActor {
        let readings_writer = shared.store.as_ref().map(|store| {
            BatchWriter::spawn(
                "readings",
                Arc::clone(store),
                16,
                Arc::new(|store: &dyn gridpulse_store::Store, readings: &[Reading]| {
                    store.write_readings(readings)
                }),
            )
        });
        PartitionActor {
            partition,
            config,
            shared,
            meters: FxHashMap::default(),
            sorted_ids: None,
            reader: Some(reader),
            readings_writer,
            next_offset: start_offset,
            dirty: Vec::new(),
            checkpoint_running: false,
            pending_links: Vec::new(),
        }
    }

    /// Hands a link change to its meter (behind the readings already routed to it) and
    /// answers through `done` once the meter made it durable.
    fn forward_link(
        &mut self,
        link: LinkStatus,
        done: tokio::sync::oneshot::Sender<Result<(), String>>,
    ) {
        let now_ms = self.config.clock.now_ms();
        let track_changes = self.shared.store.is_some();
        let entry = self.meter_entry(link.meter, now_ms);
        if link.online {
            // Heard from: the silence rule counts from now.
            entry.last_arrival_ms = now_ms;
            entry.no_data_checked = false;
        } else {
            // `no_data` is open (or latched) from now on: nothing for the sweep to add.
            entry.no_data_checked = true;
        }
        let request = entry.addr.send(LinkChanged {
            online: link.online,
            at_ms: link.at_ms,
            offset: link.offset,
        });
        if track_changes && !entry.dirty {
            entry.dirty = true;
            self.dirty.push(link.meter);
        }
        actix::spawn(async move {
            let result = match request.await {
                Ok(result) => result,
                Err(error) => Err(format!("meter actor: {error}")),
            };
            let _ = done.send(result);
        });
    }

    /// The entry of `meter`, starting its actor (which restores its snapshot) if needed.
    fn meter_entry(&mut self, meter: MeterId, now_ms: i64) -> &mut MeterEntry {
        let (thresholds, shared) = (&self.config.default_thresholds, &self.shared);
        let sorted_ids = &mut self.sorted_ids;
        self.meters.entry(meter).or_insert_with(|| {
            let thresholds = Arc::clone(thresholds);
            let shared = Rc::clone(shared);
            let no_data_timeout_ms = i64::from(thresholds.no_data_timeout_s) * 1000;
            let addr = Supervisor::start(move |_ctx| MeterActor::new(meter, thresholds, shared));
            metrics::record_meters_live(1);
            *sorted_ids = None;
            MeterEntry {
                addr,
                last_arrival_ms: now_ms,
                no_data_timeout_ms,
                no_data_checked: false,
                alert_timer_ms: None,
                dirty: false,
            }
        })
    }

    /// The periodic sweep: "no data" for silent meters, alert timers that are due. A
    /// meter it sends a check to is part of the next checkpoint (what the check raises
    /// or ends is in its snapshot).
    fn sweep(&mut self) {
        let now_ms = self.config.clock.now_ms();
        let track_changes = self.shared.store.is_some();
        for (meter, entry) in self.meters.iter_mut() {
            let mut checked = false;
            if !entry.no_data_checked && now_ms - entry.last_arrival_ms > entry.no_data_timeout_ms {
                entry.no_data_checked = true;
                checked = true;
                entry.addr.do_send(CheckNoData {
                    now_ms,
                    last_arrival_ms: entry.last_arrival_ms,
                });
            }
            if entry.alert_timer_ms.is_some_and(|due_ms| due_ms <= now_ms) {
                // The meter reports its next one after the check.
                entry.alert_timer_ms = None;
                checked = true;
                entry.addr.do_send(CheckAlertTimers { now_ms });
            }
            if checked && track_changes && !entry.dirty {
                entry.dirty = true;
                self.dirty.push(*meter);
            }
        }
        metrics::record_mailbox_depth(self.partition, self.shared.in_flight.get());
    }
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4);
        ctx.run_interval(self.config.no_data_sweep, |actor, _ctx| actor.sweep());
        if self.shared.store.is_some() {
            ctx.run_interval(self.config.checkpoint_interval, |actor, ctx| {
                if !actor.checkpoint_running {
                    ctx.notify(Checkpoint);
                }
            });
        }
        let Some(reader) = self.reader.take() else {
            return;
        };
        actix::spawn(pump(
            self.partition,
            reader,
            ctx.address(),
            Rc::clone(&self.shared),
            self.readings_writer.clone(),
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
    readings_writer: Option<BatchWriter<Reading>>,
    max_batch: usize,
) {
    loop {
        match reader.next_batch(max_batch).await {
            Ok(records) => {
                let links = reader.take_links();
                if let Some(next_offset) = records.last().map(|record| record.offset + 1) {
                    // History first (bounded queue: a slow store slows the pump).
                    if let Some(writer) = &readings_writer
                        && writer
                            .send(records.iter().map(|record| record.reading).collect())
                            .await
                            .is_err()
                    {
                        tracing::error!(partition, "readings writer stopped");
                        break;
                    }
                    if actor.send(RouteBatch(records)).await.is_err() {
                        break;
                    }
                    reader.commit(next_offset);
                }
                // Link changes from the log, behind the batch's readings (the actor's
                // mailbox is FIFO) and durable before the pump reads on.
                if !links.is_empty() && !apply_links(partition, &actor, links).await {
                    break;
                }
                if shared.in_flight.get() > shared.high_water {
                    shared.pump_waiting.set(true);
                    shared.drained.notified().await;
                }
            }
            Err(LogError::Closed) => break,
            Err(LogError::Revoked) => {
                // Hand over: make what was applied durable (the checkpoint commits its
                // offset while this process still owns the partition), then drop the
                // meters; the new owner restores their snapshots.
                tracing::info!(
                    partition,
                    "partition revoked: checkpointing, then dropping its meters"
                );
                match actor.send(Checkpoint).await {
                    Ok(Ok(offset)) => {
                        tracing::debug!(partition, offset, "hand-over checkpoint stored")
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(partition, %error, "hand-over checkpoint failed: the new owner replays more")
                    }
                    Err(_) => break,
                }
                if actor.send(ResetPartition).await.is_err() {
                    break;
                }
                reader.released();
            }
            Err(error) => {
                tracing::warn!(partition, %error, "reading the log failed, retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tracing::debug!(partition, "partition pump stopped");
}

/// Applies link changes read from the log, in order, each made durable by its meter
/// (retried while the store fails: the offset after it must not be checkpointed before).
/// `false`: the partition actor stopped.
async fn apply_links(partition: u32, actor: &Addr<PartitionActor>, links: Vec<LinkRecord>) -> bool {
    for link in links {
        loop {
            let status = LinkStatus {
                meter: link.meter,
                online: link.online,
                at_ms: link.at_ms,
                after_offset: 0,
                offset: Some(link.offset),
            };
            match actor.send(status).await {
                Ok(Ok(())) => break,
                Ok(Err(error)) => {
                    tracing::warn!(partition, meter = %link.meter, %error, "link change not stored, retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(_) => return false,
            }
        }
    }
    true
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
        let track_changes = self.shared.store.is_some();
        for record in batch.0 {
            let meter = record.reading.meter;
            let entry = self.meter_entry(meter, now_ms);
            // Backfill (history delivered late) is not the meter being heard from.
            if !record.reading.backfill {
                entry.last_arrival_ms = now_ms;
                entry.no_data_checked = false;
            }
            entry.addr.do_send(ApplyReading {
                reading: record.reading,
                offset: record.offset,
                arrival_ms: now_ms,
            });
            // Only checkpoints need to know who changed.
            if track_changes && !entry.dirty {
                entry.dirty = true;
                self.dirty.push(meter);
            }
            self.next_offset = record.offset + 1;
        }
        self.shared
            .in_flight
            .set(self.shared.in_flight.get() + n_records);
        let n_stale = self.shared.n_stale.replace(0);
        metrics::record_readings(n_records, n_stale);
        if !self.pending_links.is_empty() {
            let next_offset = self.next_offset;
            let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_links)
                .into_iter()
                .partition(|(link, _)| link.after_offset <= next_offset);
            self.pending_links = waiting;
            for (link, done) in ready {
                self.forward_link(link, done);
            }
        }
    }
}

/// A meter's link changed (MQTT status topic or last will). Applied after every
/// reading appended to the log before it (`after_offset`: the partition's end offset
/// when the bridge sent it), so it never overtakes readings still in the pump; answers
/// once the meter made the change durable.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), String>")]
pub struct LinkStatus {
    /// The meter.
    pub meter: MeterId,
    /// Up (`online`) or down.
    pub online: bool,
    /// Wall clock when the bridge received it, Unix ms.
    pub at_ms: i64,
    /// Apply once the partition routed every record before this offset.
    pub after_offset: u64,
    /// Its own offset when it came through the reading log (Kafka), for replays.
    pub offset: Option<u64>,
}

impl Handler<LinkStatus> for PartitionActor {
    type Result = actix::ResponseFuture<Result<(), String>>;

    fn handle(&mut self, link: LinkStatus, _ctx: &mut Self::Context) -> Self::Result {
        let (done, answer) = tokio::sync::oneshot::channel();
        if link.after_offset <= self.next_offset {
            self.forward_link(link, done);
        } else {
            self.pending_links.push((link, done));
        }
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err("the partition was dropped".to_owned()))
        })
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
    /// Only ids that start with this (the dashboard's search).
    pub prefix: Option<std::sync::Arc<str>>,
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
        let mut start = match message.after {
            Some(after) => sorted.partition_point(|id| *id <= after),
            None => 0,
        };
        let prefix = message.prefix.as_deref().unwrap_or("");
        // Ids sort by their bytes, so those with the prefix are one run from the first
        // id not below it.
        start = start.max(sorted.partition_point(|id| id.as_str() < prefix));
        sorted[start..]
            .iter()
            .take_while(|id| id.as_str().starts_with(prefix))
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

/// Make this partition's state durable up to the last routed offset; answers the
/// checkpointed offset.
#[derive(Debug, Message)]
#[rtype(result = "Result<u64, String>")]
pub struct Checkpoint;

impl Handler<Checkpoint> for PartitionActor {
    type Result = ResponseActFuture<Self, Result<u64, String>>;

    fn handle(&mut self, _message: Checkpoint, _ctx: &mut Self::Context) -> Self::Result {
        let offset = self.next_offset;
        let Some(store) = self.shared.store.clone() else {
            return Box::pin(actix::fut::ready(Ok(offset)));
        };
        self.checkpoint_running = true;
        // Ask every changed meter for its snapshot now: each request queues behind the
        // readings already routed to it, so together they are a consistent cut at `offset`.
        let in_cut: Vec<MeterId> = std::mem::take(&mut self.dirty);
        let mut requests = Vec::with_capacity(in_cut.len());
        for meter in &in_cut {
            if let Some(entry) = self.meters.get_mut(meter) {
                entry.dirty = false;
                requests.push(entry.addr.send(TakeSnapshot));
            }
        }
        let (partition, hub, writer, source, usage) = (
            self.partition,
            Arc::clone(&self.shared.hub),
            self.readings_writer.clone(),
            Arc::clone(&self.config.source),
            self.shared.usage.clone(),
        );
        let work = async move {
            let mut rows = Vec::with_capacity(requests.len());
            for request in requests {
                if let Ok(Some(row)) = request.await {
                    rows.push(row);
                }
            }
            if let Some(writer) = writer {
                writer.flush().await.map_err(|error| error.to_string())?;
            }
            hub.flush().await.map_err(|error| error.to_string())?;
            // The usage minutes these readings closed reached their users durably.
            if let Some(usage) = usage {
                usage.flush().await?;
            }
            store
                .put_snapshots(&rows)
                .await
                .map_err(|error| error.to_string())?;
            store.flush().await.map_err(|error| error.to_string())?;
            store
                .put_checkpoint(partition, offset)
                .await
                .map_err(|error| error.to_string())?;
            store.flush().await.map_err(|error| error.to_string())?;
            source.checkpointed(partition, offset);
            tracing::debug!(
                partition,
                offset,
                n_snapshots = rows.len(),
                "checkpoint stored"
            );
            Ok(offset)
        };
        Box::pin(
            work.into_actor(self)
                .map(move |result: Result<u64, String>, actor, _ctx| {
                    actor.checkpoint_running = false;
                    match &result {
                        Ok(_) => metrics::record_checkpoint("ok"),
                        Err(error) => {
                            metrics::record_checkpoint("error");
                            tracing::error!(partition, %error, "checkpoint failed; will retry");
                            // Their snapshots may not be stored: they stay in the next cut.
                            for meter in in_cut {
                                if let Some(entry) = actor.meters.get_mut(&meter)
                                    && !entry.dirty
                                {
                                    entry.dirty = true;
                                    actor.dirty.push(meter);
                                }
                            }
                        }
                    }
                    result
                }),
        )
    }
}

/// Start a meter's actor (restoring its snapshot) if it is not running: a meter known
/// to the store is observable after a restart before its next reading.
#[derive(Debug, Message)]
#[rtype(result = "Addr<MeterActor>")]
pub struct EnsureMeter(pub MeterId);

impl Handler<EnsureMeter> for PartitionActor {
    type Result = actix::MessageResult<EnsureMeter>;

    fn handle(&mut self, message: EnsureMeter, _ctx: &mut Self::Context) -> Self::Result {
        let now_ms = self.config.clock.now_ms();
        actix::MessageResult(self.meter_entry(message.0, now_ms).addr.clone())
    }
}

/// When a meter's next alert timer is due (sent by the meter whenever it changes).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct AlertTimer {
    /// The meter.
    pub meter: MeterId,
    /// Wall clock, Unix ms; `None`: nothing to check.
    pub due_ms: Option<i64>,
}

impl Handler<AlertTimer> for PartitionActor {
    type Result = ();

    fn handle(&mut self, message: AlertTimer, _ctx: &mut Self::Context) {
        if let Some(entry) = self.meters.get_mut(&message.meter) {
            entry.alert_timer_ms = message.due_ms;
        }
    }
}

/// A restored meter's own "no data" timeout (from its stored configuration).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct NoDataTimeout {
    /// The meter.
    pub meter: MeterId,
    /// Its timeout, seconds.
    pub timeout_s: u32,
}

impl Handler<NoDataTimeout> for PartitionActor {
    type Result = ();

    fn handle(&mut self, message: NoDataTimeout, _ctx: &mut Self::Context) {
        if let Some(entry) = self.meters.get_mut(&message.meter) {
            entry.no_data_timeout_ms = i64::from(message.timeout_s) * 1000;
        }
    }
}

/// The partition moved to another process: drop every meter actor (their state may be
/// behind what the new owner restores) and forget what was routed. If the partition comes
/// back, meters restore from the store and the log replays from the committed offset.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ResetPartition;

impl Handler<ResetPartition> for PartitionActor {
    type Result = ();

    fn handle(&mut self, _message: ResetPartition, _ctx: &mut Self::Context) {
        let n_meters = self.meters.len() as i64;
        // Dropping the last address stops an actor once its mailbox is drained.
        self.meters.clear();
        self.sorted_ids = None;
        self.dirty.clear();
        // Their answers fail: the bridge leaves those messages unacknowledged.
        self.pending_links.clear();
        metrics::record_meters_live(-n_meters);
        metrics::record_partition_revoked();
    }
}
