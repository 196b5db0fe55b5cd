//! NATS adapter: stream provisioning, the METRICS consumer, publishing alert transitions and
//! dead letters, and the checkpoint in the KV bucket.

use crate::config::RunConfig;
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{self, Stream};
use async_nats::jetstream::Context;
use bytes::Bytes;
use citypulse_runtime::jetstream::{
    ensure_bucket, provision_stream, publish_durably, PublishError,
};
use citypulse_runtime::publish::{publish_all, Outgoing, Rejected};
use citypulse_runtime::shutdown::Shutdown;
use citypulse_runtime::source::{pull_bytes, SourceConfig, FILL_WAIT};
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
/// METRICS and DLQ, idempotently, each with `replicas`, retrying at start-up
/// ([`provision_stream`]); returns METRICS, or `None` on shutdown.
pub async fn provision(
    js: &Context,
    replicas: usize,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<Stream>> {
    let r = |l: Limits| Limits { replicas, ..l };
    let Some(metrics) =
        provision_stream(js, stream_config::metrics(r(Limits::METRICS)), shutdown).await?
    else {
        return Ok(None);
    };
    for other in [
        stream_config::alerts(r(Limits::ALERTS)),
        stream_config::dlq(r(Limits::DLQ)),
    ] {
        if provision_stream(js, other, shutdown).await?.is_none() {
            return Ok(None);
        }
    }
    Ok(Some(metrics))
}

/// Pull batch on METRICS (at most a quarter of `--max-ack-pending`).
const PULL_BATCH: u32 = 1000;
/// Most bytes of METRICS a pull asks for (the limit rises to hold the largest message,
/// [`pull_bytes`]): 1,000 window results are about 0.3 MB.
const PULL_BYTES: usize = 8 << 20;
/// Idle heartbeat of the pull: a silent server is noticed after two.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// The durable consumer on METRICS (`--consumer`), read in order with cumulative acks through
/// [`citypulse_runtime::source::Source`], which recreates it to start right after the
/// checkpoint instead of waiting `ack_wait` for the server to redeliver what a crashed process
/// had been handed.
/// `max_payload` is the server's.
pub fn source_config(cfg: &RunConfig, max_payload: usize) -> SourceConfig {
    SourceConfig {
        durable: cfg.consumer.clone(),
        description: "citypulse-alerts: window results → alert rules".to_owned(),
        filter_subject: String::new(),
        ack_wait: cfg.ack_wait,
        max_ack_pending: i64::from(cfg.max_ack_pending),
        batch: PULL_BATCH.min(cfg.max_ack_pending / 4).max(1) as usize,
        max_bytes: pull_bytes(PULL_BYTES, max_payload),
        heartbeat: HEARTBEAT,
        fill_wait: FILL_WAIT,
        linger: Duration::ZERO,
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
    let mut msg = Outgoing::new(event.subject(), event.msg_id(), Bytes::from(event.encode()));
    if silenced {
        msg.headers.insert(HEADER_SILENCED, "true");
    }
    publish_durably(js, &msg, shutdown, on_retry)
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
    /// Another instance wrote a checkpoint since this one last read or wrote it (it took over
    /// the active role): this instance must stop without writing.
    #[error("checkpoint written by another instance (manifest revision {found:?}, expected {expected:?})")]
    Fenced {
        /// The manifest revision this instance last read or wrote.
        expected: Option<u64>,
        /// The one found.
        found: Option<u64>,
    },
}

impl CheckpointError {
    /// Whether the write was refused because another instance owns the checkpoint now.
    pub fn is_fenced(&self) -> bool {
        matches!(self, CheckpointError::Fenced { .. })
    }
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
    /// Where the chunks are: [`Layout`] (absent in manifests written before v0.2.1).
    #[serde(default)]
    layout: Layout,
}

/// How chunk keys are named.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Layout {
    /// Before v0.2.1: `state.<generation>.<i>`, the previous generation purged after each save.
    /// Every purge left a marker under a key never used again, so the bucket grew by a few
    /// entries a second for ever.
    #[default]
    PerGeneration,
    /// `slot.<generation % 2>.<i>`: two alternating slots, overwritten in place (history 1), so
    /// the bucket holds at most twice the largest checkpoint's chunks plus the manifest.
    Slots,
}

impl Layout {
    fn key(self, generation: u64, i: usize) -> String {
        match self {
            Layout::PerGeneration => format!("state.{generation}.{i}"),
            Layout::Slots => format!("slot.{}.{i}", generation % 2),
        }
    }
}

/// The evaluator checkpoint in JetStream KV: chunks in the slot of its generation
/// (`slot.<generation % 2>.<i>`), then a `manifest` naming the generation. The manifest is
/// written last and the slot written is never the one it names, so a crash mid-write leaves the
/// previous checkpoint intact. A checkpoint of the earlier per-generation layout loads, and its
/// chunks are purged once the first new one is written.
///
/// **Fencing.** The manifest is written compare-and-set on the revision this instance last read
/// or wrote, and a save first checks that revision is still the current one before touching a
/// chunk: an instance that lost the active role to another (which has written since) gets
/// [`CheckpointError::Fenced`] and overwrites neither the manifest nor the slot it names.
#[derive(Debug, Clone)]
pub struct Checkpoints {
    kv: kv::Store,
    /// Revision of the manifest this instance last read or wrote (`None`: none existed).
    revision: Option<u64>,
    generation: u64,
    /// Chunks written in each slot by this process (stale ones beyond a smaller checkpoint are
    /// purged; after a restart, at most one slot's worth stays unread).
    slot_chunks: [usize; 2],
    /// Chunks of a per-generation checkpoint loaded at start, purged after the next save.
    legacy: Option<(u64, usize)>,
}

impl Checkpoints {
    /// Opens (or creates, with `replicas`) the bucket.
    pub async fn open(
        js: &Context,
        bucket: &str,
        replicas: usize,
    ) -> Result<Checkpoints, CheckpointError> {
        let err = |e: String| CheckpointError::Bucket {
            bucket: bucket.to_owned(),
            detail: e,
        };
        let config = kv::Config {
            bucket: bucket.to_owned(),
            description: "citypulse-alerts evaluator checkpoint".into(),
            history: 1,
            storage: stream::StorageType::File,
            num_replicas: replicas.max(1),
            ..Default::default()
        };
        let kv = ensure_bucket(js, config)
            .await
            .map_err(|e| err(format!("{e:#}")))?;
        Ok(Checkpoints {
            kv,
            revision: None,
            generation: 0,
            slot_chunks: [0, 0],
            legacy: None,
        })
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, CheckpointError> {
        self.kv.get(key).await.map_err(|e| CheckpointError::Read {
            key: key.to_owned(),
            detail: e.to_string(),
        })
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<(), CheckpointError> {
        self.kv
            .put(key, value)
            .await
            .map(|_| ())
            .map_err(|e| CheckpointError::Write {
                key: key.to_owned(),
                detail: e.to_string(),
            })
    }

    /// The current manifest's revision and bytes (`None`: no manifest).
    async fn manifest(&self) -> Result<Option<(u64, Bytes)>, CheckpointError> {
        let entry = self
            .kv
            .entry(MANIFEST)
            .await
            .map_err(|e| CheckpointError::Read {
                key: MANIFEST.to_owned(),
                detail: e.to_string(),
            })?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .map(|e| (e.revision, e.value)))
    }

    /// Writes the manifest compare-and-set on [`Checkpoints::revision`].
    async fn write_manifest(&mut self, body: Bytes) -> Result<(), CheckpointError> {
        let written = match self.revision {
            None => self
                .kv
                .create(MANIFEST, body.clone())
                .await
                .map_err(|e| e.to_string()),
            Some(r) => self
                .kv
                .update(MANIFEST, body.clone(), r)
                .await
                .map_err(|e| e.to_string()),
        };
        let detail = match written {
            Ok(revision) => {
                self.revision = Some(revision);
                return Ok(());
            }
            Err(e) => e,
        };
        // A retried write whose first attempt landed looks like a conflict: accept it when the
        // stored manifest is exactly ours; another revision is another instance's.
        match self.manifest().await? {
            Some((revision, current)) if current == body => {
                self.revision = Some(revision);
                Ok(())
            }
            found if found.as_ref().map(|(r, _)| *r) != self.revision => {
                Err(CheckpointError::Fenced {
                    expected: self.revision,
                    found: found.map(|(r, _)| r),
                })
            }
            _ => Err(CheckpointError::Write {
                key: MANIFEST.to_owned(),
                detail,
            }),
        }
    }

    /// The latest checkpoint, or `None` on a first start.
    pub async fn load(&mut self) -> Result<Option<Vec<u8>>, CheckpointError> {
        let Some((revision, raw)) = self.manifest().await? else {
            self.revision = None;
            return Ok(None);
        };
        let m: Manifest = serde_json::from_slice(&raw)
            .map_err(|e| CheckpointError::Corrupt(format!("manifest: {e}")))?;
        let mut bytes = Vec::with_capacity(m.bytes.min(64 * CHUNK));
        for i in 0..m.chunks {
            let key = m.layout.key(m.generation, i);
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
        self.revision = Some(revision);
        self.generation = m.generation;
        match m.layout {
            Layout::Slots => self.slot_chunks[(m.generation % 2) as usize] = m.chunks,
            Layout::PerGeneration => self.legacy = Some((m.generation, m.chunks)),
        }
        Ok(Some(bytes))
    }

    /// Writes a new checkpoint; [`CheckpointError::Fenced`] when another instance has written
    /// one since this one last read or wrote.
    pub async fn save(&mut self, bytes: &[u8]) -> Result<(), CheckpointError> {
        let generation = self.generation + 1;
        let slot = (generation % 2) as usize;
        // Before any chunk: the slot written is free only while the manifest is still ours.
        let found = self.manifest().await?.map(|(r, _)| r);
        if found != self.revision {
            return Err(CheckpointError::Fenced {
                expected: self.revision,
                found,
            });
        }
        let pieces: Vec<&[u8]> = bytes.chunks(CHUNK).collect();
        for (i, piece) in pieces.iter().enumerate() {
            self.put(
                &Layout::Slots.key(generation, i),
                Bytes::copy_from_slice(piece),
            )
            .await?;
        }
        let manifest = Manifest {
            generation,
            chunks: pieces.len(),
            bytes: bytes.len(),
            layout: Layout::Slots,
        };
        let body = serde_json::to_vec(&manifest)
            .map_err(|e| CheckpointError::Corrupt(format!("encoding manifest: {e}")))?;
        self.write_manifest(Bytes::from(body)).await?;
        self.generation = generation;
        // Best effort below: a leftover chunk is only wasted space, never read again.
        let stale = std::mem::replace(&mut self.slot_chunks[slot], pieces.len());
        for i in pieces.len()..stale {
            let _ = self.kv.purge(Layout::Slots.key(generation, i)).await;
        }
        if let Some((old, chunks)) = self.legacy.take() {
            for i in 0..chunks {
                let _ = self.kv.purge(Layout::PerGeneration.key(old, i)).await;
            }
        }
        Ok(())
    }
}
