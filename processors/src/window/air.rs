//! Air quality per station and per district: hourly means with a completeness rule, the PM
//! NowCast, 24-h, 8-h and 1-h figures, the US AQI and the European index.
//!
//! Every concentration is exact ([`Fixed`] billionths, averaged with [`Mean`]), so averages do
//! not drift across a truncation edge. At the end `T` of a window the figures come from the
//! **clock hours completed by `T`** (`hour 0` = the hour ending at `⌊T / 1 h⌋ · 1 h`):
//!
//! - **hourly mean** of a pollutant: the [`Mean`] of its readings in the clock hour (by event
//!   time `ts`), **valid when the readings cover at least 45 minutes of the hour** (75 %,
//!   the EPA's completeness convention for an hourly mean; DESIGN.md §4). A reading covers its own averaging interval `[ts − interval_s, ts)` (the wire's
//!   `interval_s`; when absent, the time since the station's previous reading, at most
//!   [`MAX_INFERRED_INTERVAL_MS`]); coverage is the **union** of those intervals clipped to the
//!   hour, so overlaps count once and three 5-minute readings are 15 minutes, not three
//!   quarter-hours;
//! - **NowCast** (PM2.5, PM10): [`nowcast`] over hours 0–11 (it needs 2 of hours 0–2);
//! - **24-h** PM2.5, PM10 and SO2: the mean of the valid hours among hours 0–23, **when at least
//!   18 are valid** (75 %; AirNow-Tech, "Daily and Hourly AQI – Other Pollutants": "75%, or
//!   18/24 hours of data are needed for a valid daily concentration"; DESIGN.md §4);
//! - **8-h** O3 and CO: the trailing mean of hours 0–7 when at least 6 are valid (75 %, EPA's
//!   8-hour completeness rule, 40 CFR Part 50 App. U and App. I);
//! - **1-h** O3, NO2 and SO2: hour 0.
//!
//! US AQI (EPA-454/B-24-002): PM2.5 and PM10 from their NowCast in the 24-h tables, O3 from the
//! 8-h value or the 1-h value where higher ([`aqi::ozone`]), NO2 from its 1-h value, SO2 from its
//! 1-h value up to 304 ppb and its 24-h value above ([`aqi::so2`]), CO from its 8-h value;
//! overall = the highest sub-index ([`aqi::overall`]). A sub-index above its table is
//! extrapolated and flagged `beyond_aqi`. European index (EEA 2024): the band of each pollutant's
//! hour-0 mean, overall the worst ([`eaqi::overall`]).
//!
//! A **district** (a reporting area) reports the **highest station AQI** (AirNow, "How does
//! AirNow define city?": a reporting area's current air quality "comes from the highest AQI
//! reading of all the sites in a reporting area"; DESIGN.md §4), naming that station
//! (`aqi_sensor`) and its dominant pollutant; each per-pollutant sub-index is the highest among
//! the stations, and each concentration the highest among the stations that reported in the
//! window (for display: the district's AQI is not recomputed from them, since at the tables'
//! undefined edges that would not be any station's AQI).

use super::seq::SeqGuard;
use crate::domain::aqi::{self, Aqi, Averaging, SubIndex};
use crate::domain::eaqi;
use crate::domain::fixed::{Fixed, Mean};
use crate::domain::nowcast::{nowcast, HOURS as NOWCAST_HOURS};
use citypulse_runtime::small_map::SmallMap;
use citypulse_schema::{Air, AirMetrics, Pollutant};
use serde::{Deserialize, Serialize};

/// One hour, ms.
pub const HOUR_MS: u64 = 3_600_000;
/// Hourly means a station keeps: the 24-h mean looks back 24.
const KEPT_HOURS: u64 = 24;
/// Coverage that makes an hour valid: 45 minutes (75 %).
pub const MIN_HOUR_COVERAGE_MS: u64 = 45 * 60_000;
/// Valid hours a 24-h mean needs: 18 of 24 (75 %).
pub const MIN_DAY_HOURS: usize = 18;
/// Valid hours an 8-h mean needs: 6 of 8 (75 %).
pub const MIN_EIGHT_HOUR_HOURS: usize = 6;
/// Longest interval assumed for a reading that does not carry `interval_s`: the time since the
/// station's previous reading, at most 15 minutes (the coarsest sampling the former
/// quarter-hour rule accepted), so one reading after a long silence cannot validate an hour.
pub const MAX_INFERRED_INTERVAL_MS: u64 = 15 * 60_000;

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
    /// finite number within ±10⁹ units.
    pub fn from_air(a: &Air) -> Result<AirSample, Pollutant> {
        let mut out = [None; 6];
        // The pollutants come first, in `Pollutant`'s order.
        for (i, v) in a.values().into_iter().take(6).enumerate() {
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

/// The part of one clock hour covered by readings: disjoint, sorted, non-touching `[from, to)`
/// spans in ms from the hour's start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage(Vec<(u32, u32)>);

impl Coverage {
    /// Adds `[from, to)`; empty spans add nothing.
    pub fn add(&mut self, from: u32, to: u32) {
        if from >= to {
            return;
        }
        let spans = &mut self.0;
        // Spans entirely before and after the new one stay; the ones touching it merge into it.
        let first = spans.partition_point(|&(_, end)| end < from);
        let last = spans.partition_point(|&(start, _)| start <= to);
        let merged = spans[first..last]
            .iter()
            .fold((from, to), |(f, t), &(a, b)| (f.min(a), t.max(b)));
        spans.splice(first..last, [merged]);
    }

    /// Total covered time, ms.
    pub fn total_ms(&self) -> u64 {
        self.0.iter().map(|&(a, b)| u64::from(b - a)).sum()
    }
}

/// The readings of one clock hour so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct HourAcc(
    /// Mean per pollutant.
    [Mean; 6],
    /// Time covered per pollutant.
    [Coverage; 6],
);

impl HourAcc {
    /// Adds a reading whose interval covers `[from, to)` ms of the hour.
    fn add(&mut self, from: u32, to: u32, s: &AirSample) {
        for (i, c) in s.0.iter().enumerate() {
            if let Some(c) = c {
                self.0[i].add(*c);
                self.1[i].add(from, to);
            }
        }
    }

    /// The hourly means whose readings cover at least 45 minutes.
    fn finish(&self) -> [Option<Fixed>; 6] {
        std::array::from_fn(|i| {
            if self.1[i].total_ms() >= MIN_HOUR_COVERAGE_MS {
                self.0[i].value()
            } else {
                None
            }
        })
    }
}

/// A complete hour's valid means, indexed as [`POLLUTANTS`]: `[Option<Fixed>; 6]` (as it
/// serializes) in 56 bytes instead of 96, one validity bit per pollutant instead of six tags;
/// a station keeps a day of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "[Option<Fixed>; 6]", into = "[Option<Fixed>; 6]")]
struct HourMeans {
    valid: u8,
    means: [Fixed; 6],
}

impl HourMeans {
    fn get(&self, i: usize) -> Option<Fixed> {
        (self.valid & (1 << i) != 0).then_some(self.means[i])
    }
}

impl From<[Option<Fixed>; 6]> for HourMeans {
    fn from(m: [Option<Fixed>; 6]) -> HourMeans {
        let valid = (0..6)
            .filter(|&i| m[i].is_some())
            .fold(0, |bits, i| bits | 1 << i);
        HourMeans {
            valid,
            means: m.map(|v| v.unwrap_or(Fixed::ZERO)),
        }
    }
}

impl From<HourMeans> for [Option<Fixed>; 6] {
    fn from(h: HourMeans) -> [Option<Fixed>; 6] {
        std::array::from_fn(|i| h.get(i))
    }
}

/// What the processors remember of one air station between windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AirStation {
    pub(super) guard: SeqGuard,
    /// Newest accepted event time, ms.
    pub(super) newest_ts: u64,
    /// Clock hours not yet complete, by start.
    open: SmallMap<u64, HourAcc>,
    /// Complete hours' valid means, by start; the last [`KEPT_HOURS`].
    hourly: SmallMap<u64, HourMeans>,
}

impl AirStation {
    /// A station whose first accepted reading has `seq` and event time `ts`.
    pub fn new(seq: u64, ts: u64) -> AirStation {
        AirStation {
            guard: SeqGuard::starting_at(seq),
            newest_ts: ts,
            open: SmallMap::new(),
            hourly: SmallMap::new(),
        }
    }

    /// Adds an accepted reading at `ts` to its clock hour. It covers `[ts − interval, ts)`
    /// clipped to that hour; `interval_s` is the reading's own, or when absent the time since
    /// the station's newest reading, at most [`MAX_INFERRED_INTERVAL_MS`].
    pub fn record(&mut self, ts: u64, interval_s: Option<u32>, s: &AirSample) {
        let interval_ms = interval_s.map_or_else(
            || {
                ts.saturating_sub(self.newest_ts)
                    .min(MAX_INFERRED_INTERVAL_MS)
            },
            |i| u64::from(i) * 1000,
        );
        self.newest_ts = self.newest_ts.max(ts);
        let start = ts - ts % HOUR_MS;
        let from = ts.saturating_sub(interval_ms).max(start);
        // Both offsets are below one hour (3.6 × 10⁶ ms), so they fit in u32.
        let offset = |t: u64| u32::try_from(t - start).unwrap_or(u32::MAX);
        self.open
            .get_or_default(&start)
            .add(offset(from), offset(ts), s);
    }

    /// Completes every hour that ends at or before `t`, and forgets hours older than the 24 the
    /// figures at `t` can need. Call only with `t` at or below the watermark: no reading can
    /// join those hours any more.
    pub fn finalize_through(&mut self, t: u64) {
        let boundary = t - t % HOUR_MS;
        for (start, acc) in self.open.take_below(&boundary) {
            let means = acc.finish();
            if means.iter().any(Option::is_some) {
                self.hourly.insert(start, means.into());
            }
        }
        let oldest_needed = boundary.saturating_sub(KEPT_HOURS * HOUR_MS);
        self.hourly.take_below(&oldest_needed).for_each(drop);
    }

    /// The mean of hour `age` before the window end's hour boundary `h0` (age 0 = the hour
    /// ending at `h0`).
    fn hour(&self, h0: u64, age: u64, p: Pollutant) -> Option<Fixed> {
        let start = h0.checked_sub((age + 1) * HOUR_MS)?;
        self.hourly.get(&start).and_then(|m| m.get(ix(p)))
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
            pm25_24h: mean_of(Pollutant::Pm25, KEPT_HOURS, MIN_DAY_HOURS),
            pm10_24h: mean_of(Pollutant::Pm10, KEPT_HOURS, MIN_DAY_HOURS),
            so2_24h: mean_of(Pollutant::So2, KEPT_HOURS, MIN_DAY_HOURS),
            o3_8h: mean_of(Pollutant::O3, 8, MIN_EIGHT_HOUR_HOURS),
            co_8h: mean_of(Pollutant::Co, 8, MIN_EIGHT_HOUR_HOURS),
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
    /// SO2 24-h mean, ppb.
    pub so2_24h: Option<Fixed>,
    /// O3 8-h mean, ppb.
    pub o3_8h: Option<Fixed>,
    /// CO 8-h mean, ppm.
    pub co_8h: Option<Fixed>,
}

impl Concentrations {
    /// Each concentration's maximum over two stations (the district's display figures).
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
            so2_24h: self.so2_24h.max(other.so2_24h),
            o3_8h: self.o3_8h.max(other.o3_8h),
            co_8h: self.co_8h.max(other.co_8h),
        }
    }

    /// The sub-index of each pollutant, in [`POLLUTANTS`] order.
    pub fn sub_indices(&self) -> [(Pollutant, SubIndex); 6] {
        use Averaging::*;
        use Pollutant::*;
        let lookup = |p: Pollutant, avg: Averaging, c: Option<Fixed>| {
            c.map_or(SubIndex::Undefined, |c| aqi::sub_index(p, avg, c))
        };
        [
            (Pm25, lookup(Pm25, TwentyFourHours, self.pm25_nowcast)),
            (Pm10, lookup(Pm10, TwentyFourHours, self.pm10_nowcast)),
            (O3, aqi::ozone(self.o3_8h, self.hour[ix(O3)])),
            (No2, lookup(No2, OneHour, self.hour[ix(No2)])),
            (So2, aqi::so2(self.hour[ix(So2)], self.so2_24h)),
            (Co, lookup(Co, EightHours, self.co_8h)),
        ]
    }

    /// A station's window result figures.
    pub fn metrics(&self) -> AirMetrics {
        let subs = self.sub_indices();
        let overall = aqi::overall(&subs);
        self.metrics_with(subs.map(|(_, s)| s), overall, None)
    }

    /// The figures with the given sub-indices and overall AQI (a station's own, or a district's).
    fn metrics_with(
        &self,
        subs: [SubIndex; 6],
        overall: Option<Aqi>,
        aqi_sensor: Option<String>,
    ) -> AirMetrics {
        use Pollutant::*;
        let bands: Vec<_> = [Pm25, Pm10, O3, No2, So2]
            .into_iter()
            .filter_map(|p| {
                self.hour[ix(p)]
                    .and_then(|c| eaqi::band(p, c))
                    .map(|b| (p, b))
            })
            .collect();
        let european = eaqi::overall(&bands);
        let f = |c: Option<Fixed>| c.map(Fixed::to_f64);
        AirMetrics {
            aqi: overall.map(|a| a.value),
            category: overall.map(|a| a.category),
            dominant: overall.map(|a| a.dominant),
            aqi_pm25: subs[0].index(),
            aqi_pm10: subs[1].index(),
            aqi_o3: subs[2].index(),
            aqi_no2: subs[3].index(),
            aqi_so2: subs[4].index(),
            aqi_co: subs[5].index(),
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
            beyond_aqi: overall.filter(|a| a.beyond).map(|_| true),
            aqi_sensor: overall.and(aqi_sensor),
            so2_24h_ppb: f(self.so2_24h),
        }
    }
}

/// A district's air figures, gathered station by station.
#[derive(Debug, Clone, Default)]
pub struct DistrictAir {
    /// Each concentration's maximum over the stations.
    display: Option<Concentrations>,
    /// Each pollutant's highest sub-index over the stations.
    subs: [SubIndex; 6],
    /// The highest station AQI and its station; the first station wins a tie.
    worst: Option<(Aqi, String)>,
}

impl DistrictAir {
    /// Adds station `sensor`'s figures.
    pub fn add(&mut self, sensor: &str, c: &Concentrations) {
        self.display = Some(self.display.map_or(*c, |d| d.max(*c)));
        let subs = c.sub_indices();
        for (mine, (_, theirs)) in self.subs.iter_mut().zip(subs) {
            *mine = (*mine).max(theirs);
        }
        if let Some(a) = aqi::overall(&subs) {
            let rank = |a: &Aqi| (a.value, a.beyond);
            if self.worst.as_ref().is_none_or(|(w, _)| rank(&a) > rank(w)) {
                self.worst = Some((a, sensor.to_owned()));
            }
        }
    }

    /// The district's window result figures; `None` when no station was added.
    pub fn metrics(&self) -> Option<AirMetrics> {
        let display = self.display?;
        let (overall, sensor) = match &self.worst {
            Some((a, s)) => (Some(*a), Some(s.clone())),
            None => (None, None),
        };
        Some(display.metrics_with(self.subs, overall, sensor))
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

    const MIN: u64 = 60_000;

    fn fx(s: &str) -> Fixed {
        s.parse().expect("test literal")
    }

    fn sample(p: Pollutant, c: &str) -> AirSample {
        let mut s = AirSample::default();
        s.0[ix(p)] = Some(fx(c));
        s
    }

    fn pm25(c: &str) -> AirSample {
        sample(Pollutant::Pm25, c)
    }

    /// A station with one 10-minute reading of `c` for `p` every 10 minutes in each of `hours`
    /// clock hours starting at hour `first` (50 of each hour's minutes covered by its own
    /// readings, the one at :00 covering the hour before).
    fn station_of(p: Pollutant, first: u64, hours: u64, c: &str) -> AirStation {
        let mut st = AirStation::new(0, 0);
        for h in first..first + hours {
            for m in 0..6 {
                st.record(h * HOUR_MS + m * 10 * MIN, Some(600), &sample(p, c));
            }
        }
        st
    }

    fn station_with(first: u64, hours: u64, c: &str) -> AirStation {
        station_of(Pollutant::Pm25, first, hours, c)
    }

    /// Whether hour 0 of a station fed `readings` (`(ts, interval_s)`, PM2.5 at 10) is valid.
    fn hour_valid(readings: &[(u64, Option<u32>)]) -> bool {
        let mut st = AirStation::new(0, 0);
        for &(ts, interval) in readings {
            st.record(ts, interval, &pm25("10"));
        }
        st.finalize_through(HOUR_MS);
        st.hour(HOUR_MS, 0, Pollutant::Pm25).is_some()
    }

    #[test]
    fn an_hour_is_valid_with_45_minutes_covered() {
        // One reading whose own interval covers 45 minutes of the hour: valid; 44: not.
        assert!(hour_valid(&[(45 * MIN, Some(45 * 60))]));
        assert!(!hour_valid(&[(45 * MIN, Some(44 * 60))]));
        assert!(!hour_valid(&[(45 * MIN - 1_000, Some(45 * 60 - 1))]));
        // Contiguous 1-minute readings: 45 valid, 44 not.
        let minutes = |n: u64| (1..=n).map(|m| (m * MIN, Some(60))).collect::<Vec<_>>();
        assert!(hour_valid(&minutes(45)));
        assert!(!hour_valid(&minutes(44)));
    }

    #[test]
    fn coverage_is_time_not_quarter_hours() {
        // Issue 10: three 5-minute readings in three quarter-hours are 15 minutes: invalid
        // (the former 3-of-4-quarters rule passed them).
        assert!(!hour_valid(&[
            (5 * MIN, Some(300)),
            (20 * MIN, Some(300)),
            (50 * MIN, Some(300)),
        ]));
        // Six contiguous 5-minute readings, [0, 30): 30 minutes, invalid (their timestamps at
        // 5..30 min fall in three quarter-hours, which the former rule passed). Nine, 45
        // minutes: valid.
        let fives = |n: u64| {
            (1..=n)
                .map(|k| (k * 5 * MIN, Some(300)))
                .collect::<Vec<_>>()
        };
        assert!(!hour_valid(&fives(6)));
        assert!(hour_valid(&fives(9)));
    }

    #[test]
    fn coverage_counts_overlaps_once_and_only_inside_the_hour() {
        // The same 30 minutes twice are 30 minutes.
        assert!(!hour_valid(&[
            (30 * MIN, Some(1800)),
            (30 * MIN, Some(1800))
        ]));
        // Overlapping 30-minute spans [0, 30) and [15, 45): 45 minutes.
        assert!(hour_valid(&[
            (30 * MIN, Some(1800)),
            (45 * MIN, Some(1800))
        ]));
        // A 1-hour interval ending 10 minutes into the hour covers 10 minutes of it.
        assert!(!hour_valid(&[(10 * MIN, Some(3600))]));
        // A reading at the hour's start covers the hour before, not this one.
        assert!(!hour_valid(&[(0, Some(3600)), (30 * MIN, Some(900))]));
        // An interval longer than the hour is clipped to it.
        assert!(hour_valid(&[(50 * MIN, Some(7200))]));
    }

    #[test]
    fn coverage_merges_spans() {
        let mut c = Coverage::default();
        for (a, b) in [(10, 20), (30, 40), (20, 30), (5, 6), (50, 50), (35, 60)] {
            c.add(a, b);
        }
        assert_eq!(c, Coverage(vec![(5, 6), (10, 60)]));
        assert_eq!(c.total_ms(), 51);
    }

    #[test]
    fn readings_without_an_interval_cover_the_time_since_the_previous_one_at_most_15_min() {
        // Every 15 minutes from the hour's start: [0, 15), [15, 30), [30, 45): valid. (The
        // first reading of a new station covers nothing.)
        assert!(hour_valid(&[
            (0, None),
            (15 * MIN, None),
            (30 * MIN, None),
            (45 * MIN, None)
        ]));
        // Every 20 minutes: each covers at most 15, so 30 minutes: invalid.
        assert!(!hour_valid(&[
            (0, None),
            (20 * MIN, None),
            (40 * MIN, None)
        ]));
        // One reading after a long silence covers 15 minutes, not the silence.
        let mut st = AirStation::new(0, 0);
        st.record(0, None, &pm25("10"));
        st.record(2 * HOUR_MS + 50 * MIN, None, &pm25("10"));
        st.finalize_through(3 * HOUR_MS);
        assert_eq!(st.hour(3 * HOUR_MS, 0, Pollutant::Pm25), None);
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
        assert_eq!(m.beyond_aqi, None);
        assert_eq!(m.aqi_sensor, None, "a station result names no station");
        // 9.1 µg/m³ hourly: EEA Fair (5 < c ≤ 15).
        assert_eq!(m.eaqi, Some(EaqiBand::Fair));
    }

    #[test]
    fn a_24h_mean_needs_18_valid_hours() {
        // 18 valid hours (6..23) of the 24 before 24 h: valid, and the mean of those hours.
        let mut st = station_with(6, 18, "9.1");
        st.finalize_through(24 * HOUR_MS);
        assert_eq!(
            st.concentrations_at(24 * HOUR_MS, [None; 6]).pm25_24h,
            Some(fx("9.1"))
        );
        // 17 valid hours: no 24-h mean.
        let mut st = station_with(7, 17, "9.1");
        st.finalize_through(24 * HOUR_MS);
        assert_eq!(st.concentrations_at(24 * HOUR_MS, [None; 6]).pm25_24h, None);
        // Hours older than 24 do not count: at 31 h the last 24 are hours 7..30, of which
        // 7..23 (17) are valid.
        let mut st = station_with(6, 18, "9.1");
        st.finalize_through(30 * HOUR_MS);
        assert!(st
            .concentrations_at(30 * HOUR_MS, [None; 6])
            .pm25_24h
            .is_some());
        st.finalize_through(31 * HOUR_MS);
        assert_eq!(st.concentrations_at(31 * HOUR_MS, [None; 6]).pm25_24h, None);
        // The mean is over the valid hours only: 12 hours of 10 and 6 of 16 → 12.
        let mut st = station_with(0, 12, "10");
        for h in 12..18 {
            for m in 1..=6 {
                st.record(h * HOUR_MS + m * 10 * MIN - 1, Some(600), &pm25("16"));
            }
        }
        st.finalize_through(18 * HOUR_MS);
        assert_eq!(
            st.concentrations_at(18 * HOUR_MS, [None; 6]).pm25_24h,
            Some(fx("12"))
        );
    }

    #[test]
    fn so2_at_310_ppb_keeps_its_sub_index() {
        // Issue 10: a station at 310 ppb. With 24 valid hours at 310 the 24-h table applies:
        // 201 + 99/299 × 5 = 202.655… → 203 (Very unhealthy).
        let mut st = station_of(Pollutant::So2, 0, 24, "310");
        st.finalize_through(24 * HOUR_MS);
        let c = st.concentrations_at(24 * HOUR_MS, [None; 6]);
        assert_eq!(c.so2_24h, Some(fx("310")));
        let m = c.metrics();
        assert_eq!((m.aqi_so2, m.aqi), (Some(203), Some(203)));
        assert_eq!(m.category, Some(AqiCategory::VeryUnhealthy));
        assert_eq!((m.so2_1h_ppb, m.so2_24h_ppb), (Some(310.0), Some(310.0)));
        // One hour at 310 and no 24-h mean yet: the 1-h table's top, 200.
        let mut st = station_of(Pollutant::So2, 0, 1, "310");
        st.finalize_through(HOUR_MS);
        let m = st.concentrations_at(HOUR_MS, [None; 6]).metrics();
        assert_eq!((m.aqi_so2, m.so2_24h_ppb), (Some(200), None));
    }

    #[test]
    fn beyond_the_aqi_is_extrapolated_and_flagged() {
        let c = Concentrations {
            pm25_nowcast: Some(fx("326.0")),
            ..Concentrations::default()
        };
        let m = c.metrics();
        // 301 + 199/99.9 × 100.5 = 501.195… → 501
        assert_eq!(
            (m.aqi, m.aqi_pm25, m.beyond_aqi),
            (Some(501), Some(501), Some(true))
        );
        assert_eq!(m.category, Some(AqiCategory::Hazardous));
        let c = Concentrations {
            pm10_nowcast: Some(fx("700")),
            ..c
        };
        // PM10 700 → 301 + 199/179 × 275 = 606.726… → 607, the higher of the two.
        let m = c.metrics();
        assert_eq!(
            (m.aqi, m.dominant, m.beyond_aqi),
            (Some(607), Some(Pollutant::Pm10), Some(true))
        );
        assert_eq!(m.aqi_pm25, Some(501));
    }

    #[test]
    fn readings_are_truncated_on_their_exact_value() {
        // Issue 10: 9.0995 µg/m³ is 9.0 after truncation (AQI 50), not 9.100 (AQI 51).
        let air = Air {
            pm25_ugm3: Some(9.0995),
            ..Air::default()
        };
        let s = AirSample::from_air(&air).expect("finite");
        assert_eq!(s.get(Pollutant::Pm25), Some(fx("9.0995")));
        let mut st = AirStation::new(0, 0);
        for h in 0..3 {
            for m in 1..=6 {
                st.record(h * HOUR_MS + m * 10 * MIN - 1, Some(600), &s);
            }
        }
        st.finalize_through(3 * HOUR_MS);
        let c = st.concentrations_at(3 * HOUR_MS, [None; 6]);
        assert_eq!(c.pm25_nowcast, Some(fx("9.0")));
        assert_eq!(c.metrics().aqi, Some(50));
    }

    #[test]
    fn figures_at_t_use_only_the_hours_completed_by_t() {
        let mut st = station_with(0, 3, "20");
        // A fourth hour at 40, still open at 3 h 30 min.
        st.record(3 * HOUR_MS, Some(600), &pm25("40"));
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
        for h in 0..6u64 {
            for m in 1..=4 {
                st.record(
                    h * HOUR_MS + m * 15 * MIN - 1,
                    Some(900),
                    &sample(Pollutant::O3, if h % 2 == 0 { "60" } else { "61" }),
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
    fn the_district_reports_its_highest_station_aqi() {
        // Issue 10: station "a" has O3 8-h at 0.210 ppm (above the 8-h table) and no 1-h value
        // in the 1-h table, PM2.5 NowCast 22.2 (→ 75); station "b" has O3 8-h 0.096 ppm
        // (→ 151 + 49/19 × 10 = 176.79 → 177). Maxima per pollutant would give the district
        // O3 8-h 0.210 (undefined) and AQI 75; the highest station AQI is b's 177.
        let a = Concentrations {
            pm25_nowcast: Some(fx("22.2")),
            o3_8h: Some(fx("210")),
            ..Concentrations::default()
        };
        let b = Concentrations {
            o3_8h: Some(fx("96")),
            ..Concentrations::default()
        };
        assert_eq!(a.max(b).metrics().aqi, Some(75), "the former rule");
        let mut d = DistrictAir::default();
        d.add("a", &a);
        d.add("b", &b);
        let m = d.metrics().expect("stations");
        assert_eq!(m.aqi, Some(177));
        assert_eq!(m.dominant, Some(Pollutant::O3));
        assert_eq!(m.aqi_sensor.as_deref(), Some("b"));
        assert_eq!((m.aqi_pm25, m.aqi_o3), (Some(75), Some(177)));
        // Display concentrations stay the maxima.
        assert_eq!(
            (m.pm25_nowcast_ugm3, m.o3_8h_ppb),
            (Some(22.2), Some(210.0))
        );
    }

    #[test]
    fn the_district_is_not_recomputed_from_maxima_at_the_so2_edge() {
        // "a": SO2 1-h 310 ppb, no 24-h mean → 200. "b": SO2 1-h 100 ppb (→ 101 + 49/109 × 24
        // = 111.79 → 112) with a 24-h mean of 400. Maxima (310, 400) would give
        // 201 + 99/299 × 95 = 232, no station's AQI.
        let hour = |c: &str| {
            let mut h = [None; 6];
            h[ix(Pollutant::So2)] = Some(fx(c));
            h
        };
        let a = Concentrations {
            hour: hour("310"),
            ..Concentrations::default()
        };
        let b = Concentrations {
            hour: hour("100"),
            so2_24h: Some(fx("400")),
            ..Concentrations::default()
        };
        assert_eq!(a.max(b).metrics().aqi, Some(232));
        let mut d = DistrictAir::default();
        d.add("a", &a);
        d.add("b", &b);
        let m = d.metrics().expect("stations");
        assert_eq!((m.aqi, m.aqi_sensor.as_deref()), (Some(200), Some("a")));
        assert_eq!((m.so2_1h_ppb, m.so2_24h_ppb), (Some(310.0), Some(400.0)));
    }

    #[test]
    fn district_ties_go_to_the_first_station_and_beyond_outranks_500() {
        let pm = |c: &str| Concentrations {
            pm25_nowcast: Some(fx(c)),
            ..Concentrations::default()
        };
        let mut d = DistrictAir::default();
        d.add("a", &pm("40"));
        d.add("b", &pm("40"));
        assert_eq!(d.metrics().and_then(|m| m.aqi_sensor).as_deref(), Some("a"));
        // 325.4 → Value(500); 325.5 → Beyond(500).
        let mut d = DistrictAir::default();
        d.add("a", &pm("325.4"));
        d.add("b", &pm("325.5"));
        let m = d.metrics().expect("stations");
        assert_eq!(
            (m.aqi, m.beyond_aqi, m.aqi_sensor.as_deref()),
            (Some(500), Some(true), Some("b"))
        );
        // No station with an AQI: no district AQI and no station named.
        let mut d = DistrictAir::default();
        d.add("a", &Concentrations::default());
        let m = d.metrics().expect("a station");
        assert_eq!((m.aqi, m.aqi_sensor), (None, None));
        assert!(DistrictAir::default().metrics().is_none());
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
