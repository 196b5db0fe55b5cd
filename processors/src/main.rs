//! `citypulse-processors`: event-time windows over READINGS, window results on METRICS.

use citypulse_processors::config::{Command, Config};
use citypulse_runtime::admin::{self, Health};
use citypulse_runtime::nats::{connect, NatsMetrics};
use citypulse_runtime::{shutdown::Shutdown, telemetry};
use clap::Parser;
use std::process::ExitCode;

#[global_allocator]
static ALLOC: citypulse_runtime::alloc::Allocator = citypulse_runtime::alloc::ALLOCATOR;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    telemetry::init(&config.log);
    if let Some(Command::Replay(args)) = &config.command {
        return citypulse_processors::replay::command(&config, args).await;
    }
    match serve(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "processors stopped");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let settings = config.settings().map_err(anyhow::Error::msg)?;
    let registry = prometheus::Registry::new();
    let (health, shutdown) = (Health::new(), Shutdown::install());
    let (_, admin) = admin::serve(
        config.metrics_addr,
        registry.clone(),
        health.clone(),
        shutdown.clone(),
    )
    .await?;
    let nats_metrics = NatsMetrics::new(&registry)?;
    let client = connect(&config.nats, "citypulse-processors", nats_metrics, health).await?;
    let result = citypulse_processors::run(settings, client, &registry, shutdown.clone()).await;
    shutdown.trigger();
    let _ = admin.await;
    result
}
