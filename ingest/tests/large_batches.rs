//! A RAW batch whose valid readings of one partition would not fit in one NATS message: ingest
//! splits them into several READINGS messages, in RAW order, each under
//! `citypulse_schema::batch::MAX_BATCH_BYTES` — instead of retrying a publish the server refuses
//! ("maximum payload exceeded") forever, a stall no restart would end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use ciborium::Value;
use citypulse_harness::{wait_for, NatsServer};
use citypulse_schema::batch;
use common::*;
use std::time::Duration;

/// Reading `seq` of loop detector `n` with an extra text field (devices may add keys; ingest
/// passes the device's bytes on unchanged), about 3,500 bytes.
fn padded(n: u32, seq: u64, ts: u64) -> (String, Vec<u8>) {
    let r = reading(n, seq, ts);
    let mut value: Value = ciborium::from_reader(&r.encode()[..]).unwrap();
    if let Value::Map(entries) = &mut value {
        entries.push((Value::Text("note".into()), Value::Text("x".repeat(3_400))));
    }
    let mut bytes = Vec::new();
    ciborium::into_writer(&value, &mut bytes).unwrap();
    (raw_subject(&r), bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitions_readings_beyond_one_message_are_split_in_order() {
    let nats = NatsServer::start();
    let js = jetstream(&nats.url()).await;
    // Ingest provisions RAW, then stops: the readings wait as one backlog.
    let first = Running::start(config(&args(&nats.url(), None), &[])).await;
    wait_for(Duration::from_secs(30), "RAW provisioned", || async {
        js.get_stream("RAW").await.is_ok()
    })
    .await;
    first.stop().await;
    // 50 loop detectors of district d00 (n = 0, 14, 28, …), 20 readings each: 1,000 readings,
    // about 3.5 MB, all in one partition.
    let base = now_ms() - 60_000;
    let mut sent = Vec::new();
    for seq in 0..20u64 {
        for k in 0..50u32 {
            let (subject, bytes) = padded(14 * k, seq, base + seq);
            js.publish(subject, bytes.clone().into())
                .await
                .unwrap()
                .await
                .unwrap();
            sent.push(bytes);
        }
    }
    let running = Running::start(config(&args(&nats.url(), None), &["--batch-size", "1000"])).await;
    wait_for(
        Duration::from_secs(60),
        "1,000 readings on READINGS",
        || async { readings_len(&js).await == 1_000 },
    )
    .await;
    running.stop().await;

    let mut stream = js.get_stream("READINGS").await.unwrap();
    let messages = stream.info().await.unwrap().state.messages;
    assert!(messages >= 7, "3.5 MB in {messages} messages");
    let mut stored = Vec::new();
    for seq in 1..=messages {
        let m = stream.get_raw_message(seq).await.unwrap();
        assert!(
            m.payload.len() <= batch::MAX_BATCH_BYTES + 9,
            "{}",
            m.payload.len()
        );
        stored.extend(
            batch::decode_batch(&m.payload)
                .unwrap()
                .into_iter()
                .map(<[u8]>::to_vec),
        );
    }
    assert!(
        stored == sent,
        "READINGS holds the device's bytes in RAW order"
    );
}

/// Observations of a histogram at or below `le`, and in total.
fn histogram(running: &Running, name: &str, le: f64) -> (u64, u64) {
    let family = running
        .registry
        .gather()
        .into_iter()
        .find(|f| f.name() == name)
        .unwrap();
    let h = family.get_metric()[0].get_histogram();
    let below = h
        .get_bucket()
        .iter()
        .find(|b| b.upper_bound() == le)
        .map(|b| b.cumulative_count())
        .unwrap();
    (below, h.get_sample_count())
}

/// The backlog a PostgreSQL outage leaves is written in slices of at most
/// `MAX_ROWS_PER_WRITE` rows (plus one message), not in one statement holding every reading of
/// the 2,000 READINGS messages the archive takes at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_backlog_is_written_in_bounded_slices() {
    let nats = NatsServer::start();
    let mut pg = citypulse_harness::Postgres::start();
    let running = Running::start(config(&args(&nats.url(), Some(&pg.url())), &[])).await;
    let js = jetstream(&nats.url()).await;
    wait_for(Duration::from_secs(30), "RAW provisioned", || async {
        js.get_stream("RAW").await.is_ok()
    })
    .await;
    pg.stop();
    // 30,000 readings of 300 sensors of district d00 (one partition: READINGS messages of
    // hundreds of readings), their acks awaited 300 at a time.
    let base = now_ms() - 120_000;
    for seq in 0..100u64 {
        let mut acks = Vec::new();
        for n in 0..300u32 {
            let r = reading(7 * n, seq, base + seq);
            let ack = js.publish(raw_subject(&r), r.encode().into()).await;
            acks.push(ack.unwrap());
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }
    wait_for(
        Duration::from_secs(60),
        "30,000 readings on READINGS",
        || async { readings_len(&js).await == 30_000 },
    )
    .await;
    pg.start_again();
    wait_for(Duration::from_secs(60), "30,000 rows archived", || async {
        archived(&pg.url()).await == Some((30_000, 30_000))
    })
    .await;
    let name = "citypulse_ingest_archive_batch_size_rows";
    let (small, writes) = histogram(&running, name, 20_000.0);
    assert!(writes >= 3, "{writes} writes");
    assert_eq!(small, writes, "a write of more than 20,000 rows");
    running.stop().await;
}
