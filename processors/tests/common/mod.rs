//! Shared helpers of the NATS integration tests: a generated city run, publishing it the way
//! ingest does, running the processors in-process, and reading METRICS back.

#![allow(dead_code)]

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::Context;
use async_nats::HeaderMap;
use citypulse_processors::config::Config;
use citypulse_runtime::shutdown::Shutdown;
use citypulse_runtime::stream_config::{self, Limits};
use citypulse_schema::{
    batch, partition_of, streams, Air, Measurement, Reading, SensorSubject, Traffic, WindowResult,
};
use clap::Parser;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use super::naive;

/// 2026-01-01T00:00:00Z.
pub const T0: u64 = 1_767_225_600_000;
const HOUR: u64 = 3_600_000;
pub const PARTITIONS: u32 = 8;
pub const LATENESS_MS: u64 = 30_000;

/// A small deterministic generator (xorshift64*), so runs are reproducible without a dev
/// dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A generated run: readings in the order a device fleet would deliver them, and the city file.
pub struct Scenario {
    pub readings: Vec<Reading>,
    pub city: String,
    pub free_flow: std::collections::HashMap<String, f64>,
    pub capacity: std::collections::HashMap<String, f64>,
}

/// Six districts, each with four loop detectors (two listed in the city file, two learning
/// their free-flow speed) reporting every 30 s over the last `traffic_hours`, and two air
/// stations reporting every 5 min (with gaps) over `air_hours`. About 1 % of the readings
/// arrive 2.5 min late (behind the watermark) and 2 % 20 s late (out of order, on time).
pub fn scenario(seed: u64, air_hours: u64, traffic_hours: u64) -> Scenario {
    scenario_in(seed, 6, air_hours, traffic_hours)
}

/// [`scenario`] with `districts` districts.
pub fn scenario_in(seed: u64, districts: u64, air_hours: u64, traffic_hours: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let mut timed: Vec<(u64, u64, Reading)> = Vec::new();
    let mut city = String::new();
    let mut free_flow = std::collections::HashMap::new();
    let mut capacity = std::collections::HashMap::new();
    let end = T0 + air_hours.max(traffic_hours) * HOUR;
    for d in 1..=districts {
        let district = format!("d{d:02}");
        city.push_str(&format!(
            "[[district]]\nid = \"{district}\"\nname = \"District {d}\"\n"
        ));
        for k in 0..4u64 {
            let sensor = format!("loop-{district}-{k}");
            let ffs = 40.0 + 10.0 * k as f64 + d as f64;
            if k < 2 {
                city.push_str(&format!(
                    "[[district.segment]]\nid = \"seg-{district}-{k}\"\nlanes = 2\nfree_flow_kmh = {ffs:.1}\n\
                     capacity_vphpl = 1800.0\ndetectors = [\"{sensor}\"]\n"
                ));
                free_flow.insert(sensor.clone(), ffs);
                capacity.insert(sensor.clone(), 1800.0);
            }
            let start = end - traffic_hours * HOUR;
            let phase = (d * 7 + k * 3) % 30 * 1_000;
            let mut seq = 0;
            let mut ts = start + phase;
            while ts < end {
                seq += 1;
                let count = rng.below(22) as u32;
                let speed = ffs * (0.35 + 0.75 * rng.unit());
                let reading = Reading {
                    sensor: sensor.clone(),
                    district: district.clone(),
                    ts,
                    seq,
                    data: Measurement::Traffic(Traffic {
                        count,
                        interval_s: 30,
                        occupancy: (f64::from(count) * 0.012 * 60.0 / speed).min(1.0),
                        speed_kmh: (count > 0).then_some(speed),
                        lanes: 2,
                    }),
                };
                timed.push((delivery(&mut rng, ts), ts, reading));
                ts += 30_000;
            }
        }
        for s in 0..2u64 {
            let sensor = format!("aq-{district}-{s}");
            let mut level = 5.0 + 10.0 * rng.unit();
            let mut seq = 0;
            let mut ts = end - air_hours * HOUR + (d * 11 + s * 37) % 300 * 1_000;
            while ts < end {
                seq += 1;
                level = (level * (0.85 + 0.3 * rng.unit()) + rng.unit()).clamp(0.5, 180.0);
                // A station goes quiet now and then: some hours lack coverage.
                if rng.below(10) != 0 {
                    let reading = Reading {
                        sensor: sensor.clone(),
                        district: district.clone(),
                        ts,
                        seq,
                        data: Measurement::Air(Air {
                            pm25_ugm3: Some(round3(level)),
                            pm10_ugm3: Some(round3(level * 1.8)),
                            o3_ppb: (s == 0).then(|| round3(20.0 + level * 0.9)),
                            no2_ppb: Some(round3(8.0 + level * 0.7)),
                            so2_ppb: (d % 2 == 0).then(|| round3(level / 4.0)),
                            co_ppm: Some(round3(0.2 + level / 60.0)),
                            temp_c: Some(12.5),
                            rh_pct: Some(70.0),
                            interval_s: Some(300),
                        }),
                    };
                    timed.push((delivery(&mut rng, ts), ts, reading));
                }
                ts += 300_000;
            }
        }
    }
    timed.sort_by_key(|(at, ts, r)| (*at, *ts, r.sensor.clone()));
    Scenario {
        readings: timed.into_iter().map(|(_, _, r)| r).collect(),
        city,
        free_flow,
        capacity,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// When a reading reaches the stream: usually at its event time, sometimes late.
fn delivery(rng: &mut Rng, ts: u64) -> u64 {
    match rng.below(100) {
        0 => ts + 150_000,
        1 | 2 => ts + 20_000,
        _ => ts,
    }
}

/// The model's expectation for a scenario, partition by partition (each in delivery order).
pub fn expected(s: &Scenario, size_ms: u64, hop_ms: u64) -> Vec<naive::Expected> {
    let model = naive::Model {
        size_ms,
        hop_ms,
        lateness_ms: LATENESS_MS,
        free_flow: s.free_flow.clone(),
        capacity: s.capacity.clone(),
        ..Default::default()
    };
    (0..PARTITIONS)
        .map(|p| {
            let mine: Vec<Reading> = s
                .readings
                .iter()
                .filter(|r| partition_of(&r.district, PARTITIONS) == p)
                .cloned()
                .collect();
            model.run(&mine)
        })
        .collect()
}

/// All expected windows of all partitions.
pub fn all_windows(e: &[naive::Expected]) -> BTreeMap<String, WindowResult> {
    e.iter().flat_map(|p| p.results.clone()).collect()
}

/// READINGS as ingest provisions it by default (`readings.*.*.*`, stored with the partition in
/// front), capped at 256 MiB to leave room for METRICS in the harness's 1 GB JetStream store.
pub async fn create_readings_stream(js: &Context) {
    let limits = Limits {
        max_bytes: 256 << 20,
        ..Limits::READINGS
    };
    js.create_stream(stream_config::readings(limits, PARTITIONS))
        .await
        .expect("creating READINGS");
}

/// Publishes readings as ingest does (`readings.<district>.<kind>.<sensor>`, `Nats-Msg-Id`),
/// in order, waiting for every ack.
pub async fn publish_readings(js: &Context, readings: &[Reading]) {
    for chunk in readings.chunks(500) {
        let mut acks = Vec::with_capacity(chunk.len());
        for r in chunk {
            let subject = SensorSubject::new(&r.district, r.kind(), &r.sensor)
                .expect("valid tokens")
                .readings_subject();
            let mut h = HeaderMap::new();
            h.insert(async_nats::header::NATS_MESSAGE_ID, r.msg_id().as_str());
            acks.push(
                js.publish_with_headers(subject, h, r.encode().into())
                    .await
                    .expect("publish sent"),
            );
        }
        for a in acks {
            a.await.expect("publish acked");
        }
    }
}

/// Publishes readings as ingest v0.2 does: `per_pull` readings at a time (one RAW pull), one
/// batch message per partition on `readings.<district>.batch.v1`, in order.
pub async fn publish_batches(js: &Context, readings: &[Reading], per_pull: usize) {
    for pull in readings.chunks(per_pull) {
        let mut groups: BTreeMap<u32, (String, Vec<Vec<u8>>)> = BTreeMap::new();
        for r in pull {
            let g = groups
                .entry(citypulse_schema::partition_of(&r.district, PARTITIONS))
                .or_insert_with(|| (r.district.clone(), Vec::new()));
            g.1.push(r.encode());
        }
        for (p, (district, items)) in groups {
            let mut h = HeaderMap::new();
            // Unique across calls: named after the pull's first reading.
            h.insert(
                async_nats::header::NATS_MESSAGE_ID,
                format!("batch:{p}:{}", pull[0].msg_id()).as_str(),
            );
            js.publish_with_headers(
                batch::batch_subject(&district),
                h,
                batch::encode_batch(&items).into(),
            )
            .await
            .expect("publish sent")
            .await
            .expect("publish acked");
        }
    }
}

/// Messages in METRICS.
pub async fn metrics_count(js: &Context) -> u64 {
    match js.get_stream(streams::METRICS).await {
        Ok(mut s) => s.info().await.map(|i| i.state.messages).unwrap_or(0),
        Err(_) => 0,
    }
}

/// Every message in METRICS, in stream order: its `Nats-Msg-Id` header and the decoded result.
pub async fn read_metrics(js: &Context) -> Vec<(String, Vec<u8>, WindowResult)> {
    let total = metrics_count(js).await;
    let stream = js
        .get_stream(streams::METRICS)
        .await
        .expect("METRICS exists");
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::None,
            ..Default::default()
        })
        .await
        .expect("reader consumer");
    let mut out = Vec::new();
    let mut messages = consumer.messages().await.expect("messages");
    while (out.len() as u64) < total {
        // Reading back a finished stream: 30 s, as a pull can wait that long on a loaded CI
        // machine (CI of 591af22 gave up after 10 s while another fault test ran beside it).
        let msg = tokio::time::timeout(Duration::from_secs(30), messages.next())
            .await
            .expect("METRICS delivers")
            .expect("stream open")
            .expect("message");
        let id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        let w = WindowResult::decode(&msg.payload).expect("a window result");
        assert_eq!(
            msg.subject.as_str(),
            w.subject(),
            "published on its subject"
        );
        out.push((id, msg.payload.to_vec(), w));
    }
    out
}

/// The results by id, asserting none was stored twice and each carries its own id.
pub fn unique_by_id(
    messages: &[(String, Vec<u8>, WindowResult)],
) -> BTreeMap<String, WindowResult> {
    let mut map = BTreeMap::new();
    for (id, _, w) in messages {
        assert_eq!(id, &w.msg_id(), "Nats-Msg-Id is the window's msg_id");
        assert!(
            map.insert(id.clone(), w.clone()).is_none(),
            "{id} stored twice"
        );
    }
    map
}

/// Processors settings from command-line style arguments.
pub fn settings(args: &[&str]) -> citypulse_processors::config::Settings {
    let mut argv = vec!["citypulse-processors"];
    argv.extend_from_slice(args);
    Config::try_parse_from(argv)
        .expect("valid flags")
        .settings()
        .expect("valid settings")
}

/// The processors, in-process.
pub struct InProcess {
    pub shutdown: Shutdown,
    pub registry: prometheus::Registry,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    pub async fn start(url: &str, args: &[&str]) -> InProcess {
        let client = async_nats::connect(url).await.expect("connect");
        let registry = prometheus::Registry::new();
        let shutdown = Shutdown::new();
        let (s, r, st) = (settings(args), registry.clone(), shutdown.clone());
        let task = tokio::spawn(async move { citypulse_processors::run(s, client, &r, st).await });
        InProcess {
            shutdown,
            registry,
            task,
        }
    }

    pub async fn stop(self) {
        self.shutdown.trigger();
        self.task
            .await
            .expect("task")
            .expect("processors ran without error");
    }

    /// A counter's total over the label sets matching `labels`.
    pub fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric())
            .filter(|m| {
                labels.iter().all(|(k, v)| {
                    m.get_label()
                        .iter()
                        .any(|l| l.name() == *k && l.value() == *v)
                })
            })
            .map(|m| m.get_counter().get_value())
            .sum()
    }
}

/// The released processors binary as a child process (stderr to `log`).
pub struct Binary {
    pub child: tokio::process::Child,
    pub args: Vec<String>,
    pub log: std::path::PathBuf,
    pub starts: usize,
}

impl Binary {
    pub fn spawn(args: Vec<String>, log: std::path::PathBuf) -> Binary {
        Binary {
            child: Self::start(&args, &log),
            args,
            log,
            starts: 1,
        }
    }

    fn start(args: &[String], log: &std::path::Path) -> tokio::process::Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        tokio::process::Command::new(env!("CARGO_BIN_EXE_citypulse-processors"))
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("spawning citypulse-processors")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// SIGKILL, and wait until it is gone.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        let status = self.child.wait().await.unwrap();
        assert!(!status.success(), "killed, not exited: {status}");
    }

    /// SIGKILL, then start again.
    pub async fn crash_and_restart(&mut self) {
        self.child.start_kill().expect("SIGKILL");
        let status = self.child.wait().await.unwrap();
        assert!(!status.success(), "killed, not exited: {status}");
        self.child = Self::start(&self.args, &self.log);
        self.starts += 1;
    }
}
