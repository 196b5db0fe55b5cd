//! Faults against real servers: the real `citypulse-ingest` binary SIGKILLed mid-stream again and
//! again, a nats-server crash, a PostgreSQL outage. Every reading sent ends up on READINGS exactly
//! once and in the archive exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use citypulse_harness::{wait_for, NatsServer, Postgres};
use citypulse_runtime::jetstream::publish_durably;
use citypulse_runtime::publish::Outgoing;
use citypulse_runtime::shutdown::Shutdown;
use common::*;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(60);
const SENSORS: u32 = 40;

/// Publishes readings `from..to` to RAW, each retried until acknowledged (so each one counts as
/// sent), counting them in `sent`. Before reading `hold_at` it waits until `go` turns true.
async fn publish(
    js: async_nats::jetstream::Context,
    from: u32,
    to: u32,
    sent: Arc<AtomicU32>,
    hold_at: u32,
    mut go: watch::Receiver<bool>,
) {
    let shutdown = Shutdown::new();
    for i in from..to {
        if i == hold_at {
            go.wait_for(|go| *go).await.unwrap();
        }
        let r = reading(i % SENSORS, u64::from(i / SENSORS), now_ms());
        publish_durably(
            &js,
            &Outgoing::new(raw_subject(&r), r.msg_id(), r.encode().into()),
            &shutdown,
            |_| {},
        )
        .await
        .unwrap();
        sent.fetch_add(1, Ordering::Relaxed);
        // Rate shaping (not synchronisation): keeps the stream flowing while ingest is killed.
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Publishes without holding.
async fn publish_all(js: async_nats::jetstream::Context, from: u32, to: u32, sent: Arc<AtomicU32>) {
    let (_go, rx) = watch::channel(true);
    publish(js, from, to, sent, from, rx).await;
}

/// Every reading `0..k` exactly once on READINGS and exactly once in the archive.
async fn assert_exactly_once(js: &async_nats::jetstream::Context, database_url: &str, k: u32) {
    let ids = readings_per_id(js).await;
    assert_eq!(ids.len(), k as usize, "distinct readings on READINGS");
    for i in 0..k {
        let id = reading(i % SENSORS, u64::from(i / SENSORS), 0).msg_id();
        assert_eq!(ids.get(&id), Some(&1), "{id} on READINGS");
    }
    assert_eq!(
        archived(database_url).await,
        Some((i64::from(k), i64::from(k)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkilled_ingest_and_a_nats_crash_lose_and_duplicate_nothing() {
    const K: u32 = 6000;
    const KILLS: u32 = 4;
    let mut nats = NatsServer::start();
    let pg = Postgres::start();
    let args = args(&nats.url(), Some(&pg.url()));
    let spawn = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_citypulse-ingest"))
            .args(&args)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let js = jetstream(&nats.url()).await;
    let mut child = spawn();
    wait_for(WAIT, "RAW provisioned", || async {
        js.get_stream("RAW").await.is_ok()
    })
    .await;

    let sent = Arc::new(AtomicU32::new(0));
    // The last sixth of the stream waits for the last kill, so every kill lands mid-stream.
    let hold_at = K * (KILLS + 1) / (KILLS + 2);
    let (go, go_rx) = watch::channel(false);
    let publisher = tokio::spawn(publish(js.clone(), 0, K, sent.clone(), hold_at, go_rx));
    for round in 0..KILLS {
        let before = readings_len(&js).await;
        // Progress, or caught up with everything sent so far (ingest keeps pace with the
        // publisher, which holds before the last sixth).
        wait_for(WAIT, "ingest making progress", || async {
            let n = readings_len(&js).await;
            n > before + 100 || n >= u64::from(sent.load(Ordering::Relaxed))
        })
        .await;
        if round == 1 {
            // Crash nats-server under a live ingest and publisher.
            tokio::task::block_in_place(|| nats.restart());
            let before = readings_len(&js).await;
            // Progress, or caught up (a restarted ingest waits for its previous lease, so the
            // publisher may already hold before the last sixth); the last sixth, published
            // after the restart, must get through anyway (checked below).
            wait_for(
                WAIT,
                "ingest making progress after the NATS restart",
                || async {
                    let n = readings_len(&js).await;
                    n > before + 100 || n >= u64::from(sent.load(Ordering::Relaxed))
                },
            )
            .await;
        }
        // Kill in mid-stream: the publisher is still going.
        let target = K * (round + 1) / (KILLS + 2);
        wait_for(WAIT, "the publisher past the kill point", || async {
            sent.load(Ordering::Relaxed) >= target
        })
        .await;
        child.kill().await.unwrap(); // SIGKILL
        child = spawn();
    }
    go.send(true).unwrap();
    publisher.await.unwrap();
    assert_eq!(sent.load(Ordering::Relaxed), K);

    wait_for(WAIT, "every reading on READINGS and archived", || async {
        // At least K: a duplicate would show as more, and fail the exact check below.
        readings_len(&js).await >= u64::from(K)
            && archived(&pg.url()).await.map(|(n, _)| n) >= Some(i64::from(K))
    })
    .await;
    assert_exactly_once(&js, &pg.url(), K).await;
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_delays_the_archive_but_loses_and_duplicates_nothing() {
    const FIRST: u32 = 600;
    const K: u32 = 1500;
    let nats = NatsServer::start();
    let mut pg = Postgres::start();
    let running = Running::start(config(&args(&nats.url(), Some(&pg.url())), &[])).await;
    let js = jetstream(&nats.url()).await;
    wait_for(WAIT, "RAW provisioned", || async {
        js.get_stream("RAW").await.is_ok()
    })
    .await;
    let sent = Arc::new(AtomicU32::new(0));

    publish_all(js.clone(), 0, FIRST, sent.clone()).await;
    wait_for(WAIT, "the first readings archived", || async {
        archived(&pg.url()).await == Some((i64::from(FIRST), i64::from(FIRST)))
    })
    .await;

    // READINGS messages holding the archived readings (ingest stores a batch per RAW pull).
    let archived_messages = stream_len(&js, "READINGS").await;
    tokio::task::block_in_place(|| pg.stop());
    publish_all(js.clone(), FIRST, K, sent.clone()).await;
    // Validation does not wait for the archive.
    wait_for(
        WAIT,
        "every reading validated while PostgreSQL is down",
        || async { readings_len(&js).await == u64::from(K) },
    )
    .await;
    // Every READINGS message stored since is waiting for the archive.
    let backlog = (stream_len(&js, "READINGS").await - archived_messages) as f64;
    assert!(backlog > 0.0);
    wait_for(WAIT, "the backlog visible as archive lag", || async {
        running.metric("citypulse_ingest_archive_lag_messages", &[]) == backlog
            && running.metric("citypulse_ingest_archive_lag_seconds", &[]) > 0.0
            && running.metric("citypulse_ingest_archive_up", &[]) == 0.0
    })
    .await;
    assert!(
        running.metric(
            "citypulse_ingest_archive_errors_total",
            &[("reason", "connect")]
        ) >= 1.0
    );
    // The backlog's share of READINGS' retention: its bytes against the 64 MiB limit (the age
    // limit, a week, is far), estimated at the stream's average message size.
    let info = js
        .get_stream("READINGS")
        .await
        .unwrap()
        .get_info()
        .await
        .unwrap();
    let share = info.state.bytes as f64 * backlog / info.state.messages as f64 / (64 << 20) as f64;
    // The unarchived messages' own subjects and payloads: the estimate is of their size.
    let unarchived: usize = all_messages(&js, "READINGS").await[archived_messages as usize..]
        .iter()
        .map(|m| m.subject.len() + m.payload.len())
        .sum();
    let own = unarchived as f64 / (64 << 20) as f64;
    assert!(share > 0.5 * own && share < 2.0 * own, "{share} vs {own}");
    wait_for(
        WAIT,
        "the backlog's share of READINGS' retention",
        || async {
            let used = running.metric("citypulse_ingest_archive_retention_used_ratio", &[]);
            (used - share).abs() <= 0.01 * share
        },
    )
    .await;
    // While PostgreSQL is down the archive holds no batch (its memory does not grow with the
    // outage): the whole backlog waits undelivered in READINGS, none of it pulled and unacked.
    let readings = js.get_stream("READINGS").await.unwrap();
    wait_for(WAIT, "the backlog undelivered, none held by ingest", || {
        let readings = readings.clone();
        async move {
            let info = readings.consumer_info("ingest-archive").await.unwrap();
            info.num_ack_pending == 0 && info.num_pending as f64 == backlog
        }
    })
    .await;

    tokio::task::block_in_place(|| pg.start_again());
    wait_for(WAIT, "the archive caught up", || async {
        archived(&pg.url()).await.map(|(n, _)| n) == Some(i64::from(K))
            && running.metric("citypulse_ingest_archive_lag_messages", &[]) == 0.0
            && running.metric("citypulse_ingest_archive_retention_used_ratio", &[]) == 0.0
    })
    .await;
    assert_exactly_once(&js, &pg.url(), K).await;
    assert_eq!(
        running.metric("citypulse_ingest_archived_rows_total", &[]),
        f64::from(K)
    );
    running.stop().await;
}
