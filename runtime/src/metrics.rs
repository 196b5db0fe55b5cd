//! The one way every citypulse service registers its Prometheus metrics: in the process's own
//! [`Registry`] (never the global one), each metric built and registered by one call.
//!
//! ```
//! use prometheus::Registry;
//! let r = Registry::new();
//! let received = citypulse_runtime::metrics::int_counter(&r, "x_received_total", "Received.").unwrap();
//! received.inc();
//! assert_eq!(r.gather().len(), 1);
//! ```

use prometheus::core::Collector;
use prometheus::{
    Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry,
};

/// Registers `metric` in `registry` and hands it back.
pub fn register<C: Collector + Clone + 'static>(
    registry: &Registry,
    metric: C,
) -> prometheus::Result<C> {
    registry.register(Box::new(metric.clone()))?;
    Ok(metric)
}

/// A counter.
pub fn int_counter(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    register(r, IntCounter::new(name, help)?)
}

/// A counter with labels.
pub fn int_counter_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    register(r, IntCounterVec::new(Opts::new(name, help), labels)?)
}

/// An integer gauge.
pub fn int_gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    register(r, IntGauge::new(name, help)?)
}

/// An integer gauge with labels.
pub fn int_gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntGaugeVec> {
    register(r, IntGaugeVec::new(Opts::new(name, help), labels)?)
}

/// A float gauge.
pub fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<Gauge> {
    register(r, Gauge::new(name, help)?)
}

/// A float gauge with labels.
pub fn gauge_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<GaugeVec> {
    register(r, GaugeVec::new(Opts::new(name, help), labels)?)
}

/// A histogram with explicit buckets.
pub fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    buckets: Vec<f64>,
) -> prometheus::Result<Histogram> {
    register(
        r,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))?,
    )
}

/// A histogram with labels and explicit buckets.
pub fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> prometheus::Result<HistogramVec> {
    register(
        r,
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)?,
    )
}
