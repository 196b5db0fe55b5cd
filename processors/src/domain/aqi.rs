//! The US Air Quality Index.
//!
//! Source: U.S. EPA, *Technical Assistance Document for the Reporting of Daily Air Quality – the
//! Air Quality Index (AQI)*, EPA-454/B-24-002, May 2024 (the "TAD"), §IV and Table 6; PM2.5
//! breakpoints as revised by the PM NAAQS final rule of February 2024 (Federal Register of
//! 6 March 2024), effective 6 May 2024. The 2024 TAD merges the former 301–400 and 401–500 rows into one
//! Hazardous row, 301–500, whose top breakpoints are PM2.5 325.4 µg/m³, PM10 604 µg/m³,
//! O3 (1-h) 0.604 ppm, CO 50.4 ppm and NO2 2049 ppb.
//!
//! Procedure (TAD Equation 1): truncate the averaged concentration (O3 to 0.001 ppm, PM2.5 to
//! 0.1 µg/m³, PM10 to 1 µg/m³, CO to 0.1 ppm, SO2 and NO2 to 1 ppb), find the row with
//! `BP_lo ≤ C ≤ BP_hi`, and compute `I = (I_hi − I_lo) / (BP_hi − BP_lo) × (C − BP_lo) + I_lo`,
//! rounded to the nearest integer. Here the truncated concentration is an integer number of
//! thousandths and the equation is evaluated in integers, so halves round up exactly and no
//! float error can move an index across a category edge. The truncation works on the exact
//! decimal value ([`Fixed`] holds billionths; nothing is rounded before it).
//!
//! Above a table's highest breakpoint the concentration is "beyond the AQI": the index is
//! Equation 1 with the top row (its slope extended past `BP_hi`), and it is marked
//! [`SubIndex::Beyond`] so that the wire can say so (`beyond_aqi`). Project rule, DESIGN.md §4:
//! PM2.5 326.0 µg/m³ gives 501 and PM10 700 µg/m³ gives 607, where a cap would give 500 for both.
//!
//! SO2 (TAD 2024 Table 6, footnote on SO2, and §IV "Calculating AQI values for SO2"): 1-hour SO2
//! defines the AQI up to 200 (0–304 ppb); 1-hour values above 304 ppb do not define higher
//! values, which come from the 24-hour SO2 table: 305–604 ppb → 201–300, 605–1004 ppb →
//! 301–500. See [`so2`].
//!
//! Concentrations are taken in the wire units (µg/m³ for PM, ppb for O3, SO2 and NO2, ppm for
//! CO). The O3 tables are in ppm; 0.001 ppm is exactly 1 ppb, so truncating O3 to 0.001 ppm is
//! truncating ppb to an integer and the tables below hold the ppm breakpoints × 1000.

use super::fixed::Fixed;
use citypulse_schema::{AqiCategory, Pollutant};

/// The averaging period a concentration was computed over; it selects the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Averaging {
    /// 1-hour mean: O3 (1-h table), SO2 (up to AQI 200), NO2.
    OneHour,
    /// 8-hour mean: O3 (8-h table), CO.
    EightHours,
    /// 24-hour mean: PM2.5, PM10 (the PM NowCast is looked up in the same table), SO2 (AQI 201
    /// and above).
    TwentyFourHours,
}

/// The result of looking a concentration up in a table.
///
/// Ordered by severity: `Undefined < Value(0) < … < Value(500) < Beyond(_)`, so `max` picks the
/// sub-index to report (a beyond value is at least the top row's index, 500, after rounding).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SubIndex {
    /// The table defines no index for this concentration, or there is no table for this
    /// pollutant and averaging period. Cases: O3 8-h above 0.200 ppm (the TAD uses the 1-h
    /// value there), O3 1-h below 0.125 ppm (the 8-h value applies), SO2 1-h above 304 ppb and
    /// SO2 24-h below 305 ppb ([`so2`] combines the two).
    #[default]
    Undefined,
    /// The index, 0–500.
    Value(u16),
    /// Above the table's highest breakpoint, "beyond the AQI": Equation 1 with the top row's
    /// slope, rounded (≥ 500; saturates at `u16::MAX`).
    Beyond(u16),
}

impl SubIndex {
    /// The index as reported, beyond or not; `None` when undefined.
    pub fn index(self) -> Option<u16> {
        match self {
            SubIndex::Value(v) | SubIndex::Beyond(v) => Some(v),
            SubIndex::Undefined => None,
        }
    }
}

/// One row of a breakpoint table, concentrations in thousandths of the wire unit.
#[derive(Debug, Clone, Copy)]
struct Row {
    c_lo: i64,
    c_hi: i64,
    i_lo: u16,
    i_hi: u16,
}

const fn row(c_lo: i64, c_hi: i64, i_lo: u16, i_hi: u16) -> Row {
    Row {
        c_lo,
        c_hi,
        i_lo,
        i_hi,
    }
}

/// What a concentration above a table's last row gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Above {
    /// The table stops there on purpose (O3 8-h, SO2 1-h): another table takes over.
    Undefined,
    /// Beyond the AQI: the top row's slope, extended.
    Extrapolate,
}

/// A breakpoint table for one pollutant and averaging period.
#[derive(Debug)]
struct Table {
    /// Truncation step, thousandths of the wire unit.
    step: i64,
    /// Rows in ascending order, contiguous on the truncation grid.
    rows: &'static [Row],
    /// What a concentration above the last row gives.
    above: Above,
}

/// PM2.5 24-h, µg/m³ ×1000, truncated to 0.1 µg/m³ (TAD 2024 Table 6; 2024 PM NAAQS rule).
const PM25_24H: Table = Table {
    step: 100,
    rows: &[
        row(0, 9_000, 0, 50),
        row(9_100, 35_400, 51, 100),
        row(35_500, 55_400, 101, 150),
        row(55_500, 125_400, 151, 200),
        row(125_500, 225_400, 201, 300),
        row(225_500, 325_400, 301, 500),
    ],
    above: Above::Extrapolate,
};

/// PM10 24-h, µg/m³ ×1000, truncated to 1 µg/m³ (TAD 2024 Table 6).
const PM10_24H: Table = Table {
    step: 1_000,
    rows: &[
        row(0, 54_000, 0, 50),
        row(55_000, 154_000, 51, 100),
        row(155_000, 254_000, 101, 150),
        row(255_000, 354_000, 151, 200),
        row(355_000, 424_000, 201, 300),
        row(425_000, 604_000, 301, 500),
    ],
    above: Above::Extrapolate,
};

/// O3 8-h, ppb ×1000 (= ppm × 10⁶), truncated to 0.001 ppm = 1 ppb (TAD 2024 Table 6:
/// 0.000–0.054, 0.055–0.070, 0.071–0.085, 0.086–0.105, 0.106–0.200 ppm). No 8-h values above
/// 0.200 ppm: AQI ≥ 301 comes from the 1-h table.
const O3_8H: Table = Table {
    step: 1_000,
    rows: &[
        row(0, 54_000, 0, 50),
        row(55_000, 70_000, 51, 100),
        row(71_000, 85_000, 101, 150),
        row(86_000, 105_000, 151, 200),
        row(106_000, 200_000, 201, 300),
    ],
    above: Above::Undefined,
};

/// O3 1-h, ppb ×1000, truncated to 1 ppb (TAD 2024 Table 6: 0.125–0.164, 0.165–0.204,
/// 0.205–0.404, 0.405–0.604 ppm). No 1-h values below 0.125 ppm.
const O3_1H: Table = Table {
    step: 1_000,
    rows: &[
        row(125_000, 164_000, 101, 150),
        row(165_000, 204_000, 151, 200),
        row(205_000, 404_000, 201, 300),
        row(405_000, 604_000, 301, 500),
    ],
    above: Above::Extrapolate,
};

/// CO 8-h, ppm ×1000, truncated to 0.1 ppm (TAD 2024 Table 6).
const CO_8H: Table = Table {
    step: 100,
    rows: &[
        row(0, 4_400, 0, 50),
        row(4_500, 9_400, 51, 100),
        row(9_500, 12_400, 101, 150),
        row(12_500, 15_400, 151, 200),
        row(15_500, 30_400, 201, 300),
        row(30_500, 50_400, 301, 500),
    ],
    above: Above::Extrapolate,
};

/// SO2 1-h, ppb ×1000, truncated to 1 ppb (TAD 2024 Table 6). The 1-h table stops at 304 ppb;
/// above it the TAD uses 24-h SO2 ([`SO2_24H`]), so the 1-h lookup is undefined.
const SO2_1H: Table = Table {
    step: 1_000,
    rows: &[
        row(0, 35_000, 0, 50),
        row(36_000, 75_000, 51, 100),
        row(76_000, 185_000, 101, 150),
        row(186_000, 304_000, 151, 200),
    ],
    above: Above::Undefined,
};

/// SO2 24-h, ppb ×1000, truncated to 1 ppb (TAD 2024 Table 6: 0.305–0.604 ppm → 201–300,
/// 0.605–1.004 ppm → 301–500; footnote: "1-hr SO2 values do not define higher AQI values
/// (≥ 200). AQI values of 200 or greater are calculated with 24-hour SO2 concentrations").
/// No 24-h values below 305 ppb.
const SO2_24H: Table = Table {
    step: 1_000,
    rows: &[
        row(305_000, 604_000, 201, 300),
        row(605_000, 1_004_000, 301, 500),
    ],
    above: Above::Extrapolate,
};

/// NO2 1-h, ppb ×1000, truncated to 1 ppb (TAD 2024 Table 6).
const NO2_1H: Table = Table {
    step: 1_000,
    rows: &[
        row(0, 53_000, 0, 50),
        row(54_000, 100_000, 51, 100),
        row(101_000, 360_000, 101, 150),
        row(361_000, 649_000, 151, 200),
        row(650_000, 1_249_000, 201, 300),
        row(1_250_000, 2_049_000, 301, 500),
    ],
    above: Above::Extrapolate,
};

fn table(p: Pollutant, avg: Averaging) -> Option<&'static Table> {
    use Averaging::*;
    use Pollutant::*;
    match (p, avg) {
        (Pm25, TwentyFourHours) => Some(&PM25_24H),
        (Pm10, TwentyFourHours) => Some(&PM10_24H),
        (O3, EightHours) => Some(&O3_8H),
        (O3, OneHour) => Some(&O3_1H),
        (Co, EightHours) => Some(&CO_8H),
        (So2, OneHour) => Some(&SO2_1H),
        (So2, TwentyFourHours) => Some(&SO2_24H),
        (No2, OneHour) => Some(&NO2_1H),
        _ => None,
    }
}

/// The concentration as the TAD looks it up: negatives lifted to zero, then truncated to the
/// table's step. `None` when there is no table for `p` and `avg`.
pub fn truncated(p: Pollutant, avg: Averaging, c: Fixed) -> Option<Fixed> {
    table(p, avg).map(|t| c.non_negative().floor_to(t.step))
}

/// The sub-index of a concentration `c`, in the wire unit of `p`, averaged over `avg`.
///
/// Negative concentrations (instrument noise around zero) count as zero. Tables without a row
/// for zero (O3 1-h, SO2 24-h) give [`SubIndex::Undefined`] below their first breakpoint.
pub fn sub_index(p: Pollutant, avg: Averaging, c: Fixed) -> SubIndex {
    let Some(t) = table(p, avg) else {
        return SubIndex::Undefined;
    };
    let c = c.non_negative().floor_to(t.step).milli();
    let (Some(first), Some(last)) = (t.rows.first(), t.rows.last()) else {
        return SubIndex::Undefined;
    };
    if c < first.c_lo {
        return SubIndex::Undefined;
    }
    if c > last.c_hi {
        return match t.above {
            Above::Undefined => SubIndex::Undefined,
            Above::Extrapolate => SubIndex::Beyond(interpolate(last, c)),
        };
    }
    t.rows
        .iter()
        .find(|r| r.c_lo <= c && c <= r.c_hi)
        .map_or(SubIndex::Undefined, |r| SubIndex::Value(interpolate(r, c)))
}

/// TAD Equation 1 in integers: `I_lo + round((I_hi − I_lo)(C − BP_lo) / (BP_hi − BP_lo))`, halves
/// rounded up. All terms are non-negative because `BP_lo ≤ C`; above `BP_hi` this extends the
/// row's slope (beyond the AQI), saturating at `u16::MAX`.
fn interpolate(r: &Row, c: i64) -> u16 {
    let num = i128::from(r.i_hi - r.i_lo) * i128::from(c - r.c_lo);
    let den = i128::from(r.c_hi - r.c_lo);
    // round(num / den) = floor((2·num + den) / (2·den)) for num, den ≥ 0.
    let step = (2 * num + den) / (2 * den);
    u16::try_from(i128::from(r.i_lo) + step).unwrap_or(u16::MAX)
}

/// The SO2 sub-index by the TAD rule (2024 Table 6 and §IV, "Calculating AQI values for SO2"):
///
/// - 1-h SO2 at or below 304 ppb: the 1-h table (AQI 0–200);
/// - 1-h SO2 above 304 ppb, or no 1-h value: the 24-h table when the 24-h mean is in it
///   (≥ 305 ppb, AQI 201 and above, beyond the AQI past 1004 ppb);
/// - 1-h SO2 above 304 ppb but no 24-h mean of 305 ppb or more (none yet, or lower): 200, the
///   top of the 1-h table. The TAD says such an hour means "AQI 200 or greater" without giving
///   the number; 200 is the part of that statement the data support, so a station at 310 ppb
///   keeps an SO2 sub-index.
pub fn so2(one_hour_ppb: Option<Fixed>, day_ppb: Option<Fixed>) -> SubIndex {
    let one = one_hour_ppb.map_or(SubIndex::Undefined, |c| {
        sub_index(Pollutant::So2, Averaging::OneHour, c)
    });
    if one != SubIndex::Undefined {
        return one;
    }
    let day = day_ppb.map_or(SubIndex::Undefined, |c| {
        sub_index(Pollutant::So2, Averaging::TwentyFourHours, c)
    });
    match (one_hour_ppb, day) {
        (Some(_), SubIndex::Undefined) => SubIndex::Value(200),
        _ => day,
    }
}

/// The ozone sub-index by the TAD rule: the 8-h table normally; the 1-h value where it is defined
/// (≥ 0.125 ppm) and higher; the 1-h value alone above 0.200 ppm 8-h, where the 8-h table stops.
/// Either input may be missing.
pub fn ozone(eight_hour_ppb: Option<Fixed>, one_hour_ppb: Option<Fixed>) -> SubIndex {
    let eight = eight_hour_ppb.map_or(SubIndex::Undefined, |c| {
        sub_index(Pollutant::O3, Averaging::EightHours, c)
    });
    let one = one_hour_ppb.map_or(SubIndex::Undefined, |c| {
        sub_index(Pollutant::O3, Averaging::OneHour, c)
    });
    eight.max(one)
}

/// The overall AQI of a place and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aqi {
    /// The highest sub-index (extrapolated when beyond the AQI).
    pub value: u16,
    /// The category of `value` (Hazardous beyond the AQI).
    pub category: AqiCategory,
    /// The pollutant with the highest sub-index.
    pub dominant: Pollutant,
    /// The dominant pollutant is above the top of its table: `value` is extrapolated, "beyond
    /// the AQI".
    pub beyond: bool,
}

/// The overall AQI: the maximum of the defined sub-indices, and the pollutant that gives it
/// (TAD §IV, "How to handle values from multiple pollutants"). Undefined sub-indices are ignored;
/// `None` when none is defined.
///
/// Ties go to the pollutant first in [`Pollutant::ALL`] (PM2.5, PM10, O3, NO2, SO2, CO), whatever
/// the order of `subs`, so the result is deterministic.
pub fn overall(subs: &[(Pollutant, SubIndex)]) -> Option<Aqi> {
    let (pollutant, sub) = subs
        .iter()
        .filter(|(_, s)| *s != SubIndex::Undefined)
        // Highest severity first, then the earlier pollutant (`Pollutant` orders as `ALL`).
        .min_by(|(pa, sa), (pb, sb)| sb.cmp(sa).then(pa.cmp(pb)))?;
    let (value, beyond) = match *sub {
        SubIndex::Value(v) => (v, false),
        SubIndex::Beyond(v) => (v, true),
        SubIndex::Undefined => return None,
    };
    Some(Aqi {
        value,
        category: AqiCategory::of(value),
        dominant: *pollutant,
        beyond,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use Averaging::*;
    use Pollutant::*;
    use SubIndex::{Beyond, Undefined, Value};

    fn fx(s: &str) -> Fixed {
        s.parse().expect("test literal")
    }

    fn check(p: Pollutant, avg: Averaging, cases: &[(&str, SubIndex, &str)]) {
        for (c, want, why) in cases {
            assert_eq!(sub_index(p, avg, fx(c)), *want, "{p} {avg:?} at {c}: {why}");
        }
    }

    #[test]
    fn every_table_is_contiguous_on_its_truncation_grid() {
        for (p, avg) in [
            (Pm25, TwentyFourHours),
            (Pm10, TwentyFourHours),
            (O3, EightHours),
            (O3, OneHour),
            (Co, EightHours),
            (So2, OneHour),
            (So2, TwentyFourHours),
            (No2, OneHour),
        ] {
            let t = table(p, avg).expect("table exists");
            for r in t.rows {
                assert!(r.c_lo < r.c_hi && r.i_lo < r.i_hi, "{p} {avg:?} {r:?}");
                assert_eq!(r.c_lo % t.step, 0, "{p} {avg:?} {r:?} off grid");
                assert_eq!(r.c_hi % t.step, 0, "{p} {avg:?} {r:?} off grid");
            }
            for w in t.rows.windows(2) {
                assert_eq!(
                    w[1].c_lo,
                    w[0].c_hi + t.step,
                    "{p} {avg:?} gap after {:?}",
                    w[0]
                );
                assert_eq!(
                    w[1].i_lo,
                    w[0].i_hi + 1,
                    "{p} {avg:?} index gap after {:?}",
                    w[0]
                );
            }
        }
    }

    #[test]
    fn pm25_24h_edges() {
        check(
            Pm25,
            TwentyFourHours,
            &[
                ("0.0", Value(0), "low edge"),
                // 50/9.0 × 4.5 = 25
                ("4.5", Value(25), "mid"),
                ("9.0", Value(50), "high edge"),
                ("9.1", Value(51), "next band"),
                // 51 + 49/26.3 × 13.1 = 51 + 24.407… = 75.4 → 75
                ("22.2", Value(75), "mid"),
                ("35.4", Value(100), "high edge"),
                ("35.5", Value(101), "next band"),
                // 101 + 49/19.9 × 10.0 = 101 + 24.623… → 126
                ("45.5", Value(126), "mid"),
                ("55.4", Value(150), "high edge"),
                ("55.5", Value(151), "next band"),
                // 151 + 49/69.9 × 35.0 = 151 + 24.535… → 176
                ("90.5", Value(176), "mid"),
                ("125.4", Value(200), "high edge"),
                ("125.5", Value(201), "next band"),
                // 201 + 99/99.9 × 50.0 = 201 + 49.549… → 251
                ("175.5", Value(251), "mid"),
                ("225.4", Value(300), "high edge"),
                ("225.5", Value(301), "next band"),
                // 301 + 199/99.9 × 50.0 = 301 + 99.599… → 401
                ("275.5", Value(401), "mid"),
                ("325.4", Value(500), "high edge"),
                // Beyond the AQI: the top row's slope extended.
                // 301 + 199/99.9 × 100.0 = 500.199… → 500, flagged
                ("325.5", Beyond(500), "beyond the AQI"),
                // Issue 10: 301 + 199/99.9 × 100.5 = 501.195… → 501 (no longer a capped 500)
                ("326.0", Beyond(501), "beyond the AQI"),
                // 301 + 199/99.9 × 774.5 = 1843.797… → 1844
                ("1000", Beyond(1844), "beyond the AQI"),
            ],
        );
    }

    #[test]
    fn pm25_truncates_before_lookup() {
        check(
            Pm25,
            TwentyFourHours,
            &[
                ("9.09", Value(50), "9.09 → 9.0"),
                ("9.1", Value(51), "exact"),
                ("9.099", Value(50), "9.099 → 9.0"),
                ("35.45", Value(100), "35.45 → 35.4"),
                ("35.499", Value(100), "35.499 → 35.4"),
                ("325.499", Value(500), "325.499 → 325.4"),
                ("-0.3", Value(0), "negative noise counts as zero"),
            ],
        );
    }

    #[test]
    fn pm10_24h_edges() {
        check(
            Pm10,
            TwentyFourHours,
            &[
                ("0", Value(0), "low edge"),
                // 50/54 × 27 = 25
                ("27", Value(25), "mid"),
                ("54", Value(50), "high edge"),
                ("54.9", Value(50), "truncates to 54"),
                ("55", Value(51), "next band"),
                // 51 + 49/99 × 50 = 51 + 24.747… → 76
                ("105", Value(76), "mid"),
                ("154", Value(100), "high edge"),
                ("155", Value(101), "next band"),
                // 101 + 49/99 × 49 = 101 + 24.252… → 125
                ("204", Value(125), "mid"),
                ("254", Value(150), "high edge"),
                ("255", Value(151), "next band"),
                // 151 + 49/99 × 50 → 176
                ("305", Value(176), "mid"),
                ("354", Value(200), "high edge"),
                ("355", Value(201), "next band"),
                // 201 + 99/69 × 35 = 201 + 50.217… → 251
                ("390", Value(251), "mid"),
                ("424", Value(300), "high edge"),
                ("425", Value(301), "next band"),
                // 301 + 199/179 × 90 = 301 + 100.055… → 401
                ("515", Value(401), "mid"),
                ("604", Value(500), "high edge"),
                ("604.9", Value(500), "truncates to 604"),
                // 301 + 199/179 × 180 = 501.111… → 501
                ("605", Beyond(501), "beyond the AQI"),
                // Issue 10: 301 + 199/179 × 275 = 606.726… → 607
                ("700", Beyond(607), "beyond the AQI"),
            ],
        );
    }

    #[test]
    fn o3_8h_edges_in_ppb() {
        check(
            O3,
            EightHours,
            &[
                ("0", Value(0), "low edge"),
                // 50/54 × 27 = 25
                ("27", Value(25), "mid"),
                ("54", Value(50), "0.054 ppm high edge"),
                ("54.999", Value(50), "truncates to 0.054 ppm"),
                ("55", Value(51), "next band"),
                // 51 + 49/15 × 7 = 51 + 22.866… → 74
                ("62", Value(74), "mid"),
                ("70", Value(100), "high edge"),
                ("71", Value(101), "next band"),
                // 101 + 49/14 × 7 = 101 + 24.5 → 126 (half rounds up)
                ("78", Value(126), "mid, exact half"),
                ("85", Value(150), "high edge"),
                ("86", Value(151), "next band"),
                // 151 + 49/19 × 10 = 151 + 25.789… → 177
                ("96", Value(177), "mid"),
                ("105", Value(200), "high edge"),
                ("106", Value(201), "next band"),
                // 201 + 99/94 × 47 = 201 + 49.5 → 251 (half rounds up)
                ("153", Value(251), "mid, exact half"),
                ("200", Value(300), "0.200 ppm high edge"),
                ("200.999", Value(300), "truncates to 0.200 ppm"),
                (
                    "201",
                    Undefined,
                    "above 0.200 ppm the 8-h table is undefined",
                ),
            ],
        );
    }

    #[test]
    fn o3_1h_edges_in_ppb() {
        check(
            O3,
            OneHour,
            &[
                ("0", Undefined, "no 1-h values below 0.125 ppm"),
                ("124.999", Undefined, "truncates to 0.124 ppm"),
                ("125", Value(101), "low edge"),
                // 101 + 49/39 × 20 = 101 + 25.128… → 126
                ("145", Value(126), "mid"),
                ("164", Value(150), "high edge"),
                ("165", Value(151), "next band"),
                // 151 + 49/39 × 20 → 176
                ("185", Value(176), "mid"),
                ("204", Value(200), "high edge"),
                ("205", Value(201), "next band"),
                // 201 + 99/199 × 100 = 201 + 49.748… → 251
                ("305", Value(251), "mid"),
                ("404", Value(300), "high edge"),
                ("405", Value(301), "next band"),
                // 301 + 199/199 × 100 = 401
                ("505", Value(401), "mid"),
                ("604", Value(500), "high edge"),
                // 301 + 199/199 × 200 = 501
                ("605", Beyond(501), "beyond the AQI"),
                // 301 + 199/199 × 295 = 596
                ("700", Beyond(596), "beyond the AQI"),
            ],
        );
    }

    #[test]
    fn co_8h_edges() {
        check(
            Co,
            EightHours,
            &[
                ("0.0", Value(0), "low edge"),
                // 50/4.4 × 2.2 = 25
                ("2.2", Value(25), "mid"),
                ("4.4", Value(50), "high edge"),
                ("4.49", Value(50), "truncates to 4.4"),
                ("4.5", Value(51), "next band"),
                // 51 + 49/4.9 × 2.5 = 76
                ("7.0", Value(76), "mid"),
                ("9.4", Value(100), "high edge"),
                ("9.5", Value(101), "next band"),
                // 101 + 49/2.9 × 1.5 = 101 + 25.344… → 126
                ("11.0", Value(126), "mid"),
                ("12.4", Value(150), "high edge"),
                ("12.5", Value(151), "next band"),
                // 151 + 49/2.9 × 1.5 → 176
                ("14.0", Value(176), "mid"),
                ("15.4", Value(200), "high edge"),
                ("15.5", Value(201), "next band"),
                // 201 + 99/14.9 × 7.5 = 201 + 49.832… → 251
                ("23.0", Value(251), "mid"),
                ("30.4", Value(300), "high edge"),
                ("30.5", Value(301), "next band"),
                // 301 + 199/19.9 × 10.0 = 401
                ("40.5", Value(401), "mid"),
                ("50.4", Value(500), "high edge"),
                // 301 + 199/19.9 × 20.0 = 501
                ("50.5", Beyond(501), "beyond the AQI"),
                ("50.59", Beyond(501), "truncates to 50.5"),
            ],
        );
    }

    #[test]
    fn so2_1h_edges() {
        check(
            So2,
            OneHour,
            &[
                ("0", Value(0), "low edge"),
                // 50/35 × 17 = 24.285… → 24
                ("17", Value(24), "mid"),
                ("35", Value(50), "high edge"),
                ("35.9", Value(50), "truncates to 35"),
                ("36", Value(51), "next band"),
                // 51 + 49/39 × 20 = 76.128… → 76
                ("56", Value(76), "mid"),
                ("75", Value(100), "high edge"),
                ("76", Value(101), "next band"),
                // 101 + 49/109 × 55 = 101 + 24.724… → 126
                ("131", Value(126), "mid"),
                ("185", Value(150), "high edge"),
                ("186", Value(151), "next band"),
                // 151 + 49/118 × 59 = 151 + 24.5 → 176 (half rounds up)
                ("245", Value(176), "mid, exact half"),
                ("304", Value(200), "high edge"),
                ("304.9", Value(200), "truncates to 304"),
                ("305", Undefined, "1-h SO2 does not define AQI above 200"),
            ],
        );
    }

    #[test]
    fn no2_1h_edges() {
        check(
            No2,
            OneHour,
            &[
                ("0", Value(0), "low edge"),
                // 50/53 × 26 = 24.528… → 25
                ("26", Value(25), "mid"),
                ("53", Value(50), "high edge"),
                ("54", Value(51), "next band"),
                // 51 + 49/46 × 23 = 51 + 24.5 → 76 (half rounds up)
                ("77", Value(76), "mid, exact half"),
                ("100", Value(100), "high edge"),
                ("101", Value(101), "next band"),
                // 101 + 49/259 × 130 = 101 + 24.594… → 126
                ("231", Value(126), "mid"),
                ("360", Value(150), "high edge"),
                ("361", Value(151), "next band"),
                // 151 + 49/288 × 144 = 151 + 24.5 → 176
                ("505", Value(176), "mid, exact half"),
                ("649", Value(200), "high edge"),
                ("650", Value(201), "next band"),
                // 201 + 99/599 × 300 = 201 + 49.582… → 251
                ("950", Value(251), "mid"),
                ("1249", Value(300), "high edge"),
                ("1250", Value(301), "next band"),
                // 301 + 199/799 × 400 = 301 + 99.624… → 401
                ("1650", Value(401), "mid"),
                ("2049", Value(500), "high edge"),
                // 301 + 199/799 × 800 = 500.249… → 500, flagged
                ("2050", Beyond(500), "beyond the AQI"),
            ],
        );
    }

    #[test]
    fn pollutants_without_a_table_for_the_period_are_undefined() {
        assert_eq!(sub_index(Pm25, OneHour, fx("10")), Undefined);
        assert_eq!(sub_index(Co, OneHour, fx("10")), Undefined);
        assert_eq!(sub_index(No2, TwentyFourHours, fx("10")), Undefined);
        assert_eq!(truncated(So2, EightHours, fx("10")), None);
        assert_eq!(
            truncated(Pm25, TwentyFourHours, fx("35.45")),
            Some(fx("35.4"))
        );
        assert_eq!(truncated(O3, EightHours, fx("70.9")), Some(fx("70")));
    }

    #[test]
    fn ozone_reports_the_higher_of_8h_and_1h() {
        // 8-h 0.060 ppm → 51 + 49/15 × 5 = 67.33 → 67; 1-h 0.100 ppm is below the 1-h table.
        assert_eq!(ozone(Some(fx("60")), Some(fx("100"))), Value(67));
        // 8-h 0.060 → 67; 1-h 0.130 → 101 + 49/39 × 5 = 107.28 → 107: the 1-h value is higher.
        assert_eq!(ozone(Some(fx("60")), Some(fx("130"))), Value(107));
        // 8-h 0.090 → 151 + 49/19 × 4 = 161.3 → 161; 1-h 0.130 → 107: the 8-h value stays.
        assert_eq!(ozone(Some(fx("90")), Some(fx("130"))), Value(161));
        // 8-h above 0.200 is undefined: the 1-h value 0.410 → 301 + 199/199 × 5 = 306 is used.
        assert_eq!(ozone(Some(fx("210")), Some(fx("410"))), Value(306));
        assert_eq!(ozone(Some(fx("210")), Some(fx("700"))), Beyond(596));
        assert_eq!(ozone(Some(fx("210")), None), Undefined);
        assert_eq!(ozone(None, Some(fx("100"))), Undefined);
        assert_eq!(ozone(None, None), Undefined);
    }

    #[test]
    fn overall_is_the_maximum_and_names_the_dominant_pollutant() {
        let aqi = overall(&[(Pm25, Value(51)), (O3, Value(67)), (No2, Value(20))]);
        assert_eq!(
            aqi,
            Some(Aqi {
                value: 67,
                category: AqiCategory::Moderate,
                dominant: O3,
                beyond: false,
            })
        );
        assert_eq!(overall(&[]), None);
        assert_eq!(overall(&[(So2, Undefined), (O3, Undefined)]), None);
        let aqi = overall(&[(So2, Undefined), (Co, Value(3))]).expect("one defined");
        assert_eq!((aqi.value, aqi.dominant), (3, Co));
    }

    #[test]
    fn overall_ties_go_to_the_first_pollutant_in_all() {
        for subs in [
            [(Co, Value(80)), (Pm10, Value(80)), (O3, Value(80))],
            [(O3, Value(80)), (Co, Value(80)), (Pm10, Value(80))],
        ] {
            assert_eq!(overall(&subs).map(|a| a.dominant), Some(Pm10));
        }
    }

    #[test]
    fn overall_beyond_the_aqi_reports_the_extrapolated_value_with_a_flag() {
        let aqi = overall(&[(Pm25, Beyond(501)), (Pm10, Value(500))]).expect("defined");
        assert_eq!(aqi.value, 501);
        assert!(aqi.beyond);
        assert_eq!(aqi.dominant, Pm25);
        assert_eq!(aqi.category, AqiCategory::Hazardous);
        // Beyond(500) outranks Value(500): the flag is not lost on a tie of numbers.
        let aqi = overall(&[(Pm10, Value(500)), (No2, Beyond(500))]).expect("defined");
        assert_eq!((aqi.value, aqi.dominant, aqi.beyond), (500, No2, true));
        // Issue 10: PM2.5 326.0 and PM10 700 no longer both give a capped 500.
        let pm25 = sub_index(Pm25, TwentyFourHours, fx("326.0"));
        let pm10 = sub_index(Pm10, TwentyFourHours, fx("700"));
        let aqi = overall(&[(Pm25, pm25), (Pm10, pm10)]).expect("defined");
        assert_eq!((aqi.value, aqi.dominant, aqi.beyond), (607, Pm10, true));
    }

    #[test]
    fn so2_24h_edges() {
        check(
            So2,
            TwentyFourHours,
            &[
                ("0", Undefined, "no 24-h values below 305 ppb"),
                ("304.9", Undefined, "truncates to 304"),
                ("305", Value(201), "low edge"),
                // 201 + 99/299 × 5 = 202.655… → 203
                ("310", Value(203), "issue 10's station"),
                // 201 + 99/299 × 145 = 249.010… → 249
                ("450", Value(249), "mid"),
                ("604", Value(300), "high edge"),
                ("604.9", Value(300), "truncates to 604"),
                ("605", Value(301), "next band"),
                // 301 + 199/399 × 200 = 400.749… → 401
                ("805", Value(401), "mid"),
                ("1004", Value(500), "high edge"),
                // 301 + 199/399 × 400 = 500.498… → 500, flagged
                ("1005", Beyond(500), "beyond the AQI"),
                // 301 + 199/399 × 895 = 747.378… → 747
                ("1500", Beyond(747), "beyond the AQI"),
            ],
        );
    }

    #[test]
    fn so2_uses_the_1h_table_up_to_304_ppb_then_the_24h_table() {
        let so2_of = |one: Option<&str>, day: Option<&str>| so2(one.map(fx), day.map(fx));
        // 1-h at and below 304 ppb: the 1-h table, whatever the 24-h mean.
        assert_eq!(so2_of(Some("304"), None), Value(200));
        assert_eq!(so2_of(Some("304.9"), Some("400")), Value(200));
        // 151 + 49/118 × 59 = 175.5 → 176
        assert_eq!(so2_of(Some("245"), Some("310")), Value(176));
        // Issue 10: a station at 310 ppb keeps its SO2 sub-index. With a 24-h mean of 310 ppb:
        // 201 + 99/299 × 5 = 202.655… → 203.
        assert_eq!(so2_of(Some("310"), Some("310")), Value(203));
        // 305 ppb 1-h, 24-h mean 305: 201.
        assert_eq!(so2_of(Some("305"), Some("305")), Value(201));
        // 1-h above 304 without a 24-h mean in the 24-h table: the 1-h table's top, 200.
        assert_eq!(so2_of(Some("310"), None), Value(200));
        assert_eq!(so2_of(Some("310"), Some("120")), Value(200));
        // 24-h mean beyond the AQI.
        assert_eq!(so2_of(Some("1500"), Some("1005")), Beyond(500));
        // No 1-h value: the 24-h value when it is in its table, else nothing.
        assert_eq!(so2_of(None, Some("450")), Value(249));
        assert_eq!(so2_of(None, Some("120")), Undefined);
        assert_eq!(so2_of(None, None), Undefined);
    }

    const TABLES: [(Pollutant, Averaging); 8] = [
        (Pm25, TwentyFourHours),
        (Pm10, TwentyFourHours),
        (O3, EightHours),
        (O3, OneHour),
        (Co, EightHours),
        (So2, OneHour),
        (So2, TwentyFourHours),
        (No2, OneHour),
    ];

    proptest! {
        #[test]
        fn sub_index_is_monotone_in_concentration(
            which in 0usize..TABLES.len(),
            a in -1_000i64..3_000_000,
            b in -1_000i64..3_000_000,
        ) {
            let (p, avg) = TABLES[which];
            let (lo, hi) = (a.min(b), a.max(b));
            let (s_lo, s_hi) =
                (sub_index(p, avg, Fixed::from_milli(lo)), sub_index(p, avg, Fixed::from_milli(hi)));
            // Undefined below a table (O3 1-h) is fine; undefined above one (O3 8-h, SO2) is the
            // table's documented end, after which nothing is comparable.
            if s_lo != Undefined && s_hi != Undefined {
                prop_assert!(s_lo <= s_hi, "{p} {avg:?}: {lo} → {s_lo:?} but {hi} → {s_hi:?}");
            }
            if let Value(v) = s_hi {
                prop_assert!(v <= 500);
            }
            if let Beyond(v) = s_lo {
                prop_assert!(v >= 500);
            }
        }

        #[test]
        fn sub_index_category_matches_the_band(which in 0usize..TABLES.len(), c in 0i64..2_100_000) {
            let (p, avg) = TABLES[which];
            let t = table(p, avg).expect("table exists");
            let c = Fixed::from_milli(c);
            if let Value(v) = sub_index(p, avg, c) {
                let tc = c.floor_to(t.step).milli();
                let r = t.rows.iter().find(|r| r.c_lo <= tc && tc <= r.c_hi).expect("in a row");
                prop_assert!(r.i_lo <= v && v <= r.i_hi);
            }
        }
    }
}
