//! SHELL: one task per owned READINGS partition. Each reads its partition in stream order
//! through a [`Source`] that resumes right after the checkpoint's `last_seq`, feeds every
//! reading (a READINGS message is a batch of readings, or one from ingest v0.1) to its
//! [`PartitionState`], and after every batch flushes: closed windows are published at once
//! (their `Nats-Msg-Id`s are deterministic, and a replay from the last checkpoint recomputes
//! them identically, so the server drops the copies), and every `--checkpoint-interval` (or
//! 50,000 messages) the checkpoint (state + `last_seq`) is written and the inputs are acked up
//! to `last_seq`. Windows closed by idle advance — which depends on processing time, not on the
//! input — are checkpointed with their results (the outbox) before they are published.

use crate::checkpoint;
use crate::config::Settings;
use crate::fold::{self, Folded, Outcome, Refusal};
use crate::metrics::ProcessorMetrics;
use crate::nats::{self, CheckpointStore, DeadLetter, StoreError};
use crate::outbox::Outbox;
use crate::window::{Observed, PartitionState, Rejection};
use async_nats::jetstream::{kv, stream, Context};
use bytes::Bytes;
use citypulse_runtime::cadence::Cadence;
use citypulse_runtime::duration;
use citypulse_runtime::group::Lease;
use citypulse_runtime::shutdown::Shutdown;
use citypulse_runtime::source::{Delivery, Source, SourceConfig, SourceEvent};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Unacked messages that force a checkpoint (and so an ack), well below the consumer's
/// `max_ack_pending` ([`nats::MAX_ACK_PENDING`]).
const ACK_THRESHOLD: usize = 50_000;
/// How long the last flush of a stopping partition may take to publish and checkpoint.
const FINAL_FLUSH_GRACE: Duration = Duration::from_secs(10);
/// Window results closed and published per slice (acks stay bounded by the runtime's in-flight
/// window within a slice). At 100,000 sensors, 512 lowered the processors' peak RSS from 89–98
/// to 85 MiB but was slower in every run compared (docs/benchmarks.md).
const PUBLISH_SLICE: usize = 2_048;
/// Longest wait between retries of a checkpoint write.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Whether the loop goes on.
enum Flow {
    Continue,
    Stop,
}

/// Everything one partition task holds.
struct Partition {
    id: u32,
    js: Context,
    settings: Settings,
    metrics: ProcessorMetrics,
    shutdown: Shutdown,
    /// The right to work on this partition.
    lease: Lease,
    state: PartitionState,
    store: CheckpointStore,
    /// Highest READINGS sequence folded into `state`.
    last_seq: u64,
    /// Closed windows not yet published.
    outbox: Outbox,
    dead_letters: Vec<DeadLetter>,
    /// Message `last_seq`, to ack once checkpointed (acks are cumulative).
    last: Option<Delivery>,
    unacked: usize,
    /// The state differs from the last checkpoint.
    dirty: bool,
    /// The watermark moved by idle advance since the last flush.
    idle_advanced: bool,
    /// When the next checkpoint is due.
    cadence: Cadence,
    /// Origin of processing time.
    started: Instant,
}

/// What every partition task shares.
#[derive(Debug, Clone)]
pub struct Shared {
    /// JetStream.
    pub js: Context,
    /// The READINGS stream.
    pub readings: stream::Stream,
    /// The checkpoint bucket.
    pub bucket: kv::Store,
    /// The server's largest message, bytes.
    pub max_payload: usize,
    /// Settings.
    pub settings: Settings,
    /// Metrics.
    pub metrics: ProcessorMetrics,
}

/// Runs partition `lease.unit()` until the lease's stop: gracefully (a final checkpoint and
/// ack) on shutdown or hand-over, at once and writing nothing when the lease is lost. Errors are
/// fatal for the process: a checkpoint that cannot be decoded, or (static ownership only) one
/// written by another process; with a group lease that is a lost lease instead.
pub async fn run_partition(shared: Shared, lease: Lease) -> anyhow::Result<()> {
    let id = lease.unit();
    let shutdown = lease.stop().clone();
    let Shared {
        js,
        readings,
        bucket,
        max_payload,
        settings,
        metrics,
    } = shared;
    let mut store = CheckpointStore::new(bucket, id, max_payload);
    let source = nats::source_config(id, settings.batch_size, max_payload);
    let mut backoff = Duration::from_millis(50);
    let loaded = loop {
        match store.load().await {
            Ok(loaded) => break loaded,
            Err(StoreError::Unavailable(e)) => {
                tracing::warn!(partition = id, error = %e, "loading the checkpoint failed; retrying");
                if !shutdown.back_off(&mut backoff, MAX_BACKOFF).await {
                    return Ok(());
                }
            }
            Err(fatal) => return Err(fatal.into()),
        }
    };
    let (state, last_seq, outbox) = match loaded {
        Some(bytes) => {
            let c = checkpoint::decode(id, &bytes)?;
            let state = PartitionState::restore(settings.core.clone(), c.state)?;
            (state, c.last_seq, Outbox::loaded(c.outbox))
        }
        None => (
            PartitionState::new(settings.core.clone()),
            0,
            Outbox::default(),
        ),
    };
    tracing::info!(partition = id, last_seq, sensors = state.sensors(),
        open_windows = state.open_windows(), unpublished = outbox.len(),
        watermark = ?state.watermark(), "partition resumed");
    let mut p = Partition {
        id,
        js,
        cadence: Cadence::new(settings.checkpoint_interval, Instant::now()),
        settings,
        metrics,
        shutdown,
        lease,
        state,
        store,
        last_seq,
        // Results of the checkpoint that may not have reached METRICS: published again below
        // (the server drops the copies it has by Nats-Msg-Id).
        dirty: !outbox.is_empty(),
        outbox,
        idle_advanced: false,
        dead_letters: Vec::new(),
        last: None,
        unacked: 0,
        started: Instant::now(),
    };
    if !p.outbox.is_empty() && matches!(p.publish_outbox().await, Flow::Stop) {
        return Ok(());
    }
    p.run(&readings, source).await
}

/// Sleeps until `at` (forever when `None`; the caller's `if` guard keeps that from being
/// polled).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

impl Partition {
    fn now_ms(&self) -> u64 {
        duration::millis(self.started.elapsed())
    }

    async fn run(&mut self, readings: &stream::Stream, source: SourceConfig) -> anyhow::Result<()> {
        let tick_every =
            Duration::from_millis((self.settings.core.idle_timeout_ms / 2).clamp(50, 1_000));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let metrics = self.metrics.clone();
        let id = self.id;
        let observer = Arc::new(move |e: SourceEvent| match e {
            SourceEvent::Gap => metrics.delivery_gap(),
            SourceEvent::Redelivered => metrics.redelivered(),
            other => {
                metrics.consume_error(other.label());
                tracing::debug!(partition = id, event = other.label(), "READINGS source");
            }
        });
        let mut source = Source::new(readings.clone(), source, self.last_seq, observer);
        let mut batch = Vec::new();
        loop {
            // Something to make durable: wake when the schedule says, not at the next tick.
            let checkpoint_at = self
                .dirty
                .then(|| self.cadence.deadline(source.caught_up()));
            tokio::select! {
                biased;
                _ = self.shutdown.cancelled() => break,
                // On shutdown it returns false and the next turn takes the branch above.
                _ = source.next_batch(&mut batch, &self.shutdown) => {}
                () = sleep_until(checkpoint_at), if checkpoint_at.is_some() => {}
                _ = tick.tick() => {
                    let now = self.now_ms();
                    if self.state.advance_idle(now) {
                        self.idle_advanced = true;
                    }
                }
            }
            if matches!(self.fold_batch(&mut batch, &source).await?, Flow::Stop)
                || matches!(self.flush(false, &source).await?, Flow::Stop)
            {
                // The stop (or a lost lease) cut a flush short.
                break;
            }
        }
        self.stop(&source).await
    }

    /// Folds a batch of deliveries, flushing whenever the watermark reaches a window end, so the
    /// results waiting to be published are one window's at most, however much event time the
    /// batch spans. (A batch of a backlog can span minutes: at 100,000 sensors the results of
    /// all it closed, held at once by eight partitions, were about half the processors' RSS.)
    /// Deliveries left when a flush stops are not folded: a later owner reads them again.
    async fn fold_batch(
        &mut self,
        batch: &mut Vec<Delivery>,
        source: &Source,
    ) -> anyhow::Result<Flow> {
        let taken = !batch.is_empty();
        for d in batch.drain(..) {
            self.handle(d);
            if self.state.window_ready() && matches!(self.flush(false, source).await?, Flow::Stop) {
                return Ok(Flow::Stop);
            }
        }
        if taken {
            // After any checkpoint taken within the batch: its rest is not in that one.
            self.cadence.taken(Instant::now());
        }
        Ok(Flow::Continue)
    }

    /// The way out: nothing more when the lease is lost; otherwise one last flush — results,
    /// checkpoint, ack — whose publishing is not cancelled by the very stop it completes (only
    /// after [`FINAL_FLUSH_GRACE`]), so a graceful stop leaves nothing for the next owner to redo.
    async fn stop(&mut self, source: &Source) -> anyhow::Result<()> {
        if self.lease.is_lost() {
            tracing::warn!(
                partition = self.id,
                last_seq = self.last_seq,
                "partition lease lost; stopped without writing"
            );
            return Ok(());
        }
        let grace = Shutdown::new();
        let timer = {
            let grace = grace.clone();
            tokio::spawn(async move {
                tokio::time::sleep(FINAL_FLUSH_GRACE).await;
                grace.trigger();
            })
        };
        let stop = std::mem::replace(&mut self.shutdown, grace);
        let flushed = self.flush(true, source).await;
        self.shutdown = stop;
        timer.abort();
        flushed?;
        tracing::info!(
            partition = self.id,
            last_seq = self.last_seq,
            "partition stopped"
        );
        Ok(())
    }

    /// Folds one delivered READINGS message (a batch, or a single v0.1 reading) into the state
    /// ([`fold::fold_message`], shared with `replay`).
    fn handle(&mut self, d: Delivery) {
        self.last_seq = d.seq;
        self.unacked += 1;
        self.dirty = true;
        let now = self.now_ms();
        let mut out = Outcomes {
            partition: self.id,
            subject: d.message.subject.as_str(),
            seq: d.seq,
            payload: &d.message.payload,
            metrics: &self.metrics,
            dead_letters: &mut self.dead_letters,
        };
        let slot = fold::Slot {
            partition: self.id,
            count: self.settings.partition_count,
        };
        fold::fold_message(
            &mut self.state,
            slot,
            d.message.subject.as_str(),
            &d.message.payload,
            now,
            &mut out,
        );
        self.last = Some(d);
    }

    /// Closes ready windows and publishes their results a slice at a time, then, when due,
    /// makes everything durable: dead letters, checkpoint, ack.
    async fn flush(&mut self, force: bool, source: &Source) -> anyhow::Result<Flow> {
        // An idle advance depends on processing time, which a replay would not repeat:
        // checkpoint the moved watermark and the windows it closed (outbox included) before
        // publishing them. Everything else a replay
        // from the last checkpoint recomputes identically, with the same message ids.
        if std::mem::take(&mut self.idle_advanced) && matches!(self.checkpoint().await?, Flow::Stop)
        {
            return Ok(Flow::Stop);
        }
        if !self.dead_letters.is_empty() {
            let letters = std::mem::take(&mut self.dead_letters);
            if nats::publish_dead_letters(&self.js, &letters, &self.shutdown, &self.metrics)
                .await
                .is_err()
            {
                return Ok(Flow::Stop);
            }
        }
        if matches!(self.publish_outbox().await, Flow::Stop) {
            return Ok(Flow::Stop);
        }
        let lag = self.state.watermark().and_then(|wm| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
            now.checked_sub(Duration::from_millis(wm))
        });
        self.metrics
            .partition(self.id, self.state.open_windows(), lag);
        let caught_up = source.caught_up();
        let due =
            force || self.unacked >= ACK_THRESHOLD || self.cadence.due(Instant::now(), caught_up);
        if !due || !self.dirty {
            return Ok(Flow::Continue);
        }
        if matches!(self.checkpoint().await?, Flow::Stop) {
            return Ok(Flow::Stop);
        }
        self.cadence
            .settle(caught_up, self.last_seq == source.position());
        if let Some(last) = self.last.take() {
            // The checkpoint is what counts; a lost ack only means a redelivery the source skips.
            source.ack(&last).await;
            self.unacked = 0;
        }
        Ok(Flow::Continue)
    }

    /// Closes the next slice of the windows the watermark passed into the outbox; returns how
    /// many results it added (0: nothing left to close).
    fn close_slice(&mut self) -> usize {
        let mut closed = Vec::new();
        let n = self.state.close_some(&mut closed, PUBLISH_SLICE);
        if n > 0 {
            self.metrics.closed(&closed);
            self.outbox.extend(closed);
            self.dirty = true;
        }
        n
    }

    /// Writes the checkpoint, retrying while NATS is unavailable.
    async fn checkpoint(&mut self) -> anyhow::Result<Flow> {
        // A checkpoint holds whole windows: the rest of a window being closed goes into the
        // outbox (and so into the checkpoint) first.
        while self.close_slice() > 0 {}
        let started = Instant::now();
        let bytes = Bytes::from(checkpoint::encode(
            self.id,
            self.last_seq,
            self.state.data(),
            &self.outbox.entries(),
        ));
        let mut backoff = Duration::from_millis(50);
        loop {
            let saved = match self.lease.confirm().await {
                Ok(true) => self.store.save(&bytes).await,
                Ok(false) => return Ok(Flow::Stop),
                Err(e) => Err(StoreError::Unavailable(e)),
            };
            match saved {
                Ok(()) => break,
                Err(fenced @ StoreError::Fenced { .. }) if self.lease.is_group() => {
                    // Someone else wrote after this process last read: the partition is theirs.
                    tracing::warn!(partition = self.id, error = %fenced, "partition taken over; stopping");
                    self.metrics.checkpoint_failed();
                    self.lease.lose();
                    return Ok(Flow::Stop);
                }
                Err(StoreError::Unavailable(e)) => {
                    self.metrics.checkpoint_failed();
                    tracing::warn!(partition = self.id, error = %e,
                        "writing the checkpoint failed; inputs stay unacked, retrying");
                    if !self.shutdown.back_off(&mut backoff, MAX_BACKOFF).await {
                        return Ok(Flow::Stop);
                    }
                }
                Err(fatal) => {
                    self.metrics.checkpoint_failed();
                    return Err(fatal.into());
                }
            }
        }
        self.metrics
            .checkpoint(self.id, bytes.len(), started.elapsed());
        self.dirty = false;
        self.cadence.written(Instant::now());
        Ok(Flow::Continue)
    }

    /// Publishes the outbox and the results of every window the watermark passed, closing them
    /// a slice at a time (at 100,000 sensors, a large partition's window is ~17,000 results: held
    /// at once by eight partitions, they were a fifth of the processors' peak heap). What is not
    /// acked stays in the outbox (the final flush retries it).
    async fn publish_outbox(&mut self) -> Flow {
        let mut published = false;
        while !self.outbox.is_empty() || self.close_slice() > 0 {
            let slice = self.outbox.next_slice(PUBLISH_SLICE);
            if nats::publish_results(&self.js, &slice, &self.shutdown, &self.metrics)
                .await
                .is_err()
            {
                return Flow::Stop;
            }
            self.outbox.consume(slice.len());
            published = true;
        }
        // A stored checkpoint may still list them; the next one will not.
        self.dirty |= published;
        Flow::Continue
    }
}

/// Counts, logs and dead-letters what became of one message's readings.
struct Outcomes<'a> {
    partition: u32,
    subject: &'a str,
    seq: u64,
    payload: &'a Bytes,
    metrics: &'a ProcessorMetrics,
    dead_letters: &'a mut Vec<DeadLetter>,
}

impl Folded for Outcomes<'_> {
    fn observed(&mut self, o: Outcome<'_>) {
        let (r, kind) = (o.reading, o.reading.kind());
        match o.observed {
            Observed::Accepted => self.metrics.accepted(kind),
            Observed::Late(reason) => {
                self.metrics.late(kind, reason);
                tracing::debug!(partition = self.partition, sensor = %r.sensor, ts = r.ts,
                    watermark = ?o.watermark, reason = reason.reason(), "late reading counted");
            }
            Observed::Rejected(Rejection::Duplicate) => {
                // Not bad input: the same reading twice. Counted, not dead-lettered.
                self.metrics
                    .rejected(Some(kind), Rejection::Duplicate.reason());
                tracing::debug!(partition = self.partition, sensor = %r.sensor, seq = r.seq,
                    "duplicate reading ignored");
            }
            Observed::Rejected(why) => self.refused(Refusal {
                kind: Some(kind),
                reason: why.reason(),
                detail: why.to_string(),
                item: o.item,
                body: self.payload.slice_ref(o.raw),
            }),
        }
    }

    fn refused(&mut self, r: Refusal) {
        self.metrics.rejected(r.kind, r.reason);
        tracing::warn!(partition = self.partition, subject = %self.subject, sequence = self.seq,
            reason = r.reason, detail = %r.detail, "reading rejected; dead-lettering it");
        self.dead_letters.push(DeadLetter {
            reason: r.reason,
            detail: r.detail,
            subject: self.subject.to_owned(),
            sequence: self.seq,
            item: r.item,
            payload: r.body,
        });
    }
}
