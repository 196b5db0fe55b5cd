//! PURE: per-sensor sequence tracking — which recent `seq` of each sensor passed (to drop a
//! device's repeated reading before READINGS) and which readings a sensor numbered that never
//! arrived (a gap in `seq` is a lost reading: docs/wire-format.md, field `seq`).
//!
//! **When a reading is judged missing.** Per sensor, ingest keeps a [`SeqGuard`] (the newest
//! accepted `seq` and which of the 64 below it were seen) and a *floor*, the lowest `seq` seen
//! since the sensor was first tracked (or since its counter restarted). A number from the floor
//! up is counted missing once, when the guard stops tracking it unseen:
//!
//! - the window moves past it: a reading 64 or more above it arrived (a jump beyond the window
//!   counts every number that falls below the new window at once, the rest as they leave it), so
//!   reordering within 64 readings is never counted;
//! - the sensor's counter restarts ([`SeqGuard`]'s rule: a `seq` more than 64 below the newest
//!   with a newer event time): the holes of the abandoned window are counted; the jump back itself
//!   is not a gap;
//! - the sensor is evicted from the bounded map (least recently seen, at `--max-tracked-sensors`):
//!   the holes of its window are counted.
//!
//! A reading that arrives 64 or more readings behind its sensor's newest was already counted
//! missing; the guard cannot tell it from a repeat of an old reading, so ingest passes it on
//! ([`Admission::beyond_window`]; the archive's key and the processors' own guard absorb a real
//! repeat) and counts it as arrived after it was counted missing — never lost for being late. One that arrives after its sensor was evicted passes (the
//! sensor starts fresh) and stays counted. Numbers below the floor are never counted; gaps across
//! an ingest restart are not either (the map lives in memory only), so the count is a lower bound
//! over restarts. The validator loop also notes the `seq` of a reading rejected for its time or
//! values (it arrived); only a payload whose sensor and `seq` cannot be trusted stays untracked.
//!
//! **Bound.** At most `capacity` sensors; a new sensor beyond it evicts the least recently seen
//! one, in O(1): the sensors form a doubly linked list in recency order, threaded through a slab
//! by index. An evicted sensor starts fresh, so a repeat of one of its old readings would pass
//! ingest; the processors' own [`SeqGuard`] still drops it.

use citypulse_schema::seq::SeqGuard;
use citypulse_schema::Kind;
use std::collections::HashMap;
use std::sync::Arc;

/// No slot (end of the recency list).
const NIL: u32 = u32::MAX;

/// What a sensor's gaps are counted under: its kind and its district, the latter as an index the
/// caller chose (ingest's bounded table of district labels; 0 when the caller does not count
/// per district). Kept per tracked sensor, so an eviction's gaps are counted where the sensor's
/// readings were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Series {
    /// The sensor's kind.
    pub kind: Kind,
    /// The caller's index of the sensor's district.
    pub district: u16,
}

impl From<Kind> for Series {
    fn from(kind: Kind) -> Series {
        Series { kind, district: 0 }
    }
}

/// The largest capacity (slot indexes are `u32`, [`NIL`] excluded).
pub const MAX_CAPACITY: usize = 100_000_000;

/// Readings a sensor numbered that never arrived, judged missing by one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The sensor.
    pub sensor: Arc<str>,
    /// Its kind.
    pub kind: Kind,
    /// Its district, as the caller's index ([`Series::district`]).
    pub district: u16,
    /// How many readings.
    pub missed: u64,
    /// The sensor's newest `seq` once the gap was judged (before an eviction or a restart: the
    /// newest of the abandoned window).
    pub newest: u64,
    /// What judged it.
    pub cause: GapCause,
}

/// What judged a [`Gap`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapCause {
    /// The window moved past the missing numbers.
    Passed,
    /// The sensor's counter restarted; the holes of its old window.
    Restarted,
    /// The sensor was evicted; the holes of its window.
    Evicted,
}

/// What [`Recent::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// The reading is new (else a repeat: drop it, unless `beyond_window`).
    pub fresh: bool,
    /// Not fresh because it is 64 or more readings behind its sensor's newest: a repeat of an
    /// old reading or a reading that late, which the guard cannot tell apart.
    pub beyond_window: bool,
    /// Another sensor was evicted to make room for this one.
    pub evicted: bool,
}

/// One tracked sensor.
#[derive(Debug)]
struct Slot {
    sensor: Arc<str>,
    series: Series,
    guard: SeqGuard,
    /// Newest event time accepted (ms).
    newest_ts: u64,
    /// Lowest `seq` seen since tracked or restarted.
    floor: u64,
    /// Neighbours in recency order: `prev` more recent, `next` less recent.
    prev: u32,
    next: u32,
}

/// Per-sensor sequence tracking for at most `capacity` sensors (see the module docs).
#[derive(Debug)]
pub struct Recent {
    index: HashMap<Arc<str>, u32>,
    slots: Vec<Slot>,
    /// Most recently seen.
    head: u32,
    /// Least recently seen: the next to evict.
    tail: u32,
    capacity: usize,
}

impl Recent {
    /// An empty map for at most `capacity` sensors (clamped to 1..=[`MAX_CAPACITY`]).
    pub fn new(capacity: usize) -> Recent {
        Recent {
            index: HashMap::new(),
            slots: Vec::new(),
            head: NIL,
            tail: NIL,
            capacity: capacity.clamp(1, MAX_CAPACITY),
        }
    }

    /// Sensors tracked now.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no sensor is tracked.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether `sensor` is tracked.
    pub fn contains(&self, sensor: &str) -> bool {
        self.index.contains_key(sensor)
    }

    /// Whether `(sensor, seq)` at event time `ts` is new; pushes onto `gaps` what this reading
    /// (or the eviction it causes) judges missing. A sensor's `series` is the one of its first
    /// reading since it was tracked.
    pub fn admit(
        &mut self,
        sensor: &str,
        series: impl Into<Series>,
        seq: u64,
        ts: u64,
        gaps: &mut Vec<Gap>,
    ) -> Admission {
        let Some(&i) = self.index.get(sensor) else {
            let evicted = self.insert(sensor, series.into(), seq, ts, gaps);
            return Admission {
                fresh: true,
                beyond_window: false,
                evicted,
            };
        };
        self.touch(i);
        let slot = &mut self.slots[i as usize];
        let a = slot
            .guard
            .admit_counting(seq, ts > slot.newest_ts, slot.floor);
        if a.fresh {
            slot.newest_ts = slot.newest_ts.max(ts);
            slot.floor = if a.restarted {
                seq
            } else {
                slot.floor.min(seq)
            };
        }
        if a.missed > 0 {
            gaps.push(Gap {
                sensor: slot.sensor.clone(),
                kind: slot.series.kind,
                district: slot.series.district,
                missed: a.missed,
                newest: slot.guard.newest(),
                cause: if a.restarted {
                    GapCause::Restarted
                } else {
                    GapCause::Passed
                },
            });
        }
        Admission {
            fresh: a.fresh,
            beyond_window: a.beyond_window,
            evicted: false,
        }
    }

    /// Tracks a new sensor, evicting the least recently seen one when full; whether it evicted.
    fn insert(
        &mut self,
        sensor: &str,
        series: Series,
        seq: u64,
        ts: u64,
        gaps: &mut Vec<Gap>,
    ) -> bool {
        let slot = Slot {
            sensor: Arc::from(sensor),
            series,
            guard: SeqGuard::starting_at(seq),
            newest_ts: ts,
            floor: seq,
            prev: NIL,
            next: NIL,
        };
        let key = slot.sensor.clone();
        let full = self.slots.len() >= self.capacity;
        let i = if full {
            let i = self.tail;
            self.unlink(i);
            let old = std::mem::replace(&mut self.slots[i as usize], slot);
            self.index.remove(&old.sensor);
            let missed = old.guard.unseen_from(old.floor);
            if missed > 0 {
                gaps.push(Gap {
                    sensor: old.sensor,
                    kind: old.series.kind,
                    district: old.series.district,
                    missed,
                    newest: old.guard.newest(),
                    cause: GapCause::Evicted,
                });
            }
            i
        } else {
            // Below MAX_CAPACITY < u32::MAX, so the index fits.
            let i = u32::try_from(self.slots.len()).unwrap_or(NIL);
            self.slots.push(slot);
            i
        };
        self.index.insert(key, i);
        self.push_front(i);
        full
    }

    /// Moves slot `i` to the front of the recency list.
    fn touch(&mut self, i: u32) {
        if self.head != i {
            self.unlink(i);
            self.push_front(i);
        }
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = {
            let s = &self.slots[i as usize];
            (s.prev, s.next)
        };
        match prev {
            NIL => self.head = next,
            p => self.slots[p as usize].next = next,
        }
        match next {
            NIL => self.tail = prev,
            n => self.slots[n as usize].prev = prev,
        }
    }

    fn push_front(&mut self, i: u32) {
        let old = self.head;
        {
            let s = &mut self.slots[i as usize];
            s.prev = NIL;
            s.next = old;
        }
        match old {
            NIL => self.tail = i,
            h => self.slots[h as usize].prev = i,
        }
        self.head = i;
    }
}

/// The label of the districts beyond [`Districts::MAX`], and of index 0.
pub const OTHER_DISTRICT: &str = "(other)";

/// A bounded table of district labels for the missing-reading counter: the first
/// [`Districts::MAX`] districts ingest sees get an index of their own, every later one shares
/// index 0, labelled [`OTHER_DISTRICT`] (a district is any well-formed subject token a device
/// sends, so the table must not grow with what devices invent; a city has tens of districts).
#[derive(Debug)]
pub struct Districts {
    index: HashMap<Box<str>, u16>,
    names: Vec<Box<str>>,
}

impl Default for Districts {
    fn default() -> Districts {
        Districts {
            index: HashMap::new(),
            names: vec![OTHER_DISTRICT.into()],
        }
    }
}

impl Districts {
    /// Districts with a label of their own, at most.
    pub const MAX: usize = 1_000;

    /// The index of `district`, and whether it was new (its label is used for the first time).
    pub fn index(&mut self, district: &str) -> (u16, bool) {
        if let Some(&i) = self.index.get(district) {
            return (i, false);
        }
        if self.names.len() > Self::MAX {
            return (0, false);
        }
        // At most MAX + 1 < u16::MAX names.
        let i = u16::try_from(self.names.len()).unwrap_or(0);
        self.names.push(district.into());
        self.index.insert(district.into(), i);
        (i, true)
    }

    /// The label of index `i` ([`OTHER_DISTRICT`] for one it never gave).
    pub fn name(&self, i: u16) -> &str {
        self.names.get(usize::from(i)).map_or(OTHER_DISTRICT, |n| n)
    }
}

/// Sums gaps for the WARN log: at most one line per `every_ms` of processing time, naming the
/// largest gap since the last line (bounded however many sensors lose readings).
#[derive(Debug)]
pub struct GapLog {
    every_ms: u64,
    last_ms: Option<u64>,
    pending: GapSummary,
}

/// Gaps since the last log line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GapSummary {
    /// Readings judged missing.
    pub missed: u64,
    /// Gaps (events) they came in.
    pub gaps: u64,
    /// The largest of them.
    pub largest: Option<Gap>,
}

impl GapLog {
    /// A log that reports at most once per `every_ms`.
    pub fn new(every_ms: u64) -> GapLog {
        GapLog {
            every_ms,
            last_ms: None,
            pending: GapSummary::default(),
        }
    }

    /// Adds a gap to the next report.
    pub fn note(&mut self, gap: &Gap) {
        let p = &mut self.pending;
        p.missed = p.missed.saturating_add(gap.missed);
        p.gaps += 1;
        if p.largest.as_ref().is_none_or(|l| gap.missed > l.missed) {
            p.largest = Some(gap.clone());
        }
    }

    /// The report to log at `now_ms`, if there is something to say and the last one is at least
    /// `every_ms` old (the first one is due at once).
    pub fn due(&mut self, now_ms: u64) -> Option<GapSummary> {
        if self.pending.gaps == 0 {
            return None;
        }
        if let Some(last) = self.last_ms {
            if now_ms < last.saturating_add(self.every_ms) {
                return None;
            }
        }
        self.last_ms = Some(now_ms);
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests;
