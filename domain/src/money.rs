//! Exact money: currencies, decimal amounts and the one rounding rule.
//!
//! Tariffs turn kWh into money, budgets and prepaid credit compare and subtract it, and
//! bills show it to people, so a cent must never appear or vanish through floating
//! point. Amounts are integers of micro units (10⁻⁶ of the currency's major unit: per-kWh
//! rates such as `0.245712` are exact), arithmetic is checked (an overflow is an error,
//! never a wrap or a panic), and rounding to a currency's minor unit happens only when
//! an amount is presented, with one rule: **half away from zero** (`0.125 → 0.13`,
//! `-0.125 → -0.13`, `0.124999 → 0.12`), the commercial rule customers and utilities
//! expect on an itemised bill.
//!
//! On the wire an amount is always a JSON *string* (`"12.34"`, `"-3.10"`); a JSON
//! number is refused with an error saying so, so no float ever sneaks in.

use alloc::string::String;
use core::fmt;

use serde::{Deserialize, Serialize};

/// Decimal places an [`Amount`] keeps: amounts are integers of 10⁻⁶ units.
pub const AMOUNT_DECIMAL_PLACES: u32 = 6;

/// Micro units in one major unit (10^[`AMOUNT_DECIMAL_PLACES`]).
pub const MICRO_UNITS_PER_UNIT: i128 = 1_000_000;

/// The largest magnitude of an amount, in micro units: 10²¹ units. Far above any bill,
/// and low enough that every product and sum the tariff math forms stays inside `i128`.
pub const MAX_AMOUNT_MICRO_UNITS: i128 = 1_000_000_000_000_000_000_000_000_000;

/// ISO 4217 currencies known to gridpulse, with their minor-unit digits.
const KNOWN_CURRENCIES: &[(&str, u8)] = &[
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CLP", 0),
    ("CNY", 2),
    ("CZK", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HUF", 2),
    ("INR", 2),
    ("ISK", 0),
    ("JOD", 3),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("OMR", 3),
    ("PLN", 2),
    ("SEK", 2),
    ("TND", 3),
    ("USD", 2),
    ("ZAR", 2),
];

/// Why money could not be built, parsed or computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MoneyError {
    /// The code is not one of the ISO 4217 currencies gridpulse knows (codes are
    /// upper case, e.g. `GBP`).
    UnknownCurrency {
        /// The code as given.
        code: String,
    },
    /// The amount text is empty.
    EmptyAmount,
    /// A character that is not part of a decimal amount (`-`, digits, one `.`).
    UnexpectedCharacter {
        /// Byte position of the character.
        position: usize,
        /// The character.
        found: char,
    },
    /// A sign or decimal point without digits on both sides (`"-"`, `".5"`, `"1."`).
    MissingDigits,
    /// More decimal places than an amount keeps.
    TooManyDecimalPlaces {
        /// Decimal places found.
        found: usize,
    },
    /// The amount is larger than [`MAX_AMOUNT_MICRO_UNITS`] allows.
    OutOfRange,
    /// Arithmetic would leave the representable range.
    Overflow,
}

impl fmt::Display for MoneyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MoneyError::UnknownCurrency { code } => write!(
                f,
                "unknown currency `{code}`: expected an ISO 4217 code such as GBP, EUR or USD"
            ),
            MoneyError::EmptyAmount => write!(f, "amount is empty"),
            MoneyError::UnexpectedCharacter { position, found } => write!(
                f,
                "amount has {found:?} at position {position}: expected a decimal such as \"12.34\""
            ),
            MoneyError::MissingDigits => write!(
                f,
                "amount needs digits on both sides of the decimal point, e.g. \"0.50\""
            ),
            MoneyError::TooManyDecimalPlaces { found } => write!(
                f,
                "amount has {found} decimal places, at most {AMOUNT_DECIMAL_PLACES} allowed"
            ),
            MoneyError::OutOfRange => write!(f, "amount is out of range"),
            MoneyError::Overflow => write!(f, "amount arithmetic overflowed"),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for MoneyError {}

/// An ISO 4217 currency from the built-in table, with its minor-unit digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    minor_unit_digits: u8,
}

impl Currency {
    /// Looks `code` up in the built-in table (exact, upper-case match).
    pub fn from_code(code: &str) -> Result<Currency, MoneyError> {
        KNOWN_CURRENCIES
            .iter()
            .find(|(known, _)| *known == code)
            .map(|&(code, minor_unit_digits)| Currency {
                code,
                minor_unit_digits,
            })
            .ok_or_else(|| MoneyError::UnknownCurrency { code: code.into() })
    }

    /// The ISO 4217 code, e.g. `GBP`.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// Digits of the minor unit: 2 for GBP (pence), 0 for JPY, 3 for KWD (fils).
    pub fn minor_unit_digits(&self) -> u8 {
        self.minor_unit_digits
    }

    /// Micro units in one minor unit (10^(6 − digits)).
    fn micro_units_per_minor_unit(&self) -> i128 {
        10_i128.pow(AMOUNT_DECIMAL_PLACES - u32::from(self.minor_unit_digits))
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CurrencyVisitor;
        impl serde::de::Visitor<'_> for CurrencyVisitor {
            type Value = Currency;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an ISO 4217 currency code string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Currency, E> {
                Currency::from_code(text).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(CurrencyVisitor)
    }
}

/// An exact decimal amount of money in micro units (10⁻⁶ of a major unit), without a
/// currency: the tariff, bill or budget holding it names the currency. Negative amounts
/// (credits, refunds) are representable; where only non-negative values make sense
/// (rates, standing charges) the holder validates it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount {
    micro_units: i128,
}

impl Amount {
    /// Zero.
    pub const ZERO: Amount = Amount { micro_units: 0 };

    /// An amount of `micro_units` (10⁻⁶ units), if within ±[`MAX_AMOUNT_MICRO_UNITS`].
    pub fn from_micro_units(micro_units: i128) -> Result<Amount, MoneyError> {
        if micro_units.unsigned_abs() > MAX_AMOUNT_MICRO_UNITS.unsigned_abs() {
            return Err(MoneyError::OutOfRange);
        }
        Ok(Amount { micro_units })
    }

    /// The amount in micro units.
    pub fn micro_units(self) -> i128 {
        self.micro_units
    }

    /// Parses a decimal such as `"0.2457"`, `"-3.10"` or `"12"`: an optional `-`, one
    /// or more digits, then optionally `.` and 1 to 6 digits. No exponent, no `+`, no
    /// spaces.
    pub fn parse(text: &str) -> Result<Amount, MoneyError> {
        if text.is_empty() {
            return Err(MoneyError::EmptyAmount);
        }
        let (negative, unsigned, offset) = match text.strip_prefix('-') {
            Some(rest) => (true, rest, 1),
            None => (false, text, 0),
        };
        let mut seen_point = false;
        for (index, character) in unsigned.char_indices() {
            match character {
                '0'..='9' => {}
                '.' if !seen_point => seen_point = true,
                found => {
                    return Err(MoneyError::UnexpectedCharacter {
                        position: offset + index,
                        found,
                    });
                }
            }
        }
        let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
        if whole.is_empty() || (seen_point && fraction.is_empty()) {
            return Err(MoneyError::MissingDigits);
        }
        if fraction.len() > AMOUNT_DECIMAL_PLACES as usize {
            return Err(MoneyError::TooManyDecimalPlaces {
                found: fraction.len(),
            });
        }
        let mut micro_units: i128 = 0;
        let padding = AMOUNT_DECIMAL_PLACES as usize - fraction.len();
        let digits = whole
            .bytes()
            .chain(fraction.bytes())
            .chain(core::iter::repeat_n(b'0', padding));
        for digit in digits {
            micro_units = micro_units
                .checked_mul(10)
                .and_then(|value| value.checked_add(i128::from(digit - b'0')))
                .ok_or(MoneyError::OutOfRange)?;
        }
        Amount::from_micro_units(if negative { -micro_units } else { micro_units })
    }

    /// Whether the amount is below zero.
    pub fn is_negative(self) -> bool {
        self.micro_units < 0
    }

    /// `self + other`, or [`MoneyError::Overflow`].
    pub fn checked_add(self, other: Amount) -> Result<Amount, MoneyError> {
        self.micro_units
            .checked_add(other.micro_units)
            .ok_or(MoneyError::Overflow)
            .and_then(Amount::within_range)
    }

    /// `self − other`, or [`MoneyError::Overflow`].
    pub fn checked_sub(self, other: Amount) -> Result<Amount, MoneyError> {
        self.micro_units
            .checked_sub(other.micro_units)
            .ok_or(MoneyError::Overflow)
            .and_then(Amount::within_range)
    }

    /// `self × factor` (e.g. a daily charge times days), or [`MoneyError::Overflow`].
    pub fn checked_mul_integer(self, factor: i64) -> Result<Amount, MoneyError> {
        self.micro_units
            .checked_mul(i128::from(factor))
            .ok_or(MoneyError::Overflow)
            .and_then(Amount::within_range)
    }

    fn within_range(micro_units: i128) -> Result<Amount, MoneyError> {
        Amount::from_micro_units(micro_units).map_err(|_| MoneyError::Overflow)
    }

    /// This amount rounded to `currency`'s minor unit, half away from zero.
    pub fn round_to_minor_unit(self, currency: Currency) -> Money {
        Money {
            minor_units: divide_rounding_half_away_from_zero(
                self.micro_units,
                currency.micro_units_per_minor_unit(),
            ),
            currency,
        }
    }
}

/// `numerator / denominator` rounded to the nearest integer, ties away from zero.
/// `denominator` must be positive (every caller passes a power of ten).
pub(crate) fn divide_rounding_half_away_from_zero(numerator: i128, denominator: i128) -> i128 {
    let quotient = numerator / denominator;
    let remainder = numerator % denominator;
    if remainder.unsigned_abs() * 2 >= denominator.unsigned_abs() {
        quotient + numerator.signum()
    } else {
        quotient
    }
}

/// Writes `magnitude / 10^decimals` with exactly `decimals` decimal places (or with
/// trailing zeros trimmed when `trim` is set).
pub(crate) fn write_decimal(
    f: &mut fmt::Formatter<'_>,
    negative: bool,
    magnitude: u128,
    decimals: u32,
    trim: bool,
) -> fmt::Result {
    let scale = 10_u128.pow(decimals);
    let (whole, mut fraction) = (magnitude / scale, magnitude % scale);
    if negative && magnitude != 0 {
        f.write_str("-")?;
    }
    write!(f, "{whole}")?;
    let mut width = decimals as usize;
    if trim {
        while width > 0 && fraction % 10 == 0 {
            fraction /= 10;
            width -= 1;
        }
    }
    if width > 0 {
        write!(f, ".{fraction:0width$}")?;
    }
    Ok(())
}

impl fmt::Display for Amount {
    /// The shortest exact decimal: `12.34`, `-3.1`, `0.2457`, `5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_decimal(
            f,
            self.is_negative(),
            self.micro_units.unsigned_abs(),
            AMOUNT_DECIMAL_PLACES,
            true,
        )
    }
}

impl fmt::Debug for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Amount({self})")
    }
}

impl core::str::FromStr for Amount {
    type Err = MoneyError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Amount::parse(text)
    }
}

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

const AMOUNT_NOT_A_NUMBER: &str = "amounts must be JSON strings such as \"12.34\", not numbers (a number would pass through floating point)";

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AmountVisitor;
        impl serde::de::Visitor<'_> for AmountVisitor {
            type Value = Amount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal amount as a string, e.g. \"12.34\"")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Amount, E> {
                Amount::parse(text).map_err(E::custom)
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Amount, E> {
                Err(E::custom(AMOUNT_NOT_A_NUMBER))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Amount, E> {
                Err(E::custom(AMOUNT_NOT_A_NUMBER))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Amount, E> {
                Err(E::custom(AMOUNT_NOT_A_NUMBER))
            }
        }
        deserializer.deserialize_any(AmountVisitor)
    }
}

/// An amount rounded to a currency's minor unit: what a bill line, a total or a balance
/// shows. Displays and serializes with exactly the currency's digits (`"12.30"`, JPY
/// `"500"`, KWD `"1.250"`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Money {
    minor_units: i128,
    currency: Currency,
}

impl Money {
    /// Zero in `currency`.
    pub fn zero(currency: Currency) -> Money {
        Money {
            minor_units: 0,
            currency,
        }
    }

    /// An amount of `minor_units` (pence, cents, yen, fils) of `currency`.
    pub fn from_minor_units(minor_units: i128, currency: Currency) -> Money {
        Money {
            minor_units,
            currency,
        }
    }

    /// The amount in minor units.
    pub fn minor_units(&self) -> i128 {
        self.minor_units
    }

    /// The currency.
    pub fn currency(&self) -> Currency {
        self.currency
    }

    /// The same value as an exact [`Amount`], or [`MoneyError::OutOfRange`].
    pub fn to_amount(&self) -> Result<Amount, MoneyError> {
        self.minor_units
            .checked_mul(self.currency.micro_units_per_minor_unit())
            .ok_or(MoneyError::OutOfRange)
            .and_then(Amount::from_micro_units)
    }

    /// Adds minor units of the same currency (sums of bill lines; never near `i128`'s
    /// limits for amounts within [`MAX_AMOUNT_MICRO_UNITS`]).
    pub(crate) fn plus(self, other: Money) -> Money {
        Money {
            minor_units: self.minor_units.saturating_add(other.minor_units),
            currency: self.currency,
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_decimal(
            f,
            self.minor_units < 0,
            self.minor_units.unsigned_abs(),
            u32::from(self.currency.minor_unit_digits),
            false,
        )
    }
}

impl fmt::Debug for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Money({self} {})", self.currency)
    }
}

impl Serialize for Money {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    fn check(text: &str, expected: Result<i128, MoneyError>) {
        assert_eq!(
            Amount::parse(text).map(Amount::micro_units),
            expected,
            "{text:?}"
        );
    }

    #[test]
    fn parses_decimal_amounts_and_names_what_is_wrong() {
        check("0.2457", Ok(245_700));
        check("-3.10", Ok(-3_100_000));
        check("12", Ok(12_000_000));
        check("007.5", Ok(7_500_000));
        check("-0", Ok(0));
        check("0.000001", Ok(1));
        check("", Err(MoneyError::EmptyAmount));
        check("-", Err(MoneyError::MissingDigits));
        check(".5", Err(MoneyError::MissingDigits));
        check("1.", Err(MoneyError::MissingDigits));
        check(
            "0.0000001",
            Err(MoneyError::TooManyDecimalPlaces { found: 7 }),
        );
        check(
            "1.5e3",
            Err(MoneyError::UnexpectedCharacter {
                position: 3,
                found: 'e',
            }),
        );
        check(
            "+1",
            Err(MoneyError::UnexpectedCharacter {
                position: 0,
                found: '+',
            }),
        );
        check(
            "1.2.3",
            Err(MoneyError::UnexpectedCharacter {
                position: 3,
                found: '.',
            }),
        );
        check(
            " 1",
            Err(MoneyError::UnexpectedCharacter {
                position: 0,
                found: ' ',
            }),
        );
        check("1000000000000000000000", Ok(MAX_AMOUNT_MICRO_UNITS));
        check("1000000000000000000000.000001", Err(MoneyError::OutOfRange));
        check(&"9".repeat(60), Err(MoneyError::OutOfRange));
    }

    #[test]
    fn displays_the_shortest_exact_decimal() {
        for (micro_units, text) in [
            (12_340_000, "12.34"),
            (-3_100_000, "-3.1"),
            (245_700, "0.2457"),
            (5_000_000, "5"),
            (-1, "-0.000001"),
            (0, "0"),
        ] {
            let amount = Amount::from_micro_units(micro_units).unwrap();
            assert_eq!(amount.to_string(), text);
        }
    }

    fn check_rounding(amount: &str, code: &str, expected: &str) {
        let currency = Currency::from_code(code).unwrap();
        let money = Amount::parse(amount).unwrap().round_to_minor_unit(currency);
        assert_eq!(money.to_string(), expected, "{amount} {code}");
    }

    #[test]
    fn rounds_half_away_from_zero_to_the_minor_unit() {
        check_rounding("0.125", "GBP", "0.13");
        check_rounding("-0.125", "GBP", "-0.13");
        check_rounding("0.124999", "GBP", "0.12");
        check_rounding("0.135", "GBP", "0.14");
        check_rounding("-0.004999", "GBP", "0.00");
        check_rounding("12.3", "EUR", "12.30");
        check_rounding("499.5", "JPY", "500");
        check_rounding("-499.5", "JPY", "-500");
        check_rounding("1.2345", "KWD", "1.235");
        check_rounding("1.2344", "BHD", "1.234");
    }

    #[test]
    fn currencies_come_from_the_table_and_unknown_codes_are_named() {
        assert_eq!(Currency::from_code("GBP").unwrap().minor_unit_digits(), 2);
        assert_eq!(Currency::from_code("JPY").unwrap().minor_unit_digits(), 0);
        assert_eq!(Currency::from_code("KWD").unwrap().minor_unit_digits(), 3);
        let error = Currency::from_code("XYZ").unwrap_err();
        assert_eq!(error, MoneyError::UnknownCurrency { code: "XYZ".into() });
        assert!(error.to_string().contains("`XYZ`"));
        assert!(Currency::from_code("gbp").is_err());
    }

    #[test]
    fn amounts_are_json_strings_and_numbers_are_refused() {
        let amount: Amount = serde_json::from_str("\"-3.10\"").unwrap();
        assert_eq!(serde_json::to_string(&amount).unwrap(), "\"-3.1\"");
        for number in ["12.34", "5", "-2"] {
            let error = serde_json::from_str::<Amount>(number).unwrap_err();
            assert!(
                error.to_string().contains("must be JSON strings"),
                "{error}"
            );
        }
        let error = serde_json::from_str::<Amount>("\"1e3\"").unwrap_err();
        assert!(error.to_string().contains("'e'"), "{error}");
        let currency: Currency = serde_json::from_str("\"EUR\"").unwrap();
        assert_eq!(serde_json::to_string(&currency).unwrap(), "\"EUR\"");
        let money = Amount::parse("7").unwrap().round_to_minor_unit(currency);
        assert_eq!(serde_json::to_string(&money).unwrap(), "\"7.00\"");
    }

    #[test]
    fn checked_arithmetic_reports_overflow() {
        let max = Amount::from_micro_units(MAX_AMOUNT_MICRO_UNITS).unwrap();
        let one = Amount::parse("0.000001").unwrap();
        assert_eq!(max.checked_add(one), Err(MoneyError::Overflow));
        assert_eq!(
            Amount::ZERO.checked_sub(max).unwrap().checked_sub(one),
            Err(MoneyError::Overflow)
        );
        assert_eq!(max.checked_mul_integer(2), Err(MoneyError::Overflow));
        assert_eq!(
            Amount::parse("0.5")
                .unwrap()
                .checked_mul_integer(31)
                .unwrap()
                .to_string(),
            "15.5"
        );
    }
}
