//! `condition = "stuck"`: the metric stayed within `tolerance` of one value for `for`
//! (a common field, required here).

use super::validate::{metric, Checked, Ctx};
use super::{Condition, Errors};
use serde::Deserialize;
use toml::Spanned;

/// The fields of a stuck rule besides the common ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawStuck {
    metric: Option<Spanned<String>>,
    tolerance: Option<Spanned<f64>>,
}

impl RawStuck {
    /// The keys of [`RawStuck`].
    pub const FIELDS: &'static [&'static str] = &["metric", "tolerance"];

    pub fn check(&self, ctx: &Ctx<'_>, errors: &mut Errors<'_>) -> Option<Checked> {
        let metric = metric(errors, ctx, &self.metric);
        // An unparseable `for` was reported with the common fields.
        if ctx.for_.is_none() || ctx.for_ms == Some(0) {
            errors.at(
                ctx.for_
                    .as_ref()
                    .map(|f| f.span().start)
                    .unwrap_or(ctx.name.span().start),
                format!(
                    "stuck rule `{}` needs a positive `for` (how long values stay identical)",
                    ctx.name.get_ref()
                ),
            );
        }
        let tolerance = self.tolerance.as_ref().map(|t| *t.get_ref()).unwrap_or(0.0);
        if !(tolerance >= 0.0 && tolerance.is_finite()) {
            let at = self.tolerance.as_ref().map(|t| t.span().start).unwrap_or(0);
            errors.at(
                at,
                format!("`tolerance` {tolerance} must be a finite number ≥ 0"),
            );
        }
        Some(Checked {
            condition: Condition::Stuck { tolerance },
            metric: metric?,
        })
    }
}
