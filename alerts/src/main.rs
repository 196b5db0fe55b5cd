//! `citypulse-alerts`: the alerts service (`run`, the default) and its tools for people.

use citypulse_alerts::config::{with_default_command, Cli, Command, RunConfig};
use citypulse_alerts::{cli, run};
use citypulse_runtime::{admin::Health, nats, shutdown::Shutdown, telemetry};
use clap::Parser;
use std::process::ExitCode;

#[global_allocator]
static ALLOC: citypulse_runtime::alloc::Allocator = citypulse_runtime::alloc::ALLOCATOR;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse_from(with_default_command(std::env::args_os()));
    match cli.command {
        Command::Run(cfg) => serve(*cfg).await,
        Command::CheckRules { file } => cli::check_rules(&file),
        Command::Tail(a) => cli::run_client(cli::tail(a)).await,
        Command::List(a) => cli::run_client(cli::list(a)).await,
        Command::Ack(a) => cli::run_client(cli::ack(a)).await,
        Command::Silence(a) => cli::run_client(cli::silence(a)).await,
        Command::Unsilence(a) => cli::run_client(cli::unsilence(a)).await,
        Command::Replay(a) => cli::run_client(cli::replay::replay(a)).await,
    }
}

async fn serve(cfg: RunConfig) -> ExitCode {
    telemetry::init(&cfg.log);
    let result = async {
        let registry = prometheus::Registry::new();
        let health = Health::new();
        let shutdown = Shutdown::install();
        let nats_metrics = nats::NatsMetrics::new(&registry)?;
        let client =
            nats::connect(&cfg.nats, "citypulse-alerts", nats_metrics, health.clone()).await?;
        run(cfg, client, registry, health, shutdown).await
    };
    match result.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "citypulse-alerts failed");
            ExitCode::FAILURE
        }
    }
}
