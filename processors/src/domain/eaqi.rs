//! The European Air Quality Index (EEA, bands as revised in 2024).
//!
//! Source: European Environment Agency, *European Air Quality Index*, 2024 band revision (aligned
//! with the WHO 2021 guidelines). Upper limits of Good / Fair / Moderate / Poor / Very poor, hourly
//! concentrations in µg/m³; anything above the last is Extremely poor:
//!
//! | pollutant | Good | Fair | Moderate | Poor | Very poor |
//! |---|---|---|---|---|---|
//! | PM2.5 | 5 | 15 | 50 | 90 | 140 |
//! | PM10 | 15 | 45 | 120 | 195 | 270 |
//! | NO2 | 10 | 25 | 60 | 100 | 150 |
//! | O3 | 60 | 100 | 120 | 160 | 180 |
//! | SO2 | 20 | 40 | 125 | 190 | 275 |
//!
//! A band includes its upper limit ("0–5" is Good, so 5 is Good and 5.001 Fair). CO has no band.
//!
//! O3, NO2 and SO2 arrive in ppb. The EEA reports µg/m³ at the EU reference conditions for gases
//! (Directive 2008/50/EC: 293 K, 101.3 kPa). Taking 1 atm, one mole of ideal gas occupies
//! `V_m = R·293.15 K / 101 325 Pa = 24.055 L`, so `µg/m³ = ppb × M / 24.055` with `M` the molar
//! mass in g/mol (NO2 1.9125, O3 1.9953, SO2 2.6630 µg/m³ per ppb). Band edges are
//! compared exactly in integers (`ppb × M ≤ limit × 24.055`), without a rounded factor.

use super::fixed::Fixed;

/// Billionths per unit, as the comparisons below need it.
const SCALE: i128 = Fixed::SCALE as i128;
use citypulse_schema::{EaqiBand, Pollutant};

/// Molar volume at 20 °C and 101.325 kPa, mL/mol.
const MOLAR_VOLUME_ML: i128 = 24_055;

/// Molar masses in mg/mol, from IUPAC standard atomic weights (N 14.007, O 15.999, S 32.06).
const fn molar_mass_mg(p: Pollutant) -> Option<i128> {
    match p {
        Pollutant::No2 => Some(46_005),
        Pollutant::O3 => Some(47_997),
        Pollutant::So2 => Some(64_058),
        _ => None,
    }
}

/// Upper limits, µg/m³, of Good, Fair, Moderate, Poor and Very poor.
const fn limits(p: Pollutant) -> Option<[i128; 5]> {
    match p {
        Pollutant::Pm25 => Some([5, 15, 50, 90, 140]),
        Pollutant::Pm10 => Some([15, 45, 120, 195, 270]),
        Pollutant::No2 => Some([10, 25, 60, 100, 150]),
        Pollutant::O3 => Some([60, 100, 120, 160, 180]),
        Pollutant::So2 => Some([20, 40, 125, 190, 275]),
        Pollutant::Co => None,
    }
}

/// The band of an hourly concentration `c` in the wire unit of `p` (µg/m³ for PM, ppb for O3,
/// NO2 and SO2). `None` for CO, which the EAQI does not cover.
pub fn band(p: Pollutant, c: Fixed) -> Option<EaqiBand> {
    let limits = limits(p)?;
    // Compare `c_µg ≤ limit` as `lhs ≤ limit × rhs_scale`, both sides integers.
    let (lhs, rhs_scale) = match molar_mass_mg(p) {
        // ppb×10⁹ × mg/mol ≤ µg/m³ × 10⁹ × mL/mol  ⇔  ppb × M / V_m ≤ limit.
        Some(m) => (i128::from(c.nanos()) * m, SCALE * MOLAR_VOLUME_ML),
        None => (i128::from(c.nanos()), SCALE),
    };
    let index = limits
        .iter()
        .position(|&limit| lhs <= limit * rhs_scale)
        .unwrap_or(limits.len());
    // `EaqiBand::ALL` runs best to worst: the band after the last limit is Extremely poor.
    EaqiBand::ALL.get(index).copied()
}

/// A gas concentration in ppb as µg/m³ at 20 °C and 1 atm, rounded to the nearest billionth
/// (halves up), for reporting. PM is returned as is; `None` for CO.
pub fn to_ugm3(p: Pollutant, c: Fixed) -> Option<Fixed> {
    match (p, molar_mass_mg(p)) {
        (Pollutant::Pm25 | Pollutant::Pm10, _) => Some(c),
        (_, Some(m)) => {
            let num = i128::from(c.nanos()) * m;
            // round(num / V) with halves towards +∞: floor((2·num + V) / 2V).
            let nanos = (2 * num + MOLAR_VOLUME_ML).div_euclid(2 * MOLAR_VOLUME_ML);
            i64::try_from(nanos).ok().map(Fixed::from_nanos)
        }
        _ => None,
    }
}

/// The overall European index of a place and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Eaqi {
    /// The worst band among the pollutants.
    pub band: EaqiBand,
    /// The pollutant in the worst band.
    pub dominant: Pollutant,
}

/// The overall band: the worst of the pollutants' bands. Ties go to the pollutant first in
/// [`Pollutant::ALL`]. `None` when `bands` is empty.
pub fn overall(bands: &[(Pollutant, EaqiBand)]) -> Option<Eaqi> {
    bands
        .iter()
        // `EaqiBand` orders best to worst; `Pollutant` orders as `ALL`.
        .min_by(|(pa, ba), (pb, bb)| bb.cmp(ba).then(pa.cmp(pb)))
        .map(|&(dominant, band)| Eaqi { band, dominant })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use EaqiBand::*;
    use Pollutant::*;

    fn fx(s: &str) -> Fixed {
        s.parse().expect("test literal")
    }

    /// The largest ppb value in thousandths whose µg/m³ is at most `ug`, and its neighbours.
    fn ppb_of(p: Pollutant, ug: i128) -> (Fixed, Fixed, Fixed) {
        let m = molar_mass_mg(p).expect("gas");
        // floor(ug × 1000 × V / M) thousandths of a ppb: the largest at or below the limit.
        let at_or_below = (ug * 1_000 * MOLAR_VOLUME_ML).div_euclid(m);
        let at = i64::try_from(at_or_below).expect("fits");
        (
            Fixed::from_milli(at - 1),
            Fixed::from_milli(at),
            Fixed::from_milli(at + 1),
        )
    }

    #[test]
    fn pm_bands_include_their_upper_limit() {
        for (p, limits) in [
            (Pm25, [5, 15, 50, 90, 140]),
            (Pm10, [15, 45, 120, 195, 270]),
        ] {
            assert_eq!(band(p, fx("0")), Some(Good), "{p} at 0");
            for (i, limit) in limits.into_iter().enumerate() {
                let at = Fixed::from_milli(limit * 1_000);
                let above = Fixed::from_milli(limit * 1_000 + 1);
                assert_eq!(band(p, at), Some(EaqiBand::ALL[i]), "{p} at {at}");
                assert_eq!(band(p, above), Some(EaqiBand::ALL[i + 1]), "{p} at {above}");
            }
        }
        assert_eq!(band(Pm25, fx("4.999")), Some(Good));
        assert_eq!(band(Pm25, fx("5")), Some(Good));
        assert_eq!(band(Pm25, fx("5.001")), Some(Fair));
        assert_eq!(band(Pm25, fx("140")), Some(VeryPoor));
        assert_eq!(band(Pm25, fx("140.001")), Some(ExtremelyPoor));
        assert_eq!(band(Pm10, fx("1000")), Some(ExtremelyPoor));
    }

    #[test]
    fn gas_bands_convert_ppb_at_20_c_and_include_their_upper_limit() {
        for (p, limits) in [
            (No2, [10, 25, 60, 100, 150]),
            (O3, [60, 100, 120, 160, 180]),
            (So2, [20, 40, 125, 190, 275]),
        ] {
            assert_eq!(band(p, fx("0")), Some(Good), "{p} at 0");
            for (i, limit) in limits.into_iter().enumerate() {
                let (below, at, above) = ppb_of(p, i128::from(limit));
                assert_eq!(
                    band(p, below),
                    Some(EaqiBand::ALL[i]),
                    "{p} {below} ppb (limit {limit})"
                );
                assert_eq!(
                    band(p, at),
                    Some(EaqiBand::ALL[i]),
                    "{p} {at} ppb (limit {limit})"
                );
                assert_eq!(
                    band(p, above),
                    Some(EaqiBand::ALL[i + 1]),
                    "{p} {above} ppb (limit {limit})"
                );
            }
        }
        // Spot checks by hand: 60 µg/m³ O3 = 60 × 24.055 / 47.997 = 30.0706… ppb.
        assert_eq!(band(O3, fx("30.07")), Some(Good));
        assert_eq!(band(O3, fx("30.071")), Some(Fair));
        // 10 µg/m³ NO2 = 10 × 24.055 / 46.005 = 5.2288… ppb.
        assert_eq!(band(No2, fx("5.228")), Some(Good));
        assert_eq!(band(No2, fx("5.229")), Some(Fair));
        // 275 µg/m³ SO2 = 275 × 24.055 / 64.058 = 103.267… ppb.
        assert_eq!(band(So2, fx("103.267")), Some(VeryPoor));
        assert_eq!(band(So2, fx("103.268")), Some(ExtremelyPoor));
    }

    #[test]
    fn co_has_no_band() {
        assert_eq!(band(Co, fx("1")), None);
        assert_eq!(to_ugm3(Co, fx("1")), None);
    }

    #[test]
    fn conversion_factors_match_m_over_24_055() {
        // 1 ppb NO2 = 46.005 / 24.055 = 1.912492205 3… µg/m³ → 1.912492205
        assert_eq!(to_ugm3(No2, fx("1")), Some(fx("1.912492205")));
        // 1 ppb O3 = 47.997 / 24.055 = 1.995302431 9… → 1.995302432
        assert_eq!(to_ugm3(O3, fx("1")), Some(fx("1.995302432")));
        // 1 ppb SO2 = 64.058 / 24.055 = 2.662980669 2… → 2.662980669
        assert_eq!(to_ugm3(So2, fx("1")), Some(fx("2.662980669")));
        // 100 ppb O3 = 199.530243192 6… → 199.530243193
        assert_eq!(to_ugm3(O3, fx("100")), Some(fx("199.530243193")));
        assert_eq!(to_ugm3(Pm25, fx("12.3")), Some(fx("12.3")));
    }

    #[test]
    fn overall_is_the_worst_band() {
        let e = overall(&[(Pm25, Fair), (O3, Poor), (No2, Good)]);
        assert_eq!(
            e,
            Some(Eaqi {
                band: Poor,
                dominant: O3
            })
        );
        let e = overall(&[(So2, Moderate), (Pm10, Moderate)]);
        assert_eq!(
            e.map(|e| e.dominant),
            Some(Pm10),
            "tie goes to the first in ALL"
        );
        assert_eq!(overall(&[]), None);
    }

    proptest! {
        #[test]
        fn band_is_monotone(which in 0usize..5, a in -1_000i64..2_000_000, b in -1_000i64..2_000_000) {
            let p = [Pm25, Pm10, No2, O3, So2][which];
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(band(p, Fixed::from_milli(lo)) <= band(p, Fixed::from_milli(hi)));
        }
    }
}
