//! `MeterActor`: one actix actor per meter, a thin shell around [`MeterState`].
//!
//! It lives on the arbiter of its partition, receives readings from the
//! [`PartitionActor`](crate::partition_actor::PartitionActor) in log order, and publishes
//! the alert changes they cause to the hub. A panic while applying a reading stops the
//! actor; its supervisor restarts it with fresh state (counted in
//! `gridpulse_actors_restarts_total`) and the other meters carry on.
//!
//! Alert timers (reminders, snoozes that run out) have no timer of their own: the meter
//! tells its partition when its next one is due ([`AlertTimer`]) and the partition's
//! periodic sweep sends [`CheckAlertTimers`] then. What is not in the reading log — a
//! human action, a reminder, the end of an outage (it decides which readings are
//! inhibited) — is made durable at once: the meter's snapshot is stored and flushed
//! while its mailbox is held, so no later snapshot can be overtaken by it and a restart
//! never repeats or loses it.

use std::cell::Cell;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use actix::{
    Actor, ActorFutureExt, AsyncContext, Context, Handler, Message, Supervised, WrapFuture,
};
use gridpulse_domain::{AlertKind, AlertRecord, MeterId, Reading};
use gridpulse_store::{ConfigKind, SnapshotRow, Store};

use crate::system::MeterConfig;
use tokio::sync::Notify;

use crate::clock::{Clock, SystemClock};

use crate::hub::AlertHub;
use crate::meter_state::{AlertActionError, AlertChanges, Applied, MeterSnapshot, MeterState};
use crate::metrics;
use crate::thresholds::Thresholds;
use crate::usage::UsageSink;
use gridpulse_domain::UserId;

/// Capacity of a meter's mailbox for `send` (readings are accounted separately, see
/// [`PartitionShared`]).
pub const METER_MAILBOX_CAPACITY: usize = 64;

/// State shared by a partition actor, its pump and its meter actors. They all run on
/// one arbiter thread, so plain cells suffice.
#[derive(Debug)]
pub struct PartitionShared {
    /// The alert hub.
    pub hub: Arc<AlertHub>,
    /// Readings sent to meter actors and not yet applied: the partition's mailbox depth.
    pub in_flight: Cell<u64>,
    /// Above this depth the pump stops reading the log ...
    pub high_water: u64,
    /// ... until the depth falls to this.
    pub low_water: u64,
    /// Whether the pump is waiting for the depth to fall.
    pub pump_waiting: Cell<bool>,
    /// Wakes the pump.
    pub drained: Notify,
    /// Stale readings seen since the last metrics flush.
    pub n_stale: Cell<u64>,
    /// Readings applied by this partition's meters, ever (read from other threads;
    /// written only by this partition's thread, so never contended).
    pub n_applied: Arc<AtomicU64>,
    /// The log partition.
    pub partition: u32,
    /// Where snapshots live, when persistence is on.
    pub store: Option<Arc<dyn Store>>,
    /// The partition actor (to tell it about restored per-meter timeouts).
    pub partition_actor: Option<actix::Addr<crate::partition_actor::PartitionActor>>,
    /// Where closed usage minutes go (to the meter's owner), when users are hosted.
    pub usage: Option<Arc<dyn UsageSink>>,
    /// Remind of firing, unacknowledged alerts this often, ms (`None`: never).
    pub reminder_after_ms: Option<i64>,
}

impl PartitionShared {
    fn reading_done(&self) {
        self.n_applied.fetch_add(1, Ordering::Relaxed);
        let depth = self.in_flight.get().saturating_sub(1);
        self.in_flight.set(depth);
        if self.pump_waiting.get() && depth <= self.low_water {
            self.pump_waiting.set(false);
            self.drained.notify_one();
        }
    }
}

/// The actor of one meter.
#[derive(Debug)]
pub struct MeterActor {
    state: MeterState,
    thresholds: Arc<Thresholds>,
    shared: Rc<PartitionShared>,
    /// Offset of the last reading applied; readings at or before it are replays.
    applied_offset: Option<u64>,
    /// The user who owns the meter (receives its usage minutes). Boxed: a user id is 48
    /// bytes inline, and with it the meter's task no longer fits the allocator's
    /// 1,280-byte size class (the next one is 1,536; README "Performance").
    owner: Option<Box<UserId>>,
    /// The next alert timer last told to the partition (`None`: nothing told yet).
    reported_timer: Option<Option<i64>>,
}

impl MeterActor {
    /// A meter actor with empty state.
    pub fn new(
        meter: MeterId,
        thresholds: Arc<Thresholds>,
        shared: Rc<PartitionShared>,
    ) -> MeterActor {
        MeterActor {
            state: MeterState::new(meter),
            thresholds,
            shared,
            applied_offset: None,
            owner: None,
            reported_timer: Some(None),
        }
    }

    /// Tells the partition when this meter's next alert timer is due, if that changed
    /// (or always, with `force`: after a check the partition forgot the old one).
    fn report_alert_timer(&mut self, force: bool) {
        let due_ms = self
            .state
            .next_alert_timer_ms(self.shared.reminder_after_ms);
        if !force && self.reported_timer == Some(due_ms) {
            return;
        }
        self.reported_timer = Some(due_ms);
        if let Some(partition) = &self.shared.partition_actor {
            partition.do_send(crate::partition_actor::AlertTimer {
                meter: self.state.meter(),
                due_ms,
            });
        }
    }

    /// Stores the meter's snapshot and flushes the store and the alert history, holding
    /// the mailbox until done (`what` names the cause in the log).
    fn make_durable(&mut self, ctx: &mut Context<Self>, what: &'static str) {
        let Some(store) = self.shared.store.clone() else {
            return;
        };
        let Some(row) = self.snapshot_row() else {
            return;
        };
        let hub = Arc::clone(&self.shared.hub);
        let write = async move {
            let stored = async {
                store.put_snapshots(std::slice::from_ref(&row)).await?;
                store.flush().await
            };
            stored.await.map_err(|error| error.to_string())?;
            hub.flush().await.map_err(|error| error.to_string())
        };
        ctx.wait(write.into_actor(self).map(move |result, actor, _ctx| {
            if let Err(error) = result {
                tracing::error!(meter = %actor.state.meter(), %error, what, "state change applied but its snapshot was not stored; the next checkpoint stores it");
            }
        }));
    }

    /// Loads the meter's snapshot before any message is handled (`ctx.wait` holds the
    /// mailbox), so readings replayed after a restart apply on top of it.
    fn restore(&mut self, ctx: &mut Context<Self>) {
        let Some(store) = self.shared.store.clone() else {
            return;
        };
        let meter = self.state.meter();
        let load = async move {
            let thresholds = store.get_config(ConfigKind::Meter, meter.as_str()).await;
            (store.get_snapshot(meter).await, thresholds)
        };
        ctx.wait(load.into_actor(self).map(move |(result, thresholds), actor, _ctx| {
            match thresholds {
                Ok(Some(json)) => match serde_json::from_slice::<MeterConfig>(&json) {
                    Ok(config) => {
                        if let Some(thresholds) = config.thresholds {
                            if let Some(partition) = &actor.shared.partition_actor {
                                partition.do_send(crate::partition_actor::NoDataTimeout {
                                    meter,
                                    timeout_s: thresholds.no_data_timeout_s,
                                });
                            }
                            actor.thresholds = Arc::new(thresholds);
                        }
                        actor.owner = config.owner.map(Box::new);
                    }
                    Err(error) => tracing::error!(%meter, %error, "stored meter configuration is unreadable; using default thresholds"),
                },
                Ok(None) => {}
                Err(error) => tracing::error!(%meter, %error, "cannot read the meter configuration; using default thresholds"),
            }
            actor.apply_snapshot(meter, result);
            actor.report_alert_timer(false);
        }));
    }

    fn apply_snapshot(
        &mut self,
        meter: MeterId,
        result: Result<Option<SnapshotRow>, gridpulse_store::StoreError>,
    ) {
        let actor = self;
        match result {
            Ok(None) => metrics::record_snapshot_restore("none"),
            Ok(Some(row)) => match MeterState::decode(&row.state) {
                Ok(state) if state.meter() == meter => {
                    actor.state = state;
                    actor.applied_offset = row.applied_offset;
                    metrics::record_snapshot_restore("restored");
                }
                Ok(_) | Err(_) => {
                    metrics::record_snapshot_restore("corrupt");
                    tracing::error!(%meter, "stored snapshot is corrupt or belongs to another meter; starting from the log");
                }
            },
            Err(error) => {
                metrics::record_snapshot_restore("corrupt");
                tracing::error!(%meter, %error, "cannot read the meter snapshot; starting from the log");
            }
        }
    }

    fn snapshot_row(&self) -> Option<SnapshotRow> {
        match self.state.encode() {
            Ok(state) => Some(SnapshotRow {
                meter: self.state.meter(),
                partition: self.shared.partition,
                applied_offset: self.applied_offset,
                state,
                written_at_ms: SystemClock.now_ms(),
            }),
            Err(error) => {
                tracing::error!(meter = %self.state.meter(), %error, "cannot encode meter state");
                None
            }
        }
    }

    fn publish(&self, changes: AlertChanges) {
        if !changes.is_empty() {
            self.shared.hub.publish(changes);
        }
    }
}

impl Actor for MeterActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(METER_MAILBOX_CAPACITY);
        self.restore(ctx);
    }
}

impl Supervised for MeterActor {
    fn restarting(&mut self, _ctx: &mut Self::Context) {
        metrics::record_restart();
        tracing::warn!(meter = %self.state.meter(), "meter actor restarting from its last snapshot");
        self.state = MeterState::new(self.state.meter());
        self.applied_offset = None;
        self.owner = None;
        self.reported_timer = Some(None);
        // `started` runs again after this and restores the snapshot.
    }
}

/// Apply one reading (sent by the partition actor, in log order).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ApplyReading {
    /// The reading.
    pub reading: Reading,
    /// Its offset in the partition.
    pub offset: u64,
    /// Wall-clock time the partition routed it, Unix ms (ends an outage; starts the
    /// reminder schedule of an alert it raises).
    pub arrival_ms: i64,
}

impl Handler<ApplyReading> for MeterActor {
    type Result = ();

    fn handle(&mut self, message: ApplyReading, ctx: &mut Self::Context) {
        self.shared.reading_done();
        // Already in the restored snapshot: a replay after a restart.
        if self
            .applied_offset
            .is_some_and(|applied| message.offset <= applied)
        {
            self.shared.n_stale.set(self.shared.n_stale.get() + 1);
            return;
        }
        let inhibited_before = self.state.n_inhibited();
        let outcome = self.guarded(ctx, |state, thresholds, changes| {
            state.apply_closing(&message.reading, message.arrival_ms, thresholds, changes)
        });
        let (stale, closed) = match outcome {
            Some((applied, closed)) => (Some(applied == Applied::Stale), closed),
            None => (None, None),
        };
        if stale.is_some() {
            self.applied_offset = Some(message.offset);
            metrics::record_alerts_inhibited(self.state.n_inhibited() - inhibited_before);
            self.report_alert_timer(false);
            // The end of an outage decides which later readings are inhibited: durable
            // before the next reading, so a replay never judges them otherwise.
            if self.state.take_reconnected() {
                self.make_durable(ctx, "reconnect");
            }
        }
        // A reading that opens a new minute closes the previous one: the owner's share.
        if let Some(closed) = closed
            && let (Some(owner), Some(usage)) = (self.owner.as_deref(), &self.shared.usage)
        {
            usage.publish(closed.to_delta(*owner, self.state.meter()));
            metrics::record_usage_sent();
        }
        if stale == Some(true) {
            self.shared.n_stale.set(self.shared.n_stale.get() + 1);
        }
    }
}

/// Returns the meter's snapshot (checkpoints ask the meters that changed).
#[derive(Debug, Message)]
#[rtype(result = "Option<SnapshotRow>")]
pub struct TakeSnapshot;

impl Handler<TakeSnapshot> for MeterActor {
    type Result = Option<SnapshotRow>;

    fn handle(&mut self, _message: TakeSnapshot, _ctx: &mut Self::Context) -> Self::Result {
        self.snapshot_row()
    }
}

impl MeterActor {
    /// Runs `rule` on the state and publishes the alert changes it makes. A panic is
    /// contained here: the actor stops and its supervisor restarts it with fresh state;
    /// nothing is published and no other meter is affected.
    fn guarded<R>(
        &mut self,
        ctx: &mut Context<Self>,
        rule: impl FnOnce(&mut MeterState, &Thresholds, &mut AlertChanges) -> R,
    ) -> Option<R> {
        let mut changes = AlertChanges::new();
        let (state, thresholds) = (&mut self.state, &self.thresholds);
        match std::panic::catch_unwind(AssertUnwindSafe(|| rule(state, thresholds, &mut changes))) {
            Ok(result) => {
                self.publish(changes);
                Some(result)
            }
            Err(_) => {
                tracing::error!(meter = %self.state.meter(), "meter actor panicked; restarting it");
                actix::ActorContext::stop(ctx);
                None
            }
        }
    }
}

/// Raise "no data" if the meter has been silent too long (sent by the partition sweep).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CheckNoData {
    /// Wall clock now, Unix ms.
    pub now_ms: i64,
    /// Wall-clock time the last reading arrived, Unix ms.
    pub last_arrival_ms: i64,
}

impl Handler<CheckNoData> for MeterActor {
    type Result = ();

    fn handle(&mut self, message: CheckNoData, _ctx: &mut Self::Context) {
        let mut changes = AlertChanges::new();
        self.state.check_no_data(
            message.now_ms,
            message.last_arrival_ms,
            &self.thresholds,
            &mut changes,
        );
        self.publish(changes);
        self.report_alert_timer(false);
    }
}

/// Run the alert timers due at `now_ms` (reminders, snoozes that ran out); sent by the
/// partition sweep when the time the meter reported in [`AlertTimer`] has come.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct CheckAlertTimers {
    /// Wall clock now, Unix ms.
    pub now_ms: i64,
}

impl Handler<CheckAlertTimers> for MeterActor {
    type Result = ();

    fn handle(&mut self, message: CheckAlertTimers, ctx: &mut Self::Context) {
        let mut changes = AlertChanges::new();
        self.state
            .check_alert_timers(message.now_ms, self.shared.reminder_after_ms, &mut changes);
        let changed = !changes.is_empty();
        self.publish(changes);
        self.report_alert_timer(true);
        // A reminder is not in the log: stored before anything else, so a restart
        // finds it sent and does not send it again.
        if changed {
            self.make_durable(ctx, "alert timers");
        }
    }
}

/// The meter's link changed (its MQTT status topic or last will, via the bridge):
/// `offline` raises `no_data` at once, `online` clears it. Not in the reading log, so
/// the change is made durable (snapshot and alert history stored and flushed) before
/// the answer, and the bridge acknowledges the status message only then.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), String>")]
pub struct LinkChanged {
    /// Up (`online`) or down.
    pub online: bool,
    /// Wall clock when the bridge received it, Unix ms.
    pub at_ms: i64,
    /// Its offset when it came through the reading log (Kafka): at or before the
    /// meter's applied offset it is a replay and changes nothing.
    pub offset: Option<u64>,
}

impl Handler<LinkChanged> for MeterActor {
    type Result = actix::AtomicResponse<Self, Result<(), String>>;

    fn handle(&mut self, message: LinkChanged, _ctx: &mut Self::Context) -> Self::Result {
        if let Some(offset) = message.offset {
            if self.applied_offset.is_some_and(|applied| offset <= applied) {
                return actix::AtomicResponse::new(Box::pin(actix::fut::ready(Ok(()))));
            }
            self.applied_offset = Some(offset);
        }
        let mut changes = AlertChanges::new();
        if message.online {
            self.state.link_up(message.at_ms, &mut changes);
        } else {
            self.state
                .link_down(message.at_ms, &self.thresholds, &mut changes);
        }
        // `link_up` marks the outage's end; it is made durable right here.
        let _ = self.state.take_reconnected();
        let changed = !changes.is_empty();
        self.publish(changes);
        self.report_alert_timer(false);
        let durable = match (&self.shared.store, changed) {
            (Some(store), true) => self.snapshot_row().map(|row| (Arc::clone(store), row)),
            _ => None,
        };
        let hub = Arc::clone(&self.shared.hub);
        let work = async move {
            if let Some((store, row)) = durable {
                store
                    .put_snapshots(std::slice::from_ref(&row))
                    .await
                    .map_err(|error| error.to_string())?;
                store.flush().await.map_err(|error| error.to_string())?;
            }
            if changed {
                hub.flush().await.map_err(|error| error.to_string())?;
            }
            Ok(())
        };
        actix::AtomicResponse::new(Box::pin(work.into_actor(self)))
    }
}

/// Returns a serialisable snapshot of the meter's state.
#[derive(Debug, Message)]
#[rtype(result = "MeterSnapshot")]
pub struct Observe;

impl Handler<Observe> for MeterActor {
    type Result = actix::MessageResult<Observe>;

    fn handle(&mut self, _message: Observe, _ctx: &mut Self::Context) -> Self::Result {
        actix::MessageResult(self.state.snapshot(&self.thresholds))
    }
}

/// What to do to an alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertAction {
    /// Acknowledge it.
    Acknowledge,
    /// Resolve it.
    Resolve,
    /// Assign it to a user or person (`None`: unassign it).
    Assign {
        /// A user id or a name, 1 to 100 characters.
        to: Option<String>,
    },
    /// Comment on it.
    Comment {
        /// 1 to 2000 characters.
        text: String,
    },
    /// Hold its reminders back until a wall-clock time.
    Snooze {
        /// Unix ms, after now and at most 30 days ahead.
        until_ms: i64,
    },
    /// Lift its snooze.
    Unsnooze,
}

/// Act on one of the meter's open alerts.
#[derive(Debug, Message)]
#[rtype(result = "Result<AlertRecord, AlertActionError>")]
pub struct AlertCommand {
    /// What to do.
    pub action: AlertAction,
    /// The alert's kind.
    pub kind: AlertKind,
    /// The alert's first-seen time (part of its id).
    pub first_seen_ms: i64,
    /// Who does it.
    pub by: String,
    /// When, Unix ms.
    pub at_ms: i64,
}

impl Handler<AlertCommand> for MeterActor {
    /// Holds the mailbox until the change is durable (no snapshot taken after it can be
    /// stored before it).
    type Result = actix::AtomicResponse<Self, Result<AlertRecord, AlertActionError>>;

    fn handle(&mut self, command: AlertCommand, _ctx: &mut Self::Context) -> Self::Result {
        let AlertCommand {
            action,
            kind,
            first_seen_ms,
            by,
            at_ms,
        } = command;
        let mut changes = AlertChanges::new();
        let result = match action {
            AlertAction::Acknowledge => {
                self.state
                    .acknowledge(kind, first_seen_ms, &by, at_ms, &mut changes)
            }
            AlertAction::Resolve => {
                self.state
                    .resolve(kind, first_seen_ms, &by, at_ms, &mut changes)
            }
            AlertAction::Assign { to } => {
                self.state
                    .assign(kind, first_seen_ms, to.as_deref(), &by, at_ms, &mut changes)
            }
            AlertAction::Comment { text } => {
                self.state
                    .comment(kind, first_seen_ms, &text, &by, at_ms, &mut changes)
            }
            AlertAction::Snooze { until_ms } => {
                self.state
                    .snooze(kind, first_seen_ms, until_ms, &by, at_ms, &mut changes)
            }
            AlertAction::Unsnooze => {
                self.state
                    .unsnooze(kind, first_seen_ms, &by, at_ms, &mut changes)
            }
        };
        let changed = !changes.is_empty();
        self.publish(changes);
        self.report_alert_timer(false);
        // A human action is not in the log, so it cannot be replayed: make the meter's
        // state durable before answering.
        let durable = match (&self.shared.store, changed) {
            (Some(store), true) => self.snapshot_row().map(|row| (Arc::clone(store), row)),
            _ => None,
        };
        let hub = Arc::clone(&self.shared.hub);
        let work = async move {
            if let Some((store, row)) = durable {
                let written = async {
                    store.put_snapshots(std::slice::from_ref(&row)).await?;
                    store.flush().await
                };
                if let Err(error) = written.await {
                    tracing::error!(meter = %row.meter, %error, "alert command applied but its snapshot was not stored");
                    return Err(AlertActionError::NotDurable(error.to_string()));
                }
            }
            // The alert's own record and history too (queued to the hub's writer).
            if let Err(error) = hub.flush().await {
                tracing::error!(%error, "alert command applied but its history was not stored");
                return Err(AlertActionError::NotDurable(error.to_string()));
            }
            result
        };
        actix::AtomicResponse::new(Box::pin(work.into_actor(self)))
    }
}

/// Replace the meter's thresholds.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetThresholds(pub Arc<Thresholds>);

impl Handler<SetThresholds> for MeterActor {
    type Result = ();

    fn handle(&mut self, message: SetThresholds, _ctx: &mut Self::Context) {
        self.thresholds = message.0;
    }
}

/// Replace the meter's owner (usage minutes closed from now on go to the new one).
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct SetOwner(pub Option<UserId>);

impl Handler<SetOwner> for MeterActor {
    type Result = ();

    fn handle(&mut self, message: SetOwner, _ctx: &mut Self::Context) {
        self.owner = message.0.map(Box::new);
    }
}

#[cfg(test)]
mod tests {
    use actix::Supervisor;
    use gridpulse_domain::MeterId;

    use super::*;

    /// A meter's actor runs as one tokio task whose cell (this future plus tokio's header
    /// and trailer) is aligned to 128 bytes. At 1,232 bytes here the cell was 1,408; at
    /// 1,144 it is 1,280 (seen with an LD_PRELOAD shim logging `posix_memalign`), and the
    /// 1,000,000-meter memory benchmark went from 2,030 to 1,905 bytes per meter. A field
    /// that makes this larger may cost every meter 128 bytes: measure before raising it.
    #[test]
    fn a_meter_task_stays_within_its_allocation_class() {
        let size = std::mem::size_of::<Supervisor<MeterActor>>();
        assert!(
            size <= 1144,
            "Supervisor<MeterActor> grew to {size} bytes (1,144 fits the 1,280-byte task cell)"
        );
    }

    /// Test hook: a rule that panics, run through the same guard as a reading.
    #[derive(Debug, Message)]
    #[rtype(result = "()")]
    struct InjectPanic;

    impl Handler<InjectPanic> for MeterActor {
        type Result = ();

        fn handle(&mut self, _message: InjectPanic, ctx: &mut Self::Context) {
            self.guarded(ctx, |_, _, _| panic!("injected failure"));
        }
    }

    fn apply(meter: MeterId, ts_ms: i64, offset: u64) -> ApplyReading {
        ApplyReading {
            reading: reading(meter, ts_ms),
            offset,
            arrival_ms: ts_ms,
        }
    }

    fn reading(meter: MeterId, ts_ms: i64) -> Reading {
        Reading {
            meter,
            ts_ms,
            voltage: 230.0,
            current: 1.0,
            power_w: 200.0,
            energy_wh: 10.0,
            credit: None,
            seq: None,
            backfill: false,
        }
    }

    #[actix_rt::test]
    async fn a_panicking_meter_restarts_fresh_and_the_others_carry_on() {
        let shared = Rc::new(PartitionShared {
            hub: AlertHub::new(16, 16, 16),
            in_flight: Cell::new(0),
            high_water: 100,
            low_water: 50,
            pump_waiting: Cell::new(false),
            drained: Notify::new(),
            n_stale: Cell::new(0),
            n_applied: Arc::default(),
            partition: 0,
            store: None,
            partition_actor: None,
            usage: None,
            reminder_after_ms: None,
        });
        let thresholds = Arc::new(Thresholds::default());
        let start = |id: &str| {
            let (meter, thresholds, shared) = (
                MeterId::new(id).unwrap(),
                Arc::clone(&thresholds),
                Rc::clone(&shared),
            );
            (
                meter,
                Supervisor::start(move |_| MeterActor::new(meter, thresholds, shared)),
            )
        };
        let (meter_a, a) = start("a");
        let (meter_b, b) = start("b");
        a.send(apply(meter_a, 1_700_000_000_000, 0)).await.unwrap();
        b.send(apply(meter_b, 1_700_000_000_000, 1)).await.unwrap();
        let restarts_before = metrics::restarts_total();

        a.send(InjectPanic).await.unwrap();

        let after_a = a.send(Observe).await.unwrap();
        let after_b = b.send(Observe).await.unwrap();
        assert_eq!(after_a.n_readings, 0, "restarted with fresh state");
        assert_eq!(after_b.n_readings, 1, "the other meter is untouched");
        assert_eq!(metrics::restarts_total(), restarts_before + 1);
        // The restarted actor keeps working.
        a.send(apply(meter_a, 1_700_000_005_000, 2)).await.unwrap();
        assert_eq!(a.send(Observe).await.unwrap().n_readings, 1);
        assert_eq!(shared.n_applied.load(Ordering::Relaxed), 3);
    }
}
