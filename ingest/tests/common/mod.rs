//! Shared helpers of the integration tests: readings, running ingest in-process, reading streams,
//! metrics and the archive.
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream::{self, stream::Stream};
use citypulse_ingest::Config;
use citypulse_runtime::shutdown::Shutdown;
use citypulse_schema::{Air, Measurement, Reading, Traffic};
use clap::Parser;
use prometheus::proto::MetricType;
use prometheus::Registry;
use std::collections::HashMap;

pub use citypulse_ingest::pipeline::now_ms;

/// A valid reading of sensor `n`: even sensors are loop detectors, odd ones air stations,
/// spread over 7 districts.
pub fn reading(n: u32, seq: u64, ts: u64) -> Reading {
    let district = format!("d{:02}", n % 7);
    let data = if n % 2 == 0 {
        Measurement::Traffic(Traffic {
            count: 5 + n % 20 + u32::try_from(seq % 20).unwrap(),
            interval_s: 30,
            occupancy: 0.2,
            speed_kmh: Some(45.0),
            lanes: 2,
        })
    } else {
        Measurement::Air(Air {
            pm25_ugm3: Some(8.0 + f64::from(n % 5)),
            no2_ppb: Some(21.0),
            ..Air::default()
        })
    };
    let sensor = if n % 2 == 0 {
        format!("loop-{n:04}")
    } else {
        format!("aq-{n:04}")
    };
    Reading {
        sensor,
        district,
        ts,
        seq,
        data,
    }
}

/// The RAW subject of a reading.
pub fn raw_subject(r: &Reading) -> String {
    r.claimed_subject()
}

/// Ingest settings for tests: free admin port, short ack wait (fast redelivery after a kill),
/// short archive delay, streams small enough for the harness's 1 GB JetStream store.
pub fn args(nats_url: &str, database_url: Option<&str>) -> Vec<String> {
    let mut a: Vec<String> = [
        "--nats-url",
        nats_url,
        "--metrics-addr",
        "127.0.0.1:0",
        "--ack-wait",
        "2s",
        "--archive-max-delay",
        "100ms",
        "--raw-max-bytes",
        "64MiB",
        "--readings-max-bytes",
        "64MiB",
        "--dlq-max-bytes",
        "16MiB",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if let Some(url) = database_url {
        a.push("--database-url".into());
        a.push(url.into());
    }
    a
}

/// Parses `args` plus `extra` into a Config.
pub fn config(args: &[String], extra: &[&str]) -> Config {
    Config::try_parse_from(
        std::iter::once("citypulse-ingest".to_owned())
            .chain(args.iter().cloned())
            .chain(extra.iter().map(|s| (*s).to_owned())),
    )
    .unwrap()
}

/// Ingest running in this process.
pub struct Running {
    pub registry: Registry,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    /// Starts `citypulse_ingest::run` with its own registry and NATS connection.
    pub async fn start(config: Config) -> Running {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(config.nats.nats_url.as_str())
            .await
            .unwrap();
        let registry = Registry::new();
        let shutdown = Shutdown::new();
        let task = {
            let registry = registry.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(
                async move { citypulse_ingest::run(config, client, &registry, shutdown).await },
            )
        };
        Running {
            registry,
            shutdown,
            task,
        }
    }

    /// Value of a counter or gauge with these labels (0 when absent).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.registry, name, labels)
    }

    /// Requests shutdown and waits for `run` to return Ok.
    pub async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }
}

/// Value of a counter or gauge series in `registry` (0 when absent).
pub fn metric(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    for family in registry.gather() {
        if family.name() != name {
            continue;
        }
        for m in family.get_metric() {
            let matches = labels.iter().all(|(k, v)| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == *k && l.value() == *v)
            });
            if matches {
                return match family.get_field_type() {
                    MetricType::COUNTER => m.get_counter().get_value(),
                    MetricType::GAUGE => m.get_gauge().get_value(),
                    other => panic!("{name} is a {other:?}"),
                };
            }
        }
    }
    0.0
}

/// A JetStream context on a fresh connection that survives server restarts.
pub async fn jetstream(url: &str) -> jetstream::Context {
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(url)
        .await
        .unwrap();
    jetstream::new(client)
}

/// Messages stored in `stream` (0 when it does not exist yet or the server is unreachable).
pub async fn stream_len(js: &jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Every message stored in `stream`, in sequence order.
pub async fn all_messages(
    js: &jetstream::Context,
    stream: &str,
) -> Vec<async_nats::jetstream::message::StreamMessage> {
    let mut s: Stream = js.get_stream(stream).await.unwrap();
    let state = s.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    if state.messages == 0 {
        return out;
    }
    for seq in state.first_sequence..=state.last_sequence {
        out.push(s.get_raw_message(seq).await.unwrap());
    }
    out
}

/// Every reading stored in READINGS, in order, with the stored subject of its message (ingest
/// stores a batch per partition per RAW pull: [`citypulse_schema::batch`]).
pub async fn all_readings(js: &jetstream::Context) -> Vec<(String, Reading)> {
    let mut out = Vec::new();
    for m in all_messages(js, "READINGS").await {
        assert!(
            citypulse_schema::batch::is_batch_subject(&m.subject),
            "{}",
            m.subject
        );
        for item in citypulse_schema::batch::decode_batch(&m.payload).unwrap() {
            out.push((m.subject.to_string(), Reading::decode(item).unwrap()));
        }
    }
    out
}

/// How many readings READINGS holds (0 while it does not exist or the server is unreachable;
/// what it could count while the server restarts).
pub async fn readings_len(js: &jetstream::Context) -> u64 {
    let Ok(mut s) = js.get_stream("READINGS").await else {
        return 0;
    };
    let Ok(info) = s.info().await else { return 0 };
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut n = 0;
    if info.state.messages == 0 {
        return 0;
    }
    for seq in first..=last {
        let Ok(m) = s.get_raw_message(seq).await else {
            continue;
        };
        n += citypulse_schema::batch::decode_batch(&m.payload).map_or(0, |b| b.len() as u64);
    }
    n
}

/// Per `<sensor>:<seq>`, how many times READINGS holds it.
pub async fn readings_per_id(js: &jetstream::Context) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for (_, r) in all_readings(js).await {
        *counts.entry(r.msg_id()).or_insert(0) += 1;
    }
    counts
}

/// A PostgreSQL client (its connection task runs in the background).
pub async fn pg(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

/// Whether the readings table is partitioned (`relkind` `p`).
pub async fn is_partitioned(client: &tokio_postgres::Client) -> bool {
    let kind: i8 = client
        .query_one(
            "SELECT relkind::\"char\" FROM pg_class WHERE relname = 'readings'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    kind as u8 == b'p'
}

/// `(count(*), count(DISTINCT (sensor, seq)))` of the readings table; `None` while the database
/// or the table is not there.
pub async fn archived(url: &str) -> Option<(i64, i64)> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .ok()?;
    let task = tokio::spawn(conn);
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT (sensor, seq)) FROM readings",
            &[],
        )
        .await
        .ok();
    drop(client);
    let _ = task.await;
    row.map(|r| (r.get(0), r.get(1)))
}
