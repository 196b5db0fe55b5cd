//! The settings of every JetStream stream of the pipeline, in one place.
//!
//! Each stream has an owner that provisions it with its own knobs (ingest: RAW, READINGS, DLQ;
//! processors: METRICS; alerts: ALERTS). A service that only needs a stream to exist (the
//! simulator for RAW, alerts for METRICS and DLQ) creates it, when it is missing, with the
//! owner's defaults ([`Limits::RAW`], …), so whoever starts first creates the same stream, and
//! the owner's idempotent [`ensure_stream`](crate::jetstream::ensure_stream) finds nothing to
//! report. Names and subjects are the wire contract's ([`citypulse_schema::streams`]).
//!
//! Every stream is file-backed and drops its oldest messages when a limit is reached: a full
//! stream keeps accepting the newest readings rather than stalling the devices.

use std::time::Duration;

use async_nats::jetstream::stream::{Config, DiscardPolicy, StorageType, SubjectTransform};
use citypulse_schema::streams;

const MIB: i64 = 1024 * 1024;

/// How much a stream keeps and how long it remembers message ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Oldest message kept; zero keeps messages until `max_bytes` drops them.
    pub max_age: Duration,
    /// Bytes kept, the oldest messages dropped first; -1 for no limit.
    pub max_bytes: i64,
    /// How long a `Nats-Msg-Id` is remembered: a second publish with the same id inside the
    /// window is acknowledged as a duplicate and not stored.
    pub duplicate_window: Duration,
    /// Copies of the stream in a cluster (1, 3 or 5).
    pub replicas: usize,
}

impl Limits {
    /// RAW (ingest's defaults): a week or 1 GiB of device traffic to replay; 2-minute
    /// deduplication of device retries.
    pub const RAW: Limits = Limits {
        max_age: Duration::from_secs(7 * 24 * 3600),
        max_bytes: 1024 * MIB,
        duplicate_window: Duration::from_secs(120),
        replicas: 1,
    };

    /// READINGS (ingest's defaults): as RAW.
    pub const READINGS: Limits = Limits::RAW;

    /// DLQ (ingest's defaults): 30 days or 128 MiB of dead letters to inspect.
    pub const DLQ: Limits = Limits {
        max_age: Duration::from_secs(30 * 24 * 3600),
        max_bytes: 128 * MIB,
        duplicate_window: Duration::from_secs(120),
        replicas: 1,
    };

    /// METRICS (the processors' defaults): a week of window results, no byte limit, and a
    /// 10-minute duplicate window, longer than any restart, so a window re-published after a
    /// crash is dropped by the server.
    pub const METRICS: Limits = Limits {
        max_age: Duration::from_secs(7 * 24 * 3600),
        max_bytes: -1,
        duplicate_window: Duration::from_secs(600),
        replicas: 1,
    };

    /// ALERTS (alerts' defaults): the alert history is kept without limit (it is small), with
    /// the same 10-minute duplicate window as METRICS.
    pub const ALERTS: Limits = Limits {
        max_age: Duration::ZERO,
        max_bytes: -1,
        duplicate_window: Duration::from_secs(600),
        replicas: 1,
    };
}

/// A file-backed stream `name` on `subjects` within `limits`.
fn stream(name: &str, subjects: &str, limits: Limits) -> Config {
    Config {
        name: name.to_owned(),
        subjects: vec![subjects.to_owned()],
        storage: StorageType::File,
        discard: DiscardPolicy::Old,
        max_age: limits.max_age,
        max_bytes: limits.max_bytes,
        duplicate_window: limits.duplicate_window,
        num_replicas: limits.replicas,
        ..Config::default()
    }
}

/// RAW on `sensors.>`: what devices publish, replayable.
pub fn raw(limits: Limits) -> Config {
    stream(streams::RAW, streams::RAW_SUBJECTS, limits)
}

/// READINGS on `readings.*.*.*`: validated readings, stored as
/// `readings.<partition>.<district>.<kind>.<sensor>` by the server's `partition(N,1)` subject
/// transform over `partitions` partitions.
pub fn readings(limits: Limits, partitions: u32) -> Config {
    Config {
        subject_transform: Some(SubjectTransform {
            source: streams::READINGS_SUBJECTS.to_owned(),
            destination: streams::readings_transform_destination(partitions),
        }),
        ..stream(streams::READINGS, streams::READINGS_SUBJECTS, limits)
    }
}

/// DLQ on `dlq.>`: dead letters with their reason headers.
pub fn dlq(limits: Limits) -> Config {
    stream(streams::DLQ, streams::DLQ_SUBJECTS, limits)
}

/// METRICS on `metrics.>`: one message per closed window.
pub fn metrics(limits: Limits) -> Config {
    stream(streams::METRICS, streams::METRICS_SUBJECTS, limits)
}

/// ALERTS on `alerts.>`: one message per alert transition.
pub fn alerts(limits: Limits) -> Config {
    stream(streams::ALERTS, streams::ALERTS_SUBJECTS, limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(24 * 3600);

    #[test]
    fn each_stream_has_its_contract_name_and_subjects() {
        let all = [
            (raw(Limits::RAW), "RAW", "sensors.>"),
            (readings(Limits::READINGS, 8), "READINGS", "readings.*.*.*"),
            (dlq(Limits::DLQ), "DLQ", "dlq.>"),
            (metrics(Limits::METRICS), "METRICS", "metrics.>"),
            (alerts(Limits::ALERTS), "ALERTS", "alerts.>"),
        ];
        for (config, name, subjects) in all {
            assert_eq!(config.name, name);
            assert_eq!(config.subjects, vec![subjects.to_owned()]);
            assert_eq!(config.storage, StorageType::File, "{name}");
            assert_eq!(config.discard, DiscardPolicy::Old, "{name}");
        }
    }

    #[test]
    fn readings_are_partitioned_by_the_server() {
        let c = readings(Limits::READINGS, 4);
        let t = c.subject_transform.expect("a subject transform");
        assert_eq!(t.source, "readings.*.*.*");
        assert_eq!(
            t.destination,
            "readings.{{partition(4,1)}}.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}"
        );
    }

    #[test]
    fn limits_are_applied_as_given() {
        let limits = Limits {
            max_age: DAY,
            max_bytes: 5 * MIB,
            duplicate_window: Duration::from_secs(30),
            replicas: 3,
        };
        let c = dlq(limits);
        assert_eq!(
            (c.max_age, c.max_bytes, c.duplicate_window, c.num_replicas),
            (DAY, 5 * MIB, Duration::from_secs(30), 3)
        );
    }
}
