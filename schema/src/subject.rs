//! Subject builders and parsers for the public subject map (DESIGN §2).
//!
//! | what | subject |
//! |---|---|
//! | a reading | `sensors.<district>.<kind>.<sensor_id>` |
//! | a validated reading (internal) | `readings.<district>.<kind>.<sensor_id>`, stored as `readings.<partition>.<district>.<kind>.<sensor_id>` |
//! | a window result | `metrics.<kind>.<district>[.<sensor_id>]` |
//! | an alert transition | `alerts.<severity>.<kind>.<district>` |
//! | rejected input | `dlq.<reason>` |
//!
//! Tokens are lowercase `[a-z0-9_-]+`, at most [`MAX_TOKEN_LEN`] bytes.

use crate::vocab::{Kind, Severity};
use std::fmt;

/// Longest token accepted in a subject (district, sensor id, reason).
pub const MAX_TOKEN_LEN: usize = 64;

/// Prefix of raw reading subjects.
pub const SENSORS_PREFIX: &str = "sensors";
/// Prefix of validated reading subjects (stream READINGS).
pub const READINGS_PREFIX: &str = "readings";
/// Prefix of window result subjects.
pub const METRICS_PREFIX: &str = "metrics";
/// Prefix of alert subjects.
pub const ALERTS_PREFIX: &str = "alerts";
/// Prefix of dead-letter subjects.
pub const DLQ_PREFIX: &str = "dlq";

/// Why a subject does not fit the subject map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// The subject has the wrong number of tokens or the wrong prefix.
    #[error("subject `{0}` is not of the form sensors.<district>.<kind>.<sensor_id>")]
    Shape(String),
    /// A token is empty, too long, or has characters outside `[a-z0-9_-]`.
    #[error("invalid token `{0}` (expected 1-64 of [a-z0-9_-])")]
    Token(String),
    /// The kind token is not `traffic` or `air`.
    #[error("unknown kind `{0}`")]
    Kind(String),
}

/// True when `s` is a valid subject token: 1 to [`MAX_TOKEN_LEN`] bytes of `[a-z0-9_-]`.
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_TOKEN_LEN
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn token(s: &str) -> Result<&str, SubjectError> {
    if is_token(s) {
        Ok(s)
    } else {
        Err(SubjectError::Token(s.to_owned()))
    }
}

/// The identity carried by a reading subject `sensors.<district>.<kind>.<sensor_id>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SensorSubject {
    /// District token.
    pub district: String,
    /// Sensor kind.
    pub kind: Kind,
    /// Sensor id token.
    pub sensor: String,
}

impl SensorSubject {
    /// Builds a subject identity, validating the tokens.
    pub fn new(district: &str, kind: Kind, sensor: &str) -> Result<Self, SubjectError> {
        Ok(SensorSubject {
            district: token(district)?.to_owned(),
            kind,
            sensor: token(sensor)?.to_owned(),
        })
    }

    /// Parses `sensors.<district>.<kind>.<sensor_id>`.
    pub fn parse(subject: &str) -> Result<Self, SubjectError> {
        Self::parse_with_prefix(subject, SENSORS_PREFIX)
    }

    /// Parses `readings.[<partition>.]<district>.<kind>.<sensor_id>` as stored in READINGS.
    pub fn parse_readings(subject: &str) -> Result<Self, SubjectError> {
        let mut parts = subject.split('.');
        let shape = || SubjectError::Shape(subject.to_owned());
        if parts.next() != Some(READINGS_PREFIX) {
            return Err(shape());
        }
        let rest: Vec<&str> = parts.collect();
        let tail = match rest.len() {
            3 => &rest[..],
            4 if rest[0].bytes().all(|b| b.is_ascii_digit()) => &rest[1..],
            _ => return Err(shape()),
        };
        Self::from_tokens(tail[0], tail[1], tail[2])
    }

    fn parse_with_prefix(subject: &str, prefix: &str) -> Result<Self, SubjectError> {
        let mut parts = subject.split('.');
        let shape = || SubjectError::Shape(subject.to_owned());
        if parts.next() != Some(prefix) {
            return Err(shape());
        }
        let (Some(district), Some(kind), Some(sensor), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(shape());
        };
        Self::from_tokens(district, kind, sensor)
    }

    fn from_tokens(district: &str, kind: &str, sensor: &str) -> Result<Self, SubjectError> {
        let kind: Kind = kind
            .parse()
            .map_err(|_| SubjectError::Kind(kind.to_owned()))?;
        Self::new(district, kind, sensor)
    }

    /// The raw reading subject, `sensors.<district>.<kind>.<sensor_id>`.
    pub fn sensors_subject(&self) -> String {
        format!(
            "{SENSORS_PREFIX}.{}.{}.{}",
            self.district, self.kind, self.sensor
        )
    }

    /// The validated reading subject ingest publishes to, `readings.<district>.<kind>.<sensor_id>`.
    /// The READINGS stream maps it to `readings.<partition>.<district>.<kind>.<sensor_id>`.
    pub fn readings_subject(&self) -> String {
        format!(
            "{READINGS_PREFIX}.{}.{}.{}",
            self.district, self.kind, self.sensor
        )
    }
}

impl fmt::Display for SensorSubject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SENSORS_PREFIX}.{}.{}.{}",
            self.district, self.kind, self.sensor
        )
    }
}

/// `metrics.<kind>.<district>` for a district result, `metrics.<kind>.<district>.<sensor_id>` for
/// a per-sensor one.
pub fn metrics_subject(kind: Kind, district: &str, sensor: Option<&str>) -> String {
    match sensor {
        Some(s) => format!("{METRICS_PREFIX}.{kind}.{district}.{s}"),
        None => format!("{METRICS_PREFIX}.{kind}.{district}"),
    }
}

/// `alerts.<severity>.<kind>.<district>`.
pub fn alert_subject(severity: Severity, kind: Kind, district: &str) -> String {
    format!("{ALERTS_PREFIX}.{severity}.{kind}.{district}")
}

/// `dlq.<reason>`.
pub fn dlq_subject(reason: &str) -> String {
    format!("{DLQ_PREFIX}.{reason}")
}

/// The partition of a district: nats-server's subject-mapping function `partition(n, token)`
/// (FNV-1a 32-bit hash of the token, modulo `n`), so the READINGS stream's subject transform and
/// any code that needs to know a district's partition agree.
pub fn partition_of(district: &str, partitions: u32) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in district.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_sensor_subject() {
        let s = SensorSubject::parse("sensors.d07.air.aq-0042").unwrap();
        assert_eq!(s.district, "d07");
        assert_eq!(s.kind, Kind::Air);
        assert_eq!(s.sensor, "aq-0042");
        assert_eq!(s.to_string(), "sensors.d07.air.aq-0042");
        assert_eq!(s.readings_subject(), "readings.d07.air.aq-0042");
    }

    #[test]
    fn rejects_subjects_off_the_map() {
        for bad in [
            "sensors.d07.air",
            "sensors.d07.air.a.b",
            "metrics.d07.air.a",
            "sensors.D07.air.a",
            "sensors.d07.bus.a",
            "sensors..air.a",
            "sensors.d07.air.a b",
        ] {
            assert!(SensorSubject::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parses_partitioned_readings_subjects() {
        let a = SensorSubject::parse_readings("readings.3.d07.traffic.loop-1").unwrap();
        let b = SensorSubject::parse_readings("readings.d07.traffic.loop-1").unwrap();
        assert_eq!(a, b);
        assert!(SensorSubject::parse_readings("readings.x.d07.traffic.loop-1").is_err());
    }

    #[test]
    fn output_subjects_follow_the_map() {
        assert_eq!(
            metrics_subject(Kind::Traffic, "d01", None),
            "metrics.traffic.d01"
        );
        assert_eq!(
            metrics_subject(Kind::Air, "d01", Some("aq-1")),
            "metrics.air.d01.aq-1"
        );
        assert_eq!(
            alert_subject(Severity::Critical, Kind::Air, "d01"),
            "alerts.critical.air.d01"
        );
        assert_eq!(dlq_subject("future_timestamp"), "dlq.future_timestamp");
    }

    #[test]
    fn partition_is_fnv1a_of_the_token() {
        // FNV-1a 32 of "" is the offset basis; of "a" is 0xe40c292c (published test vector).
        assert_eq!(partition_of("", u32::MAX), 0x811c_9dc5);
        assert_eq!(partition_of("a", u32::MAX), 0xe40c_292c);
        assert_eq!(partition_of("anything", 1), 0);
    }

    proptest! {
        #[test]
        fn build_then_parse_is_identity(d in "[a-z0-9_-]{1,20}", s in "[a-z0-9_-]{1,20}", air in any::<bool>()) {
            let kind = if air { Kind::Air } else { Kind::Traffic };
            let subj = SensorSubject::new(&d, kind, &s).unwrap();
            prop_assert_eq!(SensorSubject::parse(&subj.to_string()).unwrap(), subj);
        }
    }
}
