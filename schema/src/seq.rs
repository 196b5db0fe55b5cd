//! Per-sensor duplicate detection by sequence number ([`SeqGuard`]): ingest drops a device's
//! repeated reading before READINGS, and the processors keep one per sensor in their state.

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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
