//! PURE: contract payloads to JSON, for the page and the terminal.
//!
//! [`cbor_to_json`] turns any CBOR item into JSON generically, so fields this build does not know
//! yet (the contract only gains optional fields) still reach the page. [`Message`] classifies a
//! payload by its subject (`sensors.`/`readings.`, `metrics.`, `alerts.`, `dlq.`) and validates
//! it with the schema crate's decoder; [`Message::line`] is the one-line human form.

use ciborium::Value as Cbor;
use citypulse_schema::{AlertEvent, Reading, WindowResult};
use serde_json::{Map, Number, Value};

/// Nesting accepted in a payload (the contract's messages are flat maps).
const MAX_DEPTH: usize = 16;

/// Why a payload is not CBOR of a shape JSON can hold.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Not CBOR.
    #[error("not CBOR: {0}")]
    Cbor(String),
    /// Nested deeper than the contract ever does.
    #[error("nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Valid CBOR, but not the contract message its subject promises.
    #[error("{what}: {reason}")]
    Contract {
        /// Which message was expected.
        what: &'static str,
        /// The schema crate's reason.
        reason: String,
    },
}

/// Decodes one CBOR item to JSON: maps with text keys become objects (other keys are written as
/// their JSON text), byte strings become hex strings, tags are dropped (their content kept),
/// non-finite floats become null.
pub fn cbor_to_json(bytes: &[u8]) -> Result<Value, DecodeError> {
    let v: Cbor = ciborium::from_reader(bytes).map_err(|e| DecodeError::Cbor(e.to_string()))?;
    convert(&v, 0)
}

fn convert(v: &Cbor, depth: usize) -> Result<Value, DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::TooDeep);
    }
    Ok(match v {
        Cbor::Integer(i) => {
            let i = i128::from(*i);
            match (u64::try_from(i), i64::try_from(i)) {
                (Ok(u), _) => Value::Number(u.into()),
                (_, Ok(s)) => Value::Number(s.into()),
                _ => Value::String(i.to_string()),
            }
        }
        Cbor::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
        Cbor::Bool(b) => Value::Bool(*b),
        Cbor::Null => Value::Null,
        Cbor::Text(s) => Value::String(s.clone()),
        Cbor::Bytes(b) => Value::String(b.iter().map(|x| format!("{x:02x}")).collect()),
        Cbor::Tag(_, inner) => convert(inner, depth + 1)?,
        Cbor::Array(items) => Value::Array(
            items
                .iter()
                .map(|x| convert(x, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Cbor::Map(entries) => {
            let mut m = Map::new();
            for (k, val) in entries {
                let key = match k {
                    Cbor::Text(s) => s.clone(),
                    other => convert(other, depth + 1)?.to_string(),
                };
                m.insert(key, convert(val, depth + 1)?);
            }
            Value::Object(m)
        }
        _ => Value::Null,
    })
}

/// What a subject carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `sensors.…` or `readings.…`: a reading.
    Reading,
    /// `metrics.…`: a window result.
    Window,
    /// `alerts.…`: an alert transition.
    Alert,
    /// `dlq.<reason>`: a dead letter (any bytes).
    DeadLetter,
    /// Anything else.
    Other,
}

impl Family {
    /// The family of `subject`, from its first token.
    pub fn of(subject: &str) -> Family {
        match subject.split('.').next().unwrap_or("") {
            "sensors" | "readings" => Family::Reading,
            "metrics" => Family::Window,
            "alerts" => Family::Alert,
            "dlq" => Family::DeadLetter,
            _ => Family::Other,
        }
    }

    /// Lowercase name, as the `type` of a JSON line.
    pub fn name(self) -> &'static str {
        match self {
            Family::Reading => "reading",
            Family::Window => "window",
            Family::Alert => "alert",
            Family::DeadLetter => "dead_letter",
            Family::Other => "message",
        }
    }
}

/// One message, decoded as far as its subject allows.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The subject it arrived on.
    pub subject: String,
    /// What the subject promises.
    pub family: Family,
    /// The payload as JSON (`None` when it is not CBOR, e.g. a malformed dead letter).
    pub body: Option<Value>,
    /// Why the payload is not the promised message (for dead letters: the reason header).
    pub problem: Option<String>,
    /// Dead-letter headers: reason and detail.
    pub dead_letter: Option<(String, String)>,
}

/// Validates `bytes` as the message `family` promises; `Ok` with nothing for families without
/// a schema.
fn validate(family: Family, bytes: &[u8]) -> Result<(), DecodeError> {
    let contract = |what: &'static str, e: citypulse_schema::DecodeError| DecodeError::Contract {
        what,
        reason: e.to_string(),
    };
    match family {
        Family::Reading => Reading::decode(bytes)
            .map(drop)
            .map_err(|e| contract("reading", e)),
        Family::Window => WindowResult::decode(bytes)
            .map(drop)
            .map_err(|e| contract("window result", e)),
        Family::Alert => AlertEvent::decode(bytes)
            .map(drop)
            .map_err(|e| contract("alert event", e)),
        Family::DeadLetter | Family::Other => Ok(()),
    }
}

impl Message {
    /// Decodes a payload that arrived on `subject`; `dead_letter` are a dead letter's reason and
    /// detail headers.
    pub fn decode(subject: &str, bytes: &[u8], dead_letter: Option<(String, String)>) -> Message {
        let family = Family::of(subject);
        let body = cbor_to_json(bytes);
        let problem = match (&body, validate(family, bytes)) {
            (Err(e), _) => Some(e.to_string()),
            (Ok(_), Err(e)) => Some(e.to_string()),
            (Ok(_), Ok(())) => None,
        };
        Message {
            subject: subject.to_owned(),
            family,
            body: body.ok(),
            problem,
            dead_letter,
        }
    }

    /// One JSON object: `type`, `subject`, the payload as `data`, and `problem` / `reason` /
    /// `detail` when present.
    pub fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), self.family.name().into());
        m.insert("subject".into(), self.subject.clone().into());
        if let Some((reason, detail)) = &self.dead_letter {
            m.insert("reason".into(), reason.clone().into());
            m.insert("detail".into(), detail.clone().into());
        }
        if let Some(p) = &self.problem {
            m.insert("problem".into(), p.clone().into());
        }
        m.insert("data".into(), self.body.clone().unwrap_or(Value::Null));
        Value::Object(m)
    }

    /// One readable line.
    pub fn line(&self) -> String {
        let fields = self.body.as_ref().map(summary).unwrap_or_default();
        let mut line = format!("{:<11} {}", self.family.name(), self.subject);
        if let Some((reason, detail)) = &self.dead_letter {
            line.push_str(&format!("  reason={reason} detail={detail:?}"));
        }
        if !fields.is_empty() {
            line.push_str("  ");
            line.push_str(&fields);
        }
        if let Some(p) = &self.problem {
            if self.family != Family::DeadLetter {
                line.push_str(&format!("  INVALID: {p}"));
            }
        }
        line
    }
}

/// `key=value` pairs of a flat object, in key order; times (`ts`, `window_*`, `at`,
/// `started_at`) as RFC 3339.
fn summary(v: &Value) -> String {
    let Some(m) = v.as_object() else {
        return v.to_string();
    };
    m.iter()
        .map(|(k, v)| {
            let text = match v {
                Value::String(s) if s.contains(' ') => format!("{s:?}"),
                Value::String(s) => s.clone(),
                Value::Number(n) if is_time(k) => n.as_u64().map_or(n.to_string(), rfc3339),
                other => other.to_string(),
            };
            format!("{k}={text}")
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn is_time(key: &str) -> bool {
    matches!(
        key,
        "ts" | "window_start" | "window_end" | "at" | "started_at"
    )
}

fn rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use citypulse_schema::{AirMetrics, AqiCategory, Kind, WindowMetrics};

    fn air_window() -> WindowResult {
        WindowResult {
            window_start: 1_767_225_600_000,
            window_end: 1_767_225_660_000,
            district: "d04".into(),
            sensor: None,
            readings: 3,
            sensors: 2,
            metrics: WindowMetrics::Air(Box::new(AirMetrics {
                aqi: Some(162),
                category: Some(AqiCategory::Unhealthy),
                pm25_nowcast_ugm3: Some(75.3),
                ..AirMetrics::default()
            })),
        }
    }

    #[test]
    fn a_window_result_becomes_its_json_object() {
        let w = air_window();
        let m = Message::decode(&w.subject(), &w.encode(), None);
        assert_eq!(m.family, Family::Window);
        assert_eq!(m.problem, None);
        let body = m.body.clone().unwrap();
        assert_eq!(body["aqi"], 162);
        assert_eq!(body["category"], "unhealthy");
        assert_eq!(body["pm25_nowcast_ugm3"], 75.3);
        assert_eq!(body["kind"], "air");
        assert_eq!(m.json()["type"], "window");
        let line = m.line();
        assert!(
            line.starts_with("window      metrics.air.d04  aqi=162 category=unhealthy "),
            "{line}"
        );
        assert!(
            line.ends_with(" window_start=2026-01-01T00:00:00.000Z"),
            "{line}"
        );
    }

    #[test]
    fn unknown_fields_pass_through() {
        // A newer processors build adds an optional field; this build still shows it.
        let mut v: Cbor = ciborium::from_reader(&air_window().encode()[..]).unwrap();
        if let Cbor::Map(m) = &mut v {
            m.push((Cbor::Text("travel_time_index".into()), Cbor::Float(1.37)));
        }
        let mut bytes = Vec::new();
        ciborium::into_writer(&v, &mut bytes).unwrap();
        let m = Message::decode("metrics.air.d04", &bytes, None);
        assert_eq!(m.problem, None);
        assert_eq!(m.body.unwrap()["travel_time_index"], 1.37);
    }

    #[test]
    fn invalid_payloads_say_why() {
        let m = Message::decode("metrics.air.d04", b"\xa1\x61", None);
        assert!(m.body.is_none());
        assert!(m.problem.unwrap().starts_with("not CBOR"));
        // Valid CBOR that is not a window result.
        let mut bytes = Vec::new();
        ciborium::into_writer(&Cbor::Map(vec![]), &mut bytes).unwrap();
        let m = Message::decode("alerts.warning.air.d04", &bytes, None);
        assert!(m.problem.unwrap().starts_with("alert event:"));
        let dl = Message::decode(
            "dlq.malformed",
            b"garbage",
            Some(("malformed".into(), "not CBOR".into())),
        );
        assert_eq!(dl.family, Family::DeadLetter);
        assert!(dl.line().contains("reason=malformed"), "{}", dl.line());
        assert_eq!(dl.json()["reason"], "malformed");
        assert_eq!(Family::of("sensors.d01.air.x"), Family::Reading);
        assert_eq!(Kind::Air.as_str(), "air");
    }

    #[test]
    fn integers_bytes_and_tags_convert() {
        let v = Cbor::Array(vec![
            Cbor::Integer((-5).into()),
            Cbor::Integer(u64::MAX.into()),
            Cbor::Bytes(vec![0xca, 0xfe]),
            Cbor::Tag(1, Box::new(Cbor::Integer(7.into()))),
            Cbor::Float(f64::NAN),
        ]);
        let mut bytes = Vec::new();
        ciborium::into_writer(&v, &mut bytes).unwrap();
        assert_eq!(
            cbor_to_json(&bytes).unwrap(),
            serde_json::json!([-5, u64::MAX, "cafe", 7, null])
        );
    }
}
