//! The two JSON payload formats readings arrive in, parsed without allocating.
//!
//! * **Canonical** (ours): `{"meter","ts_ms","voltage","current","power_w","energy_wh"}`
//!   plus optional `"credit"`, `"seq"` and `"backfill"` (boolean, see [`crate::Reading`]);
//!   energy in Wh, time in Unix milliseconds.
//! * **Seed firmware** (meters already in the field, `seeds/smart-energy-iot.md`):
//!   `{"deviceId","voltage","current","power","energy","timestamp"}` with energy in kWh
//!   and time in Unix seconds.
//!
//! A body is one reading object or an array of them. Syntax errors reject the whole body
//! (nothing can be trusted); a well-formed body yields one result per reading, so good
//! readings are kept beside bad ones. Unknown keys are ignored for forward
//! compatibility; a typo in a required key shows up as "`voltage` is required".

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::meter_id::MeterId;
use crate::reading::Reading;
use crate::validation::{
    ErrorReason, Limits, ReadingError, check_power_vs_apparent, check_quantity, check_timestamp,
};

/// The body is not well-formed JSON: nothing in it was accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MalformedJson {
    /// 1-based line of the error.
    pub line: usize,
    /// 1-based column of the error.
    pub column: usize,
    /// What the JSON parser says.
    pub message: String,
}

impl fmt::Display for MalformedJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed JSON: {}", self.message)
    }
}

#[cfg(feature = "std")]
impl std::error::Error for MalformedJson {}

/// Why one payload could not become a [`Reading`].
#[derive(Debug, Clone, PartialEq)]
pub enum ParseError {
    /// The bytes are not JSON.
    Malformed(MalformedJson),
    /// The JSON is a reading with a bad field.
    Invalid(ReadingError),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Malformed(error) => error.fmt(f),
            ParseError::Invalid(error) => error.fmt(f),
        }
    }
}

#[cfg(feature = "std")]
impl std::error::Error for ParseError {}

/// One result per reading in a body, in body order.
pub type ParsedBatch = Vec<Result<Reading, ReadingError>>;

/// Parses a body holding exactly one reading object.
pub fn parse_reading(bytes: &[u8], now_ms: i64, limits: &Limits) -> Result<Reading, ParseError> {
    let raw: RawReading =
        serde_json::from_slice(bytes).map_err(|e| ParseError::Malformed(malformed(&e)))?;
    raw.validate(now_ms, limits).map_err(ParseError::Invalid)
}

/// Parses a body holding one reading object or an array of them.
pub fn parse_batch(
    bytes: &[u8],
    now_ms: i64,
    limits: &Limits,
) -> Result<ParsedBatch, MalformedJson> {
    let body: RawBody = serde_json::from_slice(bytes).map_err(|e| malformed(&e))?;
    Ok(match body {
        RawBody::One(raw) => alloc::vec![raw.validate(now_ms, limits)],
        RawBody::Many(raws) => raws
            .into_iter()
            .map(|raw| raw.validate(now_ms, limits))
            .collect(),
    })
}

fn malformed(error: &serde_json::Error) -> MalformedJson {
    use alloc::string::ToString;
    MalformedJson {
        line: error.line(),
        column: error.column(),
        message: error.to_string(),
    }
}

/// A JSON number as written: integers keep full precision.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Number {
    Int(i64),
    Float(f64),
}

impl Number {
    fn as_f64(self) -> f64 {
        match self {
            Number::Int(value) => value as f64,
            Number::Float(value) => value,
        }
    }
}

/// What one field held, before validation. Never fails to deserialize (except on
/// syntax), so one bad field cannot hide the others or the readings around it.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
enum Slot<T> {
    #[default]
    Absent,
    Value(T),
    WrongType(&'static str),
    Invalid(ErrorReason),
}

fn drain_seq<'de, A: SeqAccess<'de>>(mut seq: A) -> Result<(), A::Error> {
    while seq.next_element::<IgnoredAny>()?.is_some() {}
    Ok(())
}

fn drain_map<'de, A: MapAccess<'de>>(mut map: A) -> Result<(), A::Error> {
    while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
    Ok(())
}

/// Implements the non-number/non-string arms of a slot visitor.
macro_rules! other_json_types {
    ($value:ty) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<$value, E> {
            Ok(Slot::WrongType("boolean"))
        }
        fn visit_unit<E: de::Error>(self) -> Result<$value, E> {
            Ok(Slot::Absent)
        }
        fn visit_none<E: de::Error>(self) -> Result<$value, E> {
            Ok(Slot::Absent)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<$value, A::Error> {
            drain_seq(seq)?;
            Ok(Slot::WrongType("array"))
        }
        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<$value, A::Error> {
            drain_map(map)?;
            Ok(Slot::WrongType("object"))
        }
    };
}

struct NumberSlot(Slot<Number>);

impl<'de> Deserialize<'de> for NumberSlot {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumberVisitor;
        impl<'de> Visitor<'de> for NumberVisitor {
            type Value = Slot<Number>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Self::Value, E> {
                Ok(Slot::Value(Number::Int(value)))
            }
            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Self::Value, E> {
                Ok(Slot::Value(match i64::try_from(value) {
                    Ok(value) => Number::Int(value),
                    Err(_) => Number::Float(value as f64),
                }))
            }
            fn visit_f64<E: de::Error>(self, value: f64) -> Result<Self::Value, E> {
                Ok(Slot::Value(Number::Float(value)))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Slot::WrongType("string"))
            }
            other_json_types!(Self::Value);
        }
        deserializer.deserialize_any(NumberVisitor).map(NumberSlot)
    }
}

struct BoolSlot(Slot<bool>);

impl<'de> Deserialize<'de> for BoolSlot {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BoolVisitor;
        impl<'de> Visitor<'de> for BoolVisitor {
            type Value = Slot<bool>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a boolean")
            }
            fn visit_bool<E: de::Error>(self, value: bool) -> Result<Self::Value, E> {
                Ok(Slot::Value(value))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Slot::WrongType("number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Slot::WrongType("number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Slot::WrongType("number"))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
                Ok(Slot::WrongType("string"))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Slot::Absent)
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Slot::Absent)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                drain_seq(seq)?;
                Ok(Slot::WrongType("array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                drain_map(map)?;
                Ok(Slot::WrongType("object"))
            }
        }
        deserializer.deserialize_any(BoolVisitor).map(BoolSlot)
    }
}

struct MeterSlot(Slot<MeterId>);

impl<'de> Deserialize<'de> for MeterSlot {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct MeterVisitor;
        impl<'de> Visitor<'de> for MeterVisitor {
            type Value = Slot<MeterId>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a meter id string")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(match MeterId::new(text) {
                    Ok(id) => Slot::Value(id),
                    Err(error) => Slot::Invalid(ErrorReason::BadMeterId(error)),
                })
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Slot::WrongType("number"))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Slot::WrongType("number"))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Slot::WrongType("number"))
            }
            other_json_types!(Self::Value);
        }
        deserializer.deserialize_any(MeterVisitor).map(MeterSlot)
    }
}

/// Keys of both formats; anything else is ignored.
enum Key {
    Meter,
    DeviceId,
    TsMs,
    Timestamp,
    Voltage,
    Current,
    PowerW,
    Power,
    EnergyWh,
    Energy,
    Credit,
    Seq,
    Backfill,
    Other,
}

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(match key {
                    "meter" => Key::Meter,
                    "deviceId" => Key::DeviceId,
                    "ts_ms" => Key::TsMs,
                    "timestamp" => Key::Timestamp,
                    "voltage" => Key::Voltage,
                    "current" => Key::Current,
                    "power_w" => Key::PowerW,
                    "power" => Key::Power,
                    "energy_wh" => Key::EnergyWh,
                    "energy" => Key::Energy,
                    "credit" => Key::Credit,
                    "seq" => Key::Seq,
                    "backfill" => Key::Backfill,
                    _ => Key::Other,
                })
            }
        }
        deserializer.deserialize_identifier(KeyVisitor)
    }
}

/// Every field either format may carry, as found.
#[derive(Debug, Default)]
struct RawFields {
    meter: Slot<MeterId>,
    device_id: Slot<MeterId>,
    ts_ms: Slot<Number>,
    timestamp: Slot<Number>,
    voltage: Slot<Number>,
    current: Slot<Number>,
    power_w: Slot<Number>,
    power: Slot<Number>,
    energy_wh: Slot<Number>,
    energy: Slot<Number>,
    credit: Slot<Number>,
    seq: Slot<Number>,
    backfill: Slot<bool>,
}

/// One element of a body: an object's fields, or the JSON type found instead.
// Transient and on the stack while one body is parsed: boxing the fields would cost an
// allocation per reading for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum RawReading {
    Object(RawFields),
    NotAnObject(&'static str),
}

struct RawReadingVisitor;

impl<'de> Visitor<'de> for RawReadingVisitor {
    type Value = RawReading;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a reading object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawReading, A::Error> {
        let mut fields = RawFields::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Meter => fields.meter = map.next_value::<MeterSlot>()?.0,
                Key::DeviceId => fields.device_id = map.next_value::<MeterSlot>()?.0,
                Key::TsMs => fields.ts_ms = map.next_value::<NumberSlot>()?.0,
                Key::Timestamp => fields.timestamp = map.next_value::<NumberSlot>()?.0,
                Key::Voltage => fields.voltage = map.next_value::<NumberSlot>()?.0,
                Key::Current => fields.current = map.next_value::<NumberSlot>()?.0,
                Key::PowerW => fields.power_w = map.next_value::<NumberSlot>()?.0,
                Key::Power => fields.power = map.next_value::<NumberSlot>()?.0,
                Key::EnergyWh => fields.energy_wh = map.next_value::<NumberSlot>()?.0,
                Key::Energy => fields.energy = map.next_value::<NumberSlot>()?.0,
                Key::Credit => fields.credit = map.next_value::<NumberSlot>()?.0,
                Key::Seq => fields.seq = map.next_value::<NumberSlot>()?.0,
                Key::Backfill => fields.backfill = map.next_value::<BoolSlot>()?.0,
                Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(RawReading::Object(fields))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<RawReading, A::Error> {
        drain_seq(seq)?;
        Ok(RawReading::NotAnObject("array"))
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<RawReading, E> {
        Ok(RawReading::NotAnObject("string"))
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawReading, E> {
        Ok(RawReading::NotAnObject("number"))
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawReading, E> {
        Ok(RawReading::NotAnObject("number"))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawReading, E> {
        Ok(RawReading::NotAnObject("number"))
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawReading, E> {
        Ok(RawReading::NotAnObject("boolean"))
    }
    fn visit_unit<E: de::Error>(self) -> Result<RawReading, E> {
        Ok(RawReading::NotAnObject("null"))
    }
}

impl<'de> Deserialize<'de> for RawReading {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawReadingVisitor)
    }
}

/// A whole body: one reading or an array of readings.
#[allow(clippy::large_enum_variant)]
enum RawBody {
    One(RawReading),
    Many(Vec<RawReading>),
}

impl<'de> Deserialize<'de> for RawBody {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct BodyVisitor;
        impl<'de> Visitor<'de> for BodyVisitor {
            type Value = RawBody;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a reading object or an array of readings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawBody, A::Error> {
                let mut raws = Vec::with_capacity(seq.size_hint().unwrap_or(16).min(4096));
                while let Some(raw) = seq.next_element::<RawReading>()? {
                    raws.push(raw);
                }
                Ok(RawBody::Many(raws))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawBody, A::Error> {
                RawReadingVisitor.visit_map(map).map(RawBody::One)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<RawBody, E> {
                Ok(RawBody::One(RawReading::NotAnObject("string")))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawBody, E> {
                Ok(RawBody::One(RawReading::NotAnObject("number")))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawBody, E> {
                Ok(RawBody::One(RawReading::NotAnObject("number")))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawBody, E> {
                Ok(RawBody::One(RawReading::NotAnObject("number")))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawBody, E> {
                Ok(RawBody::One(RawReading::NotAnObject("boolean")))
            }
            fn visit_unit<E: de::Error>(self) -> Result<RawBody, E> {
                Ok(RawBody::One(RawReading::NotAnObject("null")))
            }
        }
        deserializer.deserialize_any(BodyVisitor)
    }
}

fn required<T: Copy>(
    field: &'static str,
    slot: Slot<T>,
    expected: &'static str,
) -> Result<T, ReadingError> {
    match slot {
        Slot::Value(value) => Ok(value),
        Slot::Absent => Err(ReadingError::new(field, ErrorReason::Missing)),
        Slot::WrongType(found) => Err(ReadingError::new(
            field,
            ErrorReason::WrongType { expected, found },
        )),
        Slot::Invalid(reason) => Err(ReadingError::new(field, reason)),
    }
}

fn optional<T: Copy>(
    field: &'static str,
    slot: Slot<T>,
    expected: &'static str,
) -> Result<Option<T>, ReadingError> {
    match slot {
        Slot::Absent => Ok(None),
        other => required(field, other, expected).map(Some),
    }
}

/// Field names and unit scales of one payload format.
struct Format {
    ts: &'static str,
    ts_to_ms: i64,
    power: &'static str,
    energy: &'static str,
    energy_to_wh: f64,
}

const CANONICAL: Format = Format {
    ts: "ts_ms",
    ts_to_ms: 1,
    power: "power_w",
    energy: "energy_wh",
    energy_to_wh: 1.0,
};

const SEED_FIRMWARE: Format = Format {
    ts: "timestamp",
    ts_to_ms: 1000,
    power: "power",
    energy: "energy",
    energy_to_wh: 1000.0,
};

impl RawReading {
    fn validate(self, now_ms: i64, limits: &Limits) -> Result<Reading, ReadingError> {
        let fields = match self {
            RawReading::Object(fields) => fields,
            RawReading::NotAnObject(found) => {
                return Err(ReadingError::new("", ErrorReason::NotAnObject { found }));
            }
        };
        let (format, meter, ts, power, energy) = if !matches!(fields.meter, Slot::Absent) {
            let meter = required("meter", fields.meter, "string")?;
            (
                &CANONICAL,
                meter,
                fields.ts_ms,
                fields.power_w,
                fields.energy_wh,
            )
        } else if !matches!(fields.device_id, Slot::Absent) {
            let meter = required("deviceId", fields.device_id, "string")?;
            (
                &SEED_FIRMWARE,
                meter,
                fields.timestamp,
                fields.power,
                fields.energy,
            )
        } else {
            return Err(ReadingError::new("", ErrorReason::UnknownFormat));
        };

        let ts_ms = timestamp_ms(format, required(format.ts, ts, "number")?)?;
        let ts_ms = check_timestamp(format.ts, ts_ms, now_ms, limits)?;
        let voltage = quantity("voltage", fields.voltage, 1.0, limits.max_voltage)?;
        let current = quantity("current", fields.current, 1.0, limits.max_current)?;
        let power_w = quantity(format.power, power, 1.0, limits.max_power_w)?;
        let energy_wh = quantity(format.energy, energy, format.energy_to_wh, f64::MAX)?;
        check_power_vs_apparent(format.power, power_w, voltage, current, limits)?;
        let credit = match optional("credit", fields.credit, "number")? {
            Some(number) if !number.as_f64().is_finite() => {
                return Err(ReadingError::new("credit", ErrorReason::NotFinite));
            }
            other => other.map(Number::as_f64),
        };
        let seq = match optional("seq", fields.seq, "number")? {
            None => None,
            Some(Number::Int(value)) if value >= 0 => Some(value as u64),
            Some(Number::Int(value)) => {
                return Err(ReadingError::new(
                    "seq",
                    ErrorReason::Negative {
                        value: value as f64,
                    },
                ));
            }
            Some(Number::Float(_)) => {
                return Err(ReadingError::new("seq", ErrorReason::NotInteger));
            }
        };
        let backfill = optional("backfill", fields.backfill, "boolean")?.unwrap_or(false);
        Ok(Reading {
            meter,
            ts_ms,
            voltage,
            current,
            power_w,
            energy_wh,
            credit,
            seq,
            backfill,
        })
    }
}

fn quantity(
    field: &'static str,
    slot: Slot<Number>,
    scale: f64,
    max: f64,
) -> Result<f64, ReadingError> {
    let value = required(field, slot, "number")?.as_f64() * scale;
    check_quantity(field, value, max)
}

fn timestamp_ms(format: &Format, number: Number) -> Result<i64, ReadingError> {
    let out_of_range = ReadingError::new(
        format.ts,
        ErrorReason::OutOfRange {
            value: number.as_f64(),
            max: i64::MAX as f64 / format.ts_to_ms as f64,
        },
    );
    match number {
        Number::Int(value) => value.checked_mul(format.ts_to_ms).ok_or(out_of_range),
        Number::Float(value) => {
            if !value.is_finite() {
                return Err(ReadingError::new(format.ts, ErrorReason::NotFinite));
            }
            let scaled = value * format.ts_to_ms as f64;
            if format.ts_to_ms == 1 && scaled != crate::bill::round_half_away_from_zero(scaled) {
                return Err(ReadingError::new(format.ts, ErrorReason::NotInteger));
            }
            if scaled.abs() >= 9.0e18 {
                return Err(out_of_range);
            }
            // Seed firmware may send fractional seconds: keep millisecond precision.
            Ok(crate::bill::round_half_away_from_zero(scaled) as i64)
        }
    }
}
