//! SHELL: the archive — a durable consumer on READINGS (`<consumer-name>-archive`),
//! independent of the validator, read in order through the runtime's [`Source`], that writes
//! readings to PostgreSQL in batches. A READINGS message is a batch of readings
//! ([`citypulse_schema::batch`]) or, from ingest v0.1, one.
//!
//! Each round: take up to `archive_batch_size` messages and
//! [`ARCHIVE_PULL_BYTES`](crate::nats::ARCHIVE_PULL_BYTES) (live, waiting at most
//! `archive_max_delay` to fill the batch; behind, only until the backlog ends), write their
//! readings in one statement, and ack (cumulatively) only after it committed. A failed write
//! drops the connection and the batch: the source is rewound to the last acked message
//! ([`Source::rewind`]), so while PostgreSQL is down the archive holds no reading in memory (a
//! two-hour outage costs ingest no more memory than a minute); once PostgreSQL answers again
//! (reconnection backs off up to 2 s) the same messages are read again and written. The
//! backlog stays in READINGS (archive lag = the consumer's pending messages) while validation
//! flows on. A replay after a crash between COMMIT and ack hits the natural key and inserts
//! nothing.

use crate::metrics::IngestMetrics;
use crate::pause;
use crate::pipeline::now_ms;
use crate::store::{Rows, Store};
use async_nats::jetstream::stream::Stream;
use citypulse_runtime::group::Lease;
use citypulse_runtime::shutdown::Shutdown;
use citypulse_runtime::source::{ack_floor, Delivery, Source, SourceConfig, SourceEvent};
use citypulse_schema::{batch, Reading};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bound on connecting (and creating the schema).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on one batch write.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the archive lag is measured.
const LAG_INTERVAL: Duration = Duration::from_secs(1);
/// Most rows in one write (one statement, one transaction). A batch of READINGS messages taken
/// after an outage can hold a hundred thousand readings; writing them in slices of this many
/// keeps each write's column buffers (built per write, freed after it) at a few MB.
pub const MAX_ROWS_PER_WRITE: usize = 10_000;

/// How a batch write ended.
enum Written {
    /// Every message written and acked.
    All,
    /// A write failed; everything after `after` (a stream sequence) is still to be written.
    Failed { after: u64 },
}

/// The archive stage and its dependencies.
pub struct Archiving {
    /// READINGS stream.
    pub readings: Stream,
    /// The archive consumer's settings.
    pub consumer: SourceConfig,
    /// PostgreSQL URL.
    pub database_url: String,
    /// Longest wait to fill a batch.
    pub max_delay: Duration,
    /// Metrics.
    pub metrics: IngestMetrics,
}

impl Archiving {
    /// Runs until `lease.stop()`. A zombie's write is harmless (the table's key absorbs it), but
    /// once the lease is lost nothing more is acked.
    pub async fn run(self, lease: &Lease) {
        let shutdown = lease.stop().clone();
        let monitor = tokio::spawn(lag_monitor(
            self.readings.clone(),
            self.consumer.durable.clone(),
            self.metrics.clone(),
            shutdown.clone(),
        ));
        if let Some(mut source) = self.source(&shutdown).await {
            // Connect (and create the table) at start, not at the first write.
            let mut store = self.connect(&shutdown).await;
            self.metrics.set_archive_up(store.is_some());
            let mut batch = Vec::new();
            // Behind (after a start, or the last batch was full): the end of the backlog is
            // written the moment it is reached, not after waiting to fill a batch.
            let mut catching_up = true;
            while self
                .fill(&mut source, &mut batch, catching_up, &shutdown)
                .await
            {
                catching_up = self.full(&batch);
                let written = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => break,
                    written = self.write_batch(&mut source, &batch, &store, lease) => written,
                };
                match written {
                    Written::All => batch.clear(),
                    Written::Failed { after } => {
                        // Hold nothing while PostgreSQL is down: the messages wait in READINGS.
                        batch = Vec::new();
                        drop(store.take());
                        source.rewind(after).await;
                        store = self.connect(&shutdown).await;
                        if store.is_none() {
                            break;
                        }
                        self.metrics.set_archive_up(true);
                    }
                }
            }
        }
        self.metrics.set_archive_up(false);
        // The monitor stops on the same shutdown; its result carries nothing.
        let _ = monitor.await;
    }

    /// The source, resuming after the archive consumer's ack floor; `None` on shutdown.
    async fn source(&self, shutdown: &Shutdown) -> Option<Source> {
        let mut backoff = Duration::from_millis(50);
        let after = loop {
            match ack_floor(&self.readings, &self.consumer.durable).await {
                Ok(after) => break after,
                Err(error) => {
                    self.metrics.consume_error("archive", "open");
                    tracing::warn!(%error, "cannot read the archive consumer on READINGS; retrying");
                }
            }
            if !pause(&mut backoff, shutdown).await {
                return None;
            }
        };
        let metrics = self.metrics.clone();
        let observer = Arc::new(move |e: SourceEvent| match e {
            SourceEvent::AckFailed => metrics.ack_failed(),
            e => metrics.consume_error("archive", e.label()),
        });
        Some(Source::new(
            self.readings.clone(),
            self.consumer.clone(),
            after,
            observer,
        ))
    }

    /// Whether `batch` is full: in messages, or in bytes (the pull's byte limit).
    fn full(&self, batch: &[Delivery]) -> bool {
        batch.len() >= self.consumer.batch
            || batch.iter().map(|d| d.message.length).sum::<usize>() >= self.consumer.max_bytes
    }

    /// Takes messages until the batch is full or `max_delay` has passed since the first —
    /// or, `catching_up`, until the source has nothing more (the end of a backlog is written
    /// at once; live, a batch gathers what arrives within `max_delay`). `false` on shutdown.
    async fn fill(
        &self,
        source: &mut Source,
        batch: &mut Vec<Delivery>,
        catching_up: bool,
        shutdown: &Shutdown,
    ) -> bool {
        if !source.next_batch(batch, shutdown).await {
            return false;
        }
        let deadline = tokio::time::Instant::now() + self.max_delay;
        let done = |batch: &[Delivery], source: &Source| {
            self.full(batch) || (catching_up && source.caught_up())
        };
        while !done(batch, source) {
            match tokio::time::timeout_at(deadline, source.next_batch(batch, shutdown)).await {
                Ok(true) => {}
                Ok(false) => return false,
                Err(_) => break,
            }
        }
        true
    }

    /// Writes the messages of `batch` in order, [`MAX_ROWS_PER_WRITE`] rows at a time (at least
    /// one message per write), acking through each write's last message once it committed.
    /// Each write builds its rows afresh: a catch-up's 10,000-row columns are freed after their
    /// write rather than kept as capacity for the small batches of live traffic.
    async fn write_batch(
        &self,
        source: &mut Source,
        batch: &[Delivery],
        store: &Option<Store>,
        lease: &Lease,
    ) -> Written {
        let mut rest = batch;
        while let Some(first) = rest.first() {
            let mut rows = Rows::default();
            self.push(&mut rows, first);
            let mut taken = 1;
            while let Some(d) = rest.get(taken) {
                if rows.len() >= MAX_ROWS_PER_WRITE {
                    break;
                }
                self.push(&mut rows, d);
                taken += 1;
            }
            if !self.write(store, &rows).await {
                return Written::Failed {
                    after: first.seq - 1,
                };
            }
            if lease.is_lost() {
                // The source stops at the next pull (the lease's stop is triggered).
                return Written::All;
            }
            source.ack(&rest[taken - 1]).await;
            rest = &rest[taken..];
        }
        Written::All
    }

    /// Adds a message's rows; an unusable message is counted and skipped (only ingest writes
    /// READINGS: it is someone else's).
    fn push(&self, rows: &mut Rows, d: &Delivery) {
        if let Err(error) = push_rows(rows, &d.message) {
            self.metrics.archive_error("undecodable");
            tracing::warn!(%error, subject = %d.message.subject, seq = d.seq,
                "READINGS message is not an archivable reading; skipped");
        }
    }

    /// Writes `rows` in one statement; `false` when the write failed (counted and logged).
    async fn write(&self, store: &Option<Store>, rows: &Rows) -> bool {
        if rows.is_empty() {
            return true;
        }
        let Some(s) = store else {
            return false;
        };
        let started = Instant::now();
        match s.insert(rows, WRITE_TIMEOUT).await {
            Ok(inserted) => {
                self.metrics
                    .archived(rows.len(), inserted, started.elapsed().as_secs_f64());
                true
            }
            Err(error) => {
                self.metrics.archive_error(error.reason());
                self.metrics.set_archive_up(false);
                tracing::warn!(%error,
                    "archive write failed; reconnecting, the batch will be read and written again");
                false
            }
        }
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
}

/// Adds the rows of one READINGS message: a batch (every reading in it, or none when one is
/// unusable) or a single reading written by ingest v0.1.
fn push_rows(rows: &mut Rows, msg: &async_nats::Message) -> Result<(), String> {
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

/// What READINGS holds and may hold, for [`retention_used`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Retention {
    /// Messages stored, and their bytes as the server counts them.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// The stream's limits; 0 (or less) is none, as in a stream config.
    pub max_messages: i64,
    /// See `max_messages`.
    pub max_bytes: i64,
    /// See `max_messages`; zero is none.
    pub max_age: Duration,
}

/// PURE: the share of READINGS' retention that readings not yet archived take up — of its
/// message limit, its byte limit (the backlog's bytes estimated at the stream's average message
/// size) or its age limit (the oldest unarchived message's age), whichever is nearest. At 1 the
/// stream starts discarding readings the archive has not written (READINGS discards the oldest
/// messages at its limits, archived or not); 0 with no backlog or no limit.
pub fn retention_used(r: &Retention, backlog_messages: u64, oldest_age: Duration) -> f64 {
    if backlog_messages == 0 {
        return 0.0;
    }
    // Counts to ratios: precision loss is irrelevant for a gauge.
    #[allow(clippy::cast_precision_loss)]
    let share = |used: f64, limit: i64| if limit > 0 { used / limit as f64 } else { 0.0 };
    #[allow(clippy::cast_precision_loss)]
    let backlog = backlog_messages.min(r.messages) as f64;
    #[allow(clippy::cast_precision_loss)]
    let backlog_bytes = if r.messages == 0 {
        0.0
    } else {
        r.bytes as f64 * backlog / r.messages as f64
    };
    let by_age = if r.max_age.is_zero() {
        0.0
    } else {
        oldest_age.as_secs_f64() / r.max_age.as_secs_f64()
    };
    share(backlog, r.max_messages)
        .max(share(backlog_bytes, r.max_bytes))
        .max(by_age)
}

/// Measures the archive's backlog every second: messages pending or unacked on its consumer,
/// the age of the oldest of them (the first message after the ack floor), and the share of
/// READINGS' retention they take ([`retention_used`]).
async fn lag_monitor(
    readings: Stream,
    consumer: String,
    metrics: IngestMetrics,
    shutdown: Shutdown,
) {
    let mut ticks = shutdown.every(LAG_INTERVAL);
    while ticks.tick().await {
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
        let Ok(info) = readings.get_info().await else {
            continue;
        };
        let retention = Retention {
            messages: info.state.messages,
            bytes: info.state.bytes,
            max_messages: info.config.max_messages,
            max_bytes: info.config.max_bytes,
            max_age: info.config.max_age,
        };
        metrics.set_archive_retention_used(retention_used(
            &retention,
            messages,
            Duration::from_secs_f64(seconds),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: i64 = 1 << 30;
    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    fn readings(messages: u64, bytes: u64) -> Retention {
        Retention {
            messages,
            bytes,
            max_messages: -1,
            max_bytes: GIB,
            max_age: WEEK,
        }
    }

    #[test]
    fn no_backlog_uses_nothing_however_full_the_stream() {
        let full = readings(10_000, 1 << 30);
        assert_eq!(retention_used(&full, 0, Duration::ZERO), 0.0);
    }

    #[test]
    fn the_backlog_s_bytes_are_its_share_of_the_stream_s_average_message() {
        // A full 1 GiB stream of 4,096 messages (256 KiB each); 1,024 of them unarchived, an
        // hour old: a quarter of the byte limit, far from the week.
        let r = readings(4_096, 1 << 30);
        let used = retention_used(&r, 1_024, Duration::from_secs(3600));
        assert!((used - 0.25).abs() < 1e-12, "{used}");
    }

    #[test]
    fn the_nearest_limit_counts() {
        // Few bytes, but the oldest unarchived reading is 3.5 days old: half the week.
        let r = readings(100, 10_000);
        let used = retention_used(&r, 10, Duration::from_secs(7 * 12 * 3600));
        assert!((used - 0.5).abs() < 1e-12, "{used}");
        // A message limit nearer than both.
        let r = Retention {
            max_messages: 20,
            ..r
        };
        assert!((retention_used(&r, 15, Duration::from_secs(60)) - 0.75).abs() < 1e-12);
    }

    #[test]
    fn no_limit_means_no_share_and_a_backlog_beyond_the_stream_is_the_stream() {
        let unlimited = Retention {
            messages: 10,
            bytes: 1_000,
            max_messages: 0,
            max_bytes: -1,
            max_age: Duration::ZERO,
        };
        assert_eq!(retention_used(&unlimited, 10, Duration::from_secs(9)), 0.0);
        // The consumer's count can run ahead of a stream read a moment later.
        let r = Retention {
            max_bytes: 1_000,
            ..unlimited
        };
        assert!((retention_used(&r, 50, Duration::ZERO) - 1.0).abs() < 1e-12);
    }
}
