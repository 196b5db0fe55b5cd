//! Air quality per station and per district: hourly means with a completeness rule, the PM
//! NowCast, 24-h, 8-h and 1-h figures, the US AQI and the European index.
//!
//! Every concentration is exact ([`Fixed`] thousandths, averaged with [`Mean`]), so averages do
//! not drift across a truncation edge. At the end `T` of a window the figures come from the
//! **clock hours completed by `T`** (`hour 0` = the hour ending at `⌊T / 1 h⌋ · 1 h`):
//!
//! - **hourly mean** of a pollutant: the [`Mean`] of its readings in the clock hour, **valid when
//!   readings fall in at least 3 of the hour's 4 quarter-hours** (75 % coverage, the EPA's
//!   "45 of 60 minutes", independent of the station's sampling interval);
//! - **NowCast** (PM2.5, PM10): [`nowcast`] over hours 0–11 (it needs 2 of hours 0–2);
//! - **24-h** PM2.5 and PM10: the mean of hours 0–23, only when all 24 are valid (the contract's
//!   "when complete");
//! - **8-h** O3 and CO: the trailing mean of hours 0–7 when at least 6 are valid (75 %, EPA's
//!   8-hour completeness rule, 40 CFR Part 50 App. U and App. I);
//! - **1-h** O3, NO2 and SO2: hour 0.
//!
//! US AQI (EPA-454/B-24-002): PM2.5 and PM10 from their NowCast in the 24-h tables, O3 from the
//! 8-h value or the 1-h value where higher ([`aqi::ozone`]), NO2 and SO2 from their 1-h value, CO
//! from its 8-h value; overall = the highest sub-index ([`aqi::overall`]). A sub-index above the
//! scale is reported as 500. European index (EEA 2024): the band of each pollutant's hour-0 mean,
//! overall the worst ([`eaqi::overall`]).
//!
//! A district's figure for each concentration is the **maximum over its stations** that
//! reported in the window (reporting-area practice: the area reports its worst monitor), and its
//! indices are computed from those maxima.

use super::seq::SeqGuard;
use crate::domain::aqi::{self, Averaging, SubIndex};
use crate::domain::eaqi;
use crate::domain::fixed::{Fixed, Mean};
use crate::domain::nowcast::{nowcast, HOURS as NOWCAST_HOURS};
use citypulse_schema::{Air, AirMetrics, Pollutant};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One hour, ms.
pub const HOUR_MS: u64 = 3_600_000;
const QUARTER_MS: u64 = HOUR_MS / 4;
/// Hourly means a station keeps: the 24-h mean needs 24.
const KEPT_HOURS: u64 = 24;

/// The pollutants, in the order of the per-pollutant arrays ([`Pollutant::ALL`]).
pub const POLLUTANTS: [Pollutant; 6] = [
    Pollutant::Pm25,
    Pollutant::Pm10,
    Pollutant::O3,
    Pollutant::No2,
    Pollutant::So2,
    Pollutant::Co,
];

const fn ix(p: Pollutant) -> usize {
    match p {
        Pollutant::Pm25 => 0,
        Pollutant::Pm10 => 1,
        Pollutant::O3 => 2,
        Pollutant::No2 => 3,
        Pollutant::So2 => 4,
        Pollutant::Co => 5,
    }
}

/// One air reading's concentrations, exact, in wire units, indexed as [`POLLUTANTS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AirSample(pub [Option<Fixed>; 6]);

impl AirSample {
    /// The reading's concentrations; `Err` names the first pollutant whose value is not a
    /// finite number within ±10¹² units.
    pub fn from_air(a: &Air) -> Result<AirSample, Pollutant> {
        let raw = [
            a.pm25_ugm3,
            a.pm10_ugm3,
            a.o3_ppb,
            a.no2_ppb,
            a.so2_ppb,
            a.co_ppm,
        ];
        let mut out = [None; 6];
        for (i, v) in raw.into_iter().enumerate() {
            if let Some(x) = v {
                out[i] = Some(Fixed::from_f64(x).ok_or(POLLUTANTS[i])?);
            }
        }
        Ok(AirSample(out))
    }

    /// The concentration of `p`.
    pub fn get(&self, p: Pollutant) -> Option<Fixed> {
        self.0[ix(p)]
    }
}

/// The readings of one clock hour so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct HourAcc(
    /// Mean per pollutant.
    [Mean; 6],
    /// Quarter-hours with a reading, one bit each, per pollutant.
    [u8; 6],
);

impl HourAcc {
    fn add(&mut self, ts: u64, s: &AirSample) {
        let quarter = ((ts % HOUR_MS) / QUARTER_MS) as u8;
        for (i, c) in s.0.iter().enumerate() {
            if let Some(c) = c {
                self.0[i].add(*c);
                self.1[i] |= 1 << quarter;
            }
        }
    }

    /// The hourly means that meet the 3-of-4-quarters rule.
    fn finish(&self) -> [Option<Fixed>; 6] {
        std::array::from_fn(|i| {
            if self.1[i].count_ones() >= 3 {
                self.0[i].value()
            } else {
                None
            }
        })
    }
}

/// What the processors remember of one air station between windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirStation {
    pub(super) guard: SeqGuard,
    /// Newest accepted event time, ms.
    pub(super) newest_ts: u64,
    /// Clock hours not yet complete, by start.
    open: BTreeMap<u64, HourAcc>,
    /// Complete hours' valid means, by start; the last [`KEPT_HOURS`].
    hourly: BTreeMap<u64, [Option<Fixed>; 6]>,
}

impl AirStation {
    /// A station whose first accepted reading has `seq` and event time `ts`.
    pub fn new(seq: u64, ts: u64) -> AirStation {
        AirStation {
            guard: SeqGuard::starting_at(seq),
            newest_ts: ts,
            open: BTreeMap::new(),
            hourly: BTreeMap::new(),
        }
    }

    /// Adds an accepted reading to its clock hour.
    pub fn record(&mut self, ts: u64, s: &AirSample) {
        self.newest_ts = self.newest_ts.max(ts);
        self.open.entry(ts - ts % HOUR_MS).or_default().add(ts, s);
    }

    /// Completes every hour that ends at or before `t`, and forgets hours older than the 24 the
    /// figures at `t` can need. Call only with `t` at or below the watermark: no reading can
    /// join those hours any more.
    pub fn finalize_through(&mut self, t: u64) {
        let boundary = t - t % HOUR_MS;
        let still_open = self.open.split_off(&boundary);
        for (start, acc) in std::mem::replace(&mut self.open, still_open) {
            let means = acc.finish();
            if means.iter().any(Option::is_some) {
                self.hourly.insert(start, means);
            }
        }
        let oldest_needed = boundary.saturating_sub(KEPT_HOURS * HOUR_MS);
        self.hourly = self.hourly.split_off(&oldest_needed);
    }

    /// The mean of hour `age` before the window end's hour boundary `h0` (age 0 = the hour
    /// ending at `h0`).
    fn hour(&self, h0: u64, age: u64, p: Pollutant) -> Option<Fixed> {
        let start = h0.checked_sub((age + 1) * HOUR_MS)?;
        self.hourly.get(&start).and_then(|m| m[ix(p)])
    }

    /// The figures at window end `end`, with `window` the window's own means. Call
    /// [`finalize_through`](Self::finalize_through)`(end)` first.
    pub fn concentrations_at(&self, end: u64, window: [Option<Fixed>; 6]) -> Concentrations {
        let h0 = end - end % HOUR_MS;
        let now_cast = |p: Pollutant| {
            let mut hours = [None; NOWCAST_HOURS];
            for (age, slot) in hours.iter_mut().enumerate() {
                *slot = self.hour(h0, age as u64, p);
            }
            nowcast(p, &hours)
        };
        let mean_of = |p: Pollutant, n: u64, at_least: usize| {
            let valid: Vec<Fixed> = (0..n).filter_map(|age| self.hour(h0, age, p)).collect();
            if valid.len() >= at_least {
                valid.into_iter().collect::<Mean>().value()
            } else {
                None
            }
        };
        Concentrations {
            window,
            hour: POLLUTANTS.map(|p| self.hour(h0, 0, p)),
            pm25_nowcast: now_cast(Pollutant::Pm25),
            pm10_nowcast: now_cast(Pollutant::Pm10),
            pm25_24h: mean_of(Pollutant::Pm25, 24, 24),
            pm10_24h: mean_of(Pollutant::Pm10, 24, 24),
            o3_8h: mean_of(Pollutant::O3, 8, 6),
            co_8h: mean_of(Pollutant::Co, 8, 6),
        }
    }
}

/// The concentrations behind one air window result.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Concentrations {
    /// The window's own means (reported for PM2.5 and PM10).
    pub window: [Option<Fixed>; 6],
    /// The last complete hour's means (O3, NO2, SO2 1-h; the European index).
    pub hour: [Option<Fixed>; 6],
    /// PM2.5 NowCast, µg/m³, truncated to 0.1.
    pub pm25_nowcast: Option<Fixed>,
    /// PM10 NowCast, µg/m³, truncated to 1.
    pub pm10_nowcast: Option<Fixed>,
    /// PM2.5 24-h mean, µg/m³.
    pub pm25_24h: Option<Fixed>,
    /// PM10 24-h mean, µg/m³.
    pub pm10_24h: Option<Fixed>,
    /// O3 8-h mean, ppb.
    pub o3_8h: Option<Fixed>,
    /// CO 8-h mean, ppm.
    pub co_8h: Option<Fixed>,
}

impl Concentrations {
    /// The district figure: each concentration's maximum over the stations.
    pub fn max(self, other: Concentrations) -> Concentrations {
        let m = |a: [Option<Fixed>; 6], b: [Option<Fixed>; 6]| -> [Option<Fixed>; 6] {
            std::array::from_fn(|i| a[i].max(b[i]))
        };
        Concentrations {
            window: m(self.window, other.window),
            hour: m(self.hour, other.hour),
            pm25_nowcast: self.pm25_nowcast.max(other.pm25_nowcast),
            pm10_nowcast: self.pm10_nowcast.max(other.pm10_nowcast),
            pm25_24h: self.pm25_24h.max(other.pm25_24h),
            pm10_24h: self.pm10_24h.max(other.pm10_24h),
            o3_8h: self.o3_8h.max(other.o3_8h),
            co_8h: self.co_8h.max(other.co_8h),
        }
    }

    /// The window result's air figures.
    pub fn metrics(&self) -> AirMetrics {
        use Averaging::*;
        use Pollutant::*;
        let lookup = |p: Pollutant, avg: Averaging, c: Option<Fixed>| {
            c.map_or(SubIndex::Undefined, |c| aqi::sub_index(p, avg, c))
        };
        let subs = [
            (Pm25, lookup(Pm25, TwentyFourHours, self.pm25_nowcast)),
            (Pm10, lookup(Pm10, TwentyFourHours, self.pm10_nowcast)),
            (O3, aqi::ozone(self.o3_8h, self.hour[ix(O3)])),
            (No2, lookup(No2, OneHour, self.hour[ix(No2)])),
            (So2, lookup(So2, OneHour, self.hour[ix(So2)])),
            (Co, lookup(Co, EightHours, self.co_8h)),
        ];
        let overall = aqi::overall(&subs);
        let bands: Vec<_> = [Pm25, Pm10, O3, No2, So2]
            .into_iter()
            .filter_map(|p| {
                self.hour[ix(p)]
                    .and_then(|c| eaqi::band(p, c))
                    .map(|b| (p, b))
            })
            .collect();
        let european = eaqi::overall(&bands);
        let index = |i: usize| match subs[i].1 {
            SubIndex::Value(v) => Some(v),
            SubIndex::AboveScale => Some(500),
            SubIndex::Undefined => None,
        };
        let f = |c: Option<Fixed>| c.map(Fixed::to_f64);
        AirMetrics {
            aqi: overall.map(|a| a.value),
            category: overall.map(|a| a.category),
            dominant: overall.map(|a| a.dominant),
            aqi_pm25: index(0),
            aqi_pm10: index(1),
            aqi_o3: index(2),
            aqi_no2: index(3),
            aqi_so2: index(4),
            aqi_co: index(5),
            pm25_ugm3: f(self.window[ix(Pm25)]),
            pm25_nowcast_ugm3: f(self.pm25_nowcast),
            pm25_24h_ugm3: f(self.pm25_24h),
            pm10_ugm3: f(self.window[ix(Pm10)]),
            pm10_nowcast_ugm3: f(self.pm10_nowcast),
            pm10_24h_ugm3: f(self.pm10_24h),
            o3_1h_ppb: f(self.hour[ix(O3)]),
            o3_8h_ppb: f(self.o3_8h),
            no2_1h_ppb: f(self.hour[ix(No2)]),
            so2_1h_ppb: f(self.hour[ix(So2)]),
            co_8h_ppm: f(self.co_8h),
            eaqi: european.map(|e| e.band),
            eaqi_dominant: european.map(|e| e.dominant),
        }
    }
}

/// The window means of samples, per pollutant.
pub fn window_means<'a>(samples: impl IntoIterator<Item = &'a AirSample>) -> [Option<Fixed>; 6] {
    let mut means = [Mean::new(); 6];
    for s in samples {
        for (m, c) in means.iter_mut().zip(s.0) {
            if let Some(c) = c {
                m.add(c);
            }
        }
    }
    means.map(|m| m.value())
}

#[cfg(test)]
mod tests {
    use super::*;
    use citypulse_schema::{AqiCategory, EaqiBand};

    fn fx(s: &str) -> Fixed {
        s.parse().expect("test literal")
    }

    fn pm25(c: &str) -> AirSample {
        let mut s = AirSample::default();
        s.0[ix(Pollutant::Pm25)] = Some(fx(c));
        s
    }

    /// A station with one reading of `c` every 10 minutes in each of `hours` clock hours
    /// starting at hour `first`.
    fn station_with(first: u64, hours: u64, c: &str) -> AirStation {
        let mut st = AirStation::new(0, 0);
        for h in first..first + hours {
            for m in 0..6 {
                st.record(h * HOUR_MS + m * 600_000, &pm25(c));
            }
        }
        st
    }

    #[test]
    fn an_hour_needs_readings_in_three_of_its_four_quarters() {
        let mut st = AirStation::new(0, 0);
        // Quarters 0, 1, 3 of hour 0: valid. Quarters 0 and 1 of hour 1: not.
        for ts in [0, 1_000_000, 3_000_000, HOUR_MS, HOUR_MS + 1_000_000] {
            st.record(ts, &pm25("10"));
        }
        st.finalize_through(2 * HOUR_MS);
        assert_eq!(st.hour(2 * HOUR_MS, 1, Pollutant::Pm25), Some(fx("10")));
        assert_eq!(st.hour(2 * HOUR_MS, 0, Pollutant::Pm25), None);
    }

    #[test]
    fn twenty_four_hours_of_9_1_give_a_24h_mean_of_exactly_9_1() {
        let mut st = station_with(0, 24, "9.1");
        st.finalize_through(24 * HOUR_MS);
        let c = st.concentrations_at(24 * HOUR_MS + 60_000, [None; 6]);
        assert_eq!(c.pm25_24h, Some(fx("9.1")));
        assert_eq!(c.pm25_nowcast, Some(fx("9.1")));
        let m = c.metrics();
        assert_eq!(m.aqi_pm25, Some(51));
        assert_eq!(m.aqi, Some(51));
        assert_eq!(m.category, Some(AqiCategory::Moderate));
        assert_eq!(m.dominant, Some(Pollutant::Pm25));
        // 9.1 µg/m³ hourly: EEA Fair (5 < c ≤ 15).
        assert_eq!(m.eaqi, Some(EaqiBand::Fair));
        // 23 hours are not a complete day.
        let mut st = station_with(1, 23, "9.1");
        st.finalize_through(24 * HOUR_MS);
        assert_eq!(st.concentrations_at(24 * HOUR_MS, [None; 6]).pm25_24h, None);
    }

    #[test]
    fn figures_at_t_use_only_the_hours_completed_by_t() {
        let mut st = station_with(0, 3, "20");
        // A fourth hour at 40, still open at 3 h 30 min.
        st.record(3 * HOUR_MS, &pm25("40"));
        st.finalize_through(3 * HOUR_MS + 1_800_000);
        let c = st.concentrations_at(3 * HOUR_MS + 1_800_000, [None; 6]);
        assert_eq!(c.pm25_nowcast, Some(fx("20")));
        // At 2 h the NowCast sees hours 0 and 1 only; at 1 h only hour 0: not enough.
        assert_eq!(
            st.concentrations_at(2 * HOUR_MS, [None; 6]).pm25_nowcast,
            Some(fx("20"))
        );
        assert_eq!(st.concentrations_at(HOUR_MS, [None; 6]).pm25_nowcast, None);
    }

    #[test]
    fn eight_hour_means_need_six_valid_hours() {
        let mut st = AirStation::new(0, 0);
        let o3 = |c: &str| {
            let mut s = AirSample::default();
            s.0[ix(Pollutant::O3)] = Some(fx(c));
            s
        };
        for h in 0..6u64 {
            for m in 0..4 {
                st.record(
                    h * HOUR_MS + m * QUARTER_MS,
                    &o3(if h % 2 == 0 { "60" } else { "61" }),
                );
            }
        }
        st.finalize_through(8 * HOUR_MS);
        // Of the 8 hours before 8 h, hours 0..5 are valid: 6 of 8.
        let c = st.concentrations_at(8 * HOUR_MS, [None; 6]);
        assert_eq!(c.o3_8h, Some(fx("60.5")));
        // 8-h 0.060 ppm → 51 + 49/15 × 5 = 67.33 → 67
        assert_eq!(c.metrics().aqi_o3, Some(67));
        assert_eq!(c.metrics().o3_1h_ppb, None, "hour 7 has no O3");
        let c = st.concentrations_at(9 * HOUR_MS, [None; 6]);
        assert_eq!(c.o3_8h, None, "5 of 8");
    }

    #[test]
    fn the_district_reports_its_worst_station() {
        let a = Concentrations {
            pm25_nowcast: Some(fx("12")),
            o3_8h: Some(fx("40")),
            ..Concentrations::default()
        };
        let b = Concentrations {
            pm25_nowcast: Some(fx("40")),
            ..Concentrations::default()
        };
        let d = a.max(b);
        assert_eq!(d.pm25_nowcast, Some(fx("40")));
        assert_eq!(d.o3_8h, Some(fx("40")));
        // 40 µg/m³ PM2.5 → 101 + 49/19.9 × 4.5 = 112.08 → 112.
        assert_eq!(d.metrics().aqi, Some(112));
    }

    #[test]
    fn invalid_concentrations_name_the_pollutant() {
        let air = Air {
            pm25_ugm3: Some(3.0),
            no2_ppb: Some(f64::NAN),
            ..Air::default()
        };
        assert_eq!(AirSample::from_air(&air), Err(Pollutant::No2));
    }
}
