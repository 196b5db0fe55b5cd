//! Killing the processors (SIGKILL of the real binary) again and again during a run changes
//! nothing a subscriber sees: METRICS ends up with exactly the window results of an
//! uninterrupted run, byte for byte, each once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod naive;

use citypulse_harness::{wait_for, NatsServer};
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_processors_repeatedly_changes_nothing_a_subscriber_sees() {
    let s = scenario(11, 26, 2);
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.toml");
    std::fs::write(&city, &s.city).unwrap();
    let city = city.to_str().unwrap().to_owned();
    let want = all_windows(&expected(&s, 60_000, 60_000));

    // The uninterrupted run, in-process, on its own server.
    let reference: BTreeMap<String, Vec<u8>> = {
        let server = NatsServer::start();
        let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
        create_readings_stream(&js).await;
        publish_readings(&js, &s.readings).await;
        let p = InProcess::start(&server.url(), &["--idle-timeout", "1h", "--city", &city]).await;
        wait_for(Duration::from_secs(60), "the reference run", || async {
            metrics_count(&js).await >= want.len() as u64
        })
        .await;
        p.stop().await;
        let messages = read_metrics(&js).await;
        let got = unique_by_id(&messages);
        naive::assert_same_windows(&want, &got);
        messages
            .into_iter()
            .map(|(id, bytes, _)| (id, bytes))
            .collect()
    };

    // The same readings, delivered in five parts, to a binary killed twice per part.
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    create_readings_stream(&js).await;
    let args: Vec<String> = [
        "--nats-url",
        &server.url(),
        "--idle-timeout",
        "1h",
        "--city",
        &city,
        "--metrics-addr",
        "127.0.0.1:0",
        "--checkpoint-interval",
        "300ms",
        "--batch-size",
        "200",
    ]
    .iter()
    .map(|a| a.to_string())
    .collect();
    let log = dir.path().join("processors.log");
    let mut bin = Binary::spawn(args, log.clone());
    let parts = 5;
    let per = s.readings.len().div_ceil(parts);
    for part in s.readings.chunks(per) {
        publish_readings(&js, part).await;
        for _ in 0..2 {
            let before = metrics_count(&js).await;
            if before >= reference.len() as u64 {
                break;
            }
            // Kill as soon as results start to flow: mid-batch, mid-publish or mid-checkpoint.
            wait_for(Duration::from_secs(60), "new window results", || async {
                metrics_count(&js).await > before
            })
            .await;
            bin.crash_and_restart().await;
        }
    }
    wait_for(Duration::from_secs(60), "every window result", || async {
        metrics_count(&js).await >= reference.len() as u64
    })
    .await;
    let messages = read_metrics(&js).await;
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        bin.starts >= 8,
        "the binary was killed {} times",
        bin.starts - 1
    );
    // Each window once (unique_by_id panics on a second copy), and the same bytes as the
    // uninterrupted run's.
    unique_by_id(&messages);
    let got: BTreeMap<String, Vec<u8>> = messages
        .into_iter()
        .map(|(id, bytes, _)| (id, bytes))
        .collect();
    let differing: Vec<&String> = reference
        .iter()
        .filter(|(id, bytes)| got.get(*id) != Some(bytes))
        .map(|(id, _)| id)
        .collect();
    assert!(
        got.len() == reference.len() && differing.is_empty(),
        "{} results, {} expected; {} differ or are missing, e.g. {:?}\nprocessors log tail:\n{}",
        got.len(),
        reference.len(),
        differing.len(),
        differing.first(),
        logs.lines().rev().take(20).collect::<Vec<_>>().join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_crash_mid_stream_loses_and_doubles_nothing() {
    let s = scenario(13, 26, 2);
    let mut server = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    create_readings_stream(&js).await;
    let (first, second) = s.readings.split_at(s.readings.len() / 2);
    publish_readings(&js, first).await;
    let p = InProcess::start(
        &server.url(),
        &["--idle-timeout", "1h", "--checkpoint-interval", "200ms"],
    )
    .await;
    wait_for(Duration::from_secs(60), "results flowing", || async {
        metrics_count(&js).await > 0
    })
    .await;
    // SIGKILL the server while the processors work (deliveries, publishes and checkpoint writes
    // in flight are lost), and start it again on the same store.
    server.restart();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    publish_readings(&js, second).await;
    let mut no_registry = s;
    no_registry.free_flow.clear();
    no_registry.capacity.clear();
    let want = all_windows(&expected(&no_registry, 60_000, 60_000));
    wait_for(Duration::from_secs(60), "every window result", || async {
        metrics_count(&js).await >= want.len() as u64
    })
    .await;
    naive::assert_same_windows(&want, &unique_by_id(&read_metrics(&js).await));
    p.stop().await;
}
