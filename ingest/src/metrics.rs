//! Every metric ingest exports, registered in the process's [`Registry`], with typed methods.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `citypulse_ingest_received_total` | counter | |
//! | `citypulse_ingest_accepted_total` | counter | `kind` |
//! | `citypulse_ingest_rejected_total` | counter | `reason` |
//! | `citypulse_ingest_adjusted_total` | counter | `adjustment`, `field` |
//! | `citypulse_ingest_duplicates_total` | counter | `stream` (`readings`: a device's repeated reading, dropped; `readings_batch`: a replayed batch READINGS already held; `dlq`) |
//! | `citypulse_ingest_retried_total` | counter | `reason` (`ack`, `publish`, `read_stored_batch`) |
//! | `citypulse_ingest_ack_failures_total` | counter | |
//! | `citypulse_ingest_consume_errors_total` | counter | `consumer`, `reason` |
//! | `citypulse_ingest_in_flight_publishes` | gauge | |
//! | `citypulse_ingest_consumer_pending_messages` | gauge | `consumer` (`validator`) |
//! | `citypulse_ingest_consumer_ack_pending_messages` | gauge | `consumer` (`validator`) |
//! | `citypulse_ingest_stream_retention_seconds` | gauge | `stream` (`RAW`, `READINGS`, `DLQ`) |
//! | `citypulse_ingest_archived_rows_total` | counter | |
//! | `citypulse_ingest_archive_duplicate_rows_total` | counter | |
//! | `citypulse_ingest_archive_errors_total` | counter | `reason` (`connect`, `write`, `undecodable`, `fetch`) |
//! | `citypulse_ingest_archive_up` | gauge | |
//! | `citypulse_ingest_archive_lag_messages` | gauge | |
//! | `citypulse_ingest_archive_lag_seconds` | gauge | |
//! | `citypulse_ingest_archive_retention_used_ratio` | gauge | |
//! | `citypulse_ingest_archive_batch_size_rows` | histogram | |
//! | `citypulse_ingest_archive_write_duration_seconds` | histogram | |
//! | `citypulse_ingest_readings_missing_total` | counter | `district` (at most 1,000, then `(other)`), `kind` |
//! | `citypulse_ingest_readings_arrived_after_missing_total` | counter | `kind` |
//! | `citypulse_ingest_tracked_sensors` | gauge | |
//! | `citypulse_ingest_sensor_evictions_total` | counter | |
//!
//! Sensor ids are never labels.

use crate::validate::{Adjustment, Rejection};
use citypulse_runtime::metrics::{
    gauge, gauge_vec, histogram, int_counter, int_counter_vec, int_gauge, int_gauge_vec,
};
use citypulse_schema::Kind;
use prometheus::{GaugeVec, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};

/// Ingest's metrics. Cheap to clone (handles to shared series).
#[derive(Debug, Clone)]
pub struct IngestMetrics {
    received: IntCounter,
    accepted: IntCounterVec,
    rejected: IntCounterVec,
    adjusted: IntCounterVec,
    duplicates: IntCounterVec,
    retried: IntCounterVec,
    ack_failures: IntCounter,
    consume_errors: IntCounterVec,
    in_flight: IntGauge,
    consumer_pending: IntGaugeVec,
    consumer_ack_pending: IntGaugeVec,
    stream_retention: GaugeVec,
    archived_rows: IntCounter,
    archive_duplicate_rows: IntCounter,
    archive_errors: IntCounterVec,
    archive_up: IntGauge,
    archive_lag_messages: IntGauge,
    archive_lag_seconds: prometheus::Gauge,
    archive_retention_used: prometheus::Gauge,
    archive_batch_size: Histogram,
    archive_write_seconds: Histogram,
    missing: IntCounterVec,
    arrived_after_missing: IntCounterVec,
    tracked_sensors: IntGauge,
    sensor_evictions: IntCounter,
}

impl IngestMetrics {
    /// Registers every ingest metric in `registry`, with the bounded label values pre-created
    /// so that dashboards see zeros rather than gaps.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let m = IngestMetrics {
            received: int_counter(
                registry,
                "citypulse_ingest_received_total",
                "Messages taken from RAW (a redelivery counts again).",
            )?,
            accepted: int_counter_vec(
                registry,
                "citypulse_ingest_accepted_total",
                "Readings that passed validation and were published to READINGS.",
                &["kind"],
            )?,
            rejected: int_counter_vec(
                registry,
                "citypulse_ingest_rejected_total",
                "Messages rejected and dead-lettered on dlq.<reason>, by reason.",
                &["reason"],
            )?,
            adjusted: int_counter_vec(
                registry,
                "citypulse_ingest_adjusted_total",
                "Accepted readings changed by a documented normalisation.",
                &["adjustment", "field"],
            )?,
            duplicates: int_counter_vec(
                registry,
                "citypulse_ingest_duplicates_total",
                "Readings and dead letters stored once although seen again: a repeated reading, or a replayed publish the server recognised by Nats-Msg-Id.",
                &["stream"],
            )?,
            retried: int_counter_vec(
                registry,
                "citypulse_ingest_retried_total",
                "RAW messages handed back for redelivery (nak) because their output was not acknowledged.",
                &["reason"],
            )?,
            ack_failures: int_counter(
                registry,
                "citypulse_ingest_ack_failures_total",
                "Acks that could not be sent; the server redelivers and the duplicate is absorbed.",
            )?,
            consume_errors: int_counter_vec(
                registry,
                "citypulse_ingest_consume_errors_total",
                "Errors while pulling from a consumer.",
                &["consumer", "reason"],
            )?,
            in_flight: int_gauge(
                registry,
                "citypulse_ingest_in_flight_publishes",
                "Publishes to READINGS/DLQ awaiting their ack.",
            )?,
            consumer_pending: int_gauge_vec(
                registry,
                "citypulse_ingest_consumer_pending_messages",
                "Messages not yet delivered to the consumer (RAW for the validator).",
                &["consumer"],
            )?,
            consumer_ack_pending: int_gauge_vec(
                registry,
                "citypulse_ingest_consumer_ack_pending_messages",
                "Messages delivered to the consumer and not yet acknowledged.",
                &["consumer"],
            )?,
            stream_retention: gauge_vec(
                registry,
                "citypulse_ingest_stream_retention_seconds",
                "Seconds of the stream's input, at its rate over the last 5 minutes, that its \
                 limits hold (byte limit at its average message, message limit or age limit, the \
                 nearest; with nothing arriving the age limit, +Inf without one): how long its consumer (the validator for RAW, \
                 the archive and processors for READINGS) can be stopped before the stream drops \
                 readings it has not read; for DLQ, how long dead letters stay to inspect.",
                &["stream"],
            )?,
            archived_rows: int_counter(
                registry,
                "citypulse_ingest_archived_rows_total",
                "Rows inserted into the PostgreSQL readings table.",
            )?,
            archive_duplicate_rows: int_counter(
                registry,
                "citypulse_ingest_archive_duplicate_rows_total",
                "Archived messages whose row already existed (redeliveries), skipped.",
            )?,
            archive_errors: int_counter_vec(
                registry,
                "citypulse_ingest_archive_errors_total",
                "Archive failures by reason; a failed batch is retried, never dropped.",
                &["reason"],
            )?,
            archive_up: int_gauge(
                registry,
                "citypulse_ingest_archive_up",
                "1 when the archive is connected to PostgreSQL.",
            )?,
            archive_lag_messages: int_gauge(
                registry,
                "citypulse_ingest_archive_lag_messages",
                "READINGS messages not yet archived (pending + unacked on the archive consumer).",
            )?,
            archive_lag_seconds: gauge(
                registry,
                "citypulse_ingest_archive_lag_seconds",
                "Age of the oldest READINGS message not yet archived (0 when caught up).",
            )?,
            archive_retention_used: gauge(
                registry,
                "citypulse_ingest_archive_retention_used_ratio",
                "Share of READINGS' retention (message, byte or age limit, the nearest) that \
                 readings not yet archived take up; at 1 READINGS discards unarchived readings.",
            )?,
            archive_batch_size: histogram(
                registry,
                "citypulse_ingest_archive_batch_size_rows",
                "Readings per archive write (one statement; at most 10,000 plus one READINGS message).",
                vec![1.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10_000.0, 20_000.0],
            )?,
            archive_write_seconds: histogram(
                registry,
                "citypulse_ingest_archive_write_duration_seconds",
                "Duration of one archive batch write (one statement, one transaction).",
                prometheus::exponential_buckets(0.001, 2.0, 14)?,
            )?,
            missing: int_counter_vec(
                registry,
                "citypulse_ingest_readings_missing_total",
                "Readings a sensor numbered (seq) that never reached ingest, counted once 64 newer readings of the sensor passed (or its counter restarted, or it was evicted), under the sensor's district (the first 1,000 districts seen; later ones as (other)) and kind. One arriving later than that is passed on and stays counted here (see citypulse_ingest_readings_arrived_after_missing_total). A reading rejected for its time or values arrived and is not counted; a payload too broken to name its sensor and seq is.",
                &["district", "kind"],
            )?,
            arrived_after_missing: int_counter_vec(
                registry,
                "citypulse_ingest_readings_arrived_after_missing_total",
                "Readings that arrived 64 or more readings behind their sensor's newest, after they were counted missing: passed on to READINGS and the archive (ingest cannot tell one from a repeat of an old reading; the archive's key and the processors' guard absorb a repeat).",
                &["kind"],
            )?,
            tracked_sensors: int_gauge(
                registry,
                "citypulse_ingest_tracked_sensors",
                "Sensors whose recent seq ingest tracks (at most --max-tracked-sensors).",
            )?,
            sensor_evictions: int_counter(
                registry,
                "citypulse_ingest_sensor_evictions_total",
                "Least recently seen sensors forgotten to make room for a new one at --max-tracked-sensors.",
            )?,
        };
        for k in Kind::ALL {
            m.accepted.with_label_values(&[k.as_str()]);
            m.arrived_after_missing.with_label_values(&[k.as_str()]);
        }
        for r in Rejection::reasons() {
            m.rejected.with_label_values(&[r]);
        }
        for s in ["readings", "dlq"] {
            m.duplicates.with_label_values(&[s]);
        }
        m.retried.with_label_values(&["publish_failed"]);
        for r in ["connect", "write", "undecodable", "fetch"] {
            m.archive_errors.with_label_values(&[r]);
        }
        Ok(m)
    }

    /// A message was taken from RAW.
    pub fn received(&self) {
        self.received.inc();
    }

    /// A reading was accepted.
    pub fn accepted(&self, kind: Kind, adjustments: &[Adjustment]) {
        self.accepted.with_label_values(&[kind.as_str()]).inc();
        for a in adjustments {
            self.adjusted
                .with_label_values(&[a.reason(), a.field()])
                .inc();
        }
    }

    /// A reading of a `kind` sensor arrived after it was counted missing (or is a repeat of an
    /// old one: ingest cannot tell).
    pub fn arrived_after_missing(&self, kind: Kind) {
        self.arrived_after_missing
            .with_label_values(&[kind.as_str()])
            .inc();
    }

    /// A district's label is used for the first time: its missing-reading series start at zero,
    /// so the first gap shows as an increase rather than as a new series.
    pub fn district_seen(&self, district: &str) {
        for k in Kind::ALL {
            self.missing.with_label_values(&[district, k.as_str()]);
        }
    }

    /// `n` readings of a `kind` sensor in `district` were judged missing.
    pub fn missing(&self, district: &str, kind: Kind, n: u64) {
        self.missing
            .with_label_values(&[district, kind.as_str()])
            .inc_by(n);
    }

    /// Sensors tracked now.
    pub fn set_tracked_sensors(&self, n: usize) {
        self.tracked_sensors
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A sensor was evicted from the tracking map.
    pub fn sensor_evicted(&self) {
        self.sensor_evictions.inc();
    }

    /// A message was rejected.
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.with_label_values(&[reason]).inc();
    }

    /// A publish was acknowledged as a duplicate by `stream` (`readings` or `dlq`).
    pub fn duplicate(&self, stream: &'static str) {
        self.duplicates.with_label_values(&[stream]).inc();
    }

    /// A RAW message was handed back for redelivery.
    pub fn retried(&self, reason: &'static str) {
        self.retried.with_label_values(&[reason]).inc();
    }

    /// An ack or nak could not be sent.
    pub fn ack_failed(&self) {
        self.ack_failures.inc();
    }

    /// Pulling from `consumer` failed.
    pub fn consume_error(&self, consumer: &'static str, reason: &'static str) {
        self.consume_errors
            .with_label_values(&[consumer, reason])
            .inc();
    }

    /// Publishes awaiting their ack.
    pub fn set_in_flight(&self, n: usize) {
        self.in_flight.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// The gauges of `consumer`'s pending and unacknowledged messages (for
    /// [`citypulse_runtime::jetstream::watch_consumer_lag`]).
    pub fn consumer_lag(&self, consumer: &'static str) -> (IntGauge, IntGauge) {
        (
            self.consumer_pending.with_label_values(&[consumer]),
            self.consumer_ack_pending.with_label_values(&[consumer]),
        )
    }

    /// The gauges of the streams' retention in seconds, one per `stream`
    /// ([`StreamRetention`]; not pre-set: a series appears with its first estimate).
    ///
    /// [`StreamRetention`]: citypulse_runtime::jetstream::StreamRetention
    pub fn stream_retention(&self) -> GaugeVec {
        self.stream_retention.clone()
    }

    /// A batch of `batch` readings was written in `seconds`, `inserted` of them new rows.
    pub fn archived(&self, batch: usize, inserted: u64, seconds: f64) {
        let batch_u64 = u64::try_from(batch).unwrap_or(u64::MAX);
        self.archived_rows.inc_by(inserted);
        self.archive_duplicate_rows
            .inc_by(batch_u64.saturating_sub(inserted));
        // Precision loss above 2^53 rows per batch is not a concern.
        #[allow(clippy::cast_precision_loss)]
        self.archive_batch_size.observe(batch as f64);
        self.archive_write_seconds.observe(seconds);
    }

    /// The archive failed (`connect`, `write`, `undecodable`, `fetch`).
    pub fn archive_error(&self, reason: &'static str) {
        self.archive_errors.with_label_values(&[reason]).inc();
    }

    /// Whether the archive is connected to PostgreSQL.
    pub fn set_archive_up(&self, up: bool) {
        self.archive_up.set(i64::from(up));
    }

    /// The archive's backlog.
    pub fn set_archive_lag(&self, messages: u64, seconds: f64) {
        self.archive_lag_messages
            .set(i64::try_from(messages).unwrap_or(i64::MAX));
        self.archive_lag_seconds.set(seconds);
    }

    /// The share of READINGS' retention the archive's backlog takes.
    pub fn set_archive_retention_used(&self, ratio: f64) {
        self.archive_retention_used.set(ratio);
    }
}
