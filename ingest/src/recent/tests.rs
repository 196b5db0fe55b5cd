//! The counting rules, table by table, and their invariants as properties.

use super::*;
use proptest::prelude::*;

const T: Kind = Kind::Traffic;

/// Feeds `seqs` of one sensor (event time rising with each reading) into `r`; the gaps judged.
fn feed(r: &mut Recent, sensor: &str, seqs: impl IntoIterator<Item = u64>) -> Vec<Gap> {
    let mut gaps = Vec::new();
    for s in seqs {
        r.admit(sensor, T, s, 1_000 + s, &mut gaps);
    }
    gaps
}

fn total(gaps: &[Gap]) -> u64 {
    gaps.iter().map(|g| g.missed).sum()
}

#[test]
fn readings_in_order_miss_nothing() {
    let mut r = Recent::new(10);
    assert!(feed(&mut r, "loop-1", 0..500).is_empty());
}

#[test]
fn reordering_within_the_window_misses_nothing() {
    let mut r = Recent::new(10);
    // Blocks of 60 readings in reverse order: each arrives at most 59 behind the newest.
    let seqs = (0..10u64).flat_map(|b| (b * 60..(b + 1) * 60).rev());
    assert!(feed(&mut r, "loop-1", seqs).is_empty());
}

#[test]
fn a_gap_of_three_is_counted_once_when_it_leaves_the_window() {
    let mut r = Recent::new(10);
    let gaps = feed(&mut r, "loop-1", (0..=75).filter(|s| !(10..13).contains(s)));
    // 10, 11 and 12 leave the window [s − 63, s] as 73 + 1, 73 + 2 and 73 + 3 arrive.
    let at: Vec<(u64, u64)> = gaps.iter().map(|g| (g.newest, g.missed)).collect();
    assert_eq!(at, vec![(74, 1), (75, 1)]);
    let gaps = feed(&mut r, "loop-1", [76, 77]);
    assert_eq!(total(&gaps), 1);
    assert_eq!(gaps[0].cause, GapCause::Passed);
    assert_eq!(&*gaps[0].sensor, "loop-1");
}

#[test]
fn a_jump_of_a_thousand_counts_the_thousand_once_the_window_moved_past() {
    let mut r = Recent::new(10);
    let mut gaps = feed(&mut r, "loop-1", 0..=10);
    gaps.extend(feed(&mut r, "loop-1", [1_011]));
    // 11..=947 fell below the new window [948, 1011] at once; 948..=1010 may still come.
    assert_eq!(total(&gaps), 937);
    gaps.extend(feed(&mut r, "loop-1", 1_012..=1_074));
    assert_eq!(total(&gaps), 1_000, "11..=1010");
}

#[test]
fn a_device_counter_restart_is_not_a_gap() {
    let mut r = Recent::new(10);
    let gaps = feed(&mut r, "loop-1", (100..=300).filter(|&s| s != 299));
    assert!(gaps.is_empty());
    // Back to 0 with a newer event time: a restart. 299 never came: the abandoned window's hole.
    let mut restart = Vec::new();
    let a = r.admit("loop-1", T, 0, 10_000, &mut restart);
    assert!(a.fresh);
    assert_eq!(restart.len(), 1);
    assert_eq!(
        (restart[0].missed, restart[0].cause),
        (1, GapCause::Restarted)
    );
    // The new counter runs from 0: nothing below it, nothing between 300 and 0, counts.
    let mut after = Vec::new();
    for s in 1..200 {
        assert!(r.admit("loop-1", T, s, 10_000 + s, &mut after).fresh);
    }
    assert!(after.is_empty(), "{after:?}");
}

#[test]
fn duplicates_are_dropped_and_count_nothing() {
    let mut r = Recent::new(10);
    feed(&mut r, "loop-1", 0..100);
    let mut gaps = Vec::new();
    for s in [99, 98, 50, 40, 3] {
        let a = r.admit("loop-1", T, s, 1_000 + s, &mut gaps);
        assert!(!a.fresh, "{s}");
        // 3 is 96 behind the newest (99): too far to tell from a late reading.
        assert_eq!(a.beyond_window, s == 3, "{s}");
    }
    assert!(gaps.is_empty());
}

#[test]
fn a_reading_later_than_the_window_is_counted_missing_and_then_passed_on() {
    let mut r = Recent::new(10);
    let gaps = feed(&mut r, "loop-1", (0..=100).filter(|&s| s != 20));
    assert_eq!(total(&gaps), 1, "20 left the window when 84 came");
    let mut late = Vec::new();
    let a = r.admit("loop-1", T, 20, 1_020, &mut late);
    assert!(!a.fresh, "ingest cannot tell it from a repeat");
    assert!(a.beyond_window, "so it is passed on, not dropped");
    assert!(
        late.is_empty(),
        "counted once, never taken back or counted again"
    );
}

#[test]
fn numbers_below_the_first_seen_never_count_but_a_lower_late_one_lowers_the_floor() {
    let mut r = Recent::new(10);
    // First seen: 500. Then 497 arrives late (in the window): 498 and 499 are holes now.
    let mut gaps = feed(&mut r, "loop-1", [500, 497]);
    gaps.extend(feed(&mut r, "loop-1", 501..=600));
    assert_eq!(total(&gaps), 2);
}

#[test]
fn gaps_carry_the_sensors_kind() {
    let mut r = Recent::new(10);
    let mut gaps = Vec::new();
    for s in (0..=80).filter(|&s| s != 5) {
        r.admit("aq-1", Kind::Air, s, s, &mut gaps);
    }
    assert_eq!(gaps.len(), 1);
    assert_eq!(gaps[0].kind, Kind::Air);
}

#[test]
fn gaps_carry_the_sensors_district_also_when_it_is_evicted() {
    let air = |district| Series {
        kind: Kind::Air,
        district,
    };
    let mut r = Recent::new(1);
    let mut gaps = Vec::new();
    for s in (0..=70).filter(|&s| s != 3) {
        r.admit("aq-1", air(7), s, s, &mut gaps);
    }
    r.admit("aq-1", air(7), 72, 72, &mut gaps); // 71 is a hole in the window
    assert_eq!(
        gaps.iter()
            .map(|g| (g.district, g.missed))
            .collect::<Vec<_>>(),
        [(7, 1)],
        "3 passed out of the window"
    );
    // Evicted by a sensor of another district: its hole counts in its own.
    r.admit("aq-2", air(9), 0, 1, &mut gaps);
    assert_eq!(
        gaps.iter()
            .map(|g| (&*g.sensor, g.district, g.kind, g.missed, g.cause))
            .next_back(),
        Some(("aq-1", 7, Kind::Air, 1, GapCause::Evicted))
    );
}

#[test]
fn the_least_recently_seen_sensor_is_evicted_and_its_holes_counted() {
    let mut r = Recent::new(2);
    let mut gaps = Vec::new();
    assert!(!r.admit("a", T, 0, 1, &mut gaps).evicted);
    r.admit("a", T, 2, 3, &mut gaps); // 1 is a hole in a's window
    assert!(!r.admit("b", T, 0, 1, &mut gaps).evicted);
    r.admit("a", T, 3, 4, &mut gaps); // a is now the most recently seen
    let c = r.admit("c", T, 0, 1, &mut gaps);
    assert!(c.fresh && c.evicted);
    assert!(r.contains("a") && r.contains("c") && !r.contains("b"));
    assert!(gaps.is_empty(), "b had no hole");
    assert_eq!(r.len(), 2);
    // Now a is the least recently seen.
    r.admit("d", T, 7, 1, &mut gaps);
    assert!(!r.contains("a"));
    assert_eq!(gaps.len(), 1);
    assert_eq!(
        (&*gaps[0].sensor, gaps[0].missed, gaps[0].cause),
        ("a", 1, GapCause::Evicted)
    );
    // An evicted sensor starts fresh: a repeat of its old reading passes (the processors'
    // guard drops it).
    assert!(r.admit("a", T, 2, 3, &mut gaps).fresh);
}

#[test]
fn the_gap_log_reports_at_once_then_at_most_once_per_interval() {
    let gap = |missed| Gap {
        sensor: Arc::from(format!("loop-{missed}")),
        kind: T,
        district: 0,
        missed,
        newest: 100,
        cause: GapCause::Passed,
    };
    let mut log = GapLog::new(60_000);
    assert_eq!(log.due(0), None, "nothing to say");
    log.note(&gap(3));
    let first = log.due(1_000).unwrap();
    assert_eq!((first.missed, first.gaps), (3, 1));
    log.note(&gap(2));
    log.note(&gap(40));
    log.note(&gap(1));
    assert_eq!(log.due(60_999), None, "within the minute");
    let next = log.due(61_000).unwrap();
    assert_eq!((next.missed, next.gaps), (43, 3));
    assert_eq!(next.largest.map(|g| g.missed), Some(40));
    assert_eq!(log.due(200_000), None, "nothing new");
}

/// A naive LRU of sensor names, most recent last.
fn naive_lru(ops: &[u8], capacity: usize) -> Vec<u8> {
    let mut order: Vec<u8> = Vec::new();
    for &s in ops {
        order.retain(|&x| x != s);
        if order.len() == capacity {
            order.remove(0);
        }
        order.push(s);
    }
    order
}

proptest! {
    /// A sensor's readings shuffled so that none arrives 64 or more behind the newest, with some
    /// deleted: once everything passed the window, missing = deleted (between the lowest and
    /// the highest seq that arrived), and every reading that arrived passed once.
    #[test]
    fn missing_equals_deleted_once_flushed(
        start in 0u64..1_000_000,
        keep in prop::collection::vec(prop::bool::weighted(0.8), 1..600),
        offsets in prop::collection::vec(0u64..64, 600),
    ) {
        let kept: Vec<u64> = (0..keep.len() as u64).filter(|&i| keep[i as usize]).collect();
        prop_assume!(!kept.is_empty());
        let (lo, hi) = (kept[0], kept[kept.len() - 1]);
        let deleted = (lo..=hi).filter(|&i| !keep[i as usize]).count() as u64;
        // Sorting by position + an offset below 64 moves no reading 64 or more behind.
        let mut order = kept.clone();
        order.sort_by_key(|&i| (i + offsets[i as usize], i));
        let mut r = Recent::new(4);
        let mut gaps = Vec::new();
        let mut passed = 0;
        for &i in &order {
            passed += u64::from(r.admit("loop-1", T, start + i, 1, &mut gaps).fresh);
        }
        prop_assert_eq!(passed, kept.len() as u64);
        // Flush: a reading 64 above the highest pushes everything out of the window.
        r.admit("loop-1", T, start + hi + 64, 2, &mut gaps);
        prop_assert_eq!(total(&gaps), deleted);
        prop_assert!(gaps.iter().all(|g| g.cause == GapCause::Passed));
    }

    /// The map holds the `capacity` most recently seen sensors, like a naive LRU, and evicts only
    /// when a new sensor arrives while full.
    #[test]
    fn the_map_keeps_the_most_recently_seen(
        ops in prop::collection::vec(0u8..12, 1..300),
        capacity in 1usize..8,
    ) {
        let mut r = Recent::new(capacity);
        let mut gaps = Vec::new();
        let mut evictions = 0;
        for (k, &s) in ops.iter().enumerate() {
            let a = r.admit(&format!("s{s}"), T, k as u64, k as u64, &mut gaps);
            evictions += u64::from(a.evicted);
            prop_assert!(r.len() <= capacity);
        }
        let want = naive_lru(&ops, capacity);
        prop_assert_eq!(r.len(), want.len());
        for s in 0u8..12 {
            prop_assert_eq!(r.contains(&format!("s{s}")), want.contains(&s), "s{}", s);
        }
        let mut distinct = ops.clone();
        distinct.sort_unstable();
        distinct.dedup();
        prop_assert!(evictions >= (distinct.len().saturating_sub(capacity)) as u64);
    }
}

#[test]
fn districts_get_labels_up_to_the_bound_then_share_other() {
    let mut d = Districts::default();
    assert_eq!(d.index("d01"), (1, true));
    assert_eq!(d.index("d02"), (2, true));
    assert_eq!(d.index("d01"), (1, false));
    assert_eq!(
        (d.name(1), d.name(2), d.name(0)),
        ("d01", "d02", OTHER_DISTRICT)
    );
    for n in 3..=Districts::MAX {
        d.index(&format!("d{n}"));
    }
    assert_eq!(
        d.name(u16::try_from(Districts::MAX).unwrap()),
        format!("d{}", Districts::MAX)
    );
    assert_eq!(d.index("one-too-many"), (0, false));
    assert_eq!(
        d.index("d02"),
        (2, false),
        "known districts keep their label"
    );
    assert_eq!(d.name(u16::MAX), OTHER_DISTRICT);
}
