//! Scenario tests of the windowing core; the property tests against an independent model are in
//! `tests/window_properties.rs`.

use super::*;
use citypulse_schema::{Air, Kind, Los, Traffic, WindowMetrics};

const MIN: u64 = 60_000;
const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z, an hour boundary

fn cfg(size: u64, hop: u64, registry: &str) -> Arc<CoreConfig> {
    Arc::new(CoreConfig {
        spec: WindowSpec::hopping(size, hop).expect("valid spec"),
        allowed_lateness_ms: 30_000,
        idle_timeout_ms: 10_000,
        registry: SegmentRegistry::from_toml(registry).expect("valid registry"),
    })
}

fn traffic(sensor: &str, seq: u64, ts: u64, count: u32, speed: f64) -> Reading {
    Reading {
        sensor: sensor.into(),
        district: "d01".into(),
        ts,
        seq,
        data: Measurement::Traffic(Traffic {
            count,
            interval_s: 30,
            occupancy: 0.1,
            speed_kmh: Some(speed),
            lanes: 2,
        }),
    }
}

fn air(sensor: &str, seq: u64, ts: u64, pm25: f64) -> Reading {
    Reading {
        sensor: sensor.into(),
        district: "d01".into(),
        ts,
        seq,
        data: Measurement::Air(Air {
            pm25_ugm3: Some(pm25),
            ..Air::default()
        }),
    }
}

fn close(state: &mut PartitionState) -> Vec<WindowResult> {
    let mut out = Vec::new();
    state.close_ready(&mut out);
    out
}

#[test]
fn a_window_closes_once_the_watermark_passes_its_end() {
    // l1 is a freeway detector: its level of service is graded by density. (Unlisted, it would
    // be an urban street without a learned free-flow speed yet, so without a level.)
    let freeway = "[[district]]\n[[district.segment]]\nid = \"s1\"\nfacility = \"freeway\"\n\
                   detectors = [\"l1\"]\n";
    let mut s = PartitionState::new(cfg(MIN, MIN, freeway));
    assert_eq!(
        s.observe(&traffic("l1", 1, T0 + 10_000, 10, 50.0), 0),
        Observed::Accepted
    );
    assert_eq!(
        s.observe(&traffic("l1", 2, T0 + 40_000, 20, 40.0), 0),
        Observed::Accepted
    );
    // Watermark T0 + 60 s − 30 s: the first minute is still open.
    assert_eq!(
        s.observe(&traffic("l1", 3, T0 + MIN, 5, 60.0), 0),
        Observed::Accepted
    );
    assert!(close(&mut s).is_empty());
    assert_eq!(s.open_windows(), 2);
    // Watermark T0 + 90 s − 30 s = T0 + 60 s: closes [T0, T0 + 60 s).
    assert_eq!(
        s.observe(&traffic("l1", 4, T0 + 90_000, 5, 60.0), 0),
        Observed::Accepted
    );
    let out = close(&mut s);
    assert_eq!(out.len(), 2, "the sensor and its district");
    let w = &out[0];
    assert_eq!((w.window_start, w.window_end), (T0, T0 + MIN));
    assert_eq!(
        (w.sensor.as_deref(), w.readings, w.sensors),
        (Some("l1"), 2, 1)
    );
    let WindowMetrics::Traffic(t) = &w.metrics else {
        panic!("traffic expected")
    };
    // 30 veh in 60 s = 1800 veh/h; space-mean speed 30 / (10/50 + 20/40) = 42.857 km/h.
    assert!((t.flow_vph - 1800.0).abs() < 1e-9);
    assert!((t.speed_kmh.expect("speed") - 30.0 / 0.7).abs() < 1e-9);
    // 900 veh/h/ln / 42.857 km/h = 21 veh/km/ln: LOS D on a freeway.
    assert!((t.density_vpkm.expect("density") - 21.0).abs() < 1e-9);
    assert_eq!(t.los, Some(Los::D));
    assert_eq!(out[1].sensor, None);
    assert_eq!(out[1].subject(), "metrics.traffic.d01");
    assert!(close(&mut s).is_empty(), "a window closes once");
}

#[test]
fn late_reading_is_counted_not_aggregated() {
    let mut s = PartitionState::new(cfg(MIN, MIN, ""));
    s.observe(&traffic("l1", 1, T0 + 10_000, 10, 50.0), 0);
    s.observe(&traffic("l2", 1, T0 + 120_000, 10, 50.0), 0);
    let before = close(&mut s);
    assert_eq!(before.len(), 2);
    // Watermark is T0 + 90 s: a reading at T0 + 20 s is late, and its window stays as it was.
    assert_eq!(
        s.observe(&traffic("l1", 2, T0 + 20_000, 99, 50.0), 0),
        Observed::Late(LateReason::BehindWatermark)
    );
    // A reading 40 s behind the newest (> 30 s lateness) but in a still-open window is late too.
    assert_eq!(
        s.observe(&traffic("l3", 1, T0 + 80_000, 10, 50.0), 0),
        Observed::Late(LateReason::BehindWatermark)
    );
    assert!(close(&mut s).is_empty());
    assert_eq!(s.buffered_readings(), 1);
}

#[test]
fn idle_advance_closes_the_windows_of_a_quiet_partition() {
    let mut s = PartitionState::new(cfg(MIN, MIN, ""));
    s.observe(&traffic("l1", 1, T0 + 50_000, 10, 50.0), 1_000);
    assert!(!s.advance_idle(10_999));
    assert!(close(&mut s).is_empty());
    // 20 s of processing time without readings: watermark T0 + 50 s − 30 s + 20 s.
    assert!(s.advance_idle(21_000));
    assert!(close(&mut s).is_empty());
    assert!(s.advance_idle(41_000));
    assert_eq!(s.watermark(), Some(T0 + 60_000));
    assert_eq!(close(&mut s).len(), 2);
    // A reading that would have been on time without the idle advance says why it is late.
    assert_eq!(
        s.observe(&traffic("l1", 2, T0 + 55_000, 1, 50.0), 41_500),
        Observed::Late(LateReason::IdleAdvanced)
    );
}

#[test]
fn hopping_windows_share_panes_and_emit_each_window() {
    // 3-minute windows every minute.
    let mut s = PartitionState::new(cfg(3 * MIN, MIN, ""));
    for (i, m) in (0..5).enumerate() {
        s.observe(&traffic("l1", i as u64, T0 + m * MIN + 1_000, 10, 50.0), 0);
    }
    // Watermark T0 + 4 min + 1 s − 30 s: windows ending at T0 + 1, 2, 3 min are closed.
    let out = close(&mut s);
    let sensor_windows: Vec<(u64, u64, u64)> = out
        .iter()
        .filter(|w| w.sensor.is_some())
        .map(|w| (w.window_start, w.window_end - T0, w.readings))
        .collect();
    assert_eq!(
        sensor_windows,
        vec![
            (T0 - 2 * MIN, MIN, 1),
            (T0 - MIN, 2 * MIN, 2),
            (T0, 3 * MIN, 3)
        ]
    );
    // Each reading is stored once, in its pane.
    // Minute 0's pane is gone (its last window, ending at 3 min, closed); minute 1's is still
    // needed by the window ending at 4 min.
    assert_eq!(s.buffered_readings(), 4);
}

#[test]
fn a_sequence_number_already_accepted_is_a_duplicate() {
    let mut s = PartitionState::new(cfg(MIN, MIN, ""));
    let r = traffic("l1", 7, T0, 10, 50.0);
    assert_eq!(s.observe(&r, 0), Observed::Accepted);
    assert_eq!(s.observe(&r, 0), Observed::Rejected(Rejection::Duplicate));
    let a = air("a1", 7, T0, 12.0);
    assert_eq!(s.observe(&a, 0), Observed::Accepted);
    assert_eq!(s.observe(&a, 0), Observed::Rejected(Rejection::Duplicate));
    assert_eq!(s.buffered_readings(), 2);
}

#[test]
fn invalid_measurements_are_rejected_with_a_reason() {
    let mut s = PartitionState::new(cfg(MIN, MIN, ""));
    let mut r = traffic("l1", 1, T0, 10, 50.0);
    if let Measurement::Traffic(t) = &mut r.data {
        t.occupancy = 1.5;
    }
    let o = s.observe(&r, 0);
    assert_eq!(
        o,
        Observed::Rejected(Rejection::Interval(InvalidInterval::Occupancy))
    );
    let Observed::Rejected(why) = o else {
        unreachable!()
    };
    assert_eq!(why.reason(), "occupancy_out_of_range");
    assert!(Rejection::REASONS.contains(&why.reason()));
    let mut a = air("a1", 1, T0, 1.0);
    if let Measurement::Air(x) = &mut a.data {
        x.o3_ppb = Some(f64::INFINITY);
    }
    assert_eq!(
        s.observe(&a, 0),
        Observed::Rejected(Rejection::Concentration(Pollutant::O3))
    );
    assert_eq!(
        s.watermark(),
        None,
        "rejected readings do not move the watermark"
    );
}

#[test]
fn free_flow_speed_comes_from_the_registry_or_is_learned() {
    let registry = r#"
        [[district]]
        id = "d01"
        [[district.segment]]
        id = "s1"
        free_flow_kmh = 60.0
        capacity_vphpl = 1800.0
        detectors = ["l1"]
    "#;
    let mut s = PartitionState::new(cfg(MIN, MIN, registry));
    // l1 is in the registry; l2 must learn (8 veh / 30 s on 2 lanes = 480 veh/h/ln: low flow).
    for i in 0..20u64 {
        s.observe(&traffic("l1", i, T0 + i * 30_000, 8, 45.0), 0);
        s.observe(&traffic("l2", i, T0 + i * 30_000, 8, 45.5), 0);
    }
    let out = close(&mut s);
    let ci = |sensor: &str, end: u64| {
        out.iter()
            .find(|w| w.sensor.as_deref() == Some(sensor) && w.window_end == end)
            .and_then(|w| w.value("congestion_index"))
    };
    // 1 − 45 / 60 = 0.25 from the first window on.
    assert_eq!(ci("l1", T0 + MIN), Some(0.25));
    // l2: 16 vehicles by the first window end, 96 by the sixth: no verdict yet.
    assert_eq!(ci("l2", T0 + 6 * MIN), None);
    // 112 by the seventh: free flow learned as 46 km/h; 1 − 45.5 / 46.
    let learned = ci("l2", T0 + 7 * MIN).expect("learned by then");
    assert!((learned - (1.0 - 45.5 / 46.0)).abs() < 1e-12, "{learned}");
}

#[test]
fn air_windows_report_window_means_and_hourly_figures() {
    let mut s = PartitionState::new(cfg(MIN, MIN, ""));
    let mut seq = 0;
    // Three hours of 9.1 µg/m³ every 5 minutes, then one reading into the fourth hour.
    for m in (0..180).step_by(5) {
        seq += 1;
        s.observe(&air("a1", seq, T0 + m * MIN, 9.1), 0);
    }
    s.observe(&air("a1", seq + 1, T0 + 180 * MIN + 1_000, 30.0), 0);
    s.observe(&air("a1", seq + 2, T0 + 182 * MIN, 30.0), 0);
    let out = close(&mut s);
    let last = out
        .iter()
        .filter(|w| w.sensor.is_some())
        .max_by_key(|w| w.window_end)
        .expect("windows");
    assert_eq!(last.window_end, T0 + 181 * MIN);
    let WindowMetrics::Air(a) = &last.metrics else {
        panic!("air expected")
    };
    assert_eq!(a.pm25_ugm3, Some(30.0), "the window's own mean");
    assert_eq!(
        a.pm25_nowcast_ugm3,
        Some(9.1),
        "three complete hours of 9.1"
    );
    assert_eq!(a.aqi, Some(51));
    assert_eq!(a.pm25_24h_ugm3, None, "24 hours are not complete");
    let district = out.last().expect("district result");
    assert_eq!(
        (district.sensor.as_deref(), district.kind()),
        (None, Kind::Air)
    );
}

#[test]
fn results_come_in_the_documented_order() {
    let mut s = PartitionState::new(cfg(MIN, MIN, ""));
    for (i, d) in ["d02", "d01"].iter().enumerate() {
        for sensor in ["l2", "l1"] {
            let mut r = traffic(sensor, i as u64, T0 + 1_000, 5, 40.0);
            r.district = (*d).into();
            s.observe(&r, 0);
            let mut a = air(&format!("a-{sensor}"), i as u64, T0 + 2_000, 5.0);
            a.district = (*d).into();
            s.observe(&a, 0);
        }
    }
    s.observe(&traffic("l9", 0, T0 + 3 * MIN, 5, 40.0), 0);
    let order: Vec<String> = close(&mut s).iter().map(|w| w.msg_id()).collect();
    let end = format!("{T0}-{}", T0 + MIN);
    let want: Vec<String> = [
        "traffic:d01:l1",
        "traffic:d01:l2",
        "traffic:d01:*",
        "air:d01:a-l1",
        "air:d01:a-l2",
        "air:d01:*",
        "traffic:d02:l1",
        "traffic:d02:l2",
        "traffic:d02:*",
        "air:d02:a-l1",
        "air:d02:a-l2",
        "air:d02:*",
    ]
    .iter()
    .map(|p| format!("{p}:{end}"))
    .collect();
    assert_eq!(order, want);
}

#[test]
fn a_checkpoint_resumes_exactly_and_refuses_another_window_shape() {
    let mut s = PartitionState::new(cfg(MIN, MIN, ""));
    s.observe(&traffic("l1", 1, T0 + 1_000, 5, 40.0), 0);
    s.observe(&air("a1", 1, T0 + 2_000, 5.0), 0);
    let mut bytes = Vec::new();
    ciborium::into_writer(s.data(), &mut bytes).expect("encodes");
    let data: StateData = ciborium::from_reader(&bytes[..]).expect("decodes");
    assert_eq!(&data, s.data());
    let mut r = PartitionState::restore(cfg(MIN, MIN, ""), data.clone()).expect("same shape");
    for st in [&mut s, &mut r] {
        st.observe(&traffic("l1", 2, T0 + 2 * MIN, 5, 40.0), 0);
    }
    let closed = close(&mut s);
    assert_eq!(
        closed.len(),
        4,
        "the first minute: sensor and district, traffic and air"
    );
    assert_eq!(closed, close(&mut r));
    assert!(matches!(
        PartitionState::restore(cfg(2 * MIN, MIN, ""), data),
        Err(RestoreError::SpecChanged { .. })
    ));
}

#[test]
fn a_pane_is_sized_for_the_samples_a_sensor_sends_in_it() {
    // One-minute panes: a 30-s traffic detector sends two, a 60-s station one, a 45-s one two.
    assert_eq!(expected_samples(MIN, Some(30)), 2);
    assert_eq!(expected_samples(MIN, Some(60)), 1);
    assert_eq!(expected_samples(MIN, Some(45)), 2);
    // Unknown (or zero) intervals and intervals longer than a pane: one.
    assert_eq!(expected_samples(MIN, None), 1);
    assert_eq!(expected_samples(MIN, Some(0)), 1);
    assert_eq!(expected_samples(MIN, Some(300)), 1);
    // Never more than eight up front.
    assert_eq!(expected_samples(5 * MIN, Some(1)), 8);
}

#[test]
fn closing_a_slice_at_a_time_gives_the_same_results_and_state() {
    // Two districts with both kinds and four windows ready at once, tumbling and hopping:
    // every slice size cuts somewhere else (inside a district, between kinds, between windows).
    // (A 3-minute window hopping by 1 covers minutes 0-3 in the five windows ending by the
    // watermark, 5.5 minutes.)
    for (size, hop, windows) in [(MIN, MIN, 4), (3 * MIN, MIN, 5)] {
        let mut s = PartitionState::new(cfg(size, hop, ""));
        for minute in 0..4 {
            for (i, d) in ["d02", "d01"].iter().enumerate() {
                for sensor in ["l3", "l2", "l1"] {
                    let ts = T0 + minute * MIN + 1_000 * (i as u64 + 1);
                    let mut r = traffic(sensor, minute * 2 + i as u64, ts, 5, 40.0);
                    r.district = (*d).into();
                    assert_eq!(s.observe(&r, 0), Observed::Accepted);
                    let mut a = air(&format!("a-{sensor}"), minute * 2 + i as u64, ts, 5.0);
                    a.district = (*d).into();
                    assert_eq!(s.observe(&a, 0), Observed::Accepted);
                }
            }
        }
        s.observe(&traffic("l9", 0, T0 + 6 * MIN, 5, 40.0), 0);
        let mut whole = s.clone();
        let want = close(&mut whole);
        assert_eq!(
            want.len(),
            windows * 2 * 2 * 4,
            "windows x 2 districts x 2 kinds x (3 + 1)"
        );
        for max in 1..=want.len() + 1 {
            let mut sliced = s.clone();
            let mut got = Vec::new();
            loop {
                let n = sliced.close_some(&mut got, max);
                if n == 0 {
                    break;
                }
                if size == hop {
                    assert!(n <= max, "{n} results for a slice of {max}");
                    assert_eq!(sliced.closing(), got.len() % 16 != 0, "inside a window");
                }
                assert!(sliced.window_ready() || got.len() == want.len());
            }
            assert!(!sliced.closing() && !sliced.window_ready());
            assert_eq!(got, want, "{size}/{hop}: slices of {max}");
            assert_eq!(sliced.data(), whole.data(), "{size}/{hop}: slices of {max}");
        }
    }
}
