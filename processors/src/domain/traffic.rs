//! Loop-detector traffic engineering: flow, occupancy, space-mean speed, density, level of
//! service and congestion, for one detector ([`TrafficAccumulator`]) and for a district
//! ([`DistrictTrafficAccumulator`]).
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
//! - level of service by density, HCM 6th/7th ed. (metric), basic freeway segments (Exhibit
//!   12-15): A ≤ 7, B ≤ 11, C ≤ 16, D ≤ 22, E ≤ 28, F above 28 pc/km/ln, and F whenever demand
//!   exceeds capacity. Vehicles are taken as passenger cars: the detectors do not classify
//!   vehicles, so no heavy-vehicle adjustment is applied;
//! - congestion index `1 − v_s / v_free`, clamped to `[0, 1]`; a segment is congested when
//!   `v_s < 0.9 v_free` (FHWA Urban Congestion Report: congested when travel speed falls below
//!   90 % of free-flow speed).
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

/// What the registry knows about a segment. Values that are not positive numbers count as
/// unknown.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct SegmentParams {
    /// Free-flow speed, km/h.
    pub free_flow_kmh: Option<f64>,
    /// Capacity per lane, veh/h/ln (HCM: pc/h/ln).
    pub capacity_vphpl: Option<f64>,
}

/// Upper density limits, pc/km/ln, of LOS A to E (HCM, basic freeway segments, metric).
const LOS_DENSITY_LIMITS: [(f64, Los); 5] = [
    (7.0, Los::A),
    (11.0, Los::B),
    (16.0, Los::C),
    (22.0, Los::D),
    (28.0, Los::E),
];

/// FHWA: congested below this share of free-flow speed.
const CONGESTED_BELOW: f64 = 0.9;

/// The level of service of a density in veh/km/ln (a limit belongs to the better level: 7 is A).
pub fn los_of_density(density_vpkm: f64) -> Los {
    LOS_DENSITY_LIMITS
        .iter()
        .find(|(limit, _)| density_vpkm <= *limit)
        .map_or(Los::F, |&(_, los)| los)
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
    /// HCM level of service: from the density, or F when flow per lane exceeds capacity.
    pub los: Option<Los>,
    /// `1 − v / v_free` in `[0, 1]`; `None` without speed or free-flow speed.
    pub congestion_index: Option<f64>,
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
            (0, _) => (occupancy == 0.0).then_some(0.0),
            (_, Some(v)) => Some(flow_vphpl / v),
            (_, None) => None,
        };
        let over_capacity = known(segment.capacity_vphpl).is_some_and(|cap| flow_vphpl > cap);
        let los = if over_capacity {
            Some(Los::F)
        } else {
            density_vpkm.map(los_of_density)
        };
        let free_flow = known(segment.free_flow_kmh);
        let (congestion_index, congested) = match (speed_kmh, free_flow) {
            (Some(v), Some(vf)) => (
                Some((1.0 - v / vf).clamp(0.0, 1.0)),
                Some(v < CONGESTED_BELOW * vf),
            ),
            _ => (None, None),
        };
        Some(TrafficFigures {
            vehicles: self.vehicles,
            speed_vehicles: self.speed_vehicles,
            flow_vph,
            occupancy,
            speed_kmh,
            density_vpkm,
            los,
            congestion_index,
            congested,
        })
    }
}

/// A district's figures over a window, aggregated from its segments' figures.
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
    /// Level of service of `density_vpkm`.
    pub los: Option<Los>,
    /// Mean of the segments' congestion indices weighted by their speed-reporting vehicles.
    pub congestion_index: Option<f64>,
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
        Some(DistrictTrafficFigures {
            segments: self.segments,
            flow_vph: self.flow_sum / n,
            occupancy: self.occupancy_sum / n,
            speed_kmh: (self.speed_vehicles > 0)
                .then(|| self.speed_vehicles as f64 / self.vehicles_per_kmh),
            density_vpkm,
            los: density_vpkm.map(los_of_density),
            congestion_index: (self.congestion_weight > 0)
                .then(|| self.congestion_weighted / self.congestion_weight as f64),
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
        let f = acc.figures(&SegmentParams::default()).expect("non-empty");
        assert!(close(f.flow_vph, 600.0));
        assert_eq!(f.vehicles, 15);
        // Per lane 300 veh/h/ln at 60 km/h: 5 veh/km/ln → A.
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
        let f = acc.figures(&SegmentParams::default()).expect("non-empty");
        assert!(close(f.flow_vph, 1200.0));
        assert!(close(f.density_vpkm.expect("density"), 15.0));
        assert_eq!(f.los, Some(Los::C));
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
        let segment = SegmentParams {
            free_flow_kmh: Some(100.0),
            capacity_vphpl: None,
        };
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
            free_flow_kmh: Some(100.0),
            capacity_vphpl: Some(2000.0),
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
    }

    #[test]
    fn a_standing_queue_is_not_called_free_flow() {
        let acc = window(&[iv(0, 30, 1.0, None, 1)]);
        let f = acc.figures(&SegmentParams::default()).expect("non-empty");
        assert_eq!((f.density_vpkm, f.los), (None, None));
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
        let free = SegmentParams {
            free_flow_kmh: Some(100.0),
            capacity_vphpl: None,
        };
        // Segment 1: 10 veh @ 100 km/h in 30 s, 1 lane → 1200 veh/h, k = 12 (C), ci 0.
        // Segment 2: 30 veh @ 50 km/h in 30 s, 1 lane → 3600 veh/h, k = 72 (F), ci 0.5, congested.
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
        // (12 + 72) / 2 = 42 → F
        assert!(close(f.density_vpkm.expect("density"), 42.0));
        assert_eq!(f.los, Some(Los::F));
        // (0 × 10 + 0.5 × 30) / 40 = 0.375
        assert!(close(f.congestion_index.expect("index"), 0.375));
        assert_eq!(f.congested_share, Some(0.5));
        assert_eq!(DistrictTrafficAccumulator::new().figures(), None);
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
        fn los_never_improves_as_density_grows(a in 0.0f64..60.0, b in 0.0f64..60.0) {
            let (lo, hi) = (a.min(b), a.max(b));
            prop_assert!(los_of_density(lo) <= los_of_density(hi));
        }
    }
}
