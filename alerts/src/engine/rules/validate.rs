//! Turns a [`RawEntry`] into a [`Rule`]: the checks every rule gets, then a dispatch to its
//! condition's own checks (`threshold.rs`, `offline.rs`, `stuck.rs`).

use super::raw::{ConditionName, RawCondition, RawEntry, RawRule};
use super::{Condition, Errors, Rule, Scope};
use crate::engine::template::{Template, TemplateError};
use citypulse_schema::subject::is_token;
use citypulse_schema::{metric_names, Kind, Severity};
use std::collections::BTreeSet;
use toml::Spanned;

/// What a rule's condition contributes to the [`Rule`].
pub(super) struct Checked {
    pub condition: Condition,
    pub metric: String,
}

/// What the per-condition checks know about the rule.
pub(super) struct Ctx<'r> {
    /// The rule's name, for messages and as the line of missing fields.
    pub name: &'r Spanned<String>,
    /// Its kind, when valid: metrics are checked against it.
    pub kind: Option<Kind>,
    /// Its scope, when valid.
    pub scope: Option<Scope>,
    /// Where `scope` is written, when it is.
    pub scope_at: Option<usize>,
    /// `for`, when written.
    pub for_: Option<&'r Spanned<String>>,
    /// `for` in milliseconds, when written and valid.
    pub for_ms: Option<u64>,
}

/// The condition's checks: a dispatch on the variant.
fn condition(raw: &RawCondition, ctx: &Ctx<'_>, errors: &mut Errors<'_>) -> Option<Checked> {
    match raw {
        RawCondition::Threshold(t) => t.check(ctx, errors),
        RawCondition::Offline(o) => o.check(ctx, errors),
        RawCondition::Stuck(s) => s.check(ctx, errors),
    }
}

/// Turns one raw rule into a typed one, reporting every problem. `None` when any was found.
pub(super) fn rule(raw: RawEntry, line: usize, errors: &mut Errors<'_>) -> Option<Rule> {
    let before = errors.list.len();
    let c = &raw.common;
    let name = c.name.get_ref().clone();
    token(errors, &c.name, "rule name");
    let group = match &c.group {
        Some(g) => {
            token(errors, g, "group");
            g.get_ref().clone()
        }
        None => name.clone(),
    };
    let kind = parse_kind(errors, &c.kind);
    let severity = parse_severity(errors, &c.severity);
    let tag = raw.condition.as_ref().map(RawCondition::name);
    let scope = scope(errors, c, tag);
    let districts = districts(errors, c);
    let for_ms = duration(errors, &c.for_, "for");
    let ctx = Ctx {
        name: &c.name,
        kind,
        scope,
        scope_at: c.scope.as_ref().map(|s| s.span().start),
        for_: c.for_.as_ref(),
        for_ms,
    };
    let checked = raw
        .condition
        .as_ref()
        .and_then(|r| condition(r, &ctx, errors));
    let hold_down_ms = duration(errors, &c.hold_down, "hold_down").unwrap_or(0);
    let (summary, resolved_summary) = summaries(errors, c, tag);
    if raw.reported || errors.list.len() > before {
        return None;
    }
    let checked = checked?;
    Some(Rule {
        name,
        group,
        kind: kind?,
        scope: scope?,
        districts,
        metric: checked.metric,
        condition: checked.condition,
        for_ms: for_ms.unwrap_or(0),
        for_text: for_text(&c.for_),
        hold_down_ms,
        severity: severity?,
        summary: summary?,
        resolved_summary: resolved_summary?,
        description: raw.common.description,
        line,
    })
}

/// Reports a value that is not a subject token.
fn token(errors: &mut Errors<'_>, field: &Spanned<String>, what: &str) {
    if !is_token(field.get_ref()) {
        errors.at(
            field.span().start,
            format!("{what} `{}` must be 1-64 of [a-z0-9_-]", field.get_ref()),
        );
    }
}

fn parse_kind(errors: &mut Errors<'_>, kind: &Spanned<String>) -> Option<Kind> {
    kind.get_ref()
        .parse::<Kind>()
        .map_err(|e| {
            errors.at(
                kind.span().start,
                format!("{e} (expected `traffic` or `air`)"),
            )
        })
        .ok()
}

fn parse_severity(errors: &mut Errors<'_>, severity: &Spanned<String>) -> Option<Severity> {
    severity
        .get_ref()
        .parse::<Severity>()
        .map_err(|e| {
            errors.at(
                severity.span().start,
                format!("{e} (expected `info`, `warning` or `critical`)"),
            )
        })
        .ok()
}

/// The written scope, or the condition's default: `district` for thresholds, else `sensor`.
fn scope(errors: &mut Errors<'_>, c: &RawRule, tag: Option<ConditionName>) -> Option<Scope> {
    let Some(s) = &c.scope else {
        return Some(match tag {
            Some(ConditionName::Threshold) => Scope::District,
            _ => Scope::Sensor,
        });
    };
    match s.get_ref().as_str() {
        "district" => Some(Scope::District),
        "sensor" => Some(Scope::Sensor),
        other => {
            errors.at(
                s.span().start,
                format!("unknown scope `{other}` (expected `district` or `sensor`)"),
            );
            None
        }
    }
}

fn districts(errors: &mut Errors<'_>, c: &RawRule) -> Option<BTreeSet<String>> {
    let d = c.districts.as_ref()?;
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
    Some(d.get_ref().iter().cloned().collect())
}

/// The watched metric of a threshold or stuck rule: required, and one of its kind's.
pub(super) fn metric(
    errors: &mut Errors<'_>,
    ctx: &Ctx<'_>,
    metric: &Option<Spanned<String>>,
) -> Option<String> {
    let Some(m) = metric else {
        errors.at(
            ctx.name.span().start,
            format!("rule `{}` needs a `metric`", ctx.name.get_ref()),
        );
        return None;
    };
    if let Some(kind) = ctx.kind {
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

/// `for` as written, `0s` when absent.
fn for_text(field: &Option<Spanned<String>>) -> String {
    field
        .as_ref()
        .map(|f| f.get_ref().clone())
        .unwrap_or_else(|| "0s".to_owned())
}

const THRESHOLD_RESOLVED: &str = "{metric} back to {value} on {subject} (clear at {clear})";
const OFFLINE_RESOLVED: &str = "{subject} is reporting again";
const STUCK_RESOLVED: &str = "{metric} on {subject} is changing again ({value})";

/// `summary` and `resolved_summary` (the condition's default when not given).
fn summaries(
    errors: &mut Errors<'_>,
    c: &RawRule,
    tag: Option<ConditionName>,
) -> (Option<Template>, Option<Template>) {
    let summary = template(errors, &c.summary, "summary");
    let resolved = match &c.resolved_summary {
        Some(t) => template(errors, t, "resolved_summary"),
        None => Template::parse(match tag {
            Some(ConditionName::Offline) => OFFLINE_RESOLVED,
            Some(ConditionName::Stuck) => STUCK_RESOLVED,
            _ => THRESHOLD_RESOLVED,
        })
        .ok(),
    };
    (summary, resolved)
}

fn template(errors: &mut Errors<'_>, field: &Spanned<String>, name: &str) -> Option<Template> {
    Template::parse(field.get_ref())
        .map_err(|e: TemplateError| errors.at(field.span().start, format!("`{name}`: {e}")))
        .ok()
}
