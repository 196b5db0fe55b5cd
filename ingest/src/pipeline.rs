//! SHELL: the validator loop — pull from RAW, validate, publish to READINGS or `dlq.<reason>`,
//! settle the RAW message once the publish is acknowledged.
//!
//! Up to `max_in_flight` publishes await their acks at once; each RAW message is acked (valid)
//! or terminated (dead-lettered) when its own publish ack arrives, in whatever order they come
//! (the consumer acks explicitly, one by one). A publish that is not acknowledged hands the RAW
//! message back (nak with a delay): the server redelivers it, and `Nats-Msg-Id` makes the second
//! publish a no-op if the first did land. Nothing here can fail on input: every message gets a
//! verdict, every verdict a publish.

use crate::metrics::IngestMetrics;
use crate::nats;
use crate::pause;
use crate::validate::Validator;
use async_nats::jetstream::consumer::pull::{self, MessagesErrorKind};
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, context::PublishError, AckKind, Message};
use bytes::Bytes;
use citypulse_runtime::shutdown::Shutdown;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use std::time::Duration;

/// How long shutdown waits for publishes in flight to be acknowledged (so their RAW messages
/// can be acked rather than redelivered).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle heartbeat of the pull stream: a dead pull is noticed after two missed beats.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// What a RAW message became.
#[derive(Debug, Clone, Copy)]
enum Output {
    /// A validated reading on READINGS: ack RAW when stored.
    Reading,
    /// A dead letter on DLQ: terminate RAW when stored.
    DeadLetter,
}

/// A publish that finished, with the RAW message it settles.
struct Completion {
    raw: Message,
    output: Output,
    result: Result<PublishAck, PublishError>,
}

/// The validator stage and its dependencies.
pub struct Validating {
    /// JetStream context for publishing.
    pub js: jetstream::Context,
    /// The pure validator.
    pub validator: Validator,
    /// Metrics.
    pub metrics: IngestMetrics,
    /// RAW stream.
    pub raw: jetstream::stream::Stream,
    /// The validator's consumer settings (created or updated at each open).
    pub consumer: pull::Config,
    /// Messages per pull request.
    pub batch_size: usize,
    /// Publishes awaiting acks at once.
    pub max_in_flight: usize,
}

impl Validating {
    /// Runs until `shutdown`, then waits briefly for publishes in flight.
    pub async fn run(self, shutdown: Shutdown) {
        let Some(mut messages) = self.open(&shutdown).await else {
            return;
        };
        let mut in_flight: FuturesUnordered<BoxFuture<'static, Completion>> =
            FuturesUnordered::new();
        loop {
            self.metrics.set_in_flight(in_flight.len());
            let busy = !in_flight.is_empty();
            let room = in_flight.len() < self.max_in_flight;
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(done) = in_flight.next(), if busy => {
                    self.complete(done).await;
                }
                next = messages.next(), if room => match next {
                    Some(Ok(msg)) => {
                        // Not `in_flight.push(self.start(msg).await)`: the two-phase borrow
                        // would hold a shared borrow of the set across the await.
                        let publish = self.start(msg).await;
                        in_flight.push(publish);
                    }
                    Some(Err(e)) => {
                        let (reason, terminal) = classify(e.kind());
                        self.metrics.consume_error("validator", reason);
                        tracing::warn!(reason, error = %e, "pulling from RAW failed");
                        if terminal {
                            let Some(m) = self.open(&shutdown).await else { break };
                            messages = m;
                        }
                    }
                    None => {
                        tracing::warn!("RAW pull stream ended; reopening");
                        let Some(m) = self.open(&shutdown).await else { break };
                        messages = m;
                    }
                },
            }
        }
        let drain = async {
            while let Some(done) = in_flight.next().await {
                self.complete(done).await;
            }
        };
        if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
            tracing::warn!("publishes still unacknowledged at shutdown; RAW will redeliver them");
        }
        self.metrics.set_in_flight(0);
    }

    /// Creates (or updates) the durable consumer and opens its pull stream, retrying with
    /// backoff; `None` on shutdown.
    async fn open(&self, shutdown: &Shutdown) -> Option<pull::Stream> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = async {
                let consumer: PullConsumer = self
                    .raw
                    .create_consumer(self.consumer.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                consumer
                    .stream()
                    .max_messages_per_batch(self.batch_size)
                    .heartbeat(HEARTBEAT)
                    .messages()
                    .await
                    .map_err(|e| e.to_string())
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return None,
                result = attempt => match result {
                    Ok(stream) => return Some(stream),
                    Err(error) => {
                        self.metrics.consume_error("validator", "open");
                        tracing::warn!(%error, ?backoff, "cannot open the RAW consumer; retrying");
                    }
                },
            }
            if !pause(&mut backoff, shutdown).await {
                return None;
            }
        }
    }

    /// Validates one RAW message and sends its output; returns the future of the publish ack.
    async fn start(&self, raw: Message) -> BoxFuture<'static, Completion> {
        self.metrics.received();
        let (output, subject, headers, payload) =
            match self
                .validator
                .validate(&raw.subject, &raw.payload, now_ms())
            {
                Ok(accepted) => {
                    self.metrics
                        .accepted(accepted.reading.kind(), &accepted.adjustments);
                    (
                        Output::Reading,
                        accepted.subject.readings_subject(),
                        nats::reading_headers(&accepted.reading.msg_id()),
                        Bytes::from(accepted.reading.encode()),
                    )
                }
                Err(rejection) => {
                    // Parsed from the reply subject; only a dead letter needs it.
                    let raw_sequence = nats::stream_sequence(&raw);
                    let reason = rejection.reason();
                    tracing::debug!(reason, detail = %rejection, subject = %raw.subject,
                        raw_sequence, "rejected; dead-lettering");
                    self.metrics.rejected(reason);
                    let (subject, headers, body) =
                        nats::dead_letter(&rejection, &raw.subject, raw_sequence, &raw.payload);
                    (Output::DeadLetter, subject, headers, body)
                }
            };
        let sent = self
            .js
            .publish_with_headers(subject, headers, payload)
            .await;
        Box::pin(async move {
            let result = match sent {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            Completion {
                raw,
                output,
                result,
            }
        })
    }

    /// Settles the RAW message of a finished publish.
    async fn complete(&self, done: Completion) {
        let kind = match done.result {
            Ok(ack) => {
                let (stream, kind) = match done.output {
                    Output::Reading => ("readings", AckKind::Ack),
                    Output::DeadLetter => ("dlq", AckKind::Term),
                };
                if ack.duplicate {
                    self.metrics.duplicate(stream);
                }
                kind
            }
            Err(error) => {
                tracing::debug!(%error, subject = %done.raw.subject,
                    "output not acknowledged; handing the message back for redelivery");
                self.metrics.retried("publish_failed");
                AckKind::Nak(Some(nats::RETRY_DELAY))
            }
        };
        if !nats::settle(&done.raw, kind).await {
            tracing::debug!(subject = %done.raw.subject, "could not settle; the server will redeliver");
            self.metrics.ack_failed();
        }
    }
}

/// A bounded label for a pull error, and whether the pull stream must be reopened.
fn classify(kind: MessagesErrorKind) -> (&'static str, bool) {
    match kind {
        MessagesErrorKind::MissingHeartbeat => ("missing_heartbeat", false),
        MessagesErrorKind::ConsumerDeleted => ("consumer_deleted", true),
        MessagesErrorKind::Pull => ("pull", false),
        MessagesErrorKind::PushBasedConsumer => ("push_based_consumer", true),
        MessagesErrorKind::NoResponders => ("no_responders", false),
        MessagesErrorKind::RequestLimitExceeded => ("request_limit_exceeded", true),
        _ => ("other", false),
    }
}

/// The ingest clock, ms since the Unix epoch.
pub use citypulse_runtime::clock::now_ms;
