//! The PM NowCast: a real-time estimate of the 24-h PM concentration from the last 12 hourly
//! means.
//!
//! Source: EPA-454/B-24-002 (May 2024), §IV "How the NowCast is calculated", and AirNow-Tech,
//! "The NowCast for PM2.5 and PM10". With `c_i` the mean of the hour `i` hours ago (`i = 0` is
//! the most recent complete hour) and only valid hours taken:
//!
//! - `w* = c_min / c_max` over the valid hours; `w = max(w*, 0.5)`;
//! - `NowCast = Σ wⁱ c_i / Σ wⁱ`, where a missing hour drops its term from both sums but does
//!   not shift the exponents of older hours;
//! - valid only when at least two of the three most recent hours are present;
//! - truncated like the 24-h mean: PM2.5 to 0.1 µg/m³, PM10 to 1 µg/m³.
//!
//! The weights are real numbers, so the sums are `f64` over exact [`Fixed`] inputs. Before
//! truncating, the quotient is rounded to 10⁻⁹ µg/m³: when the exact NowCast sits on the
//! truncation grid (e.g. 48.1), `f64` may land on 48.09999999999999, which would truncate a whole
//! step too low. The guard costs nothing in practice: an exact value within 10⁻⁹ below a grid
//! point, but not on it, would be rounded up, and its error (< 10⁻⁹ µg/m³) is far below any
//! instrument's resolution.

use super::aqi::{self, Averaging};
use super::fixed::Fixed;
use citypulse_schema::Pollutant;

/// Hours the NowCast looks back over.
pub const HOURS: usize = 12;

/// Minimum weight factor for PM (AirNow-Tech).
const MIN_WEIGHT: f64 = 0.5;

/// The NowCast of `p` (PM2.5 or PM10) from hourly means, `hours[0]` the most recent hour, in
/// µg/m³, truncated to the 24-h table's step.
///
/// `None` when fewer than two of `hours[0..3]` are present, or when `p` is not PM (the EPA's
/// ozone NowCast is a different, regression-based method). Negative hourly means (instrument
/// noise) count as zero, so that `c_min / c_max` stays a weight in `[0, 1]`.
pub fn nowcast(p: Pollutant, hours: &[Option<Fixed>; HOURS]) -> Option<Fixed> {
    if !matches!(p, Pollutant::Pm25 | Pollutant::Pm10)
        || hours[..3].iter().filter(|h| h.is_some()).count() < 2
    {
        return None;
    }
    let valid = || {
        hours
            .iter()
            .enumerate()
            .filter_map(|(age, c)| c.map(|c| (age, c.non_negative().nanos())))
    };
    let min = valid().map(|(_, c)| c).min()?;
    let max = valid().map(|(_, c)| c).max()?;
    let w = if max == 0 {
        // All hours are zero: every weight gives zero; take the plain mean.
        1.0
    } else {
        (min as f64 / max as f64).max(MIN_WEIGHT)
    };
    let (mut num, mut den, mut weight) = (0.0_f64, 0.0_f64, 1.0_f64);
    let mut next_age = 0;
    for (age, c) in valid() {
        // wⁱ by repeated multiplication over every age, missing or not: exponents never shift.
        while next_age < age {
            weight *= w;
            next_age += 1;
        }
        num += weight * c as f64;
        den += weight;
    }
    // Weighted mean in billionths, rounded to the billionth (the guard), then truncated by the
    // 24-h table in integers. The mean lies between the inputs, which fit in i64.
    let guarded = (num / den).round() as i64;
    aqi::truncated(p, Averaging::TwentyFourHours, Fixed::from_nanos(guarded))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Pollutant::*;

    fn hours(values: [Option<&str>; HOURS]) -> [Option<Fixed>; HOURS] {
        values.map(|v| v.map(|s| s.parse().expect("test literal")))
    }

    fn all(values: [&str; HOURS]) -> [Option<Fixed>; HOURS] {
        hours(values.map(Some))
    }

    fn fx(s: &str) -> Fixed {
        s.parse().expect("test literal")
    }

    #[test]
    fn epa_example_gives_17_4() {
        // EPA/AirNow training example "Computing the NowCast" (listed oldest first there:
        // 50 80 75 90 82 53 64 74 21 10 16 13). w* = 10/90 < 0.5 → w = 0.5.
        // Σ wⁱcᵢ = 13 + 8 + 2.5 + 2.625 + 4.625 + 2 + 0.828125 + 0.640625 + 0.3515625
        //        + 0.146484375 + 0.078125 + 0.0244140625 = 34.8193359375
        // Σ wⁱ   = 2 − 0.5¹¹ = 1.99951171875 → 17.4139… → 17.4
        let h = all([
            "13", "16", "10", "21", "74", "64", "53", "82", "90", "75", "80", "50",
        ]);
        assert_eq!(nowcast(Pm25, &h), Some(fx("17.4")));
        // The variant often quoted with 60 for the oldest hour gives 17.4163… → 17.4 as well.
        let h = all([
            "13", "16", "10", "21", "74", "64", "53", "82", "90", "75", "80", "60",
        ]);
        assert_eq!(nowcast(Pm25, &h), Some(fx("17.4")));
        // The same hours as PM10 truncate to 1 µg/m³.
        assert_eq!(nowcast(Pm10, &h), Some(fx("17")));
    }

    #[test]
    fn published_omak_wildfire_example_gives_54_8() {
        // Mazama Science, PWFSLSmoke "NowCast" vignette, Example 1: PM2.5 at Omak, WA, hours
        // ending 2015-08-21 11:00, most recent first. w* = 27.4/215.4 < 0.5 → w = 0.5;
        // Σ wⁱcᵢ / Σ wⁱ = 54.811… → 54.8 (the vignette's published result).
        let h = all([
            "46.3", "27.4", "59.8", "129.2", "130.6", "215.4", "143.2", "93.7", "101.8", "49.3",
            "80.2", "123.3",
        ]);
        assert_eq!(nowcast(Pm25, &h), Some(fx("54.8")));
    }

    #[test]
    fn airnow_tech_example_with_a_missing_hour_gives_28_4() {
        // AirNow-Tech, "The NowCast for PM2.5 and PM10" (forum.airnowtech.org/t/172), worked
        // example, most recent hour first; the hour before the latest is missing.
        // w* = 21/69.2 < 0.5 → w = 0.5; the missing hour 1 drops out, hour 2 keeps 0.5².
        // Σ wⁱcᵢ = 21 + 8.75 + 6.15 + 3.0375 + 1.678125 + 1.034375 + 0.540625 + 0.25351…
        //        + 0.09765625 + 0.0419921875 + 0.01704101… = 42.6008…
        // Σ wⁱ   = 1 + (0.5² + … + 0.5¹¹) = 1.49951171875 → 28.4099… → 28.4 µg/m³.
        let h = hours([
            Some("21"),
            None,
            Some("35"),
            Some("49.2"),
            Some("48.6"),
            Some("53.7"),
            Some("66.2"),
            Some("69.2"),
            Some("64.9"),
            Some("50"),
            Some("43"),
            Some("34.9"),
        ]);
        let c = nowcast(Pm25, &h).expect("two of the three latest hours are present");
        assert_eq!(c, fx("28.4"));
        // The page gives AQI 85 with the 2012 breakpoints (12.1–35.4 → 51–100); with the 2024
        // breakpoints (9.1–35.4 → 51–100): 51 + 49·(28.4 − 9.1)/(35.4 − 9.1) = 86.96… → 87.
        use super::super::aqi::{sub_index, Averaging, SubIndex};
        assert_eq!(
            sub_index(Pm25, Averaging::TwentyFourHours, c),
            SubIndex::Value(87)
        );
    }

    #[test]
    fn a_missing_hour_drops_its_term_without_shifting_exponents() {
        // Worked by hand: hours 0, 2, 3 present: 30, 20, 60; w* = 20/60 < 0.5 → w = 0.5.
        // Σ wⁱcᵢ = 1·30 + 0.25·20 + 0.125·60 = 42.5;  Σ wⁱ = 1 + 0.25 + 0.125 = 1.375
        // NowCast = 30.909… → 30.9. (Shifted exponents would give (30 + 10 + 15) / 1.75 = 31.4.)
        let mut h = [None; HOURS];
        h[0] = Some(fx("30"));
        h[2] = Some(fx("20"));
        h[3] = Some(fx("60"));
        assert_eq!(nowcast(Pm25, &h), Some(fx("30.9")));
    }

    #[test]
    fn weight_above_one_half_is_min_over_max() {
        // 50 then 40: w = 40/50 = 0.8; (50 + 0.8·40) / 1.8 = 82 / 1.8 = 45.55… → 45.5.
        let mut h = [None; HOURS];
        h[0] = Some(fx("50"));
        h[1] = Some(fx("40"));
        assert_eq!(nowcast(Pm25, &h), Some(fx("45.5")));
    }

    #[test]
    fn all_equal_hours_give_that_value() {
        let h = all(["9.1"; HOURS]);
        assert_eq!(nowcast(Pm25, &h), Some(fx("9.1")));
        let h = all(["0"; HOURS]);
        assert_eq!(nowcast(Pm25, &h), Some(fx("0")));
    }

    #[test]
    fn two_of_the_three_latest_hours_are_required() {
        let mut h = all(["20"; HOURS]);
        h[0] = None;
        h[1] = None;
        assert_eq!(nowcast(Pm25, &h), None, "hours 0 and 1 missing");
        let mut h = all(["20"; HOURS]);
        h[1] = None;
        h[2] = None;
        assert_eq!(nowcast(Pm25, &h), None, "hours 1 and 2 missing");
        let mut h = all(["20"; HOURS]);
        h[0] = None;
        assert_eq!(
            nowcast(Pm25, &h),
            Some(fx("20")),
            "hour 0 missing, 1 and 2 present"
        );
        let mut h = [None; HOURS];
        h[0] = Some(fx("20"));
        h[2] = Some(fx("20"));
        assert_eq!(nowcast(Pm25, &h), Some(fx("20")), "only two hours in all");
        assert_eq!(nowcast(Pm25, &[None; HOURS]), None);
    }

    #[test]
    fn exact_grid_values_are_not_truncated_a_step_low() {
        // Cases where f64 lands just below the exact value (found by comparing against exact
        // rational arithmetic). 54.6 then 39: w = 39/54.6 = 5/7;
        // (54.6 + 5/7·39) / (12/7) = (382.2 + 195) / 12 = 48.1 exactly; f64 gives 48.09999….
        let mut h = [None; HOURS];
        h[0] = Some(fx("54.6"));
        h[1] = Some(fx("39"));
        assert_eq!(nowcast(Pm25, &h), Some(fx("48.1")));
        // 3 then 4.2: w = 3/4.2 = 5/7; (3 + 5/7·4.2) / (12/7) = (21 + 21) / 12 = 3.5 exactly.
        h[0] = Some(fx("3"));
        h[1] = Some(fx("4.2"));
        assert_eq!(nowcast(Pm25, &h), Some(fx("3.5")));
        // 24 then 33.6: w = 5/7; (24 + 24) · 7 / 12 = 28 exactly.
        h[0] = Some(fx("24"));
        h[1] = Some(fx("33.6"));
        assert_eq!(nowcast(Pm25, &h), Some(fx("28")));
    }

    #[test]
    fn negative_hours_count_as_zero_and_other_pollutants_have_no_nowcast() {
        let mut h = [None; HOURS];
        h[0] = Some(fx("-2"));
        h[1] = Some(fx("10"));
        // w = max(0/10, 0.5) = 0.5; (0 + 0.5·10) / 1.5 = 3.33… → 3.3
        assert_eq!(nowcast(Pm25, &h), Some(fx("3.3")));
        assert_eq!(nowcast(O3, &all(["40"; HOURS])), None);
    }

    proptest! {
        #[test]
        fn nowcast_lies_between_the_truncated_min_and_the_max(
            values in proptest::collection::vec(proptest::option::of(0i64..1_000_000), HOURS),
        ) {
            let mut h = [None; HOURS];
            for (slot, v) in h.iter_mut().zip(&values) {
                *slot = v.map(Fixed::from_milli);
            }
            let present: Vec<i64> = values.iter().flatten().copied().collect();
            match nowcast(Pm25, &h) {
                None => prop_assert!(values[..3].iter().filter(|v| v.is_some()).count() < 2),
                Some(n) => {
                    let lo = present.iter().copied().min().unwrap_or_default();
                    let hi = present.iter().copied().max().unwrap_or_default();
                    prop_assert!(Fixed::from_milli(lo).floor_to(100) <= n);
                    prop_assert!(n <= Fixed::from_milli(hi));
                    prop_assert_eq!(n.milli() % 100, 0);
                }
            }
        }
    }
}
