//! Alert rules: the TOML file format, its loader and the typed, validated rules.
//!
//! The loader takes text and reports **every** error at once, each with its line: TOML syntax
//! errors, unknown keys (raw types use `deny_unknown_fields`), wrong types, unknown kinds,
//! severities, operators and metric names (checked against
//! [`citypulse_schema::metric_names`]), unparseable durations and templates, fields that do not
//! apply to a rule's condition, and inconsistent groups. The format is documented in
//! `alerts/README.md`; [`DEFAULT_RULES`] is the rule set that ships with the service.
//!
//! The loader in steps: `raw` splits each `[[rule]]` into the fields every rule takes and its
//! condition, a tagged enum of per-condition structs (`condition` is the tag); `validate` checks
//! the common fields and dispatches to the condition's own checks (`threshold`, `offline`,
//! `stuck`); `group` assembles and checks the groups.

use super::template::Template;
use citypulse_schema::{Kind, Severity};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use toml::de::DeTable;

mod group;
mod offline;
mod raw;
mod stuck;
mod threshold;
mod validate;

/// The default rule set, `alerts/rules/default.toml`, embedded in the binary.
pub const DEFAULT_RULES: &str = include_str!("../../../rules/default.toml");

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
    let (raw_rules, silent_after) = raw::document(doc.get_ref(), &mut errors);
    let mut rules = Vec::new();
    let mut names = BTreeMap::new();
    for raw in raw_rules {
        let name = raw.common.name.get_ref().clone();
        let line = errors.line_of(raw.start);
        if let Some(first) = names.insert(name.clone(), line) {
            errors.at(
                raw.common.name.span().start,
                format!("duplicate rule name `{name}` (first defined on line {first})"),
            );
        }
        if let Some(rule) = validate::rule(raw, line, &mut errors) {
            rules.push(rule);
        }
    }
    let groups = group::groups(rules, &mut errors);
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

#[cfg(test)]
mod tests;
