//! The streaming cost engine: energy deltas in, itemised costs out.
//!
//! A user actor feeds its [`BillAccumulator`] every closed usage minute (meter energy in
//! Wh, an `f64`). At this edge the energy becomes an exact integer of milliwatt-hours
//! (rounded to the nearest mWh, half away from zero: at most 0.5 mWh per minute, under
//! 22 Wh in a 31-day month), and from then on everything is integer arithmetic.
//!
//! The accumulator keeps, for each local day of the billing period, the energy per
//! *pricing slot* (one slot for flat and tiered tariffs; one per time-of-use band plus
//! the default rate). Sums commute, so the result does not depend on the order deltas
//! arrive in. Tiers are priced by **event time**, not arrival order: the kWh of the
//! period are laid out day by day, and tier costs are a piecewise-linear function of
//! the period's cumulative energy. A whole-period bill depends only on the period total;
//! the cost of one day is the tier cost of the energy up to the end of that day minus
//! that of the energy before it; both are order-independent. Energy of another period is
//! refused ([`BillError::InstantOutsidePeriod`]): the caller starts a new accumulator
//! for the new period, which is how tiers reset.
//!
//! Costs are exact until presentation: each line (tier, band, standing charge) is
//! rounded once, from its exact value, to the currency's minor unit (half away from
//! zero), and the total is the sum of the rounded lines, so a bill always adds up.

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;
use core::ops::Range;

use serde::{Deserialize, Serialize};

use crate::money::{Amount, Currency, Money, divide_rounding_half_away_from_zero};
use crate::tariff::{
    BillingPeriod, BillingPeriodId, CalendarError, EnergyPricing, LocalDate, Tariff,
};

/// Milliwatt-hours in one kWh.
pub const MILLIWATT_HOURS_PER_KWH: i64 = 1_000_000;

/// The largest energy one delta may carry: 1 GWh (10¹² mWh). Anything above is a
/// broken meter, not consumption.
pub const MAX_ENERGY_PER_DELTA_MILLIWATT_HOURS: i64 = 1_000_000_000_000;

/// The most energy one accumulator holds: 100 GWh per billing period. It bounds every
/// cost product far inside `i128`.
pub const MAX_ENERGY_PER_PERIOD_MILLIWATT_HOURS: i64 = 100_000_000_000_000;

/// An exact quantity of energy in milliwatt-hours. Displays and serializes as exact kWh
/// (`"12.345"`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Energy {
    milliwatt_hours: i64,
}

/// Why a meter's energy value was refused at the edge.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EnergyError {
    /// NaN or infinite.
    NotFinite,
    /// Below zero (after rounding to the mWh).
    Negative {
        /// The value given, Wh.
        watt_hours: f64,
    },
    /// Above [`MAX_ENERGY_PER_DELTA_MILLIWATT_HOURS`].
    TooLarge {
        /// The value given, Wh.
        watt_hours: f64,
    },
}

impl fmt::Display for EnergyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnergyError::NotFinite => write!(f, "energy must be a finite number of Wh"),
            EnergyError::Negative { watt_hours } => {
                write!(f, "energy must not be negative, got {watt_hours} Wh")
            }
            EnergyError::TooLarge { watt_hours } => write!(
                f,
                "energy {watt_hours} Wh in one delta is implausible (at most 1 GWh)"
            ),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for EnergyError {}

impl Energy {
    /// No energy.
    pub const ZERO: Energy = Energy { milliwatt_hours: 0 };

    /// `milliwatt_hours` mWh.
    pub const fn from_milliwatt_hours(milliwatt_hours: i64) -> Energy {
        Energy { milliwatt_hours }
    }

    /// `kilowatt_hours` whole kWh.
    pub const fn from_kilowatt_hours(kilowatt_hours: u32) -> Energy {
        Energy {
            milliwatt_hours: kilowatt_hours as i64 * MILLIWATT_HOURS_PER_KWH,
        }
    }

    /// A meter's energy in Wh as an exact quantity, rounded to the nearest mWh (half
    /// away from zero). Refuses NaN, infinities, negative values and more than 1 GWh.
    pub fn from_meter_watt_hours(watt_hours: f64) -> Result<Energy, EnergyError> {
        if !watt_hours.is_finite() {
            return Err(EnergyError::NotFinite);
        }
        let milliwatt_hours = round_half_away_from_zero(watt_hours * 1000.0);
        if milliwatt_hours < 0.0 {
            return Err(EnergyError::Negative { watt_hours });
        }
        if milliwatt_hours > MAX_ENERGY_PER_DELTA_MILLIWATT_HOURS as f64 {
            return Err(EnergyError::TooLarge { watt_hours });
        }
        // In range 0..=10^12, exactly representable: the cast is exact.
        Ok(Energy {
            milliwatt_hours: milliwatt_hours as i64,
        })
    }

    /// The energy in mWh.
    pub const fn milliwatt_hours(self) -> i64 {
        self.milliwatt_hours
    }
}

/// `f64::round` (half away from zero), which `core` lacks without `std`; exact for
/// magnitudes below 2^63 (energy deltas, timestamps).
pub(crate) fn round_half_away_from_zero(value: f64) -> f64 {
    let truncated = value as i64 as f64; // saturating; callers bound the result
    let fraction = value - truncated;
    if fraction >= 0.5 {
        truncated + 1.0
    } else if fraction <= -0.5 {
        truncated - 1.0
    } else {
        truncated
    }
}

impl fmt::Display for Energy {
    /// Exact kWh, trailing zeros trimmed: `12.345`, `0.000001`, `3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        crate::money::write_decimal(
            f,
            self.milliwatt_hours < 0,
            u128::from(self.milliwatt_hours.unsigned_abs()),
            6,
            true,
        )
    }
}

impl fmt::Debug for Energy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Energy({self} kWh)")
    }
}

impl Serialize for Energy {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The exact cost of `energy` at `rate_per_kwh`, rounded once to `currency`'s minor
/// unit (half away from zero).
pub fn cost_of_energy(energy: Energy, rate_per_kwh: Amount, currency: Currency) -> Money {
    // micro units × mWh / 10⁶ = micro units; / 10^(6 − digits) = minor units. Products
    // stay below 10¹⁴ mWh × 10¹² µ-units/kWh = 10²⁶ for validated tariffs, far inside
    // i128; saturate rather than wrap for anything built by hand.
    let numerator = i128::from(energy.milliwatt_hours).saturating_mul(rate_per_kwh.micro_units());
    let denominator = 10_i128.pow(12 - u32::from(currency.minor_unit_digits()));
    Money::from_minor_units(
        divide_rounding_half_away_from_zero(numerator, denominator),
        currency,
    )
}

/// Why energy could not be added or a cost computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum BillError {
    /// The meter's energy value was refused.
    InvalidEnergy(EnergyError),
    /// The instant is not in this accumulator's billing period.
    InstantOutsidePeriod {
        /// The instant, Unix ms.
        utc_ms: i64,
        /// The accumulator's period.
        period: BillingPeriodId,
    },
    /// The local date is not in this accumulator's billing period.
    DateOutsidePeriod {
        /// The date asked for.
        date: LocalDate,
        /// The accumulator's period.
        period: BillingPeriodId,
    },
    /// The period would hold more than [`MAX_ENERGY_PER_PERIOD_MILLIWATT_HOURS`].
    PeriodEnergyLimitExceeded,
    /// The accumulator was made for another tariff (different pricing slots or period
    /// length), e.g. the tariff changed mid-period or a snapshot is corrupt.
    TariffDoesNotMatch,
    /// The instant is outside the supported calendar.
    Calendar(CalendarError),
}

impl fmt::Display for BillError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BillError::InvalidEnergy(error) => write!(f, "{error}"),
            BillError::InstantOutsidePeriod { utc_ms, period } => {
                write!(f, "instant {utc_ms} ms is outside billing period {period}")
            }
            BillError::DateOutsidePeriod { date, period } => {
                write!(f, "date {date} is outside billing period {period}")
            }
            BillError::PeriodEnergyLimitExceeded => write!(
                f,
                "billing period energy would exceed 100 GWh: refusing implausible usage"
            ),
            BillError::TariffDoesNotMatch => {
                write!(f, "the accumulated usage was priced for another tariff")
            }
            BillError::Calendar(error) => write!(f, "{error}"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BillError {}

impl From<CalendarError> for BillError {
    fn from(error: CalendarError) -> Self {
        BillError::Calendar(error)
    }
}

/// What one energy line of a breakdown prices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EnergyLineItem {
    /// The single rate of a flat tariff.
    Flat,
    /// A tier of a block tariff: the kWh of the period from `from_kwh` up to
    /// `up_to_kwh` (none for the last tier).
    Tier {
        /// 1-based tier number.
        number: u32,
        /// Lower bound, kWh of the period.
        from_kwh: u32,
        /// Upper bound, kWh of the period; none for the last tier.
        up_to_kwh: Option<u32>,
    },
    /// A time-of-use band.
    Band {
        /// The band's name.
        name: String,
    },
    /// Time no band covers, at the default rate.
    DefaultRate,
}

/// One energy line: how much, at what rate, for how much.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnergyLine {
    /// What the line prices.
    pub item: EnergyLineItem,
    /// Energy on the line (serialized as `energy_kwh`).
    #[serde(rename = "energy_kwh")]
    pub energy: Energy,
    /// Price per kWh.
    pub rate_per_kwh: Amount,
    /// `energy × rate`, rounded once to the minor unit.
    pub cost: Money,
}

/// The standing charge line: local days × the daily charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StandingChargeLine {
    /// Local calendar days charged (a 23- or 25-hour DST day is one day).
    pub days: u32,
    /// Charge per day.
    pub rate_per_day: Amount,
    /// `days × rate`, rounded once to the minor unit.
    pub cost: Money,
}

/// An itemised cost over local days `[from_date, until_date)` of one billing period:
/// every tier or band of the tariff (zero lines included, in tariff order, the default
/// rate last), the standing charge, and the total = sum of the rounded lines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CostBreakdown {
    /// Currency of every amount.
    pub currency: Currency,
    /// The billing period.
    pub period: BillingPeriodId,
    /// First local day covered.
    pub from_date: LocalDate,
    /// Local day after the last one covered.
    pub until_date: LocalDate,
    /// All energy priced (serialized as `energy_kwh`).
    #[serde(rename = "energy_kwh")]
    pub energy: Energy,
    /// Energy lines.
    pub energy_lines: Vec<EnergyLine>,
    /// The standing charge.
    pub standing_charge: StandingChargeLine,
    /// Sum of the rounded line costs.
    pub total: Money,
}

/// The usage of one billing period, by local day and pricing slot: what costs are
/// computed from. Serializable, so a user actor can snapshot it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BillAccumulator {
    period: BillingPeriod,
    pricing_slots: usize,
    /// `days × pricing_slots` mWh, day-major.
    energy_by_day_and_slot: Vec<i64>,
}

impl BillAccumulator {
    /// An empty accumulator for `period` of `tariff`.
    pub fn new(tariff: &Tariff, period: BillingPeriod) -> BillAccumulator {
        let pricing_slots = tariff.pricing_slot_count();
        BillAccumulator {
            period,
            pricing_slots,
            energy_by_day_and_slot: vec![0; period.days() as usize * pricing_slots],
        }
    }

    /// An empty accumulator for the period of `tariff` containing `utc_ms`.
    pub fn for_period_containing(
        tariff: &Tariff,
        utc_ms: i64,
    ) -> Result<BillAccumulator, BillError> {
        Ok(BillAccumulator::new(
            tariff,
            tariff.billing_period_containing(utc_ms)?,
        ))
    }

    /// The billing period accumulated.
    pub fn period(&self) -> &BillingPeriod {
        &self.period
    }

    /// Energy used in the period so far (the tier position).
    pub fn energy_in_period(&self) -> Energy {
        Energy::from_milliwatt_hours(saturating_sum(&self.energy_by_day_and_slot))
    }

    /// Adds a meter's usage minute: `minute_utc_ms` its start, `energy_wh` from the
    /// meter (converted to exact mWh here).
    pub fn add_meter_energy(
        &mut self,
        tariff: &Tariff,
        minute_utc_ms: i64,
        energy_wh: f64,
    ) -> Result<(), BillError> {
        let energy = Energy::from_meter_watt_hours(energy_wh).map_err(BillError::InvalidEnergy)?;
        self.add_energy(tariff, minute_utc_ms, energy)
    }

    /// Adds exact `energy` used at instant `utc_ms` (priced by the local time of that
    /// instant). Nothing changes on error.
    pub fn add_energy(
        &mut self,
        tariff: &Tariff,
        utc_ms: i64,
        energy: Energy,
    ) -> Result<(), BillError> {
        self.check_matches(tariff)?;
        if !self.period.contains(utc_ms) {
            return Err(BillError::InstantOutsidePeriod {
                utc_ms,
                period: self.period.id,
            });
        }
        let added = energy.milliwatt_hours();
        let watt_hours = added as f64 / 1000.0;
        if added < 0 {
            return Err(BillError::InvalidEnergy(EnergyError::Negative {
                watt_hours,
            }));
        }
        if added > MAX_ENERGY_PER_DELTA_MILLIWATT_HOURS {
            return Err(BillError::InvalidEnergy(EnergyError::TooLarge {
                watt_hours,
            }));
        }
        if self.energy_in_period().milliwatt_hours() + added > MAX_ENERGY_PER_PERIOD_MILLIWATT_HOURS
        {
            return Err(BillError::PeriodEnergyLimitExceeded);
        }
        let (date, minute_of_day) = tariff.local_date_and_minute(utc_ms)?;
        let slot = tariff.pricing_slot(date, minute_of_day);
        let index = self.day_index(date)? * self.pricing_slots + slot;
        let cell = self
            .energy_by_day_and_slot
            .get_mut(index)
            .ok_or(BillError::TariffDoesNotMatch)?;
        *cell += added;
        Ok(())
    }

    /// The bill of the whole period: every day's standing charge, all energy.
    pub fn bill_for_whole_period(&self, tariff: &Tariff) -> Result<CostBreakdown, BillError> {
        self.check_matches(tariff)?;
        Ok(self.breakdown(tariff, 0..self.days(), Energy::ZERO))
    }

    /// Live cost of the period up to and including the local day of `as_of_utc_ms`
    /// (standing charge for those days); the whole period once `as_of` is past its end.
    pub fn cost_of_period_to_date(
        &self,
        tariff: &Tariff,
        as_of_utc_ms: i64,
    ) -> Result<CostBreakdown, BillError> {
        self.check_matches(tariff)?;
        if as_of_utc_ms < self.period.start_utc_ms {
            return Err(BillError::InstantOutsidePeriod {
                utc_ms: as_of_utc_ms,
                period: self.period.id,
            });
        }
        let last_day = if as_of_utc_ms >= self.period.end_utc_ms {
            self.days()
        } else {
            self.day_index(tariff.local_date(as_of_utc_ms)?)? + 1
        };
        Ok(self.breakdown(tariff, 0..last_day, Energy::ZERO))
    }

    /// Cost of one local day of the period ("today"): its energy (tiers priced by the
    /// day's position in the period) and one day of standing charge.
    pub fn cost_of_local_day(
        &self,
        tariff: &Tariff,
        date: LocalDate,
    ) -> Result<CostBreakdown, BillError> {
        self.check_matches(tariff)?;
        let day = self.day_index(date)?;
        Ok(self.breakdown(tariff, day..day + 1, Energy::ZERO))
    }

    /// The bill estimated at the period end if `projected_remaining` more energy is
    /// used: tiers priced on the projected total; for time of use the projection is
    /// spread over the bands in the proportions used so far (all at the default rate
    /// when nothing is used yet); standing charge for every day of the period.
    pub fn estimate_at_period_end(
        &self,
        tariff: &Tariff,
        projected_remaining: Energy,
    ) -> Result<CostBreakdown, BillError> {
        self.check_matches(tariff)?;
        let remaining = projected_remaining.milliwatt_hours();
        if remaining < 0 {
            return Err(BillError::InvalidEnergy(EnergyError::Negative {
                watt_hours: remaining as f64 / 1000.0,
            }));
        }
        if self.energy_in_period().milliwatt_hours() + remaining.min(i64::MAX / 2)
            > MAX_ENERGY_PER_PERIOD_MILLIWATT_HOURS
        {
            return Err(BillError::PeriodEnergyLimitExceeded);
        }
        Ok(self.breakdown(tariff, 0..self.days(), projected_remaining))
    }

    fn days(&self) -> usize {
        self.period.days() as usize
    }

    fn check_matches(&self, tariff: &Tariff) -> Result<(), BillError> {
        let slots = tariff.pricing_slot_count();
        if slots != self.pricing_slots || self.energy_by_day_and_slot.len() != self.days() * slots {
            return Err(BillError::TariffDoesNotMatch);
        }
        Ok(())
    }

    fn day_index(&self, date: LocalDate) -> Result<usize, BillError> {
        usize::try_from(self.period.start_date.days_until(date))
            .ok()
            .filter(|&day| day < self.days())
            .ok_or(BillError::DateOutsidePeriod {
                date,
                period: self.period.id,
            })
    }

    /// Energy per slot summed over `days`.
    fn energy_per_slot(&self, days: Range<usize>) -> Vec<i64> {
        let mut per_slot = vec![0_i64; self.pricing_slots];
        let cells = self
            .energy_by_day_and_slot
            .get(days.start * self.pricing_slots..days.end * self.pricing_slots)
            .unwrap_or(&[]);
        for day in cells.chunks_exact(self.pricing_slots.max(1)) {
            for (total, energy) in per_slot.iter_mut().zip(day) {
                *total = total.saturating_add(*energy);
            }
        }
        per_slot
    }

    /// The breakdown of local days `days` (standing charge for each), plus `extra`
    /// projected energy.
    fn breakdown(&self, tariff: &Tariff, days: Range<usize>, extra: Energy) -> CostBreakdown {
        let currency = tariff.currency();
        let mut per_slot = self.energy_per_slot(days.clone());
        spread_proportionally(&mut per_slot, extra.milliwatt_hours());
        let energy_before = saturating_sum(&self.energy_per_slot(0..days.start));
        let line = |item: EnergyLineItem, milliwatt_hours: i64, rate_per_kwh: Amount| {
            let energy = Energy::from_milliwatt_hours(milliwatt_hours);
            EnergyLine {
                item,
                energy,
                rate_per_kwh,
                cost: cost_of_energy(energy, rate_per_kwh, currency),
            }
        };
        let energy_lines: Vec<EnergyLine> = match &tariff.pricing {
            EnergyPricing::Flat { rate_per_kwh } => {
                vec![line(EnergyLineItem::Flat, per_slot[0], *rate_per_kwh)]
            }
            EnergyPricing::Tiered { tiers } => {
                let (from, until) = (energy_before, energy_before + per_slot[0]);
                tiers
                    .iter()
                    .zip(1..)
                    .map(|(tier, number)| {
                        let overlap =
                            until.min(tier.upper_bound_mwh()) - from.max(tier.lower_bound_mwh());
                        line(
                            EnergyLineItem::Tier {
                                number,
                                from_kwh: tier.from_kwh,
                                up_to_kwh: tier.up_to_kwh,
                            },
                            overlap.max(0),
                            tier.rate_per_kwh,
                        )
                    })
                    .collect()
            }
            EnergyPricing::TimeOfUse {
                default_rate_per_kwh,
                bands,
            } => bands
                .iter()
                .zip(&per_slot)
                .map(|(band, &energy)| {
                    line(
                        EnergyLineItem::Band {
                            name: band.name.clone(),
                        },
                        energy,
                        band.rate_per_kwh,
                    )
                })
                .chain(core::iter::once(line(
                    EnergyLineItem::DefaultRate,
                    per_slot[bands.len()],
                    *default_rate_per_kwh,
                )))
                .collect(),
        };
        let standing_days = (days.end - days.start) as u32;
        let rate_per_day = tariff.standing_charge_per_day();
        let standing_charge = StandingChargeLine {
            days: standing_days,
            rate_per_day,
            cost: Money::from_minor_units(
                divide_rounding_half_away_from_zero(
                    rate_per_day.micro_units() * i128::from(standing_days),
                    10_i128.pow(6 - u32::from(currency.minor_unit_digits())),
                ),
                currency,
            ),
        };
        let total = energy_lines
            .iter()
            .fold(standing_charge.cost, |sum, line| sum.plus(line.cost));
        let date = |day: usize| {
            self.period
                .start_date
                .plus_days(day as i64)
                .unwrap_or(self.period.end_date)
        };
        CostBreakdown {
            currency,
            period: self.period.id,
            from_date: date(days.start),
            until_date: date(days.end),
            energy: Energy::from_milliwatt_hours(saturating_sum(&per_slot)),
            energy_lines,
            standing_charge,
            total,
        }
    }
}

/// Σ mWh, saturating (only a corrupt snapshot could come near `i64`'s limits).
fn saturating_sum(values: &[i64]) -> i64 {
    values
        .iter()
        .fold(0, |sum: i64, value| sum.saturating_add(*value))
}

/// Adds `extra` to the slots in proportion to what they hold (floor shares, the
/// remainder to the largest slot; everything to the last slot — the default rate —
/// when all are empty).
fn spread_proportionally(per_slot: &mut [i64], extra: i64) {
    if extra == 0 || per_slot.is_empty() {
        return;
    }
    let total = saturating_sum(per_slot);
    if total == 0 {
        if let Some(last) = per_slot.last_mut() {
            *last += extra;
        }
        return;
    }
    let largest = per_slot
        .iter()
        .enumerate()
        .max_by_key(|&(index, slot)| (*slot, core::cmp::Reverse(index)))
        .map_or(0, |(index, _)| index);
    let mut given = 0;
    for slot in per_slot.iter_mut() {
        // share ≤ extra, so it fits an i64.
        let share = (i128::from(extra) * i128::from(*slot) / i128::from(total)) as i64;
        given += share;
        *slot += share;
    }
    per_slot[largest] += extra - given;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(watt_hours: f64, expected: Result<i64, EnergyError>) {
        assert_eq!(
            Energy::from_meter_watt_hours(watt_hours).map(Energy::milliwatt_hours),
            expected,
            "{watt_hours}"
        );
    }

    #[test]
    fn meter_energy_becomes_exact_milliwatt_hours() {
        check(0.0, Ok(0));
        check(-0.0, Ok(0));
        check(12.3456, Ok(12_346));
        check(0.0005, Ok(1));
        check(0.00049, Ok(0));
        check(-0.0004, Ok(0));
        check(1.0e9, Ok(1_000_000_000_000));
        check(-0.001, Err(EnergyError::Negative { watt_hours: -0.001 }));
        check(f64::NAN, Err(EnergyError::NotFinite));
        check(f64::INFINITY, Err(EnergyError::NotFinite));
        check(
            1.0e9 + 1.0,
            Err(EnergyError::TooLarge {
                watt_hours: 1.0e9 + 1.0,
            }),
        );
        check(
            1.0e300,
            Err(EnergyError::TooLarge {
                watt_hours: 1.0e300,
            }),
        );
    }

    #[test]
    fn energy_displays_exact_kwh() {
        assert_eq!(
            alloc::string::ToString::to_string(&Energy::from_milliwatt_hours(12_345_000)),
            "12.345"
        );
        assert_eq!(
            alloc::string::ToString::to_string(&Energy::from_kilowatt_hours(3)),
            "3"
        );
        assert_eq!(
            alloc::string::ToString::to_string(&Energy::from_milliwatt_hours(1)),
            "0.000001"
        );
    }

    #[test]
    fn costs_round_once_from_the_exact_product() {
        let gbp = Currency::from_code("GBP").unwrap();
        let rate = Amount::parse("0.245").unwrap();
        // 1 kWh × 0.245 = 0.245 → 0.25 (half away from zero).
        assert_eq!(
            cost_of_energy(Energy::from_kilowatt_hours(1), rate, gbp).minor_units(),
            25
        );
        // The exact product decides, however close to a half penny.
        assert_eq!(
            cost_of_energy(Energy::from_milliwatt_hours(20_408), rate, gbp).minor_units(),
            0
        );
        assert_eq!(
            cost_of_energy(Energy::from_milliwatt_hours(20_409), rate, gbp).minor_units(),
            1
        );
        let jpy = Currency::from_code("JPY").unwrap();
        assert_eq!(
            cost_of_energy(
                Energy::from_kilowatt_hours(3),
                Amount::parse("30.5").unwrap(),
                jpy
            )
            .minor_units(),
            92
        );
    }

    #[test]
    fn projections_spread_in_proportion_and_keep_every_milliwatt_hour() {
        let mut slots = [300, 100, 0];
        spread_proportionally(&mut slots, 1001);
        assert_eq!(slots, [300 + 751, 100 + 250, 0]);
        let mut empty = [0, 0, 0];
        spread_proportionally(&mut empty, 7);
        assert_eq!(empty, [0, 0, 7]);
    }
}
