//! Processors as a consumer group: released binaries started with default settings share the
//! READINGS partitions through leases in the group bucket; a SIGKILLed instance's partitions
//! resume on the others from their checkpoints, and a joining instance takes its share — and
//! METRICS ends up with exactly the window results of one uninterrupted instance, byte for
//! byte, each once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod naive;

use async_nats::jetstream::kv;
use citypulse_harness::{wait_for, NatsServer};
use citypulse_schema::{partition_of, WindowResult};
use common::*;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const GROUP_BUCKET: &str = citypulse_processors::nats::GROUP_BUCKET;

/// Partition → the process id holding its lease (instance ids are `<host>-<pid>-<nonce>`).
async fn leases(js: &async_nats::jetstream::Context) -> BTreeMap<u32, u32> {
    let Ok(store) = js.get_key_value(GROUP_BUCKET).await else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for p in 0..PARTITIONS {
        if let Ok(Some(e)) = store.entry(format!("citypulse.lease.{p}")).await {
            if e.operation != kv::Operation::Put {
                continue;
            }
            let holder = String::from_utf8_lossy(&e.value).to_string();
            let pid = holder.rsplit('-').nth(1).and_then(|t| t.parse().ok());
            if let Some(pid) = pid {
                out.insert(p, pid);
            }
        }
    }
    out
}

/// Every partition leased, by exactly the processes `pids`, balanced: ⌊8/n⌋ or ⌈8/n⌉ each
/// (three instances: 2–3 each).
fn balanced_over(leases: &BTreeMap<u32, u32>, pids: &BTreeSet<u32>) -> bool {
    let holders: BTreeSet<u32> = leases.values().copied().collect();
    let n = pids.len().max(1);
    let (low, high) = (PARTITIONS as usize / n, (PARTITIONS as usize).div_ceil(n));
    leases.len() == PARTITIONS as usize
        && holders == *pids
        && pids.iter().all(|pid| {
            let held = leases.values().filter(|h| *h == pid).count();
            (low..=high).contains(&held)
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_share_the_partitions_survive_a_kill_and_rebalance_on_a_join() {
    // 40 districts (every partition has some), 8 hours of loops, 26 of air: ~178,000 readings.
    let s = scenario_in(21, 40, 26, 8);
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.toml");
    std::fs::write(&city, &s.city).unwrap();
    let city = city.to_str().unwrap().to_owned();
    let flags = ["--idle-timeout", "1h", "--city", &city];

    // The uninterrupted run: one instance, in-process, on its own server.
    let reference = reference_run(NatsServer::start(), &s.readings, 500, &flags).await;
    println!(
        "reference: {} readings, {} window results",
        s.readings.len(),
        reference.len()
    );

    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    create_readings_stream(&js).await;
    let thirds: Vec<&[citypulse_schema::Reading]> =
        s.readings.chunks(s.readings.len().div_ceil(3)).collect();
    publish_batches(&js, thirds[0], 500).await;

    // Every result as it is published (duplicates included), with its arrival time.
    let arrivals: Arc<Mutex<Vec<(Instant, u32, u64)>>> = Arc::default();
    let mut sub = client.subscribe("metrics.>").await.unwrap();
    // The server has the subscription before any processors instance starts.
    citypulse_runtime::nats::round_trip(&client, Duration::from_secs(10))
        .await
        .unwrap();
    let seen = arrivals.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Ok(w) = WindowResult::decode(&m.payload) {
                let p = partition_of(&w.district, PARTITIONS);
                seen.lock()
                    .unwrap()
                    .push((Instant::now(), p, w.window_start));
            }
        }
    });

    let args = |name: &str| -> (Vec<String>, std::path::PathBuf) {
        let mut a: Vec<String> = vec![
            "--nats-url".into(),
            server.url(),
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
        ];
        a.extend(flags.iter().map(|f| f.to_string()));
        (a, dir.path().join(format!("{name}.log")))
    };
    let mut instances: Vec<Binary> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let (a, log) = args(n);
            Binary::spawn(a, log)
        })
        .collect();
    let pids: BTreeSet<u32> = instances.iter().map(Binary::pid).collect();
    wait_for(
        Duration::from_secs(60),
        "three instances sharing 8 partitions",
        || async { balanced_over(&leases(&js).await, &pids) },
    )
    .await;
    wait_for(Duration::from_secs(60), "results flowing", || async {
        metrics_count(&js).await > 0
    })
    .await;

    // Mid-run: more input, SIGKILL the instance holding the most partitions while it works on
    // it, and more input for the survivors to find.
    let (second, third) = thirds[1].split_at(thirds[1].len() / 2);
    let second: &[citypulse_schema::Reading] = second;
    publish_batches(&js, second, 500).await;
    let before = leases(&js).await;
    let victim_pid = *pids
        .iter()
        .max_by_key(|pid| before.values().filter(|h| h == pid).count())
        .unwrap();
    let moved: BTreeSet<u32> = before
        .iter()
        .filter(|(_, h)| **h == victim_pid)
        .map(|(p, _)| *p)
        .collect();
    let victim = instances
        .iter()
        .position(|b| b.pid() == victim_pid)
        .unwrap();
    let mut killed = instances.remove(victim);
    killed.kill().await;
    let t_kill = Instant::now();
    publish_batches(&js, third, 500).await;
    let survivors: BTreeSet<u32> = instances.iter().map(Binary::pid).collect();
    wait_for(
        Duration::from_secs(60),
        "the killed instance's partitions taken over",
        || async { balanced_over(&leases(&js).await, &survivors) },
    )
    .await;
    let t_lease = Instant::now();
    // A window starting after the newest reading the killed instance could have seen cannot
    // close before the new owner reads the input published after the kill.
    let newest_seen = second.iter().map(|r| r.ts).max().unwrap();
    let from_new_owner = |(at, p, start): &(Instant, u32, u64)| {
        (moved.contains(p) && *start > newest_seen).then_some(*at)
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !arrivals
        .lock()
        .unwrap()
        .iter()
        .any(|a| from_new_owner(a).is_some())
    {
        if Instant::now() > deadline {
            let mut per: BTreeMap<u32, (usize, u64)> = BTreeMap::new();
            for (_, p, start) in arrivals.lock().unwrap().iter() {
                let e = per.entry(*p).or_default();
                e.0 += 1;
                e.1 = e.1.max(*start);
            }
            let readings = js.get_stream("READINGS").await.unwrap();
            for p in 0..PARTITIONS {
                if let Ok(i) = readings.consumer_info(format!("processors-p{p}")).await {
                    println!(
                        "p{p}: pending {} ack floor {} delivered {}",
                        i.num_pending, i.ack_floor.stream_sequence, i.delivered.stream_sequence
                    );
                }
            }
            panic!("no result from moved partitions {moved:?} after the kill; newest seen {newest_seen}; per partition (count, newest start): {per:?}; leases {:?}", leases(&js).await);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = arrivals
        .lock()
        .unwrap()
        .iter()
        .filter_map(from_new_owner)
        .min()
        .unwrap();
    println!(
        "takeover of partitions {moved:?}: leases after {:.1} s, first result after {:.1} s (kill → first result from the new owner)",
        (t_lease - t_kill).as_secs_f64(),
        (first - t_kill).as_secs_f64()
    );

    // A fourth instance joins: the partitions spread over three again.
    let (a, log) = args("d");
    instances.push(Binary::spawn(a, log));
    let pids: BTreeSet<u32> = instances.iter().map(Binary::pid).collect();
    let t_join = Instant::now();
    wait_for(
        Duration::from_secs(60),
        "the partitions rebalanced onto the new instance",
        || async { balanced_over(&leases(&js).await, &pids) },
    )
    .await;
    println!("rebalance on join: {:.1} s", t_join.elapsed().as_secs_f64());
    publish_batches(&js, thirds[2], 500).await;

    wait_for(Duration::from_secs(180), "every window result", || async {
        metrics_count(&js).await >= reference.len() as u64
    })
    .await;
    // Anything extra would arrive now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got = stored(&js).await;
    let differing = differing(&reference, &got);
    let logs: String = ["a", "b", "c", "d"]
        .iter()
        .map(|n| std::fs::read_to_string(dir.path().join(format!("{n}.log"))).unwrap_or_default())
        .map(|l| l.lines().rev().take(8).collect::<Vec<_>>().join("\n"))
        .collect::<Vec<_>>()
        .join("\n---\n");
    assert!(
        got.len() == reference.len() && differing.is_empty(),
        "{} results, {} expected; {} differ or are missing, e.g. {:?}\nlog tails:\n{logs}",
        got.len(),
        reference.len(),
        differing.len(),
        differing.first(),
    );
    for mut b in instances {
        b.kill().await;
    }
}

/// Each partition's checkpoint as stored: manifest revision and the verified bytes (an error
/// when it does not load: a torn or overwritten chunk fails its hash).
async fn checkpoints(
    js: &async_nats::jetstream::Context,
    max_payload: usize,
) -> BTreeMap<u32, Result<(u64, Vec<u8>), String>> {
    let kv = js
        .get_key_value(citypulse_processors::nats::CHECKPOINT_BUCKET)
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for p in 0..PARTITIONS {
        let revision = kv
            .entry(citypulse_processors::checkpoint::manifest_key(p))
            .await
            .ok()
            .flatten()
            .map(|e| e.revision)
            .unwrap_or(0);
        let mut store =
            citypulse_processors::nats::CheckpointStore::new(kv.clone(), p, max_payload);
        let loaded = store
            .load()
            .await
            .map(|b| (revision, b.unwrap_or_default()))
            .map_err(|e| e.to_string());
        out.insert(p, loaded);
    }
    out
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_paused_past_its_leases_overwrites_no_checkpoint_when_it_wakes() {
    // Checkpoints larger than a chunk (max_payload 64 KiB), so a write touches chunk keys
    // before the manifest's compare-and-set could refuse it.
    let max_payload = 64 * 1024;
    let s = scenario_in(22, 24, 26, 4);
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.toml");
    std::fs::write(&city, &s.city).unwrap();
    let city = city.to_str().unwrap().to_owned();
    let flags = ["--idle-timeout", "1h", "--city", &city];

    let reference = reference_run(
        NatsServer::start_with_config(&format!("max_payload: {max_payload}")),
        &s.readings,
        100,
        &flags,
    )
    .await;

    let server = NatsServer::start_with_config(&format!("max_payload: {max_payload}"));
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    create_readings_stream(&js).await;
    let quarters: Vec<&[citypulse_schema::Reading]> =
        s.readings.chunks(s.readings.len().div_ceil(4)).collect();
    publish_batches(&js, quarters[0], 100).await;
    let spawn = |name: &str| {
        let mut a: Vec<String> = vec![
            "--nats-url".into(),
            server.url(),
            "--metrics-addr".into(),
            "127.0.0.1:0".into(),
        ];
        a.extend(flags.iter().map(|f| f.to_string()));
        Binary::spawn(a, dir.path().join(format!("{name}.log")))
    };
    let (zombie, other) = (spawn("zombie"), spawn("other"));
    let pids: BTreeSet<u32> = [zombie.pid(), other.pid()].into();
    wait_for(
        Duration::from_secs(60),
        "two instances sharing 8 partitions",
        || async { balanced_over(&leases(&js).await, &pids) },
    )
    .await;

    // Pause one instance while it works on new input: it holds state it has not checkpointed.
    publish_batches(&js, quarters[1], 100).await;
    signal(zombie.pid(), "STOP");
    let alone: BTreeSet<u32> = [other.pid()].into();
    wait_for(
        Duration::from_secs(60),
        "the other instance holding every partition",
        || async { balanced_over(&leases(&js).await, &alone) },
    )
    .await;
    publish_batches(&js, quarters[2], 100).await;
    settle(&js).await;
    let before = checkpoints(&js, max_payload).await;
    assert!(before.values().all(Result::is_ok), "{before:?}");

    // Wake it: it must find its leases gone and stop those partitions without writing.
    signal(zombie.pid(), "CONT");
    let log = dir.path().join("zombie.log");
    wait_for(
        Duration::from_secs(30),
        "the woken instance noticing",
        || async {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            text.contains("lease taken over or expired") || text.contains("no longer held")
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = checkpoints(&js, max_payload).await;
    for p in 0..PARTITIONS {
        let (b, a) = (&before[&p], &after[&p]);
        // The other instance may have checkpointed since (a newer revision), but every stored
        // checkpoint loads, and an unchanged revision has unchanged bytes.
        assert!(
            a.is_ok(),
            "partition {p}: the checkpoint no longer loads: {a:?}"
        );
        if let (Ok((rb, bb)), Ok((ra, ba))) = (b, a) {
            assert!(
                ra > rb || ba == bb,
                "partition {p}: the checkpoint was overwritten"
            );
        }
    }

    // The rest of the input: METRICS equals one uninterrupted instance's.
    publish_batches(&js, quarters[3], 100).await;
    wait_for(Duration::from_secs(120), "every window result", || async {
        metrics_count(&js).await >= reference.len() as u64
    })
    .await;
    settle(&js).await;
    let got = stored(&js).await;
    assert_eq!(got.len(), reference.len());
    assert!(differing(&reference, &got).is_empty());
    drop((zombie, other));
}

/// METRICS of one uninterrupted in-process instance over `readings` (published `per_pull` at a
/// time) on its own `server`: `Nats-Msg-Id` → bytes, each stored once.
async fn reference_run(
    server: NatsServer,
    readings: &[citypulse_schema::Reading],
    per_pull: usize,
    flags: &[&str],
) -> BTreeMap<String, Vec<u8>> {
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    create_readings_stream(&js).await;
    publish_batches(&js, readings, per_pull).await;
    let p = InProcess::start(&server.url(), flags).await;
    settle(&js).await;
    p.stop().await;
    stored(&js).await
}

/// METRICS as stored: `Nats-Msg-Id` → bytes, asserting no result is stored twice.
async fn stored(js: &async_nats::jetstream::Context) -> BTreeMap<String, Vec<u8>> {
    let messages = read_metrics(js).await;
    unique_by_id(&messages);
    messages.into_iter().map(|(id, b, _)| (id, b)).collect()
}

/// The ids of `reference` that `got` lacks or holds with other bytes.
fn differing<'a>(
    reference: &'a BTreeMap<String, Vec<u8>>,
    got: &BTreeMap<String, Vec<u8>>,
) -> Vec<&'a String> {
    reference
        .iter()
        .filter(|(id, bytes)| got.get(*id) != Some(*bytes))
        .map(|(id, _)| id)
        .collect()
}

/// Waits until METRICS has stopped growing for 3 s.
async fn settle(js: &async_nats::jetstream::Context) {
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut last = (0, Instant::now());
    while last.0 == 0 || last.1.elapsed() < Duration::from_secs(3) {
        assert!(Instant::now() < deadline, "METRICS kept growing");
        tokio::time::sleep(Duration::from_millis(250)).await;
        let n = metrics_count(js).await;
        if n != last.0 {
            last = (n, Instant::now());
        }
    }
}

/// Publishes like [`publish_batches`], retrying each message under its `Nats-Msg-Id` until
/// acked (a stream leader election after a node's death refuses publishes for a moment).
async fn publish_batches_retrying(
    js: &async_nats::jetstream::Context,
    readings: &[citypulse_schema::Reading],
) {
    use citypulse_schema::batch;
    for pull in readings.chunks(100) {
        let mut groups: BTreeMap<u32, (String, Vec<Vec<u8>>)> = BTreeMap::new();
        for r in pull {
            let g = groups
                .entry(partition_of(&r.district, PARTITIONS))
                .or_insert_with(|| (r.district.clone(), Vec::new()));
            g.1.push(r.encode());
        }
        for (p, (district, items)) in groups {
            let id = format!("batch:{p}:{}", pull[0].msg_id());
            let payload = bytes::Bytes::from(batch::encode_batch(&items));
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let mut h = async_nats::HeaderMap::new();
                h.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
                let sent = js
                    .publish_with_headers(batch::batch_subject(&district), h, payload.clone())
                    .await;
                if let Ok(ack) = sent {
                    if ack.await.is_ok() {
                        break;
                    }
                }
                assert!(Instant::now() < deadline, "publish {id} not acked in 60 s");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_node_cluster_a_killed_node_loses_and_doubles_nothing() {
    use citypulse_harness::NatsCluster;
    use citypulse_runtime::stream_config::{self, Limits};
    let s = scenario_in(23, 16, 26, 4);
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.toml");
    std::fs::write(&city, &s.city).unwrap();
    let city = city.to_str().unwrap().to_owned();
    let flags = ["--idle-timeout", "1h", "--city", &city];

    let reference = reference_run(NatsServer::start(), &s.readings, 100, &flags).await;
    let flags = [&flags[..], &["--stream-replicas", "3"]].concat();

    // READINGS (ingest's) with 3 replicas; the processors create METRICS and their buckets with
    // --stream-replicas 3.
    let mut cluster = NatsCluster::start();
    let js = async_nats::jetstream::new(async_nats::connect(cluster.node(0).url()).await.unwrap());
    let r3 = |l: Limits| Limits { replicas: 3, ..l };
    let readings = stream_config::readings(
        r3(Limits {
            max_bytes: 256 << 20,
            ..Limits::READINGS
        }),
        PARTITIONS,
    );
    citypulse_harness::create_stream_patiently(&js, readings).await;
    let halves: Vec<&[citypulse_schema::Reading]> =
        s.readings.chunks(s.readings.len().div_ceil(2)).collect();
    publish_batches_retrying(&js, halves[0]).await;
    let urls = cluster.urls().join(",");
    let mut instances: Vec<Binary> = ["a", "b", "c"]
        .iter()
        .map(|n| {
            let mut a: Vec<String> = vec![
                "--nats-url".into(),
                urls.clone(),
                "--metrics-addr".into(),
                "127.0.0.1:0".into(),
            ];
            a.extend(flags.iter().map(|f| f.to_string()));
            Binary::spawn(a, dir.path().join(format!("{n}.log")))
        })
        .collect();
    let pids: BTreeSet<u32> = instances.iter().map(Binary::pid).collect();
    wait_for(
        Duration::from_secs(60),
        "three instances sharing 8 partitions",
        || async { balanced_over(&leases(&js).await, &pids) },
    )
    .await;
    for stream in [
        "METRICS".to_owned(),
        format!("KV_{}", citypulse_processors::nats::CHECKPOINT_BUCKET),
        format!("KV_{GROUP_BUCKET}"),
    ] {
        let mut handle = js.get_stream(&stream).await.unwrap();
        let replicas = handle.info().await.unwrap().config.num_replicas;
        assert_eq!(replicas, 3, "{stream} is not replicated");
    }
    wait_for(Duration::from_secs(60), "results flowing", || async {
        metrics_count(&js).await > 0
    })
    .await;

    // SIGKILL a node the test's own connection does not use, mid-run; bring it back later.
    let (during, after) = halves[1].split_at(halves[1].len() / 2);
    cluster.kill_node(2);
    publish_batches_retrying(&js, during).await;
    cluster.restart_node(2);
    publish_batches_retrying(&js, after).await;
    wait_for(Duration::from_secs(180), "every window result", || async {
        metrics_count(&js).await >= reference.len() as u64
    })
    .await;
    settle(&js).await;
    let got = stored(&js).await;
    let differing = differing(&reference, &got).len();
    assert!(
        got.len() == reference.len() && differing == 0,
        "{} results, {} expected, {differing} differ or are missing",
        got.len(),
        reference.len()
    );
    // Every instance is still running: they reconnected by themselves.
    for b in &mut instances {
        assert!(b.child.try_wait().unwrap().is_none(), "an instance exited");
    }
}
