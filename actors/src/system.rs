//! `MeterSystem`: starts the partition actors on worker arbiters and is the one handle
//! the API uses to reach meters (observe, page, alert commands, thresholds).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix::{Actor, Addr, Arbiter, AsyncContext, MailboxError};
use gridpulse_domain::{AlertRecord, MeterId, parse_alert_id};
use tokio::sync::Notify;

use crate::clock::Clock;
use crate::hub::AlertHub;
use crate::log::ReadingSource;
use crate::meter_actor::{
    AlertAction, AlertCommand, MeterActor, Observe, PartitionShared, SetOwner,
};
use crate::meter_state::{AlertActionError, MeterSnapshot};
use crate::partition_actor::{
    Checkpoint, CountMeters, EnsureMeter, FindMeter, LinkStatus, ListMeterIds, PartitionActor,
    PartitionConfig, SetMeterThresholds,
};
use crate::thresholds::{Thresholds, ThresholdsError};
use crate::usage::UsageSink;
use gridpulse_domain::UserId;
use gridpulse_store::{ConfigKind, Store};

/// Settings of the actor system.
#[derive(Debug, Clone)]
pub struct SystemConfig {
    /// Worker threads (arbiters) hosting partitions; 0 means one per core.
    pub n_workers: usize,
    /// Most records routed per batch.
    pub max_batch: usize,
    /// Readings in flight per partition above which its pump pauses.
    pub max_in_flight: u64,
    /// Thresholds of meters without their own.
    pub default_thresholds: Thresholds,
    /// How often partitions look for silent meters.
    pub no_data_sweep: Duration,
    /// Where snapshots, history and checkpoints go; `None` keeps everything in memory.
    pub store: Option<Arc<dyn Store>>,
    /// How often partitions checkpoint (with a store).
    pub checkpoint_interval: Duration,
    /// Where meters send closed usage minutes (`None`: no user actors).
    pub usage: Option<Arc<dyn UsageSink>>,
    /// Remind of a firing alert nobody acknowledged this long after it was raised,
    /// then again as often, while not snoozed (`None` or zero: no reminders).
    pub reminder_after: Option<Duration>,
}

/// The default [`SystemConfig::reminder_after`]: 15 minutes.
pub const DEFAULT_REMINDER_AFTER: Duration = Duration::from_secs(15 * 60);
/// The furthest ahead an alert can be snoozed: 30 days.
pub const MAX_SNOOZE_MS: i64 = 30 * 86_400_000;
/// The longest comment, characters.
pub const MAX_COMMENT_CHARS: usize = 2000;
/// The longest name (of who acts, or of an assignee), characters.
pub const MAX_NAME_CHARS: usize = 100;

impl Default for SystemConfig {
    fn default() -> Self {
        SystemConfig {
            n_workers: 0,
            max_batch: 4096,
            max_in_flight: 65_536,
            default_thresholds: Thresholds::default(),
            no_data_sweep: Duration::from_secs(1),
            store: None,
            checkpoint_interval: Duration::from_secs(5),
            usage: None,
            reminder_after: Some(DEFAULT_REMINDER_AFTER),
        }
    }
}

/// Why a request to the actor system failed.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// The actor system is shutting down.
    #[error("actor system unavailable: {0}")]
    Unavailable(#[from] MailboxError),
    /// No meter with this id has reported.
    #[error("meter not found")]
    MeterNotFound,
    /// No user with this id has usage here or in the store.
    #[error("user not found")]
    UserNotFound,
    /// The alert id is malformed or names no open alert.
    #[error("alert not found or not open")]
    AlertNotOpen,
    /// One input of a command is unusable.
    #[error("`{field}` {reason}")]
    BadInput {
        /// The input (body field) to blame.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Rejected thresholds.
    #[error(transparent)]
    Thresholds(#[from] ThresholdsError),
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
}

impl From<AlertActionError> for SystemError {
    fn from(error: AlertActionError) -> Self {
        match error {
            AlertActionError::NotOpen => SystemError::AlertNotOpen,
            AlertActionError::NotDurable(message) => SystemError::Store(message),
        }
    }
}

/// Handle on the running meter actors.
#[derive(Debug, Clone)]
pub struct MeterSystem {
    partitions: Arc<Vec<Addr<PartitionActor>>>,
    hub: Arc<AlertHub>,
    clock: Arc<dyn Clock>,
    store: Option<Arc<dyn Store>>,
    n_applied: Arc<Vec<Arc<AtomicU64>>>,
    source: Arc<dyn ReadingSource>,
    _arbiters: Arc<ArbiterGuard>,
}

/// Stops the worker arbiters when the last handle goes.
#[derive(Debug)]
struct ArbiterGuard(Vec<Arbiter>);

impl Drop for ArbiterGuard {
    fn drop(&mut self) {
        for arbiter in &self.0 {
            arbiter.stop();
        }
    }
}

impl MeterSystem {
    /// Starts one partition actor per partition of `source`, spread over worker
    /// arbiters, each reading from its stored checkpoint. Must be called inside a running
    /// actix `System`.
    pub async fn start(
        config: SystemConfig,
        source: Arc<dyn ReadingSource>,
        hub: Arc<AlertHub>,
        clock: Arc<dyn Clock>,
    ) -> Result<MeterSystem, SystemError> {
        let mut checkpoints = Vec::with_capacity(source.n_partitions() as usize);
        for partition in 0..source.n_partitions() {
            checkpoints.push(match &config.store {
                Some(store) => store
                    .get_checkpoint(partition)
                    .await
                    .map_err(|error| SystemError::Store(error.to_string()))?,
                None => None,
            });
        }
        let n_workers = if config.n_workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            config.n_workers
        };
        let arbiters: Vec<Arbiter> = (0..n_workers).map(|_| Arbiter::new()).collect();
        let partition_config = PartitionConfig {
            max_batch: config.max_batch,
            default_thresholds: Arc::new(config.default_thresholds.clone()),
            clock: Arc::clone(&clock),
            no_data_sweep: config.no_data_sweep,
            checkpoint_interval: config.checkpoint_interval,
            source: Arc::clone(&source),
        };
        let max_in_flight = config.max_in_flight;
        let reminder_after_ms = config
            .reminder_after
            .map(|every| i64::try_from(every.as_millis()).unwrap_or(i64::MAX))
            .filter(|every| *every > 0);
        let n_applied: Vec<Arc<AtomicU64>> =
            (0..source.n_partitions()).map(|_| Arc::default()).collect();
        let partitions = (0..source.n_partitions())
            .map(|partition| {
                let applied = Arc::clone(&n_applied[partition as usize]);
                let arbiter = &arbiters[partition as usize % n_workers];
                let checkpoint = checkpoints[partition as usize];
                let reader = source.open_partition(partition, checkpoint);
                let partition_config = partition_config.clone();
                let hub = Arc::clone(&hub);
                let store = config.store.clone();
                let usage = config.usage.clone();
                PartitionActor::start_in_arbiter(&arbiter.handle(), move |ctx| {
                    let shared = Rc::new(PartitionShared {
                        hub,
                        in_flight: Cell::new(0),
                        high_water: max_in_flight,
                        low_water: max_in_flight / 2,
                        pump_waiting: Cell::new(false),
                        drained: Notify::new(),
                        n_stale: Cell::new(0),
                        n_applied: applied,
                        partition,
                        store,
                        partition_actor: Some(ctx.address()),
                        usage,
                        reminder_after_ms,
                    });
                    PartitionActor::new(
                        partition,
                        partition_config,
                        shared,
                        reader,
                        checkpoint.unwrap_or(0),
                    )
                })
            })
            .collect();
        Ok(MeterSystem {
            partitions: Arc::new(partitions),
            hub,
            clock,
            store: config.store.clone(),
            n_applied: Arc::new(n_applied),
            source,
            _arbiters: Arc::new(ArbiterGuard(arbiters)),
        })
    }

    /// Checkpoints every partition now (clean shutdown); answers the offsets.
    pub async fn checkpoint_all(&self) -> Result<Vec<u64>, SystemError> {
        let mut offsets = Vec::with_capacity(self.partitions.len());
        for partition in self.partitions.iter() {
            offsets.push(
                partition
                    .send(Checkpoint)
                    .await?
                    .map_err(SystemError::Store)?,
            );
        }
        Ok(offsets)
    }

    /// Clean shutdown, after the final [`MeterSystem::checkpoint_all`]: closes the log
    /// ([`ReadingSource::close`]; a Kafka consumer leaves its group). Partitions read
    /// nothing more.
    pub async fn close_log(&self) {
        self.source.close().await;
    }

    /// Readings applied by meter actors since start (stale ones included).
    pub fn n_applied(&self) -> u64 {
        self.n_applied
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .sum()
    }

    /// The alert hub.
    pub fn hub(&self) -> &Arc<AlertHub> {
        &self.hub
    }

    fn partition_of(&self, meter: &MeterId) -> &Addr<PartitionActor> {
        &self.partitions[meter.partition(self.partitions.len() as u32) as usize]
    }

    async fn find(&self, meter: MeterId) -> Result<Addr<MeterActor>, SystemError> {
        if let Some(actor) = self.partition_of(&meter).send(FindMeter(meter)).await? {
            return Ok(actor);
        }
        // Not running: after a restart, meters come back lazily; one with a stored
        // snapshot is started (and restored) on demand.
        let Some(store) = &self.store else {
            return Err(SystemError::MeterNotFound);
        };
        let stored = store
            .get_snapshot(meter)
            .await
            .map_err(|error| SystemError::Store(error.to_string()))?;
        if stored.is_none() {
            return Err(SystemError::MeterNotFound);
        }
        Ok(self.partition_of(&meter).send(EnsureMeter(meter)).await?)
    }

    /// The live state of one meter.
    pub async fn observe(&self, meter: MeterId) -> Result<MeterSnapshot, SystemError> {
        Ok(self.find(meter).await?.send(Observe).await?)
    }

    /// Meter ids in order, after `after`, starting with `prefix` (if given), at most
    /// `limit`.
    pub async fn list_meters(
        &self,
        after: Option<MeterId>,
        prefix: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MeterId>, SystemError> {
        let prefix: Option<std::sync::Arc<str>> = prefix.map(std::sync::Arc::from);
        let mut all = Vec::new();
        for partition in self.partitions.iter() {
            let message = ListMeterIds {
                after,
                prefix: prefix.clone(),
                limit,
            };
            all.extend(partition.send(message).await?);
        }
        all.sort_unstable();
        all.truncate(limit);
        Ok(all)
    }

    /// How many meters are live.
    pub async fn count_meters(&self) -> Result<usize, SystemError> {
        let mut total = 0;
        for partition in self.partitions.iter() {
            total += partition.send(CountMeters).await?;
        }
        Ok(total)
    }

    /// Applies `action` to the open alert `alert_id` on behalf of `by` (who, from the
    /// caller: a name or an authenticated user), at the system clock's now. The change
    /// is durable (the meter's snapshot and the alert's history stored and flushed)
    /// before this returns. Inputs are checked first ([`SystemError::BadInput`] names
    /// the field): `by` and an assignee have 1 to 100 characters, a comment 1 to 2000
    /// (not only spaces), a snooze ends after now and at most 30 days ahead.
    pub async fn alert_command(
        &self,
        alert_id: &str,
        action: AlertAction,
        by: &str,
    ) -> Result<AlertRecord, SystemError> {
        let now_ms = self.clock.now_ms();
        check_action(&action, by, now_ms)?;
        let (meter, kind, first_seen_ms) =
            parse_alert_id(alert_id).ok_or(SystemError::AlertNotOpen)?;
        if kind == gridpulse_domain::AlertKind::NoDataGroup {
            return self.group_command(alert_id, action, by, now_ms).await;
        }
        let actor = self.find(meter).await.map_err(|error| match error {
            SystemError::MeterNotFound => SystemError::AlertNotOpen,
            other => other,
        })?;
        let command = AlertCommand {
            action,
            kind,
            first_seen_ms,
            by: by.to_owned(),
            at_ms: now_ms,
        };
        Ok(actor.send(command).await??)
    }

    /// `meter`'s link changed at wall-clock `at_ms` (the MQTT bridge: status topic, last
    /// will): `offline` raises its `no_data` alert at once, `online` clears it. Applied
    /// after every reading of its partition before `after_offset` (the log's end when
    /// the bridge sent it); resolves once the change is durable. A `'static` future, so
    /// the bridge's tasks can await it.
    pub fn link_changed(
        &self,
        meter: MeterId,
        online: bool,
        at_ms: i64,
        after_offset: u64,
    ) -> impl std::future::Future<Output = Result<(), SystemError>> + Send + 'static {
        let partition = self.partition_of(&meter).clone();
        async move {
            partition
                .send(LinkStatus {
                    meter,
                    online,
                    at_ms,
                    after_offset,
                    offset: None,
                })
                .await?
                .map_err(SystemError::Store)
        }
    }

    /// The log partition of `meter`.
    pub fn partition_index(&self, meter: &MeterId) -> u32 {
        meter.partition(self.partitions.len() as u32)
    }

    /// A command on an open `no_data_group` alert: acknowledging it acknowledges every
    /// open member too, resolving it resolves every open member (each latches until
    /// its meter is heard from again) and then the group; other actions are refused
    /// (they belong on a member). Members apply like any alert command (durable).
    async fn group_command(
        &self,
        group_id: &str,
        action: AlertAction,
        by: &str,
        now_ms: i64,
    ) -> Result<AlertRecord, SystemError> {
        let (_, members) = self.hub.group(group_id).ok_or(SystemError::AlertNotOpen)?;
        let resolve = match action {
            AlertAction::Acknowledge => false,
            AlertAction::Resolve => true,
            _ => {
                return Err(SystemError::BadInput {
                    field: "id",
                    reason: "a no_data_group alert can only be acknowledged or resolved; act on its members for the rest".into(),
                });
            }
        };
        // The group first: its members' resolves would otherwise resolve it as `system`
        // once too few are left open.
        let record = if resolve {
            self.hub.resolve_group(group_id, by, now_ms)
        } else {
            self.hub.acknowledge_group(group_id, by, now_ms)
        }
        .ok_or(SystemError::AlertNotOpen)?;
        for member in &members {
            let member_action = if resolve {
                AlertAction::Resolve
            } else {
                AlertAction::Acknowledge
            };
            match Box::pin(self.alert_command(member, member_action, by)).await {
                // Resolved meanwhile by its meter: nothing left to do for it.
                Ok(_) | Err(SystemError::AlertNotOpen) => {}
                Err(error) => return Err(error),
            }
        }
        self.hub
            .flush()
            .await
            .map_err(|error| SystemError::Store(error.to_string()))?;
        Ok(record)
    }

    /// Starts (restoring from their snapshots) the actors of the meters that have an
    /// open alert in the hub, so their reminders and snoozes run after a restart
    /// without waiting for their next reading; answers how many. For a process that
    /// owns every partition (embedded mode): a Kafka processor would start meters of
    /// partitions it does not own.
    pub async fn start_meters_with_open_alerts(&self) -> Result<usize, SystemError> {
        let mut started = 0;
        for meter in self.hub.meters_with_open_alerts() {
            match self.find(meter).await {
                Ok(_) => started += 1,
                Err(SystemError::MeterNotFound) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(started)
    }

    /// Replaces one meter's thresholds after validating them; with a store they are
    /// kept in the meter's configuration and survive restarts.
    pub async fn set_thresholds(
        &self,
        meter: MeterId,
        thresholds: Thresholds,
    ) -> Result<(), SystemError> {
        thresholds.validate()?;
        let thresholds = Arc::new(thresholds);
        let found = self
            .partition_of(&meter)
            .send(SetMeterThresholds {
                meter,
                thresholds: Arc::clone(&thresholds),
            })
            .await?;
        if !found {
            return Err(SystemError::MeterNotFound);
        }
        self.update_config(meter, |config| {
            config.thresholds = Some((*thresholds).clone())
        })
        .await
    }

    /// Replaces the meter's registration: `owner` (usage minutes that close from now on
    /// go to the new owner's user actor), its tariff (an existing tariff id, checked by
    /// the caller) and whether it is prepaid. Starts the meter's actor if needed (a meter
    /// may be registered before its first reading); kept in the meter's configuration,
    /// durable (one write) before it returns.
    pub async fn set_registration(
        &self,
        meter: MeterId,
        owner: Option<UserId>,
        tariff: Option<String>,
        prepaid: bool,
    ) -> Result<(), SystemError> {
        let actor = self.partition_of(&meter).send(EnsureMeter(meter)).await?;
        actor.send(SetOwner(owner)).await?;
        self.update_config(meter, |config| {
            config.owner = owner;
            config.tariff = tariff;
            config.prepaid = prepaid;
        })
        .await
    }

    /// Puts the meter on `feeder` (`None`: none; checked by the caller with
    /// [`check_feeder`]) for the grouping of `no_data` alerts; kept in the meter's
    /// configuration, durable before it returns.
    pub async fn set_feeder(
        &self,
        meter: MeterId,
        feeder: Option<String>,
    ) -> Result<(), SystemError> {
        self.hub.set_feeder(meter, feeder.as_deref());
        self.update_config(meter, |config| config.feeder = feeder)
            .await
    }

    /// The meter's stored configuration (default without a store or document).
    pub async fn meter_config(&self, meter: MeterId) -> Result<MeterConfig, SystemError> {
        let Some(store) = &self.store else {
            return Ok(MeterConfig::default());
        };
        match store
            .get_config(ConfigKind::Meter, meter.as_str())
            .await
            .map_err(|error| SystemError::Store(error.to_string()))?
        {
            None => Ok(MeterConfig::default()),
            Some(json) => serde_json::from_slice(&json).map_err(|error| {
                SystemError::Store(format!("stored meter configuration: {error}"))
            }),
        }
    }

    /// Read-modify-write of the stored meter configuration, durable before it returns.
    async fn update_config(
        &self,
        meter: MeterId,
        change: impl FnOnce(&mut MeterConfig),
    ) -> Result<(), SystemError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let mut config = self.meter_config(meter).await?;
        change(&mut config);
        let json =
            serde_json::to_vec(&config).map_err(|error| SystemError::Store(error.to_string()))?;
        store
            .put_config(ConfigKind::Meter, meter.as_str(), &json)
            .await
            .map_err(|error| SystemError::Store(error.to_string()))?;
        store
            .flush()
            .await
            .map_err(|error| SystemError::Store(error.to_string()))?;
        Ok(())
    }
}

/// Checks the inputs of an alert command at wall-clock `now_ms`.
fn check_action(action: &AlertAction, by: &str, now_ms: i64) -> Result<(), SystemError> {
    let bad = |field: &'static str, reason: String| Err(SystemError::BadInput { field, reason });
    let is_name = |text: &str| !text.trim().is_empty() && text.chars().count() <= MAX_NAME_CHARS;
    if !is_name(by) {
        return bad("by", format!("must be 1 to {MAX_NAME_CHARS} characters"));
    }
    match action {
        AlertAction::Assign { to: Some(to) } if !is_name(to) => bad(
            "to",
            format!("must be a user id or name of 1 to {MAX_NAME_CHARS} characters, or null"),
        ),
        AlertAction::Comment { text }
            if text.trim().is_empty() || text.chars().count() > MAX_COMMENT_CHARS =>
        {
            bad(
                "text",
                format!("must be 1 to {MAX_COMMENT_CHARS} characters, not only spaces"),
            )
        }
        AlertAction::Snooze { until_ms } if *until_ms <= now_ms => bad(
            "until",
            format!("must be in the future: it is {until_ms}, now is {now_ms} (Unix ms)"),
        ),
        AlertAction::Snooze { until_ms } if *until_ms - now_ms > MAX_SNOOZE_MS => bad(
            "until",
            format!(
                "must be at most 30 days ahead: it is {until_ms}, the latest is {} (Unix ms)",
                now_ms.saturating_add(MAX_SNOOZE_MS)
            ),
        ),
        _ => Ok(()),
    }
}

/// A meter's stored configuration (`ConfigKind::Meter`).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeterConfig {
    /// The meter's own thresholds (`None`: the system's defaults).
    #[serde(default)]
    pub thresholds: Option<Thresholds>,
    /// The user who owns the meter.
    #[serde(default)]
    pub owner: Option<UserId>,
    /// The tariff that prices the meter's energy (a tariff id; `None`: the owner's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tariff: Option<String>,
    /// Prepaid: a credit balance burns down by the tariff (requires a tariff).
    #[serde(default)]
    pub prepaid: bool,
    /// The feeder (distribution circuit) that supplies the meter: many of one feeder's
    /// meters silent at once are grouped into one `no_data_group` alert.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feeder: Option<String>,
}

/// The longest feeder name, characters.
pub const MAX_FEEDER_CHARS: usize = 40;

/// Checks a feeder name: 1 to 40 of `A-Z a-z 0-9 _ . -` (it becomes part of the group
/// alert's cause, `feeder:<name>`).
pub fn check_feeder(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_FEEDER_CHARS {
        return Err(format!("must be 1 to {MAX_FEEDER_CHARS} characters"));
    }
    match name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        Some(bad) => Err(format!(
            "may hold only letters, digits, `_`, `.` and `-`, not {bad:?}"
        )),
        None => Ok(()),
    }
}
