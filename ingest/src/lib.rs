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
use citypulse_runtime::jetstream::{ensure_stream, watch_consumer_lag, CONSUMER_LAG_INTERVAL};
use citypulse_runtime::shutdown::Shutdown;
use citypulse_schema::streams;
use prometheus::Registry;
use std::time::Duration;

pub use config::Config;
pub use metrics::IngestMetrics;

/// How long start-up keeps trying to provision the streams before giving up (NATS may still be
/// starting).
const PROVISION_PATIENCE: Duration = Duration::from_secs(60);

/// Longest pause between retries (provisioning a stream, opening a consumer, reconnecting).
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// The pause of every retry loop: `backoff` unless shutdown comes first, doubled up to
/// [`MAX_BACKOFF`] ([`Shutdown::back_off`]); `false` on shutdown.
pub(crate) async fn pause(backoff: &mut Duration, shutdown: &Shutdown) -> bool {
    shutdown.back_off(backoff, MAX_BACKOFF).await
}

/// Runs ingest until `shutdown`: provisions RAW, READINGS and DLQ, starts the archive when
/// `config.database_url` is set, and validates RAW. Registers its metrics in `registry`.
pub async fn run(
    config: Config,
    client: async_nats::Client,
    registry: &Registry,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let metrics = IngestMetrics::new(registry).context("registering ingest metrics")?;
    let js = jetstream::new(client);

    let Some(raw) = provision(&js, nats::raw_stream(&config), &shutdown).await? else {
        return Ok(());
    };
    let Some(readings) = provision(&js, nats::readings_stream(&config), &shutdown).await? else {
        return Ok(());
    };
    if provision(&js, nats::dlq_stream(&config), &shutdown)
        .await?
        .is_none()
    {
        return Ok(());
    }

    let archive = match &config.database_url {
        Some(url) => {
            tracing::info!(consumer = %config.archive_consumer_name(), "archiving READINGS to PostgreSQL");
            let archiving = archive::Archiving {
                readings: readings.clone(),
                consumer: nats::archive_consumer(&config),
                database_url: url.clone(),
                max_delay: config.archive_max_delay,
                metrics: metrics.clone(),
            };
            Some(tokio::spawn(archiving.run(shutdown.clone())))
        }
        None => {
            tracing::info!(
                "no --database-url / DATABASE_URL: running without the PostgreSQL archive"
            );
            None
        }
    };

    let (pending, ack_pending) = metrics.consumer_lag("validator");
    let lag = tokio::spawn(watch_consumer_lag(
        js.clone(),
        streams::RAW.to_owned(),
        config.consumer_name.clone(),
        pending,
        ack_pending,
        CONSUMER_LAG_INTERVAL,
        shutdown.clone(),
    ));
    tracing::info!(consumer = %config.consumer_name, partitions = config.partitions,
        max_future_skew = ?config.max_future_skew, max_age = ?config.max_age, "validating RAW");
    let validating = pipeline::Validating {
        js,
        validator: validate::Validator::new(config.time_limits()),
        metrics,
        raw,
        readings,
        consumer: nats::validator_consumer(&config),
        partitions: config.partitions,
        max_tracked_sensors: config.max_tracked_sensors as usize,
    };
    validating.run(shutdown.clone()).await;

    if let Some(archive) = archive {
        archive.await.context("archive task")?;
    }
    // The validator returns only on shutdown, which stops the watcher too.
    lag.await.context("consumer lag task")?;
    tracing::info!("ingest stopped");
    Ok(())
}

/// Ensures a stream, retrying while NATS is unreachable; `None` on shutdown.
async fn provision(
    js: &jetstream::Context,
    desired: stream::Config,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<stream::Stream>> {
    let name = desired.name.clone();
    let deadline = tokio::time::Instant::now() + PROVISION_PATIENCE;
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(None),
            attempt = ensure_stream(js, desired.clone()) => attempt,
        };
        match attempt {
            Ok(s) => return Ok(Some(s)),
            Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::warn!(stream = %name, error = %e, "cannot provision stream yet; retrying");
            }
            Err(e) => return Err(e.context(format!("provisioning stream {name}"))),
        }
        if !pause(&mut backoff, shutdown).await {
            return Ok(None);
        }
    }
}
