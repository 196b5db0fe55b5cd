//! PURE: when a consumer that acks after a checkpoint writes that checkpoint (and so acks its
//! inputs). Time is passed in. One schedule for every service that checkpoints (a processors
//! partition, the alerts evaluator):
//!
//! - every `interval` while messages arrive;
//! - [`CAUGHT_UP`] after the last checkpoint once a backlog drains, so that a drained backlog
//!   shows as drained (acked) within about a second — once: a consumer that stays caught up goes
//!   back to the interval instead of rewriting its whole state every second (at 100,000 sensors
//!   that was up to 16 MB of CBOR a second for nats-server to store, `scripts/soak`);
//! - at once when a backlog that took at least [`CAUGHT_UP`] to drain is drained: after a
//!   restart or an outage, the consumer shows as caught up the moment it is, not up to a second
//!   later. Live traffic comes in short bursts, each drained within milliseconds; those wait for
//!   [`CAUGHT_UP`] as above, so a live consumer still checkpoints at most about once a second;
//! - [`CAUGHT_UP`] after the last message taken when nothing more came: a live consumer whose
//!   every batch found it caught up (so never drained a backlog) but whose stream then went
//!   quiet — the end of a burst, a city at night — acks what it holds within about a second,
//!   not at the next interval. Messages arriving more often than that keep it on the interval.
//!
//! The service may force one besides (processors: before publishing windows closed by idle
//! advance, and at 50,000 unacked messages; alerts: every `--checkpoint-every` results).

use std::time::{Duration, Instant};

/// How soon after the last checkpoint a drained backlog is checkpointed; also how long a
/// backlog must have lasted to be checkpointed the moment it drains.
pub const CAUGHT_UP: Duration = Duration::from_secs(1);

/// The checkpoint schedule of one consumer.
#[derive(Debug, Clone)]
pub struct Cadence {
    interval: Duration,
    last: Instant,
    /// The last checkpoint included everything handed out with the backlog drained, and the
    /// backlog has stayed drained since.
    settled: bool,
    /// When the consumer was first seen behind (not caught up) since it was last caught up.
    behind_since: Option<Instant>,
    /// A backlog of at least [`CAUGHT_UP`] drained, and no complete checkpoint has settled it.
    long_drain: bool,
    /// When the newest message taken since the last checkpoint was taken ([`Cadence::taken`]);
    /// `None` when none was.
    newest: Option<Instant>,
}

impl Cadence {
    /// A schedule whose interval starts at `now`.
    pub fn new(interval: Duration, now: Instant) -> Cadence {
        Cadence {
            interval,
            last: now,
            settled: false,
            behind_since: None,
            long_drain: false,
            newest: None,
        }
    }

    /// Messages were taken at `now` (to be included in the next checkpoint).
    pub fn taken(&mut self, now: Instant) {
        self.newest = Some(now);
    }

    /// When the messages taken since the last checkpoint have been quiet for [`CAUGHT_UP`].
    fn quiet_at(&self) -> Option<Instant> {
        self.newest.map(|t| t + CAUGHT_UP)
    }

    /// Whether a checkpoint is due at `now`; `caught_up`: the last message handed out was the
    /// newest the consumer had.
    pub fn due(&mut self, now: Instant, caught_up: bool) -> bool {
        if caught_up {
            if let Some(since) = self.behind_since.take() {
                self.long_drain |= now.saturating_duration_since(since) >= CAUGHT_UP;
            }
        } else {
            self.settled = false;
            self.behind_since.get_or_insert(now);
        }
        let since = now.saturating_duration_since(self.last);
        since >= self.interval
            || (caught_up && !self.settled && (self.long_drain || since >= CAUGHT_UP))
            || (caught_up && self.quiet_at().is_some_and(|at| now >= at))
    }

    /// When [`Cadence::due`] turns true at the latest if nothing else changes: for a timer that
    /// checks while no message arrives. `caught_up` as for [`Cadence::due`].
    pub fn deadline(&self, caught_up: bool) -> Instant {
        let scheduled = if caught_up && !self.settled {
            if self.long_drain {
                return self.last;
            }
            self.last + CAUGHT_UP.min(self.interval)
        } else {
            self.last + self.interval
        };
        match self.quiet_at() {
            Some(at) if caught_up => scheduled.min(at),
            _ => scheduled,
        }
    }

    /// A checkpoint was written at `now`, of everything taken before it.
    pub fn written(&mut self, now: Instant) {
        self.last = now;
        self.newest = None;
    }

    /// A checkpoint failed at `now`: the next try is [`CAUGHT_UP`] later (or at the interval), not
    /// at once, whatever drained.
    pub fn failed(&mut self, now: Instant) {
        self.last = now;
        self.long_drain = false;
        if self.newest.is_some() {
            self.newest = Some(now);
        }
    }

    /// After a checkpoint of the schedule: `caught_up` as for [`Cadence::due`]; `complete`: it
    /// includes every message handed out. One taken within a batch (a window closed there) is
    /// not complete, so the batch's rest is checkpointed [`CAUGHT_UP`] later (at once after a
    /// long backlog), not at the interval.
    pub fn settle(&mut self, caught_up: bool, complete: bool) {
        self.settled = caught_up && complete;
        if self.settled {
            self.long_drain = false;
        }
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
    fn a_drained_burst_checkpoints_a_second_after_the_last_once_then_at_the_interval() {
        let t0 = Instant::now();
        let mut c = Cadence::new(INTERVAL, t0);
        // A short burst (behind for 200 ms) drains.
        assert!(!c.due(at(t0, 300), false));
        assert!(!c.due(at(t0, 500), true));
        assert_eq!(c.deadline(true), at(t0, 1_000));
        assert!(c.due(at(t0, 1_000), true));
        c.written(at(t0, 1_000));
        c.settle(true, true);
        // Still caught up (live): the interval, not every second.
        assert_eq!(c.deadline(true), at(t0, 6_000));
        assert!(!c.due(at(t0, 2_100), true));
        assert!(!c.due(at(t0, 5_900), true));
        assert!(c.due(at(t0, 6_000), true));
        c.written(at(t0, 6_000));
        c.settle(true, true);
        // A new burst unsettles: once drained, a second after the last checkpoint again.
        assert!(!c.due(at(t0, 6_500), false));
        assert!(!c.due(at(t0, 6_600), true));
        assert!(c.due(at(t0, 7_000), true));
    }

    #[test]
    fn a_backlog_that_took_a_second_to_drain_checkpoints_the_moment_it_drains() {
        let t0 = Instant::now();
        let mut c = Cadence::new(INTERVAL, t0);
        // Draining a backlog; a forced checkpoint (every N messages) on the way.
        assert!(!c.due(at(t0, 100), false));
        c.written(at(t0, 1_000));
        c.settle(false, true);
        assert!(!c.due(at(t0, 1_200), false));
        // Drained 1.2 s after it was first seen behind, 200 ms after the last checkpoint: due.
        assert!(c.due(at(t0, 1_200), true));
        assert_eq!(c.deadline(true), at(t0, 1_000));
        c.written(at(t0, 1_200));
        c.settle(true, true);
        // Settled: back to the interval.
        assert!(!c.due(at(t0, 1_300), true));
        assert!(!c.due(at(t0, 2_300), true));
        assert_eq!(c.deadline(true), at(t0, 6_200));
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

    #[test]
    fn after_a_long_backlog_an_incomplete_checkpoint_leaves_the_rest_due_at_once() {
        let t0 = Instant::now();
        let mut c = Cadence::new(INTERVAL, t0);
        assert!(!c.due(at(t0, 0), false));
        assert!(c.due(at(t0, 3_000), true));
        c.written(at(t0, 3_000));
        c.settle(true, false);
        assert!(c.due(at(t0, 3_010), true));
        c.written(at(t0, 3_010));
        c.settle(true, true);
        assert!(!c.due(at(t0, 3_020), true));
    }

    /// Settled at 1 s: a consumer caught up, with a complete checkpoint.
    fn settled_live(t0: Instant) -> Cadence {
        let mut c = Cadence::new(INTERVAL, t0);
        assert!(c.due(at(t0, 1_000), true));
        c.written(at(t0, 1_000));
        c.settle(true, true);
        c
    }

    #[test]
    fn a_live_consumer_whose_stream_goes_quiet_checkpoints_a_second_after_its_last_message() {
        let t0 = Instant::now();
        let mut c = settled_live(t0);
        // Live: every batch finds it caught up; then nothing more after 2.4 s.
        for ms in [2_000, 2_400] {
            assert!(!c.due(at(t0, ms), true));
            c.taken(at(t0, ms));
        }
        assert_eq!(c.deadline(true), at(t0, 3_400));
        assert!(!c.due(at(t0, 3_399), true));
        assert!(c.due(at(t0, 3_400), true));
        c.written(at(t0, 3_400));
        c.settle(true, true);
        // Nothing taken since: the interval.
        assert!(!c.due(at(t0, 5_000), true));
        assert_eq!(c.deadline(true), at(t0, 8_400));
    }

    #[test]
    fn messages_more_often_than_a_second_keep_a_live_consumer_on_the_interval() {
        let t0 = Instant::now();
        let mut c = settled_live(t0);
        for ms in (1_500..6_000).step_by(500) {
            assert!(!c.due(at(t0, ms), true), "due at {ms} ms");
            c.taken(at(t0, ms));
        }
        assert!(c.due(at(t0, 6_000), true));
    }

    #[test]
    fn a_failed_checkpoint_of_a_quiet_consumer_is_retried_a_second_later() {
        let t0 = Instant::now();
        let mut c = settled_live(t0);
        c.taken(at(t0, 2_000));
        assert!(c.due(at(t0, 3_000), true));
        c.failed(at(t0, 3_000));
        assert!(!c.due(at(t0, 3_010), true));
        assert_eq!(c.deadline(true), at(t0, 4_000));
        assert!(c.due(at(t0, 4_000), true));
    }

    #[test]
    fn a_failed_checkpoint_is_retried_a_second_later_not_at_once() {
        let t0 = Instant::now();
        let mut c = Cadence::new(INTERVAL, t0);
        assert!(!c.due(at(t0, 0), false));
        assert!(c.due(at(t0, 2_000), true));
        c.failed(at(t0, 2_000));
        assert_eq!(c.deadline(true), at(t0, 3_000));
        assert!(!c.due(at(t0, 2_010), true));
        assert!(c.due(at(t0, 3_000), true));
    }
}
