//! Operator request/reply over NATS: the subjects, the JSON payloads (shared by the service and
//! the CLI), and the pure handler that applies a request to the [`Notifier`].
//!
//! | subject | request | reply |
//! |---|---|---|
//! | `citypulse.alerts.list` | [`ListRequest`] (or empty) | [`ListResponse`] |
//! | `citypulse.alerts.ack` | [`AckRequest`] | [`Ack`] |
//! | `citypulse.alerts.silence` | [`SilenceRequest`] | [`Silence`] |
//! | `citypulse.alerts.unsilence` | [`UnsilenceRequest`] | [`Silence`] (the removed one) |
//!
//! A refused request gets `{"error": "..."}`. Payloads tolerate unknown fields.

use crate::engine::{Ack, ControlError, Evaluator, Matcher, Notifier, Silence};
use citypulse_schema::{AlertEvent, Kind, Severity};
use serde::{Deserialize, Serialize};

/// Prefix of the request subjects.
pub const SUBJECT_PREFIX: &str = "citypulse.alerts";
/// Lists active alerts and silences.
pub const SUBJECT_LIST: &str = "citypulse.alerts.list";
/// Acknowledges an alert.
pub const SUBJECT_ACK: &str = "citypulse.alerts.ack";
/// Creates a silence.
pub const SUBJECT_SILENCE: &str = "citypulse.alerts.silence";
/// Removes a silence.
pub const SUBJECT_UNSILENCE: &str = "citypulse.alerts.unsilence";

/// `citypulse.alerts.list`: optional filters (equality; `severity` is a minimum).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ListRequest {
    /// Only alerts at least this severe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Only this district.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    /// Only this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
}

/// One active alert in a [`ListResponse`]: its latest firing event plus what people did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActiveAlert {
    /// The latest firing event (all [`AlertEvent`] fields, flattened).
    #[serde(flatten)]
    pub event: AlertEvent,
    /// Whether subscribers have seen this incident (a firing of it was published).
    pub published: bool,
    /// The silence hiding it now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub silenced_by: Option<String>,
    /// Its acknowledgement, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<Ack>,
}

/// Reply to `citypulse.alerts.list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListResponse {
    /// Active alerts, most severe first, then oldest first.
    pub alerts: Vec<ActiveAlert>,
    /// Active silences.
    pub silences: Vec<Silence>,
}

/// `citypulse.alerts.ack`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AckRequest {
    /// Alert id.
    pub id: String,
    /// Who acknowledges.
    pub by: String,
    /// Why / what is being done.
    #[serde(default)]
    pub comment: String,
}

/// `citypulse.alerts.silence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SilenceRequest {
    /// Which alerts (equality on each given field).
    pub matcher: Matcher,
    /// How long, e.g. "2h".
    pub duration: String,
    /// Who silences.
    pub by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

/// `citypulse.alerts.unsilence`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnsilenceRequest {
    /// Silence id.
    pub id: String,
    /// Who removes it.
    pub by: String,
}

/// A refused request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// Why.
    pub error: String,
}

/// What a request changed, for the shell to persist and record.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Read only.
    None,
    /// An acknowledgement was recorded.
    Acked(Ack),
    /// A silence was created.
    Silenced(Silence),
    /// A silence was removed (by whom).
    Unsilenced(Silence, String),
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Handled {
    /// The operation, a bounded label (`list`, `ack`, `silence`, `unsilence`, `unknown`).
    pub op: &'static str,
    /// JSON reply body.
    pub reply: Vec<u8>,
    /// True when the request was refused.
    pub failed: bool,
    /// The state change to persist.
    pub effect: Effect,
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v)
        .unwrap_or_else(|e| format!("{{\"error\":\"encoding reply: {e}\"}}").into_bytes())
}

fn parse<'a, T: Deserialize<'a> + Default>(body: &'a [u8]) -> Result<T, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| format!("invalid request: {e}"))
}

fn parse_required<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("invalid request: {e}"))
}

/// Applies one request (the subject's last token is the operation) at wall-clock `now_ms`.
pub fn handle(
    op: &str,
    body: &[u8],
    now_ms: u64,
    notifier: &mut Notifier,
    evaluator: &Evaluator,
) -> Handled {
    let (op, result): (&'static str, Result<(Vec<u8>, Effect), String>) = match op {
        "list" => (
            "list",
            parse::<ListRequest>(body)
                .map(|req| (json(&list(&req, now_ms, notifier, evaluator)), Effect::None)),
        ),
        "ack" => (
            "ack",
            parse_required::<AckRequest>(body).and_then(|req| {
                notifier
                    .ack(
                        evaluator.incident(&req.id),
                        &req.id,
                        &req.by,
                        &req.comment,
                        now_ms,
                    )
                    .map(|a| (json(&a), Effect::Acked(a)))
                    .map_err(|e: ControlError| e.to_string())
            }),
        ),
        "silence" => (
            "silence",
            parse_required::<SilenceRequest>(body).and_then(|req| {
                let d = citypulse_runtime::duration::parse(&req.duration)
                    .map_err(|_| ControlError::Duration(req.duration.clone()).to_string())?;
                let ms = citypulse_runtime::duration::millis(d);
                notifier
                    .silence(req.matcher, ms, &req.by, &req.comment, now_ms)
                    .map(|s| (json(&s), Effect::Silenced(s)))
                    .map_err(|e| e.to_string())
            }),
        ),
        "unsilence" => (
            "unsilence",
            parse_required::<UnsilenceRequest>(body).and_then(|req| {
                if req.by.trim().is_empty() {
                    return Err(ControlError::Missing("by").to_string());
                }
                notifier
                    .unsilence(&req.id)
                    .map(|s| (json(&s), Effect::Unsilenced(s, req.by)))
                    .map_err(|e| e.to_string())
            }),
        ),
        other => (
            "unknown",
            Err(format!(
                "unknown operation `{other}` (expected list, ack, silence or unsilence)"
            )),
        ),
    };
    match result {
        Ok((reply, effect)) => Handled {
            op,
            reply,
            failed: false,
            effect,
        },
        Err(error) => Handled {
            op,
            reply: json(&ErrorReply { error }),
            failed: true,
            effect: Effect::None,
        },
    }
}

/// The active alerts matching `req`, most severe first, then oldest first.
pub fn list(
    req: &ListRequest,
    now_ms: u64,
    notifier: &Notifier,
    evaluator: &Evaluator,
) -> ListResponse {
    let mut alerts: Vec<ActiveAlert> = evaluator
        .active()
        .filter(|e| req.severity.is_none_or(|s| e.severity >= s))
        .filter(|e| req.district.as_ref().is_none_or(|d| *d == e.district))
        .filter(|e| req.kind.is_none_or(|k| k == e.kind))
        .map(|e| ActiveAlert {
            event: e.clone(),
            published: notifier.is_published(&e.id),
            silenced_by: notifier.silenced_by(e, now_ms).map(|s| s.id.clone()),
            ack: notifier.ack_of(&e.id).cloned(),
        })
        .collect();
    alerts.sort_by(|a, b| {
        b.event
            .severity
            .cmp(&a.event.severity)
            .then(a.event.started_at.cmp(&b.event.started_at))
            .then(a.event.id.cmp(&b.event.id))
    });
    ListResponse {
        alerts,
        silences: notifier.silences(now_ms).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::RuleSet;
    use std::sync::Arc;

    #[test]
    fn refused_requests_say_why_in_json() {
        let mut n = Notifier::new();
        let ev = Evaluator::new(Arc::new(RuleSet::empty()));
        let h = handle("ack", br#"{"id":"x","by":"ana"}"#, 1, &mut n, &ev);
        assert!(h.failed);
        let e: ErrorReply = serde_json::from_slice(&h.reply).unwrap();
        assert_eq!(e.error, "no active alert with id `x`");
        let h = handle(
            "silence",
            br#"{"matcher":{"district":"d1"},"duration":"soon","by":"a"}"#,
            1,
            &mut n,
            &ev,
        );
        assert!(h.failed && String::from_utf8_lossy(&h.reply).contains("invalid silence duration"));
        let h = handle("nope", b"", 1, &mut n, &ev);
        assert_eq!((h.op, h.failed), ("unknown", true));
        let h = handle("ack", b"{", 1, &mut n, &ev);
        assert!(String::from_utf8_lossy(&h.reply).contains("invalid request"));
    }

    #[test]
    fn silence_then_unsilence_round_trip() {
        let mut n = Notifier::new();
        let ev = Evaluator::new(Arc::new(RuleSet::empty()));
        let h = handle(
            "silence",
            br#"{"matcher":{"district":"d1","kind":"air"},"duration":"2h","by":"ana","comment":"works"}"#,
            1_000,
            &mut n,
            &ev,
        );
        assert!(!h.failed, "{}", String::from_utf8_lossy(&h.reply));
        let s: Silence = serde_json::from_slice(&h.reply).unwrap();
        assert_eq!((s.starts_at, s.ends_at), (1_000, 1_000 + 7_200_000));
        assert_eq!(h.effect, Effect::Silenced(s.clone()));
        let l: ListResponse =
            serde_json::from_slice(&handle("list", b"", 2_000, &mut n, &ev).reply).unwrap();
        assert_eq!(l.silences, vec![s.clone()]);
        let h = handle(
            "unsilence",
            format!(r#"{{"id":"{}","by":"bo"}}"#, s.id).as_bytes(),
            3_000,
            &mut n,
            &ev,
        );
        assert_eq!(h.effect, Effect::Unsilenced(s, "bo".into()));
        let l: ListResponse =
            serde_json::from_slice(&handle("list", b"{}", 4_000, &mut n, &ev).reply).unwrap();
        assert!(l.silences.is_empty());
    }
}
