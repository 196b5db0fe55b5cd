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
//! **Active/standby**: instances started with the same `--group` form a group
//! ([`citypulse_runtime::group`], KV bucket [`GROUP_BUCKET`], one unit). The instance holding
//! the lease is active: it restores the checkpoint, evaluates, and is the only one subscribed
//! to the operator subjects; the others stand by (`/healthz`: `role: standby`) and one of them
//! takes over from the checkpoint once the lease expires (`--group-ttl`, default 5 s). An
//! instance that loses the lease stops at once without a final checkpoint; before each checkpoint
//! write it confirms the lease, and the write itself is compare-and-set on the manifest's KV
//! revision ([`nats::Checkpoints`]), so a paused instance that wakes up cannot overwrite its
//! successor's state.
//!
//! Module map:
//! - [`engine`] — PURE: [`engine::rules`] (TOML → validated rules), [`engine::evaluator`]
//!   (lifecycle), [`engine::notify`] (silences, acks, publication policy), templates.
//! - [`pipeline`] — SHELL: the one `select!` loop, checkpoints, acks.
//! - [`nats`] — ADAPTER: streams, consumer, publishing, KV checkpoint.
//! - [`store`] — ADAPTER: PostgreSQL alert history.
//! - [`api`] — operator request/reply payloads and their pure handler.
//! - [`cli`] — the tools for people: `check-rules`, `tail`, `list`, `ack`, `silence`, `unsilence`, `replay` (the transitions a rule file would have made over a past range).
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
use citypulse_runtime::group;
use citypulse_runtime::jetstream::{
    provision, watch_consumer_lag, ConsumerLag, CONSUMER_LAG_INTERVAL,
};
use citypulse_runtime::shutdown::Shutdown;
use citypulse_runtime::source::{ack_floor, Source};
use config::RunConfig;
use engine::RuleSet;
use prometheus::Registry;
use std::sync::Arc;

/// Loads the rule file named in the config, or the embedded defaults.
pub fn load_rules(cfg: &RunConfig) -> anyhow::Result<RuleSet> {
    rules_from(cfg.rules.as_deref())
}

/// Loads the rule file `path`, or the embedded defaults without one.
pub fn rules_from(path: Option<&std::path::Path>) -> anyhow::Result<RuleSet> {
    match path {
        None => RuleSet::default_rules().context("the embedded default rules are invalid"),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading rule file {}", path.display()))?;
            engine::rules::load(&text).with_context(|| format!("rule file {}", path.display()))
        }
    }
}

/// KV bucket of the alerts' active/standby groups (keys expire after `--group-ttl`).
pub const GROUP_BUCKET: &str = "citypulse_alerts_group";

/// Runs the service until `shutdown`: provisions METRICS/ALERTS/DLQ and the KV bucket, serves
/// `/metrics` and `/healthz` on `--metrics-addr`, joins the active/standby group `--group`, and
/// — while this instance holds the group's lease — restores the checkpoint, evaluates and
/// answers operator requests. `/healthz` says `role: active` or `role: standby`.
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
    let group_metrics = group::GroupMetrics::new(&registry, "citypulse_alerts")?;
    health.note("role", "standby");
    let (_addr, admin_task) =
        admin::serve(cfg.metrics_addr, registry, health.clone(), shutdown.clone())
            .await
            .with_context(|| format!("binding the admin server to {}", cfg.metrics_addr))?;
    let js = async_nats::jetstream::new(client.clone());
    let replicas = usize::from(cfg.stream_replicas);
    let Some(metrics_stream) = nats::provision(&js, replicas, &shutdown).await? else {
        return Ok(());
    };
    let open = || async {
        let opened = nats::Checkpoints::open(&js, &cfg.kv_bucket, replicas).await;
        opened.map_err(anyhow::Error::from)
    };
    let Some(checkpoints) = provision("the checkpoint bucket", &shutdown, open).await? else {
        return Ok(());
    };
    let (store, store_task) = history_store(&cfg, &metrics, &health, &shutdown).unzip();
    tracing::info!(
        rules = rules.rule_count(),
        groups = rules.groups().len(),
        source = %cfg.rules.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "embedded defaults".into()),
        "rules loaded"
    );
    let group_config = group::GroupConfig {
        bucket: GROUP_BUCKET.to_owned(),
        group: cfg.group.clone(),
        ttl: cfg.group_ttl,
        replicas,
        units: 1,
    };
    let Some(kv) = group::open_bucket(&js, &group_config, &shutdown).await? else {
        return Ok(());
    };
    let active = Active {
        cfg: Arc::new(cfg),
        js,
        metrics_stream,
        parts: pipeline::Parts {
            client,
            rules,
            checkpoints,
            store,
            metrics,
        },
        health,
    };
    let member = group::Member::new(
        kv,
        group_config,
        move |lease: group::Lease| active.clone().evaluate(lease),
        group_metrics,
    )
    // An instance that joins stands by; it does not take the role over.
    .sticky();
    tracing::info!(
        instance = member.id(),
        "standing by until this instance holds the alerts lease"
    );
    let result = member.run(shutdown.clone()).await;
    shutdown.trigger();
    let _ = admin_task.await;
    if let Some(t) = store_task {
        let _ = t.await;
    }
    result
}

/// The alert history's writer to PostgreSQL and its task, with `--database-url`.
fn history_store(
    cfg: &RunConfig,
    metrics: &metrics::AlertsMetrics,
    health: &Health,
    shutdown: &Shutdown,
) -> Option<(store::Store, tokio::task::JoinHandle<()>)> {
    let Some(url) = &cfg.database_url else {
        tracing::info!(
            "no --database-url / DATABASE_URL: alert history is not stored in PostgreSQL"
        );
        return None;
    };
    Some(store::Store::spawn(
        url.clone(),
        outbox::Outbox::new(cfg.history_outbox_cap as usize),
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    ))
}

/// What the active role needs, shared by every term of it.
#[derive(Clone)]
struct Active {
    cfg: Arc<RunConfig>,
    js: async_nats::jetstream::Context,
    metrics_stream: async_nats::jetstream::stream::Stream,
    parts: pipeline::Parts,
    health: Health,
}

impl Active {
    /// One term as the active instance: restores the checkpoint, evaluates and answers
    /// operator requests until `lease.stop()`.
    async fn evaluate(self, lease: group::Lease) -> anyhow::Result<()> {
        let cfg = &self.cfg;
        self.health.note("role", "active");
        tracing::info!("active: evaluating");
        let (lag_pending, lag_ack_pending) = self.parts.metrics.consumer_lag();
        let observer = self.parts.metrics.source_observer();
        let stop = lease.stop().clone();
        let pipeline = pipeline::Pipeline::start(self.parts.clone(), lease.clone(), cfg).await;
        let pipeline = match pipeline {
            Ok(p) => p,
            Err(e) if lease.is_lost() || stop.is_triggered() => {
                self.health.note("role", "standby");
                tracing::warn!(error = %format!("{e:#}"), "stopped while starting the active role");
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        // Right after the checkpoint; without one, after the consumer's ack floor (empty state).
        let after = match pipeline.resume_after() {
            Some(seq) => seq,
            None => {
                let floor = ack_floor(&self.metrics_stream, &cfg.consumer).await?;
                if floor > 0 {
                    tracing::warn!(consumer = %cfg.consumer, floor,
                        "no checkpoint but the consumer has acked messages: continuing after its ack floor with empty state");
                }
                floor
            }
        };
        let source = Source::new(
            self.metrics_stream.clone(),
            nats::source_config(cfg, self.parts.client.server_info().max_payload),
            after,
            observer,
        );
        // Only the active instance is subscribed: a standby answers nothing.
        let requests = self
            .parts
            .client
            .queue_subscribe(
                format!("{}.*", api::SUBJECT_PREFIX),
                "citypulse-alerts".into(),
            )
            .await
            .context("subscribing to operator requests")?;
        let watched = ConsumerLag {
            stream: citypulse_schema::streams::METRICS.to_owned(),
            consumer: cfg.consumer.clone(),
            pending: lag_pending,
            ack_pending: lag_ack_pending,
        };
        let lag = tokio::spawn(watch_consumer_lag(
            self.js.clone(),
            watched,
            CONSUMER_LAG_INTERVAL,
            stop.clone(),
        ));
        let result = pipeline
            .run(source, requests, cfg.housekeeping_interval)
            .await;
        stop.trigger();
        let _ = lag.await;
        self.health.note("role", "standby");
        if lease.is_lost() {
            tracing::warn!("lease lost: standing by");
        } else {
            tracing::info!("active role ended");
        }
        result
    }
}
