//! Tariffs: how energy becomes money, and the local calendar they are defined in.
//!
//! A tariff is stored and exchanged as a [`TariffDefinition`] (serde, unknown keys
//! refused) and used as a [`Tariff`], which only [`TariffDefinition::validate`] makes:
//! every rule below is checked once, with a [`TariffError`] naming the field, so the
//! cost engine never meets a bad tariff.
//!
//! * **Energy pricing** is one of: *flat* (one rate per kWh); *tiered* (block) — tiers
//!   ordered by their upper bound in whole kWh per billing period, the last unbounded,
//!   the position restarting at each period start; *time of use* — named bands of local
//!   wall-clock time `[start, end)` on a set of weekdays, with a required
//!   `default_rate_per_kwh` for any minute no band covers (full coverage is not
//!   required: the default is the "everything else" rate real TOU tariffs have).
//!   Bands may not overlap (same weekday, intersecting times) and do not wrap past
//!   midnight: a night band is written as `23:00–24:00` plus `00:00–07:00`.
//! * **Standing charge** per local calendar day.
//! * **Billing period**: monthly, starting on day-of-month 1..=28 at local midnight.
//!
//! All local time is in the tariff's IANA time zone, from the tz database bundled into
//! the binary (`jiff` with `tzdb-bundle-always`: no `/usr/share/zoneinfo` needed, and
//! every machine agrees). DST needs no special case: a minute belongs to the band its
//! *local wall-clock* time falls in, so on the 23-hour spring day a band of the skipped
//! hour gets nothing and on the 25-hour autumn day a band of the repeated hour gets
//! two hours; a day is one day of standing charge however long it is. A local midnight
//! that does not exist (a DST gap at midnight, as in some zones) starts at the first
//! instant after the gap.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::{Deserialize, Serialize};

use crate::money::{Amount, Currency, MoneyError};

/// The largest rate or standing charge a tariff accepts: 10⁶ units (per kWh or per
/// day). Far above any real price; it bounds every cost product.
pub const MAX_TARIFF_RATE_MICRO_UNITS: i128 = 1_000_000_000_000;

/// The last day of the month a billing period may start on (every month has it).
pub const LATEST_BILLING_PERIOD_START_DAY: u8 = 28;

/// Minutes in a (wall-clock) day.
const MINUTES_PER_DAY: u16 = 24 * 60;

/// Earliest and latest years of the supported calendar (inside the tz crate's range,
/// with room for the next period).
const MIN_YEAR: i16 = 1;
const MAX_YEAR: i16 = 9998;

// ---------------------------------------------------------------------------------
// Local calendar
// ---------------------------------------------------------------------------------

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Weekday {
    /// Monday.
    #[serde(rename = "mon")]
    Monday,
    /// Tuesday.
    #[serde(rename = "tue")]
    Tuesday,
    /// Wednesday.
    #[serde(rename = "wed")]
    Wednesday,
    /// Thursday.
    #[serde(rename = "thu")]
    Thursday,
    /// Friday.
    #[serde(rename = "fri")]
    Friday,
    /// Saturday.
    #[serde(rename = "sat")]
    Saturday,
    /// Sunday.
    #[serde(rename = "sun")]
    Sunday,
}

impl Weekday {
    /// Every weekday, Monday first.
    pub const ALL: [Weekday; 7] = [
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A local calendar date (proleptic Gregorian, years 1..=9998).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LocalDate {
    year: i16,
    month: u8,
    day: u8,
}

impl LocalDate {
    /// The date, if it exists and is within years 1..=9998.
    pub fn new(year: i16, month: u8, day: u8) -> Option<LocalDate> {
        let valid = (MIN_YEAR..=MAX_YEAR).contains(&year)
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month);
        valid.then_some(LocalDate { year, month, day })
    }

    /// The year.
    pub fn year(&self) -> i16 {
        self.year
    }

    /// The month, 1..=12.
    pub fn month(&self) -> u8 {
        self.month
    }

    /// The day of the month, 1..=31.
    pub fn day(&self) -> u8 {
        self.day
    }

    /// The day of the week.
    pub fn weekday(&self) -> Weekday {
        // 1970-01-01 was a Thursday (index 3 from Monday).
        Weekday::ALL[(self.days_since_epoch() + 3).rem_euclid(7) as usize]
    }

    /// The date `days` later (earlier when negative), if within the supported range.
    pub fn plus_days(&self, days: i64) -> Option<LocalDate> {
        let target = self.days_since_epoch().checked_add(days)?;
        // Bound before converting so the civil arithmetic cannot overflow.
        if !(-719_162..=2_932_531).contains(&target) {
            return None;
        }
        let (year, month, day) = civil_from_days(target);
        LocalDate::new(i16::try_from(year).ok()?, month, day)
    }

    /// Days from `self` to `later` (negative if `later` is earlier).
    pub fn days_until(&self, later: LocalDate) -> i64 {
        later.days_since_epoch() - self.days_since_epoch()
    }

    /// Days since 1970-01-01 (Howard Hinnant's `days_from_civil`).
    fn days_since_epoch(&self) -> i64 {
        let (month, day) = (i64::from(self.month), i64::from(self.day));
        let year = i64::from(self.year) - i64::from(month <= 2);
        let era = year.div_euclid(400);
        let year_of_era = year.rem_euclid(400);
        let day_of_year = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
        let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
        era * 146_097 + day_of_era - 719_468
    }

    fn to_jiff(self) -> Result<jiff::civil::Date, CalendarError> {
        jiff::civil::Date::new(self.year, self.month as i8, self.day as i8)
            .map_err(|_| CalendarError::DateOutOfRange)
    }
}

/// Howard Hinnant's `civil_from_days`: (year, month, day) of a day number.
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u8;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u8;
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

fn is_leap_year(year: i16) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i16, month: u8) -> u8 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}

impl fmt::Display for LocalDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

impl Serialize for LocalDate {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A string that is not a local date `YYYY-MM-DD` within years 1..=9998.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalDateError;

impl fmt::Display for LocalDateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "date must be YYYY-MM-DD, e.g. 2025-03-30")
    }
}

#[cfg(feature = "std")]
impl std::error::Error for LocalDateError {}

impl core::str::FromStr for LocalDate {
    type Err = LocalDateError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = text.as_bytes();
        let digits = |range: core::ops::Range<usize>| -> Result<u16, LocalDateError> {
            bytes
                .get(range)
                .filter(|part| part.iter().all(u8::is_ascii_digit))
                .map(|part| {
                    part.iter()
                        .fold(0, |value, digit| value * 10 + u16::from(digit - b'0'))
                })
                .ok_or(LocalDateError)
        };
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return Err(LocalDateError);
        }
        let year = i16::try_from(digits(0..4)?).map_err(|_| LocalDateError)?;
        let month = u8::try_from(digits(5..7)?).map_err(|_| LocalDateError)?;
        let day = u8::try_from(digits(8..10)?).map_err(|_| LocalDateError)?;
        LocalDate::new(year, month, day).ok_or(LocalDateError)
    }
}

impl<'de> Deserialize<'de> for LocalDate {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DateVisitor;
        impl serde::de::Visitor<'_> for DateVisitor {
            type Value = LocalDate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a local date \"YYYY-MM-DD\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<LocalDate, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DateVisitor)
    }
}

/// A time outside the calendar gridpulse supports (years 1..=9998).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarError {
    /// The instant (Unix ms) is outside the supported range.
    InstantOutOfRange {
        /// The instant, Unix ms.
        utc_ms: i64,
    },
    /// A date or billing period outside years 1..=9998.
    DateOutOfRange,
}

impl fmt::Display for CalendarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CalendarError::InstantOutOfRange { utc_ms } => write!(
                f,
                "instant {utc_ms} ms is outside the supported calendar (years 1 to 9998)"
            ),
            CalendarError::DateOutOfRange => {
                write!(
                    f,
                    "date is outside the supported calendar (years 1 to 9998)"
                )
            }
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for CalendarError {}

// ---------------------------------------------------------------------------------
// Billing periods
// ---------------------------------------------------------------------------------

/// Names a billing period by the year and month it starts in: `2025-03` is the period
/// starting on the tariff's start day of March 2025. Serialized as `"YYYY-MM"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BillingPeriodId {
    year: i16,
    month: u8,
}

impl BillingPeriodId {
    /// The period starting in `month` of `year`, if within years 1..=9998.
    pub fn new(year: i16, month: u8) -> Option<BillingPeriodId> {
        ((MIN_YEAR..=MAX_YEAR).contains(&year) && (1..=12).contains(&month))
            .then_some(BillingPeriodId { year, month })
    }

    /// The year the period starts in.
    pub fn year(&self) -> i16 {
        self.year
    }

    /// The month the period starts in, 1..=12.
    pub fn month(&self) -> u8 {
        self.month
    }

    /// The following period, if within range.
    pub fn next(&self) -> Option<BillingPeriodId> {
        if self.month == 12 {
            BillingPeriodId::new(self.year.checked_add(1)?, 1)
        } else {
            BillingPeriodId::new(self.year, self.month + 1)
        }
    }

    /// The preceding period, if within range.
    pub fn previous(&self) -> Option<BillingPeriodId> {
        if self.month == 1 {
            BillingPeriodId::new(self.year.checked_sub(1)?, 12)
        } else {
            BillingPeriodId::new(self.year, self.month - 1)
        }
    }
}

impl fmt::Display for BillingPeriodId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// A string that is not a billing period id (`YYYY-MM`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BillingPeriodIdError;

impl fmt::Display for BillingPeriodIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "billing period must be YYYY-MM (the month it starts in), e.g. 2025-03"
        )
    }
}

#[cfg(feature = "std")]
impl std::error::Error for BillingPeriodIdError {}

impl core::str::FromStr for BillingPeriodId {
    type Err = BillingPeriodIdError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (year, month) = text.split_once('-').ok_or(BillingPeriodIdError)?;
        let all_digits = |part: &str| part.bytes().all(|byte| byte.is_ascii_digit());
        if year.len() != 4 || month.len() != 2 || !all_digits(year) || !all_digits(month) {
            return Err(BillingPeriodIdError);
        }
        let year = year.parse().map_err(|_| BillingPeriodIdError)?;
        let month = month.parse().map_err(|_| BillingPeriodIdError)?;
        BillingPeriodId::new(year, month).ok_or(BillingPeriodIdError)
    }
}

impl Serialize for BillingPeriodId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BillingPeriodId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PeriodVisitor;
        impl serde::de::Visitor<'_> for PeriodVisitor {
            type Value = BillingPeriodId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a billing period id \"YYYY-MM\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<BillingPeriodId, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(PeriodVisitor)
    }
}

/// One billing period of a tariff: `[start, end)` in UTC and the local dates it spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BillingPeriod {
    /// Which period.
    pub id: BillingPeriodId,
    /// Local date of the first day.
    pub start_date: LocalDate,
    /// Local date of the first day of the *next* period (exclusive end).
    pub end_date: LocalDate,
    /// First instant of the period (local midnight of `start_date`), Unix ms.
    pub start_utc_ms: i64,
    /// First instant of the next period, Unix ms.
    pub end_utc_ms: i64,
}

impl BillingPeriod {
    /// Whether `utc_ms` falls in `[start, end)`.
    pub fn contains(&self, utc_ms: i64) -> bool {
        (self.start_utc_ms..self.end_utc_ms).contains(&utc_ms)
    }

    /// Local calendar days in the period (28..=31).
    pub fn days(&self) -> u32 {
        self.start_date.days_until(self.end_date).unsigned_abs() as u32
    }
}

// ---------------------------------------------------------------------------------
// Definitions (serde)
// ---------------------------------------------------------------------------------

/// A tariff as stored and exchanged. Amounts are decimal strings; unknown keys are
/// refused. Turn it into a usable [`Tariff`] with [`TariffDefinition::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffDefinition {
    /// ISO 4217 code, e.g. `"GBP"`.
    pub currency: String,
    /// IANA time zone of the tariff's local time, e.g. `"Europe/London"`.
    pub time_zone: String,
    /// Day of the month (1..=28) each billing period starts on, at local midnight.
    pub billing_period_start_day: u8,
    /// Charged per local calendar day, whatever is used.
    pub standing_charge_per_day: Amount,
    /// How energy is priced.
    pub energy: EnergyPricingDefinition,
}

/// How a tariff prices energy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum EnergyPricingDefinition {
    /// One rate for every kWh.
    Flat {
        /// Price of one kWh.
        rate_per_kwh: Amount,
    },
    /// Block tariff: each kWh of a billing period is priced by the tier its position in
    /// the period falls in.
    Tiered {
        /// Tiers by increasing upper bound; the last has no bound.
        tiers: Vec<TierDefinition>,
    },
    /// Time of use: a rate per band of local time, a default rate elsewhere.
    TimeOfUse {
        /// Price of one kWh used in a minute no band covers.
        default_rate_per_kwh: Amount,
        /// Non-overlapping bands.
        bands: Vec<TimeOfUseBandDefinition>,
    },
}

/// One tier of a block tariff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TierDefinition {
    /// Upper bound of the tier, whole kWh used in the billing period so far; absent for
    /// the last (unbounded) tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub up_to_kwh: Option<u32>,
    /// Price of one kWh in this tier.
    pub rate_per_kwh: Amount,
}

/// One band of a time-of-use tariff: local wall-clock `[start, end)` on some weekdays.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeOfUseBandDefinition {
    /// Unique name shown on bills, e.g. `"night"` (`"default"` is reserved).
    pub name: String,
    /// Weekdays the band applies on (the local date's weekday).
    pub days: Vec<Weekday>,
    /// Local start time `"HH:MM"`, inclusive.
    pub start: String,
    /// Local end time `"HH:MM"`, exclusive; `"24:00"` is the end of the day.
    pub end: String,
    /// Price of one kWh used in the band.
    pub rate_per_kwh: Amount,
}

// ---------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------

/// Why a tariff definition was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TariffErrorReason {
    /// Not an ISO 4217 code gridpulse knows.
    UnknownCurrency(MoneyError),
    /// Not a time zone of the bundled IANA database.
    UnknownTimeZone {
        /// The name as given.
        name: String,
    },
    /// The billing period start day is not within 1..=28.
    BillingDayOutOfRange {
        /// The day given.
        day: u8,
    },
    /// A rate or standing charge is negative.
    NegativeAmount {
        /// The amount given.
        amount: Amount,
    },
    /// A rate or standing charge exceeds [`MAX_TARIFF_RATE_MICRO_UNITS`].
    AmountTooLarge {
        /// The amount given.
        amount: Amount,
    },
    /// A tiered tariff without tiers.
    NoTiers,
    /// A tier bound of 0 kWh (an empty first tier).
    TierBoundNotPositive,
    /// A tier bound lower than the previous tier's.
    TiersOutOfOrder {
        /// The previous tier's bound, kWh.
        previous_kwh: u32,
        /// This tier's bound, kWh.
        bound_kwh: u32,
    },
    /// A tier bound equal to the previous tier's.
    DuplicateTierBound {
        /// The repeated bound, kWh.
        bound_kwh: u32,
    },
    /// The last tier has an upper bound: kWh above it would have no price.
    MissingUnboundedLastTier,
    /// A tier other than the last has no upper bound.
    UnboundedTierNotLast,
    /// Not a local time `"HH:MM"` within `00:00..=24:00`.
    BadTimeOfDay {
        /// The text given.
        text: String,
    },
    /// A band whose end is not after its start (bands do not wrap past midnight).
    BandEndNotAfterStart,
    /// A band without weekdays.
    NoWeekdays,
    /// A band without a name.
    EmptyBandName,
    /// The band name `default` is the line of the default rate.
    ReservedBandName,
    /// Two bands share a name.
    DuplicateBandName {
        /// The name.
        name: String,
    },
    /// Two bands cover the same local time on a common weekday.
    OverlappingBands {
        /// The earlier band in the list.
        first: String,
        /// The later band in the list.
        second: String,
    },
}

impl TariffErrorReason {
    /// A short stable code for machine clients.
    pub fn code(&self) -> &'static str {
        match self {
            TariffErrorReason::UnknownCurrency(_) => "unknown_currency",
            TariffErrorReason::UnknownTimeZone { .. } => "unknown_time_zone",
            TariffErrorReason::BillingDayOutOfRange { .. } => "billing_day_out_of_range",
            TariffErrorReason::NegativeAmount { .. } => "negative_amount",
            TariffErrorReason::AmountTooLarge { .. } => "amount_too_large",
            TariffErrorReason::NoTiers => "no_tiers",
            TariffErrorReason::TierBoundNotPositive => "tier_bound_not_positive",
            TariffErrorReason::TiersOutOfOrder { .. } => "tiers_out_of_order",
            TariffErrorReason::DuplicateTierBound { .. } => "duplicate_tier_bound",
            TariffErrorReason::MissingUnboundedLastTier => "missing_unbounded_last_tier",
            TariffErrorReason::UnboundedTierNotLast => "unbounded_tier_not_last",
            TariffErrorReason::BadTimeOfDay { .. } => "bad_time_of_day",
            TariffErrorReason::BandEndNotAfterStart => "band_end_not_after_start",
            TariffErrorReason::NoWeekdays => "no_weekdays",
            TariffErrorReason::EmptyBandName => "empty_band_name",
            TariffErrorReason::ReservedBandName => "reserved_band_name",
            TariffErrorReason::DuplicateBandName { .. } => "duplicate_band_name",
            TariffErrorReason::OverlappingBands { .. } => "overlapping_bands",
        }
    }
}

impl fmt::Display for TariffErrorReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TariffErrorReason::UnknownCurrency(error) => write!(f, "{error}"),
            TariffErrorReason::UnknownTimeZone { name } => write!(
                f,
                "unknown time zone `{name}`: expected an IANA name such as Europe/London"
            ),
            TariffErrorReason::BillingDayOutOfRange { day } => write!(
                f,
                "must be a day of the month from 1 to {LATEST_BILLING_PERIOD_START_DAY}, got {day}"
            ),
            TariffErrorReason::NegativeAmount { amount } => {
                write!(f, "must not be negative, got {amount}")
            }
            TariffErrorReason::AmountTooLarge { amount } => {
                write!(f, "is implausibly large: {amount} exceeds 1000000")
            }
            TariffErrorReason::NoTiers => write!(f, "must list at least one tier"),
            TariffErrorReason::TierBoundNotPositive => {
                write!(f, "must be greater than 0 kWh")
            }
            TariffErrorReason::TiersOutOfOrder {
                previous_kwh,
                bound_kwh,
            } => write!(
                f,
                "tiers out of order: {bound_kwh} kWh comes after the larger bound {previous_kwh} kWh"
            ),
            TariffErrorReason::DuplicateTierBound { bound_kwh } => {
                write!(f, "repeats the tier bound {bound_kwh} kWh")
            }
            TariffErrorReason::MissingUnboundedLastTier => write!(
                f,
                "the last tier must have no `up_to_kwh`, so every kWh has a price"
            ),
            TariffErrorReason::UnboundedTierNotLast => {
                write!(f, "only the last tier may have no `up_to_kwh`")
            }
            TariffErrorReason::BadTimeOfDay { text } => write!(
                f,
                "must be a local time \"HH:MM\" from 00:00 to 24:00, got {text:?}"
            ),
            TariffErrorReason::BandEndNotAfterStart => write!(
                f,
                "band must end after it starts (bands do not wrap past midnight: split 23:00-07:00 into 23:00-24:00 and 00:00-07:00)"
            ),
            TariffErrorReason::NoWeekdays => write!(f, "must list at least one weekday"),
            TariffErrorReason::EmptyBandName => write!(f, "must not be empty"),
            TariffErrorReason::ReservedBandName => {
                write!(f, "`default` is reserved for the default rate")
            }
            TariffErrorReason::DuplicateBandName { name } => {
                write!(f, "band name `{name}` is used twice")
            }
            TariffErrorReason::OverlappingBands { first, second } => write!(
                f,
                "bands `{first}` and `{second}` overlap on a common weekday"
            ),
        }
    }
}

/// A refused tariff definition: the field (a path such as `energy.tiers[2].up_to_kwh`)
/// and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TariffError {
    /// Path of the field concerned.
    pub field: String,
    /// Why it was refused.
    pub reason: TariffErrorReason,
}

impl TariffError {
    fn new(field: impl Into<String>, reason: TariffErrorReason) -> TariffError {
        TariffError {
            field: field.into(),
            reason,
        }
    }
}

impl fmt::Display for TariffError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` {}", self.field, self.reason)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for TariffError {}

// ---------------------------------------------------------------------------------
// Validated tariff
// ---------------------------------------------------------------------------------

/// One validated tier: the kWh of the period `[from_kwh, up_to_kwh)` (unbounded when
/// `up_to_kwh` is none) at one rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tier {
    pub(crate) from_kwh: u32,
    pub(crate) up_to_kwh: Option<u32>,
    pub(crate) rate_per_kwh: Amount,
}

impl Tier {
    pub(crate) fn lower_bound_mwh(&self) -> i64 {
        i64::from(self.from_kwh) * 1_000_000
    }

    pub(crate) fn upper_bound_mwh(&self) -> i64 {
        self.up_to_kwh
            .map_or(i64::MAX, |kwh| i64::from(kwh) * 1_000_000)
    }
}

/// One band: weekdays bit set (bit 0 = Monday), minutes of the local day `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Band {
    pub(crate) name: String,
    weekdays: u8,
    start_minute: u16,
    end_minute: u16,
    pub(crate) rate_per_kwh: Amount,
}

impl Band {
    fn covers(&self, weekday: Weekday, minute_of_day: u16) -> bool {
        self.weekdays & weekday.bit() != 0
            && (self.start_minute..self.end_minute).contains(&minute_of_day)
    }
}

/// Validated energy pricing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EnergyPricing {
    Flat {
        rate_per_kwh: Amount,
    },
    Tiered {
        tiers: Vec<Tier>,
    },
    TimeOfUse {
        default_rate_per_kwh: Amount,
        bands: Vec<Band>,
    },
}

/// A validated tariff: what the cost engine uses. Made only by
/// [`TariffDefinition::validate`].
#[derive(Debug, Clone)]
pub struct Tariff {
    definition: TariffDefinition,
    currency: Currency,
    time_zone: TimeZone,
    pub(crate) pricing: EnergyPricing,
}

impl PartialEq for Tariff {
    fn eq(&self, other: &Self) -> bool {
        self.definition == other.definition
    }
}

fn check_rate(field: &str, amount: Amount) -> Result<Amount, TariffError> {
    if amount.is_negative() {
        return Err(TariffError::new(
            field,
            TariffErrorReason::NegativeAmount { amount },
        ));
    }
    if amount.micro_units() > MAX_TARIFF_RATE_MICRO_UNITS {
        return Err(TariffError::new(
            field,
            TariffErrorReason::AmountTooLarge { amount },
        ));
    }
    Ok(amount)
}

/// Parses `"HH:MM"` (00:00..=24:00) into minutes of the day.
fn parse_time_of_day(field: &str, text: &str) -> Result<u16, TariffError> {
    let bad = || TariffError::new(field, TariffErrorReason::BadTimeOfDay { text: text.into() });
    let bytes = text.as_bytes();
    if bytes.len() != 5 || bytes[2] != b':' {
        return Err(bad());
    }
    let two_digits = |high: u8, low: u8| -> Option<u16> {
        (high.is_ascii_digit() && low.is_ascii_digit())
            .then(|| u16::from(high - b'0') * 10 + u16::from(low - b'0'))
    };
    let hours = two_digits(bytes[0], bytes[1]).ok_or_else(bad)?;
    let minutes = two_digits(bytes[3], bytes[4]).ok_or_else(bad)?;
    let minute_of_day = hours * 60 + minutes;
    if minutes >= 60 || minute_of_day > MINUTES_PER_DAY {
        return Err(bad());
    }
    Ok(minute_of_day)
}

fn validate_tiers(definitions: &[TierDefinition]) -> Result<Vec<Tier>, TariffError> {
    if definitions.is_empty() {
        return Err(TariffError::new("energy.tiers", TariffErrorReason::NoTiers));
    }
    let mut tiers = Vec::with_capacity(definitions.len());
    let mut from_kwh = 0_u32;
    for (index, definition) in definitions.iter().enumerate() {
        let rate_per_kwh = check_rate(
            &format!("energy.tiers[{index}].rate_per_kwh"),
            definition.rate_per_kwh,
        )?;
        let field = format!("energy.tiers[{index}].up_to_kwh");
        let is_last = index + 1 == definitions.len();
        match definition.up_to_kwh {
            None if !is_last => {
                return Err(TariffError::new(
                    field,
                    TariffErrorReason::UnboundedTierNotLast,
                ));
            }
            Some(_) if is_last => {
                return Err(TariffError::new(
                    field,
                    TariffErrorReason::MissingUnboundedLastTier,
                ));
            }
            Some(0) => {
                return Err(TariffError::new(
                    field,
                    TariffErrorReason::TierBoundNotPositive,
                ));
            }
            Some(bound_kwh) if index > 0 && bound_kwh == from_kwh => {
                return Err(TariffError::new(
                    field,
                    TariffErrorReason::DuplicateTierBound { bound_kwh },
                ));
            }
            Some(bound_kwh) if bound_kwh < from_kwh => {
                return Err(TariffError::new(
                    field,
                    TariffErrorReason::TiersOutOfOrder {
                        previous_kwh: from_kwh,
                        bound_kwh,
                    },
                ));
            }
            _ => {}
        }
        tiers.push(Tier {
            from_kwh,
            up_to_kwh: definition.up_to_kwh,
            rate_per_kwh,
        });
        from_kwh = definition.up_to_kwh.unwrap_or(from_kwh);
    }
    Ok(tiers)
}

fn validate_bands(definitions: &[TimeOfUseBandDefinition]) -> Result<Vec<Band>, TariffError> {
    let mut bands: Vec<Band> = Vec::with_capacity(definitions.len());
    for (index, definition) in definitions.iter().enumerate() {
        let field = |name: &str| format!("energy.bands[{index}].{name}");
        if definition.name.is_empty() {
            return Err(TariffError::new(
                field("name"),
                TariffErrorReason::EmptyBandName,
            ));
        }
        if definition.name == "default" {
            return Err(TariffError::new(
                field("name"),
                TariffErrorReason::ReservedBandName,
            ));
        }
        if bands.iter().any(|band| band.name == definition.name) {
            return Err(TariffError::new(
                field("name"),
                TariffErrorReason::DuplicateBandName {
                    name: definition.name.clone(),
                },
            ));
        }
        if definition.days.is_empty() {
            return Err(TariffError::new(
                field("days"),
                TariffErrorReason::NoWeekdays,
            ));
        }
        let start_minute = parse_time_of_day(&field("start"), &definition.start)?;
        let end_minute = parse_time_of_day(&field("end"), &definition.end)?;
        if end_minute <= start_minute {
            return Err(TariffError::new(
                field("end"),
                TariffErrorReason::BandEndNotAfterStart,
            ));
        }
        let rate_per_kwh = check_rate(&field("rate_per_kwh"), definition.rate_per_kwh)?;
        let band = Band {
            name: definition.name.clone(),
            weekdays: definition
                .days
                .iter()
                .fold(0, |bits, weekday| bits | weekday.bit()),
            start_minute,
            end_minute,
            rate_per_kwh,
        };
        if let Some(earlier) = bands.iter().find(|earlier| {
            earlier.weekdays & band.weekdays != 0
                && earlier.start_minute < band.end_minute
                && band.start_minute < earlier.end_minute
        }) {
            return Err(TariffError::new(
                format!("energy.bands[{index}]"),
                TariffErrorReason::OverlappingBands {
                    first: earlier.name.clone(),
                    second: band.name.clone(),
                },
            ));
        }
        bands.push(band);
    }
    Ok(bands)
}

impl TariffDefinition {
    /// Checks every rule and builds the [`Tariff`]; the first broken rule is reported
    /// with the field it concerns.
    pub fn validate(&self) -> Result<Tariff, TariffError> {
        let currency = Currency::from_code(&self.currency).map_err(|error| {
            TariffError::new("currency", TariffErrorReason::UnknownCurrency(error))
        })?;
        let time_zone = jiff::tz::db().get(&self.time_zone).map_err(|_| {
            TariffError::new(
                "time_zone",
                TariffErrorReason::UnknownTimeZone {
                    name: self.time_zone.clone(),
                },
            )
        })?;
        let day = self.billing_period_start_day;
        if !(1..=LATEST_BILLING_PERIOD_START_DAY).contains(&day) {
            return Err(TariffError::new(
                "billing_period_start_day",
                TariffErrorReason::BillingDayOutOfRange { day },
            ));
        }
        check_rate("standing_charge_per_day", self.standing_charge_per_day)?;
        let pricing = match &self.energy {
            EnergyPricingDefinition::Flat { rate_per_kwh } => EnergyPricing::Flat {
                rate_per_kwh: check_rate("energy.rate_per_kwh", *rate_per_kwh)?,
            },
            EnergyPricingDefinition::Tiered { tiers } => EnergyPricing::Tiered {
                tiers: validate_tiers(tiers)?,
            },
            EnergyPricingDefinition::TimeOfUse {
                default_rate_per_kwh,
                bands,
            } => EnergyPricing::TimeOfUse {
                default_rate_per_kwh: check_rate(
                    "energy.default_rate_per_kwh",
                    *default_rate_per_kwh,
                )?,
                bands: validate_bands(bands)?,
            },
        };
        Ok(Tariff {
            definition: self.clone(),
            currency,
            time_zone,
            pricing,
        })
    }
}

impl Tariff {
    /// The definition this tariff was validated from.
    pub fn definition(&self) -> &TariffDefinition {
        &self.definition
    }

    /// The currency of every amount of the tariff.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The standing charge per local day.
    pub fn standing_charge_per_day(&self) -> Amount {
        self.definition.standing_charge_per_day
    }

    /// The local date at instant `utc_ms`.
    pub fn local_date(&self, utc_ms: i64) -> Result<LocalDate, CalendarError> {
        self.local_date_and_minute(utc_ms).map(|(date, _)| date)
    }

    /// The first instant (Unix ms) of local `date`: local midnight, or the end of a DST
    /// gap that swallows midnight.
    pub fn start_of_local_day(&self, date: LocalDate) -> Result<i64, CalendarError> {
        let zoned = date
            .to_jiff()?
            .to_zoned_datetime(self.time_zone.clone())
            .map_err(|_| CalendarError::DateOutOfRange)?;
        Ok(zoned.timestamp().as_millisecond())
    }

    /// The billing period `id` of this tariff.
    pub fn billing_period(&self, id: BillingPeriodId) -> Result<BillingPeriod, CalendarError> {
        let next = id.next().ok_or(CalendarError::DateOutOfRange)?;
        let day = self.definition.billing_period_start_day;
        let start_date =
            LocalDate::new(id.year, id.month, day).ok_or(CalendarError::DateOutOfRange)?;
        let end_date =
            LocalDate::new(next.year, next.month, day).ok_or(CalendarError::DateOutOfRange)?;
        Ok(BillingPeriod {
            id,
            start_date,
            end_date,
            start_utc_ms: self.start_of_local_day(start_date)?,
            end_utc_ms: self.start_of_local_day(end_date)?,
        })
    }

    /// The billing period containing instant `utc_ms`.
    pub fn billing_period_containing(&self, utc_ms: i64) -> Result<BillingPeriod, CalendarError> {
        let date = self.local_date(utc_ms)?;
        let id =
            BillingPeriodId::new(date.year, date.month).ok_or(CalendarError::DateOutOfRange)?;
        let id = if date.day >= self.definition.billing_period_start_day {
            id
        } else {
            id.previous().ok_or(CalendarError::DateOutOfRange)?
        };
        self.billing_period(id)
    }

    /// The period after `period`.
    pub fn next_billing_period(
        &self,
        period: &BillingPeriod,
    ) -> Result<BillingPeriod, CalendarError> {
        self.billing_period(period.id.next().ok_or(CalendarError::DateOutOfRange)?)
    }

    /// The period before `period`.
    pub fn previous_billing_period(
        &self,
        period: &BillingPeriod,
    ) -> Result<BillingPeriod, CalendarError> {
        self.billing_period(period.id.previous().ok_or(CalendarError::DateOutOfRange)?)
    }

    /// Local date and wall-clock minute of the day (0..1440) at `utc_ms`.
    pub(crate) fn local_date_and_minute(
        &self,
        utc_ms: i64,
    ) -> Result<(LocalDate, u16), CalendarError> {
        let out_of_range = CalendarError::InstantOutOfRange { utc_ms };
        let timestamp = Timestamp::from_millisecond(utc_ms).map_err(|_| out_of_range)?;
        let local = self.time_zone.to_datetime(timestamp);
        let month = u8::try_from(local.month()).map_err(|_| out_of_range)?;
        let day = u8::try_from(local.day()).map_err(|_| out_of_range)?;
        let date = LocalDate::new(local.year(), month, day).ok_or(out_of_range)?;
        let minute = u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute()))
            .map_err(|_| out_of_range)?;
        Ok((date, minute))
    }

    /// How many pricing slots the accumulator keeps per day: 1 for flat and tiered;
    /// one per band plus the default for time of use.
    pub(crate) fn pricing_slot_count(&self) -> usize {
        match &self.pricing {
            EnergyPricing::Flat { .. } | EnergyPricing::Tiered { .. } => 1,
            EnergyPricing::TimeOfUse { bands, .. } => bands.len() + 1,
        }
    }

    /// The pricing slot of a minute at local `date` and `minute_of_day`.
    pub(crate) fn pricing_slot(&self, date: LocalDate, minute_of_day: u16) -> usize {
        match &self.pricing {
            EnergyPricing::Flat { .. } | EnergyPricing::Tiered { .. } => 0,
            EnergyPricing::TimeOfUse { bands, .. } => {
                let weekday = date.weekday();
                bands
                    .iter()
                    .position(|band| band.covers(weekday, minute_of_day))
                    .unwrap_or(bands.len())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn tariff_json(energy: &str) -> String {
        format!(
            r#"{{"currency":"GBP","time_zone":"Europe/London","billing_period_start_day":1,"standing_charge_per_day":"0.5322","energy":{energy}}}"#
        )
    }

    /// Validates a tariff whose `energy` is given, expecting `Ok(())` or
    /// `Err((field, reason code))`.
    fn check(energy: &str, expected: Result<(), (&str, &str)>) {
        let definition: TariffDefinition = serde_json::from_str(&tariff_json(energy)).unwrap();
        let got = definition
            .validate()
            .map(|_| ())
            .map_err(|error| (error.field.clone(), error.reason.code(), error.to_string()));
        match (got, expected) {
            (Ok(()), Ok(())) => {}
            (Err((field, code, _)), Err((want_field, want_code))) => {
                assert_eq!((field.as_str(), code), (want_field, want_code), "{energy}")
            }
            (got, want) => panic!("{energy}\n got: {got:?}\nwant: {want:?}"),
        }
    }

    #[test]
    fn validates_tiers() {
        let tier = |bound: &str, rate: &str| format!(r#"{{{bound}"rate_per_kwh":"{rate}"}}"#);
        let tiered =
            |tiers: &[String]| format!(r#"{{"kind":"tiered","tiers":[{}]}}"#, tiers.join(","));
        check(
            &tiered(&[tier(r#""up_to_kwh":100,"#, "0.2"), tier("", "0.3")]),
            Ok(()),
        );
        check(&tiered(&[tier("", "0.3")]), Ok(()));
        check(&tiered(&[]), Err(("energy.tiers", "no_tiers")));
        check(
            &tiered(&[
                tier(r#""up_to_kwh":200,"#, "0.2"),
                tier(r#""up_to_kwh":100,"#, "0.2"),
                tier("", "0.3"),
            ]),
            Err(("energy.tiers[1].up_to_kwh", "tiers_out_of_order")),
        );
        check(
            &tiered(&[
                tier(r#""up_to_kwh":100,"#, "0.2"),
                tier(r#""up_to_kwh":100,"#, "0.2"),
                tier("", "0.3"),
            ]),
            Err(("energy.tiers[1].up_to_kwh", "duplicate_tier_bound")),
        );
        check(
            &tiered(&[tier(r#""up_to_kwh":100,"#, "0.2")]),
            Err(("energy.tiers[0].up_to_kwh", "missing_unbounded_last_tier")),
        );
        check(
            &tiered(&[tier("", "0.2"), tier("", "0.3")]),
            Err(("energy.tiers[0].up_to_kwh", "unbounded_tier_not_last")),
        );
        check(
            &tiered(&[tier(r#""up_to_kwh":0,"#, "0.2"), tier("", "0.3")]),
            Err(("energy.tiers[0].up_to_kwh", "tier_bound_not_positive")),
        );
        check(
            &tiered(&[tier(r#""up_to_kwh":100,"#, "-0.2"), tier("", "0.3")]),
            Err(("energy.tiers[0].rate_per_kwh", "negative_amount")),
        );
        check(
            &tiered(&[tier("", "1000000.000001")]),
            Err(("energy.tiers[0].rate_per_kwh", "amount_too_large")),
        );
    }

    #[test]
    fn validates_bands() {
        let band = |name: &str, days: &str, start: &str, end: &str| {
            format!(
                r#"{{"name":"{name}","days":[{days}],"start":"{start}","end":"{end}","rate_per_kwh":"0.1"}}"#
            )
        };
        let tou = |bands: &[String]| {
            format!(
                r#"{{"kind":"time_of_use","default_rate_per_kwh":"0.3","bands":[{}]}}"#,
                bands.join(",")
            )
        };
        let week = r#""mon","tue","wed","thu","fri""#;
        check(
            &tou(&[
                band("night", week, "00:00", "07:00"),
                band("late", week, "23:00", "24:00"),
            ]),
            Ok(()),
        );
        check(&tou(&[]), Ok(()));
        // Touching bands do not overlap; the same hours on other days do not either.
        check(
            &tou(&[
                band("a", week, "00:00", "07:00"),
                band("b", week, "07:00", "08:00"),
                band("c", r#""sat""#, "06:00", "09:00"),
            ]),
            Ok(()),
        );
        check(
            &tou(&[
                band("night", week, "00:00", "07:00"),
                band("dawn", r#""fri","sat""#, "06:59", "08:00"),
            ]),
            Err(("energy.bands[1]", "overlapping_bands")),
        );
        check(
            &tou(&[band("night", week, "23:00", "07:00")]),
            Err(("energy.bands[0].end", "band_end_not_after_start")),
        );
        check(
            &tou(&[band("night", week, "07:00", "07:00")]),
            Err(("energy.bands[0].end", "band_end_not_after_start")),
        );
        for bad in ["7:00", "24:01", "12:60", "ab:cd", "12-00", "", "12:000"] {
            check(
                &tou(&[band("x", week, bad, "23:00")]),
                Err(("energy.bands[0].start", "bad_time_of_day")),
            );
        }
        check(
            &tou(&[band("x", "", "01:00", "02:00")]),
            Err(("energy.bands[0].days", "no_weekdays")),
        );
        check(
            &tou(&[band("", week, "01:00", "02:00")]),
            Err(("energy.bands[0].name", "empty_band_name")),
        );
        check(
            &tou(&[band("default", week, "01:00", "02:00")]),
            Err(("energy.bands[0].name", "reserved_band_name")),
        );
        check(
            &tou(&[
                band("x", week, "01:00", "02:00"),
                band("x", r#""sun""#, "01:00", "02:00"),
            ]),
            Err(("energy.bands[1].name", "duplicate_band_name")),
        );
    }

    #[test]
    fn overlap_error_names_both_bands() {
        let json = tariff_json(
            r#"{"kind":"time_of_use","default_rate_per_kwh":"0.3","bands":[
                {"name":"night","days":["sun"],"start":"00:00","end":"07:00","rate_per_kwh":"0.1"},
                {"name":"early","days":["sun"],"start":"06:00","end":"08:00","rate_per_kwh":"0.2"}]}"#,
        );
        let definition: TariffDefinition = serde_json::from_str(&json).unwrap();
        let error = definition.validate().unwrap_err();
        assert_eq!(
            error.reason,
            TariffErrorReason::OverlappingBands {
                first: "night".into(),
                second: "early".into()
            }
        );
        assert_eq!(
            error.to_string(),
            "`energy.bands[1]` bands `night` and `early` overlap on a common weekday"
        );
    }

    #[test]
    fn validates_the_rest_of_the_tariff() {
        let flat = r#"{"kind":"flat","rate_per_kwh":"0.2457"}"#;
        check(flat, Ok(()));
        check(
            r#"{"kind":"flat","rate_per_kwh":"-0.01"}"#,
            Err(("energy.rate_per_kwh", "negative_amount")),
        );
        let with = |key: &str, value: &str| {
            let mut document: serde_json::Value = serde_json::from_str(&tariff_json(flat)).unwrap();
            document[key] = serde_json::from_str(value).unwrap();
            serde_json::from_value::<TariffDefinition>(document)
                .unwrap()
                .validate()
        };
        let error = with("currency", "\"XYZ\"").unwrap_err();
        assert_eq!(error.field, "currency");
        assert_eq!(
            error.reason,
            TariffErrorReason::UnknownCurrency(MoneyError::UnknownCurrency { code: "XYZ".into() })
        );
        let error = with("time_zone", "\"Mars/Olympus\"").unwrap_err();
        assert_eq!(
            (error.field.as_str(), error.reason.code()),
            ("time_zone", "unknown_time_zone")
        );
        for day in ["0", "29"] {
            let error = with("billing_period_start_day", day).unwrap_err();
            assert_eq!(error.reason.code(), "billing_day_out_of_range");
        }
        let error = with("standing_charge_per_day", "\"-0.53\"").unwrap_err();
        assert_eq!(
            (error.field.as_str(), error.reason.code()),
            ("standing_charge_per_day", "negative_amount")
        );
        assert!(with("time_zone", "\"America/New_York\"").is_ok());
    }

    #[test]
    fn definitions_refuse_unknown_keys_and_float_amounts() {
        let unknown = tariff_json(r#"{"kind":"flat","rate_per_kwh":"0.2","extra":1}"#);
        assert!(serde_json::from_str::<TariffDefinition>(&unknown).is_err());
        let unknown = tariff_json(r#"{"kind":"flat","rate_per_kwh":"0.2"}"#)
            .replace("\"currency\"", "\"colour\":1,\"currency\"");
        assert!(serde_json::from_str::<TariffDefinition>(&unknown).is_err());
        let float = tariff_json(r#"{"kind":"flat","rate_per_kwh":0.2}"#);
        let error = serde_json::from_str::<TariffDefinition>(&float).unwrap_err();
        assert!(
            error.to_string().contains("must be JSON strings"),
            "{error}"
        );
        let good = tariff_json(
            r#"{"kind":"tiered","tiers":[{"up_to_kwh":100,"rate_per_kwh":"0.2"},{"rate_per_kwh":"0.3"}]}"#,
        );
        let definition: TariffDefinition = serde_json::from_str(&good).unwrap();
        let round_trip: TariffDefinition =
            serde_json::from_str(&serde_json::to_string(&definition).unwrap()).unwrap();
        assert_eq!(round_trip, definition);
    }

    fn london(start_day: u8) -> Tariff {
        let mut definition: TariffDefinition =
            serde_json::from_str(&tariff_json(r#"{"kind":"flat","rate_per_kwh":"0.2"}"#)).unwrap();
        definition.billing_period_start_day = start_day;
        definition.validate().unwrap()
    }

    fn utc_ms(text: &str) -> i64 {
        text.parse::<Timestamp>().unwrap().as_millisecond()
    }

    #[test]
    fn billing_periods_start_at_local_midnight() {
        let tariff = london(15);
        // 2025-07-15 00:00 BST is 2025-07-14 23:00 UTC.
        let period = tariff
            .billing_period_containing(utc_ms("2025-07-14T23:00:00Z"))
            .unwrap();
        assert_eq!(period.id.to_string(), "2025-07");
        assert_eq!(period.start_utc_ms, utc_ms("2025-07-14T23:00:00Z"));
        assert_eq!(period.end_utc_ms, utc_ms("2025-08-14T23:00:00Z"));
        assert_eq!(period.days(), 31);
        let before = tariff
            .billing_period_containing(utc_ms("2025-07-14T22:59:59.999Z"))
            .unwrap();
        assert_eq!(before.id.to_string(), "2025-06");
        assert_eq!(before.end_utc_ms, period.start_utc_ms);
        assert_eq!(tariff.previous_billing_period(&period).unwrap(), before);
        assert_eq!(tariff.next_billing_period(&before).unwrap(), period);
        // A period across the October DST change: GMT midnight at its end.
        let october = tariff.billing_period("2025-10".parse().unwrap()).unwrap();
        assert_eq!(october.start_utc_ms, utc_ms("2025-10-14T23:00:00Z"));
        assert_eq!(october.end_utc_ms, utc_ms("2025-11-15T00:00:00Z"));
        // A year boundary.
        let january = tariff
            .billing_period_containing(utc_ms("2026-01-03T12:00:00Z"))
            .unwrap();
        assert_eq!(january.id.to_string(), "2025-12");
        assert_eq!(
            london(1)
                .billing_period_containing(utc_ms("2024-02-29T12:00:00Z"))
                .unwrap()
                .days(),
            29
        );
    }

    #[test]
    fn period_ids_parse_strictly() {
        for good in ["2025-03", "0001-01", "9998-12"] {
            assert_eq!(good.parse::<BillingPeriodId>().unwrap().to_string(), good);
        }
        for bad in [
            "2025-3", "2025-13", "2025-00", "25-03", "2025/03", "", "+025-03", "9999-01",
        ] {
            assert_eq!(
                bad.parse::<BillingPeriodId>(),
                Err(BillingPeriodIdError),
                "{bad}"
            );
        }
        let id: BillingPeriodId = "2025-12".parse().unwrap();
        assert_eq!(id.next().unwrap().to_string(), "2026-01");
        assert_eq!(id.next().unwrap().previous(), Some(id));
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"2025-12\"");
    }

    #[test]
    fn instants_out_of_range_are_errors_not_panics() {
        let tariff = london(1);
        for utc_ms in [i64::MIN, i64::MAX, -62_135_596_800_001 - 86_400_000] {
            assert!(tariff.billing_period_containing(utc_ms).is_err());
        }
    }

    #[test]
    fn local_dates_agree_with_jiff() {
        let mut date = LocalDate::new(1, 1, 1).unwrap();
        let mut reference = jiff::civil::Date::new(1, 1, 1).unwrap();
        // Every ~97th day across the whole range, including leap centuries.
        while let Some(next) = date.plus_days(97) {
            date = next;
            reference = reference.checked_add(jiff::Span::new().days(97)).unwrap();
            assert_eq!(date.to_string(), reference.to_string());
            assert_eq!(
                date.weekday() as i8 + 1,
                reference.weekday().to_monday_one_offset()
            );
        }
        assert_eq!(date.year(), 9998);
        let start = LocalDate::new(2024, 2, 28).unwrap();
        assert_eq!(start.plus_days(1).unwrap().to_string(), "2024-02-29");
        assert_eq!(start.days_until(LocalDate::new(2025, 2, 28).unwrap()), 366);
        assert_eq!(LocalDate::new(2025, 2, 29), None);
        assert_eq!(LocalDate::new(9998, 12, 31).unwrap().plus_days(1), None);
    }
}
