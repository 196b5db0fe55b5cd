//! Every metric the alerts service exports, registered in the process's one registry.
//! Labels are bounded: severity, state, kind, outcome, reason, op, result — never an alert id,
//! a district list or a sensor id.

use crate::engine::Outcome;
use citypulse_runtime::metrics::{
    histogram, int_counter, int_counter_vec, int_gauge, int_gauge_vec,
};
use citypulse_runtime::source::SourceEvent;
use citypulse_schema::{AlertEvent, AlertState, Kind, Severity};
use prometheus::{Histogram, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Registry};
use std::collections::BTreeMap;
use std::time::Duration;

/// The alerts service's metrics.
#[derive(Debug, Clone)]
pub struct AlertsMetrics {
    firing: IntGaugeVec,
    transitions: IntCounterVec,
    suppressed: IntCounterVec,
    latency: Histogram,
    rules: IntGauge,
    silenced_alerts: IntGauge,
    silences: IntGauge,
    window_results: IntCounterVec,
    rejected: IntCounterVec,
    redelivered: IntCounter,
    consume_errors: IntCounterVec,
    publish_retries: IntCounterVec,
    checkpoints: IntCounterVec,
    checkpoint_bytes: IntGauge,
    checkpoint_sequence: IntGauge,
    store_rows: IntCounterVec,
    store_errors: IntCounter,
    store_pending: IntGauge,
    consumer_pending: IntGauge,
    consumer_ack_pending: IntGauge,
    requests: IntCounterVec,
}

impl AlertsMetrics {
    /// Registers the metrics in `r`.
    pub fn new(r: &Registry) -> prometheus::Result<Self> {
        let m = AlertsMetrics {
            firing: int_gauge_vec(
                r,
                "citypulse_alerts_firing",
                "Alerts currently firing, by severity (silenced ones included).",
                &["severity"],
            )?,
            transitions: int_counter_vec(
                r,
                "citypulse_alerts_transitions_total",
                "Alert transitions by state and severity (escalations count as firing).",
                &["state", "severity"],
            )?,
            suppressed: int_counter_vec(
                r,
                "citypulse_alerts_suppressed_total",
                "Transitions recorded but not published (silenced, or the resolution of a silenced incident).",
                &["state", "severity"],
            )?,
            latency: histogram(
                r,
                "citypulse_alerts_evaluation_latency_seconds",
                "From a window result's receipt to its alert transition being published and acknowledged.",
                vec![
                    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    0.5, 1.0, 2.5,
                ],
            )?,
            rules: int_gauge(r, "citypulse_alerts_rules", "Rules loaded.")?,
            silenced_alerts: int_gauge(
                r,
                "citypulse_alerts_silenced",
                "Firing alerts whose current state is hidden by a silence.",
            )?,
            silences: int_gauge(r, "citypulse_alerts_silences", "Active silences.")?,
            window_results: int_counter_vec(
                r,
                "citypulse_alerts_window_results_total",
                "Window results consumed, by kind and outcome (applied, duplicate, invalid).",
                &["kind", "outcome"],
            )?,
            rejected: int_counter_vec(
                r,
                "citypulse_alerts_rejected_total",
                "METRICS messages that are not window results, dead-lettered, by reason.",
                &["reason"],
            )?,
            redelivered: int_counter(
                r,
                "citypulse_alerts_redelivered_total",
                "Redelivered METRICS messages skipped because their effect is already applied.",
            )?,
            consume_errors: int_counter_vec(
                r,
                "citypulse_alerts_consume_errors_total",
                "Errors while pulling from METRICS, by reason (a pull error reopens the consumer after the last applied sequence).",
                &["reason"],
            )?,
            publish_retries: int_counter_vec(
                r,
                "citypulse_alerts_publish_retries_total",
                "Publish attempts to ALERTS or DLQ that were not acknowledged and were retried, by reason.",
                &["reason"],
            )?,
            checkpoints: int_counter_vec(
                r,
                "citypulse_alerts_checkpoints_total",
                "State checkpoints written to the KV bucket, by result.",
                &["result"],
            )?,
            checkpoint_bytes: int_gauge(
                r,
                "citypulse_alerts_checkpoint_bytes",
                "Size of the last checkpoint.",
            )?,
            checkpoint_sequence: int_gauge(
                r,
                "citypulse_alerts_checkpoint_sequence",
                "METRICS stream sequence included in the last checkpoint.",
            )?,
            store_rows: int_counter_vec(
                r,
                "citypulse_alerts_store_rows_total",
                "Alert history rows, by result (written, dropped).",
                &["result"],
            )?,
            store_errors: int_counter(
                r,
                "citypulse_alerts_store_errors_total",
                "Failed PostgreSQL writes or connects (retried).",
            )?,
            store_pending: int_gauge(
                r,
                "citypulse_alerts_store_pending_rows",
                "Alert history rows not yet committed to PostgreSQL (kept in the checkpoint).",
            )?,
            consumer_pending: int_gauge(
                r,
                "citypulse_alerts_consumer_pending_messages",
                "METRICS messages not yet delivered to the alerts consumer.",
            )?,
            consumer_ack_pending: int_gauge(
                r,
                "citypulse_alerts_consumer_ack_pending_messages",
                "METRICS messages delivered to the alerts consumer and not yet acknowledged (acks follow checkpoints).",
            )?,
            requests: int_counter_vec(
                r,
                "citypulse_alerts_requests_total",
                "Operator requests (list, ack, silence, unsilence), by result.",
                &["op", "result"],
            )?,
        };
        for s in Severity::ALL {
            m.firing.with_label_values(&[s.as_str()]);
            for st in AlertState::ALL {
                m.transitions.with_label_values(&[st.as_str(), s.as_str()]);
            }
        }
        Ok(m)
    }

    /// A transition was decided (published or not).
    pub fn transition(&self, e: &AlertEvent, published: bool) {
        self.transitions
            .with_label_values(&[e.state.as_str(), e.severity.as_str()])
            .inc();
        if !published {
            self.suppressed
                .with_label_values(&[e.state.as_str(), e.severity.as_str()])
                .inc();
        }
    }

    /// Receipt → publication of one transition.
    pub fn latency(&self, d: Duration) {
        self.latency.observe(d.as_secs_f64());
    }

    /// Sets the firing gauges.
    pub fn set_firing(
        &self,
        by_severity: &BTreeMap<Severity, usize>,
        silenced: usize,
        silences: usize,
    ) {
        for (s, n) in by_severity {
            self.firing
                .with_label_values(&[s.as_str()])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
        self.silenced_alerts
            .set(i64::try_from(silenced).unwrap_or(i64::MAX));
        self.silences
            .set(i64::try_from(silences).unwrap_or(i64::MAX));
    }

    /// The gauges of the METRICS consumer's pending and unacknowledged messages (for
    /// [`citypulse_runtime::jetstream::watch_consumer_lag`]).
    pub fn consumer_lag(&self) -> (IntGauge, IntGauge) {
        (
            self.consumer_pending.clone(),
            self.consumer_ack_pending.clone(),
        )
    }

    /// Rules loaded.
    pub fn set_rules(&self, n: usize) {
        self.rules.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A window result was evaluated.
    pub fn window_result(&self, kind: Kind, outcome: Outcome) {
        let o = match outcome {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Invalid => "invalid",
        };
        self.window_results
            .with_label_values(&[kind.as_str(), o])
            .inc();
    }

    /// A message was rejected (dead-lettered).
    pub fn rejected(&self, reason: &'static str) {
        self.rejected.with_label_values(&[reason]).inc();
    }

    /// A redelivered message was skipped.
    pub fn redelivered(&self) {
        self.redelivered.inc();
    }

    /// The METRICS source's events: a delivery gap or a skipped redelivery count as
    /// redeliveries (the message comes again), the rest as consume errors by reason.
    pub fn source_observer(&self) -> citypulse_runtime::source::Observer {
        let metrics = self.clone();
        std::sync::Arc::new(move |e| match e {
            SourceEvent::Gap | SourceEvent::Redelivered => metrics.redelivered(),
            other => {
                metrics.consume_error(other.label());
                tracing::debug!(event = other.label(), "METRICS source");
            }
        })
    }

    /// Pulling from METRICS failed (a bounded [`SourceEvent::label`]).
    pub fn consume_error(&self, reason: &'static str) {
        self.consume_errors.with_label_values(&[reason]).inc();
    }

    /// A publish attempt was retried.
    pub fn publish_retry(&self, reason: &'static str) {
        self.publish_retries.with_label_values(&[reason]).inc();
    }

    /// A checkpoint was written (or failed).
    pub fn checkpoint(&self, ok: bool, bytes: usize, seq: u64) {
        self.checkpoints
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
        if ok {
            self.checkpoint_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
            self.checkpoint_sequence
                .set(i64::try_from(seq).unwrap_or(i64::MAX));
        }
    }

    /// History rows written or dropped.
    pub fn store_rows(&self, result: &'static str, n: usize) {
        self.store_rows
            .with_label_values(&[result])
            .inc_by(n as u64);
    }

    /// A PostgreSQL failure.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// Rows waiting for PostgreSQL.
    pub fn store_pending(&self, n: usize) {
        self.store_pending.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// An operator request was answered.
    pub fn request(&self, op: &'static str, ok: bool) {
        self.requests
            .with_label_values(&[op, if ok { "ok" } else { "error" }])
            .inc();
    }
}
