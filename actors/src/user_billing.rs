//! A user's money over the current billing period: cost by tariff and budget thresholds.
//!
//! Plain data beside [`UserState`](crate::user_state::UserState), for the user actor to
//! feed with every usage delta it applied (replays are filtered before, by
//! (meter, minute)) and the user's tariff. Everything follows event time: the period is
//! the one containing the newest minute, so a replay after a crash reproduces the same
//! costs and the same budget crossings, and the [`BudgetState`] inside (part of the
//! user's snapshot) reports each of 70/90/100 % once per billing period. A minute of a
//! period already closed is counted as late and changes nothing.

use std::collections::{BTreeMap, VecDeque};

use gridpulse_domain::{
    Amount, BillAccumulator, BillError, BillingPeriodId, BudgetAssessment, BudgetError,
    BudgetState, BudgetThreshold, CostBreakdown, CreditEvent, LocalDate, MeterId, Tariff, UserId,
    assess_budget,
};
use serde::{Deserialize, Serialize};

use crate::account::UserAccount;
use crate::user_credit::{MeterPricing, UserCredit, user_event};
use crate::user_events::{MAX_KEPT_EVENTS, UserEvent, UserEventBody};
use crate::user_sessions::UserSessions;

/// Why a delta could not be priced or a budget assessed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BillingError {
    /// The tariff could not price the energy (bad energy, calendar limits, a tariff
    /// other than the one the period was started with).
    #[error("pricing usage: {0}")]
    Bill(#[from] BillError),
    /// The budget could not be assessed.
    #[error("assessing the budget: {0}")]
    Budget(#[from] BudgetError),
    /// A cost did not fit the money range.
    #[error("cost out of range")]
    OutOfRange,
}

/// A budget threshold reached for the first time in a billing period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetCrossing {
    /// The billing period.
    pub period: BillingPeriodId,
    /// 70, 90 or 100 %.
    pub threshold: BudgetThreshold,
    /// Where the budget stood when it was crossed (spend, projection, overrun date).
    pub assessment: BudgetAssessment,
}

/// The billing state of one user: serialisable, it is part of the user's snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserBilling {
    accumulator: BillAccumulator,
    budget: BudgetState,
    /// Minutes that arrived after their billing period had closed.
    n_late_minutes: u64,
}

impl UserBilling {
    /// Billing starting with the period of `tariff` that contains `minute_ms`.
    pub fn new(tariff: &Tariff, minute_ms: i64) -> Result<UserBilling, BillingError> {
        Ok(UserBilling {
            accumulator: BillAccumulator::for_period_containing(tariff, minute_ms)?,
            budget: BudgetState::default(),
            n_late_minutes: 0,
        })
    }

    /// Prices one applied usage minute and returns the budget thresholds it crossed for
    /// the first time in its period (none without a budget). A minute of a later period
    /// starts that period (tiers and budget start over); one of an earlier period is
    /// late and changes nothing. On error nothing changes.
    pub fn apply(
        &mut self,
        tariff: &Tariff,
        minute_ms: i64,
        energy_wh: f64,
        monthly_budget: Option<Amount>,
    ) -> Result<Vec<BudgetCrossing>, BillingError> {
        let period = *self.accumulator.period();
        if minute_ms < period.start_utc_ms {
            self.n_late_minutes += 1;
            return Ok(Vec::new());
        }
        if minute_ms >= period.end_utc_ms {
            let mut next = BillAccumulator::for_period_containing(tariff, minute_ms)?;
            next.add_meter_energy(tariff, minute_ms, energy_wh)?;
            self.accumulator = next;
        } else {
            self.accumulator
                .add_meter_energy(tariff, minute_ms, energy_wh)?;
        }
        let Some(budget) = monthly_budget else {
            return Ok(Vec::new());
        };
        let assessment = self.assess_budget(tariff, budget, minute_ms)?;
        let period = self.accumulator.period().id;
        Ok(self
            .budget
            .newly_reached_thresholds(period, &assessment.thresholds_reached)
            .into_iter()
            .map(|threshold| BudgetCrossing {
                period,
                threshold,
                assessment: assessment.clone(),
            })
            .collect())
    }

    /// The current period's cost up to and including the local day of `as_of_ms`.
    pub fn cost_to_date(
        &self,
        tariff: &Tariff,
        as_of_ms: i64,
    ) -> Result<CostBreakdown, BillingError> {
        let as_of_ms = as_of_ms.max(self.accumulator.period().start_utc_ms);
        Ok(self.accumulator.cost_of_period_to_date(tariff, as_of_ms)?)
    }

    /// The budget as of `as_of_ms` (a time in the current period): spend so far, and
    /// the overrun date projected from the mean daily spend of the period so far.
    pub fn assess_budget(
        &self,
        tariff: &Tariff,
        budget: Amount,
        as_of_ms: i64,
    ) -> Result<BudgetAssessment, BillingError> {
        let period = self.accumulator.period();
        let as_of_ms = as_of_ms.clamp(period.start_utc_ms, period.end_utc_ms - 1);
        let spent = self
            .accumulator
            .cost_of_period_to_date(tariff, as_of_ms)?
            .total
            .to_amount()
            .map_err(|_| BillingError::OutOfRange)?;
        let today = tariff.local_date(as_of_ms).map_err(BillError::from)?;
        let days_so_far = i128::from(period.start_date.days_until(today) + 1).max(1);
        let daily_spend = Amount::from_micro_units(spent.micro_units().max(0) / days_so_far)
            .map_err(|_| BillingError::OutOfRange)?;
        Ok(assess_budget(budget, spent, daily_spend, today, period)?)
    }

    /// The billing period being accumulated.
    pub fn period(&self) -> BillingPeriodId {
        self.accumulator.period().id
    }

    /// Minutes that arrived after their period had closed.
    pub fn n_late_minutes(&self) -> u64 {
        self.n_late_minutes
    }

    /// The usage of the current period, for bills and estimates.
    pub fn accumulator(&self) -> &BillAccumulator {
        &self.accumulator
    }

    /// The thresholds already reported in the current period.
    pub fn budget_state(&self) -> &BudgetState {
        &self.budget
    }
}

/// A user's account and tariff as the user actor prices usage with them (reloaded
/// from the account book, so changes take effect without a restart).
#[derive(Debug, Clone)]
pub struct Pricing {
    /// The account.
    pub account: UserAccount,
    /// The account's tariff (id, validated tariff), if it has one.
    pub tariff: Option<(String, Tariff)>,
    /// The user's meters seen so far, as configured (own tariff, prepaid).
    pub meters: BTreeMap<MeterId, MeterPricing>,
}

/// A billing period that ended (or whose tariff was changed), kept for bills.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClosedBill {
    /// The tariff it was priced by (tariffs are immutable, so the bill can be
    /// recomputed from it at any time).
    pub tariff: String,
    /// Its usage.
    pub accumulator: BillAccumulator,
}

/// How many closed bills a user keeps.
pub const MAX_CLOSED_BILLS: usize = 24;

/// The money side of a user's state: part of the user's snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserMoney {
    /// The tariff id the current period is priced by, and its billing.
    current: Option<(String, UserBilling)>,
    /// Closed bills, oldest first.
    closed: Vec<ClosedBill>,
    /// Recent events, oldest first.
    events: VecDeque<UserEvent>,
    last_event_seq: u64,
    /// The last projected date the budget is reached (forecast events on change).
    last_projection: Option<(BillingPeriodId, Option<LocalDate>)>,
    /// Prepaid credit of the user's prepaid meters.
    #[serde(default)]
    credit: UserCredit,
    /// Saving sessions the user opted in to, and their streak.
    #[serde(default)]
    sessions: UserSessions,
    /// Each meter's own billing of the current period (its tariff, or the account's),
    /// for per-meter cost.
    #[serde(default)]
    meter_bills: BTreeMap<MeterId, (String, UserBilling)>,
}

/// What pricing one minute produced.
#[derive(Debug, Default)]
pub struct Priced {
    /// New events (already recorded in the state), in order.
    pub events: Vec<UserEvent>,
    /// Whether one of them must be stored before it is published (a budget threshold
    /// reported once per period).
    pub store_first: bool,
}

impl UserMoney {
    /// Prices one applied (not replayed) usage minute with the user's current tariff
    /// and budget. A minute of a later period closes the current one; a change of
    /// tariff closes the current bill and starts a new one from this minute.
    pub fn apply(
        &mut self,
        user: UserId,
        pricing: &Pricing,
        meter: MeterId,
        minute_ms: i64,
        energy_wh: f64,
    ) -> Priced {
        let mut priced = Priced::default();
        for (id, body, store_first) in self.sessions.apply(minute_ms, energy_wh) {
            self.record(&mut priced, user, id, minute_ms, body);
            priced.store_first |= store_first;
        }
        if let Some(MeterPricing {
            tariff: Some((tariff_id, tariff)),
            ..
        }) = pricing.meters.get(&meter)
        {
            self.bill_meter(user, meter, tariff_id, tariff, minute_ms, energy_wh);
        }
        if let Some(meter_pricing) = pricing.meters.get(&meter) {
            let settings = pricing.account.credit.unwrap_or_default();
            let events =
                self.credit
                    .charge(user, meter, meter_pricing, &settings, minute_ms, energy_wh);
            self.record_credit(&mut priced, user, events, minute_ms);
        }
        let Some((tariff_id, tariff)) = &pricing.tariff else {
            return priced;
        };
        let restart = match &self.current {
            None => true,
            Some((current_id, billing)) => {
                current_id != tariff_id || minute_ms >= billing.accumulator().period().end_utc_ms
            }
        };
        if restart {
            let fresh = match UserBilling::new(tariff, minute_ms) {
                Ok(billing) => billing,
                Err(error) => {
                    crate::metrics::record_billing_error();
                    tracing::warn!(%user, %error, "cannot start billing");
                    return priced;
                }
            };
            if let Some((old_id, old)) = self.current.take() {
                if minute_ms < old.accumulator().period().start_utc_ms {
                    // A late minute of an earlier period: keep the current one.
                    self.current = Some((old_id, old));
                    return priced;
                }
                self.closed.push(ClosedBill {
                    tariff: old_id,
                    accumulator: old.accumulator().clone(),
                });
                if self.closed.len() > MAX_CLOSED_BILLS {
                    self.closed.remove(0);
                }
            }
            self.current = Some((tariff_id.clone(), fresh));
        }
        let Some((_, billing)) = &mut self.current else {
            return priced;
        };
        let budget = pricing.account.monthly_budget;
        let crossings = match billing.apply(tariff, minute_ms, energy_wh, budget) {
            Ok(crossings) => crossings,
            Err(error) => {
                crate::metrics::record_billing_error();
                tracing::warn!(%user, %error, minute_ms, "cannot price a usage minute");
                return priced;
            }
        };
        let period = billing.period();
        let forecast = budget.and_then(|budget| {
            billing
                .assess_budget(tariff, budget, minute_ms)
                .ok()
                .map(|assessment| (budget, assessment))
        });
        for crossing in crossings {
            let budget = budget.unwrap_or(Amount::ZERO);
            let spent = Amount::from_micro_units(
                budget.micro_units() * i128::from(crossing.assessment.used_basis_points) / 10_000,
            )
            .unwrap_or(Amount::ZERO);
            let percent = crossing.threshold.percent();
            self.record(
                &mut priced,
                user,
                format!("{user}.budget.{period}.{percent}"),
                minute_ms,
                UserEventBody::Budget {
                    period,
                    threshold_percent: percent,
                    used_basis_points: crossing.assessment.used_basis_points,
                    spent,
                    budget,
                    projected_date_budget_reached: crossing
                        .assessment
                        .projected_date_budget_reached,
                },
            );
            priced.store_first = true;
        }
        if let Some((budget, assessment)) = forecast {
            let projection = (period, assessment.projected_date_budget_reached);
            if self.last_projection != Some(projection) {
                self.last_projection = Some(projection);
                let date = projection
                    .1
                    .map_or_else(|| "none".to_owned(), |date| date.to_string());
                self.record(
                    &mut priced,
                    user,
                    format!("{user}.budget_forecast.{period}.{date}"),
                    minute_ms,
                    UserEventBody::BudgetForecast {
                        period,
                        projected_date_budget_reached: assessment.projected_date_budget_reached,
                        projected_spend_at_period_end: assessment.projected_spend_at_period_end,
                        budget,
                    },
                );
            }
        }
        priced
    }

    /// Records credit events (stored before they are published).
    pub fn record_credit(
        &mut self,
        priced: &mut Priced,
        user: UserId,
        events: Vec<CreditEvent>,
        at_ms: i64,
    ) {
        for event in events {
            let (id, body) = user_event(event);
            self.record(priced, user, id, at_ms, body);
            priced.store_first = true;
        }
    }

    fn bill_meter(
        &mut self,
        user: UserId,
        meter: MeterId,
        tariff_id: &str,
        tariff: &Tariff,
        minute_ms: i64,
        energy_wh: f64,
    ) {
        let restart = self.meter_bills.get(&meter).is_none_or(|(id, billing)| {
            id != tariff_id || minute_ms >= billing.accumulator().period().end_utc_ms
        });
        if restart {
            match UserBilling::new(tariff, minute_ms) {
                Ok(billing) => {
                    self.meter_bills
                        .insert(meter, (tariff_id.to_owned(), billing));
                }
                Err(error) => {
                    crate::metrics::record_billing_error();
                    tracing::warn!(%user, %meter, %error, "cannot start the meter's billing");
                    return;
                }
            }
        }
        if let Some((_, billing)) = self.meter_bills.get_mut(&meter)
            && let Err(error) = billing.apply(tariff, minute_ms, energy_wh, None)
        {
            crate::metrics::record_billing_error();
            tracing::warn!(%user, %meter, %error, minute_ms, "cannot price a meter's minute");
        }
    }

    /// A meter's tariff id and billing of the current period.
    pub fn meter_bill(&self, meter: MeterId) -> Option<(&str, &UserBilling)> {
        self.meter_bills
            .get(&meter)
            .map(|(id, billing)| (id.as_str(), billing))
    }

    /// The user's saving sessions.
    pub fn sessions(&self) -> &UserSessions {
        &self.sessions
    }

    /// The user's saving sessions, to enrol in one.
    pub fn sessions_mut(&mut self) -> &mut UserSessions {
        &mut self.sessions
    }

    /// The prepaid credit of the user's meters.
    pub fn credit(&self) -> &UserCredit {
        &self.credit
    }

    /// The prepaid credit, for commands.
    pub fn credit_mut(&mut self) -> &mut UserCredit {
        &mut self.credit
    }

    fn record(
        &mut self,
        priced: &mut Priced,
        user: UserId,
        id: String,
        at_ms: i64,
        body: UserEventBody,
    ) {
        self.last_event_seq += 1;
        let event = UserEvent {
            seq: self.last_event_seq,
            id,
            user,
            at_ms,
            body,
        };
        self.events.push_back(event.clone());
        while self.events.len() > MAX_KEPT_EVENTS {
            self.events.pop_front();
        }
        priced.events.push(event);
    }

    /// The tariff id and billing of the current period, if any usage was priced.
    pub fn current(&self) -> Option<(&str, &UserBilling)> {
        self.current
            .as_ref()
            .map(|(id, billing)| (id.as_str(), billing))
    }

    /// Closed bills, oldest first.
    pub fn closed(&self) -> &[ClosedBill] {
        &self.closed
    }

    /// Events after `after_seq`, oldest first, at most `limit`.
    pub fn events_after(&self, after_seq: u64, limit: usize) -> Vec<UserEvent> {
        self.events
            .iter()
            .filter(|event| event.seq > after_seq)
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use gridpulse_domain::TariffDefinition;
    use proptest::prelude::*;

    use super::*;

    /// Flat 0.50 GBP/kWh, no standing charge, periods from the 1st, in UTC.
    fn flat_tariff() -> Tariff {
        let definition: TariffDefinition = serde_json::from_str(
            r#"{"currency":"GBP","time_zone":"UTC","billing_period_start_day":1,
                "standing_charge_per_day":"0","energy":{"kind":"flat","rate_per_kwh":"0.50"}}"#,
        )
        .unwrap();
        definition.validate().unwrap()
    }

    const MAR_1: i64 = 1_740_787_200_000; // 2025-03-01T00:00:00Z
    const APR_1: i64 = 1_743_465_600_000; // 2025-04-01T00:00:00Z
    const MINUTE: i64 = 60_000;

    fn amount(text: &str) -> Amount {
        text.parse().unwrap()
    }

    fn thresholds(crossings: &[BudgetCrossing]) -> Vec<u8> {
        crossings.iter().map(|c| c.threshold.percent()).collect()
    }

    #[test]
    fn budget_thresholds_fire_once_per_period_and_restart_with_the_next() {
        let tariff = flat_tariff();
        let budget = Some(amount("10.00"));
        let mut billing = UserBilling::new(&tariff, MAR_1).unwrap();
        // 14 kWh = 7.00 (70 %), then 4 kWh more = 9.00 (90 %), then 2 kWh = 10.00 (100 %).
        let first = billing.apply(&tariff, MAR_1, 14_000.0, budget).unwrap();
        assert_eq!(thresholds(&first), [70]);
        assert_eq!(first[0].assessment.used_basis_points, 7_000);
        let none = billing.apply(&tariff, MAR_1 + MINUTE, 1.0, budget).unwrap();
        assert!(none.is_empty(), "70 % fires once: {none:?}");
        let both = billing
            .apply(&tariff, MAR_1 + 2 * MINUTE, 5_999.0, budget)
            .unwrap();
        assert_eq!(thresholds(&both), [90, 100]);
        assert_eq!(
            both[1]
                .assessment
                .projected_date_budget_reached
                .map(|d| d.to_string()),
            Some("2025-03-01".to_owned())
        );
        // The next period starts afresh: 70 % again.
        let april = billing.apply(&tariff, APR_1, 15_000.0, budget).unwrap();
        assert_eq!(thresholds(&april), [70]);
        assert_eq!(april[0].period.to_string(), "2025-04");
        // A late March minute changes nothing.
        assert!(
            billing
                .apply(&tariff, APR_1 - MINUTE, 50_000.0, budget)
                .unwrap()
                .is_empty()
        );
        assert_eq!(billing.n_late_minutes(), 1);
        let cost = billing.cost_to_date(&tariff, APR_1 + MINUTE).unwrap();
        assert_eq!(cost.total.to_string(), "7.50");
    }

    #[test]
    fn the_overrun_date_follows_the_daily_spend() {
        let tariff = flat_tariff();
        let mut billing = UserBilling::new(&tariff, MAR_1).unwrap();
        // 2.00 on each of the first 5 days: 10.00 so far, 2.00/day, budget 30.00 is
        // reached 10 days after the 5th.
        for day in 0..5 {
            billing
                .apply(&tariff, MAR_1 + day * 86_400_000, 4_000.0, None)
                .unwrap();
        }
        let assessment = billing
            .assess_budget(&tariff, amount("30.00"), MAR_1 + 4 * 86_400_000 + 1)
            .unwrap();
        assert_eq!(assessment.used_basis_points, 3_333);
        assert_eq!(
            assessment
                .projected_date_budget_reached
                .map(|d| d.to_string()),
            Some("2025-03-15".to_owned())
        );
    }

    proptest! {
        /// A crash replays applied minutes into a restored snapshot: whatever prefix the
        /// snapshot covered, the crossings reported overall are each threshold once.
        #[test]
        fn a_restored_snapshot_never_repeats_a_crossing(
            kwh in proptest::collection::vec(0u32..4_000, 1..40),
            snapshot_at in 0usize..40,
        ) {
            let tariff = flat_tariff();
            let budget = Some(amount("100.00"));
            let mut billing = UserBilling::new(&tariff, MAR_1).unwrap();
            let snapshot_at = snapshot_at.min(kwh.len());
            let (mut fired, mut fired_before_snapshot) = (Vec::new(), Vec::new());
            let mut snapshot = billing.clone();
            for (minute, wh) in kwh.iter().enumerate() {
                if minute == snapshot_at {
                    snapshot = billing.clone();
                    fired_before_snapshot = fired.clone();
                }
                let at = MAR_1 + minute as i64 * MINUTE;
                fired.extend(thresholds(&billing.apply(&tariff, at, f64::from(*wh), budget).unwrap()));
            }
            if snapshot_at == kwh.len() {
                snapshot = billing.clone();
                fired_before_snapshot = fired.clone();
            }
            // Each threshold once, exactly those the exact cost reached: 0.50/kWh is
            // 0.05 pence per Wh, rounded half up to the penny.
            let total_wh: u64 = kwh.iter().map(|&wh| u64::from(wh)).sum();
            let cost_pence = (total_wh * 5 + 50) / 100;
            let expected: Vec<u8> = [70u8, 90, 100]
                .into_iter()
                .filter(|&percent| cost_pence >= u64::from(percent) * 100)
                .collect();
            prop_assert_eq!(&fired, &expected);
            // The restored copy gets the minutes after its snapshot again (the user state
            // filters the earlier ones): it reports exactly what came after the snapshot.
            let mut restored: UserBilling =
                serde_json::from_slice(&serde_json::to_vec(&snapshot).unwrap()).unwrap();
            let mut reported = fired_before_snapshot;
            for (minute, wh) in kwh.iter().enumerate().skip(snapshot_at) {
                let at = MAR_1 + minute as i64 * MINUTE;
                reported.extend(thresholds(&restored.apply(&tariff, at, f64::from(*wh), budget).unwrap()));
            }
            prop_assert_eq!(&reported, &fired);
            prop_assert_eq!(restored, billing);
        }
    }
}
