//! An independent, deliberately naive model of what the processors must publish, for tests.
//!
//! It shares no windowing or accumulation code with the crate: it replays the readings of one
//! partition in arrival order, decides late and duplicate readings from the documented rules,
//! then recomputes every closed window from the list of accepted readings with the textbook
//! formulas (sums over `Vec`s, sorting for percentiles, integer billionths of the printed
//! decimal for concentrations, sorted spans for hour coverage). Only the table lookups are borrowed from the crate's `domain` module
//! (AQI breakpoints, the NowCast formula, EEA bands, the `overall` maximum), which its own unit
//! tests check against the EPA's and EEA's published values.

#![allow(dead_code)]

use citypulse_processors::domain::aqi::{self, Averaging, SubIndex};
use citypulse_processors::domain::eaqi;
use citypulse_processors::domain::fixed::Fixed;
use citypulse_processors::domain::nowcast::nowcast;
use citypulse_schema::{
    AirMetrics, Kind, Los, Measurement, Pollutant, Reading, TrafficMetrics, WindowMetrics,
    WindowResult,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

const HOUR: u64 = 3_600_000;

/// Each station's accepted air readings by clock hour start, with the ms each one covers.
type Hours<'r> = HashMap<(&'r str, u64), Vec<(&'r Reading, u64)>>;

/// The model's settings.
#[derive(Debug, Clone, Default)]
pub struct Model {
    pub size_ms: u64,
    pub hop_ms: u64,
    pub lateness_ms: u64,
    /// Free-flow speed by detector (the registry); others learn it.
    pub free_flow: HashMap<String, f64>,
    /// Capacity per lane by detector.
    pub capacity: HashMap<String, f64>,
    /// Detectors on freeways (level of service by density); the others are urban streets (by
    /// speed over free-flow speed).
    pub freeway: HashSet<String>,
    /// Segment length by detector, km (1 when absent).
    pub length_km: HashMap<String, f64>,
}

/// What the model expects of one partition.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    pub accepted: usize,
    pub late: usize,
    pub rejected: usize,
    pub watermark: Option<u64>,
    /// Every closed window's results, keyed by `msg_id`.
    pub results: BTreeMap<String, WindowResult>,
}

fn valid(r: &Reading) -> bool {
    match &r.data {
        Measurement::Traffic(t) => {
            t.interval_s > 0
                && t.lanes > 0
                && (0.0..=1.0).contains(&t.occupancy)
                && (t.count == 0 || t.speed_kmh.is_none_or(|v| v.is_finite() && v > 0.0))
        }
        Measurement::Air(a) => a.values()[..6]
            .iter()
            .flatten()
            .all(|x| x.is_finite() && x.abs() <= 1e9),
    }
}

impl Model {
    /// Replays one partition's readings in arrival order.
    pub fn run(&self, readings: &[Reading]) -> Expected {
        let mut wm: Option<u64> = None;
        let mut seen: HashSet<(String, u64)> = HashSet::new();
        let mut accepted: Vec<&Reading> = Vec::new();
        let mut e = Expected::default();
        for r in readings {
            if !valid(r) {
                e.rejected += 1;
            } else if wm.is_some_and(|w| r.ts < w) {
                e.late += 1;
            } else if !seen.insert((r.sensor.clone(), r.seq)) {
                e.rejected += 1;
            } else {
                accepted.push(r);
                let candidate = r.ts.saturating_sub(self.lateness_ms);
                wm = Some(wm.map_or(candidate, |w| w.max(candidate)));
            }
        }
        e.accepted = accepted.len();
        e.watermark = wm;
        let Some(wm) = wm else { return e };
        // Every window end (a multiple of the hop) that covers an accepted reading and that the
        // final watermark has reached.
        let mut ends = BTreeSet::new();
        for r in &accepted {
            let mut end = r.ts - r.ts % self.hop_ms + self.hop_ms;
            while end <= r.ts + self.size_ms {
                if end <= wm {
                    ends.insert(end);
                }
                end += self.hop_ms;
            }
        }
        // Readings of each station by clock hour, with the interval each covers (its own
        // `interval_s`, else the time since the station's newest earlier-arrived reading, at most
        // 15 minutes), for the hourly means.
        let mut hours: Hours<'_> = HashMap::new();
        let mut newest: HashMap<&str, u64> = HashMap::new();
        for r in accepted.iter().filter(|r| r.kind() == Kind::Air) {
            let Measurement::Air(a) = &r.data else {
                continue;
            };
            let last = newest.entry(r.sensor.as_str()).or_insert(r.ts);
            let interval = match a.interval_s {
                Some(i) => u64::from(i) * 1000,
                None => r.ts.saturating_sub(*last).min(15 * 60_000),
            };
            *last = (*last).max(r.ts);
            hours
                .entry((r.sensor.as_str(), r.ts - r.ts % HOUR))
                .or_default()
                .push((r, interval));
        }
        for end in ends {
            let start = end.saturating_sub(self.size_ms);
            let in_window: Vec<&Reading> = accepted
                .iter()
                .copied()
                .filter(|r| r.ts >= start && r.ts < end)
                .collect();
            let districts: BTreeSet<&str> = in_window.iter().map(|r| r.district.as_str()).collect();
            for d in districts {
                for w in self.traffic_windows(&accepted, &in_window, d, start, end) {
                    e.results.insert(w.msg_id(), w);
                }
                for w in self.air_windows(&hours, &in_window, d, start, end) {
                    e.results.insert(w.msg_id(), w);
                }
            }
        }
        e
    }

    fn learned_free_flow(&self, accepted: &[&Reading], sensor: &str, end: u64) -> Option<f64> {
        // (speed, vehicles) of low-flow intervals before `end`, sorted by speed.
        let mut obs: Vec<(f64, u64)> = accepted
            .iter()
            .filter(|r| r.sensor == sensor && r.ts < end)
            .filter_map(|r| match &r.data {
                Measurement::Traffic(t) if t.count > 0 => {
                    let flow_per_lane =
                        f64::from(t.count) * 3600.0 / f64::from(t.interval_s * t.lanes);
                    let v = t.speed_kmh?;
                    (flow_per_lane <= 1000.0).then_some((v, u64::from(t.count)))
                }
                _ => None,
            })
            .collect();
        obs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let total: u64 = obs.iter().map(|o| o.1).sum();
        if total < 100 {
            return None;
        }
        let mut cum = 0;
        for (v, n) in obs {
            cum += n;
            if cum * 100 >= total * 85 {
                return Some(v.floor() + 1.0);
            }
        }
        None
    }

    fn traffic_windows(
        &self,
        accepted: &[&Reading],
        in_window: &[&Reading],
        district: &str,
        start: u64,
        end: u64,
    ) -> Vec<WindowResult> {
        let mut by_sensor: BTreeMap<&str, Vec<&citypulse_schema::Traffic>> = BTreeMap::new();
        for r in in_window.iter().filter(|r| r.district == district) {
            if let Measurement::Traffic(t) = &r.data {
                by_sensor.entry(&r.sensor).or_default().push(t);
            }
        }
        if by_sensor.is_empty() {
            return Vec::new();
        }
        struct Seg {
            flow: f64,
            occ: f64,
            speed_vehicles: u64,
            density: Option<f64>,
            ci: Option<f64>,
            tti: Option<f64>,
            vkm: f64,
            congested: Option<bool>,
        }
        let mut out = Vec::new();
        let mut segs = Vec::new();
        let (mut all_n, mut all_n_over_v) = (0u64, 0.0f64);
        let mut readings = 0;
        for (sensor, ts) in &by_sensor {
            let vehicles: u64 = ts.iter().map(|t| u64::from(t.count)).sum();
            let seconds: u64 = ts.iter().map(|t| u64::from(t.interval_s)).sum();
            let lane_seconds: u64 = ts.iter().map(|t| u64::from(t.interval_s * t.lanes)).sum();
            let occupied: f64 = ts
                .iter()
                .map(|t| t.occupancy * f64::from(t.interval_s))
                .sum();
            let moving: Vec<(f64, f64)> = ts
                .iter()
                .filter(|t| t.count > 0)
                .filter_map(|t| t.speed_kmh.map(|v| (f64::from(t.count), v)))
                .collect();
            let n: f64 = moving.iter().map(|m| m.0).sum();
            let n_over_v: f64 = moving.iter().map(|m| m.0 / m.1).sum();
            all_n += n as u64;
            all_n_over_v += n_over_v;
            let flow = vehicles as f64 * 3600.0 / seconds as f64;
            let flow_lane = vehicles as f64 * 3600.0 / lane_seconds as f64;
            let occ = occupied / seconds as f64;
            let speed = (!moving.is_empty()).then(|| n / n_over_v);
            let density = if vehicles == 0 {
                (occ == 0.0).then_some(0.0)
            } else {
                speed.map(|v| flow_lane / v)
            };
            // Volume over capacity, exactly: vehicles·3600 > capacity·lane_seconds, capacity in
            // thousandths.
            let over = self.capacity.get(*sensor).is_some_and(|c| {
                u128::from(vehicles) * 3_600_000 > thousandths(*c) * u128::from(lane_seconds)
            });
            let ffs = self
                .free_flow
                .get(*sensor)
                .copied()
                .or_else(|| self.learned_free_flow(accepted, sensor, end));
            let empty = vehicles == 0 && occ == 0.0;
            let los = if over {
                Some(Los::F)
            } else if self.freeway.contains(*sensor) {
                if empty {
                    Some(Los::A)
                } else {
                    speed.map(|v| freeway_los_of(vehicles, lane_seconds, v))
                }
            } else {
                match (speed, ffs) {
                    (Some(v), Some(f)) => Some(urban_los_of(thousandths(v), thousandths(f))),
                    (None, _) if empty => Some(Los::A),
                    _ => None,
                }
            };
            let (ci, tti, congested) = match (speed, ffs) {
                (Some(v), Some(f)) => (
                    Some((1.0 - v / f).clamp(0.0, 1.0)),
                    Some((f / v).max(1.0)),
                    // Below 90 %, exactly: 10·v < 9·v_free in thousandths of km/h.
                    Some(thousandths(v) * 10 < thousandths(f) * 9),
                ),
                _ => (None, None, None),
            };
            let vkm = n * self.length_km.get(*sensor).copied().unwrap_or(1.0);
            readings += ts.len();
            out.push(WindowResult {
                window_start: start,
                window_end: end,
                district: district.to_owned(),
                sensor: Some((*sensor).to_owned()),
                readings: ts.len() as u64,
                sensors: 1,
                metrics: WindowMetrics::Traffic(TrafficMetrics {
                    flow_vph: flow,
                    occupancy: occ,
                    speed_kmh: speed,
                    density_vpkm: density,
                    los,
                    congestion_index: ci,
                    congested_share: None,
                    travel_time_index: tti,
                }),
            });
            segs.push(Seg {
                flow,
                occ,
                speed_vehicles: n as u64,
                density,
                ci,
                tti,
                vkm,
                congested,
            });
        }
        let k = segs.len() as f64;
        let densities: Vec<f64> = segs.iter().filter_map(|s| s.density).collect();
        let density =
            (!densities.is_empty()).then(|| densities.iter().sum::<f64>() / densities.len() as f64);
        let ci_weight: u64 = segs
            .iter()
            .filter(|s| s.ci.is_some())
            .map(|s| s.speed_vehicles)
            .sum();
        let ci_sum: f64 = segs
            .iter()
            .filter_map(|s| s.ci.map(|c| c * s.speed_vehicles as f64))
            .sum();
        let judged: Vec<bool> = segs.iter().filter_map(|s| s.congested).collect();
        // District travel time index: Σ VKT·TTI / Σ VKT; its level grades 1 / TTI (in
        // millionths) on the urban-street scale.
        let timed: Vec<(f64, f64)> = segs
            .iter()
            .filter(|s| s.vkm > 0.0)
            .filter_map(|s| s.tti.map(|t| (s.vkm, t)))
            .collect();
        let vkt: f64 = timed.iter().map(|t| t.0).sum();
        let tti = (!timed.is_empty())
            .then(|| (timed.iter().map(|t| t.0 * t.1).sum::<f64>() / vkt).max(1.0));
        let district_los = tti.map(|t| urban_los_of((1e6 / t).round() as u128, 1_000_000));
        out.push(WindowResult {
            window_start: start,
            window_end: end,
            district: district.to_owned(),
            sensor: None,
            readings: readings as u64,
            sensors: segs.len() as u64,
            metrics: WindowMetrics::Traffic(TrafficMetrics {
                flow_vph: segs.iter().map(|s| s.flow).sum::<f64>() / k,
                occupancy: segs.iter().map(|s| s.occ).sum::<f64>() / k,
                speed_kmh: (all_n > 0).then(|| all_n as f64 / all_n_over_v),
                density_vpkm: density,
                los: district_los,
                congestion_index: (ci_weight > 0).then(|| ci_sum / ci_weight as f64),
                congested_share: (!judged.is_empty())
                    .then(|| judged.iter().filter(|c| **c).count() as f64 / judged.len() as f64),
                travel_time_index: tti,
            }),
        });
        out
    }

    fn air_windows(
        &self,
        hours: &Hours<'_>,
        in_window: &[&Reading],
        district: &str,
        start: u64,
        end: u64,
    ) -> Vec<WindowResult> {
        let stations: BTreeSet<&str> = in_window
            .iter()
            .filter(|r| r.district == district && r.kind() == Kind::Air)
            .map(|r| r.sensor.as_str())
            .collect();
        if stations.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut display = Conc::default();
        let mut per_station = Vec::new();
        let mut readings = 0;
        for s in &stations {
            let mine: Vec<&Reading> = in_window
                .iter()
                .copied()
                .filter(|r| r.sensor == *s && r.kind() == Kind::Air)
                .collect();
            let c = station_conc(hours, s, &mine, end);
            readings += mine.len();
            out.push(WindowResult {
                window_start: start,
                window_end: end,
                district: district.to_owned(),
                sensor: Some((*s).to_owned()),
                readings: mine.len() as u64,
                sensors: 1,
                metrics: WindowMetrics::Air(Box::new(c.metrics())),
            });
            display = display.max(&c);
            per_station.push((*s, c.subs()));
        }
        // The district: the highest station AQI (the first station on a tie; beyond the AQI
        // above a plain value), that station named; each sub-index the highest of the
        // stations; each concentration the highest.
        let mut worst: Option<(aqi::Aqi, &str)> = None;
        let mut subs = [SubIndex::Undefined; 6];
        for (station, st_subs) in &per_station {
            for (i, (_, sub)) in st_subs.iter().enumerate() {
                subs[i] = subs[i].max(*sub);
            }
            if let Some(a) = aqi::overall(st_subs) {
                if worst.is_none_or(|(w, _)| (a.value, a.beyond) > (w.value, w.beyond)) {
                    worst = Some((a, station));
                }
            }
        }
        let mut m = display.metrics_of(subs, worst.map(|(a, _)| a));
        m.aqi_sensor = worst.map(|(_, s)| s.to_owned());
        out.push(WindowResult {
            window_start: start,
            window_end: end,
            district: district.to_owned(),
            sensor: None,
            readings: readings as u64,
            sensors: stations.len() as u64,
            metrics: WindowMetrics::Air(Box::new(m)),
        });
        out
    }
}

/// `x` in thousandths, rounded: the resolution of every traffic threshold comparison.
fn thousandths(x: f64) -> u128 {
    (x * 1000.0).round() as u128
}

/// HCM 6th ed. Exhibit 12-15 (metric): k ≤ 7 A, ≤ 11 B, ≤ 16 C, ≤ 22 D, ≤ 28 E, else F, with
/// k = vehicles·3600 / (lane_seconds·v) compared as `vehicles·3600·1000 ≤ L·v_milli·lane_s`.
fn freeway_los_of(vehicles: u64, lane_seconds: u64, v: f64) -> Los {
    let q = u128::from(vehicles) * 3_600_000;
    let at = |limit: u128| q <= limit * thousandths(v) * u128::from(lane_seconds);
    if at(7) {
        Los::A
    } else if at(11) {
        Los::B
    } else if at(16) {
        Los::C
    } else if at(22) {
        Los::D
    } else if at(28) {
        Los::E
    } else {
        Los::F
    }
}

/// HCM 6th ed. Exhibit 16-8: speed over base free-flow speed > 80 % A, > 67 B, > 50 C, > 40 D,
/// > 30 E, else F.
fn urban_los_of(v: u128, f: u128) -> Los {
    let above = |pct: u128| v * 100 > pct * f;
    if above(80) {
        Los::A
    } else if above(67) {
        Los::B
    } else if above(50) {
        Los::C
    } else if above(40) {
        Los::D
    } else if above(30) {
        Los::E
    } else {
        Los::F
    }
}

/// A pollutant's value in a reading, in billionths of the decimal the float prints as (the
/// value the sender wrote), cut towards −∞ after nine fractional digits.
fn nanos(r: &Reading, p: Pollutant) -> Option<i64> {
    let Measurement::Air(a) = &r.data else {
        return None;
    };
    let v = match p {
        Pollutant::Pm25 => a.pm25_ugm3,
        Pollutant::Pm10 => a.pm10_ugm3,
        Pollutant::O3 => a.o3_ppb,
        Pollutant::No2 => a.no2_ppb,
        Pollutant::So2 => a.so2_ppb,
        Pollutant::Co => a.co_ppm,
    }?;
    let printed = format!("{}", v.abs());
    let (int, frac) = printed.split_once('.').unwrap_or((&printed, ""));
    let nine: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    let magnitude = int.parse::<i64>().ok()? * 1_000_000_000 + nine.parse::<i64>().ok()?;
    let cut = frac.len() > 9 && frac[9..].chars().any(|c| c != '0');
    Some(if v < 0.0 {
        -magnitude - i64::from(cut)
    } else {
        magnitude
    })
}

fn floor_mean(values: &[i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let sum: i128 = values.iter().map(|v| i128::from(*v)).sum();
    Some(sum.div_euclid(values.len() as i128) as i64)
}

/// The valid mean of `p` at `station` over the clock hour starting at `start`, billionths: the
/// readings' intervals, clipped to the hour and merged, must cover 45 minutes.
fn hourly(hours: &Hours<'_>, station: &str, p: Pollutant, start: u64) -> Option<i64> {
    let mut values = Vec::new();
    let mut spans = Vec::new();
    for (r, interval) in hours.get(&(station, start)).into_iter().flatten() {
        if let Some(v) = nanos(r, p) {
            values.push(v);
            spans.push((r.ts.saturating_sub(*interval).max(start), r.ts));
        }
    }
    spans.sort();
    let (mut covered, mut reach) = (0, start);
    for (from, to) in spans {
        let from = from.max(reach);
        if to > from {
            covered += to - from;
            reach = to;
        }
    }
    if covered >= 45 * 60_000 {
        floor_mean(&values)
    } else {
        None
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Conc {
    pm25: Option<i64>,
    pm10: Option<i64>,
    hour: [Option<i64>; 6],
    pm25_nowcast: Option<i64>,
    pm10_nowcast: Option<i64>,
    pm25_24h: Option<i64>,
    pm10_24h: Option<i64>,
    so2_24h: Option<i64>,
    o3_8h: Option<i64>,
    co_8h: Option<i64>,
}

const ALL: [Pollutant; 6] = [
    Pollutant::Pm25,
    Pollutant::Pm10,
    Pollutant::O3,
    Pollutant::No2,
    Pollutant::So2,
    Pollutant::Co,
];

fn station_conc(hours: &Hours<'_>, station: &str, mine: &[&Reading], end: u64) -> Conc {
    let h0 = end - end % HOUR;
    let hour = |age: u64, p: Pollutant| -> Option<i64> {
        let start = h0.checked_sub((age + 1) * HOUR)?;
        hourly(hours, station, p, start)
    };
    let window = |p: Pollutant| {
        let v: Vec<i64> = mine.iter().filter_map(|r| nanos(r, p)).collect();
        floor_mean(&v)
    };
    let nc = |p: Pollutant| {
        let mut hours = [None; 12];
        for (age, h) in hours.iter_mut().enumerate() {
            *h = hour(age as u64, p).map(Fixed::from_nanos);
        }
        nowcast(p, &hours).map(|f| f.nanos())
    };
    let mean_if = |p: Pollutant, n: u64, need: usize| {
        let v: Vec<i64> = (0..n).filter_map(|age| hour(age, p)).collect();
        if v.len() >= need {
            floor_mean(&v)
        } else {
            None
        }
    };
    Conc {
        pm25: window(Pollutant::Pm25),
        pm10: window(Pollutant::Pm10),
        hour: ALL.map(|p| hour(0, p)),
        pm25_nowcast: nc(Pollutant::Pm25),
        pm10_nowcast: nc(Pollutant::Pm10),
        pm25_24h: mean_if(Pollutant::Pm25, 24, 18),
        pm10_24h: mean_if(Pollutant::Pm10, 24, 18),
        so2_24h: mean_if(Pollutant::So2, 24, 18),
        o3_8h: mean_if(Pollutant::O3, 8, 6),
        co_8h: mean_if(Pollutant::Co, 8, 6),
    }
}

impl Conc {
    fn max(&self, o: &Conc) -> Conc {
        Conc {
            pm25: self.pm25.max(o.pm25),
            pm10: self.pm10.max(o.pm10),
            hour: std::array::from_fn(|i| self.hour[i].max(o.hour[i])),
            pm25_nowcast: self.pm25_nowcast.max(o.pm25_nowcast),
            pm10_nowcast: self.pm10_nowcast.max(o.pm10_nowcast),
            pm25_24h: self.pm25_24h.max(o.pm25_24h),
            pm10_24h: self.pm10_24h.max(o.pm10_24h),
            so2_24h: self.so2_24h.max(o.so2_24h),
            o3_8h: self.o3_8h.max(o.o3_8h),
            co_8h: self.co_8h.max(o.co_8h),
        }
    }

    /// Each pollutant's sub-index, in `ALL` order.
    fn subs(&self) -> [(Pollutant, SubIndex); 6] {
        let lookup = |p, avg, v: Option<i64>| {
            v.map_or(SubIndex::Undefined, |n| {
                aqi::sub_index(p, avg, Fixed::from_nanos(n))
            })
        };
        let o3_8 = lookup(Pollutant::O3, Averaging::EightHours, self.o3_8h);
        let o3_1 = lookup(Pollutant::O3, Averaging::OneHour, self.hour[2]);
        // SO2: the 1-h table up to 304 ppb; above, the 24-h table from 305 ppb; a 1-h value
        // above 304 without a 24-h value in its table gives 200.
        let so2_1 = lookup(Pollutant::So2, Averaging::OneHour, self.hour[4]);
        let so2_24 = lookup(Pollutant::So2, Averaging::TwentyFourHours, self.so2_24h);
        let so2 = match (so2_1, self.hour[4], so2_24) {
            (SubIndex::Undefined, Some(_), SubIndex::Undefined) => SubIndex::Value(200),
            (SubIndex::Undefined, _, day) => day,
            (one, _, _) => one,
        };
        [
            (
                Pollutant::Pm25,
                lookup(
                    Pollutant::Pm25,
                    Averaging::TwentyFourHours,
                    self.pm25_nowcast,
                ),
            ),
            (
                Pollutant::Pm10,
                lookup(
                    Pollutant::Pm10,
                    Averaging::TwentyFourHours,
                    self.pm10_nowcast,
                ),
            ),
            (Pollutant::O3, o3_8.max(o3_1)),
            (
                Pollutant::No2,
                lookup(Pollutant::No2, Averaging::OneHour, self.hour[3]),
            ),
            (Pollutant::So2, so2),
            (
                Pollutant::Co,
                lookup(Pollutant::Co, Averaging::EightHours, self.co_8h),
            ),
        ]
    }

    /// A station's figures.
    fn metrics(&self) -> AirMetrics {
        let subs = self.subs();
        self.metrics_of(subs.map(|(_, s)| s), aqi::overall(&subs))
    }

    /// The figures with these sub-indices and overall AQI.
    fn metrics_of(&self, subs: [SubIndex; 6], overall: Option<aqi::Aqi>) -> AirMetrics {
        let fx = |v: Option<i64>| v.map(Fixed::from_nanos);
        let as_int = |s: SubIndex| match s {
            SubIndex::Value(v) | SubIndex::Beyond(v) => Some(v),
            SubIndex::Undefined => None,
        };
        let bands: Vec<_> = ALL[..5]
            .iter()
            .enumerate()
            .filter_map(|(i, p)| {
                fx(self.hour[i])
                    .and_then(|c| eaqi::band(*p, c))
                    .map(|b| (*p, b))
            })
            .collect();
        let eu = eaqi::overall(&bands);
        let f = |v: Option<i64>| v.map(|n| n as f64 / 1e9);
        AirMetrics {
            aqi: overall.map(|a| a.value),
            category: overall.map(|a| a.category),
            dominant: overall.map(|a| a.dominant),
            aqi_pm25: as_int(subs[0]),
            aqi_pm10: as_int(subs[1]),
            aqi_o3: as_int(subs[2]),
            aqi_no2: as_int(subs[3]),
            aqi_so2: as_int(subs[4]),
            aqi_co: as_int(subs[5]),
            pm25_ugm3: f(self.pm25),
            pm25_nowcast_ugm3: f(self.pm25_nowcast),
            pm25_24h_ugm3: f(self.pm25_24h),
            pm10_ugm3: f(self.pm10),
            pm10_nowcast_ugm3: f(self.pm10_nowcast),
            pm10_24h_ugm3: f(self.pm10_24h),
            o3_1h_ppb: f(self.hour[2]),
            o3_8h_ppb: f(self.o3_8h),
            no2_1h_ppb: f(self.hour[3]),
            so2_1h_ppb: f(self.hour[4]),
            co_8h_ppm: f(self.co_8h),
            eaqi: eu.map(|e| e.band),
            eaqi_dominant: eu.map(|e| e.dominant),
            beyond_aqi: overall.and_then(|a| a.beyond.then_some(true)),
            aqi_sensor: None,
            so2_24h_ppb: f(self.so2_24h),
        }
    }
}

fn close(a: f64, b: f64) -> bool {
    a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn close_opt(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => close(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// Differences between an expected and an actual window result; empty when they agree.
/// Integers, indices, categories and concentrations must be equal; traffic figures (float
/// sums whose order differs) within 10⁻⁹ relative; a level of service may differ only when the
/// density sits within 10⁻⁹ of a threshold.
pub fn differences(want: &WindowResult, got: &WindowResult) -> Vec<String> {
    let mut d = Vec::new();
    let id = want.msg_id();
    if (
        want.window_start,
        want.window_end,
        &want.district,
        &want.sensor,
    ) != (got.window_start, got.window_end, &got.district, &got.sensor)
    {
        d.push(format!("{id}: identity differs: {got:?}"));
        return d;
    }
    if (want.readings, want.sensors) != (got.readings, got.sensors) {
        d.push(format!(
            "{id}: readings/sensors want {}/{} got {}/{}",
            want.readings, want.sensors, got.readings, got.sensors
        ));
    }
    match (&want.metrics, &got.metrics) {
        (WindowMetrics::Traffic(w), WindowMetrics::Traffic(g)) => {
            let floats = [
                ("flow_vph", Some(w.flow_vph), Some(g.flow_vph)),
                ("occupancy", Some(w.occupancy), Some(g.occupancy)),
                ("speed_kmh", w.speed_kmh, g.speed_kmh),
                ("density_vpkm", w.density_vpkm, g.density_vpkm),
                ("congestion_index", w.congestion_index, g.congestion_index),
                ("congested_share", w.congested_share, g.congested_share),
            ];
            for (name, a, b) in floats {
                if !close_opt(a, b) {
                    d.push(format!("{id}: {name} want {a:?} got {b:?}"));
                }
            }
            let near_edge = w.density_vpkm.is_some_and(|k| {
                [7.0, 11.0, 16.0, 22.0, 28.0]
                    .iter()
                    .any(|e| (k - e).abs() <= 1e-9 * e)
            });
            if w.los != g.los && !near_edge {
                d.push(format!("{id}: los want {:?} got {:?}", w.los, g.los));
            }
        }
        (WindowMetrics::Air(w), WindowMetrics::Air(g)) => {
            if w != g {
                d.push(format!(
                    "{id}: air figures differ:\n  want {w:?}\n  got  {g:?}"
                ));
            }
        }
        _ => d.push(format!("{id}: kind differs")),
    }
    d
}

/// Asserts that `got` holds exactly the windows of `want`, each agreeing.
pub fn assert_same_windows(
    want: &BTreeMap<String, WindowResult>,
    got: &BTreeMap<String, WindowResult>,
) {
    let missing: Vec<&String> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&String> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let mut diffs = Vec::new();
    for (k, w) in want {
        if let Some(g) = got.get(k) {
            diffs.extend(differences(w, g));
        }
    }
    assert!(
        missing.is_empty() && extra.is_empty() && diffs.is_empty(),
        "{} windows expected, {} got; missing {:?}; extra {:?}; {} differ:\n{}",
        want.len(),
        got.len(),
        &missing[..missing.len().min(10)],
        &extra[..extra.len().min(10)],
        diffs.len(),
        diffs[..diffs.len().min(10)].join("\n")
    );
}
