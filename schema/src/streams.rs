//! Names and subject filters of the JetStream streams and KV buckets. Each service provisions the
//! streams it writes (DESIGN §3); these constants keep the names in one place.

/// Raw readings as devices publish them.
pub const RAW: &str = "RAW";
/// Subjects of [`RAW`].
pub const RAW_SUBJECTS: &str = "sensors.>";

/// Validated readings, partitioned by district.
pub const READINGS: &str = "READINGS";
/// Subjects of [`READINGS`] as published by ingest (before the partition transform).
pub const READINGS_SUBJECTS: &str = "readings.*.*.*";

/// Window results.
pub const METRICS: &str = "METRICS";
/// Subjects of [`METRICS`].
pub const METRICS_SUBJECTS: &str = "metrics.>";

/// Alert transitions.
pub const ALERTS: &str = "ALERTS";
/// Subjects of [`ALERTS`].
pub const ALERTS_SUBJECTS: &str = "alerts.>";

/// Dead letters.
pub const DLQ: &str = "DLQ";
/// Subjects of [`DLQ`].
pub const DLQ_SUBJECTS: &str = "dlq.>";

/// Header of a dead letter: the bounded reason (also the subject's last token).
pub const HEADER_REASON: &str = "Citypulse-Reason";
/// Header of a dead letter: a human explanation with the offending value.
pub const HEADER_DETAIL: &str = "Citypulse-Detail";
/// Header of a dead letter: the subject the payload arrived on.
pub const HEADER_SOURCE_SUBJECT: &str = "Citypulse-Source-Subject";
/// Header of a dead letter: the RAW stream sequence of the payload.
pub const HEADER_SOURCE_SEQUENCE: &str = "Citypulse-Source-Sequence";

/// The READINGS subject transform: `readings.<district>.<kind>.<sensor>` is stored as
/// `readings.<partition>.<district>.<kind>.<sensor>` with nats-server's `partition(n, 1)`.
pub fn readings_transform_destination(partitions: u32) -> String {
    format!("readings.{{{{partition({partitions},1)}}}}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{{{{wildcard(3)}}}}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn transform_destination_uses_server_mapping_functions() {
        assert_eq!(
            super::readings_transform_destination(8),
            "readings.{{partition(8,1)}}.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}"
        );
    }
}
