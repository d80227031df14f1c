//! Domain and wire types shared by every gridpulse crate and by the meter firmware.
//!
//! This crate is `no_std` + `alloc` capable (disable the default `std` feature) so that
//! the `firmware` crate can build and parse exactly the payloads the server accepts.
//! It owns the meaning of a reading (units, limits, validation), the two JSON payload
//! formats readings arrive in, the energy-register arithmetic (rollover/reset) and the
//! alert vocabulary that clients see on the wire. It also owns the money math of
//! users: exact amounts and currencies (`money`), tariffs and their local calendar
//! (`tariff`), the streaming cost engine (`bill`) and budget thresholds (`budget`).
//!
//! Architecture invariant: nothing here does I/O, reads a clock or allocates per
//! reading on the parse path; time is always passed in by the caller.
#![cfg_attr(not(feature = "std"), no_std)]

extern crate alloc;

pub mod alert;
pub mod bill;
pub mod budget;
pub mod credit;
pub mod meter_id;
pub mod money;
pub mod reading;
pub mod register;
pub mod rollup;
pub mod session;
pub mod tariff;
pub mod usage;
pub mod validation;
pub mod wire;

pub use alert::{
    AlertEvent, AlertEventKind, AlertKind, AlertNote, AlertRecord, AlertState, Severity, alert_id,
    parse_alert_id,
};
pub use bill::{
    BillAccumulator, BillError, CostBreakdown, Energy, EnergyError, EnergyLine, EnergyLineItem,
    StandingChargeLine, cost_of_energy,
};
pub use budget::{BudgetAssessment, BudgetError, BudgetState, BudgetThreshold, assess_budget};
pub use credit::{
    AutoTopUp, AutoTopUpOutcome, AutoTopUpRequest, ChargeOutcome, CreditAccount, CreditAlert,
    CreditError, CreditEvent, CreditSettings, CreditStatus, TopUpOutcome, TopUpStatus, Transaction,
    TransactionKind,
};
pub use meter_id::{MeterId, MeterIdError};
pub use money::{Amount, Currency, Money, MoneyError};
pub use reading::Reading;
pub use register::{RegisterStep, register_step};
pub use rollup::{Granularity, MeterRollup, UserRollup};
pub use session::{
    Baseline, BaselineError, BaselineRule, DEFAULT_POINTS_PER_KWH, HALF_HOUR_MS, LeaderboardRow,
    MAX_LOOKBACK_DAYS, MAX_SESSION_MS, SavingSession, SessionDefinition, SessionError,
    SessionProgress, SessionResult, Streak, baseline, half_hour_slot, leaderboard, progress,
    result, update_streak,
};
pub use tariff::{
    BillingPeriod, BillingPeriodId, BillingPeriodIdError, CalendarError, EnergyPricingDefinition,
    LocalDate, LocalDateError, Tariff, TariffDefinition, TariffError, TariffErrorReason,
    TierDefinition, TimeOfUseBandDefinition, Weekday,
};
pub use usage::{
    ClosedMinute, USAGE_MINUTE_MS, UsageAccumulator, UsageDelta, UserId, UserIdError, usage_minute,
};
pub use validation::{ErrorReason, Limits, PartNames, ReadingError, ReadingParts, validate_parts};
pub use wire::{MalformedJson, ParseError, ParsedBatch, parse_batch, parse_reading};
