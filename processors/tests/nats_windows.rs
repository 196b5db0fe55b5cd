//! Through a real nats-server: readings published as ingest publishes them produce, on
//! `metrics.…`, exactly the window results an independent naive recomputation expects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod naive;

use citypulse_harness::{wait_for, NatsServer};
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_window_of_a_26_hour_run_equals_an_independent_recomputation() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    create_readings_stream(&js).await;

    let s = scenario(7, 26, 2);
    let dir = tempfile::tempdir().unwrap();
    let city = dir.path().join("city.toml");
    std::fs::write(&city, &s.city).unwrap();
    let expected = expected(&s, 60_000, 60_000);
    let want = all_windows(&expected);
    let late: usize = expected.iter().map(|e| e.late).sum();
    assert!(
        late > 20,
        "the scenario must include late readings ({late})"
    );
    // The run exercises every figure: 24-h and 8-h means, NowCast, learned and registry
    // free-flow speeds, congestion shares.
    let some = |metric: &str, sensor: Option<&str>| {
        want.values().any(|w| {
            w.value(metric).is_some() && sensor.is_none_or(|s| w.sensor.as_deref() == Some(s))
        })
    };
    for metric in [
        "pm25_24h_ugm3",
        "pm10_24h_ugm3",
        "o3_8h_ppb",
        "co_8h_ppm",
        "pm25_nowcast_ugm3",
        "eaqi",
        "congested_share",
    ] {
        assert!(some(metric, None), "no window has {metric}");
    }
    assert!(
        some("congestion_index", Some("loop-d01-3")),
        "free-flow speed is learned"
    );
    assert!(
        some("congestion_index", Some("loop-d01-0")),
        "free-flow speed from the city file"
    );

    publish_readings(&js, &s.readings).await;
    let p = InProcess::start(
        &server.url(),
        &["--idle-timeout", "1h", "--city", city.to_str().unwrap()],
    )
    .await;
    wait_for(Duration::from_secs(60), "every window result", || async {
        metrics_count(&js).await >= want.len() as u64
    })
    .await;
    let got = unique_by_id(&read_metrics(&js).await);
    naive::assert_same_windows(&want, &got);

    // Every reading got exactly one outcome, and the same as the model's.
    let accepted: usize = expected.iter().map(|e| e.accepted).sum();
    let rejected: usize = expected.iter().map(|e| e.rejected).sum();
    let count = |outcome| {
        p.counter(
            "citypulse_processors_readings_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(count("accepted") as usize, accepted);
    assert_eq!(count("late") as usize, late);
    assert_eq!(count("rejected") as usize, rejected);
    assert_eq!(accepted + late + rejected, s.readings.len());
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_partition_closes_its_windows_by_idle_advance() {
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    create_readings_stream(&js).await;
    let s = scenario(3, 1, 1);
    // Two readings of one detector late in the first minute, then silence.
    let mut first: Vec<_> = s
        .readings
        .iter()
        .filter(|r| r.sensor == "loop-d01-0" && r.ts < T0 + 60_000)
        .cloned()
        .collect();
    assert_eq!(first.len(), 2);
    first[0].ts = T0 + 30_000;
    first[1].ts = T0 + 59_500;
    publish_readings(&js, &first).await;
    let p = InProcess::start(
        &server.url(),
        &["--idle-timeout", "300ms", "--allowed-lateness", "0s"],
    )
    .await;
    // No reading reaches the end of the minute: only idle advance can close it.
    wait_for(
        Duration::from_secs(20),
        "the minute closed by idle advance",
        || async { metrics_count(&js).await == 2 },
    )
    .await;
    let got = unique_by_id(&read_metrics(&js).await);
    assert!(got
        .values()
        .all(|w| w.window_end == T0 + 60_000 && w.readings == 2));
    // A reading the event-time watermark would still have taken is late: counted, not merged.
    let mut straggler = first[1].clone();
    straggler.seq += 1;
    straggler.ts = T0 + 59_800;
    publish_readings(&js, &[straggler]).await;
    wait_for(
        Duration::from_secs(20),
        "the straggler counted as late",
        || async {
            p.counter(
                "citypulse_processors_late_readings_total",
                &[("reason", "idle_advanced")],
            ) == 1.0
        },
    )
    .await;
    assert_eq!(metrics_count(&js).await, 2, "nothing republished");
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_owning_disjoint_partitions_together_produce_every_window() {
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    create_readings_stream(&js).await;
    let mut s = scenario(5, 3, 1);
    // Learned free-flow speeds: no registry here.
    s.free_flow.clear();
    s.capacity.clear();
    let want = all_windows(&expected(&s, 60_000, 60_000));
    publish_readings(&js, &s.readings).await;
    let args = |parts: &'static str| ["--idle-timeout", "1h", "--partitions", parts];
    let a = InProcess::start(&server.url(), &args("0,1,2,3")).await;
    let b = InProcess::start(&server.url(), &args("4,5,6,7")).await;
    wait_for(Duration::from_secs(60), "every window result", || async {
        metrics_count(&js).await >= want.len() as u64
    })
    .await;
    naive::assert_same_windows(&want, &unique_by_id(&read_metrics(&js).await));
    let a_took = a.counter("citypulse_processors_readings_total", &[]);
    let b_took = b.counter("citypulse_processors_readings_total", &[]);
    assert!(
        a_took > 0.0 && b_took > 0.0,
        "both instances worked: {a_took} {b_took}"
    );
    assert_eq!((a_took + b_took) as usize, s.readings.len());
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_count_other_than_the_streams_is_refused_and_metrics_dedupe_for_ten_minutes() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    create_readings_stream(&js).await;
    let err = citypulse_processors::run(
        settings(&["--partition-count", "4"]),
        client,
        &prometheus::Registry::new(),
        citypulse_runtime::shutdown::Shutdown::new(),
    )
    .await
    .expect_err("8 partitions in the stream, 4 configured");
    assert!(err.to_string().contains("--partition-count 4"), "{err}");
    let mut metrics = js.get_stream("METRICS").await.unwrap();
    let dup = metrics.info().await.unwrap().config.duplicate_window;
    assert!(dup >= Duration::from_secs(600), "{dup:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_restart_resumes_where_it_stopped_and_republishes_nothing() {
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    create_readings_stream(&js).await;
    let mut s = scenario(17, 6, 1);
    s.free_flow.clear();
    s.capacity.clear();
    let want = all_windows(&expected(&s, 60_000, 60_000));
    let (first, second) = s.readings.split_at(s.readings.len() / 2);
    publish_readings(&js, first).await;
    let args = ["--idle-timeout", "1h"];
    let p = InProcess::start(&server.url(), &args).await;
    wait_for(
        Duration::from_secs(60),
        "the first half folded in",
        || async { p.counter("citypulse_processors_readings_total", &[]) as usize == first.len() },
    )
    .await;
    p.stop().await;
    let before = metrics_count(&js).await;
    publish_readings(&js, second).await;
    let p = InProcess::start(&server.url(), &args).await;
    wait_for(Duration::from_secs(60), "every window result", || async {
        metrics_count(&js).await >= want.len() as u64
    })
    .await;
    naive::assert_same_windows(&want, &unique_by_id(&read_metrics(&js).await));
    // The second run took only the second half, and had nothing left to republish.
    assert_eq!(
        p.counter("citypulse_processors_readings_total", &[]) as usize,
        second.len()
    );
    assert_eq!(
        p.counter("citypulse_processors_published_duplicates_total", &[]),
        0.0
    );
    assert!(before > 0);
    p.stop().await;
}

/// A drained backlog is acked about a second after it drains, however long
/// `--checkpoint-interval` is (the cadence's caught-up checkpoint, through the service; the
/// case of a checkpoint within the draining batch is `cadence::tests`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_backlog_is_acked_without_waiting_for_the_checkpoint_interval() {
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    create_readings_stream(&js).await;
    let s = scenario(7, 26, 2);
    publish_readings(&js, &s.readings).await;
    let p = InProcess::start(
        &server.url(),
        &["--idle-timeout", "1h", "--checkpoint-interval", "1h"],
    )
    .await;
    wait_for(
        Duration::from_secs(120),
        "every READINGS message acked",
        || async {
            let stream = js.get_stream("READINGS").await.unwrap();
            for n in 0..PARTITIONS {
                let Ok(mut c) = stream
                    .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&format!(
                        "processors-p{n}"
                    ))
                    .await
                else {
                    return false;
                };
                if !c
                    .info()
                    .await
                    .is_ok_and(|i| i.num_pending == 0 && i.num_ack_pending == 0)
                {
                    return false;
                }
            }
            true
        },
    )
    .await;
    assert_eq!(
        p.counter("citypulse_processors_readings_total", &[]) as usize,
        s.readings.len()
    );
    p.stop().await;
}

/// The upgrade path from v0.1: READINGS holds single readings (as ingest v0.1 wrote them), then
/// batches (as v0.2 writes them); the processors take both, in order, and the windows equal the
/// naive model of all readings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v0_1_readings_stream_drains_and_then_batches_follow() {
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    create_readings_stream(&js).await;
    let mut s = scenario(29, 6, 1);
    s.free_flow.clear();
    s.capacity.clear();
    let want = all_windows(&expected(&s, 60_000, 60_000));
    let (old, new) = s.readings.split_at(s.readings.len() / 3);
    publish_readings(&js, old).await;
    publish_batches(&js, new, 250).await;
    let p = InProcess::start(&server.url(), &["--idle-timeout", "1h"]).await;
    wait_for(Duration::from_secs(60), "every window result", || async {
        metrics_count(&js).await >= want.len() as u64
    })
    .await;
    naive::assert_same_windows(&want, &unique_by_id(&read_metrics(&js).await));
    assert_eq!(
        p.counter("citypulse_processors_readings_total", &[]) as usize,
        s.readings.len()
    );
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_readings_are_counted_and_dead_lettered_and_the_partition_goes_on() {
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    create_readings_stream(&js).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "DLQ".into(),
        subjects: vec!["dlq.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let s = scenario(19, 1, 1);
    let mut readings: Vec<_> = s.readings.iter().take(400).cloned().collect();
    // An occupancy above 1 (ingest would have refused it), and the same reading twice.
    let mut bad = readings[10].clone();
    if let citypulse_schema::Measurement::Traffic(t) = &mut bad.data {
        t.occupancy = 1.5;
    }
    bad.seq += 100_000;
    readings.insert(11, bad.clone());
    publish_readings(&js, &readings[..22]).await;
    // The same reading again under another Nats-Msg-Id (a replay after the stream's duplicate
    // window), while still on time; and bytes that are no reading at all.
    let twice = readings[20].clone();
    let subject = format!(
        "readings.{}.{}.{}",
        twice.district,
        twice.kind(),
        twice.sensor
    );
    let mut h = async_nats::HeaderMap::new();
    h.insert("Nats-Msg-Id", "replayed-later");
    js.publish_with_headers(subject, h, twice.encode().into())
        .await
        .unwrap()
        .await
        .unwrap();
    js.publish("readings.d01.traffic.loop-d01-0", "not cbor".into())
        .await
        .unwrap()
        .await
        .unwrap();
    publish_readings(&js, &readings[22..]).await;
    let p = InProcess::start(&server.url(), &["--idle-timeout", "1h"]).await;
    wait_for(Duration::from_secs(30), "every reading handled", || async {
        p.counter("citypulse_processors_readings_total", &[]) as usize == readings.len() + 2
    })
    .await;
    let rejected = |reason| {
        p.counter(
            "citypulse_processors_rejected_readings_total",
            &[("reason", reason)],
        )
    };
    assert_eq!(rejected("occupancy_out_of_range"), 1.0);
    assert_eq!(rejected("malformed_cbor"), 1.0);
    assert_eq!(rejected("duplicate"), 1.0, "counted, not dead-lettered");
    wait_for(Duration::from_secs(30), "two dead letters", || async {
        match js.get_stream("DLQ").await {
            Ok(mut d) => d.info().await.is_ok_and(|i| i.state.messages == 2),
            Err(_) => false,
        }
    })
    .await;
    let dlq = js.get_stream("DLQ").await.unwrap();
    let letter = dlq
        .get_last_raw_message_by_subject("dlq.occupancy_out_of_range")
        .await
        .unwrap();
    assert_eq!(
        &letter.payload[..],
        &bad.encode()[..],
        "the original payload"
    );
    let h = letter.headers;
    assert_eq!(
        h.get("Citypulse-Reason").map(|v| v.as_str()),
        Some("occupancy_out_of_range")
    );
    assert!(h
        .get("Citypulse-Source-Subject")
        .is_some_and(|v| v.as_str().starts_with("readings.")));
    p.stop().await;
}
