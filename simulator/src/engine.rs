//! PURE: the simulation engine. [`Simulator::step`] turns simulated time into the messages the
//! city's sensors send, in a deterministic order, with faults applied; no clock, no I/O.
//!
//! Each sensor reports at the end of each counting interval: reading `seq` of a sensor has
//! `ts = seq · interval + phase`, where the phase (0..interval, from a hash of the sensor id)
//! spreads sensors over the interval. So `seq` is the interval's index since the Unix epoch: it
//! grows by one per reading, keeps growing across restarts, and a rerun over the same window
//! reproduces the same `Nats-Msg-Id`s, which JetStream deduplicates.
//!
//! Messages come out ordered by emission time (a reading's emission time is its `ts`, except for
//! clock-skewed ones, emitted on time with a wrong `ts`, and late ones, held back), ties broken
//! by held-back messages first, then sensor index (city order). Every random draw comes from the
//! reading's own ChaCha8 block ([`draw::ReadingRngs`]), so the output is a function of the city,
//! the [`Settings`] and nothing else.

use crate::city::events::{EventMode, Road, Schedule};
use crate::city::patterns::{
    self, FundamentalDiagram, LocalTime, Queue, EFFECTIVE_VEHICLE_LENGTH_M,
};
use crate::city::City;
use crate::draw::{self, ReadingRngs};
use crate::faults::{self, Fault, FaultRates, FaultState};
use bytes::Bytes;
use citypulse_schema::{Air, Kind, Measurement, Pollutant, Reading, SensorSubject, Traffic};
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What a run simulates, besides the city.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Seed of every random draw.
    pub seed: u64,
    /// Simulated start, ms since the Unix epoch: the first reading of each sensor is the first
    /// one with `ts >= start_ms`.
    pub start_ms: u64,
    /// Loop detector counting interval, seconds (≥ 1).
    pub traffic_interval_s: u32,
    /// Air station sampling interval, seconds (≥ 1).
    pub air_interval_s: u32,
    /// Fault rates (validated by the caller, see [`FaultRates::validate`]).
    pub faults: FaultRates,
    /// Incidents and episodes.
    pub events: EventMode,
}

impl Settings {
    /// Defaults: 30 s and 60 s intervals, no faults, all events.
    pub fn new(seed: u64, start_ms: u64) -> Settings {
        Settings {
            seed,
            start_ms,
            traffic_interval_s: 30,
            air_interval_s: 60,
            faults: FaultRates::NONE,
            events: EventMode::All,
        }
    }
}

/// One message the simulator sends (or, for a dropout, would have sent), with its ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// `sensors.<district>.<kind>.<sensor_id>`.
    pub subject: Arc<str>,
    /// `Nats-Msg-Id`: [`Reading::msg_id`] of the reading (`<sensor>:<seq>`); a duplicate copy
    /// gets `<sensor>:<seq>:dup` so it reaches the stream (a device retry the server cannot
    /// recognise) while our own publish retries stay idempotent.
    pub msg_id: String,
    /// The payload; `None` for a dropout (recorded, not sent).
    pub payload: Option<Bytes>,
    /// Simulated time at which it is sent, ms: the pacer never lets it go before the wall clock
    /// reaches it.
    pub emit_at_ms: u64,
    /// Sensor kind.
    pub kind: Kind,
    /// Sequence number of the reading.
    pub seq: u64,
    /// `ts` as carried by the payload (shifted for [`Fault::ClockSkew`]).
    pub ts: u64,
    /// The fault, `None` for a valid, on-time, first delivery.
    pub fault: Option<Fault>,
    /// What the fault did, for humans (e.g. `speed_kmh=400`, `delay_intervals=4`).
    pub detail: Option<String>,
    /// The measurement the payload carries, when it is a decodable reading of this subject.
    pub values: Option<Measurement>,
}

#[derive(Debug, Clone)]
enum Spec {
    Traffic {
        road: Road,
        lanes: u32,
        fd: FundamentalDiagram,
        peak_demand_vphpl: f64,
    },
    Air {
        district: usize,
        pollutants: Vec<Pollutant>,
        weather: bool,
        pm25_background: f64,
        so2_background: f64,
    },
}

#[derive(Debug, Clone)]
struct Sensor {
    /// Position in city order: breaks ties between readings due at the same ms.
    rank: u32,
    id: String,
    district: String,
    subject: Arc<str>,
    stream: u64,
    interval_ms: u64,
    phase_ms: u64,
    spec: Spec,
}

#[derive(Debug, Clone, Default)]
struct State {
    /// Slow multiplicative noise (log scale): demand fluctuation or dispersion.
    noise: Option<f64>,
    queue: Queue,
    last: Option<Measurement>,
    stuck_values: Option<Measurement>,
    faults: FaultState,
}

/// Correlation time of traffic demand noise, s.
const TRAFFIC_NOISE_TAU_S: f64 = 600.0;
/// Demand noise, log scale: 5 % over 10-minute spans (the counts add their own Poisson noise per
/// interval). With peak demand at most 0.85 of capacity, a span over capacity is a 3-sigma event.
const TRAFFIC_NOISE_SIGMA: f64 = 0.05;
/// Correlation time of air dispersion noise, s.
const AIR_NOISE_TAU_S: f64 = 1800.0;
const AIR_NOISE_SIGMA: f64 = 0.12;

/// The simulation: sensors, their state, the event schedule, and the queue of what is due.
#[derive(Debug, Clone)]
pub struct Simulator {
    settings: Settings,
    utc_offset_minutes: i32,
    sensors: Vec<Sensor>,
    states: Vec<State>,
    /// One cursor per distinct interval, walking its sensors in due order.
    due: Vec<Cursor>,
    /// Held-back (late) messages by `(emit time, order of holding)`.
    held: BTreeMap<(u64, u64), Outgoing>,
    held_count: u64,
    rngs: ReadingRngs,
    schedule: Schedule,
}

impl Simulator {
    /// A simulator of `city` (validated) from `settings.start_ms`.
    pub fn new(city: &City, settings: Settings) -> Simulator {
        let traffic_ms = u64::from(settings.traffic_interval_s.max(1)) * 1000;
        let air_ms = u64::from(settings.air_interval_s.max(1)) * 1000;
        let schedule = Schedule::new(city, settings.seed, settings.start_ms, settings.events);
        let roads = schedule.roads();
        let mut sensors = Vec::with_capacity(city.sensor_count());
        let mut segment = 0;
        for (di, d) in city.districts.iter().enumerate() {
            for s in &d.segments {
                for id in &s.detectors {
                    sensors.push(sensor(
                        id,
                        &d.id,
                        Kind::Traffic,
                        traffic_ms,
                        Spec::Traffic {
                            road: roads[segment],
                            lanes: s.lanes,
                            fd: FundamentalDiagram::for_facility(
                                s.free_flow_kmh,
                                s.capacity_vphpl,
                                s.facility,
                            ),
                            peak_demand_vphpl: s.peak_demand * s.capacity_vphpl,
                        },
                    ));
                }
                segment += 1;
            }
            for st in &d.stations {
                sensors.push(sensor(
                    &st.id,
                    &d.id,
                    Kind::Air,
                    air_ms,
                    Spec::Air {
                        district: di,
                        pollutants: st.pollutants.clone(),
                        weather: st.weather,
                        pm25_background: d.pm25_background_ugm3,
                        so2_background: d.so2_background_ppb,
                    },
                ));
            }
        }
        for (rank, s) in sensors.iter_mut().enumerate() {
            s.rank = rank as u32;
        }
        // Stored in walk order (by interval, then phase, then rank) so stepping reads sensor and
        // state memory sequentially.
        sensors.sort_by_key(|s| (s.interval_ms, s.phase_ms, s.rank));
        let due = Cursor::all(&sensors, settings.start_ms);
        Simulator {
            utc_offset_minutes: city.utc_offset_minutes,
            states: vec![State::default(); sensors.len()],
            sensors,
            due,
            held: BTreeMap::new(),
            held_count: 0,
            rngs: ReadingRngs::new(settings.seed),
            schedule,
            settings,
        }
    }

    /// Number of sensors.
    pub fn sensor_count(&self) -> usize {
        self.sensors.len()
    }

    /// The event schedule (incidents and episodes in progress).
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    /// Emission time of the next message, ms.
    pub fn next_emit_ms(&self) -> Option<u64> {
        let sensor = self.next_due().map(|(t, _, _)| t);
        let held = self.held.keys().next().map(|(t, _)| *t);
        match (sensor, held) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Appends to `out`, in order, every message whose emission time is before `before_ms`, at
    /// most `limit` of them (the rest stay due). Returns how many were appended.
    pub fn step(&mut self, before_ms: u64, limit: usize, out: &mut Vec<Outgoing>) -> usize {
        let start_len = out.len();
        while out.len() - start_len < limit {
            let sensor = self.next_due();
            let held = self.held.keys().next().copied();
            match (sensor, held) {
                (_, Some(key))
                    if key.0 < before_ms && sensor.is_none_or(|(t, _, _)| key.0 <= t) =>
                {
                    if let Some(msg) = self.held.remove(&key) {
                        out.push(msg);
                    }
                }
                (Some((t, i, c)), _) if t < before_ms => {
                    self.due[c].advance();
                    self.generate(i as usize, t, out);
                }
                _ => break,
            }
        }
        out.len() - start_len
    }

    /// Appends every held-back (late) message, in order, regardless of its emission time: the
    /// end of a run delivers what it still holds, so nothing generated is lost.
    pub fn drain_held(&mut self, out: &mut Vec<Outgoing>) {
        out.extend(std::mem::take(&mut self.held).into_values());
    }

    /// `(ts, sensor index, cursor)` of the next reading due: the earliest over the cursors,
    /// ties to the sensor first in city order.
    fn next_due(&self) -> Option<(u64, u32, usize)> {
        self.due
            .iter()
            .enumerate()
            .filter_map(|(c, cur)| cur.peek(&self.sensors).map(|(t, i)| (t, i, c)))
            .min_by_key(|&(t, i, _)| (t, self.sensors[i as usize].rank))
    }

    /// Makes sensor `i`'s reading due at `due_ms`: its honest value, then its fault, if any,
    /// applied. Every draw comes from the reading's own generator, in this order.
    fn generate(&mut self, i: usize, due_ms: u64, out: &mut Vec<Outgoing>) {
        self.schedule.advance_to(due_ms);
        let sensor = &self.sensors[i];
        let seq = due_ms / sensor.interval_ms;
        let mut rng = self.rngs.for_reading(sensor.stream, seq);
        let honest = self.measure(i, due_ms, &mut rng);
        let (data, fault) = self.decide_fault(i, honest, &mut rng);
        let sensor = &self.sensors[i];
        let reading = Reading {
            sensor: sensor.id.clone(),
            district: sensor.district.clone(),
            ts: due_ms,
            seq,
            data,
        };
        let msg = Outgoing {
            subject: Arc::clone(&sensor.subject),
            msg_id: reading.msg_id(),
            payload: None,
            emit_at_ms: due_ms,
            kind: reading.kind(),
            seq,
            ts: due_ms,
            fault,
            detail: None,
            values: None,
        };
        self.emit(i, msg, reading, &mut rng, out);
    }

    /// What sensor `i` honestly measures at `due_ms` (its noise and, for a loop, its queue
    /// move on).
    fn measure(&mut self, i: usize, due_ms: u64, rng: &mut ChaCha8Rng) -> Measurement {
        let sensor = &self.sensors[i];
        let state = &mut self.states[i];
        let t = LocalTime::at(due_ms, self.utc_offset_minutes);
        match &sensor.spec {
            Spec::Traffic {
                road,
                lanes,
                fd,
                peak_demand_vphpl,
            } => {
                let noise = ar1(
                    state,
                    rng,
                    sensor.interval_ms,
                    TRAFFIC_NOISE_TAU_S,
                    TRAFFIC_NOISE_SIGMA,
                );
                let demand = patterns::traffic_demand(t) * peak_demand_vphpl * noise.exp();
                let factor = self.schedule.capacity_factor(road, due_ms);
                let interval_s = (sensor.interval_ms / 1000) as u32;
                let (flow, queue) = fd.step(demand, factor, state.queue, f64::from(interval_s));
                state.queue = queue;
                let capacity = fd.capacity_vphpl * factor.clamp(0.01, 1.0);
                Measurement::Traffic(sample_traffic(rng, &flow, fd, capacity, *lanes, interval_s))
            }
            Spec::Air {
                district,
                pollutants,
                weather,
                pm25_background,
                so2_background,
            } => {
                let noise = ar1(
                    state,
                    rng,
                    sensor.interval_ms,
                    AIR_NOISE_TAU_S,
                    AIR_NOISE_SIGMA,
                );
                let episode = self.schedule.episode_pm25(*district, due_ms);
                let levels = patterns::air_levels(t, *pm25_background, *so2_background, episode);
                let mut air = sample_air(rng, &levels, noise, pollutants, *weather);
                // The station's averaging interval, ending at `ts` (the hour-coverage rule).
                air.interval_s = Some((sensor.interval_ms / 1000) as u32);
                Measurement::Air(air)
            }
        }
    }

    /// Whether sensor `i`'s reading is faulty, and the values it sends: the honest ones, or
    /// the frozen ones of a stuck run.
    fn decide_fault(
        &mut self,
        i: usize,
        honest: Measurement,
        rng: &mut ChaCha8Rng,
    ) -> (Measurement, Option<Fault>) {
        let state = &mut self.states[i];
        let previous = state.last.replace(honest.clone());
        let fault = faults::decide(
            &self.settings.faults,
            &mut state.faults,
            previous.is_some(),
            rng,
        );
        let mut data = honest;
        if fault == Some(Fault::Stuck) {
            // `decide` only starts a run when there is a previous reading to repeat.
            let frozen = state
                .stuck_values
                .get_or_insert_with(|| previous.unwrap_or_else(|| data.clone()));
            data = frozen.clone();
        } else {
            state.stuck_values = None;
        }
        (data, fault)
    }

    /// Appends `msg` (sensor `i`'s reading) to `out` as its fault (`msg.fault`) makes it: sent
    /// as is, dropped, spiked, negative, clock-skewed, held back, doubled or malformed.
    fn emit(
        &mut self,
        i: usize,
        msg: Outgoing,
        reading: Reading,
        rng: &mut ChaCha8Rng,
        out: &mut Vec<Outgoing>,
    ) {
        let interval_ms = self.sensors[i].interval_ms;
        let due_ms = msg.emit_at_ms;
        match msg.fault {
            None | Some(Fault::Stuck) => out.push(finish(msg, reading, None)),
            Some(Fault::Dropout) => out.push(msg),
            Some(Fault::Spike) => {
                let mut reading = reading;
                let detail = spike(&mut reading.data);
                out.push(finish(msg, reading, Some(detail)));
            }
            Some(Fault::Negative) => {
                let mut reading = reading;
                let detail = negative(rng, &mut reading.data);
                out.push(finish(msg, reading, Some(detail)));
            }
            Some(Fault::ClockSkew) => {
                let mut reading = reading;
                // Ahead by 25 hours to 7 days (a clock that lost its date): beyond the 24 hours
                // of history an accelerated run replays by default, so ingest's wall-clock check
                // (`future_timestamp`) catches every one of them, in real time and in catch-up.
                let shift = if draw::chance(rng, 0.5) {
                    draw::uniform(rng, 90_000_000.0, 604_800_000.0) as i64
                } else {
                    -(draw::uniform(rng, 7_200_000.0, 172_800_000.0) as i64)
                };
                reading.ts = reading.ts.saturating_add_signed(shift);
                let msg = Outgoing {
                    ts: reading.ts,
                    ..msg
                };
                out.push(finish(msg, reading, Some(format!("shift_ms={shift:+}"))));
            }
            Some(Fault::Late) => {
                let n = 2 + draw::below(rng, 9);
                let msg = Outgoing {
                    emit_at_ms: due_ms + n * interval_ms,
                    ..finish(msg, reading, Some(format!("delay_intervals={n}")))
                };
                self.held.insert((msg.emit_at_ms, self.held_count), msg);
                self.held_count += 1;
            }
            Some(Fault::Duplicate) => {
                let first = finish(Outgoing { fault: None, ..msg }, reading, None);
                let copy = Outgoing {
                    msg_id: format!("{}:dup", first.msg_id),
                    fault: Some(Fault::Duplicate),
                    ..first.clone()
                };
                out.push(first);
                out.push(copy);
            }
            Some(Fault::Malformed) => {
                let other = &self.sensors[(i + 1) % self.sensors.len()].id;
                let (payload, detail) = malformed(rng, reading, other);
                out.push(Outgoing {
                    payload: Some(payload),
                    detail: Some(detail),
                    ..msg
                });
            }
        }
    }
}

fn sensor(id: &str, district: &str, kind: Kind, interval_ms: u64, spec: Spec) -> Sensor {
    let stream = draw::sensor_stream(id);
    let subject = SensorSubject {
        district: district.to_owned(),
        kind,
        sensor: id.to_owned(),
    };
    Sensor {
        rank: 0,
        subject: Arc::from(subject.sensors_subject()),
        id: subject.sensor,
        district: subject.district,
        stream,
        interval_ms,
        phase_ms: crate::city::builtin::mix(stream) % interval_ms,
        spec,
    }
}

/// The sensors sharing one interval, stored contiguously in due order within a cycle (by phase,
/// then rank): reading `k` of the walk is sensor `range.start + k % n` at
/// `ts = (cycle + k / n) · interval + phase`. Cheaper than a priority queue over 100,000
/// sensors, and the same order.
#[derive(Debug, Clone)]
struct Cursor {
    interval_ms: u64,
    start: usize,
    len: usize,
    pos: usize,
    cycle: u64,
}

impl Cursor {
    /// One cursor per distinct interval of `sensors` (sorted by interval, phase, rank), each
    /// positioned at the first reading at or after `start_ms`.
    fn all(sensors: &[Sensor], start_ms: u64) -> Vec<Cursor> {
        let mut cursors = Vec::new();
        let mut start = 0;
        while start < sensors.len() {
            let interval_ms = sensors[start].interval_ms;
            let len = sensors[start..].partition_point(|s| s.interval_ms == interval_ms);
            let group = &sensors[start..start + len];
            // First ts >= start_ms: in this cycle if the phase is not past, else the next one.
            let offset = start_ms % interval_ms;
            let mut cursor = Cursor {
                interval_ms,
                start,
                len,
                pos: group.partition_point(|s| s.phase_ms < offset),
                cycle: start_ms / interval_ms,
            };
            if cursor.pos == len {
                cursor.pos = 0;
                cursor.cycle += 1;
            }
            cursors.push(cursor);
            start += len;
        }
        cursors
    }

    fn peek(&self, sensors: &[Sensor]) -> Option<(u64, u32)> {
        let i = self.start + self.pos;
        let s = sensors.get(i)?;
        Some((self.cycle * self.interval_ms + s.phase_ms, i as u32))
    }

    fn advance(&mut self) {
        self.pos += 1;
        if self.pos == self.len {
            self.pos = 0;
            self.cycle += 1;
        }
    }
}

/// Advances the sensor's AR(1) log-noise by one interval; starts from the stationary law.
fn ar1(state: &mut State, rng: &mut ChaCha8Rng, interval_ms: u64, tau_s: f64, sigma: f64) -> f64 {
    let z = draw::normal(rng);
    let next = match state.noise {
        None => sigma * z,
        Some(x) => {
            let rho = (-(interval_ms as f64 / 1000.0) / tau_s).exp();
            rho * x + sigma * (1.0 - rho * rho).sqrt() * z
        }
    };
    state.noise = Some(next);
    next
}

/// Rounds to `decimals` decimal places, giving the f64 nearest the decimal (what an instrument
/// that prints 0.2072 means), not a multiple of an inexact step.
fn round_to(x: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (x * scale).round() / scale
}

/// What a loop reports for an interval in `flow`: a Poisson count, never more than the
/// available capacity (`capacity_vphpl`, per lane) lets through in the interval, a noisy
/// space-mean speed, and the occupancy those imply (or, in a standing queue with nothing
/// crossing, the jam's).
fn sample_traffic(
    rng: &mut ChaCha8Rng,
    flow: &patterns::FlowState,
    fd: &FundamentalDiagram,
    capacity_vphpl: f64,
    lanes: u32,
    interval_s: u32,
) -> Traffic {
    let lane_seconds = f64::from(lanes) * f64::from(interval_s);
    let expected = flow.flow_vphpl * lane_seconds / 3600.0;
    // Multiplied before dividing, so an integer capacity gives an exact bound (900 veh/h on 2
    // lanes over 30 s is 15 vehicles, not 14.999…).
    let most = (capacity_vphpl * lane_seconds / 3600.0).floor() as u64;
    let count = draw::poisson(rng, expected)
        .min(most)
        .min(u64::from(u32::MAX)) as u32;
    let (speed_kmh, occupancy) = if count > 0 {
        let v =
            (flow.speed_kmh * (0.04 * draw::normal(rng)).exp()).clamp(2.0, 1.3 * fd.free_flow_kmh);
        let v = round_to(v, 1);
        (Some(v), patterns::occupancy(count, v, interval_s, lanes))
    } else if flow.congested {
        let occ = flow.density_vpkmpl * EFFECTIVE_VEHICLE_LENGTH_M / 1000.0;
        (None, occ.clamp(0.0, 1.0))
    } else {
        (None, 0.0)
    };
    Traffic {
        count,
        interval_s,
        occupancy: round_to(occupancy, 4),
        speed_kmh,
        lanes,
    }
}

/// What a station reports: each measured pollutant with the slow dispersion noise and its own
/// sensor noise, rounded like a real instrument.
fn sample_air(
    rng: &mut ChaCha8Rng,
    levels: &patterns::AirLevels,
    noise: f64,
    pollutants: &[Pollutant],
    weather: bool,
) -> Air {
    let mut air = Air::default();
    for &p in pollutants {
        let own = 0.04 * draw::normal(rng);
        // Dispersion dilutes primary pollutants together; ozone is formed, so it moves less.
        let scale = |k: f64| (k * noise + own).exp();
        match p {
            Pollutant::Pm25 => air.pm25_ugm3 = Some(round_to(levels.pm25_ugm3 * scale(1.0), 1)),
            Pollutant::Pm10 => air.pm10_ugm3 = Some(round_to(levels.pm10_ugm3 * scale(1.0), 1)),
            Pollutant::O3 => air.o3_ppb = Some(round_to(levels.o3_ppb * scale(-0.3), 1)),
            Pollutant::No2 => air.no2_ppb = Some(round_to(levels.no2_ppb * scale(0.8), 1)),
            Pollutant::So2 => air.so2_ppb = Some(round_to(levels.so2_ppb * scale(0.5), 1)),
            Pollutant::Co => air.co_ppm = Some(round_to(levels.co_ppm * scale(0.8), 2)),
        }
    }
    if weather {
        air.temp_c = Some(round_to(levels.temp_c + 0.3 * draw::normal(rng), 1));
        air.rh_pct = Some(round_to(
            (levels.rh_pct + 2.0 * draw::normal(rng)).clamp(5.0, 100.0),
            1,
        ));
    }
    air
}

/// Encodes `reading` into `msg`, recording its values.
fn finish(msg: Outgoing, reading: Reading, detail: Option<String>) -> Outgoing {
    Outgoing {
        payload: Some(Bytes::from(reading.encode())),
        values: Some(reading.data),
        detail,
        ..msg
    }
}

fn spike(data: &mut Measurement) -> String {
    match data {
        Measurement::Traffic(t) => {
            if t.speed_kmh.is_some() {
                t.speed_kmh = Some(400.0);
                "speed_kmh=400".to_owned()
            } else {
                t.count = 5000;
                "count=5000".to_owned()
            }
        }
        Measurement::Air(a) => {
            let fields = [
                ("pm25_ugm3", &mut a.pm25_ugm3),
                ("pm10_ugm3", &mut a.pm10_ugm3),
                ("o3_ppb", &mut a.o3_ppb),
                ("no2_ppb", &mut a.no2_ppb),
                ("so2_ppb", &mut a.so2_ppb),
                ("co_ppm", &mut a.co_ppm),
            ];
            for (name, v) in fields {
                if let Some(x) = v {
                    *x = round_to(*x * 20.0, 2).max(500.0);
                    return format!("{name}={x}");
                }
            }
            a.pm25_ugm3 = Some(999.9);
            "pm25_ugm3=999.9".to_owned()
        }
    }
}

fn negative(rng: &mut ChaCha8Rng, data: &mut Measurement) -> String {
    let mut fields: Vec<(&'static str, &mut f64)> = match data {
        Measurement::Traffic(t) => {
            let mut f = vec![("occupancy", &mut t.occupancy)];
            if let Some(v) = t.speed_kmh.as_mut() {
                f.push(("speed_kmh", v));
            }
            f
        }
        Measurement::Air(a) => [
            ("pm25_ugm3", a.pm25_ugm3.as_mut()),
            ("pm10_ugm3", a.pm10_ugm3.as_mut()),
            ("o3_ppb", a.o3_ppb.as_mut()),
            ("no2_ppb", a.no2_ppb.as_mut()),
            ("so2_ppb", a.so2_ppb.as_mut()),
            ("co_ppm", a.co_ppm.as_mut()),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| (n, v)))
        .collect(),
    };
    if fields.is_empty() {
        if let Measurement::Air(a) = data {
            a.pm25_ugm3 = Some(-1.0);
        }
        return "pm25_ugm3=-1".to_owned();
    }
    let k = draw::below(rng, fields.len() as u64) as usize;
    let (name, v) = &mut fields[k];
    **v = -(v.abs().max(0.01));
    format!("{name}={}", **v)
}

/// A payload that is not a valid reading of its subject: truncated CBOR, a field of the wrong
/// type, or a payload speaking for another sensor or district.
fn malformed(rng: &mut ChaCha8Rng, mut reading: Reading, other_sensor: &str) -> (Bytes, String) {
    match draw::below(rng, 3) {
        0 => {
            let bytes = reading.encode();
            // Any proper prefix of a definite-length map is truncated CBOR.
            let keep = 1 + draw::below(rng, bytes.len() as u64 - 1) as usize;
            (
                Bytes::copy_from_slice(&bytes[..keep]),
                format!("bad_cbor: truncated to {keep} of {} bytes", bytes.len()),
            )
        }
        1 => {
            let bytes = reading.encode();
            let field = ["ts", "seq", "sensor"][draw::below(rng, 3) as usize];
            let value: ciborium::Value = match ciborium::from_reader(bytes.as_slice()) {
                Ok(v) => v,
                Err(_) => ciborium::Value::Null,
            };
            let replaced = match value {
                ciborium::Value::Map(entries) => ciborium::Value::Map(
                    entries
                        .into_iter()
                        .map(|(k, v)| {
                            if k.as_text() == Some(field) {
                                let wrong = match v {
                                    ciborium::Value::Integer(i) => {
                                        ciborium::Value::Text(i128::from(i).to_string())
                                    }
                                    _ => ciborium::Value::Integer(7.into()),
                                };
                                (k, wrong)
                            } else {
                                (k, v)
                            }
                        })
                        .collect(),
                ),
                other => other,
            };
            let mut out = Vec::new();
            // Writing a Value into a Vec cannot fail.
            let _ = ciborium::into_writer(&replaced, &mut out);
            (Bytes::from(out), format!("wrong_type: {field}"))
        }
        _ => {
            if other_sensor != reading.sensor && draw::chance(rng, 0.5) {
                reading.sensor = other_sensor.to_owned();
                (
                    Bytes::from(reading.encode()),
                    format!("identity: sensor={other_sensor}"),
                )
            } else {
                reading.district = format!("{}x", reading.district);
                let d = reading.district.clone();
                (
                    Bytes::from(reading.encode()),
                    format!("identity: district={d}"),
                )
            }
        }
    }
}

/// Runs a whole window through a fresh simulator: every message with emission time before
/// `end_ms`, then the held-back ones. Convenient for tests and benchmarks.
pub fn run_window(city: &City, settings: Settings, end_ms: u64) -> Vec<Outgoing> {
    let mut sim = Simulator::new(city, settings);
    let mut out = Vec::new();
    sim.step(end_ms, usize::MAX, &mut out);
    sim.drain_held(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: u64 = 1_767_592_800_123;

    #[test]
    fn readings_come_in_ts_then_sensor_order_each_due_one_exactly_once() {
        let city = City::builtin();
        let mut settings = Settings::new(1, START);
        settings.air_interval_s = 45;
        let end = START + 5 * 60_000;
        let sim = Simulator::new(&city, settings.clone());
        // Brute force: every k·interval + phase in [start, end), sorted by (ts, city order).
        let mut expected: Vec<(u64, u32)> = Vec::new();
        for s in &sim.sensors {
            let mut k = START / s.interval_ms - 1;
            loop {
                let ts = k * s.interval_ms + s.phase_ms;
                if ts >= end {
                    break;
                }
                if ts >= START {
                    expected.push((ts, s.rank));
                }
                k += 1;
            }
        }
        expected.sort_unstable();
        let got: Vec<(u64, u32)> = run_window(&city, settings, end)
            .iter()
            .map(|m| {
                let s = sim
                    .sensors
                    .iter()
                    .find(|s| *s.subject == *m.subject)
                    .unwrap();
                (m.ts, s.rank)
            })
            .collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn seq_is_the_interval_index_since_the_epoch() {
        let city = City::builtin();
        let msgs = run_window(&city, Settings::new(1, START), START + 60_000);
        for m in msgs {
            let interval = if m.kind == Kind::Traffic {
                30_000
            } else {
                60_000
            };
            assert_eq!(m.seq, m.ts / interval);
            assert!(m.ts >= START && m.ts < START + 60_000);
        }
    }
}
