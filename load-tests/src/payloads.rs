//! Generates canonical JSON payloads cheaply, so the benchmark measures gridpulse and
//! not the generator: integers are written per reading, the electrical part comes from
//! a small table of pre-formatted variants.

use std::io::Write;

/// Electrical variants: (voltage, current, power) pre-formatted, all plausible.
const NORMAL: [&str; 8] = [
    r#""voltage":230.1,"current":1.21,"power_w":262.5}"#,
    r#""voltage":229.4,"current":2.05,"power_w":451.0}"#,
    r#""voltage":231.7,"current":0.88,"power_w":190.2}"#,
    r#""voltage":228.9,"current":4.40,"power_w":970.3}"#,
    r#""voltage":232.2,"current":1.64,"power_w":361.9}"#,
    r#""voltage":230.8,"current":3.12,"power_w":688.4}"#,
    r#""voltage":229.9,"current":0.65,"power_w":141.7}"#,
    r#""voltage":231.1,"current":2.73,"power_w":600.8}"#,
];
/// Over the default over-voltage threshold (253 V).
pub const OVER_VOLTAGE: &str = r#""voltage":262.0,"current":1.50,"power_w":350.0}"#;
/// Back under the clear level (250 V).
pub const RECOVERED: &str = r#""voltage":231.0,"current":1.50,"power_w":330.0}"#;

/// Meter ids `lt-0000001`... formatted once.
#[derive(Debug)]
pub struct Fleet {
    ids: Vec<String>,
}

impl Fleet {
    /// `n` meters.
    pub fn new(n: usize) -> Fleet {
        Fleet {
            ids: (1..=n).map(|i| format!("lt-{i:07}")).collect(),
        }
    }

    /// Number of meters.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Id of meter `idx`.
    pub fn id(&self, idx: usize) -> &str {
        &self.ids[idx]
    }

    /// Writes meter `idx`'s reading of round `round` into `out` (cleared first).
    pub fn write_reading(
        &self,
        out: &mut Vec<u8>,
        idx: usize,
        ts_ms: i64,
        round: u64,
        electrical: Option<&str>,
    ) {
        out.clear();
        // 0.25 to 2 Wh per reading, so registers rise like real ones.
        let energy_wh = 1_000_000 + round * (1 + (idx as u64 % 8)) / 4;
        let _ = write!(
            out,
            r#"{{"meter":"{}","ts_ms":{ts_ms},"energy_wh":{energy_wh},"#,
            self.ids[idx]
        );
        let electrical = electrical.unwrap_or(NORMAL[(idx + round as usize) % NORMAL.len()]);
        out.extend_from_slice(electrical.as_bytes());
    }
}
