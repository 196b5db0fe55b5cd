//! What a finished pipeline run left behind — the messages of its streams and its PostgreSQL
//! archive — and how two runs compare: the checks of the whole-pipeline fault tests
//! (`tests/whole_pipeline_faults.rs`, `tests/cluster_faults.rs`), which run the same seeded
//! replay once uninterrupted and once with faults and require the same outputs.

// Test helpers: a read that fails is a broken test environment, reported by a panic.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use crate::pipeline::Pipeline;
use async_nats::jetstream::{self, consumer};
use citypulse_schema::streams;
use futures::StreamExt;
use std::time::Duration;

/// (subject, Nats-Msg-Id, payload) of every message of a stream, sorted.
pub type Messages = Vec<(String, String, Vec<u8>)>;

/// How long reading the next message of a stream may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest a pull of [`read_all`]'s consumer waits (its `max_expires`; async-nats' default is
/// 30 s, its idle heartbeat 15 s). A pull the client believes outstanding and the server does
/// not have stopped a read for 30 s once in CI (`MissingHeartbeat` on a default pull consumer);
/// an ordered consumer with 1 s heartbeats notices it within seconds and recreates itself
/// where it stopped, as the processors replay's do.
const PULL_EXPIRES: Duration = Duration::from_secs(2);

/// The number of messages in stream `name`; 0 when it is missing or the request fails.
pub async fn stream_len(js: &jetstream::Context, name: &str) -> u64 {
    match js.get_stream(name).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Every message of `name`, in stream order, each mapped by `f`, read with an ordered consumer
/// (ephemeral, without acks).
///
/// # Panics
/// When the stream is missing, or reading stalls for 30 s.
async fn read_all<T>(
    js: &jetstream::Context,
    name: &str,
    f: impl Fn(&jetstream::Message) -> T,
) -> Vec<T> {
    let stream = js.get_stream(name).await.unwrap();
    let total = stream_len(js, name).await;
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            max_expires: PULL_EXPIRES,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut messages = consumer.messages().await.unwrap();
    let mut out = Vec::with_capacity(total as usize);
    while (out.len() as u64) < total {
        let m = tokio::time::timeout(READ_TIMEOUT, messages.next())
            .await
            .expect("reading the stream stalled")
            .unwrap()
            .unwrap();
        out.push(f(&m));
    }
    out
}

/// Every message of `name` as (subject, `Nats-Msg-Id`, payload), sorted.
///
/// # Panics
/// As [`read_all`].
pub async fn all_messages(js: &jetstream::Context, name: &str) -> Messages {
    let mut out = read_all(js, name, |m| {
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.to_string())
            .unwrap_or_default();
        (m.subject.to_string(), id, m.payload.to_vec())
    })
    .await;
    out.sort();
    out
}

/// (stream sequence, payload) of every message of a stream, in stream order.
///
/// # Panics
/// As [`read_all`].
pub async fn all_messages_with_seq(js: &jetstream::Context, name: &str) -> Vec<(u64, Vec<u8>)> {
    read_all(js, name, |m| {
        let seq = m.info().map(|i| i.stream_sequence).unwrap_or(0);
        (seq, m.payload.to_vec())
    })
    .await
}

/// Rows of the `readings` archive, and how many distinct (sensor, seq) they hold.
///
/// # Panics
/// When PostgreSQL does not answer.
pub async fn archive_counts(pipeline: &Pipeline) -> (i64, i64) {
    let (client, conn) = tokio_postgres::connect(&pipeline.database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT (sensor, seq)) FROM readings",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Counts that stand still once a run is finished: the archive's rows and the lengths of RAW,
/// READINGS, METRICS and ALERTS.
pub async fn progress(js: &jetstream::Context, pipeline: &Pipeline) -> [i64; 5] {
    let (archived, _) = archive_counts(pipeline).await;
    let mut out = [archived; 5];
    for (i, s) in [
        streams::RAW,
        streams::READINGS,
        streams::METRICS,
        streams::ALERTS,
    ]
    .iter()
    .enumerate()
    {
        out[i] = stream_len(js, s).await as i64;
    }
    out
}

/// The RAW readings the archive lacks (the first few, with their RAW sequence and whether
/// READINGS holds them): where a reading was lost.
///
/// # Panics
/// When PostgreSQL does not answer or a stream cannot be read.
pub async fn archive_gaps(js: &jetstream::Context, pipeline: &Pipeline) -> String {
    use citypulse_schema::{batch, Reading};
    use std::collections::BTreeSet;
    let key = |b: &[u8]| {
        Reading::decode(b)
            .ok()
            .map(|r| (r.sensor.to_string(), r.seq))
    };
    let (client, conn) = tokio_postgres::connect(&pipeline.database_url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let archived: BTreeSet<(String, u64)> = client
        .query("SELECT sensor, seq FROM readings", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1) as u64))
        .collect();
    let mut in_readings = BTreeSet::new();
    for (_, _, body) in all_messages(js, streams::READINGS).await {
        match batch::decode_batch(&body) {
            Ok(readings) => in_readings.extend(readings.into_iter().filter_map(key)),
            Err(_) => in_readings.extend(key(&body)),
        }
    }
    let raw = all_messages_with_seq(js, streams::RAW).await;
    let missing: Vec<String> = raw
        .iter()
        .filter_map(|(seq, b)| key(b).map(|k| (seq, k)))
        .filter(|(_, k)| !archived.contains(k))
        .map(|(seq, k)| {
            format!(
                "{}#{} (RAW {seq}, on READINGS: {})",
                k.0,
                k.1,
                in_readings.contains(&k)
            )
        })
        .collect();
    format!(
        "{} RAW readings not archived, {} of them not on READINGS either; first: {:?}",
        missing.len(),
        missing.iter().filter(|m| m.ends_with("false)")).count(),
        &missing[..missing.len().min(8)]
    )
}

/// The first difference between two sorted message lists, for the failure message: `a` is the
/// uninterrupted run's, `b` the faulted run's.
pub fn first_difference(a: &Messages, b: &Messages) -> String {
    let only_a: Vec<_> = a.iter().filter(|m| b.binary_search(m).is_err()).collect();
    let only_b: Vec<_> = b.iter().filter(|m| a.binary_search(m).is_err()).collect();
    let show = |v: &[&(String, String, Vec<u8>)]| -> Vec<String> {
        v.iter()
            .take(5)
            .map(|(s, id, _)| format!("{s} {id}"))
            .collect()
    };
    format!(
        "{} only in the uninterrupted run (e.g. {:?}), {} only in the faulted run (e.g. {:?})",
        only_a.len(),
        show(&only_a),
        only_b.len(),
        show(&only_b)
    )
}

/// Every alert transition once; every resolution after a firing of the same incident.
///
/// # Panics
/// When a transition is published twice, does not decode, or resolves an incident that did
/// not fire.
pub fn assert_lifecycle(alerts: &Messages) {
    let mut ids: Vec<&str> = alerts.iter().map(|(_, id, _)| id.as_str()).collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "an alert transition published twice");
    let mut events: Vec<citypulse_schema::AlertEvent> = alerts
        .iter()
        .map(|(_, _, b)| citypulse_schema::AlertEvent::decode(b).unwrap())
        .collect();
    events.sort_by_key(|e| e.at);
    let mut firing = std::collections::BTreeSet::new();
    for e in &events {
        match e.state {
            citypulse_schema::AlertState::Firing => {
                firing.insert(e.id.clone());
            }
            citypulse_schema::AlertState::Resolved => {
                assert!(firing.remove(&e.id), "resolved without firing: {e:?}");
            }
        }
    }
}
