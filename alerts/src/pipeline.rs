//! The shell: one `select!` loop (shutdown first) around the pure evaluator and notifier.
//!
//! METRICS is read in order, in batches, through [`Source`] (which resumes right after the
//! checkpoint). Per message: decode → [`Evaluator::evaluate`] → for each transition,
//! [`Notifier::route`] → publish to ALERTS and wait for the ack (or record it as suppressed) →
//! queue its history row. Every `--checkpoint-every` messages, or when the [`Cadence`] says
//! (every `--checkpoint-interval`, and at once when a backlog drains), the
//! whole state (evaluator, notifier, uncommitted history rows, and the METRICS stream sequence
//! it includes) is written to the KV bucket, and only then is that sequence acked (`AckPolicy::All`).
//! After a crash the consumer redelivers everything after the last ack; messages at or below the
//! checkpoint's sequence are acked and skipped, the rest are evaluated again from the
//! checkpointed state — deterministically, so they produce the same transitions with the same
//! `Nats-Msg-Id`s, which the server deduplicates.
//!
//! The pipeline runs only while this instance holds the group's lease ([`Lease`]): its stop is
//! the lease's, every checkpoint write is preceded by [`Lease::confirm`] and is itself
//! compare-and-set ([`Checkpoints::save`]), and once the lease is lost nothing more is
//! published, checkpointed or acked, and no operator request is answered.

use crate::api::{self, Effect};
use crate::config::RunConfig;
use crate::engine::{Evaluator, Notifier, Outcome, Route, RuleSet, State};
use crate::metrics::AlertsMetrics;
use crate::nats::{self as adapter, Checkpoints};
use crate::store::{Row, Store};
use async_nats::jetstream::{self, Context};
use citypulse_runtime::cadence::Cadence;
use citypulse_runtime::group::Lease;
use citypulse_runtime::jetstream::PublishError;
use citypulse_runtime::shutdown::Shutdown;
use citypulse_runtime::source::{Delivery, Source};
use citypulse_schema::{AlertEvent, Kind, WindowResult};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Format version of the checkpoint written: 2 writes each subject's state as an array of its
/// fields, where 1 wrote a map keyed by their names (see the evaluator's `form`).
const CHECKPOINT_VERSION: u32 = 2;

/// The oldest version read: version 1's checkpoints decode as they are.
const OLDEST_READ: u32 = 1;

#[derive(Serialize)]
struct CheckpointRef<'a> {
    version: u32,
    stream_seq: u64,
    evaluator: &'a State,
    notifier: &'a Notifier,
    outbox: &'a VecDeque<(u64, Row)>,
    next_serial: u64,
}

#[derive(Deserialize)]
struct Checkpoint {
    version: u32,
    stream_seq: u64,
    evaluator: State,
    notifier: Notifier,
    #[serde(default)]
    outbox: VecDeque<(u64, Row)>,
    #[serde(default)]
    next_serial: u64,
}

/// Reads a checkpoint: CBOR in one zstd frame, or uncompressed CBOR as builds before the
/// compression wrote it (the same layout).
fn decode_checkpoint(bytes: &[u8]) -> anyhow::Result<Checkpoint> {
    let cbor =
        citypulse_runtime::zstd_cbor::cbor(bytes, citypulse_runtime::zstd_cbor::MAX_STATE_BYTES)?;
    Ok(ciborium::from_reader(&cbor[..])?)
}

/// Wall-clock ms, for operator actions (silences, acks).
pub use citypulse_runtime::clock::now_ms as wall_ms;

/// What every term of the active role evaluates with: the connection, the rules, the
/// checkpoint bucket, the history store and the metrics.
#[derive(Clone)]
pub struct Parts {
    /// The NATS connection (publishes, operator requests).
    pub client: async_nats::Client,
    /// The rules in force.
    pub rules: Arc<RuleSet>,
    /// The checkpoint bucket.
    pub checkpoints: Checkpoints,
    /// The alert history in PostgreSQL, when configured.
    pub store: Option<Store>,
    /// The service's metrics.
    pub metrics: AlertsMetrics,
}

/// The running service's state and connections.
pub struct Pipeline {
    js: Context,
    client: async_nats::Client,
    evaluator: Evaluator,
    notifier: Notifier,
    checkpoints: Checkpoints,
    store: Option<Store>,
    dropped_rows: u64,
    processed_seq: u64,
    checkpointed_seq: u64,
    /// The last message applied (acked, cumulatively, once a checkpoint includes it).
    last: Option<Delivery>,
    /// Checkpointed and not yet acked.
    ackable: Option<Delivery>,
    since_checkpoint: u32,
    dirty: bool,
    /// False once a transition could not be published at shutdown: the in-memory state is then
    /// ahead of what was delivered, so it must not be checkpointed (the replay redoes it).
    consistent: bool,
    metrics: AlertsMetrics,
    /// The lease's stop: process shutdown, the role handed over, or the lease lost.
    shutdown: Shutdown,
    /// The active role's lease (fencing).
    lease: Lease,
    checkpoint_every: u32,
    /// When to checkpoint besides every `checkpoint_every` messages.
    cadence: Cadence,
    grace_ms: u64,
    /// A checkpoint was restored at start.
    restored: bool,
    /// Processing time of the last window result per kind and district.
    arrivals: HashMap<Kind, HashMap<String, Instant>>,
    /// Processing time of the start (a district's arrival until its first result).
    started: Instant,
}

impl Pipeline {
    /// Restores the checkpoint (if any) under the rules, resolves alerts of removed rules, and
    /// re-queues uncommitted history rows. Runs until `lease.stop()`.
    pub async fn start(parts: Parts, lease: Lease, cfg: &RunConfig) -> anyhow::Result<Pipeline> {
        let Parts {
            client,
            rules,
            mut checkpoints,
            store,
            metrics,
        } = parts;
        let shutdown = lease.stop().clone();
        let js = jetstream::new(client.clone());
        let loaded = checkpoints.load().await?;
        let mut events = Vec::new();
        let mut p = Pipeline {
            js,
            client,
            evaluator: Evaluator::new(Arc::clone(&rules)),
            notifier: Notifier::new(),
            checkpoints,
            store,
            dropped_rows: 0,
            processed_seq: 0,
            checkpointed_seq: 0,
            last: None,
            ackable: None,
            since_checkpoint: 0,
            dirty: false,
            consistent: true,
            metrics,
            shutdown,
            lease,
            checkpoint_every: cfg.checkpoint_every,
            cadence: Cadence::new(cfg.checkpoint_interval, Instant::now()),
            grace_ms: citypulse_runtime::duration::millis(cfg.district_silence_grace),
            restored: false,
            arrivals: HashMap::new(),
            started: Instant::now(),
        };
        match loaded {
            None => {
                tracing::info!(bucket = %cfg.kv_bucket, "no checkpoint: starting with empty state")
            }
            Some(bytes) => p.restore(&bytes, rules, &cfg.kv_bucket, &mut events)?,
        }
        if !events.is_empty() {
            // Routed while the notifier still knows they were published.
            p.emit(events, None).await?;
            p.dirty = true;
        }
        p.notifier.retain_active(p.evaluator.active());
        if p.dirty {
            p.checkpoint().await;
        }
        p.update_gauges();
        Ok(p)
    }

    /// Takes the state of the checkpoint `bytes` (from `bucket`) under `rules`; the alerts of
    /// rules no longer in force resolve into `events`. A checkpoint that does not decode, or of
    /// a version this build does not read, is an error: starting empty would re-fire every
    /// alert.
    fn restore(
        &mut self,
        bytes: &[u8],
        rules: Arc<RuleSet>,
        bucket: &str,
        events: &mut Vec<AlertEvent>,
    ) -> anyhow::Result<()> {
        let cp = decode_checkpoint(bytes).map_err(|e| {
            anyhow::anyhow!(
                "checkpoint in KV bucket {bucket} does not decode ({e}); refusing to start \
                 rather than re-fire every alert (delete the bucket's keys to start afresh)"
            )
        })?;
        if !(OLDEST_READ..=CHECKPOINT_VERSION).contains(&cp.version) {
            anyhow::bail!(
                "checkpoint version {} in KV bucket {bucket} is not one this build reads \
                 ({OLDEST_READ} to {CHECKPOINT_VERSION})",
                cp.version
            );
        }
        self.evaluator = Evaluator::restore(rules, cp.evaluator, events);
        self.notifier = cp.notifier;
        self.restored = true;
        self.processed_seq = cp.stream_seq;
        self.checkpointed_seq = cp.stream_seq;
        if let Some(store) = &self.store {
            store.outbox().restore(cp.outbox, cp.next_serial);
        }
        tracing::info!(
            stream_seq = cp.stream_seq,
            active = self.evaluator.active().count(),
            resolved_by_rule_change = events.len(),
            "restored checkpoint"
        );
        Ok(())
    }

    /// The METRICS sequence the restored checkpoint includes (`None` without a checkpoint).
    pub fn resume_after(&self) -> Option<u64> {
        self.restored.then_some(self.checkpointed_seq)
    }

    /// Runs until shutdown: METRICS messages (in order, in batches, from `source`), operator
    /// requests, checkpoints, housekeeping.
    pub async fn run(
        mut self,
        mut source: Source,
        mut requests: async_nats::Subscriber,
        housekeeping_interval: Duration,
    ) -> anyhow::Result<()> {
        let mut housekeeping = tokio::time::interval(housekeeping_interval);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(
            rules = self.evaluator.rules().rule_count(),
            resume_after = self.processed_seq,
            "evaluating window results"
        );
        let shutdown = self.shutdown.clone();
        let mut batch = Vec::new();
        loop {
            let checkpoint_at = self.cadence.deadline(source.caught_up());
            let step: Result<(), PublishError> = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some(req) = requests.next() => self.on_request(req).await,
                more = source.next_batch(&mut batch, &shutdown) => {
                    let mut step = Ok(());
                    if more {
                        for d in batch.drain(..) {
                            step = self.on_message(d).await;
                            if step.is_err() {
                                break;
                            }
                        }
                        // After any checkpoint taken within the batch: its rest is not in it.
                        self.cadence.taken(Instant::now());
                    }
                    batch.clear();
                    step
                }
                () = tokio::time::sleep_until(checkpoint_at.into()) => Ok(()),
                _ = housekeeping.tick() => self.housekeeping().await,
            };
            if step.is_ok() {
                self.on_schedule(source.caught_up()).await;
            }
            if let Some(d) = self.ackable.take() {
                source.ack(&d).await;
            }
            if step.is_err() {
                // Only a shutdown interrupts a publish.
                self.consistent = false;
                break;
            }
        }
        if self.lease.is_lost() {
            tracing::warn!(
                checkpointed_seq = self.checkpointed_seq,
                "lease lost: stopped without a final checkpoint (the new active instance resumes from its own)"
            );
        } else if self.consistent {
            self.checkpoint().await;
            if let Some(d) = self.ackable.take() {
                source.ack(&d).await;
            }
        } else {
            tracing::info!(
                checkpointed_seq = self.checkpointed_seq,
                "stopped mid-message; the next start replays from the last checkpoint"
            );
        }
        tracing::info!(checkpointed_seq = self.checkpointed_seq, "alerts stopped");
        Ok(())
    }

    async fn on_message(&mut self, d: Delivery) -> Result<(), PublishError> {
        let received = Instant::now();
        let seq = d.seq;
        if seq <= self.processed_seq {
            // Applied already (the source resumed at the consumer's ack floor): skip.
            self.metrics.redelivered();
            return Ok(());
        }
        let m = &d.message;
        match WindowResult::decode(&m.payload) {
            Err(e) => {
                self.dead_letter(m, seq, e.reason(), &e.to_string()).await?;
            }
            Ok(w) => {
                self.arrived(&w);
                let mut events = Vec::new();
                let outcome = self.evaluator.evaluate(&w, &mut events);
                self.metrics.window_result(w.kind(), outcome);
                if outcome == Outcome::Invalid {
                    let detail = format!(
                        "window_end {} is not after window_start {}",
                        w.window_end, w.window_start
                    );
                    self.dead_letter(m, seq, "invalid_window", &detail).await?;
                }
                self.emit(events, Some(received)).await?;
            }
        }
        self.processed_seq = seq;
        self.last = Some(d);
        self.since_checkpoint += 1;
        self.dirty = true;
        if self.since_checkpoint >= self.checkpoint_every {
            self.checkpoint().await;
        }
        Ok(())
    }

    /// Records the processing time of a district's result (for the district-silence judgement).
    fn arrived(&mut self, w: &WindowResult) {
        let districts = self.arrivals.entry(w.kind()).or_default();
        match districts.get_mut(&w.district) {
            Some(t) => *t = Instant::now(),
            None => {
                districts.insert(w.district.clone(), Instant::now());
            }
        }
    }

    async fn dead_letter(
        &mut self,
        m: &async_nats::Message,
        seq: u64,
        reason: &'static str,
        detail: &str,
    ) -> Result<(), PublishError> {
        self.metrics.rejected(reason);
        tracing::warn!(seq, subject = %m.subject, reason, detail, "not a window result; dead-lettered");
        let why = citypulse_runtime::publish::Rejected {
            reason,
            detail,
            source_subject: m.subject.as_str(),
            source_sequence: seq,
        };
        let metrics = &self.metrics;
        adapter::dead_letter(&self.js, why, &m.payload, &self.shutdown, &|r| {
            metrics.publish_retry(r)
        })
        .await
    }

    /// Routes, publishes and records transitions, in order.
    async fn emit(
        &mut self,
        events: Vec<AlertEvent>,
        received: Option<Instant>,
    ) -> Result<(), PublishError> {
        if events.is_empty() {
            return Ok(());
        }
        let now = wall_ms();
        self.dirty = true;
        for e in events {
            tracing::debug!(id = %e.id, state = %e.state, severity = %e.severity, at = e.at, "transition");
            match self.notifier.route(&e, now) {
                Route::Publish { silenced } => {
                    self.metrics.transition(&e, true);
                    let metrics = self.metrics.clone();
                    adapter::publish_alert(&self.js, &e, silenced, &self.shutdown, |r| {
                        metrics.publish_retry(r)
                    })
                    .await?;
                    if let Some(t) = received {
                        self.metrics.latency(t.elapsed());
                    }
                    self.record(Row::Event {
                        event: e,
                        published: true,
                        silence: None,
                    });
                }
                Route::Suppress { silence } => {
                    self.metrics.transition(&e, false);
                    self.record(Row::Event {
                        event: e,
                        published: false,
                        silence,
                    });
                }
            }
        }
        Ok(())
    }

    /// Queues a history row (kept in the outbox until PostgreSQL commits it).
    fn record(&mut self, row: Row) {
        let Some(store) = &self.store else {
            return;
        };
        let outbox = store.outbox();
        if outbox.push(row).dropped_oldest {
            self.dropped_rows += 1;
            self.metrics.store_rows("dropped", 1);
            if self.dropped_rows % 1000 == 1 {
                tracing::error!(
                    dropped = self.dropped_rows,
                    cap = outbox.cap(),
                    "PostgreSQL unreachable for long: alert history rows are being dropped"
                );
            }
        }
    }

    /// Checkpoints when the [`Cadence`] says; `caught_up`: the last message handed out was the
    /// newest the consumer had (everything handed out is applied here).
    async fn on_schedule(&mut self, caught_up: bool) {
        if !self.cadence.due(Instant::now(), caught_up) {
            return;
        }
        if self.checkpoint().await {
            self.cadence.settle(caught_up, true);
        } else {
            // Retried a moment later, not in a tight loop.
            self.cadence.failed(Instant::now());
        }
    }

    /// Writes the checkpoint and then acks the METRICS messages it includes; `true` when
    /// written (or nothing new to write).
    async fn checkpoint(&mut self) -> bool {
        if !self.dirty {
            self.cadence.written(Instant::now());
            return true;
        }
        let encode = |outbox: &VecDeque<(u64, Row)>, next_serial: u64| {
            citypulse_runtime::zstd_cbor::encode(&CheckpointRef {
                version: CHECKPOINT_VERSION,
                stream_seq: self.processed_seq,
                evaluator: self.evaluator.state(),
                notifier: &self.notifier,
                outbox,
                next_serial,
            })
        };
        // The rows PostgreSQL has not committed yet travel in the checkpoint.
        let encoded = match &self.store {
            Some(store) => store.outbox().with_rows(encode),
            None => encode(&VecDeque::new(), 0),
        };
        if let Some(store) = &self.store {
            self.metrics.store_pending(store.outbox().len());
        }
        let bytes = match encoded {
            Ok(bytes) => bytes,
            Err(e) => {
                self.metrics.checkpoint(false, 0, self.processed_seq);
                tracing::error!(error = %e, "encoding the checkpoint failed");
                return false;
            }
        };
        // Fencing: never write once another instance may have taken over.
        match self.lease.confirm().await {
            Ok(true) => {}
            Ok(false) => {
                self.metrics
                    .checkpoint(false, bytes.len(), self.processed_seq);
                tracing::warn!("lease lost: checkpoint not written");
                return false;
            }
            Err(e) => {
                self.metrics
                    .checkpoint(false, bytes.len(), self.processed_seq);
                tracing::warn!(error = %e, "cannot confirm the lease; checkpoint retried");
                return false;
            }
        }
        match self.checkpoints.save(&bytes).await {
            Ok(()) => {
                self.metrics
                    .checkpoint(true, bytes.len(), self.processed_seq);
                self.checkpointed_seq = self.processed_seq;
                self.dirty = false;
                self.since_checkpoint = 0;
                // Acked by the run loop (cumulatively: everything up to it).
                if let Some(d) = self.last.take() {
                    self.ackable = Some(d);
                }
                self.cadence.written(Instant::now());
                true
            }
            Err(e) if e.is_fenced() => {
                self.metrics
                    .checkpoint(false, bytes.len(), self.processed_seq);
                tracing::warn!(error = %e, "another instance took over the checkpoint; stopping");
                self.lease.lose();
                false
            }
            Err(e) => {
                self.metrics
                    .checkpoint(false, bytes.len(), self.processed_seq);
                tracing::warn!(error = %e, "checkpoint failed; retrying");
                false
            }
        }
    }

    /// Silence expiry (publishing what they hid), quiet-district judgement, gauges.
    async fn housekeeping(&mut self) -> Result<(), PublishError> {
        self.catch_up().await?;
        let clock = self.evaluator.clock();
        if self.grace_ms > 0 && clock > self.grace_ms {
            let mut events = Vec::new();
            // Judged only where the district has also been quiet for the grace in processing
            // time: at replay or catch-up speed, one partition lagging a few seconds behind the
            // others is many minutes of event time, not a silent district.
            let grace = Duration::from_millis(self.grace_ms);
            let (arrivals, started) = (&self.arrivals, self.started);
            let quiet = |kind: Kind, district: &str| {
                let last = arrivals.get(&kind).and_then(|m| m.get(district));
                last.copied().unwrap_or(started).elapsed() >= grace
            };
            self.evaluator
                .tick_where(clock - self.grace_ms, &quiet, &mut events);
            self.emit(events, None).await?;
        }
        self.update_gauges();
        Ok(())
    }

    /// Ends expired silences and publishes firing alerts no silence hides any more.
    async fn catch_up(&mut self) -> Result<(), PublishError> {
        let now = wall_ms();
        let (expired, due) = self.notifier.catch_up(now, self.evaluator.active());
        for s in expired {
            let at = s.ends_at;
            self.record(Row::Silence {
                silence: s,
                removed: Some(("expired".into(), at)),
            });
            self.dirty = true;
        }
        for e in due {
            self.dirty = true;
            let metrics = self.metrics.clone();
            adapter::publish_alert(&self.js, &e, false, &self.shutdown, |r| {
                metrics.publish_retry(r)
            })
            .await?;
            self.record(Row::Event {
                event: e,
                published: true,
                silence: None,
            });
        }
        Ok(())
    }

    fn update_gauges(&self) {
        let now = wall_ms();
        let hidden = self
            .evaluator
            .active()
            .filter(|e| self.notifier.silenced_by(e, now).is_some())
            .count();
        self.metrics.set_firing(
            &self.evaluator.firing_by_severity(),
            hidden,
            self.notifier.silences(now).count(),
        );
    }

    async fn on_request(&mut self, req: async_nats::Message) -> Result<(), PublishError> {
        let op = req.subject.as_str().rsplit('.').next().unwrap_or("");
        let now = wall_ms();
        let h = api::handle(op, &req.payload, now, &mut self.notifier, &self.evaluator);
        self.metrics.request(h.op, !h.failed);
        let changed = h.effect != Effect::None;
        match h.effect {
            Effect::None => {}
            Effect::Acked(a) => {
                tracing::info!(id = %a.id, by = %a.by, "alert acknowledged");
                self.record(Row::Ack(a));
            }
            Effect::Silenced(s) => {
                tracing::info!(id = %s.id, by = %s.by, matcher = ?s.matcher, ends_at = s.ends_at, "silence created");
                self.record(Row::Silence {
                    silence: s,
                    removed: None,
                });
            }
            Effect::Unsilenced(s, by) => {
                tracing::info!(id = %s.id, %by, "silence removed");
                self.record(Row::Silence {
                    silence: s,
                    removed: Some((by, now)),
                });
                self.catch_up().await?;
            }
        }
        if changed {
            // Persist before answering: an acknowledged request survives a crash.
            self.dirty = true;
            self.checkpoint().await;
            self.update_gauges();
        }
        if self.lease.is_lost() {
            // Not persisted here: no answer, so the operator retries against the new active.
            return Ok(());
        }
        if let Some(reply) = req.reply {
            if let Err(e) = self.client.publish(reply, h.reply.into()).await {
                tracing::warn!(error = %e, op = h.op, "reply to an operator request failed");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use citypulse_schema::{AirMetrics, WindowMetrics};

    /// An evaluator's state after air windows of districts (whose AQIs fire) and stations.
    fn state() -> State {
        let rules = Arc::new(RuleSet::default_rules().unwrap());
        let mut ev = Evaluator::new(rules);
        let mut out = Vec::new();
        for minute in 0..30u64 {
            for s in 0..20u16 {
                ev.evaluate(
                    &WindowResult {
                        window_start: 1_767_225_600_000 + minute * 60_000,
                        window_end: 1_767_225_600_000 + (minute + 1) * 60_000,
                        district: format!("d{:02}", s % 4),
                        sensor: (s >= 4).then(|| format!("aq-d01-{s}")),
                        readings: 1,
                        sensors: 1,
                        metrics: WindowMetrics::Air(Box::new(AirMetrics {
                            aqi: Some(180 + s),
                            // Unchanging at stations: their stuck-value runs are state too.
                            pm25_ugm3: Some(f64::from(s)),
                            ..AirMetrics::default()
                        })),
                    },
                    &mut out,
                );
            }
        }
        assert!(!out.is_empty(), "some alert fired");
        ev.state().clone()
    }

    #[test]
    fn a_checkpoint_is_read_compressed_and_uncompressed_as_earlier_builds_wrote_it() {
        let (state, notifier) = (state(), Notifier::new());
        let cp = CheckpointRef {
            version: CHECKPOINT_VERSION,
            stream_seq: 42,
            evaluator: &state,
            notifier: &notifier,
            outbox: &VecDeque::new(),
            next_serial: 7,
        };
        let compressed = citypulse_runtime::zstd_cbor::encode(&cp).unwrap();
        let mut plain = Vec::new();
        ciborium::into_writer(&cp, &mut plain).unwrap();
        assert!(
            compressed.len() * 3 < plain.len(),
            "{} of {}",
            compressed.len(),
            plain.len()
        );
        for bytes in [&compressed, &plain] {
            let c = decode_checkpoint(bytes).unwrap();
            assert_eq!((c.version, c.stream_seq, c.next_serial), (2, 42, 7));
            assert_eq!((&c.evaluator, &c.notifier), (&state, &notifier));
        }
        assert!(decode_checkpoint(&compressed[..compressed.len() - 1]).is_err());
    }

    /// Written by the build before version 2 (commit 16b025c) from `state()`, uncompressed:
    /// each subject's state a map keyed by the names of its fields.
    const VERSION_1: &[u8] = include_bytes!("../tests/fixtures/checkpoint-v1.cbor");

    #[test]
    fn a_version_1_checkpoint_restores_the_same_state() {
        let c = decode_checkpoint(VERSION_1).unwrap();
        assert_eq!((c.version, c.stream_seq, c.next_serial), (1, 42, 7));
        assert_eq!((&c.evaluator, &c.notifier), (&state(), &Notifier::new()));
    }

    #[test]
    fn subjects_are_written_as_arrays_in_fewer_bytes_than_version_1() {
        let state = state();
        let cp = CheckpointRef {
            version: CHECKPOINT_VERSION,
            stream_seq: 42,
            evaluator: &state,
            notifier: &Notifier::new(),
            outbox: &VecDeque::new(),
            next_serial: 7,
        };
        let mut plain = Vec::new();
        ciborium::into_writer(&cp, &mut plain).unwrap();
        let value: ciborium::Value = ciborium::from_reader(&plain[..]).unwrap();
        let station = value
            .as_map()
            .and_then(|m| field(m, "evaluator"))
            .and_then(|e| field(e.as_map()?, "kinds"))
            .and_then(|k| field(k.as_map()?, "air"))
            .and_then(|d| field(d.as_map()?, "d01"))
            .and_then(|d| field(d.as_map()?, "sensors"))
            .and_then(|s| s.as_map()?.first().map(|(_, v)| v))
            .unwrap();
        // [start, end, step, silent, {group: [last_end, since, run, firing, hold_until]}]
        let fields = station.as_array().unwrap();
        assert_eq!(fields.len(), 5, "{station:?}");
        let group = &fields[4].as_map().unwrap()[0].1;
        assert_eq!(group.as_array().unwrap().len(), 5, "{group:?}");
        assert!(
            plain.len() * 3 < VERSION_1.len() * 2,
            "{} against {}",
            plain.len(),
            VERSION_1.len()
        );
    }

    fn field<'a>(
        map: &'a [(ciborium::Value, ciborium::Value)],
        key: &str,
    ) -> Option<&'a ciborium::Value> {
        map.iter()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v)
    }
}
