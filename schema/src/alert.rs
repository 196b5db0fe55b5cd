//! [`AlertEvent`]: one alert transition, published on `alerts.<severity>.<kind>.<district>`.

use crate::codec::{self, DecodeError};
use crate::vocab::{AlertState, Kind, Severity};
use serde::{Deserialize, Serialize};

/// Largest alert event accepted by readers.
pub const MAX_ALERT_BYTES: usize = 16 * 1024;

/// One transition of an alert. A firing event and its resolved event share `id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertEvent {
    /// Stable id of one incident (rule, subject, start).
    pub id: String,
    /// The rule's name.
    pub rule: String,
    /// `firing` or `resolved`.
    pub state: AlertState,
    /// Severity of this transition (an escalation fires again, same id, higher severity).
    pub severity: Severity,
    /// Kind of the watched window results.
    pub kind: Kind,
    /// District token.
    pub district: String,
    /// The sensor, when the alert is about one sensor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sensor: Option<String>,
    /// The metric the rule watches (a window-result field name).
    pub metric: String,
    /// The metric's value at this transition.
    pub value: f64,
    /// The threshold that was crossed (the clear threshold, for a resolution).
    pub threshold: f64,
    /// Event time the incident started firing, ms since the Unix epoch.
    pub started_at: u64,
    /// Event time of this transition, ms since the Unix epoch.
    pub at: u64,
    /// A sentence for people.
    pub summary: String,
}

impl AlertEvent {
    /// `alerts.<severity>.<kind>.<district>`.
    pub fn subject(&self) -> String {
        crate::subject::alert_subject(self.severity, self.kind, &self.district)
    }

    /// `Nats-Msg-Id`: the incident, the transition and its event time.
    pub fn msg_id(&self) -> String {
        format!("{}:{}:{}:{}", self.id, self.state, self.severity, self.at)
    }

    /// Encodes as CBOR.
    pub fn encode(&self) -> Vec<u8> {
        codec::to_vec(self)
    }

    /// Decodes a CBOR alert event, tolerating unknown keys.
    pub fn decode(bytes: &[u8]) -> Result<AlertEvent, DecodeError> {
        if bytes.len() > MAX_ALERT_BYTES {
            return Err(DecodeError::Oversized {
                len: bytes.len(),
                max: MAX_ALERT_BYTES,
            });
        }
        if !crate::lengths::fit(bytes) {
            return Err(DecodeError::Truncated);
        }
        ciborium::from_reader(bytes).map_err(crate::window::serde_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_events_round_trip_and_route() {
        let e = AlertEvent {
            id: "aqi-unhealthy:d04:1767225600000".into(),
            rule: "aqi-unhealthy".into(),
            state: AlertState::Firing,
            severity: Severity::Critical,
            kind: Kind::Air,
            district: "d04".into(),
            sensor: None,
            metric: "aqi".into(),
            value: 163.0,
            threshold: 150.0,
            started_at: 1_767_225_600_000,
            at: 1_767_225_600_000,
            summary: "AQI 163 (unhealthy) in d04".into(),
        };
        assert_eq!(AlertEvent::decode(&e.encode()).unwrap(), e);
        assert_eq!(e.subject(), "alerts.critical.air.d04");
        assert_eq!(
            e.msg_id(),
            "aqi-unhealthy:d04:1767225600000:firing:critical:1767225600000"
        );
    }
}
