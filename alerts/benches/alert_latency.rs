//! Evaluation latency through a real nats-server: window results are published to METRICS one at
//! a time, each crossing the threshold (alternately firing and resolving), and a plain subscriber
//! on `alerts.>` measures publish → alert received. The service's own histogram (receipt of the
//! window result → its transition published and acknowledged by ALERTS) is reported too. A
//! second phase measures throughput: a burst of window results, most without a transition,
//! until the consumer has acked them all.
//!
//! `cargo bench -p citypulse-alerts --bench alert_latency` (set `ALERT_LATENCY_N` to change the
//! number of transitions, default 2000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream;
use async_nats::HeaderMap;
use citypulse_alerts::config::RunConfig;
use citypulse_alerts::nats::metrics_stream;
use citypulse_harness::NatsServer;
use citypulse_runtime::admin::Health;
use citypulse_runtime::jetstream::ensure_stream;
use citypulse_runtime::shutdown::Shutdown;
use citypulse_schema::{AirMetrics, WindowMetrics, WindowResult};
use futures::StreamExt;
use std::time::{Duration, Instant};

const MIN: u64 = 60_000;
const T0: u64 = 1_767_225_600_000;

const RULES: &str = r#"
[[rule]]
name = "aqi"
kind = "air"
metric = "aqi"
op = ">"
threshold = 100
clear = 90
severity = "warning"
summary = "AQI {value} ({category}) in {district}"
"#;

fn window(district: &str, sensor: Option<String>, minute: u64, aqi: u16) -> WindowResult {
    WindowResult {
        window_start: T0 + minute * MIN,
        window_end: T0 + (minute + 1) * MIN,
        district: district.into(),
        sensor,
        readings: 2,
        sensors: 1,
        metrics: WindowMetrics::Air(Box::new(AirMetrics {
            aqi: Some(aqi),
            ..AirMetrics::default()
        })),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Quantile estimate from a Prometheus histogram (linear within the bucket).
fn histogram_quantile(registry: &prometheus::Registry, name: &str, q: f64) -> Option<f64> {
    let families = registry.gather();
    let h = families
        .iter()
        .find(|f| f.name() == name)?
        .get_metric()
        .first()?
        .get_histogram()
        .clone();
    let total = h.get_sample_count() as f64;
    let target = q * total;
    let mut prev_bound = 0.0;
    let mut prev_count = 0.0;
    for b in h.get_bucket() {
        let count = b.cumulative_count() as f64;
        if count >= target {
            let frac = if count > prev_count {
                (target - prev_count) / (count - prev_count)
            } else {
                0.0
            };
            return Some(prev_bound + frac * (b.upper_bound() - prev_bound));
        }
        prev_bound = b.upper_bound();
        prev_count = count;
    }
    Some(prev_bound)
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::var("ALERT_LATENCY_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let server = NatsServer::start();
    let url = server.url();
    let client = async_nats::connect(&url).await.unwrap();
    let js = jetstream::new(client.clone());
    ensure_stream(&js, metrics_stream()).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, RULES).unwrap();
    let mut cfg = RunConfig::for_url(&url);
    cfg.rules = Some(rules);
    let registry = prometheus::Registry::new();
    let shutdown = Shutdown::new();
    let svc = tokio::spawn(citypulse_alerts::run(
        cfg,
        async_nats::connect(&url).await.unwrap(),
        registry.clone(),
        Health::new(),
        shutdown.clone(),
    ));

    let mut alerts = client.subscribe("alerts.>").await.unwrap();
    client.flush().await.unwrap();
    let publish = |w: WindowResult| {
        let js = js.clone();
        async move {
            let mut h = HeaderMap::new();
            h.insert(async_nats::header::NATS_MESSAGE_ID, w.msg_id().as_str());
            js.publish_with_headers(w.subject(), h, w.encode().into())
                .await
                .unwrap()
                .await
                .unwrap()
                .sequence
        }
    };

    // Warm-up (stream and consumer creation, first connections).
    let mut minute = 0;
    let mut latencies = Vec::with_capacity(n);
    for i in 0..(n + 50) {
        let aqi = if i % 2 == 0 { 120 } else { 50 };
        let w = window("d01", None, minute, aqi);
        minute += 1;
        let sent = Instant::now();
        publish(w).await;
        tokio::time::timeout(Duration::from_secs(10), alerts.next())
            .await
            .expect("alert within 10 s")
            .expect("subscription open");
        if i >= 50 {
            latencies.push(sent.elapsed());
        }
    }
    latencies.sort();
    println!("alert latency, end to end (publish window result to METRICS → alert received on alerts.>), {n} transitions, one at a time:");
    println!(
        "  p50 {:?}  p90 {:?}  p99 {:?}  max {:?}",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.90),
        percentile(&latencies, 0.99),
        percentile(&latencies, 1.0)
    );
    let name = "citypulse_alerts_evaluation_latency_seconds";
    println!("service histogram (receipt of window result → transition published and acked by ALERTS), bucket-interpolated:");
    println!(
        "  p50 {:.3} ms  p99 {:.3} ms",
        histogram_quantile(&registry, name, 0.50).unwrap_or(f64::NAN) * 1e3,
        histogram_quantile(&registry, name, 0.99).unwrap_or(f64::NAN) * 1e3
    );

    // Throughput: 10 districts x 50 sensors, 20 minutes, AQI steady (no transitions) published
    // concurrently, then time until the consumer acked the last one.
    let mut batch = Vec::new();
    for m in 0..20u64 {
        for d in 0..10 {
            let district = format!("t{d:02}");
            batch.push(window(&district, None, minute + m, 40));
            for s in 0..50 {
                batch.push(window(&district, Some(format!("s{s:02}")), minute + m, 40));
            }
        }
    }
    let total = batch.len();
    let start = Instant::now();
    // Each publish awaits its ack inside the window: the client bounds unacknowledged publishes.
    let acks = futures::stream::iter(batch.into_iter().map(publish))
        .buffer_unordered(256)
        .collect::<Vec<_>>()
        .await;
    let last = acks.into_iter().max().unwrap_or(0);
    let published = start.elapsed();
    let stream = js.get_stream("METRICS").await.unwrap();
    loop {
        let info = stream.consumer_info("alerts").await.unwrap();
        if info.ack_floor.stream_sequence >= last {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let processed = start.elapsed();
    println!(
        "throughput: {total} window results published in {published:?}, all evaluated and checkpoint-acked after {processed:?} ({:.0} results/s)",
        total as f64 / processed.as_secs_f64()
    );
    shutdown.trigger();
    svc.await.unwrap().unwrap();
}
