//! Readings lost before ingest, counted: the real `citypulse-ingest` binary against a real
//! nats-server, readings with known gaps in `seq` published on `sensors.…`, and the counters read
//! from ingest's own `/metrics` endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use citypulse_harness::{free_port, http_get, wait_for, NatsServer};
use common::*;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// Starts the ingest binary on `nats_url` with its admin server on a free port, plus `extra`.
fn spawn_ingest(nats_url: &str, extra: &[&str]) -> (tokio::process::Child, SocketAddr) {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut a = args(nats_url, None);
    let at = a.iter().position(|s| s == "--metrics-addr").unwrap();
    a[at + 1] = addr.to_string();
    a.extend(extra.iter().map(|s| (*s).to_owned()));
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_citypulse-ingest"))
        .args(&a)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, addr)
}

/// Waits until ingest provisioned RAW; fails at once if it exited (e.g. refused its flags).
async fn started(child: &mut tokio::process::Child, js: &async_nats::jetstream::Context) {
    wait_for(WAIT, "RAW provisioned", || {
        let exited = child.try_wait().unwrap();
        async move {
            assert_eq!(exited, None, "ingest exited");
            js.get_stream("RAW").await.is_ok()
        }
    })
    .await;
}

/// The value of the series `series` (name with its labels, as exposed) on `addr`'s `/metrics`;
/// `None` when it is not exposed.
async fn scrape(addr: SocketAddr, series: &str) -> Option<f64> {
    let (status, body) = tokio::task::spawn_blocking(move || http_get(addr, "/metrics"))
        .await
        .unwrap()
        .ok()?;
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// The missing-reading series of `kind` sensors in `district` (test sensor `n` is in district
/// `d0<n % 7>`: 0 a loop detector in d00, 1 an air station in d01).
fn missing(district: &str, kind: &str) -> String {
    format!("citypulse_ingest_readings_missing_total{{district=\"{district}\",kind=\"{kind}\"}}")
}

/// Publishes reading `seq` of test sensor `n` (0: a loop detector, 1: an air station) to RAW and
/// waits for the ack, so RAW holds them in publish order.
async fn send(js: &async_nats::jetstream::Context, n: u32, seq: u64, base_ts: u64) {
    let r = reading(n, seq, base_ts + seq);
    js.publish(raw_subject(&r), r.encode().into())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_in_a_sensors_seq_are_counted_per_district_and_kind_on_the_metrics_endpoint() {
    let nats = NatsServer::start();
    let (mut child, admin) = spawn_ingest(&nats.url(), &[]);
    let js = jetstream(&nats.url()).await;
    started(&mut child, &js).await;
    let base_ts = now_ms() - 60_000;

    // Loop detector 0: 10, 11, 12 lost (a gap of 3), 100..=1099 lost (a jump of 1,000), and
    // 1100..=1164 pushing the last of them out of the 64-reading window. Pairs arrive swapped
    // (reordering within the window is no gap) and 50 arrives twice (a repeat).
    let mut traffic = Vec::new();
    for segment in [0..=9, 13..=99, 1_100..=1_164] {
        let mut segment: Vec<u64> = segment.collect();
        for pair in segment.chunks_mut(2) {
            pair.reverse();
        }
        traffic.extend(segment);
    }
    traffic.insert(60, 50);
    // Air station 1: 5..=9 lost, 80 pushes 9 out of the window.
    let air: Vec<u64> = (0..=4).chain(10..=80).collect();
    let (traffic_lost, air_lost) = (3 + 1_000, 5);
    let distinct = (traffic.len() - 1 + air.len()) as u64;

    for (i, &seq) in traffic.iter().enumerate() {
        send(&js, 0, seq, base_ts).await;
        if let Some(&a) = air.get(i) {
            send(&js, 1, a, base_ts).await;
        }
    }
    for &a in air.iter().skip(traffic.len()) {
        send(&js, 1, a, base_ts).await;
    }

    // The counters move before READINGS is published, so they are final once it holds all.
    wait_for(WAIT, "every distinct reading on READINGS", || async {
        readings_len(&js).await == distinct
    })
    .await;
    assert_eq!(
        scrape(admin, &missing("d00", "traffic")).await,
        Some(traffic_lost as f64)
    );
    assert_eq!(
        scrape(admin, &missing("d01", "air")).await,
        Some(f64::from(air_lost))
    );
    // Each district's series start at zero for both kinds.
    assert_eq!(scrape(admin, &missing("d00", "air")).await, Some(0.0));
    assert_eq!(
        scrape(
            admin,
            "citypulse_ingest_duplicates_total{stream=\"readings\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        scrape(admin, "citypulse_ingest_tracked_sensors").await,
        Some(2.0)
    );
    assert_eq!(
        scrape(admin, "citypulse_ingest_sensor_evictions_total").await,
        Some(0.0)
    );
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_map_evicts_the_least_recently_seen_sensor_and_counts_its_holes() {
    let nats = NatsServer::start();
    let (mut child, admin) = spawn_ingest(&nats.url(), &["--max-tracked-sensors", "1"]);
    let js = jetstream(&nats.url()).await;
    started(&mut child, &js).await;
    let base_ts = now_ms() - 60_000;
    // Loop detector 0 sends 0 and 3 (1 and 2 are holes in its window); air station 1 takes its
    // place; then loop detector 0 comes back and starts fresh: its old 0 passes again.
    for (n, seq) in [(0, 0), (0, 3), (1, 7), (0, 0)] {
        send(&js, n, seq, base_ts).await;
    }
    wait_for(WAIT, "four readings on READINGS", || async {
        readings_len(&js).await == 4
    })
    .await;
    // The evicted loop detector's holes count in its own district.
    assert_eq!(scrape(admin, &missing("d00", "traffic")).await, Some(2.0));
    assert_eq!(scrape(admin, &missing("d01", "air")).await, Some(0.0));
    assert_eq!(scrape(admin, &missing("d01", "traffic")).await, Some(0.0));
    assert_eq!(
        scrape(admin, "citypulse_ingest_sensor_evictions_total").await,
        Some(2.0)
    );
    assert_eq!(
        scrape(admin, "citypulse_ingest_tracked_sensors").await,
        Some(1.0)
    );
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_rejected_for_its_time_arrived_and_only_an_unreadable_one_counts_missing() {
    let nats = NatsServer::start();
    let (mut child, admin) = spawn_ingest(&nats.url(), &[]);
    let js = jetstream(&nats.url()).await;
    started(&mut child, &js).await;
    let now = now_ms();
    // Air station 1 sends 0..=110: 20 is four days old (too_old), 30 an hour ahead
    // (future_timestamp), both dead-lettered but arrived; 40 is not CBOR at all (its seq is
    // unknown, so it counts missing once 64 newer readings passed).
    for seq in 0..=110u64 {
        let ts = match seq {
            20 => now - 96 * 3_600_000,
            30 => now + 3_600_000,
            _ => now - 60_000 + seq,
        };
        let r = reading(1, seq, ts);
        let payload = if seq == 40 {
            b"\xff not a reading".to_vec()
        } else {
            r.encode()
        };
        js.publish(raw_subject(&r), payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    wait_for(WAIT, "108 readings on READINGS", || async {
        readings_len(&js).await == 108
    })
    .await;
    let rejected = |reason: &str| format!("citypulse_ingest_rejected_total{{reason=\"{reason}\"}}");
    assert_eq!(scrape(admin, &rejected("too_old")).await, Some(1.0));
    assert_eq!(
        scrape(admin, &rejected("future_timestamp")).await,
        Some(1.0)
    );
    assert_eq!(scrape(admin, &rejected("malformed_cbor")).await, Some(1.0));
    assert_eq!(scrape(admin, &missing("d01", "air")).await, Some(1.0));
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reading_later_than_the_window_is_counted_missing_and_still_passed_on() {
    let nats = NatsServer::start();
    let (mut child, admin) = spawn_ingest(&nats.url(), &[]);
    let js = jetstream(&nats.url()).await;
    started(&mut child, &js).await;
    let base_ts = now_ms() - 60_000;
    // Loop detector 0 sends 0..=100 without 20, then 20 (80 readings late: a device that
    // retried it after a long outage), then 50 again (a repeat within the window).
    for seq in (0..=100).filter(|&s| s != 20).chain([20, 50]) {
        send(&js, 0, seq, base_ts).await;
    }
    // 101 readings reach READINGS: the late one too (it used to be dropped as a repeat, and
    // was lost from the archive although it arrived); the repeat does not.
    wait_for(WAIT, "101 readings on READINGS", || async {
        readings_len(&js).await == 101
    })
    .await;
    assert_eq!(scrape(admin, &missing("d00", "traffic")).await, Some(1.0));
    assert_eq!(
        scrape(
            admin,
            "citypulse_ingest_readings_arrived_after_missing_total{kind=\"traffic\"}"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        scrape(
            admin,
            "citypulse_ingest_duplicates_total{stream=\"readings\"}"
        )
        .await,
        Some(1.0)
    );
    // Nothing more arrives (the repeat stays out).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(readings_len(&js).await, 101);
    child.kill().await.unwrap();
}
