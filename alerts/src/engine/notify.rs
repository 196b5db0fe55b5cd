//! What people see: silences, acknowledgements, and which transitions are published.
//!
//! The evaluator decides the lifecycle; the [`Notifier`] decides, per transition, whether it is
//! published on `alerts.<severity>.<kind>.<district>`. The rules, which keep every subscriber's
//! view balanced (a `firing` is always followed by its `resolved`, and no `resolved` arrives for
//! an incident the subscriber never saw):
//!
//! - a `firing` transition (first firing, escalation, de-escalation) that matches an active
//!   silence is **suppressed**: not published, but recorded (PostgreSQL, with the silence id) and
//!   kept in the lifecycle;
//! - a `resolved` transition is published **iff** a `firing` of that incident was published, even
//!   when a silence matches it now (then with the header `Citypulse-Silenced: true`); the
//!   resolution of an incident that was silenced throughout is recorded, never published;
//! - when a silence expires or is removed, every active incident whose latest firing was
//!   suppressed and that no other silence matches is published then (its latest firing event,
//!   unchanged, so its `Nats-Msg-Id` is the one a live publication would have had).
//!
//! Silences and acks are operator actions: they live in wall-clock time (`now_ms` parameters),
//! unlike the event-time lifecycle.

use citypulse_schema::{AlertEvent, AlertState, Kind, Severity};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Which alerts a silence covers: every given field must equal the alert's (no globs). `rule`
/// matches the rule name or the group name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Matcher {
    /// Rule or group name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// District token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub district: Option<String>,
    /// Kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    /// Severity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<Severity>,
    /// Sensor id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensor: Option<String>,
}

impl Matcher {
    /// True when no field is set (such a matcher would silence everything; refused).
    pub fn is_empty(&self) -> bool {
        self.rule.is_none()
            && self.district.is_none()
            && self.kind.is_none()
            && self.severity.is_none()
            && self.sensor.is_none()
    }

    /// True when every given field equals the event's.
    pub fn matches(&self, e: &AlertEvent) -> bool {
        let group = e.id.split(':').next().unwrap_or_default();
        self.rule
            .as_ref()
            .is_none_or(|r| *r == e.rule || r == group)
            && self.district.as_ref().is_none_or(|d| *d == e.district)
            && self.kind.is_none_or(|k| k == e.kind)
            && self.severity.is_none_or(|s| s == e.severity)
            && self
                .sensor
                .as_ref()
                .is_none_or(|s| e.sensor.as_deref() == Some(s.as_str()))
    }
}

/// An active silence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Silence {
    /// `s<n>`, unique for the life of the KV state.
    pub id: String,
    /// What it silences.
    pub matcher: Matcher,
    /// Wall-clock ms it was created.
    pub starts_at: u64,
    /// Wall-clock ms it expires.
    pub ends_at: u64,
    /// Who created it.
    pub by: String,
    /// Why.
    #[serde(default)]
    pub comment: String,
}

/// An acknowledgement of an active alert.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// Alert id.
    pub id: String,
    /// Who acknowledged.
    pub by: String,
    /// Their comment.
    #[serde(default)]
    pub comment: String,
    /// Wall-clock ms of the acknowledgement.
    pub at: u64,
}

/// What to do with one transition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// Publish it; `silenced` when a silence matches a resolution that is published anyway.
    Publish {
        /// Set the `Citypulse-Silenced: true` header.
        silenced: bool,
    },
    /// Do not publish (record only): the id of the silence responsible, or `None` for the
    /// resolution of an incident whose firing was never published.
    Suppress {
        /// The matching silence.
        silence: Option<String>,
    },
}

/// Why an operator request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// No active alert has this id.
    #[error("no active alert with id `{0}`")]
    UnknownAlert(String),
    /// No active silence has this id.
    #[error("no active silence with id `{0}`")]
    UnknownSilence(String),
    /// A silence without any matcher field.
    #[error("a silence needs at least one of rule, district, kind, severity, sensor")]
    EmptyMatcher,
    /// A required text field is empty.
    #[error("`{0}` must not be empty")]
    Missing(&'static str),
    /// The duration is zero or does not parse.
    #[error("invalid silence duration `{0}`")]
    Duration(String),
}

/// Silences, acks, and what was published: serializable, checkpointed with the evaluator.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Notifier {
    #[serde(default)]
    silences: BTreeMap<String, Silence>,
    #[serde(default)]
    next_silence: u64,
    /// Per incident id, the (severity, at) of its last published firing event.
    #[serde(default)]
    published: BTreeMap<String, (Severity, u64)>,
    #[serde(default)]
    acks: BTreeMap<String, Ack>,
}

impl Notifier {
    /// No silences, nothing published.
    pub fn new() -> Notifier {
        Notifier::default()
    }

    /// The first active silence matching `e` at `now_ms`.
    pub fn silenced_by(&self, e: &AlertEvent, now_ms: u64) -> Option<&Silence> {
        self.silences
            .values()
            .find(|s| s.ends_at > now_ms && s.matcher.matches(e))
    }

    /// Decides whether transition `e` is published, and remembers it.
    pub fn route(&mut self, e: &AlertEvent, now_ms: u64) -> Route {
        let silence = self.silenced_by(e, now_ms).map(|s| s.id.clone());
        match e.state {
            AlertState::Firing => match silence {
                Some(id) => Route::Suppress { silence: Some(id) },
                None => {
                    self.published.insert(e.id.clone(), (e.severity, e.at));
                    Route::Publish { silenced: false }
                }
            },
            AlertState::Resolved => {
                self.acks.remove(&e.id);
                if self.published.remove(&e.id).is_some() {
                    Route::Publish {
                        silenced: silence.is_some(),
                    }
                } else {
                    Route::Suppress { silence }
                }
            }
        }
    }

    /// True when a firing of incident `id` was published.
    pub fn is_published(&self, id: &str) -> bool {
        self.published.contains_key(id)
    }

    /// Drops silences that ended by `now_ms` (returned), then returns the latest firing event of
    /// every active incident that subscribers have not seen in its current form and no silence
    /// covers any more; they are marked published (the caller publishes them).
    pub fn catch_up<'a>(
        &mut self,
        now_ms: u64,
        active: impl Iterator<Item = &'a AlertEvent>,
    ) -> (Vec<Silence>, Vec<AlertEvent>) {
        let expired: Vec<Silence> = {
            let ids: Vec<String> = self
                .silences
                .values()
                .filter(|s| s.ends_at <= now_ms)
                .map(|s| s.id.clone())
                .collect();
            ids.iter()
                .filter_map(|id| self.silences.remove(id))
                .collect()
        };
        let mut due = Vec::new();
        for e in active {
            let seen = self.published.get(&e.id) == Some(&(e.severity, e.at));
            if !seen && self.silenced_by(e, now_ms).is_none() {
                self.published.insert(e.id.clone(), (e.severity, e.at));
                due.push(e.clone());
            }
        }
        (expired, due)
    }

    /// Forgets published marks and acks of incidents that are no longer active (after a
    /// restore under changed rules).
    pub fn retain_active<'a>(&mut self, active: impl Iterator<Item = &'a AlertEvent>) {
        let ids: std::collections::BTreeSet<&str> = active.map(|e| e.id.as_str()).collect();
        self.published.retain(|id, _| ids.contains(id.as_str()));
        self.acks.retain(|id, _| ids.contains(id.as_str()));
    }

    /// Adds a silence for `duration_ms` from `now_ms`.
    pub fn silence(
        &mut self,
        matcher: Matcher,
        duration_ms: u64,
        by: &str,
        comment: &str,
        now_ms: u64,
    ) -> Result<Silence, ControlError> {
        if matcher.is_empty() {
            return Err(ControlError::EmptyMatcher);
        }
        if by.trim().is_empty() {
            return Err(ControlError::Missing("by"));
        }
        if duration_ms == 0 {
            return Err(ControlError::Duration("0s".into()));
        }
        self.next_silence += 1;
        let s = Silence {
            id: format!("s{}", self.next_silence),
            matcher,
            starts_at: now_ms,
            ends_at: now_ms.saturating_add(duration_ms),
            by: by.to_owned(),
            comment: comment.to_owned(),
        };
        self.silences.insert(s.id.clone(), s.clone());
        Ok(s)
    }

    /// Removes a silence; the caller then runs [`Notifier::catch_up`] to publish what it hid.
    pub fn unsilence(&mut self, id: &str) -> Result<Silence, ControlError> {
        self.silences
            .remove(id)
            .ok_or_else(|| ControlError::UnknownSilence(id.to_owned()))
    }

    /// Acknowledges the active incident `id`.
    pub fn ack(
        &mut self,
        active: Option<&AlertEvent>,
        id: &str,
        by: &str,
        comment: &str,
        now_ms: u64,
    ) -> Result<Ack, ControlError> {
        if by.trim().is_empty() {
            return Err(ControlError::Missing("by"));
        }
        if active.is_none_or(|e| e.id != id) {
            return Err(ControlError::UnknownAlert(id.to_owned()));
        }
        let ack = Ack {
            id: id.to_owned(),
            by: by.to_owned(),
            comment: comment.to_owned(),
            at: now_ms,
        };
        self.acks.insert(id.to_owned(), ack.clone());
        Ok(ack)
    }

    /// The ack of incident `id`.
    pub fn ack_of(&self, id: &str) -> Option<&Ack> {
        self.acks.get(id)
    }

    /// Active silences at `now_ms`.
    pub fn silences(&self, now_ms: u64) -> impl Iterator<Item = &Silence> {
        self.silences.values().filter(move |s| s.ends_at > now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(state: AlertState, severity: Severity, at: u64) -> AlertEvent {
        AlertEvent {
            id: "aqi:d04:1000".into(),
            rule: "aqi-usg".into(),
            state,
            severity,
            kind: Kind::Air,
            district: "d04".into(),
            sensor: None,
            metric: "aqi".into(),
            value: 120.0,
            threshold: 100.0,
            started_at: 1000,
            at,
            summary: String::new(),
        }
    }

    fn district_silence(n: &mut Notifier, now: u64, ms: u64) -> Silence {
        let m = Matcher {
            district: Some("d04".into()),
            ..Matcher::default()
        };
        n.silence(m, ms, "ana", "maintenance", now).unwrap()
    }

    #[test]
    fn published_firing_gets_its_resolution_published_even_under_a_silence() {
        let mut n = Notifier::new();
        let f = event(AlertState::Firing, Severity::Warning, 1000);
        assert_eq!(n.route(&f, 0), Route::Publish { silenced: false });
        let s = district_silence(&mut n, 10, 1_000);
        let r = event(AlertState::Resolved, Severity::Warning, 2000);
        assert_eq!(n.route(&r, 20), Route::Publish { silenced: true });
        assert!(!n.is_published(&f.id));
        assert_eq!(s.id, "s1");
    }

    #[test]
    fn silenced_incident_is_never_published_and_its_resolution_neither() {
        let mut n = Notifier::new();
        let s = district_silence(&mut n, 0, 1_000);
        let f = event(AlertState::Firing, Severity::Warning, 1000);
        assert_eq!(
            n.route(&f, 10),
            Route::Suppress {
                silence: Some(s.id.clone())
            }
        );
        let r = event(AlertState::Resolved, Severity::Warning, 2000);
        assert_eq!(
            n.route(&r, 20),
            Route::Suppress {
                silence: Some(s.id)
            }
        );
        // Nothing is left to catch up after the silence ends: the incident is over.
        let (expired, due) = n.catch_up(5_000, std::iter::empty());
        assert_eq!(expired.len(), 1);
        assert!(due.is_empty());
    }

    #[test]
    fn expiry_publishes_the_latest_suppressed_firing_once() {
        let mut n = Notifier::new();
        district_silence(&mut n, 0, 1_000);
        let f = event(AlertState::Firing, Severity::Warning, 1000);
        let esc = event(AlertState::Firing, Severity::Critical, 1500);
        assert!(matches!(n.route(&f, 10), Route::Suppress { .. }));
        assert!(matches!(n.route(&esc, 20), Route::Suppress { .. }));
        let (_, due) = n.catch_up(999, [&esc].into_iter());
        assert!(due.is_empty(), "still silenced");
        let (expired, due) = n.catch_up(1_000, [&esc].into_iter());
        assert_eq!(expired.len(), 1);
        assert_eq!(due, vec![esc.clone()]);
        let (_, again) = n.catch_up(1_001, [&esc].into_iter());
        assert!(again.is_empty());
        let r = event(AlertState::Resolved, Severity::Critical, 3000);
        assert_eq!(n.route(&r, 2_000), Route::Publish { silenced: false });
    }

    #[test]
    fn matcher_fields_all_must_match_and_rule_matches_group() {
        let e = event(AlertState::Firing, Severity::Warning, 1);
        let m = |f: fn(&mut Matcher)| {
            let mut m = Matcher::default();
            f(&mut m);
            m.matches(&e)
        };
        assert!(m(|m| m.rule = Some("aqi".into())));
        assert!(m(|m| m.rule = Some("aqi-usg".into())));
        assert!(!m(|m| m.rule = Some("aqi-unhealthy".into())));
        assert!(!m(|m| {
            m.district = Some("d04".into());
            m.severity = Some(Severity::Critical);
        }));
        assert!(!m(|m| m.sensor = Some("aq-1".into())));
        assert!(m(|m| m.kind = Some(Kind::Air)));
    }

    #[test]
    fn acks_need_an_active_alert_and_a_name() {
        let mut n = Notifier::new();
        let f = event(AlertState::Firing, Severity::Warning, 1000);
        assert_eq!(
            n.ack(None, &f.id, "ana", "", 5),
            Err(ControlError::UnknownAlert(f.id.clone()))
        );
        assert_eq!(
            n.ack(Some(&f), &f.id, " ", "", 5),
            Err(ControlError::Missing("by"))
        );
        let a = n.ack(Some(&f), &f.id, "ana", "on it", 5).unwrap();
        assert_eq!(n.ack_of(&f.id), Some(&a));
        n.route(&event(AlertState::Resolved, Severity::Warning, 2000), 6);
        assert_eq!(n.ack_of(&f.id), None);
        assert_eq!(
            n.silence(Matcher::default(), 1, "ana", "", 0),
            Err(ControlError::EmptyMatcher)
        );
    }
}
