//! `citypulse-ingest`: wires configuration, logging, metrics and NATS, then runs ingest.

use anyhow::Context as _;
use citypulse_ingest::{run, Config};
use citypulse_runtime::{admin, nats, shutdown::Shutdown, telemetry};
use clap::Parser;
use std::process::ExitCode;

#[global_allocator]
static ALLOC: citypulse_runtime::alloc::Allocator = citypulse_runtime::alloc::ALLOCATOR;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init(&config.log);
    if let Err(e) = config.validate() {
        tracing::error!(error = %e, "invalid configuration");
        return ExitCode::from(2);
    }
    match start(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "ingest failed");
            ExitCode::FAILURE
        }
    }
}

async fn start(config: Config) -> anyhow::Result<()> {
    let registry = prometheus::Registry::new();
    let health = admin::Health::new();
    let shutdown = Shutdown::install();
    let nats_metrics = nats::NatsMetrics::new(&registry)?;
    let client = nats::connect(
        &config.nats,
        "citypulse-ingest",
        nats_metrics,
        health.clone(),
    )
    .await?;
    let (_, admin_task) = admin::serve(
        config.metrics_addr,
        registry.clone(),
        health,
        shutdown.clone(),
    )
    .await
    .with_context(|| format!("binding the admin server to {}", config.metrics_addr))?;
    run(config, client, &registry, shutdown.clone()).await?;
    shutdown.trigger();
    admin_task.await.context("admin server task")?;
    Ok(())
}
