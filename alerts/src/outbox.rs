//! The alert-history outbox: rows waiting for PostgreSQL, numbered in order, held once.
//!
//! The pipeline appends a row for every transition, acknowledgement and silence and writes the
//! outbox into its checkpoint (so a crash loses none); the store's writer reads batches from it
//! and removes what PostgreSQL has committed. It is the only buffer between the two: while
//! PostgreSQL is down it grows to its cap (`--history-outbox-cap`, 100,000 rows of a few hundred
//! bytes by default) and then drops its oldest rows, counted, rather than stall alert delivery
//! or grow without bound.

use crate::store::Row;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

/// What [`Outbox::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The row's number.
    pub serial: u64,
    /// Whether the oldest row was dropped to make room.
    pub dropped_oldest: bool,
}

#[derive(Debug, Default)]
struct Rows {
    queue: VecDeque<(u64, Row)>,
    next_serial: u64,
}

/// Shared handle; clones see the same rows.
#[derive(Debug, Clone)]
pub struct Outbox {
    rows: Arc<Mutex<Rows>>,
    pushed: Arc<Notify>,
    cap: usize,
}

impl Outbox {
    /// An empty outbox holding at most `cap` rows (at least 1).
    pub fn new(cap: usize) -> Outbox {
        Outbox {
            rows: Arc::default(),
            pushed: Arc::new(Notify::new()),
            cap: cap.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Rows> {
        // Nothing panics while holding the lock; a poisoned lock still holds consistent rows.
        self.rows.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the rows with a checkpoint's (uncommitted rows and the next number).
    pub fn restore(&self, queue: VecDeque<(u64, Row)>, next_serial: u64) {
        let mut rows = self.lock();
        let newest = queue.back().map_or(0, |(s, _)| *s);
        rows.queue = queue;
        rows.next_serial = next_serial.max(newest);
        while rows.queue.len() > self.cap {
            rows.queue.pop_front();
        }
        drop(rows);
        self.pushed.notify_one();
    }

    /// Appends `row` with the next number; drops the oldest row when full.
    pub fn push(&self, row: Row) -> Pushed {
        let mut rows = self.lock();
        rows.next_serial += 1;
        let serial = rows.next_serial;
        rows.queue.push_back((serial, row));
        let dropped_oldest = rows.queue.len() > self.cap;
        if dropped_oldest {
            rows.queue.pop_front();
        }
        drop(rows);
        self.pushed.notify_one();
        Pushed {
            serial,
            dropped_oldest,
        }
    }

    /// Up to `max` of the oldest rows, copied (the writer's next batch).
    pub fn oldest(&self, max: usize) -> Vec<(u64, Row)> {
        self.lock().queue.iter().take(max).cloned().collect()
    }

    /// Removes every row numbered `through` or lower (committed by PostgreSQL).
    pub fn commit(&self, through: u64) {
        let mut rows = self.lock();
        while rows.queue.front().is_some_and(|(s, _)| *s <= through) {
            rows.queue.pop_front();
        }
    }

    /// The most rows it holds.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Rows waiting.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether no row is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with the waiting rows and the last number given out (for the checkpoint).
    pub fn with_rows<R>(&self, f: impl FnOnce(&VecDeque<(u64, Row)>, u64) -> R) -> R {
        let rows = self.lock();
        f(&rows.queue, rows.next_serial)
    }

    /// Resolves once a row has been pushed since the last call returned (or at once if one was
    /// pushed while nobody waited).
    pub async fn pushed(&self) {
        self.pushed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Ack;

    fn row(n: u64) -> Row {
        Row::Ack(Ack {
            id: format!("a{n}"),
            by: "op".to_owned(),
            comment: String::new(),
            at: n,
        })
    }

    fn serials(o: &Outbox) -> Vec<u64> {
        o.with_rows(|q, _| q.iter().map(|(s, _)| *s).collect())
    }

    #[test]
    fn rows_are_numbered_in_order_and_removed_once_committed() {
        let o = Outbox::new(10);
        for n in 1..=5 {
            assert_eq!(o.push(row(n)).serial, n);
        }
        let batch = o.oldest(3);
        assert_eq!(batch.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(batch[0].1, row(1));
        o.commit(3);
        assert_eq!(serials(&o), [4, 5]);
        o.commit(2);
        assert_eq!(
            o.len(),
            2,
            "committing an older number removes nothing more"
        );
    }

    #[test]
    fn a_full_outbox_drops_its_oldest_rows_and_never_grows_past_its_cap() {
        let o = Outbox::new(3);
        let dropped: Vec<bool> = (1..=5).map(|n| o.push(row(n)).dropped_oldest).collect();
        assert_eq!(dropped, [false, false, false, true, true]);
        assert_eq!(serials(&o), [3, 4, 5]);
        // A commit of rows already dropped is harmless.
        o.commit(3);
        assert_eq!(serials(&o), [4, 5]);
    }

    #[test]
    fn a_restored_outbox_continues_the_numbering() {
        let o = Outbox::new(10);
        o.restore(VecDeque::from([(7, row(7)), (8, row(8))]), 8);
        assert_eq!(o.push(row(9)).serial, 9);
        assert_eq!(serials(&o), [7, 8, 9]);
        // An older checkpoint format without a number continues after its newest row.
        let o = Outbox::new(10);
        o.restore(VecDeque::from([(4, row(4))]), 0);
        assert_eq!(o.push(row(5)).serial, 5);
        o.with_rows(|_, next| assert_eq!(next, 5));
    }

    #[tokio::test]
    async fn a_push_wakes_the_writer_even_before_it_waits() {
        let o = Outbox::new(10);
        o.push(row(1));
        tokio::time::timeout(std::time::Duration::from_secs(5), o.pushed())
            .await
            .expect("the stored wake-up");
    }
}
