//! State size at 100,000 sensors: the simulator's built-in city scaled to 100,000 sensors (its
//! mix of loop detectors and air stations), readings fed through one `PartitionState` per
//! READINGS partition (8), then each partition's checkpoint encoded as the service writes it
//! (CBOR compressed with zstd; the uncompressed size is printed beside it).
//! Air stations report every 5 min for 25 hours first (a full day of hourly history: the
//! steady state), then detectors every 30 s for 30 minutes. Prints bytes per active sensor, in
//! the checkpoint and in memory: the process's anonymous resident memory (`RssAnon`) with the
//! state, above what it was before, under the services' allocator (`runtime::alloc`, freed pages
//! returned after 100 ms).
//!
//! `cargo bench -p citypulse-processors --bench state`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use citypulse_processors::checkpoint;
use citypulse_processors::registry::SegmentRegistry;
use citypulse_processors::window::{CoreConfig, PartitionState, WindowSpec};
use citypulse_runtime::zstd_cbor;
use citypulse_schema::{partition_of, Kind, Reading};
use citypulse_simulator::city::City;
use citypulse_simulator::engine::{Settings, Simulator};
use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static ALLOC: citypulse_runtime::alloc::Allocator = citypulse_runtime::alloc::ALLOCATOR;

const T0: u64 = 1_767_225_600_000;
const HOUR: u64 = 3_600_000;
const PARTITIONS: u32 = 8;

/// What the checkpoints of a run take.
#[derive(Default)]
struct Sizes {
    /// All partitions' checkpoints as written (zstd), bytes.
    total: usize,
    /// The same, uncompressed (the CBOR: format 2's size).
    cbor: usize,
    /// The largest partition's, as written.
    largest: usize,
    /// Its encode time (CBOR and compression), ms.
    encode_ms: f64,
    sensors: usize,
}

struct Run {
    /// `RssAnon` before the run, KiB.
    base_kib: u64,
    states: Vec<PartitionState>,
    out: Vec<citypulse_schema::WindowResult>,
    readings: u64,
    results: usize,
}

impl Run {
    fn new(registry: &SegmentRegistry) -> Run {
        let cfg = Arc::new(CoreConfig {
            spec: WindowSpec::tumbling(60_000).unwrap(),
            allowed_lateness_ms: 30_000,
            idle_timeout_ms: u64::MAX,
            registry: registry.clone(),
        });
        Run {
            base_kib: rss_anon_kib(),
            states: (0..PARTITIONS)
                .map(|_| PartitionState::new(cfg.clone()))
                .collect(),
            out: Vec::new(),
            readings: 0,
            results: 0,
        }
    }

    /// Feeds one reading, closing ready windows after every 10,000.
    fn feed(&mut self, r: &Reading) {
        self.states[partition_of(&r.district, PARTITIONS) as usize].observe(r, 0);
        self.readings += 1;
        if self.readings % 10_000 == 0 {
            self.close();
        }
    }

    fn close(&mut self) {
        for s in &mut self.states {
            self.results += s.close_ready(&mut self.out);
            self.out.clear();
        }
    }

    fn measure(&self) -> Sizes {
        let mut sizes = Sizes::default();
        for (p, s) in self.states.iter().enumerate() {
            let started = Instant::now();
            let bytes = checkpoint::encode(p as u32, 1, s.data(), &[]);
            let took = started.elapsed().as_secs_f64() * 1e3;
            sizes.total += bytes.len();
            sizes.cbor += zstd_cbor::decompress(&bytes, u64::MAX).unwrap().len();
            if bytes.len() > sizes.largest {
                (sizes.largest, sizes.encode_ms) = (bytes.len(), took);
            }
        }
        sizes.sensors = self.states.iter().map(PartitionState::sensors).sum();
        sizes
    }
}

/// Feeds `each` the simulator's readings of `kind` from `from` until `to` (no faults, seed 42),
/// `kind`'s sensors reporting every `interval_s`, the others once a day (and skipped): the
/// values carry the simulator's noise, diurnal patterns and episodes, as real data would, and
/// are not a pattern a compressor could learn.
fn simulated(
    city: &City,
    kind: Kind,
    interval_s: u32,
    from: u64,
    to: u64,
    mut each: impl FnMut(&Reading),
) {
    let mut settings = Settings::new(42, from);
    (settings.traffic_interval_s, settings.air_interval_s) = match kind {
        Kind::Traffic => (interval_s, 86_400),
        Kind::Air => (86_400, interval_s),
    };
    let mut sim = Simulator::new(city, settings);
    let mut out = Vec::new();
    while sim.step(to, 65_536, &mut out) > 0 {
        for o in out.drain(..).filter(|o| o.kind == kind) {
            if let Some(payload) = o.payload {
                each(&Reading::decode(&payload).unwrap());
            }
        }
    }
}

fn air_readings(city: &City, hours: u64, each: impl FnMut(&Reading)) {
    simulated(city, Kind::Air, 300, T0, T0 + hours * HOUR, each);
}

fn traffic_readings(city: &City, from: u64, minutes: u64, each: impl FnMut(&Reading)) {
    simulated(city, Kind::Traffic, 30, from, from + minutes * 60_000, each);
}

/// The process's anonymous resident memory (heap and stacks), KiB.
fn rss_anon_kib() -> u64 {
    // jemalloc returns freed pages after its decay (100 ms; 1 s before): wait them out first.
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn report(what: &str, run: &Run, took: f64) {
    let Sizes {
        total,
        cbor,
        largest,
        encode_ms,
        sensors,
    } = run.measure();
    let memory = rss_anon_kib().saturating_sub(run.base_kib) * 1024;
    println!(
        "{what}: {sensors} sensors, {} readings in {took:.1} s, {} results; \
         checkpoints {:.2} MiB in all = {:.0} bytes per active sensor ({:.0} uncompressed); \
         largest partition {:.2} MiB, encoded in {encode_ms:.0} ms; \
         in memory {:.1} MiB = {:.0} bytes per active sensor",
        run.readings,
        run.results,
        total as f64 / (1024.0 * 1024.0),
        total as f64 / sensors as f64,
        cbor as f64 / sensors as f64,
        largest as f64 / (1024.0 * 1024.0),
        memory as f64 / (1024.0 * 1024.0),
        memory as f64 / sensors as f64,
    );
}

fn main() {
    let city = City::builtin_scaled(100_000);
    let registry = SegmentRegistry::from_toml(&city.to_toml().unwrap()).unwrap();
    println!(
        "city: {} detectors, {} air stations, {} districts; registry lists {} detectors",
        city.traffic_sensor_count(),
        city.air_sensor_count(),
        city.districts.len(),
        registry.len()
    );
    let traffic_from = T0 + 25 * HOUR;

    // Everything: a day of air history, then half an hour of traffic, registry speeds.
    let mut all = Run::new(&registry);
    let started = Instant::now();
    air_readings(&city, 25, |r| all.feed(r));
    all.close();
    traffic_readings(&city, traffic_from, 30, |r| all.feed(r));
    all.close();
    report(
        "all sensors (free-flow speed from the city file)",
        &all,
        started.elapsed().as_secs_f64(),
    );

    // Detectors alone, with and without the registry (learned free-flow speed histograms).
    for (what, registry) in [
        (
            "detectors only, free-flow speed from the city file",
            registry.clone(),
        ),
        (
            "detectors only, free-flow speed learned",
            SegmentRegistry::empty(),
        ),
    ] {
        let mut run = Run::new(&registry);
        let started = Instant::now();
        traffic_readings(&city, traffic_from, 30, |r| run.feed(r));
        run.close();
        report(what, &run, started.elapsed().as_secs_f64());
    }

    // Stations alone, after a day.
    let mut run = Run::new(&registry);
    let started = Instant::now();
    air_readings(&city, 25, |r| run.feed(r));
    run.close();
    report(
        "air stations only, after 25 h",
        &run,
        started.elapsed().as_secs_f64(),
    );
}
