//! PURE: how long a stream's limits hold its input — the seconds of its current publish rate that
//! fit in its byte, message and age limits. That is the longest outage of its consumer that loses
//! nothing: a stream at a limit drops its oldest messages (or, with `discard: new`, refuses new
//! ones), read or not. At 100,000 sensors the default 1 GiB of RAW holds about 23 minutes
//! (docs/operations.md); this is what tells an operator so before an outage does.
//!
//! The rate is the stream's last sequence over a trailing span of looks (not its message count,
//! which stops rising at a limit); the bytes per message are the stream's average. The shell that
//! takes the looks and sets a gauge is [`crate::jetstream::watch_retention`].

use std::collections::VecDeque;
use std::time::Duration;

/// A stream's limits, as in its config: zero or less is none.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// `max_msgs`.
    pub max_messages: i64,
    /// `max_bytes`.
    pub max_bytes: i64,
    /// `max_age`; zero is none.
    pub max_age: Duration,
}

/// One look at a stream's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Look {
    /// When, on a monotonic clock (any origin).
    pub at: Duration,
    /// The stream's last sequence: every message ever stored, dropped ones included.
    pub last_seq: u64,
    /// Messages it holds.
    pub messages: u64,
    /// Their bytes, as the server counts them.
    pub bytes: u64,
}

/// The looks of a trailing span, and from them the horizon.
#[derive(Debug, Clone)]
pub struct Horizon {
    looks: VecDeque<Look>,
    span: Duration,
}

impl Horizon {
    /// Rates over the last `span` of looks.
    pub fn new(span: Duration) -> Self {
        Horizon {
            looks: VecDeque::new(),
            span,
        }
    }

    /// Adds a look. A sequence lower than the last look's (the stream was deleted and made
    /// anew, or purged with a new start) starts the span over; looks older than the span are
    /// dropped, keeping one at or before its start.
    pub fn observe(&mut self, look: Look) {
        if self
            .looks
            .back()
            .is_some_and(|l| look.last_seq < l.last_seq || look.at < l.at)
        {
            self.looks.clear();
        }
        self.looks.push_back(look);
        let start = look.at.saturating_sub(self.span);
        while self.looks.get(1).is_some_and(|l| l.at <= start) {
            self.looks.pop_front();
        }
    }

    /// Seconds of the current input that `limits` hold: the nearest of the age limit, the
    /// message limit over the rate, and the byte limit over the rate times the average message;
    /// infinite when no limit binds (none set, or nothing arriving). `None` until two looks
    /// apart in time.
    pub fn seconds(&self, limits: &Limits) -> Option<f64> {
        let (first, last) = (self.looks.front()?, self.looks.back()?);
        let elapsed = last.at.checked_sub(first.at)?.as_secs_f64();
        if elapsed <= 0.0 {
            return None;
        }
        // Counts to rates: precision loss is irrelevant for a gauge.
        #[allow(clippy::cast_precision_loss)]
        let rate = (last.last_seq - first.last_seq) as f64 / elapsed;
        #[allow(clippy::cast_precision_loss)]
        let per_message = if last.messages == 0 {
            0.0
        } else {
            last.bytes as f64 / last.messages as f64
        };
        #[allow(clippy::cast_precision_loss)]
        let over = |limit: i64, per_second: f64| {
            (limit > 0 && per_second > 0.0).then(|| limit as f64 / per_second)
        };
        let by_age = (!limits.max_age.is_zero()).then_some(limits.max_age.as_secs_f64());
        let nearest = [
            by_age,
            over(limits.max_messages, rate),
            over(limits.max_bytes, rate * per_message),
        ]
        .into_iter()
        .flatten()
        .fold(f64::INFINITY, f64::min);
        Some(nearest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: i64 = 1 << 30;
    const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);

    fn look(at_s: u64, last_seq: u64, messages: u64, bytes: u64) -> Look {
        Look {
            at: Duration::from_secs(at_s),
            last_seq,
            messages,
            bytes,
        }
    }

    fn limits(max_messages: i64, max_bytes: i64, max_age: Duration) -> Limits {
        Limits {
            max_messages,
            max_bytes,
            max_age,
        }
    }

    #[test]
    fn the_byte_limit_at_the_measured_rate_gives_raws_23_minutes_at_100000_sensors() {
        // docs/operations.md: 3,108 readings/s at 247 bytes each into RAW's default 1 GiB.
        let mut h = Horizon::new(Duration::from_secs(300));
        h.observe(look(0, 1_000_000, 1_000_000, 247_000_000));
        h.observe(look(100, 1_310_800, 1_310_800, 323_767_600));
        let s = h.seconds(&limits(-1, GIB, WEEK)).unwrap();
        let want = GIB as f64 / (3_108.0 * 247.0);
        assert!((s - want).abs() < 1e-6, "{s} against {want}");
        assert!(
            (1_380.0..1_420.0).contains(&s),
            "{s} s is not about 23 minutes"
        );
    }

    #[test]
    fn the_nearest_limit_wins() {
        let mut h = Horizon::new(Duration::from_secs(300));
        h.observe(look(0, 0, 0, 0));
        h.observe(look(10, 1_000, 1_000, 100_000)); // 100 messages/s of 100 bytes
                                                    // Bytes: 1 MB / 10 kB/s = 100 s; messages: 5,000 / 100 = 50 s; age: 60 s.
        let l = limits(5_000, 1_000_000, Duration::from_secs(60));
        assert_eq!(h.seconds(&l), Some(50.0));
        let l = limits(-1, 1_000_000, Duration::from_secs(60));
        assert_eq!(h.seconds(&l), Some(60.0));
        let l = limits(0, 1_000_000, Duration::ZERO);
        assert_eq!(h.seconds(&l), Some(100.0));
    }

    #[test]
    fn a_stream_at_its_limit_is_still_measured_by_its_sequence() {
        // The stream holds a constant 1,000 messages (dropping the oldest), yet 50 arrive a second.
        let mut h = Horizon::new(Duration::from_secs(300));
        h.observe(look(0, 10_000, 1_000, 1_000_000));
        h.observe(look(20, 11_000, 1_000, 1_000_000));
        assert_eq!(h.seconds(&limits(-1, 1_000_000, WEEK)), Some(20.0));
    }

    #[test]
    fn nothing_arriving_or_no_limit_is_infinite_and_one_look_is_unknown() {
        let mut h = Horizon::new(Duration::from_secs(300));
        h.observe(look(0, 500, 500, 50_000));
        assert_eq!(h.seconds(&limits(-1, GIB, WEEK)), None);
        h.observe(look(0, 500, 500, 50_000));
        assert_eq!(
            h.seconds(&limits(-1, GIB, WEEK)),
            None,
            "no time between the looks"
        );
        h.observe(look(30, 500, 500, 50_000));
        assert_eq!(
            h.seconds(&limits(-1, GIB, Duration::ZERO)),
            Some(f64::INFINITY)
        );
        assert_eq!(h.seconds(&limits(-1, GIB, WEEK)), Some(WEEK.as_secs_f64()));
        h.observe(look(60, 800, 800, 80_000));
        assert_eq!(
            h.seconds(&limits(-1, -1, Duration::ZERO)),
            Some(f64::INFINITY)
        );
    }

    #[test]
    fn the_rate_is_that_of_the_trailing_span() {
        let mut h = Horizon::new(Duration::from_secs(60));
        // A fast first minute (100/s), then 10/s: after two minutes only the slow one counts.
        h.observe(look(0, 0, 0, 0));
        h.observe(look(60, 6_000, 6_000, 600_000));
        h.observe(look(90, 6_300, 6_300, 630_000));
        h.observe(look(120, 6_600, 6_600, 660_000));
        assert_eq!(h.seconds(&limits(1_000, -1, Duration::ZERO)), Some(100.0));
        assert_eq!(h.looks.len(), 3, "{:?}", h.looks);
    }

    #[test]
    fn the_last_look_before_the_span_is_kept_as_its_edge() {
        // 100/s until 50 s, 20/s until 90 s, 10/s until 120 s. Over the minute from 60 s the
        // span runs from the look at 50 s (the last one before it): 1,100 in 70 s. Without that
        // edge it would run from 90 s (10/s); with every look, from 0 (6,100 in 120 s).
        let mut h = Horizon::new(Duration::from_secs(60));
        for (at, seq) in [(0, 0), (50, 5_000), (90, 5_800), (120, 6_100)] {
            h.observe(look(at, seq, seq, seq * 100));
        }
        let s = h.seconds(&limits(1_000, -1, Duration::ZERO)).unwrap();
        assert!((s - 1_000.0 * 70.0 / 1_100.0).abs() < 1e-9, "{s}");
    }

    #[test]
    fn a_stream_made_anew_starts_the_span_over() {
        let mut h = Horizon::new(Duration::from_secs(300));
        h.observe(look(0, 0, 0, 0));
        h.observe(look(10, 90_000, 90_000, 9_000_000));
        h.observe(look(20, 100, 100, 10_000)); // deleted and recreated
        assert_eq!(h.seconds(&limits(1_000, -1, Duration::ZERO)), None);
        h.observe(look(30, 200, 200, 20_000));
        assert_eq!(h.seconds(&limits(1_000, -1, Duration::ZERO)), Some(100.0));
    }
}
