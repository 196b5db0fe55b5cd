//! PURE: how the city behaves over a day — diurnal profiles, the fundamental diagram of traffic
//! flow, and the air-quality model. Plain functions of local time and state; no randomness (the
//! engine adds noise).

use super::Facility;
use std::f64::consts::PI;

/// Effective vehicle length seen by a loop: a 5.5 m vehicle plus a 2 m loop. Occupancy is
/// density × this length, per lane.
pub const EFFECTIVE_VEHICLE_LENGTH_M: f64 = 7.5;

/// Jam density, vehicles per km per lane (bumper to bumper; occupancy ≈ 0.94 at jam).
pub const JAM_DENSITY_VPKMPL: f64 = 125.0;

/// Speed loss at capacity on a freeway's free-flow branch: speed at capacity = (1 − α) ×
/// free-flow = 75 % (HCM 6th ed., ch. 12: a 75 mi/h freeway reaches capacity, 2,400 pc/h/ln at
/// 45 pc/mi/ln, at 53 mi/h, 71 %).
pub const FREEWAY_ALPHA: f64 = 0.25;
/// Speed loss at capacity on an urban street: 70 % of free flow at capacity (signal delay grows
/// with the volume-to-capacity ratio). Both stay ≥ 0.2, so no state on the free-flow branch is
/// above 80 % of free-flow speed and above critical density at once, and below 1/3, so flow
/// grows with density up to capacity.
pub const URBAN_ALPHA: f64 = 0.3;

/// Local time of day and day of week.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LocalTime {
    /// Hour of the day, `0.0..24.0`.
    pub hour: f64,
    /// Day of the week, 0 = Monday … 6 = Sunday.
    pub weekday: u32,
}

impl LocalTime {
    /// Local time of `ts_ms` (Unix epoch ms) at `utc_offset_minutes`.
    pub fn at(ts_ms: u64, utc_offset_minutes: i32) -> LocalTime {
        const DAY_MS: i64 = 86_400_000;
        let local = ts_ms as i64 + i64::from(utc_offset_minutes) * 60_000;
        let days = local.div_euclid(DAY_MS);
        let in_day = local.rem_euclid(DAY_MS);
        LocalTime {
            hour: in_day as f64 / 3_600_000.0,
            // 1970-01-01 was a Thursday (weekday 3).
            weekday: (days + 3).rem_euclid(7) as u32,
        }
    }

    /// Saturday or Sunday.
    pub fn is_weekend(&self) -> bool {
        self.weekday >= 5
    }
}

/// A Gaussian bump centred on `mu` hours, width `sigma` hours, on the 24-hour circle.
fn bump(hour: f64, mu: f64, sigma: f64) -> f64 {
    let d = (hour - mu + 36.0).rem_euclid(24.0) - 12.0;
    (-(d * d) / (2.0 * sigma * sigma)).exp()
}

fn smoothstep(a: f64, b: f64, x: f64) -> f64 {
    let t = ((x - a) / (b - a)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Traffic demand as a fraction of the weekday peak (≈ 1.0 at the 08:00 and 17:15 peaks on
/// weekdays, ≈ 0.07 at night, a single midday hump of ≈ 0.56 at weekends).
pub fn traffic_demand(t: LocalTime) -> f64 {
    let h = t.hour;
    if t.is_weekend() {
        0.06 + 0.5 * bump(h, 13.5, 3.2) + 0.1 * bump(h, 20.0, 2.0)
    } else {
        let day = smoothstep(5.5, 8.0, h) * (1.0 - smoothstep(19.5, 23.5, h));
        0.07 + 0.45 * day + 0.48 * bump(h, 8.0, 0.9) + 0.45 * bump(h, 17.25, 1.3)
    }
}

/// Solar-driven photochemistry, 0..1, peaking mid-afternoon (ozone's driver).
pub fn photochemistry(t: LocalTime) -> f64 {
    bump(t.hour, 14.5, 2.8)
}

/// The fundamental diagram of one lane: a free-flow branch where speed falls from free-flow
/// speed to `(1 − α)` of it at capacity (`q = k·v_f·(1 − α(k/k_c)²)`), and a linear
/// congested branch from capacity down to jam density (`q = C·(k_j − k)/(k_j − k_c)`), as in a
/// triangular diagram. Flow, density and speed satisfy `q = k·v` on both branches.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FundamentalDiagram {
    /// Free-flow speed, km/h.
    pub free_flow_kmh: f64,
    /// Capacity, vehicles per hour per lane.
    pub capacity_vphpl: f64,
    /// Critical density (at capacity), vehicles per km per lane.
    pub critical_density: f64,
    /// Jam density, vehicles per km per lane.
    pub jam_density: f64,
    /// Speed loss at capacity, `1 − v_c / v_f`.
    pub alpha: f64,
}

/// One lane's traffic state on the diagram.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FlowState {
    /// Flow, vehicles per hour per lane.
    pub flow_vphpl: f64,
    /// Density, vehicles per km per lane.
    pub density_vpkmpl: f64,
    /// Space-mean speed, km/h.
    pub speed_kmh: f64,
    /// On the congested branch.
    pub congested: bool,
}

impl FundamentalDiagram {
    /// The diagram of a lane with this free-flow speed, capacity and speed loss at capacity
    /// (`alpha`, clamped to 0.2..=0.32).
    pub fn new(free_flow_kmh: f64, capacity_vphpl: f64, alpha: f64) -> FundamentalDiagram {
        let alpha = alpha.clamp(0.2, 0.32);
        let critical_density = capacity_vphpl / (free_flow_kmh * (1.0 - alpha));
        FundamentalDiagram {
            free_flow_kmh,
            capacity_vphpl,
            critical_density,
            jam_density: JAM_DENSITY_VPKMPL.max(critical_density * 1.5),
            alpha,
        }
    }

    /// The diagram of a lane of `facility` ([`FREEWAY_ALPHA`], [`URBAN_ALPHA`]).
    pub fn for_facility(
        free_flow_kmh: f64,
        capacity_vphpl: f64,
        facility: Facility,
    ) -> FundamentalDiagram {
        let alpha = match facility {
            Facility::Freeway => FREEWAY_ALPHA,
            Facility::UrbanStreet => URBAN_ALPHA,
        };
        FundamentalDiagram::new(free_flow_kmh, capacity_vphpl, alpha)
    }

    /// The free-flow state carrying `flow` (clamped to 0..=capacity).
    pub fn free_flow(&self, flow: f64) -> FlowState {
        let y = (flow / self.capacity_vphpl).clamp(0.0, 1.0);
        // Solve x(1 − αx²) = y(1 − α) for x = k/k_c in 0..=1; the left side is increasing there
        // (derivative ≥ 1 − 3α > 0), so Newton from x = y converges in a few steps.
        let a = self.alpha;
        let target = y * (1.0 - a);
        let mut x = y;
        for _ in 0..12 {
            let f = x * (1.0 - a * x * x) - target;
            x = (x - f / (1.0 - 3.0 * a * x * x)).clamp(0.0, 1.0);
        }
        let flow = y * self.capacity_vphpl;
        FlowState {
            flow_vphpl: flow,
            density_vpkmpl: x * self.critical_density,
            speed_kmh: self.free_flow_kmh * (1.0 - a * x * x),
            congested: false,
        }
    }

    /// The congested state carrying `flow` (clamped to 0..=capacity).
    pub fn congested(&self, flow: f64) -> FlowState {
        let y = (flow / self.capacity_vphpl).clamp(0.0, 1.0);
        let k = self.jam_density - y * (self.jam_density - self.critical_density);
        let flow = y * self.capacity_vphpl;
        FlowState {
            flow_vphpl: flow,
            density_vpkmpl: k,
            speed_kmh: flow / k,
            congested: true,
        }
    }

    /// One interval of `dt_s` seconds on a segment with this diagram: `demand` (veh/h/lane)
    /// arrives, an incident leaves `capacity_factor` of the capacity, and `queue` is what the
    /// previous interval left. Returns the state the loop measures and the queue left behind.
    ///
    /// Demand above the available capacity is stored in the queue (a point queue at the
    /// bottleneck); flow breaks down once the queue holds more than [`BREAKDOWN_QUEUE_S`] of the
    /// lane's capacity, so a few
    /// minutes of demand just above capacity at a peak are absorbed, while an incident's
    /// capacity cut breaks the flow down within a minute. A broken-down segment discharges on the
    /// congested branch, 8 % below the available capacity (the capacity drop), down to 38 % below
    /// in stop-and-go when demand is 1.5 times the capacity or more, and recovers once its queue
    /// has drained. Otherwise the state is on the free-flow branch of a diagram with the
    /// available capacity and, near an incident, a lower free-flow speed (drivers slow down to
    /// look). The flow measured never exceeds the available capacity.
    pub fn step(
        &self,
        demand: f64,
        capacity_factor: f64,
        queue: Queue,
        dt_s: f64,
    ) -> (FlowState, Queue) {
        let f = capacity_factor.clamp(0.01, 1.0);
        let available = self.capacity_vphpl * f;
        let demand = demand.max(0.0);
        let (state, discharge) = if queue.broken_down {
            let overload = ((demand / available - 1.0) / 0.5).clamp(0.0, 1.0);
            let q = available * (0.92 - 0.3 * overload);
            (self.congested(q), q)
        } else {
            let vf = self.free_flow_kmh * (0.75 + 0.25 * f);
            let q = demand.min(available);
            let reduced = FundamentalDiagram::new(vf, available, self.alpha);
            (reduced.free_flow(q), q)
        };
        let breakdown = self.capacity_vphpl * BREAKDOWN_QUEUE_S / 3600.0;
        let vehicles = (queue.vehicles_per_lane + (demand - discharge) * dt_s / 3600.0)
            .clamp(0.0, QUEUE_HELD * breakdown);
        let broken_down = if queue.broken_down {
            vehicles > 0.0
        } else {
            vehicles > breakdown
        };
        let next = Queue {
            vehicles_per_lane: vehicles,
            broken_down,
        };
        (state, next)
    }
}

/// Queue at which the flow breaks down, in seconds of the lane's capacity: 7.5 vehicles per lane
/// on a 900 veh/h/ln street, 17.5 on a 2,100 veh/h/ln freeway.
pub const BREAKDOWN_QUEUE_S: f64 = 30.0;

/// The most a segment's own queue holds, in breakdown queues: the vehicles queued at its
/// detector. A longer queue reaches the segments upstream, which an incident models by cutting
/// their capacity in turn ([`super::events::Incident::capacity_factor_at`]), and drivers divert;
/// so once the bottleneck reopens a segment drains in minutes, as the schedule's 15-minute
/// recovery says, not in the hours a point queue holding a whole peak's excess would take.
pub const QUEUE_HELD: f64 = 2.0;

/// The queue a segment carries from one interval to the next.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Queue {
    /// Vehicles waiting per lane.
    pub vehicles_per_lane: f64,
    /// Whether the flow has broken down (until the queue has drained).
    pub broken_down: bool,
}

/// Loop occupancy from what the loop counted: each vehicle covers the loop for
/// `EFFECTIVE_VEHICLE_LENGTH_M / v` seconds, summed over the interval and the lanes. Equal to
/// density × effective length per lane when the speed is the space-mean speed. Clamped to 0..1.
pub fn occupancy(count: u32, speed_kmh: f64, interval_s: u32, lanes: u32) -> f64 {
    if count == 0 || speed_kmh <= 0.0 || interval_s == 0 || lanes == 0 {
        return 0.0;
    }
    let seconds_each = EFFECTIVE_VEHICLE_LENGTH_M / (speed_kmh / 3.6);
    (f64::from(count) * seconds_each / (f64::from(interval_s) * f64::from(lanes))).clamp(0.0, 1.0)
}

/// Pollutant levels and weather at a station before sensor noise.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AirLevels {
    /// PM2.5, µg/m³.
    pub pm25_ugm3: f64,
    /// PM10, µg/m³.
    pub pm10_ugm3: f64,
    /// Ozone, ppb.
    pub o3_ppb: f64,
    /// NO2, ppb.
    pub no2_ppb: f64,
    /// SO2, ppb.
    pub so2_ppb: f64,
    /// CO, ppm.
    pub co_ppm: f64,
    /// Air temperature, °C.
    pub temp_c: f64,
    /// Relative humidity, %.
    pub rh_pct: f64,
}

/// The air model of a district at local time `t`:
/// - PM2.5 is bimodal: a morning peak (rush hour under a shallow boundary layer, ~08:30) and a
///   larger late-evening one (heating, night-time inversion, ~21:30), over the district's
///   background, plus road dust from traffic and any episode (`episode_pm25`, µg/m³);
/// - PM10 = coarse fraction over PM2.5, never below it;
/// - NO2 follows traffic, lowered by afternoon photolysis;
/// - O3 peaks in the afternoon and is titrated by NO2;
/// - CO follows traffic; SO2 sits at the district background with a midday industrial bump.
pub fn air_levels(
    t: LocalTime,
    pm25_background: f64,
    so2_background: f64,
    episode_pm25: f64,
) -> AirLevels {
    let h = t.hour;
    let traffic = traffic_demand(t);
    let sun = photochemistry(t);
    let base_pm25 = pm25_background * (0.7 + 0.5 * bump(h, 8.5, 1.6) + 0.7 * bump(h, 21.5, 2.5))
        + 5.0 * traffic;
    let no2 = 5.0 + 30.0 * traffic * (1.0 - 0.3 * sun);
    let diurnal = (2.0 * PI * (h - 15.0) / 24.0).cos();
    AirLevels {
        pm25_ugm3: base_pm25 + episode_pm25,
        pm10_ugm3: 1.7 * base_pm25 + 6.0 * traffic + 1.15 * episode_pm25,
        o3_ppb: (10.0 + 42.0 * sun - 0.3 * (no2 - 5.0)).max(2.0),
        no2_ppb: no2,
        so2_ppb: so2_background * (1.0 + 0.3 * bump(h, 11.0, 3.0)),
        co_ppm: 0.2 + 0.8 * traffic,
        temp_c: 12.0 + 5.0 * diurnal,
        rh_pct: 65.0 - 18.0 * diurnal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weekday(hour: f64) -> LocalTime {
        LocalTime { hour, weekday: 2 }
    }

    #[test]
    fn local_time_knows_the_epoch_was_a_thursday() {
        let t = LocalTime::at(0, 0);
        assert_eq!((t.hour, t.weekday), (0.0, 3));
        // 2026-01-05T07:30:00Z is a Monday; at UTC+1 it is 08:30.
        let t = LocalTime::at(1_767_598_200_000, 60);
        assert_eq!(t.weekday, 0);
        assert!((t.hour - 8.5).abs() < 1e-9);
        // Just before midnight UTC on a Sunday is already Monday at UTC+1.
        let t = LocalTime::at(1_767_571_199_000, 60);
        assert_eq!(t.weekday, 0);
    }

    #[test]
    fn weekday_demand_has_two_peaks_and_quiet_nights() {
        let d = |h| traffic_demand(weekday(h));
        assert!(d(8.0) > 0.95 && d(8.0) < 1.05, "{}", d(8.0));
        assert!(d(17.25) > 0.9 && d(17.25) < 1.05, "{}", d(17.25));
        assert!(d(12.5) < d(8.0) - 0.3);
        assert!(d(3.0) < 0.1);
        let weekend = traffic_demand(LocalTime {
            hour: 8.0,
            weekday: 6,
        });
        assert!(weekend < 0.4);
    }

    #[test]
    fn fundamental_diagram_is_consistent_on_both_branches() {
        let fd = FundamentalDiagram::new(100.0, 2000.0, FREEWAY_ALPHA);
        for i in 0..=20 {
            let q = 100.0 * f64::from(i);
            for s in [fd.free_flow(q), fd.congested(q)] {
                if s.density_vpkmpl > 0.0 {
                    let q_kv = s.density_vpkmpl * s.speed_kmh;
                    assert!((q_kv - s.flow_vphpl).abs() < 1e-6, "{s:?}");
                }
            }
        }
        let at_capacity = fd.free_flow(2000.0);
        assert!((at_capacity.speed_kmh - 75.0).abs() < 1e-6);
        assert!((at_capacity.density_vpkmpl - fd.critical_density).abs() < 1e-6);
        let jam = fd.congested(0.0);
        assert_eq!(jam.density_vpkmpl, JAM_DENSITY_VPKMPL);
        assert_eq!(fd.free_flow(0.0).speed_kmh, 100.0);
    }

    /// Runs `minutes` of 30-s intervals at a constant demand and capacity factor.
    fn run(
        fd: &FundamentalDiagram,
        demand: f64,
        factor: f64,
        minutes: u32,
        q: Queue,
    ) -> (FlowState, Queue) {
        let mut out = fd.step(demand, factor, q, 30.0);
        for _ in 1..minutes * 2 {
            out = fd.step(demand, factor, out.1, 30.0);
        }
        out
    }

    #[test]
    fn speed_falls_and_density_rises_with_demand_then_breaks_down() {
        let fd = FundamentalDiagram::new(60.0, 900.0, URBAN_ALPHA);
        let mut last = run(&fd, 0.0, 1.0, 1, Queue::default()).0;
        for i in 1..=9 {
            let s = run(&fd, 100.0 * f64::from(i), 1.0, 30, Queue::default()).0;
            assert!(!s.congested);
            assert!(s.speed_kmh <= last.speed_kmh && s.density_vpkmpl > last.density_vpkmpl);
            last = s;
        }
        // At capacity: 70 % of free-flow speed on an urban street.
        assert!((last.speed_kmh - 42.0).abs() < 1e-6, "{last:?}");
        // 3 % over capacity for 10 minutes queues 4.5 vehicles per lane: absorbed.
        let (s, q) = run(&fd, 927.0, 1.0, 10, Queue::default());
        assert!(!s.congested && !q.broken_down, "{s:?} {q:?}");
        assert!((q.vehicles_per_lane - 4.5).abs() < 1e-9, "{q:?}");
        // 30 % over for 5 minutes (22.5 vehicles): broken down, well below free-flow speed.
        let (s, q) = run(&fd, 1170.0, 1.0, 5, Queue::default());
        assert!(
            s.congested && q.broken_down && s.speed_kmh < 0.5 * 60.0,
            "{s:?}"
        );
        // The segment holds at most 15 vehicles per lane (twice the breakdown queue); they
        // drain at 0.92 × 900 − 700 = 128 veh/h, in about 7 minutes.
        let (s, q) = run(&fd, 700.0, 1.0, 5, q);
        assert!(s.congested && q.vehicles_per_lane > 0.0, "{s:?} {q:?}");
        let (s, q) = run(&fd, 700.0, 1.0, 20, q);
        assert!(!s.congested && !q.broken_down, "{s:?} {q:?}");
        assert!(s.flow_vphpl <= fd.capacity_vphpl);
    }

    #[test]
    fn an_incident_cutting_capacity_jams_the_segment_within_three_minutes() {
        // 600 veh/h/ln over the 600 left: 5 vehicles per lane queue every 30 s, past the
        // breakdown queue (16.7 vehicles) after the fourth interval.
        let fd = FundamentalDiagram::new(100.0, 2000.0, FREEWAY_ALPHA);
        let (s, _) = run(&fd, 1200.0, 0.3, 2, Queue::default());
        assert!(!s.congested);
        let (s, _) = run(&fd, 1200.0, 0.3, 3, Queue::default());
        assert!(s.congested && s.speed_kmh < 15.0, "{s:?}");
        assert!(s.flow_vphpl <= 0.3 * 2000.0);
        let occ = s.density_vpkmpl * EFFECTIVE_VEHICLE_LENGTH_M / 1000.0;
        assert!(occ > 0.5 && occ < 1.0, "{occ}");
    }

    #[test]
    fn occupancy_equals_density_times_effective_length() {
        // 20 vehicles in 30 s on 2 lanes at 40 km/h: q = 1200 veh/h/lane, k = 30 veh/km/lane.
        let occ = occupancy(20, 40.0, 30, 2);
        assert!((occ - 30.0 * 7.5 / 1000.0).abs() < 1e-9, "{occ}");
        assert_eq!(occupancy(0, 40.0, 30, 2), 0.0);
        assert_eq!(occupancy(10_000, 1.0, 30, 1), 1.0);
    }

    #[test]
    fn air_follows_its_daily_shapes() {
        let at = |h| air_levels(weekday(h), 8.0, 1.5, 0.0);
        // PM2.5: two maxima (morning, late evening) above the afternoon and night minima.
        assert!(at(8.5).pm25_ugm3 > at(13.0).pm25_ugm3);
        assert!(at(21.5).pm25_ugm3 > at(13.0).pm25_ugm3);
        assert!(at(21.5).pm25_ugm3 > at(4.0).pm25_ugm3);
        // O3 peaks in the afternoon; NO2 at rush hour.
        assert!(at(15.0).o3_ppb > 2.0 * at(7.0).o3_ppb);
        assert!(at(8.0).no2_ppb > 2.0 * at(3.0).no2_ppb);
        for h in 0..24 {
            let a = at(f64::from(h));
            assert!(a.pm10_ugm3 >= a.pm25_ugm3 && a.o3_ppb > 0.0);
        }
        // An episode adds on top.
        assert!(air_levels(weekday(13.0), 8.0, 1.5, 100.0).pm25_ugm3 > 100.0);
    }
}
