//! `sim-bench`: readings/s of the simulator's pure core (generate + encode) and, with
//! `--nats-url`, of publishing through JetStream with acks.
//!
//! ```text
//! cargo run --release -p citypulse-simulator --bin sim-bench -- --sensors 100000 --simulated 10m
//! cargo run --release -p citypulse-simulator --bin sim-bench -- --nats-url nats://127.0.0.1:4222
//! ```

use anyhow::Context as _;
use citypulse_runtime::shutdown::Shutdown;
use citypulse_simulator::city::City;
use citypulse_simulator::engine::{Settings, Simulator};
use citypulse_simulator::faults::FaultRates;
use citypulse_simulator::metrics::SimMetrics;
use citypulse_simulator::publish::{Mode, Publisher};
use clap::Parser;
use std::time::{Duration, Instant};

/// 2026-01-05T06:00:00Z.
const START: u64 = 1_767_592_800_000;

#[derive(Debug, Parser)]
#[command(
    about = "Readings/s of the simulator core, and through JetStream when --nats-url is given"
)]
struct Args {
    /// Sensors in the (built-in, scaled) city.
    #[arg(long, env = "CITYPULSE_SIM_BENCH_SENSORS", default_value_t = 100_000)]
    sensors: usize,
    /// Simulated time to generate.
    #[arg(long, env = "CITYPULSE_SIM_BENCH_SIMULATED", default_value = "10m",
          value_parser = citypulse_runtime::duration::parse_positive)]
    simulated: Duration,
    /// Also publish everything through JetStream on this server (stream RAW is created if missing).
    #[arg(long, env = "CITYPULSE_SIM_BENCH_NATS_URL")]
    nats_url: Option<String>,
    /// Publishes awaiting their ack at once.
    #[arg(
        long,
        env = "CITYPULSE_SIM_BENCH_MAX_IN_FLIGHT",
        default_value_t = 1024
    )]
    max_in_flight: usize,
    /// Fault preset: demo rates (as `--faults demo`) or none.
    #[arg(long, env = "CITYPULSE_SIM_BENCH_FAULTS")]
    faults: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let city = City::builtin_scaled(args.sensors);
    let mut settings = Settings::new(1, START);
    if args.faults {
        settings.faults = FaultRates::DEMO;
    }
    let end = START + args.simulated.as_millis() as u64;

    let setup = Instant::now();
    let mut sim = Simulator::new(&city, settings.clone());
    let setup = setup.elapsed();
    let t = Instant::now();
    let mut out = Vec::new();
    let mut readings = 0u64;
    let mut bytes = 0u64;
    let mut at = START;
    while at < end {
        at = (at + 60_000).min(end);
        out.clear();
        sim.step(at, usize::MAX, &mut out);
        readings += out.len() as u64;
        bytes += out
            .iter()
            .filter_map(|m| m.payload.as_ref())
            .map(|p| p.len() as u64)
            .sum::<u64>();
    }
    let core = t.elapsed();
    println!(
        "core: {} sensors, {} simulated, {readings} readings ({:.0} B avg) in {:.2?} (+{:.2?} setup): {:.0} readings/s",
        args.sensors,
        humantime::format_duration(args.simulated),
        bytes as f64 / readings.max(1) as f64,
        core,
        setup,
        readings as f64 / core.as_secs_f64()
    );

    if let Some(url) = args.nats_url {
        let rt = tokio::runtime::Runtime::new()?;
        rt.block_on(async move {
            let client = async_nats::connect(&url)
                .await
                .with_context(|| format!("connecting to NATS at {url}"))?;
            let registry = prometheus::Registry::new();
            let metrics = SimMetrics::new(&registry)?;
            let publisher = Publisher::new(
                client,
                Mode::JetStream,
                args.max_in_flight,
                Duration::from_secs(120),
                metrics.clone(),
            );
            citypulse_runtime::jetstream::ensure_stream(
                publisher.jetstream(),
                citypulse_simulator::raw_stream_config(),
            )
            .await?;
            let shutdown = Shutdown::new();
            let mut sim = Simulator::new(&city, settings);
            let t = Instant::now();
            let mut at = START;
            while at < end {
                at = (at + 10_000).min(end);
                out.clear();
                sim.step(at, usize::MAX, &mut out);
                publisher.publish(&out, &shutdown).await?;
            }
            let took = t.elapsed();
            let totals = metrics.totals();
            println!(
                "jetstream: {} published, {} acked, {} errors in {:.2?}: {:.0} acked readings/s (max in flight {})",
                totals.published,
                totals.acked,
                totals.errors,
                took,
                totals.acked as f64 / took.as_secs_f64(),
                args.max_in_flight
            );
            anyhow::Ok(())
        })?;
    }
    Ok(())
}
