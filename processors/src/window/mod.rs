//! PURE: the windowing core. Event-time windows over one partition's readings, closed by a
//! watermark, producing [`WindowResult`]s. Synchronous and deterministic: processing time is a
//! parameter, there is no I/O, and the whole state serializes (serde) for checkpoints.
//!
//! The API follows Vector's transforms and Arroyo's window operators:
//! - [`PartitionState::observe`] takes one reading and says what became of it ([`Observed`]):
//!   accepted into its windows, late (behind the watermark: counted by [`LateReason`], never
//!   merged), or rejected ([`Rejection`]). Every reading gets exactly one outcome, so
//!   accepted + late + rejected = input.
//! - [`PartitionState::advance_idle`] moves the watermark of a quiet partition
//!   ([`Watermark`] explains how).
//! - [`PartitionState::close_ready`] appends the results of every window whose end the
//!   watermark has reached, in a deterministic order: by window end, then district, then kind
//!   (traffic before air), each district's per-sensor results by sensor id followed by the
//!   district result. [`PartitionState::close_some`] does the same a bounded number of results
//!   at a time, freeing a tumbling window's pane as its results are made (module `close`).
//!
//! State is kept per **pane**, one hop of event time ([`WindowSpec`]); a window is the union of
//! its `size / hop` panes, so a reading is stored once however many hopping windows cover it.
//! Open panes live in a `BTreeMap` keyed by pane start; windows close in order of their end.
//! Per sensor the state keeps a duplicate guard, air hourly history ([`air`]) and a learned
//! free-flow speed ([`traffic`]). Sensors silent for 25 hours of event time are forgotten.
//!
//! Module map: [`spec`] (window shapes), [`watermark`], [`traffic`], [`air`], [`seq`] (duplicate
//! guard), `close` (making a window's results).

pub mod air;
mod close;
pub mod seq;
pub mod spec;
pub mod traffic;
pub mod watermark;

pub use spec::{SpecError, WindowSpec};
pub use watermark::{LateReason, Watermark};

use crate::domain::traffic::InvalidInterval;
use crate::registry::SegmentRegistry;
use air::{AirSample, AirStation, HOUR_MS};
use citypulse_runtime::id::Id;
use citypulse_schema::{Measurement, Pollutant, Reading, WindowResult};
use close::{close_panes, Closing, DistrictTotals, WindowCloser};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use traffic::{TrafficSample, TrafficSensor};

/// Event time after which a silent sensor's state (duplicate guard, air history, learned
/// free-flow speed) is dropped: longer than the 24 hours the 24-h means look back.
pub const SENSOR_RETENTION_MS: u64 = 25 * HOUR_MS;

/// The settings the core runs with.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    /// Window shape.
    pub spec: WindowSpec,
    /// How far behind the newest event time a reading may be and still be accepted, ms.
    pub allowed_lateness_ms: u64,
    /// Processing time without readings after which the watermark advances by itself, ms.
    pub idle_timeout_ms: u64,
    /// Free-flow speed and capacity by detector.
    pub registry: SegmentRegistry,
}

/// What became of an observed reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// Added to its windows.
    Accepted,
    /// Behind the watermark: counted, not merged.
    Late(LateReason),
    /// Not usable.
    Rejected(Rejection),
}

/// Why the core refused a reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// A traffic interval the accumulator cannot take.
    #[error("invalid traffic interval: {0}")]
    Interval(InvalidInterval),
    /// A concentration that is not a finite number within ±10¹² units.
    #[error("{0} concentration is not a finite number within ±1e12")]
    Concentration(Pollutant),
    /// The sensor's sequence number was already accepted.
    #[error("sequence number already accepted for this sensor")]
    Duplicate,
}

impl Rejection {
    /// A bounded metric label and dead-letter reason.
    pub const fn reason(self) -> &'static str {
        match self {
            Rejection::Interval(e) => e.reason(),
            Rejection::Concentration(_) => "concentration_not_finite",
            Rejection::Duplicate => "duplicate",
        }
    }

    /// Every reason the core can give, for pre-registering metric labels.
    pub const REASONS: [&'static str; 6] = [
        "zero_duration",
        "zero_lanes",
        "occupancy_out_of_range",
        "speed_not_positive",
        "concentration_not_finite",
        "duplicate",
    ];
}

/// One pane's readings of one district, by sensor.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PaneDistrict {
    #[serde(rename = "t", default)]
    traffic: BTreeMap<Id, Vec<TrafficSample>>,
    #[serde(rename = "a", default)]
    air: BTreeMap<Id, Vec<AirSample>>,
}

/// The per-sensor state of one district.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct DistrictSensors {
    #[serde(rename = "t", default)]
    traffic: BTreeMap<Id, TrafficSensor>,
    #[serde(rename = "a", default)]
    air: BTreeMap<Id, AirStation>,
}

/// Everything a partition remembers; what a checkpoint holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateData {
    spec: WindowSpec,
    watermark: Watermark,
    /// Largest window end closed so far.
    closed_through: Option<u64>,
    /// Hour boundary of the last sweep (hour completion, sensor expiry).
    swept_hour: Option<u64>,
    /// Open panes by start, then district.
    panes: BTreeMap<u64, BTreeMap<Id, PaneDistrict>>,
    /// Per-sensor state by district.
    sensors: BTreeMap<Id, DistrictSensors>,
}

/// A checkpoint that does not fit the running configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreError {
    /// The checkpoint was cut with another window shape.
    #[error(
        "the checkpoint has {checkpoint} windows but the service is configured for {configured}; \
         restore the previous --window/--hop, or delete the checkpoint to start over"
    )]
    SpecChanged {
        /// The checkpoint's shape.
        checkpoint: WindowSpec,
        /// The configured shape.
        configured: WindowSpec,
    },
}

/// The windowing state of one READINGS partition.
#[derive(Debug, Clone)]
pub struct PartitionState {
    cfg: Arc<CoreConfig>,
    data: StateData,
    /// The tumbling window [`close_some`](Self::close_some) stopped inside, if any.
    closing: Option<Closing>,
}

enum Sample {
    Traffic(TrafficSample),
    /// The concentrations and the reading's own interval, seconds, when it says.
    Air(AirSample, Option<u32>),
}

/// The district's entry, made empty when missing (without allocating the key when present).
fn district_mut<'m, V: Default>(map: &'m mut BTreeMap<Id, V>, key: &str) -> &'m mut V {
    if !map.contains_key(key) {
        map.insert(Id::from(key), V::default());
    }
    // Inserted just above when missing.
    map.get_mut(key)
        .unwrap_or_else(|| unreachable!("key inserted above"))
}

/// Appends `item` to the list under `key`, made by `make` when missing: one search of the map
/// when the key is there (a sensor's later samples in a pane), and the key made only when it is
/// not (an allocation only for an id longer than 24 bytes, [`Id`]).
fn push_under<T>(
    map: &mut BTreeMap<Id, Vec<T>>,
    key: &str,
    make: impl FnOnce() -> Vec<T>,
    item: T,
) {
    match map.get_mut(key) {
        Some(list) => list.push(item),
        None => {
            let mut list = make();
            list.push(item);
            map.insert(Id::from(key), list);
        }
    }
}

/// Samples of a sensor reporting every `interval_s` seconds in a pane of `hop_ms`: at least one
/// (also when the interval is unknown), at most eight; a wrong guess costs only a `Vec` growth.
/// A sensor's samples in a new pane are sized for this, not for the four a `Vec` starts with:
/// most sensors report once or twice per pane, and a pane's samples are most of the state.
fn expected_samples(hop_ms: u64, interval_s: Option<u32>) -> usize {
    let Some(interval_ms) = interval_s.filter(|&i| i > 0).map(|i| u64::from(i) * 1_000) else {
        return 1;
    };
    usize::try_from(hop_ms.div_ceil(interval_ms).clamp(1, 8)).unwrap_or(8)
}

impl PartitionState {
    /// An empty partition.
    pub fn new(cfg: Arc<CoreConfig>) -> PartitionState {
        let data = StateData {
            spec: cfg.spec,
            watermark: Watermark::new(),
            closed_through: None,
            swept_hour: None,
            panes: BTreeMap::new(),
            sensors: BTreeMap::new(),
        };
        PartitionState {
            cfg,
            data,
            closing: None,
        }
    }

    /// A partition resumed from checkpointed state.
    pub fn restore(cfg: Arc<CoreConfig>, data: StateData) -> Result<PartitionState, RestoreError> {
        if data.spec != cfg.spec {
            return Err(RestoreError::SpecChanged {
                checkpoint: data.spec,
                configured: cfg.spec,
            });
        }
        Ok(PartitionState {
            cfg,
            data,
            closing: None,
        })
    }

    /// The state to checkpoint; not while a window is part closed ([`closing`]).
    ///
    /// [`closing`]: Self::closing
    pub fn data(&self) -> &StateData {
        debug_assert!(self.closing.is_none(), "state read inside a closing window");
        &self.data
    }

    /// The watermark, ms of event time.
    pub fn watermark(&self) -> Option<u64> {
        self.data.watermark.value()
    }

    /// Takes one reading at processing time `now_ms`.
    pub fn observe(&mut self, r: &Reading, now_ms: u64) -> Observed {
        let lateness = self.cfg.allowed_lateness_ms;
        let d = &mut self.data;
        d.watermark.touch(now_ms);
        let sample = match &r.data {
            Measurement::Traffic(t) => match TrafficSample::from_traffic(t) {
                Ok(s) => Sample::Traffic(s),
                Err(e) => return Observed::Rejected(Rejection::Interval(e)),
            },
            Measurement::Air(a) => match AirSample::from_air(a) {
                Ok(s) => Sample::Air(s, a.interval_s),
                Err(p) => return Observed::Rejected(Rejection::Concentration(p)),
            },
        };
        if let Some(reason) = d.watermark.lateness_of(r.ts, lateness) {
            return Observed::Late(reason);
        }
        let sensors = district_mut(&mut d.sensors, &r.district);
        let pane = d.spec.pane_of(r.ts);
        match sample {
            Sample::Traffic(s) => {
                match sensors.traffic.get_mut(r.sensor.as_str()) {
                    Some(st) => {
                        if !st.guard.admit(r.seq, r.ts > st.newest_ts) {
                            return Observed::Rejected(Rejection::Duplicate);
                        }
                        st.newest_ts = st.newest_ts.max(r.ts);
                    }
                    None => {
                        sensors
                            .traffic
                            .insert(Id::from(r.sensor.as_str()), TrafficSensor::new(r.seq, r.ts));
                    }
                }
                let hop_ms = d.spec.hop_ms();
                let pd = district_mut(d.panes.entry(pane).or_default(), &r.district);
                let interval_s = Some(s.interval().interval_s);
                let new = || Vec::with_capacity(expected_samples(hop_ms, interval_s));
                push_under(&mut pd.traffic, &r.sensor, new, s);
            }
            Sample::Air(s, interval_s) => {
                match sensors.air.get_mut(r.sensor.as_str()) {
                    Some(st) => {
                        if !st.guard.admit(r.seq, r.ts > st.newest_ts) {
                            return Observed::Rejected(Rejection::Duplicate);
                        }
                        st.record(r.ts, interval_s, &s);
                    }
                    None => {
                        let mut st = AirStation::new(r.seq, r.ts);
                        st.record(r.ts, interval_s, &s);
                        sensors.air.insert(Id::from(r.sensor.as_str()), st);
                    }
                }
                let hop_ms = d.spec.hop_ms();
                let pd = district_mut(d.panes.entry(pane).or_default(), &r.district);
                let new = || Vec::with_capacity(expected_samples(hop_ms, interval_s));
                push_under(&mut pd.air, &r.sensor, new, s);
            }
        }
        d.watermark.observe(r.ts, lateness, now_ms);
        Observed::Accepted
    }

    /// Idle advance at processing time `now_ms`; returns whether the watermark moved.
    pub fn advance_idle(&mut self, now_ms: u64) -> bool {
        self.data.watermark.advance_idle(
            now_ms,
            self.cfg.idle_timeout_ms,
            self.cfg.allowed_lateness_ms,
        )
    }

    /// Whether the watermark has reached a window end not closed yet, or a window is part
    /// closed: [`close_ready`] would close something.
    ///
    /// [`close_ready`]: Self::close_ready
    pub fn window_ready(&self) -> bool {
        self.closing.is_some()
            || self
                .data
                .watermark
                .value()
                .is_some_and(|wm| self.closes_through(wm).is_some())
    }

    /// Whether a window is part closed ([`close_some`] stopped inside it): until it is
    /// finished the state is not whole (its pane is partly consumed), so it must not be
    /// checkpointed nor take readings.
    ///
    /// [`close_some`]: Self::close_some
    pub fn closing(&self) -> bool {
        self.closing.is_some()
    }

    /// The last window end the watermark `wm` reaches, when it is not closed yet.
    fn closes_through(&self, wm: u64) -> Option<u64> {
        let through = self.data.spec.end_at_or_before(wm);
        self.data
            .closed_through
            .is_none_or(|c| through > c)
            .then_some(through)
    }

    /// Closes every window whose end the watermark has reached, appending their results to
    /// `out` in the documented order; returns how many results were appended.
    pub fn close_ready(&mut self, out: &mut Vec<WindowResult>) -> usize {
        self.close_some(out, usize::MAX)
    }

    /// [`close_ready`], at most `max` results at a time: call it again until it returns 0
    /// (while [`closing`], a window is part closed). The results and the state in the end are
    /// those of [`close_ready`]. A tumbling window stops after any result, its pane freed as far
    /// as its results are out; a hopping window is closed whole, so a call can exceed `max`.
    ///
    /// [`close_ready`]: Self::close_ready
    /// [`closing`]: Self::closing
    pub fn close_some(&mut self, out: &mut Vec<WindowResult>, max: usize) -> usize {
        let Some(wm) = self.data.watermark.value() else {
            return 0;
        };
        let before = out.len();
        let spec = self.data.spec;
        let closed_before = self.data.closed_through;
        while out.len() - before < max {
            if let Some(c) = &mut self.closing {
                let left = max - (out.len() - before);
                let StateData { sensors, .. } = &mut self.data;
                if c.advance(&self.cfg.registry, sensors, out, left) {
                    self.data.closed_through = Some(c.end());
                    self.closing = None;
                }
                continue;
            }
            let Some(through) = self.closes_through(wm) else {
                break;
            };
            let Some(end) = self.open_ends().range(..=through).next().copied() else {
                self.data.closed_through = Some(through);
                break;
            };
            self.open_window(end, out);
        }
        if let (None, Some(closed)) = (&self.closing, self.data.closed_through) {
            if closed_before != Some(closed) {
                // A pane is needed until the last window covering it (ending at start + size)
                // has closed.
                let keep_from = (closed + spec.hop_ms()).saturating_sub(spec.size_ms());
                self.data.panes = self.data.panes.split_off(&keep_from);
            }
            if self.closes_through(wm).is_none() {
                self.sweep(wm);
            }
        }
        out.len() - before
    }

    /// Windows with readings that have not closed yet.
    pub fn open_windows(&self) -> usize {
        self.open_ends().len()
    }

    /// The ends of the windows with readings that have not closed yet.
    fn open_ends(&self) -> BTreeSet<u64> {
        let spec = self.data.spec;
        let closed = self.data.closed_through;
        self.data
            .panes
            .keys()
            .flat_map(|&p| spec.window_ends(p))
            .filter(|&e| closed.is_none_or(|c| e > c))
            .collect()
    }

    /// Readings held in open panes.
    pub fn buffered_readings(&self) -> usize {
        self.data
            .panes
            .values()
            .flat_map(|p| p.values())
            .map(|pd| {
                pd.traffic.values().map(Vec::len).sum::<usize>()
                    + pd.air.values().map(Vec::len).sum::<usize>()
            })
            .sum()
    }

    /// Sensors with state.
    pub fn sensors(&self) -> usize {
        self.data
            .sensors
            .values()
            .map(|d| d.traffic.len() + d.air.len())
            .sum()
    }

    /// Once per hour of watermark: completes air hours everywhere and forgets silent sensors.
    fn sweep(&mut self, wm: u64) {
        let hour = wm - wm % HOUR_MS;
        if self.data.swept_hour.is_some_and(|h| h >= hour) {
            return;
        }
        self.data.swept_hour = Some(hour);
        let alive = |newest: u64| newest.saturating_add(SENSOR_RETENTION_MS) >= wm;
        for ds in self.data.sensors.values_mut() {
            ds.traffic.retain(|_, s| alive(s.newest_ts));
            ds.air.retain(|_, s| alive(s.newest_ts));
            for st in ds.air.values_mut() {
                st.finalize_through(wm);
            }
        }
        self.data
            .sensors
            .retain(|_, ds| !(ds.traffic.is_empty() && ds.air.is_empty()));
    }

    /// Starts closing the window ending at `end`. A tumbling window is its only pane, which
    /// no later window needs: it becomes the [`Closing`], consumed as its results are made. A
    /// hopping window's panes are shared with the windows after it: it is closed at once from
    /// references to its samples.
    fn open_window(&mut self, end: u64, out: &mut Vec<WindowResult>) {
        let spec = self.data.spec;
        let start = spec.start_of(end);
        if spec.size_ms() == spec.hop_ms() {
            let pane = self.data.panes.remove(&start).unwrap_or_default();
            self.closing = Some(Closing::new(start, end, pane));
            return;
        }
        let mut totals = DistrictTotals::default();
        let closer = WindowCloser::new((start, end), &self.cfg.registry, out, &mut totals);
        let StateData { panes, sensors, .. } = &mut self.data;
        close_panes(closer, panes, end - spec.hop_ms(), start..end, sensors);
        self.data.closed_through = Some(end);
    }
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Observed::Accepted => f.write_str("accepted"),
            Observed::Late(r) => write!(f, "late ({})", r.reason()),
            Observed::Rejected(r) => write!(f, "rejected ({r})"),
        }
    }
}

#[cfg(test)]
mod tests;
