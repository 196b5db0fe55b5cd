//! Per-sensor duplicate detection by sequence number ([`SeqGuard`]): ingest drops a device's
//! repeated reading before READINGS, and the processors keep one per sensor in their state.
//! Ingest also counts the readings a sensor numbered that never arrived
//! ([`SeqGuard::admit_counting`]); a gap in `seq` is a lost reading (docs/wire-format.md,
//! field `seq`).

use serde::{Deserialize, Serialize};

/// Remembers which of a sensor's last 64 sequence numbers were accepted, so a reading delivered
/// twice (a device retry after the stream's duplicate window, a replay of RAW) is counted once.
///
/// Readings may arrive out of order within the window of 64. A sequence number more than 64
/// below the newest is a duplicate unless its event time is newer than every accepted reading
/// of the sensor: then the device restarted its counter, and the guard starts over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqGuard(
    /// Newest accepted sequence number.
    u64,
    /// Bit `i` set: `newest − i` was accepted.
    u64,
);

impl SeqGuard {
    /// A guard that has accepted `seq`.
    pub fn starting_at(seq: u64) -> SeqGuard {
        SeqGuard(seq, 1)
    }

    /// Admits `seq` unless it was seen; `newer_than_all` says whether the reading's event time is
    /// newer than every reading accepted so far.
    pub fn admit(&mut self, seq: u64, newer_than_all: bool) -> bool {
        let SeqGuard(newest, seen) = *self;
        if seq > newest {
            let shift = seq - newest;
            let kept = if shift >= 64 { 0 } else { seen << shift };
            *self = SeqGuard(seq, kept | 1);
            return true;
        }
        let back = newest - seq;
        if back < 64 {
            let bit = 1u64 << back;
            if seen & bit != 0 {
                return false;
            }
            self.1 |= bit;
            return true;
        }
        if newer_than_all {
            *self = SeqGuard::starting_at(seq);
            return true;
        }
        false
    }

    /// The newest accepted sequence number.
    pub fn newest(&self) -> u64 {
        self.0
    }

    /// Sequence numbers from `floor` up to the newest that the window still tracks and that were
    /// not seen: what leaves the window unseen if the guard is dropped now.
    pub fn unseen_from(&self, floor: u64) -> u64 {
        let SeqGuard(newest, seen) = *self;
        // Positions 0..=top (position i is `newest − i`) are tracked and not below `floor`.
        let top = newest.saturating_sub(floor).min(WINDOW - 1);
        u64::from((!seen & low_bits(top + 1)).count_ones())
    }

    /// [`admit`](Self::admit), which it leaves unchanged (same verdict, same state), plus the
    /// sequence numbers from `floor` on that this call judges missing: those that leave the
    /// 64-wide window unseen as it moves up to `seq` (the holes it drops off its bottom, and
    /// every number of a jump beyond it), or, when `seq` restarts the guard (a device counter
    /// restart, see [`SeqGuard`]), the holes of the window it abandons. The jump back of a
    /// restart is never a gap, and numbers below `floor` (the lowest the caller saw) never count.
    pub fn admit_counting(&mut self, seq: u64, newer_than_all: bool, floor: u64) -> Admitted {
        let SeqGuard(newest, seen) = *self;
        let (missed, restarted) = if seq > newest {
            let shift = seq - newest;
            // Positions 64 − shift ..= 63 drop off the bottom; `top` as in `unseen_from`.
            let top = newest.saturating_sub(floor).min(WINDOW - 1);
            let leaving = low_bits(top + 1) & !low_bits(WINDOW.saturating_sub(shift));
            let holes = u64::from((!seen & leaving).count_ones());
            // Numbers above the old newest (and from `floor`) already below the new window; a
            // jump beyond MAX_JUMP is a counter discontinuity (a corrupted or reset counter),
            // not that many lost readings.
            let jumped = if shift > MAX_JUMP {
                0
            } else {
                seq.saturating_sub(WINDOW - 1)
                    .saturating_sub((newest + 1).max(floor))
            };
            (holes + jumped, false)
        } else if newest - seq >= WINDOW && newer_than_all {
            (self.unseen_from(floor), true)
        } else {
            (0, false)
        };
        let beyond_window = seq <= newest && newest - seq >= WINDOW && !restarted;
        let fresh = self.admit(seq, newer_than_all);
        Admitted {
            fresh,
            missed,
            restarted,
            beyond_window,
        }
    }
}

/// Width of the window of recent sequence numbers.
const WINDOW: u64 = 64;

/// The largest forward jump of a sensor's `seq` whose skipped numbers [`SeqGuard::admit_counting`]
/// counts as missing: 65,536 readings, 22 days of a 30-second detector. A larger jump is a
/// discontinuity (a reset or corrupted counter): one bad `seq` must not report quintillions of
/// readings lost.
pub const MAX_JUMP: u64 = 65_536;

/// A mask of the lowest `n` bits (`n` ≤ 64).
fn low_bits(n: u64) -> u64 {
    if n >= WINDOW {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// What [`SeqGuard::admit_counting`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admitted {
    /// The reading is new (what [`SeqGuard::admit`] returns).
    pub fresh: bool,
    /// Sequence numbers judged missing by this call.
    pub missed: u64,
    /// The reading restarted the guard (a device counter restart).
    pub restarted: bool,
    /// Not fresh because it is 64 or more below the newest (and not a restart): the guard
    /// cannot tell a repeat from a reading that much late.
    pub beyond_window: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_beyond_max_jump_is_a_discontinuity_not_a_loss() {
        let mut g = SeqGuard::starting_at(10);
        let a = g.admit_counting(10 + MAX_JUMP, true, 10);
        assert!(a.fresh);
        assert_eq!(a.missed, MAX_JUMP - 64, "the largest counted jump");
        let mut g = SeqGuard::starting_at(10);
        let a = g.admit_counting(1 << 62, true, 10);
        assert!(a.fresh);
        assert_eq!(a.missed, 0, "only the window's own holes, none here");
    }

    #[test]
    fn duplicates_are_refused_and_reordering_is_not() {
        let mut g = SeqGuard::starting_at(10);
        assert!(!g.admit(10, false), "same seq again");
        assert!(g.admit(12, true));
        assert!(g.admit(11, false), "late but new");
        assert!(!g.admit(11, false));
        assert!(g.admit(200, true), "a gap");
        assert!(
            !g.admit(12, false),
            "far below the newest and not newer: duplicate"
        );
        assert!(
            g.admit(3, true),
            "far below but newer than all: the counter restarted"
        );
        assert!(!g.admit(3, true));
        assert!(g.admit(4, true));
    }

    /// `admit_counting` on readings `seqs` (never newer than all, so no restart) from a guard
    /// started at the first: the missed count of each later call.
    fn missed_per_call(seqs: &[u64], floor: u64) -> Vec<u64> {
        let mut g = SeqGuard::starting_at(seqs[0]);
        seqs[1..]
            .iter()
            .map(|&s| g.admit_counting(s, false, floor).missed)
            .collect()
    }

    #[test]
    fn in_order_and_reordered_within_the_window_miss_nothing() {
        let seqs: Vec<u64> = (5..300).collect();
        assert!(missed_per_call(&seqs, 5).iter().all(|&m| m == 0));
        // Pairs swapped, and one reading 63 behind: all within the window.
        let mut seqs: Vec<u64> = (0..200).collect();
        for pair in seqs.chunks_mut(2) {
            pair.swap(0, 1);
        }
        seqs.retain(|&s| s != 100);
        seqs.insert(163, 100);
        assert!(missed_per_call(&seqs, 0).iter().all(|&m| m == 0));
    }

    #[test]
    fn a_hole_is_counted_once_when_it_leaves_the_window() {
        let mut g = SeqGuard::starting_at(0);
        let mut total = 0;
        let mut counted_at = Vec::new();
        for s in (1..=200).filter(|s| !(10..13).contains(s)) {
            let a = g.admit_counting(s, true, 0);
            assert!(a.fresh && !a.restarted);
            if a.missed > 0 {
                counted_at.push((s, a.missed));
            }
            total += a.missed;
        }
        // 10, 11 and 12 leave the window when 74, 75 and 76 arrive.
        assert_eq!(counted_at, vec![(74, 1), (75, 1), (76, 1)]);
        assert_eq!(total, 3);
    }

    #[test]
    fn a_jump_counts_what_falls_below_the_new_window_at_once() {
        let mut g = SeqGuard::starting_at(10);
        let a = g.admit_counting(1010, true, 10);
        // 11..=946 are below the new window [947, 1010]; 947..=1009 may still come.
        assert_eq!(
            a,
            Admitted {
                fresh: true,
                missed: 936,
                restarted: false,
                beyond_window: false
            }
        );
        assert_eq!(g.unseen_from(10), 63);
        assert_eq!(
            g.admit_counting(1000, false, 10).missed,
            0,
            "late but in the window"
        );
        assert_eq!(g.admit_counting(1074, true, 10).missed, 62);
    }

    #[test]
    fn a_counter_restart_is_no_gap_but_flushes_the_old_window() {
        let mut g = SeqGuard::starting_at(500);
        for s in [501, 502, 505] {
            assert_eq!(g.admit_counting(s, true, 500).missed, 0);
        }
        // Back to 0 with a newer event time: the counter restarted. 503 and 504 never came.
        let a = g.admit_counting(0, true, 500);
        assert_eq!(
            a,
            Admitted {
                fresh: true,
                missed: 2,
                restarted: true,
                beyond_window: false
            }
        );
        assert_eq!(g, SeqGuard::starting_at(0));
        assert_eq!(g.admit_counting(1, true, 0).missed, 0);
    }

    #[test]
    fn duplicates_and_stale_readings_below_the_window_count_nothing() {
        let mut g = SeqGuard::starting_at(0);
        for s in 1..100 {
            g.admit_counting(s, true, 0);
        }
        assert_eq!(
            g.admit_counting(99, false, 0),
            Admitted {
                fresh: false,
                missed: 0,
                restarted: false,
                beyond_window: false
            }
        );
        assert!(!g.admit_counting(70, false, 0).fresh);
        assert_eq!(
            g.admit_counting(3, false, 0),
            Admitted {
                fresh: false,
                missed: 0,
                restarted: false,
                // 96 below the newest: a repeat or that late, the guard cannot tell.
                beyond_window: true
            }
        );
    }

    #[test]
    fn numbers_below_the_floor_never_count() {
        // First seen: 1000. Nothing below it was ever numbered as far as we know.
        let mut g = SeqGuard::starting_at(1000);
        assert_eq!(g.admit_counting(1200, true, 1000).missed, 199 - 63);
        assert_eq!(g.unseen_from(1000), 63);
        // A guard started near 0 (no wrap below zero).
        let mut g = SeqGuard::starting_at(2);
        assert_eq!(g.admit_counting(3, true, 2).missed, 0);
        assert_eq!(g.unseen_from(0), 2, "0 and 1 when the floor is 0");
        assert_eq!(g.unseen_from(2), 0);
    }

    proptest::proptest! {
        /// `admit_counting` gives `admit`'s verdict and leaves the same state.
        #[test]
        fn admit_counting_behaves_as_admit(
            start in 0u64..1000,
            ops in proptest::collection::vec((0u64..1300, proptest::bool::ANY), 1..200),
        ) {
            let mut plain = SeqGuard::starting_at(start);
            let mut counting = plain;
            for (seq, newer) in ops {
                let want = plain.admit(seq, newer);
                let got = counting.admit_counting(seq, newer, start.min(counting.newest()));
                proptest::prop_assert_eq!(got.fresh, want);
                proptest::prop_assert_eq!(counting, plain);
            }
        }

        /// Against a naive model: the numbers a call judges missing are exactly those from the
        /// floor that were tracked before, unseen, and are no longer tracked after.
        #[test]
        fn missed_equals_the_naive_count(
            start in 0u64..200,
            ops in proptest::collection::vec(0u64..400, 1..100),
        ) {
            let mut g = SeqGuard::starting_at(start);
            let floor = start;
            for seq in ops {
                let before = g;
                let a = g.admit_counting(seq, false, floor);
                let tracked_unseen = |h: &SeqGuard, x: u64| {
                    x <= h.newest() && h.newest() - x < 64 && h.1 & (1 << (h.newest() - x)) == 0
                };
                let naive = (floor..=seq.max(before.newest()))
                    .filter(|&x| {
                        let was = tracked_unseen(&before, x) || x > before.newest();
                        let still = x > g.newest() || g.newest() - x < 64;
                        was && !still
                    })
                    .count() as u64;
                proptest::prop_assert_eq!(a.missed, naive, "{:?} + {}", before, seq);
            }
        }
    }
}
