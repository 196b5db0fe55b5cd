//! Every metric the processors export, registered in the process's registry.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `citypulse_processors_readings_total` | counter | `kind`, `outcome` (accepted, late, rejected) |
//! | `citypulse_processors_late_readings_total` | counter | `kind`, `reason` |
//! | `citypulse_processors_rejected_readings_total` | counter | `kind` (or `unknown`), `reason` |
//! | `citypulse_processors_redelivered_readings_total` | counter | — (skipped: already in the state) |
//! | `citypulse_processors_delivery_gaps_total` | counter | — (deliveries lost in flight; consumer reopened) |
//! | `citypulse_processors_consume_errors_total` | counter | `reason`: the READINGS source's other events |
//! | `citypulse_processors_windows_open` | gauge | `partition` |
//! | `citypulse_processors_windows_closed_total` | counter | `kind`, `scope` (sensor, district) |
//! | `citypulse_processors_watermark_lag_seconds` | gauge | `partition`: wall clock − watermark |
//! | `citypulse_processors_state_bytes` | gauge | `partition`: size of the last checkpoint |
//! | `citypulse_processors_consumer_pending_messages` | gauge | `partition`: READINGS messages not yet delivered |
//! | `citypulse_processors_consumer_ack_pending_messages` | gauge | `partition`: delivered, not yet acknowledged |
//! | `citypulse_processors_publish_latency_seconds` | histogram | — (send to ack of a result) |
//! | `citypulse_processors_publish_retries_total` | counter | `reason` |
//! | `citypulse_processors_published_duplicates_total` | counter | — (results the server had already: replays) |
//! | `citypulse_processors_checkpoints_total` | counter | `outcome` (ok, error) |
//! | `citypulse_processors_checkpoint_seconds` | histogram | — |
//! | `citypulse_district_aqi` | gauge | `district`: overall US AQI of the last closed window |
//! | `citypulse_district_congestion_index` | gauge | `district` |
//! | `citypulse_district_los_share` | gauge | `district`, `los`: share of segments at each level |

use crate::window::{LateReason, Rejection};
use citypulse_runtime::metrics::{
    gauge_vec, histogram, int_counter, int_counter_vec, int_gauge_vec,
};
use citypulse_schema::{Kind, Los, WindowMetrics, WindowResult};
use prometheus::{GaugeVec, Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use std::collections::BTreeMap;
use std::time::Duration;

/// The processors' metrics.
#[derive(Debug, Clone)]
pub struct ProcessorMetrics {
    readings: IntCounterVec,
    late: IntCounterVec,
    rejected: IntCounterVec,
    redelivered: IntCounter,
    delivery_gaps: IntCounter,
    consume_errors: IntCounterVec,
    windows_open: IntGaugeVec,
    windows_closed: IntCounterVec,
    watermark_lag: GaugeVec,
    state_bytes: IntGaugeVec,
    consumer_pending: IntGaugeVec,
    consumer_ack_pending: IntGaugeVec,
    publish_latency: Histogram,
    publish_retries: IntCounterVec,
    published_duplicates: IntCounter,
    checkpoints: IntCounterVec,
    checkpoint_seconds: Histogram,
    district_aqi: GaugeVec,
    district_congestion: GaugeVec,
    district_los_share: GaugeVec,
}

impl ProcessorMetrics {
    /// Registers the metrics in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<ProcessorMetrics> {
        let r = registry;
        let m = ProcessorMetrics {
            readings: int_counter_vec(r, "citypulse_processors_readings_total",
                "Readings processed, by kind and outcome (accepted, late, rejected).", &["kind", "outcome"])?,
            late: int_counter_vec(r, "citypulse_processors_late_readings_total",
                "Readings behind the watermark, counted and not merged, by kind and reason.", &["kind", "reason"])?,
            rejected: int_counter_vec(r, "citypulse_processors_rejected_readings_total",
                "Readings refused, by kind (unknown when undecodable) and reason.", &["kind", "reason"])?,
            redelivered: int_counter(r, "citypulse_processors_redelivered_readings_total",
                "Deliveries skipped because the state already includes their stream sequence.")?,
            delivery_gaps: int_counter(r, "citypulse_processors_delivery_gaps_total",
                "Deliveries lost in flight (a reconnect); the consumer was reopened after the last folded sequence.")?,
            consume_errors: int_counter_vec(r, "citypulse_processors_consume_errors_total",
                "Errors while pulling from READINGS, by reason (a pull error reopens the consumer after the last folded sequence).", &["reason"])?,
            windows_open: int_gauge_vec(r, "citypulse_processors_windows_open",
                "Windows holding readings and not yet closed, by partition.", &["partition"])?,
            windows_closed: int_counter_vec(r, "citypulse_processors_windows_closed_total",
                "Window results closed, by kind and scope (sensor, district).", &["kind", "scope"])?,
            watermark_lag: gauge_vec(r, "citypulse_processors_watermark_lag_seconds",
                "Wall clock minus the partition's event-time watermark, seconds.", &["partition"])?,
            state_bytes: int_gauge_vec(r, "citypulse_processors_state_bytes",
                "Size of the partition's last checkpoint, bytes.", &["partition"])?,
            consumer_pending: int_gauge_vec(r, "citypulse_processors_consumer_pending_messages",
                "READINGS messages not yet delivered to the partition's consumer.", &["partition"])?,
            consumer_ack_pending: int_gauge_vec(r, "citypulse_processors_consumer_ack_pending_messages",
                "READINGS messages delivered to the partition's consumer and not yet acknowledged (acks follow checkpoints).", &["partition"])?,
            publish_latency: histogram(r, "citypulse_processors_publish_latency_seconds",
                "Time from sending a window result to its JetStream ack, seconds.",
                prometheus::exponential_buckets(0.0005, 2.0, 16)?)?,
            publish_retries: int_counter_vec(r, "citypulse_processors_publish_retries_total",
                "Failed attempts to publish a window result or dead letter, by reason.", &["reason"])?,
            published_duplicates: int_counter(r, "citypulse_processors_published_duplicates_total",
                "Window results the server already had (republished after a restart), deduplicated.")?,
            checkpoints: int_counter_vec(r, "citypulse_processors_checkpoints_total",
                "Checkpoint writes, by outcome.", &["outcome"])?,
            checkpoint_seconds: histogram(r, "citypulse_processors_checkpoint_seconds",
                "Time to encode and write a checkpoint, seconds.",
                prometheus::exponential_buckets(0.0005, 2.0, 16)?)?,
            district_aqi: gauge_vec(r, "citypulse_district_aqi",
                "Overall US AQI of the district's last closed window.", &["district"])?,
            district_congestion: gauge_vec(r, "citypulse_district_congestion_index",
                "Congestion index (1 - v/v_free, vehicle-weighted) of the district's last closed window.", &["district"])?,
            district_los_share: gauge_vec(r, "citypulse_district_los_share",
                "Share of the district's segments at each HCM level of service in its last closed window.", &["district", "los"])?,
        };
        for kind in Kind::ALL {
            for outcome in ["accepted", "late", "rejected"] {
                m.readings.with_label_values(&[kind.as_str(), outcome]);
            }
            for reason in LateReason::ALL {
                m.late.with_label_values(&[kind.as_str(), reason.reason()]);
            }
            for reason in Rejection::REASONS {
                m.rejected.with_label_values(&[kind.as_str(), reason]);
            }
        }
        for outcome in ["ok", "error"] {
            m.checkpoints.with_label_values(&[outcome]);
        }
        Ok(m)
    }

    /// An accepted reading.
    pub fn accepted(&self, kind: Kind) {
        self.readings
            .with_label_values(&[kind.as_str(), "accepted"])
            .inc();
    }

    /// A late reading.
    pub fn late(&self, kind: Kind, reason: LateReason) {
        self.readings
            .with_label_values(&[kind.as_str(), "late"])
            .inc();
        self.late
            .with_label_values(&[kind.as_str(), reason.reason()])
            .inc();
    }

    /// A rejected reading; `kind` is `None` when the payload did not decode.
    pub fn rejected(&self, kind: Option<Kind>, reason: &'static str) {
        let kind = kind.map_or("unknown", Kind::as_str);
        self.readings.with_label_values(&[kind, "rejected"]).inc();
        self.rejected.with_label_values(&[kind, reason]).inc();
    }

    /// A redelivered message skipped.
    pub fn redelivered(&self) {
        self.redelivered.inc();
    }

    /// Deliveries lost in flight.
    pub fn delivery_gap(&self) {
        self.delivery_gaps.inc();
    }

    /// Pulling from READINGS failed (a bounded [`SourceEvent::label`]).
    ///
    /// [`SourceEvent::label`]: citypulse_runtime::source::SourceEvent::label
    pub fn consume_error(&self, reason: &'static str) {
        self.consume_errors.with_label_values(&[reason]).inc();
    }

    /// The partition's open windows and watermark lag (`None`: no watermark yet, or ahead of the
    /// wall clock).
    pub fn partition(&self, partition: u32, open: usize, lag: Option<Duration>) {
        let p = partition.to_string();
        self.windows_open.with_label_values(&[&p]).set(open as i64);
        if let Some(lag) = lag {
            self.watermark_lag
                .with_label_values(&[&p])
                .set(lag.as_secs_f64());
        }
    }

    /// The gauges of the partition consumer's pending and unacknowledged messages (for
    /// [`citypulse_runtime::jetstream::watch_consumer_lag`]).
    pub fn consumer_lag(&self, partition: u32) -> (IntGauge, IntGauge) {
        let p = partition.to_string();
        (
            self.consumer_pending.with_label_values(&[&p]),
            self.consumer_ack_pending.with_label_values(&[&p]),
        )
    }

    /// The size of a written checkpoint.
    pub fn checkpoint(&self, partition: u32, bytes: usize, took: Duration) {
        self.state_bytes
            .with_label_values(&[&partition.to_string()])
            .set(bytes as i64);
        self.checkpoints.with_label_values(&["ok"]).inc();
        self.checkpoint_seconds.observe(took.as_secs_f64());
    }

    /// A failed checkpoint write.
    pub fn checkpoint_failed(&self) {
        self.checkpoints.with_label_values(&["error"]).inc();
    }

    /// A result's publish latency; `duplicate` when the server had it already.
    pub fn published(&self, took: Duration, duplicate: bool) {
        self.publish_latency.observe(took.as_secs_f64());
        if duplicate {
            self.published_duplicates.inc();
        }
    }

    /// A failed publish attempt.
    pub fn publish_retry(&self, reason: &'static str) {
        self.publish_retries.with_label_values(&[reason]).inc();
    }

    /// Counts closed windows and sets the district gauges from a batch of results.
    pub fn closed(&self, results: &[WindowResult]) {
        // LOS counts of the sensors of each (district, window).
        let mut los: BTreeMap<(&str, u64), [u32; 6]> = BTreeMap::new();
        for w in results {
            let scope = if w.sensor.is_some() {
                "sensor"
            } else {
                "district"
            };
            self.windows_closed
                .with_label_values(&[w.kind().as_str(), scope])
                .inc();
            match (&w.metrics, &w.sensor) {
                (WindowMetrics::Traffic(t), Some(_)) => {
                    if let Some(l) = t.los {
                        los.entry((&w.district, w.window_end)).or_default()[l as usize] += 1;
                    }
                }
                (WindowMetrics::Traffic(t), None) => {
                    if let Some(ci) = t.congestion_index {
                        self.district_congestion
                            .with_label_values(&[&w.district])
                            .set(ci);
                    }
                }
                (WindowMetrics::Air(a), None) => {
                    if let Some(aqi) = a.aqi {
                        self.district_aqi
                            .with_label_values(&[&w.district])
                            .set(f64::from(aqi));
                    }
                }
                (WindowMetrics::Air(_), Some(_)) => {}
            }
        }
        // The latest window of each district wins (results come in window order).
        for ((district, _), counts) in los {
            let total: u32 = counts.iter().sum();
            for l in Los::ALL {
                let share = f64::from(counts[*l as usize]) / f64::from(total.max(1));
                self.district_los_share
                    .with_label_values(&[district, l.as_str()])
                    .set(share);
            }
        }
    }
}
