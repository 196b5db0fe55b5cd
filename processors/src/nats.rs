//! ADAPTER: what the processors provision and exchange on NATS — the METRICS stream, the
//! READINGS consumers, the checkpoint bucket, window results (with `Nats-Msg-Id`) and dead
//! letters.

use crate::checkpoint::{self, CheckpointError, Manifest};
use crate::config::Settings;
use crate::metrics::ProcessorMetrics;
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{self, Operation};
use async_nats::jetstream::stream::{self, StorageType};
use async_nats::jetstream::Context;
use bytes::Bytes;
use citypulse_runtime::jetstream::{ensure_bucket, PublishError};
use citypulse_runtime::publish::{
    dead_letter, publish_all, publish_in_windows, Outgoing, Rejected, Windows,
};
use citypulse_runtime::shutdown::Shutdown;
use citypulse_runtime::source::{pull_bytes, SourceConfig, FILL_WAIT};
use citypulse_runtime::stream_config;
use citypulse_schema::streams;
use std::time::{Duration, Instant};

/// KV bucket of the partitions' checkpoints.
pub const CHECKPOINT_BUCKET: &str = "citypulse_processors";

/// KV bucket of the processors' consumer groups: members and partition leases.
pub const GROUP_BUCKET: &str = "citypulse_processors_group";

/// How long the server waits for an ack before redelivering. Acks follow checkpoints, at most
/// `--checkpoint-interval` apart while readings flow; redeliveries are skipped by sequence anyway.
const ACK_WAIT: Duration = Duration::from_secs(120);

/// The name of partition `p`'s durable consumer.
pub fn consumer_name(partition: u32) -> String {
    format!("processors-p{partition}")
}

/// The subject filter of partition `p`: `readings.<p>.>`.
pub fn partition_filter(partition: u32) -> String {
    format!("readings.{partition}.>")
}

/// METRICS with this process's limits: one message per closed window, deduplicated on
/// `WindowResult::msg_id()` for at least 10 minutes.
pub fn metrics_stream(settings: &Settings) -> stream::Config {
    stream_config::metrics(settings.metrics_limits)
}

/// Waits until READINGS exists (ingest creates it) and checks that it is partitioned into
/// `partition_count` partitions. `None` on shutdown.
pub async fn wait_for_readings(
    js: &Context,
    partition_count: u32,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<stream::Stream>> {
    let mut warned = false;
    loop {
        match js.get_stream(streams::READINGS).await {
            Ok(mut s) => {
                check_partitioning(&mut s, partition_count).await?;
                return Ok(Some(s));
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(stream = streams::READINGS, error = %e,
                        "waiting for the READINGS stream (ingest creates it)");
                    warned = true;
                }
            }
        }
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(None),
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Checks READINGS' subject transform against `count` partitions (it must be ingest's); returns
/// the stream's last sequence.
pub async fn check_partitioning(readings: &mut stream::Stream, count: u32) -> anyhow::Result<u64> {
    let info = readings.info().await?;
    let want = streams::readings_transform_destination(count);
    let have = info
        .config
        .subject_transform
        .as_ref()
        .map(|t| t.destination.clone());
    if have.as_deref() != Some(want.as_str()) {
        anyhow::bail!(
            "stream {} is not partitioned as --partition-count {count} expects: its subject \
             transform is {have:?}, expected {want:?}; use ingest's partition count",
            streams::READINGS
        );
    }
    Ok(info.state.last_sequence)
}

/// The checkpoint bucket, created when missing with `replicas` (one value per key: history is
/// not needed).
pub async fn checkpoint_bucket(js: &Context, replicas: usize) -> anyhow::Result<kv::Store> {
    let config = kv::Config {
        bucket: CHECKPOINT_BUCKET.to_owned(),
        description: "citypulse processors: partition checkpoints".to_owned(),
        history: 1,
        storage: StorageType::File,
        num_replicas: replicas.max(1),
        ..Default::default()
    };
    ensure_bucket(js, config).await
}

/// Most messages a partition may have delivered and not acked.
pub const MAX_ACK_PENDING: i64 = 100_000;

/// Most bytes of READINGS a partition's pull asks for (the limit rises to hold the largest
/// message, [`pull_bytes`]): 100 READINGS messages of about a hundred readings each are about
/// 1 MB, but ingest writes them up to 512 KiB, which 100 at a time would be 50 MB a partition.
pub const PULL_BYTES: usize = 4 << 20;

/// Pull heartbeat: a silent server is noticed within two of these.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Partition `p`'s source: its durable consumer, read in order from right after the
/// checkpoint's `last_seq` (the checkpoint, not the consumer's ack floor, is the source of
/// truth), `batch` messages and at most [`PULL_BYTES`] per pull, with cumulative acks.
/// `max_payload` is the server's.
pub fn source_config(partition: u32, batch: usize, max_payload: usize) -> SourceConfig {
    SourceConfig {
        durable: consumer_name(partition),
        description: format!("citypulse processors, partition {partition}"),
        filter_subject: partition_filter(partition),
        ack_wait: ACK_WAIT,
        max_ack_pending: MAX_ACK_PENDING,
        batch,
        max_bytes: pull_bytes(PULL_BYTES, max_payload),
        heartbeat: HEARTBEAT,
        fill_wait: FILL_WAIT,
        linger: Duration::ZERO,
    }
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Someone else wrote the partition's checkpoint since this process last did.
    #[error(
        "the checkpoint of partition {partition} was written by another process (its manifest is \
         at revision {found:?}, this process wrote {expected:?}); does another instance own the \
         partition?"
    )]
    Fenced {
        /// The partition.
        partition: u32,
        /// The revision this process expected.
        expected: Option<u64>,
        /// The revision found.
        found: Option<u64>,
    },
    /// The stored checkpoint is unusable.
    #[error("checkpoint of partition {partition}: {source}")]
    Invalid {
        /// The partition.
        partition: u32,
        /// What is wrong.
        source: CheckpointError,
    },
    /// NATS did not answer; worth retrying.
    #[error("checkpoint storage unavailable: {0}")]
    Unavailable(String),
}

/// A partition's checkpoint in the KV bucket: manifest `p<N>`, chunks `p<N>.<slot>.<i>`.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    kv: kv::Store,
    partition: u32,
    /// Revision of the manifest this process last read or wrote.
    revision: Option<u64>,
    /// Slot of the current chunks.
    slot: u8,
    max_chunk: usize,
}

impl CheckpointStore {
    /// The store of `partition`; `max_payload` is the server's message limit.
    pub fn new(kv: kv::Store, partition: u32, max_payload: usize) -> CheckpointStore {
        // Leave room for headers and the manifest's own fields.
        let max_chunk = max_payload.saturating_sub(16 * 1024).max(4 * 1024);
        CheckpointStore {
            kv,
            partition,
            revision: None,
            slot: 0,
            max_chunk,
        }
    }

    fn unavailable(e: impl std::fmt::Display) -> StoreError {
        StoreError::Unavailable(e.to_string())
    }

    fn invalid(&self, source: CheckpointError) -> StoreError {
        StoreError::Invalid {
            partition: self.partition,
            source,
        }
    }

    async fn manifest(&self) -> Result<Option<(u64, Manifest)>, StoreError> {
        let key = checkpoint::manifest_key(self.partition);
        let Some(entry) = self.kv.entry(key).await.map_err(Self::unavailable)? else {
            return Ok(None);
        };
        if entry.operation != Operation::Put {
            return Ok(None);
        }
        let m = Manifest::decode(&entry.value).map_err(|e| self.invalid(e))?;
        Ok(Some((entry.revision, m)))
    }

    /// The current checkpoint's bytes, verified; `None` when the partition has none.
    pub async fn load(&mut self) -> Result<Option<Vec<u8>>, StoreError> {
        let Some((revision, m)) = self.manifest().await? else {
            return Ok(None);
        };
        let bytes = match &m.inline {
            Some(b) => b.0.clone(),
            None => {
                let mut bytes = Vec::with_capacity(usize::try_from(m.len).unwrap_or(0));
                for i in 0..m.chunks {
                    let key = checkpoint::chunk_key(self.partition, m.slot, i);
                    let chunk = self.kv.get(&key).await.map_err(Self::unavailable)?;
                    let chunk = chunk.ok_or_else(|| {
                        self.invalid(CheckpointError::Torn(format!("chunk {key} is missing")))
                    })?;
                    bytes.extend_from_slice(&chunk);
                }
                bytes
            }
        };
        m.verify(&bytes).map_err(|e| self.invalid(e))?;
        self.revision = Some(revision);
        self.slot = m.slot;
        Ok(Some(bytes))
    }

    /// Writes `bytes` as the partition's checkpoint: chunks into the free slot first, then the
    /// manifest, compare-and-set on the revision this process last saw.
    pub async fn save(&mut self, bytes: &Bytes) -> Result<(), StoreError> {
        let slot = 1 - self.slot.min(1);
        let m = Manifest::describe(bytes, slot, self.max_chunk, self.max_chunk);
        if m.inline.is_none() {
            // Chunks are slices of `bytes`, not copies: a checkpoint of a large partition is
            // megabytes, and all partitions may write at once.
            let starts = (0..bytes.len()).step_by(self.max_chunk);
            let puts = starts.enumerate().map(|(i, from)| {
                let key = checkpoint::chunk_key(self.partition, slot, i as u32);
                let kv = self.kv.clone();
                let value = bytes.slice(from..bytes.len().min(from + self.max_chunk));
                async move { kv.put(key, value).await }
            });
            futures::future::try_join_all(puts)
                .await
                .map_err(Self::unavailable)?;
        }
        let key = checkpoint::manifest_key(self.partition);
        let value = Bytes::from(m.encode());
        let written = match self.revision {
            None => self.kv.create(&key, value).await.map_err(|e| e.to_string()),
            Some(r) => self
                .kv
                .update(&key, value, r)
                .await
                .map_err(|e| e.to_string()),
        };
        match written {
            Ok(revision) => {
                self.revision = Some(revision);
                self.slot = slot;
                Ok(())
            }
            Err(e) => {
                // A retried write whose first attempt landed looks like a conflict: accept it
                // when the stored manifest is exactly ours.
                match self.manifest().await? {
                    Some((revision, current)) if current == m => {
                        self.revision = Some(revision);
                        self.slot = slot;
                        Ok(())
                    }
                    Some((revision, _)) if Some(revision) != self.revision => {
                        Err(StoreError::Fenced {
                            partition: self.partition,
                            expected: self.revision,
                            found: Some(revision),
                        })
                    }
                    None if self.revision.is_some() => Err(StoreError::Fenced {
                        partition: self.partition,
                        expected: self.revision,
                        found: None,
                    }),
                    _ => Err(Self::unavailable(e)),
                }
            }
        }
    }
}

/// Most window results awaiting their acks at once. A larger window costs nats-server less CPU
/// per result: 512 against 64 made the processors' stage 20–32 % faster (docs/benchmarks.md,
/// *Window results in windows of 512, one window end at a time*); 1,024 raised the peak RSS at
/// 100,000 sensors above issue 9's 1 KB per sensor.
pub const RESULTS_WINDOW: usize = 512;

/// How window results are published: up to [`RESULTS_WINDOW`] awaiting their acks at once, the
/// acks counted, and a window never holds two of one subject nor two window ends (each result's
/// epoch is its `window_end`, [`crate::outbox::Outbox::next_slice`]). A result whose publish is
/// retried lands after the rest of its window, so behind others of its own window end at most,
/// never behind its subject's next result (which the alerts would drop as old) nor behind a
/// newer window of its district (which their offline and silence checks judge sensors against:
/// docs/operations.md, *Delivery guarantees, in one place*).
pub const RESULTS_WINDOWS: Windows = Windows::counted_in_subject_order(RESULTS_WINDOW);

/// Publishes window results with their `Nats-Msg-Id` through [`publish_in_windows`] (bounded
/// acks in flight, retried under the same id until acked or shutdown), counting the acks: a
/// window that meets duplicates (a replay after a crash) is not sent a second time to match acks
/// to results, which a core NATS subscriber of `metrics.>` would see.
pub async fn publish_results(
    js: &Context,
    out: &[Outgoing],
    shutdown: &Shutdown,
    metrics: &ProcessorMetrics,
) -> Result<(), PublishError> {
    let started = Instant::now();
    let on_retry = |r| metrics.publish_retry(r);
    let acks = publish_in_windows(js, out, RESULTS_WINDOWS, shutdown, &on_retry).await?;
    for ack in acks {
        metrics.published(started.elapsed(), ack.duplicate);
    }
    Ok(())
}

/// A reading the processors refuse, to dead-letter.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Bounded reason: the subject's last token and the `Citypulse-Reason` header.
    pub reason: &'static str,
    /// Human explanation with the offending value.
    pub detail: String,
    /// The READINGS subject it was stored under.
    pub subject: String,
    /// Its READINGS stream sequence.
    pub sequence: u64,
    /// Its index in a batch message (`None`: the whole message).
    pub item: Option<u32>,
    /// The original payload.
    pub payload: Bytes,
}

/// Publishes dead letters on `dlq.<reason>` (built by [`dead_letter`]; id
/// `readings:<sequence>[:<item>]`, so a replay is deduplicated). When no stream takes `dlq.>`
/// (DLQ is ingest's), the letter is dropped with a warning: the rejection is already counted and
/// logged.
pub async fn publish_dead_letters(
    js: &Context,
    letters: &[DeadLetter],
    shutdown: &Shutdown,
    metrics: &ProcessorMetrics,
) -> Result<(), PublishError> {
    for l in letters {
        let msg_id = match l.item {
            None => format!("readings:{}", l.sequence),
            Some(i) => format!("readings:{}:{i}", l.sequence),
        };
        let why = Rejected {
            reason: l.reason,
            detail: &l.detail,
            source_subject: &l.subject,
            source_sequence: l.sequence,
        };
        let m = dead_letter(why, msg_id, &l.payload);
        let mut first = m.headers.clone();
        first.insert(async_nats::header::NATS_MESSAGE_ID, m.msg_id.as_str());
        let attempt = async {
            js.publish_with_headers(m.subject.clone(), first, m.payload.clone())
                .await?
                .await
        };
        match attempt.await {
            Ok(_) => {}
            Err(e) if e.kind() == PublishErrorKind::StreamNotFound => {
                tracing::warn!(subject = %m.subject, sequence = l.sequence,
                    "no stream stores dead letters (DLQ is created by ingest); rejection counted only");
            }
            Err(_) => {
                metrics.publish_retry("dead_letter");
                publish_all(js, std::slice::from_ref(&m), shutdown, &|r| {
                    metrics.publish_retry(r)
                })
                .await?;
            }
        }
    }
    Ok(())
}
