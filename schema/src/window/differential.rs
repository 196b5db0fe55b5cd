//! Differential tests of the fast path ([`direct`](super::direct)) against the serde decoder.
//! The fast path may decline anything; what it accepts, serde must decode to the same result,
//! floats bit for bit. And [`WindowResult::decode`] as a whole must return what the serde decoder
//! returns on every input, errors and their messages included.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use ciborium::Value;
use proptest::prelude::*;

/// Everything observable about a decode result: the value, its exact encoding (float bits
/// included), or the error and its message.
fn observed(result: &Result<WindowResult, DecodeError>) -> String {
    match result {
        Ok(w) => format!("Ok({w:?}) {}", hex(&w.encode())),
        Err(e) => format!("Err({e:?}) {e}"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Fails when the fast path accepts `bytes` and serde does not return the same, or when
/// `decode` as a whole differs from serde.
fn same(bytes: &[u8]) -> Result<(), TestCaseError> {
    let serde = observed(&WindowResult::decode_serde(bytes));
    if let Some(fast) = direct::decode(bytes) {
        let fast = observed(&Ok(fast));
        prop_assert_eq!(&fast, &serde, "fast path on {}", hex(bytes));
    }
    let whole = observed(&WindowResult::decode(bytes));
    prop_assert_eq!(whole, serde, "decode on {}", hex(bytes));
    Ok(())
}

fn token<T: Copy + std::fmt::Debug + 'static>(all: &'static [T]) -> BoxedStrategy<Option<T>> {
    proptest::option::of(proptest::sample::select(all)).boxed()
}

/// A float the processors could write: finite, sometimes whole, sometimes -0.0.
fn figure() -> impl Strategy<Value = f64> {
    prop_oneof![
        6 => -1.0e6..1.0e6f64,
        2 => (0u32..5000).prop_map(f64::from),
        1 => Just(-0.0),
        1 => Just(0.1),
    ]
}

fn any_traffic() -> impl Strategy<Value = TrafficMetrics> {
    let o = || proptest::option::of(figure());
    (
        figure(),
        figure(),
        [o(), o(), o(), o(), o()],
        token(Los::ALL),
    )
        .prop_map(
            |(flow_vph, occupancy, [s, d, ci, cs, tti], los)| TrafficMetrics {
                flow_vph,
                occupancy,
                speed_kmh: s,
                density_vpkm: d,
                los,
                congestion_index: ci,
                congested_share: cs,
                travel_time_index: tti,
            },
        )
}

fn any_air() -> impl Strategy<Value = AirMetrics> {
    let f = proptest::collection::vec(proptest::option::of(figure()), 13);
    let i = proptest::collection::vec(proptest::option::of(any::<u16>()), 7);
    let pollutant = || token(Pollutant::ALL);
    (
        f,
        i,
        (token(AqiCategory::ALL), pollutant(), pollutant()),
        token(EaqiBand::ALL),
        proptest::option::of("[a-z0-9-]{1,12}"),
    )
        .prop_map(
            |(f, i, (category, dominant, eaqi_dominant), eaqi, station)| AirMetrics {
                aqi: i[0],
                category,
                dominant,
                aqi_pm25: i[1],
                aqi_pm10: i[2],
                aqi_o3: i[3],
                aqi_no2: i[4],
                aqi_so2: i[5],
                aqi_co: i[6],
                pm25_ugm3: f[0],
                pm25_nowcast_ugm3: f[1],
                pm25_24h_ugm3: f[2],
                pm10_ugm3: f[3],
                pm10_nowcast_ugm3: f[4],
                pm10_24h_ugm3: f[5],
                o3_1h_ppb: f[6],
                o3_8h_ppb: f[7],
                no2_1h_ppb: f[8],
                so2_1h_ppb: f[9],
                co_8h_ppm: f[10],
                eaqi,
                eaqi_dominant,
                beyond_aqi: None,
                aqi_sensor: station,
                so2_24h_ppb: f[12],
            },
        )
}

/// A window result as the processors write it.
fn any_window() -> impl Strategy<Value = WindowResult> {
    let metrics = prop_oneof![
        any_traffic().prop_map(WindowMetrics::Traffic),
        any_air().prop_map(|a| WindowMetrics::Air(Box::new(a))),
    ];
    (
        any::<u64>(),
        any::<u64>(),
        "d[0-9]{2}",
        proptest::option::of("[a-z]{2,4}-[0-9]{4}"),
        any::<u64>(),
        any::<u64>(),
        metrics,
    )
        .prop_map(
            |(window_start, window_end, district, sensor, readings, sensors, metrics)| {
                WindowResult {
                    window_start,
                    window_end,
                    district,
                    sensor,
                    readings,
                    sensors,
                    metrics,
                }
            },
        )
}

/// The CBOR map of `w`'s encoding, to be rewritten into an unusual form.
fn entries(w: &WindowResult) -> Vec<(Value, Value)> {
    let v: Value = ciborium::from_reader(&w.encode()[..]).unwrap();
    v.into_map().unwrap()
}

fn to_bytes(map: Vec<(Value, Value)>) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(&Value::Map(map), &mut out).unwrap();
    out
}

/// One way to make an entry unusual: a value of another type or form, an extra entry.
#[derive(Debug, Clone)]
enum Twist {
    /// Replace entry `i`'s value.
    Value(usize, Value),
    /// Add an entry.
    Entry(Value, Value),
    /// Repeat entry `i`.
    Repeat(usize),
}

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u64>().prop_map(|n| Value::Integer(n.into())),
        (-1000i64..0).prop_map(|n| Value::Integer(n.into())),
        (0u16..300).prop_map(|n| Value::Integer(n.into())),
        any::<f64>().prop_map(Value::Float),
        Just(Value::Float(f64::NAN)),
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        "[a-zA-Z]{0,6}".prop_map(Value::Text),
        Just(Value::Text("traffic".into())),
        Just(Value::Text("air".into())),
        Just(Value::Text("D".into())),
        Just(Value::Text("pm25".into())),
        Just(Value::Bytes(vec![0x01, 0x00])),
        Just(Value::Tag(2, Box::new(Value::Bytes(vec![0x01, 0x00])))),
        Just(Value::Tag(1, Box::new(Value::Integer(5.into())))),
        Just(Value::Array(vec![Value::Integer(1.into())])),
    ]
}

fn any_key() -> impl Strategy<Value = Value> {
    prop_oneof![
        proptest::sample::select(&direct::NAMES[..]).prop_map(|k| Value::Text(k.to_owned())),
        "[a-z_]{1,8}".prop_map(Value::Text),
        Just(Value::Integer(1.into())),
    ]
}

fn any_twist() -> impl Strategy<Value = Twist> {
    prop_oneof![
        4 => (any::<usize>(), any_value()).prop_map(|(i, v)| Twist::Value(i, v)),
        2 => (any_key(), any_value()).prop_map(|(k, v)| Twist::Entry(k, v)),
        1 => any::<usize>().prop_map(Twist::Repeat),
    ]
}

fn twisted(w: &WindowResult, twists: &[Twist]) -> Vec<u8> {
    let mut map = entries(w);
    for t in twists {
        let n = map.len();
        match t.clone() {
            Twist::Value(i, v) => map[i % n].1 = v,
            Twist::Entry(k, v) => map.push((k, v)),
            Twist::Repeat(i) => map.push(map[i % n].clone()),
        }
    }
    to_bytes(map)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3_000))]

    /// What the processors write always takes the fast path, and decodes to itself.
    #[test]
    fn plain_results_take_the_fast_path(w in any_window()) {
        let bytes = w.encode();
        prop_assert_eq!(direct::decode(&bytes), Some(w.clone()));
        same(&bytes)?;
    }

    #[test]
    fn unusual_results_decode_as_serde_decodes_them(
        w in any_window(),
        twists in proptest::collection::vec(any_twist(), 1..4),
    ) {
        same(&twisted(&w, &twists))?;
    }

    #[test]
    fn mutated_results_decode_as_serde_decodes_them(
        w in any_window(),
        edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = w.encode();
        for (i, b) in edits {
            let n = bytes.len();
            bytes[i % n] = b;
        }
        same(&bytes)?;
    }

    #[test]
    fn arbitrary_bytes_decode_as_serde_decodes_them(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        same(&bytes)?;
    }
}

/// `direct::NAMES` lists the keys in the encoder's order, each once, for both kinds.
#[test]
fn the_fast_path_knows_every_key_in_the_encoders_order() {
    let mut air = tests::full_air_window();
    air.sensor = Some("aq-1".into());
    let keys = |w: &WindowResult| -> Vec<String> {
        entries(w)
            .into_iter()
            .map(|(k, _)| k.into_text().unwrap())
            .collect()
    };
    let names: Vec<String> = direct::NAMES.iter().map(|k| (*k).to_owned()).collect();
    let mut traffic = tests::traffic_window();
    traffic.sensor = Some("loop-1".into());
    let expected_traffic: Vec<String> = names[..15].to_vec();
    let expected_air: Vec<String> = names[..7].iter().chain(&names[15..]).cloned().collect();
    assert_eq!(keys(&traffic), expected_traffic);
    assert_eq!(keys(&air), expected_air);
}

/// Inputs the fast path declines on purpose still decode, through serde, as before.
#[test]
fn declined_forms_decode_through_serde() {
    let w = tests::traffic_window();
    let with = |key: &str, value: Value| {
        let mut map = entries(&w);
        match map.iter_mut().find(|(k, _)| k.as_text() == Some(key)) {
            Some(entry) => entry.1 = value,
            None => map.push((Value::Text(key.into()), value)),
        }
        to_bytes(map)
    };
    let cases = [
        // An integer where the contract says float: serde accepts it.
        with("flow_vph", Value::Integer(1440.into())),
        // A newer producer's field: tolerated.
        with("lanes_closed", Value::Integer(1.into())),
        // Null for an absent option.
        with("speed_kmh", Value::Null),
        with("sensor", Value::Null),
        // An air figure on a traffic result: serde checks its type, then drops it.
        with("aqi", Value::Integer(7.into())),
        with("aqi", Value::Text("x".into())),
        // beyond_aqi, which the fast path does not read.
        with("beyond_aqi", Value::Bool(true)),
    ];
    for bytes in cases {
        assert_eq!(direct::decode(&bytes), None, "{}", hex(&bytes));
        same(&bytes).unwrap();
    }
    let decoded = WindowResult::decode(&with("flow_vph", Value::Integer(1440.into()))).unwrap();
    assert_eq!(decoded, w);
    let decoded = WindowResult::decode(&with("lanes_closed", Value::Integer(1.into()))).unwrap();
    assert_eq!(decoded, w);
    assert!(WindowResult::decode(&with("aqi", Value::Text("x".into()))).is_err());
}
