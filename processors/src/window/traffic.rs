//! Traffic per detector and per district, and the learned free-flow speed.
//!
//! Figures come from [`TrafficAccumulator`] and
//! [`DistrictTrafficAccumulator`](crate::domain::traffic::DistrictTrafficAccumulator) (see
//! [`crate::domain::traffic`] for the definitions and units). Free-flow speed, for the congestion
//! index and the congested verdict, comes from the segment registry (`--city`) when the detector
//! is listed there; otherwise it is **learned** per detector, as the 85th percentile of the
//! count-weighted interval speeds observed at low flow (≤ 1000 veh/h/ln, the HCM's condition for
//! measuring free-flow speed), rounded up to the whole km/h: the smallest integer `k` such that
//! at least 85 % of those vehicles were counted in intervals with a mean speed below `k`. It is
//! defined once 100 such vehicles have been seen. The window ending at `T` learns from every
//! accepted interval of the detector with event time before `T`, so the figure depends on event
//! time only, not on arrival order.

use super::seq::SeqGuard;
use crate::domain::traffic::{
    DistrictTrafficFigures, Interval, InvalidInterval, SegmentParams, TrafficAccumulator,
    TrafficFigures,
};
use citypulse_schema::{Traffic, TrafficMetrics};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Flow per lane up to which an interval counts as free-flow evidence, veh/h/ln (HCM 7th ed.,
/// ch. 12: free-flow speed is measured at flows up to 1,000 pc/h/ln).
const LOW_FLOW_VPHPL: u64 = 1_000;
/// Vehicles of low-flow evidence needed before a learned free-flow speed is used.
const MIN_LEARNED_VEHICLES: u64 = 100;

/// One counting interval as kept in a pane: count, interval (s), occupancy, speed (km/h), lanes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TrafficSample(u32, u32, f64, Option<f64>, u32);

impl TrafficSample {
    /// The reading's interval, if the accumulator accepts it.
    pub fn from_traffic(t: &Traffic) -> Result<TrafficSample, InvalidInterval> {
        let s = TrafficSample(t.count, t.interval_s, t.occupancy, t.speed_kmh, t.lanes);
        TrafficAccumulator::new().add(&s.interval())?;
        Ok(s)
    }

    /// As the domain's interval.
    pub fn interval(&self) -> Interval {
        Interval {
            count: self.0,
            interval_s: self.1,
            occupancy: self.2,
            speed_kmh: self.3,
            lanes: self.4,
        }
    }
}

/// The free-flow speed a detector has learned: a histogram of low-flow interval speeds in 1 km/h
/// bins, weighted by vehicles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearnedFreeFlow(BTreeMap<u16, u64>);

impl LearnedFreeFlow {
    /// Adds an interval when it is low-flow evidence.
    pub fn learn(&mut self, s: &TrafficSample) {
        let TrafficSample(count, interval_s, _, speed, lanes) = *s;
        let Some(v) = speed.filter(|v| v.is_finite() && *v > 0.0) else {
            return;
        };
        // count·3600 / (interval·lanes) ≤ 1000, in integers.
        let low_flow =
            u64::from(count) * 3_600 <= LOW_FLOW_VPHPL * u64::from(interval_s) * u64::from(lanes);
        if count == 0 || !low_flow {
            return;
        }
        let bin = v.floor().min(f64::from(u16::MAX)) as u16;
        *self.0.entry(bin).or_default() += u64::from(count);
    }

    /// The learned free-flow speed, km/h; `None` before 100 vehicles of evidence.
    pub fn value(&self) -> Option<f64> {
        let total: u64 = self.0.values().sum();
        if total < MIN_LEARNED_VEHICLES {
            return None;
        }
        let mut below = 0u64;
        for (&bin, &n) in &self.0 {
            below += n;
            // 85 % of the vehicles were slower than bin + 1.
            if u128::from(below) * 100 >= u128::from(total) * 85 {
                return Some(f64::from(bin) + 1.0);
            }
        }
        None
    }
}

/// What the processors remember of one detector between windows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrafficSensor {
    pub(super) guard: SeqGuard,
    /// Newest accepted event time, ms.
    pub(super) newest_ts: u64,
    /// Learned free-flow speed (unused for detectors in the registry).
    pub(super) learned: LearnedFreeFlow,
}

impl TrafficSensor {
    /// A detector whose first accepted reading has `seq` and event time `ts`.
    pub fn new(seq: u64, ts: u64) -> TrafficSensor {
        TrafficSensor {
            guard: SeqGuard::starting_at(seq),
            newest_ts: ts,
            learned: LearnedFreeFlow::default(),
        }
    }
}

/// One detector's figures over the given intervals; `None` when there are none.
pub fn sensor_figures<'a>(
    samples: impl IntoIterator<Item = &'a TrafficSample>,
    segment: &SegmentParams,
) -> Option<TrafficFigures> {
    let mut acc = TrafficAccumulator::new();
    for s in samples {
        // Samples were validated when they were observed; a failure leaves the sums alone.
        let _ = acc.add(&s.interval());
    }
    acc.figures(segment)
}

/// A detector's window result figures.
pub fn sensor_metrics(f: &TrafficFigures) -> TrafficMetrics {
    TrafficMetrics {
        flow_vph: f.flow_vph,
        occupancy: f.occupancy,
        speed_kmh: f.speed_kmh,
        density_vpkm: f.density_vpkm,
        los: f.los,
        congestion_index: f.congestion_index,
        congested_share: None,
        travel_time_index: f.travel_time_index,
    }
}

/// A district's window result figures.
pub fn district_metrics(f: &DistrictTrafficFigures) -> TrafficMetrics {
    TrafficMetrics {
        flow_vph: f.flow_vph,
        occupancy: f.occupancy,
        speed_kmh: f.speed_kmh,
        density_vpkm: f.density_vpkm,
        los: f.los,
        congestion_index: f.congestion_index,
        congested_share: f.congested_share,
        travel_time_index: f.travel_time_index,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(count: u32, speed: f64) -> TrafficSample {
        TrafficSample(count, 30, 0.1, Some(speed), 1)
    }

    #[test]
    fn learned_free_flow_is_the_85th_percentile_rounded_up() {
        let mut l = LearnedFreeFlow::default();
        // 85 vehicles at 40.x km/h and 15 at 55.5: 85 % are below 41.
        l.learn(&sample(5, 40.2));
        assert_eq!(l.value(), None, "not enough evidence");
        for _ in 0..16 {
            l.learn(&sample(5, 40.9));
        }
        l.learn(&sample(8, 55.5));
        l.learn(&sample(7, 55.5));
        assert_eq!(l.value(), Some(41.0));
        // One more fast vehicle tips the percentile into the 55 bin.
        l.learn(&sample(1, 55.5));
        assert_eq!(l.value(), Some(56.0));
    }

    #[test]
    fn high_flow_and_empty_intervals_teach_nothing() {
        let mut l = LearnedFreeFlow::default();
        // 9 vehicles in 30 s on one lane = 1080 veh/h/ln: above 1000.
        for _ in 0..50 {
            l.learn(&sample(9, 30.0));
            l.learn(&TrafficSample(0, 30, 0.0, None, 1));
        }
        assert_eq!(l, LearnedFreeFlow::default());
        // 8 vehicles in 30 s = 960 veh/h/ln: evidence.
        l.learn(&sample(8, 30.0));
        assert_ne!(l, LearnedFreeFlow::default());
    }

    #[test]
    fn invalid_intervals_are_refused_with_the_domain_reason() {
        let t = Traffic {
            count: 3,
            interval_s: 0,
            occupancy: 0.1,
            speed_kmh: Some(50.0),
            lanes: 1,
        };
        assert_eq!(
            TrafficSample::from_traffic(&t),
            Err(InvalidInterval::ZeroDuration)
        );
    }
}
