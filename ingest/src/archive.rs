//! SHELL: the archive — a durable pull consumer on READINGS (`<consumer-name>-archive`),
//! independent of the validator, that writes readings to PostgreSQL in batches. A READINGS
//! message is a batch of readings ([`citypulse_schema::batch`]) or, from ingest v0.1, one.
//!
//! Each round: fetch up to `archive_batch_size` messages (waiting at most `archive_max_delay`),
//! write them in one statement, and ack them only after it committed. A failed write naks the
//! batch and drops the connection; until PostgreSQL answers again the archive fetches nothing, so
//! the backlog stays in READINGS (archive lag = the consumer's pending messages) while
//! validation flows on. Reconnection backs off up to 2 s. Redeliveries (a crash between COMMIT
//! and ack, a write that timed out but committed) hit the natural key and insert nothing.

use crate::metrics::IngestMetrics;
use crate::nats;
use crate::pause;
use crate::pipeline::now_ms;
use crate::store::{Rows, Store};
use async_nats::jetstream::consumer::pull;
use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::{AckKind, Message};
use citypulse_runtime::shutdown::Shutdown;
use citypulse_schema::{batch, Reading};
use futures::StreamExt;
use std::time::{Duration, Instant};

/// Bound on connecting (and creating the schema).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one batch write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Slack on top of `archive_max_delay` before a fetch is given up as lost.
const FETCH_SLACK: Duration = Duration::from_secs(10);
/// How often the archive lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(1);

/// The archive stage and its dependencies.
pub struct Archiving {
    /// READINGS stream.
    pub readings: Stream,
    /// The archive consumer's settings.
    pub consumer: pull::Config,
    /// PostgreSQL URL.
    pub database_url: String,
    /// Messages per batch.
    pub batch_size: usize,
    /// Longest wait to fill a batch.
    pub max_delay: Duration,
    /// Metrics.
    pub metrics: IngestMetrics,
}

impl Archiving {
    /// Runs until `shutdown`.
    pub async fn run(self, shutdown: Shutdown) {
        let monitor = tokio::spawn(lag_monitor(
            self.readings.clone(),
            self.consumer.durable_name.clone().unwrap_or_default(),
            self.metrics.clone(),
            shutdown.clone(),
        ));
        let mut rows = Rows::default();
        while let Some(store) = self.connect(&shutdown).await {
            let Some(consumer) = self.consumer(&shutdown).await else {
                break;
            };
            self.metrics.set_archive_up(true);
            // `archive` returns when the connection is presumed lost: reconnect.
            let stopped = tokio::select! {
                biased;
                () = shutdown.cancelled() => true,
                () = self.archive(&store, consumer, &mut rows, &shutdown) => false,
            };
            self.metrics.set_archive_up(false);
            if stopped {
                break;
            }
        }
        // The monitor stops on the same shutdown; its result carries nothing.
        let _ = monitor.await;
    }

    /// Connects to PostgreSQL, retrying with backoff; `None` on shutdown.
    async fn connect(&self, shutdown: &Shutdown) -> Option<Store> {
        let mut backoff = Duration::from_millis(100);
        let mut failures = 0u32;
        loop {
            let attempt = tokio::select! {
                biased;
                () = shutdown.cancelled() => return None,
                attempt = Store::connect(&self.database_url, CONNECT_TIMEOUT) => attempt,
            };
            match attempt {
                Ok(store) => {
                    tracing::info!(after_failures = failures, "archive connected to PostgreSQL");
                    return Some(store);
                }
                Err(error) => {
                    self.metrics.archive_error(error.reason());
                    if failures == 0 {
                        tracing::warn!(%error,
                            "archive cannot reach PostgreSQL; readings wait in READINGS, retrying");
                    } else {
                        tracing::debug!(%error, failures, "archive still cannot reach PostgreSQL");
                    }
                    failures += 1;
                }
            }
            if !pause(&mut backoff, shutdown).await {
                return None;
            }
        }
    }

    /// Creates (or updates) the archive consumer, retrying with backoff; `None` on shutdown.
    async fn consumer(&self, shutdown: &Shutdown) -> Option<PullConsumer> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let attempt = tokio::select! {
                biased;
                () = shutdown.cancelled() => return None,
                attempt = self.readings.create_consumer(self.consumer.clone()) => attempt,
            };
            match attempt {
                Ok(c) => return Some(c),
                Err(error) => {
                    self.metrics.consume_error("archive", "open");
                    tracing::warn!(%error, "cannot open the archive consumer on READINGS; retrying");
                }
            }
            if !pause(&mut backoff, shutdown).await {
                return None;
            }
        }
    }

    /// Archives batches until a write fails (the connection is then presumed lost).
    async fn archive(
        &self,
        store: &Store,
        mut consumer: PullConsumer,
        rows: &mut Rows,
        shutdown: &Shutdown,
    ) {
        let mut backoff = Duration::from_millis(50);
        let mut batch = Vec::with_capacity(self.batch_size);
        loop {
            batch.clear();
            if let Err(error) = self.fetch(&consumer, &mut batch).await {
                self.metrics.archive_error("fetch");
                tracing::debug!(%error, "fetching from READINGS failed; retrying");
                if !pause(&mut backoff, shutdown).await {
                    return;
                }
                if let Some(c) = self.consumer(shutdown).await {
                    consumer = c;
                }
                continue;
            }
            backoff = Duration::from_millis(50);
            if batch.is_empty() {
                continue;
            }
            rows.clear();
            let mut written = Vec::with_capacity(batch.len());
            for msg in batch.drain(..) {
                match push_rows(rows, &msg) {
                    Ok(()) => written.push(msg),
                    Err(error) => {
                        // Only ingest publishes on READINGS; this is someone else's message.
                        self.metrics.archive_error("undecodable");
                        tracing::warn!(%error, subject = %msg.subject,
                            "READINGS message is not an archivable reading; terminating it");
                        nats::settle(&msg, AckKind::Term).await;
                    }
                }
            }
            if rows.is_empty() {
                continue;
            }
            let started = Instant::now();
            match store.insert(rows, WRITE_TIMEOUT).await {
                Ok(inserted) => {
                    self.metrics
                        .archived(rows.len(), inserted, started.elapsed().as_secs_f64());
                    for msg in &written {
                        if !nats::settle(msg, AckKind::Ack).await {
                            self.metrics.ack_failed();
                        }
                    }
                }
                Err(error) => {
                    self.metrics.archive_error(error.reason());
                    tracing::warn!(%error, "archive write failed; reconnecting, the batch will be redelivered");
                    for msg in &written {
                        nats::settle(msg, AckKind::Nak(None)).await;
                    }
                    return;
                }
            }
        }
    }

    /// Fetches one batch into `out`: up to `batch_size` messages, waiting at most `max_delay`.
    async fn fetch(&self, consumer: &PullConsumer, out: &mut Vec<Message>) -> Result<(), String> {
        let fetching = async {
            let mut messages = consumer
                .fetch()
                .max_messages(self.batch_size)
                .expires(self.max_delay)
                .messages()
                .await
                .map_err(|e| e.to_string())?;
            while let Some(next) = messages.next().await {
                match next {
                    Ok(m) => out.push(m),
                    // Keep what arrived; the next fetch tells whether the pull is broken.
                    Err(_) if !out.is_empty() => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
            Ok(())
        };
        match tokio::time::timeout(self.max_delay + FETCH_SLACK, fetching).await {
            Ok(result) => result,
            Err(_) => Err("fetch timed out".to_owned()),
        }
    }
}

/// Adds the rows of one READINGS message: a batch (every reading in it, or none when one is
/// unusable) or a single reading written by ingest v0.1.
fn push_rows(rows: &mut Rows, msg: &Message) -> Result<(), String> {
    if !batch::is_batch_subject(&msg.subject) {
        let r = Reading::decode(&msg.payload).map_err(|e| e.to_string())?;
        return rows.push(&r).map_err(|e| e.to_string());
    }
    let items = batch::decode_batch(&msg.payload).map_err(|e| e.to_string())?;
    let mut readings = Vec::with_capacity(items.len());
    for item in items {
        readings.push(Reading::decode(item).map_err(|e| e.to_string())?);
    }
    for r in &readings {
        rows.push(r).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Measures the archive's backlog every second: messages pending or unacked on its consumer,
/// and the age of the oldest of them (the first message after the ack floor).
async fn lag_monitor(
    readings: Stream,
    consumer: String,
    metrics: IngestMetrics,
    shutdown: Shutdown,
) {
    let mut tick = tokio::time::interval(LAG_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let Ok(info) = readings.consumer_info(&consumer).await else {
            continue;
        };
        let messages = info
            .num_pending
            .saturating_add(u64::try_from(info.num_ack_pending).unwrap_or(u64::MAX));
        let seconds = if messages == 0 {
            0.0
        } else {
            let oldest = readings
                .get_first_raw_message_by_subject("readings.>", info.ack_floor.stream_sequence + 1)
                .await;
            match oldest {
                Ok(m) => {
                    let published_ms = m.time.unix_timestamp_nanos() / 1_000_000;
                    let age_ms = i128::from(now_ms()) - published_ms;
                    // Milliseconds to seconds; precision loss is irrelevant for a lag gauge.
                    #[allow(clippy::cast_precision_loss)]
                    let secs = age_ms.max(0) as f64 / 1000.0;
                    secs
                }
                Err(_) => continue,
            }
        };
        metrics.set_archive_lag(messages, seconds);
    }
}
