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
//! **Partitions.** One durable pull consumer per partition (`processors-p<N>`, filter
//! `readings.<N>.>`, cumulative acks), one task and one pure [`window::PartitionState`] each.
//! Nothing is shared between partitions: a district lives in exactly one. By default every
//! instance joins the consumer group `--group` ([`citypulse_runtime::group`]): the group's
//! members share the partitions, balanced and rebalanced as instances join or leave, each
//! partition worked on only under its lease in the KV bucket `citypulse_processors_group`; a
//! killed instance's partitions resume on the others from their checkpoints once its leases
//! expire (`--group-ttl`). A partition's task checks its lease right before each checkpoint,
//! and the checkpoint write is compare-and-set, so an instance that lost a partition cannot
//! overwrite its successor's state. `--partitions` instead fixes the list (static deployments).
//!
//! **Windows and watermark.** Tumbling or hopping event-time windows (default 1 min), a
//! watermark per partition = newest event time − allowed lateness (default 30 s), never going
//! back, with idle advance by processing time; readings behind it are counted as late by reason,
//! never merged ([`window`]). Field definitions and units: [`domain::traffic`],
//! [`window::traffic`] (free-flow speed: the registry's, else learned) and [`window::air`].
//!
//! **Delivery: exactly-once effects.** Each partition task repeats: take a batch of readings
//! (skipping any stream sequence ≤ `last_seq`, already in the state); close the windows the
//! watermark has passed into an **outbox** ([`outbox`]), 2,048 results at a time, and publish
//! each slice (JetStream, acked, retried with the same `Nats-Msg-Id`) before closing the next;
//! when due — every `--checkpoint-interval` while readings arrive,
//! 50,000 unacked messages, a drained backlog, a stop — write the checkpoint (the whole state,
//! `last_seq` and the unpublished outbox, CBOR, compressed, chunked under `p<N>`:
//! [`checkpoint`]; never inside a window: what is left of a window being closed goes into the
//! outbox first) and ack the inputs up to `last_seq`. On start the task loads the checkpoint,
//! republishes its outbox (the server drops copies it has), and recreates its consumer to
//! deliver from `last_seq + 1` in stream order. Deliveries lost in flight (a reconnect to a
//! restarted server) show as a jump in the consumer's delivery sequence; the task then reopens
//! the consumer after `last_seq` rather than fold a later reading first (which would make the
//! missed ones late, and then skip them as already seen). Hence:
//! - no reading is lost: inputs are acked only once the state that includes them is durable;
//! - none is counted twice: the state says up to which sequence it includes, and replay starts
//!   after it;
//! - no subscriber sees two versions of a window: what closes a window from the input alone
//!   (the watermark, readings in stream order) a replay from the last checkpoint repeats
//!   exactly, so a result published before a crash is recomputed with the same bytes and
//!   `Nats-Msg-Id`, and deduplicated. Idle advance depends on processing time, which a replay
//!   would not repeat: the windows it closes are checkpointed, with their results (the outbox),
//!   before they are published, so a restart republishes them instead of recomputing them.
//! - Limit: the deduplication of a republished outbox relies on the METRICS duplicate window; a
//!   crash followed by a restart more than that window later (10 min by default) can leave a
//!   second copy of the last batch (identical bytes and `Nats-Msg-Id`) in the stream.
//! - The checkpoint manifest is written compare-and-set on its revision, so a second process
//!   writing the same partition is detected and stops with an error instead of interleaving.
//!
//! Module map: [`domain`] (PURE arithmetic: AQI, NowCast, EAQI, traffic), [`window`] (PURE
//! windowing core), [`fold`] (PURE: a READINGS message into a partition's state, shared
//! by the live loop and replay), [`registry`] (PURE segment registry), [`checkpoint`] (PURE checkpoint
//! layout), [`outbox`] (PURE: closed results until published), [`pipeline`] (SHELL: the partition loop), [`replay`] (SHELL: `replay` recomputes a past
//! range into a stream of its own), [`nats`] (ADAPTER: streams, consumer, KV,
//! publishing), [`metrics`], [`config`].

pub mod checkpoint;
pub mod config;
pub mod domain;
pub mod fold;
pub mod metrics;
pub mod nats;
pub mod outbox;
pub mod pipeline;
pub mod registry;
pub mod replay;
pub mod window;

use anyhow::Context as _;
use citypulse_runtime::group::{self, GroupConfig, GroupMetrics, Lease, Member};
use citypulse_runtime::jetstream::{
    provision, provision_stream, watch_consumer_lag, ConsumerLag, CONSUMER_LAG_INTERVAL,
};
use citypulse_runtime::shutdown::Shutdown;
use config::{Ownership, Settings};
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
    if provision_stream(&js, nats::metrics_stream(&settings), &shutdown)
        .await?
        .is_none()
    {
        return Ok(());
    }
    let replicas = settings.metrics_limits.replicas;
    let checkpoints = || nats::checkpoint_bucket(&js, replicas);
    let Some(bucket) = provision("the checkpoint bucket", &shutdown, checkpoints).await? else {
        return Ok(());
    };
    let Some(readings) = nats::wait_for_readings(&js, settings.partition_count, &shutdown).await?
    else {
        return Ok(());
    };
    let max_payload = client.server_info().max_payload;
    tracing::info!(ownership = ?settings.ownership, windows = %settings.core.spec,
        allowed_lateness_ms = settings.core.allowed_lateness_ms,
        idle_timeout_ms = settings.core.idle_timeout_ms,
        registry_detectors = settings.core.registry.len(), "processors running");
    let shared = pipeline::Shared {
        js: js.clone(),
        readings,
        bucket,
        max_payload,
        settings: settings.clone(),
        metrics,
    };
    match settings.ownership.clone() {
        Ownership::Static(partitions) => run_static(&partitions, shared, shutdown).await,
        Ownership::Group { name, ttl } => {
            let config = GroupConfig {
                bucket: nats::GROUP_BUCKET.to_owned(),
                group: name,
                ttl,
                replicas,
                units: settings.partition_count,
            };
            let Some(kv) = group::open_bucket(&js, &config, &shutdown).await? else {
                return Ok(());
            };
            let metrics = GroupMetrics::new(registry, "citypulse_processors")?;
            let worker = move |lease: Lease| run_leased(lease, shared.clone());
            Member::new(kv, config, worker, metrics).run(shutdown).await
        }
    }
}

/// Works on one partition under `lease`, with its consumer lag watched meanwhile.
async fn run_leased(lease: Lease, shared: pipeline::Shared) -> anyhow::Result<()> {
    let p = lease.unit();
    let (pending, ack_pending) = shared.metrics.consumer_lag(p);
    let lag = ConsumerLag {
        stream: citypulse_schema::streams::READINGS.to_owned(),
        consumer: nats::consumer_name(p),
        pending,
        ack_pending,
    };
    let watcher = tokio::spawn(watch_consumer_lag(
        shared.js.clone(),
        lag,
        CONSUMER_LAG_INTERVAL,
        lease.stop().clone(),
    ));
    let result = pipeline::run_partition(shared, lease.clone()).await;
    lease.stop().trigger();
    let _ = watcher.await;
    result
}

/// A fixed list of partitions (`--partitions`): one task each; the first fatal error stops the
/// others and is returned.
async fn run_static(
    partitions: &[u32],
    shared: pipeline::Shared,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    // One stop signal for the partitions: the process's shutdown, or a fatal partition error.
    let stop = shutdown.child();
    let mut tasks = tokio::task::JoinSet::new();
    for &p in partitions {
        let lease = Lease::unconditional(p, stop.child());
        tasks.spawn(run_leased(lease, shared.clone()));
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
    first_error.map_or(Ok(()), Err)
}
