//! Criterion bench of the pure core (generate + encode) with 100,000 sensors: one simulated
//! minute per iteration (about 300,000 readings), reported as readings per second.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use citypulse_simulator::city::City;
use citypulse_simulator::engine::{Settings, Simulator};
use citypulse_simulator::faults::FaultRates;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const START: u64 = 1_767_592_800_000;

fn core(c: &mut Criterion) {
    let city = City::builtin_scaled(100_000);
    let mut settings = Settings::new(1, START);
    settings.faults = FaultRates::DEMO;
    // Warm the model up past the first readings, then measure one simulated minute.
    let mut warm = Simulator::new(&city, settings);
    let mut out = Vec::new();
    warm.step(START + 60_000, usize::MAX, &mut out);
    let per_minute = {
        let mut probe = warm.clone();
        out.clear();
        probe.step(START + 120_000, usize::MAX, &mut out);
        out.len() as u64
    };
    let mut group = c.benchmark_group("core_100k_sensors");
    group.sample_size(10);
    group.throughput(Throughput::Elements(per_minute));
    group.bench_function("one_simulated_minute", |b| {
        b.iter_batched(
            || (warm.clone(), Vec::with_capacity(per_minute as usize + 1024)),
            |(mut sim, mut out)| {
                sim.step(START + 120_000, usize::MAX, &mut out);
                out
            },
            BatchSize::PerIteration,
        );
    });
    group.finish();
}

criterion_group!(benches, core);
criterion_main!(benches);
