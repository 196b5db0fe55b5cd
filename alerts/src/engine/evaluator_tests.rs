//! Evaluator tests: table-driven lifecycle cases and property tests of its invariants.

use super::*;
use crate::engine::rules::load;
use citypulse_schema::{AirMetrics, Los, TrafficMetrics, WindowMetrics};
use proptest::prelude::*;
use std::collections::BTreeMap;

const MIN: u64 = 60_000;
/// An arbitrary epoch so that event times are realistic.
const T0: u64 = 1_767_225_600_000;

fn rules(text: &str) -> Arc<RuleSet> {
    Arc::new(load(text).unwrap_or_else(|e| panic!("{e}")))
}

/// A one-minute air window `[minute, minute + 1)` for a district (`sensor` None) or a sensor.
fn air(district: &str, sensor: Option<&str>, minute: u64, aqi: u16) -> WindowResult {
    WindowResult {
        window_start: T0 + minute * MIN,
        window_end: T0 + (minute + 1) * MIN,
        district: district.into(),
        sensor: sensor.map(Into::into),
        readings: 2,
        sensors: 1,
        metrics: WindowMetrics::Air(Box::new(AirMetrics {
            aqi: Some(aqi),
            pm25_ugm3: Some(f64::from(aqi) / 10.0),
            ..AirMetrics::default()
        })),
    }
}

fn at(minute: u64) -> u64 {
    T0 + minute * MIN
}

/// (state, severity, at-minute) of each event, for compact expectations.
fn brief(events: &[AlertEvent]) -> Vec<(AlertState, Severity, u64)> {
    events
        .iter()
        .map(|e| (e.state, e.severity, (e.at - T0) / MIN))
        .collect()
}

fn feed(ev: &mut Evaluator, windows: &[WindowResult]) -> Vec<AlertEvent> {
    let mut out = Vec::new();
    for w in windows {
        ev.evaluate(w, &mut out);
    }
    out
}

/// AQI values for minutes 0.. in one district.
fn series(values: &[u16]) -> Vec<WindowResult> {
    values
        .iter()
        .enumerate()
        .map(|(m, v)| air("d04", None, m as u64, *v))
        .collect()
}

const AQI_GROUP: &str = r#"
[[rule]]
name = "aqi-usg"
group = "aqi"
kind = "air"
metric = "aqi"
op = ">"
threshold = 100
clear = 90
for = "5m"
hold_down = "10m"
severity = "warning"
summary = "AQI {value} in {district}"

[[rule]]
name = "aqi-unhealthy"
group = "aqi"
kind = "air"
metric = "aqi"
op = ">"
threshold = 150
clear = 140
for = "3m"
hold_down = "10m"
severity = "critical"
summary = "AQI {value} in {district}"
"#;

use AlertState::{Firing, Resolved};
use Severity::{Critical, Info, Warning};

#[test]
fn fires_once_the_condition_held_for_its_duration_in_event_time() {
    let mut ev = Evaluator::new(rules(AQI_GROUP));
    // Held from the start of minute 0: the 5-minute countdown completes at the end of minute 4.
    let out = feed(&mut ev, &series(&[120, 120, 120, 120]));
    assert!(out.is_empty(), "{out:?}");
    let out = feed(&mut ev, &[air("d04", None, 4, 120)]);
    assert_eq!(brief(&out), [(Firing, Warning, 5)]);
    let e = &out[0];
    assert_eq!(e.id, format!("aqi:d04:{}", at(5)));
    assert_eq!((e.started_at, e.value, e.threshold), (at(5), 120.0, 100.0));
    assert_eq!(e.summary, "AQI 120 in d04");
    assert_eq!(e.subject(), "alerts.warning.air.d04");
}

#[test]
fn pending_restarts_when_the_condition_breaks_or_a_window_is_missing() {
    let mut ev = Evaluator::new(rules(AQI_GROUP));
    // A dip at minute 3 restarts the countdown: it completes at the end of minute 8.
    let out = feed(
        &mut ev,
        &series(&[120, 120, 120, 95, 120, 120, 120, 120, 120]),
    );
    assert_eq!(brief(&out), [(Firing, Warning, 9)]);

    // One missing result (minute 3) is tolerated: jitter can leave a window empty.
    let mut ev = Evaluator::new(rules(AQI_GROUP));
    let mut windows = series(&[120, 120, 120]);
    windows.extend((4..9).map(|m| air("d04", None, m, 120)));
    assert_eq!(brief(&feed(&mut ev, &windows)), [(Firing, Warning, 5)]);

    // Two missing (minutes 3 and 4): not observed means not known to hold; restart at 5.
    let mut ev = Evaluator::new(rules(AQI_GROUP));
    let mut windows = series(&[120, 120, 120]);
    windows.extend((5..10).map(|m| air("d04", None, m, 120)));
    assert_eq!(brief(&feed(&mut ev, &windows)), [(Firing, Warning, 10)]);
}

#[test]
fn missing_value_breaks_the_run_but_does_not_resolve() {
    let mut ev = Evaluator::new(rules(AQI_GROUP));
    let mut windows = series(&[120, 120, 120, 120, 120]);
    let mut blank = air("d04", None, 5, 0);
    blank.metrics = WindowMetrics::Air(Box::default());
    windows.push(blank);
    windows.push(air("d04", None, 6, 120));
    let out = feed(&mut ev, &windows);
    assert_eq!(brief(&out), [(Firing, Warning, 5)]);
    assert_eq!(ev.active().count(), 1);
}

#[test]
fn hysteresis_keeps_firing_until_the_clear_threshold() {
    let mut ev = Evaluator::new(rules(AQI_GROUP));
    let out = feed(
        &mut ev,
        &series(&[120, 120, 120, 120, 120, 99, 95, 91, 120, 92, 90]),
    );
    // Fires at 5; 99..91 and 92 are at or below the threshold but above the clear threshold.
    assert_eq!(brief(&out), [(Firing, Warning, 5), (Resolved, Warning, 11)]);
    assert_eq!(out[1].id, out[0].id);
    assert_eq!((out[1].value, out[1].threshold), (90.0, 90.0));
    assert_eq!(out[1].started_at, out[0].started_at);
}

#[test]
fn hold_down_delays_the_next_incident_of_a_flapping_subject() {
    let mut ev = Evaluator::new(rules(AQI_GROUP));
    let mut values = vec![120; 5]; // fires at 5
    values.push(80); // resolves at 6; held down until 16
    values.extend([120; 12]); // countdown done at 12, held until 16
    let out = feed(&mut ev, &series(&values));
    assert_eq!(
        brief(&out),
        [
            (Firing, Warning, 5),
            (Resolved, Warning, 6),
            (Firing, Warning, 16)
        ]
    );
    assert_ne!(out[2].id, out[0].id);
}

#[test]
fn severities_escalate_and_step_down_within_one_incident() {
    let mut ev = Evaluator::new(rules(AQI_GROUP));
    let values = [
        120, 120, 120, 120, 120, // firing(warning) at 5
        160, 160, 160, // critical countdown (3m) completes at 8: escalation
        145, // above critical's clear (140): stays critical
        130, // below critical's clear, above warning's: steps down to warning
        95,  // above warning's clear: stays
        80,  // resolves
    ];
    let out = feed(&mut ev, &series(&values));
    assert_eq!(
        brief(&out),
        [
            (Firing, Warning, 5),
            (Firing, Critical, 8),
            (Firing, Warning, 10),
            (Resolved, Warning, 12)
        ]
    );
    assert!(out.iter().all(|e| e.id == out[0].id));
    assert_eq!(out[1].rule, "aqi-unhealthy");
    assert_eq!(out[1].subject(), "alerts.critical.air.d04");
    assert_eq!(out[1].threshold, 150.0);
}

#[test]
fn a_steep_rise_fires_the_highest_level_that_is_due() {
    let mut ev = Evaluator::new(rules(AQI_GROUP));
    // Above 150 from the start: critical's 3-minute countdown completes first.
    let out = feed(&mut ev, &series(&[200, 200, 200, 200, 200, 200, 60]));
    assert_eq!(
        brief(&out),
        [(Firing, Critical, 3), (Resolved, Critical, 7)]
    );
    assert_eq!(
        out[1].threshold, 90.0,
        "resolution reports the lowest clear threshold"
    );
}

#[test]
fn replaying_window_results_makes_no_new_transition() {
    let mut ev = Evaluator::new(rules(AQI_GROUP));
    let windows = series(&[120, 120, 120, 120, 120, 60]);
    let first = feed(&mut ev, &windows);
    assert_eq!(first.len(), 2);
    let mut out = Vec::new();
    for w in &windows {
        assert_eq!(ev.evaluate(w, &mut out), Outcome::Duplicate);
    }
    assert!(out.is_empty());
    let mut bad = air("d04", None, 9, 1);
    bad.window_end = bad.window_start;
    assert_eq!(ev.evaluate(&bad, &mut out), Outcome::Invalid);
}

const OFFLINE: &str = r#"
[settings]
silent_after = 4

[[rule]]
name = "offline"
kind = "air"
condition = "offline"
intervals = 3
severity = "warning"
summary = "{sensor} offline ({value} intervals)"

[[rule]]
name = "offline-long"
group = "offline"
kind = "air"
condition = "offline"
intervals = 10
severity = "critical"
summary = "{sensor} offline ({value} intervals)"

[[rule]]
name = "aqi-sensor"
kind = "air"
scope = "sensor"
metric = "aqi"
op = ">"
threshold = 100
severity = "warning"
summary = "AQI {value} at {subject}"
"#;

#[test]
fn sensor_offline_is_judged_from_its_districts_event_time() {
    let mut ev = Evaluator::new(rules(OFFLINE));
    let mut windows = Vec::new();
    for m in 0..3 {
        windows.push(air("d01", Some("a"), m, 50));
        windows.push(air("d01", Some("b"), m, 50));
    }
    // b's last window ends at 3; it misses the windows ending 4, 5, 6. The window ending 6 of
    // the others may still be in flight, so b is offline once a later one (ending 7) is seen.
    for m in 3..6 {
        windows.push(air("d01", Some("a"), m, 50));
    }
    assert!(feed(&mut ev, &windows).is_empty());
    let out = feed(&mut ev, &[air("d01", Some("a"), 6, 50)]);
    assert_eq!(brief(&out), [(Firing, Warning, 6)]);
    assert_eq!(out[0].sensor.as_deref(), Some("b"));
    assert_eq!(out[0].metric, "missed_intervals");
    assert_eq!(out[0].summary, "b offline (3 intervals)");
    // Another district's clock does not count.
    assert!(feed(&mut ev, &[air("d02", Some("c"), 30, 50)]).is_empty());
    // Back at minute 8: resolved at that window's end, same id.
    let out = feed(&mut ev, &[air("d01", Some("b"), 8, 50)]);
    assert_eq!(brief(&out), [(Resolved, Warning, 9)]);
    assert_eq!(out[0].id, format!("offline:d01:b:{}", at(6)));
}

#[test]
fn hopping_windows_count_intervals_in_hops() {
    let text = OFFLINE.replace("intervals = 10", "intervals = 100");
    let mut ev = Evaluator::new(rules(&text));
    // 5-minute windows every minute.
    let hop = |sensor: &str, m: u64| {
        let mut w = air("d01", Some(sensor), m, 50);
        w.window_start = at(m) - 4 * MIN;
        w
    };
    let mut windows = Vec::new();
    for m in 5..8 {
        windows.push(hop("a", m));
        windows.push(hop("b", m));
    }
    // b's last window ends at 8; 3 hops later (11) it is offline, judged at a's window ending 12.
    for m in 8..11 {
        windows.push(hop("a", m));
    }
    assert!(feed(&mut ev, &windows).is_empty());
    let out = feed(&mut ev, &[hop("a", 11)]);
    assert_eq!(brief(&out), [(Firing, Warning, 11)]);
}

#[test]
fn a_station_reporting_every_five_windows_is_judged_by_its_own_rhythm() {
    let mut ev = Evaluator::new(rules(OFFLINE));
    let mut windows = Vec::new();
    // a every minute; s every 5 minutes (a report every 5th 1-minute window).
    for m in 0..40 {
        windows.push(air("d01", Some("a"), m, 50));
        if m % 5 == 0 && m <= 20 {
            windows.push(air("d01", Some("s"), m, if m == 0 { 50 } else { 150 }));
        }
    }
    let out = feed(&mut ev, &windows);
    // Not offline between its reports; the AQI alert (for 0) fires at its second report and is
    // not resolved by the gaps. Its last result ends at 21: offline 3 intervals (15 min) later,
    // at 36; silent (4 intervals) at 41, not reached.
    assert_eq!(brief(&out), [(Firing, Warning, 6), (Firing, Warning, 36)]);
    assert_eq!(out[1].rule, "offline");
}

#[test]
fn offline_escalates_at_each_deadline_even_when_judged_late() {
    let mut ev = Evaluator::new(rules(OFFLINE));
    let mut windows = Vec::new();
    for m in 0..2 {
        windows.push(air("d01", Some("a"), m, 50));
        windows.push(air("d01", Some("b"), m, 50));
    }
    feed(&mut ev, &windows);
    // One jump of the district clock past both deadlines (3 and 10 intervals after minute 2),
    // by a's window ending 21. a and b, both without results since minute 2, are judged alike:
    // each fires at the first deadline and escalates at the second; a's own window then
    // resolves a's incident.
    let out = feed(&mut ev, &[air("d01", Some("a"), 20, 50)]);
    let (w, c) = ((Firing, Warning, 5), (Firing, Critical, 12));
    assert_eq!(brief(&out), [w, c, w, c, (Resolved, Critical, 21)]);
    let sensors: Vec<_> = out.iter().map(|e| e.sensor.as_deref().unwrap()).collect();
    assert_eq!(sensors, ["a", "a", "b", "b", "a"]);
    assert_eq!(out[0].id, out[1].id);
    assert_eq!(out[2].id, out[3].id);
}

#[test]
fn tick_judges_a_district_that_went_quiet_entirely() {
    let mut ev = Evaluator::new(rules(OFFLINE));
    let out = feed(
        &mut ev,
        &[air("d01", Some("a"), 0, 150), air("d01", Some("a"), 1, 150)],
    );
    assert_eq!(brief(&out), [(Firing, Warning, 1)]);
    let mut out = Vec::new();
    ev.tick(at(5), &mut out);
    assert!(
        out.is_empty(),
        "not yet past the 3-interval deadline: {out:?}"
    );
    ev.tick(at(20), &mut out);
    // Silent for 4 intervals (deadline 6): the AQI alert resolves; offline fires at 5, then 12.
    assert_eq!(
        brief(&out),
        [
            (Resolved, Warning, 6),
            (Firing, Warning, 5),
            (Firing, Critical, 12)
        ]
    );
    assert!(out[0].summary.contains("no data"), "{}", out[0].summary);
    // Ticking again changes nothing.
    let mut again = Vec::new();
    ev.tick(at(30), &mut again);
    assert!(again.is_empty());
}

const STUCK: &str = r#"
[[rule]]
name = "stuck"
kind = "air"
condition = "stuck"
metric = "pm25_ugm3"
for = "30m"
severity = "info"
summary = "{sensor} stuck at {value}"
"#;

#[test]
fn stuck_sensor_fires_info_and_resolves_when_it_moves() {
    let mut ev = Evaluator::new(rules(STUCK));
    let mut windows: Vec<_> = (0..31).map(|m| air("d01", Some("s"), m, 123)).collect();
    windows.push(air("d01", Some("s"), 31, 124));
    let out = feed(&mut ev, &windows);
    assert_eq!(brief(&out), [(Firing, Info, 30), (Resolved, Info, 32)]);
    assert_eq!(out[0].value, 12.3);
    assert_eq!(out[0].threshold, 1800.0);
}

#[test]
fn silent_sensor_resolves_its_alerts() {
    let mut ev = Evaluator::new(rules(OFFLINE));
    let mut windows = Vec::new();
    for m in 0..2 {
        windows.push(air("d01", Some("a"), m, 150));
        windows.push(air("d01", Some("b"), m, 50));
    }
    for m in 2..10 {
        windows.push(air("d01", Some("b"), m, 50));
    }
    let out = feed(&mut ev, &windows);
    // a fires at 1 and goes silent after 2: offline (3 intervals) fires at 5, judged once b's
    // window ending 6 arrives; silent_after (4) resolves the AQI alert at 6, judged at b's 7.
    assert_eq!(
        brief(&out),
        [
            (Firing, Warning, 1),
            (Firing, Warning, 5),
            (Resolved, Warning, 6)
        ]
    );
    assert_eq!(out[0].id, out[2].id);
    assert_eq!(out[1].rule, "offline");
    assert!(
        out[2]
            .summary
            .contains("no data from d01/a for 4 intervals"),
        "{}",
        out[2].summary
    );
}

#[test]
fn removed_rules_resolve_on_restore_and_kept_ones_carry_on() {
    let mut ev = Evaluator::new(rules(OFFLINE));
    let out = feed(
        &mut ev,
        &[air("d01", Some("a"), 0, 150), air("d01", Some("a"), 1, 150)],
    );
    assert_eq!(out.len(), 1);
    let state = ev.state().clone();
    // Without the aqi-sensor rule: its incident resolves at the subject's last window end.
    let without = OFFLINE
        .split("[[rule]]\nname = \"aqi-sensor\"")
        .next()
        .unwrap();
    let mut out = Vec::new();
    let restored = Evaluator::restore(rules(without), state.clone(), &mut out);
    assert_eq!(brief(&out), [(Resolved, Warning, 2)]);
    assert!(out[0].summary.contains("removed"));
    assert_eq!(restored.active().count(), 0);
    // Same rules: nothing happens.
    let mut out = Vec::new();
    let same = Evaluator::restore(rules(OFFLINE), state, &mut out);
    assert!(out.is_empty());
    assert_eq!(same.active().count(), 1);
}

#[test]
fn district_filter_and_scope_limit_the_watched_subjects() {
    let text = AQI_GROUP.replace(
        "metric = \"aqi\"",
        "metric = \"aqi\"\ndistricts = [\"d04\"]",
    );
    let mut ev = Evaluator::new(rules(&text));
    let mut windows = Vec::new();
    for m in 0..10 {
        windows.push(air("d05", None, m, 200));
        windows.push(air("d04", Some("s"), m, 200));
    }
    assert!(feed(&mut ev, &windows).is_empty());
    // The one watched subject, d04's aggregate, does fire.
    let out = feed(&mut ev, &series(&[200, 200, 200]));
    assert_eq!(brief(&out), [(Firing, Critical, 3)]);
    assert_eq!(
        (out[0].district.as_str(), out[0].sensor.as_deref()),
        ("d04", None)
    );
}

#[test]
fn traffic_level_of_service_rules_watch_los_ordinals() {
    let text = r#"
[[rule]]
name = "los"
kind = "traffic"
metric = "los"
op = ">="
threshold = 5
for = "2m"
severity = "warning"
summary = "{district} {category}"
"#;
    let mut ev = Evaluator::new(rules(text));
    let los = [Los::D, Los::E, Los::F, Los::F, Los::C];
    let windows: Vec<_> = los
        .iter()
        .enumerate()
        .map(|(m, l)| WindowResult {
            window_start: at(m as u64),
            window_end: at(m as u64 + 1),
            district: "d01".into(),
            sensor: None,
            readings: 10,
            sensors: 5,
            metrics: WindowMetrics::Traffic(TrafficMetrics {
                los: Some(*l),
                ..TrafficMetrics::default()
            }),
        })
        .collect();
    let out = feed(&mut ev, &windows);
    assert_eq!(brief(&out), [(Firing, Warning, 3), (Resolved, Warning, 5)]);
    assert_eq!(out[0].summary, "d01 LOS F");
}

// ---- properties ------------------------------------------------------------------------------

const PROP_RULES: &str = r#"
[settings]
silent_after = 3

[[rule]]
name = "w"
group = "g"
kind = "air"
metric = "aqi"
op = ">"
threshold = 100
clear = 80
for = "2m"
hold_down = "3m"
severity = "warning"
summary = "{value}"

[[rule]]
name = "c"
group = "g"
kind = "air"
metric = "aqi"
op = ">"
threshold = 150
clear = 130
for = "1m"
severity = "critical"
summary = "{value}"

[[rule]]
name = "s"
kind = "air"
scope = "sensor"
metric = "aqi"
op = ">="
threshold = 120
for = "1m"
severity = "warning"
summary = "{value}"

[[rule]]
name = "off"
kind = "air"
condition = "offline"
intervals = 2
hold_down = "2m"
severity = "warning"
summary = "{value}"

[[rule]]
name = "stuck"
kind = "air"
condition = "stuck"
metric = "pm25_ugm3"
for = "3m"
severity = "info"
summary = "{value}"
"#;

#[derive(Debug, Clone)]
enum Step {
    /// A window result: district index, sensor index (None = aggregate), minute, AQI.
    Window(usize, Option<usize>, u64, u16),
    /// Re-deliver one of the earlier window results.
    Replay(usize),
    /// Tick at a minute.
    Tick(u64),
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        8 => (0..2usize, proptest::option::of(0..3usize), 0..4u64, prop_oneof![0..90u16, 90..140u16, 140..220u16])
            .prop_map(|(d, s, dm, v)| Step::Window(d, s, dm, v)),
        1 => any::<usize>().prop_map(Step::Replay),
        1 => (0..8u64).prop_map(Step::Tick),
    ];
    proptest::collection::vec(step, 0..160)
}

const DISTRICTS: [&str; 2] = ["d1", "d2"];
const SENSORS: [&str; 3] = ["a", "b", "c"];

/// Turns steps into concrete inputs. Each subject's minute advances by 1 + the step's extra
/// minutes (gaps); ticks are relative to the newest minute so far.
fn inputs(steps: &[Step]) -> Vec<Input> {
    let mut next: BTreeMap<(usize, Option<usize>), u64> = BTreeMap::new();
    let mut newest = 0;
    let mut done: Vec<WindowResult> = Vec::new();
    let mut out = Vec::new();
    for s in steps {
        match s {
            Step::Window(d, s, gap, v) => {
                let m = next.entry((*d, *s)).or_insert(0);
                *m += if *gap == 3 { 4 } else { 0 };
                let w = air(DISTRICTS[*d], s.map(|i| SENSORS[i]), *m, *v);
                *m += 1;
                newest = newest.max(*m);
                done.push(w.clone());
                out.push(Input::Window(Box::new(w)));
            }
            Step::Replay(i) if !done.is_empty() => {
                out.push(Input::Window(Box::new(done[i % done.len()].clone())))
            }
            Step::Replay(_) => {}
            Step::Tick(m) => out.push(Input::Tick(at(newest.saturating_sub(*m)))),
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Input {
    Window(Box<WindowResult>),
    Tick(u64),
}

fn apply(ev: &mut Evaluator, input: &Input, out: &mut Vec<AlertEvent>) {
    match input {
        Input::Window(w) => {
            ev.evaluate(w, out);
        }
        Input::Tick(t) => ev.tick(*t, out),
    }
}

fn run(rules_: &Arc<RuleSet>, inputs: &[Input]) -> (Evaluator, Vec<AlertEvent>) {
    let mut ev = Evaluator::new(Arc::clone(rules_));
    let mut out = Vec::new();
    for i in inputs {
        apply(&mut ev, i, &mut out);
    }
    (ev, out)
}

/// Per incident: firing first, at most one resolution and nothing after it, times monotone,
/// one started_at, and no two transitions with the same message id.
fn check_lifecycles(events: &[AlertEvent]) -> Result<(), TestCaseError> {
    let mut seen: BTreeMap<&str, (bool, u64, u64)> = BTreeMap::new();
    let mut ids = std::collections::BTreeSet::new();
    for e in events {
        prop_assert!(
            ids.insert(e.msg_id()),
            "duplicate transition {}",
            e.msg_id()
        );
        match seen.get_mut(e.id.as_str()) {
            None => {
                prop_assert_eq!(e.state, Firing, "first event of {} is not a firing", e.id);
                prop_assert_eq!(e.started_at, e.at);
                seen.insert(&e.id, (false, e.started_at, e.at));
            }
            Some((resolved, started, last)) => {
                prop_assert!(!*resolved, "event after the resolution of {}", e.id);
                prop_assert_eq!(e.started_at, *started);
                prop_assert!(e.at >= *last, "time went back in {}", e.id);
                *resolved = e.state == Resolved;
                *last = e.at;
            }
        }
    }
    Ok(())
}

fn cbor_round_trip(state: &State) -> State {
    let mut bytes = Vec::new();
    ciborium::into_writer(state, &mut bytes).unwrap();
    ciborium::from_reader(&bytes[..]).unwrap()
}

/// A city's window results by window end, as the processors close them: per minute, each
/// district's subjects (sensors, then the aggregate) that reported, in that order.
fn by_window_end(cells: &[(bool, u16)]) -> Vec<Vec<WindowResult>> {
    let subjects: Vec<Option<&str>> = SENSORS.iter().map(|s| Some(*s)).chain([None]).collect();
    let per_minute = DISTRICTS.len() * subjects.len();
    cells
        .chunks(per_minute)
        .enumerate()
        .map(|(m, minute)| {
            let mut cell = minute.iter();
            let mut end = Vec::new();
            for d in DISTRICTS {
                for s in &subjects {
                    if let Some((true, v)) = cell.next() {
                        end.push(air(d, *s, m as u64, *v));
                    }
                }
            }
            end
        })
        .collect()
}

/// Every transition, keyed by its message id (each id once).
fn transitions(events: Vec<AlertEvent>) -> BTreeMap<String, AlertEvent> {
    let n = events.len();
    let keyed: BTreeMap<String, AlertEvent> = events.into_iter().map(|e| (e.msg_id(), e)).collect();
    assert_eq!(keyed.len(), n, "a transition twice");
    keyed
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn an_alert_never_resolves_without_firing_and_resolves_once(steps in steps()) {
        let r = rules(PROP_RULES);
        let (ev, events) = run(&r, &inputs(&steps));
        check_lifecycles(&events)?;
        // Active incidents are exactly those fired and not resolved.
        let mut open: BTreeMap<String, AlertEvent> = BTreeMap::new();
        for e in &events {
            match e.state {
                Firing => { open.insert(e.id.clone(), e.clone()); }
                Resolved => { open.remove(&e.id); }
            }
        }
        let active: BTreeMap<String, AlertEvent> =
            ev.active().map(|e| (e.id.clone(), e.clone())).collect();
        prop_assert_eq!(active, open);
    }

    #[test]
    fn replaying_every_window_result_changes_nothing(steps in steps()) {
        let r = rules(PROP_RULES);
        let inputs = inputs(&steps);
        let (once, once_events) = run(&r, &inputs);
        let mut twice = Evaluator::new(Arc::clone(&r));
        let mut twice_events = Vec::new();
        for i in &inputs {
            apply(&mut twice, i, &mut twice_events);
            apply(&mut twice, i, &mut twice_events);
        }
        prop_assert_eq!(once_events, twice_events);
        prop_assert_eq!(once.state(), twice.state());
    }

    #[test]
    fn a_checkpoint_restore_anywhere_continues_exactly(steps in steps(), cut in any::<prop::sample::Index>()) {
        let r = rules(PROP_RULES);
        let inputs = inputs(&steps);
        let (whole, whole_events) = run(&r, &inputs);
        let k = if inputs.is_empty() { 0 } else { cut.index(inputs.len() + 1) };
        let (first, mut events) = run(&r, &inputs[..k]);
        let mut restored_out = Vec::new();
        let mut resumed = Evaluator::restore(Arc::clone(&r), cbor_round_trip(first.state()), &mut restored_out);
        prop_assert!(restored_out.is_empty(), "same rules must not resolve anything");
        for i in &inputs[k..] {
            apply(&mut resumed, i, &mut events);
        }
        prop_assert_eq!(events, whole_events);
        prop_assert_eq!(resumed.state(), whole.state());
    }

    #[test]
    fn every_firing_alert_is_eventually_resolved(steps in steps(), how in 0..3u8) {
        let r = rules(PROP_RULES);
        let inputs = inputs(&steps);
        let (mut ev, mut events) = run(&r, &inputs);
        match how {
            // The rules are removed.
            0 => {
                let state = ev.state().clone();
                ev = Evaluator::restore(Arc::new(RuleSet::empty()), state, &mut events);
            }
            // Every subject reports calm, changing values for long enough (offline sensors
            // come back, stuck values move, thresholds clear, hold-downs pass).
            1 => {
                let start = (ev.clock().saturating_sub(T0)) / MIN + 1;
                for m in start..start + 12 {
                    for d in DISTRICTS {
                        let mut w = air(d, None, m, 10 + (m % 7) as u16);
                        ev.evaluate(&w, &mut events);
                        for s in SENSORS {
                            w = air(d, Some(s), m, 10 + (m % 5) as u16);
                            ev.evaluate(&w, &mut events);
                        }
                    }
                }
            }
            // Everything goes silent: threshold and stuck alerts resolve; only offline alerts
            // (about the silence itself) stay.
            _ => {
                let later = ev.clock() + 1_000 * MIN;
                ev.tick(later, &mut events);
                prop_assert!(ev.active().all(|e| e.metric == "missed_intervals"));
                check_lifecycles(&events)?;
                return Ok(());
            }
        }
        check_lifecycles(&events)?;
        prop_assert_eq!(ev.active().count(), 0, "still active: {:?}", ev.active().collect::<Vec<_>>());
        let fired = events.iter().filter(|e| e.state == Firing).map(|e| &e.id).collect::<std::collections::BTreeSet<_>>();
        let resolved = events.iter().filter(|e| e.state == Resolved).map(|e| &e.id).collect::<std::collections::BTreeSet<_>>();
        prop_assert_eq!(fired, resolved);
    }

    /// A single-level threshold rule over contiguous windows equals a naive model written from
    /// the definition: fire at the first window end where every window of the last `for`
    /// minutes was above the threshold and the hold-down has passed; resolve at the first window
    /// at or below the clear threshold.
    #[test]
    fn single_level_threshold_matches_a_naive_model(values in proptest::collection::vec(60..140u16, 0..120)) {
        let text = r#"
[[rule]]
name = "r"
kind = "air"
metric = "aqi"
op = ">"
threshold = 100
clear = 85
for = "4m"
hold_down = "3m"
severity = "warning"
summary = "x"
"#;
        let mut ev = Evaluator::new(rules(text));
        let got = brief(&feed(&mut ev, &series(&values)));
        let mut want = Vec::new();
        let (mut firing, mut hold_until) = (false, 0u64);
        for (m, v) in values.iter().enumerate() {
            let end = m as u64 + 1;
            if firing {
                if *v <= 85 {
                    firing = false;
                    hold_until = end + 3;
                    want.push((Resolved, Warning, end));
                }
            } else if end >= 4 && end >= hold_until
                && values[m + 1 - 4..=m].iter().all(|v| *v > 100) {
                firing = true;
                want.push((Firing, Warning, end));
            }
        }
        prop_assert_eq!(got, want);
    }

    /// The results of one window end may reach the alerts in any order (a publish retried after
    /// the rest of its window, which never spans two window ends): the same transitions and the
    /// same state as in the processors' order. Offline and silence rules included, whose
    /// deadlines a gap in a sensor's reports can put just before the window end that judges it.
    #[test]
    fn the_order_of_results_within_a_window_end_changes_nothing(
        cells in proptest::collection::vec(
            (prop_oneof![4 => Just(true), 1 => Just(false)], 60..160u16),
            0..(14 * DISTRICTS.len() * (SENSORS.len() + 1)),
        ),
        mut x in 1..u64::MAX,
    ) {
        let r = rules(PROP_RULES);
        let ends = by_window_end(&cells);
        let mut ordered = Evaluator::new(Arc::clone(&r));
        let mut shuffled = Evaluator::new(Arc::clone(&r));
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for end in ends {
            for w in &end {
                ordered.evaluate(w, &mut a);
            }
            let mut end = end;
            for i in (1..end.len()).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                end.swap(i, (x % (i as u64 + 1)) as usize);
            }
            for w in &end {
                shuffled.evaluate(w, &mut b);
            }
        }
        prop_assert_eq!(transitions(a), transitions(b));
        prop_assert_eq!(ordered.state(), shuffled.state());
    }
}
