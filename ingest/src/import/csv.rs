//! CSV rows to readings without allocating: the header maps the documented columns
//! (any order), each row is split on commas into byte slices and its fields decoded
//! in place; validation is `gridpulse_domain::validate_parts`, the rules of every
//! other path.

use gridpulse_domain::{
    ErrorReason, Limits, MeterId, PartNames, Reading, ReadingError, ReadingParts, validate_parts,
};

use super::{EnergyUnit, PowerUnit, TimestampFormat};

/// The columns a CSV file may have (`power` and `energy` are aliases of `power_w` and
/// `energy_wh`); anything else is refused, so a misspelt optional column is not
/// silently dropped.
pub const COLUMNS: [&str; 8] = [
    "meter",
    "ts",
    "voltage",
    "current",
    "power_w",
    "energy_wh",
    "credit",
    "seq",
];

const REQUIRED: usize = 6;

/// Why a header was refused (nothing of the file is imported).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// A column is not one of [`COLUMNS`].
    #[error(
        "unknown column `{0}` in the header: the columns are meter, ts, voltage, current, power_w (or power), energy_wh (or energy), and optionally credit, seq"
    )]
    Unknown(String),
    /// A column appears twice.
    #[error("column `{0}` appears twice in the header")]
    Repeated(&'static str),
    /// A required column is absent.
    #[error(
        "the header has no `{0}` column (required: meter, ts, voltage, current, power_w, energy_wh)"
    )]
    Missing(&'static str),
}

impl HeaderError {
    /// The column concerned.
    pub fn column(&self) -> String {
        match self {
            HeaderError::Unknown(name) => name.clone(),
            HeaderError::Repeated(name) | HeaderError::Missing(name) => (*name).to_owned(),
        }
    }
}

/// A parsed header and the units of the file: turns rows into readings.
#[derive(Debug, Clone)]
pub struct CsvLayout {
    /// Position of each of [`COLUMNS`] in a row.
    positions: [Option<usize>; 8],
    n_columns: usize,
    ts_format: TimestampFormat,
    energy_scale: f64,
    power_scale: f64,
}

/// Why one row was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum RowProblem {
    /// A field failed to decode or validate.
    Field(ReadingError),
    /// The row has another number of fields than the header.
    ColumnCount {
        /// Fields in the row.
        found: usize,
        /// Columns in the header.
        expected: usize,
    },
}

const NAMES: PartNames = PartNames {
    ts: "ts",
    power: "power_w",
    energy: "energy_wh",
};

impl CsvLayout {
    /// Reads the header line.
    pub fn from_header(
        header: &[u8],
        ts_format: TimestampFormat,
        energy_unit: EnergyUnit,
        power_unit: PowerUnit,
    ) -> Result<CsvLayout, HeaderError> {
        let mut positions = [None; 8];
        let mut n_columns = 0;
        for (position, raw) in header.split(|byte| *byte == b',').enumerate() {
            n_columns += 1;
            let name = trim(raw);
            let name = String::from_utf8_lossy(name);
            let column = match name.as_ref() {
                "power" => 4,
                "energy" => 5,
                other => COLUMNS
                    .iter()
                    .position(|column| *column == other)
                    .ok_or_else(|| HeaderError::Unknown(other.to_owned()))?,
            };
            if positions[column].replace(position).is_some() {
                return Err(HeaderError::Repeated(COLUMNS[column]));
            }
        }
        if let Some(missing) = (0..REQUIRED).find(|column| positions[*column].is_none()) {
            return Err(HeaderError::Missing(COLUMNS[missing]));
        }
        Ok(CsvLayout {
            positions,
            n_columns,
            ts_format,
            energy_scale: match energy_unit {
                EnergyUnit::Wh => 1.0,
                EnergyUnit::Kwh => 1000.0,
            },
            power_scale: match power_unit {
                PowerUnit::W => 1.0,
                PowerUnit::Kw => 1000.0,
            },
        })
    }

    /// Decodes and validates one row (a backfill reading).
    pub fn parse_row(
        &self,
        row: &[u8],
        now_ms: i64,
        limits: &Limits,
    ) -> Result<Reading, RowProblem> {
        let mut fields: [&[u8]; 8] = [&[]; 8];
        let mut n_fields = 0;
        let mut start = 0;
        for comma in memchr::memchr_iter(b',', row).chain(std::iter::once(row.len())) {
            if n_fields < fields.len() {
                fields[n_fields] = &row[start..comma];
            }
            n_fields += 1;
            start = comma + 1;
        }
        if n_fields != self.n_columns {
            return Err(RowProblem::ColumnCount {
                found: n_fields,
                expected: self.n_columns,
            });
        }
        let field = |column: usize| -> &[u8] {
            match self.positions[column] {
                Some(position) => unquote(trim(fields[position])),
                None => &[],
            }
        };
        let meter = meter(field(0)).map_err(RowProblem::Field)?;
        let ts_ms = timestamp(field(1), self.ts_format).map_err(RowProblem::Field)?;
        let voltage = number("voltage", field(2)).map_err(RowProblem::Field)?;
        let current = number("current", field(3)).map_err(RowProblem::Field)?;
        let power_w = number("power_w", field(4)).map_err(RowProblem::Field)? * self.power_scale;
        let energy_wh =
            number("energy_wh", field(5)).map_err(RowProblem::Field)? * self.energy_scale;
        let credit = optional(field(6))
            .map(|bytes| number("credit", bytes))
            .transpose()
            .map_err(RowProblem::Field)?;
        let seq = optional(field(7))
            .map(sequence)
            .transpose()
            .map_err(RowProblem::Field)?;
        let parts = ReadingParts {
            meter,
            ts_ms,
            voltage,
            current,
            power_w,
            energy_wh,
            credit,
            seq,
            backfill: true,
        };
        validate_parts(&parts, &NAMES, now_ms, limits).map_err(RowProblem::Field)
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// `"x"` → `x` (spreadsheets quote every field; no valid value holds a comma or a quote).
fn unquote(bytes: &[u8]) -> &[u8] {
    match bytes {
        [b'"', inner @ .., b'"'] => inner,
        other => other,
    }
}

fn optional(bytes: &[u8]) -> Option<&[u8]> {
    (!bytes.is_empty()).then_some(bytes)
}

fn text<'a>(field: &'static str, bytes: &'a [u8]) -> Result<&'a str, ReadingError> {
    if bytes.is_empty() {
        return Err(ReadingError::new(field, ErrorReason::Missing));
    }
    std::str::from_utf8(bytes).map_err(|_| {
        ReadingError::new(
            field,
            ErrorReason::WrongType {
                expected: "number",
                found: "invalid UTF-8",
            },
        )
    })
}

fn not_a_number(field: &'static str) -> ReadingError {
    ReadingError::new(
        field,
        ErrorReason::WrongType {
            expected: "number",
            found: "text",
        },
    )
}

fn number(field: &'static str, bytes: &[u8]) -> Result<f64, ReadingError> {
    text(field, bytes)?
        .parse::<f64>()
        .map_err(|_| not_a_number(field))
}

fn meter(bytes: &[u8]) -> Result<MeterId, ReadingError> {
    if bytes.is_empty() {
        return Err(ReadingError::new("meter", ErrorReason::Missing));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| {
        ReadingError::new(
            "meter",
            ErrorReason::WrongType {
                expected: "meter id",
                found: "invalid UTF-8",
            },
        )
    })?;
    MeterId::new(text).map_err(|error| ReadingError::new("meter", ErrorReason::BadMeterId(error)))
}

fn sequence(bytes: &[u8]) -> Result<u64, ReadingError> {
    let text = text("seq", bytes)?;
    if let Ok(value) = text.parse::<u64>() {
        return Ok(value);
    }
    match text.parse::<f64>() {
        Ok(value) if value < 0.0 => Err(ReadingError::new("seq", ErrorReason::Negative { value })),
        Ok(_) => Err(ReadingError::new("seq", ErrorReason::NotInteger)),
        Err(_) => Err(not_a_number("seq")),
    }
}

fn timestamp(bytes: &[u8], format: TimestampFormat) -> Result<i64, ReadingError> {
    let text = text("ts", bytes)?;
    let out_of_range =
        |value: f64, max: f64| ReadingError::new("ts", ErrorReason::OutOfRange { value, max });
    match format {
        TimestampFormat::UnixMs => match text.parse::<i64>() {
            Ok(ms) => Ok(ms),
            Err(_) => match text.parse::<f64>() {
                Ok(value) if value.is_finite() => {
                    Err(ReadingError::new("ts", ErrorReason::NotInteger))
                }
                Ok(_) => Err(ReadingError::new("ts", ErrorReason::NotFinite)),
                Err(_) => Err(not_a_number("ts")),
            },
        },
        TimestampFormat::UnixSeconds => {
            if let Ok(seconds) = text.parse::<i64>() {
                return seconds
                    .checked_mul(1000)
                    .ok_or_else(|| out_of_range(seconds as f64, (i64::MAX / 1000) as f64));
            }
            let seconds = text.parse::<f64>().map_err(|_| not_a_number("ts"))?;
            if !seconds.is_finite() {
                return Err(ReadingError::new("ts", ErrorReason::NotFinite));
            }
            let ms = (seconds * 1000.0).round();
            if ms.abs() >= 9.0e18 {
                return Err(out_of_range(seconds, (i64::MAX / 1000) as f64));
            }
            Ok(ms as i64)
        }
        TimestampFormat::Rfc3339 => text
            .parse::<jiff::Timestamp>()
            .map(|ts| ts.as_millisecond())
            .map_err(|_| {
                ReadingError::new(
                    "ts",
                    ErrorReason::WrongType {
                        expected: "RFC 3339 timestamp (2024-05-01T12:00:00Z)",
                        found: "text",
                    },
                )
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_750_000_000_000;

    fn layout(header: &str) -> CsvLayout {
        CsvLayout::from_header(
            header.as_bytes(),
            TimestampFormat::UnixMs,
            EnergyUnit::Wh,
            PowerUnit::W,
        )
        .unwrap()
    }

    fn check(header: &str, row: &str, expected: Result<(&str, i64, f64, f64), (&str, &str)>) {
        let got = layout(header).parse_row(row.as_bytes(), NOW, &Limits::default());
        match (got, expected) {
            (Ok(reading), Ok((meter, ts, power, energy))) => {
                assert_eq!(
                    (
                        reading.meter.as_str(),
                        reading.ts_ms,
                        reading.power_w,
                        reading.energy_wh
                    ),
                    (meter, ts, power, energy),
                    "{row}"
                );
                assert!(reading.backfill);
            }
            (Err(RowProblem::Field(error)), Err((field, code))) => {
                assert_eq!((error.field, error.reason.code()), (field, code), "{row}");
            }
            (Err(RowProblem::ColumnCount { .. }), Err((field, code))) => {
                assert_eq!(("", "wrong_column_count"), (field, code), "{row}");
            }
            (got, expected) => panic!("{row}: got {got:?}, expected {expected:?}"),
        }
    }

    const HEADER: &str = "meter,ts,voltage,current,power_w,energy_wh";

    #[test]
    fn rows_decode_in_any_column_order() {
        check(
            HEADER,
            "m-1,1700000000000,230,2,400,1000",
            Ok(("m-1", 1_700_000_000_000, 400.0, 1000.0)),
        );
        check(
            "energy_wh, ts ,meter,power,current,voltage,seq,credit",
            "5,1700000000001,m-2,10,1,230,7,",
            Ok(("m-2", 1_700_000_000_001, 10.0, 5.0)),
        );
        check(
            HEADER,
            "\"m-1\",\"1700000000000\",230,2,400,1000",
            Ok(("m-1", 1_700_000_000_000, 400.0, 1000.0)),
        );
    }

    #[test]
    fn bad_fields_are_named() {
        check(
            HEADER,
            "m-1,1700000000000,abc,2,400,1000",
            Err(("voltage", "wrong_type")),
        );
        check(
            HEADER,
            "m-1,1700000000000,230,-2,400,1000",
            Err(("current", "negative")),
        );
        check(
            HEADER,
            "m-1,1700000000000,230,2,,1000",
            Err(("power_w", "missing")),
        );
        check(
            HEADER,
            "m-1,1700000000000.5,230,2,400,1000",
            Err(("ts", "not_integer")),
        );
        check(
            HEADER,
            "m-1,99,230,2,400,1000",
            Err(("ts", "old_timestamp")),
        );
        check(
            HEADER,
            "m-1,9999999999999,230,2,400,1000",
            Err(("ts", "future_timestamp")),
        );
        check(
            HEADER,
            "m 1,1700000000000,230,2,400,1000",
            Err(("meter", "bad_meter_id")),
        );
        check(
            HEADER,
            "m-1,1700000000000,230,2,4000,1000",
            Err(("power_w", "power_exceeds_apparent")),
        );
        check(
            HEADER,
            "m-1,1700000000000,1230,2,400,1000",
            Err(("voltage", "out_of_range")),
        );
        check(
            HEADER,
            "m-1,1700000000000,NaN,2,400,1000",
            Err(("voltage", "not_finite")),
        );
        check(
            HEADER,
            "m-1,1700000000000,230,2,400",
            Err(("", "wrong_column_count")),
        );
        check(
            HEADER,
            "m-1,1700000000000,230,2,400,1,1",
            Err(("", "wrong_column_count")),
        );
        check(
            "meter,ts,voltage,current,power_w,energy_wh,seq",
            "m-1,1700000000000,230,2,400,1,-3",
            Err(("seq", "negative")),
        );
        check(
            "meter,ts,voltage,current,power_w,energy_wh,seq",
            "m-1,1700000000000,230,2,400,1,1.5",
            Err(("seq", "not_integer")),
        );
    }

    #[test]
    fn units_and_timestamp_formats() {
        let layout = CsvLayout::from_header(
            HEADER.as_bytes(),
            TimestampFormat::UnixSeconds,
            EnergyUnit::Kwh,
            PowerUnit::Kw,
        )
        .unwrap();
        let reading = layout
            .parse_row(b"m,1700000000.25,230,10,1.5,12.5", NOW, &Limits::default())
            .unwrap();
        assert_eq!(
            (reading.ts_ms, reading.power_w, reading.energy_wh),
            (1_700_000_000_250, 1500.0, 12_500.0)
        );
        let layout = CsvLayout::from_header(
            HEADER.as_bytes(),
            TimestampFormat::Rfc3339,
            EnergyUnit::Wh,
            PowerUnit::W,
        )
        .unwrap();
        let reading = layout
            .parse_row(
                b"m,2023-11-14T22:13:20.5Z,230,10,15,12",
                NOW,
                &Limits::default(),
            )
            .unwrap();
        assert_eq!(reading.ts_ms, 1_700_000_000_500);
        let reading = layout
            .parse_row(
                b"m,2023-11-14T23:13:20+01:00,230,10,15,12",
                NOW,
                &Limits::default(),
            )
            .unwrap();
        assert_eq!(reading.ts_ms, 1_700_000_000_000);
        assert!(matches!(
            layout.parse_row(b"m,1700000000000,230,10,15,12", NOW, &Limits::default()),
            Err(RowProblem::Field(ReadingError { field: "ts", .. }))
        ));
    }

    #[test]
    fn headers_are_checked() {
        let header = |text: &str| {
            CsvLayout::from_header(
                text.as_bytes(),
                TimestampFormat::UnixMs,
                EnergyUnit::Wh,
                PowerUnit::W,
            )
            .map(|_| ())
        };
        assert_eq!(
            header("meter,ts,voltage,current,power_w,energy_wh,colour"),
            Err(HeaderError::Unknown("colour".into()))
        );
        assert_eq!(
            header("meter,ts,voltage,current,power_w,energy_wh,power"),
            Err(HeaderError::Repeated("power_w"))
        );
        assert_eq!(
            header("meter,ts,voltage,current,energy_wh"),
            Err(HeaderError::Missing("power_w"))
        );
        assert_eq!(header("ts,meter,voltage,current,power,energy"), Ok(()));
    }
}
