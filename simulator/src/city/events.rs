//! PURE: incidents and pollution episodes, scheduled deterministically from the seed.
//!
//! The schedule is generated lazily in blocks of [`BLOCK_MS`] simulated time from the start,
//! each from its own ChaCha8 stream of the seed, so the events of a block do not depend on how
//! far the run has got or how it was chunked. Block 0 also holds the demo pair: an incident 20
//! minutes and a PM2.5 episode 10 minutes after the start, so a short demo shows both.

use super::City;
use crate::draw;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Length of a schedule block, ms (6 h).
pub const BLOCK_MS: u64 = 6 * 3_600_000;
const MINUTE_MS: u64 = 60_000;
/// How many segments upstream an incident's queue reaches.
pub const MAX_SPILL: u32 = 3;
/// Minutes for the queue to reach the next upstream segment.
const SPILL_MINUTES_PER_SEGMENT: u64 = 4;
/// Minutes for a queue to build up on a segment, and to dissolve after the incident clears.
const QUEUE_BUILD_MINUTES: u64 = 10;
const QUEUE_CLEAR_MINUTES: u64 = 15;
/// Random incidents per district per simulated day.
const INCIDENTS_PER_DISTRICT_DAY: f64 = 0.3;
/// Random pollution episodes per city per simulated day.
const EPISODES_PER_DAY: f64 = 0.25;

/// Which events the schedule holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EventMode {
    /// The demo incident and episode near the start, then random ones.
    All,
    /// Only the demo incident and episode near the start.
    Demo,
    /// No incidents or episodes: the plain daily patterns.
    None,
}

/// Where a segment sits in the road network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Road {
    /// District index.
    pub district: usize,
    /// Corridor index, city-wide.
    pub corridor: usize,
    /// Position in the corridor, 0 = most upstream.
    pub position: u32,
    /// Lanes × capacity per lane, veh/h: how important the road is.
    pub capacity_vph: u32,
}

/// Every segment's [`Road`], in city order (district by district, file order).
pub fn roads(city: &City) -> Vec<Road> {
    let mut corridors: BTreeMap<(usize, &str), (usize, u32)> = BTreeMap::new();
    let mut out = Vec::new();
    for (di, d) in city.districts.iter().enumerate() {
        for s in &d.segments {
            let next = corridors.len();
            let entry = corridors.entry((di, &s.corridor)).or_insert((next, 0));
            out.push(Road {
                district: di,
                corridor: entry.0,
                position: entry.1,
                capacity_vph: (f64::from(s.lanes) * s.capacity_vphpl) as u32,
            });
            entry.1 += 1;
        }
    }
    out
}

/// A capacity cut on one segment, with its queue spilling upstream along the corridor.
#[derive(Debug, Clone, PartialEq)]
pub struct Incident {
    /// Segment index, city-wide.
    pub segment: usize,
    /// The segment's corridor and position.
    pub road: Road,
    /// When it starts, ms.
    pub start_ms: u64,
    /// When it clears, ms (the queue then dissolves over 15 minutes).
    pub end_ms: u64,
    /// Fraction of capacity left at the incident, e.g. 0.3 with two of three lanes blocked.
    pub capacity_factor: f64,
}

impl Incident {
    /// Capacity factor this incident imposes on a segment at `road`, at `t_ms` (1.0: none).
    /// The segment itself is cut at once; the queue reaches the `d`-th segment upstream after
    /// `4·d` minutes and builds there over 10 minutes, weaker by 20 % per segment.
    pub fn capacity_factor_at(&self, road: &Road, t_ms: u64) -> f64 {
        if road.corridor != self.road.corridor || road.position > self.road.position {
            return 1.0;
        }
        let d = self.road.position - road.position;
        if d > MAX_SPILL || t_ms < self.start_ms {
            return 1.0;
        }
        let arrive = self.start_ms + u64::from(d) * SPILL_MINUTES_PER_SEGMENT * MINUTE_MS;
        let build = ramp(t_ms, arrive, QUEUE_BUILD_MINUTES * MINUTE_MS);
        let build = if d == 0 { 1.0 } else { build };
        let clear = 1.0 - ramp(t_ms, self.end_ms, QUEUE_CLEAR_MINUTES * MINUTE_MS);
        1.0 - (1.0 - self.capacity_factor) * 0.8f64.powi(d as i32) * build * clear
    }

    fn over_at(&self) -> u64 {
        self.end_ms + QUEUE_CLEAR_MINUTES * MINUTE_MS
    }
}

/// A pollution episode in a district: extra PM2.5 ramping up, holding, then decaying.
#[derive(Debug, Clone, PartialEq)]
pub struct Episode {
    /// District index.
    pub district: usize,
    /// When the ramp starts, ms.
    pub start_ms: u64,
    /// Ramp-up, ms.
    pub ramp_ms: u64,
    /// Time at the peak, ms.
    pub hold_ms: u64,
    /// Decay, ms.
    pub decay_ms: u64,
    /// Extra PM2.5 at the peak, µg/m³.
    pub peak_pm25_ugm3: f64,
}

impl Episode {
    /// Extra PM2.5 in the episode's district at `t_ms`, µg/m³.
    pub fn pm25_at(&self, t_ms: u64) -> f64 {
        let up = ramp(t_ms, self.start_ms, self.ramp_ms);
        let down = ramp(
            t_ms,
            self.start_ms + self.ramp_ms + self.hold_ms,
            self.decay_ms,
        );
        self.peak_pm25_ugm3 * up * (1.0 - down)
    }

    fn over_at(&self) -> u64 {
        self.start_ms + self.ramp_ms + self.hold_ms + self.decay_ms
    }
}

/// Smooth 0→1 over `len` ms from `from`.
fn ramp(t: u64, from: u64, len: u64) -> f64 {
    if t <= from {
        0.0
    } else if len == 0 || t >= from + len {
        1.0
    } else {
        let x = (t - from) as f64 / len as f64;
        x * x * (3.0 - 2.0 * x)
    }
}

/// The incidents and episodes of a run, generated block by block as simulated time advances.
#[derive(Debug, Clone)]
pub struct Schedule {
    mode: EventMode,
    seed: u64,
    start_ms: u64,
    roads: Vec<Road>,
    districts: usize,
    air_districts: Vec<usize>,
    next_block: u64,
    /// Incidents not yet over, in start order.
    incidents: Vec<Incident>,
    /// Episodes not yet over, in start order.
    episodes: Vec<Episode>,
}

impl Schedule {
    /// The schedule of `city` for a run from `start_ms` with `seed`.
    pub fn new(city: &City, seed: u64, start_ms: u64, mode: EventMode) -> Schedule {
        Schedule {
            mode,
            seed,
            start_ms,
            roads: roads(city),
            districts: city.districts.len(),
            air_districts: city
                .districts
                .iter()
                .enumerate()
                .filter(|(_, d)| !d.stations.is_empty())
                .map(|(i, _)| i)
                .collect(),
            next_block: 0,
            incidents: Vec::new(),
            episodes: Vec::new(),
        }
    }

    /// The roads of the city, by segment index.
    pub fn roads(&self) -> &[Road] {
        &self.roads
    }

    /// Brings the schedule to `t_ms`: generates the blocks that have started, drops events that
    /// are over. `t_ms` must not go backwards by more than the recovery tails (the engine calls
    /// it with non-decreasing times).
    pub fn advance_to(&mut self, t_ms: u64) {
        while self.start_ms + self.next_block * BLOCK_MS <= t_ms {
            self.generate_block(self.next_block);
            self.next_block += 1;
        }
        self.incidents.retain(|i| i.over_at() > t_ms);
        self.episodes.retain(|e| e.over_at() > t_ms);
    }

    /// Capacity factor on the segment at `road` at `t_ms` from every incident (product).
    pub fn capacity_factor(&self, road: &Road, t_ms: u64) -> f64 {
        if self.incidents.is_empty() {
            return 1.0;
        }
        self.incidents
            .iter()
            .map(|i| i.capacity_factor_at(road, t_ms))
            .product()
    }

    /// Extra PM2.5 in `district` at `t_ms` from every episode, µg/m³.
    pub fn episode_pm25(&self, district: usize, t_ms: u64) -> f64 {
        self.episodes
            .iter()
            .filter(|e| e.district == district)
            .map(|e| e.pm25_at(t_ms))
            .sum()
    }

    /// Incidents generated and not yet over.
    pub fn incidents(&self) -> &[Incident] {
        &self.incidents
    }

    /// Episodes generated and not yet over.
    pub fn episodes(&self) -> &[Episode] {
        &self.episodes
    }

    fn generate_block(&mut self, block: u64) {
        if self.mode == EventMode::None {
            return;
        }
        let mut rng = draw::stream(self.seed, draw::EVENTS_STREAM + block);
        let block_start = self.start_ms + block * BLOCK_MS;
        let mut incidents = Vec::new();
        let mut episodes = Vec::new();
        if block == 0 {
            if let Some(i) = self.incident(&mut rng, block_start + 20 * MINUTE_MS, true) {
                incidents.push(i);
            }
            if let Some(e) = self.episode(&mut rng, block_start + 10 * MINUTE_MS, true) {
                episodes.push(e);
            }
        }
        if self.mode == EventMode::All {
            let days = BLOCK_MS as f64 / 86_400_000.0;
            let n = draw::poisson(
                &mut rng,
                INCIDENTS_PER_DISTRICT_DAY * self.districts as f64 * days,
            );
            for _ in 0..n {
                let at = block_start + draw::below(&mut rng, BLOCK_MS);
                incidents.extend(self.incident(&mut rng, at, false));
            }
            for _ in 0..draw::poisson(&mut rng, EPISODES_PER_DAY * days) {
                let at = block_start + draw::below(&mut rng, BLOCK_MS);
                episodes.extend(self.episode(&mut rng, at, false));
            }
        }
        incidents.sort_by_key(|i| i.start_ms);
        episodes.sort_by_key(|e| e.start_ms);
        self.incidents.extend(incidents);
        self.episodes.extend(episodes);
    }

    fn incident(&self, rng: &mut ChaCha8Rng, start_ms: u64, demo: bool) -> Option<Incident> {
        // Prefer segments with a queue to spill into; the demo one also on a major road.
        let mut candidates: Vec<usize> = (0..self.roads.len())
            .filter(|&i| self.roads[i].position >= if demo { MAX_SPILL } else { 1 })
            .collect();
        if candidates.is_empty() {
            candidates = (0..self.roads.len()).collect();
        }
        if demo {
            candidates.sort_by_key(|&i| (std::cmp::Reverse(self.roads[i].capacity_vph), i));
            candidates.truncate(candidates.len().div_ceil(4));
        }
        if candidates.is_empty() {
            return None;
        }
        let segment = candidates[draw::below(rng, candidates.len() as u64) as usize];
        let (minutes, factor) = if demo {
            (40, draw::uniform(rng, 0.25, 0.35))
        } else {
            (20 + draw::below(rng, 41), draw::uniform(rng, 0.2, 0.5))
        };
        Some(Incident {
            segment,
            road: self.roads[segment],
            start_ms,
            end_ms: start_ms + minutes * MINUTE_MS,
            capacity_factor: factor,
        })
    }

    fn episode(&self, rng: &mut ChaCha8Rng, start_ms: u64, demo: bool) -> Option<Episode> {
        if self.air_districts.is_empty() {
            return None;
        }
        let district =
            self.air_districts[draw::below(rng, self.air_districts.len() as u64) as usize];
        let (ramp, hold, decay, peak) = if demo {
            (20, 180, 60, draw::uniform(rng, 110.0, 160.0))
        } else {
            (
                30 + draw::below(rng, 61),
                120 + draw::below(rng, 241),
                60 + draw::below(rng, 121),
                draw::uniform(rng, 70.0, 180.0),
            )
        };
        Some(Episode {
            district,
            start_ms,
            ramp_ms: ramp * MINUTE_MS,
            hold_ms: hold * MINUTE_MS,
            decay_ms: decay * MINUTE_MS,
            peak_pm25_ugm3: peak,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_767_225_600_000;
    const H: u64 = 3_600_000;

    fn schedule(seed: u64, mode: EventMode) -> Schedule {
        Schedule::new(&City::builtin(), seed, T0, mode)
    }

    #[test]
    fn corridors_number_their_segments_upstream_first() {
        let roads = roads(&City::builtin());
        let first = roads[0];
        assert_eq!(first.position, 0);
        assert_eq!(roads[1].corridor, first.corridor);
        assert_eq!(roads[1].position, 1);
    }

    #[test]
    fn the_demo_incident_and_episode_happen_in_the_first_hours() {
        let mut s = schedule(7, EventMode::Demo);
        s.advance_to(T0);
        let inc = s.incidents()[0].clone();
        assert_eq!(inc.start_ms, T0 + 20 * MINUTE_MS);
        assert!(inc.road.position >= MAX_SPILL);
        assert!((0.25..0.35).contains(&inc.capacity_factor));
        let ep = s.episodes()[0].clone();
        assert_eq!(ep.start_ms, T0 + 10 * MINUTE_MS);
        // Above the unhealthy PM2.5 level (55.4 µg/m³) for at least three hours.
        let above: Vec<u64> = (0..=8 * 12)
            .map(|i| T0 + i * 5 * MINUTE_MS)
            .filter(|&t| s.episode_pm25(ep.district, t) > 60.0)
            .collect();
        assert!(above.len() * 5 >= 180, "{}", above.len());
        assert!(*above.first().unwrap() < T0 + H);
    }

    #[test]
    fn incidents_spill_upstream_and_clear() {
        let mut s = schedule(7, EventMode::Demo);
        s.advance_to(T0);
        let inc = s.incidents()[0].clone();
        let at = |d: u32, t: u64| {
            let mut road = inc.road;
            road.position -= d;
            inc.capacity_factor_at(&road, t)
        };
        let mid = inc.start_ms + 30 * MINUTE_MS;
        assert!((at(0, inc.start_ms + 1) - inc.capacity_factor).abs() < 1e-9);
        assert!(at(0, mid) < at(1, mid) && at(1, mid) < at(2, mid) && at(2, mid) < at(3, mid));
        assert_eq!(at(1, inc.start_ms + MINUTE_MS), 1.0, "queue not there yet");
        assert_eq!(at(0, inc.end_ms + 16 * MINUTE_MS), 1.0);
        assert_eq!(at(0, inc.start_ms - 1), 1.0);
        let mut downstream = inc.road;
        downstream.position += 1;
        assert_eq!(inc.capacity_factor_at(&downstream, mid), 1.0);
    }

    #[test]
    fn schedules_are_deterministic_per_seed_and_differ_between_seeds() {
        let collect = |seed| {
            let mut s = schedule(seed, EventMode::All);
            let mut seen = Vec::new();
            for h in 0..72 {
                s.advance_to(T0 + h * H);
                for i in s.incidents() {
                    if !seen.contains(&(i.segment, i.start_ms)) {
                        seen.push((i.segment, i.start_ms));
                    }
                }
            }
            seen
        };
        assert_eq!(collect(1), collect(1));
        assert_ne!(collect(1), collect(2));
        assert!(collect(1).len() > 3, "random incidents over three days");
    }

    #[test]
    fn no_events_mode_is_quiet() {
        let mut s = schedule(7, EventMode::None);
        s.advance_to(T0 + 48 * H);
        assert!(s.incidents().is_empty() && s.episodes().is_empty());
        assert_eq!(s.capacity_factor(&s.roads()[0], T0 + H), 1.0);
    }
}
