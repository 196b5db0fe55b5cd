//! The rule file as written: the top level, the fields every rule takes, and the condition, a
//! tagged enum of per-variant structs.
//!
//! The tag is the `condition` field (`threshold` when absent) and it is dispatched here rather
//! than by `#[serde(tag = "condition")]`: serde buffers an internally tagged enum's fields
//! through its private `Content` type, which loses the TOML spans every error needs for its
//! line (toml-rs/toml#535), and it cannot default a missing tag. So a rule's table is split by
//! key: the common fields go to [`RawRule`], the rest to the struct of the rule's condition,
//! each deserialised by serde with `deny_unknown_fields` and `Spanned` fields. Keys that belong
//! to another condition or to none are reported here, each with its line, and the rest of the
//! rule is still checked.

use super::offline::RawOffline;
use super::stuck::RawStuck;
use super::threshold::RawThreshold;
use super::{Errors, DEFAULT_SILENT_AFTER};
use serde::Deserialize;
use toml::de::{DeTable, DeValue, ValueDeserializer};
use toml::Spanned;

/// The `[settings]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSettings {
    silent_after: Option<Spanned<u32>>,
}

/// The fields of a `[[rule]]` that do not depend on its condition.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub name: Spanned<String>,
    pub group: Option<Spanned<String>>,
    pub description: Option<String>,
    pub kind: Spanned<String>,
    pub scope: Option<Spanned<String>>,
    pub districts: Option<Spanned<Vec<String>>>,
    /// Offline rules do not take it (checked in `offline.rs`); threshold and stuck rules do.
    #[serde(rename = "for")]
    pub for_: Option<Spanned<String>>,
    pub hold_down: Option<Spanned<String>>,
    pub severity: Spanned<String>,
    pub summary: Spanned<String>,
    pub resolved_summary: Option<Spanned<String>>,
}

/// The keys of [`RawRule`], plus the tag.
const COMMON_FIELDS: &[&str] = &[
    "name",
    "group",
    "description",
    "kind",
    "condition",
    "scope",
    "districts",
    "for",
    "hold_down",
    "severity",
    "summary",
    "resolved_summary",
];

/// The `condition` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ConditionName {
    Threshold,
    Offline,
    Stuck,
}

impl RawCondition {
    /// The variant's tag.
    pub fn name(&self) -> ConditionName {
        match self {
            Self::Threshold(_) => ConditionName::Threshold,
            Self::Offline(_) => ConditionName::Offline,
            Self::Stuck(_) => ConditionName::Stuck,
        }
    }
}

impl ConditionName {
    const ALL: [ConditionName; 3] = [Self::Threshold, Self::Offline, Self::Stuck];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Threshold => "threshold",
            Self::Offline => "offline",
            Self::Stuck => "stuck",
        }
    }

    /// The keys this condition takes besides [`COMMON_FIELDS`].
    fn fields(self) -> &'static [&'static str] {
        match self {
            Self::Threshold => RawThreshold::FIELDS,
            Self::Offline => RawOffline::FIELDS,
            Self::Stuck => RawStuck::FIELDS,
        }
    }

    /// "a `threshold` rule", "an `offline` rule".
    fn a_rule(self) -> String {
        let article = if self == Self::Offline { "an" } else { "a" };
        format!("{article} `{}` rule", self.as_str())
    }
}

/// A rule's condition as written: one struct per variant.
#[derive(Debug)]
pub(super) enum RawCondition {
    Threshold(RawThreshold),
    Offline(RawOffline),
    Stuck(RawStuck),
}

/// One `[[rule]]` as written.
#[derive(Debug)]
pub(super) struct RawEntry {
    /// Byte offset of the rule's table.
    pub start: usize,
    pub common: RawRule,
    /// `None` when the condition or its fields did not deserialise (already reported).
    pub condition: Option<RawCondition>,
    /// Problems of this rule were already reported (a bad condition, keys it does not take).
    pub reported: bool,
}

/// The `[[rule]]` entries and `silent_after` of a parsed file; problems go to `errors`.
pub(super) fn document(doc: &DeTable<'_>, errors: &mut Errors<'_>) -> (Vec<RawEntry>, u32) {
    let mut rules = Vec::new();
    let mut silent_after = DEFAULT_SILENT_AFTER;
    for (key, value) in doc.iter() {
        match key.get_ref().as_ref() {
            "rule" => match value.get_ref() {
                DeValue::Array(items) => {
                    rules.extend(items.iter().filter_map(|item| entry(item, errors)));
                }
                _ => errors.at(
                    value.span().start,
                    "`rule` must be an array of tables, written [[rule]]",
                ),
            },
            "settings" => {
                if let Some(n) = settings(value, errors) {
                    silent_after = n;
                }
            }
            other => errors.at(
                key.span().start,
                format!("unknown top-level key `{other}` (expected `rule` or `settings`)"),
            ),
        }
    }
    (rules, silent_after)
}

fn settings(value: &Spanned<DeValue<'_>>, errors: &mut Errors<'_>) -> Option<u32> {
    match RawSettings::deserialize(ValueDeserializer::from(value.clone())) {
        Ok(s) => {
            let n = s.silent_after?;
            if *n.get_ref() == 0 {
                errors.at(n.span().start, "`silent_after` must be at least 1");
            }
            Some(*n.get_ref())
        }
        Err(e) => {
            errors.toml(&e);
            None
        }
    }
}

/// Splits one `[[rule]]` table into its common fields and its condition and deserialises both,
/// reporting every problem. `None` when the common fields did not deserialise.
fn entry(item: &Spanned<DeValue<'_>>, errors: &mut Errors<'_>) -> Option<RawEntry> {
    let start = item.span().start;
    let before = errors.list.len();
    let Some(table) = item.get_ref().as_table() else {
        errors.at(start, "each `rule` must be a table, written [[rule]]");
        return None;
    };
    let (common, own) = split(table);
    let condition = tag(table, errors).and_then(|name| condition(name, own, item, errors));
    let common = RawRule::deserialize(ValueDeserializer::from(Spanned::new(
        item.span(),
        DeValue::Table(common),
    )))
    .map_err(|e| errors.toml(&e))
    .ok()?;
    Some(RawEntry {
        start,
        common,
        condition,
        reported: errors.list.len() > before,
    })
}

/// The rule's keys in [`COMMON_FIELDS`] (except the tag), and all others.
fn split<'i>(table: &DeTable<'i>) -> (DeTable<'i>, DeTable<'i>) {
    let (mut common, mut own) = (DeTable::new(), DeTable::new());
    for (key, value) in table.iter() {
        match key.get_ref().as_ref() {
            "condition" => {}
            k if COMMON_FIELDS.contains(&k) => {
                common.insert(key.clone(), value.clone());
            }
            _ => {
                own.insert(key.clone(), value.clone());
            }
        }
    }
    (common, own)
}

/// The rule's `condition` (`threshold` when absent); `None` after reporting a bad one.
fn tag(table: &DeTable<'_>, errors: &mut Errors<'_>) -> Option<ConditionName> {
    let Some(value) = table.get("condition") else {
        return Some(ConditionName::Threshold);
    };
    let text = Spanned::<String>::deserialize(ValueDeserializer::from(value.clone()))
        .map_err(|e| errors.toml(&e))
        .ok()?;
    let name = ConditionName::ALL
        .into_iter()
        .find(|c| c.as_str() == text.get_ref());
    if name.is_none() {
        errors.at(
            text.span().start,
            format!(
                "unknown condition `{}` (expected `threshold`, `offline` or `stuck`)",
                text.get_ref()
            ),
        );
    }
    name
}

/// Reports the keys `name` does not take, then deserialises its struct from the rest.
fn condition(
    name: ConditionName,
    mut own: DeTable<'_>,
    item: &Spanned<DeValue<'_>>,
    errors: &mut Errors<'_>,
) -> Option<RawCondition> {
    let foreign: Vec<_> = own
        .iter()
        .map(|(k, _)| k.clone())
        .filter(|k| !name.fields().contains(&k.get_ref().as_ref()))
        .collect();
    for key in &foreign {
        errors.at(key.span().start, not_taken(name, key.get_ref()));
        own.remove(key.get_ref().as_ref());
    }
    let de = || ValueDeserializer::from(Spanned::new(item.span(), DeValue::Table(own)));
    let raw = match name {
        ConditionName::Threshold => RawThreshold::deserialize(de()).map(RawCondition::Threshold),
        ConditionName::Offline => RawOffline::deserialize(de()).map(RawCondition::Offline),
        ConditionName::Stuck => RawStuck::deserialize(de()).map(RawCondition::Stuck),
    };
    raw.map_err(|e| errors.toml(&e)).ok()
}

/// The common keys a rule with condition `name` takes: all but `for` for offline rules.
fn common_fields(name: ConditionName) -> Vec<&'static str> {
    let takes = |f: &&str| *f != "for" || name != ConditionName::Offline;
    COMMON_FIELDS.iter().copied().filter(takes).collect()
}

/// Why `key` is not accepted in a rule with condition `name`.
fn not_taken(name: ConditionName, key: &str) -> String {
    let quoted = |fields: &[&str]| {
        fields
            .iter()
            .map(|f| format!("`{f}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let elsewhere: Vec<&str> = ConditionName::ALL
        .into_iter()
        .filter(|c| c.fields().contains(&key))
        .map(ConditionName::as_str)
        .collect();
    if elsewhere.is_empty() {
        format!(
            "unknown field `{key}` in {}, expected one of {}, {}",
            name.a_rule(),
            quoted(&common_fields(name)),
            quoted(name.fields())
        )
    } else {
        format!(
            "`{key}` does not apply to {} (it is a field of `{}` rules; {}'s own fields: {})",
            name.a_rule(),
            elsewhere.join("` and `"),
            name.a_rule(),
            quoted(name.fields())
        )
    }
}
