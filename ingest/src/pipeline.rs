//! SHELL: the validator loop — RAW in stream order, a batch at a time: validate every message,
//! publish the batch's valid readings as one READINGS message per partition and its invalid
//! ones as dead letters, wait for every ack, then ack RAW cumulatively up to the batch's last
//! message.
//!
//! **Order.** The next batch is published only once the previous one is acknowledged, and a
//! partition receives one message per batch (several, one after the other, when its readings
//! exceed [`batch::MAX_BATCH_BYTES`]: a NATS message has a size limit), so READINGS holds each
//! partition's readings in RAW order — also across crashes: RAW is read through [`Source`], which resumes exactly after the
//! last acked message (the consumer's ack floor) instead of relying on the server's redelivery
//! after the ack wait (which would put the crashed batch behind newer readings, late for every
//! event-time window downstream).
//!
//! **Exactly once on READINGS.** A READINGS batch's `Nats-Msg-Id` is `batch:<partition>:<raw>`,
//! the RAW sequence of its first reading, and its header `Citypulse-Raw-Last` says through which
//! RAW sequence it holds the partition's readings; a dead letter's id is `raw:<sequence>`. A
//! retry is dropped by the server. A replay after a crash may cut the batch differently: when
//! the server answers "duplicate", ingest reads the stored message's `Citypulse-Raw-Last`, skips
//! the readings it already holds (in this batch and the next ones) and publishes only the rest.
//! So every reading lands once, within the stream's duplicate window (`--duplicate-window`);
//! beyond it (ingest down for longer with a batch in flight) a replayed reading can land twice,
//! which the processors count as a duplicate by `(sensor, seq)` and the archive's key absorbs.

use crate::metrics::IngestMetrics;
use crate::nats;
use crate::recent::{Admission, Districts, Gap, GapLog, Recent, Series};
use crate::validate::Validator;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use citypulse_runtime::group::Lease;
use citypulse_runtime::jetstream::PublishError;
use citypulse_runtime::publish::{self, publish_all, Outgoing, Rejected};
use citypulse_runtime::shutdown::Shutdown;
use citypulse_runtime::source::{ack_floor, Delivery, Source, SourceConfig, SourceEvent};
use citypulse_schema::{batch, partition_of, Reading};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// The validator stage and its dependencies.
pub struct Validating {
    /// JetStream context for publishing.
    pub js: jetstream::Context,
    /// The pure validator.
    pub validator: Validator,
    /// Metrics.
    pub metrics: IngestMetrics,
    /// RAW stream.
    pub raw: stream::Stream,
    /// READINGS stream (to read a stored batch back when a replay finds it).
    pub readings: stream::Stream,
    /// The validator's consumer: name and limits.
    pub consumer: SourceConfig,
    /// READINGS partitions (ingest's `--partitions`).
    pub partitions: u32,
    /// Most sensors whose recent `seq` are tracked (`--max-tracked-sensors`).
    pub max_tracked_sensors: usize,
}

/// Header of a READINGS batch: the RAW sequence through which it holds its partition's readings.
pub const HEADER_RAW_LAST: &str = "Citypulse-Raw-Last";

/// Per-sensor sequence tracking ([`Recent`]: repeats and missing readings) and the WARN log of
/// gaps, one for the validator loop.
struct Tracking {
    recent: Recent,
    /// The missing-reading counter's district labels (bounded).
    districts: Districts,
    /// Gaps judged by the current reading (reused buffer).
    gaps: Vec<Gap>,
    log: GapLog,
    /// Whether the map was reported full (once per process).
    full_reported: bool,
}

/// At most one WARN line about missing readings per minute of processing time.
const GAP_LOG_EVERY_MS: u64 = 60_000;

impl Tracking {
    fn new(max_sensors: usize) -> Tracking {
        Tracking {
            recent: Recent::new(max_sensors),
            districts: Districts::default(),
            gaps: Vec::new(),
            log: GapLog::new(GAP_LOG_EVERY_MS),
            full_reported: false,
        }
    }

    /// Whether `r` is new (or too far behind to tell); counts the readings it reveals missing
    /// and the eviction it causes.
    fn admit(&mut self, r: &Reading, metrics: &IngestMetrics) -> Admission {
        self.track(r, r.ts, metrics)
    }

    /// Notes a reading that arrived but was rejected for its time or values, so its `seq` is
    /// not counted missing. Its `ts` is not trusted: the sensor's newest event time stays.
    fn arrived(&mut self, r: &Reading, metrics: &IngestMetrics) {
        self.track(r, 0, metrics);
    }

    fn track(&mut self, r: &Reading, ts: u64, metrics: &IngestMetrics) -> Admission {
        let (district, new) = self.districts.index(&r.district);
        if new {
            metrics.district_seen(&r.district);
        }
        let series = Series {
            kind: r.kind(),
            district,
        };
        let a = self
            .recent
            .admit(&r.sensor, series, r.seq, ts, &mut self.gaps);
        for gap in self.gaps.drain(..) {
            metrics.missing(self.districts.name(gap.district), gap.kind, gap.missed);
            self.log.note(&gap);
        }
        if a.evicted {
            metrics.sensor_evicted();
            if !self.full_reported {
                self.full_reported = true;
                tracing::warn!(tracked = self.recent.len(),
                    "--max-tracked-sensors reached: evicting the least recently seen sensor for each new one");
            }
        }
        metrics.set_tracked_sensors(self.recent.len());
        a
    }

    /// Logs the gaps since the last line, when one is due at `now_ms`.
    fn report(&mut self, now_ms: u64) {
        let Some(s) = self.log.due(now_ms) else {
            return;
        };
        if let Some(g) = &s.largest {
            tracing::warn!(missing = s.missed, gaps = s.gaps, largest_gap = g.missed,
                sensor = %g.sensor, kind = g.kind.as_str(), newest_seq = g.newest, cause = ?g.cause,
                "readings lost before ingest (gaps in seq) since the last report");
        }
    }
}

/// The valid readings of one batch that fall in one partition, with their RAW sequences.
#[derive(Default)]
struct Group {
    partition: u32,
    district: String,
    readings: Vec<(u64, Bytes)>,
}

impl Group {
    /// The next READINGS message: the readings after RAW sequence `after`, as many as fit in
    /// [`batch::MAX_BATCH_BYTES`] and [`batch::MAX_BATCH_READINGS`] (at least one), and the RAW
    /// sequence through which it holds the partition — `last` when it takes the rest, else its
    /// last reading's. `None` when none is left.
    fn message(&self, after: u64, last: u64) -> Option<(Outgoing, u64)> {
        let rest = self.readings.iter().filter(|(seq, _)| *seq > after);
        let (mut chunk, mut bytes, mut through) = (Vec::new(), 0, after);
        for (seq, r) in rest {
            let full = chunk.len() == batch::MAX_BATCH_READINGS
                || bytes + r.len() + 9 > batch::MAX_BATCH_BYTES;
            if !chunk.is_empty() && full {
                break;
            }
            chunk.push(r.as_ref());
            bytes += r.len() + 9;
            through = *seq;
        }
        let first = self.readings.iter().find(|(seq, _)| *seq > after)?.0;
        let whole = self.readings.last().is_some_and(|(seq, _)| *seq == through);
        let through = if whole { last } else { through };
        let mut message = Outgoing::new(
            batch::batch_subject(&self.district),
            format!("batch:{}:{first}", self.partition),
            Bytes::from(batch::encode_batch(&chunk)),
        );
        message
            .headers
            .insert(HEADER_RAW_LAST, through.to_string().as_str());
        Some((message, through))
    }
}

impl Validating {
    /// Runs until `lease.stop()`. Fencing: the lease is confirmed before each batch is
    /// published, and once it is lost nothing more is published or acked.
    pub async fn run(self, lease: &Lease) {
        let shutdown = lease.stop().clone();
        let Some(after) = self.resume_point(&shutdown).await else {
            return;
        };
        tracing::info!(consumer = %self.consumer.durable, after, "reading RAW in order");
        let metrics = self.metrics.clone();
        let observer = Arc::new(move |e: SourceEvent| match e {
            SourceEvent::AckFailed => metrics.ack_failed(),
            e => metrics.consume_error("validator", e.label()),
        });
        let mut source = Source::new(self.raw.clone(), self.consumer.clone(), after, observer);
        // Per partition: the RAW sequence through which READINGS is known to hold its readings
        // (learned from a replayed batch the server already had).
        let mut stored: HashMap<u32, u64> = HashMap::new();
        let mut tracking = Tracking::new(self.max_tracked_sensors);
        let mut batch = Vec::new();
        while source.next_batch(&mut batch, &shutdown).await {
            let Some(last) = batch.last() else { continue };
            let (groups, letters) = self.verdicts(&batch, &mut tracking);
            tracking.report(now_ms());
            if !self.confirm(lease, &shutdown).await {
                // Lost (another instance validates now) or shutdown: this batch is not ours.
                break;
            }
            self.metrics.set_in_flight(groups.len() + letters.len());
            let published = self
                .publish(groups, letters, last.seq, &mut stored, &shutdown)
                .await;
            self.metrics.set_in_flight(0);
            if published.is_err() || lease.is_lost() {
                // Shutdown before every ack: the next start resumes with this batch.
                break;
            }
            source.ack(last).await;
            batch.clear();
        }
        // What is pending at shutdown, however recent the last line.
        tracking.report(u64::MAX);
    }

    /// Whether the lease is still this instance's, asked right before a batch is published;
    /// retried while NATS does not answer. `false` once lost, or on shutdown.
    async fn confirm(&self, lease: &Lease, shutdown: &Shutdown) -> bool {
        let mut backoff = Duration::from_millis(50);
        loop {
            match lease.confirm().await {
                Ok(mine) => return mine && !shutdown.is_triggered(),
                Err(e) => {
                    self.metrics.retried("confirm_lease");
                    tracing::debug!(error = %e, "cannot confirm the validator's lease; retrying");
                }
            }
            if !crate::pause(&mut backoff, shutdown).await {
                return false;
            }
        }
    }

    /// The RAW sequence after which to resume: the consumer's ack floor, read with retries.
    async fn resume_point(&self, shutdown: &Shutdown) -> Option<u64> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match ack_floor(&self.raw, &self.consumer.durable).await {
                Ok(after) => return Some(after),
                Err(e) => {
                    self.metrics.consume_error("validator", "open");
                    tracing::warn!(error = %e, "cannot read the RAW consumer; retrying");
                }
            }
            if !crate::pause(&mut backoff, shutdown).await {
                return None;
            }
        }
    }

    /// Validates a batch: its valid readings per partition (in RAW order) and its dead letters.
    fn verdicts(&self, batch: &[Delivery], tracking: &mut Tracking) -> (Vec<Group>, Vec<Outgoing>) {
        let now = now_ms();
        let mut groups: BTreeMap<u32, Group> = BTreeMap::new();
        let mut letters = Vec::new();
        for d in batch {
            self.metrics.received();
            let (subject, payload) = (d.message.subject.as_str(), &d.message.payload);
            match self.validator.validate(subject, payload, now) {
                Ok(accepted) => {
                    self.metrics
                        .accepted(accepted.reading.kind(), &accepted.adjustments);
                    let r = &accepted.reading;
                    let admission = tracking.admit(r, &self.metrics);
                    if admission.beyond_window {
                        // Late or a repeat of an old reading: passed on, never lost for being late.
                        tracing::debug!(sensor = %r.sensor, seq = r.seq,
                            "reading 64 or more behind its sensor's newest; passed on");
                        self.metrics.arrived_after_missing(r.kind());
                    } else if !admission.fresh {
                        tracing::debug!(sensor = %r.sensor, seq = r.seq, "repeated reading dropped");
                        self.metrics.duplicate("readings");
                        continue;
                    }
                    let district = &accepted.subject.district;
                    let partition = partition_of(district, self.partitions);
                    let group = groups.entry(partition).or_insert_with(|| Group {
                        partition,
                        district: district.clone(),
                        readings: Vec::new(),
                    });
                    // The device's own bytes when validation changed nothing (no re-encoding).
                    let bytes = if accepted.adjustments.is_empty() {
                        payload.clone()
                    } else {
                        Bytes::from(accepted.reading.encode())
                    };
                    group.readings.push((d.seq, bytes));
                }
                Err(rejection) => {
                    if rejection.identifies_reading() {
                        if let Ok(r) = Reading::decode(payload) {
                            tracking.arrived(&r, &self.metrics);
                        }
                    }
                    let reason = rejection.reason();
                    let detail = rejection.to_string();
                    tracing::debug!(reason, %detail, subject, raw_sequence = d.seq, "rejected; dead-lettering");
                    self.metrics.rejected(reason);
                    let why = Rejected {
                        reason,
                        detail: &detail,
                        source_subject: subject,
                        source_sequence: d.seq,
                    };
                    letters.push(publish::dead_letter(
                        why,
                        nats::dead_letter_msg_id(d.seq),
                        payload,
                    ));
                }
            }
        }
        (groups.into_values().collect(), letters)
    }

    /// Publishes a batch — one message per partition holding its readings through RAW sequence
    /// `last`, and the dead letters — until every reading is on READINGS once (see the module
    /// docs) or shutdown.
    async fn publish(
        &self,
        groups: Vec<Group>,
        mut letters: Vec<Outgoing>,
        last: u64,
        stored: &mut HashMap<u32, u64>,
        shutdown: &Shutdown,
    ) -> Result<(), PublishError> {
        let metrics = &self.metrics;
        let on_retry = |reason| metrics.retried(reason);
        // Per group: the RAW sequence after which its readings still have to be published.
        let mut after: Vec<u64> = groups
            .iter()
            .map(|g| stored.get(&g.partition).copied().unwrap_or(0))
            .collect();
        loop {
            // One message per partition per round, so a partition's messages stay in order.
            let mut out = Vec::new();
            let mut owner = Vec::new();
            for (i, g) in groups.iter().enumerate() {
                if let Some((m, through)) = g.message(after[i], last) {
                    out.push(m);
                    owner.push((i, through));
                }
            }
            let readings = out.len();
            out.append(&mut letters);
            if out.is_empty() {
                return Ok(());
            }
            let acks = publish_all(&self.js, &out, shutdown, &on_retry).await?;
            for (k, ack) in acks.iter().enumerate() {
                if k >= readings {
                    if ack.duplicate {
                        self.metrics.duplicate("dlq");
                    }
                    continue;
                }
                let (i, through) = owner[k];
                after[i] = if ack.duplicate {
                    self.metrics.duplicate("readings_batch");
                    let through = self.stored_through(ack, last, shutdown).await?;
                    let known = stored.entry(groups[i].partition).or_insert(0);
                    *known = (*known).max(through);
                    through
                } else {
                    through
                };
            }
        }
    }

    /// The `Citypulse-Raw-Last` of the stored batch a duplicate ack points at, read with
    /// retries; `last` (nothing left to publish) when the stored message has none.
    async fn stored_through(
        &self,
        ack: &PublishAck,
        last: u64,
        shutdown: &Shutdown,
    ) -> Result<u64, PublishError> {
        let mut backoff = Duration::from_millis(50);
        loop {
            match self.readings.get_raw_message(ack.sequence).await {
                Ok(m) => {
                    let through = m
                        .headers
                        .get(HEADER_RAW_LAST)
                        .and_then(|v| v.as_str().parse().ok());
                    if through.is_none() {
                        tracing::warn!(sequence = ack.sequence,
                            "stored READINGS batch without {HEADER_RAW_LAST}; taking it as complete");
                    }
                    return Ok(through.unwrap_or(last));
                }
                Err(e) => {
                    self.metrics.retried("read_stored_batch");
                    tracing::debug!(error = %e, sequence = ack.sequence, "cannot read a stored batch; retrying");
                }
            }
            if !crate::pause(&mut backoff, shutdown).await {
                return Err(PublishError::Cancelled {
                    subject: "READINGS".to_owned(),
                });
            }
        }
    }
}

/// The ingest clock, ms since the Unix epoch.
pub use citypulse_runtime::clock::now_ms;

#[cfg(test)]
mod tests {
    use super::*;

    /// A partition's 1,000 readings of 3,500 bytes (3.5 MB, over nats-server's 1 MiB message
    /// limit) go out as several messages under `MAX_BATCH_BYTES`, in order, each saying through
    /// which RAW sequence it holds the partition, the last one through the batch's end.
    #[test]
    fn a_group_beyond_one_message_is_cut_in_order() {
        let group = Group {
            partition: 3,
            district: "d00".into(),
            readings: (1..=1_000u64)
                .map(|seq| (seq * 2, Bytes::from(vec![seq as u8; 3_500])))
                .collect(),
        };
        let (mut after, mut got, mut ids) = (0, Vec::new(), Vec::new());
        while let Some((m, through)) = group.message(after, 2_005) {
            assert!(
                m.payload.len() <= batch::MAX_BATCH_BYTES + 9,
                "{}",
                m.payload.len()
            );
            let header = m.headers.get(HEADER_RAW_LAST).map(|v| v.to_string());
            assert_eq!(header, Some(through.to_string()));
            let items = batch::decode_batch(&m.payload).unwrap();
            assert_eq!(
                through,
                if got.len() + items.len() == 1_000 {
                    2_005
                } else {
                    (got.len() + items.len()) as u64 * 2
                }
            );
            got.extend(items.iter().map(|r| r.to_vec()));
            ids.push(m.msg_id);
            after = through;
        }
        let want: Vec<Vec<u8>> = group.readings.iter().map(|(_, r)| r.to_vec()).collect();
        assert!(got == want, "every reading once, in order");
        // 149 readings of 3,509 encoded bytes fit in 512 KiB: 7 messages.
        assert_eq!(ids.len(), 7);
        assert_eq!(ids[0], "batch:3:2");
        assert_eq!(ids[1], "batch:3:300");
    }
}
