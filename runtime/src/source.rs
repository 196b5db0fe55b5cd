//! An ordered, resumable JetStream source: one durable pull consumer read strictly in stream
//! order, in batches, with cumulative acks.
//!
//! Every stage of citypulse reads its input this way ([`Source`]). The service says where to
//! resume (its checkpoint's sequence, or the consumer's ack floor via [`ack_floor`]); the source
//! (re)creates the durable consumer to deliver from the next sequence, hands out batches of
//! [`Delivery`] in stream order, and acks cumulatively (`AckPolicy::All`) up to the delivery the
//! service names once its effect is durable.
//!
//! Why not simply resume a durable consumer: a consumer left with messages delivered but not
//! acked (its reader crashed) hands out *newer* messages first and redelivers the older ones only
//! after the ack wait — out of order, which an event-time stage downstream turns into late data.
//! So the source never relies on redelivery: whenever the order or the flow is in doubt (a jump
//! in the delivery count after a reconnect, a pull stream that ended, any pull error — a
//! consumer the restarted server no longer has answers with no responders and missed heartbeats
//! forever) it recreates the consumer from the sequence after the last one it handed out, backing
//! off while that delivers nothing. Redeliveries of messages it already handed out are skipped.

use crate::shutdown::Shutdown;
use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::stream::Stream;
use futures::{FutureExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;

/// How long an ack may take to be handed to the client.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest pause between attempts to (re)create the consumer.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// First pause before reopening a consumer that has handed out nothing since it was opened.
const FIRST_REOPEN_PAUSE: Duration = Duration::from_millis(50);
/// How long the source waits for the next message while the server said it had more for the
/// consumer, before it reopens the consumer whatever the server says (a server that holds the
/// pull request but delivers nothing, such as a consumer at its `max_ack_pending`). A client
/// left with no pull request at the server while it believes one outstanding ([`PROBE`] finds
/// that sooner) gets neither messages nor heartbeats; without this, the missed heartbeats notice
/// it after twice the heartbeat (10 s). `scripts/bench` at 100,000 sensors showed such a 10 s
/// stop of one or two processors partitions in several runs (docs/benchmarks.md, *A stalled
/// pull, reopened after 2 s*).
pub const STALL: Duration = Duration::from_secs(2);
/// How long the source waits for the next message, while the server may have more for the
/// consumer (it said so with the last message, or has not said yet since the consumer was
/// opened), before it asks the server whether it holds a pull request of the consumer. When it
/// holds none, the consumer is reopened at once (counted as `unserved`) rather than after
/// [`STALL`]; otherwise the next look is this long after. async-nats 0.51's pull stream counts
/// the messages its requests still owe down to zero and no further: the messages that answer a
/// request before the stream has counted that request (its task preempted between sending the
/// request and reporting it) are lost from the count, and the stream then waits for messages
/// that no request of its asks for. With the processors' requests of 5 messages, one such
/// request is enough (docs/benchmarks.md, *A pull request the client lost count of*).
pub const PROBE: Duration = Duration::from_millis(100);
/// How long a caught-up source waits for the next message before it asks the server the same
/// question as after [`PROBE`], and again as long after each answer. Caught up, the server
/// holding a pull request with nothing to deliver is the normal quiet; holding none while it
/// has messages for the consumer is a request lost on the way or by the client's count, and the
/// consumer is reopened at once (`unserved`). Without this, the missed heartbeats would notice
/// it after twice the heartbeat (10 s). One `consumer info` a second per quiet consumer.
pub const IDLE_LOOK: Duration = Duration::from_secs(1);
/// How long a batch may wait for the messages the server said it had for the consumer, to fill
/// up to the batch size: with a backlog, each batch is then full rather than whatever the client
/// had buffered when the service asked, which fell to about a tenth of ingest's batch size in
/// `scripts/bench` (docs/benchmarks.md, *Full batches from a backlog*). Caught up, the server
/// has nothing more and a batch is handed out at once (unless the source lingers,
/// [`SourceConfig::linger`]).
pub const FILL_WAIT: Duration = Duration::from_millis(20);

/// What the source reports to its service's metrics (bounded labels via [`SourceEvent::label`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceEvent {
    /// Deliveries were lost in flight (a jump in the consumer's delivery count): reopened.
    Gap,
    /// A message at or below the last handed-out sequence came again: skipped.
    Redelivered,
    /// The pull stream failed; `&'static str` is the bounded reason.
    PullError(&'static str),
    /// The consumer could not be (re)created; retried with back-off.
    OpenFailed,
    /// An ack could not be sent (the next one covers it).
    AckFailed,
}

impl SourceEvent {
    /// A bounded metric label.
    pub fn label(self) -> &'static str {
        match self {
            SourceEvent::Gap => "delivery_gap",
            SourceEvent::Redelivered => "redelivered",
            SourceEvent::PullError(reason) => reason,
            SourceEvent::OpenFailed => "open",
            SourceEvent::AckFailed => "ack",
        }
    }
}

/// Receives the source's events (a service maps them onto its counters).
pub type Observer = Arc<dyn Fn(SourceEvent) + Send + Sync>;

/// Settings of a [`Source`].
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// The durable consumer's name.
    pub durable: String,
    /// Its description (shown by `nats consumer info`).
    pub description: String,
    /// Subject filter; empty for the whole stream.
    pub filter_subject: String,
    /// Server-side redelivery timer (the source never waits for it).
    pub ack_wait: Duration,
    /// Delivered, unacked messages the server allows; at least a few batches.
    pub max_ack_pending: i64,
    /// Most messages per pull request and per batch handed out.
    pub batch: usize,
    /// Most bytes of messages per pull request, 0 for no limit: with `batch`, what the client
    /// buffers is bounded in bytes as well, whatever the size of the messages (a device may
    /// publish up to the server's `max_payload`, and ingest writes READINGS messages of up to
    /// 512 KiB). Build it with [`pull_bytes`]: the server never splits a message, and one
    /// larger than the limit would stop the consumer for good.
    pub max_bytes: usize,
    /// Idle heartbeat of the pull: a silent server is noticed after two.
    pub heartbeat: Duration,
    /// How long a batch may wait, in all, for messages the server said it had for the consumer
    /// ([`FILL_WAIT`] in the services).
    pub fill_wait: Duration,
    /// How long a batch that is not full may wait for more messages from its first one, even
    /// when the server has nothing more yet (zero: hand out what has arrived). A consumer that
    /// writes one output message per batch (ingest's READINGS) trades this much latency for
    /// fewer, larger messages when it keeps up with a steady stream.
    pub linger: Duration,
}

/// The byte limit of a pull ([`SourceConfig::max_bytes`]): `wanted`, or twice the connection's
/// `max_payload` when that is more. A message (its headers and payload) is at most
/// `max_payload`, and the server counts a little more for it (its subject, its sequence): the
/// server answers a pull whose limit a message exceeds with `409 Message Size Exceeds
/// MaxBytes` and delivers nothing, and the client pulls again, forever.
pub fn pull_bytes(wanted: usize, max_payload: usize) -> usize {
    wanted.max(max_payload.saturating_mul(2))
}

impl SourceConfig {
    /// The consumer configuration that delivers from the message after `after`.
    pub fn consumer(&self, after: u64) -> pull::Config {
        pull::Config {
            durable_name: Some(self.durable.clone()),
            description: Some(self.description.clone()),
            filter_subject: self.filter_subject.clone(),
            deliver_policy: if after == 0 {
                DeliverPolicy::All
            } else {
                DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                }
            },
            ack_policy: AckPolicy::All,
            ack_wait: self.ack_wait,
            // Only ever settled by a cumulative ack.
            max_deliver: -1,
            max_ack_pending: self.max_ack_pending,
            ..Default::default()
        }
    }
}

/// One delivered message, in stream order.
pub struct Delivery {
    /// Its stream sequence.
    pub seq: u64,
    /// Subject and payload (and headers).
    pub message: async_nats::Message,
    acker: Acker,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("seq", &self.seq)
            .field("subject", &self.message.subject)
            .finish_non_exhaustive()
    }
}

/// The durable consumer's ack floor (the stream sequence below which everything was acked), 0
/// when the consumer does not exist: where a service without a checkpoint of its own resumes.
pub async fn ack_floor(stream: &Stream, durable: &str) -> anyhow::Result<u64> {
    match stream.consumer_info(durable).await {
        Ok(info) => Ok(info.ack_floor.stream_sequence),
        Err(e) if e.to_string().contains("not found") => Ok(0),
        Err(e) => Err(anyhow::anyhow!("reading consumer {durable}: {e}")),
    }
}

/// A durable consumer read in order; see the module docs.
pub struct Source {
    stream: Stream,
    config: SourceConfig,
    observer: Observer,
    messages: Option<pull::Stream>,
    /// Last stream sequence taken from the pull stream (handed out, or held).
    after: u64,
    /// Last stream sequence handed out to the service.
    given: u64,
    /// Messages taken but not handed out yet: a batch being filled, kept across a call the
    /// caller cancelled (the next call hands them out first).
    held: Vec<Delivery>,
    /// When the first of [`Source::held`] was taken: the start of the batch's
    /// [`SourceConfig::linger`].
    held_since: Option<tokio::time::Instant>,
    /// Delivery count expected next from the current consumer.
    next_delivery: u64,
    /// Messages the server still had for the consumer after the last one taken; `u64::MAX`
    /// (unknown) from the consumer's (re)opening until its first message, or until the server
    /// says it has nothing ([`Source::look`]).
    pending: u64,
    /// Opens since a message was last handed out: reopening a consumer that delivers nothing
    /// backs off, so a persistent error does not spin.
    fruitless_opens: u32,
    /// Not before this instant is the consumer reopened; kept until an open succeeds, so a
    /// caller that races `next_batch` against a faster timer (cancelling it) does not restart
    /// the pause forever.
    reopen_at: Option<tokio::time::Instant>,
    /// When waiting for the next message counts as a stall ([`STALL`] after the wait began);
    /// kept across calls a faster timer of the caller cancels, cleared by a message.
    stalled_at: Option<tokio::time::Instant>,
    /// When to ask the server next whether it holds a pull request of the consumer
    /// ([`PROBE`]); kept and cleared as [`Source::stalled_at`].
    probe_at: Option<tokio::time::Instant>,
}

impl Source {
    /// A source on `stream` that will deliver the messages after sequence `after`.
    pub fn new(stream: Stream, config: SourceConfig, after: u64, observer: Observer) -> Source {
        Source {
            stream,
            config,
            observer,
            messages: None,
            after,
            given: after,
            held: Vec::new(),
            held_since: None,
            next_delivery: 1,
            pending: u64::MAX,
            fruitless_opens: 0,
            reopen_at: None,
            stalled_at: None,
            probe_at: None,
        }
    }

    /// Whether the last message handed out was the newest the consumer had (the backlog is
    /// drained): a moment to make progress durable rather than wait for the next interval.
    pub fn caught_up(&self) -> bool {
        self.pending == 0 && self.held.is_empty()
    }

    /// The last stream sequence handed out.
    pub fn position(&self) -> u64 {
        self.given
    }

    /// Whether the server may have more messages for the consumer: it said so with the last one
    /// taken, or no message has told yet since the consumer was (re)opened.
    fn behind(&self) -> bool {
        self.pending > 0
    }

    /// Waits for at least one message, then appends a batch to `out`, in stream order: what has
    /// already arrived, and while the server has more for the consumer, what arrives within
    /// [`SourceConfig::fill_wait`], up to the batch size (and the pull's byte limit). `false`
    /// on shutdown. Cancel-safe: a message is handed out only by a call that returns.
    pub async fn next_batch(&mut self, out: &mut Vec<Delivery>, shutdown: &Shutdown) -> bool {
        if self.held.is_empty() && !self.first(shutdown).await {
            return false;
        }
        self.fill(shutdown).await;
        if let Some(last) = self.held.last() {
            self.given = last.seq;
        }
        out.append(&mut self.held);
        self.held_since = None;
        true
    }

    /// Takes messages into [`Source::held`] up to the batch size and, when the pull is bounded
    /// in bytes, until they reach that bound (so a batch holds at most the bound and one
    /// message): those already buffered, then, while the server has more, those arriving
    /// within [`SourceConfig::fill_wait`], and those arriving within [`SourceConfig::linger`]
    /// of the batch's first message.
    async fn fill(&mut self, shutdown: &Shutdown) {
        let now = tokio::time::Instant::now();
        let until = now + self.config.fill_wait;
        let lingering = self.held_since.unwrap_or(now) + self.config.linger;
        let mut bytes: usize = self.held.iter().map(|d| d.message.length).sum();
        let max_bytes = match self.config.max_bytes {
            0 => usize::MAX,
            n => n,
        };
        while self.held.len() < self.config.batch && bytes < max_bytes {
            let behind = self.behind();
            let Some(messages) = self.messages.as_mut() else {
                return;
            };
            let wait = if behind {
                until.max(lingering)
            } else {
                lingering
            };
            let next = match messages.next().now_or_never() {
                Some(next) => next,
                None if wait > tokio::time::Instant::now() => tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    next = messages.next() => next,
                    () = tokio::time::sleep_until(wait) => return,
                },
                None => return,
            };
            if self.take(next) {
                bytes += self.held.last().map_or(0, |d| d.message.length);
            } else if self.messages.is_none() {
                return;
            }
        }
    }

    /// Waits for one message and takes it into [`Source::held`]; `false` on shutdown.
    async fn first(&mut self, shutdown: &Shutdown) -> bool {
        loop {
            if self.messages.is_none() && !self.open(shutdown).await {
                return false;
            }
            // The server said it had more after the last message handed out, or has not said
            // yet since the consumer was opened (its first pull request can be lost as well):
            // waiting longer than PROBE, ask the server whether it still holds a pull request
            // of ours; longer than STALL (in all, across calls a faster timer of the caller
            // cancels), give the pull up anyway. Caught up, ask after IDLE_LOOK, and reopen
            // only when the server has messages but no request of ours.
            let more = self.behind();
            let Some(messages) = self.messages.as_mut() else {
                continue;
            };
            let now = tokio::time::Instant::now;
            let every = if more { PROBE } else { IDLE_LOOK };
            let probe_at = *self.probe_at.get_or_insert_with(|| now() + every);
            // Only a source that may be behind gives a pull up as stalled.
            let stalled_at = more.then(|| *self.stalled_at.get_or_insert_with(|| now() + STALL));
            let look_at = stalled_at.map_or(probe_at, |at| probe_at.min(at));
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => return false,
                next = messages.next() => next,
                () = tokio::time::sleep_until(look_at) => {
                    self.look(stalled_at).await;
                    continue;
                }
            };
            if self.take(next) {
                return true;
            }
        }
    }

    /// Past [`Source::probe_at`]: asks the server for the consumer's state and acts on its
    /// [`Verdict`]. Reopens the consumer when the server is not serving it, or, while the
    /// server may have more ([`Source::behind`], `stalled_at` given), whatever the server says
    /// once the wait reached `stalled_at`; otherwise sets the next look a [`PROBE`] later, or
    /// an [`IDLE_LOOK`] later when caught up (`stalled_at` is `None`).
    async fn look(&mut self, stalled_at: Option<tokio::time::Instant>) {
        let info = self.stream.consumer_info(&self.config.durable);
        let info = match tokio::time::timeout(Duration::from_secs(1), info).await {
            Ok(Ok(i)) => Ok(i),
            Ok(Err(e)) => Err(format!("consumer info failed: {e}")),
            Err(_) => Err("consumer info timed out".to_owned()),
        };
        let verdict = info.as_ref().map_or(Verdict::Wait, |i| {
            verdict(
                i.num_waiting,
                i.num_pending,
                i.delivered.consumer_sequence,
                self.next_delivery - 1,
                self.pending != u64::MAX,
            )
        });
        if verdict == Verdict::CaughtUp {
            self.pending = 0;
            self.stalled_at = None;
            self.probe_at = None;
            return;
        }
        let unserved = verdict == Verdict::Unserved;
        if !unserved {
            let now = tokio::time::Instant::now();
            match stalled_at {
                None => {
                    self.probe_at = Some(now + IDLE_LOOK);
                    return;
                }
                Some(at) if now < at => {
                    self.probe_at = Some(now + PROBE);
                    return;
                }
                Some(_) => {}
            }
        }
        let reason = if unserved { "unserved" } else { "stalled" };
        (self.observer)(SourceEvent::PullError(reason));
        let server = info.map_or_else(
            |e| e,
            |i| {
                format!(
                    "waiting {} pending {} delivered {} ack_pending {}",
                    i.num_waiting, i.num_pending, i.delivered.stream_sequence, i.num_ack_pending
                )
            },
        );
        tracing::warn!(consumer = %self.config.durable, reason, pending = self.pending,
            after = self.after, %server,
            "no message while the server may have more; reopening the consumer after the last message handed out");
        self.messages = None;
        self.stalled_at = None;
        self.probe_at = None;
    }

    /// Handles one item of the pull stream; `true` when it took a delivery into
    /// [`Source::held`].
    fn take(
        &mut self,
        next: Option<Result<async_nats::jetstream::Message, pull::MessagesError>>,
    ) -> bool {
        let msg = match next {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                // Any pull error puts the order or the flow in doubt: a pull request lost with
                // the connection (the client then waits up to its expiry before asking again),
                // or a consumer the restarted server does not have (no responders and missed
                // heartbeats forever). Reopening is always safe: it resumes after the last
                // message handed out.
                let reason = label(e.kind());
                (self.observer)(SourceEvent::PullError(reason));
                tracing::warn!(consumer = %self.config.durable, reason, error = %e,
                    "pull error; reopening the consumer after the last message handed out");
                self.messages = None;
                return false;
            }
            None => {
                tracing::warn!(consumer = %self.config.durable, "pull stream ended; reopening");
                self.messages = None;
                return false;
            }
        };
        let Ok((seq, delivery, pending)) = msg
            .info()
            .map(|i| (i.stream_sequence, i.consumer_sequence, i.pending))
        else {
            // A JetStream consumer delivers nothing else; treat it as a lost order.
            self.messages = None;
            return false;
        };
        if delivery != self.next_delivery {
            (self.observer)(SourceEvent::Gap);
            tracing::warn!(consumer = %self.config.durable, expected = self.next_delivery,
                delivered = delivery, after = self.after,
                "deliveries lost in flight; reopening after the last message handed out");
            self.messages = None;
            return false;
        }
        self.next_delivery += 1;
        if seq <= self.after {
            (self.observer)(SourceEvent::Redelivered);
            return false;
        }
        self.after = seq;
        self.pending = pending;
        self.fruitless_opens = 0;
        self.stalled_at = None;
        self.probe_at = None;
        let (message, acker) = msg.split();
        if self.held.is_empty() {
            self.held_since = Some(tokio::time::Instant::now());
        }
        self.held.push(Delivery {
            seq,
            message,
            acker,
        });
        true
    }

    /// (Re)creates the consumer to deliver after [`Source::position`] and opens its pull
    /// stream, retrying with back-off; `false` on shutdown.
    async fn open(&mut self, shutdown: &Shutdown) -> bool {
        if self.reopen_at.is_none() && self.fruitless_opens > 0 {
            let pause = FIRST_REOPEN_PAUSE
                .saturating_mul(1 << self.fruitless_opens.min(8))
                .min(MAX_BACKOFF);
            self.reopen_at = Some(tokio::time::Instant::now() + pause);
        }
        if let Some(at) = self.reopen_at {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return false,
                () = tokio::time::sleep_until(at) => {}
            }
        }
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = async {
                let consumer = self.create().await?;
                consumer
                    .stream()
                    .max_messages_per_batch(self.config.batch)
                    .max_bytes_per_batch(self.config.max_bytes)
                    .heartbeat(self.config.heartbeat)
                    .messages()
                    .await
                    .map_err(|e| e.to_string())
            };
            let result = tokio::select! {
                biased;
                () = shutdown.cancelled() => return false,
                result = attempt => result,
            };
            match result {
                Ok(messages) => {
                    self.messages = Some(messages);
                    // Until its first message, the new consumer has not said whether the
                    // server has more: its first pull request is watched as well.
                    self.pending = u64::MAX;
                    // The stall clock starts with the new pull, not with the one given up.
                    self.stalled_at = None;
                    self.probe_at = None;
                    self.next_delivery = 1;
                    self.fruitless_opens = self.fruitless_opens.saturating_add(1);
                    self.reopen_at = None;
                    return true;
                }
                Err(error) => {
                    (self.observer)(SourceEvent::OpenFailed);
                    tracing::warn!(consumer = %self.config.durable, %error, ?backoff,
                        "cannot open the consumer; retrying");
                }
            }
            if !shutdown.back_off(&mut backoff, MAX_BACKOFF).await {
                return false;
            }
        }
    }

    /// Gives back everything handed out after `after` and holds nothing: closes the pull
    /// stream (dropping the messages it had buffered) and recreates the consumer to deliver
    /// from the message after `after`, without pulling, so the server has nothing delivered
    /// and unacked either. The next [`Source::next_batch`] pulls again from there. For a
    /// service that cannot use its input for a while (its store is down): it waits holding no
    /// batch, and a crash meanwhile resumes at `after` as before. Recreating the consumer is
    /// tried once; if it fails, the next pull recreates it anyway.
    pub async fn rewind(&mut self, after: u64) {
        self.messages = None;
        self.stalled_at = None;
        self.probe_at = None;
        self.held.clear();
        self.held_since = None;
        self.after = after;
        self.given = after;
        self.pending = u64::MAX;
        self.fruitless_opens = 0;
        self.reopen_at = None;
        if let Err(error) = self.create().await {
            (self.observer)(SourceEvent::OpenFailed);
            tracing::warn!(consumer = %self.config.durable, %error,
                "cannot recreate the consumer on rewind; the next pull will");
        }
    }

    /// Deletes the durable consumer (not found is the normal first start) and creates it to
    /// deliver after [`Source::position`].
    async fn create(&self) -> Result<async_nats::jetstream::consumer::PullConsumer, String> {
        let _ = self.stream.delete_consumer(&self.config.durable).await;
        self.stream
            .create_consumer(self.config.consumer(self.after))
            .await
            .map_err(|e| e.to_string())
    }

    /// Acks every message up to and including `delivery` (the consumer acks cumulatively). A
    /// failed ack is counted, never raised: the next one covers it.
    pub async fn ack(&self, delivery: &Delivery) {
        let sent = tokio::time::timeout(ACK_TIMEOUT, delivery.acker.ack()).await;
        if !matches!(sent, Ok(Ok(()))) {
            (self.observer)(SourceEvent::AckFailed);
            tracing::debug!(consumer = %self.config.durable, seq = delivery.seq, "ack not sent");
        }
    }
}

/// What the consumer's state at the server tells a source waiting for its next message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The server holds no pull request of the consumer, and has messages for it or has not
    /// been heard from since the consumer was opened: the client believes a request outstanding
    /// that the server never got or already answered. Reopen.
    Unserved,
    /// Nothing was taken yet, the server holds the pull request and has nothing for the
    /// consumer: caught up, nothing to wait for.
    CaughtUp,
    /// Messages are on their way, or the server holds the request: wait.
    Wait,
}

/// The [`Verdict`] on a consumer whose server holds `waiting` pull requests and has `pending`
/// messages for it after `delivered` deliveries, for a source that has received `received`
/// deliveries from it and `knows` (from a message) whether the server had more.
fn verdict(waiting: usize, pending: u64, delivered: u64, received: u64, knows: bool) -> Verdict {
    if delivered > received {
        // Delivered, not yet received: an answer is on its way.
        return Verdict::Wait;
    }
    if waiting == 0 && (pending > 0 || !knows) {
        return Verdict::Unserved;
    }
    if !knows && pending == 0 {
        return Verdict::CaughtUp;
    }
    Verdict::Wait
}

/// A bounded label for a pull error.
fn label(kind: MessagesErrorKind) -> &'static str {
    match kind {
        MessagesErrorKind::MissingHeartbeat => "missing_heartbeat",
        MessagesErrorKind::ConsumerDeleted => "consumer_deleted",
        MessagesErrorKind::Pull => "pull",
        MessagesErrorKind::PushBasedConsumer => "push_based_consumer",
        MessagesErrorKind::NoResponders => "no_responders",
        MessagesErrorKind::RequestLimitExceeded => "request_limit_exceeded",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> SourceConfig {
        SourceConfig {
            durable: "c".into(),
            description: "d".into(),
            filter_subject: String::new(),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10_000,
            batch: 100,
            max_bytes: 0,
            heartbeat: Duration::from_secs(5),
            fill_wait: FILL_WAIT,
            linger: Duration::ZERO,
        }
    }

    #[test]
    fn a_look_reopens_only_a_consumer_the_server_is_not_serving() {
        use Verdict::*;
        // (waiting, pending, delivered, received, knows) → verdict
        let cases = [
            // The client lost count of a request the server answered in full.
            ((0, 181, 10, 10, true), Unserved),
            // The same, with the answer still on its way: wait.
            ((0, 181, 15, 10, true), Wait),
            // The server holds the request (a consumer at its max_ack_pending): wait for STALL.
            ((1, 181, 10, 10, true), Wait),
            // A first request lost: on a backlog, and on an empty stream.
            ((0, 20, 0, 0, false), Unserved),
            ((0, 0, 0, 0, false), Unserved),
            // Opened on an empty stream, the request held: caught up.
            ((1, 0, 0, 0, false), CaughtUp),
            // Opened on a backlog, the first answer on its way.
            ((0, 20, 10, 0, false), Wait),
            ((1, 20, 0, 0, false), Wait),
            // Caught up after messages: the server holds the request.
            ((1, 0, 10, 10, true), Wait),
        ];
        for ((w, p, d, r, k), want) in cases {
            assert_eq!(verdict(w, p, d, r, k), want, "{:?}", (w, p, d, r, k));
        }
    }

    #[test]
    fn a_pull_may_always_hold_the_largest_message() {
        assert_eq!(pull_bytes(8 << 20, 1 << 20), 8 << 20);
        assert_eq!(pull_bytes(64 << 10, 1 << 20), 2 << 20);
        assert_eq!(pull_bytes(0, 8 << 20), 16 << 20);
    }

    #[test]
    fn the_consumer_starts_right_after_the_position_and_acks_cumulatively() {
        let c = config().consumer(41);
        assert_eq!(
            c.deliver_policy,
            DeliverPolicy::ByStartSequence { start_sequence: 42 }
        );
        assert_eq!(c.ack_policy, AckPolicy::All);
        assert_eq!(c.max_deliver, -1);
        assert_eq!(config().consumer(0).deliver_policy, DeliverPolicy::All);
    }
}
