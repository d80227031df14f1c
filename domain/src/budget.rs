//! Budgets: how much of a monthly budget is used, when it will run out, and which of
//! the 70/90/100 % alerts are due — exactly once per billing period.
//!
//! [`assess_budget`] is a pure function of the budget, the spend so far and a projected
//! daily spend (from the forecast): exact integer comparisons decide the thresholds, so
//! 70 % of a budget is crossed at exactly 70 %, never a float's idea of it.
//! [`BudgetState`] is the small record a user actor snapshots so that an alert fires
//! once per period: fed the same or older data again (a replay after a crash, a
//! restart), it returns nothing new.

use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::money::Amount;
use crate::tariff::{BillingPeriod, BillingPeriodId, LocalDate};

/// A budget alert level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum BudgetThreshold {
    /// 70 % of the budget spent.
    #[serde(rename = "70")]
    SeventyPercent,
    /// 90 % of the budget spent.
    #[serde(rename = "90")]
    NinetyPercent,
    /// The whole budget spent.
    #[serde(rename = "100")]
    HundredPercent,
}

impl BudgetThreshold {
    /// Every threshold, lowest first.
    pub const ALL: [BudgetThreshold; 3] = [
        BudgetThreshold::SeventyPercent,
        BudgetThreshold::NinetyPercent,
        BudgetThreshold::HundredPercent,
    ];

    /// The threshold in percent of the budget.
    pub fn percent(self) -> u8 {
        match self {
            BudgetThreshold::SeventyPercent => 70,
            BudgetThreshold::NinetyPercent => 90,
            BudgetThreshold::HundredPercent => 100,
        }
    }
}

/// Why a budget cannot be assessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BudgetError {
    /// The budget must be greater than zero.
    BudgetNotPositive {
        /// The budget given.
        budget: Amount,
    },
    /// The projected daily spend must not be negative.
    NegativeDailySpend {
        /// The value given.
        daily_spend: Amount,
    },
    /// `today` is not a day of the billing period.
    TodayOutsidePeriod {
        /// The date given.
        today: LocalDate,
    },
}

impl fmt::Display for BudgetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetError::BudgetNotPositive { budget } => {
                write!(f, "`budget` must be greater than 0, got {budget}")
            }
            BudgetError::NegativeDailySpend { daily_spend } => write!(
                f,
                "`projected_daily_spend` must not be negative, got {daily_spend}"
            ),
            BudgetError::TodayOutsidePeriod { today } => {
                write!(f, "{today} is not a day of the billing period")
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BudgetError {}

/// Where a budget stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BudgetAssessment {
    /// Spend so far in basis points of the budget (10 000 = 100 %), rounded down;
    /// negative after a net credit.
    pub used_basis_points: i64,
    /// The thresholds the spend so far has reached, lowest first.
    pub thresholds_reached: Vec<BudgetThreshold>,
    /// Spend so far plus the daily spend for each day left after today.
    pub projected_spend_at_period_end: Amount,
    /// The local date the budget is projected to be used up: today if it already is;
    /// otherwise the first day after today by whose end the daily spend reaches it;
    /// none if that is not within the period (or nothing is being spent).
    pub projected_date_budget_reached: Option<LocalDate>,
}

/// Assesses `spent_so_far` (including today's spend so far) against `budget` for
/// `period`, projecting `projected_daily_spend` for each day after `today`.
pub fn assess_budget(
    budget: Amount,
    spent_so_far: Amount,
    projected_daily_spend: Amount,
    today: LocalDate,
    period: &BillingPeriod,
) -> Result<BudgetAssessment, BudgetError> {
    if budget <= Amount::ZERO {
        return Err(BudgetError::BudgetNotPositive { budget });
    }
    if projected_daily_spend.is_negative() {
        return Err(BudgetError::NegativeDailySpend {
            daily_spend: projected_daily_spend,
        });
    }
    if today < period.start_date || today >= period.end_date {
        return Err(BudgetError::TodayOutsidePeriod { today });
    }
    // Amounts are within ±10²⁷ micro units, so × 10 000 stays inside i128.
    let (budget_micro, spent_micro) = (budget.micro_units(), spent_so_far.micro_units());
    let used_basis_points = (spent_micro * 10_000).div_euclid(budget_micro);
    let used_basis_points = i64::try_from(used_basis_points).unwrap_or(if used_basis_points < 0 {
        i64::MIN
    } else {
        i64::MAX
    });
    let thresholds_reached = BudgetThreshold::ALL
        .into_iter()
        .filter(|threshold| spent_micro * 100 >= budget_micro * i128::from(threshold.percent()))
        .collect();
    // Days of the period after today (0 on its last day).
    let days_left = today.days_until(period.end_date) - 1;
    let daily_micro = projected_daily_spend.micro_units();
    let projected_micro = spent_micro.saturating_add(daily_micro * i128::from(days_left));
    let projected_spend_at_period_end = Amount::from_micro_units(projected_micro.clamp(
        -crate::money::MAX_AMOUNT_MICRO_UNITS,
        crate::money::MAX_AMOUNT_MICRO_UNITS,
    ))
    .unwrap_or(Amount::ZERO);
    let projected_date_budget_reached = if spent_micro >= budget_micro {
        Some(today)
    } else if daily_micro > 0 {
        let missing = budget_micro - spent_micro;
        let days_needed = (missing + daily_micro - 1) / daily_micro;
        i64::try_from(days_needed)
            .ok()
            .filter(|&days| days <= days_left)
            .and_then(|days| today.plus_days(days))
    } else {
        None
    };
    Ok(BudgetAssessment {
        used_basis_points,
        thresholds_reached,
        projected_spend_at_period_end,
        projected_date_budget_reached,
    })
}

/// Which budget thresholds already fired in which billing period: the once-per-period
/// bookkeeping a user actor snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetState {
    /// The latest period seen (none before the first assessment).
    period: Option<BillingPeriodId>,
    /// Thresholds fired in that period, lowest first.
    fired: Vec<BudgetThreshold>,
}

impl BudgetState {
    /// Records the thresholds `reached` in `period` and returns those that had not yet
    /// fired in it: each threshold is returned at most once per period. A later period
    /// starts afresh; an earlier one (stale or replayed data) returns nothing.
    pub fn newly_reached_thresholds(
        &mut self,
        period: BillingPeriodId,
        reached: &[BudgetThreshold],
    ) -> Vec<BudgetThreshold> {
        match self.period {
            Some(current) if period < current => return Vec::new(),
            Some(current) if period == current => {}
            _ => {
                self.period = Some(period);
                self.fired.clear();
            }
        }
        let mut newly = Vec::new();
        for &threshold in reached {
            if !self.fired.contains(&threshold) && !newly.contains(&threshold) {
                newly.push(threshold);
            }
        }
        self.fired.extend_from_slice(&newly);
        self.fired.sort_unstable();
        newly.sort_unstable();
        newly
    }

    /// The latest period seen.
    pub fn period(&self) -> Option<BillingPeriodId> {
        self.period
    }

    /// The thresholds fired in [`BudgetState::period`], lowest first.
    pub fn fired_thresholds(&self) -> &[BudgetThreshold] {
        &self.fired
    }
}
