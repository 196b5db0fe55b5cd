//! NATS adapter: stream provisioning, the METRICS consumer, publishing alert transitions and
//! dead letters, and the checkpoint in the KV bucket.

use crate::config::RunConfig;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{self, Stream};
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use bytes::Bytes;
use citypulse_runtime::jetstream::{ensure_stream, publish_durably, PublishError};
use citypulse_runtime::publish::{publish_all, Rejected};
use citypulse_runtime::shutdown::Shutdown;
use citypulse_runtime::source::SourceConfig;
use citypulse_runtime::stream_config::{self, Limits};
use citypulse_schema::AlertEvent;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Header on a published `resolved` event that a silence matches (it is published because its
/// firing was).
pub const HEADER_SILENCED: &str = "Citypulse-Silenced";

/// METRICS as the processors provision it by default; whoever starts first creates it.
pub fn metrics_stream() -> stream::Config {
    stream_config::metrics(Limits::METRICS)
}

/// Provisions ALERTS (owned here) and, with their owners' defaults when they are missing,
/// METRICS and DLQ, idempotently; returns METRICS.
pub async fn provision(js: &Context) -> anyhow::Result<Stream> {
    let metrics = ensure_stream(js, metrics_stream()).await?;
    ensure_stream(js, stream_config::alerts(Limits::ALERTS)).await?;
    ensure_stream(js, stream_config::dlq(Limits::DLQ)).await?;
    Ok(metrics)
}

/// Pull batch on METRICS (at most a quarter of `--max-ack-pending`).
const PULL_BATCH: u32 = 1000;
/// Idle heartbeat of the pull: a silent server is noticed after two.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// The durable consumer on METRICS (`--consumer`), read in order with cumulative acks through
/// [`citypulse_runtime::source::Source`], which recreates it to start right after the
/// checkpoint instead of waiting `ack_wait` for the server to redeliver what a crashed process
/// had been handed.
pub fn source_config(cfg: &RunConfig) -> SourceConfig {
    SourceConfig {
        durable: cfg.consumer.clone(),
        description: "citypulse-alerts: window results → alert rules".to_owned(),
        filter_subject: String::new(),
        ack_wait: cfg.ack_wait,
        max_ack_pending: i64::from(cfg.max_ack_pending),
        batch: PULL_BATCH.min(cfg.max_ack_pending / 4).max(1) as usize,
        heartbeat: HEARTBEAT,
    }
}

/// Publishes one transition to `alerts.<severity>.<kind>.<district>` with
/// `Nats-Msg-Id` = [`AlertEvent::msg_id`], waiting for the stream's ack (retrying until then).
pub async fn publish_alert(
    js: &Context,
    event: &AlertEvent,
    silenced: bool,
    shutdown: &Shutdown,
    on_retry: impl FnMut(&'static str),
) -> Result<(), PublishError> {
    let mut headers = HeaderMap::new();
    if silenced {
        headers.insert(HEADER_SILENCED, "true");
    }
    publish_durably(
        js,
        event.subject(),
        &event.msg_id(),
        headers,
        Bytes::from(event.encode()),
        shutdown,
        on_retry,
    )
    .await
    .map(|_| ())
}

/// Dead-letters a METRICS message that is not a window result: `dlq.<reason>`, original
/// payload, reason/detail/source headers ([`dead_letter`](citypulse_runtime::publish::dead_letter));
/// deduplicated by source sequence.
pub async fn dead_letter(
    js: &Context,
    why: Rejected<'_>,
    payload: &Bytes,
    shutdown: &Shutdown,
    on_retry: &(dyn Fn(&'static str) + Sync),
) -> Result<(), PublishError> {
    let msg_id = format!("alerts:metrics:{}", why.source_sequence);
    let m = citypulse_runtime::publish::dead_letter(why, msg_id, payload);
    publish_all(js, std::slice::from_ref(&m), shutdown, on_retry)
        .await
        .map(|_| ())
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The KV bucket could not be opened or created.
    #[error("opening KV bucket {bucket}: {detail}")]
    Bucket {
        /// Bucket name.
        bucket: String,
        /// Server or client error.
        detail: String,
    },
    /// Reading a key failed.
    #[error("reading checkpoint key {key}: {detail}")]
    Read {
        /// Key.
        key: String,
        /// Server or client error.
        detail: String,
    },
    /// Writing a key failed.
    #[error("writing checkpoint key {key}: {detail}")]
    Write {
        /// Key.
        key: String,
        /// Server or client error.
        detail: String,
    },
    /// The manifest names a chunk that is missing, or does not parse.
    #[error("checkpoint is corrupt: {0}")]
    Corrupt(String),
}

/// Largest chunk of a checkpoint stored under one key (below the server's default 1 MiB
/// max_payload).
const CHUNK: usize = 512 * 1024;
const MANIFEST: &str = "manifest";

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct Manifest {
    generation: u64,
    chunks: usize,
    bytes: usize,
}

/// The evaluator checkpoint in JetStream KV: chunks `state.<generation>.<i>`, then a `manifest`
/// naming the generation. The manifest is written last, so a crash mid-write leaves the
/// previous checkpoint intact; the previous generation's chunks are purged afterwards.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    kv: kv::Store,
    generation: u64,
    chunks: usize,
}

impl Checkpoints {
    /// Opens (or creates) the bucket.
    pub async fn open(js: &Context, bucket: &str) -> Result<Checkpoints, CheckpointError> {
        let err = |e: String| CheckpointError::Bucket {
            bucket: bucket.to_owned(),
            detail: e,
        };
        let kv = match js.get_key_value(bucket).await {
            Ok(kv) => kv,
            Err(_) => match js
                .create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    description: "citypulse-alerts evaluator checkpoint".into(),
                    history: 1,
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
            {
                Ok(kv) => kv,
                // Created concurrently by another instance: open it.
                Err(_) => js
                    .get_key_value(bucket)
                    .await
                    .map_err(|e| err(e.to_string()))?,
            },
        };
        Ok(Checkpoints {
            kv,
            generation: 0,
            chunks: 0,
        })
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, CheckpointError> {
        self.kv.get(key).await.map_err(|e| CheckpointError::Read {
            key: key.to_owned(),
            detail: e.to_string(),
        })
    }

    /// The latest checkpoint, or `None` on a first start.
    pub async fn load(&mut self) -> Result<Option<Vec<u8>>, CheckpointError> {
        let Some(raw) = self.get(MANIFEST).await? else {
            return Ok(None);
        };
        let m: Manifest = serde_json::from_slice(&raw)
            .map_err(|e| CheckpointError::Corrupt(format!("manifest: {e}")))?;
        let mut bytes = Vec::with_capacity(m.bytes);
        for i in 0..m.chunks {
            let key = chunk_key(m.generation, i);
            let chunk = self
                .get(&key)
                .await?
                .ok_or_else(|| CheckpointError::Corrupt(format!("missing {key}")))?;
            bytes.extend_from_slice(&chunk);
        }
        if bytes.len() != m.bytes {
            return Err(CheckpointError::Corrupt(format!(
                "{} bytes, manifest says {}",
                bytes.len(),
                m.bytes
            )));
        }
        self.generation = m.generation;
        self.chunks = m.chunks;
        Ok(Some(bytes))
    }

    /// Writes a new checkpoint.
    pub async fn save(&mut self, bytes: &[u8]) -> Result<(), CheckpointError> {
        let generation = self.generation + 1;
        let pieces: Vec<&[u8]> = if bytes.is_empty() {
            vec![]
        } else {
            bytes.chunks(CHUNK).collect()
        };
        for (i, piece) in pieces.iter().enumerate() {
            let key = chunk_key(generation, i);
            self.kv
                .put(&key, Bytes::copy_from_slice(piece))
                .await
                .map_err(|e| CheckpointError::Write {
                    key: key.clone(),
                    detail: e.to_string(),
                })?;
        }
        let manifest = Manifest {
            generation,
            chunks: pieces.len(),
            bytes: bytes.len(),
        };
        let body = serde_json::to_vec(&manifest)
            .map_err(|e| CheckpointError::Corrupt(format!("encoding manifest: {e}")))?;
        self.kv
            .put(MANIFEST, body.into())
            .await
            .map_err(|e| CheckpointError::Write {
                key: MANIFEST.to_owned(),
                detail: e.to_string(),
            })?;
        let (old_gen, old_chunks) = (self.generation, self.chunks);
        self.generation = generation;
        self.chunks = pieces.len();
        for i in 0..old_chunks {
            // Best effort: a leftover chunk is only wasted space, never read again.
            let _ = self.kv.purge(chunk_key(old_gen, i)).await;
        }
        Ok(())
    }
}

fn chunk_key(generation: u64, i: usize) -> String {
    format!("state.{generation}.{i}")
}
