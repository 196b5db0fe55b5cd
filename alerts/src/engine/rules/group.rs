//! Rules sharing a `group` become the levels of one [`Group`]; each group must be one coherent
//! alert whose levels escalate.

use super::{Condition, Errors, Group, Rule, RuleError};

/// Groups rules (in file order of each group's first rule) and checks each group.
pub(super) fn groups(rules: Vec<Rule>, errors: &mut Errors<'_>) -> Vec<Group> {
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
        for pair in g.levels.windows(2) {
            escalation(&g.name, &pair[0], &pair[1], errors);
        }
        for r in &g.levels[1..] {
            same_subject(&g.name, g.base(), r, errors);
        }
    }
    groups
}

/// `hi`, the next level after `lo`, needs its own severity and a worse condition.
fn escalation(group: &str, lo: &Rule, hi: &Rule, errors: &mut Errors<'_>) {
    let mut bad = |message: String| {
        errors.list.push(RuleError {
            line: hi.line,
            message: format!("rule `{}` in group `{group}`: {message}", hi.name),
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

/// Every level of a group watches what its base watches.
fn same_subject(group: &str, base: &Rule, r: &Rule, errors: &mut Errors<'_>) {
    let mut differs = |what: &str, a: String, b: String| {
        if a != b {
            errors.list.push(RuleError {
                line: r.line,
                message: format!(
                    "rule `{}` in group `{group}` has {what} `{b}` but rule `{}` has `{a}` \
                     (levels of a group watch the same thing)",
                    r.name, base.name
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
