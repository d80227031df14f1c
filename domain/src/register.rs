//! Energy-register arithmetic: turning two cumulative readings into energy used.
//!
//! Registers roll over (a 6-digit kWh display wraps at 999 999 kWh), get reset when a
//! meter is replaced, and occasionally glitch. Summing raw differences produces the
//! negative or spiking totals that Home Assistant users reported (core #57055); here
//! every step is classified, and only plausible energy is ever counted.

/// Smallest decrease (Wh) treated as a real decrease rather than float noise.
const NOISE_WH: f64 = 1e-3;

/// How one register step is counted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RegisterStep {
    /// The register advanced (or stood still) by this many Wh.
    Advance {
        /// Energy used, Wh (>= 0).
        delta_wh: f64,
    },
    /// The register wrapped at `modulus_wh`; `delta_wh` is the energy across the wrap.
    Rollover {
        /// Energy used across the wrap, Wh.
        delta_wh: f64,
        /// The register's capacity, Wh.
        modulus_wh: f64,
    },
    /// The register went backwards and no rollover explains it (meter reset, replacement
    /// or tampering): nothing is counted and the new value becomes the baseline.
    Reset {
        /// Register before, Wh.
        previous_wh: f64,
        /// Register after, Wh.
        current_wh: f64,
    },
    /// The register advanced by more than the meter could have used in the elapsed time
    /// (a glitch): nothing is counted and the new value becomes the baseline.
    Implausible {
        /// The claimed advance, Wh.
        delta_wh: f64,
        /// The most the meter could have used, Wh.
        max_wh: f64,
    },
}

impl RegisterStep {
    /// The energy this step counts towards usage, Wh (never negative).
    pub fn counted_wh(&self) -> f64 {
        match *self {
            RegisterStep::Advance { delta_wh } | RegisterStep::Rollover { delta_wh, .. } => {
                delta_wh
            }
            RegisterStep::Reset { .. } | RegisterStep::Implausible { .. } => 0.0,
        }
    }
}

/// Classifies the step from `previous_wh` to `current_wh` over `elapsed_ms`, for a meter
/// that can draw at most `max_power_w`.
pub fn register_step(
    previous_wh: f64,
    current_wh: f64,
    elapsed_ms: i64,
    max_power_w: f64,
) -> RegisterStep {
    // At least one second, plus 50 % margin and 1 Wh for register resolution.
    let elapsed_h = (elapsed_ms.max(1000) as f64) / 3_600_000.0;
    let max_wh = max_power_w * elapsed_h * 1.5 + 1.0;
    let delta_wh = current_wh - previous_wh;
    if delta_wh >= -NOISE_WH {
        let delta_wh = delta_wh.max(0.0);
        if delta_wh > max_wh {
            return RegisterStep::Implausible { delta_wh, max_wh };
        }
        return RegisterStep::Advance { delta_wh };
    }
    // Went backwards: a rollover wraps at the next power of ten above the previous value
    // (registers count in decimal digits, in Wh or kWh).
    let mut modulus_wh = 10.0;
    while modulus_wh <= previous_wh && modulus_wh < 1e18 {
        modulus_wh *= 10.0;
    }
    let wrapped_wh = modulus_wh - previous_wh + current_wh;
    let near_top = previous_wh >= modulus_wh * 0.9;
    if near_top && wrapped_wh >= 0.0 && wrapped_wh <= max_wh {
        return RegisterStep::Rollover {
            delta_wh: wrapped_wh,
            modulus_wh,
        };
    }
    RegisterStep::Reset {
        previous_wh,
        current_wh,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX_W: f64 = 25_000.0;

    fn check(previous_wh: f64, current_wh: f64, elapsed_ms: i64, expected: RegisterStep) {
        assert_eq!(
            register_step(previous_wh, current_wh, elapsed_ms, MAX_W),
            expected
        );
    }

    #[test]
    fn classifies_steps() {
        check(
            1000.0,
            1010.0,
            5_000,
            RegisterStep::Advance { delta_wh: 10.0 },
        );
        check(
            1000.0,
            1000.0,
            5_000,
            RegisterStep::Advance { delta_wh: 0.0 },
        );
        check(
            1000.0,
            999.9999,
            5_000,
            RegisterStep::Advance { delta_wh: 0.0 },
        );
        // 999 990 Wh -> 5 Wh on a 6-digit Wh register: 15 Wh across the wrap.
        check(
            999_990.0,
            5.0,
            5_000,
            RegisterStep::Rollover {
                delta_wh: 15.0,
                modulus_wh: 1_000_000.0,
            },
        );
        // A replaced meter starting from zero is a reset, not a huge rollover.
        check(
            123_456.0,
            0.0,
            5_000,
            RegisterStep::Reset {
                previous_wh: 123_456.0,
                current_wh: 0.0,
            },
        );
        // 25 kW for 5 s is at most ~52 Wh: a 10 MWh jump is a glitch.
        let max_wh = 25_000.0 * (5_000.0 / 3_600_000.0) * 1.5 + 1.0;
        check(
            1000.0,
            10_001_000.0,
            5_000,
            RegisterStep::Implausible {
                delta_wh: 10_000_000.0,
                max_wh,
            },
        );
    }

    proptest::proptest! {
        /// Whatever the register does, counted energy is never negative and never more
        /// than the meter could physically have used.
        #[test]
        fn counted_energy_is_bounded(previous in 0.0f64..1e9, current in 0.0f64..1e9, elapsed in 0i64..86_400_000) {
            let step = register_step(previous, current, elapsed, MAX_W);
            let counted = step.counted_wh();
            let max_wh = MAX_W * (elapsed.max(1000) as f64 / 3_600_000.0) * 1.5 + 1.0;
            proptest::prop_assert!(counted >= 0.0);
            proptest::prop_assert!(counted <= max_wh, "{step:?}");
        }

        /// A register that only moves forward at plausible rates is counted exactly,
        /// across any number of rollovers.
        #[test]
        fn forward_series_sums_exactly(start in 0.0f64..999_000.0, steps in proptest::collection::vec(0.0f64..30.0, 1..200)) {
            let modulus = 1_000_000.0;
            let mut register = start;
            let mut counted = 0.0;
            let mut truth = 0.0;
            for step_wh in steps {
                let next = (register + step_wh) % modulus;
                counted += register_step(register, next, 5_000, MAX_W).counted_wh();
                truth += step_wh;
                register = next;
            }
            proptest::prop_assert!((counted - truth).abs() < 1e-3 * (1.0 + truth), "counted {counted} truth {truth}");
        }
    }
}
