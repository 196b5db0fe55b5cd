//! Ingest throughput, end to end against real servers (not a timed test: it prints figures).
//!
//! 1. Starts nats-server and PostgreSQL (harness), provisions RAW.
//! 2. Publishes K readings into RAW with up to 1,000 publishes awaiting their acks: the raw
//!    JetStream publish rate.
//! 3. Starts the real `citypulse-ingest` binary on the backlog and measures the time until
//!    READINGS holds K readings (validation rate) and until PostgreSQL holds K rows (archive
//!    rate), then ingest's peak memory (VmHWM of the child process) and CPU time.
//!
//! It runs twice on fresh servers: without `--database-url` (validation alone), then with the
//! archive (validation and archive share the two cores with nats-server and PostgreSQL).
//!
//! `cargo bench -p citypulse-ingest --bench throughput` (K from `CITYPULSE_BENCH_READINGS`,
//! default 200000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream;
use citypulse_harness::{NatsServer, Postgres};
use citypulse_ingest::Config;
use citypulse_runtime::jetstream::ensure_stream;
use citypulse_schema::{Air, Measurement, Reading, Traffic};
use clap::Parser;
use futures::stream::{FuturesUnordered, StreamExt};
use std::future::IntoFuture;
use std::process::Stdio;
use std::time::{Duration, Instant};

const WINDOW: usize = 1000;
const SENSORS: u64 = 1000;

fn reading(i: u64, now: u64) -> Reading {
    let n = i % SENSORS;
    let (sensor, data) = if n % 2 == 0 {
        (
            format!("loop-{n:04}"),
            Measurement::Traffic(Traffic {
                count: 12,
                interval_s: 30,
                occupancy: 0.15,
                speed_kmh: Some(52.0),
                lanes: 2,
            }),
        )
    } else {
        (
            format!("aq-{n:04}"),
            Measurement::Air(Air {
                pm25_ugm3: Some(11.2),
                pm10_ugm3: Some(19.0),
                no2_ppb: Some(18.0),
                o3_ppb: Some(31.0),
                ..Air::default()
            }),
        )
    };
    Reading {
        sensor,
        district: format!("d{:02}", n % 12),
        ts: now,
        seq: i / SENSORS,
        data,
    }
}

async fn stream_len(js: &jetstream::Context, name: &str) -> u64 {
    match js.get_stream(name).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

async fn archived(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM readings", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0)
}

fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// User + system CPU seconds of a process so far (`/proc/<pid>/stat`, 100 ticks/s).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    #[allow(clippy::cast_precision_loss)]
    Some(ticks as f64 / 100.0)
}

/// Rate in readings/s.
#[allow(clippy::cast_precision_loss)]
fn rate(k: u64, d: Duration) -> f64 {
    k as f64 / d.as_secs_f64()
}

#[tokio::main]
async fn main() {
    // `cargo bench` passes `--bench`; nothing to parse.
    let k: u64 = std::env::var("CITYPULSE_BENCH_READINGS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    println!(
        "ingest throughput, K = {k} readings (~{} bytes each)",
        reading(0, 0).encode().len()
    );
    run(k, false).await;
    run(k, true).await;
}

async fn run(k: u64, with_archive: bool) {
    let nats = NatsServer::start();
    let pg = Postgres::start();
    let mut args: Vec<String> = [
        "--nats-url",
        &nats.url(),
        "--metrics-addr",
        "127.0.0.1:0",
        "--raw-max-bytes",
        "256MiB",
        "--readings-max-bytes",
        "256MiB",
        "--dlq-max-bytes",
        "16MiB",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if with_archive {
        args.extend(["--database-url".to_owned(), pg.url()]);
    }
    let config =
        Config::try_parse_from(std::iter::once("citypulse-ingest".to_owned()).chain(args.clone()))
            .unwrap();

    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = jetstream::new(client);
    ensure_stream(&js, citypulse_ingest::nats::raw_stream(&config))
        .await
        .unwrap();

    // 1. Raw publish rate into RAW.
    let now = citypulse_ingest::pipeline::now_ms();
    let payloads: Vec<(String, bytes::Bytes)> = (0..k)
        .map(|i| {
            let r = reading(i, now);
            (r.claimed_subject(), r.encode().into())
        })
        .collect();
    let started = Instant::now();
    let mut acks: FuturesUnordered<
        <jetstream::context::PublishAckFuture as IntoFuture>::IntoFuture,
    > = FuturesUnordered::new();
    for (subject, payload) in payloads {
        if acks.len() >= WINDOW {
            acks.next().await.unwrap().unwrap();
        }
        acks.push(js.publish(subject, payload).await.unwrap().into_future());
    }
    while let Some(ack) = acks.next().await {
        ack.unwrap();
    }
    let publish = started.elapsed();
    assert_eq!(stream_len(&js, "RAW").await, k);

    // 2. Ingest on the backlog.
    let (pg_client, conn) = tokio_postgres::connect(&pg.url(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let started = Instant::now();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_citypulse-ingest"))
        .args(&args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let (mut validated, mut archived_at) = (None, None);
    let deadline = Duration::from_secs(600);
    while validated.is_none() || (with_archive && archived_at.is_none()) {
        assert!(
            started.elapsed() < deadline,
            "ingest did not finish in {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        if validated.is_none() && stream_len(&js, "READINGS").await >= k {
            validated = Some(started.elapsed());
        }
        if with_archive
            && archived_at.is_none()
            && archived(&pg_client).await >= i64::try_from(k).unwrap()
        {
            archived_at = Some(started.elapsed());
        }
    }
    let hwm = vm_hwm_kib(pid);
    let cpu = cpu_seconds(pid);
    child.kill().await.unwrap();
    let validated = validated.unwrap();

    println!(
        "{}:",
        if with_archive {
            "with the PostgreSQL archive"
        } else {
            "validation only (no --database-url)"
        }
    );
    println!(
        "  raw JetStream publish into RAW (window {WINDOW}):   {:>8.0} readings/s ({:.2?})",
        rate(k, publish),
        publish
    );
    println!(
        "  ingest validate RAW -> READINGS (incl. start-up):  {:>8.0} readings/s ({:.2?})",
        rate(k, validated),
        validated
    );
    if let Some(a) = archived_at {
        println!(
            "  ingest archive READINGS -> PostgreSQL (all rows):  {:>8.0} readings/s ({:.2?})",
            rate(k, a),
            a
        );
    }
    #[allow(clippy::cast_precision_loss)]
    match (hwm, cpu) {
        (Some(kib), Some(cpu)) => println!(
            "  ingest peak memory (VmHWM) {:.1} MiB, CPU {cpu:.2} s ({:.1} µs/reading)",
            kib as f64 / 1024.0,
            cpu * 1e6 / k as f64
        ),
        _ => println!("  ingest peak memory / CPU: unavailable"),
    }
}
