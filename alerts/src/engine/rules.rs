//! Alert rules: the TOML file format, its loader and the typed, validated rules.
//!
//! The loader takes text and reports **every** error at once, each with its line: TOML syntax
//! errors, unknown keys (raw types use `deny_unknown_fields`), wrong types, unknown kinds,
//! severities, operators and metric names (checked against
//! [`citypulse_schema::metric_names`]), unparseable durations and templates, fields that do not
//! apply to a rule's condition, and inconsistent groups. The format is documented in
//! `alerts/README.md`; [`DEFAULT_RULES`] is the rule set that ships with the service.

use super::template::{Template, TemplateError};
use citypulse_schema::subject::is_token;
use citypulse_schema::{metric_names, Kind, Severity};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

/// The default rule set, `alerts/rules/default.toml`, embedded in the binary.
pub const DEFAULT_RULES: &str = include_str!("../../rules/default.toml");

/// Default for [`RuleSet::silent_after`].
pub const DEFAULT_SILENT_AFTER: u32 = 5;

/// A comparison between a metric's value and a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

impl Op {
    /// `value op threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Op::Gt => value > threshold,
            Op::Ge => value >= threshold,
            Op::Lt => value < threshold,
            Op::Le => value <= threshold,
        }
    }

    /// True for `>` and `>=`: higher values are worse.
    pub fn upward(self) -> bool {
        matches!(self, Op::Gt | Op::Ge)
    }

    /// The operator as written in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Gt => ">",
            Op::Ge => ">=",
            Op::Lt => "<",
            Op::Le => "<=",
        }
    }
}

/// What a rule watches for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Condition {
    /// `metric op threshold` held for `for`; resolves when `metric op clear` no longer holds
    /// (hysteresis: with `>` the value must fall to `clear` or below).
    Threshold {
        /// The comparison.
        op: Op,
        /// Firing threshold.
        threshold: f64,
        /// Clear threshold (equal to `threshold` when not given).
        clear: f64,
    },
    /// A sensor sent no window result for `intervals` of its intervals, judged in event time
    /// against the other results of its district.
    Offline {
        /// Missed window intervals before firing.
        intervals: u32,
    },
    /// The metric stayed within `tolerance` of one value for `for`.
    Stuck {
        /// Largest change still counted as "identical" (0 = exactly equal).
        tolerance: f64,
    },
}

impl Condition {
    /// The condition's name in rule files.
    pub fn name(&self) -> &'static str {
        match self {
            Condition::Threshold { .. } => "threshold",
            Condition::Offline { .. } => "offline",
            Condition::Stuck { .. } => "stuck",
        }
    }
}

/// Which window results a rule watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// District aggregates (`metrics.<kind>.<district>`).
    District,
    /// Per-sensor results (`metrics.<kind>.<district>.<sensor>`).
    Sensor,
}

impl Scope {
    /// The scope's name in rule files.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::District => "district",
            Scope::Sensor => "sensor",
        }
    }
}

/// The metric name offline rules report (`value` = missed intervals).
pub const OFFLINE_METRIC: &str = "missed_intervals";

/// One validated rule: one severity level of a [`Group`].
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Unique name (a subject token).
    pub name: String,
    /// The group (alert) this rule is a level of; its own name when not grouped.
    pub group: String,
    /// Kind of the watched window results.
    pub kind: Kind,
    /// District aggregates or per-sensor results.
    pub scope: Scope,
    /// Only these districts, when given.
    pub districts: Option<BTreeSet<String>>,
    /// Watched metric (a window-result field name; [`OFFLINE_METRIC`] for offline rules).
    pub metric: String,
    /// What the rule watches for.
    pub condition: Condition,
    /// How long, in event time, the condition must hold before firing (ms).
    pub for_ms: u64,
    /// `for` as written ("15m"), for summaries.
    pub for_text: String,
    /// After a resolution, the alert cannot fire again for this long (event time, ms).
    pub hold_down_ms: u64,
    /// Severity of this level.
    pub severity: Severity,
    /// Summary of firing events.
    pub summary: Template,
    /// Summary of the resolved event.
    pub resolved_summary: Template,
    /// Free text for people reading the rule file.
    pub description: Option<String>,
    /// Line of the rule's table in the file.
    pub line: usize,
}

impl Rule {
    /// The firing threshold reported in events: the threshold, the missed intervals of an
    /// offline rule, or the `for` (seconds) of a stuck rule.
    pub fn threshold(&self) -> f64 {
        match self.condition {
            Condition::Threshold { threshold, .. } => threshold,
            Condition::Offline { intervals } => f64::from(intervals),
            Condition::Stuck { .. } => self.for_ms as f64 / 1000.0,
        }
    }

    /// The clear threshold reported in resolved events.
    pub fn clear(&self) -> f64 {
        match self.condition {
            Condition::Threshold { clear, .. } => clear,
            _ => self.threshold(),
        }
    }

    /// True when this rule watches results of `district`.
    pub fn watches_district(&self, district: &str) -> bool {
        self.districts.as_ref().is_none_or(|d| d.contains(district))
    }
}

/// Rules sharing a group name form one alert per subject whose severity escalates from level to
/// level (`firing(warning)` → `firing(critical)`, same id) and steps back down through the
/// levels' clear thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// Group name: the first part of every alert id.
    pub name: String,
    /// Levels, lowest severity first.
    pub levels: Vec<Rule>,
}

impl Group {
    /// The lowest level; all levels share kind, scope, districts, metric and condition kind.
    pub fn base(&self) -> &Rule {
        &self.levels[0]
    }

    /// The index of the level named `rule`.
    pub fn level_of(&self, rule: &str) -> Option<usize> {
        self.levels.iter().position(|r| r.name == rule)
    }

    /// True when this group watches the subject (`sensor` is `None` for district aggregates).
    pub fn applies(&self, kind: Kind, district: &str, sensor: Option<&str>) -> bool {
        let base = self.base();
        let scope = if sensor.is_some() {
            Scope::Sensor
        } else {
            Scope::District
        };
        base.kind == kind && base.scope == scope && base.watches_district(district)
    }
}

/// A validated rule file.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleSet {
    groups: Vec<Group>,
    /// Intervals without window results after which a subject counts as silent: its alerts
    /// (except offline alerts) resolve and its `for` countdowns restart.
    pub silent_after: u32,
}

impl RuleSet {
    /// A rule set without rules.
    pub fn empty() -> RuleSet {
        RuleSet {
            groups: Vec::new(),
            silent_after: DEFAULT_SILENT_AFTER,
        }
    }

    /// The default rules ([`DEFAULT_RULES`]).
    pub fn default_rules() -> Result<RuleSet, RuleErrors> {
        load(DEFAULT_RULES)
    }

    /// Groups, in file order of their first rule.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The group named `name`.
    pub fn group(&self, name: &str) -> Option<&Group> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// Number of rules (levels of all groups).
    pub fn rule_count(&self) -> usize {
        self.groups.iter().map(|g| g.levels.len()).sum()
    }

    /// Every rule, group by group.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.groups.iter().flat_map(|g| g.levels.iter())
    }
}

/// One problem in a rule file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// What is wrong, with the offending value.
    pub message: String,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}", self.message)
        } else {
            write!(f, "line {}: {}", self.line, self.message)
        }
    }
}

/// Every problem found in a rule file, in line order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} error(s) in the rule file:\n{}", .0.len(), .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
pub struct RuleErrors(pub Vec<RuleError>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    silent_after: Option<Spanned<u32>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    group: Option<Spanned<String>>,
    description: Option<String>,
    kind: Spanned<String>,
    condition: Option<Spanned<String>>,
    scope: Option<Spanned<String>>,
    districts: Option<Spanned<Vec<String>>>,
    metric: Option<Spanned<String>>,
    op: Option<Spanned<String>>,
    threshold: Option<Spanned<f64>>,
    clear: Option<Spanned<f64>>,
    #[serde(rename = "for")]
    for_: Option<Spanned<String>>,
    hold_down: Option<Spanned<String>>,
    intervals: Option<Spanned<u32>>,
    tolerance: Option<Spanned<f64>>,
    severity: Spanned<String>,
    summary: Spanned<String>,
    resolved_summary: Option<Spanned<String>>,
}

/// Collects errors with line numbers computed from byte offsets.
struct Errors<'a> {
    text: &'a str,
    list: Vec<RuleError>,
}

impl Errors<'_> {
    fn line_of(&self, offset: usize) -> usize {
        let end = offset.min(self.text.len());
        self.text.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }

    fn at(&mut self, offset: usize, message: impl Into<String>) {
        let line = self.line_of(offset);
        self.list.push(RuleError {
            line,
            message: message.into(),
        });
    }

    fn toml(&mut self, e: &toml::de::Error) {
        let line = e.span().map(|s| self.line_of(s.start)).unwrap_or(0);
        self.list.push(RuleError {
            line,
            message: e.message().trim().to_owned(),
        });
    }
}

/// The largest rule file accepted: 256 KiB, some 2,000 rules (the default file is under 10
/// KiB). The TOML parser holds about a hundred times its input while it reports every error of a
/// broken file (measured by `scripts/fuzz --target rules`), so the size is checked first.
pub const MAX_RULE_FILE_BYTES: usize = 256 << 10;

/// Parses and validates a rule file. Returns every error found, each with its line.
pub fn load(text: &str) -> Result<RuleSet, RuleErrors> {
    if text.len() > MAX_RULE_FILE_BYTES {
        return Err(RuleErrors(vec![RuleError {
            line: 0,
            message: format!(
                "the rule file is {} bytes; the limit is {MAX_RULE_FILE_BYTES}",
                text.len()
            ),
        }]));
    }
    let mut errors = Errors {
        text,
        list: Vec::new(),
    };
    let (doc, syntax) = DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        for e in &syntax {
            errors.toml(e);
        }
        return Err(finish(errors.list));
    }
    let mut raw_rules = Vec::new();
    let mut silent_after = DEFAULT_SILENT_AFTER;
    for (key, value) in doc.get_ref().iter() {
        match key.get_ref().as_ref() {
            "rule" => match value.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        let start = item.span().start;
                        match RawRule::deserialize(ValueDeserializer::from(item.clone())) {
                            Ok(raw) => raw_rules.push((start, raw)),
                            Err(e) => errors.toml(&e),
                        }
                    }
                }
                _ => errors.at(
                    value.span().start,
                    "`rule` must be an array of tables, written [[rule]]",
                ),
            },
            "settings" => match RawSettings::deserialize(ValueDeserializer::from(value.clone())) {
                Ok(s) => {
                    if let Some(n) = s.silent_after {
                        if *n.get_ref() == 0 {
                            errors.at(n.span().start, "`silent_after` must be at least 1");
                        }
                        silent_after = *n.get_ref();
                    }
                }
                Err(e) => errors.toml(&e),
            },
            other => errors.at(
                key.span().start,
                format!("unknown top-level key `{other}` (expected `rule` or `settings`)"),
            ),
        }
    }
    let mut rules = Vec::new();
    let mut names = BTreeMap::new();
    for (start, raw) in raw_rules {
        let name = raw.name.get_ref().clone();
        let line = errors.line_of(start);
        if let Some(first) = names.insert(name.clone(), line) {
            errors.at(
                raw.name.span().start,
                format!("duplicate rule name `{name}` (first defined on line {first})"),
            );
        }
        if let Some(rule) = validate(raw, line, &mut errors) {
            rules.push(rule);
        }
    }
    let groups = group(rules, &mut errors);
    if errors.list.is_empty() {
        Ok(RuleSet {
            groups,
            silent_after,
        })
    } else {
        Err(finish(errors.list))
    }
}

fn finish(mut list: Vec<RuleError>) -> RuleErrors {
    list.sort_by_key(|e| e.line);
    RuleErrors(list)
}

/// Parses a duration field ("15m"), reporting errors at the field.
fn duration(errors: &mut Errors<'_>, field: &Option<Spanned<String>>, name: &str) -> Option<u64> {
    let f = field.as_ref()?;
    match citypulse_runtime::duration::parse(f.get_ref()) {
        Ok(d) => Some(citypulse_runtime::duration::millis(d)),
        Err(e) => {
            errors.at(f.span().start, format!("`{name}`: {e}"));
            None
        }
    }
}

fn template(errors: &mut Errors<'_>, field: &Spanned<String>, name: &str) -> Option<Template> {
    Template::parse(field.get_ref())
        .map_err(|e: TemplateError| errors.at(field.span().start, format!("`{name}`: {e}")))
        .ok()
}

const THRESHOLD_RESOLVED: &str = "{metric} back to {value} on {subject} (clear at {clear})";
const OFFLINE_RESOLVED: &str = "{subject} is reporting again";
const STUCK_RESOLVED: &str = "{metric} on {subject} is changing again ({value})";

/// Turns one raw rule into a typed one, reporting every problem. `None` when any was found.
fn validate(raw: RawRule, line: usize, errors: &mut Errors<'_>) -> Option<Rule> {
    let before = errors.list.len();
    let name = raw.name.get_ref().clone();
    if !is_token(&name) {
        errors.at(
            raw.name.span().start,
            format!("rule name `{name}` must be 1-64 of [a-z0-9_-]"),
        );
    }
    let group = match &raw.group {
        Some(g) => {
            if !is_token(g.get_ref()) {
                errors.at(
                    g.span().start,
                    format!("group `{}` must be 1-64 of [a-z0-9_-]", g.get_ref()),
                );
            }
            g.get_ref().clone()
        }
        None => name.clone(),
    };
    let kind = raw
        .kind
        .get_ref()
        .parse::<Kind>()
        .map_err(|e| {
            errors.at(
                raw.kind.span().start,
                format!("{e} (expected `traffic` or `air`)"),
            )
        })
        .ok();
    let severity = raw
        .severity
        .get_ref()
        .parse::<Severity>()
        .map_err(|e| {
            errors.at(
                raw.severity.span().start,
                format!("{e} (expected `info`, `warning` or `critical`)"),
            )
        })
        .ok();
    let condition_name = raw
        .condition
        .as_ref()
        .map(|c| c.get_ref().as_str())
        .unwrap_or("threshold");
    let condition_at = raw
        .condition
        .as_ref()
        .map(|c| c.span().start)
        .unwrap_or(raw.name.span().start);

    // Fields that do not apply to the condition are errors, not silently ignored.
    let mut not_for = |present: Option<usize>, field: &str| {
        if let Some(at) = present {
            errors.at(
                at,
                format!("`{field}` does not apply to a `{condition_name}` rule"),
            );
        }
    };
    let span = |s: &Option<Spanned<f64>>| s.as_ref().map(|s| s.span().start);
    match condition_name {
        "threshold" => {
            not_for(raw.intervals.as_ref().map(|s| s.span().start), "intervals");
            not_for(span(&raw.tolerance), "tolerance");
        }
        "offline" => {
            not_for(raw.metric.as_ref().map(|s| s.span().start), "metric");
            not_for(raw.op.as_ref().map(|s| s.span().start), "op");
            not_for(span(&raw.threshold), "threshold");
            not_for(span(&raw.clear), "clear");
            not_for(raw.for_.as_ref().map(|s| s.span().start), "for");
            not_for(span(&raw.tolerance), "tolerance");
        }
        "stuck" => {
            not_for(raw.op.as_ref().map(|s| s.span().start), "op");
            not_for(span(&raw.threshold), "threshold");
            not_for(span(&raw.clear), "clear");
            not_for(raw.intervals.as_ref().map(|s| s.span().start), "intervals");
        }
        other => errors.at(
            condition_at,
            format!("unknown condition `{other}` (expected `threshold`, `offline` or `stuck`)"),
        ),
    }

    let default_scope = match condition_name {
        "threshold" => Scope::District,
        _ => Scope::Sensor,
    };
    let scope = match &raw.scope {
        None => Some(default_scope),
        Some(s) => match s.get_ref().as_str() {
            "district" => Some(Scope::District),
            "sensor" => Some(Scope::Sensor),
            other => {
                errors.at(
                    s.span().start,
                    format!("unknown scope `{other}` (expected `district` or `sensor`)"),
                );
                None
            }
        },
    };
    if condition_name == "offline" && scope == Some(Scope::District) {
        let at = raw.scope.as_ref().map(|s| s.span().start).unwrap_or(0);
        errors.at(
            at,
            "an `offline` rule watches sensors: `scope` must be `sensor`",
        );
    }
    let districts = raw.districts.as_ref().map(|d| {
        for t in d.get_ref() {
            if !is_token(t) {
                errors.at(
                    d.span().start,
                    format!("district `{t}` must be 1-64 of [a-z0-9_-]"),
                );
            }
        }
        if d.get_ref().is_empty() {
            errors.at(
                d.span().start,
                "`districts` is empty: the rule would watch nothing (omit it to watch all)",
            );
        }
        d.get_ref().iter().cloned().collect::<BTreeSet<_>>()
    });

    let metric = match (condition_name, &raw.metric) {
        ("offline", _) => Some(OFFLINE_METRIC.to_owned()),
        (_, None) => {
            errors.at(
                raw.name.span().start,
                format!("rule `{name}` needs a `metric`"),
            );
            None
        }
        (_, Some(m)) => {
            if let Some(kind) = kind {
                if !metric_names(kind).contains(&m.get_ref().as_str()) {
                    errors.at(
                        m.span().start,
                        format!(
                            "unknown {kind} metric `{}` (known: {})",
                            m.get_ref(),
                            metric_names(kind).join(", ")
                        ),
                    );
                }
            }
            Some(m.get_ref().clone())
        }
    };

    let for_ms = duration(errors, &raw.for_, "for");
    let hold_down_ms = duration(errors, &raw.hold_down, "hold_down").unwrap_or(0);
    let condition = match condition_name {
        "threshold" => {
            let op = match &raw.op {
                None => {
                    errors.at(
                        raw.name.span().start,
                        format!("rule `{name}` needs an `op` (>, >=, <, <=)"),
                    );
                    None
                }
                Some(o) => match o.get_ref().as_str() {
                    ">" => Some(Op::Gt),
                    ">=" => Some(Op::Ge),
                    "<" => Some(Op::Lt),
                    "<=" => Some(Op::Le),
                    other => {
                        errors.at(
                            o.span().start,
                            format!("unknown op `{other}` (expected >, >=, < or <=)"),
                        );
                        None
                    }
                },
            };
            let threshold = raw.threshold.as_ref().map(|t| *t.get_ref());
            if threshold.is_none() {
                errors.at(
                    raw.name.span().start,
                    format!("rule `{name}` needs a `threshold`"),
                );
            }
            let finite = |v: &Option<Spanned<f64>>, field: &str, errors: &mut Errors<'_>| {
                if let Some(v) = v {
                    if !v.get_ref().is_finite() {
                        errors.at(v.span().start, format!("`{field}` must be a finite number"));
                    }
                }
            };
            finite(&raw.threshold, "threshold", errors);
            finite(&raw.clear, "clear", errors);
            let clear = raw.clear.as_ref().map(|c| *c.get_ref());
            match (op, threshold) {
                (Some(op), Some(threshold)) => {
                    let clear = clear.unwrap_or(threshold);
                    let wrong_side = if op.upward() {
                        clear > threshold
                    } else {
                        clear < threshold
                    };
                    if wrong_side {
                        let at = raw.clear.as_ref().map(|c| c.span().start).unwrap_or(0);
                        errors.at(
                            at,
                            format!(
                                "`clear` {clear} is on the wrong side of `threshold` {threshold} \
                                 for `{}`: it must be {} the threshold (hysteresis)",
                                op.as_str(),
                                if op.upward() {
                                    "at or below"
                                } else {
                                    "at or above"
                                }
                            ),
                        );
                    }
                    Some(Condition::Threshold {
                        op,
                        threshold,
                        clear,
                    })
                }
                _ => None,
            }
        }
        "offline" => {
            match &raw.intervals {
                None => {
                    errors.at(
                    raw.name.span().start,
                    format!("offline rule `{name}` needs `intervals` (missed windows before firing)"),
                );
                    None
                }
                Some(i) if *i.get_ref() == 0 => {
                    errors.at(i.span().start, "`intervals` must be at least 1");
                    None
                }
                Some(i) => Some(Condition::Offline {
                    intervals: *i.get_ref(),
                }),
            }
        }
        "stuck" => {
            // An unparseable `for` was reported above.
            if raw.for_.is_none() || for_ms == Some(0) {
                errors.at(
                    raw.for_
                        .as_ref()
                        .map(|f| f.span().start)
                        .unwrap_or(raw.name.span().start),
                    format!("stuck rule `{name}` needs a positive `for` (how long values stay identical)"),
                );
            }
            let tolerance = raw.tolerance.as_ref().map(|t| *t.get_ref()).unwrap_or(0.0);
            if !(tolerance >= 0.0 && tolerance.is_finite()) {
                let at = raw.tolerance.as_ref().map(|t| t.span().start).unwrap_or(0);
                errors.at(
                    at,
                    format!("`tolerance` {tolerance} must be a finite number ≥ 0"),
                );
            }
            Some(Condition::Stuck { tolerance })
        }
        _ => None,
    };
    let summary = template(errors, &raw.summary, "summary");
    let resolved_summary = match &raw.resolved_summary {
        Some(t) => template(errors, t, "resolved_summary"),
        None => Template::parse(match condition_name {
            "offline" => OFFLINE_RESOLVED,
            "stuck" => STUCK_RESOLVED,
            _ => THRESHOLD_RESOLVED,
        })
        .ok(),
    };
    if errors.list.len() > before {
        return None;
    }
    Some(Rule {
        name,
        group,
        kind: kind?,
        scope: scope?,
        districts,
        metric: metric?,
        condition: condition?,
        for_ms: for_ms.unwrap_or(0),
        for_text: raw
            .for_
            .as_ref()
            .map(|f| f.get_ref().clone())
            .unwrap_or_else(|| "0s".to_owned()),
        hold_down_ms,
        severity: severity?,
        summary: summary?,
        resolved_summary: resolved_summary?,
        description: raw.description,
        line,
    })
}

/// Groups rules and checks that each group is one coherent alert.
fn group(rules: Vec<Rule>, errors: &mut Errors<'_>) -> Vec<Group> {
    let mut groups: Vec<Group> = Vec::new();
    for rule in rules {
        match groups.iter_mut().find(|g| g.name == rule.group) {
            Some(g) => g.levels.push(rule),
            None => groups.push(Group {
                name: rule.group.clone(),
                levels: vec![rule],
            }),
        }
    }
    for g in &mut groups {
        g.levels.sort_by_key(|r| r.severity);
        let g = &*g;
        let base = g.base();
        for pair in g.levels.windows(2) {
            let (lo, hi) = (&pair[0], &pair[1]);
            let mut bad = |message: String| {
                errors.list.push(RuleError {
                    line: hi.line,
                    message: format!("rule `{}` in group `{}`: {message}", hi.name, g.name),
                })
            };
            if lo.severity == hi.severity {
                bad(format!(
                    "same severity `{}` as rule `{}` (each level of a group needs its own severity)",
                    hi.severity, lo.name
                ));
            }
            let escalates = match (lo.condition, hi.condition) {
                (
                    Condition::Threshold {
                        op: a,
                        threshold: ta,
                        ..
                    },
                    Condition::Threshold {
                        op: b,
                        threshold: tb,
                        ..
                    },
                ) => {
                    if a.upward() != b.upward() {
                        bad(format!(
                            "op `{}` points the other way than `{}` of rule `{}`",
                            b.as_str(),
                            a.as_str(),
                            lo.name
                        ));
                        true
                    } else if a.upward() {
                        tb > ta
                    } else {
                        tb < ta
                    }
                }
                (Condition::Offline { intervals: a }, Condition::Offline { intervals: b }) => b > a,
                (Condition::Stuck { .. }, Condition::Stuck { .. }) => hi.for_ms > lo.for_ms,
                _ => true,
            };
            if !escalates {
                bad(format!(
                    "a higher severity must need a worse condition than rule `{}` \
                     (a further threshold, more intervals, or a longer `for`)",
                    lo.name
                ));
            }
        }
        for r in &g.levels[1..] {
            let mut differs = |what: &str, a: String, b: String| {
                if a != b {
                    errors.list.push(RuleError {
                        line: r.line,
                        message: format!(
                            "rule `{}` in group `{}` has {what} `{b}` but rule `{}` has `{a}` \
                             (levels of a group watch the same thing)",
                            r.name, g.name, base.name
                        ),
                    });
                }
            };
            differs("kind", base.kind.to_string(), r.kind.to_string());
            differs("scope", base.scope.as_str().into(), r.scope.as_str().into());
            differs("metric", base.metric.clone(), r.metric.clone());
            differs(
                "condition",
                base.condition.name().into(),
                r.condition.name().into(),
            );
            differs(
                "districts",
                format!("{:?}", base.districts),
                format!("{:?}", r.districts),
            );
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_rule_file_is_refused_before_parsing() {
        let default = include_str!("../../rules/default.toml");
        let mut big = default.to_owned();
        while big.len() <= MAX_RULE_FILE_BYTES {
            big.push_str("# padding\n");
        }
        let e = load(&big).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert!(e.0[0].message.contains("the limit is 262144"), "{e}");
        assert!(load(default).is_ok());
    }

    #[test]
    fn default_rules_load_and_cover_the_documented_alerts() {
        let set = RuleSet::default_rules().unwrap_or_else(|e| panic!("{e}"));
        let aqi = set.group("aqi").expect("aqi group");
        let sev: Vec<_> = aqi.levels.iter().map(|r| r.severity).collect();
        assert_eq!(sev, [Severity::Warning, Severity::Critical]);
        // EPA TAD 2024 Table 2: above 100 is Unhealthy for Sensitive Groups, above 150 Unhealthy.
        assert_eq!(aqi.levels[0].threshold(), 100.0);
        assert_eq!(aqi.levels[1].threshold(), 150.0);
        assert!(aqi.levels.iter().all(|r| r.clear() < r.threshold()));
        assert!(set
            .rules()
            .any(|r| matches!(r.condition, Condition::Offline { .. })));
        assert!(set.rules().any(
            |r| matches!(r.condition, Condition::Stuck { .. }) && r.severity == Severity::Info
        ));
        assert!(set
            .rules()
            .any(|r| r.kind == Kind::Traffic && r.metric == "los"));
    }

    #[test]
    fn every_error_is_reported_with_its_line() {
        let text = r#"
[[rule]]
name = "a"
kind = "air"
metric = "aqi"
op = ">"
threshold = 100
clear = 120
severity = "warning"
summary = "x"

[[rule]]
name = "b"
kind = "bus"
metric = "aqii"
op = "=>"
threshold = 1
severity = "loud"
summary = "{nope}"

[[rule]]
name = "c"
kind = "air"
metric = "aqi"
op = ">"
threshold = 1
tresh = 2
severity = "info"
summary = "x"

[[rule]]
name = "a"
kind = "air"
condition = "offline"
intervals = 3
threshold = 4
for = "soon"
severity = "info"
summary = "x"
"#;
        let errs = load(text).unwrap_err().0;
        let has = |line: usize, needle: &str| {
            assert!(
                errs.iter()
                    .any(|e| e.line == line && e.message.contains(needle)),
                "no error on line {line} containing {needle:?} in {errs:#?}"
            )
        };
        has(8, "wrong side");
        has(14, "unknown Kind `bus`");
        has(16, "=>");
        has(18, "unknown Severity `loud`");
        has(19, "unknown placeholder");
        has(27, "unknown field `tresh`");
        has(32, "duplicate rule name `a`");
        has(36, "`threshold` does not apply");
        has(37, "invalid duration `soon`");
        // Kind is unknown, so the metric cannot be checked; everything else is reported.
        assert!(errs.len() >= 9, "{errs:#?}");
        let sorted = errs.windows(2).all(|w| w[0].line <= w[1].line);
        assert!(sorted);
    }

    #[test]
    fn unknown_metric_names_the_known_ones() {
        let text = r#"
[[rule]]
name = "a"
kind = "traffic"
metric = "aqi"
op = ">"
threshold = 1
severity = "info"
summary = "x"
"#;
        let errs = load(text).unwrap_err().0;
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].line, 5);
        assert!(
            errs[0].message.contains("congestion_index"),
            "{:?}",
            errs[0]
        );
    }

    #[test]
    fn syntax_errors_and_unknown_top_level_keys_have_lines() {
        let errs = load("[[rule]]\nname = \"a\nkind = 1\n").unwrap_err().0;
        assert_eq!(errs[0].line, 2, "{errs:?}");
        let errs = load("[settings]\nsilent_after = 0\n[alerts]\nx = 1\n")
            .unwrap_err()
            .0;
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!((errs[0].line, errs[1].line), (2, 3));
    }

    #[test]
    fn groups_must_escalate_coherently() {
        let text = r#"
[[rule]]
name = "hi"
group = "g"
kind = "air"
metric = "aqi"
op = ">"
threshold = 150
severity = "warning"
summary = "x"

[[rule]]
name = "lo"
group = "g"
kind = "air"
metric = "aqi_pm25"
op = ">"
threshold = 100
severity = "critical"
summary = "x"
"#;
        let errs = load(text).unwrap_err().0;
        assert!(
            errs.iter()
                .any(|e| e.line == 12 && e.message.contains("worse condition")),
            "{errs:#?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.line == 12 && e.message.contains("metric `aqi_pm25`")),
            "{errs:#?}"
        );
    }

    #[test]
    fn defaults_fill_in_scope_clear_and_group() {
        let text = r#"
[settings]
silent_after = 3

[[rule]]
name = "slow"
kind = "traffic"
metric = "speed_kmh"
op = "<"
threshold = 20
for = "5m"
severity = "info"
summary = "{subject} slow"

[[rule]]
name = "off"
kind = "air"
condition = "offline"
intervals = 4
severity = "warning"
summary = "{subject} offline"
"#;
        let set = load(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(set.silent_after, 3);
        let slow = &set.group("slow").unwrap().levels[0];
        assert_eq!(slow.scope, Scope::District);
        assert_eq!(slow.clear(), 20.0);
        assert_eq!(slow.for_ms, 300_000);
        let off = &set.group("off").unwrap().levels[0];
        assert_eq!(off.scope, Scope::Sensor);
        assert_eq!(off.metric, OFFLINE_METRIC);
        assert_eq!(set.rule_count(), 2);
    }
}
