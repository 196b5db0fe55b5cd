//! PURE: a partition's closed windows not yet published. Results closed by this process are
//! kept as [`WindowResult`]s and encoded only a slice at a time, when published, or when a
//! checkpoint has to carry them; entries read from a checkpoint are kept as they were written
//! (encoded) and go first. Why: the encoded form (subject, `Nats-Msg-Id`, CBOR payload) of a
//! window's results is about twice their in-memory size, and a large partition closes ~17,000
//! results per window; at 100,000 sensors, eight partitions' encoded outboxes were about a
//! third of the processors' peak heap (heaptrack, docs/benchmarks.md).

use crate::checkpoint::OutboxEntry;
use bytes::Bytes;
use citypulse_runtime::publish::Outgoing;
use citypulse_schema::WindowResult;
use std::collections::VecDeque;

/// Closed windows not yet published, oldest first.
#[derive(Debug, Default)]
pub struct Outbox {
    /// From the checkpoint this partition resumed from: published first.
    loaded: VecDeque<OutboxEntry>,
    /// Closed by this process since.
    closed: VecDeque<WindowResult>,
}

impl Outbox {
    /// The outbox of a checkpoint.
    pub fn loaded(entries: Vec<OutboxEntry>) -> Outbox {
        Outbox {
            loaded: entries.into(),
            closed: VecDeque::new(),
        }
    }

    /// Results not yet published.
    pub fn len(&self) -> usize {
        self.loaded.len() + self.closed.len()
    }

    /// Nothing to publish.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends closed windows' results, in order.
    pub fn extend(&mut self, closed: impl IntoIterator<Item = WindowResult>) {
        self.closed.extend(closed);
    }

    /// Every entry, encoded, oldest first: what a checkpoint carries.
    pub fn entries(&self) -> Vec<OutboxEntry> {
        let closed = self.closed.iter().map(OutboxEntry::of);
        self.loaded.iter().cloned().chain(closed).collect()
    }

    /// The next (at most) `n` results as messages to publish, oldest first, each in the epoch of
    /// its `window_end` ([`Outgoing::epoch`]: the publisher stores every result of one window
    /// end before any of the next, retries included); they stay in the outbox until
    /// [`Outbox::consume`].
    pub fn next_slice(&self, n: usize) -> Vec<Outgoing> {
        let loaded = self.loaded.iter().take(n).map(|e| {
            let payload = Bytes::from(e.payload.0.clone());
            let end = WindowResult::end_of_msg_id(&e.msg_id).unwrap_or(0);
            Outgoing::new(e.subject.clone(), e.msg_id.clone(), payload).in_epoch(end)
        });
        let rest = n.saturating_sub(self.loaded.len());
        let closed = self.closed.iter().take(rest).map(|w| {
            Outgoing::new(w.subject(), w.msg_id(), Bytes::from(w.encode())).in_epoch(w.window_end)
        });
        loaded.chain(closed).collect()
    }

    /// Drops the `n` oldest results (published), giving their memory back once empty.
    pub fn consume(&mut self, n: usize) {
        let from_loaded = n.min(self.loaded.len());
        self.loaded.drain(..from_loaded);
        self.closed
            .drain(..(n - from_loaded).min(self.closed.len()));
        if self.loaded.is_empty() {
            self.loaded = VecDeque::new();
        }
        if self.closed.is_empty() {
            self.closed = VecDeque::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use citypulse_schema::{TrafficMetrics, WindowMetrics};

    fn result(district: &str, start: u64) -> WindowResult {
        WindowResult {
            district: district.to_string(),
            sensor: None,
            window_start: start,
            window_end: start + 60_000,
            readings: 12,
            sensors: 1,
            metrics: WindowMetrics::Traffic(TrafficMetrics::default()),
        }
    }

    fn ids(out: &[Outgoing]) -> Vec<String> {
        out.iter().map(|o| o.msg_id.clone()).collect()
    }

    #[test]
    fn loaded_entries_go_first_then_closed_results_in_order_and_encoded_as_the_checkpoint_has_them()
    {
        let old = result("d01", 0);
        let mut outbox = Outbox::loaded(vec![OutboxEntry::of(&old)]);
        outbox.extend(vec![result("d02", 60_000), result("d03", 120_000)]);
        assert_eq!(outbox.len(), 3);

        let entries = outbox.entries();
        let want: Vec<OutboxEntry> = [old, result("d02", 60_000), result("d03", 120_000)]
            .iter()
            .map(OutboxEntry::of)
            .collect();
        assert_eq!(entries, want);

        // Every slice size gives the same messages, as the checkpoint lists them.
        for n in 1..=4 {
            let mut copy = Outbox::loaded(vec![entries[0].clone()]);
            copy.extend(vec![result("d02", 60_000), result("d03", 120_000)]);
            let mut published = Vec::new();
            while !copy.is_empty() {
                let slice = copy.next_slice(n);
                assert!(!slice.is_empty() && slice.len() <= n);
                copy.consume(slice.len());
                published.extend(slice);
            }
            let epochs: Vec<u64> = published.iter().map(|o| o.epoch).collect();
            assert_eq!(epochs, [60_000, 120_000, 180_000], "each its window end");
            let got: Vec<(String, String, Vec<u8>)> = published
                .into_iter()
                .map(|o| (o.subject, o.msg_id, o.payload.to_vec()))
                .collect();
            let want: Vec<(String, String, Vec<u8>)> = want
                .iter()
                .map(|e| (e.subject.clone(), e.msg_id.clone(), e.payload.0.clone()))
                .collect();
            assert_eq!(got, want, "slices of {n}");
        }
    }

    #[test]
    fn a_partly_published_outbox_keeps_what_was_not_consumed() {
        let mut outbox = Outbox::default();
        outbox.extend(
            (0..3)
                .map(|i| result("d01", i * 60_000))
                .collect::<Vec<_>>(),
        );
        outbox.extend(
            (3..5)
                .map(|i| result("d01", i * 60_000))
                .collect::<Vec<_>>(),
        );
        let first = outbox.next_slice(2);
        outbox.consume(first.len());
        assert_eq!(outbox.len(), 3);
        let rest = ids(&outbox.next_slice(10));
        let want: Vec<String> = (2..5).map(|i| result("d01", i * 60_000).msg_id()).collect();
        assert_eq!(rest, want);
        assert_eq!(
            outbox.entries().len(),
            3,
            "a checkpoint carries the unpublished"
        );
    }
}
