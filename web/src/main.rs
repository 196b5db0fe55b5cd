//! `citypulse-web`: the live web view of the city.

use citypulse_runtime::{admin::Health, nats, shutdown::Shutdown, telemetry};
use citypulse_web::config::Config;
use clap::Parser;
use std::process::ExitCode;

#[global_allocator]
static ALLOC: citypulse_runtime::alloc::Allocator = citypulse_runtime::alloc::ALLOCATOR;

#[tokio::main]
async fn main() -> ExitCode {
    let cfg = Config::parse();
    telemetry::init(&cfg.log);
    let result = async {
        let registry = prometheus::Registry::new();
        let health = Health::new();
        let shutdown = Shutdown::install();
        let nats_metrics = nats::NatsMetrics::new(&registry)?;
        let client =
            nats::connect(&cfg.nats, "citypulse-web", nats_metrics, health.clone()).await?;
        let running =
            citypulse_web::start(&cfg, client.clone(), registry, health, shutdown).await?;
        running.task.await?;
        client.drain().await?;
        anyhow::Ok(())
    };
    match result.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "citypulse-web failed");
            ExitCode::FAILURE
        }
    }
}
