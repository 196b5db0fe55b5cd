//! Physical consistency of the simulated traffic, over generated runs: every loop reading of the
//! built-in city, at any time of the week, with incidents, stays inside its segment's
//! fundamental diagram. Checked on the readings themselves (count, interval, lanes, speed), the
//! way a traffic engineer would audit detector data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use citypulse_schema::Measurement;
use citypulse_simulator::city::events::EventMode;
use citypulse_simulator::city::patterns::{FREEWAY_ALPHA, URBAN_ALPHA};
use citypulse_simulator::city::{City, Facility, Segment};
use citypulse_simulator::engine::{run_window, Settings};
use proptest::prelude::*;
use std::collections::HashMap;

/// 2026-01-05T00:00:00Z, a Monday.
const MONDAY: u64 = 1_767_571_200_000;
const MINUTE: u64 = 60_000;

/// Critical density of a segment's diagram (at capacity), veh/km/ln.
fn critical_density(s: &Segment) -> f64 {
    let alpha = match s.facility {
        Facility::Freeway => FREEWAY_ALPHA,
        Facility::UrbanStreet => URBAN_ALPHA,
    };
    s.capacity_vphpl / ((1.0 - alpha) * s.free_flow_kmh)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]

    #[test]
    fn no_reading_exceeds_capacity_or_is_fast_above_critical_density(
        seed in any::<u64>(),
        minute_of_week in 0u64..7 * 24 * 60,
    ) {
        let city = City::builtin();
        let segments: HashMap<&str, &Segment> = city
            .districts
            .iter()
            .flat_map(|d| &d.segments)
            .flat_map(|s| s.detectors.iter().map(move |x| (x.as_str(), s)))
            .collect();
        let start = MONDAY + minute_of_week * MINUTE;
        let mut settings = Settings::new(seed, start);
        // The demo incident starts 20 minutes in and lasts 40: the run sees it build.
        settings.events = EventMode::All;
        let msgs = run_window(&city, settings, start + 45 * MINUTE);
        let mut checked = 0;
        for m in &msgs {
            let Some(Measurement::Traffic(t)) = &m.values else { continue };
            let sensor = m.subject.rsplit('.').next().unwrap();
            let s = segments[sensor];
            // Flow never above capacity: count·3600 ≤ capacity·interval·lanes (exact for the
            // built-in city's integer capacities).
            let passed = f64::from(t.count) * 3600.0;
            let room = s.capacity_vphpl * f64::from(t.interval_s) * f64::from(t.lanes);
            prop_assert!(passed <= room, "{sensor}: {t:?} over {} veh/h/ln", s.capacity_vphpl);
            // Never above 80 % of free-flow speed and above critical density at once.
            if let Some(v) = t.speed_kmh {
                let k = passed / (f64::from(t.interval_s) * f64::from(t.lanes)) / v;
                prop_assert!(
                    !(v > 0.8 * s.free_flow_kmh && k > critical_density(s)),
                    "{sensor}: {v} km/h of {} at {k} veh/km/ln (critical {})",
                    s.free_flow_kmh,
                    critical_density(s)
                );
            }
            checked += 1;
        }
        prop_assert!(checked > 10_000, "{checked}");
    }
}

/// An incident shows: the demo incident's segment, at a weekday morning peak, runs below 30 %
/// of its free-flow speed (urban LOS F) while the incident holds, and back above 67 % (LOS B or
/// better) on the same morning without events.
#[test]
fn the_demo_incident_slows_its_segment_and_nothing_else_does() {
    let city = City::builtin();
    // 07:00 local (UTC+1) on a Monday: the incident starts at 07:20, in the peak.
    let start = MONDAY + 6 * 60 * MINUTE;
    let mut settings = Settings::new(11, start);
    settings.events = EventMode::Demo;
    let sim = citypulse_simulator::engine::Simulator::new(&city, settings.clone());
    let mut probe = sim.clone();
    let mut out = Vec::new();
    probe.step(start + 21 * MINUTE, usize::MAX, &mut out);
    let incident = probe.schedule().incidents()[0].clone();
    let seg = city
        .districts
        .iter()
        .flat_map(|d| &d.segments)
        .nth(incident.segment)
        .unwrap();
    let speeds = |events: EventMode, from: u64, to: u64| {
        let mut s = settings.clone();
        s.events = events;
        let msgs = run_window(&city, s, to);
        let (mut n, mut n_over_v) = (0.0, 0.0);
        for m in msgs.iter().filter(|m| m.ts >= from && m.ts < to) {
            if !seg
                .detectors
                .iter()
                .any(|d| m.subject.ends_with(&format!(".{d}")))
            {
                continue;
            }
            if let Some(Measurement::Traffic(t)) = &m.values {
                if let Some(v) = t.speed_kmh {
                    n += f64::from(t.count);
                    n_over_v += f64::from(t.count) / v;
                }
            }
        }
        n / n_over_v
    };
    let during = speeds(
        EventMode::Demo,
        incident.start_ms + 5 * MINUTE,
        incident.end_ms,
    );
    assert!(
        during < 0.3 * seg.free_flow_kmh,
        "{during} km/h of {}",
        seg.free_flow_kmh
    );
    let calm = speeds(
        EventMode::None,
        incident.start_ms + 5 * MINUTE,
        incident.end_ms,
    );
    assert!(
        calm > 0.67 * seg.free_flow_kmh,
        "{calm} km/h of {}",
        seg.free_flow_kmh
    );
}
