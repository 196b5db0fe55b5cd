//! Throughput through NATS: the simulator's built-in city scaled to `CITYPULSE_BENCH_SENSORS`
//! sensors (default 10,000) generates `CITYPULSE_BENCH_MINUTES` simulated minutes (default 30)
//! of readings, published into READINGS as ingest publishes them (8 partitions); then the
//! processors start (in-process, all 8 partitions, `--city` registry) on that backlog, and the
//! bench measures the time until every reading is folded in and every closed window is
//! published and acknowledged in METRICS (checkpoints included). Prints readings/s, results/s,
//! publish latency and checkpoint sizes.
//!
//! `cargo bench -p citypulse-processors --bench nats`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use async_nats::HeaderMap;
use citypulse_harness::NatsServer;
use citypulse_processors::config::Config;
use citypulse_runtime::shutdown::Shutdown;
use citypulse_runtime::stream_config::{self, Limits};
use citypulse_schema::{streams, Reading, SensorSubject};
use citypulse_simulator::city::City;
use citypulse_simulator::engine::{run_window, Settings};
use clap::Parser;
use std::time::{Duration, Instant};

const T0: u64 = 1_767_225_600_000;

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn metric(registry: &prometheus::Registry, name: &str) -> (f64, u64) {
    let mut sum = 0.0;
    let mut count = 0;
    for f in registry.gather().iter().filter(|f| f.name() == name) {
        for m in f.get_metric() {
            sum += m.get_counter().get_value() + m.get_gauge().get_value();
            sum += m.get_histogram().get_sample_sum();
            count += m.get_histogram().get_sample_count();
        }
    }
    (sum, count)
}

fn main() {
    let sensors = env("CITYPULSE_BENCH_SENSORS", 10_000) as usize;
    let minutes = env("CITYPULSE_BENCH_MINUTES", 30);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let city = City::builtin_scaled(sensors);
        let readings: Vec<Reading> = run_window(&city, Settings::new(7, T0), T0 + minutes * 60_000)
            .into_iter()
            .filter_map(|o| o.payload)
            .map(|p| Reading::decode(&p).unwrap())
            .collect();
        let n = readings.len();
        let dir = tempfile::tempdir().unwrap();
        let city_file = dir.path().join("city.toml");
        std::fs::write(&city_file, city.to_toml().unwrap()).unwrap();

        let server = NatsServer::start();
        let client = async_nats::connect(server.url()).await.unwrap();
        let js = async_nats::jetstream::new(client.clone());
        // Capped to fit the harness's 1 GB JetStream store next to METRICS.
        let limits = Limits {
            max_bytes: 256 << 20,
            ..Limits::READINGS
        };
        js.create_stream(stream_config::readings(limits, 8))
            .await
            .unwrap();
        let started = Instant::now();
        for chunk in readings.chunks(1_000) {
            let mut acks = Vec::with_capacity(chunk.len());
            for r in chunk {
                let subject = SensorSubject::new(&r.district, r.kind(), &r.sensor)
                    .unwrap()
                    .readings_subject();
                let mut h = HeaderMap::new();
                h.insert(async_nats::header::NATS_MESSAGE_ID, r.msg_id().as_str());
                acks.push(js.publish_with_headers(subject, h, r.encode().into()).await.unwrap());
            }
            for a in acks {
                a.await.unwrap();
            }
        }
        let publish_s = started.elapsed().as_secs_f64();

        let registry = prometheus::Registry::new();
        let settings = Config::try_parse_from([
            "citypulse-processors",
            "--idle-timeout",
            "1h",
            "--city",
            city_file.to_str().unwrap(),
        ])
        .unwrap()
        .settings()
        .unwrap();
        let shutdown = Shutdown::new();
        let started = Instant::now();
        let task = {
            let (r, s, c) = (registry.clone(), shutdown.clone(), client.clone());
            tokio::spawn(async move { citypulse_processors::run(settings, c, &r, s).await })
        };
        let mut metrics_stream = loop {
            if let Ok(s) = js.get_stream(streams::METRICS).await {
                break s;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // When every reading was first seen folded in, then when every closed window was stored.
        let mut all_folded_at = None;
        let (folded_s, published_s, results) = loop {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let (folded, _) = metric(&registry, "citypulse_processors_readings_total");
            let (closed, _) = metric(&registry, "citypulse_processors_windows_closed_total");
            let stored = metrics_stream.info().await.unwrap().state.messages;
            let t = started.elapsed().as_secs_f64();
            if folded as usize >= n {
                let folded_s = *all_folded_at.get_or_insert(t);
                if stored as f64 >= closed {
                    break (folded_s, t, stored);
                }
            }
        };
        let (lat_sum, lat_count) = metric(&registry, "citypulse_processors_publish_latency_seconds");
        let (state_bytes, _) = metric(&registry, "citypulse_processors_state_bytes");
        let (ck_sum, ck_count) = metric(&registry, "citypulse_processors_checkpoint_seconds");
        shutdown.trigger();
        task.await.unwrap().unwrap();
        println!(
            "{sensors} sensors ({} detectors, {} stations), {minutes} simulated minutes: {n} readings",
            city.traffic_sensor_count(),
            city.air_sensor_count()
        );
        println!("  publish into READINGS: {:.0} readings/s ({publish_s:.2} s)", n as f64 / publish_s);
        println!(
            "  processors READINGS → METRICS: {:.0} readings/s ({published_s:.2} s incl. start-up; all folded at {folded_s:.2} s); {results} window results = {:.0} results/s",
            n as f64 / published_s,
            results as f64 / published_s
        );
        println!(
            "  mean publish latency {:.2} ms over {lat_count} results; {ck_count} checkpoints, mean {:.2} ms; last checkpoints {:.2} MiB in all",
            lat_sum / lat_count.max(1) as f64 * 1e3,
            ck_sum / ck_count.max(1) as f64 * 1e3,
            state_bytes / (1024.0 * 1024.0)
        );
    });
}
