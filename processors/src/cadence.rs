//! PURE: when a partition writes its checkpoint (and so acks its inputs). Time is passed in.
//!
//! - every `--checkpoint-interval` while readings arrive;
//! - [`CAUGHT_UP`] after a backlog drains, so that a drained backlog shows as drained (acked)
//!   within about a second — once: a partition that stays caught up goes back to the interval
//!   instead of rewriting its whole state every second (at 100,000 sensors that was up to 16 MB
//!   of CBOR a second for nats-server to store, `scripts/soak`);
//! - besides, the pipeline forces one before publishing windows closed by idle advance, and at
//!   50,000 unacked messages.

use std::time::{Duration, Instant};

/// How soon after a backlog drains the partition checkpoints.
pub const CAUGHT_UP: Duration = Duration::from_secs(1);

/// The checkpoint schedule of one partition.
#[derive(Debug, Clone)]
pub struct Cadence {
    interval: Duration,
    last: Instant,
    /// The last checkpoint included everything handed out with the backlog drained, and the
    /// backlog has stayed drained since.
    settled: bool,
}

impl Cadence {
    /// A schedule whose interval starts at `now`.
    pub fn new(interval: Duration, now: Instant) -> Cadence {
        Cadence {
            interval,
            last: now,
            settled: false,
        }
    }

    /// Whether a checkpoint is due at `now`; `caught_up`: the last message handed out was the
    /// newest the consumer had.
    pub fn due(&mut self, now: Instant, caught_up: bool) -> bool {
        self.settled &= caught_up;
        let since = now.saturating_duration_since(self.last);
        since >= self.interval || (caught_up && !self.settled && since >= CAUGHT_UP)
    }

    /// A checkpoint was written at `now`.
    pub fn written(&mut self, now: Instant) {
        self.last = now;
    }

    /// After a checkpoint of the schedule: `caught_up` as for [`Cadence::due`]; `complete`: it
    /// includes every message handed out. One taken within a batch (a window closed there) is
    /// not complete, so the batch's rest is checkpointed [`CAUGHT_UP`] later, not at the interval.
    pub fn settle(&mut self, caught_up: bool, complete: bool) {
        self.settled = caught_up && complete;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INTERVAL: Duration = Duration::from_secs(5);

    fn at(t0: Instant, ms: u64) -> Instant {
        t0 + Duration::from_millis(ms)
    }

    #[test]
    fn a_drained_backlog_checkpoints_after_a_second_once_then_at_the_interval() {
        let t0 = Instant::now();
        let mut c = Cadence::new(INTERVAL, t0);
        // Draining a backlog: only the interval.
        assert!(!c.due(at(t0, 3_000), false));
        // Drained: a second after the last checkpoint.
        assert!(!c.due(at(t0, 500), true));
        assert!(c.due(at(t0, 3_000), true));
        c.written(at(t0, 3_000));
        c.settle(true, true);
        // Still caught up (live): the interval, not every second.
        assert!(!c.due(at(t0, 4_100), true));
        assert!(!c.due(at(t0, 7_900), true));
        assert!(c.due(at(t0, 8_000), true));
        c.written(at(t0, 8_000));
        c.settle(true, true);
        // A new backlog unsettles: once drained, a second again.
        assert!(!c.due(at(t0, 8_500), false));
        assert!(c.due(at(t0, 9_100), true));
    }

    #[test]
    fn a_checkpoint_within_the_draining_batch_leaves_the_rest_for_a_second_later() {
        let t0 = Instant::now();
        let mut c = Cadence::new(INTERVAL, t0);
        // The batch that drains the backlog closes a window halfway: checkpoint there.
        assert!(c.due(at(t0, 1_500), true));
        c.written(at(t0, 1_500));
        c.settle(true, false);
        // The end of the same batch: not yet a second.
        assert!(!c.due(at(t0, 1_600), true));
        // A second later the rest is checkpointed (and acked), not at the interval.
        assert!(c.due(at(t0, 2_500), true));
    }
}
