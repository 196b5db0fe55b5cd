//! Loop-detector traffic engineering: flow, occupancy, space-mean speed, density, level of
//! service, travel time index and congestion, for one detector ([`TrafficAccumulator`]) and for a
//! district ([`DistrictTrafficAccumulator`]).
//!
//! Definitions:
//! - flow `q = Σ count × 3600 / Σ interval_s` (veh/h) over the window's intervals;
//! - occupancy: the time-weighted mean of the intervals' occupancies (fraction 0..1);
//! - space-mean speed: the harmonic mean of the interval speeds weighted by count,
//!   `v_s = Σ n / Σ (n / v)`, over intervals that counted vehicles and reported a speed. The
//!   relation `q = k·v` holds for the space-mean speed, the harmonic mean of spot speeds (HCM
//!   6th ed., ch. 4); over interval speeds it is exact when each interval's speed is the harmonic
//!   mean of its vehicles, and the standard estimate otherwise;
//! - density per lane `k = q_lane / v_s` (veh/km/ln), with `q_lane = Σ count × 3600 /
//!   Σ (interval_s × lanes)`;
//! - level of service depends on the segment's [`Facility`] (HCM 6th edition):
//!   - **urban streets**, automobile mode, by travel speed as a percentage of base free-flow
//!     speed (HCM 6th ed., Exhibit 16-8): A > 80, B > 67–80, C > 50–67, D > 40–50, E > 30–40,
//!     F ≤ 30, and F whenever the volume-to-capacity ratio exceeds 1.0. Without a free-flow
//!     speed (registry or learned) an urban street has no level of service;
//!   - **freeways** (basic freeway segments, HCM 6th ed., Exhibit 12-15) by density: A ≤ 11,
//!     B ≤ 18, C ≤ 26, D ≤ 35, E ≤ 45 pc/mi/ln, F above, and F whenever demand exceeds capacity;
//!     in metric units (the HCM 2010 metric edition's rounding of the same limits) A ≤ 7,
//!     B ≤ 11, C ≤ 16, D ≤ 22, E ≤ 28 pc/km/ln.
//!
//!   Vehicles are taken as passenger cars: the detectors do not classify vehicles, so no
//!   heavy-vehicle adjustment is applied;
//! - travel time index `TTI = v_free / v_s`, at least 1 (a segment faster than its free-flow
//!   speed is not "early"; FHWA / TTI Urban Mobility Report definition);
//! - congestion index `1 − v_s / v_free`, clamped to `[0, 1]`; a segment is congested when
//!   `v_s < 0.9 v_free` (FHWA Urban Congestion Report: congested when travel speed falls below
//!   90 % of free-flow speed).
//!
//! **Exact comparisons.** Every threshold (the 90 % congestion verdict, the urban-street
//! percentages, the freeway densities, volume over capacity) is decided in integer arithmetic, so
//! no float rounding moves a value across a limit: speeds, free-flow speeds and capacities are
//! taken at a resolution of 0.001 (km/h, veh/h/ln), rounded to the nearest, and compared as
//! integers with the limits' own integer ratios (`10·v < 9·v_free`, `100·v > 80·v_free`,
//! `count·3600·1000 ≤ 7·v·lane_seconds`, …); counts and seconds are already integers. The
//! resolution is far below the detectors' (0.1 km/h) and far above the ~10⁻¹⁴ km/h error of a
//! harmonic mean, so a window whose intervals all report 63.0 km/h on a 70 km/h street is at
//! exactly 90 %, whatever `Σ n / Σ (n/v)` rounds to.
//!
//! Counts and seconds are summed as integers; `Σ n / v` and the occupancy sum are `f64`, whose
//! relative error (~10⁻¹⁶ per addition) is far below the detectors' own.

use citypulse_schema::Los;
use std::fmt;

/// One counting interval of a loop detector (the traffic fields of a reading).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    /// Vehicles counted.
    pub count: u32,
    /// Interval length, seconds.
    pub interval_s: u32,
    /// Fraction of the interval the loop was occupied, 0..1.
    pub occupancy: f64,
    /// Mean speed of the counted vehicles, km/h; ignored when `count` is 0.
    pub speed_kmh: Option<f64>,
    /// Lanes the detector covers.
    pub lanes: u32,
}

impl From<&citypulse_schema::Traffic> for Interval {
    fn from(t: &citypulse_schema::Traffic) -> Interval {
        Interval {
            count: t.count,
            interval_s: t.interval_s,
            occupancy: t.occupancy,
            speed_kmh: t.speed_kmh,
            lanes: t.lanes,
        }
    }
}

/// Why an [`Interval`] was not accumulated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvalidInterval {
    /// `interval_s` is 0.
    ZeroDuration,
    /// `lanes` is 0.
    ZeroLanes,
    /// Occupancy is not a number in `[0, 1]`.
    Occupancy,
    /// Vehicles were counted with a speed that is not a positive number.
    Speed,
}

impl InvalidInterval {
    /// A bounded label for metrics.
    pub const fn reason(self) -> &'static str {
        match self {
            InvalidInterval::ZeroDuration => "zero_duration",
            InvalidInterval::ZeroLanes => "zero_lanes",
            InvalidInterval::Occupancy => "occupancy_out_of_range",
            InvalidInterval::Speed => "speed_not_positive",
        }
    }
}

impl fmt::Display for InvalidInterval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InvalidInterval::ZeroDuration => "counting interval of 0 s",
            InvalidInterval::ZeroLanes => "detector covering 0 lanes",
            InvalidInterval::Occupancy => "occupancy outside 0..1",
            InvalidInterval::Speed => "vehicles counted with a speed that is not positive",
        })
    }
}

impl std::error::Error for InvalidInterval {}

/// The HCM facility type of a segment: it decides how its level of service is graded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Facility {
    /// An urban street (signalised arterial, collector, local street): LOS by travel speed as a
    /// percentage of base free-flow speed (HCM 6th ed., Exhibit 16-8). The default.
    #[default]
    UrbanStreet,
    /// A freeway or expressway (uninterrupted flow): LOS by density (HCM 6th ed., Exhibit 12-15).
    Freeway,
}

impl Facility {
    /// Free-flow speed from which a segment whose city file names no facility is taken as a
    /// freeway, km/h: the HCM's basic freeway segments have free-flow speeds of 55–75 mi/h
    /// (≈ 90–120 km/h, HCM 6th ed., ch. 12), urban streets speed limits up to 55 mi/h.
    pub const FREEWAY_FROM_KMH: f64 = 90.0;

    /// The facility named in a city file: `urban_street`, or `freeway` / `expressway`.
    pub fn parse(name: &str) -> Option<Facility> {
        match name {
            "urban_street" => Some(Facility::UrbanStreet),
            "freeway" | "expressway" => Some(Facility::Freeway),
            _ => None,
        }
    }

    /// The default for a segment without an explicit facility: a freeway at a free-flow speed of
    /// [`FREEWAY_FROM_KMH`](Self::FREEWAY_FROM_KMH) or more, an urban street otherwise (and when
    /// the free-flow speed is unknown).
    pub fn from_free_flow(free_flow_kmh: Option<f64>) -> Facility {
        match free_flow_kmh {
            Some(v) if v >= Facility::FREEWAY_FROM_KMH => Facility::Freeway,
            _ => Facility::UrbanStreet,
        }
    }
}

/// What the registry knows about a segment. Values that are not positive numbers count as
/// unknown.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SegmentParams {
    /// Free-flow speed, km/h.
    pub free_flow_kmh: Option<f64>,
    /// Capacity per lane, veh/h/ln (HCM: pc/h/ln).
    pub capacity_vphpl: Option<f64>,
    /// How level of service is graded.
    pub facility: Facility,
    /// Segment length, km: the kilometres each counted vehicle travels on it, for the
    /// vehicle-kilometre weights of district figures. Unknown counts as 1 km (every segment then
    /// weighs by its vehicles).
    pub length_km: Option<f64>,
}

/// Upper density limits, pc/km/ln, of LOS A to E (HCM 6th ed., Exhibit 12-15, metric).
const LOS_DENSITY_LIMITS: [(u64, Los); 5] = [
    (7, Los::A),
    (11, Los::B),
    (16, Los::C),
    (22, Los::D),
    (28, Los::E),
];

/// Lower limits (exclusive), percent of base free-flow speed, of LOS A to E on urban streets
/// (HCM 6th ed., Exhibit 16-8); F at or below 30 %.
const LOS_SPEED_PERCENT: [(u64, Los); 5] = [
    (80, Los::A),
    (67, Los::B),
    (50, Los::C),
    (40, Los::D),
    (30, Los::E),
];

/// FHWA: congested below 9/10 of free-flow speed.
const CONGESTED_BELOW: (u64, u64) = (9, 10);

/// Units of the exact comparisons per unit of speed or capacity (0.001 resolution).
const MILLI: f64 = 1000.0;

/// `x` in thousandths, rounded to the nearest; `None` unless a positive finite number. Values
/// above ~10¹⁵ saturate, far beyond any speed or capacity.
fn milli(x: f64) -> Option<u64> {
    (x.is_finite() && x > 0.0).then(|| (x * MILLI).round() as u64)
}

/// The level of service of a density in veh/km/ln on a freeway (a limit belongs to the better
/// level: 7 is A).
pub fn los_of_density(density_vpkm: f64) -> Los {
    LOS_DENSITY_LIMITS
        .iter()
        .find(|(limit, _)| density_vpkm <= *limit as f64)
        .map_or(Los::F, |&(_, los)| los)
}

/// The urban-street level of service of a travel speed ratio `num / den` (HCM 6th ed.,
/// Exhibit 16-8), decided exactly: A when `100·num > 80·den`, … , F when `100·num ≤ 30·den`.
/// `None` when `den` is 0.
pub fn los_of_speed_ratio(num: u64, den: u64) -> Option<Los> {
    if den == 0 {
        return None;
    }
    let pct = u128::from(num) * 100;
    Some(
        LOS_SPEED_PERCENT
            .iter()
            .find(|(limit, _)| pct > u128::from(*limit) * u128::from(den))
            .map_or(Los::F, |&(_, los)| los),
    )
}

/// The urban-street level of service of a speed at a base free-flow speed, both km/h, at the
/// 0.001 km/h resolution of the exact comparisons.
pub fn urban_los(speed_kmh: f64, free_flow_kmh: f64) -> Option<Los> {
    los_of_speed_ratio(milli(speed_kmh)?, milli(free_flow_kmh)?)
}

/// Whether a speed is below 90 % of the free-flow speed (both km/h), exactly at 0.001 km/h.
pub fn is_congested(speed_kmh: f64, free_flow_kmh: f64) -> Option<bool> {
    let (v, vf) = (milli(speed_kmh)?, milli(free_flow_kmh)?);
    let (num, den) = CONGESTED_BELOW;
    Some(u128::from(v) * u128::from(den) < u128::from(vf) * u128::from(num))
}

fn known(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite() && *v > 0.0)
}

/// One detector's figures over a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrafficFigures {
    /// Vehicles counted.
    pub vehicles: u64,
    /// Vehicles whose speed was reported: the weight of `speed_kmh`.
    pub speed_vehicles: u64,
    /// Flow over all lanes, veh/h.
    pub flow_vph: f64,
    /// Time-weighted mean occupancy, 0..1.
    pub occupancy: f64,
    /// Space-mean speed, km/h; `None` without a reported speed.
    pub speed_kmh: Option<f64>,
    /// Density per lane, veh/km/ln. 0 when no vehicle passed and the loop stayed free; `None`
    /// when vehicles passed without a speed, or none passed but the loop was occupied (a
    /// standing queue counts nothing, and is not free flow).
    pub density_vpkm: Option<f64>,
    /// HCM level of service for the segment's facility (see the module docs).
    pub los: Option<Los>,
    /// `1 − v / v_free` in `[0, 1]`; `None` without speed or free-flow speed.
    pub congestion_index: Option<f64>,
    /// `max(v_free / v, 1)`; `None` without speed or free-flow speed.
    pub travel_time_index: Option<f64>,
    /// Vehicle-kilometres of the speed-reporting vehicles (`speed_vehicles × length`): the
    /// weight of this segment's travel time index in its district.
    pub vehicle_km: f64,
    /// Speed below 90 % of free-flow speed; `None` without speed or free-flow speed.
    pub congested: Option<bool>,
}

/// Sums one detector's intervals over a window; [`figures`](Self::figures) derives the rest.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrafficAccumulator {
    vehicles: u64,
    seconds: u64,
    lane_seconds: u64,
    occupied_seconds: f64,
    speed_vehicles: u64,
    vehicles_per_kmh: f64,
}

impl TrafficAccumulator {
    /// An empty window.
    pub fn new() -> TrafficAccumulator {
        TrafficAccumulator::default()
    }

    /// Adds one interval; an invalid interval leaves the sums unchanged.
    pub fn add(&mut self, iv: &Interval) -> Result<(), InvalidInterval> {
        if iv.interval_s == 0 {
            return Err(InvalidInterval::ZeroDuration);
        }
        if iv.lanes == 0 {
            return Err(InvalidInterval::ZeroLanes);
        }
        if !(0.0..=1.0).contains(&iv.occupancy) {
            return Err(InvalidInterval::Occupancy);
        }
        let speed = match (iv.count, iv.speed_kmh) {
            (0, _) | (_, None) => None,
            (_, Some(v)) if v.is_finite() && v > 0.0 => Some(v),
            (_, Some(_)) => return Err(InvalidInterval::Speed),
        };
        let seconds = u64::from(iv.interval_s);
        self.vehicles += u64::from(iv.count);
        self.seconds += seconds;
        self.lane_seconds += seconds * u64::from(iv.lanes);
        self.occupied_seconds += iv.occupancy * seconds as f64;
        if let Some(v) = speed {
            self.speed_vehicles += u64::from(iv.count);
            self.vehicles_per_kmh += f64::from(iv.count) / v;
        }
        Ok(())
    }

    /// Whether no interval was added.
    pub fn is_empty(&self) -> bool {
        self.seconds == 0
    }

    /// Whether flow per lane exceeds `capacity_vphpl`, exactly: `count·3600 / lane_seconds >
    /// capacity`, with the capacity at 0.001 veh/h/ln.
    fn over_capacity(&self, capacity_vphpl: Option<f64>) -> bool {
        let Some(cap) = capacity_vphpl.and_then(milli) else {
            return false;
        };
        u128::from(self.vehicles) * 3_600_000 > u128::from(cap) * u128::from(self.lane_seconds)
    }

    /// The freeway level of service, exactly: `k ≤ L ⇔ count·3600 ≤ L·v·lane_seconds`.
    fn freeway_los(&self, speed_kmh: Option<f64>) -> Option<Los> {
        if self.vehicles == 0 {
            return self.empty_road().then_some(Los::A);
        }
        let v = milli(speed_kmh?)?;
        let flow = u128::from(self.vehicles) * 3_600_000;
        let room = |limit: u64| u128::from(limit) * u128::from(v) * u128::from(self.lane_seconds);
        Some(
            LOS_DENSITY_LIMITS
                .iter()
                .find(|(limit, _)| flow <= room(*limit))
                .map_or(Los::F, |&(_, los)| los),
        )
    }

    /// No vehicle passed and the loop stayed free.
    fn empty_road(&self) -> bool {
        self.vehicles == 0 && self.occupied_seconds == 0.0
    }

    /// The level of service for `segment`'s facility (see the module docs).
    fn los(&self, segment: &SegmentParams, speed_kmh: Option<f64>) -> Option<Los> {
        if self.over_capacity(segment.capacity_vphpl) {
            return Some(Los::F);
        }
        match segment.facility {
            Facility::Freeway => self.freeway_los(speed_kmh),
            Facility::UrbanStreet => match speed_kmh {
                Some(v) => urban_los(v, known(segment.free_flow_kmh)?),
                None => self.empty_road().then_some(Los::A),
            },
        }
    }

    /// The window's figures; `None` when no interval was added.
    pub fn figures(&self, segment: &SegmentParams) -> Option<TrafficFigures> {
        if self.seconds == 0 || self.lane_seconds == 0 {
            return None;
        }
        let flow_vph = self.vehicles as f64 * 3600.0 / self.seconds as f64;
        let flow_vphpl = self.vehicles as f64 * 3600.0 / self.lane_seconds as f64;
        let occupancy = self.occupied_seconds / self.seconds as f64;
        let speed_kmh =
            (self.speed_vehicles > 0).then(|| self.speed_vehicles as f64 / self.vehicles_per_kmh);
        let density_vpkm = match (self.vehicles, speed_kmh) {
            (0, _) => self.empty_road().then_some(0.0),
            (_, Some(v)) => Some(flow_vphpl / v),
            (_, None) => None,
        };
        let free_flow = known(segment.free_flow_kmh);
        let (congestion_index, travel_time_index, congested) = match (speed_kmh, free_flow) {
            (Some(v), Some(vf)) => (
                Some((1.0 - v / vf).clamp(0.0, 1.0)),
                Some((vf / v).max(1.0)),
                is_congested(v, vf),
            ),
            _ => (None, None, None),
        };
        let length_km = known(segment.length_km).unwrap_or(1.0);
        Some(TrafficFigures {
            vehicles: self.vehicles,
            speed_vehicles: self.speed_vehicles,
            flow_vph,
            occupancy,
            speed_kmh,
            density_vpkm,
            los: self.los(segment, speed_kmh),
            congestion_index,
            travel_time_index,
            vehicle_km: self.speed_vehicles as f64 * length_km,
            congested,
        })
    }
}

/// A district's figures over a window, aggregated from its segments' figures.
///
/// The district's **travel time index** is the vehicle-kilometre-weighted mean of its segments'
/// indices, `TTI_d = Σ VKT_i·TTI_i / Σ VKT_i` (VKT_i = speed-reporting vehicles × segment
/// length): the district's actual travel time over what it would be at free flow, when every
/// segment's kilometres are driven at its own free-flow speed. Its **travel speed ratio** is
/// `1 / TTI_d = Σ VKT_i / Σ (VKT_i / r_i)`, the VKT-weighted harmonic mean of the segments'
/// ratios `r_i = min(v_i / v_free,i, 1)`, and its **level of service** grades that ratio with
/// the urban-street thresholds (HCM 6th ed., Exhibit 16-8), whatever the segments' facilities:
/// a district is a network, not a freeway, and a mean of densities says nothing about how fast
/// its traffic moves. The ratio is taken in millionths (rounded) and compared exactly.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistrictTrafficFigures {
    /// Segments aggregated.
    pub segments: u32,
    /// Mean flow per segment, veh/h. Not the sum: one vehicle crosses several detectors, so a
    /// sum counts it several times and grows with the number of detectors.
    pub flow_vph: f64,
    /// Mean of the segments' occupancies.
    pub occupancy: f64,
    /// Harmonic mean of the segments' speeds weighted by their speed-reporting vehicles: the
    /// space-mean speed of all those vehicles together.
    pub speed_kmh: Option<f64>,
    /// Mean of the segments' densities, veh/km/ln.
    pub density_vpkm: Option<f64>,
    /// Urban-street level of service of the district's travel speed ratio (see above).
    pub los: Option<Los>,
    /// Mean of the segments' congestion indices weighted by their speed-reporting vehicles.
    pub congestion_index: Option<f64>,
    /// VKT-weighted mean of the segments' travel time indices (see above).
    pub travel_time_index: Option<f64>,
    /// Share of the segments with a verdict that are congested, 0..1.
    pub congested_share: Option<f64>,
}

/// Aggregates segment [`TrafficFigures`] of one window into [`DistrictTrafficFigures`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DistrictTrafficAccumulator {
    segments: u32,
    flow_sum: f64,
    occupancy_sum: f64,
    speed_vehicles: u64,
    vehicles_per_kmh: f64,
    density_sum: f64,
    densities: u32,
    congestion_weighted: f64,
    congestion_weight: u64,
    tti_weighted: f64,
    tti_weight: f64,
    congested: u32,
    judged: u32,
}

impl DistrictTrafficAccumulator {
    /// An empty district window.
    pub fn new() -> DistrictTrafficAccumulator {
        DistrictTrafficAccumulator::default()
    }

    /// Adds one segment's figures.
    pub fn add(&mut self, f: &TrafficFigures) {
        self.segments += 1;
        self.flow_sum += f.flow_vph;
        self.occupancy_sum += f.occupancy;
        if let Some(v) = f.speed_kmh.filter(|_| f.speed_vehicles > 0) {
            // n / v_segment = the segment's own Σ n/v: pooling segments equals pooling intervals.
            self.speed_vehicles += f.speed_vehicles;
            self.vehicles_per_kmh += f.speed_vehicles as f64 / v;
        }
        if let Some(k) = f.density_vpkm {
            self.density_sum += k;
            self.densities += 1;
        }
        if let Some(ci) = f.congestion_index {
            self.congestion_weighted += ci * f.speed_vehicles as f64;
            self.congestion_weight += f.speed_vehicles;
        }
        if let Some(tti) = f.travel_time_index.filter(|_| f.vehicle_km > 0.0) {
            self.tti_weighted += tti * f.vehicle_km;
            self.tti_weight += f.vehicle_km;
        }
        if let Some(c) = f.congested {
            self.judged += 1;
            self.congested += u32::from(c);
        }
    }

    /// The district's figures; `None` when no segment was added.
    pub fn figures(&self) -> Option<DistrictTrafficFigures> {
        if self.segments == 0 {
            return None;
        }
        let n = f64::from(self.segments);
        let density_vpkm =
            (self.densities > 0).then(|| self.density_sum / f64::from(self.densities));
        let travel_time_index =
            (self.tti_weight > 0.0).then(|| (self.tti_weighted / self.tti_weight).max(1.0));
        let los = travel_time_index.and_then(|tti| {
            // ratio = 1 / TTI, in millionths.
            let ppm = (1e6 / tti).round() as u64;
            los_of_speed_ratio(ppm, 1_000_000)
        });
        Some(DistrictTrafficFigures {
            segments: self.segments,
            flow_vph: self.flow_sum / n,
            occupancy: self.occupancy_sum / n,
            speed_kmh: (self.speed_vehicles > 0)
                .then(|| self.speed_vehicles as f64 / self.vehicles_per_kmh),
            density_vpkm,
            los,
            congestion_index: (self.congestion_weight > 0)
                .then(|| self.congestion_weighted / self.congestion_weight as f64),
            travel_time_index,
            congested_share: (self.judged > 0)
                .then(|| f64::from(self.congested) / f64::from(self.judged)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn iv(count: u32, interval_s: u32, occupancy: f64, speed: Option<f64>, lanes: u32) -> Interval {
        Interval {
            count,
            interval_s,
            occupancy,
            speed_kmh: speed,
            lanes,
        }
    }

    fn window(intervals: &[Interval]) -> TrafficAccumulator {
        let mut acc = TrafficAccumulator::new();
        for i in intervals {
            acc.add(i).expect("valid interval");
        }
        acc
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    fn freeway() -> SegmentParams {
        SegmentParams {
            facility: Facility::Freeway,
            ..SegmentParams::default()
        }
    }

    fn urban(free_flow_kmh: f64) -> SegmentParams {
        SegmentParams {
            free_flow_kmh: Some(free_flow_kmh),
            ..SegmentParams::default()
        }
    }

    #[test]
    fn space_mean_speed_is_the_harmonic_mean_not_the_arithmetic() {
        // 10 veh at 100 km/h and 10 at 50: 20 / (10/100 + 10/50) = 20 / 0.3 = 66.67, not 75.
        let acc = window(&[
            iv(10, 30, 0.1, Some(100.0), 1),
            iv(10, 30, 0.1, Some(50.0), 1),
        ]);
        let f = acc.figures(&SegmentParams::default()).expect("non-empty");
        let v = f.speed_kmh.expect("speed");
        assert!(close(v, 200.0 / 3.0), "{v}");
        assert_eq!(f.speed_vehicles, 20);
    }

    #[test]
    fn flow_sums_counts_over_summed_intervals() {
        // (10 + 0 + 5) × 3600 / 90 = 600 veh/h
        let acc = window(&[
            iv(10, 30, 0.1, Some(60.0), 2),
            iv(0, 30, 0.0, None, 2),
            iv(5, 30, 0.05, Some(60.0), 2),
        ]);
        let f = acc.figures(&freeway()).expect("non-empty");
        assert!(close(f.flow_vph, 600.0));
        assert_eq!(f.vehicles, 15);
        // Per lane 300 veh/h/ln at 60 km/h: 5 veh/km/ln → A on a freeway.
        assert!(close(f.density_vpkm.expect("density"), 5.0));
        assert_eq!(f.los, Some(Los::A));
    }

    #[test]
    fn occupancy_is_time_weighted() {
        // (0.1 × 30 + 0.4 × 60) / 90 = 27 / 90 = 0.3
        let acc = window(&[iv(3, 30, 0.1, Some(50.0), 1), iv(9, 60, 0.4, Some(40.0), 1)]);
        let f = acc.figures(&SegmentParams::default()).expect("non-empty");
        assert!(close(f.occupancy, 0.3), "{}", f.occupancy);
    }

    #[test]
    fn density_is_flow_per_lane_over_speed() {
        // 20 veh in 60 s on 2 lanes = 600 veh/h/ln; at 40 km/h → 15 veh/km/ln → C.
        let acc = window(&[iv(20, 60, 0.2, Some(40.0), 2)]);
        let f = acc.figures(&freeway()).expect("non-empty");
        assert!(close(f.flow_vph, 1200.0));
        assert!(close(f.density_vpkm.expect("density"), 15.0));
        assert_eq!(f.los, Some(Los::C));
        // The same window on an urban street without a free-flow speed has no level of service.
        let f = acc.figures(&SegmentParams::default()).expect("non-empty");
        assert_eq!(f.los, None);
    }

    #[test]
    fn los_at_every_density_edge() {
        let cases = [
            (0.0, Los::A),
            (7.0, Los::A),
            (7.0001, Los::B),
            (11.0, Los::B),
            (11.0001, Los::C),
            (16.0, Los::C),
            (16.0001, Los::D),
            (22.0, Los::D),
            (22.0001, Los::E),
            (28.0, Los::E),
            (28.01, Los::F),
            (150.0, Los::F),
        ];
        for (k, los) in cases {
            assert_eq!(los_of_density(k), los, "density {k}");
        }
    }

    #[test]
    fn demand_over_capacity_is_f_whatever_the_density() {
        // 40 veh in 60 s on 1 lane = 2400 veh/h/ln at 120 km/h: density 20 (D), but over a
        // capacity of 2300 veh/h/ln.
        let acc = window(&[iv(40, 60, 0.3, Some(120.0), 1)]);
        let segment = SegmentParams {
            free_flow_kmh: Some(120.0),
            capacity_vphpl: Some(2300.0),
            ..freeway()
        };
        let f = acc.figures(&segment).expect("non-empty");
        assert!(close(f.density_vpkm.expect("density"), 20.0));
        assert_eq!(f.los, Some(Los::F));
        let at_capacity = SegmentParams {
            capacity_vphpl: Some(2400.0),
            ..segment
        };
        assert_eq!(acc.figures(&at_capacity).and_then(|f| f.los), Some(Los::D));
    }

    #[test]
    fn congestion_index_is_clamped_and_congestion_starts_below_90_percent() {
        let segment = urban(100.0);
        let at = |v: f64| {
            window(&[iv(10, 30, 0.1, Some(v), 1)])
                .figures(&segment)
                .expect("non-empty")
        };
        let f = at(120.0);
        assert_eq!(
            f.congestion_index,
            Some(0.0),
            "faster than free flow clamps to 0"
        );
        assert_eq!(f.congested, Some(false));
        let f = at(90.0);
        assert!(close(f.congestion_index.expect("index"), 0.1));
        assert_eq!(f.congested, Some(false), "exactly 90 % is not congested");
        let f = at(89.9);
        assert_eq!(f.congested, Some(true));
        let f = at(25.0);
        assert!(close(f.congestion_index.expect("index"), 0.75));
        // Without a free-flow speed there is no verdict.
        let f = window(&[iv(10, 30, 0.1, Some(25.0), 1)])
            .figures(&SegmentParams::default())
            .expect("non-empty");
        assert_eq!((f.congestion_index, f.congested), (None, None));
    }

    #[test]
    fn an_empty_road_has_density_zero_and_los_a_but_no_speed() {
        let acc = window(&[iv(0, 30, 0.0, None, 2), iv(0, 30, 0.0, Some(80.0), 2)]);
        let segment = SegmentParams {
            capacity_vphpl: Some(2000.0),
            ..urban(100.0)
        };
        let f = acc.figures(&segment).expect("non-empty");
        assert_eq!(f.flow_vph, 0.0);
        assert_eq!(
            f.speed_kmh, None,
            "a speed without vehicles carries no weight"
        );
        assert_eq!(f.density_vpkm, Some(0.0));
        assert_eq!(f.los, Some(Los::A));
        assert_eq!(f.congestion_index, None);
        assert_eq!(acc.figures(&freeway()).and_then(|f| f.los), Some(Los::A));
    }

    #[test]
    fn a_standing_queue_is_not_called_free_flow() {
        let acc = window(&[iv(0, 30, 1.0, None, 1)]);
        for segment in [SegmentParams::default(), urban(50.0), freeway()] {
            let f = acc.figures(&segment).expect("non-empty");
            assert_eq!((f.density_vpkm, f.los), (None, None));
        }
    }

    #[test]
    fn intervals_without_speed_count_for_flow_only() {
        let acc = window(&[iv(10, 30, 0.1, None, 1), iv(10, 30, 0.1, Some(50.0), 1)]);
        let f = acc.figures(&SegmentParams::default()).expect("non-empty");
        assert!(close(f.flow_vph, 1200.0));
        assert_eq!(f.speed_kmh, Some(50.0));
        assert_eq!(f.speed_vehicles, 10);
        // No speed at all: no density, no LOS.
        let f = window(&[iv(10, 30, 0.1, None, 1)])
            .figures(&SegmentParams::default())
            .expect("non-empty");
        assert_eq!((f.speed_kmh, f.density_vpkm, f.los), (None, None, None));
    }

    #[test]
    fn invalid_intervals_are_rejected_and_leave_the_sums_alone() {
        let mut acc = TrafficAccumulator::new();
        let cases = [
            (iv(1, 0, 0.1, Some(50.0), 1), InvalidInterval::ZeroDuration),
            (iv(1, 30, 0.1, Some(50.0), 0), InvalidInterval::ZeroLanes),
            (iv(1, 30, 1.5, Some(50.0), 1), InvalidInterval::Occupancy),
            (
                iv(1, 30, f64::NAN, Some(50.0), 1),
                InvalidInterval::Occupancy,
            ),
            (iv(1, 30, 0.1, Some(0.0), 1), InvalidInterval::Speed),
            (
                iv(1, 30, 0.1, Some(f64::INFINITY), 1),
                InvalidInterval::Speed,
            ),
        ];
        for (interval, err) in cases {
            assert_eq!(acc.add(&interval), Err(err));
        }
        assert!(acc.is_empty());
        assert_eq!(acc.figures(&SegmentParams::default()), None);
        assert_eq!(InvalidInterval::Speed.reason(), "speed_not_positive");
    }

    #[test]
    fn district_aggregates_segments() {
        let free = urban(100.0);
        // Segment 1: 10 veh @ 100 km/h in 30 s, 1 lane → 1200 veh/h, k = 12, ci 0, TTI 1.
        // Segment 2: 30 veh @ 50 km/h in 30 s, 1 lane → 3600 veh/h, k = 72, ci 0.5, TTI 2,
        // congested.
        let s1 = window(&[iv(10, 30, 0.1, Some(100.0), 1)]).figures(&free);
        let s2 = window(&[iv(30, 30, 0.5, Some(50.0), 1)]).figures(&free);
        let mut d = DistrictTrafficAccumulator::new();
        for s in [s1, s2].into_iter().flatten() {
            d.add(&s);
        }
        let f = d.figures().expect("two segments");
        assert_eq!(f.segments, 2);
        assert!(close(f.flow_vph, 2400.0), "mean flow per segment");
        assert!(close(f.occupancy, 0.3));
        // 40 / (10/100 + 30/50) = 40 / 0.7 = 57.142…
        assert!(close(f.speed_kmh.expect("speed"), 40.0 / 0.7));
        // (12 + 72) / 2 = 42: reported, but no longer graded.
        assert!(close(f.density_vpkm.expect("density"), 42.0));
        // VKT (1 km each): 10 and 30. TTI = (10 × 1 + 30 × 2) / 40 = 1.75; ratio 1/1.75 = 57 %
        // → C (> 50–67), where the density mean would have said F.
        assert!(close(f.travel_time_index.expect("tti"), 1.75));
        assert_eq!(f.los, Some(Los::C));
        // (0 × 10 + 0.5 × 30) / 40 = 0.375
        assert!(close(f.congestion_index.expect("index"), 0.375));
        assert_eq!(f.congested_share, Some(0.5));
        assert_eq!(DistrictTrafficAccumulator::new().figures(), None);
    }

    #[test]
    fn urban_los_at_and_beside_every_exhibit_16_8_limit() {
        // Base free-flow speed 50 km/h: the limits fall on 40, 33.5, 25, 20 and 15 km/h; a limit
        // belongs to the worse level (A is "> 80 %"), and 0.001 km/h above it is the better one.
        let cases = [
            (50.0, Los::A),
            (40.001, Los::A),
            (40.0, Los::B),
            (39.999, Los::B),
            (33.501, Los::B),
            (33.5, Los::C),
            (25.001, Los::C),
            (25.0, Los::D),
            (20.001, Los::D),
            (20.0, Los::E),
            (15.001, Los::E),
            (15.0, Los::F),
            (14.999, Los::F),
            (2.0, Los::F),
        ];
        for (v, los) in cases {
            assert_eq!(urban_los(v, 50.0), Some(los), "{v} km/h of 50");
        }
        // 70 km/h: 67 % is 46.9 and 30 % is 21, neither a binary fraction (0.67 × 70 and
        // 46.9 / 70 both round in f64); the exact comparison still puts them on the limit.
        for (v, los) in [
            (56.0, Los::B),
            (56.001, Los::A),
            (46.9, Los::C),
            (46.901, Los::B),
            (35.0, Los::D),
            (28.0, Los::E),
            (21.0, Los::F),
            (21.001, Los::E),
        ] {
            assert_eq!(urban_los(v, 70.0), Some(los), "{v} km/h of 70");
        }
        // Faster than free flow is A; no free-flow speed, no level.
        assert_eq!(urban_los(80.0, 50.0), Some(Los::A));
        assert_eq!(urban_los(40.0, 0.0), None);
        assert_eq!(los_of_speed_ratio(1, 0), None);
    }

    #[test]
    fn urban_street_window_is_graded_by_speed_and_f_above_capacity() {
        // 46.9 km/h in every interval of a 70 km/h street: exactly 67 % → C.
        let acc = window(&[
            iv(7, 30, 0.1, Some(46.9), 2),
            iv(3, 30, 0.05, Some(46.9), 2),
            iv(11, 30, 0.2, Some(46.9), 2),
        ]);
        let f = acc.figures(&urban(70.0)).expect("non-empty");
        assert_eq!(f.los, Some(Los::C));
        // 21 veh in 90 s on 2 lanes = 420 veh/h/ln: at capacity 420 still C, above it F
        // although the speed is 67 % of free flow.
        let at = |cap: f64| {
            let segment = SegmentParams {
                capacity_vphpl: Some(cap),
                ..urban(70.0)
            };
            acc.figures(&segment).and_then(|f| f.los)
        };
        assert_eq!(at(420.0), Some(Los::C));
        assert_eq!(at(419.999), Some(Los::F));
        // At free-flow speed, over capacity is still F (v/c > 1.0).
        let fast = window(&[iv(10, 30, 0.1, Some(70.0), 1)]);
        let segment = SegmentParams {
            capacity_vphpl: Some(1100.0),
            ..urban(70.0)
        };
        assert_eq!(fast.figures(&segment).and_then(|f| f.los), Some(Los::F));
    }

    #[test]
    fn freeway_los_is_exact_at_the_density_limits() {
        // 7 veh in 30 s on 1 lane = 840 veh/h/ln; at 120 km/h exactly 7 veh/km/ln → A.
        let at = |v: f64| {
            window(&[iv(7, 30, 0.05, Some(v), 1)])
                .figures(&freeway())
                .and_then(|f| f.los)
        };
        assert_eq!(at(120.0), Some(Los::A));
        assert_eq!(at(119.999), Some(Los::B));
        // 840 / 28 = 30 km/h: E at the limit, F just below.
        assert_eq!(at(30.0), Some(Los::E));
        assert_eq!(at(29.999), Some(Los::F));
        // 840 / 22 = 38.1818… km/h is not a decimal: the resolution decides, 38.182 → D.
        assert_eq!(at(38.182), Some(Los::D));
        assert_eq!(at(38.181), Some(Los::E));
    }

    #[test]
    fn ninety_percent_verdict_is_exact() {
        // 63 of 70, 44.1 of 49, 81.9 of 91: exactly 90 %, not congested, whatever
        // 0.9 × v_free or the harmonic mean rounds to; 0.001 km/h below is congested.
        for (v, vf) in [
            (63.0, 70.0),
            (44.1, 49.0),
            (81.9, 91.0),
            (45.0, 50.0),
            (27.0, 30.0),
        ] {
            assert_eq!(is_congested(v, vf), Some(false), "{v} of {vf}");
            assert_eq!(
                is_congested(v - 0.001, vf),
                Some(true),
                "{v} - 0.001 of {vf}"
            );
        }
        // A harmonic mean that is 63 exactly in rationals: 30 / (20/60 + 10/70) = 63.
        let acc = window(&[
            iv(20, 30, 0.2, Some(60.0), 2),
            iv(10, 30, 0.1, Some(70.0), 2),
        ]);
        let f = acc.figures(&urban(70.0)).expect("non-empty");
        assert_eq!(f.congested, Some(false), "speed {:?}", f.speed_kmh);
        assert_eq!(is_congested(f64::NAN, 70.0), None);
    }

    #[test]
    fn travel_time_index_is_free_flow_over_speed_and_at_least_one() {
        let at = |v: f64| {
            window(&[iv(10, 30, 0.1, Some(v), 1)])
                .figures(&urban(100.0))
                .and_then(|f| f.travel_time_index)
        };
        assert_eq!(at(50.0), Some(2.0));
        assert_eq!(at(25.0), Some(4.0));
        assert_eq!(at(100.0), Some(1.0));
        assert_eq!(at(120.0), Some(1.0), "faster than free flow is not below 1");
        let f = window(&[iv(10, 30, 0.1, Some(50.0), 1)])
            .figures(&SegmentParams::default())
            .expect("non-empty");
        assert_eq!(f.travel_time_index, None, "no free-flow speed, no index");
    }

    #[test]
    fn district_index_weighs_segments_by_vehicle_kilometres() {
        // Two segments, both 20 vehicles: a 2 km freeway at TTI 1.25 (80 of 100 km/h) and a
        // 0.5 km street at TTI 2 (25 of 50 km/h). VKT 40 and 10:
        // TTI = (40 × 1.25 + 10 × 2) / 50 = 1.4; ratio 1 / 1.4 = 71.4 % → B. Weighted by
        // vehicles alone it would be (1.25 + 2) / 2 = 1.625, ratio 61.5 % → C.
        let road = SegmentParams {
            length_km: Some(2.0),
            facility: Facility::Freeway,
            ..urban(100.0)
        };
        let street = SegmentParams {
            length_km: Some(0.5),
            ..urban(50.0)
        };
        let mut d = DistrictTrafficAccumulator::new();
        for (v, seg) in [(80.0, road), (25.0, street)] {
            let f = window(&[iv(20, 60, 0.1, Some(v), 2)])
                .figures(&seg)
                .expect("non-empty");
            d.add(&f);
        }
        let f = d.figures().expect("two segments");
        assert!(close(f.travel_time_index.expect("tti"), 1.4));
        assert_eq!(f.los, Some(Los::B));
    }

    #[test]
    fn district_los_limits_are_the_urban_street_ones() {
        // One segment: the district ratio is its own. 20 % above the E/F limit and at it.
        for (v, los) in [
            (15.0, Los::F),
            (15.1, Los::E),
            (40.0, Los::B),
            (40.1, Los::A),
        ] {
            let mut d = DistrictTrafficAccumulator::new();
            d.add(
                &window(&[iv(10, 30, 0.1, Some(v), 1)])
                    .figures(&urban(50.0))
                    .expect("f"),
            );
            assert_eq!(d.figures().and_then(|f| f.los), Some(los), "{v} of 50");
        }
    }

    #[test]
    fn facility_defaults_follow_the_free_flow_speed() {
        assert_eq!(Facility::from_free_flow(Some(90.0)), Facility::Freeway);
        assert_eq!(Facility::from_free_flow(Some(89.9)), Facility::UrbanStreet);
        assert_eq!(Facility::from_free_flow(None), Facility::UrbanStreet);
        assert_eq!(Facility::parse("expressway"), Some(Facility::Freeway));
        assert_eq!(Facility::parse("urban_street"), Some(Facility::UrbanStreet));
        assert_eq!(Facility::parse("highway"), None);
    }

    proptest! {
        #[test]
        fn harmonic_mean_never_exceeds_the_arithmetic(
            intervals in proptest::collection::vec((1u32..200, 1.0f64..200.0), 1..20),
        ) {
            let mut acc = TrafficAccumulator::new();
            for &(n, v) in &intervals {
                acc.add(&iv(n, 30, 0.1, Some(v), 1)).expect("valid");
            }
            let harmonic = acc
                .figures(&SegmentParams::default())
                .and_then(|f| f.speed_kmh)
                .expect("speed");
            let total: f64 = intervals.iter().map(|&(n, _)| f64::from(n)).sum();
            let arithmetic: f64 =
                intervals.iter().map(|&(n, v)| f64::from(n) * v).sum::<f64>() / total;
            prop_assert!(harmonic <= arithmetic * (1.0 + 1e-12), "{harmonic} > {arithmetic}");
        }

        #[test]
        fn pooling_segments_equals_pooling_their_intervals(
            segments in proptest::collection::vec(
                proptest::collection::vec((1u32..100, 5.0f64..130.0), 1..6), 1..6),
        ) {
            let mut district = DistrictTrafficAccumulator::new();
            let mut pooled = TrafficAccumulator::new();
            for seg in &segments {
                let mut acc = TrafficAccumulator::new();
                for &(n, v) in seg {
                    acc.add(&iv(n, 30, 0.1, Some(v), 1)).expect("valid");
                    pooled.add(&iv(n, 30, 0.1, Some(v), 1)).expect("valid");
                }
                district.add(&acc.figures(&SegmentParams::default()).expect("non-empty"));
            }
            let d = district.figures().and_then(|f| f.speed_kmh).expect("speed");
            let p = pooled.figures(&SegmentParams::default()).and_then(|f| f.speed_kmh).expect("speed");
            prop_assert!((d - p).abs() <= 1e-9 * p);
        }

        #[test]
        fn exactly_ninety_percent_is_never_congested(
            vf_tenths in 100u32..1500,
            counts in proptest::collection::vec(1u32..60, 1..12),
        ) {
            // v = 0.9 v_free with both on the 0.01 km/h grid, reported in every interval.
            let vf = f64::from(vf_tenths * 10) / 100.0;
            let v = f64::from(vf_tenths * 9) / 100.0;
            let mut acc = TrafficAccumulator::new();
            for &n in &counts {
                acc.add(&iv(n, 30, 0.1, Some(v), 2)).expect("valid");
            }
            let f = acc.figures(&urban(vf)).expect("non-empty");
            prop_assert_eq!(f.congested, Some(false), "{:?} of {}", f.speed_kmh, vf);
            prop_assert_eq!(is_congested(v - 0.01, vf), Some(true));
        }

        #[test]
        fn urban_los_never_improves_as_speed_falls(a in 1.0f64..130.0, b in 1.0f64..130.0) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(urban_los(hi, 100.0) <= urban_los(lo, 100.0));
        }

        #[test]
        fn los_never_improves_as_density_grows(a in 0.0f64..60.0, b in 0.0f64..60.0) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(los_of_density(lo) <= los_of_density(hi));
        }
    }
}
