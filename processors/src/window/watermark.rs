//! The partition's event-time watermark, with idle advance.

use serde::{Deserialize, Serialize};

/// The event-time watermark of one partition: the newest event time seen minus the allowed
/// lateness, never going back. A reading older than the watermark is late: every window it
/// belongs to may already be closed.
///
/// **Idle advance.** When no reading arrives for `idle_timeout` of processing time, the
/// watermark moves on as if event time kept flowing at wall speed since the last reading:
/// `newest − lateness + (now − last reading)`. So a quiet partition still closes its windows, and
/// a simulator replaying the past faster than real time is never overtaken by the wall clock
/// (which a jump to `now` would do). Processing time is a parameter, never read from a clock.
/// The idle clock is not checkpointed: after a restart it starts again from the first call, so
/// a backlog waiting in the stream is delivered before any idle advance.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Watermark {
    /// Newest event time of an accepted reading, ms.
    newest: Option<u64>,
    /// The watermark, ms; only grows.
    value: Option<u64>,
    /// Processing time of the last reading (of any outcome), ms; the idle clock.
    #[serde(skip)]
    last_activity_ms: Option<u64>,
}

/// Equal when the event-time state is; the idle clock is transient.
impl PartialEq for Watermark {
    fn eq(&self, other: &Watermark) -> bool {
        (self.newest, self.value) == (other.newest, other.value)
    }
}

impl Eq for Watermark {}

/// Why a reading is late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum LateReason {
    /// Older than newest event time − allowed lateness.
    BehindWatermark,
    /// Within the allowed lateness of the newest event time, but the watermark had moved on by
    /// idle advance.
    IdleAdvanced,
}

impl LateReason {
    /// Every reason, for pre-registering metric labels.
    pub const ALL: [LateReason; 2] = [LateReason::BehindWatermark, LateReason::IdleAdvanced];

    /// A bounded metric label.
    pub const fn reason(self) -> &'static str {
        match self {
            LateReason::BehindWatermark => "behind_watermark",
            LateReason::IdleAdvanced => "idle_advanced",
        }
    }
}

impl Watermark {
    /// No reading yet: no watermark, nothing is late.
    pub fn new() -> Watermark {
        Watermark::default()
    }

    /// The watermark, ms; `None` before the first reading.
    pub fn value(&self) -> Option<u64> {
        self.value
    }

    /// Whether a reading at `ts` is late, and why.
    pub fn lateness_of(&self, ts: u64, allowed_lateness_ms: u64) -> Option<LateReason> {
        let wm = self.value?;
        if ts >= wm {
            return None;
        }
        let by_events = self
            .newest
            .map_or(0, |n| n.saturating_sub(allowed_lateness_ms));
        Some(if ts >= by_events {
            LateReason::IdleAdvanced
        } else {
            LateReason::BehindWatermark
        })
    }

    /// Records processing activity (any reading), restarting the idle clock.
    pub fn touch(&mut self, now_ms: u64) {
        self.last_activity_ms = Some(now_ms);
    }

    /// Records an accepted reading at event time `ts`.
    pub fn observe(&mut self, ts: u64, allowed_lateness_ms: u64, now_ms: u64) {
        self.touch(now_ms);
        if self.newest.is_none_or(|n| ts > n) {
            self.newest = Some(ts);
        }
        self.raise(ts.saturating_sub(allowed_lateness_ms));
    }

    /// Idle advance at processing time `now_ms`; returns whether the watermark moved.
    pub fn advance_idle(
        &mut self,
        now_ms: u64,
        idle_timeout_ms: u64,
        allowed_lateness_ms: u64,
    ) -> bool {
        let Some(last) = self.last_activity_ms else {
            // First call after a start or a restore: the idle clock starts now.
            self.last_activity_ms = Some(now_ms);
            return false;
        };
        let idle = now_ms.saturating_sub(last);
        let Some(newest) = self.newest else {
            return false;
        };
        if idle < idle_timeout_ms {
            return false;
        }
        self.raise(
            newest
                .saturating_sub(allowed_lateness_ms)
                .saturating_add(idle),
        )
    }

    fn raise(&mut self, candidate: u64) -> bool {
        if self.value.is_none_or(|v| candidate > v) {
            self.value = Some(candidate);
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn watermark_is_newest_minus_lateness_and_never_goes_back() {
        let mut wm = Watermark::new();
        assert_eq!(wm.lateness_of(0, 30_000), None);
        wm.observe(100_000, 30_000, 0);
        assert_eq!(wm.value(), Some(70_000));
        wm.observe(90_000, 30_000, 1);
        assert_eq!(
            wm.value(),
            Some(70_000),
            "an older reading does not move it back"
        );
        assert_eq!(wm.lateness_of(70_000, 30_000), None);
        assert_eq!(
            wm.lateness_of(69_999, 30_000),
            Some(LateReason::BehindWatermark)
        );
    }

    #[test]
    fn idle_advance_follows_processing_time_since_the_last_reading() {
        let mut wm = Watermark::new();
        wm.observe(1_000_000, 30_000, 5_000);
        assert!(!wm.advance_idle(14_999, 10_000, 30_000), "not idle yet");
        assert!(wm.advance_idle(15_000, 10_000, 30_000));
        assert_eq!(wm.value(), Some(1_000_000 - 30_000 + 10_000));
        assert!(wm.advance_idle(65_000, 10_000, 30_000));
        assert_eq!(wm.value(), Some(1_000_000 - 30_000 + 60_000));
        // A reading that would have been on time without the idle advance says so.
        assert_eq!(
            wm.lateness_of(1_000_000, 30_000),
            Some(LateReason::IdleAdvanced)
        );
        // Any reading restarts the idle clock; the watermark holds until idle time catches up.
        wm.touch(70_000);
        assert!(!wm.advance_idle(100_000, 10_000, 30_000));
        assert_eq!(wm.value(), Some(1_030_000));
    }

    #[test]
    fn after_a_restore_the_idle_clock_starts_at_the_first_call() {
        let mut wm = Watermark::new();
        wm.observe(1_000_000, 30_000, 5_000);
        let mut restored: Watermark = ciborium::from_reader(&cbor(&wm)[..]).expect("decodes");
        assert_eq!(restored.value(), wm.value());
        assert!(!restored.advance_idle(900_000, 10_000, 30_000));
        assert!(!restored.advance_idle(909_999, 10_000, 30_000));
        assert!(restored.advance_idle(910_000, 10_000, 30_000));
    }

    fn cbor(wm: &Watermark) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::into_writer(wm, &mut out).expect("encodes");
        out
    }

    proptest! {
        #[test]
        fn the_watermark_never_goes_back(
            steps in proptest::collection::vec((any::<bool>(), 0u64..10_000_000, 0u64..100_000), 1..200),
        ) {
            let mut wm = Watermark::new();
            let mut now = 0;
            let mut last = None;
            for (idle, ts, dt) in steps {
                now += dt;
                if idle {
                    wm.advance_idle(now, 10_000, 30_000);
                } else {
                    wm.observe(ts, 30_000, now);
                }
                prop_assert!(wm.value() >= last, "{:?} after {:?}", wm.value(), last);
                last = wm.value();
            }
        }
    }
}
