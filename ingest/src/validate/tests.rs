use super::*;
use ciborium::Value;
use citypulse_schema::{Air, Traffic};
use proptest::prelude::*;
use std::collections::BTreeSet;

const NOW: u64 = 1_767_225_600_000;
const LIMITS: TimeLimits = TimeLimits {
    max_future_skew_ms: 30_000,
    max_age_ms: 72 * 3_600_000,
};
const TRAFFIC_SUBJECT: &str = "sensors.d01.traffic.loop-1";
const AIR_SUBJECT: &str = "sensors.d02.air.aq-1";

fn validator() -> Validator {
    Validator::new(LIMITS)
}

fn traffic(f: impl FnOnce(&mut Traffic)) -> Reading {
    let mut t = Traffic {
        count: 12,
        interval_s: 30,
        occupancy: 0.125,
        speed_kmh: Some(48.5),
        lanes: 2,
    };
    f(&mut t);
    Reading {
        sensor: "loop-1".into(),
        district: "d01".into(),
        ts: NOW - 1_000,
        seq: 7,
        data: Measurement::Traffic(t),
    }
}

fn air(f: impl FnOnce(&mut Air)) -> Reading {
    let mut a = Air {
        pm25_ugm3: Some(12.0),
        pm10_ugm3: Some(20.0),
        o3_ppb: Some(30.0),
        no2_ppb: Some(15.0),
        so2_ppb: Some(2.0),
        co_ppm: Some(0.4),
        temp_c: Some(18.0),
        rh_pct: Some(55.0),
        interval_s: Some(60),
    };
    f(&mut a);
    Reading {
        sensor: "aq-1".into(),
        district: "d02".into(),
        ts: NOW,
        seq: 1,
        data: Measurement::Air(a),
    }
}

fn with(mut r: Reading, f: impl FnOnce(&mut Reading)) -> Reading {
    f(&mut r);
    r
}

fn subject_of(r: &Reading) -> &'static str {
    match r.data {
        Measurement::Traffic(_) => TRAFFIC_SUBJECT,
        Measurement::Air(_) => AIR_SUBJECT,
    }
}

fn cbor(entries: &[(&str, Value)]) -> Vec<u8> {
    let map = Value::Map(
        entries
            .iter()
            .map(|(k, v)| (Value::Text((*k).to_owned()), v.clone()))
            .collect(),
    );
    let mut out = Vec::new();
    ciborium::into_writer(&map, &mut out).unwrap();
    out
}

/// One case per rejection reason: (subject, payload, expected reason).
fn rejection_cases() -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let t = |f: fn(&mut Traffic)| traffic(f).encode();
    let a = |f: fn(&mut Air)| air(f).encode();
    let good = traffic(|_| {}).encode();
    vec![
        ("sensors.d01.traffic", good.clone(), "bad_subject"),
        ("sensors.D01.traffic.loop-1", good.clone(), "bad_subject"),
        ("sensors.d01.bus.loop-1", good.clone(), "bad_subject"),
        (TRAFFIC_SUBJECT, vec![0u8; 5000], "oversized"),
        (
            TRAFFIC_SUBJECT,
            good[..good.len() - 2].to_vec(),
            "malformed_cbor",
        ),
        (TRAFFIC_SUBJECT, vec![0x83, 1, 2, 3], "not_a_map"),
        (
            TRAFFIC_SUBJECT,
            cbor(&[("v", 1.into()), ("kind", Value::from(3))]),
            "wrong_type",
        ),
        (
            TRAFFIC_SUBJECT,
            cbor(&[("v", 1.into()), ("kind", "traffic".into())]),
            "missing_field",
        ),
        (
            TRAFFIC_SUBJECT,
            cbor(&[("v", 1.into()), ("kind", "bus".into())]),
            "unknown_kind",
        ),
        (
            TRAFFIC_SUBJECT,
            cbor(&[("v", 2.into()), ("kind", "traffic".into())]),
            "unsupported_version",
        ),
        (
            "sensors.d01.traffic.loop-2",
            good.clone(),
            "identity_mismatch",
        ),
        (
            "sensors.d09.traffic.loop-1",
            good.clone(),
            "identity_mismatch",
        ),
        ("sensors.d01.air.loop-1", good.clone(), "identity_mismatch"),
        (
            TRAFFIC_SUBJECT,
            with(traffic(|_| {}), |r| r.seq = u64::MAX).encode(),
            "seq_out_of_range",
        ),
        (
            TRAFFIC_SUBJECT,
            with(traffic(|_| {}), |r| r.ts = NOW + 30_001).encode(),
            "future_timestamp",
        ),
        (
            TRAFFIC_SUBJECT,
            with(traffic(|_| {}), |r| r.ts = NOW - 72 * 3_600_000 - 1).encode(),
            "too_old",
        ),
        (
            TRAFFIC_SUBJECT,
            with(traffic(|_| {}), |r| r.ts = 0).encode(),
            "too_old",
        ),
        (TRAFFIC_SUBJECT, t(|t| t.occupancy = f64::NAN), "not_finite"),
        (
            TRAFFIC_SUBJECT,
            t(|t| t.speed_kmh = Some(f64::INFINITY)),
            "not_finite",
        ),
        (
            AIR_SUBJECT,
            a(|a| a.pm25_ugm3 = Some(f64::NAN)),
            "not_finite",
        ),
        (
            AIR_SUBJECT,
            a(|a| a.temp_c = Some(f64::NEG_INFINITY)),
            "not_finite",
        ),
        (
            TRAFFIC_SUBJECT,
            t(|t| t.interval_s = 0),
            "interval_out_of_range",
        ),
        (
            TRAFFIC_SUBJECT,
            t(|t| t.interval_s = 3601),
            "interval_out_of_range",
        ),
        (
            AIR_SUBJECT,
            a(|a| a.interval_s = Some(0)),
            "interval_out_of_range",
        ),
        (
            AIR_SUBJECT,
            a(|a| a.interval_s = Some(3601)),
            "interval_out_of_range",
        ),
        (TRAFFIC_SUBJECT, t(|t| t.lanes = 0), "lanes_out_of_range"),
        (TRAFFIC_SUBJECT, t(|t| t.lanes = 9), "lanes_out_of_range"),
        (
            TRAFFIC_SUBJECT,
            t(|t| t.occupancy = 1.01),
            "occupancy_out_of_range",
        ),
        (
            TRAFFIC_SUBJECT,
            t(|t| t.occupancy = -0.01),
            "occupancy_out_of_range",
        ),
        // 2 lanes × 30 s × 1 veh/s = 60.
        (
            TRAFFIC_SUBJECT,
            t(|t| t.count = 61),
            "count_exceeds_capacity",
        ),
        (
            TRAFFIC_SUBJECT,
            t(|t| t.count = u32::MAX),
            "count_exceeds_capacity",
        ),
        (
            TRAFFIC_SUBJECT,
            t(|t| t.speed_kmh = Some(250.1)),
            "speed_out_of_range",
        ),
        (
            TRAFFIC_SUBJECT,
            t(|t| t.speed_kmh = Some(0.0)),
            "speed_out_of_range",
        ),
        (
            TRAFFIC_SUBJECT,
            t(|t| t.speed_kmh = Some(-5.0)),
            "speed_out_of_range",
        ),
        (
            AIR_SUBJECT,
            a(|a| a.pm25_ugm3 = Some(-10.5)),
            "negative_concentration",
        ),
        (
            AIR_SUBJECT,
            a(|a| a.co_ppm = Some(-0.6)),
            "negative_concentration",
        ),
        (
            AIR_SUBJECT,
            a(|a| a.o3_ppb = Some(1000.5)),
            "concentration_out_of_range",
        ),
        (
            AIR_SUBJECT,
            a(|a| a.pm10_ugm3 = Some(2001.0)),
            "concentration_out_of_range",
        ),
        (
            AIR_SUBJECT,
            a(|a| a.temp_c = Some(61.0)),
            "temperature_out_of_range",
        ),
        (
            AIR_SUBJECT,
            a(|a| a.temp_c = Some(-91.0)),
            "temperature_out_of_range",
        ),
        (
            AIR_SUBJECT,
            a(|a| a.rh_pct = Some(100.5)),
            "humidity_out_of_range",
        ),
        (
            AIR_SUBJECT,
            a(|a| a.rh_pct = Some(-1.0)),
            "humidity_out_of_range",
        ),
    ]
}

#[test]
fn every_rejection_has_its_reason() {
    let v = validator();
    for (subject, payload, reason) in rejection_cases() {
        let got = v.validate(subject, &payload, NOW);
        match got {
            Err(rej) => assert_eq!(rej.reason(), reason, "{subject}: {rej}"),
            Ok(acc) => panic!("{subject}: expected {reason}, accepted {acc:?}"),
        }
    }
}

#[test]
fn the_cases_cover_every_reason() {
    let covered: BTreeSet<&str> = rejection_cases().iter().map(|(_, _, r)| *r).collect();
    let all: BTreeSet<&str> = Rejection::reasons().collect();
    assert_eq!(covered, all);
}

#[test]
fn reasons_are_unique_subject_tokens() {
    let all: Vec<&str> = Rejection::reasons().collect();
    let unique: BTreeSet<&str> = all.iter().copied().collect();
    assert_eq!(all.len(), unique.len());
    for r in all {
        assert!(citypulse_schema::subject::is_token(r), "{r}");
    }
}

#[test]
fn valid_readings_are_accepted_unchanged() {
    let v = validator();
    let cases = [
        traffic(|_| {}),
        // Boundaries are inside.
        traffic(|t| {
            t.count = 60;
            t.occupancy = 1.0;
            t.speed_kmh = Some(250.0);
        }),
        traffic(|t| {
            t.interval_s = 1;
            t.lanes = 1;
            t.count = 1;
        }),
        traffic(|t| {
            t.interval_s = 3600;
            t.lanes = 8;
            t.count = 28_800;
            t.occupancy = 0.0;
        }),
        // A single-loop detector: vehicles counted, no speed.
        traffic(|t| t.speed_kmh = None),
        // An empty interval.
        traffic(|t| {
            t.count = 0;
            t.speed_kmh = None;
            t.occupancy = 0.0;
        }),
        air(|_| {}),
        air(|a| *a = Air::default()),
        air(|a| {
            a.pm25_ugm3 = Some(1000.0);
            a.co_ppm = Some(100.0);
            a.temp_c = Some(-90.0);
            a.rh_pct = Some(100.0);
        }),
        air(|a| a.o3_ppb = Some(0.0)),
        // An air station's averaging interval: optional, 1..=3600 s inclusive.
        air(|a| a.interval_s = None),
        air(|a| a.interval_s = Some(1)),
        air(|a| a.interval_s = Some(3600)),
        // Skew and age limits are inclusive.
        with(traffic(|_| {}), |r| r.ts = NOW + 30_000),
        with(traffic(|_| {}), |r| r.ts = NOW - 72 * 3_600_000),
        with(traffic(|_| {}), |r| r.seq = i64::MAX as u64),
    ];
    for r in cases {
        let acc = v
            .validate(subject_of(&r), &r.encode(), NOW)
            .unwrap_or_else(|e| panic!("{r:?}: {e}"));
        assert_eq!(acc.reading, r);
        assert!(acc.adjustments.is_empty());
        assert_eq!(acc.subject.to_string(), subject_of(&r));
    }
}

#[test]
fn small_negative_pollutants_are_clamped_and_reported() {
    let r = air(|a| {
        a.pm25_ugm3 = Some(-0.4);
        a.so2_ppb = Some(-5.0);
    });
    let acc = validator().validate(AIR_SUBJECT, &r.encode(), NOW).unwrap();
    let Measurement::Air(a) = &acc.reading.data else {
        panic!("air")
    };
    assert_eq!(a.pm25_ugm3, Some(0.0));
    assert_eq!(a.so2_ppb, Some(0.0));
    assert_eq!(a.pm10_ugm3, Some(20.0));
    assert_eq!(
        acc.adjustments,
        vec![
            Adjustment::ClampedNegative { field: "pm25_ugm3" },
            Adjustment::ClampedNegative { field: "so2_ppb" },
        ]
    );
    assert!(acc
        .adjustments
        .iter()
        .all(|a| a.reason() == "clamped_negative"));
}

#[test]
fn a_speed_sent_with_no_vehicles_is_dropped_and_reported() {
    // Even a nonsensical speed: with no vehicles it means nothing.
    for speed in [0.0, 42.0, 900.0] {
        let r = traffic(|t| {
            t.count = 0;
            t.speed_kmh = Some(speed);
        });
        let acc = validator()
            .validate(TRAFFIC_SUBJECT, &r.encode(), NOW)
            .unwrap();
        let Measurement::Traffic(t) = &acc.reading.data else {
            panic!("traffic")
        };
        assert_eq!(t.speed_kmh, None);
        assert_eq!(acc.adjustments, vec![Adjustment::SpeedWithoutVehicles]);
    }
}

#[test]
fn a_nan_speed_is_rejected_even_with_no_vehicles() {
    let r = traffic(|t| {
        t.count = 0;
        t.speed_kmh = Some(f64::NAN);
    });
    let err = validator()
        .validate(TRAFFIC_SUBJECT, &r.encode(), NOW)
        .unwrap_err();
    assert_eq!(err.reason(), "not_finite");
}

#[test]
fn details_name_the_offending_value() {
    let r = traffic(|t| t.count = 61);
    let err = validator()
        .validate(TRAFFIC_SUBJECT, &r.encode(), NOW)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "count 61 exceeds 60, the most 2 lane(s) can carry in 30 s"
    );
    let err = validator()
        .validate("sensors.d01.traffic.loop-2", &r.encode(), NOW)
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "payload sensor `loop-1` does not match the subject's `loop-2`"
    );
}

#[test]
fn the_clock_is_a_parameter() {
    let r = with(traffic(|_| {}), |r| r.ts = NOW + 60_000);
    let v = validator();
    assert_eq!(
        v.validate(TRAFFIC_SUBJECT, &r.encode(), NOW)
            .unwrap_err()
            .reason(),
        "future_timestamp"
    );
    assert!(v
        .validate(TRAFFIC_SUBJECT, &r.encode(), NOW + 30_000)
        .is_ok());
}

fn any_subject() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(TRAFFIC_SUBJECT.to_owned()),
        Just(AIR_SUBJECT.to_owned()),
        "sensors\\.[a-z0-9]{1,4}\\.(traffic|air)\\.[a-z0-9-]{1,6}",
        ".{0,40}",
    ]
}

fn any_payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        // Mutations of a valid reading reach the deeper checks far more often.
        (
            proptest::collection::vec((any::<usize>(), any::<u8>()), 0..4),
            any::<bool>()
        )
            .prop_map(|(flips, air_kind)| {
                let mut bytes = if air_kind {
                    air(|_| {}).encode()
                } else {
                    traffic(|_| {}).encode()
                };
                for (i, b) in flips {
                    let n = bytes.len();
                    bytes[i % n] = b;
                }
                bytes
            }),
    ]
}

proptest! {
    #[test]
    fn any_input_gets_a_verdict_with_a_known_reason(
        subject in any_subject(),
        payload in any_payload(),
        now in prop_oneof![Just(NOW), any::<u64>()],
    ) {
        let known: BTreeSet<&str> = Rejection::reasons().collect();
        match validator().validate(&subject, &payload, now) {
            Ok(acc) => {
                prop_assert_eq!(acc.subject.to_string(), subject);
                // What is accepted is what READINGS will carry: it must re-encode and decode.
                prop_assert_eq!(Reading::decode(&acc.reading.encode()).unwrap(), acc.reading);
            }
            Err(rej) => prop_assert!(known.contains(rej.reason()), "{}", rej.reason()),
        }
    }
}
