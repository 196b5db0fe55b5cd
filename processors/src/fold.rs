//! PURE: what one READINGS message does to a partition's state. A message is a batch of
//! readings (`readings.<p>.<district>.batch.v1`, ingest ≥ v0.2) or one reading stored by ingest
//! v0.1 under its sensor's subject (`readings.<p>.<district>.<kind>.<sensor>`); either way each
//! reading is checked to belong to the partition and fed to [`PartitionState::observe`].
//!
//! The live partition loop ([`crate::pipeline`]) and `replay` ([`crate::replay`]) both fold
//! through [`fold_message`], so a replay computes exactly what the live service computed from
//! the same messages. What the caller does with each outcome (count it, log it, dead-letter it)
//! is its own business: it receives them through a [`Folded`].

use crate::window::{Observed, PartitionState};
use bytes::Bytes;
use citypulse_schema::{batch, partition_of, Kind, Reading, SensorSubject};

/// A message, or one reading of a batch, refused before it reached the windowing core.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The reading's kind, when known.
    pub kind: Option<Kind>,
    /// Bounded reason (a metric label and the dead letter's subject token).
    pub reason: &'static str,
    /// One human line with the offending value.
    pub detail: String,
    /// Index of the reading within its batch; `None` for the whole message.
    pub item: Option<u32>,
    /// The refused bytes: the reading's, or the whole message's.
    pub body: Bytes,
}

/// A reading the core took, and what it said.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// The reading.
    pub reading: &'a Reading,
    /// Its bytes: a slice of the message's payload (`Bytes::slice_ref` gives them without a
    /// copy), the whole payload for a single reading.
    pub raw: &'a [u8],
    /// Its index within a batch; `None` for a single reading.
    pub item: Option<u32>,
    /// What [`PartitionState::observe`] said.
    pub observed: Observed,
    /// The watermark after it.
    pub watermark: Option<u64>,
}

/// Receives what became of each reading of a folded message.
pub trait Folded {
    /// A reading reached the core (an [`Observed::Rejected`] one is not reported again through
    /// [`Folded::refused`]).
    fn observed(&mut self, outcome: Outcome<'_>);
    /// A message or reading that never reached the core.
    fn refused(&mut self, refusal: Refusal);
}

/// The partition a message is folded into: `partition` of `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The partition's number.
    pub partition: u32,
    /// How many partitions READINGS has.
    pub count: u32,
}

/// Folds one READINGS message stored under `subject` into `state`, the state of partition
/// `slot`, at processing time `now_ms` (only the idle clock uses it).
pub fn fold_message(
    state: &mut PartitionState,
    slot: Slot,
    subject: &str,
    payload: &Bytes,
    now_ms: u64,
    out: &mut impl Folded,
) {
    let in_partition =
        subject.split('.').nth(1).and_then(|t| t.parse().ok()) == Some(slot.partition);
    let mut f = Fold {
        state,
        slot,
        now_ms,
        out,
    };
    if batch::is_batch_subject(subject) {
        f.batch(payload, in_partition);
    } else {
        f.single(subject, payload, in_partition);
    }
}

struct Fold<'a, F> {
    state: &'a mut PartitionState,
    slot: Slot,
    now_ms: u64,
    out: &'a mut F,
}

impl<F: Folded> Fold<'_, F> {
    fn refuse(
        &mut self,
        kind: Option<Kind>,
        reason: &'static str,
        detail: String,
        item: Option<u32>,
        body: Bytes,
    ) {
        self.out.refused(Refusal {
            kind,
            reason,
            detail,
            item,
            body,
        });
    }

    /// The readings of a batch, each checked to belong to this partition.
    fn batch(&mut self, payload: &Bytes, in_partition: bool) {
        if !in_partition {
            let detail = format!("batch is not in partition {}", self.slot.partition);
            self.refuse(None, "wrong_partition", detail, None, payload.clone());
            return;
        }
        let items = match batch::decode_batch(payload) {
            Ok(items) => items,
            Err(e) => {
                self.refuse(None, e.reason(), e.to_string(), None, payload.clone());
                return;
            }
        };
        for (i, item) in items.into_iter().enumerate() {
            let index = Some(u32::try_from(i).unwrap_or(u32::MAX));
            let body = || payload.slice_ref(item);
            let reading = match Reading::decode(item) {
                Ok(r) => r,
                Err(e) => {
                    self.refuse(None, e.reason(), e.to_string(), index, body());
                    continue;
                }
            };
            if partition_of(&reading.district, self.slot.count) != self.slot.partition {
                let detail = format!(
                    "district {} is not in partition {} of {}",
                    reading.district, self.slot.partition, self.slot.count
                );
                self.refuse(
                    Some(reading.kind()),
                    "wrong_partition",
                    detail,
                    index,
                    body(),
                );
                continue;
            }
            let observed = self.state.observe(&reading, self.now_ms);
            self.out.observed(Outcome {
                reading: &reading,
                raw: item,
                item: index,
                observed,
                watermark: self.state.watermark(),
            });
        }
    }

    /// A single reading stored by ingest v0.1 under its sensor's subject.
    fn single(&mut self, subject: &str, payload: &Bytes, in_partition: bool) {
        let claimed = match SensorSubject::parse_readings(subject) {
            Ok(s) => s,
            Err(e) => {
                self.refuse(None, "subject", e.to_string(), None, payload.clone());
                return;
            }
        };
        let own =
            in_partition && partition_of(&claimed.district, self.slot.count) == self.slot.partition;
        if !own {
            let detail = format!(
                "district {} is not in partition {} of {}",
                claimed.district, self.slot.partition, self.slot.count
            );
            let kind = Some(claimed.kind);
            self.refuse(kind, "wrong_partition", detail, None, payload.clone());
            return;
        }
        let reading = match Reading::decode(payload) {
            Ok(r) => r,
            Err(e) => {
                self.refuse(None, e.reason(), e.to_string(), None, payload.clone());
                return;
            }
        };
        if !reading.matches(&claimed) {
            let detail = format!(
                "payload of {} stored under {subject}",
                reading.claimed_subject()
            );
            let kind = Some(reading.kind());
            self.refuse(kind, "mismatch", detail, None, payload.clone());
            return;
        }
        let observed = self.state.observe(&reading, self.now_ms);
        self.out.observed(Outcome {
            reading: &reading,
            raw: payload,
            item: None,
            observed,
            watermark: self.state.watermark(),
        });
    }
}
