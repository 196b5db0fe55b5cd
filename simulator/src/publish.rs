//! ADAPTER: hands messages to NATS.
//!
//! JetStream mode (default): each message is published with `Nats-Msg-Id` set to the reading's
//! natural key, with up to `max_in_flight` acknowledgements outstanding at once for throughput.
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
use async_nats::HeaderMap;
use bytes::Bytes;
use citypulse_runtime::shutdown::Shutdown;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

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

type AckFuture = BoxFuture<
    'static,
    (
        Pending,
        Result<PublishAck, async_nats::jetstream::context::PublishError>,
    ),
>;

/// Publishes [`Outgoing`] messages, counting published, acked and failed attempts.
pub struct Publisher {
    mode: Mode,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    window: FuturesOrdered<AckFuture>,
    max_in_flight: usize,
    metrics: SimMetrics,
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
            .timeout(Duration::from_secs(10))
            .max_ack_inflight(max_in_flight * 2)
            .build(client.clone());
        Publisher {
            mode,
            client,
            js,
            window: FuturesOrdered::new(),
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
        use futures::FutureExt;
        while let Some(Some((pending, result))) = self.window.next().now_or_never() {
            self.settle(pending, result, shutdown).await?;
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

    /// Sends one attempt of `p` and puts its ack future in the window.
    async fn start(&mut self, mut p: Pending, shutdown: &Shutdown) -> Result<(), PublishFailure> {
        loop {
            let publish = PublishMessage::build()
                .payload(p.payload.clone())
                .message_id(&p.msg_id);
            let sent = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Err(PublishFailure::Cancelled),
                sent = self.js.send_publish(p.subject.to_string(), publish) => sent,
            };
            match sent {
                Ok(ack) => {
                    self.window.push_back(Box::pin(async move {
                        let result = ack.await;
                        (p, result)
                    }));
                    return Ok(());
                }
                Err(e) => {
                    let why = reason(e.kind());
                    self.metrics.publish_error(why);
                    tracing::debug!(subject = %p.subject, msg_id = %p.msg_id, reason = why, error = %e,
                        "publish failed; retrying with the same Nats-Msg-Id");
                    pause(backoff(p.attempt), shutdown).await?;
                    p.attempt += 1;
                }
            }
        }
    }

    async fn reap_one(&mut self, shutdown: &Shutdown) -> Result<(), PublishFailure> {
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Err(PublishFailure::Cancelled),
            next = self.window.next() => next,
        };
        match next {
            Some((pending, result)) => self.settle(pending, result, shutdown).await,
            None => Ok(()),
        }
    }

    async fn settle(
        &mut self,
        mut p: Pending,
        result: Result<PublishAck, async_nats::jetstream::context::PublishError>,
        shutdown: &Shutdown,
    ) -> Result<(), PublishFailure> {
        match result {
            Ok(ack) => {
                self.metrics.acked(ack.duplicate);
                Ok(())
            }
            Err(e) => {
                let why = reason(e.kind());
                self.metrics.publish_error(why);
                tracing::debug!(subject = %p.subject, msg_id = %p.msg_id, reason = why, error = %e,
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
