//! `citypulse-processors replay` (the real binary) against a real nats-server: with the live
//! settings it republishes, byte for byte and id for id, what the live service published for the
//! range; with other windows it computes what an independent naive model expects; and from RAW
//! through ingest's validator (READINGS purged) it republishes the live results too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod naive;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use citypulse_harness::{wait_for, NatsServer};
use citypulse_runtime::shutdown::Shutdown;
use citypulse_schema::{batch, streams, Measurement, Reading, SensorSubject, WindowResult};
use clap::Parser;
use common::*;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

    assert_replayed_equals_live(&js, &stdout, (from, to), "BACKFILL_A").await;
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

/// How many readings READINGS holds (ingest stores a batch per partition and RAW pull).
async fn readings_held(js: &Context) -> u64 {
    let mut s = js.get_stream(streams::READINGS).await.unwrap();
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
    let mut readings = 0;
    for _ in 0..total {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("READINGS delivers")
            .unwrap()
            .unwrap();
        assert!(batch::is_batch_subject(&m.subject), "{}", m.subject);
        readings += batch::decode_batch(&m.payload).unwrap().len() as u64;
    }
    readings
}

/// Publishes `(subject, reading, with a Nats-Msg-Id)` to RAW as devices do, in order.
async fn publish_raw(js: &Context, messages: &[(String, Reading, bool)]) {
    for chunk in messages.chunks(500) {
        let mut acks = Vec::with_capacity(chunk.len());
        for (subject, r, with_id) in chunk {
            let mut h = HeaderMap::new();
            if *with_id {
                h.insert(async_nats::header::NATS_MESSAGE_ID, r.msg_id().as_str());
            }
            acks.push(
                js.publish_with_headers(subject.clone(), h, r.encode().into())
                    .await
                    .unwrap(),
            );
        }
        for a in acks {
            a.await.unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_raw_after_readings_is_purged_is_byte_identical_to_the_live_results() {
    // The scenario of the READINGS test, moved to end an hour or two ago (ingest checks event
    // times against its clock), sent to RAW as devices send it, with what ingest exists for:
    // normalised values, invalid messages (one from the future, one beyond physics, one
    // speaking for another district) and repeats.
    let s = scenario(47, 26, 3);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let end = now - now % HOUR - HOUR;
    let shift = end - (T0 + 26 * HOUR);
    let mut readings = s.readings.clone();
    let mut rng = Rng::new(47);
    for r in &mut readings {
        r.ts += shift;
        match &mut r.data {
            // Adjusted by ingest: speed without vehicles dropped, slightly negative PM clamped.
            Measurement::Traffic(t) if t.count == 0 && rng.below(3) == 0 => {
                t.speed_kmh = Some(42.0);
            }
            Measurement::Air(a) if rng.below(20) == 0 => a.pm25_ugm3 = Some(-0.5),
            _ => {}
        }
    }
    let subject = |r: &Reading| {
        SensorSubject::new(&r.district, r.kind(), &r.sensor)
            .unwrap()
            .sensors_subject()
    };
    let mut raw: Vec<(String, Reading, bool)> = readings
        .iter()
        .map(|r| (subject(r), r.clone(), true))
        .collect();
    let n = raw.len();
    let traffic = |i: usize| matches!(raw[i].1.data, Measurement::Traffic(_));
    let (future, beyond, foreign) = (
        (n / 2..n).find(|&i| traffic(i)).unwrap(),
        (n / 3..n).find(|&i| traffic(i)).unwrap(),
        (2 * n / 3..n).find(|&i| traffic(i)).unwrap(),
    );
    // Two hours ahead of the clock: would push its partition's watermark past the range.
    raw[future].1.ts = now + 2 * HOUR;
    if let Measurement::Traffic(t) = &mut raw[beyond].1.data {
        t.count = 10_000;
    }
    raw[foreign].0 = raw[foreign].0.replacen(&raw[foreign].1.district, "d99", 1);
    // 200 repeats of earlier readings (no Msg-Id: RAW stores them), 3 messages later (the
    // duplicate guard's) or 100 (behind the watermark by then).
    for k in 0..200 {
        let at = n / 4 + k * 37;
        let mut copy = raw[at - if k % 2 == 0 { 3 } else { 100 }].clone();
        copy.2 = false;
        raw.insert(at, copy);
    }

    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.toml");
    std::fs::write(&city, &s.city).unwrap();
    let city = city.to_str().unwrap();
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());

    // Ingest (in-process, its default time limits) and the live processors.
    let ingest_shutdown = Shutdown::new();
    let ingest_registry = prometheus::Registry::new();
    let ingest = {
        let config = citypulse_ingest::Config::try_parse_from([
            "citypulse-ingest",
            "--nats-url",
            &server.url(),
            "--metrics-addr",
            "127.0.0.1:0",
            "--raw-max-bytes",
            "128MiB",
            "--readings-max-bytes",
            "128MiB",
            "--dlq-max-bytes",
            "16MiB",
        ])
        .unwrap();
        let (client, shutdown, registry) = (
            client.clone(),
            ingest_shutdown.clone(),
            ingest_registry.clone(),
        );
        tokio::spawn(
            async move { citypulse_ingest::run(config, client, &registry, shutdown).await },
        )
    };
    wait_for(Duration::from_secs(30), "RAW provisioned", || async {
        js.get_stream(streams::RAW).await.is_ok()
    })
    .await;
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
    publish_raw(&js, &raw).await;
    let raw_count = raw.len() as u64;
    wait_for(Duration::from_secs(60), "ingest to settle RAW", || async {
        let Ok(stream) = js.get_stream(streams::RAW).await else {
            return false;
        };
        let Ok(mut c) = stream.get_consumer::<pull::Config>("ingest").await else {
            return false;
        };
        c.info().await.is_ok_and(|i| {
            i.num_pending == 0 && i.num_ack_pending == 0 && i.ack_floor.stream_sequence >= raw_count
        })
    })
    .await;
    let ingest_counter = |name: &str| -> f64 {
        ingest_registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_counter().get_value())
            .sum()
    };
    assert_eq!(ingest_counter("citypulse_ingest_rejected_total"), 3.0);
    assert!(ingest_counter("citypulse_ingest_adjusted_total") > 10.0);
    assert!(ingest_counter("citypulse_ingest_duplicates_total") > 0.0);
    let held = readings_held(&js).await;
    wait_for(
        Duration::from_secs(60),
        "the live processors to read READINGS",
        || async { live.counter("citypulse_processors_readings_total", &[]) as u64 >= held },
    )
    .await;
    live.stop().await;
    ingest_shutdown.trigger();
    ingest.await.unwrap().unwrap();

    // READINGS ages out.
    let mut stream = js.get_stream(streams::READINGS).await.unwrap();
    stream.purge().await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 0);

    let (from, to) = (end - 150 * 60_000, end - 30 * 60_000);
    let stdout = replay(
        &server.url(),
        &["--idle-timeout", "1h", "--city", city],
        &[
            "--source",
            "raw",
            "--from",
            &rfc3339(from),
            "--to",
            &rfc3339(to),
            "--into",
            "FROM_RAW",
            "--quiet",
        ],
    )
    .await;

    assert_replayed_equals_live(&js, &stdout, (from, to), "FROM_RAW").await;
    // The validator's verdicts: the three invalid messages; repeats dropped by the guard.
    assert!(stdout.contains(" 3 invalid, "), "{stdout}");
    assert!(
        !stdout.contains("rejected 0)"),
        "the duplicate guard drops repeats: {stdout}"
    );
}

/// Asserts that the replay into stream `into` holds exactly the live METRICS results of the range
/// — the same ids and bytes, on `replay.<into, lowercase>.` + the live subject — that the range
/// is substantial (over 1,500 results, some with 24-h and NowCast figures, which a replay without
/// the warm-up could not match) and that the replay's summary counted them.
async fn assert_replayed_equals_live(
    js: &Context,
    stdout: &str,
    (from, to): (u64, u64),
    into: &str,
) {
    let live: Stored = stored(js, "METRICS")
        .await
        .into_iter()
        .filter(|(_, (_, payload))| {
            let w = WindowResult::decode(payload).unwrap();
            w.window_start >= from && w.window_end <= to
        })
        .collect();
    let replayed = stored(js, into).await;
    assert!(
        live.len() > 1_500,
        "the range holds {} live results",
        live.len()
    );
    assert!(
        stdout.contains(&format!("{} window results", live.len())),
        "{stdout}"
    );
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
    let prefix = format!("replay.{}.", into.to_lowercase());
    let mut differ = Vec::new();
    for (id, (subject, payload)) in &live {
        let (r_subject, r_payload) = &replayed[id];
        assert_eq!(r_subject, &format!("{prefix}{subject}"), "{id}: subject");
        if r_payload != payload {
            differ.push(id);
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} replayed results differ from live, e.g. {:?}",
        differ.len(),
        live.len(),
        &differ[..differ.len().min(5)]
    );
}
