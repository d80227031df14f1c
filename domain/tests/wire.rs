//! Parsing and validation of both payload formats, data-driven with one `check` helper.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use gridpulse_domain::{
    ErrorReason, Limits, MeterId, ParseError, Reading, parse_batch, parse_reading,
};
use proptest::prelude::*;

const NOW_MS: i64 = 1_739_930_110_000;

fn meter(id: &str) -> MeterId {
    MeterId::new(id).unwrap()
}

/// Parses `body` as one reading and compares with `expected`: `Ok(reading)` or
/// `Err((field, reason code))`.
fn check(body: &str, expected: Result<Reading, (&str, &str)>) {
    let got = parse_reading(body.as_bytes(), NOW_MS, &Limits::default());
    match (got, expected) {
        (Ok(reading), Ok(want)) => assert_eq!(reading, want, "body: {body}"),
        (Err(ParseError::Invalid(error)), Err((field, code))) => {
            assert_eq!(
                (error.field, error.reason.code()),
                (field, code),
                "body: {body}: {error}"
            )
        }
        (got, want) => panic!("body: {body}\n got: {got:?}\nwant: {want:?}"),
    }
}

#[test]
fn seed_firmware_payload_is_accepted_with_unit_conversion() {
    check(
        r#"{"deviceId":"meter-01","voltage":220.4,"current":1.34,"power":295.4,"energy":1.24,"timestamp":1739930110}"#,
        Ok(Reading {
            meter: meter("meter-01"),
            ts_ms: 1_739_930_110_000,
            voltage: 220.4,
            current: 1.34,
            power_w: 295.4,
            energy_wh: 1240.0,
            credit: None,
            seq: None,
            backfill: false,
        }),
    );
    // Fractional seconds keep millisecond precision.
    let reading = parse_reading(
        br#"{"deviceId":"m","voltage":230,"current":1,"power":100,"energy":0,"timestamp":1739930100.25}"#,
        NOW_MS,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(reading.ts_ms, 1_739_930_100_250);
}

#[test]
fn canonical_payload_is_accepted() {
    check(
        r#"{"meter":"m-1","ts_ms":1739930000000,"voltage":231,"current":2.5,"power_w":570,"energy_wh":12345.5,"credit":12.5,"seq":7,"extra":{"ignored":[1,2]}}"#,
        Ok(Reading {
            meter: meter("m-1"),
            ts_ms: 1_739_930_000_000,
            voltage: 231.0,
            current: 2.5,
            power_w: 570.0,
            energy_wh: 12345.5,
            credit: Some(12.5),
            seq: Some(7),
            backfill: false,
        }),
    );
}

#[test]
fn backfill_is_an_optional_boolean() {
    let body = |backfill: &str| {
        format!(
            r#"{{"meter":"m-1","ts_ms":1739930000000,"voltage":231,"current":2.5,"power_w":570,"energy_wh":1{backfill}}}"#
        )
    };
    let parsed = |text: &str| parse_reading(text.as_bytes(), NOW_MS, &Limits::default());
    assert!(!parsed(&body("")).unwrap().backfill, "absent: live");
    assert!(parsed(&body(r#","backfill":true"#)).unwrap().backfill);
    assert!(!parsed(&body(r#","backfill":false"#)).unwrap().backfill);
    assert!(!parsed(&body(r#","backfill":null"#)).unwrap().backfill);
    for (bad, found) in [("1", "number"), (r#""yes""#, "string"), ("[]", "array")] {
        match parsed(&body(&format!(r#","backfill":{bad}"#))) {
            Err(ParseError::Invalid(error)) => {
                assert_eq!(error.field, "backfill", "{bad}");
                assert!(error.to_string().contains(found), "{bad}: {error}");
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    // Serialized only when set, so live readings keep their canonical form.
    let live = parsed(&body("")).unwrap();
    assert!(!serde_json::to_string(&live).unwrap().contains("backfill"));
    let past = Reading {
        backfill: true,
        ..live
    };
    let text = serde_json::to_string(&past).unwrap();
    assert_eq!(parsed(&text).unwrap(), past, "{text}");
}

#[test]
fn bad_fields_are_named_with_a_specific_reason() {
    let ok = r#""meter":"m","ts_ms":1739930000000,"current":1,"power_w":100,"energy_wh":5"#;
    check(&format!("{{{ok}}}"), Err(("voltage", "missing")));
    check(
        &format!("{{{ok},\"voltage\":null}}"),
        Err(("voltage", "missing")),
    );
    check(
        &format!("{{{ok},\"voltage\":\"230\"}}"),
        Err(("voltage", "wrong_type")),
    );
    check(
        &format!("{{{ok},\"voltage\":[230]}}"),
        Err(("voltage", "wrong_type")),
    );
    check(
        &format!("{{{ok},\"voltage\":-1}}"),
        Err(("voltage", "negative")),
    );
    check(
        &format!("{{{ok},\"voltage\":5000}}"),
        Err(("voltage", "out_of_range")),
    );
    // JSON cannot spell NaN or infinity, but a kWh register near f64::MAX overflows to
    // infinity when scaled to Wh.
    check(
        r#"{"deviceId":"m","voltage":230,"current":1,"power":100,"energy":1e308,"timestamp":1739930000}"#,
        Err(("energy", "not_finite")),
    );
    check(
        r#"{"meter":"m","ts_ms":1739930000000,"voltage":230,"current":1,"power_w":9000,"energy_wh":5}"#,
        Err(("power_w", "power_exceeds_apparent")),
    );
    check(
        r#"{"meter":"m","ts_ms":1839930000000,"voltage":230,"current":1,"power_w":100,"energy_wh":5}"#,
        Err(("ts_ms", "future_timestamp")),
    );
    check(
        r#"{"meter":"m","ts_ms":1739930000,"voltage":230,"current":1,"power_w":100,"energy_wh":5}"#,
        Err(("ts_ms", "old_timestamp")),
    );
    check(
        r#"{"meter":"m","ts_ms":1739930000000.5,"voltage":230,"current":1,"power_w":100,"energy_wh":5}"#,
        Err(("ts_ms", "not_integer")),
    );
    check(
        r#"{"meter":"a/b","ts_ms":1739930000000,"voltage":230,"current":1,"power_w":100,"energy_wh":5}"#,
        Err(("meter", "bad_meter_id")),
    );
    check(
        r#"{"meter":7,"ts_ms":1739930000000,"voltage":230,"current":1,"power_w":100,"energy_wh":5}"#,
        Err(("meter", "wrong_type")),
    );
    check(
        r#"{"meter":"m","ts_ms":1739930000000,"voltage":230,"current":1,"power_w":100,"energy_wh":5,"seq":-2}"#,
        Err(("seq", "negative")),
    );
    check(
        r#"{"deviceId":"m","voltage":230,"current":1,"power":100,"timestamp":1739930000}"#,
        Err(("energy", "missing")),
    );
    check(r#"{"id":"m","v":230}"#, Err(("", "unknown_format")));
    check(r#"[1]"#, Err(("", "not_an_object")));
}

#[test]
fn malformed_json_is_reported_with_position() {
    let got = parse_reading(
        b"{\"meter\": \"m\",\n \"voltage\": }",
        NOW_MS,
        &Limits::default(),
    );
    match got {
        Err(ParseError::Malformed(error)) => {
            assert_eq!((error.line, error.column), (2, 13), "{error}")
        }
        other => panic!("expected malformed, got {other:?}"),
    }
    assert!(parse_batch(b"[{}, ", NOW_MS, &Limits::default()).is_err());
}

#[test]
fn batch_keeps_good_readings_beside_bad_ones() {
    let body = br#"[
        {"meter":"a","ts_ms":1739930000000,"voltage":230,"current":1,"power_w":100,"energy_wh":5},
        {"meter":"b","ts_ms":1739930000000,"voltage":"x","current":1,"power_w":100,"energy_wh":5},
        "nope",
        {"deviceId":"c","voltage":230,"current":1,"power":100,"energy":0.005,"timestamp":1739930000}
    ]"#;
    let results = parse_batch(body, NOW_MS, &Limits::default()).unwrap();
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].as_ref().unwrap().meter, meter("a"));
    assert_eq!(results[1].as_ref().unwrap_err().field, "voltage");
    assert_eq!(
        results[2].as_ref().unwrap_err().reason,
        ErrorReason::NotAnObject { found: "string" }
    );
    assert_eq!(results[3].as_ref().unwrap().energy_wh, 5.0);
    // A single object is a batch of one.
    let one = parse_batch(br#"{"meter":"a"}"#, NOW_MS, &Limits::default()).unwrap();
    assert_eq!(one.len(), 1);
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        "[a-z_]{0,8}".prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("meter".to_string()),
                    Just("deviceId".to_string()),
                    Just("voltage".to_string()),
                    Just("ts_ms".to_string()),
                    "[a-z]{1,6}"
                ],
                inner,
                0..6
            )
            .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

fn arb_reading() -> impl Strategy<Value = Reading> {
    (
        "[A-Za-z0-9_.:-]{1,47}",
        946_684_800_000i64..NOW_MS,
        0.0f64..1000.0,
        0.0f64..1000.0,
        0.0f64..1.0,
        0.0f64..1e12,
        proptest::option::of(-1e6f64..1e6),
        proptest::option::of(0u64..i64::MAX as u64),
    )
        .prop_map(
            |(id, ts_ms, voltage, current, power_share, energy_wh, credit, seq)| Reading {
                meter: meter(&id),
                ts_ms,
                voltage,
                current,
                // Active power is some share of apparent power, so always plausible.
                power_w: voltage * current * power_share,
                energy_wh,
                credit,
                seq,
                backfill: false,
            },
        )
}

proptest! {
    /// No input, however odd, panics the parser.
    #[test]
    fn arbitrary_json_never_panics(value in arb_json()) {
        let bytes = serde_json::to_vec(&value).unwrap();
        let _ = parse_batch(&bytes, NOW_MS, &Limits::default());
        let _ = parse_reading(&bytes, NOW_MS, &Limits::default());
    }

    /// Arbitrary bytes never panic the parser either.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse_batch(&bytes, NOW_MS, &Limits::default());
    }

    /// Every valid reading survives a trip through the canonical format unchanged.
    #[test]
    fn canonical_round_trip(reading in arb_reading()) {
        let bytes = serde_json::to_vec(&reading).unwrap();
        let parsed = parse_reading(&bytes, NOW_MS, &Limits::default()).unwrap();
        // serde_json's fast float parser may differ from the shortest representation in
        // the last bit; everything else must be identical.
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-15 * a.abs().max(b.abs());
        prop_assert_eq!((parsed.meter, parsed.ts_ms, parsed.seq), (reading.meter, reading.ts_ms, reading.seq));
        prop_assert!(close(parsed.voltage, reading.voltage) && close(parsed.current, reading.current));
        prop_assert!(close(parsed.power_w, reading.power_w) && close(parsed.energy_wh, reading.energy_wh));
        prop_assert_eq!(parsed.credit.is_some(), reading.credit.is_some());
        prop_assert!(close(parsed.credit.unwrap_or(0.0), reading.credit.unwrap_or(0.0)));
    }

    /// Replacing any one required field with a string is reported against that field.
    #[test]
    fn wrong_type_names_the_field(reading in arb_reading(), field_idx in 0usize..5) {
        let field = ["ts_ms", "voltage", "current", "power_w", "energy_wh"][field_idx];
        let mut value = serde_json::to_value(reading).unwrap();
        value[field] = serde_json::Value::String("oops".into());
        let bytes = serde_json::to_vec(&value).unwrap();
        match parse_reading(&bytes, NOW_MS, &Limits::default()) {
            Err(ParseError::Invalid(error)) => {
                prop_assert_eq!(error.field, field);
                prop_assert_eq!(error.reason, ErrorReason::WrongType { expected: "number", found: "string" });
            }
            other => prop_assert!(false, "expected an error for {}, got {:?}", field, other),
        }
    }
}
