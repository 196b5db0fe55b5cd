//! citypulse alerts: window results → rule state machine → alert transitions.
//!
//! **In**: window results on `metrics.<kind>.<district>[.<sensor>]` (stream METRICS), through
//! the durable pull consumer `alerts`; operator requests on `citypulse.alerts.{list,ack,silence,
//! unsilence}` (JSON request/reply, see [`api`]).
//! **Out**: one message per transition on `alerts.<severity>.<kind>.<district>` (stream ALERTS,
//! CBOR [`citypulse_schema::AlertEvent`], `Nats-Msg-Id` = [`citypulse_schema::AlertEvent::msg_id`]);
//! alert history in PostgreSQL (`alert_events`, `alert_acks`, `alert_silences`) when
//! `--database-url` is given; dead letters on `dlq.<reason>`.
//!
//! **Delivery**: at-least-once in, exactly-once effect out. The evaluator's state (pending
//! countdowns, firing alerts, acks, silences, unwritten history rows) is checkpointed in the KV
//! bucket `citypulse_alerts` with the METRICS sequence it includes; that sequence is acked only
//! after the checkpoint is written and its transitions were published and acked. A restart
//! resumes from the checkpoint and replays the rest deterministically (event time only), so an
//! alert never re-fires, no resolution is lost and no `for` countdown restarts; a re-published
//! transition is deduplicated by its message id.
//!
//! Module map:
//! - [`engine`] — PURE: [`engine::rules`] (TOML → validated rules), [`engine::evaluator`]
//!   (lifecycle), [`engine::notify`] (silences, acks, publication policy), templates.
//! - [`pipeline`] — SHELL: the one `select!` loop, checkpoints, acks.
//! - [`nats`] — ADAPTER: streams, consumer, publishing, KV checkpoint.
//! - [`store`] — ADAPTER: PostgreSQL alert history.
//! - [`api`] — operator request/reply payloads and their pure handler.
//! - [`cli`] — the tools for people: `check-rules`, `tail`, `list`, `ack`, `silence`, `unsilence`.
//! - [`config`], [`metrics`].

pub mod api;
pub mod cli;
pub mod config;
pub mod engine;
pub mod metrics;
pub mod nats;
pub mod outbox;
pub mod pipeline;
pub mod store;

use anyhow::Context as _;
use citypulse_runtime::admin::{self, Health};
use citypulse_runtime::jetstream::{watch_consumer_lag, CONSUMER_LAG_INTERVAL};
use citypulse_runtime::shutdown::Shutdown;
use citypulse_runtime::source::{ack_floor, Source};
use config::RunConfig;
use engine::RuleSet;
use prometheus::Registry;
use std::sync::Arc;

/// Loads the rule file named in the config, or the embedded defaults.
pub fn load_rules(cfg: &RunConfig) -> anyhow::Result<RuleSet> {
    match &cfg.rules {
        None => RuleSet::default_rules().context("the embedded default rules are invalid"),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading rule file {}", path.display()))?;
            engine::rules::load(&text).with_context(|| format!("rule file {}", path.display()))
        }
    }
}

/// Runs the service until `shutdown`: provisions METRICS/ALERTS/DLQ and the KV bucket, restores
/// the checkpoint, serves `/metrics` and `/healthz` on `--metrics-addr`, and evaluates.
pub async fn run(
    cfg: RunConfig,
    client: async_nats::Client,
    registry: Registry,
    health: Health,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    cfg.validate().map_err(anyhow::Error::msg)?;
    let rules = Arc::new(load_rules(&cfg)?);
    let metrics = metrics::AlertsMetrics::new(&registry)?;
    metrics.set_rules(rules.rule_count());
    let (_addr, admin_task) =
        admin::serve(cfg.metrics_addr, registry, health.clone(), shutdown.clone())
            .await
            .with_context(|| format!("binding the admin server to {}", cfg.metrics_addr))?;
    let js = async_nats::jetstream::new(client.clone());
    let metrics_stream = nats::provision(&js).await?;
    let checkpoints = nats::Checkpoints::open(&js, &cfg.kv_bucket).await?;
    let (store, store_task) = match &cfg.database_url {
        Some(url) => {
            let (s, t) = store::Store::spawn(
                url.clone(),
                outbox::Outbox::new(cfg.history_outbox_cap as usize),
                metrics.clone(),
                health.clone(),
                shutdown.clone(),
            );
            (Some(s), Some(t))
        }
        None => {
            tracing::info!(
                "no --database-url / DATABASE_URL: alert history is not stored in PostgreSQL"
            );
            (None, None)
        }
    };
    tracing::info!(
        rules = rules.rule_count(),
        groups = rules.groups().len(),
        source = %cfg.rules.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "embedded defaults".into()),
        "rules loaded"
    );
    let (lag_pending, lag_ack_pending) = metrics.consumer_lag();
    let observer = metrics.source_observer();
    let pipeline = pipeline::Pipeline::start(
        client.clone(),
        rules,
        checkpoints,
        store,
        metrics,
        shutdown.clone(),
        &cfg,
    )
    .await?;
    // Right after the checkpoint; without one, after the consumer's ack floor (empty state).
    let after = match pipeline.resume_after() {
        Some(seq) => seq,
        None => {
            let floor = ack_floor(&metrics_stream, &cfg.consumer).await?;
            if floor > 0 {
                tracing::warn!(consumer = %cfg.consumer, floor,
                    "no checkpoint but the consumer has acked messages: continuing after its ack floor with empty state");
            }
            floor
        }
    };
    let source = Source::new(metrics_stream, nats::source_config(&cfg), after, observer);
    let requests = client
        .queue_subscribe(
            format!("{}.*", api::SUBJECT_PREFIX),
            "citypulse-alerts".into(),
        )
        .await
        .context("subscribing to operator requests")?;
    let lag = tokio::spawn(watch_consumer_lag(
        js.clone(),
        citypulse_schema::streams::METRICS.to_owned(),
        cfg.consumer.clone(),
        lag_pending,
        lag_ack_pending,
        CONSUMER_LAG_INTERVAL,
        shutdown.clone(),
    ));
    let result = pipeline
        .run(
            source,
            requests,
            cfg.checkpoint_interval,
            cfg.housekeeping_interval,
        )
        .await;
    shutdown.trigger();
    let _ = admin_task.await;
    let _ = lag.await;
    if let Some(t) = store_task {
        let _ = t.await;
    }
    result
}
