//! Prepaid credit: one meter's balance, its ledger, top-ups and credit alerts.
//!
//! A [`CreditAccount`] is the whole credit state of one prepaid meter in one currency.
//! It lives inside the owner's actor, which serialises every call, and is stored whole
//! as JSON after every top-up operation and at checkpoints, so everything needed to
//! continue (idempotency keys, auto top-up requests, the alerts already raised, the last
//! charged minute) is inside it. Nothing here reads a clock: every instant is passed in
//! as Unix ms.
//!
//! **Balance and ledger.** The balance is exact ([`Amount`]) and may go negative (debt).
//! Credits and debits are recorded in an append-only log of [`Transaction`]s. Usage is
//! charged per minute ([`CreditAccount::charge`]) but logged per UTC day: a minute's
//! cost lowers the balance at once and is added to the *running day*; the running day
//! is appended as one [`TransactionKind::Usage`] entry (dated the start of its UTC day)
//! when a minute of a later UTC day is charged, or when [`CreditAccount::close_day`]
//! is called on a later day. A day with no cost appends nothing.
//!
//! **Top-ups.** A manual top-up ([`CreditAccount::top_up`]) carries an idempotency key:
//! the first request with a key credits at once; the same key and amount again returns
//! the original (nothing changes); the same key with another amount is an
//! [`CreditError::IdempotencyConflict`]. Keys are kept forever (top-ups are rare).
//! With [`CreditSettings::auto_top_up`] set, an applied charge that leaves the balance
//! below the trigger creates a *pending* [`AutoTopUpRequest`] unless one is already
//! pending. Its id (also the payment gateway's idempotency key) is
//! `"{meter}:{cycle}:{sequence}"`, `sequence` counting the requests of the caller's
//! billing cycle from 1, and it is dated by the charged minute — so replaying the same
//! charges on an older stored account recreates the *same* request, never a new one.
//! The gateway's answer is [`CreditAccount::confirm`] (credits the amount, once) or
//! [`CreditAccount::fail`] (no credit; the next charge below the trigger asks again).
//!
//! **Alerts.** [`CreditAccount::evaluate_alerts`] (called by the owner after charges and
//! top-ups, with the current burn rate) compares each [`CreditAlert`] condition with the
//! stored set of active alerts and reports only the changes: an alert is raised once
//! when its condition becomes true and can be raised again only after it has cleared.
//! Charges and top-ups never raise alerts themselves.
//!
//! Invariants, kept by every operation (an operation that returns an error changes
//! nothing):
//! * transaction seqs are 1, 2, 3, …; an appended entry never changes;
//! * each entry's `balance_after` is the previous entry's (zero for the first) plus its
//!   `amount`: the *posted* balance;
//! * `balance == posted balance + unposted_usage()` (the running day, ≤ 0);
//! * charged minutes strictly increase: a minute at or before the last one is ignored;
//! * each idempotency key and each auto top-up request is credited at most once;
//! * at most one auto top-up request is pending.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::meter_id::MeterId;
use crate::money::{Amount, Currency, MAX_AMOUNT_MICRO_UNITS, Money};

/// Milliseconds in a UTC day: usage is logged per `minute_ms.div_euclid(DAY_MS)`.
pub const DAY_MS: i64 = 86_400_000;

/// The default of [`CreditSettings::run_out_warning_hours`].
pub const DEFAULT_RUN_OUT_WARNING_HOURS: u32 = 24;

/// The largest [`CreditSettings::run_out_warning_hours`] accepted (a leap year).
pub const MAX_RUN_OUT_WARNING_HOURS: u32 = 24 * 366;

/// The longest idempotency key or billing cycle id, in bytes.
pub const MAX_IDENTIFIER_LEN: usize = 64;

/// The longest failure reason kept on a request, in bytes (longer ones are cut).
pub const MAX_FAILURE_REASON_LEN: usize = 200;

// ---------------------------------------------------------------------------------
// Settings and errors
// ---------------------------------------------------------------------------------

/// A meter's credit settings. Unknown keys are refused; check with
/// [`CreditSettings::validate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreditSettings {
    /// [`CreditAlert::LowCredit`] is active while the balance is below this (default 0).
    #[serde(default)]
    pub low_credit_threshold: Amount,
    /// [`CreditAlert::RunningOut`] is active while the credit lasts at most this many
    /// hours at the current burn rate (0 disables it).
    #[serde(default = "default_run_out_warning_hours")]
    pub run_out_warning_hours: u32,
    /// Automatic top-up, if wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_top_up: Option<AutoTopUp>,
}

fn default_run_out_warning_hours() -> u32 {
    DEFAULT_RUN_OUT_WARNING_HOURS
}

impl Default for CreditSettings {
    fn default() -> Self {
        CreditSettings {
            low_credit_threshold: Amount::ZERO,
            run_out_warning_hours: DEFAULT_RUN_OUT_WARNING_HOURS,
            auto_top_up: None,
        }
    }
}

/// Automatic top-up: ask the payment gateway for `amount` when the balance falls below
/// `trigger`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoTopUp {
    /// A charge leaving the balance below this asks for a top-up.
    pub trigger: Amount,
    /// The amount asked for (greater than 0).
    pub amount: Amount,
}

impl CreditSettings {
    /// Refuses negative amounts, a zero auto top-up amount and more than
    /// [`MAX_RUN_OUT_WARNING_HOURS`], naming the field ([`CreditError::field`]).
    pub fn validate(&self) -> Result<(), CreditError> {
        check_not_negative("low_credit_threshold", self.low_credit_threshold)?;
        if self.run_out_warning_hours > MAX_RUN_OUT_WARNING_HOURS {
            return Err(CreditError::HoursOutOfRange {
                field: "run_out_warning_hours",
                hours: self.run_out_warning_hours,
            });
        }
        if let Some(auto) = self.auto_top_up {
            check_not_negative("auto_top_up.trigger", auto.trigger)?;
            check_positive("auto_top_up.amount", auto.amount)?;
        }
        Ok(())
    }
}

/// The state of a top-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TopUpStatus {
    /// Asked of the payment gateway, no answer yet (auto top-ups).
    Pending,
    /// Credited on request (manual top-ups).
    Completed,
    /// The gateway took the payment; credited (auto top-ups).
    Confirmed,
    /// The gateway refused; nothing credited (auto top-ups).
    Failed,
}

impl TopUpStatus {
    /// The wire name, e.g. `pending`.
    pub fn as_str(self) -> &'static str {
        match self {
            TopUpStatus::Pending => "pending",
            TopUpStatus::Completed => "completed",
            TopUpStatus::Confirmed => "confirmed",
            TopUpStatus::Failed => "failed",
        }
    }
}

impl fmt::Display for TopUpStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a credit operation was refused. Nothing changes when one is returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreditError {
    /// An amount that must not be negative is (a setting, a charge's `cost`).
    NegativeAmount {
        /// Path of the field.
        field: &'static str,
        /// The amount given.
        amount: Amount,
    },
    /// An amount that must be greater than 0 is not (a top-up `amount`,
    /// `auto_top_up.amount`).
    AmountNotPositive {
        /// Path of the field.
        field: &'static str,
        /// The amount given.
        amount: Amount,
    },
    /// A number of hours above [`MAX_RUN_OUT_WARNING_HOURS`].
    HoursOutOfRange {
        /// Path of the field.
        field: &'static str,
        /// The value given.
        hours: u32,
    },
    /// An idempotency key or billing cycle id that is not 1 to [`MAX_IDENTIFIER_LEN`]
    /// characters of `[A-Za-z0-9_.:-]`.
    InvalidIdentifier {
        /// `idempotency_key` or `cycle`.
        field: &'static str,
    },
    /// The idempotency key was used before for another amount (HTTP 409).
    IdempotencyConflict {
        /// The key.
        key: String,
        /// The amount of the original top-up.
        original_amount: Amount,
        /// The amount of this request.
        requested_amount: Amount,
    },
    /// No auto top-up request has this id.
    UnknownTopUp {
        /// The id given.
        id: String,
    },
    /// The request is not pending and cannot take this outcome (HTTP 409).
    InvalidTransition {
        /// The request.
        id: String,
        /// Its current status.
        status: TopUpStatus,
        /// The status asked for.
        requested: TopUpStatus,
    },
    /// The balance would leave the representable range.
    Overflow,
}

impl CreditError {
    /// The path of the input field at fault, for errors caused by one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            CreditError::NegativeAmount { field, .. }
            | CreditError::AmountNotPositive { field, .. }
            | CreditError::HoursOutOfRange { field, .. }
            | CreditError::InvalidIdentifier { field } => Some(field),
            _ => None,
        }
    }
}

impl fmt::Display for CreditError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CreditError::NegativeAmount { field, amount } => {
                write!(f, "`{field}` must not be negative, got {amount}")
            }
            CreditError::AmountNotPositive { field, amount } => {
                write!(f, "`{field}` must be greater than 0, got {amount}")
            }
            CreditError::HoursOutOfRange { field, hours } => write!(
                f,
                "`{field}` must be at most {MAX_RUN_OUT_WARNING_HOURS}, got {hours}"
            ),
            CreditError::InvalidIdentifier { field } => write!(
                f,
                "`{field}` must be 1 to {MAX_IDENTIFIER_LEN} characters of [A-Za-z0-9_.:-]"
            ),
            CreditError::IdempotencyConflict {
                key,
                original_amount,
                requested_amount,
            } => write!(
                f,
                "idempotency key `{key}` was used for a top-up of {original_amount}, not {requested_amount}"
            ),
            CreditError::UnknownTopUp { id } => write!(f, "no auto top-up request `{id}`"),
            CreditError::InvalidTransition {
                id,
                status,
                requested,
            } => write!(
                f,
                "auto top-up `{id}` is {status} and cannot become {requested}"
            ),
            CreditError::Overflow => write!(f, "credit balance arithmetic overflowed"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CreditError {}

fn check_not_negative(field: &'static str, amount: Amount) -> Result<(), CreditError> {
    if amount.is_negative() {
        return Err(CreditError::NegativeAmount { field, amount });
    }
    Ok(())
}

fn check_positive(field: &'static str, amount: Amount) -> Result<(), CreditError> {
    if amount <= Amount::ZERO {
        return Err(CreditError::AmountNotPositive { field, amount });
    }
    Ok(())
}

fn check_identifier(field: &'static str, text: &str) -> Result<(), CreditError> {
    let valid = !text.is_empty()
        && text.len() <= MAX_IDENTIFIER_LEN
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(CreditError::InvalidIdentifier { field })
    }
}

fn add(a: Amount, b: Amount) -> Result<Amount, CreditError> {
    a.checked_add(b).map_err(|_| CreditError::Overflow)
}

fn sub(a: Amount, b: Amount) -> Result<Amount, CreditError> {
    a.checked_sub(b).map_err(|_| CreditError::Overflow)
}

// ---------------------------------------------------------------------------------
// Ledger, requests, alerts, events
// ---------------------------------------------------------------------------------

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    /// A manual top-up (credit).
    TopUp,
    /// A confirmed auto top-up (credit).
    AutoTopUp,
    /// One UTC day of usage (debit).
    Usage,
}

/// One ledger entry. Never changes once appended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transaction {
    /// Position in the log: 1, 2, 3, …
    pub seq: u64,
    /// When it happened, Unix ms; for usage, the start of the UTC day it sums.
    pub at_ms: i64,
    /// What it records.
    pub kind: TransactionKind,
    /// Signed: credits positive, usage negative.
    pub amount: Amount,
    /// The posted balance after it: the previous entry's plus `amount`.
    pub balance_after: Amount,
    /// The idempotency key (top-up) or request id (auto top-up); none for usage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// An automatic top-up asked of the payment gateway.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoTopUpRequest {
    /// `"{meter}:{cycle}:{sequence}"`: also the gateway's idempotency key.
    pub id: String,
    /// The caller's billing cycle id, e.g. `"2026-12"`.
    pub cycle: String,
    /// 1 for the first request of the cycle, 2 for the next, …
    pub sequence: u32,
    /// The amount asked for (the setting when it was created).
    pub amount: Amount,
    /// Pending, confirmed or failed.
    pub status: TopUpStatus,
    /// The charged minute that created it, Unix ms.
    pub requested_at_ms: i64,
    /// When it was confirmed or failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at_ms: Option<i64>,
    /// Why it failed (cut to [`MAX_FAILURE_REASON_LEN`] bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// The ledger entry that credited it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction_seq: Option<u64>,
}

/// A credit alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CreditAlert {
    /// Balance below [`CreditSettings::low_credit_threshold`].
    LowCredit,
    /// Burn rate above zero and balance ≤ burn rate × run-out warning hours (includes
    /// a balance already used up).
    RunningOut,
    /// Balance ≤ 0.
    Exhausted,
}

impl CreditAlert {
    /// Every alert, in a fixed order (the order events are reported in).
    pub const ALL: [CreditAlert; 3] = [
        CreditAlert::LowCredit,
        CreditAlert::RunningOut,
        CreditAlert::Exhausted,
    ];
}

/// Something the owner should pass on: to clients, or to the payment gateway. Every
/// amount is exact, in `currency`; JSON is tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CreditEvent {
    /// An alert's condition became true.
    AlertRaised {
        /// The meter.
        meter: MeterId,
        /// The currency of every amount.
        currency: Currency,
        /// The alert.
        alert: CreditAlert,
        /// The balance.
        balance: Amount,
        /// The compared amount: the low-credit threshold, zero, or the credit the
        /// warning window needs at the burn rate.
        threshold: Amount,
        /// When it was evaluated, Unix ms.
        at_ms: i64,
    },
    /// An active alert's condition became false.
    AlertCleared {
        /// The meter.
        meter: MeterId,
        /// The currency of every amount.
        currency: Currency,
        /// The alert.
        alert: CreditAlert,
        /// The balance.
        balance: Amount,
        /// The compared amount (as in `alert_raised`).
        threshold: Amount,
        /// When it was evaluated, Unix ms.
        at_ms: i64,
    },
    /// Ask the payment gateway for a top-up (idempotency key `id`).
    AutoTopUpRequested {
        /// The meter.
        meter: MeterId,
        /// The currency of every amount.
        currency: Currency,
        /// The request id.
        id: String,
        /// The amount asked for.
        amount: Amount,
        /// The billing cycle.
        cycle: String,
        /// Requests in the cycle so far, this one included.
        sequence: u32,
        /// The charged minute that created it, Unix ms.
        at_ms: i64,
    },
    /// A manual top-up was credited.
    TopUpCompleted {
        /// The meter.
        meter: MeterId,
        /// The currency of every amount.
        currency: Currency,
        /// Its idempotency key.
        idempotency_key: String,
        /// The amount credited.
        amount: Amount,
        /// The balance after it.
        balance: Amount,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// An auto top-up was confirmed and credited.
    AutoTopUpConfirmed {
        /// The meter.
        meter: MeterId,
        /// The currency of every amount.
        currency: Currency,
        /// The request id.
        id: String,
        /// The amount credited.
        amount: Amount,
        /// The balance after it.
        balance: Amount,
        /// When, Unix ms.
        at_ms: i64,
    },
    /// An auto top-up failed; nothing was credited.
    AutoTopUpFailed {
        /// The meter.
        meter: MeterId,
        /// The currency of every amount.
        currency: Currency,
        /// The request id.
        id: String,
        /// The amount that was asked for.
        amount: Amount,
        /// The gateway's reason.
        reason: String,
        /// When, Unix ms.
        at_ms: i64,
    },
}

/// What a charge did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChargeOutcome {
    /// False when the minute was at or before the last charged one (a replay).
    pub applied: bool,
    /// An [`CreditEvent::AutoTopUpRequested`] if the charge created one.
    pub events: Vec<CreditEvent>,
}

/// The answer to a manual top-up request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopUpOutcome {
    /// The idempotency key.
    pub idempotency_key: String,
    /// The amount credited.
    pub amount: Amount,
    /// Always [`TopUpStatus::Completed`].
    pub status: TopUpStatus,
    /// When it was first requested, Unix ms.
    pub at_ms: i64,
    /// The ledger entry that credited it.
    pub transaction_seq: u64,
    /// True when the key had been used before: the original top-up, nothing changed.
    pub replayed: bool,
    /// [`CreditEvent::TopUpCompleted`] the first time, nothing on a replay.
    pub events: Vec<CreditEvent>,
}

/// The answer to a confirm or fail of an auto top-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AutoTopUpOutcome {
    /// The request after the call.
    pub request: AutoTopUpRequest,
    /// True when it already had that outcome: nothing changed.
    pub already: bool,
    /// Confirmed/failed event when the status changed, nothing otherwise.
    pub events: Vec<CreditEvent>,
}

/// The read side of an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CreditStatus {
    /// The meter.
    pub meter: MeterId,
    /// The currency (its code on the wire).
    pub currency: Currency,
    /// The balance, rounded to the minor unit (half away from zero).
    pub balance: Money,
    /// The pending auto top-up, if any.
    pub pending_auto_top_up: Option<AutoTopUpRequest>,
    /// Active alerts, in [`CreditAlert::ALL`] order.
    pub active_alerts: Vec<CreditAlert>,
    /// Seq of the last ledger entry (0 when empty).
    pub last_seq: u64,
}

/// A manual top-up as kept under its idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct ManualTopUp {
    amount: Amount,
    at_ms: i64,
    transaction_seq: u64,
}

/// Usage of the current UTC day, charged but not yet logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct RunningDay {
    /// `minute_ms.div_euclid(DAY_MS)`.
    day: i64,
    /// Sum of the day's charges (≥ 0).
    cost: Amount,
}

// ---------------------------------------------------------------------------------
// The account
// ---------------------------------------------------------------------------------

/// One prepaid meter's credit: see the module documentation for the model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditAccount {
    meter: MeterId,
    currency: Currency,
    settings: CreditSettings,
    balance: Amount,
    transactions: Vec<Transaction>,
    running_day: Option<RunningDay>,
    last_charged_minute_ms: Option<i64>,
    top_ups: BTreeMap<String, ManualTopUp>,
    auto_top_ups: Vec<AutoTopUpRequest>,
    active_alerts: BTreeSet<CreditAlert>,
}

impl CreditAccount {
    /// An empty account (balance 0) with validated `settings`.
    pub fn new(
        meter: MeterId,
        currency: Currency,
        settings: CreditSettings,
    ) -> Result<CreditAccount, CreditError> {
        settings.validate()?;
        Ok(CreditAccount {
            meter,
            currency,
            settings,
            balance: Amount::ZERO,
            transactions: Vec::new(),
            running_day: None,
            last_charged_minute_ms: None,
            top_ups: BTreeMap::new(),
            auto_top_ups: Vec::new(),
            active_alerts: BTreeSet::new(),
        })
    }

    /// The meter.
    pub fn meter(&self) -> MeterId {
        self.meter
    }

    /// The currency of every amount.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The settings.
    pub fn settings(&self) -> &CreditSettings {
        &self.settings
    }

    /// Replaces the settings (validated). A pending request stays pending; alerts
    /// follow at the next [`CreditAccount::evaluate_alerts`].
    pub fn set_settings(&mut self, settings: CreditSettings) -> Result<(), CreditError> {
        settings.validate()?;
        self.settings = settings;
        Ok(())
    }

    /// The live balance, today's usage included; negative is debt.
    pub fn balance(&self) -> Amount {
        self.balance
    }

    /// The running day's usage not yet logged, signed (≤ 0): the posted balance (the
    /// last entry's `balance_after`) plus this is [`CreditAccount::balance`].
    pub fn unposted_usage(&self) -> Amount {
        self.running_day.map_or(Amount::ZERO, |day| {
            sub(Amount::ZERO, day.cost).unwrap_or(Amount::ZERO)
        })
    }

    /// The last minute charged, Unix ms.
    pub fn last_charged_minute_ms(&self) -> Option<i64> {
        self.last_charged_minute_ms
    }

    /// Charges `cost` (≥ 0) for the usage minute starting at `minute_ms`, in billing
    /// cycle `cycle` (names auto top-up requests). A minute at or before the last
    /// charged one is a replay: ignored, `applied` false. A minute of a later UTC day
    /// first logs the running day. If the charge leaves the balance below the auto
    /// top-up trigger and nothing is pending, it creates a request, returned as an
    /// event.
    pub fn charge(
        &mut self,
        minute_ms: i64,
        cost: Amount,
        cycle: &str,
    ) -> Result<ChargeOutcome, CreditError> {
        check_not_negative("cost", cost)?;
        check_identifier("cycle", cycle)?;
        if self
            .last_charged_minute_ms
            .is_some_and(|last| minute_ms <= last)
        {
            return Ok(ChargeOutcome {
                applied: false,
                events: Vec::new(),
            });
        }
        let day = minute_ms.div_euclid(DAY_MS);
        let balance = sub(self.balance, cost)?;
        let running_cost = match self.running_day {
            Some(running) if running.day == day => add(running.cost, cost)?,
            _ => cost,
        };
        if self.running_day.is_some_and(|running| running.day != day) {
            self.post_running_day();
        }
        self.running_day = Some(RunningDay {
            day,
            cost: running_cost,
        });
        self.balance = balance;
        self.last_charged_minute_ms = Some(minute_ms);
        let events = self
            .request_auto_top_up_if_due(minute_ms, cycle)
            .into_iter()
            .collect();
        Ok(ChargeOutcome {
            applied: true,
            events,
        })
    }

    /// Logs the running day if `at_ms` is in a later UTC day (a checkpoint when no
    /// minute of the new day has arrived). Returns whether an entry was appended.
    pub fn close_day(&mut self, at_ms: i64) -> bool {
        match self.running_day {
            Some(running) if running.day < at_ms.div_euclid(DAY_MS) => {
                let before = self.transactions.len();
                self.post_running_day();
                self.transactions.len() > before
            }
            _ => false,
        }
    }

    /// Credits a manual top-up of `amount` (> 0) under `idempotency_key` (1 to
    /// [`MAX_IDENTIFIER_LEN`] characters of `[A-Za-z0-9_.:-]`). A key used before with
    /// the same amount returns the original (`replayed`, nothing changes); with another
    /// amount it is an [`CreditError::IdempotencyConflict`].
    pub fn top_up(
        &mut self,
        idempotency_key: &str,
        amount: Amount,
        at_ms: i64,
    ) -> Result<TopUpOutcome, CreditError> {
        check_identifier("idempotency_key", idempotency_key)?;
        check_positive("amount", amount)?;
        if let Some(original) = self.top_ups.get(idempotency_key) {
            if original.amount != amount {
                return Err(CreditError::IdempotencyConflict {
                    key: idempotency_key.into(),
                    original_amount: original.amount,
                    requested_amount: amount,
                });
            }
            return Ok(TopUpOutcome {
                idempotency_key: idempotency_key.into(),
                amount,
                status: TopUpStatus::Completed,
                at_ms: original.at_ms,
                transaction_seq: original.transaction_seq,
                replayed: true,
                events: Vec::new(),
            });
        }
        let seq = self.credit(
            TransactionKind::TopUp,
            amount,
            at_ms,
            idempotency_key.into(),
        )?;
        self.top_ups.insert(
            idempotency_key.into(),
            ManualTopUp {
                amount,
                at_ms,
                transaction_seq: seq,
            },
        );
        Ok(TopUpOutcome {
            idempotency_key: idempotency_key.into(),
            amount,
            status: TopUpStatus::Completed,
            at_ms,
            transaction_seq: seq,
            replayed: false,
            events: alloc::vec![CreditEvent::TopUpCompleted {
                meter: self.meter,
                currency: self.currency,
                idempotency_key: idempotency_key.into(),
                amount,
                balance: self.balance,
                at_ms,
            }],
        })
    }

    /// The gateway confirmed request `id`: pending → confirmed, credits its amount.
    /// Already confirmed: `already`, nothing changes. Failed: `InvalidTransition`.
    pub fn confirm(&mut self, id: &str, at_ms: i64) -> Result<AutoTopUpOutcome, CreditError> {
        let index = self.request_index(id)?;
        let request = &self.auto_top_ups[index];
        match request.status {
            TopUpStatus::Confirmed => return Ok(self.unchanged(index)),
            TopUpStatus::Pending => {}
            status => {
                return Err(CreditError::InvalidTransition {
                    id: id.into(),
                    status,
                    requested: TopUpStatus::Confirmed,
                });
            }
        }
        let amount = request.amount;
        let seq = self.credit(TransactionKind::AutoTopUp, amount, at_ms, id.into())?;
        let request = &mut self.auto_top_ups[index];
        request.status = TopUpStatus::Confirmed;
        request.resolved_at_ms = Some(at_ms);
        request.transaction_seq = Some(seq);
        let request = request.clone();
        Ok(AutoTopUpOutcome {
            events: alloc::vec![CreditEvent::AutoTopUpConfirmed {
                meter: self.meter,
                currency: self.currency,
                id: request.id.clone(),
                amount,
                balance: self.balance,
                at_ms,
            }],
            request,
            already: false,
        })
    }

    /// The gateway refused request `id`: pending → failed, nothing credited (the next
    /// charge below the trigger asks again). Already failed: `already`, nothing
    /// changes. Confirmed: `InvalidTransition`.
    pub fn fail(
        &mut self,
        id: &str,
        reason: &str,
        at_ms: i64,
    ) -> Result<AutoTopUpOutcome, CreditError> {
        let index = self.request_index(id)?;
        match self.auto_top_ups[index].status {
            TopUpStatus::Failed => return Ok(self.unchanged(index)),
            TopUpStatus::Pending => {}
            status => {
                return Err(CreditError::InvalidTransition {
                    id: id.into(),
                    status,
                    requested: TopUpStatus::Failed,
                });
            }
        }
        let mut end = reason.len().min(MAX_FAILURE_REASON_LEN);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let reason: String = reason[..end].into();
        let request = &mut self.auto_top_ups[index];
        request.status = TopUpStatus::Failed;
        request.resolved_at_ms = Some(at_ms);
        request.failure_reason = Some(reason.clone());
        let request = request.clone();
        Ok(AutoTopUpOutcome {
            events: alloc::vec![CreditEvent::AutoTopUpFailed {
                meter: self.meter,
                currency: self.currency,
                id: request.id.clone(),
                amount: request.amount,
                reason,
                at_ms,
            }],
            request,
            already: false,
        })
    }

    /// The pending auto top-up request, if any (at most one).
    pub fn pending_auto_top_up(&self) -> Option<&AutoTopUpRequest> {
        self.auto_top_ups
            .iter()
            .find(|request| request.status == TopUpStatus::Pending)
    }

    /// Every auto top-up request ever made, oldest first.
    pub fn auto_top_ups(&self) -> &[AutoTopUpRequest] {
        &self.auto_top_ups
    }

    /// Days the balance lasts at `cost_per_day` (0 when already used up); none when
    /// nothing is being used (`cost_per_day` ≤ 0). A forecast, hence a float.
    pub fn days_of_credit_left(&self, cost_per_day: Amount) -> Option<f64> {
        if cost_per_day <= Amount::ZERO {
            return None;
        }
        let balance = self.balance.micro_units().max(0);
        Some(balance as f64 / cost_per_day.micro_units() as f64)
    }

    /// Compares every [`CreditAlert`] condition (at burn rate `cost_per_hour`; a
    /// negative rate counts as 0) with the stored active set and returns what changed:
    /// raised for newly true conditions, cleared for newly false ones, in
    /// [`CreditAlert::ALL`] order. Calling again without a change returns nothing,
    /// also on an account restored from a snapshot.
    pub fn evaluate_alerts(&mut self, cost_per_hour: Amount, at_ms: i64) -> Vec<CreditEvent> {
        let mut events = Vec::new();
        for alert in CreditAlert::ALL {
            let (active, threshold) = self.alert_condition(alert, cost_per_hour);
            let (meter, currency, balance) = (self.meter, self.currency, self.balance);
            if active && self.active_alerts.insert(alert) {
                events.push(CreditEvent::AlertRaised {
                    meter,
                    currency,
                    alert,
                    balance,
                    threshold,
                    at_ms,
                });
            } else if !active && self.active_alerts.remove(&alert) {
                events.push(CreditEvent::AlertCleared {
                    meter,
                    currency,
                    alert,
                    balance,
                    threshold,
                    at_ms,
                });
            }
        }
        events
    }

    /// The alerts raised and not cleared since.
    pub fn active_alerts(&self) -> &BTreeSet<CreditAlert> {
        &self.active_alerts
    }

    /// The read side: balance rounded to the minor unit, pending request, alerts.
    pub fn status(&self) -> CreditStatus {
        CreditStatus {
            meter: self.meter,
            currency: self.currency,
            balance: self.balance.round_to_minor_unit(self.currency),
            pending_auto_top_up: self.pending_auto_top_up().cloned(),
            active_alerts: self.active_alerts.iter().copied().collect(),
            last_seq: self.transactions.last().map_or(0, |entry| entry.seq),
        }
    }

    /// Up to `limit` ledger entries with a seq above `after_seq`, oldest first
    /// (`after_seq` 0 starts at the beginning).
    pub fn transactions(&self, after_seq: u64, limit: usize) -> &[Transaction] {
        let start = self
            .transactions
            .partition_point(|entry| entry.seq <= after_seq);
        let rest = &self.transactions[start..];
        &rest[..rest.len().min(limit)]
    }

    // -- internals ------------------------------------------------------------------

    fn posted_balance(&self) -> Amount {
        self.transactions
            .last()
            .map_or(Amount::ZERO, |entry| entry.balance_after)
    }

    fn next_seq(&self) -> u64 {
        self.transactions.last().map_or(1, |entry| entry.seq + 1)
    }

    /// Appends the running day as a usage entry (nothing for a day without cost). Its
    /// balance after is the live balance: the running day is the only unposted part.
    fn post_running_day(&mut self) {
        if let Some(running) = self.running_day.take()
            && running.cost != Amount::ZERO
        {
            let amount = sub(Amount::ZERO, running.cost).unwrap_or(Amount::ZERO);
            self.transactions.push(Transaction {
                seq: self.next_seq(),
                at_ms: running.day.saturating_mul(DAY_MS),
                kind: TransactionKind::Usage,
                amount,
                balance_after: self.balance,
                reference: None,
            });
        }
    }

    /// Credits `amount` with a ledger entry; returns its seq. Nothing changes on error.
    fn credit(
        &mut self,
        kind: TransactionKind,
        amount: Amount,
        at_ms: i64,
        reference: String,
    ) -> Result<u64, CreditError> {
        let balance = add(self.balance, amount)?;
        let balance_after = add(self.posted_balance(), amount)?;
        let seq = self.next_seq();
        self.transactions.push(Transaction {
            seq,
            at_ms,
            kind,
            amount,
            balance_after,
            reference: Some(reference),
        });
        self.balance = balance;
        Ok(seq)
    }

    fn request_auto_top_up_if_due(&mut self, minute_ms: i64, cycle: &str) -> Option<CreditEvent> {
        let auto = self.settings.auto_top_up?;
        if self.balance >= auto.trigger || self.pending_auto_top_up().is_some() {
            return None;
        }
        let in_cycle = self
            .auto_top_ups
            .iter()
            .filter(|request| request.cycle == cycle)
            .count();
        let sequence = u32::try_from(in_cycle).map_or(u32::MAX, |n| n.saturating_add(1));
        let id = format!("{}:{cycle}:{sequence}", self.meter);
        self.auto_top_ups.push(AutoTopUpRequest {
            id: id.clone(),
            cycle: cycle.into(),
            sequence,
            amount: auto.amount,
            status: TopUpStatus::Pending,
            requested_at_ms: minute_ms,
            resolved_at_ms: None,
            failure_reason: None,
            transaction_seq: None,
        });
        Some(CreditEvent::AutoTopUpRequested {
            meter: self.meter,
            currency: self.currency,
            id,
            amount: auto.amount,
            cycle: cycle.into(),
            sequence,
            at_ms: minute_ms,
        })
    }

    fn request_index(&self, id: &str) -> Result<usize, CreditError> {
        self.auto_top_ups
            .iter()
            .position(|request| request.id == id)
            .ok_or_else(|| CreditError::UnknownTopUp { id: id.into() })
    }

    fn unchanged(&self, index: usize) -> AutoTopUpOutcome {
        AutoTopUpOutcome {
            request: self.auto_top_ups[index].clone(),
            already: true,
            events: Vec::new(),
        }
    }

    /// Whether `alert`'s condition holds, and the amount the balance is compared with.
    fn alert_condition(&self, alert: CreditAlert, cost_per_hour: Amount) -> (bool, Amount) {
        let balance = self.balance;
        match alert {
            CreditAlert::LowCredit => {
                let threshold = self.settings.low_credit_threshold;
                (balance < threshold, threshold)
            }
            CreditAlert::Exhausted => (balance <= Amount::ZERO, Amount::ZERO),
            CreditAlert::RunningOut => {
                let hours = i128::from(self.settings.run_out_warning_hours);
                let needed = cost_per_hour.micro_units().max(0).saturating_mul(hours);
                let threshold = Amount::from_micro_units(needed.min(MAX_AMOUNT_MICRO_UNITS))
                    .unwrap_or(Amount::ZERO);
                (needed > 0 && balance.micro_units() <= needed, threshold)
            }
        }
    }
}
