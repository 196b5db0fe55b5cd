//! Summary templates: `"AQI {value} ({category}) in {district}"`.
//!
//! A template is parsed once, when the rule file loads, so an unknown placeholder is a load error
//! with its line, never a surprise at 3 a.m. `{{` and `}}` write literal braces.

use citypulse_schema::{AqiCategory, EaqiBand, Los};
use std::fmt::Write as _;

/// Placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &[
    "rule",
    "group",
    "severity",
    "kind",
    "district",
    "sensor",
    "subject",
    "metric",
    "value",
    "threshold",
    "clear",
    "for",
    "category",
];

/// Why a template does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{name}` with a name not in [`PLACEHOLDERS`].
    #[error("unknown placeholder `{{{0}}}` (known: {known})", known = PLACEHOLDERS.join(", "))]
    UnknownPlaceholder(String),
    /// A `{` without its `}` (or a lone `}`).
    #[error("unbalanced brace in `{0}` (write `{{{{` or `}}}}` for a literal brace)")]
    Unbalanced(String),
}

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Field(&'static str),
}

/// A parsed summary template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// The values a template is rendered with.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Rule name.
    pub rule: &'a str,
    /// Group name.
    pub group: &'a str,
    /// Severity token.
    pub severity: &'a str,
    /// Kind token.
    pub kind: &'a str,
    /// District token.
    pub district: &'a str,
    /// Sensor id, when the alert is about one sensor.
    pub sensor: Option<&'a str>,
    /// Metric name.
    pub metric: &'a str,
    /// The metric's value.
    pub value: f64,
    /// The firing threshold.
    pub threshold: f64,
    /// The clear threshold.
    pub clear: f64,
    /// The rule's `for`, human-readable ("15m").
    pub for_: &'a str,
}

impl Template {
    /// Parses `text`.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(TemplateError::Unbalanced(text.to_owned())),
                        }
                    }
                    let field = PLACEHOLDERS
                        .iter()
                        .find(|p| **p == name.trim())
                        .ok_or(TemplateError::UnknownPlaceholder(name))?;
                    if !lit.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Field(field));
                }
                '}' => return Err(TemplateError::Unbalanced(text.to_owned())),
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        Ok(Template { pieces })
    }

    /// Renders the template.
    pub fn render(&self, cx: &Context<'_>) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field(f) => {
                    let _ = match *f {
                        "rule" => write!(out, "{}", cx.rule),
                        "group" => write!(out, "{}", cx.group),
                        "severity" => write!(out, "{}", cx.severity),
                        "kind" => write!(out, "{}", cx.kind),
                        "district" => write!(out, "{}", cx.district),
                        "sensor" => write!(out, "{}", cx.sensor.unwrap_or("")),
                        "subject" => match cx.sensor {
                            Some(s) => write!(out, "{}/{s}", cx.district),
                            None => write!(out, "{}", cx.district),
                        },
                        "metric" => write!(out, "{}", cx.metric),
                        "value" => write!(out, "{}", format_number(cx.value)),
                        "threshold" => write!(out, "{}", format_number(cx.threshold)),
                        "clear" => write!(out, "{}", format_number(cx.clear)),
                        "for" => write!(out, "{}", cx.for_),
                        "category" => write!(out, "{}", category(cx.metric, cx.value)),
                        _ => Ok(()),
                    };
                }
            }
        }
        out
    }
}

/// A number for people: integers without decimals, others with at most two.
pub fn format_number(v: f64) -> String {
    if !v.is_finite() {
        return "n/a".to_owned();
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The words for a value of a categorical metric: the US AQI category of an AQI (sub-)index
/// (EPA TAD 2024, Table 2), the EEA band of `eaqi`, the HCM level of service of `los`; empty for
/// other metrics.
pub fn category(metric: &str, v: f64) -> String {
    if !v.is_finite() || v < 0.0 {
        return String::new();
    }
    if metric == "aqi" || metric.starts_with("aqi_") {
        // AQI values are integers on the wire; clamp before the cast.
        let aqi = v.round().min(f64::from(u16::MAX)) as u16;
        return AqiCategory::of(aqi).as_str().replace('_', " ");
    }
    let ordinal = v.round() as usize;
    match metric {
        "eaqi" => EaqiBand::ALL
            .get(ordinal.wrapping_sub(1))
            .map(|b| b.as_str().replace('_', " "))
            .unwrap_or_default(),
        "los" => Los::ALL
            .get(ordinal.wrapping_sub(1))
            .map(|l| format!("LOS {l}"))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx(metric: &str, value: f64) -> Context<'_> {
        Context {
            rule: "aqi-usg",
            group: "aqi",
            severity: "warning",
            kind: "air",
            district: "d04",
            sensor: None,
            metric,
            value,
            threshold: 100.0,
            clear: 90.0,
            for_: "15m",
        }
    }

    #[test]
    fn renders_placeholders_and_categories() {
        let t = Template::parse("AQI {value} ({category}) in {subject} > {threshold} for {for}")
            .unwrap();
        assert_eq!(
            t.render(&cx("aqi", 123.0)),
            "AQI 123 (unhealthy for sensitive groups) in d04 > 100 for 15m"
        );
        let t = Template::parse("{category} at {value}").unwrap();
        assert_eq!(t.render(&cx("los", 5.0)), "LOS E at 5");
        assert_eq!(t.render(&cx("eaqi", 4.0)), "poor at 4");
        assert_eq!(t.render(&cx("congestion_index", 0.456)), " at 0.46");
    }

    #[test]
    fn escapes_and_errors() {
        assert_eq!(
            Template::parse("{{literal}} {district}")
                .unwrap()
                .render(&cx("aqi", 1.0)),
            "{literal} d04"
        );
        assert_eq!(
            Template::parse("{nope}"),
            Err(TemplateError::UnknownPlaceholder("nope".into()))
        );
        assert!(matches!(
            Template::parse("open {value"),
            Err(TemplateError::Unbalanced(_))
        ));
        assert!(matches!(
            Template::parse("close }"),
            Err(TemplateError::Unbalanced(_))
        ));
    }

    #[test]
    fn numbers_are_short() {
        assert_eq!(format_number(150.0), "150");
        assert_eq!(format_number(0.5), "0.5");
        assert_eq!(format_number(0.123), "0.12");
        assert_eq!(format_number(f64::NAN), "n/a");
    }
}
