//! ADAPTER: hands messages to NATS.
//!
//! JetStream mode (default): a step's messages go through the runtime's publisher
//! ([`citypulse_runtime::publish::publish_in_windows`]), `max_in_flight` at a time, each with
//! `Nats-Msg-Id` set to the reading's natural key. A window is sent at once and its acks are
//! collected on one reply subscription and counted ([`Windows::counted_in_subject_order`]: a
//! window is put on the wire once, duplicates among it or not, so a core NATS subscriber of
//! `sensors.>` sees each reading once); a message not acknowledged is published again under the
//! same id with capped back-off until it is, so the server stores it exactly once: a message
//! counted as acked is stored. The next window goes out only once this one is acked, and a
//! window holds at most one reading per sensor, so a reading lands in RAW at most
//! `max_in_flight` messages out of order and never behind its own sensor's next one, whatever
//! the broker does (a device retries its oldest reading first).
//!
//! Core mode publishes with plain core NATS (fire and forget, like an MQTT QoS 0 device), still
//! setting `Nats-Msg-Id` so a stream capturing the subjects deduplicates.

use crate::engine::Outgoing;
use crate::metrics::SimMetrics;
use async_nats::jetstream::context::ContextBuilder;
use async_nats::HeaderMap;
use citypulse_runtime::publish::{self, publish_in_windows, Windows};
use citypulse_runtime::shutdown::Shutdown;
use std::time::Duration;

/// How long an ack may take before the message is published again (under the same id), on the
/// JetStream context's path (a message the window could not place).
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// The longest pause between two attempts of a failed publish.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

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
    /// The drain deadline passed after shutdown before a step's messages were all acknowledged.
    #[error("a step of {0} message(s) was not wholly acknowledged before the drain deadline")]
    Unacknowledged(usize),
}

/// Publishes [`Outgoing`] messages, counting published, acked and failed attempts.
pub struct Publisher {
    mode: Mode,
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    max_in_flight: usize,
    /// After shutdown, how long the messages already handed over may still take.
    drain_timeout: Duration,
    metrics: SimMetrics,
}

impl Publisher {
    /// A publisher on `client` with at most `max_in_flight` unacknowledged messages, which gives
    /// the messages handed to it before shutdown `drain_timeout` to be acknowledged.
    pub fn new(
        client: async_nats::Client,
        mode: Mode,
        max_in_flight: usize,
        drain_timeout: Duration,
        metrics: SimMetrics,
    ) -> Publisher {
        let js = ContextBuilder::new()
            .timeout(ACK_TIMEOUT)
            .build(client.clone());
        Publisher {
            mode,
            client,
            js,
            max_in_flight: max_in_flight.max(1),
            drain_timeout,
            metrics,
        }
    }

    /// The JetStream context used.
    pub fn jetstream(&self) -> &async_nats::jetstream::Context {
        &self.js
    }

    /// Hands `batch` to NATS in order (a dropout, without payload, is skipped). JetStream mode
    /// returns once every message is acknowledged; once `shutdown` fires, it waits at most the
    /// drain timeout more ([`PublishFailure::Unacknowledged`]). Core mode returns once every
    /// message is on the connection (flushed: core NATS gives no per-message result).
    pub async fn publish(
        &self,
        batch: &[Outgoing],
        shutdown: &Shutdown,
    ) -> Result<(), PublishFailure> {
        let messages: Vec<publish::Outgoing> = batch
            .iter()
            .filter_map(|m| {
                let payload = m.payload.clone()?;
                Some(publish::Outgoing::new(
                    m.subject.to_string(),
                    m.msg_id.clone(),
                    payload,
                ))
            })
            .collect();
        if messages.is_empty() {
            return Ok(());
        }
        for _ in &messages {
            self.metrics.published();
        }
        match self.mode {
            Mode::Core => self.publish_core(&messages, shutdown).await,
            Mode::JetStream => self.publish_acked(&messages, shutdown).await,
        }
    }

    /// Publishes through JetStream until every message is acked, or the drain deadline after
    /// shutdown passes.
    async fn publish_acked(
        &self,
        messages: &[publish::Outgoing],
        shutdown: &Shutdown,
    ) -> Result<(), PublishFailure> {
        self.metrics.in_flight(messages.len());
        // Never triggered: the deadline below ends the wait instead, so what was handed over
        // before shutdown still gets its drain timeout.
        let never = Shutdown::new();
        let on_retry = |why| self.metrics.publish_error(why);
        let acked = publish_in_windows(
            &self.js,
            messages,
            Windows::counted_in_subject_order(self.max_in_flight),
            &never,
            &on_retry,
        );
        let deadline = async {
            shutdown.cancelled().await;
            tokio::time::sleep(self.drain_timeout).await;
        };
        let result = tokio::select! {
            acks = acked => {
                // `never` is never triggered, so every message was acked.
                for ack in acks.iter().flatten() {
                    self.metrics.acked(ack.duplicate);
                }
                Ok(())
            }
            () = deadline => Err(PublishFailure::Unacknowledged(messages.len())),
        };
        self.metrics.in_flight(0);
        result
    }

    /// Publishes with core NATS, retrying a message the connection refuses, then flushes.
    async fn publish_core(
        &self,
        messages: &[publish::Outgoing],
        shutdown: &Shutdown,
    ) -> Result<(), PublishFailure> {
        for m in messages {
            let mut headers = HeaderMap::new();
            headers.insert(async_nats::header::NATS_MESSAGE_ID, m.msg_id.as_str());
            let mut backoff = Duration::from_millis(50);
            while let Err(e) = self
                .client
                .publish_with_headers(m.subject.clone(), headers.clone(), m.payload.clone())
                .await
            {
                self.metrics.publish_error("publish");
                tracing::debug!(subject = %m.subject, error = %e, "core publish failed; retrying");
                if !shutdown.back_off(&mut backoff, MAX_BACKOFF).await {
                    return Err(PublishFailure::Cancelled);
                }
            }
        }
        // A failed flush leaves nothing to retry: core NATS gives no per-message result.
        if let Err(e) = self.client.flush().await {
            self.metrics.publish_error("publish");
            tracing::warn!(error = %e, "flushing the NATS connection failed");
        }
        Ok(())
    }
}
