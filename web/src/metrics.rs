//! The web view's Prometheus metrics (`citypulse_web_*`), listed in docs/metrics.md.

use citypulse_runtime::metrics::{int_counter, int_counter_vec, int_gauge};
use prometheus::{IntCounter, IntCounterVec, IntGauge, Registry};

/// Every metric of the web view.
#[derive(Debug, Clone)]
pub struct WebMetrics {
    /// `citypulse_web_clients`: browsers connected to `/api/events` now.
    pub clients: IntGauge,
    /// `citypulse_web_clients_dropped_total{reason}`: `slow` (fell behind by more than
    /// `--client-buffer` updates) or `full` (refused: `--max-clients` reached).
    pub dropped: IntCounterVec,
    /// `citypulse_web_messages_total{consumer}`: messages read (`latest`, `history`, `alerts`).
    pub messages: IntCounterVec,
    /// `citypulse_web_invalid_messages_total{consumer}`: messages that are not the contract's.
    pub invalid: IntCounterVec,
    /// `citypulse_web_updates_total{event}`: updates pushed to browsers (`district`, `alert`,
    /// `active`).
    pub updates: IntCounterVec,
    /// `citypulse_web_api_requests_total{op,outcome}`: alerts API requests relayed (`ok`,
    /// `refused`, `unavailable`).
    pub api: IntCounterVec,
    /// `citypulse_web_consumer_restarts_total`: ordered consumers created again after an error.
    pub restarts: IntCounter,
}

impl WebMetrics {
    /// Registers the metrics in `r`, with every bounded label value present from the start.
    pub fn new(r: &Registry) -> prometheus::Result<WebMetrics> {
        let m = WebMetrics {
            clients: int_gauge(r, "citypulse_web_clients",
                "Browsers connected to the live event stream.")?,
            dropped: int_counter_vec(r, "citypulse_web_clients_dropped_total",
                "Browsers dropped: slow (fell behind by more than --client-buffer updates) or full (refused at --max-clients).", &["reason"])?,
            messages: int_counter_vec(r, "citypulse_web_messages_total",
                "JetStream messages read, by consumer.", &["consumer"])?,
            invalid: int_counter_vec(r, "citypulse_web_invalid_messages_total",
                "Messages that are not contract messages, by consumer.", &["consumer"])?,
            updates: int_counter_vec(r, "citypulse_web_updates_total",
                "Updates pushed to browsers, by event.", &["event"])?,
            api: int_counter_vec(r, "citypulse_web_api_requests_total",
                "Alerts API requests relayed for browsers, by operation and outcome.", &["op", "outcome"])?,
            restarts: int_counter(r, "citypulse_web_consumer_restarts_total",
                "Ordered consumers created again after an error.")?,
        };
        for reason in ["slow", "full"] {
            m.dropped.with_label_values(&[reason]);
        }
        for c in ["latest", "history", "alerts"] {
            m.messages.with_label_values(&[c]);
            m.invalid.with_label_values(&[c]);
        }
        for e in ["district", "alert", "active"] {
            m.updates.with_label_values(&[e]);
        }
        Ok(m)
    }
}
