//! The evaluator: per rule group and subject, **inactive → pending → firing → resolved**.
//!
//! - *Pending*: a level's condition holds; its `for` countdown runs from the `window_start` of the
//!   first window in an unbroken run of windows where it held. A window where it does not hold,
//!   a missing value, or more than one missing result (judged by the subject's own reporting
//!   interval) breaks the run, as a missing series resets a pending alert in Prometheus.
//! - *Firing*: the countdown reached `for` at some `window_end` (and the group's hold-down after
//!   its previous resolution has passed): one `firing` event, `started_at` = `at` = that
//!   `window_end`. The alert's id is `<group>:<district>[:<sensor>]:<started_at>`.
//! - *Escalation / de-escalation*: while firing, a higher level whose countdown completes
//!   re-fires the same id at the higher severity; when the value clears the current level's clear
//!   threshold but not the one of a lower level, the same id re-fires at that lower severity.
//! - *Resolved*: the value clears the lowest level's clear threshold (hysteresis), a stuck value
//!   changes, an offline sensor reports again, the subject goes silent for
//!   [`RuleSet::silent_after`] intervals, or its rule is gone when the state is restored. Exactly
//!   one `resolved` event per incident, with its id; the hold-down starts.
//!
//! Everything is event time (the window results' own timestamps): the evaluator has no clock, so
//! a replay after a crash decides exactly as the live run did. Pure and synchronous; the state is
//! a plain serializable value ([`State`]) that the shell checkpoints.

use super::rules::{Condition, Group, Rule, RuleSet};
use super::template::Context;
use citypulse_runtime::id::Id;
use citypulse_runtime::small_map::SmallMap;
use citypulse_schema::{AlertEvent, AlertState, Kind, Severity, WindowResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What [`Evaluator::evaluate`] did with a window result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Evaluated (it may or may not have produced transitions).
    Applied,
    /// Its `window_end` is not newer than the subject's last evaluated one: ignored (a replay).
    Duplicate,
    /// `window_end` is not after `window_start`: ignored.
    Invalid,
}

/// The evaluator's whole state: serializable, compared in tests, restored after a crash.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Newest `window_end` evaluated, over all subjects.
    #[serde(default)]
    clock: u64,
    #[serde(default)]
    kinds: BTreeMap<Kind, BTreeMap<Id, DistrictState>>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct DistrictState {
    /// Newest `window_end` of any result (aggregate or sensor) of this kind in this district:
    /// the event-time clock sensors are judged offline against.
    #[serde(default)]
    clock: u64,
    #[serde(default)]
    aggregate: Option<SubjectState>,
    #[serde(default)]
    sensors: BTreeMap<Id, SubjectState>,
}

// Written as an array of its fields, read in either form: see `form`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(remote = "Self")]
struct SubjectState {
    /// Last evaluated window.
    start: u64,
    end: u64,
    /// Smallest advance of `end` seen between two windows (the hop of hopping windows).
    #[serde(default)]
    step: u64,
    /// The subject has been judged silent (its alerts resolved) since its last window.
    #[serde(default)]
    silent: bool,
    #[serde(default)]
    groups: SmallMap<String, GroupState>,
}

// Written as an array of its fields, read in either form: see `form`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(remote = "Self")]
struct GroupState {
    /// `window_end` of the last window with a value for this group (breaks in the run reset
    /// countdowns).
    #[serde(default)]
    last_end: u64,
    /// Per level (rule name): `window_start` of the run in which its condition has held.
    #[serde(default)]
    since: SmallMap<String, u64>,
    /// Stuck groups: the value and since when it has not changed.
    #[serde(default)]
    run: Option<Run>,
    /// The incident, as its latest firing event (boxed: most groups have none, and the state
    /// holds a group per sensor).
    #[serde(default)]
    firing: Option<Box<AlertEvent>>,
    /// No new incident before this event time (hold-down after a resolution).
    #[serde(default)]
    hold_until: u64,
}

impl GroupState {
    /// Nothing left that can affect a transition after the subject's window ending `end`.
    fn is_idle(&self, end: u64) -> bool {
        self.firing.is_none()
            && self.since.is_empty()
            && self.run.is_none()
            && self.hold_until <= end
    }
}

impl SubjectState {
    /// One "interval" of this subject: the smallest advance between two of its results (its
    /// window length when it reports every window, the hop with hopping windows, its reporting
    /// period when it reports less often), or its window length before it has a second result.
    fn interval(&self) -> u64 {
        if self.step > 0 {
            self.step
        } else {
            self.end - self.start
        }
    }
}

/// True when the run of a group over a subject is broken between its last observed
/// `window_end` and this window: more than one of the subject's intervals was not observed
/// (one missing result is tolerated: a reading's jitter can leave one window empty).
fn broken_run(last_end: u64, w: &WindowResult, interval: u64) -> bool {
    last_end != 0 && w.window_end.saturating_sub(last_end) > interval.saturating_mul(2)
}

// Written as an array of its fields, read in either form: see `form`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(remote = "Self")]
struct Run {
    value: f64,
    start: u64,
}

/// Identity of a subject while evaluating.
#[derive(Debug, Clone, Copy)]
struct Subj<'a> {
    kind: Kind,
    district: &'a str,
    sensor: Option<&'a str>,
}

impl Subj<'_> {
    fn key(&self) -> String {
        match self.sensor {
            Some(s) => format!("{}:{s}", self.district),
            None => self.district.to_owned(),
        }
    }

    fn display(&self) -> String {
        match self.sensor {
            Some(s) => format!("{}/{s}", self.district),
            None => self.district.to_owned(),
        }
    }
}

/// Evaluates window results against a rule set. See the module docs for the lifecycle.
#[derive(Debug, Clone)]
pub struct Evaluator {
    rules: Arc<RuleSet>,
    state: State,
}

impl Evaluator {
    /// A fresh evaluator.
    pub fn new(rules: Arc<RuleSet>) -> Evaluator {
        Evaluator {
            rules,
            state: State::default(),
        }
    }

    /// Resumes from a checkpointed state under `rules`, which may differ from the rules the
    /// state was built with: an incident whose group or level is gone, or whose group no longer
    /// watches its subject, resolves now (into `out`, `at` = the subject's last `window_end`),
    /// and state of unknown groups is dropped.
    pub fn restore(rules: Arc<RuleSet>, mut state: State, out: &mut Vec<AlertEvent>) -> Evaluator {
        for (kind, districts) in &mut state.kinds {
            for (district, d) in districts.iter_mut() {
                let subjects = d
                    .aggregate
                    .iter_mut()
                    .map(|s| (None, s))
                    .chain(d.sensors.iter_mut().map(|(k, s)| (Some(k.as_str()), s)));
                for (sensor, subject) in subjects {
                    let s = Subj {
                        kind: *kind,
                        district,
                        sensor,
                    };
                    let end = subject.end;
                    subject.groups.retain(|name, gs| {
                        let group = rules
                            .group(name)
                            .filter(|g| g.applies(s.kind, district, sensor));
                        let level_gone = |g: &Group| {
                            gs.firing
                                .as_ref()
                                .is_some_and(|f| g.level_of(&f.rule).is_none())
                        };
                        match group {
                            Some(g) if !level_gone(g) => true,
                            keep => {
                                if let Some(f) = gs.firing.take() {
                                    let at = end.max(f.at);
                                    let summary = format!(
                                        "resolved: rule `{}` was removed or no longer watches {}",
                                        f.rule,
                                        s.display()
                                    );
                                    out.push(resolved_from(*f, at, None, summary));
                                    gs.hold_until = at;
                                }
                                keep.is_some()
                            }
                        }
                    });
                }
            }
        }
        Evaluator { rules, state }
    }

    /// The rules in force.
    pub fn rules(&self) -> &Arc<RuleSet> {
        &self.rules
    }

    /// The state, for checkpointing.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Newest `window_end` evaluated so far (0 before any).
    pub fn clock(&self) -> u64 {
        self.state.clock
    }

    /// Evaluates one window result; transitions go to `out`. A result whose `window_end` is not
    /// newer than its subject's last one makes no transition ([`Outcome::Duplicate`]).
    pub fn evaluate(&mut self, w: &WindowResult, out: &mut Vec<AlertEvent>) -> Outcome {
        if w.window_end <= w.window_start {
            return Outcome::Invalid;
        }
        let kind = w.kind();
        let rules = &*self.rules;
        let district = self
            .state
            .kinds
            .entry(kind)
            .or_default()
            .entry(Id::from(w.district.as_str()))
            .or_default();
        // A new window end of the district: every subject is judged against it by its results
        // before it, this result's subject too. So whichever result of a window end comes first
        // (the processors' order, or another after a retried publish), the same subjects are
        // found offline or silent.
        if w.window_end > district.clock {
            district.clock = w.window_end;
            check_district(rules, kind, &w.district, district, district.clock, out);
        }
        let s = Subj {
            kind,
            district: &w.district,
            sensor: w.sensor.as_deref(),
        };
        {
            let subject = match &w.sensor {
                Some(id) => district.sensors.entry(Id::from(id.as_str())).or_default(),
                None => district.aggregate.get_or_insert_with(SubjectState::default),
            };
            if w.window_end <= subject.end {
                return Outcome::Duplicate;
            }
            if subject.end > 0 {
                let advance = w.window_end - subject.end;
                subject.step = if subject.step == 0 {
                    advance
                } else {
                    subject.step.min(advance)
                };
            }
            subject.start = w.window_start;
            subject.end = w.window_end;
            subject.silent = false;
            let interval = subject.interval();
            for group in rules
                .groups()
                .iter()
                .filter(|g| g.applies(kind, &w.district, s.sensor))
            {
                let groups = &mut subject.groups;
                match group.base().condition {
                    Condition::Threshold { .. } => {
                        let gs = groups.get_or_default(&group.name);
                        threshold_step(Incident { group, s, gs, out }, w, interval)
                    }
                    Condition::Stuck { tolerance } => {
                        let gs = groups.get_or_default(&group.name);
                        stuck_step(Incident { group, s, gs, out }, w, interval, tolerance)
                    }
                    // Offline incidents fire in `check_subject`; a result only ends one.
                    Condition::Offline { .. } => {
                        if let Some(gs) = groups.get_mut(&group.name) {
                            Incident { group, s, gs, out }.resolve(w.window_end, 0.0, None);
                        }
                    }
                }
            }
            subject.groups.retain(|_, gs| !gs.is_idle(w.window_end));
        }
        self.state.clock = self.state.clock.max(w.window_end);
        Outcome::Applied
    }

    /// Judges silence and offline sensors as of event time `now` (for sensors, the later of `now`
    /// and their district's own clock). The shell calls it periodically with the newest event
    /// time minus a grace, so that a district whose results all stopped is still judged.
    pub fn tick(&mut self, now: u64, out: &mut Vec<AlertEvent>) {
        self.tick_where(now, &|_, _| true, out);
    }

    /// [`Evaluator::tick`] for the districts `eligible` accepts only (the shell passes those
    /// that have also been quiet in processing time: a district whose results merely lag behind
    /// the others while the pipeline catches up is not judged).
    pub fn tick_where(
        &mut self,
        now: u64,
        eligible: &dyn Fn(Kind, &str) -> bool,
        out: &mut Vec<AlertEvent>,
    ) {
        for (kind, districts) in &mut self.state.kinds {
            for (name, d) in districts.iter_mut() {
                if !eligible(*kind, name) {
                    continue;
                }
                let reference = d.clock.max(now);
                check_district(&self.rules, *kind, name, d, reference, out);
            }
        }
    }

    /// The latest firing event of every active incident.
    pub fn active(&self) -> impl Iterator<Item = &AlertEvent> {
        self.state.kinds.values().flat_map(|districts| {
            districts.values().flat_map(|d| {
                d.aggregate
                    .iter()
                    .chain(d.sensors.values())
                    .flat_map(|s| s.groups.values().filter_map(|g| g.firing.as_deref()))
            })
        })
    }

    /// The active incident with this id.
    pub fn incident(&self, id: &str) -> Option<&AlertEvent> {
        self.active().find(|e| e.id == id)
    }

    /// Active incidents per severity.
    pub fn firing_by_severity(&self) -> BTreeMap<Severity, usize> {
        let mut counts: BTreeMap<Severity, usize> = Severity::ALL.iter().map(|s| (*s, 0)).collect();
        for e in self.active() {
            *counts.entry(e.severity).or_default() += 1;
        }
        counts
    }
}

/// Silence and offline checks for every subject of one district.
fn check_district(
    rules: &RuleSet,
    kind: Kind,
    district: &str,
    d: &mut DistrictState,
    reference: u64,
    out: &mut Vec<AlertEvent>,
) {
    if let Some(agg) = d.aggregate.as_mut() {
        let s = Subj {
            kind,
            district,
            sensor: None,
        };
        check_subject(rules, s, agg, reference, out);
    }
    for (sensor, subject) in d.sensors.iter_mut() {
        let s = Subj {
            kind,
            district,
            sensor: Some(sensor),
        };
        check_subject(rules, s, subject, reference, out);
    }
}

/// A subject without results up to `reference`: silence resolves its alerts; offline groups
/// fire (and escalate) at the deadlines their intervals give.
fn check_subject(
    rules: &RuleSet,
    s: Subj<'_>,
    subject: &mut SubjectState,
    reference: u64,
    out: &mut Vec<AlertEvent>,
) {
    if subject.end == 0 || reference <= subject.end {
        return;
    }
    let len = subject.interval();
    if !subject.silent {
        let deadline = subject
            .end
            .saturating_add(u64::from(rules.silent_after).saturating_mul(len));
        if reference > deadline {
            subject.silent = true;
            for group in rules.groups().iter().filter(|g| {
                g.applies(s.kind, s.district, s.sensor)
                    && !matches!(g.base().condition, Condition::Offline { .. })
            }) {
                if let Some(gs) = subject.groups.get_mut(&group.name) {
                    gs.since.clear();
                    gs.run = None;
                    if let Some(f) = &gs.firing {
                        let (at, value) = (deadline.max(f.at), f.value);
                        let summary = format!(
                            "resolved: no data from {} for {} intervals",
                            s.display(),
                            rules.silent_after
                        );
                        Incident { group, s, gs, out }.resolve(at, value, Some(summary));
                    }
                }
            }
        }
    }
    // Offline needs the sensor's rhythm: with a single result so far, a station that reports
    // every 15 minutes would look offline after a few 1-minute windows.
    let offline_groups = rules.groups().iter().filter(|g| {
        subject.step > 0
            && g.applies(s.kind, s.district, s.sensor)
            && matches!(g.base().condition, Condition::Offline { .. })
    });
    for group in offline_groups {
        let gs = subject.groups.get_or_default(&group.name);
        let mut incident = Incident { group, s, gs, out };
        for (l, level) in group.levels.iter().enumerate() {
            let Condition::Offline { intervals } = level.condition else {
                continue;
            };
            let firing = incident.gs.firing.as_ref();
            if firing
                .and_then(|f| group.level_of(&f.rule))
                .is_some_and(|c| l <= c)
            {
                continue;
            }
            let deadline = subject
                .end
                .saturating_add(u64::from(intervals).saturating_mul(len));
            let at = match firing {
                None => deadline.max(incident.gs.hold_until),
                Some(f) => deadline.max(f.at),
            };
            if reference <= at {
                break;
            }
            let value = f64::from(intervals);
            if firing.is_none() {
                incident.fire(l, at, value);
            } else {
                incident.change(l, at, value);
            }
        }
    }
    // Idle means "nothing left that can affect a future transition", and every future
    // transition of this subject happens after its own last window: judge by that, not by the
    // district's clock (a hold-down must outlive a lagging sensor's catch-up).
    let end = subject.end;
    subject.groups.retain(|_, gs| !gs.is_idle(end));
}

fn value_of(w: &WindowResult, metric: &str) -> Option<f64> {
    w.value(metric).filter(|v| v.is_finite())
}

fn threshold_step(mut incident: Incident<'_>, w: &WindowResult, interval: u64) {
    let (group, gs) = (incident.group, &mut *incident.gs);
    let t = w.window_end;
    let Some(v) = value_of(w, &group.base().metric) else {
        // Unknown value: the run is broken; a firing alert stays as it is.
        gs.since.clear();
        return;
    };
    if broken_run(gs.last_end, w, interval) {
        gs.since.clear();
    }
    gs.last_end = t;
    for level in &group.levels {
        if let Condition::Threshold { op, threshold, .. } = level.condition {
            if op.holds(v, threshold) {
                gs.since.get_or_insert_with(&level.name, || w.window_start);
            } else {
                gs.since.remove(&level.name);
            }
        }
    }
    let armed = armed_level(group, t, |level| gs.since.get(&level.name).copied());
    let cleared = |level: &Rule| match level.condition {
        Condition::Threshold { op, clear, .. } => !op.holds(v, clear),
        _ => true,
    };
    match current_level(group, gs) {
        None => {
            if let Some(a) = armed {
                if t >= gs.hold_until {
                    incident.fire(a, t, v);
                }
            }
        }
        Some(c) => {
            if let Some(a) = armed.filter(|a| *a > c) {
                incident.change(a, t, v);
            } else {
                match (0..=c).rev().find(|l| !cleared(&group.levels[*l])) {
                    None => incident.resolve(t, v, None),
                    Some(k) if k < c => incident.change(k, t, v),
                    Some(_) => {}
                }
            }
        }
    }
}

fn stuck_step(mut incident: Incident<'_>, w: &WindowResult, interval: u64, tolerance: f64) {
    let (group, gs) = (incident.group, &mut *incident.gs);
    let t = w.window_end;
    let Some(v) = value_of(w, &group.base().metric) else {
        return;
    };
    let gap = broken_run(gs.last_end, w, interval);
    gs.last_end = t;
    let changed = match &mut gs.run {
        Some(run) if (v - run.value).abs() <= tolerance => {
            if gap {
                // Unchanged, but not observed throughout: the countdown restarts.
                run.start = w.window_start;
            }
            false
        }
        _ => {
            gs.run = Some(Run {
                value: v,
                start: w.window_start,
            });
            true
        }
    };
    let start = gs.run.map(|r| r.start);
    let armed = armed_level(group, t, |_| start);
    match current_level(group, gs) {
        None => {
            if let Some(a) = armed {
                if t >= gs.hold_until {
                    incident.fire(a, t, v);
                }
            }
        }
        Some(c) => {
            if changed {
                incident.resolve(t, v, None);
            } else if let Some(a) = armed.filter(|a| *a > c) {
                incident.change(a, t, v);
            }
        }
    }
}

/// The highest level whose countdown (started at `since(level)`) has reached its `for` at `t`.
fn armed_level(group: &Group, t: u64, since: impl Fn(&Rule) -> Option<u64>) -> Option<usize> {
    (0..group.levels.len()).rev().find(|l| {
        let level = &group.levels[*l];
        since(level).is_some_and(|s| t.saturating_sub(s) >= level.for_ms)
    })
}

fn current_level(group: &Group, gs: &GroupState) -> Option<usize> {
    gs.firing
        .as_ref()
        .map(|f| group.level_of(&f.rule).unwrap_or(0))
}

fn render(level: &Rule, group: &Group, s: Subj<'_>, value: f64, resolved: bool) -> String {
    let cx = Context {
        rule: &level.name,
        group: &group.name,
        severity: level.severity.as_str(),
        kind: s.kind.as_str(),
        district: s.district,
        sensor: s.sensor,
        metric: &level.metric,
        value,
        threshold: level.threshold(),
        clear: level.clear(),
        for_: &level.for_text,
    };
    if resolved {
        level.resolved_summary.render(&cx)
    } else {
        level.summary.render(&cx)
    }
}

/// One rule group's incident on one subject: the state a transition changes, and where the
/// transition's event goes.
struct Incident<'a> {
    group: &'a Group,
    s: Subj<'a>,
    gs: &'a mut GroupState,
    out: &'a mut Vec<AlertEvent>,
}

impl Incident<'_> {
    /// The firing event of `level` for incident `id`, begun at `started_at`, as of `at`.
    fn event(
        &self,
        level: &Rule,
        id: String,
        (started_at, at): (u64, u64),
        value: f64,
    ) -> AlertEvent {
        let s = self.s;
        AlertEvent {
            id,
            rule: level.name.clone(),
            state: AlertState::Firing,
            severity: level.severity,
            kind: s.kind,
            district: s.district.to_owned(),
            sensor: s.sensor.map(str::to_owned),
            metric: level.metric.clone(),
            value,
            threshold: level.threshold(),
            started_at,
            at,
            summary: render(level, self.group, s, value, false),
        }
    }

    /// A new incident at `level`.
    fn fire(&mut self, level: usize, at: u64, value: f64) {
        let id = format!("{}:{}:{at}", self.group.name, self.s.key());
        let e = self.event(&self.group.levels[level], id, (at, at), value);
        self.out.push(e.clone());
        self.gs.firing = Some(Box::new(e));
    }

    /// Escalation or de-escalation: the same incident at another level.
    fn change(&mut self, level: usize, at: u64, value: f64) {
        let Some(f) = &self.gs.firing else {
            return;
        };
        let (id, span) = (f.id.clone(), (f.started_at, at.max(f.at)));
        let e = self.event(&self.group.levels[level], id, span, value);
        self.out.push(e.clone());
        self.gs.firing = Some(Box::new(e));
    }

    /// The incident ends at `at` (not before its last event); `summary` replaces the level's
    /// resolved summary.
    fn resolve(&mut self, at: u64, value: f64, summary: Option<String>) {
        let (group, gs) = (self.group, &mut *self.gs);
        let Some(f) = gs.firing.take() else {
            return;
        };
        let level = group
            .level_of(&f.rule)
            .map(|l| &group.levels[l])
            .unwrap_or(group.base());
        let at = at.max(f.at);
        let summary = summary.unwrap_or_else(|| render(level, group, self.s, value, true));
        gs.hold_until = at.saturating_add(level.hold_down_ms);
        gs.since.clear();
        self.out.push(resolved_from(
            *f,
            at,
            Some((value, group.base().clear())),
            summary,
        ));
    }
}

fn resolved_from(
    firing: AlertEvent,
    at: u64,
    value_and_clear: Option<(f64, f64)>,
    summary: String,
) -> AlertEvent {
    let (value, threshold) = value_and_clear.unwrap_or((firing.value, firing.threshold));
    AlertEvent {
        state: AlertState::Resolved,
        value,
        threshold,
        at,
        summary,
        ..firing
    }
}

#[path = "evaluator_form.rs"]
mod form;

#[cfg(test)]
#[path = "evaluator_tests.rs"]
mod tests;
