//! Making one window's results, district by district and sensor by sensor, in the documented
//! order: a district's detectors by id, its traffic result, its stations by id, its air result.
//!
//! [`WindowCloser`] takes each sensor's samples as an iterator, so the caller decides where they
//! come from. A tumbling window is a [`Closing`]: it owns its only pane (no later window needs
//! it) and consumes it a result at a time, freeing each sensor's samples as soon as its result
//! is made, and it can stop after any number of results and go on later, so the results that
//! replace a pane need not all be in memory at once. A hopping window gathers references to its
//! samples across the panes it shares with the windows after it, and closes at once.

use super::air::{self, AirSample, AirStation, Concentrations, DistrictAir};
use super::traffic::{self, TrafficSample, TrafficSensor};
use super::{DistrictSensors, Id, PaneDistrict};
use crate::domain::traffic::DistrictTrafficAccumulator;
use crate::registry::SegmentRegistry;
use citypulse_schema::{WindowMetrics, WindowResult};
use std::collections::BTreeMap;

/// One detector's part of a closing window.
pub(super) struct Detector<'a, I> {
    /// Its id.
    pub id: &'a str,
    /// Its samples in the window, in pane order.
    pub samples: I,
    /// Its samples in the window's last pane: what it learns free-flow speed from.
    pub last: Option<&'a [TrafficSample]>,
}

/// What a district's results so far add up to, for its own result.
#[derive(Debug, Clone, Default)]
pub(super) struct DistrictTotals {
    traffic: DistrictTrafficAccumulator,
    traffic_readings: usize,
    air: DistrictAir,
    air_readings: usize,
    stations: u64,
}

/// Appends one window's results to `out`.
pub(super) struct WindowCloser<'a> {
    start: u64,
    end: u64,
    registry: &'a SegmentRegistry,
    out: &'a mut Vec<WindowResult>,
    /// The district being closed.
    totals: &'a mut DistrictTotals,
}

impl<'a> WindowCloser<'a> {
    /// A closer of the window `[start, end)`, adding to the district totals `totals`.
    pub fn new(
        (start, end): (u64, u64),
        registry: &'a SegmentRegistry,
        out: &'a mut Vec<WindowResult>,
        totals: &'a mut DistrictTotals,
    ) -> WindowCloser<'a> {
        WindowCloser {
            start,
            end,
            registry,
            out,
            totals,
        }
    }

    fn push(
        &mut self,
        district: &str,
        sensor: Option<&str>,
        readings: usize,
        sensors: u64,
        metrics: WindowMetrics,
    ) {
        self.out.push(WindowResult {
            window_start: self.start,
            window_end: self.end,
            district: district.to_owned(),
            sensor: sensor.map(str::to_owned),
            readings: readings as u64,
            sensors,
            metrics,
        });
    }

    /// A detector of `district` (state `st`, when it has any): its result, unless its samples
    /// give no figures; a detector outside the registry first learns from the window's last pane.
    pub fn detector<'s, I>(
        &mut self,
        district: &str,
        st: Option<&mut TrafficSensor>,
        d: Detector<'_, I>,
    ) where
        I: ExactSizeIterator<Item = &'s TrafficSample>,
    {
        let mut params = self.registry.params(d.id);
        if params.free_flow_kmh.is_none() {
            if let Some(st) = st {
                for s in d.last.into_iter().flatten() {
                    st.learned.learn(s);
                }
                params.free_flow_kmh = st.learned.value();
            }
        }
        let n = d.samples.len();
        let Some(f) = traffic::sensor_figures(d.samples, &params) else {
            return;
        };
        self.totals.traffic.add(&f);
        self.totals.traffic_readings += n;
        let m = WindowMetrics::Traffic(traffic::sensor_metrics(&f));
        self.push(district, Some(d.id), n, 1, m);
    }

    /// After the last detector of `district`: the district's traffic result, if any.
    pub fn end_traffic(&mut self, district: &str) {
        let acc = std::mem::take(&mut self.totals.traffic);
        let readings = std::mem::take(&mut self.totals.traffic_readings);
        if let Some(f) = acc.figures() {
            let m = WindowMetrics::Traffic(traffic::district_metrics(&f));
            self.push(district, None, readings, u64::from(f.segments), m);
        }
    }

    /// A station of `district` (state `st`, when it has any): its result.
    pub fn station<'s, I>(
        &mut self,
        district: &str,
        st: Option<&mut AirStation>,
        id: &str,
        samples: I,
    ) where
        I: ExactSizeIterator<Item = &'s AirSample>,
    {
        let n = samples.len();
        let window = air::window_means(samples);
        let c = match st {
            Some(st) => {
                st.finalize_through(self.end);
                st.concentrations_at(self.end, window)
            }
            None => Concentrations {
                window,
                ..Concentrations::default()
            },
        };
        self.totals.air_readings += n;
        self.totals.stations += 1;
        self.push(
            district,
            Some(id),
            n,
            1,
            WindowMetrics::Air(Box::new(c.metrics())),
        );
        self.totals.air.add(id, &c);
    }

    /// After the last station of `district`: the district's air result, if it has stations.
    pub fn end_air(&mut self, district: &str) {
        let air = std::mem::take(&mut self.totals.air);
        let readings = std::mem::take(&mut self.totals.air_readings);
        let stations = std::mem::take(&mut self.totals.stations);
        if stations > 0 {
            if let Some(m) = air.metrics() {
                self.push(
                    district,
                    None,
                    readings,
                    stations,
                    WindowMetrics::Air(Box::new(m)),
                );
            }
        }
    }
}

/// A tumbling window being closed: what is left of its pane, and the district in progress.
#[derive(Debug, Clone)]
pub(super) struct Closing {
    start: u64,
    end: u64,
    /// Districts not begun.
    rest: BTreeMap<Id, PaneDistrict>,
    /// The district in progress: its sensors not yet closed, and whether its traffic result
    /// is out.
    current: Option<(Id, PaneDistrict, bool)>,
    totals: DistrictTotals,
}

impl Closing {
    /// The window `[start, end)` of the pane `pane`.
    pub fn new(start: u64, end: u64, pane: BTreeMap<Id, PaneDistrict>) -> Closing {
        Closing {
            start,
            end,
            rest: pane,
            current: None,
            totals: DistrictTotals::default(),
        }
    }

    /// The window's end.
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Appends at most `max` more results to `out`; `true` once the window is closed.
    pub fn advance(
        &mut self,
        registry: &SegmentRegistry,
        sensors: &mut BTreeMap<Id, DistrictSensors>,
        out: &mut Vec<WindowResult>,
        max: usize,
    ) -> bool {
        let target = out.len().saturating_add(max);
        let window = (self.start, self.end);
        while out.len() < target {
            let Some((district, pd, traffic_out)) = &mut self.current else {
                match self.rest.pop_first() {
                    Some((d, pd)) => self.current = Some((d, pd, false)),
                    None => return true,
                }
                continue;
            };
            let ds = sensors.get_mut(district.as_str());
            let mut closer = WindowCloser::new(window, registry, out, &mut self.totals);
            // One sensor, or one district result, per turn: each adds a result at most.
            if !*traffic_out {
                if let Some((id, samples)) = pd.traffic.pop_first() {
                    let st = ds.and_then(|d| d.traffic.get_mut(&id));
                    let d = Detector {
                        id: &id,
                        samples: samples.iter(),
                        last: Some(&samples),
                    };
                    closer.detector(district, st, d);
                } else {
                    closer.end_traffic(district);
                    *traffic_out = true;
                }
            } else if let Some((id, samples)) = pd.air.pop_first() {
                let st = ds.and_then(|d| d.air.get_mut(&id));
                closer.station(district, st, &id, samples.iter());
            } else {
                closer.end_air(district);
                self.current = None;
            }
        }
        self.current.is_none() && self.rest.is_empty()
    }
}

/// Closes a hopping window from the panes in `range`, gathering their samples by reference;
/// detectors learn from the pane starting at `last_pane`.
pub(super) fn close_panes(
    mut closer: WindowCloser<'_>,
    panes: &BTreeMap<u64, BTreeMap<Id, PaneDistrict>>,
    last_pane: u64,
    range: std::ops::Range<u64>,
    sensors: &mut BTreeMap<Id, DistrictSensors>,
) {
    type Gathered<'p> = (
        BTreeMap<&'p str, Vec<&'p TrafficSample>>,
        BTreeMap<&'p str, Vec<&'p AirSample>>,
    );
    let mut by_district: BTreeMap<&str, Gathered<'_>> = BTreeMap::new();
    for pane in panes.range(range).map(|(_, p)| p) {
        for (district, pd) in pane {
            let (t, a) = by_district.entry(district.as_str()).or_default();
            for (sensor, samples) in &pd.traffic {
                t.entry(sensor.as_str()).or_default().extend(samples);
            }
            for (sensor, samples) in &pd.air {
                a.entry(sensor.as_str()).or_default().extend(samples);
            }
        }
    }
    for (district, (traffic, air)) in by_district {
        let mut ds = sensors.get_mut(district);
        let last = panes.get(&last_pane).and_then(|p| p.get(district));
        for (id, samples) in &traffic {
            let st = ds.as_deref_mut().and_then(|d| d.traffic.get_mut(*id));
            let d = Detector {
                id,
                samples: samples.iter().copied(),
                last: last.and_then(|pd| pd.traffic.get(*id)).map(Vec::as_slice),
            };
            closer.detector(district, st, d);
        }
        closer.end_traffic(district);
        for (id, samples) in &air {
            let st = ds.as_deref_mut().and_then(|d| d.air.get_mut(*id));
            closer.station(district, st, id, samples.iter().copied());
        }
        closer.end_air(district);
    }
}
