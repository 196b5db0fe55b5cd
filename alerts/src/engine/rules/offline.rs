//! `condition = "offline"`: a sensor sent no window result for `intervals` of its intervals.

use super::validate::{Checked, Ctx};
use super::{Condition, Errors, Scope, OFFLINE_METRIC};
use serde::Deserialize;
use toml::Spanned;

/// The fields of an offline rule besides the common ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOffline {
    intervals: Option<Spanned<u32>>,
}

impl RawOffline {
    /// The keys of [`RawOffline`].
    pub const FIELDS: &'static [&'static str] = &["intervals"];

    pub fn check(&self, ctx: &Ctx<'_>, errors: &mut Errors<'_>) -> Option<Checked> {
        if ctx.scope == Some(Scope::District) {
            errors.at(
                ctx.scope_at.unwrap_or(0),
                "an `offline` rule watches sensors: `scope` must be `sensor`",
            );
        }
        if let Some(f) = ctx.for_ {
            errors.at(
                f.span().start,
                "`for` does not apply to an `offline` rule (it fires after `intervals` missed \
                 windows; `for` is a field of `threshold` and `stuck` rules)",
            );
        }
        let intervals = match &self.intervals {
            None => {
                errors.at(
                    ctx.name.span().start,
                    format!(
                        "offline rule `{}` needs `intervals` (missed windows before firing)",
                        ctx.name.get_ref()
                    ),
                );
                return None;
            }
            Some(i) if *i.get_ref() == 0 => {
                errors.at(i.span().start, "`intervals` must be at least 1");
                return None;
            }
            Some(i) => *i.get_ref(),
        };
        Some(Checked {
            condition: Condition::Offline { intervals },
            metric: OFFLINE_METRIC.to_owned(),
        })
    }
}
