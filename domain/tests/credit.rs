//! The prepaid credit ledger: unit tests for every error, daily usage logging, auto
//! top-up and alert fire-once/re-arm, and property tests for top-up idempotency,
//! interleaved retries, auto top-up uniqueness across restarts, replayed minutes and
//! the append-only log.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use gridpulse_domain::credit::DAY_MS;
use gridpulse_domain::{
    Amount, AutoTopUp, CreditAccount, CreditAlert, CreditError, CreditEvent, CreditSettings,
    Currency, MeterId, TopUpStatus, Transaction, TransactionKind,
};
use proptest::prelude::*;

/// 2026-12-01T00:00:00Z.
const T0: i64 = 1_796_083_200_000;
const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
const CYCLE: &str = "2026-12";

fn cents(n: i64) -> Amount {
    Amount::from_micro_units(i128::from(n) * 10_000).unwrap()
}

fn units(n: i64) -> Amount {
    cents(n * 100)
}

fn meter() -> MeterId {
    MeterId::new("meter-01").unwrap()
}

fn settings(low: i64, auto: Option<(i64, i64)>) -> CreditSettings {
    CreditSettings {
        low_credit_threshold: units(low),
        run_out_warning_hours: 24,
        auto_top_up: auto.map(|(trigger, amount)| AutoTopUp {
            trigger: units(trigger),
            amount: units(amount),
        }),
    }
}

fn account(settings: CreditSettings) -> CreditAccount {
    CreditAccount::new(meter(), Currency::from_code("GBP").unwrap(), settings).unwrap()
}

fn all_transactions(account: &CreditAccount) -> Vec<Transaction> {
    account.transactions(0, usize::MAX).to_vec()
}

fn round_trip(account: &CreditAccount) -> CreditAccount {
    serde_json::from_str(&serde_json::to_string(account).unwrap()).unwrap()
}

/// The ledger invariants: seqs 1, 2, 3, …; each `balance_after` is the previous one plus
/// the entry's amount; the last `balance_after` plus the unposted day is the balance.
fn check_ledger(account: &CreditAccount) {
    let log = all_transactions(account);
    let mut posted = Amount::ZERO;
    for (index, entry) in log.iter().enumerate() {
        assert_eq!(entry.seq, index as u64 + 1, "{log:?}");
        posted = posted.checked_add(entry.amount).unwrap();
        assert_eq!(entry.balance_after, posted, "{log:?}");
        match entry.kind {
            TransactionKind::Usage => assert!(entry.amount < Amount::ZERO, "{entry:?}"),
            _ => assert!(entry.amount > Amount::ZERO, "{entry:?}"),
        }
    }
    assert!(account.unposted_usage() <= Amount::ZERO);
    assert_eq!(
        posted.checked_add(account.unposted_usage()).unwrap(),
        account.balance(),
        "{log:?}"
    );
}

fn minus(a: Amount, b: Amount) -> Amount {
    a.checked_sub(b).unwrap()
}

fn kinds(account: &CreditAccount) -> Vec<TransactionKind> {
    all_transactions(account).iter().map(|t| t.kind).collect()
}

// ---------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------

#[test]
fn settings_validation_names_the_field() {
    let cases = [
        (settings(-1, None), "low_credit_threshold"),
        (settings(1, Some((-1, 5))), "auto_top_up.trigger"),
        (settings(1, Some((2, -5))), "auto_top_up.amount"),
        (settings(1, Some((2, 0))), "auto_top_up.amount"),
        (
            CreditSettings {
                run_out_warning_hours: 24 * 366 + 1,
                ..CreditSettings::default()
            },
            "run_out_warning_hours",
        ),
    ];
    for (bad, field) in cases {
        let error = bad.validate().unwrap_err();
        assert_eq!(error.field(), Some(field), "{bad:?}");
        assert!(error.to_string().contains(field), "{error}");
        let gbp = Currency::from_code("GBP").unwrap();
        assert_eq!(CreditAccount::new(meter(), gbp, bad).unwrap_err(), error);
        let mut good = account(settings(1, None));
        let before = good.clone();
        assert_eq!(good.set_settings(bad).unwrap_err(), error);
        assert_eq!(good, before);
    }
    assert_eq!(
        settings(1, Some((-1, 5))).validate(),
        Err(CreditError::NegativeAmount {
            field: "auto_top_up.trigger",
            amount: units(-1),
        })
    );
    assert_eq!(
        settings(1, Some((2, 0))).validate(),
        Err(CreditError::AmountNotPositive {
            field: "auto_top_up.amount",
            amount: Amount::ZERO,
        })
    );
    settings(0, Some((0, 1))).validate().unwrap();
}

#[test]
fn settings_json_has_defaults_and_refuses_unknown_keys_and_numbers() {
    let parsed: CreditSettings = serde_json::from_str(r#"{"low_credit_threshold":"5"}"#).unwrap();
    assert_eq!(parsed, settings(5, None));
    assert_eq!(parsed.run_out_warning_hours, 24);
    let auto: CreditSettings =
        serde_json::from_str(r#"{"auto_top_up":{"trigger":"2","amount":"10.50"}}"#).unwrap();
    assert_eq!(auto.auto_top_up.unwrap().amount, cents(1050));
    let unknown = serde_json::from_str::<CreditSettings>(r#"{"low":"5"}"#).unwrap_err();
    assert!(unknown.to_string().contains("unknown field"), "{unknown}");
    let number =
        serde_json::from_str::<CreditSettings>(r#"{"low_credit_threshold":5}"#).unwrap_err();
    assert!(number.to_string().contains("JSON strings"), "{number}");
}

#[test]
fn top_up_refuses_zero_and_negative_amounts_and_bad_keys_changing_nothing() {
    let mut account = account(settings(1, None));
    account.top_up("first", units(10), T0).unwrap();
    let before = account.clone();
    for amount in [Amount::ZERO, cents(-1), units(-10)] {
        assert_eq!(
            account.top_up("k", amount, T0),
            Err(CreditError::AmountNotPositive {
                field: "amount",
                amount
            })
        );
    }
    // A bad amount is refused even under a key already used.
    assert_eq!(
        account
            .top_up("first", Amount::ZERO, T0)
            .unwrap_err()
            .field(),
        Some("amount")
    );
    for key in ["", "has space", "é", &"k".repeat(65)] {
        assert_eq!(
            account.top_up(key, units(1), T0),
            Err(CreditError::InvalidIdentifier {
                field: "idempotency_key"
            }),
            "{key:?}"
        );
    }
    assert_eq!(account, before);
    account.top_up(&"k".repeat(64), units(1), T0).unwrap();
}

#[test]
fn top_up_key_reuse_replays_or_conflicts() {
    let mut account = account(settings(1, None));
    let first = account.top_up("pay-1", units(10), T0).unwrap();
    assert!(!first.replayed);
    assert_eq!(first.status, TopUpStatus::Completed);
    assert_eq!(first.transaction_seq, 1);
    assert_eq!(first.events.len(), 1);
    assert_eq!(account.balance(), units(10));
    let before = account.clone();

    let replay = account.top_up("pay-1", units(10), T0 + 5_000).unwrap();
    assert!(replay.replayed);
    assert_eq!((replay.at_ms, replay.transaction_seq), (T0, 1));
    assert!(replay.events.is_empty());
    assert_eq!(account, before);

    let conflict = account.top_up("pay-1", units(11), T0).unwrap_err();
    assert_eq!(
        conflict,
        CreditError::IdempotencyConflict {
            key: "pay-1".into(),
            original_amount: units(10),
            requested_amount: units(11),
        }
    );
    assert_eq!(conflict.field(), None);
    assert!(conflict.to_string().contains("pay-1"), "{conflict}");
    assert_eq!(account, before);
}

#[test]
fn charge_refuses_negative_costs_and_bad_cycles_changing_nothing() {
    let mut account = account(settings(1, None));
    account.charge(T0, cents(5), CYCLE).unwrap();
    let before = account.clone();
    assert_eq!(
        account.charge(T0 + MINUTE_MS, cents(-1), CYCLE),
        Err(CreditError::NegativeAmount {
            field: "cost",
            amount: cents(-1)
        })
    );
    for cycle in ["", "2026/12"] {
        assert_eq!(
            account
                .charge(T0 + MINUTE_MS, cents(1), cycle)
                .unwrap_err()
                .field(),
            Some("cycle")
        );
    }
    assert_eq!(account, before);
}

#[test]
fn confirm_and_fail_of_an_unknown_request_are_refused() {
    let mut account = account(settings(1, Some((5, 10))));
    account.charge(T0, cents(1), CYCLE).unwrap();
    assert!(account.pending_auto_top_up().is_some());
    let before = account.clone();
    let unknown = CreditError::UnknownTopUp {
        id: "meter-01:2026-12:2".into(),
    };
    assert_eq!(
        account.confirm("meter-01:2026-12:2", T0),
        Err(unknown.clone())
    );
    assert_eq!(
        account.fail("meter-01:2026-12:2", "declined", T0),
        Err(unknown)
    );
    assert_eq!(account, before);
}

#[test]
fn resolved_requests_refuse_the_other_outcome_and_repeat_their_own() {
    let mut account = account(settings(1, Some((5, 10))));
    // First request: fails.
    let charged = account.charge(T0, cents(1), CYCLE).unwrap();
    let [CreditEvent::AutoTopUpRequested { id, sequence, .. }] = charged.events.as_slice() else {
        panic!("{charged:?}");
    };
    assert_eq!((id.as_str(), *sequence), ("meter-01:2026-12:1", 1));
    let failed = account.fail(id, "card declined", T0 + 1).unwrap();
    assert!(!failed.already);
    assert_eq!(failed.request.status, TopUpStatus::Failed);
    assert_eq!(
        failed.request.failure_reason.as_deref(),
        Some("card declined")
    );
    let before = account.clone();
    assert!(account.fail(id, "again", T0 + 2).unwrap().already);
    assert_eq!(
        account.confirm(id, T0 + 3),
        Err(CreditError::InvalidTransition {
            id: id.clone(),
            status: TopUpStatus::Failed,
            requested: TopUpStatus::Confirmed,
        })
    );
    assert_eq!(account, before);

    // Still below the trigger: the next charge asks again, sequence 2; it is confirmed.
    let charged = account.charge(T0 + MINUTE_MS, cents(1), CYCLE).unwrap();
    let [CreditEvent::AutoTopUpRequested { id, sequence, .. }] = charged.events.as_slice() else {
        panic!("{charged:?}");
    };
    assert_eq!((id.as_str(), *sequence), ("meter-01:2026-12:2", 2));
    let confirmed = account.confirm(id, T0 + 4).unwrap();
    assert!(!confirmed.already);
    assert_eq!(confirmed.request.transaction_seq, Some(1));
    assert_eq!(account.balance(), minus(units(10), cents(2)));
    let before = account.clone();
    let again = account.confirm(id, T0 + 5).unwrap();
    assert!(again.already && again.events.is_empty());
    let error = account.fail(id, "late", T0 + 6).unwrap_err();
    assert_eq!(
        error,
        CreditError::InvalidTransition {
            id: id.clone(),
            status: TopUpStatus::Confirmed,
            requested: TopUpStatus::Failed,
        }
    );
    assert!(error.to_string().contains("confirmed"), "{error}");
    assert_eq!(account, before);
}

// ---------------------------------------------------------------------------------
// Usage, auto top-up, alerts, read side
// ---------------------------------------------------------------------------------

#[test]
fn usage_is_logged_once_per_utc_day_and_always_counted_in_the_balance() {
    let mut account = account(settings(1, None));
    account.top_up("t", units(10), T0 + 5 * MINUTE_MS).unwrap();
    for minute in 0..3 {
        let charged = account
            .charge(T0 + minute * MINUTE_MS, cents(10), CYCLE)
            .unwrap();
        assert!(charged.applied);
    }
    // Today's usage is in the balance but not yet in the log.
    assert_eq!(account.balance(), minus(units(10), cents(30)));
    assert_eq!(account.unposted_usage(), cents(-30));
    assert_eq!(kinds(&account), [TransactionKind::TopUp]);
    assert!(!account.close_day(T0 + DAY_MS - 1));
    // The first minute of the next day logs the previous one.
    account.charge(T0 + DAY_MS, cents(7), CYCLE).unwrap();
    let log = all_transactions(&account);
    assert_eq!(log.len(), 2);
    assert_eq!(
        (log[1].kind, log[1].amount, log[1].at_ms, log[1].seq),
        (TransactionKind::Usage, cents(-30), T0, 2)
    );
    assert_eq!(log[1].balance_after, minus(units(10), cents(30)));
    assert_eq!(account.unposted_usage(), cents(-7));
    check_ledger(&account);
    // A checkpoint on a later day logs the running day once.
    assert!(account.close_day(T0 + 2 * DAY_MS));
    assert!(!account.close_day(T0 + 3 * DAY_MS));
    assert_eq!(account.unposted_usage(), Amount::ZERO);
    assert_eq!(all_transactions(&account)[2].amount, cents(-7));
    check_ledger(&account);
    // A day without cost logs nothing.
    account
        .charge(T0 + 3 * DAY_MS, Amount::ZERO, CYCLE)
        .unwrap();
    account.charge(T0 + 4 * DAY_MS, cents(1), CYCLE).unwrap();
    assert_eq!(all_transactions(&account).len(), 3);
    check_ledger(&account);
}

#[test]
fn auto_top_up_asks_once_per_pending_request_numbered_per_cycle() {
    let mut account = account(settings(0, Some((5, 20))));
    account.top_up("t", units(6), T0).unwrap();
    // Above the trigger: nothing.
    assert!(
        account
            .charge(T0, cents(50), CYCLE)
            .unwrap()
            .events
            .is_empty()
    );
    // Below: one request; while it is pending, nothing more.
    let charged = account.charge(T0 + MINUTE_MS, cents(60), CYCLE).unwrap();
    assert_eq!(
        charged.events,
        [CreditEvent::AutoTopUpRequested {
            meter: meter(),
            currency: Currency::from_code("GBP").unwrap(),
            id: "meter-01:2026-12:1".into(),
            amount: units(20),
            cycle: CYCLE.into(),
            sequence: 1,
            at_ms: T0 + MINUTE_MS,
        }]
    );
    for minute in 2..10 {
        let charged = account
            .charge(T0 + minute * MINUTE_MS, cents(60), CYCLE)
            .unwrap();
        assert!(charged.events.is_empty(), "{charged:?}");
    }
    assert_eq!(account.auto_top_ups().len(), 1);
    let pending = account.pending_auto_top_up().unwrap().clone();
    assert_eq!(pending.status, TopUpStatus::Pending);
    let confirmed = account.confirm(&pending.id, T0 + HOUR_MS).unwrap();
    assert_eq!(confirmed.events.len(), 1);
    assert_eq!(account.balance(), cents(600 - 50 - 9 * 60 + 2000));
    assert!(account.pending_auto_top_up().is_none());
    let log = all_transactions(&account);
    let last = log.last().unwrap();
    assert_eq!(
        (last.kind, last.amount, last.reference.as_deref()),
        (
            TransactionKind::AutoTopUp,
            units(20),
            Some("meter-01:2026-12:1")
        )
    );
    // Back above the trigger: nothing; a new cycle numbers from 1 again.
    assert!(
        account
            .charge(T0 + 10 * MINUTE_MS, cents(1), CYCLE)
            .unwrap()
            .events
            .is_empty()
    );
    let charged = account
        .charge(T0 + 31 * DAY_MS, units(20), "2027-01")
        .unwrap();
    let [CreditEvent::AutoTopUpRequested { id, .. }] = charged.events.as_slice() else {
        panic!("{charged:?}");
    };
    assert_eq!(id, "meter-01:2027-01:1");
    check_ledger(&account);
}

fn raised(events: &[CreditEvent]) -> Vec<CreditAlert> {
    events
        .iter()
        .filter_map(|event| match event {
            CreditEvent::AlertRaised { alert, .. } => Some(*alert),
            _ => None,
        })
        .collect()
}

fn cleared(events: &[CreditEvent]) -> Vec<CreditAlert> {
    events
        .iter()
        .filter_map(|event| match event {
            CreditEvent::AlertCleared { alert, .. } => Some(*alert),
            _ => None,
        })
        .collect()
}

#[test]
fn alerts_fire_once_survive_a_restart_and_re_arm_after_clearing() {
    let mut account = account(settings(5, None));
    account.top_up("t", units(10), T0).unwrap();
    let burn = cents(10); // per hour: 24 h need 2.40
    assert!(account.evaluate_alerts(burn, T0).is_empty());

    account.charge(T0, cents(550), CYCLE).unwrap(); // 4.50
    let events = account.evaluate_alerts(burn, T0 + 1);
    assert_eq!(raised(&events), [CreditAlert::LowCredit]);
    let [
        CreditEvent::AlertRaised {
            balance, threshold, ..
        },
    ] = events.as_slice()
    else {
        panic!("{events:?}");
    };
    assert_eq!((*balance, *threshold), (cents(450), units(5)));
    assert!(account.evaluate_alerts(burn, T0 + 2).is_empty());
    assert!(
        round_trip(&account)
            .evaluate_alerts(burn, T0 + 3)
            .is_empty()
    );

    account.charge(T0 + MINUTE_MS, cents(250), CYCLE).unwrap(); // 2.00 ≤ 2.40
    let events = account.evaluate_alerts(burn, T0 + 4);
    assert_eq!(raised(&events), [CreditAlert::RunningOut]);
    let [CreditEvent::AlertRaised { threshold, .. }] = events.as_slice() else {
        panic!("{events:?}");
    };
    assert_eq!(*threshold, cents(240));

    account.charge(T0 + 2 * MINUTE_MS, units(2), CYCLE).unwrap(); // 0
    let events = account.evaluate_alerts(burn, T0 + 5);
    assert_eq!(raised(&events), [CreditAlert::Exhausted]);
    assert!(cleared(&events).is_empty());
    let mut restored = round_trip(&account);
    assert!(restored.evaluate_alerts(burn, T0 + 6).is_empty());
    assert_eq!(
        restored.status().active_alerts,
        [
            CreditAlert::LowCredit,
            CreditAlert::RunningOut,
            CreditAlert::Exhausted
        ]
    );

    // A top-up clears them (no burn: not running out either) …
    account.top_up("t2", units(20), T0 + HOUR_MS).unwrap();
    let events = account.evaluate_alerts(Amount::ZERO, T0 + HOUR_MS);
    assert_eq!(
        cleared(&events),
        [
            CreditAlert::LowCredit,
            CreditAlert::RunningOut,
            CreditAlert::Exhausted
        ]
    );
    assert!(raised(&events).is_empty());
    assert!(account.active_alerts().is_empty());
    assert!(
        account
            .evaluate_alerts(Amount::ZERO, T0 + HOUR_MS)
            .is_empty()
    );
    // … and re-arms them.
    account.charge(T0 + 2 * HOUR_MS, units(16), CYCLE).unwrap(); // 4.00
    assert_eq!(
        raised(&account.evaluate_alerts(burn, T0 + 2 * HOUR_MS)),
        [CreditAlert::LowCredit]
    );
    // A negative burn rate counts as none.
    account.charge(T0 + 3 * HOUR_MS, units(3), CYCLE).unwrap(); // 1.00
    assert!(
        account
            .evaluate_alerts(cents(-10), T0 + 3 * HOUR_MS)
            .is_empty()
    );
}

#[test]
fn days_of_credit_left_is_a_forecast_and_none_without_usage() {
    let mut account = account(settings(0, None));
    account.top_up("t", units(10), T0).unwrap();
    assert_eq!(account.days_of_credit_left(units(4)), Some(2.5));
    assert_eq!(account.days_of_credit_left(Amount::ZERO), None);
    assert_eq!(account.days_of_credit_left(cents(-1)), None);
    account.charge(T0, units(12), CYCLE).unwrap();
    assert_eq!(account.days_of_credit_left(units(4)), Some(0.0));
}

#[test]
fn status_rounds_the_balance_and_transactions_page_by_seq() {
    let mut account = account(settings(0, Some((5, 10))));
    account
        .top_up("t", Amount::parse("10.005").unwrap(), T0)
        .unwrap();
    let status = account.status();
    assert_eq!(status.balance.to_string(), "10.01");
    assert_eq!(status.pending_auto_top_up, None);
    assert_eq!(status.last_seq, 1);
    account.charge(T0, units(6), CYCLE).unwrap();
    let json = serde_json::to_value(account.status()).unwrap();
    assert_eq!(json["balance"], "4.01");
    assert_eq!(json["currency"], "GBP");
    assert_eq!(json["pending_auto_top_up"]["id"], "meter-01:2026-12:1");
    assert_eq!(json["pending_auto_top_up"]["status"], "pending");

    for (n, key) in ["a", "b", "c", "d"].into_iter().enumerate() {
        account.top_up(key, units(n as i64 + 1), T0).unwrap();
    }
    let seqs = |after, limit| -> Vec<u64> {
        account
            .transactions(after, limit)
            .iter()
            .map(|t| t.seq)
            .collect()
    };
    assert_eq!(seqs(0, 2), [1, 2]);
    assert_eq!(seqs(2, 10), [3, 4, 5]);
    assert_eq!(seqs(5, 10), Vec::<u64>::new());
    assert_eq!(seqs(1, 0), Vec::<u64>::new());
}

#[test]
fn events_and_the_account_are_tagged_snake_case_json_with_string_amounts() {
    let mut account = account(settings(0, Some((5, 10))));
    let event = &account.charge(T0, cents(150), CYCLE).unwrap().events[0];
    let json = serde_json::to_value(event).unwrap();
    assert_eq!(
        json,
        serde_json::json!({
            "type": "auto_top_up_requested", "meter": "meter-01", "currency": "GBP",
            "id": "meter-01:2026-12:1", "amount": "10", "cycle": "2026-12",
            "sequence": 1, "at_ms": T0,
        })
    );
    assert_eq!(
        serde_json::from_value::<CreditEvent>(json).unwrap(),
        event.clone()
    );
    let alerts = account.evaluate_alerts(Amount::ZERO, T0);
    // Below a zero low-credit threshold and used up; no burn rate, so not running out.
    assert_eq!(
        raised(&alerts),
        [CreditAlert::LowCredit, CreditAlert::Exhausted]
    );
    let json = serde_json::to_value(&alerts[1]).unwrap();
    assert_eq!(json["type"], "alert_raised");
    assert_eq!(json["alert"], "exhausted");
    assert_eq!(json["balance"], "-1.5");
    let stored = serde_json::to_value(&account).unwrap();
    assert_eq!(stored["balance"], "-1.5");
    assert_eq!(round_trip(&account), account);
}

// ---------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum TopUpOrCharge {
    TopUp { key: u8, amount_units: i64 },
    Charge { gap_minutes: i64, cost_cents: i64 },
}

fn top_up_or_charge() -> impl Strategy<Value = TopUpOrCharge> {
    prop_oneof![
        (0u8..6, 1i64..4)
            .prop_map(|(key, amount_units)| TopUpOrCharge::TopUp { key, amount_units }),
        (1i64..900, 0i64..300).prop_map(|(gap_minutes, cost_cents)| TopUpOrCharge::Charge {
            gap_minutes,
            cost_cents
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (a) Each key is credited exactly once, with its first amount; replays and
    /// conflicts change nothing; balance = Σ distinct first-seen top-ups − Σ charges.
    #[test]
    fn top_ups_credit_each_key_exactly_once(ops in prop::collection::vec(top_up_or_charge(), 0..60)) {
        let mut account = account(settings(0, None));
        let mut first_seen: BTreeMap<String, (Amount, u64)> = BTreeMap::new();
        let (mut minute, mut charged) = (T0, Amount::ZERO);
        for (step, op) in ops.iter().enumerate() {
            let at_ms = T0 + step as i64;
            match *op {
                TopUpOrCharge::TopUp { key, amount_units } => {
                    let (key, amount) = (format!("key-{key}"), units(amount_units));
                    let before = account.clone();
                    let result = account.top_up(&key, amount, at_ms);
                    match first_seen.get(&key) {
                        None => {
                            let outcome = result.unwrap();
                            prop_assert!(!outcome.replayed);
                            first_seen.insert(key, (amount, outcome.transaction_seq));
                        }
                        Some(&(original, seq)) if original == amount => {
                            let outcome = result.unwrap();
                            prop_assert!(outcome.replayed);
                            prop_assert_eq!(outcome.transaction_seq, seq);
                            prop_assert_eq!(&account, &before);
                        }
                        Some(&(original, _)) => {
                            prop_assert_eq!(result.unwrap_err(), CreditError::IdempotencyConflict {
                                key, original_amount: original, requested_amount: amount,
                            });
                            prop_assert_eq!(&account, &before);
                        }
                    }
                }
                TopUpOrCharge::Charge { gap_minutes, cost_cents } => {
                    minute += gap_minutes * MINUTE_MS;
                    prop_assert!(account.charge(minute, cents(cost_cents), CYCLE).unwrap().applied);
                    charged = charged.checked_add(cents(cost_cents)).unwrap();
                }
            }
        }
        let credited = first_seen.values().fold(Amount::ZERO, |sum, (a, _)| sum.checked_add(*a).unwrap());
        prop_assert_eq!(account.balance(), minus(credited, charged));
        let mut references: Vec<String> = all_transactions(&account)
            .into_iter()
            .filter(|t| t.kind == TransactionKind::TopUp)
            .map(|t| t.reference.unwrap())
            .collect();
        references.sort();
        prop_assert_eq!(references, first_seen.keys().cloned().collect::<Vec<_>>());
        check_ledger(&account);
    }
}

/// One step of an interleaving: the next charge (charges keep their order) or request i.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Charge,
    Request(usize),
}

/// Runs `charges` in order and `requests` (key, amount) where `slots` puts them.
fn run_interleaving(
    slots: &[Slot],
    charges: &[(i64, i64)],
    requests: &[(u8, i64)],
) -> CreditAccount {
    let mut account = account(settings(0, None));
    let (mut minute, mut next_charge) = (T0, 0);
    for (step, slot) in slots.iter().enumerate() {
        match *slot {
            Slot::Charge => {
                let (gap_minutes, cost_cents) = charges[next_charge];
                next_charge += 1;
                minute += gap_minutes * MINUTE_MS;
                assert!(
                    account
                        .charge(minute, cents(cost_cents), CYCLE)
                        .unwrap()
                        .applied
                );
            }
            Slot::Request(i) => {
                let (key, amount_units) = requests[i];
                account
                    .top_up(&format!("key-{key}"), units(amount_units), T0 + step as i64)
                    .unwrap();
            }
        }
    }
    account
}

/// The log without what depends on arrival order (seq, at_ms, balance_after).
fn log_content(account: &CreditAccount) -> Vec<(Option<String>, i128, u8)> {
    let mut content: Vec<_> = all_transactions(account)
        .into_iter()
        .map(|t| (t.reference, t.amount.micro_units(), t.kind as u8))
        .collect();
    content.sort();
    content
}

/// (gap minutes, cost cents) per charge, in order.
type Charges = Vec<(i64, i64)>;
/// (key, amount units) per top-up request.
type Requests = Vec<(u8, i64)>;

fn interleavings() -> impl Strategy<Value = (Charges, Requests, Vec<Slot>, Vec<Slot>)> {
    (
        prop::collection::vec((1i64..900, 0i64..300), 0..20),
        prop::array::uniform6(1i64..50),
        prop::collection::vec(0u8..6, 0..30),
    )
        .prop_flat_map(|(charges, amounts, keys)| {
            // Each key always comes with the same amount: retries of one request.
            let requests: Vec<(u8, i64)> = keys
                .iter()
                .map(|&key| (key, amounts[usize::from(key)]))
                .collect();
            let slots: Vec<Slot> = core::iter::repeat_n(Slot::Charge, charges.len())
                .chain((0..requests.len()).map(Slot::Request))
                .collect();
            (
                Just(charges),
                Just(requests),
                Just(slots.clone()).prop_shuffle(),
                Just(slots).prop_shuffle(),
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (b) Concurrent retries, in any interleaving with the meter's charges, give the
    /// same balance and the same log content; each key is credited once.
    #[test]
    fn interleaved_retries_give_the_same_balance_and_log(
        (charges, requests, first, second) in interleavings()
    ) {
        let a = run_interleaving(&first, &charges, &requests);
        let b = run_interleaving(&second, &charges, &requests);
        prop_assert_eq!(a.balance(), b.balance());
        prop_assert_eq!(a.unposted_usage(), b.unposted_usage());
        prop_assert_eq!(log_content(&a), log_content(&b));
        let distinct: std::collections::BTreeSet<u8> = requests.iter().map(|r| r.0).collect();
        let top_ups = all_transactions(&a).iter().filter(|t| t.kind == TransactionKind::TopUp).count();
        prop_assert_eq!(top_ups, distinct.len());
        check_ledger(&a);
        check_ledger(&b);
    }
}

#[derive(Debug, Clone)]
enum AutoOp {
    Charge { gap_minutes: i64, cost_cents: i64 },
    Confirm(usize),
    Fail(usize),
    ConfirmUnknown,
}

fn auto_op() -> impl Strategy<Value = AutoOp> {
    prop_oneof![
        4 => (1i64..4000, 0i64..200).prop_map(|(gap_minutes, cost_cents)| AutoOp::Charge {
            gap_minutes,
            cost_cents
        }),
        2 => any::<usize>().prop_map(AutoOp::Confirm),
        2 => any::<usize>().prop_map(AutoOp::Fail),
        1 => Just(AutoOp::ConfirmUnknown),
    ]
}

const AUTO_TRIGGER_UNITS: i64 = 5;

/// Billing cycles of one week, so that long runs cross cycles.
fn cycle_of(minute_ms: i64) -> String {
    format!("w{}", minute_ms.div_euclid(7 * DAY_MS))
}

/// Applies `op` at step `step` (the clock of confirm/fail), checking each outcome
/// against the request's status before the call. Returns the charge made, if any.
fn apply_auto_op(
    account: &mut CreditAccount,
    op: &AutoOp,
    minute: &mut i64,
    step: usize,
) -> Option<(i64, Amount, String)> {
    let at_ms = T0 + step as i64;
    let before = account.clone();
    let pick = |n: usize| {
        let requests = account.auto_top_ups();
        (!requests.is_empty()).then(|| requests[n % requests.len()].clone())
    };
    match *op {
        AutoOp::Charge {
            gap_minutes,
            cost_cents,
        } => {
            *minute += gap_minutes * MINUTE_MS;
            let (cost, cycle) = (cents(cost_cents), cycle_of(*minute));
            let outcome = account.charge(*minute, cost, &cycle).unwrap();
            assert!(outcome.applied);
            let was_pending = before.pending_auto_top_up().is_some();
            let below = account.balance() < units(AUTO_TRIGGER_UNITS);
            // A charge below the trigger always leaves one request pending, and creates
            // one exactly when none was.
            assert_eq!(
                account.pending_auto_top_up().is_some(),
                was_pending || below
            );
            assert_eq!(outcome.events.len(), usize::from(!was_pending && below));
            return Some((*minute, cost, cycle));
        }
        AutoOp::ConfirmUnknown => {
            let result = account.confirm("meter-01:nope:1", at_ms);
            assert!(matches!(result, Err(CreditError::UnknownTopUp { .. })));
            assert_eq!(*account, before);
        }
        AutoOp::Confirm(n) => {
            let request = pick(n)?;
            let result = account.confirm(&request.id, at_ms);
            match request.status {
                TopUpStatus::Pending => {
                    assert!(!result.unwrap().already);
                    assert_eq!(
                        account.balance(),
                        before.balance().checked_add(request.amount).unwrap()
                    );
                }
                TopUpStatus::Confirmed => {
                    assert!(result.unwrap().already);
                    assert_eq!(*account, before);
                }
                status => {
                    assert_eq!(
                        result.unwrap_err(),
                        CreditError::InvalidTransition {
                            id: request.id.clone(),
                            status,
                            requested: TopUpStatus::Confirmed,
                        }
                    );
                    assert_eq!(*account, before);
                }
            }
        }
        AutoOp::Fail(n) => {
            let request = pick(n)?;
            let result = account.fail(&request.id, "declined", at_ms);
            match request.status {
                TopUpStatus::Pending => {
                    assert!(!result.unwrap().already);
                    assert_eq!(account.balance(), before.balance());
                }
                TopUpStatus::Failed => {
                    assert!(result.unwrap().already);
                    assert_eq!(*account, before);
                }
                status => {
                    assert!(matches!(
                        result,
                        Err(CreditError::InvalidTransition { status: s, .. }) if s == status
                    ));
                    assert_eq!(*account, before);
                }
            }
        }
    }
    None
}

/// At most one pending request; ids are `meter:cycle:sequence` with sequences 1..n per
/// cycle; each request is credited by exactly one entry if confirmed, none otherwise.
fn check_auto_top_ups(account: &CreditAccount) {
    let requests = account.auto_top_ups();
    let pending = requests
        .iter()
        .filter(|r| r.status == TopUpStatus::Pending)
        .count();
    assert!(pending <= 1, "{requests:?}");
    let mut per_cycle: BTreeMap<&str, u32> = BTreeMap::new();
    let log = all_transactions(account);
    for request in requests {
        let sequence = per_cycle.entry(&request.cycle).or_default();
        *sequence += 1;
        assert_eq!(request.sequence, *sequence);
        assert_eq!(
            request.id,
            format!("meter-01:{}:{}", request.cycle, request.sequence)
        );
        let credits: Vec<&Transaction> = log
            .iter()
            .filter(|t| t.reference.as_deref() == Some(request.id.as_str()))
            .collect();
        let confirmed = request.status == TopUpStatus::Confirmed;
        assert_eq!(credits.len(), usize::from(confirmed), "{request:?}");
        if let [credit] = credits.as_slice() {
            assert_eq!(
                (credit.kind, credit.amount, Some(credit.seq)),
                (
                    TransactionKind::AutoTopUp,
                    request.amount,
                    request.transaction_seq
                )
            );
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (c) Never two pending requests, no request credited twice, and a restart from a
    /// stored (JSON) account — at the end or part way — that replays the charges
    /// creates no new request and ends in the same state.
    #[test]
    fn auto_top_up_is_unique_and_survives_replays(
        ops in prop::collection::vec(auto_op(), 0..80),
        snapshot_at in any::<prop::sample::Index>(),
    ) {
        let mut account = account(settings(0, Some((AUTO_TRIGGER_UNITS, 3))));
        account.top_up("initial", units(8), T0).unwrap();
        let snapshot_at = snapshot_at.index(ops.len() + 1);
        let (mut minute, mut charges, mut snapshot) = (T0, Vec::new(), None);
        for (step, op) in ops.iter().enumerate() {
            if step == snapshot_at {
                snapshot = Some((serde_json::to_string(&account).unwrap(), minute));
            }
            charges.extend(apply_auto_op(&mut account, op, &mut minute, step));
            check_auto_top_ups(&account);
            check_ledger(&account);
        }
        if snapshot.is_none() {
            snapshot = Some((serde_json::to_string(&account).unwrap(), minute));
        }

        // Restart from the final state: replaying every charge does nothing.
        let mut restored = round_trip(&account);
        prop_assert_eq!(&restored, &account);
        for (minute, cost, cycle) in &charges {
            let outcome = restored.charge(*minute, *cost, cycle).unwrap();
            prop_assert!(!outcome.applied && outcome.events.is_empty());
        }
        prop_assert_eq!(&restored, &account);

        // Restart from part way: the log redelivers every charge from the start, the
        // later operations repeat, and the same requests (same ids) come back.
        let (json, mut minute) = snapshot.unwrap();
        let mut restored: CreditAccount = serde_json::from_str(&json).unwrap();
        let stored_until = restored.last_charged_minute_ms();
        let old_charges = charges.iter().filter(|c| stored_until.is_some_and(|last| c.0 <= last));
        for (minute, cost, cycle) in old_charges {
            prop_assert!(restored.charge(*minute, *cost, cycle).unwrap().events.is_empty());
        }
        for (step, op) in ops.iter().enumerate().skip(snapshot_at) {
            apply_auto_op(&mut restored, op, &mut minute, step);
        }
        prop_assert_eq!(&restored, &account);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (d) A minute at or before the last charged one changes nothing, whatever its
    /// cost.
    #[test]
    fn replayed_minutes_never_change_the_balance(
        steps in prop::collection::vec((any::<bool>(), 1i64..2000, 0i64..500, any::<prop::sample::Index>()), 1..80),
    ) {
        let mut account = account(settings(3, Some((2, 5))));
        let mut minutes: Vec<i64> = Vec::new();
        let mut minute = T0;
        for (replay, gap_minutes, cost_cents, pick) in steps {
            if replay && !minutes.is_empty() {
                // An old minute, or any instant inside the already charged range.
                let old = minutes[pick.index(minutes.len())];
                let replayed = if cost_cents % 2 == 0 { old } else { old - gap_minutes };
                let before = account.clone();
                let outcome = account.charge(replayed, cents(cost_cents), &cycle_of(replayed)).unwrap();
                prop_assert!(!outcome.applied && outcome.events.is_empty());
                prop_assert_eq!(&account, &before);
            } else {
                minute += gap_minutes * MINUTE_MS;
                prop_assert!(account.charge(minute, cents(cost_cents), &cycle_of(minute)).unwrap().applied);
                minutes.push(minute);
            }
        }
    }
}

#[derive(Debug, Clone)]
enum AnyOp {
    TopUp { key: u8, amount_units: i64 },
    Charge { gap_minutes: i64, cost_cents: i64 },
    CloseDay { gap_hours: i64 },
    Confirm(usize),
    Fail(usize),
    Alerts { cost_per_hour_cents: i64 },
}

fn any_op() -> impl Strategy<Value = AnyOp> {
    prop_oneof![
        1 => (0u8..4, 1i64..4).prop_map(|(key, amount_units)| AnyOp::TopUp { key, amount_units }),
        3 => (1i64..2000, 0i64..300).prop_map(|(gap_minutes, cost_cents)| AnyOp::Charge {
            gap_minutes,
            cost_cents
        }),
        1 => (0i64..48).prop_map(|gap_hours| AnyOp::CloseDay { gap_hours }),
        1 => any::<usize>().prop_map(AnyOp::Confirm),
        1 => any::<usize>().prop_map(AnyOp::Fail),
        1 => (-5i64..50).prop_map(|cost_per_hour_cents| AnyOp::Alerts { cost_per_hour_cents }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// (e) The log is append-only: after any operation, successful or not, the earlier
    /// log is a prefix of the new one, seqs strictly increase, and the last
    /// `balance_after` plus the running day is the balance.
    #[test]
    fn the_log_is_append_only(ops in prop::collection::vec(any_op(), 0..100)) {
        let mut account = account(settings(2, Some((4, 3))));
        let mut minute = T0;
        for (step, op) in ops.iter().enumerate() {
            let at_ms = T0 + step as i64;
            let before = all_transactions(&account);
            let pick = |n: usize| {
                let requests = account.auto_top_ups();
                (!requests.is_empty()).then(|| requests[n % requests.len()].id.clone())
            };
            match *op {
                AnyOp::TopUp { key, amount_units } => {
                    // Conflicts are part of the mix.
                    let _ = account.top_up(&format!("k{key}"), units(amount_units), at_ms);
                }
                AnyOp::Charge { gap_minutes, cost_cents } => {
                    minute += gap_minutes * MINUTE_MS;
                    account.charge(minute, cents(cost_cents), &cycle_of(minute)).unwrap();
                }
                AnyOp::CloseDay { gap_hours } => {
                    account.close_day(minute + gap_hours * HOUR_MS);
                }
                AnyOp::Confirm(n) => {
                    if let Some(id) = pick(n) {
                        let _ = account.confirm(&id, at_ms);
                    }
                }
                AnyOp::Fail(n) => {
                    if let Some(id) = pick(n) {
                        let _ = account.fail(&id, "declined", at_ms);
                    }
                }
                AnyOp::Alerts { cost_per_hour_cents } => {
                    account.evaluate_alerts(cents(cost_per_hour_cents), at_ms);
                }
            }
            let after = all_transactions(&account);
            prop_assert!(after.len() >= before.len());
            prop_assert_eq!(&after[..before.len()], &before[..]);
            prop_assert!(after.windows(2).all(|pair| pair[0].seq < pair[1].seq));
            check_ledger(&account);
            check_auto_top_ups(&account);
        }
    }
}
