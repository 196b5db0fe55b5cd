//! `condition = "threshold"` (the default): `metric op threshold` held for `for` (optional,
//! a common field), with an optional `clear` for hysteresis.

use super::validate::{metric, Checked, Ctx};
use super::{Condition, Errors, Op};
use serde::Deserialize;
use toml::Spanned;

/// The fields of a threshold rule besides the common ones.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawThreshold {
    metric: Option<Spanned<String>>,
    op: Option<Spanned<String>>,
    threshold: Option<Spanned<f64>>,
    clear: Option<Spanned<f64>>,
}

impl RawThreshold {
    /// The keys of [`RawThreshold`].
    pub const FIELDS: &'static [&'static str] = &["metric", "op", "threshold", "clear"];

    pub fn check(&self, ctx: &Ctx<'_>, errors: &mut Errors<'_>) -> Option<Checked> {
        let metric = metric(errors, ctx, &self.metric);
        let op = self.op(ctx, errors);
        let threshold = self.threshold.as_ref().map(|t| *t.get_ref());
        if threshold.is_none() {
            errors.at(
                ctx.name.span().start,
                format!("rule `{}` needs a `threshold`", ctx.name.get_ref()),
            );
        }
        finite(errors, &self.threshold, "threshold");
        finite(errors, &self.clear, "clear");
        let (op, threshold) = (op?, threshold?);
        let clear = self.clear(op, threshold, errors);
        Some(Checked {
            condition: Condition::Threshold {
                op,
                threshold,
                clear,
            },
            metric: metric?,
        })
    }

    fn op(&self, ctx: &Ctx<'_>, errors: &mut Errors<'_>) -> Option<Op> {
        let Some(o) = &self.op else {
            errors.at(
                ctx.name.span().start,
                format!("rule `{}` needs an `op` (>, >=, <, <=)", ctx.name.get_ref()),
            );
            return None;
        };
        let op = [Op::Gt, Op::Ge, Op::Lt, Op::Le]
            .into_iter()
            .find(|op| op.as_str() == o.get_ref());
        if op.is_none() {
            errors.at(
                o.span().start,
                format!("unknown op `{}` (expected >, >=, < or <=)", o.get_ref()),
            );
        }
        op
    }

    /// `clear` (default: the threshold), which must not be past the threshold.
    fn clear(&self, op: Op, threshold: f64, errors: &mut Errors<'_>) -> f64 {
        let Some(c) = &self.clear else {
            return threshold;
        };
        let clear = *c.get_ref();
        let wrong_side = if op.upward() {
            clear > threshold
        } else {
            clear < threshold
        };
        if wrong_side {
            errors.at(
                c.span().start,
                format!(
                    "`clear` {clear} is on the wrong side of `threshold` {threshold} for `{}`: \
                     it must be {} the threshold (hysteresis)",
                    op.as_str(),
                    if op.upward() {
                        "at or below"
                    } else {
                        "at or above"
                    }
                ),
            );
        }
        clear
    }
}

fn finite(errors: &mut Errors<'_>, value: &Option<Spanned<f64>>, field: &str) {
    if let Some(v) = value {
        if !v.get_ref().is_finite() {
            errors.at(v.span().start, format!("`{field}` must be a finite number"));
        }
    }
}
