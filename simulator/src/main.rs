//! `citypulse-simulator`: wires config, logs, metrics and NATS, then runs the simulator.

use anyhow::Context as _;
use citypulse_runtime::{admin, nats, shutdown::Shutdown, telemetry};
use citypulse_simulator::config::{now_ms, Command, Config, Plan};
use clap::Parser;
use std::process::ExitCode;

#[global_allocator]
static ALLOC: citypulse_runtime::alloc::Allocator = citypulse_runtime::alloc::ALLOCATOR;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init(&config.log);
    // Flag and city-file errors are the operator's to fix: plain text with every line, exit 2.
    let plan = match config.plan(now_ms()) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("citypulse-simulator: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match &config.command {
        Some(Command::City(cmd)) => citypulse_simulator::city_command(&plan.city, cmd.print)
            .map(|text| print!("{text}"))
            .map_err(anyhow::Error::from),
        None => serve(config, plan).await,
    };
    if let Err(e) = result {
        tracing::error!(error = format!("{e:#}"), "simulator failed");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn serve(config: Config, plan: Plan) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let (shutdown, health) = (Shutdown::install(), admin::Health::new());
    admin::serve(
        config.metrics_addr,
        registry.clone(),
        health.clone(),
        shutdown.clone(),
    )
    .await
    .with_context(|| format!("binding the admin server on {}", config.metrics_addr))?;
    let nats_metrics = nats::NatsMetrics::new(&registry)?;
    let client = nats::connect(&config.nats, "citypulse-simulator", nats_metrics, health).await?;
    citypulse_simulator::run(&config, plan, client, &registry, shutdown.clone()).await?;
    shutdown.trigger();
    Ok(())
}
