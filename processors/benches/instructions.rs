//! One fold of a partition at 100,000 sensors, for an instruction count rather than a time:
//! 12,500 loop detectors (a partition's share of 100,000 sensors) in 12 districts, every 30 s
//! for 6 minutes (150,000 readings), through `PartitionState::observe`, with the ready windows
//! closed every 1,000 readings as the shell does. Valgrind counts the same instructions for the
//! same binary whatever else the machine is doing, so two builds compare on a busy machine:
//!
//! ```text
//! cargo bench -p citypulse-processors --bench instructions --no-run   # prints the binary
//! valgrind --tool=callgrind --toggle-collect='*instructions::fold*' <that binary>
//! ```
//!
//! The `Collected` line is the fold's instructions (the readings are made outside it).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use citypulse_processors::registry::SegmentRegistry;
use citypulse_processors::window::{CoreConfig, PartitionState, WindowSpec};
use citypulse_schema::{Measurement, Reading, Traffic};
use std::sync::Arc;

const T0: u64 = 1_767_225_600_000;
const DETECTORS: u64 = 12_500;
const DISTRICTS: u64 = 12;

/// Every detector every 30 s for `minutes`, named as in the simulator's city
/// (`loop-d01-0001`).
fn readings(minutes: u64) -> Vec<Reading> {
    let mut out = Vec::new();
    for step in 0..minutes * 2 {
        for d in 0..DETECTORS {
            let count = ((d * 7 + step * 13) % 23) as u32;
            out.push(Reading {
                sensor: format!("loop-d{:02}-{:04}", d % DISTRICTS + 1, d / DISTRICTS + 1),
                district: format!("d{:02}", d % DISTRICTS + 1),
                ts: T0 + step * 30_000 + d % 30 * 1_000,
                seq: step,
                data: Measurement::Traffic(Traffic {
                    count,
                    interval_s: 30,
                    occupancy: f64::from(count) * 0.01,
                    speed_kmh: (count > 0).then_some(30.0 + (d % 50) as f64 + 0.25),
                    lanes: 2,
                }),
            });
        }
    }
    out
}

/// Folds `readings` into a new partition with one-minute tumbling windows; the results made.
#[inline(never)]
fn fold(readings: &[Reading]) -> usize {
    let cfg = Arc::new(CoreConfig {
        spec: WindowSpec::hopping(60_000, 60_000).unwrap(),
        allowed_lateness_ms: 30_000,
        idle_timeout_ms: u64::MAX,
        registry: SegmentRegistry::empty(),
    });
    let mut state = PartitionState::new(cfg);
    let (mut out, mut results) = (Vec::new(), 0);
    for (i, r) in readings.iter().enumerate() {
        state.observe(r, 0);
        if i % 1_000 == 999 {
            results += state.close_ready(&mut out);
            out.clear();
        }
    }
    results + state.close_ready(&mut out)
}

fn main() {
    let readings = readings(6);
    let results = fold(&readings);
    println!(
        "{} readings folded, {results} window results",
        readings.len()
    );
}
