//! ADAPTER: hands messages to NATS.
//!
//! JetStream mode (default): each message is published with `Nats-Msg-Id` set to the reading's
//! natural key, with up to `max_in_flight` acknowledgements outstanding at once for throughput.
//! The acks come back on one subscription of the publisher's own (`<inbox>.*`, each message
//! sent with the reply subject `<inbox>.<n>`), not as one JetStream request per message: no
//! request-multiplexer entry, channel or timer per message.
//! A failed attempt (no ack, a timeout, an error ack) is counted and retried with the same id
//! after a capped backoff, so the server stores it exactly once: a message counted as acked is
//! stored. Acks are collected oldest first and a failed one is retried before anything newer is
//! sent, so a reading lands in RAW at most `max_in_flight` messages out of order, whatever the
//! broker does. Core mode publishes with plain core NATS (fire and forget, like an MQTT QoS 0
//! device), still setting `Nats-Msg-Id` so a stream capturing the subjects deduplicates.

use crate::engine::Outgoing;
use crate::metrics::SimMetrics;
use async_nats::jetstream::context::{ContextBuilder, PublishErrorKind};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::{HeaderMap, Subscriber};
use bytes::Bytes;
use citypulse_runtime::publish::{ack_of, reply_number, NotAcked};
use citypulse_runtime::shutdown::Shutdown;
use futures::{FutureExt, StreamExt};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// How long an ack may take before the message is published again (under the same id).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// How messages reach NATS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// JetStream publish with acks and `Nats-Msg-Id`.
    JetStream,
    /// Core NATS publish, no acks.
    Core,
}

/// Why publishing stopped.
#[derive(Debug, thiserror::Error)]
pub enum PublishFailure {
    /// Shutdown was requested while a message was waiting to go out.
    #[error("shutdown requested while publishing")]
    Cancelled,
    /// The drain deadline passed with messages still unacknowledged.
    #[error("{0} message(s) not acknowledged before the drain deadline")]
    Unacknowledged(usize),
}

struct Pending {
    subject: Arc<str>,
    msg_id: String,
    payload: Bytes,
    attempt: u32,
}

/// A message sent and not yet settled: its reply subject's number, when it went out, and its
/// answer once it came.
struct InFlight {
    id: u64,
    pending: Pending,
    sent: Instant,
    answer: Option<Result<PublishAck, &'static str>>,
}

/// Where the acks of JetStream publishes come back: one subscription to `<inbox>.*`, each
/// message sent with the reply subject `<inbox>.<id>`.
struct Replies {
    inbox: String,
    subscriber: Subscriber,
}

/// Publishes [`Outgoing`] messages, counting published, acked and failed attempts.
pub struct Publisher {
    mode: Mode,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    /// Sent and unsettled, oldest first; ids consecutive.
    window: VecDeque<InFlight>,
    /// Opened at the first JetStream publish.
    replies: Option<Replies>,
    next_id: u64,
    max_in_flight: usize,
    metrics: SimMetrics,
}

/// The metric label of a reply that is not an ack.
fn refusal(why: NotAcked) -> &'static str {
    match why {
        NotAcked::NoStream => "stream_not_found",
        NotAcked::Refused => "other",
    }
}

fn reason(kind: PublishErrorKind) -> &'static str {
    match kind {
        PublishErrorKind::StreamNotFound => "stream_not_found",
        PublishErrorKind::TimedOut => "timed_out",
        PublishErrorKind::BrokenPipe => "broken_pipe",
        PublishErrorKind::MaxAckPending => "max_ack_pending",
        PublishErrorKind::MaxPayloadExceeded => "max_payload",
        PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => "rejected",
        _ => "other",
    }
}

fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << attempt.min(6))).min(Duration::from_secs(2))
}

impl Publisher {
    /// A publisher on `client` with at most `max_in_flight` unacknowledged messages.
    pub fn new(
        client: async_nats::Client,
        mode: Mode,
        max_in_flight: usize,
        metrics: SimMetrics,
    ) -> Publisher {
        let max_in_flight = max_in_flight.max(1);
        let js = ContextBuilder::new()
            .timeout(ACK_TIMEOUT)
            .max_ack_inflight(max_in_flight * 2)
            .build(client.clone());
        Publisher {
            mode,
            client,
            js,
            window: VecDeque::new(),
            replies: None,
            next_id: 0,
            max_in_flight,
            metrics,
        }
    }

    /// The JetStream context used.
    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.js
    }

    /// Messages awaiting an acknowledgement.
    pub fn in_flight(&self) -> usize {
        self.window.len()
    }

    /// Hands `msg` to NATS (a dropout, without payload, is skipped). In JetStream mode this
    /// waits only while the window is full. Returns once the message is on its way.
    pub async fn send(
        &mut self,
        msg: &Outgoing,
        shutdown: &Shutdown,
    ) -> Result<(), PublishFailure> {
        let Some(payload) = &msg.payload else {
            return Ok(());
        };
        let pending = Pending {
            subject: Arc::clone(&msg.subject),
            msg_id: msg.msg_id.clone(),
            payload: payload.clone(),
            attempt: 0,
        };
        match self.mode {
            Mode::Core => self.send_core(pending, shutdown).await?,
            Mode::JetStream => {
                while self.window.len() >= self.max_in_flight {
                    self.reap_one(shutdown).await?;
                }
                self.start(pending, shutdown).await?;
            }
        }
        self.metrics.published();
        self.metrics.in_flight(self.window.len());
        Ok(())
    }

    /// Collects acknowledgements that are already in, without waiting.
    pub async fn poll_acks(&mut self, shutdown: &Shutdown) -> Result<(), PublishFailure> {
        while let Some(Some(reply)) = self
            .replies
            .as_mut()
            .and_then(|r| r.subscriber.next().now_or_never())
        {
            self.record(&reply);
        }
        while self.window.front().is_some_and(|f| f.answer.is_some()) {
            self.reap_one(shutdown).await?;
        }
        self.metrics.in_flight(self.window.len());
        Ok(())
    }

    /// Waits until every message is acknowledged (retrying failures) or `deadline` passes. Core
    /// mode flushes the connection.
    pub async fn drain(&mut self, deadline: Duration) -> Result<(), PublishFailure> {
        let never = Shutdown::new();
        let all = async {
            if self.mode == Mode::Core {
                // A failed flush leaves nothing to retry: core NATS gives no per-message result.
                if let Err(e) = self.client.flush().await {
                    self.metrics.publish_error("other");
                    tracing::warn!(error = %e, "flushing the NATS connection failed");
                }
            }
            while !self.window.is_empty() {
                self.reap_one(&never).await?;
            }
            Ok(())
        };
        let result = match tokio::time::timeout(deadline, all).await {
            Ok(r) => r,
            Err(_) => Err(PublishFailure::Unacknowledged(self.window.len())),
        };
        self.metrics.in_flight(self.window.len());
        result
    }

    async fn send_core(&mut self, p: Pending, shutdown: &Shutdown) -> Result<(), PublishFailure> {
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, p.msg_id.as_str());
        let mut attempt = 0;
        loop {
            let subject = p.subject.to_string();
            match self
                .client
                .publish_with_headers(subject, headers.clone(), p.payload.clone())
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.metrics.publish_error("other");
                    tracing::debug!(subject = %p.subject, error = %e, "core publish failed; retrying");
                }
            }
            pause(backoff(attempt), shutdown).await?;
            attempt += 1;
        }
    }

    /// Sends `p` with its reply subject and puts it at the back of the window.
    async fn start(&mut self, mut p: Pending, shutdown: &Shutdown) -> Result<(), PublishFailure> {
        let inbox = self.replies(shutdown).await?.inbox.clone();
        let mut headers = HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, p.msg_id.as_str());
        loop {
            let id = self.next_id;
            let publish = self.client.publish_with_reply_and_headers(
                p.subject.to_string(),
                format!("{inbox}.{id}"),
                headers.clone(),
                p.payload.clone(),
            );
            let sent = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(PublishFailure::Cancelled),
                sent = publish => sent,
            };
            match sent {
                Ok(()) => {
                    self.next_id += 1;
                    self.window.push_back(InFlight {
                        id,
                        pending: p,
                        sent: Instant::now(),
                        answer: None,
                    });
                    return Ok(());
                }
                Err(e) => {
                    self.metrics.publish_error("other");
                    tracing::debug!(subject = %p.subject, msg_id = %p.msg_id, error = %e,
                        "publish failed; retrying with the same Nats-Msg-Id");
                    pause(backoff(p.attempt), shutdown).await?;
                    p.attempt += 1;
                }
            }
        }
    }

    /// The reply subscription, opened (retrying) at first use.
    async fn replies(&mut self, shutdown: &Shutdown) -> Result<&Replies, PublishFailure> {
        let mut attempt = 0;
        while self.replies.is_none() {
            let inbox = self.client.new_inbox();
            match self.client.subscribe(format!("{inbox}.*")).await {
                Ok(subscriber) => self.replies = Some(Replies { inbox, subscriber }),
                Err(e) => {
                    self.metrics.publish_error("other");
                    tracing::debug!(error = %e, "cannot subscribe to the acks; retrying");
                    pause(backoff(attempt), shutdown).await?;
                    attempt += 1;
                }
            }
        }
        Ok(self
            .replies
            .as_ref()
            .unwrap_or_else(|| unreachable!("opened above")))
    }

    /// Files a reply under its message in the window (a reply to a message settled already, by
    /// a timeout, is dropped).
    fn record(&mut self, reply: &async_nats::Message) {
        let Some(first) = self.window.front().map(|f| f.id) else {
            return;
        };
        let slot = reply_number(&reply.subject)
            .and_then(|id| id.checked_sub(first))
            .and_then(|i| usize::try_from(i).ok());
        if let Some(f) = slot.and_then(|i| self.window.get_mut(i)) {
            f.answer
                .get_or_insert_with(|| ack_of(reply).map_err(refusal));
        }
    }

    /// Settles the oldest message in the window: waits for its answer until its ack timeout,
    /// then counts it acked, or publishes it again in place.
    async fn reap_one(&mut self, shutdown: &Shutdown) -> Result<(), PublishFailure> {
        let Some(deadline) = self.window.front().map(|f| f.sent + ACK_TIMEOUT) else {
            return Ok(());
        };
        while self.window.front().is_some_and(|f| f.answer.is_none()) {
            let Some(replies) = self.replies.as_mut() else {
                break;
            };
            let reply = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(PublishFailure::Cancelled),
                reply = tokio::time::timeout_at(deadline, replies.subscriber.next()) => reply,
            };
            match reply {
                Ok(Some(reply)) => self.record(&reply),
                Ok(None) | Err(_) => break,
            }
        }
        let Some(front) = self.window.pop_front() else {
            return Ok(());
        };
        let answer = front.answer.unwrap_or(Err("timed_out"));
        self.settle(front.pending, answer, shutdown).await
    }

    async fn settle(
        &mut self,
        mut p: Pending,
        result: Result<PublishAck, &'static str>,
        shutdown: &Shutdown,
    ) -> Result<(), PublishFailure> {
        match result {
            Ok(ack) => {
                self.metrics.acked(ack.duplicate);
                Ok(())
            }
            Err(why) => {
                self.metrics.publish_error(why);
                tracing::debug!(subject = %p.subject, msg_id = %p.msg_id, reason = why,
                    "publish not acknowledged; retrying with the same Nats-Msg-Id");
                pause(backoff(p.attempt), shutdown).await?;
                p.attempt += 1;
                self.retry_in_place(p, shutdown).await
            }
        }
    }

    /// Publishes the oldest unacknowledged message again and waits for its ack before anything
    /// newer is sent, as a device retries its oldest reading first. Publishes lost with a
    /// broker crash are retried only after the context's ack timeout; meanwhile the free
    /// places of the window kept publishing newer readings, so putting the retry at the back
    /// of the window (as before) let a sensor's readings land in RAW tens of simulated
    /// minutes out of order — late for every window downstream. Now a reading lands at most
    /// `max_in_flight` messages behind the newest.
    async fn retry_in_place(
        &mut self,
        mut p: Pending,
        shutdown: &Shutdown,
    ) -> Result<(), PublishFailure> {
        loop {
            let publish = PublishMessage::build()
                .payload(p.payload.clone())
                .message_id(&p.msg_id);
            let result = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(PublishFailure::Cancelled),
                sent = self.js.send_publish(p.subject.to_string(), publish) => match sent {
                    Ok(ack) => ack.await,
                    Err(e) => Err(e),
                },
            };
            match result {
                Ok(ack) => {
                    self.metrics.acked(ack.duplicate);
                    return Ok(());
                }
                Err(e) => {
                    let why = reason(e.kind());
                    self.metrics.publish_error(why);
                    tracing::debug!(subject = %p.subject, msg_id = %p.msg_id, reason = why, error = %e,
                        "publish not acknowledged; retrying with the same Nats-Msg-Id");
                    pause(backoff(p.attempt), shutdown).await?;
                    p.attempt += 1;
                }
            }
        }
    }
}

async fn pause(d: Duration, shutdown: &Shutdown) -> Result<(), PublishFailure> {
    tokio::select! {
        biased;
        _ = shutdown.cancelled() => Err(PublishFailure::Cancelled),
        _ = tokio::time::sleep(d) => Ok(()),
    }
}
