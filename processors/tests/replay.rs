//! `citypulse-processors replay` (the real binary) against a real nats-server: with the live
//! settings it republishes, byte for byte and id for id, what the live service published for the
//! range; with other windows it computes what an independent naive model expects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod naive;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::Context;
use citypulse_harness::{wait_for, NatsServer};
use citypulse_schema::WindowResult;
use common::*;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, UNIX_EPOCH};

const HOUR: u64 = 3_600_000;

/// One stored message: subject and payload, keyed by `Nats-Msg-Id`.
type Stored = BTreeMap<String, (String, Vec<u8>)>;

/// Every message of `stream`, by `Nats-Msg-Id` (asserting none is stored twice).
async fn stored(js: &Context, stream: &str) -> Stored {
    let mut s = js.get_stream(stream).await.unwrap();
    let total = s.info().await.unwrap().state.messages;
    let consumer = s
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Stored::new();
    for _ in 0..total {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("the stream delivers")
            .unwrap()
            .unwrap();
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .expect("a Nats-Msg-Id");
        let previous = out.insert(id.clone(), (m.subject.to_string(), m.payload.to_vec()));
        assert!(previous.is_none(), "{id} stored twice in {stream}");
    }
    out
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Runs `citypulse-processors [top…] replay [args…]`, asserting it succeeds; its stdout.
async fn replay(url: &str, top: &[&str], args: &[&str]) -> String {
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_citypulse-processors"));
    cmd.args(top)
        .arg("replay")
        .args(["--nats-url", url])
        .args(args)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("the replay finishes within a minute")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "replay failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("replay took {:?}: {stdout}", started.elapsed());
    stdout
}

/// A server with READINGS holding `s`: the first 2,000 readings as ingest v0.1 stored them
/// (one message each), the rest as ingest v0.2 does (a batch per partition and pull).
async fn loaded(s: &Scenario) -> (NatsServer, Context) {
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    create_readings_stream(&js).await;
    let (singles, batched) = s.readings.split_at(2_000);
    publish_readings(&js, singles).await;
    publish_batches(&js, batched, 300).await;
    (server, js)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_with_the_live_settings_is_byte_identical_to_the_live_results() {
    // 26 hours of air (24-h means, NowCast) and 3 of traffic ending at T0 + 26 h.
    let s = scenario(41, 26, 3);
    let end = T0 + 26 * HOUR;
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.toml");
    std::fs::write(&city, &s.city).unwrap();
    let city = city.to_str().unwrap();
    let (server, js) = loaded(&s).await;

    // The live service over the whole backlog; no idle advance (event time closes everything).
    let want = all_windows(&expected(&s, 60_000, 60_000)).len() as u64;
    let live = InProcess::start(
        &server.url(),
        &[
            "--idle-timeout",
            "1h",
            "--city",
            city,
            "--partitions",
            "all",
        ],
    )
    .await;
    wait_for(Duration::from_secs(60), "the live results", || async {
        metrics_count(&js).await >= want
    })
    .await;
    live.stop().await;

    // The two hours that end half an hour before the input does, with the live flags given
    // the way the service takes them (before the subcommand) and the default 24-h warm-up
    // (stream time: everything here was stored seconds ago, so all of READINGS is read).
    let (from, to) = (end - 150 * 60_000, end - 30 * 60_000);
    let stdout = replay(
        &server.url(),
        &["--idle-timeout", "1h", "--city", city],
        &[
            "--from",
            &rfc3339(from),
            "--to",
            &rfc3339(to),
            "--into",
            "BACKFILL_A",
            "--quiet",
        ],
    )
    .await;

    let live: Stored = stored(&js, "METRICS")
        .await
        .into_iter()
        .filter(|(_, (_, payload))| {
            let w = WindowResult::decode(payload).unwrap();
            w.window_start >= from && w.window_end <= to
        })
        .collect();
    let replayed = stored(&js, "BACKFILL_A").await;
    assert!(
        live.len() > 1_500,
        "the range holds {} live results",
        live.len()
    );
    assert!(
        stdout.contains(&format!("{} window results", live.len())),
        "{stdout}"
    );
    // The stateful figures are in the range: a replay without the warm-up could not match.
    let stateful = live.values().any(|(_, p)| {
        let w = WindowResult::decode(p).unwrap();
        w.value("pm25_24h_ugm3").is_some() && w.value("pm25_nowcast_ugm3").is_some()
    });
    assert!(
        stateful,
        "no result in the range has 24-h and NowCast figures"
    );
    let missing: Vec<_> = live.keys().filter(|k| !replayed.contains_key(*k)).collect();
    let extra: Vec<_> = replayed.keys().filter(|k| !live.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} live, {} replayed; missing {:?}; extra {:?}",
        live.len(),
        replayed.len(),
        &missing[..missing.len().min(5)],
        &extra[..extra.len().min(5)]
    );
    for (id, (subject, payload)) in &live {
        let (r_subject, r_payload) = &replayed[id];
        assert_eq!(
            r_subject,
            &format!("replay.backfill_a.{subject}"),
            "{id}: subject"
        );
        assert!(r_payload == payload, "{id}: the replayed bytes differ");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_with_five_minute_windows_equals_the_naive_model() {
    let s = scenario(43, 26, 3);
    let end = T0 + 26 * HOUR;
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.toml");
    std::fs::write(&city, &s.city).unwrap();
    let (server, js) = loaded(&s).await;

    let (from, to) = (end - 150 * 60_000, end - 30 * 60_000);
    let stdout = replay(
        &server.url(),
        &[],
        &[
            "--from",
            &rfc3339(from),
            "--to",
            &rfc3339(to),
            "--into",
            "FIVE",
            "--window",
            "5m",
            "--city",
            city.to_str().unwrap(),
            "--quiet",
        ],
    )
    .await;
    let want: BTreeMap<String, WindowResult> = all_windows(&expected(&s, 300_000, 300_000))
        .into_iter()
        .filter(|(_, w)| w.window_start >= from && w.window_end <= to)
        .collect();
    assert!(want.len() > 300, "{} expected windows", want.len());
    assert!(want
        .values()
        .all(|w| w.window_end - w.window_start == 300_000));
    let got: BTreeMap<String, WindowResult> = stored(&js, "FIVE")
        .await
        .into_iter()
        .map(|(id, (subject, payload))| {
            let w = WindowResult::decode(&payload).unwrap();
            assert_eq!(id, w.msg_id());
            assert_eq!(subject, format!("replay.five.{}", w.subject()));
            (id, w)
        })
        .collect();
    naive::assert_same_windows(&want, &got);
    assert!(
        stdout.contains(&format!("{} window results", want.len())),
        "{stdout}"
    );
}
