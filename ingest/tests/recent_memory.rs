//! What one tracked sensor costs in memory (the figure in ingest/README.md and
//! docs/operations.md): the growth of this process's resident memory (`VmRSS`) while
//! [`Recent`] tracks 1,000,000 sensors (the `--max-tracked-sensors` default) with ids like the
//! built-in city's (`loop-<district>-<n>`, 19 bytes here), and that a full map grows no more.
//!
//! `cargo test -p citypulse-ingest --test recent_memory -- --nocapture` prints the figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use citypulse_ingest::recent::Recent;
use citypulse_schema::Kind;

/// This process's resident memory, bytes.
fn rss() -> i64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: i64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

fn id(n: u64) -> String {
    format!("loop-harbour-{n:06}")
}

#[test]
fn a_tracked_sensor_costs_at_most_250_bytes_and_a_full_map_grows_no_more() {
    const N: u64 = 1_000_000;
    let mut gaps = Vec::with_capacity(16);
    let before = rss();
    let mut recent = Recent::new(N as usize);
    for n in 0..N {
        recent.admit(&id(n), Kind::Traffic, 0, 1, &mut gaps);
    }
    let full = rss();
    let per_sensor = (full - before) as f64 / N as f64;
    // As many new sensors again: each evicts one, so the map stays at N.
    for n in N..2 * N {
        recent.admit(&id(n), Kind::Traffic, 0, 1, &mut gaps);
        gaps.clear();
    }
    let after = rss();
    println!(
        "Recent: {N} sensors (ids of {} bytes): resident memory +{:.1} MiB, {per_sensor:.0} bytes \
         per sensor; after {N} evictions: {:+.1} MiB",
        id(0).len(),
        (full - before) as f64 / 1048576.0,
        (after - full) as f64 / 1048576.0,
    );
    assert_eq!(recent.len(), N as usize);
    assert!(per_sensor < 250.0, "{per_sensor} bytes per sensor");
    assert!(
        after - full < (N as i64) * 16,
        "{} bytes grown when full",
        after - full
    );
}
