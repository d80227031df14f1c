//! Prepaid credit of a user's meters, inside the user actor: each prepaid meter's
//! [`CreditAccount`] burns down by the meter's tariff minute by minute, top-ups and the
//! gateway's confirmations arrive as commands, and every change comes out as user
//! events (`credit` for low / running out / exhausted, `top_up` for top-ups and auto
//! top-up requests).
//!
//! A minute costs its energy at the tariff (tiers count the meter's own energy in the
//! billing period; time-of-use bands by the minute's local time) plus, for the first
//! minute of each local day, one day of standing charge. The burn rate behind "runs out
//! within N hours" and "days of credit left" is an exponential moving average of the
//! minutes' cost (time constant 6 hours). Everything is part of the user's snapshot,
//! which is stored before a credit event is published, so a replay after a crash
//! neither charges a minute twice (the account skips minutes already charged) nor
//! repeats an event or a top-up request (request ids are derived from meter, billing
//! period and sequence).

use std::collections::BTreeMap;

use gridpulse_domain::credit::{AutoTopUpOutcome, TopUpOutcome};
use gridpulse_domain::{
    Amount, CreditAccount, CreditError, CreditEvent, CreditSettings, Currency, LocalDate, MeterId,
    Tariff, UserId,
};
use serde::{Deserialize, Serialize};

use crate::user_billing::UserBilling;
use crate::user_events::UserEventBody;

/// Minutes in the burn-rate average's time constant (6 hours).
const BURN_TIME_CONSTANT_MINUTES: f64 = 360.0;

/// How a meter of the user is priced (from its stored configuration).
#[derive(Debug, Clone)]
pub struct MeterPricing {
    /// The meter's own tariff (id, tariff), if it has one.
    pub tariff: Option<(String, Tariff)>,
    /// Prepaid: its credit burns down by `tariff`.
    pub prepaid: bool,
}

/// One prepaid meter: its credit account and its own billing (tiers by its energy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrepaidMeter {
    /// The tariff the meter's billing was started with.
    tariff: String,
    billing: Option<UserBilling>,
    /// Energy cost of the current billing period so far (rounded total), to price each
    /// minute as the difference.
    energy_cost_so_far: Amount,
    /// The local day whose standing charge was last charged.
    standing_charged_for: Option<LocalDate>,
    /// Burn rate, micro-units per hour.
    burn_micro_per_hour: f64,
    /// The credit account.
    pub account: CreditAccount,
}

impl PrepaidMeter {
    /// Cost per hour at the current burn rate.
    pub fn cost_per_hour(&self) -> Amount {
        Amount::from_micro_units(self.burn_micro_per_hour.max(0.0) as i128).unwrap_or(Amount::ZERO)
    }
}

/// The prepaid meters of a user (part of the user's snapshot).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserCredit {
    meters: BTreeMap<MeterId, PrepaidMeter>,
}

/// A credit command from the API.
#[derive(Debug, Clone)]
pub enum CreditCommand {
    /// A top-up paid by the user (credited at once), idempotent by key.
    TopUp {
        /// The client's idempotency key.
        key: String,
        /// How much.
        amount: Amount,
    },
    /// The payment gateway took an auto top-up request's payment.
    Confirm {
        /// The request id.
        id: String,
    },
    /// The payment gateway could not take it.
    Fail {
        /// The request id.
        id: String,
        /// Why (from the gateway).
        reason: String,
    },
}

/// What a credit command answered.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum CreditReply {
    /// A manual top-up.
    TopUp(TopUpOutcome),
    /// A confirmation or failure of an auto top-up request.
    AutoTopUp(AutoTopUpOutcome),
}

impl CreditReply {
    fn events(&self) -> &[CreditEvent] {
        match self {
            CreditReply::TopUp(outcome) => &outcome.events,
            CreditReply::AutoTopUp(outcome) => &outcome.events,
        }
    }
}

/// A credit event as a user event: its type, stable id and body.
pub fn user_event(event: CreditEvent) -> (String, UserEventBody) {
    let id = match &event {
        CreditEvent::AlertRaised {
            meter,
            alert,
            at_ms,
            ..
        } => {
            format!("{meter}.credit.{}.raised.{at_ms}", alert_name(*alert))
        }
        CreditEvent::AlertCleared {
            meter,
            alert,
            at_ms,
            ..
        } => {
            format!("{meter}.credit.{}.cleared.{at_ms}", alert_name(*alert))
        }
        CreditEvent::AutoTopUpRequested { id, .. } => format!("{id}.requested"),
        CreditEvent::TopUpCompleted {
            meter,
            idempotency_key,
            ..
        } => {
            format!("{meter}.top_up.{idempotency_key}")
        }
        CreditEvent::AutoTopUpConfirmed { id, .. } => format!("{id}.confirmed"),
        CreditEvent::AutoTopUpFailed { id, .. } => format!("{id}.failed"),
    };
    let body = match event {
        CreditEvent::AlertRaised { .. } | CreditEvent::AlertCleared { .. } => {
            UserEventBody::Credit { event }
        }
        _ => UserEventBody::TopUp { event },
    };
    (id, body)
}

fn alert_name(alert: gridpulse_domain::CreditAlert) -> &'static str {
    match alert {
        gridpulse_domain::CreditAlert::LowCredit => "low_credit",
        gridpulse_domain::CreditAlert::RunningOut => "running_out",
        gridpulse_domain::CreditAlert::Exhausted => "exhausted",
    }
}

impl UserCredit {
    /// Charges one applied usage minute of a prepaid meter; answers the credit events
    /// (alerts, an auto top-up request). Nothing happens for other meters.
    pub fn charge(
        &mut self,
        user: UserId,
        meter: MeterId,
        pricing: &MeterPricing,
        settings: &CreditSettings,
        minute_ms: i64,
        energy_wh: f64,
    ) -> Vec<CreditEvent> {
        // A minute of a later day closes the running day of the user's quiet prepaid
        // meters too (their usage of that day enters the log).
        for (other, prepaid) in &mut self.meters {
            if *other != meter {
                prepaid.account.close_day(minute_ms);
            }
        }
        let (true, Some((tariff_id, tariff))) = (pricing.prepaid, &pricing.tariff) else {
            return Vec::new();
        };
        let entry = match self.entry(meter, tariff_id, tariff.currency(), settings) {
            Ok(entry) => entry,
            Err(error) => {
                tracing::warn!(%user, %meter, %error, "cannot open the credit account");
                return Vec::new();
            }
        };
        if entry.account.settings() != settings
            && let Err(error) = entry.account.set_settings(*settings)
        {
            tracing::warn!(%user, %meter, %error, "credit settings refused");
        }
        if entry
            .account
            .last_charged_minute_ms()
            .is_some_and(|last| minute_ms <= last)
        {
            return Vec::new();
        }
        let cost = match entry.price_minute(tariff_id, tariff, minute_ms, energy_wh) {
            Ok(cost) => cost,
            Err(error) => {
                crate::metrics::record_billing_error();
                tracing::warn!(%user, %meter, %error, minute_ms, "cannot price a prepaid minute");
                return Vec::new();
            }
        };
        let cycle = entry
            .billing
            .as_ref()
            .map_or_else(String::new, |billing| billing.period().to_string());
        let mut events = match entry.account.charge(minute_ms, cost, &cycle) {
            Ok(outcome) => outcome.events,
            Err(error) => {
                tracing::warn!(%user, %meter, %error, "cannot charge a prepaid minute");
                return Vec::new();
            }
        };
        // The burn rate: cost of this minute per hour, averaged.
        let per_hour = cost.micro_units() as f64 * 60.0;
        entry.burn_micro_per_hour = if entry.burn_micro_per_hour == 0.0 {
            per_hour
        } else {
            entry.burn_micro_per_hour
                + (per_hour - entry.burn_micro_per_hour) / BURN_TIME_CONSTANT_MINUTES
        };
        let cost_per_hour = entry.cost_per_hour();
        events.extend(entry.account.evaluate_alerts(cost_per_hour, minute_ms));
        events
    }

    fn entry(
        &mut self,
        meter: MeterId,
        tariff_id: &str,
        currency: Currency,
        settings: &CreditSettings,
    ) -> Result<&mut PrepaidMeter, CreditError> {
        match self.meters.entry(meter) {
            std::collections::btree_map::Entry::Occupied(entry) => Ok(entry.into_mut()),
            std::collections::btree_map::Entry::Vacant(entry) => {
                let account = CreditAccount::new(meter, currency, *settings)?;
                Ok(entry.insert(PrepaidMeter {
                    tariff: tariff_id.to_owned(),
                    billing: None,
                    energy_cost_so_far: Amount::ZERO,
                    standing_charged_for: None,
                    burn_micro_per_hour: 0.0,
                    account,
                }))
            }
        }
    }

    /// Runs a command against a meter's account (opened in `currency` if new). On an
    /// error nothing changed.
    pub fn command(
        &mut self,
        meter: MeterId,
        currency: Currency,
        settings: &CreditSettings,
        command: &CreditCommand,
        at_ms: i64,
    ) -> Result<(CreditReply, Vec<CreditEvent>), CreditError> {
        let entry = self.entry(meter, "", currency, settings)?;
        let reply = match command {
            CreditCommand::TopUp { key, amount } => {
                CreditReply::TopUp(entry.account.top_up(key, *amount, at_ms)?)
            }
            CreditCommand::Confirm { id } => {
                CreditReply::AutoTopUp(entry.account.confirm(id, at_ms)?)
            }
            CreditCommand::Fail { id, reason } => {
                CreditReply::AutoTopUp(entry.account.fail(id, reason, at_ms)?)
            }
        };
        let mut events = reply.events().to_vec();
        // A top-up may clear alerts.
        let cost_per_hour = entry.cost_per_hour();
        events.extend(entry.account.evaluate_alerts(cost_per_hour, at_ms));
        Ok((reply, events))
    }

    /// One prepaid meter's state.
    pub fn meter(&self, meter: MeterId) -> Option<&PrepaidMeter> {
        self.meters.get(&meter)
    }
}

impl PrepaidMeter {
    /// The cost of one minute: its energy at the tariff (difference of the period's
    /// rounded energy cost) plus a day's standing charge on a new local day.
    fn price_minute(
        &mut self,
        tariff_id: &str,
        tariff: &Tariff,
        minute_ms: i64,
        energy_wh: f64,
    ) -> Result<Amount, String> {
        let restart = match &self.billing {
            None => true,
            Some(billing) => {
                self.tariff != tariff_id || minute_ms >= billing.accumulator().period().end_utc_ms
            }
        };
        if restart {
            self.billing = Some(UserBilling::new(tariff, minute_ms).map_err(|e| e.to_string())?);
            self.tariff = tariff_id.to_owned();
            self.energy_cost_so_far = Amount::ZERO;
        }
        let Some(billing) = &mut self.billing else {
            return Err("no billing".into());
        };
        billing
            .apply(tariff, minute_ms, energy_wh, None)
            .map_err(|error| error.to_string())?;
        let to_date = billing
            .cost_to_date(tariff, minute_ms)
            .map_err(|error| error.to_string())?;
        let total = to_date
            .total
            .to_amount()
            .map_err(|error| error.to_string())?;
        let standing = to_date
            .standing_charge
            .cost
            .to_amount()
            .map_err(|error| error.to_string())?;
        let energy_cost = total
            .checked_sub(standing)
            .map_err(|error| error.to_string())?;
        let mut cost = energy_cost
            .checked_sub(self.energy_cost_so_far)
            .map_err(|error| error.to_string())?;
        self.energy_cost_so_far = energy_cost;
        let today = tariff
            .local_date(minute_ms)
            .map_err(|error| error.to_string())?;
        if self.standing_charged_for != Some(today) {
            self.standing_charged_for = Some(today);
            let day = to_date
                .standing_charge
                .rate_per_day
                .round_to_minor_unit(tariff.currency())
                .to_amount()
                .map_err(|error| error.to_string())?;
            cost = cost.checked_add(day).map_err(|error| error.to_string())?;
        }
        Ok(cost)
    }
}
