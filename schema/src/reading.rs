//! [`Reading`]: one sensor's report, the unit of everything downstream.

use crate::codec::{self, DecodeError, Fields, MAX_READING_BYTES};
use crate::subject::SensorSubject;
use crate::vocab::Kind;
use serde::Serialize;

/// The schema version this crate writes and reads.
pub const SCHEMA_VERSION: u64 = 1;

/// One reading as it travels on `sensors.<district>.<kind>.<sensor_id>`: a CBOR map with text keys
/// (see `schema/citypulse.cddl`).
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// Sensor id; equals the subject's last token.
    pub sensor: String,
    /// District; equals the subject's second token.
    pub district: String,
    /// Event time, milliseconds since the Unix epoch.
    pub ts: u64,
    /// Per-sensor sequence number, +1 per reading.
    pub seq: u64,
    /// What was measured; its variant gives the `kind`.
    pub data: Measurement,
}

/// The kind-specific part of a reading.
#[derive(Debug, Clone, PartialEq)]
pub enum Measurement {
    /// A loop detector's counting interval.
    Traffic(Traffic),
    /// An air-quality station's sample.
    Air(Air),
}

/// A loop detector's report for one counting interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Traffic {
    /// Vehicles counted in the interval.
    pub count: u32,
    /// Interval length, seconds (30 is typical).
    pub interval_s: u32,
    /// Fraction of the interval the loop was occupied, 0..1.
    pub occupancy: f64,
    /// Mean speed of the counted vehicles, km/h; `None` when `count` is 0.
    pub speed_kmh: Option<f64>,
    /// Lanes covered by the detector.
    pub lanes: u32,
}

/// An air-quality station's sample. Each pollutant is optional: a station measures what it
/// measures.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Air {
    /// PM2.5, µg/m³.
    pub pm25_ugm3: Option<f64>,
    /// PM10, µg/m³.
    pub pm10_ugm3: Option<f64>,
    /// Ozone, ppb.
    pub o3_ppb: Option<f64>,
    /// Nitrogen dioxide, ppb.
    pub no2_ppb: Option<f64>,
    /// Sulphur dioxide, ppb.
    pub so2_ppb: Option<f64>,
    /// Carbon monoxide, ppm.
    pub co_ppm: Option<f64>,
    /// Air temperature, °C.
    pub temp_c: Option<f64>,
    /// Relative humidity, %.
    pub rh_pct: Option<f64>,
    /// The averaging interval the concentrations cover, seconds, ending at `ts` (optional: a
    /// station that does not say is taken to cover the time since its previous reading, at most
    /// 15 minutes; see the processors' hour-coverage rule).
    pub interval_s: Option<u32>,
}

impl Air {
    /// How many fields [`Air::values`] gives.
    pub const VALUES: usize = 8;

    /// The measured fields in the wire format's key order: the six pollutants (PM2.5, PM10,
    /// O3, NO2, SO2, CO), then `temp_c` and `rh_pct`. Code that treats every field alike walks
    /// this instead of naming each one.
    pub fn values(&self) -> [Option<f64>; Air::VALUES] {
        [
            self.pm25_ugm3,
            self.pm10_ugm3,
            self.o3_ppb,
            self.no2_ppb,
            self.so2_ppb,
            self.co_ppm,
            self.temp_c,
            self.rh_pct,
        ]
    }
}

impl Reading {
    /// The sensor kind, from the measurement variant.
    pub fn kind(&self) -> Kind {
        match self.data {
            Measurement::Traffic(_) => Kind::Traffic,
            Measurement::Air(_) => Kind::Air,
        }
    }

    /// The subject identity this reading claims (not validated as tokens).
    pub fn claimed_subject(&self) -> String {
        format!("sensors.{}.{}.{}", self.district, self.kind(), self.sensor)
    }

    /// True when the payload speaks for the sensor named by `subject`.
    pub fn matches(&self, subject: &SensorSubject) -> bool {
        self.sensor == subject.sensor
            && self.district == subject.district
            && self.kind() == subject.kind
    }

    /// The natural key used as JetStream `Nats-Msg-Id`: sensor and sequence number.
    pub fn msg_id(&self) -> String {
        reading_msg_id(&self.sensor, self.seq)
    }

    /// Encodes as CBOR: a map with the contract's text keys, in a fixed order, absent options
    /// omitted. Deterministic: the same reading always gives the same bytes.
    pub fn encode(&self) -> Vec<u8> {
        codec::to_vec(&WireReading::from(self))
    }

    /// Decodes a CBOR payload, tolerating unknown keys. Structural checks only: see
    /// [`DecodeError`].
    pub fn decode(bytes: &[u8]) -> Result<Reading, DecodeError> {
        use key::*;
        let mut f = Fields::parse(bytes, MAX_READING_BYTES, &key::NAMES)?;
        let v = f.u64(V)?;
        if v != SCHEMA_VERSION {
            return Err(DecodeError::UnsupportedVersion(v));
        }
        let kind_token = f.str(KIND)?;
        let kind = Kind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == kind_token)
            .ok_or_else(|| DecodeError::UnknownKind(kind_token.into_owned()))?;
        let sensor = f.text(SENSOR)?;
        let district = f.text(DISTRICT)?;
        let ts = f.u64(TS)?;
        let seq = f.u64(SEQ)?;
        let data = match kind {
            Kind::Traffic => Measurement::Traffic(Traffic {
                count: f.u32(COUNT)?,
                interval_s: f.u32(INTERVAL_S)?,
                occupancy: f.f64(OCCUPANCY)?,
                speed_kmh: f.opt_f64(SPEED_KMH)?,
                lanes: f.u32(LANES)?,
            }),
            Kind::Air => Measurement::Air(Air {
                pm25_ugm3: f.opt_f64(PM25_UGM3)?,
                pm10_ugm3: f.opt_f64(PM10_UGM3)?,
                o3_ppb: f.opt_f64(O3_PPB)?,
                no2_ppb: f.opt_f64(NO2_PPB)?,
                so2_ppb: f.opt_f64(SO2_PPB)?,
                co_ppm: f.opt_f64(CO_PPM)?,
                temp_c: f.opt_f64(TEMP_C)?,
                rh_pct: f.opt_f64(RH_PCT)?,
                interval_s: f.opt_u32(INTERVAL_S)?,
            }),
        };
        Ok(Reading {
            sensor,
            district,
            ts,
            seq,
            data,
        })
    }
}

/// The reading's wire keys and their indices in [`Fields`]. `NAMES` is in the order
/// [`Reading::encode`] writes them, which is the order the decoder tries first.
mod key {
    pub(super) const NAMES: [&str; 19] = [
        "v",
        "sensor",
        "district",
        "kind",
        "ts",
        "seq",
        "count",
        "interval_s",
        "occupancy",
        "speed_kmh",
        "lanes",
        "pm25_ugm3",
        "pm10_ugm3",
        "o3_ppb",
        "no2_ppb",
        "so2_ppb",
        "co_ppm",
        "temp_c",
        "rh_pct",
    ];
    pub(super) const V: usize = 0;
    pub(super) const SENSOR: usize = 1;
    pub(super) const DISTRICT: usize = 2;
    pub(super) const KIND: usize = 3;
    pub(super) const TS: usize = 4;
    pub(super) const SEQ: usize = 5;
    pub(super) const COUNT: usize = 6;
    pub(super) const INTERVAL_S: usize = 7;
    pub(super) const OCCUPANCY: usize = 8;
    pub(super) const SPEED_KMH: usize = 9;
    pub(super) const LANES: usize = 10;
    pub(super) const PM25_UGM3: usize = 11;
    pub(super) const PM10_UGM3: usize = 12;
    pub(super) const O3_PPB: usize = 13;
    pub(super) const NO2_PPB: usize = 14;
    pub(super) const SO2_PPB: usize = 15;
    pub(super) const CO_PPM: usize = 16;
    pub(super) const TEMP_C: usize = 17;
    pub(super) const RH_PCT: usize = 18;
}

/// `Nats-Msg-Id` of a reading: `<sensor>:<seq>`.
pub fn reading_msg_id(sensor: &str, seq: u64) -> String {
    format!("{sensor}:{seq}")
}

/// The flat wire shape, for encoding only (decoding reads the map with [`Fields`], for precise
/// errors without an intermediate tree).
#[derive(Serialize)]
struct WireReading<'a> {
    v: u64,
    sensor: &'a str,
    district: &'a str,
    kind: Kind,
    ts: u64,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval_s: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    occupancy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    speed_kmh: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lanes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pm25_ugm3: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pm10_ugm3: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    o3_ppb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    no2_ppb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    so2_ppb: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    co_ppm: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temp_c: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rh_pct: Option<f64>,
}

impl<'a> From<&'a Reading> for WireReading<'a> {
    fn from(r: &'a Reading) -> Self {
        let mut w = WireReading {
            v: SCHEMA_VERSION,
            sensor: &r.sensor,
            district: &r.district,
            kind: r.kind(),
            ts: r.ts,
            seq: r.seq,
            count: None,
            interval_s: None,
            occupancy: None,
            speed_kmh: None,
            lanes: None,
            pm25_ugm3: None,
            pm10_ugm3: None,
            o3_ppb: None,
            no2_ppb: None,
            so2_ppb: None,
            co_ppm: None,
            temp_c: None,
            rh_pct: None,
        };
        match &r.data {
            Measurement::Traffic(t) => {
                w.count = Some(t.count);
                w.interval_s = Some(t.interval_s);
                w.occupancy = Some(t.occupancy);
                w.speed_kmh = t.speed_kmh;
                w.lanes = Some(t.lanes);
            }
            Measurement::Air(a) => {
                w.pm25_ugm3 = a.pm25_ugm3;
                w.pm10_ugm3 = a.pm10_ugm3;
                w.o3_ppb = a.o3_ppb;
                w.no2_ppb = a.no2_ppb;
                w.so2_ppb = a.so2_ppb;
                w.co_ppm = a.co_ppm;
                w.temp_c = a.temp_c;
                w.rh_pct = a.rh_pct;
                w.interval_s = a.interval_s;
            }
        }
        w
    }
}

#[cfg(test)]
mod differential;

#[cfg(test)]
mod tests {
    use super::*;
    use ciborium::Value;
    use proptest::prelude::*;

    pub(super) fn traffic() -> Reading {
        Reading {
            sensor: "loop-0001".into(),
            district: "d01".into(),
            ts: 1_767_225_600_000,
            seq: 42,
            data: Measurement::Traffic(Traffic {
                count: 12,
                interval_s: 30,
                occupancy: 0.125,
                speed_kmh: Some(48.5),
                lanes: 2,
            }),
        }
    }

    fn encode_value(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).unwrap();
        out
    }

    fn map(entries: &[(&str, Value)]) -> Value {
        Value::Map(
            entries
                .iter()
                .map(|(k, v)| (Value::Text((*k).to_owned()), v.clone()))
                .collect(),
        )
    }

    fn base_air(extra: &[(&str, Value)]) -> Vec<u8> {
        let mut e = vec![
            ("v", Value::from(1)),
            ("sensor", Value::from("aq-1")),
            ("district", Value::from("d02")),
            ("kind", Value::from("air")),
            ("ts", Value::from(1000)),
            ("seq", Value::from(7)),
        ];
        e.extend(extra.iter().cloned());
        encode_value(&map(&e))
    }

    #[test]
    fn round_trips_a_traffic_reading() {
        let r = traffic();
        assert_eq!(Reading::decode(&r.encode()).unwrap(), r);
    }

    #[test]
    fn unknown_keys_are_ignored() {
        let bytes = base_air(&[
            ("pm25_ugm3", Value::from(12.5)),
            ("firmware", Value::from("x")),
        ]);
        let r = Reading::decode(&bytes).unwrap();
        assert_eq!(r.kind(), Kind::Air);
        let Measurement::Air(a) = r.data else {
            panic!("air")
        };
        assert_eq!(a.pm25_ugm3, Some(12.5));
    }

    #[test]
    fn integers_are_accepted_for_float_fields() {
        let r = Reading::decode(&base_air(&[("pm25_ugm3", Value::from(12))])).unwrap();
        let Measurement::Air(a) = r.data else {
            panic!("air")
        };
        assert_eq!(a.pm25_ugm3, Some(12.0));
    }

    #[test]
    fn each_structural_fault_has_its_own_error() {
        let good = traffic().encode();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![0u8; MAX_READING_BYTES + 1], "oversized"),
            (good[..good.len() - 3].to_vec(), "malformed_cbor"),
            (Vec::new(), "malformed_cbor"),
            (vec![0xff, 0x00], "malformed_cbor"),
            ([good.clone(), vec![0x00]].concat(), "malformed_cbor"),
            (encode_value(&Value::Array(vec![])), "not_a_map"),
            (
                base_air(&[("pm25_ugm3", Value::from("high"))]),
                "wrong_type",
            ),
            (
                encode_value(&map(&[("v", Value::from(1)), ("kind", Value::from("air"))])),
                "missing_field",
            ),
            (
                encode_value(&map(&[("v", Value::from(1)), ("kind", Value::from("bus"))])),
                "unknown_kind",
            ),
            (
                encode_value(&map(&[("v", Value::from(2)), ("kind", Value::from("air"))])),
                "unsupported_version",
            ),
            (encode_value(&map(&[("v", Value::from(-1))])), "wrong_type"),
        ];
        for (bytes, reason) in cases {
            let err = Reading::decode(&bytes).unwrap_err();
            assert_eq!(err.reason(), reason, "{err}");
            assert!(DecodeError::REASONS.contains(&err.reason()));
        }
    }

    #[test]
    fn truncated_input_says_so() {
        let good = traffic().encode();
        assert_eq!(Reading::decode(&good[..1]), Err(DecodeError::Truncated));
    }

    #[test]
    fn duplicate_keys_are_rejected() {
        let bytes = base_air(&[("seq", Value::from(8))]);
        assert!(matches!(Reading::decode(&bytes), Err(DecodeError::DuplicateKey(k)) if k == "seq"));
    }

    #[test]
    fn missing_traffic_field_is_named() {
        let bytes = encode_value(&map(&[
            ("v", Value::from(1)),
            ("sensor", Value::from("l")),
            ("district", Value::from("d")),
            ("kind", Value::from("traffic")),
            ("ts", Value::from(1)),
            ("seq", Value::from(1)),
            ("count", Value::from(1)),
            ("interval_s", Value::from(30)),
            ("occupancy", Value::from(0.1)),
        ]));
        assert_eq!(
            Reading::decode(&bytes),
            Err(DecodeError::MissingField("lanes"))
        );
    }

    fn opt_f() -> impl Strategy<Value = Option<f64>> {
        proptest::option::of(-1.0e6f64..1.0e6)
    }

    pub(super) fn any_reading() -> impl Strategy<Value = Reading> {
        let traffic = (any::<u32>(), any::<u32>(), 0.0f64..1.0, opt_f(), 1u32..8).prop_map(
            |(count, interval_s, occupancy, speed_kmh, lanes)| {
                Measurement::Traffic(Traffic {
                    count,
                    interval_s,
                    occupancy,
                    speed_kmh,
                    lanes,
                })
            },
        );
        let air = (
            opt_f(),
            opt_f(),
            opt_f(),
            opt_f(),
            opt_f(),
            opt_f(),
            opt_f(),
            opt_f(),
            proptest::option::of(any::<u32>()),
        )
            .prop_map(|(a, b, c, d, e, f, g, h, i)| {
                Measurement::Air(Air {
                    pm25_ugm3: a,
                    pm10_ugm3: b,
                    o3_ppb: c,
                    no2_ppb: d,
                    so2_ppb: e,
                    co_ppm: f,
                    temp_c: g,
                    rh_pct: h,
                    interval_s: i,
                })
            });
        (
            "[a-z0-9_-]{1,16}",
            "[a-z0-9_-]{1,8}",
            any::<u64>(),
            any::<u64>(),
            prop_oneof![traffic, air],
        )
            .prop_map(|(sensor, district, ts, seq, data)| Reading {
                sensor,
                district,
                ts,
                seq,
                data,
            })
    }

    proptest! {
        #[test]
        fn decode_of_encode_is_identity(r in any_reading()) {
            prop_assert_eq!(Reading::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn arbitrary_bytes_decode_or_fail_with_a_known_reason(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Err(e) = Reading::decode(&bytes) {
                prop_assert!(DecodeError::REASONS.contains(&e.reason()), "{}", e);
            }
        }
    }
}
