//! PURE: which fault, if any, hits a reading. Decisions come from the reading's own generator,
//! so they are reproducible from the seed.
//!
//! Each rate is the expected fraction of readings (sensor, seq) carrying that fault; faults are
//! exclusive, so the rates must sum to at most 1. A stuck sensor repeats its values for a run of
//! [`STUCK_RUN`] readings; the start probability is set so the stuck fraction equals the rate,
//! and the other faults are drawn among the non-stuck readings, scaled up to keep their overall
//! fractions at their rates.

use crate::draw;
use rand_chacha::rand_core::RngCore;

/// Readings in one stuck run.
pub const STUCK_RUN: u32 = 10;

/// One fault, as labelled in the truth file and the `fault` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// Not sent at all; the sequence number still advances, so a gap shows.
    Dropout,
    /// Repeats the sensor's last values (for a run of readings).
    Stuck,
    /// One absurd value: PM2.5 (or the first pollutant) ×20, speed 400 km/h, or 5000 vehicles.
    Spike,
    /// One value negative.
    Negative,
    /// `ts` far off: 25 hours to 7 days ahead (caught by ingest as `future_timestamp` even while
    /// an accelerated run replays the last 24 hours), or 2 to 48 hours behind.
    ClockSkew,
    /// Held back and delivered 2 to 10 intervals later (out of order).
    Late,
    /// Delivered twice: same bytes; the second copy carries this label.
    Duplicate,
    /// Not a valid reading: bad CBOR, a field of the wrong type, or a payload identity (sensor
    /// or district) differing from the subject.
    Malformed,
}

impl Fault {
    /// Every fault, in decision order.
    pub const ALL: [Fault; 8] = [
        Fault::Dropout,
        Fault::Stuck,
        Fault::Spike,
        Fault::Negative,
        Fault::ClockSkew,
        Fault::Late,
        Fault::Duplicate,
        Fault::Malformed,
    ];

    /// The label: truth file `fault`, metric label `fault`.
    pub const fn label(self) -> &'static str {
        match self {
            Fault::Dropout => "dropout",
            Fault::Stuck => "stuck",
            Fault::Spike => "spike",
            Fault::Negative => "negative",
            Fault::ClockSkew => "clock_skew",
            Fault::Late => "late",
            Fault::Duplicate => "duplicate",
            Fault::Malformed => "malformed",
        }
    }
}

/// Why fault rates are unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultRateError {
    /// A rate outside 0..=1.
    #[error("fault rate {fault} = {rate} is outside 0..=1")]
    OutOfRange {
        /// The fault's label.
        fault: &'static str,
        /// The rate given.
        rate: f64,
    },
    /// The rates add up to more than every reading.
    #[error("fault rates sum to {0}, more than 1 (faults are exclusive)")]
    SumAboveOne(f64),
}

/// Fraction of readings hit by each fault.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultRates {
    /// See [`Fault::Dropout`].
    pub dropout: f64,
    /// See [`Fault::Stuck`].
    pub stuck: f64,
    /// See [`Fault::Spike`].
    pub spike: f64,
    /// See [`Fault::Negative`].
    pub negative: f64,
    /// See [`Fault::ClockSkew`].
    pub clock_skew: f64,
    /// See [`Fault::Late`].
    pub late: f64,
    /// See [`Fault::Duplicate`].
    pub duplicate: f64,
    /// See [`Fault::Malformed`].
    pub malformed: f64,
}

impl FaultRates {
    /// No faults.
    pub const NONE: FaultRates = FaultRates {
        dropout: 0.0,
        stuck: 0.0,
        spike: 0.0,
        negative: 0.0,
        clock_skew: 0.0,
        late: 0.0,
        duplicate: 0.0,
        malformed: 0.0,
    };

    /// The `--faults demo` preset: about 1.6 % of readings faulty, every kind represented.
    pub const DEMO: FaultRates = FaultRates {
        dropout: 0.005,
        stuck: 0.003,
        spike: 0.001,
        negative: 0.001,
        clock_skew: 0.001,
        late: 0.002,
        duplicate: 0.002,
        malformed: 0.001,
    };

    /// The rate of one fault.
    pub fn rate(&self, fault: Fault) -> f64 {
        match fault {
            Fault::Dropout => self.dropout,
            Fault::Stuck => self.stuck,
            Fault::Spike => self.spike,
            Fault::Negative => self.negative,
            Fault::ClockSkew => self.clock_skew,
            Fault::Late => self.late,
            Fault::Duplicate => self.duplicate,
            Fault::Malformed => self.malformed,
        }
    }

    /// Checks each rate is in 0..=1 and their sum at most 1.
    pub fn validate(&self) -> Result<(), FaultRateError> {
        for f in Fault::ALL {
            let rate = self.rate(f);
            if !(0.0..=1.0).contains(&rate) {
                return Err(FaultRateError::OutOfRange {
                    fault: f.label(),
                    rate,
                });
            }
        }
        let sum: f64 = Fault::ALL.iter().map(|&f| self.rate(f)).sum();
        if sum > 1.0 + 1e-9 {
            return Err(FaultRateError::SumAboveOne(sum));
        }
        Ok(())
    }
}

/// Per-sensor fault state: the rest of a stuck run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultState {
    stuck_left: u32,
}

/// Decides the fault of the next reading. `can_stick`: the sensor has values to repeat.
pub fn decide(
    rates: &FaultRates,
    state: &mut FaultState,
    can_stick: bool,
    rng: &mut impl RngCore,
) -> Option<Fault> {
    if state.stuck_left > 0 {
        state.stuck_left -= 1;
        return Some(Fault::Stuck);
    }
    let r = rates.stuck;
    if r > 0.0 {
        // Runs of L stuck readings started with probability p per free reading give a stuck
        // fraction of Lp / (Lp + 1 − p); solving for the rate r gives p = r / (L(1 − r) + r).
        let l = f64::from(STUCK_RUN);
        let p = r / (l * (1.0 - r) + r);
        if draw::chance(rng, p) && can_stick {
            state.stuck_left = STUCK_RUN - 1;
            return Some(Fault::Stuck);
        }
    }
    let scale = 1.0 - r;
    if scale <= 0.0 {
        return None;
    }
    let mut u = draw::unit(rng) * scale;
    for f in Fault::ALL {
        if f == Fault::Stuck {
            continue;
        }
        let rate = rates.rate(f);
        if u < rate {
            return Some(f);
        }
        u -= rate;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_validated() {
        assert!(FaultRates::DEMO.validate().is_ok());
        let bad = FaultRates {
            spike: 1.5,
            ..FaultRates::NONE
        };
        assert!(matches!(
            bad.validate(),
            Err(FaultRateError::OutOfRange { fault: "spike", .. })
        ));
        let sum = FaultRates {
            dropout: 0.6,
            late: 0.6,
            ..FaultRates::NONE
        };
        assert!(matches!(
            sum.validate(),
            Err(FaultRateError::SumAboveOne(_))
        ));
    }

    #[test]
    fn no_rates_no_faults() {
        let mut rng = draw::stream(1, 1);
        let mut s = FaultState::default();
        assert!((0..10_000).all(|_| decide(&FaultRates::NONE, &mut s, true, &mut rng).is_none()));
    }

    #[test]
    fn stuck_comes_in_runs() {
        let rates = FaultRates {
            stuck: 1.0,
            ..FaultRates::NONE
        };
        let mut rng = draw::stream(1, 1);
        let mut s = FaultState::default();
        assert_eq!(
            decide(&rates, &mut s, false, &mut rng),
            None,
            "nothing to repeat yet"
        );
        for _ in 0..25 {
            assert_eq!(decide(&rates, &mut s, true, &mut rng), Some(Fault::Stuck));
        }
    }

    #[test]
    fn every_fault_appears_at_its_rate() {
        let rates = FaultRates {
            dropout: 0.05,
            stuck: 0.1,
            spike: 0.02,
            negative: 0.03,
            clock_skew: 0.04,
            late: 0.05,
            duplicate: 0.06,
            malformed: 0.07,
        };
        let mut rng = draw::stream(3, 3);
        let mut s = FaultState::default();
        let n = 200_000;
        let mut counts = std::collections::BTreeMap::new();
        for _ in 0..n {
            if let Some(f) = decide(&rates, &mut s, true, &mut rng) {
                *counts.entry(f).or_insert(0u32) += 1;
            }
        }
        for f in Fault::ALL {
            let p = rates.rate(f);
            let got = f64::from(counts.get(&f).copied().unwrap_or(0)) / n as f64;
            // Stuck readings come in runs of STUCK_RUN: their count varies that much more.
            let cluster = if f == Fault::Stuck {
                f64::from(STUCK_RUN)
            } else {
                1.0
            };
            let sd = (p * (1.0 - p) * cluster / n as f64).sqrt();
            assert!((got - p).abs() < 4.0 * sd, "{f:?}: {got} vs {p}");
        }
    }
}
