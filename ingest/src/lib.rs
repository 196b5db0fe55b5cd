//! citypulse ingest: the gate between devices and everything downstream.
//!
//! **In**: RAW (`sensors.<district>.<kind>.<sensor_id>`, CBOR readings), through the durable
//! pull consumer `--consumer-name` (default `ingest`).
//!
//! **Out**:
//! - READINGS: each valid reading on `readings.<district>.<kind>.<sensor_id>`, stored by the
//!   server's subject transform as `readings.<partition>.<district>.<kind>.<sensor_id>`
//!   (`partition(N,1)` of the district, equal to [`citypulse_schema::partition_of`]), with
//!   `Nats-Msg-Id: <sensor>:<seq>`;
//! - DLQ: each invalid message on `dlq.<reason>`, body the original bytes, headers
//!   `Citypulse-Reason`, `Citypulse-Detail`, `Citypulse-Source-Subject`,
//!   `Citypulse-Source-Sequence` (reasons: [`validate::Rejection::reasons`]);
//! - PostgreSQL table `readings` (with `--database-url`), fed from READINGS by a second durable
//!   consumer `<consumer-name>-archive`.
//!
//! **Delivery**: at least once, with idempotent effects. A RAW message is acked only after its
//! READINGS publish is acknowledged (terminated after its dead letter is); a redelivery
//! republishes under the same `Nats-Msg-Id` and the server drops the duplicate. The archive acks
//! READINGS messages only after their rows committed, and `(sensor, seq)` is the table's key, so a
//! redelivered batch inserts nothing. A PostgreSQL outage stops only the archive: its backlog
//! waits in READINGS and is written when the database returns. Streams are provisioned
//! idempotently at start ([`nats`]); existing streams with other settings are kept and the
//! differences logged.
//!
//! **Several instances**: instances started with the same `--group` share ingest's two stages
//! ([`mod@unit`]: the validator and the archive) through leases in the KV bucket [`GROUP_BUCKET`]
//! ([`citypulse_runtime::group`]): each stage runs on one instance at a time (two instances
//! split them, more stand by), because each reads its consumer in order and recreates it at the
//! ack floor. When an instance dies, its stage resumes on another after `--group-ttl` (default
//! 5 s). The validator confirms its lease before publishing each batch and, like the archive,
//! acks nothing once the lease is lost.
//!
//! **Modules**: [`validate`] (PURE: the verdict on one message, physical limits), [`recent`]
//! (PURE: per-sensor `seq` tracking — repeats, missing readings, the bounded map),
//! [`pipeline`] (SHELL: the validator loop), [`archive`] (SHELL: the archive loop),
//! [`nats`] (ADAPTER: streams, consumers, headers, acks), [`store`] (ADAPTER: PostgreSQL),
//! [`metrics`], [`config`].

pub mod archive;
pub mod config;
pub mod metrics;
pub mod nats;
pub mod pipeline;
pub mod recent;
pub mod store;
pub mod validate;

use anyhow::Context as _;
use async_nats::jetstream::{self, stream};
use citypulse_runtime::group;
use citypulse_runtime::jetstream::{
    provision_stream, watch_consumer_lag, watch_retention, ConsumerLag, StreamRetention,
    CONSUMER_LAG_INTERVAL, RETENTION_LOOK,
};
use citypulse_runtime::shutdown::Shutdown;
use citypulse_schema::streams;
use prometheus::Registry;
use std::sync::Arc;
use std::time::Duration;

pub use config::Config;
pub use metrics::IngestMetrics;

/// Longest pause between retries (opening a consumer, reconnecting).
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The pause of every retry loop: `backoff` unless shutdown comes first, doubled up to
/// [`MAX_BACKOFF`] ([`Shutdown::back_off`]); `false` on shutdown.
pub(crate) async fn pause(backoff: &mut Duration, shutdown: &Shutdown) -> bool {
    shutdown.back_off(backoff, MAX_BACKOFF).await
}

/// KV bucket of ingest's groups (keys expire after `--group-ttl`).
pub const GROUP_BUCKET: &str = "citypulse_ingest_group";

/// The group's units: the stages that run on one instance at a time.
pub mod unit {
    /// RAW → validate → READINGS and DLQ.
    pub const VALIDATOR: u32 = 0;
    /// READINGS → PostgreSQL.
    pub const ARCHIVE: u32 = 1;
    /// How many.
    pub const COUNT: u32 = 2;
}

/// Runs ingest until `shutdown`: provisions RAW, READINGS and DLQ, joins the group `--group`,
/// and runs the stages whose leases this instance holds ([`mod@unit`]): the validator, and the
/// archive (which waits for shutdown when `config.database_url` is not set). Registers its
/// metrics in `registry`.
pub async fn run(
    config: Config,
    client: async_nats::Client,
    registry: &Registry,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let metrics = IngestMetrics::new(registry).context("registering ingest metrics")?;
    let group_metrics = group::GroupMetrics::new(registry, "citypulse_ingest")
        .context("registering ingest group metrics")?;
    let js = jetstream::new(client);

    let Some(raw) = provision_stream(&js, nats::raw_stream(&config), &shutdown).await? else {
        return Ok(());
    };
    let Some(readings) = provision_stream(&js, nats::readings_stream(&config), &shutdown).await?
    else {
        return Ok(());
    };
    if provision_stream(&js, nats::dlq_stream(&config), &shutdown)
        .await?
        .is_none()
    {
        return Ok(());
    }
    match &config.database_url {
        None => tracing::info!(
            "no --database-url / DATABASE_URL: running without the PostgreSQL archive"
        ),
        // The table exists as soon as any instance runs, not only once one holds the archive's
        // lease (readers of the archive may start before). Best effort: the archive creates it
        // too when it connects.
        Some(url) => match store::Store::connect(url, Duration::from_secs(5)).await {
            Ok(_) => tracing::debug!("PostgreSQL schema in place"),
            Err(e) => tracing::warn!(error = %e,
                "PostgreSQL not reachable at start; the archive creates its table when it connects"),
        },
    }
    let group_config = group::GroupConfig {
        bucket: GROUP_BUCKET.to_owned(),
        group: config.group.clone(),
        ttl: config.group_ttl,
        replicas: usize::from(config.stream_replicas),
        units: unit::COUNT,
    };
    let Some(kv) = group::open_bucket(&js, &group_config, &shutdown).await? else {
        return Ok(());
    };
    let retention = watch_streams(&js, &metrics, &shutdown);
    let stages = Stages {
        config: Arc::new(config),
        js,
        raw,
        readings,
        metrics,
    };
    let member = group::Member::new(
        kv,
        group_config,
        move |lease: group::Lease| stages.clone().run(lease),
        group_metrics,
    );
    tracing::info!(instance = member.id(), "joining the ingest group");
    let ran = member.run(shutdown).await;
    retention.abort();
    ran?;
    tracing::info!("ingest stopped");
    Ok(())
}

/// Shows how long RAW, READINGS and DLQ hold their input ([`watch_retention`]) until shutdown.
/// Every instance watches, not only the validator's: the alert rule takes the minimum.
fn watch_streams(
    js: &jetstream::Context,
    metrics: &IngestMetrics,
    shutdown: &Shutdown,
) -> tokio::task::JoinHandle<()> {
    let watched = StreamRetention {
        streams: [streams::RAW, streams::READINGS, streams::DLQ]
            .map(str::to_owned)
            .to_vec(),
        seconds: metrics.stream_retention(),
    };
    tokio::spawn(watch_retention(
        js.clone(),
        watched,
        RETENTION_LOOK,
        shutdown.clone(),
    ))
}

/// What the stages need, shared by every term of a lease.
#[derive(Clone)]
struct Stages {
    config: Arc<Config>,
    js: jetstream::Context,
    raw: stream::Stream,
    readings: stream::Stream,
    metrics: IngestMetrics,
}

impl Stages {
    /// The server's largest message, bytes.
    fn max_payload(&self) -> usize {
        self.js.client().server_info().max_payload
    }

    /// Runs the stage of `lease.unit()` until `lease.stop()`.
    async fn run(self, lease: group::Lease) -> anyhow::Result<()> {
        let config = &self.config;
        match lease.unit() {
            unit::VALIDATOR => {
                let (pending, ack_pending) = self.metrics.consumer_lag("validator");
                let watched = ConsumerLag {
                    stream: streams::RAW.to_owned(),
                    consumer: config.consumer_name.clone(),
                    pending,
                    ack_pending,
                };
                let lag = tokio::spawn(watch_consumer_lag(
                    self.js.clone(),
                    watched,
                    CONSUMER_LAG_INTERVAL,
                    lease.stop().clone(),
                ));
                tracing::info!(consumer = %config.consumer_name, partitions = config.partitions,
                    max_future_skew = ?config.max_future_skew, max_age = ?config.max_age, "validating RAW");
                let validating = pipeline::Validating {
                    js: self.js.clone(),
                    validator: validate::Validator::new(config.time_limits()),
                    metrics: self.metrics.clone(),
                    raw: self.raw.clone(),
                    readings: self.readings.clone(),
                    consumer: nats::validator_consumer(config, self.max_payload()),
                    partitions: config.partitions,
                    max_tracked_sensors: config.max_tracked_sensors as usize,
                };
                validating.run(&lease).await;
                // The validator returns only on the lease's stop, which stops the watcher too.
                lag.await.context("consumer lag task")?;
                tracing::info!(lost = lease.is_lost(), "validator stopped");
            }
            unit::ARCHIVE => match &config.database_url {
                Some(url) => {
                    tracing::info!(consumer = %config.archive_consumer_name(), "archiving READINGS to PostgreSQL");
                    let archiving = archive::Archiving {
                        readings: self.readings.clone(),
                        consumer: nats::archive_consumer(config, self.max_payload()),
                        database_url: url.clone(),
                        max_delay: config.archive_max_delay,
                        metrics: self.metrics.clone(),
                    };
                    archiving.run(&lease).await;
                    tracing::info!(lost = lease.is_lost(), "archive stopped");
                }
                None => lease.stop().cancelled().await,
            },
            other => anyhow::bail!("ingest has no unit {other}"),
        }
        Ok(())
    }
}
