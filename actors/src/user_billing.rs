//! A user's money over the current billing period: cost by tariff and budget thresholds.
//!
//! Plain data beside [`UserState`](crate::user_state::UserState), for the user actor to
//! feed with every usage delta it applied (replays are filtered before, by
//! (meter, minute)) and the user's tariff. Everything follows event time: the period is
//! the one containing the newest minute, so a replay after a crash reproduces the same
//! costs and the same budget crossings, and the [`BudgetState`] inside (part of the
//! user's snapshot) reports each of 70/90/100 % once per billing period. A minute of a
//! period already closed is counted as late and changes nothing.

use gridpulse_domain::{
    Amount, BillAccumulator, BillError, BillingPeriodId, BudgetAssessment, BudgetError,
    BudgetState, BudgetThreshold, CostBreakdown, Tariff, assess_budget,
};
use serde::{Deserialize, Serialize};

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
