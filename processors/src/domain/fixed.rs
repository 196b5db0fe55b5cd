//! Drift-free concentration arithmetic.
//!
//! The EPA truncates averaged concentrations before it looks them up (EPA-454/B-24-002, §IV), so an
//! average that lands a hair below the true value changes the index: 24 hourly means of 9.1 µg/m³
//! summed in `f64` give 9.099999999999998, which truncates to 9.0 (AQI 50) instead of 9.1 (AQI 51).
//! Concentrations are therefore held as integers in thousandths of their unit ([`Fixed`]) and
//! averaged with exact integer sums ([`Mean`]). Floats enter once, at [`Fixed::from_f64`], rounded to
//! the nearest thousandth.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A concentration in thousandths of its unit (µg/m³, ppb or ppm, as the pollutant's wire unit).
///
/// A thousandth is finer than every truncation step of the EPA tables (0.1 µg/m³ for PM2.5,
/// 0.001 ppm = 1 ppb for O3, 0.1 ppm for CO), so truncating a `Fixed` is exact.
///
/// Serializes as the bare integer count of thousandths (checkpoints hold it).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Fixed(i64);

/// Largest magnitude [`Fixed::from_f64`] accepts, in units. Far above any physical
/// concentration, and small enough that sums of billions of values cannot overflow.
const MAX_UNITS: f64 = 1e12;

impl Fixed {
    /// Thousandths per unit.
    pub const SCALE: i64 = 1000;
    /// Zero.
    pub const ZERO: Fixed = Fixed(0);

    /// From a count of thousandths: `from_milli(9_100)` is 9.1.
    pub const fn from_milli(milli: i64) -> Fixed {
        Fixed(milli)
    }

    /// The count of thousandths.
    pub const fn milli(self) -> i64 {
        self.0
    }

    /// A sensor value rounded to the nearest thousandth (halves away from zero). `None` for NaN,
    /// infinities and magnitudes above 10¹² units.
    pub fn from_f64(x: f64) -> Option<Fixed> {
        if !x.is_finite() || x.abs() > MAX_UNITS {
            return None;
        }
        // |x × 1000| ≤ 10¹⁵ < 2⁵³: the product and the cast are exact after rounding.
        Some(Fixed((x * Self::SCALE as f64).round() as i64))
    }

    /// The value in units, for reporting. Exact up to 2⁵³ thousandths.
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / Self::SCALE as f64
    }

    /// Rounded down to a multiple of `step` thousandths (`step` = 100 truncates to 0.1). For the
    /// non-negative values the EPA tables take, this is the EPA's truncation.
    ///
    /// # Panics
    /// If `step` is not positive (a programming error: steps are constants).
    pub const fn floor_to(self, step: i64) -> Fixed {
        assert!(step > 0, "truncation step must be positive");
        Fixed(self.0.div_euclid(step) * step)
    }

    /// Zero for negative values. Instruments report slightly negative concentrations around zero;
    /// the index tables start at zero.
    pub const fn non_negative(self) -> Fixed {
        if self.0 < 0 {
            Fixed::ZERO
        } else {
            self
        }
    }
}

impl fmt::Display for Fixed {
    /// The exact decimal value without trailing zeros: `9.1`, `-0.005`, `42`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let (int, frac) = (abs / 1000, abs % 1000);
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let digits = format!("{frac:03}");
            write!(f, "{sign}{int}.{}", digits.trim_end_matches('0'))
        }
    }
}

/// A decimal that [`Fixed`] cannot hold exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseFixedError(String);

impl fmt::Display for ParseFixedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not a decimal with at most 3 fractional digits: `{}`",
            self.0
        )
    }
}

impl std::error::Error for ParseFixedError {}

impl FromStr for Fixed {
    type Err = ParseFixedError;

    /// Parses `[-]digits[.digits]` with at most three fractional digits, exactly (no float).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseFixedError(s.to_owned());
        let (negative, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || frac.len() > 3 || !all_digits(int) || !all_digits(frac) {
            return Err(err());
        }
        if body.ends_with('.') {
            return Err(err());
        }
        let int: i64 = int.parse().map_err(|_| err())?;
        let frac_milli: i64 = format!("{frac:0<3}").parse().map_err(|_| err())?;
        let milli = int
            .checked_mul(Fixed::SCALE)
            .and_then(|m| m.checked_add(frac_milli))
            .ok_or_else(err)?;
        Ok(Fixed(if negative { -milli } else { milli }))
    }
}

/// The arithmetic mean of [`Fixed`] values, summed exactly.
///
/// [`value`](Mean::value) divides the exact integer sum by the count and rounds **down** to the
/// thousandth. Rounding down (rather than to nearest) composes with the EPA's later truncation:
/// `floor(floor(x · 1000) / 100) = floor(x · 10)`, so the truncated mean is exactly the truncation
/// of the true mean. The mean of equal values is that value, exactly.
///
/// Serializes as its exact sum and count, so a checkpointed mean resumes without loss.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mean {
    sum: i128,
    count: u64,
}

impl Mean {
    /// An empty mean.
    pub const fn new() -> Mean {
        Mean { sum: 0, count: 0 }
    }

    /// Adds one value.
    pub fn add(&mut self, x: Fixed) {
        self.sum += i128::from(x.0);
        self.count += 1;
    }

    /// How many values were added.
    pub const fn count(&self) -> u64 {
        self.count
    }

    /// The mean, rounded down to the thousandth; `None` when empty.
    pub fn value(&self) -> Option<Fixed> {
        if self.count == 0 {
            return None;
        }
        // The floor of a mean lies between the floors of the smallest and largest value, so it
        // fits in i64.
        let mean = self.sum.div_euclid(i128::from(self.count));
        i64::try_from(mean).ok().map(Fixed)
    }
}

impl Extend<Fixed> for Mean {
    fn extend<I: IntoIterator<Item = Fixed>>(&mut self, iter: I) {
        for x in iter {
            self.add(x);
        }
    }
}

impl FromIterator<Fixed> for Mean {
    fn from_iter<I: IntoIterator<Item = Fixed>>(iter: I) -> Mean {
        let mut mean = Mean::new();
        mean.extend(iter);
        mean
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::aqi::{sub_index, Averaging, SubIndex};
    use citypulse_schema::Pollutant;
    use proptest::prelude::*;

    fn fx(s: &str) -> Fixed {
        s.parse().expect("test literal")
    }

    #[test]
    fn twenty_four_means_of_9_1_average_to_9_1_hence_aqi_51() {
        let hourly = Fixed::from_f64(9.1).expect("finite");
        let mean: Mean = std::iter::repeat_n(hourly, 24).collect();
        assert_eq!(mean.value(), Some(fx("9.1")));
        assert_eq!(
            sub_index(Pollutant::Pm25, Averaging::TwentyFourHours, fx("9.1")),
            SubIndex::Value(51)
        );
        // What the float sum would have produced, for the record.
        let float_mean = (0..24).map(|_| 9.1_f64).sum::<f64>() / 24.0;
        assert!(float_mean < 9.1, "f64 drifts below 9.1: {float_mean}");
    }

    #[test]
    fn from_f64_rounds_to_nearest_thousandth() {
        assert_eq!(Fixed::from_f64(9.1), Some(fx("9.1")));
        assert_eq!(Fixed::from_f64(9.0999999), Some(fx("9.1")));
        assert_eq!(Fixed::from_f64(0.0004), Some(Fixed::ZERO));
        assert_eq!(Fixed::from_f64(0.0005), Some(fx("0.001")));
        assert_eq!(Fixed::from_f64(-0.0005), Some(fx("-0.001")));
        assert_eq!(Fixed::from_f64(f64::NAN), None);
        assert_eq!(Fixed::from_f64(f64::INFINITY), None);
        assert_eq!(Fixed::from_f64(2e12), None);
    }

    #[test]
    fn mean_rounds_down_at_the_thousandth() {
        // (1 + 1 + 2) thousandths / 3 = 1.333… thousandths → 1.
        let m: Mean = [fx("0.001"), fx("0.001"), fx("0.002")]
            .into_iter()
            .collect();
        assert_eq!(m.value(), Some(fx("0.001")));
        // 70.999666… ppb stays below 71 and truncates to 70, as the exact mean does.
        let m: Mean = [fx("71"), fx("71"), fx("70.999")].into_iter().collect();
        assert_eq!(m.value(), Some(fx("70.999")));
        // Negative sums round towards −∞ too.
        let m: Mean = [fx("-0.001"), fx("0")].into_iter().collect();
        assert_eq!(m.value(), Some(fx("-0.001")));
        assert_eq!(Mean::new().value(), None);
    }

    #[test]
    fn floor_to_truncates_non_negative_values() {
        assert_eq!(fx("9.09").floor_to(100), fx("9.0"));
        assert_eq!(fx("35.45").floor_to(100), fx("35.4"));
        assert_eq!(fx("54.999").floor_to(1000), fx("54"));
        assert_eq!(fx("9.1").floor_to(100), fx("9.1"));
    }

    #[test]
    fn parse_and_display_are_exact() {
        for s in ["0", "9.1", "-0.005", "42", "1234.567"] {
            assert_eq!(fx(s).to_string(), s);
        }
        assert_eq!(fx("9.100").milli(), 9_100);
        for bad in [
            "",
            "-",
            ".5",
            "5.",
            "1.2345",
            "1e3",
            "+1",
            "1.-2",
            "9999999999999999999",
        ] {
            assert!(bad.parse::<Fixed>().is_err(), "{bad:?} should not parse");
        }
    }

    proptest! {
        #[test]
        fn mean_of_copies_is_exact(milli in -1_000_000_000i64..1_000_000_000, n in 1usize..2000) {
            let x = Fixed::from_milli(milli);
            let mean: Mean = std::iter::repeat_n(x, n).collect();
            prop_assert_eq!(mean.value(), Some(x));
        }

        #[test]
        fn mean_of_copies_of_a_float_with_three_decimals_is_exact(
            milli in 0i64..10_000_000, n in 1usize..200,
        ) {
            // The float a sensor would send for milli/1000, e.g. 9.1 for 9100.
            let sent = milli as f64 / 1000.0;
            let x = Fixed::from_f64(sent).expect("finite");
            prop_assert_eq!(x.milli(), milli);
            let mean: Mean = std::iter::repeat_n(x, n).collect();
            prop_assert_eq!(mean.value(), Some(x));
        }

        #[test]
        fn mean_lies_between_min_and_max(values in proptest::collection::vec(-1_000_000i64..1_000_000, 1..50)) {
            let mean: Mean = values.iter().copied().map(Fixed::from_milli).collect();
            let m = mean.value().expect("non-empty").milli();
            let lo = values.iter().copied().min().unwrap_or_default();
            let hi = values.iter().copied().max().unwrap_or_default();
            prop_assert!(lo <= m && m <= hi);
        }

        #[test]
        fn display_round_trips(milli in proptest::num::i64::ANY.prop_map(|m| m / 1000)) {
            let x = Fixed::from_milli(milli);
            prop_assert_eq!(x.to_string().parse::<Fixed>(), Ok(x));
        }
    }
}
