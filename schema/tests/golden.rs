//! Golden fixtures: CBOR written by an independent encoder (Python's cbor2, see
//! `fixtures/make_fixtures.py`), decoded forever. Fixtures are only ever added, never rewritten.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use citypulse_schema::*;
use std::path::PathBuf;

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The contract's CDDL with `root` as its first rule (the validator starts from the first rule).
fn cddl(root: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("citypulse.cddl");
    format!("root = {root}\n{}", std::fs::read_to_string(path).unwrap())
}

fn root_of(fixture: &str) -> &'static str {
    match fixture.split('_').next() {
        Some("window") => "window-result",
        Some("alert") => "alert-event",
        _ => "reading",
    }
}

#[test]
fn traffic_reading_fixture_decodes_to_its_values() {
    let r = Reading::decode(&fixture("reading_traffic_v1.cbor")).unwrap();
    assert_eq!(
        r,
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
    );
    // Our encoder writes the same keys and values (floats may use a shorter width).
    assert_eq!(Reading::decode(&r.encode()).unwrap(), r);
}

#[test]
fn zero_count_traffic_reading_has_no_speed() {
    let r = Reading::decode(&fixture("reading_traffic_zero_count_v1.cbor")).unwrap();
    let Measurement::Traffic(t) = r.data else {
        panic!("traffic")
    };
    assert_eq!(
        (t.count, t.speed_kmh, t.lanes, t.occupancy),
        (0, None, 3, 0.0)
    );
}

#[test]
fn air_fixtures_decode_including_unknown_keys_and_integers() {
    let full = Reading::decode(&fixture("reading_air_full_v1.cbor")).unwrap();
    assert_eq!(
        full.data,
        Measurement::Air(Air {
            pm25_ugm3: Some(35.4),
            pm10_ugm3: Some(54.0),
            o3_ppb: Some(70.0),
            no2_ppb: Some(100.0),
            so2_ppb: Some(75.0),
            co_ppm: Some(9.4),
            temp_c: Some(-3.5),
            rh_pct: Some(81.0),
            interval_s: None,
        })
    );
    let partial = Reading::decode(&fixture("reading_air_partial_unknown_keys_v1.cbor")).unwrap();
    assert_eq!((partial.sensor.as_str(), partial.seq), ("aq-0042", 10));
    assert_eq!(
        partial.data,
        Measurement::Air(Air {
            pm25_ugm3: Some(12.0),
            ..Air::default()
        })
    );
}

#[test]
fn invalid_fixtures_fail_with_their_reason() {
    for (name, reason) in [
        ("invalid_not_a_map.cbor", "not_a_map"),
        ("invalid_wrong_type.cbor", "wrong_type"),
        ("invalid_unsupported_version.cbor", "unsupported_version"),
        ("invalid_unknown_kind.cbor", "unknown_kind"),
        ("invalid_missing_field.cbor", "missing_field"),
        ("invalid_truncated.cbor", "malformed_cbor"),
        ("invalid_malformed.cbor", "malformed_cbor"),
    ] {
        let err = Reading::decode(&fixture(name)).unwrap_err();
        assert_eq!(err.reason(), reason, "{name}: {err}");
    }
}

#[test]
fn output_fixtures_decode() {
    let w = WindowResult::decode(&fixture("window_traffic_district_v1.cbor")).unwrap();
    assert_eq!(w.subject(), "metrics.traffic.d01");
    let WindowMetrics::Traffic(t) = &w.metrics else {
        panic!("traffic")
    };
    assert_eq!((t.los, t.flow_vph), (Some(Los::D), 1440.0));

    let a = WindowResult::decode(&fixture("window_air_sensor_v1.cbor")).unwrap();
    assert_eq!(a.subject(), "metrics.air.d03.aq-0007");
    assert_eq!(a.value("aqi"), Some(51.0));

    let e = AlertEvent::decode(&fixture("alert_firing_v1.cbor")).unwrap();
    assert_eq!(
        (e.state, e.severity),
        (AlertState::Firing, Severity::Critical)
    );
    assert_eq!(e.subject(), "alerts.critical.air.d04");
}

#[test]
fn valid_fixtures_conform_to_the_cddl() {
    for name in [
        "reading_traffic_v1.cbor",
        "reading_traffic_zero_count_v1.cbor",
        "reading_air_full_v1.cbor",
        "reading_air_partial_unknown_keys_v1.cbor",
        "window_traffic_district_v1.cbor",
        "window_air_sensor_v1.cbor",
        "alert_firing_v1.cbor",
        "reading_air_interval_v1.cbor",
        "window_air_district_beyond_v1.cbor",
    ] {
        cddl::validate_cbor_from_slice(&cddl(root_of(name)), &fixture(name), None)
            .unwrap_or_else(|e| panic!("{name} does not conform: {e}"));
    }
}

#[test]
fn our_encodings_conform_to_the_cddl() {
    let r = Reading::decode(&fixture("reading_air_full_v1.cbor")).unwrap();
    let w = WindowResult::decode(&fixture("window_air_sensor_v1.cbor")).unwrap();
    let e = AlertEvent::decode(&fixture("alert_firing_v1.cbor")).unwrap();
    let ri = Reading::decode(&fixture("reading_air_interval_v1.cbor")).unwrap();
    let wd = WindowResult::decode(&fixture("window_air_district_beyond_v1.cbor")).unwrap();
    for (root, bytes) in [
        ("reading", r.encode()),
        ("window-result", w.encode()),
        ("alert-event", e.encode()),
        ("reading", ri.encode()),
        ("window-result", wd.encode()),
    ] {
        cddl::validate_cbor_from_slice(&cddl(root), &bytes, None)
            .unwrap_or_else(|err| panic!("our {root} does not conform: {err}"));
    }
}

#[test]
fn invalid_reading_fixtures_do_not_conform_to_the_cddl() {
    let spec = cddl("reading");
    for name in [
        "invalid_not_a_map.cbor",
        "invalid_wrong_type.cbor",
        "invalid_unsupported_version.cbor",
        "invalid_unknown_kind.cbor",
        "invalid_missing_field.cbor",
    ] {
        assert!(
            cddl::validate_cbor_from_slice(&spec, &fixture(name), None).is_err(),
            "{name} should not conform"
        );
    }
}

#[test]
fn issue_10_fixtures_decode_to_their_values() {
    let r = Reading::decode(&fixture("reading_air_interval_v1.cbor")).unwrap();
    assert_eq!(
        r.data,
        Measurement::Air(Air {
            pm25_ugm3: Some(9.0995),
            so2_ppb: Some(310.0),
            interval_s: Some(300),
            ..Air::default()
        })
    );
    assert_eq!(Reading::decode(&r.encode()).unwrap(), r);

    let w = WindowResult::decode(&fixture("window_air_district_beyond_v1.cbor")).unwrap();
    assert_eq!(w.subject(), "metrics.air.d04");
    let WindowMetrics::Air(a) = &w.metrics else {
        panic!("air")
    };
    assert_eq!((a.aqi, a.beyond_aqi), (Some(607), Some(true)));
    assert_eq!(a.aqi_sensor.as_deref(), Some("aq-0031"));
    assert_eq!((a.aqi_so2, a.so2_24h_ppb), (Some(203), Some(310.0)));
    assert_eq!(w.value("so2_24h_ppb"), Some(310.0));
    assert_eq!(WindowResult::decode(&w.encode()).unwrap(), w);
}

#[test]
fn old_payloads_decode_with_the_new_fields_absent() {
    let r = Reading::decode(&fixture("reading_air_full_v1.cbor")).unwrap();
    let Measurement::Air(air) = r.data else {
        panic!("air")
    };
    assert_eq!(air.interval_s, None);
    let w = WindowResult::decode(&fixture("window_air_sensor_v1.cbor")).unwrap();
    let WindowMetrics::Air(a) = w.metrics else {
        panic!("air")
    };
    assert_eq!(
        (a.beyond_aqi, a.aqi_sensor, a.so2_24h_ppb),
        (None, None, None)
    );
}

/// The air window result exactly as readers decoded it before issue 10 (a frozen copy of the
/// v1 field set, serde defaults and unknown keys ignored, as `WindowResult::decode` did).
#[derive(serde::Deserialize, Debug, PartialEq)]
struct AirWindowBeforeIssue10 {
    window_start: u64,
    window_end: u64,
    district: String,
    kind: String,
    #[serde(default)]
    sensor: Option<String>,
    readings: u64,
    sensors: u64,
    #[serde(default)]
    aqi: Option<u16>,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    dominant: Option<String>,
    #[serde(default)]
    aqi_pm10: Option<u16>,
    #[serde(default)]
    aqi_so2: Option<u16>,
    #[serde(default)]
    pm10_nowcast_ugm3: Option<f64>,
    #[serde(default)]
    so2_1h_ppb: Option<f64>,
}

#[test]
fn old_decoders_read_the_new_payloads() {
    // A v1 reader keeps working on the new window result: the added keys are unknown to it and
    // ignored; every field it knows keeps its meaning.
    let old: AirWindowBeforeIssue10 =
        ciborium::from_reader(&fixture("window_air_district_beyond_v1.cbor")[..]).unwrap();
    assert_eq!(old.aqi, Some(607));
    assert_eq!(old.category.as_deref(), Some("hazardous"));
    assert_eq!((old.aqi_so2, old.so2_1h_ppb), (Some(203), Some(310.0)));
    assert_eq!(
        (old.district.as_str(), old.sensor.as_deref()),
        ("d04", None)
    );
    // And on what the processors now write, beyond the AQI, with every new field set.
    let new = WindowResult::decode(&fixture("window_air_district_beyond_v1.cbor")).unwrap();
    let old_again: AirWindowBeforeIssue10 = ciborium::from_reader(&new.encode()[..]).unwrap();
    assert_eq!(old_again, old);
    // A reading with `interval_s` is a valid v1 reading (the key is optional in the CDDL, and
    // v1 readers ignore keys they do not know: see the partial-unknown-keys fixture).
    let v: ciborium::Value =
        ciborium::from_reader(&fixture("reading_air_interval_v1.cbor")[..]).unwrap();
    let keys: Vec<_> = v
        .as_map()
        .unwrap()
        .iter()
        .filter_map(|(k, _)| k.as_text())
        .collect();
    assert!(keys.contains(&"interval_s") && keys.contains(&"v"));
}

#[test]
fn travel_time_index_fixtures_decode_conform_and_older_ones_lack_it() {
    let d = WindowResult::decode(&fixture("window_traffic_district_tti_v1.cbor")).unwrap();
    assert_eq!(d.value("travel_time_index"), Some(1.6));
    assert_eq!(d.value("los"), Some(3.0), "C");
    let s = WindowResult::decode(&fixture("window_traffic_sensor_tti_v1.cbor")).unwrap();
    assert_eq!(s.subject(), "metrics.traffic.d02.loop-d02-004");
    assert_eq!(
        s.value("travel_time_index"),
        Some(1.0),
        "written as an integer"
    );
    let old = WindowResult::decode(&fixture("window_traffic_district_v1.cbor")).unwrap();
    assert_eq!(old.value("travel_time_index"), None, "a v1 writer omits it");
    for name in [
        "window_traffic_district_tti_v1.cbor",
        "window_traffic_sensor_tti_v1.cbor",
    ] {
        cddl::validate_cbor_from_slice(&cddl("window-result"), &fixture(name), None)
            .unwrap_or_else(|e| panic!("{name} does not conform: {e}"));
        let w = WindowResult::decode(&fixture(name)).unwrap();
        assert_eq!(WindowResult::decode(&w.encode()).unwrap(), w);
        cddl::validate_cbor_from_slice(&cddl("window-result"), &w.encode(), None)
            .unwrap_or_else(|e| panic!("our re-encoding of {name} does not conform: {e}"));
    }
}
