//! `citypulse-simulator`: a seeded, deterministic model of a city whose loop detectors and
//! air-quality stations publish readings to NATS.
//!
//! **Out:** CBOR [`Reading`](citypulse_schema::Reading)s on
//! `sensors.<district>.<kind>.<sensor_id>` (traffic every 30 s, air every 60 s by default),
//! captured by the JetStream stream `RAW` (`sensors.>`), which the simulator creates if missing
//! ([`raw_stream_config`]; an existing stream is kept as it is). **In:** nothing.
//!
//! **Delivery:** JetStream publish with `Nats-Msg-Id` = `<sensor>:<seq>`, retried with the same
//! id until acknowledged, so every message counted as acked is stored exactly once (the RAW
//! duplicate window is 2 minutes). Up to `--max-in-flight` acks are outstanding at once, through
//! the runtime's publisher ([`publish`]). `--core` publishes with core NATS instead (no acks, like
//! MQTT QoS 0 devices).
//!
//! **Time:** simulated time runs `--speed` times the wall clock but never ahead of it
//! ([`pacer`]): a run that starts in the past (the default at `--speed` above 1 or `max` is
//! exactly 24 h before the current wall-clock second) catches up and then continues in real
//! time, so no valid reading carries a future `ts` and ingest's future-timestamp check never
//! fires on one. `--speed max` (or 0) publishes the past as fast as possible, then real time.
//!
//! **Determinism:** the same city, `--seed`, `--start`, `--duration`, intervals, events and fault
//! rates produce byte-identical payloads in the same order ([`engine`]); `--truth FILE` records
//! every generated message with its fault ([`truth`]).
//!
//! Module map:
//! - PURE: [`city`] (model, TOML file, built-in city and scaling, daily patterns and the
//!   fundamental diagram, incidents and episodes), [`engine`] (`Simulator::step`), [`faults`],
//!   [`draw`] (seeded ChaCha8 streams), [`pacer`] (simulated ↔ wall time).
//! - SHELL: [`run`] (one loop: pace, step, record, publish, report progress).
//! - ADAPTERS: [`publish`] (JetStream or core NATS), [`truth`] (JSON lines file), [`metrics`].
//! - [`config`]: flags and environment (`CITYPULSE_SIM_*`, `NATS_URL`).

pub mod city;
pub mod config;
pub mod draw;
pub mod engine;
pub mod faults;
pub mod metrics;
pub mod pacer;
pub mod publish;
pub mod truth;

use crate::config::{now_ms, Config, Plan};
use crate::engine::{Outgoing, Simulator};
use crate::metrics::{SimMetrics, Totals};
use crate::pacer::Pacer;
use crate::publish::{Mode, PublishFailure, Publisher};
use crate::truth::TruthWriter;
use anyhow::Context as _;
use async_nats::jetstream::stream::Config as StreamConfig;
use citypulse_runtime::jetstream::provision_stream;
use citypulse_runtime::shutdown::Shutdown;
use citypulse_runtime::stream_config::{self, Limits};
use prometheus::Registry;
use std::fs::File;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Messages generated per step of the loop before publishing them.
const BATCH: usize = 4096;
/// Shortest sleep between steps once caught up with the pacer: bounds wake-ups at real time.
const MIN_SLEEP: Duration = Duration::from_millis(20);
/// Longest sleep, so progress and shutdown stay responsive.
const MAX_SLEEP: Duration = Duration::from_millis(500);

/// The RAW stream as the simulator provisions it when missing: ingest's defaults
/// ([`Limits::RAW`]: `sensors.>`, file storage, 7 days or 1 GiB, 2-minute duplicate window), so
/// RAW is the same whichever of the two starts first.
pub fn raw_stream_config() -> StreamConfig {
    stream_config::raw(Limits::RAW)
}

/// What a finished run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Counter totals at the end.
    pub totals: Totals,
    /// Simulated time reached, ms.
    pub simulated_ms: u64,
    /// True when the run stopped at `--duration` (false: shutdown).
    pub completed: bool,
}

/// Runs the simulator: provisions RAW (JetStream mode), then paces, generates, records and
/// publishes until `--duration` is reached or `shutdown` fires, and drains outstanding acks.
pub async fn run(
    config: &Config,
    plan: Plan,
    client: async_nats::Client,
    registry: &Registry,
    shutdown: Shutdown,
) -> anyhow::Result<Summary> {
    let metrics = SimMetrics::new(registry).context("registering simulator metrics")?;
    let mode = if config.core {
        Mode::Core
    } else {
        Mode::JetStream
    };
    let publisher = Publisher::new(
        client,
        mode,
        config.max_in_flight as usize,
        config.drain_timeout,
        metrics.clone(),
    );
    if mode == Mode::JetStream {
        // `None` (shutdown came first) needs nothing here: the run below ends at once.
        provision_stream(publisher.jetstream(), raw_stream_config(), &shutdown).await?;
    }
    let truth = match &config.truth {
        Some(path) => Some(
            TruthWriter::create(path)
                .with_context(|| format!("creating truth file {}", path.display()))?,
        ),
        None => None,
    };
    let mut run = Run {
        pacer: Pacer::new(plan.settings.start_ms, now_ms(), plan.speed),
        sim: Simulator::new(&plan.city, plan.settings.clone()),
        // The first rate is measured from here, after the city is built.
        progress: Progress::new(config.progress_interval, metrics.totals()),
        simulated_ms: plan.settings.start_ms,
        plan,
        publisher,
        metrics,
        truth,
        batch: Vec::with_capacity(BATCH + 1),
        completed: false,
    };
    tracing::info!(
        sensors = run.sim.sensor_count(),
        seed = run.plan.settings.seed,
        start = %rfc3339(run.plan.settings.start_ms),
        end = %run.plan.end_ms.map_or_else(|| "none".to_owned(), rfc3339),
        speed = %run.plan.speed,
        mode = ?mode,
        "simulator started"
    );
    let outcome = run.steps(&shutdown).await;
    run.finish(outcome)
}

/// The run loop's state: the model, its clock and where its messages go.
struct Run {
    plan: Plan,
    pacer: Pacer,
    sim: Simulator,
    publisher: Publisher,
    metrics: SimMetrics,
    truth: Option<TruthWriter<File>>,
    progress: Progress,
    /// The messages of one step, reused.
    batch: Vec<Outgoing>,
    /// Simulated time reached, ms.
    simulated_ms: u64,
    /// The run reached `--duration`.
    completed: bool,
}

/// What a step of the run loop leaves to do.
enum Next {
    /// `--duration` is reached: every message is published.
    Done,
    /// A full step: step again at once (catching up).
    Step,
    /// Caught up with the pacer: step again after this long.
    Sleep(Duration),
}

impl Run {
    /// Steps until `--duration` is reached or `shutdown` fires.
    async fn steps(&mut self, shutdown: &Shutdown) -> Result<(), LoopError> {
        while !shutdown.is_triggered() {
            match self.step(shutdown).await? {
                Next::Done => {
                    self.completed = true;
                    break;
                }
                Next::Step => {}
                Next::Sleep(wait) => tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                },
            }
        }
        Ok(())
    }

    /// Generates up to [`BATCH`] messages due by the pacer's simulated now (all that are left
    /// at the end of `--duration`), records and publishes them.
    async fn step(&mut self, shutdown: &Shutdown) -> Result<Next, LoopError> {
        let now = now_ms();
        let mut before = self.pacer.sim_now(now);
        if let Some(end) = self.plan.end_ms {
            before = before.min(end);
        }
        self.batch.clear();
        let n = self.sim.step(before, BATCH, &mut self.batch);
        let done = self
            .plan
            .end_ms
            .is_some_and(|end| before >= end && self.sim.next_emit_ms().is_none_or(|t| t >= end));
        if done {
            self.sim.drain_held(&mut self.batch);
        }
        for msg in &self.batch {
            record(&self.metrics, self.truth.as_mut(), msg)?;
        }
        self.publisher.publish(&self.batch, shutdown).await?;
        self.simulated_ms = self.simulated_ms.max(before);
        self.metrics.simulated_time_ms(self.simulated_ms);
        self.progress
            .tick(&self.metrics, self.simulated_ms, self.pacer.caught_up(now));
        if done {
            return Ok(Next::Done);
        }
        if n >= BATCH {
            return Ok(Next::Step);
        }
        let next = self
            .sim
            .next_emit_ms()
            .map_or(now + MAX_SLEEP.as_millis() as u64, |t| {
                self.pacer.wall_at(t)
            });
        let wait = Duration::from_millis(next.saturating_sub(now)).clamp(MIN_SLEEP, MAX_SLEEP);
        Ok(Next::Sleep(wait))
    }

    /// Flushes the truth file and reports how the run ended; an unacknowledged publish at the
    /// end is logged, not an error (the counters say what was acknowledged).
    fn finish(mut self, outcome: Result<(), LoopError>) -> anyhow::Result<Summary> {
        if let Some(t) = self.truth.as_mut() {
            t.flush().context("writing the truth file")?;
        }
        let totals = self.metrics.totals();
        match outcome {
            Ok(()) | Err(LoopError::Publish(PublishFailure::Cancelled)) => {}
            Err(LoopError::Publish(e @ PublishFailure::Unacknowledged(_))) => {
                tracing::error!(error = %e, published = totals.published, acked = totals.acked,
                    "stopping with unacknowledged readings: they may not be stored");
            }
            Err(e) => return Err(e.into()),
        }
        tracing::info!(
            generated = totals.generated,
            published = totals.published,
            acked = totals.acked,
            errors = totals.errors,
            simulated_time = %rfc3339(self.simulated_ms),
            completed = self.completed,
            "simulator stopped"
        );
        Ok(Summary {
            totals,
            simulated_ms: self.simulated_ms,
            completed: self.completed,
        })
    }
}

/// Why the run loop stopped before its end.
#[derive(Debug, thiserror::Error)]
enum LoopError {
    /// Publishing stopped (shutdown, which is a normal end, or a failure).
    #[error(transparent)]
    Publish(#[from] PublishFailure),
    /// The truth file could not be written: the run's evidence would be incomplete.
    #[error("writing the truth file: {0}")]
    Truth(#[from] std::io::Error),
}

/// Counts and records one message handed to NATS (or dropped by a dropout fault).
fn record(
    metrics: &SimMetrics,
    truth: Option<&mut TruthWriter<File>>,
    msg: &Outgoing,
) -> std::io::Result<()> {
    if msg.fault != Some(faults::Fault::Duplicate) {
        metrics.generated(msg.kind);
    }
    if let Some(f) = msg.fault {
        metrics.fault(f);
    }
    match truth {
        Some(t) => t.record(msg),
        None => Ok(()),
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Periodic progress line.
struct Progress {
    every: Duration,
    last_at: Instant,
    last: Totals,
}

impl Progress {
    fn new(every: Duration, totals: Totals) -> Progress {
        Progress {
            every,
            last_at: Instant::now(),
            last: totals,
        }
    }

    fn tick(&mut self, metrics: &SimMetrics, simulated_ms: u64, caught_up: bool) {
        let elapsed = self.last_at.elapsed();
        if elapsed < self.every {
            return;
        }
        let t = metrics.totals();
        let rate = (t.generated - self.last.generated) as f64 / elapsed.as_secs_f64();
        tracing::info!(
            readings_per_s = rate.round() as u64,
            generated = t.generated,
            published = t.published,
            acked = t.acked,
            errors = t.errors,
            new_errors = t.errors - self.last.errors,
            simulated_time = %rfc3339(simulated_ms),
            behind_wall_clock_s = now_ms().saturating_sub(simulated_ms) / 1000,
            real_time = caught_up,
            "progress"
        );
        self.last = t;
        self.last_at = Instant::now();
    }
}

/// The `city` subcommand's output: the city as a TOML city file (`print`), or a summary.
pub fn city_command(city: &city::City, print: bool) -> Result<String, toml::ser::Error> {
    if print {
        return city.to_toml();
    }
    let mut out = format!(
        "{}: {} districts, {} sensors ({} loop detectors, {} air stations), UTC{:+} min\n",
        city.name,
        city.districts.len(),
        city.sensor_count(),
        city.traffic_sensor_count(),
        city.air_sensor_count(),
        city.utc_offset_minutes
    );
    for d in &city.districts {
        out.push_str(&format!(
            "  {} {:<20} {:>5} segments {:>5} stations\n",
            d.id,
            d.name,
            d.segments.len(),
            d.stations.len()
        ));
    }
    Ok(out)
}
