//! Several ingest instances in one group with the real binary: the validator and the archive
//! each run on one instance at a time. SIGKILL the instance running the validator mid-run, then
//! (after a third one joined) the one running the archive: every valid reading ends on READINGS
//! exactly once and in PostgreSQL exactly once, every invalid one in DLQ exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use async_nats::jetstream::kv;
use citypulse_harness::{wait_for, NatsServer, Postgres};
use citypulse_runtime::jetstream::publish_durably;
use citypulse_runtime::publish::Outgoing;
use citypulse_runtime::shutdown::Shutdown;
use common::*;
use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(60);
const SENSORS: u32 = 40;
const K: u32 = 4000;

/// Message `i`: every tenth one is not a reading (dead-lettered), the others valid readings.
fn invalid(i: u32) -> bool {
    i % 10 == 9
}

/// Publishes messages `from..to` to RAW, each retried until acknowledged, counting them.
async fn publish(js: async_nats::jetstream::Context, from: u32, to: u32, sent: Arc<AtomicU32>) {
    let shutdown = Shutdown::new();
    for i in from..to {
        let (subject, id, payload) = if invalid(i) {
            (
                "sensors.d01.air.aq-9999".to_owned(),
                format!("garbage-{i}"),
                format!("not a reading {i}").into_bytes(),
            )
        } else {
            let r = reading(i % SENSORS, u64::from(i / SENSORS), now_ms());
            (raw_subject(&r), r.msg_id(), r.encode())
        };
        publish_durably(
            &js,
            &Outgoing::new(subject, id, payload.into()),
            &shutdown,
            |_| {},
        )
        .await
        .unwrap();
        sent.fetch_add(1, Ordering::Relaxed);
        // Rate shaping (not synchronisation): keeps the stream flowing across a takeover.
        if i % 5 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

struct Instance {
    child: tokio::process::Child,
    pid: u32,
    name: &'static str,
}

fn spawn(args: &[String], dir: &std::path::Path, name: &'static str) -> Instance {
    let log = std::fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_citypulse-ingest"))
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    Instance { child, pid, name }
}

/// The process id of the holder of each lease (units 0 = validator, 1 = archive).
async fn holders(kv: &kv::Store) -> [Option<u32>; 2] {
    let mut out = [None, None];
    for (unit, slot) in out.iter_mut().enumerate() {
        if let Ok(Some(v)) = kv.get(format!("citypulse.lease.{unit}")).await {
            // `<host>-<pid>-<nanos>`
            let id = String::from_utf8_lossy(&v).into_owned();
            *slot = id.rsplit('-').nth(1).and_then(|p| p.parse().ok());
        }
    }
    out
}

/// Waits until the two stages run on two different live instances of `xs`.
async fn wait_split(kv: &kv::Store, xs: &[&Instance]) -> [u32; 2] {
    let pids: Vec<u32> = xs.iter().map(|x| x.pid).collect();
    let live = |h: [Option<u32>; 2]| match h {
        [Some(a), Some(b)] if a != b && pids.contains(&a) && pids.contains(&b) => Some([a, b]),
        _ => None,
    };
    wait_for(WAIT, "the two stages on two live instances", || async {
        live(holders(kv).await).is_some()
    })
    .await;
    live(holders(kv).await).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_instance_running_a_stage_moves_it_and_loses_and_duplicates_nothing() {
    let nats = NatsServer::start();
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let args = args(&nats.url(), Some(&pg.url()));
    let js = jetstream(&nats.url()).await;
    let mut a = spawn(&args, dir.path(), "a");
    wait_for(WAIT, "the group bucket", || async {
        js.get_key_value("citypulse_ingest_group").await.is_ok()
    })
    .await;
    let kv = js.get_key_value("citypulse_ingest_group").await.unwrap();
    let b = spawn(&args, dir.path(), "b");
    let [validator, _] = wait_split(&kv, &[&a, &b]).await;

    // 1. Kill the instance running the validator in mid-stream.
    let sent = Arc::new(AtomicU32::new(0));
    let first = K / 2;
    let publisher = tokio::spawn(publish(js.clone(), 0, first, sent.clone()));
    wait_for(WAIT, "the validator making progress", || async {
        readings_len(&js).await > 300
    })
    .await;
    let (mut dead, survivor) = if a.pid == validator { (a, b) } else { (b, a) };
    let killed = Instant::now();
    dead.child.kill().await.unwrap(); // SIGKILL
    assert!(
        sent.load(Ordering::Relaxed) < first,
        "the publisher had finished"
    );
    wait_for(WAIT, "the survivor running the validator", || async {
        holders(&kv).await[0] == Some(survivor.pid)
    })
    .await;
    println!(
        "validator takeover ({} killed): {:?}",
        dead.name,
        killed.elapsed()
    );
    publisher.await.unwrap();

    // 2. A third instance joins and takes one stage; kill the one running the archive.
    a = spawn(&args, dir.path(), "c");
    let [_, archive] = wait_split(&kv, &[&survivor, &a]).await;
    let publisher = tokio::spawn(publish(js.clone(), first, K, sent.clone()));
    let before = archived(&pg.url()).await.map_or(0, |(n, _)| n);
    wait_for(WAIT, "the archive making progress", || async {
        archived(&pg.url()).await.map_or(0, |(n, _)| n) > before + 300
    })
    .await;
    let (mut dead, survivor) = if a.pid == archive {
        (a, survivor)
    } else {
        (survivor, a)
    };
    let killed = Instant::now();
    dead.child.kill().await.unwrap();
    assert!(
        sent.load(Ordering::Relaxed) < K,
        "the publisher had finished"
    );
    wait_for(WAIT, "the survivor running the archive", || async {
        holders(&kv).await[1] == Some(survivor.pid)
    })
    .await;
    println!(
        "archive takeover ({} killed): {:?}",
        dead.name,
        killed.elapsed()
    );
    publisher.await.unwrap();
    assert_eq!(sent.load(Ordering::Relaxed), K);

    let valid = (0..K).filter(|i| !invalid(*i)).count();
    let invalid_n = K as usize - valid;
    wait_for(WAIT, "every message validated and archived", || async {
        readings_len(&js).await >= valid as u64
            && stream_len(&js, "DLQ").await >= invalid_n as u64
            && archived(&pg.url()).await.map(|(n, _)| n) >= Some(valid as i64)
    })
    .await;
    // Every valid reading once on READINGS and once in PostgreSQL, each sensor's in order (the
    // partition's readings in RAW order, as the processors' event time needs them).
    let mut newest: HashMap<String, u64> = HashMap::new();
    for (_, r) in all_readings(&js).await {
        if let Some(before) = newest.insert(r.sensor.clone(), r.seq) {
            assert!(
                before < r.seq,
                "{} seq {} after {before} on READINGS",
                r.sensor,
                r.seq
            );
        }
    }
    // One validator at a time: each partition's batches follow RAW (their Citypulse-Raw-Last
    // grows), whoever published them.
    let mut through: HashMap<String, u64> = HashMap::new();
    for m in all_messages(&js, "READINGS").await {
        let partition = m.subject.split('.').nth(1).unwrap().to_owned();
        let last: u64 = m
            .headers
            .get(citypulse_ingest::pipeline::HEADER_RAW_LAST)
            .unwrap()
            .as_str()
            .parse()
            .unwrap();
        if let Some(before) = through.insert(partition.clone(), last) {
            assert!(
                before < last,
                "partition {partition}: a batch through RAW {last} after one through {before}"
            );
        }
    }
    let ids = readings_per_id(&js).await;
    assert_eq!(ids.len(), valid, "distinct readings on READINGS");
    for i in (0..K).filter(|i| !invalid(*i)) {
        let id = reading(i % SENSORS, u64::from(i / SENSORS), 0).msg_id();
        assert_eq!(ids.get(&id), Some(&1), "{id} on READINGS");
    }
    assert_eq!(
        archived(&pg.url()).await,
        Some((valid as i64, valid as i64))
    );
    // Every invalid message once in DLQ.
    let mut letters: HashMap<String, usize> = HashMap::new();
    for m in all_messages(&js, "DLQ").await {
        let payload = String::from_utf8_lossy(&m.payload).into_owned();
        *letters.entry(payload).or_insert(0) += 1;
    }
    assert_eq!(letters.len(), invalid_n, "distinct dead letters");
    assert!(letters.values().all(|n| *n == 1), "a dead letter twice");
    for i in (0..K).filter(|i| invalid(*i)) {
        assert!(letters.contains_key(&format!("not a reading {i}")), "{i}");
    }
    drop(survivor);
}
