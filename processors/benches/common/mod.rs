//! What the windowing benches share: generated traffic readings and the fold the shell does.

use citypulse_processors::window::{CoreConfig, PartitionState};
use citypulse_schema::{Measurement, Reading, Traffic};
use std::sync::Arc;

/// Event time of the first reading.
pub const T0: u64 = 1_767_225_600_000;

/// `detectors` loop detectors every 30 s for `minutes`, in time order; `ids(d)` names detector
/// `d` and its district.
pub fn traffic(
    detectors: u64,
    minutes: u64,
    ids: impl Fn(u64) -> (String, String),
) -> Vec<Reading> {
    let mut out = Vec::new();
    for step in 0..minutes * 2 {
        for d in 0..detectors {
            let count = ((d * 7 + step * 13) % 23) as u32;
            let (sensor, district) = ids(d);
            out.push(Reading {
                sensor,
                district,
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

/// Feeds every reading into a new partition, closing windows after every 1,000 (as the shell
/// flushes per batch); the results made.
pub fn feed(cfg: &Arc<CoreConfig>, readings: &[Reading]) -> usize {
    let mut state = PartitionState::new(cfg.clone());
    let mut out = Vec::new();
    let mut results = 0;
    for (i, r) in readings.iter().enumerate() {
        state.observe(r, 0);
        if i % 1_000 == 999 {
            results += state.close_ready(&mut out);
            out.clear();
        }
    }
    results + state.close_ready(&mut out)
}
