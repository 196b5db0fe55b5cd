//! Issue 13, item 2: hostile payloads through the real service. 100,000 messages on
//! `sensors.…` (`CITYPULSE_SERVICE_FUZZ_INPUTS` overrides) — mutated readings (byte-level and
//! CBOR-structure-aware, from `citypulse-fuzz`) on real and odd subjects, with fresh valid
//! readings interleaved — go to a running pipeline. Every message ends up exactly once: as a
//! reading on READINGS, as a dead letter with a reason, or counted as a device's repeated reading;
//! the counts add up to what was published. Ingest never restarts, and every valid reading is
//! archived in PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream;
use citypulse_e2e::pipeline::{Pipeline, PipelineOptions, Service};
use citypulse_fuzz::mutate::{self, Rng};
use citypulse_schema::batch::decode_batch;
use citypulse_schema::{Reading, SensorSubject};
use citypulse_simulator::city::City;
use citypulse_simulator::engine::{Settings, Simulator};
use futures::stream::{FuturesUnordered, StreamExt};
use std::collections::BTreeSet;
use std::future::IntoFuture;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const INPUTS: usize = 100_000;
/// One input in this many is a fresh valid reading.
const VALID_EVERY: usize = 10;

/// Readings of a small simulated city, re-stamped to `now_ms`: `(reading, its subject)`.
fn samples(now_ms: u64) -> Vec<(Reading, String)> {
    let city = City::builtin_scaled(24);
    let start = now_ms - 600_000;
    let mut sim = Simulator::new(&city, Settings::new(11, start));
    let mut out = Vec::new();
    sim.step(start + 300_000, 400, &mut out);
    out.into_iter()
        .filter_map(|o| {
            let r = Reading::decode(&o.payload?).ok()?;
            Some((r, o.subject.to_string()))
        })
        .collect()
}

/// The `i`-th input: a valid reading of a sensor of its own (so it is never a repeat), or a
/// mutation of a sample on a sample's subject or an odd one.
fn input(i: usize, rng: &mut Rng, samples: &[(Reading, String)]) -> (String, Vec<u8>, bool) {
    let (base, subject) = &samples[rng.below(samples.len())];
    if i % VALID_EVERY == 0 {
        let mut r = base.clone();
        r.sensor = format!("fuzz-valid-{i}");
        let subject = SensorSubject::new(&r.district, r.kind(), &r.sensor).unwrap();
        return (subject.sensors_subject(), r.encode(), true);
    }
    let other = &samples[rng.below(samples.len())].0;
    let payload = if rng.one_in(2) {
        mutate::structured(rng, &base.encode(), &other.encode())
    } else {
        mutate::bytes(rng, &base.encode(), &other.encode())
    };
    let subject = match rng.below(12) {
        0 => "sensors.d01.bogus.x".to_owned(),
        1 => "sensors.a.b.c.d".to_owned(),
        2 => "sensors.d01".to_owned(),
        _ => subject.clone(),
    };
    (subject, payload, false)
}

async fn stream_messages(
    js: &jetstream::Context,
    name: &str,
) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let mut stream = js.get_stream(name).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push(m);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_payload_ends_once_on_readings_or_in_the_dlq_and_valid_ones_are_archived() {
    let inputs: usize = std::env::var("CITYPULSE_SERVICE_FUZZ_INPUTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(INPUTS);
    let mut pipeline = Pipeline::launch(PipelineOptions {
        simulator: None,
        ..PipelineOptions::default()
    });
    let ingest_pid = pipeline.pid(Service::Ingest);
    let client = async_nats::connect(pipeline.url()).await.unwrap();
    let js = jetstream::new(client);
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let samples = samples(now_ms);
    let mut rng = Rng::new(2026);
    let mut valid = BTreeSet::new();
    let mut acks = FuturesUnordered::new();
    for i in 0..inputs {
        let (subject, payload, ok) = input(i, &mut rng, &samples);
        if ok {
            valid.insert(format!("fuzz-valid-{i}"));
        }
        acks.push(
            js.publish(subject, payload.into())
                .await
                .unwrap()
                .into_future(),
        );
        while acks.len() >= 512 {
            acks.next().await.unwrap().unwrap();
        }
    }
    while let Some(ack) = acks.next().await {
        ack.unwrap();
    }

    // Ingest has handled every RAW message.
    let raw = js.get_stream("RAW").await.unwrap();
    citypulse_harness::wait_for(Duration::from_secs(240), "ingest acked all of RAW", || {
        // A crash fails at once, with ingest's log.
        let running = pipeline.is_running(Service::Ingest);
        assert!(running, "ingest exited: {}", pipeline.log(Service::Ingest));
        let raw = raw.clone();
        async move {
            raw.consumer_info("ingest")
                .await
                .is_ok_and(|c| c.ack_floor.stream_sequence >= inputs as u64)
        }
    })
    .await;
    assert!(
        pipeline.is_running(Service::Ingest),
        "{}",
        pipeline.log(Service::Ingest)
    );
    assert_eq!(
        pipeline.pid(Service::Ingest),
        ingest_pid,
        "ingest restarted"
    );

    let readings: usize = stream_messages(&js, "READINGS")
        .await
        .iter()
        .map(|m| decode_batch(&m.payload).map_or(1, |items| items.len()))
        .sum();
    // DLQ keeps its newest 32 MiB (discarding the oldest): count what was ever stored there,
    // check the reason of what is left.
    let mut dlq = js.get_stream("DLQ").await.unwrap();
    let dead = dlq.info().await.unwrap().state.last_sequence as usize;
    for m in stream_messages(&js, "DLQ").await {
        let source = m
            .headers
            .get("Citypulse-Source-Subject")
            .map(|s| s.as_str().to_owned());
        assert!(source.is_some_and(|s| s.starts_with("sensors.")), "{m:?}");
        let reason = m
            .headers
            .get("Citypulse-Reason")
            .map(|r| r.as_str().to_owned());
        assert_eq!(
            reason.as_deref(),
            m.subject.strip_prefix("dlq."),
            "reason = subject"
        );
    }
    let rejected = pipeline.metric_sum(Service::Ingest, "citypulse_ingest_rejected_total");
    assert_eq!(
        rejected as usize, dead,
        "every rejection dead-lettered once"
    );
    let repeated = pipeline.metric_sum(Service::Ingest, "citypulse_ingest_duplicates_total");
    println!("{inputs} published: {readings} on READINGS, {dead} dead letters, {repeated} repeats");
    assert_eq!(readings + dead + repeated as usize, inputs);
    assert!(readings >= valid.len() && dead > inputs / 2);

    // Every valid reading is archived.
    let (pg, conn) = tokio_postgres::connect(&pipeline.database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    citypulse_harness::wait_for(
        Duration::from_secs(120),
        "valid readings archived",
        || async {
            let archived: BTreeSet<String> = pg
                .query(
                    "SELECT sensor FROM readings WHERE sensor LIKE 'fuzz-valid-%'",
                    &[],
                )
                .await
                .map(|rows| rows.iter().map(|r| r.get(0)).collect())
                .unwrap_or_default();
            archived == valid
        },
    )
    .await;
}
