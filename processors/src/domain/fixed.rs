//! Drift-free concentration arithmetic on the readings' exact decimal values.
//!
//! The EPA truncates averaged concentrations before it looks them up (EPA-454/B-24-002, May 2024,
//! §IV), so an average that lands a hair below the true value changes the index: 24 hourly means
//! of 9.1 µg/m³ summed in `f64` give 9.099999999999998, which truncates to 9.0 (AQI 50) instead of
//! 9.1 (AQI 51). And a reading must not be rounded before that truncation either: 9.0995 µg/m³
//! truncates to 9.0 (AQI 50); rounded to 0.001 first it would become 9.100 (AQI 51).
//!
//! Concentrations are therefore held as integers in **billionths** of their unit ([`Fixed`]) and
//! averaged with exact integer sums ([`Mean`]). Floats enter once, at [`Fixed::from_f64`], which
//! takes the decimal the sender wrote: the shortest decimal that reads back as the same `f64`
//! (`9.1`, `9.0995`), exact whenever it has at most nine fractional digits (every real
//! instrument), and otherwise cut (rounded towards −∞) at the ninth, which composes with the
//! EPA's truncation as [`Mean::value`] explains.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A concentration in billionths (10⁻⁹) of its unit (µg/m³, ppb or ppm, as the pollutant's wire
/// unit).
///
/// A billionth is finer than every truncation step of the EPA tables (0.1 µg/m³ for PM2.5,
/// 0.001 ppm = 1 ppb for O3, 0.1 ppm for CO), so truncating a `Fixed` is exact.
///
/// Serializes as the bare integer count of billionths (checkpoints hold it).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Fixed(i64);

/// Largest magnitude [`Fixed::from_f64`] accepts, in units: far above any physical
/// concentration, and 10⁹ × 10⁹ billionths fit in an `i64` (≤ 9.2 × 10¹⁸).
const MAX_UNITS: f64 = 1e9;

/// Billionths per thousandth.
const PER_MILLI: i64 = 1_000_000;

/// Below 2²⁰ units an `f64` is spaced by at most 2⁻³² ≈ 2.3 × 10⁻¹⁰, so `round(x × 10⁹)` lands
/// within 0.2 of the integer count of billionths of `x`'s shortest decimal, when that decimal has
/// at most nine fractional digits (see [`Fixed::from_f64`]).
const FAST_PATH_LIMIT: f64 = 1_048_576.0;

impl Fixed {
    /// Billionths per unit.
    pub const SCALE: i64 = 1_000_000_000;
    /// Zero.
    pub const ZERO: Fixed = Fixed(0);

    /// From a count of thousandths: `from_milli(9_100)` is 9.1.
    pub const fn from_milli(milli: i64) -> Fixed {
        Fixed(milli * PER_MILLI)
    }

    /// From a count of billionths: `from_nanos(9_100_000_000)` is 9.1.
    pub const fn from_nanos(nanos: i64) -> Fixed {
        Fixed(nanos)
    }

    /// The count of thousandths, rounded towards −∞ (`9.0995` gives 9099).
    pub const fn milli(self) -> i64 {
        self.0.div_euclid(PER_MILLI)
    }

    /// The count of billionths.
    pub const fn nanos(self) -> i64 {
        self.0
    }

    /// The value the sender wrote: the shortest decimal that reads back as `x` (what `{x}`
    /// prints), in billionths, cut towards −∞ after the ninth fractional digit. `None` for NaN,
    /// infinities and magnitudes above 10⁹ units.
    ///
    /// Fast path: when `round(x × 10⁹) / 10⁹` reads back as `x`, that nine-digit decimal is the
    /// shortest one (a shorter decimal would be on the same grid and, the grid being coarser than
    /// the `f64` spacing below `FAST_PATH_LIMIT` (2²⁰), the same number). Otherwise the shortest
    /// decimal has more than nine fractional digits, or `x` is large: it is printed and parsed.
    pub fn from_f64(x: f64) -> Option<Fixed> {
        if !x.is_finite() || x.abs() > MAX_UNITS {
            return None;
        }
        if x.abs() < FAST_PATH_LIMIT {
            let n = (x * Self::SCALE as f64).round();
            // Division by 10⁹ is correctly rounded: it is the `f64` nearest to n × 10⁻⁹.
            if n / Self::SCALE as f64 == x {
                // |n| < 2⁵¹: the cast is exact.
                return Some(Fixed(n as i64));
            }
        }
        Self::parse_floor(&format!("{x}"))
    }

    /// Parses `[-]digits[.digits]` (any number of fractional digits), cut towards −∞ at the
    /// billionth. `None` when it is not such a decimal or does not fit.
    fn parse_floor(s: &str) -> Option<Fixed> {
        let (negative, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if int.is_empty() || !digits(int) || !digits(frac) {
            return None;
        }
        let (kept, cut) = frac.split_at(frac.len().min(9));
        let int: i64 = int.parse().ok()?;
        let kept: i64 = format!("{kept:0<9}").parse().ok()?;
        let magnitude = int.checked_mul(Self::SCALE)?.checked_add(kept)?;
        let dropped = cut.bytes().any(|b| b != b'0');
        Some(Fixed(match (negative, dropped) {
            (false, _) => magnitude,
            (true, false) => -magnitude,
            (true, true) => -magnitude - 1,
        }))
    }

    /// The value in units, for reporting: the `f64` nearest to the exact decimal.
    pub fn to_f64(self) -> f64 {
        // Below 2⁵³ billionths (9 × 10⁶ units) both operands are exact and the division is
        // correctly rounded; above, the decimal is printed and read.
        if self.0.unsigned_abs() < 1 << 53 {
            self.0 as f64 / Self::SCALE as f64
        } else {
            self.to_string().parse().unwrap_or(f64::NAN)
        }
    }

    /// Rounded down to a multiple of `step` **thousandths** (`step` = 100 truncates to 0.1). For
    /// the non-negative values the EPA tables take, this is the EPA's truncation.
    ///
    /// # Panics
    /// If `step` is not positive (a programming error: steps are constants).
    pub const fn floor_to(self, step: i64) -> Fixed {
        assert!(step > 0, "truncation step must be positive");
        let step = step * PER_MILLI;
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
    /// The exact decimal value without trailing zeros: `9.1`, `-0.005`, `9.0995`, `42`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let scale = Self::SCALE.unsigned_abs();
        let (int, frac) = (abs / scale, abs % scale);
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let digits = format!("{frac:09}");
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
            "not a decimal with at most 9 fractional digits: `{}`",
            self.0
        )
    }
}

impl std::error::Error for ParseFixedError {}

impl FromStr for Fixed {
    type Err = ParseFixedError;

    /// Parses `[-]digits[.digits]` with at most nine fractional digits, exactly (no float).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseFixedError(s.to_owned());
        let body = s.strip_prefix('-').unwrap_or(s);
        let frac = body.split_once('.').map_or("", |(_, f)| f);
        if frac.len() > 9 || body.ends_with('.') {
            return Err(err());
        }
        Self::parse_floor(s).ok_or_else(err)
    }
}

/// The arithmetic mean of [`Fixed`] values, summed exactly.
///
/// [`value`](Mean::value) divides the exact integer sum by the count and rounds **down** to the
/// billionth. Rounding down (rather than to nearest) composes with the EPA's later truncation:
/// `floor(floor(x · 10⁹) / 10⁸) = floor(x · 10)`, so the truncated mean is exactly the truncation
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

    /// The mean, rounded down to the billionth; `None` when empty.
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
    fn from_f64_takes_the_decimal_the_sender_wrote() {
        assert_eq!(Fixed::from_f64(9.1), Some(fx("9.1")));
        // Issue 10: 9.0995 is not rounded to 9.100 first; it truncates to 9.0, AQI 50.
        assert_eq!(Fixed::from_f64(9.0995), Some(fx("9.0995")));
        assert_eq!(
            sub_index(Pollutant::Pm25, Averaging::TwentyFourHours, fx("9.0995")),
            SubIndex::Value(50)
        );
        assert_eq!(Fixed::from_f64(9.0999999), Some(fx("9.0999999")));
        assert_eq!(Fixed::from_f64(0.0004), Some(fx("0.0004")));
        assert_eq!(Fixed::from_f64(-0.0005), Some(fx("-0.0005")));
        assert_eq!(Fixed::from_f64(0.000000001), Some(Fixed::from_nanos(1)));
        // More than nine fractional digits: cut towards −∞ at the ninth (slow path).
        assert_eq!(Fixed::from_f64(9.09999999999), Some(fx("9.099999999")));
        assert_eq!(Fixed::from_f64(-9.09999999999), Some(fx("-9.1")));
        assert_eq!(Fixed::from_f64(0.1234567891), Some(fx("0.123456789")));
        // Large values take the printed decimal too.
        assert_eq!(Fixed::from_f64(123_456_789.5), Some(fx("123456789.5")));
        assert_eq!(Fixed::from_f64(f64::NAN), None);
        assert_eq!(Fixed::from_f64(f64::INFINITY), None);
        assert_eq!(Fixed::from_f64(2e9), None);
    }

    #[test]
    fn to_f64_is_the_nearest_float() {
        for s in [
            "9.1",
            "9.0995",
            "-0.005",
            "42",
            "123456789.5",
            "8999999.123456789",
        ] {
            assert_eq!(fx(s).to_f64(), s.parse::<f64>().expect("literal"), "{s}");
        }
    }

    #[test]
    fn mean_rounds_down_at_the_billionth() {
        // (1 + 1 + 2) billionths / 3 = 1.333… billionths → 1.
        let m: Mean = [1, 1, 2].into_iter().map(Fixed::from_nanos).collect();
        assert_eq!(m.value(), Some(Fixed::from_nanos(1)));
        // Two readings whose exact mean is 9.1 average to 9.1 (pre-rounding each to 0.001 would
        // give 9.099 and 9.1, mean 9.0995, truncated to 9.0).
        let m: Mean = [fx("9.0995"), fx("9.1005")].into_iter().collect();
        assert_eq!(m.value(), Some(fx("9.1")));
        // 70.999666… ppb stays below 71 and truncates to 70, as the exact mean does.
        let m: Mean = [fx("71"), fx("71"), fx("70.999")].into_iter().collect();
        assert_eq!(m.value(), Some(fx("70.999666666")));
        assert_eq!(m.value().map(|v| v.floor_to(1_000)), Some(fx("70")));
        // Negative sums round towards −∞ too.
        let m: Mean = [fx("-0.001"), fx("0")].into_iter().collect();
        assert_eq!(m.value(), Some(fx("-0.0005")));
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
        for s in [
            "0",
            "9.1",
            "-0.005",
            "42",
            "1234.567",
            "9.0995",
            "0.000000001",
        ] {
            assert_eq!(fx(s).to_string(), s);
        }
        assert_eq!(fx("9.100").milli(), 9_100);
        assert_eq!(fx("9.0995").milli(), 9_099);
        assert_eq!(fx("9.0995").nanos(), 9_099_500_000);
        for bad in [
            "",
            "-",
            ".5",
            "5.",
            "1.2345678901",
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
        fn display_round_trips(nanos in proptest::num::i64::ANY) {
            let x = Fixed::from_nanos(nanos);
            prop_assert_eq!(x.to_string().parse::<Fixed>(), Ok(x));
        }

        #[test]
        fn from_f64_is_the_printed_decimal_cut_at_the_billionth(x in -1e7f64..1e7) {
            // The fast path agrees with printing the shortest decimal and parsing it.
            prop_assert_eq!(Fixed::from_f64(x), Fixed::parse_floor(&format!("{x}")));
        }

        #[test]
        fn a_decimal_with_up_to_nine_places_survives_the_float(
            int in 0i64..1_000_000, frac in 0i64..1_000_000_000, places in 0u32..10,
        ) {
            // The decimal int.frac cut to `places` digits, sent as the nearest f64.
            let cut = 10i64.pow(9 - places);
            let nanos = int * Fixed::SCALE + frac / cut * cut;
            let x = Fixed::from_nanos(nanos);
            let sent: f64 = x.to_string().parse().expect("decimal");
            prop_assert_eq!(Fixed::from_f64(sent), Some(x));
        }
    }
}
