//! [`WindowResult`]: one closed event-time window, per district or per sensor, published on
//! `metrics.<kind>.<district>[.<sensor_id>]`.

use crate::codec::{self, DecodeError};
use crate::vocab::{AqiCategory, EaqiBand, Kind, Los, Pollutant};
use serde::{Deserialize, Serialize};

#[cfg(test)]
mod differential;
mod direct;

/// Largest window result accepted by readers.
pub const MAX_WINDOW_BYTES: usize = 16 * 1024;

/// One closed window's figures. Times are event time, milliseconds since the Unix epoch; the
/// window covers `[window_start, window_end)`.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowResult {
    /// Inclusive start, ms.
    pub window_start: u64,
    /// Exclusive end, ms.
    pub window_end: u64,
    /// District token.
    pub district: String,
    /// The sensor, for a per-sensor result; `None` for a district aggregate.
    pub sensor: Option<String>,
    /// Readings aggregated into this window.
    pub readings: u64,
    /// Distinct sensors that contributed.
    pub sensors: u64,
    /// The kind-specific figures.
    pub metrics: WindowMetrics,
}

/// Kind-specific figures of a window.
#[derive(Debug, Clone, PartialEq)]
pub enum WindowMetrics {
    /// Congestion metrics.
    Traffic(TrafficMetrics),
    /// Air-quality metrics. Boxed: an enum is as large as its largest variant, and most
    /// results are traffic (104 bytes of figures against air's 256), so a traffic
    /// `WindowResult` is 184 bytes instead of 336.
    Air(Box<AirMetrics>),
}

/// Traffic figures (units in the field names; see docs/wire-format.md).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TrafficMetrics {
    /// Flow, vehicles per hour (per segment; for a district, the mean over its segments).
    pub flow_vph: f64,
    /// Time-weighted occupancy, 0..1.
    pub occupancy: f64,
    /// Space-mean speed, km/h: harmonic mean of interval speeds weighted by vehicle count.
    /// `None` when no vehicle passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speed_kmh: Option<f64>,
    /// Density, vehicles per km per lane.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub density_vpkm: Option<f64>,
    /// HCM 6th ed. level of service: by the segment's facility (urban streets by travel speed
    /// as a percentage of base free-flow speed, freeways by density); for a district, its
    /// vehicle-kilometre-weighted travel speed ratio on the urban-street scale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub los: Option<Los>,
    /// 1 − v / v_free, clamped to 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub congestion_index: Option<f64>,
    /// District results: share of segments congested (v < 0.9 v_free, FHWA), 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub congested_share: Option<f64>,
    /// Travel time index v_free / v, at least 1; for a district, the vehicle-kilometre-weighted
    /// mean of its segments' indices. Added after v1: older writers omit it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub travel_time_index: Option<f64>,
}

/// Air-quality figures. Every index is an integer; every concentration says its averaging period
/// and unit in its name.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AirMetrics {
    /// Overall US AQI (max of the sub-indices); `None` when no sub-index is defined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aqi: Option<u16>,
    /// Category of `aqi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<AqiCategory>,
    /// The pollutant giving `aqi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dominant: Option<Pollutant>,
    /// PM2.5 sub-index (NowCast-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aqi_pm25: Option<u16>,
    /// PM10 sub-index (NowCast-based).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aqi_pm10: Option<u16>,
    /// O3 sub-index (8-h, or 1-h where higher).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aqi_o3: Option<u16>,
    /// NO2 sub-index (1-h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aqi_no2: Option<u16>,
    /// SO2 sub-index (1-h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aqi_so2: Option<u16>,
    /// CO sub-index (8-h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aqi_co: Option<u16>,
    /// PM2.5 mean of this window, µg/m³.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pm25_ugm3: Option<f64>,
    /// PM2.5 NowCast, µg/m³ (truncated to 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pm25_nowcast_ugm3: Option<f64>,
    /// PM2.5 24-h mean, µg/m³, when 24 complete hours exist.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pm25_24h_ugm3: Option<f64>,
    /// PM10 mean of this window, µg/m³.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pm10_ugm3: Option<f64>,
    /// PM10 NowCast, µg/m³ (truncated to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pm10_nowcast_ugm3: Option<f64>,
    /// PM10 24-h mean, µg/m³, when complete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pm10_24h_ugm3: Option<f64>,
    /// O3 1-h mean, ppb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub o3_1h_ppb: Option<f64>,
    /// O3 8-h running mean, ppb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub o3_8h_ppb: Option<f64>,
    /// NO2 1-h mean, ppb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no2_1h_ppb: Option<f64>,
    /// SO2 1-h mean, ppb.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub so2_1h_ppb: Option<f64>,
    /// CO 8-h running mean, ppm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub co_8h_ppm: Option<f64>,
    /// European AQI band (worst pollutant).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eaqi: Option<EaqiBand>,
    /// The pollutant giving `eaqi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eaqi_dominant: Option<Pollutant>,
    /// `true` when `aqi` is beyond the AQI: the dominant concentration is above the top
    /// breakpoint of its table and `aqi` extends the top band's slope (it may exceed 500).
    /// Absent otherwise (and from producers before this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub beyond_aqi: Option<bool>,
    /// District results: the station (sensor id) whose AQI is the district's `aqi`; `dominant`
    /// is that station's dominant pollutant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aqi_sensor: Option<String>,
    /// SO2 24-h mean, ppb, when at least 18 of the 24 hours are valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub so2_24h_ppb: Option<f64>,
}

impl WindowResult {
    /// The kind, from the metrics variant.
    pub fn kind(&self) -> Kind {
        match self.metrics {
            WindowMetrics::Traffic(_) => Kind::Traffic,
            WindowMetrics::Air(_) => Kind::Air,
        }
    }

    /// `metrics.<kind>.<district>[.<sensor_id>]`.
    pub fn subject(&self) -> String {
        crate::subject::metrics_subject(self.kind(), &self.district, self.sensor.as_deref())
    }

    /// `Nats-Msg-Id`: kind, district, sensor (or `*`), and the window's bounds.
    pub fn msg_id(&self) -> String {
        format!(
            "{}:{}:{}:{}-{}",
            self.kind(),
            self.district,
            self.sensor.as_deref().unwrap_or("*"),
            self.window_start,
            self.window_end
        )
    }

    /// The `window_end` named by a [`WindowResult::msg_id`] (what follows its last `-`), for a
    /// result kept only in its encoded form.
    pub fn end_of_msg_id(msg_id: &str) -> Option<u64> {
        msg_id.rsplit_once('-')?.1.parse().ok()
    }

    /// A numeric metric by its wire name, for rules. `los` maps A..F to 1..6.
    pub fn value(&self, metric: &str) -> Option<f64> {
        let u = |x: Option<u16>| x.map(f64::from);
        match &self.metrics {
            WindowMetrics::Traffic(t) => match metric {
                "flow_vph" => Some(t.flow_vph),
                "occupancy" => Some(t.occupancy),
                "speed_kmh" => t.speed_kmh,
                "density_vpkm" => t.density_vpkm,
                "los" => t.los.map(|l| (l as u8 + 1).into()),
                "congestion_index" => t.congestion_index,
                "congested_share" => t.congested_share,
                "travel_time_index" => t.travel_time_index,
                "readings" => Some(self.readings as f64),
                _ => None,
            },
            WindowMetrics::Air(a) => match metric {
                "aqi" => u(a.aqi),
                "aqi_pm25" => u(a.aqi_pm25),
                "aqi_pm10" => u(a.aqi_pm10),
                "aqi_o3" => u(a.aqi_o3),
                "aqi_no2" => u(a.aqi_no2),
                "aqi_so2" => u(a.aqi_so2),
                "aqi_co" => u(a.aqi_co),
                "pm25_ugm3" => a.pm25_ugm3,
                "pm25_nowcast_ugm3" => a.pm25_nowcast_ugm3,
                "pm25_24h_ugm3" => a.pm25_24h_ugm3,
                "pm10_ugm3" => a.pm10_ugm3,
                "pm10_nowcast_ugm3" => a.pm10_nowcast_ugm3,
                "pm10_24h_ugm3" => a.pm10_24h_ugm3,
                "o3_1h_ppb" => a.o3_1h_ppb,
                "o3_8h_ppb" => a.o3_8h_ppb,
                "no2_1h_ppb" => a.no2_1h_ppb,
                "so2_1h_ppb" => a.so2_1h_ppb,
                "so2_24h_ppb" => a.so2_24h_ppb,
                "co_8h_ppm" => a.co_8h_ppm,
                "eaqi" => a.eaqi.map(|b| (b as u8 + 1).into()),
                "readings" => Some(self.readings as f64),
                _ => None,
            },
        }
    }

    /// Encodes as CBOR: one flat map (see `schema/citypulse.cddl`).
    pub fn encode(&self) -> Vec<u8> {
        codec::to_vec(&WireWindow::from(self.clone()))
    }

    /// Decodes a CBOR window result, tolerating unknown keys.
    pub fn decode(bytes: &[u8]) -> Result<WindowResult, DecodeError> {
        if bytes.len() > MAX_WINDOW_BYTES {
            return Err(DecodeError::Oversized {
                len: bytes.len(),
                max: MAX_WINDOW_BYTES,
            });
        }
        if let Some(w) = direct::decode(bytes) {
            return Ok(w);
        }
        Self::decode_serde(bytes)
    }

    /// The serde decoder: every input the fast path leaves, and the reference it is tested against.
    fn decode_serde(bytes: &[u8]) -> Result<WindowResult, DecodeError> {
        if !crate::lengths::fit(bytes) {
            return Err(DecodeError::Truncated);
        }
        let wire: WireWindow = ciborium::from_reader(bytes).map_err(serde_error)?;
        WindowResult::try_from(wire)
    }
}

/// Metric names a rule may watch, per kind.
pub fn metric_names(kind: Kind) -> &'static [&'static str] {
    match kind {
        Kind::Traffic => &[
            "flow_vph",
            "occupancy",
            "speed_kmh",
            "density_vpkm",
            "los",
            "congestion_index",
            "congested_share",
            "travel_time_index",
            "readings",
        ],
        Kind::Air => &[
            "aqi",
            "aqi_pm25",
            "aqi_pm10",
            "aqi_o3",
            "aqi_no2",
            "aqi_so2",
            "aqi_co",
            "pm25_ugm3",
            "pm25_nowcast_ugm3",
            "pm25_24h_ugm3",
            "pm10_ugm3",
            "pm10_nowcast_ugm3",
            "pm10_24h_ugm3",
            "o3_1h_ppb",
            "o3_8h_ppb",
            "no2_1h_ppb",
            "so2_1h_ppb",
            "so2_24h_ppb",
            "co_8h_ppm",
            "eaqi",
            "readings",
        ],
    }
}

pub(crate) fn serde_error(e: ciborium::de::Error<std::io::Error>) -> DecodeError {
    match e {
        ciborium::de::Error::Io(_) => DecodeError::Truncated,
        ciborium::de::Error::Syntax(off) => {
            DecodeError::Malformed(format!("syntax error at byte {off}"))
        }
        ciborium::de::Error::Semantic(_, msg) => DecodeError::Malformed(msg),
        ciborium::de::Error::RecursionLimitExceeded => {
            DecodeError::Malformed("nesting too deep".to_owned())
        }
    }
}

/// The flat wire map of a window result.
#[derive(Serialize, Deserialize)]
struct WireWindow {
    window_start: u64,
    window_end: u64,
    district: String,
    kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sensor: Option<String>,
    readings: u64,
    sensors: u64,
    #[serde(flatten)]
    traffic: Option<WireTraffic>,
    #[serde(flatten)]
    air: AirMetrics,
}

/// Traffic fields with the required ones optional, so an air result decodes without them.
#[derive(Serialize, Deserialize)]
struct WireTraffic {
    flow_vph: f64,
    occupancy: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    speed_kmh: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    density_vpkm: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    los: Option<Los>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    congestion_index: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    congested_share: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    travel_time_index: Option<f64>,
}

impl From<WindowResult> for WireWindow {
    fn from(w: WindowResult) -> Self {
        let kind = w.kind();
        let (traffic, air) = match w.metrics {
            WindowMetrics::Traffic(t) => (
                Some(WireTraffic {
                    flow_vph: t.flow_vph,
                    occupancy: t.occupancy,
                    speed_kmh: t.speed_kmh,
                    density_vpkm: t.density_vpkm,
                    los: t.los,
                    congestion_index: t.congestion_index,
                    congested_share: t.congested_share,
                    travel_time_index: t.travel_time_index,
                }),
                AirMetrics::default(),
            ),
            WindowMetrics::Air(a) => (None, *a),
        };
        WireWindow {
            window_start: w.window_start,
            window_end: w.window_end,
            district: w.district,
            kind,
            sensor: w.sensor,
            readings: w.readings,
            sensors: w.sensors,
            traffic,
            air,
        }
    }
}

impl TryFrom<WireWindow> for WindowResult {
    type Error = DecodeError;
    fn try_from(w: WireWindow) -> Result<Self, DecodeError> {
        let metrics = match w.kind {
            Kind::Traffic => {
                let t = w.traffic.ok_or(DecodeError::MissingField("flow_vph"))?;
                WindowMetrics::Traffic(TrafficMetrics {
                    flow_vph: t.flow_vph,
                    occupancy: t.occupancy,
                    speed_kmh: t.speed_kmh,
                    density_vpkm: t.density_vpkm,
                    los: t.los,
                    congestion_index: t.congestion_index,
                    congested_share: t.congested_share,
                    travel_time_index: t.travel_time_index,
                })
            }
            Kind::Air => WindowMetrics::Air(Box::new(w.air)),
        };
        Ok(WindowResult {
            window_start: w.window_start,
            window_end: w.window_end,
            district: w.district,
            sensor: w.sensor,
            readings: w.readings,
            sensors: w.sensors,
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn air_window() -> WindowResult {
        WindowResult {
            window_start: 1_767_225_600_000,
            window_end: 1_767_225_660_000,
            district: "d03".into(),
            sensor: Some("aq-0007".into()),
            readings: 1,
            sensors: 1,
            metrics: WindowMetrics::Air(Box::new(AirMetrics {
                aqi: Some(51),
                category: Some(AqiCategory::Moderate),
                dominant: Some(Pollutant::Pm25),
                aqi_pm25: Some(51),
                pm25_nowcast_ugm3: Some(9.1),
                eaqi: Some(EaqiBand::Fair),
                eaqi_dominant: Some(Pollutant::Pm25),
                ..AirMetrics::default()
            })),
        }
    }

    pub(crate) fn traffic_window() -> WindowResult {
        WindowResult {
            window_start: 0,
            window_end: 60_000,
            district: "d01".into(),
            sensor: None,
            readings: 24,
            sensors: 12,
            metrics: WindowMetrics::Traffic(TrafficMetrics {
                flow_vph: 1440.0,
                occupancy: 0.21,
                speed_kmh: Some(42.0),
                density_vpkm: Some(17.1),
                los: Some(Los::D),
                congestion_index: Some(0.3),
                congested_share: Some(0.25),
                travel_time_index: Some(1.43),
            }),
        }
    }

    #[test]
    fn absent_figures_are_omitted_not_null() {
        let v: ciborium::Value = ciborium::from_reader(&traffic_window().encode()[..]).unwrap();
        let map = v.as_map().unwrap();
        assert!(map.iter().all(|(_, v)| !v.is_null()));
        assert!(!map.iter().any(|(k, _)| k.as_text() == Some("aqi")));
    }

    #[test]
    fn window_results_round_trip() {
        for w in [air_window(), traffic_window()] {
            assert_eq!(WindowResult::decode(&w.encode()).unwrap(), w);
        }
    }

    #[test]
    fn subjects_and_ids_follow_the_contract() {
        assert_eq!(air_window().subject(), "metrics.air.d03.aq-0007");
        assert_eq!(traffic_window().subject(), "metrics.traffic.d01");
        assert_eq!(traffic_window().msg_id(), "traffic:d01:*:0-60000");
        for w in [air_window(), traffic_window()] {
            assert_eq!(WindowResult::end_of_msg_id(&w.msg_id()), Some(w.window_end));
        }
        let dashed = "air:north-east:aq-1:60000-120000";
        assert_eq!(WindowResult::end_of_msg_id(dashed), Some(120_000));
        assert_eq!(WindowResult::end_of_msg_id("not an id"), None);
    }

    pub(crate) fn full_air_window() -> WindowResult {
        let mut w = air_window();
        let f = Some(1.5);
        let i = Some(7);
        w.metrics = WindowMetrics::Air(Box::new(AirMetrics {
            aqi: i,
            category: Some(AqiCategory::Good),
            dominant: Some(Pollutant::O3),
            aqi_pm25: i,
            aqi_pm10: i,
            aqi_o3: i,
            aqi_no2: i,
            aqi_so2: i,
            aqi_co: i,
            pm25_ugm3: f,
            pm25_nowcast_ugm3: f,
            pm25_24h_ugm3: f,
            pm10_ugm3: f,
            pm10_nowcast_ugm3: f,
            pm10_24h_ugm3: f,
            o3_1h_ppb: f,
            o3_8h_ppb: f,
            no2_1h_ppb: f,
            so2_1h_ppb: f,
            co_8h_ppm: f,
            eaqi: Some(EaqiBand::Good),
            eaqi_dominant: Some(Pollutant::O3),
            beyond_aqi: Some(true),
            aqi_sensor: Some("aq-0007".into()),
            so2_24h_ppb: f,
        }));
        w
    }

    #[test]
    fn every_named_metric_of_a_full_result_has_a_value() {
        for (w, kind) in [
            (full_air_window(), Kind::Air),
            (traffic_window(), Kind::Traffic),
        ] {
            for m in metric_names(kind) {
                assert!(w.value(m).is_some(), "{kind} metric {m}");
            }
            assert!(w.value("no_such_metric").is_none());
        }
        assert_eq!(
            WindowResult::decode(&full_air_window().encode()).unwrap(),
            full_air_window()
        );
        assert_eq!(traffic_window().value("los"), Some(4.0));
        assert_eq!(air_window().value("aqi"), Some(51.0));
        assert_eq!(air_window().value("eaqi"), Some(2.0));
    }

    #[test]
    fn traffic_result_without_flow_is_rejected() {
        let mut bytes = Vec::new();
        ciborium::into_writer(
            &ciborium::Value::Map(vec![
                ("window_start".into(), 0.into()),
                ("window_end".into(), 1.into()),
                ("district".into(), "d".into()),
                ("kind".into(), "traffic".into()),
                ("readings".into(), 0.into()),
                ("sensors".into(), 0.into()),
            ]),
            &mut bytes,
        )
        .unwrap();
        assert!(WindowResult::decode(&bytes).is_err());
    }
}
