//! The simulator against a real nats-server (JetStream): what the truth file says was sent is
//! exactly what RAW stores, in order; a rerun is deduplicated; a server crash mid-run loses
//! nothing and stores nothing twice; a shutdown with the server gone ends after the drain timeout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream;
use citypulse_harness::NatsServer;
use citypulse_runtime::shutdown::Shutdown;
use citypulse_schema::streams;
use citypulse_simulator::config::{now_ms, Config};
use citypulse_simulator::truth::{self, TruthRecord};
use citypulse_simulator::{raw_stream_config, run, Summary};
use clap::Parser;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

fn config(url: &str, truth: &Path, extra: &[&str]) -> Config {
    let truth = truth.display().to_string();
    let mut args = vec![
        "citypulse-simulator",
        "--nats-url",
        url,
        "--truth",
        &truth,
        "--progress-interval",
        "1s",
    ];
    args.extend_from_slice(extra);
    Config::try_parse_from(args).unwrap()
}

async fn simulate(config: &Config, url: &str) -> Summary {
    let plan = config.plan(now_ms()).unwrap();
    let client = async_nats::connect(url).await.unwrap();
    let registry = prometheus::Registry::new();
    run(config, plan, client, &registry, Shutdown::new())
        .await
        .unwrap()
}

fn read_truth(path: &Path) -> Vec<TruthRecord> {
    truth::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every message in RAW, in stream order, as (subject, payload).
async fn stored(url: &str) -> Vec<(String, Vec<u8>)> {
    let js = jetstream::new(async_nats::connect(url).await.unwrap());
    let mut stream = js.get_stream(streams::RAW).await.unwrap();
    let n = stream.info().await.unwrap().state.messages;
    let mut out = Vec::with_capacity(n as usize);
    for seq in 1..=n {
        let m = stream.get_raw_message(seq).await.unwrap();
        out.push((m.subject.to_string(), m.payload.to_vec()));
    }
    out
}

/// Waits until RAW holds more than `n` messages (the simulator creates it on its first publish).
async fn wait_for_raw(url: &str, n: u64) {
    let js = jetstream::new(
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(url)
            .await
            .unwrap(),
    );
    citypulse_harness::wait_for(Duration::from_secs(60), "RAW filling", || async {
        match js.get_stream(streams::RAW).await {
            Ok(mut s) => s.info().await.is_ok_and(|i| i.state.messages > n),
            Err(_) => false,
        }
    })
    .await;
}

fn sent(records: &[TruthRecord]) -> Vec<(String, Vec<u8>)> {
    records
        .iter()
        .filter(|r| r.sent)
        .map(|r| {
            let bytes = truth::unhex(r.payload_hex.as_deref().unwrap()).unwrap();
            (r.subject.clone(), bytes)
        })
        .collect()
}

#[tokio::test]
async fn raw_stores_exactly_what_the_truth_file_says_and_a_rerun_is_deduplicated() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let start = rfc3339(now_ms() / 60_000 * 60_000 - 3_600_000);
    let flags = [
        "--start",
        &start,
        "--duration",
        "10m",
        "--speed",
        "max",
        "--sensors",
        "300",
        "--faults",
        "demo",
        "--fault-duplicate",
        "0.01",
        "--fault-late",
        "0.01",
    ];
    let first = config(&url, &dir.path().join("truth-1.jsonl"), &flags);
    let summary = simulate(&first, &url).await;
    assert!(summary.completed);
    assert_eq!(summary.totals.errors, 0);
    assert_eq!(summary.totals.acked, summary.totals.published);

    let records = read_truth(&dir.path().join("truth-1.jsonl"));
    let expected = sent(&records);
    assert!(expected.len() > 5_000, "{}", expected.len());
    assert_eq!(summary.totals.published, expected.len() as u64);
    assert!(records
        .iter()
        .any(|r| r.fault.as_deref() == Some("duplicate")));
    assert!(records.iter().any(|r| !r.sent));
    // Duplicate copies carry their own Nats-Msg-Id, so they reach RAW like a device retry would.
    assert_eq!(stored(&url).await, expected);

    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    let cfg = js
        .get_stream(streams::RAW)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    let want = raw_stream_config();
    assert_eq!(cfg.subjects, want.subjects);
    assert_eq!(cfg.storage, want.storage);
    assert_eq!(cfg.duplicate_window, Duration::from_secs(120));
    assert_eq!(cfg.max_age, Duration::from_secs(7 * 24 * 3600));

    // The same seed, start and duration again: identical bytes, all deduplicated by the server
    // (same Nats-Msg-Id within the duplicate window), and the existing stream is kept.
    let second = config(&url, &dir.path().join("truth-2.jsonl"), &flags);
    let summary = simulate(&second, &url).await;
    assert!(summary.completed);
    assert_eq!(
        sent(&read_truth(&dir.path().join("truth-2.jsonl"))),
        expected
    );
    assert_eq!(stored(&url).await.len(), expected.len());
}

#[tokio::test]
async fn a_server_crash_mid_run_loses_nothing_and_stores_nothing_twice() {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let truth_path = dir.path().join("truth.jsonl");
    // 30 simulated minutes at 120x: about 15 s of wall time, the last of them in real time.
    let start = rfc3339(now_ms() / 1000 * 1000 - 30 * 60_000);
    let cfg = config(
        &url,
        &truth_path,
        &[
            "--start",
            &start,
            "--duration",
            "30m",
            "--speed",
            "120",
            "--sensors",
            "200",
        ],
    );
    let run_url = url.clone();
    let task = tokio::spawn(async move { simulate(&cfg, &run_url).await });

    tokio::time::sleep(Duration::from_secs(4)).await;
    server.stop();
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.start_again();

    let summary = task.await.unwrap();
    assert!(summary.completed);
    // Whether the crash cost failed attempts (retried under the same Nats-Msg-Id) depends on
    // what was in flight at the kill; either way the stream must end up exact.
    assert_eq!(summary.totals.acked, summary.totals.published);
    let expected = sent(&read_truth(&truth_path));
    let mut got = stored(&url).await;
    // Retries may reorder; the set must be identical with nothing twice.
    let mut want = expected.clone();
    got.sort();
    want.sort();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}

/// Publishes lost with a broker crash are retried before anything newer is sent: every reading
/// lands in RAW at most `--max-in-flight` messages after its place in the sending order. (With
/// the retry put behind newer publishes, the 10-second ack timeout let the simulator run tens
/// of simulated minutes ahead at `--speed max`: a tick's readings landed after readings half an
/// hour newer, late for every window downstream.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_server_crash_readings_land_at_most_the_in_flight_window_out_of_order() {
    // A crash costs publishes only when some were on the wire (each attempt suspends the server
    // before killing it to make sure of that). Every attempt checks the order; at least one
    // must have lost publishes, or this test shows nothing.
    let mut lost = Vec::new();
    for _ in 0..5 {
        let errors = crash_mid_run_and_check_the_order().await;
        lost.push(errors);
        if errors > 0 {
            return;
        }
    }
    panic!(
        "no crash cost a publish in {} attempts: {lost:?}",
        lost.len()
    );
}

/// One run with a server crash while the simulator publishes flat out; checks that every
/// reading landed once and at most the in-flight window after its place; returns how many
/// publish attempts failed.
async fn crash_mid_run_and_check_the_order() -> u64 {
    const IN_FLIGHT: usize = 64;
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let truth_path = dir.path().join("truth.jsonl");
    let start = rfc3339(now_ms() / 60_000 * 60_000 - 6 * 3_600_000);
    let in_flight = IN_FLIGHT.to_string();
    let cfg = config(
        &url,
        &truth_path,
        &[
            "--start",
            &start,
            "--duration",
            "2h",
            "--speed",
            "max",
            "--sensors",
            "100",
            "--faults",
            "none",
            "--max-in-flight",
            &in_flight,
        ],
    );
    let run_url = url.clone();
    let task = tokio::spawn(async move { simulate(&cfg, &run_url).await });
    wait_for_raw(&url, 3_000).await;
    // Suspended first, so the publishes sent meanwhile are on the wire, unread, when it is
    // killed: a plain kill could find every publish already acked and the next ones still in
    // the client's buffer (five such attempts in a row on a busy CI machine).
    server.freeze();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.start_again();

    let summary = task.await.unwrap();
    assert!(summary.completed);
    let order: std::collections::HashMap<(String, Vec<u8>), usize> = sent(&read_truth(&truth_path))
        .into_iter()
        .enumerate()
        .map(|(i, m)| (m, i))
        .collect();
    let got = stored(&url).await;
    assert_eq!(got.len(), order.len(), "every reading once");
    let latest = got
        .iter()
        .enumerate()
        .map(|(pos, m)| pos.saturating_sub(order[m]))
        .max()
        .unwrap();
    assert!(
        latest <= IN_FLIGHT,
        "a reading landed {latest} messages after its place (window {IN_FLIGHT})"
    );
    summary.totals.errors
}

#[tokio::test]
async fn core_mode_publishes_without_acks_into_an_existing_stream() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    js.create_stream(raw_stream_config()).await.unwrap();
    let start = rfc3339(now_ms() / 60_000 * 60_000 - 3_600_000);
    let cfg = config(
        &url,
        &dir.path().join("truth.jsonl"),
        &[
            "--core",
            "--start",
            &start,
            "--duration",
            "5m",
            "--speed",
            "max",
            "--sensors",
            "100",
        ],
    );
    let summary = simulate(&cfg, &url).await;
    assert!(summary.completed);
    assert_eq!(summary.totals.acked, 0);
    let expected = sent(&read_truth(&dir.path().join("truth.jsonl")));
    assert_eq!(summary.totals.published, expected.len() as u64);
    let want = expected.len() as u64;
    citypulse_harness::wait_for(Duration::from_secs(10), "every core publish stored", || {
        let js = js.clone();
        async move {
            let mut s = js.get_stream(streams::RAW).await.unwrap();
            s.info().await.unwrap().state.messages == want
        }
    })
    .await;
    assert_eq!(stored(&url).await, expected);
}

/// A shutdown while the server is gone still ends the run: what was handed over gets
/// `--drain-timeout` to be acknowledged, then the run stops (logging that some readings may not
/// be stored) instead of retrying for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_with_the_server_gone_ends_after_the_drain_timeout() {
    let mut server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let url = server.url();
    // Ten simulated hours: far more than is published before the server goes.
    let start = rfc3339(now_ms() / 60_000 * 60_000 - 12 * 3_600_000);
    let cfg = config(
        &url,
        &dir.path().join("truth.jsonl"),
        &[
            "--start",
            &start,
            "--duration",
            "10h",
            "--speed",
            "max",
            "--sensors",
            "100",
            "--faults",
            "none",
            "--drain-timeout",
            "2s",
        ],
    );
    let plan = cfg.plan(now_ms()).unwrap();
    let client = async_nats::connect(&url).await.unwrap();
    let shutdown = Shutdown::new();
    let stop = shutdown.clone();
    let task = tokio::spawn(async move {
        let registry = prometheus::Registry::new();
        run(&cfg, plan, client, &registry, stop).await.unwrap()
    });
    wait_for_raw(&url, 1_000).await;
    server.stop();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let asked = std::time::Instant::now();
    shutdown.trigger();
    let summary = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("the run ended within 30 s of the shutdown")
        .unwrap();
    let took = asked.elapsed();
    assert!(!summary.completed);
    assert!(
        summary.totals.acked < summary.totals.published,
        "the server went away mid-run: {:?}",
        summary.totals
    );
    assert!(
        took >= Duration::from_millis(1_900) && took < Duration::from_secs(10),
        "ended {took:?} after the shutdown, with a 2 s drain timeout"
    );
}
