//! Criterion bench of the pure windowing core: readings per second through `observe` and
//! `close_ready` (every window closed and its results built), for traffic in tumbling and
//! hopping windows and for air stations over a day (hourly means, NowCast, 8-h and 24-h means).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use citypulse_processors::registry::SegmentRegistry;
use citypulse_processors::window::{CoreConfig, WindowSpec};
use citypulse_schema::{Air, Measurement, Reading};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::sync::Arc;

mod common;
use common::{feed, T0};

fn cfg(size: u64, hop: u64) -> Arc<CoreConfig> {
    Arc::new(CoreConfig {
        spec: WindowSpec::hopping(size, hop).unwrap(),
        allowed_lateness_ms: 30_000,
        idle_timeout_ms: u64::MAX,
        registry: SegmentRegistry::empty(),
    })
}

/// `detectors` loop detectors in 10 districts, every 30 s for `minutes`, in time order.
fn traffic(detectors: u64, minutes: u64) -> Vec<Reading> {
    common::traffic(detectors, minutes, |d| {
        (format!("loop-{d:05}"), format!("d{:02}", d % 10))
    })
}

/// `stations` air stations in 10 districts, every 5 min for `hours`.
fn air(stations: u64, hours: u64) -> Vec<Reading> {
    let mut out = Vec::new();
    for step in 0..hours * 12 {
        for s in 0..stations {
            let c = 5.0 + ((s * 3 + step * 7) % 40) as f64 * 0.7;
            out.push(Reading {
                sensor: format!("aq-{s:04}"),
                district: format!("d{:02}", s % 10),
                ts: T0 + step * 300_000 + s % 60 * 1_000,
                seq: step,
                data: Measurement::Air(Air {
                    pm25_ugm3: Some(c),
                    pm10_ugm3: Some(c * 1.8),
                    o3_ppb: Some(20.0 + c),
                    no2_ppb: Some(c * 0.6),
                    so2_ppb: Some(c * 0.1),
                    co_ppm: Some(c / 50.0),
                    temp_c: Some(15.0),
                    rh_pct: Some(60.0),
                    interval_s: Some(300),
                }),
            });
        }
    }
    out
}

fn core(c: &mut Criterion) {
    let mut group = c.benchmark_group("observe_and_close");
    group.sample_size(10);
    for (name, spec, readings) in [
        (
            "traffic_1000_detectors_30min_tumbling_1m",
            cfg(60_000, 60_000),
            traffic(1_000, 30),
        ),
        (
            "traffic_1000_detectors_30min_hopping_5m_every_1m",
            cfg(300_000, 60_000),
            traffic(1_000, 30),
        ),
        (
            "air_100_stations_26h_tumbling_1m",
            cfg(60_000, 60_000),
            air(100, 26),
        ),
    ] {
        group.throughput(Throughput::Elements(readings.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| feed(&spec, &readings));
        });
    }
    group.finish();
}

criterion_group!(benches, core);
criterion_main!(benches);
