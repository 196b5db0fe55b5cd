//! End to end through ingest: the simulator's pure engine generates a 2-hour run of its built-in
//! city at full speed, with the demo fault mix and its truth records; the messages go to
//! `sensors.<district>.<kind>.<sensor>` as devices send them; ingest (in-process) validates them
//! into READINGS; and the window results the processors publish on `metrics.…` equal an
//! independent naive recomputation from what READINGS holds, partition by partition.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
mod naive;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::HeaderMap;
use citypulse_harness::{wait_for, NatsServer};
use citypulse_runtime::shutdown::Shutdown;
use citypulse_schema::{batch, partition_of, streams, Reading};
use citypulse_simulator::city::City;
use citypulse_simulator::engine::{run_window, Settings};
use citypulse_simulator::faults::FaultRates;
use clap::Parser;
use common::*;
use futures::StreamExt;
use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const HOUR: u64 = 3_600_000;

/// Everything READINGS holds, in stream order, with the partition of its stored subject.
async fn readings_stored(js: &async_nats::jetstream::Context) -> Vec<(u32, Reading)> {
    let mut stream = js.get_stream(streams::READINGS).await.unwrap();
    let total = stream.info().await.unwrap().state.messages;
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut seen = 0u64;
    let mut readings = Vec::new();
    while seen < total {
        let msg = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("READINGS delivers")
            .unwrap()
            .unwrap();
        let partition: u32 = msg.subject.split('.').nth(1).unwrap().parse().unwrap();
        // Ingest stores a batch of readings per partition and RAW pull.
        assert!(batch::is_batch_subject(&msg.subject), "{}", msg.subject);
        for item in batch::decode_batch(&msg.payload).unwrap() {
            readings.push((partition, Reading::decode(item).unwrap()));
        }
        seen += 1;
    }
    readings
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_simulated_two_hour_run_through_ingest_gives_the_windows_a_naive_model_expects() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());

    // Ingest, in-process; it provisions RAW, READINGS (8 partitions) and DLQ.
    let ingest_shutdown = Shutdown::new();
    let ingest = {
        let config = citypulse_ingest::Config::try_parse_from([
            "citypulse-ingest",
            "--nats-url",
            &server.url(),
            "--metrics-addr",
            "127.0.0.1:0",
            // Streams small enough for the harness's 1 GB JetStream store.
            "--raw-max-bytes",
            "256MiB",
            "--readings-max-bytes",
            "256MiB",
            "--dlq-max-bytes",
            "16MiB",
        ])
        .unwrap();
        let (client, shutdown) = (client.clone(), ingest_shutdown.clone());
        tokio::spawn(async move {
            citypulse_ingest::run(config, client, &prometheus::Registry::new(), shutdown).await
        })
    };

    let city = City::builtin();
    let dir = tempfile::tempdir().unwrap();
    let city_file = dir.path().join("city.toml");
    std::fs::write(&city_file, city.to_toml().unwrap()).unwrap();
    let processors = InProcess::start(
        &server.url(),
        &[
            "--idle-timeout",
            "1h",
            "--city",
            city_file.to_str().unwrap(),
        ],
    )
    .await;

    // Two simulated hours ending an hour ago, at full speed, with faults; the engine's output
    // carries the truth of every message.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let start = now - now % HOUR - 3 * HOUR;
    let mut settings = Settings::new(20_260_101, start);
    settings.faults = FaultRates::DEMO;
    let truth = run_window(&city, settings, start + 2 * HOUR);
    let sent: Vec<_> = truth.iter().filter(|o| o.payload.is_some()).collect();
    assert!(sent.len() > 50_000, "{} messages", sent.len());
    wait_for(
        Duration::from_secs(30),
        "RAW provisioned by ingest",
        || async { js.get_stream(streams::RAW).await.is_ok() },
    )
    .await;
    for chunk in sent.chunks(1000) {
        let mut acks = Vec::new();
        for o in chunk {
            let mut h = HeaderMap::new();
            h.insert(async_nats::header::NATS_MESSAGE_ID, o.msg_id.as_str());
            let payload = o.payload.clone().unwrap();
            acks.push(
                js.publish_with_headers(o.subject.to_string(), h, payload)
                    .await
                    .unwrap(),
            );
        }
        for a in acks {
            a.await.unwrap();
        }
    }

    // Once ingest has settled every RAW message, READINGS is what the processors consume.
    let raw_count = sent.len() as u64;
    wait_for(Duration::from_secs(120), "ingest to settle RAW", || async {
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
    let stored = readings_stored(&js).await;
    // Every clean reading of the truth made it through ingest.
    let keys: HashSet<(String, u64)> = stored
        .iter()
        .map(|(_, r)| (r.sensor.clone(), r.seq))
        .collect();
    for o in truth.iter().filter(|o| o.fault.is_none()) {
        let sensor = o.subject.rsplit('.').next().unwrap().to_owned();
        assert!(
            keys.contains(&(sensor, o.seq)),
            "clean reading {} missing",
            o.msg_id
        );
    }

    let registry =
        citypulse_processors::registry::SegmentRegistry::from_toml(&city.to_toml().unwrap())
            .unwrap();
    let mut model = naive::Model {
        size_ms: 60_000,
        hop_ms: 60_000,
        lateness_ms: LATENESS_MS,
        ..Default::default()
    };
    for d in city
        .districts
        .iter()
        .flat_map(|d| &d.segments)
        .flat_map(|s| &s.detectors)
    {
        let p = registry.params(d);
        model.free_flow.insert(d.clone(), p.free_flow_kmh.unwrap());
        model.capacity.insert(d.clone(), p.capacity_vphpl.unwrap());
        if p.facility == citypulse_processors::domain::traffic::Facility::Freeway {
            model.freeway.insert(d.clone());
        }
        if let Some(km) = p.length_km {
            model.length_km.insert(d.clone(), km);
        }
    }
    let mut want = BTreeMap::new();
    let (mut accepted, mut late) = (0, 0);
    for p in 0..PARTITIONS {
        let mine: Vec<Reading> = stored
            .iter()
            .filter(|(part, _)| *part == p)
            .map(|(_, r)| r.clone())
            .collect();
        assert!(mine
            .iter()
            .all(|r| partition_of(&r.district, PARTITIONS) == p));
        let e = model.run(&mine);
        accepted += e.accepted;
        late += e.late;
        want.extend(e.results);
    }
    assert!(
        late > 0,
        "the demo faults hold some readings back past the watermark"
    );
    wait_for(Duration::from_secs(120), "every window result", || async {
        metrics_count(&js).await >= want.len() as u64
    })
    .await;
    let got = unique_by_id(&read_metrics(&js).await);
    naive::assert_same_windows(&want, &got);
    let count = |outcome| {
        processors.counter(
            "citypulse_processors_readings_total",
            &[("outcome", outcome)],
        ) as usize
    };
    assert_eq!((count("accepted"), count("late")), (accepted, late));

    processors.stop().await;
    ingest_shutdown.trigger();
    ingest.await.unwrap().unwrap();
}
