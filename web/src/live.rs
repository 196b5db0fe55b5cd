//! PURE: what the page shows, kept up to date from METRICS and ALERTS messages: the latest
//! district results, two hours of history per district (event time), the latest per-sensor
//! traffic results (for the worst segments), the last alert transitions and the alerts service's
//! list of active alerts. Every change that a page must see comes back as an [`Update`].

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};

/// History kept per district: two hours of event time.
pub const HISTORY_MS: u64 = 2 * 3_600_000;
/// At most this many history points per district and kind (two hours of 1-minute windows fit).
pub const HISTORY_POINTS: usize = 720;
/// Alert transitions kept for the feed.
pub const TRANSITIONS: usize = 50;
/// Worst segments listed per district.
pub const WORST_SEGMENTS: usize = 5;

/// A change to push to every page: the SSE event name and its JSON data.
#[derive(Debug, Clone, PartialEq)]
pub struct Update {
    /// `district`, `alert` or `active`.
    pub event: &'static str,
    /// JSON text.
    pub data: String,
}

/// One history point: event time and up to two figures.
type Point = (u64, Option<f64>, Option<f64>);

#[derive(Debug, Default)]
struct DistrictState {
    air: Option<Value>,
    traffic: Option<Value>,
    air_history: VecDeque<Point>,
    traffic_history: VecDeque<Point>,
    /// Latest per-sensor traffic figures, by sensor (only what the worst segments show: a
    /// 100,000-sensor city keeps a few MB, not every result).
    sensors: HashMap<String, SensorFigures>,
}

/// The figures of a per-sensor traffic result that the worst segments show.
#[derive(Debug, Clone, PartialEq)]
struct SensorFigures {
    window_end: u64,
    congestion_index: Option<f64>,
    speed_kmh: Option<f64>,
    los: Option<String>,
    travel_time_index: Option<f64>,
}

impl SensorFigures {
    fn of(body: &Value) -> SensorFigures {
        SensorFigures {
            window_end: window_end(body),
            congestion_index: f(body, "congestion_index"),
            speed_kmh: f(body, "speed_kmh"),
            los: body.get("los").and_then(Value::as_str).map(str::to_owned),
            travel_time_index: f(body, "travel_time_index"),
        }
    }
}

/// The live state.
#[derive(Debug, Default)]
pub struct Live {
    districts: BTreeMap<String, DistrictState>,
    transitions: VecDeque<Value>,
    active: Option<Value>,
    /// Loop detector → segment id, from the city.
    segment_of: HashMap<String, String>,
}

fn f(v: &Value, key: &str) -> Option<f64> {
    v.get(key).and_then(Value::as_f64)
}

fn window_end(v: &Value) -> u64 {
    v.get("window_end").and_then(Value::as_u64).unwrap_or(0)
}

/// Inserts `p` in time order (replacing a point of the same time) and drops what is older than
/// [`HISTORY_MS`] before the newest point, or beyond [`HISTORY_POINTS`].
fn insert_point(h: &mut VecDeque<Point>, p: Point) {
    match h.binary_search_by_key(&p.0, |q| q.0) {
        Ok(i) => h[i] = p,
        Err(i) => h.insert(i, p),
    }
    let newest = h.back().map_or(0, |q| q.0);
    while h
        .front()
        .is_some_and(|q| q.0 + HISTORY_MS <= newest || h.len() > HISTORY_POINTS)
    {
        h.pop_front();
    }
}

impl Live {
    /// Empty state; `segment_of` maps loop detectors to their segment.
    pub fn new(segment_of: HashMap<String, String>) -> Live {
        Live {
            segment_of,
            ..Live::default()
        }
    }

    /// The latest result of a subject (a district's or a sensor's). District results newer than
    /// the one held replace it and are returned as an update; sensor results only update the
    /// worst segments.
    pub fn latest(&mut self, body: &Value) -> Option<Update> {
        let district = body.get("district")?.as_str()?.to_owned();
        let kind = body.get("kind")?.as_str()?.to_owned();
        let d = self.districts.entry(district.clone()).or_default();
        if let Some(sensor) = body.get("sensor").and_then(Value::as_str) {
            if kind == "traffic" {
                let newer = d
                    .sensors
                    .get(sensor)
                    .is_none_or(|old| old.window_end <= window_end(body));
                if newer {
                    d.sensors.insert(sensor.to_owned(), SensorFigures::of(body));
                }
            }
            return None;
        }
        let slot = match kind.as_str() {
            "air" => &mut d.air,
            "traffic" => &mut d.traffic,
            _ => return None,
        };
        if slot
            .as_ref()
            .is_some_and(|old| window_end(old) > window_end(body))
        {
            return None;
        }
        *slot = Some(body.clone());
        Some(Update {
            event: "district",
            data: json!({"district": district, "kind": kind, "result": body}).to_string(),
        })
    }

    /// A district result for the history (sensor results are ignored).
    pub fn history(&mut self, body: &Value) {
        if body.get("sensor").is_some() {
            return;
        }
        let (Some(district), Some(kind)) = (
            body.get("district").and_then(Value::as_str),
            body.get("kind").and_then(Value::as_str),
        ) else {
            return;
        };
        let d = self.districts.entry(district.to_owned()).or_default();
        let t = window_end(body);
        match kind {
            "air" => insert_point(
                &mut d.air_history,
                (t, f(body, "aqi"), f(body, "pm25_nowcast_ugm3")),
            ),
            "traffic" => insert_point(
                &mut d.traffic_history,
                (t, f(body, "congestion_index"), f(body, "travel_time_index")),
            ),
            _ => {}
        }
    }

    /// An alert transition from ALERTS (already seen ones are ignored).
    pub fn alert(&mut self, body: &Value) -> Option<Update> {
        let key = |v: &Value| {
            ["id", "state", "severity", "at"]
                .iter()
                .map(|k| v.get(*k).map(Value::to_string).unwrap_or_default())
                .collect::<Vec<_>>()
        };
        let k = key(body);
        if self.transitions.iter().any(|t| key(t) == k) {
            return None;
        }
        // Newest first by event time; ties keep arrival order.
        let at = |v: &Value| v.get("at").and_then(Value::as_u64).unwrap_or(0);
        let pos = self
            .transitions
            .iter()
            .position(|t| at(t) <= at(body))
            .unwrap_or(self.transitions.len());
        self.transitions.insert(pos, body.clone());
        self.transitions.truncate(TRANSITIONS);
        Some(Update {
            event: "alert",
            data: body.to_string(),
        })
    }

    /// The alerts service's answer to `citypulse.alerts.list`.
    pub fn set_active(&mut self, list: Value) -> Option<Update> {
        if self.active.as_ref() == Some(&list) {
            return None;
        }
        let data = list.to_string();
        self.active = Some(list);
        Some(Update {
            event: "active",
            data,
        })
    }

    /// Everything a fresh page needs: latest district results, transitions, active alerts.
    pub fn snapshot(&self) -> Value {
        let mut air = Map::new();
        let mut traffic = Map::new();
        for (id, d) in &self.districts {
            if let Some(a) = &d.air {
                air.insert(id.clone(), a.clone());
            }
            if let Some(t) = &d.traffic {
                traffic.insert(id.clone(), t.clone());
            }
        }
        json!({
            "air": air,
            "traffic": traffic,
            "transitions": self.transitions,
            "active": self.active,
        })
    }

    /// The district panel: history, latest results, worst segments.
    pub fn district(&self, id: &str) -> Value {
        let Some(d) = self.districts.get(id) else {
            return json!({"district": id, "air_history": [], "traffic_history": [],
                "air": null, "traffic": null, "worst_segments": []});
        };
        let points = |h: &VecDeque<Point>| -> Vec<Value> {
            h.iter().map(|(t, a, b)| json!([t, a, b])).collect()
        };
        json!({
            "district": id,
            "air_history": points(&d.air_history),
            "traffic_history": points(&d.traffic_history),
            "air": d.air,
            "traffic": d.traffic,
            "worst_segments": self.worst_segments(d),
        })
    }

    /// Segments of a district by their most congested detector, worst first.
    fn worst_segments(&self, d: &DistrictState) -> Vec<Value> {
        type Worst<'a> = (f64, &'a str, &'a SensorFigures);
        let mut by_segment: BTreeMap<&str, Worst> = BTreeMap::new();
        for (sensor, r) in &d.sensors {
            let Some(ci) = r.congestion_index else {
                continue;
            };
            let segment = self
                .segment_of
                .get(sensor)
                .map_or(sensor.as_str(), String::as_str);
            let e = by_segment.entry(segment).or_insert((ci, sensor, r));
            if ci > e.0 {
                *e = (ci, sensor, r);
            }
        }
        let mut v: Vec<(&str, Worst)> = by_segment.into_iter().collect();
        v.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0).then(a.0.cmp(b.0)));
        v.into_iter()
            .take(WORST_SEGMENTS)
            .map(|(segment, (ci, sensor, r))| {
                json!({
                    "segment": segment,
                    "sensor": sensor,
                    "congestion_index": ci,
                    "speed_kmh": r.speed_kmh,
                    "los": r.los,
                    "travel_time_index": r.travel_time_index,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_767_225_600_000;
    const MIN: u64 = 60_000;

    fn air(district: &str, end: u64, aqi: u64) -> Value {
        json!({"kind": "air", "district": district, "window_start": end - MIN,
            "window_end": end, "aqi": aqi, "pm25_nowcast_ugm3": aqi as f64 / 2.0})
    }

    fn traffic(sensor: Option<&str>, end: u64, ci: f64) -> Value {
        let mut v = json!({"kind": "traffic", "district": "d01", "window_end": end,
            "congestion_index": ci, "flow_vph": 100.0, "occupancy": 0.1});
        if let Some(s) = sensor {
            v["sensor"] = s.into();
        }
        v
    }

    #[test]
    fn only_newer_district_results_replace_the_latest() {
        let mut live = Live::default();
        let u = live.latest(&air("d04", T + 2 * MIN, 160)).unwrap();
        assert_eq!(u.event, "district");
        let data: Value = serde_json::from_str(&u.data).unwrap();
        assert_eq!(data["result"]["aqi"], 160);
        assert!(live.latest(&air("d04", T + MIN, 40)).is_none());
        assert_eq!(live.snapshot()["air"]["d04"]["aqi"], 160);
        assert!(live.latest(&air("d04", T + 3 * MIN, 170)).is_some());
        assert_eq!(live.snapshot()["air"]["d04"]["aqi"], 170);
    }

    #[test]
    fn history_is_time_ordered_and_two_hours_long() {
        let mut live = Live::default();
        // Out of order, with a duplicate.
        for i in [5u64, 1, 3, 2, 4, 3] {
            live.history(&air("d04", T + i * MIN, 100 + i));
        }
        let d = live.district("d04");
        let times: Vec<u64> = d["air_history"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p[0].as_u64().unwrap())
            .collect();
        assert_eq!(times, (1..=5).map(|i| T + i * MIN).collect::<Vec<_>>());
        assert_eq!(d["air_history"][0][1], 101.0);
        assert_eq!(d["air_history"][0][2], 50.5);
        // A point two hours after the first pushes out everything at or before newest − 2 h.
        live.history(&air("d04", T + MIN + HISTORY_MS, 90));
        let d = live.district("d04");
        assert_eq!(d["air_history"].as_array().unwrap().len(), 5);
        assert_eq!(d["air_history"][0][0], T + 2 * MIN);
        // Sensor results never enter the history.
        live.history(&traffic(Some("loop-1"), T, 0.5));
        assert!(live.district("d01")["traffic_history"]
            .as_array()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn worst_segments_take_the_most_congested_detector_of_each_segment() {
        let segment_of: HashMap<String, String> = [
            ("loop-1", "seg-a"),
            ("loop-2", "seg-a"),
            ("loop-3", "seg-b"),
            ("loop-4", "seg-c"),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .collect();
        let mut live = Live::new(segment_of);
        assert!(live.latest(&traffic(Some("loop-1"), T, 0.2)).is_none());
        live.latest(&traffic(Some("loop-2"), T, 0.7));
        live.latest(&traffic(Some("loop-3"), T, 0.4));
        live.latest(&traffic(Some("loop-4"), T, 0.1));
        // An older result of loop-3 does not replace the newer one.
        live.latest(&traffic(Some("loop-3"), T - MIN, 0.9));
        let worst = live.district("d01")["worst_segments"].clone();
        let names: Vec<&str> = worst
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["segment"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["seg-a", "seg-b", "seg-c"]);
        assert_eq!(worst[0]["congestion_index"], 0.7);
        assert_eq!(worst[0]["sensor"], "loop-2");
    }

    #[test]
    fn the_feed_is_newest_first_without_repeats_and_bounded() {
        let mut live = Live::default();
        let ev = |id: &str, state: &str, at: u64| json!({"id": id, "state": state, "severity": "warning", "at": at});
        assert!(live.alert(&ev("a", "firing", 10)).is_some());
        assert!(live.alert(&ev("a", "resolved", 30)).is_some());
        assert!(live.alert(&ev("b", "firing", 20)).is_some());
        assert!(live.alert(&ev("a", "firing", 10)).is_none());
        let order: Vec<u64> = live.snapshot()["transitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["at"].as_u64().unwrap())
            .collect();
        assert_eq!(order, [30, 20, 10]);
        for i in 0..100 {
            live.alert(&ev("c", "firing", 100 + i));
        }
        assert_eq!(
            live.snapshot()["transitions"].as_array().unwrap().len(),
            TRANSITIONS
        );
        let list = json!({"alerts": [], "silences": []});
        assert!(live.set_active(list.clone()).is_some());
        assert!(live.set_active(list).is_none());
    }
}
