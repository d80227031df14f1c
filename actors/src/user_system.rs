//! The per-user actors and the system that hosts them: the consumer side of the
//! `usage-by-user` flow.
//!
//! One [`UserPartitionActor`] per user partition reads its [`UsageEvent`] channel (fed
//! by Kafka's `usage-by-user` consumer group, or by [`ChannelUsage`](crate::usage::ChannelUsage)
//! in embedded mode) and routes deltas to one [`UserActor`] per user, created on first
//! sight and restored from its stored snapshot before its mailbox is read.
//!
//! Checkpoints store the snapshot of every user changed since the last one (each
//! request queues behind the deltas already routed to that user), then report the
//! partition's next offset as consumed (Kafka commits it). A checkpoint holds the
//! partition's mailbox (`ctx.wait`), so checkpoints never overlap and a barrier's answer
//! means everything before it is stored.

use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorFutureExt, Addr, Arbiter, AsyncContext, Context, Handler, Message, WrapFuture,
};
use std::collections::BTreeMap;

use gridpulse_domain::{
    Baseline, CreditError, Currency, MeterId, SavingSession, Tariff, UsageDelta, UserId,
};
use gridpulse_store::{ConfigKind, Store};
use rustc_hash::FxHashMap;
use tokio::sync::{mpsc, oneshot};

use crate::account::AccountBook;
use crate::system::MeterConfig;
use crate::system::SystemError;
use crate::usage::{UsageEvent, UsageRecord};
use crate::user_billing::{Priced, Pricing, UserMoney};
use crate::user_credit::{CreditCommand, CreditReply, MeterPricing, PrepaidMeter};
use crate::user_events::UserEventHub;
use crate::user_sessions::UserSessions;
use crate::user_state::{UsageApplied, UserSnapshot, UserState};

/// How often a user actor rereads its account and tariff (changes made through another
/// process; this process's own API changes are pushed at once).
const ACCOUNT_REFRESH: Duration = Duration::from_secs(30);

/// Tells the log that a user partition is durable up to an offset (Kafka commits it).
pub type CommitFn = Arc<dyn Fn(u32, u64) + Send + Sync>;

/// Settings of the user actors.
#[derive(Clone)]
pub struct UserSystemConfig {
    /// Where user snapshots live; `None` keeps users in memory only.
    pub store: Option<Arc<dyn Store>>,
    /// How often partitions checkpoint (with a store).
    pub checkpoint_interval: Duration,
    /// Called after a checkpoint with the partition and its next offset.
    pub commit: Option<CommitFn>,
    /// Called once at a clean shutdown, after the final checkpoint (a Kafka consumer
    /// leaves its group).
    pub close: Option<Arc<dyn Fn() + Send + Sync>>,
    /// User events kept for websocket clients that resume (the hub's replay ring).
    pub event_replay_capacity: usize,
}

impl std::fmt::Debug for UserSystemConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSystemConfig")
            .field("store", &self.store.is_some())
            .field("checkpoint_interval", &self.checkpoint_interval)
            .finish_non_exhaustive()
    }
}

/// The actor of one user.
#[derive(Debug)]
pub struct UserActor {
    state: UserState,
    store: Option<Arc<dyn Store>>,
    events: Arc<UserEventHub>,
    /// The account and tariff usage is priced with (none: not loaded, or no account).
    pricing: Option<Pricing>,
}

/// Reads the account of `user`, its tariff and the configuration of `meters`; `None`
/// without an account book or an account. A tariff that cannot be read leaves what it
/// prices unpriced.
async fn load_pricing(
    store: Option<Arc<dyn Store>>,
    user: UserId,
    meters: Vec<MeterId>,
) -> Option<Pricing> {
    let store = store?;
    let book = AccountBook::new(Arc::clone(&store));
    let account = match book.account(user).await {
        Ok(account) => account?,
        Err(error) => {
            tracing::warn!(%user, %error, "cannot read the account; keeping the previous pricing");
            return None;
        }
    };
    let mut tariffs: FxHashMap<String, Option<Tariff>> = FxHashMap::default();
    let mut tariff_named = async |id: &str| -> Option<Tariff> {
        if let Some(known) = tariffs.get(id) {
            return known.clone();
        }
        let tariff = match book.tariff(id).await {
            Ok(Some(document)) => match document.validate() {
                Ok(tariff) => Some(tariff),
                Err(error) => {
                    tracing::error!(%user, tariff = id, %error, "stored tariff is invalid");
                    None
                }
            },
            Ok(None) => None,
            Err(error) => {
                tracing::warn!(%user, tariff = id, %error, "cannot read the tariff");
                None
            }
        };
        tariffs.insert(id.to_owned(), tariff.clone());
        tariff
    };
    let tariff = match account.tariff.clone() {
        None => None,
        Some(id) => tariff_named(&id).await.map(|tariff| (id, tariff)),
    };
    let mut meter_pricing = BTreeMap::new();
    for meter in meters {
        let config: MeterConfig = match store.get_config(ConfigKind::Meter, meter.as_str()).await {
            Ok(Some(json)) => serde_json::from_slice(&json).unwrap_or_default(),
            Ok(None) => MeterConfig::default(),
            Err(error) => {
                tracing::warn!(%user, %meter, %error, "cannot read the meter configuration");
                continue;
            }
        };
        let own_tariff = match config.tariff {
            None => None,
            Some(id) => tariff_named(&id).await.map(|tariff| (id, tariff)),
        };
        meter_pricing.insert(
            meter,
            MeterPricing {
                tariff: own_tariff.or_else(|| tariff.clone()),
                prepaid: config.prepaid,
            },
        );
    }
    Some(Pricing {
        account,
        tariff,
        meters: meter_pricing,
    })
}

impl UserActor {
    fn known_meters(&self) -> Vec<MeterId> {
        self.state.snapshot().meters.keys().copied().collect()
    }

    fn reload_pricing(&mut self, ctx: &mut Context<Self>, done: Option<oneshot::Sender<()>>) {
        let load = load_pricing(self.store.clone(), self.state.user(), self.known_meters());
        ctx.spawn(load.into_actor(self).map(move |pricing, actor, _ctx| {
            if pricing.is_some() || actor.store.is_none() {
                actor.pricing = pricing;
            }
            if let Some(done) = done {
                let _ = done.send(());
            }
        }));
    }

    /// Prices an applied delta (after loading the configuration of a meter not seen
    /// before) and publishes what it caused.
    fn price(&mut self, delta: UsageDelta, ctx: &mut Context<Self>) {
        let Some(pricing) = &self.pricing else {
            return;
        };
        if !pricing.meters.contains_key(&delta.meter) && self.store.is_some() {
            // A meter new to this user: read its configuration first (holds the
            // mailbox, once per meter).
            let mut meters = self.known_meters();
            meters.push(delta.meter);
            let load = load_pricing(self.store.clone(), self.state.user(), meters);
            ctx.wait(load.into_actor(self).map(move |pricing, actor, ctx| {
                let Some(mut pricing) = pricing else {
                    return;
                };
                pricing.meters.entry(delta.meter).or_insert(MeterPricing {
                    tariff: None,
                    prepaid: false,
                });
                actor.pricing = Some(pricing);
                actor.price(delta, ctx);
            }));
            return;
        }
        let user = self.state.user();
        let priced = self.state.money_mut().apply(
            user,
            pricing,
            delta.meter,
            delta.minute_ms,
            delta.energy_wh,
        );
        self.publish(priced, ctx, None::<fn(&mut UserActor)>);
    }

    /// Publishes events, storing the snapshot first when they must happen once; then
    /// runs `after` (answers a command).
    fn publish(
        &mut self,
        priced: Priced,
        ctx: &mut Context<Self>,
        after: Option<impl FnOnce(&mut UserActor) + 'static>,
    ) {
        let user = self.state.user();
        let stored = match (self.store.clone(), priced.store_first) {
            (Some(store), true) => match self.state.encode() {
                Ok(bytes) => Some((store, bytes)),
                Err(error) => {
                    tracing::error!(%user, %error, "cannot encode user state");
                    None
                }
            },
            _ => None,
        };
        let Some((store, bytes)) = stored else {
            self.events.publish(priced.events);
            if let Some(after) = after {
                after(self);
            }
            return;
        };
        // Once-per-period events are stored (in the snapshot, with the usage that caused
        // them) before anyone hears of them: a replay after a crash finds them recorded.
        let hub = Arc::clone(&self.events);
        let write = async move {
            store
                .put_config(ConfigKind::UserState, user.as_str(), &bytes)
                .await?;
            store.flush().await
        };
        ctx.wait(write.into_actor(self).map(move |result, actor, _ctx| {
            if let Err(error) = result {
                tracing::error!(%user, %error, "cannot store the user before its events; publishing anyway");
            }
            hub.publish(priced.events);
            if let Some(after) = after {
                after(actor);
            }
        }));
    }
}

impl Actor for UserActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Restore before the first delta (ctx.wait holds the mailbox).
        let Some(store) = self.store.clone() else {
            return;
        };
        let user = self.state.user();
        let load = async move {
            let snapshot = store.get_config(ConfigKind::UserState, user.as_str()).await;
            (snapshot, load_pricing(Some(store), user, Vec::new()).await)
        };
        ctx.wait(load.into_actor(self).map(move |(result, pricing), actor, _ctx| {
            actor.pricing = pricing;
            match result {
                Ok(None) => {}
                Ok(Some(bytes)) => match UserState::decode(&bytes) {
                    Ok(state) if state.user() == user => actor.state = state,
                    Ok(_) | Err(_) => tracing::error!(%user, "stored user snapshot is corrupt; starting empty"),
                },
                Err(error) => tracing::error!(%user, %error, "cannot read the user snapshot; starting empty"),
            }
        }));
        ctx.run_interval(ACCOUNT_REFRESH, |actor, ctx| {
            actor.reload_pricing(ctx, None)
        });
    }
}

/// Apply one usage delta.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct ApplyUsage(pub UsageDelta);

impl Handler<ApplyUsage> for UserActor {
    type Result = ();

    fn handle(&mut self, message: ApplyUsage, ctx: &mut Self::Context) {
        let delta = message.0;
        match self.state.apply(&delta) {
            UsageApplied::Applied => crate::metrics::record_usage_applied(),
            UsageApplied::Duplicate => {
                crate::metrics::record_usage_duplicate();
                return;
            }
        }
        self.price(delta, ctx);
    }
}

/// The user's encoded snapshot.
#[derive(Debug, Message)]
#[rtype(result = "Option<Vec<u8>>")]
pub struct TakeUserSnapshot;

impl Handler<TakeUserSnapshot> for UserActor {
    type Result = Option<Vec<u8>>;

    fn handle(&mut self, _message: TakeUserSnapshot, _ctx: &mut Self::Context) -> Self::Result {
        match self.state.encode() {
            Ok(bytes) => Some(bytes),
            Err(error) => {
                tracing::error!(user = %self.state.user(), %error, "cannot encode user state");
                None
            }
        }
    }
}

/// The user's live usage.
#[derive(Debug, Message)]
#[rtype(result = "UserSnapshot")]
pub struct ObserveUser;

impl Handler<ObserveUser> for UserActor {
    type Result = actix::MessageResult<ObserveUser>;

    fn handle(&mut self, _message: ObserveUser, _ctx: &mut Self::Context) -> Self::Result {
        actix::MessageResult(self.state.snapshot())
    }
}

/// Reread the account and tariff now; answers once the new pricing is in place.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct RefreshAccount(pub oneshot::Sender<()>);

impl Handler<RefreshAccount> for UserActor {
    type Result = ();

    fn handle(&mut self, message: RefreshAccount, ctx: &mut Self::Context) {
        self.reload_pricing(ctx, Some(message.0));
    }
}

/// The user's money state and newest minute.
#[derive(Debug, Message)]
#[rtype(result = "MoneyView")]
pub struct ObserveMoney;

/// What [`ObserveMoney`] answers: the state to compute costs and bills from.
#[derive(Debug, Clone)]
pub struct MoneyView {
    /// Cost, bills, budget state, events.
    pub money: UserMoney,
    /// Newest usage minute applied (event time "now"), if any.
    pub last_minute_ms: Option<i64>,
    /// The account, if the user has one.
    pub pricing: Option<Pricing>,
}

impl Handler<ObserveMoney> for UserActor {
    type Result = actix::MessageResult<ObserveMoney>;

    fn handle(&mut self, _message: ObserveMoney, _ctx: &mut Self::Context) -> Self::Result {
        actix::MessageResult(MoneyView {
            money: self.state.money().clone(),
            last_minute_ms: self.state.snapshot().last_minute_ms,
            pricing: self.pricing.clone(),
        })
    }
}

/// A credit command for one of the user's prepaid meters.
#[derive(Debug, Message)]
#[rtype(result = "Result<CreditReply, CreditError>")]
pub struct RunCreditCommand {
    /// The meter.
    pub meter: MeterId,
    /// Its tariff's currency (an account opened by a first top-up is in it).
    pub currency: Currency,
    /// What to do.
    pub command: CreditCommand,
    /// Wall-clock time of the command, Unix ms.
    pub at_ms: i64,
}

impl Handler<RunCreditCommand> for UserActor {
    type Result = actix::ResponseActFuture<Self, Result<CreditReply, CreditError>>;

    fn handle(&mut self, message: RunCreditCommand, ctx: &mut Self::Context) -> Self::Result {
        let settings = self
            .pricing
            .as_ref()
            .and_then(|pricing| pricing.account.credit)
            .unwrap_or_default();
        let user = self.state.user();
        let outcome = self.state.money_mut().credit_mut().command(
            message.meter,
            message.currency,
            &settings,
            &message.command,
            message.at_ms,
        );
        let (reply, events) = match outcome {
            Ok(done) => done,
            Err(error) => return Box::pin(actix::fut::ready(Err(error))),
        };
        let mut priced = Priced::default();
        self.state
            .money_mut()
            .record_credit(&mut priced, user, events, message.at_ms);
        // Even a replayed command is answered only once the state it reports is stored.
        priced.store_first = true;
        let (done, answered) = oneshot::channel();
        self.publish(
            priced,
            ctx,
            Some(move |_actor: &mut UserActor| {
                let _ = done.send(());
            }),
        );
        Box::pin(
            async move {
                let _ = answered.await;
            }
            .into_actor(self)
            .map(move |(), _actor, _ctx| Ok(reply)),
        )
    }
}

/// Opt in to a saving session with a baseline; answers once stored (false: already
/// enrolled, the first baseline stays).
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct EnrolSession(pub SavingSession, pub Baseline);

impl Handler<EnrolSession> for UserActor {
    type Result = actix::ResponseActFuture<Self, bool>;

    fn handle(&mut self, message: EnrolSession, ctx: &mut Self::Context) -> Self::Result {
        let added = self
            .state
            .money_mut()
            .sessions_mut()
            .enrol(message.0, message.1);
        let (done, answered) = oneshot::channel();
        let priced = Priced {
            events: Vec::new(),
            store_first: added,
        };
        self.publish(
            priced,
            ctx,
            Some(move |_actor: &mut UserActor| {
                let _ = done.send(());
            }),
        );
        Box::pin(
            async move {
                let _ = answered.await;
            }
            .into_actor(self)
            .map(move |(), _actor, _ctx| added),
        )
    }
}

/// The user's saving sessions and streak.
#[derive(Debug, Message)]
#[rtype(result = "UserSessions")]
pub struct ObserveSessions;

impl Handler<ObserveSessions> for UserActor {
    type Result = actix::MessageResult<ObserveSessions>;

    fn handle(&mut self, _message: ObserveSessions, _ctx: &mut Self::Context) -> Self::Result {
        actix::MessageResult(self.state.money().sessions().clone())
    }
}

/// One prepaid meter's credit state, if it has an account.
#[derive(Debug, Message)]
#[rtype(result = "Option<PrepaidMeter>")]
pub struct ObserveCredit(pub MeterId);

impl Handler<ObserveCredit> for UserActor {
    type Result = Option<PrepaidMeter>;

    fn handle(&mut self, message: ObserveCredit, _ctx: &mut Self::Context) -> Self::Result {
        self.state.money().credit().meter(message.0).cloned()
    }
}

#[derive(Debug)]
struct UserEntry {
    addr: Addr<UserActor>,
    dirty: bool,
}

/// Owns the user actors of one user partition.
#[derive(Debug)]
pub struct UserPartitionActor {
    partition: u32,
    config: UserSystemConfig,
    events: Arc<UserEventHub>,
    users: FxHashMap<UserId, UserEntry>,
    dirty: Vec<UserId>,
    /// Offset after the last routed record (Kafka mode).
    next_offset: Option<u64>,
    receiver: Option<mpsc::UnboundedReceiver<UsageEvent>>,
}

impl UserPartitionActor {
    fn entry(&mut self, user: UserId) -> &mut UserEntry {
        let (store, events) = (&self.config.store, &self.events);
        self.users.entry(user).or_insert_with(|| {
            let (store, events) = (store.clone(), Arc::clone(events));
            UserEntry {
                addr: UserActor {
                    state: UserState::new(user),
                    store,
                    events,
                    pricing: None,
                }
                .start(),
                dirty: false,
            }
        })
    }

    /// Stores every changed user, then reports the offset; holds the mailbox meanwhile.
    fn checkpoint(
        &mut self,
        ctx: &mut Context<Self>,
        ack: Option<oneshot::Sender<Result<(), String>>>,
    ) {
        let Some(store) = self.config.store.clone() else {
            if let Some(ack) = ack {
                let _ = ack.send(Ok(()));
            }
            return;
        };
        let in_cut = std::mem::take(&mut self.dirty);
        if in_cut.is_empty() {
            // Nothing changed since the last checkpoint, which stored everything.
            if let (Some(offset), Some(commit)) = (self.next_offset, &self.config.commit) {
                commit(self.partition, offset);
            }
            if let Some(ack) = ack {
                let _ = ack.send(Ok(()));
            }
            return;
        }
        let mut requests = Vec::with_capacity(in_cut.len());
        for user in &in_cut {
            if let Some(entry) = self.users.get_mut(user) {
                entry.dirty = false;
                requests.push((*user, entry.addr.send(TakeUserSnapshot)));
            }
        }
        let (partition, offset, commit) =
            (self.partition, self.next_offset, self.config.commit.clone());
        let events = Arc::clone(&self.events);
        let work = async move {
            for (user, request) in requests {
                if let Ok(Some(bytes)) = request.await {
                    store
                        .put_config(ConfigKind::UserState, user.as_str(), &bytes)
                        .await
                        .map_err(|error| error.to_string())?;
                }
            }
            store.flush().await.map_err(|error| error.to_string())?;
            // Events forwarded to the `user-events` topic before the offsets that
            // caused them are committed.
            events.flush().await?;
            if let (Some(offset), Some(commit)) = (offset, commit) {
                commit(partition, offset);
            }
            Ok::<(), String>(())
        };
        ctx.wait(work.into_actor(self).map(move |result, actor, _ctx| {
            if let Err(error) = &result {
                tracing::error!(partition, %error, "user checkpoint failed; will retry");
                for user in in_cut {
                    if let Some(entry) = actor.users.get_mut(&user)
                        && !entry.dirty
                    {
                        entry.dirty = true;
                        actor.dirty.push(user);
                    }
                }
            }
            if let Some(ack) = ack {
                let _ = ack.send(result);
            }
        }));
    }
}

impl Actor for UserPartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.config.store.is_some() {
            ctx.run_interval(self.config.checkpoint_interval, |actor, ctx| {
                actor.checkpoint(ctx, None);
            });
        }
        if let Some(mut receiver) = self.receiver.take() {
            let addr = ctx.address();
            actix::spawn(async move {
                while let Some(event) = receiver.recv().await {
                    if addr.send(Route(event)).await.is_err() {
                        break;
                    }
                }
            });
        }
    }
}

/// One event from the partition's channel.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct Route(UsageEvent);

impl Handler<Route> for UserPartitionActor {
    type Result = ();

    fn handle(&mut self, message: Route, ctx: &mut Self::Context) {
        match message.0 {
            UsageEvent::Records(records) => {
                let track = self.config.store.is_some();
                for UsageRecord { offset, delta } in records {
                    let entry = self.entry(delta.user);
                    entry.addr.do_send(ApplyUsage(delta));
                    if track && !entry.dirty {
                        entry.dirty = true;
                        self.dirty.push(delta.user);
                    }
                    if let Some(offset) = offset {
                        self.next_offset = Some(offset + 1);
                    }
                }
            }
            UsageEvent::Barrier(ack) => self.checkpoint(ctx, Some(ack)),
            UsageEvent::Revoked => {
                tracing::info!(
                    partition = self.partition,
                    "user partition revoked: dropping its users"
                );
                self.users.clear();
                self.dirty.clear();
                self.next_offset = None;
            }
        }
    }
}

/// Store every changed user now and commit (clean shutdown).
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct CheckpointNow(oneshot::Sender<Result<(), String>>);

impl Handler<CheckpointNow> for UserPartitionActor {
    type Result = ();

    fn handle(&mut self, message: CheckpointNow, ctx: &mut Self::Context) {
        self.checkpoint(ctx, Some(message.0));
    }
}

/// Find or start (restoring) one user's actor.
#[derive(Debug, Message)]
#[rtype(result = "Addr<UserActor>")]
struct EnsureUser(UserId);

impl Handler<EnsureUser> for UserPartitionActor {
    type Result = actix::MessageResult<EnsureUser>;

    fn handle(&mut self, message: EnsureUser, _ctx: &mut Self::Context) -> Self::Result {
        actix::MessageResult(self.entry(message.0).addr.clone())
    }
}

/// Is the user known here (running or stored)?
#[derive(Debug, Message)]
#[rtype(result = "bool")]
struct HasUser(UserId);

impl Handler<HasUser> for UserPartitionActor {
    type Result = bool;

    fn handle(&mut self, message: HasUser, _ctx: &mut Self::Context) -> bool {
        self.users.contains_key(&message.0)
    }
}

/// Handle on the running user actors.
#[derive(Clone)]
pub struct UserSystem {
    partitions: Arc<Vec<Addr<UserPartitionActor>>>,
    events: Arc<UserEventHub>,
    store: Option<Arc<dyn Store>>,
    close: Option<Arc<dyn Fn() + Send + Sync>>,
    _arbiter: Arc<ArbiterGuard>,
}

impl std::fmt::Debug for UserSystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserSystem")
            .field("partitions", &self.partitions.len())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct ArbiterGuard(Arbiter);

impl Drop for ArbiterGuard {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl UserSystem {
    /// Starts one user partition per receiver on an arbiter of its own. Must be called
    /// inside a running actix `System`.
    pub fn start(
        config: UserSystemConfig,
        receivers: Vec<mpsc::UnboundedReceiver<UsageEvent>>,
    ) -> UserSystem {
        let arbiter = Arbiter::new();
        let events = UserEventHub::new(4096, config.event_replay_capacity);
        let partitions = receivers
            .into_iter()
            .enumerate()
            .map(|(partition, receiver)| {
                let (config, events) = (config.clone(), Arc::clone(&events));
                UserPartitionActor::start_in_arbiter(&arbiter.handle(), move |_ctx| {
                    UserPartitionActor {
                        partition: partition as u32,
                        config,
                        events,
                        users: FxHashMap::default(),
                        dirty: Vec::new(),
                        next_offset: None,
                        receiver: Some(receiver),
                    }
                })
            })
            .collect();
        UserSystem {
            partitions: Arc::new(partitions),
            events,
            store: config.store,
            close: config.close,
            _arbiter: Arc::new(ArbiterGuard(arbiter)),
        }
    }

    /// Clean shutdown: stores every changed user, commits, then lets go of the usage
    /// log (a Kafka consumer leaves its group).
    pub async fn close(&self) -> Result<(), SystemError> {
        for partition in self.partitions.iter() {
            let (ack, done) = oneshot::channel();
            partition.send(CheckpointNow(ack)).await?;
            done.await
                .map_err(|_| SystemError::Store("user partition stopped".into()))?
                .map_err(SystemError::Store)?;
        }
        if let Some(close) = &self.close {
            close();
        }
        Ok(())
    }

    fn partition_of(&self, user: UserId) -> &Addr<UserPartitionActor> {
        &self.partitions[user.partition(self.partitions.len() as u32) as usize]
    }

    /// The actor of a user who is running or stored (restored into an actor);
    /// `UserNotFound` if neither.
    async fn known_actor(&self, user: UserId) -> Result<Addr<UserActor>, SystemError> {
        let partition = self.partition_of(user);
        if !partition.send(HasUser(user)).await? {
            let stored = match &self.store {
                Some(store) => store
                    .get_config(ConfigKind::UserState, user.as_str())
                    .await
                    .map_err(|error| SystemError::Store(error.to_string()))?
                    .is_some(),
                None => false,
            };
            if !stored {
                return Err(SystemError::UserNotFound);
            }
        }
        Ok(partition.send(EnsureUser(user)).await?)
    }

    /// The live usage of one user: its actor if running, else its stored snapshot
    /// (restored into an actor); `UserNotFound` if neither exists.
    pub async fn observe(&self, user: UserId) -> Result<UserSnapshot, SystemError> {
        Ok(self.known_actor(user).await?.send(ObserveUser).await?)
    }

    /// The money state of one user (running, stored, or — for an account with no usage
    /// yet — a fresh actor); the caller computes costs and bills from it.
    pub async fn observe_money(&self, user: UserId) -> Result<MoneyView, SystemError> {
        let actor = match self.known_actor(user).await {
            Ok(actor) => actor,
            Err(SystemError::UserNotFound) => {
                self.partition_of(user).send(EnsureUser(user)).await?
            }
            Err(error) => return Err(error),
        };
        Ok(actor.send(ObserveMoney).await?)
    }

    /// Tells a user's actor (if running) that its account changed; returns once the
    /// new account and tariff price its usage.
    pub async fn account_changed(&self, user: UserId) -> Result<(), SystemError> {
        let partition = self.partition_of(user);
        if !partition.send(HasUser(user)).await? {
            // Not running: it reads the account when it starts.
            return Ok(());
        }
        let actor = partition.send(EnsureUser(user)).await?;
        let (done, wait) = oneshot::channel();
        actor.send(RefreshAccount(done)).await?;
        let _ = wait.await;
        Ok(())
    }

    /// Runs a credit command on the actor of the meter's owner.
    pub async fn credit_command(
        &self,
        owner: UserId,
        command: RunCreditCommand,
    ) -> Result<Result<CreditReply, CreditError>, SystemError> {
        let actor = self.partition_of(owner).send(EnsureUser(owner)).await?;
        Ok(actor.send(command).await?)
    }

    /// A prepaid meter's credit state at its owner's actor.
    pub async fn observe_credit(
        &self,
        owner: UserId,
        meter: MeterId,
    ) -> Result<Option<PrepaidMeter>, SystemError> {
        let actor = self.partition_of(owner).send(EnsureUser(owner)).await?;
        Ok(actor.send(ObserveCredit(meter)).await?)
    }

    /// Enrols a user in a saving session (the actor is started if need be).
    pub async fn enrol_session(
        &self,
        user: UserId,
        session: SavingSession,
        baseline: Baseline,
    ) -> Result<bool, SystemError> {
        let actor = self.partition_of(user).send(EnsureUser(user)).await?;
        Ok(actor.send(EnrolSession(session, baseline)).await?)
    }

    /// A user's saving sessions and streak.
    pub async fn observe_sessions(&self, user: UserId) -> Result<UserSessions, SystemError> {
        let actor = self.partition_of(user).send(EnsureUser(user)).await?;
        Ok(actor.send(ObserveSessions).await?)
    }

    /// The hub user events are broadcast on.
    pub fn events(&self) -> &Arc<UserEventHub> {
        &self.events
    }
}

#[cfg(test)]
mod tests {
    use gridpulse_domain::MeterId;
    use gridpulse_store::Retention;
    use gridpulse_store::embedded::EmbeddedStore;

    use super::*;
    use crate::usage::{ChannelUsage, UsageSink};

    fn delta(minute: i64, wh: f64) -> UsageDelta {
        UsageDelta {
            user: UserId::new("u-1").unwrap(),
            meter: MeterId::new("m-1").unwrap(),
            minute_ms: 1_700_000_040_000 + minute * 60_000,
            energy_wh: wh,
            readings: 6,
            max_power_w: 500.0,
        }
    }

    fn start(store: &Arc<dyn Store>) -> (ChannelUsage, UserSystem) {
        let (channels, receivers) = ChannelUsage::new(3);
        let users = UserSystem::start(
            UserSystemConfig {
                store: Some(Arc::clone(store)),
                // Only barriers checkpoint in this test.
                checkpoint_interval: Duration::from_secs(3600),
                commit: None,
                close: None,
                event_replay_capacity: 1024,
            },
            receivers,
        );
        (channels, users)
    }

    /// A barrier stores the users; a restarted system restores them and skips the
    /// minutes a replay sends again, so nothing is counted twice.
    #[actix_rt::test]
    async fn users_restore_from_barrier_snapshots_and_skip_replays() {
        let dir = std::env::temp_dir().join(format!("gridpulse-users-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open(&dir, Retention::default()).unwrap());
        let user = UserId::new("u-1").unwrap();

        let (channels, users) = start(&store);
        assert!(matches!(
            users.observe(user).await,
            Err(SystemError::UserNotFound)
        ));
        for (minute, wh) in [(0, 1.0), (1, 2.0), (2, 4.0)] {
            channels.publish(delta(minute, wh));
        }
        channels.flush().await.unwrap();
        assert_eq!(users.observe(user).await.unwrap().energy_total_wh, 7.0);
        drop((channels, users));

        // "Crash": a new system on the same store; the meters replay minutes 1 and 2.
        let (channels, users) = start(&store);
        for (minute, wh) in [(1, 2.0), (2, 4.0), (3, 8.0)] {
            channels.publish(delta(minute, wh));
        }
        channels.flush().await.unwrap();
        let usage = users.observe(user).await.unwrap();
        assert_eq!(usage.energy_total_wh, 15.0);
        assert_eq!(usage.n_deltas, 4);
        assert_eq!(usage.n_duplicates, 2);
        drop((channels, users));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
