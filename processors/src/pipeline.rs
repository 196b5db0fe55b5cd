//! SHELL: one task per owned READINGS partition. Each pulls its partition's readings in stream
//! order, feeds them to its [`PartitionState`], and after every batch flushes: closed windows go
//! to the outbox, the checkpoint (state + `last_seq` + outbox) is written, the outbox is
//! published, and the inputs are acked up to `last_seq`.

use crate::checkpoint::{self, OutboxEntry};
use crate::config::Settings;
use crate::metrics::ProcessorMetrics;
use crate::nats::{self, CheckpointStore, DeadLetter, StoreError};
use crate::window::{Observed, PartitionState, Rejection};
use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{self, kv, stream, Context};
use citypulse_runtime::duration;
use citypulse_runtime::shutdown::Shutdown;
use citypulse_schema::{partition_of, Reading, SensorSubject, WindowResult};
use futures::{FutureExt, StreamExt};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Most messages a partition may have delivered and not acked.
const MAX_ACK_PENDING: i64 = 100_000;
/// Unacked messages that force a checkpoint (and so an ack), well below the limit.
const ACK_THRESHOLD: usize = 50_000;
/// Pull heartbeat: a silent server is noticed within two of these.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Longest wait between retries of a checkpoint write.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Deliveries were lost between the server and this process.
#[derive(Debug)]
struct DeliveryGap;

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
    state: PartitionState,
    store: CheckpointStore,
    /// Highest READINGS sequence folded into `state`.
    last_seq: u64,
    /// Closed windows not yet published.
    outbox: Vec<OutboxEntry>,
    dead_letters: Vec<DeadLetter>,
    /// The acker of message `last_seq` (acks are cumulative).
    acker: Option<Acker>,
    unacked: usize,
    /// The state differs from the last checkpoint.
    dirty: bool,
    last_checkpoint: Instant,
    /// Origin of processing time.
    started: Instant,
    scratch: Vec<WindowResult>,
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

/// Runs partition `id` until shutdown. Errors are fatal for the process: a checkpoint that
/// cannot be decoded, or one written by another owner.
pub async fn run_partition(id: u32, shared: Shared, shutdown: Shutdown) -> anyhow::Result<()> {
    let Shared {
        js,
        readings,
        bucket,
        max_payload,
        settings,
        metrics,
    } = shared;
    let mut store = CheckpointStore::new(bucket, id, max_payload);
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
            (state, c.last_seq, c.outbox)
        }
        None => (PartitionState::new(settings.core.clone()), 0, Vec::new()),
    };
    tracing::info!(partition = id, last_seq, sensors = state.sensors(),
        open_windows = state.open_windows(), unpublished = outbox.len(),
        watermark = ?state.watermark(), "partition resumed");
    let mut p = Partition {
        id,
        js,
        settings,
        metrics,
        shutdown,
        state,
        store,
        last_seq,
        // Results of the checkpoint that may not have reached METRICS: published again below
        // (the server drops the copies it has by Nats-Msg-Id).
        dirty: !outbox.is_empty(),
        outbox,
        dead_letters: Vec::new(),
        acker: None,
        unacked: 0,
        last_checkpoint: Instant::now(),
        started: Instant::now(),
        scratch: Vec::new(),
    };
    if !p.outbox.is_empty() && matches!(p.publish_outbox().await, Flow::Stop) {
        return Ok(());
    }
    p.run(&readings).await
}

impl Partition {
    fn now_ms(&self) -> u64 {
        duration::millis(self.started.elapsed())
    }

    async fn run(&mut self, readings: &stream::Stream) -> anyhow::Result<()> {
        let tick_every =
            Duration::from_millis((self.settings.core.idle_timeout_ms / 2).clamp(50, 1_000));
        let mut tick = tokio::time::interval(tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        'consumer: loop {
            let mut backoff = Duration::from_millis(50);
            let mut messages = loop {
                match self.open(readings).await {
                    Ok(m) => break m,
                    Err(e) => {
                        tracing::warn!(partition = self.id, error = %format!("{e:#}"),
                            "cannot open the READINGS consumer; retrying");
                        if !self.shutdown.back_off(&mut backoff, MAX_BACKOFF).await {
                            self.flush(true).await?;
                            return Ok(());
                        }
                    }
                }
            };
            // A fresh consumer numbers its deliveries from 1; a jump means deliveries were lost
            // in flight (a reconnect): reopen after the last sequence folded in, in order.
            let mut next_delivery = 1;
            loop {
                tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled() => {
                        self.flush(true).await?;
                        tracing::info!(partition = self.id, last_seq = self.last_seq, "partition stopped");
                        return Ok(());
                    }
                    next = messages.next() => {
                        match next {
                            Some(Ok(msg)) => {
                                let mut gap = self.handle(msg, &mut next_delivery).is_err();
                                for _ in 1..self.settings.batch_size {
                                    if gap {
                                        break;
                                    }
                                    match messages.next().now_or_never() {
                                        Some(Some(Ok(msg))) => {
                                            gap = self.handle(msg, &mut next_delivery).is_err();
                                        }
                                        _ => break,
                                    }
                                }
                                if gap {
                                    if matches!(self.flush(false).await?, Flow::Stop) {
                                        return Ok(());
                                    }
                                    continue 'consumer;
                                }
                            }
                            Some(Err(e)) => {
                                use async_nats::jetstream::consumer::pull::MessagesErrorKind as K;
                                if matches!(e.kind(), K::Pull | K::Other) {
                                    tracing::debug!(partition = self.id, error = %e, "pull interrupted; continuing");
                                    continue;
                                }
                                // The consumer is gone or silent: open it again after last_seq.
                                tracing::warn!(partition = self.id, error = %e, "consumer unusable; reopening");
                                continue 'consumer;
                            }
                            None => {
                                tracing::warn!(partition = self.id, "consumer stream ended; reopening");
                                continue 'consumer;
                            }
                        }
                    }
                    _ = tick.tick() => {
                        let now = self.now_ms();
                        self.state.advance_idle(now);
                    }
                }
                if matches!(self.flush(false).await?, Flow::Stop) {
                    return Ok(());
                }
            }
        }
    }

    /// (Re)creates the consumer after `last_seq` and opens its pull stream.
    async fn open(&self, readings: &stream::Stream) -> anyhow::Result<pull::Stream> {
        let consumer =
            nats::open_consumer(readings, self.id, self.last_seq, MAX_ACK_PENDING).await?;
        consumer
            .stream()
            .max_messages_per_batch(self.settings.batch_size)
            .heartbeat(HEARTBEAT)
            .messages()
            .await
            .map_err(|e| anyhow::anyhow!("pulling partition {}: {e}", self.id))
    }

    /// Folds one delivered message into the state. `Err(DeliveryGap)` when deliveries before
    /// this one were lost: the message is not used, and the consumer must be reopened.
    fn handle(
        &mut self,
        msg: jetstream::Message,
        next_delivery: &mut u64,
    ) -> Result<(), DeliveryGap> {
        let Ok((seq, delivery)) = msg.info().map(|i| (i.stream_sequence, i.consumer_sequence))
        else {
            self.metrics.rejected(None, "no_sequence");
            tracing::warn!(partition = self.id, subject = %msg.subject, reason = "no_sequence",
                "message without a JetStream sequence ignored");
            return Ok(());
        };
        if delivery != *next_delivery {
            self.metrics.delivery_gap();
            tracing::warn!(
                partition = self.id,
                expected = *next_delivery,
                delivered = delivery,
                last_seq = self.last_seq,
                "deliveries lost in flight; reopening the consumer after last_seq"
            );
            return Err(DeliveryGap);
        }
        *next_delivery += 1;
        if seq <= self.last_seq {
            // Already in the state: a redelivery after the ack wait.
            self.metrics.redelivered();
            return Ok(());
        }
        let (msg, acker) = msg.split();
        self.last_seq = seq;
        self.acker = Some(acker);
        self.unacked += 1;
        self.dirty = true;
        let subject = msg.subject.as_str();
        let letter = |reason: &'static str, detail: String| DeadLetter {
            reason,
            detail,
            subject: subject.to_owned(),
            sequence: seq,
            payload: msg.payload.clone(),
        };
        let claimed = match SensorSubject::parse_readings(subject) {
            Ok(s) => s,
            Err(e) => {
                self.reject(None, letter("subject", e.to_string()));
                return Ok(());
            }
        };
        let own = subject.split('.').nth(1).and_then(|t| t.parse().ok()) == Some(self.id)
            && partition_of(&claimed.district, self.settings.partition_count) == self.id;
        if !own {
            let detail = format!(
                "district {} is not in partition {} of {}",
                claimed.district, self.id, self.settings.partition_count
            );
            self.reject(Some(claimed.kind), letter("wrong_partition", detail));
            return Ok(());
        }
        let reading = match Reading::decode(&msg.payload) {
            Ok(r) => r,
            Err(e) => {
                self.reject(None, letter(e.reason(), e.to_string()));
                return Ok(());
            }
        };
        let kind = reading.kind();
        if !reading.matches(&claimed) {
            let detail = format!(
                "payload of {} stored under {subject}",
                reading.claimed_subject()
            );
            self.reject(Some(kind), letter("mismatch", detail));
            return Ok(());
        }
        match self.state.observe(&reading, self.now_ms()) {
            Observed::Accepted => self.metrics.accepted(kind),
            Observed::Late(reason) => {
                self.metrics.late(kind, reason);
                tracing::debug!(partition = self.id, sensor = %reading.sensor, ts = reading.ts,
                    watermark = ?self.state.watermark(), reason = reason.reason(), "late reading counted");
            }
            Observed::Rejected(Rejection::Duplicate) => {
                // Not bad input: the same reading twice. Counted, not dead-lettered.
                self.metrics
                    .rejected(Some(kind), Rejection::Duplicate.reason());
                tracing::debug!(partition = self.id, sensor = %reading.sensor, seq = reading.seq,
                    "duplicate reading ignored");
            }
            Observed::Rejected(why) => {
                self.reject(Some(kind), letter(why.reason(), why.to_string()));
            }
        }
        Ok(())
    }

    fn reject(&mut self, kind: Option<citypulse_schema::Kind>, letter: DeadLetter) {
        self.metrics.rejected(kind, letter.reason);
        tracing::warn!(partition = self.id, subject = %letter.subject, sequence = letter.sequence,
            reason = letter.reason, detail = %letter.detail, "reading rejected; dead-lettering it");
        self.dead_letters.push(letter);
    }

    /// Closes ready windows and, when due, makes everything durable: dead letters, checkpoint,
    /// results, ack.
    async fn flush(&mut self, force: bool) -> anyhow::Result<Flow> {
        self.scratch.clear();
        self.state.close_ready(&mut self.scratch);
        if !self.scratch.is_empty() {
            self.metrics.closed(&self.scratch);
            self.outbox.extend(self.scratch.iter().map(OutboxEntry::of));
            self.dirty = true;
        }
        let lag = self.state.watermark().and_then(|wm| {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).ok()?;
            now.checked_sub(Duration::from_millis(wm))
        });
        self.metrics
            .partition(self.id, self.state.open_windows(), lag);

        let due = force
            || !self.outbox.is_empty()
            || !self.dead_letters.is_empty()
            || self.unacked >= ACK_THRESHOLD
            || self.last_checkpoint.elapsed() >= self.settings.checkpoint_interval;
        if !due || !self.dirty {
            return Ok(Flow::Continue);
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
        if matches!(self.checkpoint().await?, Flow::Stop) {
            return Ok(Flow::Stop);
        }
        if matches!(self.publish_outbox().await, Flow::Stop) {
            return Ok(Flow::Stop);
        }
        if let Some(acker) = self.acker.take() {
            if let Err(e) = acker.ack().await {
                // The checkpoint is what counts; a lost ack only means a redelivery we skip.
                tracing::debug!(partition = self.id, error = %e, "ack not sent");
            }
            self.unacked = 0;
        }
        Ok(Flow::Continue)
    }

    /// Writes the checkpoint, retrying while NATS is unavailable.
    async fn checkpoint(&mut self) -> anyhow::Result<Flow> {
        let started = Instant::now();
        let bytes = checkpoint::encode(self.id, self.last_seq, self.state.data(), &self.outbox);
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.store.save(&bytes).await {
                Ok(()) => break,
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
        self.last_checkpoint = Instant::now();
        Ok(Flow::Continue)
    }

    /// Publishes the outbox (already in the checkpoint) and empties it.
    async fn publish_outbox(&mut self) -> Flow {
        if self.outbox.is_empty() {
            return Flow::Continue;
        }
        if nats::publish_results(&self.js, &self.outbox, &self.shutdown, &self.metrics)
            .await
            .is_err()
        {
            return Flow::Stop;
        }
        self.outbox.clear();
        // The stored checkpoint still lists them; the next one will not.
        self.dirty = true;
        Flow::Continue
    }
}
