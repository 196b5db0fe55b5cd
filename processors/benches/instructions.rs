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
use citypulse_processors::window::{CoreConfig, WindowSpec};
use citypulse_schema::Reading;
use std::sync::Arc;

mod common;

const DETECTORS: u64 = 12_500;
const DISTRICTS: u64 = 12;

/// Every detector every 30 s for `minutes`, named as in the simulator's city
/// (`loop-d01-0001`).
fn readings(minutes: u64) -> Vec<Reading> {
    common::traffic(DETECTORS, minutes, |d| {
        let district = d % DISTRICTS + 1;
        (
            format!("loop-d{district:02}-{:04}", d / DISTRICTS + 1),
            format!("d{district:02}"),
        )
    })
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
    common::feed(&cfg, readings)
}

fn main() {
    let readings = readings(6);
    let results = fold(&readings);
    println!(
        "{} readings folded, {results} window results",
        readings.len()
    );
}
