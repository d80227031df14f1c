//! Tariff math end to end: bills from energy deltas, data-driven with one `check`
//! helper, and property tests for tier boundaries, period resets, time-of-use band
//! edges, DST days, money rounding, order independence and budget replays.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gridpulse_domain::{
    Amount, BillAccumulator, BillError, BudgetState, CostBreakdown, Currency, Energy,
    EnergyLineItem, LocalDate, MoneyError, Tariff, TariffDefinition, assess_budget, cost_of_energy,
};
use proptest::prelude::*;

const ALL_DAYS: &str = r#"["mon","tue","wed","thu","fri","sat","sun"]"#;

fn tariff(energy: &str) -> Tariff {
    tariff_with(energy, "Europe/London", 1)
}

fn tariff_with(energy: &str, time_zone: &str, start_day: u8) -> Tariff {
    let json = format!(
        r#"{{"currency":"GBP","time_zone":"{time_zone}","billing_period_start_day":{start_day},"standing_charge_per_day":"0.50","energy":{energy}}}"#
    );
    serde_json::from_str::<TariffDefinition>(&json)
        .unwrap()
        .validate()
        .unwrap()
}

fn tiered(bounds_kwh: &[u32], rates: &[&str]) -> Tariff {
    let mut tiers: Vec<String> = bounds_kwh
        .iter()
        .zip(rates)
        .map(|(bound, rate)| format!(r#"{{"up_to_kwh":{bound},"rate_per_kwh":"{rate}"}}"#))
        .collect();
    tiers.push(format!(
        r#"{{"rate_per_kwh":"{}"}}"#,
        rates[bounds_kwh.len()]
    ));
    tariff(&format!(
        r#"{{"kind":"tiered","tiers":[{}]}}"#,
        tiers.join(",")
    ))
}

/// A time-of-use tariff with one band `[start, end)` every day, rate 0.10, default 0.30.
fn one_band(start: &str, end: &str) -> Tariff {
    tariff(&format!(
        r#"{{"kind":"time_of_use","default_rate_per_kwh":"0.30","bands":[{{"name":"cheap","days":{ALL_DAYS},"start":"{start}","end":"{end}","rate_per_kwh":"0.10"}}]}}"#
    ))
}

fn utc_ms(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

fn date(text: &str) -> LocalDate {
    text.parse().unwrap()
}

fn amount(text: &str) -> Amount {
    Amount::parse(text).unwrap()
}

/// Feeds `deltas` (UTC time, Wh) into the accumulator of the first delta's period.
fn accumulate(tariff: &Tariff, deltas: &[(i64, f64)]) -> BillAccumulator {
    let mut accumulator = BillAccumulator::for_period_containing(tariff, deltas[0].0).unwrap();
    for &(at, watt_hours) in deltas {
        accumulator
            .add_meter_energy(tariff, at, watt_hours)
            .unwrap();
    }
    accumulator
}

/// Lines as (label, kWh, cost) strings, for readable expectations.
fn lines(breakdown: &CostBreakdown) -> Vec<(String, String, String)> {
    breakdown
        .energy_lines
        .iter()
        .map(|line| {
            let label = match &line.item {
                EnergyLineItem::Flat => "flat".to_string(),
                EnergyLineItem::Tier { number, .. } => format!("tier {number}"),
                EnergyLineItem::Band { name } => name.clone(),
                EnergyLineItem::DefaultRate => "default".to_string(),
            };
            (label, line.energy.to_string(), line.cost.to_string())
        })
        .collect()
}

/// Bills the whole period of `deltas` and compares the lines, standing-charge days and
/// total.
fn check(tariff: &Tariff, deltas: &[(&str, f64)], expected: (&[(&str, &str, &str)], u32, &str)) {
    let deltas: Vec<(i64, f64)> = deltas.iter().map(|&(at, wh)| (utc_ms(at), wh)).collect();
    let bill = accumulate(tariff, &deltas)
        .bill_for_whole_period(tariff)
        .unwrap();
    let (want_lines, want_days, want_total) = expected;
    let want_lines: Vec<(String, String, String)> = want_lines
        .iter()
        .map(|&(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        .collect();
    assert_eq!(lines(&bill), want_lines);
    assert_eq!(bill.standing_charge.days, want_days);
    assert_eq!(bill.total.to_string(), want_total);
}

#[test]
fn itemised_bills() {
    // Flat: 100 kWh × 0.2457 = 24.57; 31 days × 0.50 = 15.50.
    check(
        &tariff(r#"{"kind":"flat","rate_per_kwh":"0.2457"}"#),
        &[
            ("2025-03-10T12:00:00Z", 60_000.0),
            ("2025-03-20T12:00:00Z", 40_000.0),
        ],
        (&[("flat", "100", "24.57")], 31, "40.07"),
    );
    // Tiered: 150 kWh = 100 at 0.20 + 50 at 0.30; 30 days in April.
    check(
        &tiered(&[100], &["0.20", "0.30"]),
        &[("2025-04-01T12:00:00Z", 150_000.0)],
        (
            &[("tier 1", "100", "20.00"), ("tier 2", "50", "15.00")],
            30,
            "50.00",
        ),
    );
    // Exactly at the bound: nothing in tier 2; one Wh over: 0.001 kWh in tier 2.
    check(
        &tiered(&[100, 250], &["0.20", "0.30", "0.40"]),
        &[("2025-04-01T12:00:00Z", 100_000.0)],
        (
            &[
                ("tier 1", "100", "20.00"),
                ("tier 2", "0", "0.00"),
                ("tier 3", "0", "0.00"),
            ],
            30,
            "35.00",
        ),
    );
    check(
        &tiered(&[100, 250], &["0.20", "0.30", "0.40"]),
        &[
            ("2025-04-01T12:00:00Z", 99_999.0),
            ("2025-04-01T12:01:00Z", 2.0),
        ],
        (
            &[
                ("tier 1", "100", "20.00"),
                ("tier 2", "0.001", "0.00"),
                ("tier 3", "0", "0.00"),
            ],
            30,
            "35.00",
        ),
    );
    // Time of use: 00:30 local in summer is 23:30 UTC the day before — but in April.
    check(
        &one_band("00:00", "07:00"),
        &[
            ("2025-04-09T23:30:00Z", 10_000.0), // 00:30 BST on the 10th: cheap
            ("2025-04-10T06:00:00Z", 10_000.0), // 07:00 BST: default (end is exclusive)
            ("2025-04-10T05:59:00Z", 5_000.0),  // 06:59 BST: cheap
        ],
        (
            &[("cheap", "15", "1.50"), ("default", "10", "3.00")],
            30,
            "19.50",
        ),
    );
    // Sum of rounded lines: 3 × 0.005 would be 0.015, rounded per line 0.01 × 3.
    check(
        &tariff(
            r#"{"kind":"time_of_use","default_rate_per_kwh":"0.005","bands":[
                {"name":"a","days":["mon"],"start":"00:00","end":"08:00","rate_per_kwh":"0.005"},
                {"name":"b","days":["mon"],"start":"08:00","end":"16:00","rate_per_kwh":"0.005"}]}"#,
        ),
        &[
            ("2025-01-06T01:00:00Z", 1_000.0),
            ("2025-01-06T09:00:00Z", 1_000.0),
            ("2025-01-06T17:00:00Z", 1_000.0),
        ],
        (
            &[
                ("a", "1", "0.01"),
                ("b", "1", "0.01"),
                ("default", "1", "0.01"),
            ],
            31,
            "15.53",
        ),
    );
}

#[test]
fn live_cost_today_period_to_date_and_estimate() {
    let tariff = tiered(&[10], &["0.20", "0.30"]);
    let mut accumulator =
        BillAccumulator::for_period_containing(&tariff, utc_ms("2025-01-15T00:00:00Z")).unwrap();
    // 8 kWh on the 2nd, 4 kWh on the 3rd: the 3rd crosses the 10 kWh bound.
    for (at, watt_hours) in [
        ("2025-01-02T10:00:00Z", 8_000.0),
        ("2025-01-03T10:00:00Z", 4_000.0),
    ] {
        accumulator
            .add_meter_energy(&tariff, utc_ms(at), watt_hours)
            .unwrap();
    }
    let today = accumulator
        .cost_of_local_day(&tariff, date("2025-01-03"))
        .unwrap();
    assert_eq!(
        lines(&today),
        [("tier 1", "2", "0.40"), ("tier 2", "2", "0.60")].map(|(a, b, c)| (
            a.to_string(),
            b.to_string(),
            c.to_string()
        ))
    );
    assert_eq!(today.standing_charge.days, 1);
    assert_eq!(today.total.to_string(), "1.50");
    let to_date = accumulator
        .cost_of_period_to_date(&tariff, utc_ms("2025-01-03T18:00:00Z"))
        .unwrap();
    assert_eq!(to_date.standing_charge.days, 3);
    assert_eq!(to_date.total.to_string(), "4.10"); // 2.00 + 0.60 + 1.50
    assert_eq!(
        (to_date.from_date, to_date.until_date),
        (date("2025-01-01"), date("2025-01-04"))
    );
    let estimate = accumulator
        .estimate_at_period_end(&tariff, Energy::from_kilowatt_hours(20))
        .unwrap();
    assert_eq!(estimate.energy.to_string(), "32");
    assert_eq!(estimate.total.to_string(), "24.10"); // 2.00 + 22 × 0.30 + 31 × 0.50
    // Energy of another period is refused, and nothing changed.
    let error = accumulator
        .add_meter_energy(&tariff, utc_ms("2025-02-01T00:00:00Z"), 1.0)
        .unwrap_err();
    assert!(
        matches!(error, BillError::InstantOutsidePeriod { .. }),
        "{error}"
    );
    assert!(matches!(
        accumulator.add_meter_energy(&tariff, utc_ms("2025-01-05T00:00:00Z"), -1.0),
        Err(BillError::InvalidEnergy(_))
    ));
    assert_eq!(
        accumulator.energy_in_period(),
        Energy::from_kilowatt_hours(12)
    );
    // Another tariff's accumulator is refused.
    let other = one_band("00:00", "07:00");
    assert_eq!(
        accumulator.bill_for_whole_period(&other),
        Err(BillError::TariffDoesNotMatch)
    );
    // Snapshots round-trip.
    let snapshot = serde_json::to_string(&accumulator).unwrap();
    let restored: BillAccumulator = serde_json::from_str(&snapshot).unwrap();
    assert_eq!(restored, accumulator);
}

#[test]
fn bills_serialize_with_string_amounts() {
    let tariff = tiered(&[10], &["0.20", "0.30"]);
    let accumulator = accumulate(&tariff, &[(utc_ms("2025-01-02T10:00:00Z"), 12_000.0)]);
    let bill = serde_json::to_value(accumulator.bill_for_whole_period(&tariff).unwrap()).unwrap();
    assert_eq!(bill["currency"], "GBP");
    assert_eq!(bill["period"], "2025-01");
    assert_eq!(bill["energy_kwh"], "12");
    assert_eq!(bill["total"], "18.10");
    assert_eq!(
        bill["energy_lines"][1],
        serde_json::json!({"item":{"kind":"tier","number":2,"from_kwh":10,"up_to_kwh":null},"energy_kwh":"2","rate_per_kwh":"0.3","cost":"0.60"})
    );
    assert_eq!(
        bill["standing_charge"],
        serde_json::json!({"days":31,"rate_per_day":"0.5","cost":"15.50"})
    );
}

/// Budget helper: (budget, spent, daily, today) → (basis points, thresholds, projected
/// end spend, projected date).
fn check_budget(input: (&str, &str, &str, &str), expected: (i64, &[u8], &str, Option<&str>)) {
    let tariff = tariff(r#"{"kind":"flat","rate_per_kwh":"0.2"}"#);
    let period = tariff.billing_period("2025-03".parse().unwrap()).unwrap();
    let (budget, spent, daily, today) = input;
    let assessment = assess_budget(
        amount(budget),
        amount(spent),
        amount(daily),
        date(today),
        &period,
    )
    .unwrap();
    let thresholds: Vec<u8> = assessment
        .thresholds_reached
        .iter()
        .map(|threshold| threshold.percent())
        .collect();
    assert_eq!(
        (
            assessment.used_basis_points,
            thresholds.as_slice(),
            assessment
                .projected_spend_at_period_end
                .to_string()
                .as_str(),
            assessment
                .projected_date_budget_reached
                .map(|d| d.to_string()),
        ),
        (
            expected.0,
            expected.1,
            expected.2,
            expected.3.map(str::to_string)
        ),
        "{input:?}"
    );
}

#[test]
fn budget_assessments() {
    check_budget(
        ("100", "69.99", "0", "2025-03-10"),
        (6999, &[], "69.99", None),
    );
    check_budget(("100", "70", "0", "2025-03-10"), (7000, &[70], "70", None));
    check_budget(
        ("100", "90", "1", "2025-03-31"),
        (9000, &[70, 90], "90", None),
    );
    check_budget(
        ("100", "100", "0", "2025-03-10"),
        (10000, &[70, 90, 100], "100", Some("2025-03-10")),
    );
    // 50 left at 2 a day: 25 days after the 1st → the 26th; 30 days left → 110.
    check_budget(
        ("100", "50", "2", "2025-03-01"),
        (5000, &[], "110", Some("2025-03-26")),
    );
    // 50 left at 1.60 a day: 31.25 → 32 days, past the period end.
    check_budget(("100", "50", "1.6", "2025-03-01"), (5000, &[], "98", None));
    check_budget(("100", "-5", "0", "2025-03-01"), (-500, &[], "-5", None));
    let tariff = tariff(r#"{"kind":"flat","rate_per_kwh":"0.2"}"#);
    let period = tariff.billing_period("2025-03".parse().unwrap()).unwrap();
    assert!(
        assess_budget(
            amount("0"),
            amount("1"),
            amount("1"),
            date("2025-03-02"),
            &period
        )
        .is_err()
    );
    assert!(
        assess_budget(
            amount("10"),
            amount("1"),
            amount("-1"),
            date("2025-03-02"),
            &period
        )
        .is_err()
    );
    assert!(
        assess_budget(
            amount("10"),
            amount("1"),
            amount("1"),
            date("2025-04-01"),
            &period
        )
        .is_err()
    );
}

#[test]
fn bad_input_gives_specific_errors() {
    let definition = |json: &str| {
        serde_json::from_str::<TariffDefinition>(json)
            .unwrap()
            .validate()
    };
    let error = definition(r#"{"currency":"XYZ","time_zone":"Europe/London","billing_period_start_day":1,"standing_charge_per_day":"0.5","energy":{"kind":"flat","rate_per_kwh":"0.2"}}"#).unwrap_err();
    assert_eq!(
        error.to_string(),
        "`currency` unknown currency `XYZ`: expected an ISO 4217 code such as GBP, EUR or USD"
    );
    assert_eq!(
        Currency::from_code("ABC"),
        Err(MoneyError::UnknownCurrency { code: "ABC".into() })
    );
    let error = definition(r#"{"currency":"GBP","time_zone":"Europe/London","billing_period_start_day":1,"standing_charge_per_day":"-0.5","energy":{"kind":"flat","rate_per_kwh":"0.2"}}"#).unwrap_err();
    assert_eq!(
        error.to_string(),
        "`standing_charge_per_day` must not be negative, got -0.5"
    );
    let error = definition(r#"{"currency":"GBP","time_zone":"Europe/London","billing_period_start_day":1,"standing_charge_per_day":"0.5","energy":{"kind":"tiered","tiers":[{"up_to_kwh":300,"rate_per_kwh":"0.2"},{"up_to_kwh":200,"rate_per_kwh":"0.2"},{"rate_per_kwh":"0.2"}]}}"#).unwrap_err();
    assert_eq!(
        error.to_string(),
        "`energy.tiers[1].up_to_kwh` tiers out of order: 200 kWh comes after the larger bound 300 kWh"
    );
    // Negative amounts are fine where they mean credits.
    assert!(amount("-12.34").is_negative());
}

// ---------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------

/// Tier bounds (whole kWh, strictly increasing) and rates (micro units).
fn tier_tariffs() -> impl Strategy<Value = (Vec<u32>, Vec<String>)> {
    (1_usize..5)
        .prop_flat_map(|count| {
            (
                proptest::collection::btree_set(1_u32..500, count),
                proptest::collection::vec(0_i128..2_000_000, count + 1),
            )
        })
        .prop_map(|(bounds, rates)| {
            let rates = rates
                .into_iter()
                .map(|micro| Amount::from_micro_units(micro).unwrap().to_string())
                .collect();
            (bounds.into_iter().collect(), rates)
        })
}

fn tier_energy(bill: &CostBreakdown) -> Vec<i64> {
    bill.energy_lines
        .iter()
        .map(|line| line.energy.milliwatt_hours())
        .collect()
}

/// The reference: kWh of a period total in each tier, computed tier by tier.
fn expected_tier_energy(bounds_kwh: &[u32], total_mwh: i64) -> Vec<i64> {
    let mut left = total_mwh;
    let mut lower = 0;
    let mut result = Vec::new();
    for &bound in bounds_kwh {
        let width = i64::from(bound) * 1_000_000 - lower;
        let used = left.min(width);
        result.push(used);
        left -= used;
        lower = i64::from(bound) * 1_000_000;
    }
    result.push(left);
    result
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Energy splits across tier bounds exactly, at or either side of a bound, however
    /// the deltas split it; each line is its exact cost rounded once, total = Σ lines.
    #[test]
    fn tiers_split_energy_at_their_bounds(
        (bounds, rates) in tier_tariffs(),
        pick_bound in any::<prop::sample::Index>(),
        offset_mwh in -3_i64..=3,
        split in 0.0_f64..=1.0,
    ) {
        let rate_refs: Vec<&str> = rates.iter().map(String::as_str).collect();
        let tariff = tiered(&bounds, &rate_refs);
        let bound = i64::from(bounds[pick_bound.index(bounds.len())]) * 1_000_000;
        let total = (bound + offset_mwh).max(0);
        let first = (total as f64 * split) as i64;
        let mut accumulator =
            BillAccumulator::for_period_containing(&tariff, utc_ms("2025-05-10T00:00:00Z")).unwrap();
        for (at, mwh) in [("2025-05-20T08:00:00Z", first), ("2025-05-03T08:00:00Z", total - first)] {
            accumulator.add_energy(&tariff, utc_ms(at), Energy::from_milliwatt_hours(mwh)).unwrap();
        }
        let bill = accumulator.bill_for_whole_period(&tariff).unwrap();
        prop_assert_eq!(tier_energy(&bill), expected_tier_energy(&bounds, total));
        let mut sum = bill.standing_charge.cost.minor_units();
        for line in &bill.energy_lines {
            prop_assert_eq!(line.cost, cost_of_energy(line.energy, line.rate_per_kwh, Currency::from_code("GBP").unwrap()));
            sum += line.cost.minor_units();
        }
        prop_assert_eq!(bill.total.minor_units(), sum);
        prop_assert_eq!(bill.energy.milliwatt_hours(), total);
    }

    /// A day's tier lines are the period's lines through that day minus those through
    /// the day before: tier position follows event time.
    #[test]
    fn a_days_tiers_follow_its_position_in_the_period(
        (bounds, rates) in tier_tariffs(),
        daily_kwh in proptest::collection::vec(0_u32..200, 1..10),
    ) {
        let rate_refs: Vec<&str> = rates.iter().map(String::as_str).collect();
        let tariff = tiered(&bounds, &rate_refs);
        let start = utc_ms("2025-01-01T12:00:00Z");
        let mut accumulator = BillAccumulator::for_period_containing(&tariff, start).unwrap();
        for (day, kwh) in daily_kwh.iter().enumerate().rev() {
            accumulator.add_energy(&tariff, start + day as i64 * 86_400_000, Energy::from_kilowatt_hours(*kwh)).unwrap();
        }
        let mut before = 0;
        for (day, kwh) in daily_kwh.iter().enumerate() {
            let date = LocalDate::new(2025, 1, 1).unwrap().plus_days(day as i64).unwrap();
            let today = accumulator.cost_of_local_day(&tariff, date).unwrap();
            let through: Vec<i64> = expected_tier_energy(&bounds, before + i64::from(*kwh) * 1_000_000);
            let prior = expected_tier_energy(&bounds, before);
            let expected: Vec<i64> = through.iter().zip(&prior).map(|(a, b)| a - b).collect();
            prop_assert_eq!(tier_energy(&today), expected);
            before += i64::from(*kwh) * 1_000_000;
        }
    }

    /// Tier position restarts at each period: two periods cost what each costs alone.
    #[test]
    fn tiers_reset_at_each_billing_period(
        (bounds, rates) in tier_tariffs(),
        start_day in 1_u8..=28,
        first_kwh in 0_u32..1000,
        second_kwh in 0_u32..1000,
    ) {
        let rate_refs: Vec<&str> = rates.iter().map(String::as_str).collect();
        let energy = {
            let mut tiers: Vec<String> = bounds.iter().zip(&rate_refs)
                .map(|(bound, rate)| format!(r#"{{"up_to_kwh":{bound},"rate_per_kwh":"{rate}"}}"#)).collect();
            tiers.push(format!(r#"{{"rate_per_kwh":"{}"}}"#, rate_refs[bounds.len()]));
            format!(r#"{{"kind":"tiered","tiers":[{}]}}"#, tiers.join(","))
        };
        let tariff = tariff_with(&energy, "Europe/London", start_day);
        let first = tariff.billing_period_containing(utc_ms("2025-06-15T12:00:00Z")).unwrap();
        let second = tariff.next_billing_period(&first).unwrap();
        let mut accumulator = BillAccumulator::new(&tariff, first);
        // The last minute of the first period and the first of the second.
        let deltas = [(second.start_utc_ms - 60_000, first_kwh), (second.start_utc_ms, second_kwh)];
        let mut bills = Vec::new();
        for (at, kwh) in deltas {
            let energy = Energy::from_kilowatt_hours(kwh);
            match accumulator.add_energy(&tariff, at, energy) {
                Err(BillError::InstantOutsidePeriod { .. }) => {
                    bills.push(accumulator.bill_for_whole_period(&tariff).unwrap());
                    accumulator = BillAccumulator::for_period_containing(&tariff, at).unwrap();
                    accumulator.add_energy(&tariff, at, energy).unwrap();
                }
                other => other.unwrap(),
            }
        }
        bills.push(accumulator.bill_for_whole_period(&tariff).unwrap());
        prop_assert_eq!(bills.len(), 2);
        prop_assert_eq!(bills[0].period, first.id);
        prop_assert_eq!(bills[1].period, second.id);
        prop_assert_eq!(tier_energy(&bills[0]), expected_tier_energy(&bounds, i64::from(first_kwh) * 1_000_000));
        prop_assert_eq!(tier_energy(&bills[1]), expected_tier_energy(&bounds, i64::from(second_kwh) * 1_000_000));
        prop_assert_eq!(accumulator.period().start_utc_ms, second.start_utc_ms);
        prop_assert_eq!(first.end_utc_ms, second.start_utc_ms);
    }

    /// A minute at a band's start is in the band, a minute at its end is not.
    #[test]
    fn band_edges_are_start_inclusive_end_exclusive(
        start in 0_u16..1439,
        length in 1_u16..1440,
        edge in 0_usize..5,
        any_minute in 0_u16..1440,
        day in 0_i64..365,
    ) {
        let end = (start + length).min(1440);
        // Mostly the edges themselves and their neighbours, sometimes anywhere.
        let minute = [start.checked_sub(1), Some(start), Some(end - 1), Some(end), Some(any_minute)][edge];
        let minute = match minute {
            Some(minute) if minute < 1440 => minute,
            _ => any_minute,
        };
        let hhmm = |minutes: u16| format!("{:02}:{:02}", minutes / 60, minutes % 60);
        // A US zone for variety; its DST changes happen at 02:00 local.
        let tariff = tariff_with(
            &format!(r#"{{"kind":"time_of_use","default_rate_per_kwh":"0.30","bands":[{{"name":"cheap","days":{ALL_DAYS},"start":"{}","end":"{}","rate_per_kwh":"0.10"}}]}}"#, hhmm(start), hhmm(end)),
            "America/New_York",
            1,
        );
        let local_day = LocalDate::new(2025, 1, 1).unwrap().plus_days(day).unwrap();
        let midnight = tariff.start_of_local_day(local_day).unwrap();
        let next_midnight = tariff.start_of_local_day(local_day.plus_days(1).unwrap()).unwrap();
        prop_assume!(next_midnight - midnight == 86_400_000); // DST days: the next property
        let at = midnight + i64::from(minute) * 60_000;
        let mut accumulator = BillAccumulator::for_period_containing(&tariff, at).unwrap();
        accumulator.add_energy(&tariff, at, Energy::from_kilowatt_hours(1)).unwrap();
        let bill = accumulator.cost_of_local_day(&tariff, local_day).unwrap();
        let in_band = (start..end).contains(&minute);
        prop_assert_eq!(bill.energy_lines[0].energy.milliwatt_hours(), if in_band { 1_000_000 } else { 0 });
        prop_assert_eq!(bill.energy_lines[1].energy.milliwatt_hours(), if in_band { 0 } else { 1_000_000 });
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// On London's 23-hour and 25-hour days a band gets what the wall clock says: the
    /// skipped hour 01:00–02:00 adds nothing in March, the repeated one counts twice in
    /// October; the day is still one day of standing charge.
    #[test]
    fn dst_days_price_bands_by_wall_clock_time(
        start in 0_u16..1439,
        length in 1_u16..1440,
        which in 0_usize..3,
    ) {
        let end = (start + length).min(1440);
        let hhmm = |minutes: u16| format!("{:02}:{:02}", minutes / 60, minutes % 60);
        let tariff = one_band(&hhmm(start), &hhmm(end));
        let (day, day_minutes, hour_effect) = [
            ("2025-03-30", 23 * 60, -1_i64),
            ("2025-10-26", 25 * 60, 1),
            ("2025-06-15", 24 * 60, 0),
        ][which];
        let local_day = date(day);
        let midnight = tariff.start_of_local_day(local_day).unwrap();
        let next_midnight = tariff.start_of_local_day(local_day.plus_days(1).unwrap()).unwrap();
        prop_assert_eq!(next_midnight - midnight, day_minutes * 60_000);
        let mut accumulator = BillAccumulator::for_period_containing(&tariff, midnight).unwrap();
        for minute in 0..day_minutes {
            accumulator.add_meter_energy(&tariff, midnight + minute * 60_000, 1.0).unwrap();
        }
        let overlap_with_one_am = i64::from(end.min(120)) - i64::from(start.max(60));
        let expected_band_minutes =
            i64::from(end - start) + hour_effect * overlap_with_one_am.max(0);
        let bill = accumulator.cost_of_local_day(&tariff, local_day).unwrap();
        prop_assert_eq!(bill.energy_lines[0].energy.milliwatt_hours(), expected_band_minutes * 1000);
        prop_assert_eq!(bill.energy.milliwatt_hours(), day_minutes * 1000);
        prop_assert_eq!(bill.standing_charge.days, 1);
        prop_assert_eq!(bill.standing_charge.cost.to_string(), "0.50");
    }

    /// The order deltas arrive in changes nothing: bill, today and period to date.
    #[test]
    fn accumulators_are_order_independent(
        deltas in proptest::collection::vec((0_i64..31 * 24 * 60, 0.0_f64..5000.0), 1..80),
        shuffle_seed in any::<u64>(),
        use_tiers in any::<bool>(),
    ) {
        let tariff = if use_tiers {
            tiered(&[5, 20], &["0.11", "0.22", "0.33"])
        } else {
            tariff(&format!(
                r#"{{"kind":"time_of_use","default_rate_per_kwh":"0.30","bands":[
                    {{"name":"night","days":{ALL_DAYS},"start":"00:00","end":"07:00","rate_per_kwh":"0.10"}},
                    {{"name":"peak","days":["mon","tue","wed","thu","fri"],"start":"16:00","end":"19:00","rate_per_kwh":"0.45"}}]}}"#
            ))
        };
        let start = utc_ms("2025-10-01T00:00:00Z") - 3_600_000; // local midnight, BST
        let deltas: Vec<(i64, f64)> = deltas.iter().map(|&(minute, wh)| (start + minute * 60_000, wh)).collect();
        let mut shuffled = deltas.clone();
        // Fisher–Yates with a tiny LCG: deterministic per case.
        let mut state = shuffle_seed | 1;
        for index in (1..shuffled.len()).rev() {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            shuffled.swap(index, (state >> 33) as usize % (index + 1));
        }
        let in_order = accumulate(&tariff, &deltas);
        let out_of_order = accumulate(&tariff, &shuffled);
        prop_assert_eq!(&in_order, &out_of_order);
        let as_of = start + 15 * 86_400_000;
        prop_assert_eq!(in_order.bill_for_whole_period(&tariff), out_of_order.bill_for_whole_period(&tariff));
        prop_assert_eq!(in_order.cost_of_period_to_date(&tariff, as_of), out_of_order.cost_of_period_to_date(&tariff, as_of));
        let day = date("2025-10-26");
        prop_assert_eq!(in_order.cost_of_local_day(&tariff, day), out_of_order.cost_of_local_day(&tariff, day));
        // The days add up to the period.
        let bill = in_order.bill_for_whole_period(&tariff).unwrap();
        let days: i64 = (0..31)
            .map(|offset| {
                let day = date("2025-10-01").plus_days(offset).unwrap();
                in_order.cost_of_local_day(&tariff, day).unwrap().energy.milliwatt_hours()
            })
            .sum();
        prop_assert_eq!(days, bill.energy.milliwatt_hours());
    }
}

proptest! {
    /// Rounding is half away from zero, within half a minor unit, symmetric in sign.
    #[test]
    fn rounding_to_the_minor_unit(
        micro_units in -10_i128.pow(24)..10_i128.pow(24),
        code in prop::sample::select(vec!["GBP", "JPY", "KWD", "EUR"]),
    ) {
        let currency = Currency::from_code(code).unwrap();
        let step = 10_i128.pow(6 - u32::from(currency.minor_unit_digits()));
        let amount = Amount::from_micro_units(micro_units).unwrap();
        let money = amount.round_to_minor_unit(currency);
        let back = money.to_amount().unwrap().micro_units();
        let error = micro_units - back;
        prop_assert!(error.abs() * 2 <= step, "{amount} → {money}");
        if error.abs() * 2 == step {
            prop_assert!(back.abs() > micro_units.abs(), "ties go away from zero");
        }
        let negated = Amount::from_micro_units(-micro_units).unwrap().round_to_minor_unit(currency);
        prop_assert_eq!(negated.minor_units(), -money.minor_units());
        // The presented text parses back to the rounded value.
        prop_assert_eq!(Amount::parse(&money.to_string()).unwrap().micro_units(), back);
    }

    /// Display and parse are inverse, and JSON carries the same string.
    #[test]
    fn amounts_round_trip_through_text(micro_units in -gridpulse_domain::money::MAX_AMOUNT_MICRO_UNITS..=gridpulse_domain::money::MAX_AMOUNT_MICRO_UNITS) {
        let amount = Amount::from_micro_units(micro_units).unwrap();
        prop_assert_eq!(Amount::parse(&amount.to_string()), Ok(amount));
        let json = serde_json::to_string(&amount).unwrap();
        prop_assert_eq!(serde_json::from_str::<Amount>(&json).unwrap(), amount);
    }

    /// Checked arithmetic is exact or an error: a unit is never lost to overflow.
    #[test]
    fn checked_arithmetic_is_exact_or_an_error(
        a in -gridpulse_domain::money::MAX_AMOUNT_MICRO_UNITS..=gridpulse_domain::money::MAX_AMOUNT_MICRO_UNITS,
        b in -gridpulse_domain::money::MAX_AMOUNT_MICRO_UNITS..=gridpulse_domain::money::MAX_AMOUNT_MICRO_UNITS,
        factor in any::<i64>(),
    ) {
        let max = gridpulse_domain::money::MAX_AMOUNT_MICRO_UNITS;
        let (x, y) = (Amount::from_micro_units(a).unwrap(), Amount::from_micro_units(b).unwrap());
        match x.checked_add(y) {
            Ok(sum) => prop_assert_eq!(sum.micro_units(), a + b),
            Err(error) => { prop_assert_eq!(error, MoneyError::Overflow); prop_assert!((a + b).abs() > max); }
        }
        match x.checked_sub(y) {
            Ok(difference) => prop_assert_eq!(difference.micro_units(), a - b),
            Err(error) => { prop_assert_eq!(error, MoneyError::Overflow); prop_assert!((a - b).abs() > max); }
        }
        match x.checked_mul_integer(factor) {
            Ok(product) => prop_assert_eq!(product.micro_units(), a * i128::from(factor)),
            Err(error) => { prop_assert_eq!(error, MoneyError::Overflow); prop_assert!(a.checked_mul(i128::from(factor)).is_none_or(|p| p.abs() > max)); }
        }
    }

    /// Each threshold fires at most once per period, whatever replays and stale data
    /// arrive, and every threshold reached in the newest period fires.
    #[test]
    fn budget_thresholds_fire_once_per_period_under_replays(
        events in proptest::collection::vec((0_u8..3, 0_u32..130), 1..40),
        replay_from in any::<prop::sample::Index>(),
    ) {
        let budget = amount("100");
        let tariff = tariff(r#"{"kind":"flat","rate_per_kwh":"0.2"}"#);
        let periods: Vec<_> = ["2025-01", "2025-02", "2025-03"].iter().map(|id| tariff.billing_period(id.parse().unwrap()).unwrap()).collect();
        let assess = |period_index: u8, spent: u32| {
            let period = &periods[usize::from(period_index)];
            let reached = assess_budget(budget, Amount::from_micro_units(i128::from(spent) * 1_000_000).unwrap(), Amount::ZERO, period.start_date, period)
                .unwrap()
                .thresholds_reached;
            (period.id, reached)
        };
        // Events in period order (spend may move either way), then a replay of a suffix.
        let mut events = events;
        events.sort_by_key(|&(period, _)| period);
        let replay = replay_from.index(events.len());
        let mut state = BudgetState::default();
        let mut fired = Vec::new();
        for &(period, spent) in events.iter().chain(&events[replay..]) {
            let (id, reached) = assess(period, spent);
            for threshold in state.newly_reached_thresholds(id, &reached) {
                fired.push((id, threshold));
            }
            // Snapshot and restore in between: the state is the whole memory.
            state = serde_json::from_str(&serde_json::to_string(&state).unwrap()).unwrap();
        }
        let mut unique = fired.clone();
        unique.sort();
        unique.dedup();
        prop_assert_eq!(unique.len(), fired.len(), "fired twice: {:?}", fired);
        for &(period, spent) in &events {
            let (id, reached) = assess(period, spent);
            for threshold in reached {
                prop_assert!(fired.contains(&(id, threshold)));
            }
        }
        // Replaying everything again changes nothing.
        for &(period, spent) in &events {
            let (id, reached) = assess(period, spent);
            prop_assert!(state.newly_reached_thresholds(id, &reached).is_empty());
        }
        let newest = events.last().map(|&(period, _)| periods[usize::from(period)].id);
        prop_assert_eq!(state.period(), newest);
    }
}
