//! State size at 100,000 sensors: the simulator's built-in city scaled to 100,000 sensors (its
//! mix of loop detectors and air stations), readings fed through one `PartitionState` per
//! READINGS partition (8), then each partition's checkpoint encoded as the service writes it.
//! Air stations report every 5 min for 25 hours first (a full day of hourly history: the
//! steady state), then detectors every 30 s for 30 minutes. Prints bytes per active sensor, in
//! the checkpoint and in memory: the process's anonymous resident memory (`RssAnon`) with the
//! state, above what it was before, under the services' allocator (`runtime::alloc`, freed pages
//! returned after 1 s).
//!
//! `cargo bench -p citypulse-processors --bench state`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use citypulse_processors::checkpoint;
use citypulse_processors::registry::SegmentRegistry;
use citypulse_processors::window::{CoreConfig, PartitionState, WindowSpec};
use citypulse_schema::{partition_of, Air, Measurement, Pollutant, Reading, Traffic};
use citypulse_simulator::city::City;
use std::sync::Arc;
use std::time::Instant;

#[global_allocator]
static ALLOC: citypulse_runtime::alloc::Allocator = citypulse_runtime::alloc::ALLOCATOR;

const T0: u64 = 1_767_225_600_000;
const HOUR: u64 = 3_600_000;
const PARTITIONS: u32 = 8;

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

    /// (total checkpoint bytes, largest partition's bytes, its encode time in ms, sensors).
    fn measure(&self) -> (usize, usize, f64, usize) {
        let mut total = 0;
        let mut largest = (0, 0.0);
        for (p, s) in self.states.iter().enumerate() {
            let started = Instant::now();
            let bytes = checkpoint::encode(p as u32, 1, s.data(), &[]);
            let took = started.elapsed().as_secs_f64() * 1e3;
            total += bytes.len();
            if bytes.len() > largest.0 {
                largest = (bytes.len(), took);
            }
        }
        let sensors = self.states.iter().map(PartitionState::sensors).sum();
        (total, largest.0, largest.1, sensors)
    }
}

fn air_readings(city: &City, hours: u64, mut each: impl FnMut(&Reading)) {
    for step in 0..hours * 12 {
        for d in &city.districts {
            for (i, st) in d.stations.iter().enumerate() {
                let c = 4.0 + ((i as u64 * 7 + step * 3) % 50) as f64 * 0.9 + 0.123;
                let has = |p: Pollutant| st.pollutants.contains(&p);
                each(&Reading {
                    sensor: st.id.clone(),
                    district: d.id.clone(),
                    ts: T0 + step * 300_000 + (i as u64 % 30) * 1_000,
                    seq: step,
                    data: Measurement::Air(Air {
                        pm25_ugm3: has(Pollutant::Pm25).then_some(c),
                        pm10_ugm3: has(Pollutant::Pm10).then_some(c * 1.7),
                        o3_ppb: has(Pollutant::O3).then_some(30.0 + c),
                        no2_ppb: has(Pollutant::No2).then_some(c * 0.8),
                        so2_ppb: has(Pollutant::So2).then_some(c * 0.2),
                        co_ppm: has(Pollutant::Co).then_some(c / 40.0),
                        temp_c: st.weather.then_some(14.5),
                        rh_pct: st.weather.then_some(66.0),
                        interval_s: Some(300),
                    }),
                });
            }
        }
    }
}

fn traffic_readings(city: &City, from: u64, minutes: u64, mut each: impl FnMut(&Reading)) {
    for step in 0..minutes * 2 {
        for d in &city.districts {
            for seg in &d.segments {
                for (i, det) in seg.detectors.iter().enumerate() {
                    let count = ((i as u64 * 5 + step * 11) % 17) as u32;
                    let v = seg.free_flow_kmh * (0.6 + ((step + i as u64) % 5) as f64 * 0.1) + 0.37;
                    each(&Reading {
                        sensor: det.clone(),
                        district: d.id.clone(),
                        ts: from + step * 30_000 + (i as u64 % 30) * 1_000,
                        seq: step,
                        data: Measurement::Traffic(Traffic {
                            count,
                            interval_s: 30,
                            occupancy: f64::from(count) * 0.012,
                            speed_kmh: (count > 0).then_some(v),
                            lanes: seg.lanes,
                        }),
                    });
                }
            }
        }
    }
}

/// The process's anonymous resident memory (heap and stacks), KiB.
fn rss_anon_kib() -> u64 {
    // jemalloc returns freed pages after its 1 s decay: wait them out first.
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("RssAnon:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn report(what: &str, run: &Run, took: f64) {
    let (total, largest, encode_ms, sensors) = run.measure();
    let memory = rss_anon_kib().saturating_sub(run.base_kib) * 1024;
    println!(
        "{what}: {sensors} sensors, {} readings in {took:.1} s, {} results; \
         checkpoints {:.1} MiB in all = {:.0} bytes per active sensor; largest partition {:.2} MiB, \
         encoded in {encode_ms:.0} ms; in memory {:.1} MiB = {:.0} bytes per active sensor",
        run.readings,
        run.results,
        total as f64 / (1024.0 * 1024.0),
        total as f64 / sensors as f64,
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
