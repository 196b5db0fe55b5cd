//! [`SimMetrics`]: every metric the simulator exports.

use crate::faults::Fault;
use citypulse_runtime::metrics::{gauge, int_counter, int_counter_vec, int_gauge};
use citypulse_schema::Kind;
use prometheus::{Gauge, IntCounter, IntCounterVec, IntGauge, Registry};

/// The simulator's metrics, registered in the process registry.
#[derive(Debug, Clone)]
pub struct SimMetrics {
    generated: IntCounterVec,
    published: IntCounter,
    acked: IntCounter,
    deduplicated: IntCounter,
    publish_errors: IntCounterVec,
    faults: IntCounterVec,
    simulated_time: Gauge,
    in_flight: IntGauge,
}

/// Bounded reasons of `citypulse_simulator_publish_errors_total`, the runtime publisher's: `ack`
/// (no ack in time, or an error reply), `publish` (the message could not be sent).
pub const PUBLISH_ERROR_REASONS: &[&str] = &["ack", "publish"];

impl SimMetrics {
    /// Registers the metrics in `registry`.
    pub fn new(r: &Registry) -> prometheus::Result<SimMetrics> {
        let m = SimMetrics {
            generated: int_counter_vec(
                r,
                "citypulse_simulator_readings_generated_total",
                "Readings generated, by sensor kind (including dropped and faulty ones).",
                &["kind"],
            )?,
            published: int_counter(
                r,
                "citypulse_simulator_published_total",
                "Messages handed to NATS (a retry is not counted again).",
            )?,
            acked: int_counter(
                r,
                "citypulse_simulator_acked_total",
                "Messages acknowledged by JetStream (stored, or recognised as duplicates).",
            )?,
            deduplicated: int_counter(
                r,
                "citypulse_simulator_deduplicated_total",
                "Acknowledgements flagged duplicate by JetStream (a retry that had landed, or a rerun).",
            )?,
            publish_errors: int_counter_vec(
                r,
                "citypulse_simulator_publish_errors_total",
                "Failed publish attempts (each retried with the same Nats-Msg-Id), by reason.",
                &["reason"],
            )?,
            faults: int_counter_vec(
                r,
                "citypulse_simulator_faults_injected_total",
                "Faults injected into generated messages, by fault.",
                &["fault"],
            )?,
            simulated_time: gauge(
                r,
                "citypulse_simulator_simulated_time_seconds",
                "Simulated time reached, seconds since the Unix epoch.",
            )?,
            in_flight: int_gauge(
                r,
                "citypulse_simulator_publish_in_flight",
                "Messages handed to JetStream whose step is not yet wholly acknowledged.",
            )?,
        };
        for k in Kind::ALL {
            m.generated.with_label_values(&[k.as_str()]);
        }
        for f in Fault::ALL {
            m.faults.with_label_values(&[f.label()]);
        }
        for reason in PUBLISH_ERROR_REASONS {
            m.publish_errors.with_label_values(&[reason]);
        }
        Ok(m)
    }

    /// A reading was generated (not counted again for its duplicate copy).
    pub fn generated(&self, kind: Kind) {
        self.generated.with_label_values(&[kind.as_str()]).inc();
    }

    /// A fault was injected.
    pub fn fault(&self, fault: Fault) {
        self.faults.with_label_values(&[fault.label()]).inc();
    }

    /// A message was handed to NATS.
    pub fn published(&self) {
        self.published.inc();
    }

    /// A message was acknowledged; `duplicate` when the server had it already.
    pub fn acked(&self, duplicate: bool) {
        self.acked.inc();
        if duplicate {
            self.deduplicated.inc();
        }
    }

    /// A publish attempt failed, for one of [`PUBLISH_ERROR_REASONS`].
    pub fn publish_error(&self, reason: &'static str) {
        self.publish_errors.with_label_values(&[reason]).inc();
    }

    /// Simulated time reached, ms.
    pub fn simulated_time_ms(&self, ms: u64) {
        self.simulated_time.set(ms as f64 / 1000.0);
    }

    /// Messages of the step being published (0 once it is acknowledged).
    pub fn in_flight(&self, n: usize) {
        self.in_flight.set(n as i64);
    }

    /// Totals so far, for the progress log.
    pub fn totals(&self) -> Totals {
        fn sum<'a>(v: &IntCounterVec, labels: impl IntoIterator<Item = &'a str>) -> u64 {
            labels
                .into_iter()
                .map(|l| v.with_label_values(&[l]).get())
                .sum()
        }
        Totals {
            generated: sum(&self.generated, Kind::ALL.iter().map(|k| k.as_str())),
            published: self.published.get(),
            acked: self.acked.get(),
            errors: sum(&self.publish_errors, PUBLISH_ERROR_REASONS.iter().copied()),
        }
    }
}

/// Counter totals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Readings generated.
    pub generated: u64,
    /// Messages handed to NATS.
    pub published: u64,
    /// Messages acknowledged.
    pub acked: u64,
    /// Failed publish attempts.
    pub errors: u64,
}
