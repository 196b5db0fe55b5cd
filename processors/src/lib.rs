//! citypulse processors: event-time windows over validated readings, with watermarks,
//! congestion and air-quality metrics, and exactly-once effects.
//!
//! **Subjects.** In: stream READINGS, partition `p` stored as
//! `readings.<p>.<district>.<kind>.<sensor_id>` (ingest publishes `readings.<district>.<kind>.<sensor_id>`;
//! the stream's subject transform adds the partition). Out: stream METRICS (created here,
//! duplicate window ≥ 10 min), one message per closed window on `metrics.<kind>.<district>` (the
//! district) and `metrics.<kind>.<district>.<sensor_id>` (each sensor), `Nats-Msg-Id` =
//! [`WindowResult::msg_id`](citypulse_schema::WindowResult::msg_id); refused readings on
//! `dlq.<reason>` when the DLQ stream exists. State: KV bucket `citypulse_processors`, key `p<N>`.
//!
//! **Partitions.** One durable pull consumer per owned partition (`processors-p<N>`, filter
//! `readings.<N>.>`, cumulative acks), one task and one pure [`window::PartitionState`] each.
//! An instance owns all partitions or a configured subset; instances owning disjoint subsets
//! scale out. Nothing is shared between partitions: a district lives in exactly one.
//!
//! **Windows and watermark.** Tumbling or hopping event-time windows (default 1 min), a
//! watermark per partition = newest event time − allowed lateness (default 30 s), never going
//! back, with idle advance by processing time; readings behind it are counted as late by reason,
//! never merged ([`window`]). Field definitions and units: [`domain::traffic`],
//! [`window::traffic`] (free-flow speed: the registry's, else learned) and [`window::air`].
//!
//! **Delivery: exactly-once effects.** Each partition task repeats: take a batch of readings
//! (skipping any stream sequence ≤ `last_seq`, already in the state); close the windows the
//! watermark has passed into an **outbox**; write the checkpoint — the whole state, `last_seq`
//! and the outbox, CBOR, chunked under `p<N>` ([`checkpoint`]); publish the outbox (JetStream,
//! acked, retried with the same `Nats-Msg-Id`); ack the inputs up to `last_seq`. Checkpoints
//! are also written every `--checkpoint-interval` while readings arrive. On start the task loads
//! the checkpoint, republishes its outbox (the server drops copies it has), and recreates its
//! consumer to deliver from `last_seq + 1` in stream order. Deliveries lost in flight (a
//! reconnect to a restarted server) show as a jump in the consumer's delivery sequence; the task
//! then reopens the consumer after `last_seq` rather than fold a later reading first (which
//! would make the missed ones late, and then skip them as already seen). Hence:
//! - no reading is lost: inputs are acked only once the state that includes them is durable;
//! - none is counted twice: the state says up to which sequence it includes, and replay starts
//!   after it;
//! - no subscriber sees two versions of a window: a result is published only after the state
//!   that closed it (and the result itself) is durable, so a restart republishes the same bytes,
//!   deduplicated by `Nats-Msg-Id`, and never recomputes a published window. This holds even
//!   though idle advance depends on processing time: replay after a crash may close windows at
//!   other moments than the first run did, but only windows nobody has seen.
//! - Limit: the deduplication of a republished outbox relies on the METRICS duplicate window; a
//!   crash followed by a restart more than that window later (10 min by default) can leave a
//!   second copy of the last batch (identical bytes and `Nats-Msg-Id`) in the stream.
//! - The checkpoint manifest is written compare-and-set on its revision, so a second process
//!   writing the same partition is detected and stops with an error instead of interleaving.
//!
//! Module map: [`domain`] (PURE arithmetic: AQI, NowCast, EAQI, traffic), [`window`] (PURE
//! windowing core), [`registry`] (PURE segment registry), [`checkpoint`] (PURE checkpoint
//! layout), [`pipeline`] (SHELL: the partition loop), [`nats`] (ADAPTER: streams, consumer, KV,
//! publishing), [`metrics`], [`config`].

pub mod checkpoint;
pub mod config;
pub mod domain;
pub mod fold;
pub mod metrics;
pub mod nats;
pub mod pipeline;
pub mod registry;
pub mod replay;
pub mod window;

use anyhow::Context as _;
use citypulse_runtime::jetstream::{ensure_stream, watch_consumer_lag, CONSUMER_LAG_INTERVAL};
use citypulse_runtime::shutdown::Shutdown;
use config::Settings;
use metrics::ProcessorMetrics;
use prometheus::Registry;

/// Runs the processors until `shutdown`: provisions METRICS and the checkpoint bucket, waits for
/// READINGS, then runs one task per owned partition. Returns the first fatal error (a checkpoint
/// that cannot be used, or a partition owned by another process), after stopping the others.
pub async fn run(
    settings: Settings,
    client: async_nats::Client,
    registry: &Registry,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let metrics = ProcessorMetrics::new(registry).context("registering processor metrics")?;
    let js = async_nats::jetstream::new(client.clone());
    ensure_stream(&js, nats::metrics_stream(&settings))
        .await
        .context("provisioning the METRICS stream")?;
    let bucket = nats::checkpoint_bucket(&js).await?;
    let Some(readings) = nats::wait_for_readings(&js, settings.partition_count, &shutdown).await?
    else {
        return Ok(());
    };
    let max_payload = client.server_info().max_payload;
    tracing::info!(partitions = ?settings.partitions, windows = %settings.core.spec,
        allowed_lateness_ms = settings.core.allowed_lateness_ms,
        idle_timeout_ms = settings.core.idle_timeout_ms,
        registry_detectors = settings.core.registry.len(), "processors running");

    // One stop signal for the partitions: the process's shutdown, or a fatal partition error.
    let stop = shutdown.child();
    // Each partition's consumer lag, until the partitions stop.
    let mut watchers = tokio::task::JoinSet::new();
    for &p in &settings.partitions {
        let (pending, ack_pending) = metrics.consumer_lag(p);
        watchers.spawn(watch_consumer_lag(
            js.clone(),
            citypulse_schema::streams::READINGS.to_owned(),
            nats::consumer_name(p),
            pending,
            ack_pending,
            CONSUMER_LAG_INTERVAL,
            stop.clone(),
        ));
    }
    let shared = pipeline::Shared {
        js,
        readings,
        bucket,
        max_payload,
        settings: settings.clone(),
        metrics,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for &p in &settings.partitions {
        tasks.spawn(pipeline::run_partition(p, shared.clone(), stop.clone()));
    }
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        let result = done.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = result {
            tracing::error!(error = %format!("{e:#}"), "partition failed; stopping the others");
            stop.trigger();
            first_error.get_or_insert(e);
        }
    }
    stop.trigger();
    while watchers.join_next().await.is_some() {}
    first_error.map_or(Ok(()), Err)
}
