//! Making one window's results, district by district and sensor by sensor, in the documented
//! order: a district's detectors by id, its traffic result, its stations by id, its air result.
//!
//! [`WindowCloser`] takes each sensor's samples as an iterator, so the caller decides where they
//! come from: a tumbling window consumes its only pane, freeing each sensor's samples as soon as
//! its result is made (the results replace the pane instead of joining it in memory), while a
//! hopping window gathers references to its samples across the panes it shares with others.

use super::air::{self, AirSample, AirStation, Concentrations, DistrictAir};
use super::traffic::{self, TrafficSample, TrafficSensor};
use crate::domain::traffic::DistrictTrafficAccumulator;
use crate::registry::SegmentRegistry;
use citypulse_schema::{WindowMetrics, WindowResult};

/// One detector's part of a closing window.
pub(super) struct Detector<'a, I> {
    /// Its id.
    pub id: &'a str,
    /// Its samples in the window, in pane order.
    pub samples: I,
    /// Its samples in the window's last pane: what it learns free-flow speed from.
    pub last: Option<&'a [TrafficSample]>,
}

/// Appends one window's results to `out`.
pub(super) struct WindowCloser<'a> {
    start: u64,
    end: u64,
    registry: &'a SegmentRegistry,
    out: &'a mut Vec<WindowResult>,
    /// The district being closed: its detectors' figures and readings so far.
    traffic: DistrictTrafficAccumulator,
    traffic_readings: usize,
    /// The district being closed: its stations' figures, readings and count so far.
    air: DistrictAir,
    air_readings: usize,
    stations: u64,
}

impl<'a> WindowCloser<'a> {
    /// A closer of the window `[start, end)`.
    pub fn new(
        start: u64,
        end: u64,
        registry: &'a SegmentRegistry,
        out: &'a mut Vec<WindowResult>,
    ) -> WindowCloser<'a> {
        WindowCloser {
            start,
            end,
            registry,
            out,
            traffic: DistrictTrafficAccumulator::new(),
            traffic_readings: 0,
            air: DistrictAir::default(),
            air_readings: 0,
            stations: 0,
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
        self.traffic.add(&f);
        self.traffic_readings += n;
        let m = WindowMetrics::Traffic(traffic::sensor_metrics(&f));
        self.push(district, Some(d.id), n, 1, m);
    }

    /// After the last detector of `district`: the district's traffic result, if any.
    pub fn end_traffic(&mut self, district: &str) {
        let acc = std::mem::take(&mut self.traffic);
        let readings = std::mem::take(&mut self.traffic_readings);
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
        self.air_readings += n;
        self.stations += 1;
        self.push(
            district,
            Some(id),
            n,
            1,
            WindowMetrics::Air(Box::new(c.metrics())),
        );
        self.air.add(id, &c);
    }

    /// After the last station of `district`: the district's air result, if it has stations.
    pub fn end_air(&mut self, district: &str) {
        let air = std::mem::take(&mut self.air);
        let readings = std::mem::take(&mut self.air_readings);
        let stations = std::mem::take(&mut self.stations);
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
