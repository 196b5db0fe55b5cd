//! Criterion bench of the pure evaluator with the default rules: the cost of evaluating one
//! window result (steady state, and with a transition each time), of judging a district's
//! sensors on `tick`, and of encoding the checkpoint.
//!
//! `cargo bench -p citypulse-alerts --bench evaluator`
#![allow(clippy::expect_used, missing_docs)]

use citypulse_alerts::engine::{Evaluator, RuleSet};
use citypulse_runtime::zstd_cbor;
use citypulse_schema::{AirMetrics, AlertEvent, Los, TrafficMetrics, WindowMetrics, WindowResult};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

const MIN: u64 = 60_000;
const T0: u64 = 1_767_225_600_000;
const DISTRICTS: usize = 10;
const SENSORS: usize = 20;

fn air(district: usize, sensor: Option<usize>, minute: u64, aqi: u16) -> WindowResult {
    WindowResult {
        window_start: T0 + minute * MIN,
        window_end: T0 + (minute + 1) * MIN,
        district: format!("d{district:02}"),
        sensor: sensor.map(|s| format!("aq-{district:02}{s:02}")),
        readings: 2,
        sensors: 1,
        metrics: WindowMetrics::Air(Box::new(AirMetrics {
            aqi: Some(aqi),
            pm25_ugm3: Some(f64::from(aqi) / 7.0 + minute as f64 * 0.01),
            ..AirMetrics::default()
        })),
    }
}

fn traffic(district: usize, sensor: Option<usize>, minute: u64) -> WindowResult {
    WindowResult {
        window_start: T0 + minute * MIN,
        window_end: T0 + (minute + 1) * MIN,
        district: format!("d{district:02}"),
        sensor: sensor.map(|s| format!("tr-{district:02}{s:02}")),
        readings: 2,
        sensors: 1,
        metrics: WindowMetrics::Traffic(TrafficMetrics {
            flow_vph: 900.0,
            occupancy: 0.12,
            speed_kmh: Some(42.0 + (minute % 7) as f64),
            density_vpkm: Some(12.0),
            los: Some(Los::C),
            congestion_index: Some(0.2),
            congested_share: Some(0.1),
            travel_time_index: Some(1.25),
        }),
    }
}

/// One minute of a city: per district an air and a traffic aggregate and their sensors.
fn minute(m: u64) -> Vec<WindowResult> {
    let mut out = Vec::with_capacity(DISTRICTS * (2 + 2 * SENSORS));
    for d in 0..DISTRICTS {
        out.push(air(d, None, m, 40 + (m % 11) as u16));
        out.push(traffic(d, None, m));
        for s in 0..SENSORS {
            out.push(air(d, Some(s), m, 30 + ((m + s as u64) % 13) as u16));
            out.push(traffic(d, Some(s), m));
        }
    }
    out
}

fn warmed() -> (Evaluator, u64) {
    let rules = Arc::new(RuleSet::default_rules().expect("default rules"));
    let mut ev = Evaluator::new(rules);
    let mut out = Vec::new();
    for m in 0..60 {
        for w in minute(m) {
            ev.evaluate(&w, &mut out);
        }
    }
    (ev, 60)
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("evaluate");
    g.throughput(Throughput::Elements(1));

    // Steady state: a city's window results, no transition.
    g.bench_function("window_result_steady", |b| {
        b.iter_custom(|iters| {
            let (mut ev, mut m) = warmed();
            let mut out: Vec<AlertEvent> = Vec::new();
            let mut elapsed = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let batch = minute(m);
                m += 1;
                let start = Instant::now();
                for w in batch.iter().take((iters - done) as usize) {
                    ev.evaluate(black_box(w), &mut out);
                    done += 1;
                }
                elapsed += start.elapsed();
                out.clear();
            }
            elapsed
        })
    });

    // Every result makes a transition: a district AQI alternating across 100 with `for` 0.
    let flip_rules = Arc::new(
        citypulse_alerts::engine::rules::load(
            r#"
[[rule]]
name = "aqi"
kind = "air"
metric = "aqi"
op = ">"
threshold = 100
clear = 90
severity = "warning"
summary = "AQI {value} ({category}) in {district}"
"#,
        )
        .expect("rules"),
    );
    g.bench_function("window_result_with_transition", |b| {
        b.iter_custom(|iters| {
            let mut ev = Evaluator::new(Arc::clone(&flip_rules));
            let mut out = Vec::with_capacity(4);
            let mut w = air(0, None, 0, 120);
            let start = Instant::now();
            for i in 0..iters {
                w.window_start = T0 + i * MIN;
                w.window_end = T0 + (i + 1) * MIN;
                w.metrics = WindowMetrics::Air(Box::new(AirMetrics {
                    aqi: Some(if i % 2 == 0 { 120 } else { 50 }),
                    ..AirMetrics::default()
                }));
                ev.evaluate(black_box(&w), &mut out);
                out.clear();
            }
            start.elapsed()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("state");
    g.bench_function("tick_city", |b| {
        b.iter_batched(
            warmed,
            |(mut ev, m)| {
                let mut out = Vec::new();
                ev.tick(T0 + m * MIN, &mut out);
                out
            },
            BatchSize::LargeInput,
        )
    });
    let (ev, _) = warmed();
    let mut bytes = Vec::new();
    ciborium::into_writer(ev.state(), &mut bytes).expect("encode");
    let compressed = zstd_cbor::encode(ev.state()).expect("encode");
    eprintln!(
        "checkpoint of {} districts x {} sensors x 2 kinds: {} bytes of CBOR, {} compressed",
        DISTRICTS,
        SENSORS,
        bytes.len(),
        compressed.len()
    );
    // What the shell does at each checkpoint: CBOR streamed through zstd.
    g.bench_function("checkpoint_encode_city", |b| {
        b.iter(|| zstd_cbor::encode(black_box(ev.state())).expect("encode"))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
