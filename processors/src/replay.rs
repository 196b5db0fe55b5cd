//! `citypulse-processors replay`: recomputes the window results of a past range from READINGS
//! (or, with `--source raw`, from RAW through ingest's validator) into a separate stream, for a
//! backfill after a change (a window size, a city file, a fixed bug), without touching the live
//! service's consumers, checkpoints or METRICS.
//!
//! **Reading.** One ordered consumer per partition (ephemeral, no durable state, no acks) on
//! `readings.<p>.>`, from the first message stored at or after `--from` − `--warmup` (stream
//! time; ingest refuses readings from the future, so a reading's stream time is never earlier
//! than its event time and the warm-up never starts late), in stream order, through the same
//! fold ([`crate::fold`]) and the same [`PartitionState`] with the same settings as the live
//! service ([`Config::settings`]; `--window`, `--hop`, `--allowed-lateness`, `--city` and
//! `--partition-count` override them). Windows close by event time only: there is no idle
//! advance. A partition stops once its watermark has reached `--to` or when it has read every
//! message the stream held when the replay started.
//!
//! **Reading RAW** (`--source raw`, for a range READINGS no longer holds). One ordered consumer
//! on all of RAW from the first message stored at or after `--from` − `--warmup`, in stream
//! order. Each message goes through ingest's pure validator
//! ([`citypulse_ingest::validate::Validator`]) with ingest's time limits (`--max-future-skew`,
//! `--max-age`, ingest's defaults) evaluated at the message's own publish time — the closest
//! known value of the clock ingest validated it with — and with ingest's normalisations
//! (clamped pollutants, a speed without vehicles dropped). An invalid message is counted
//! (`invalid` in the summary), not dead-lettered. A valid reading goes to the [`PartitionState`]
//! of its district's partition ([`partition_of`]); per partition readings then arrive in RAW
//! order, the order ingest wrote them to READINGS, so the results equal a READINGS replay's. A
//! repeated reading, which ingest dropped, is dropped by the state's duplicate guard. Windows
//! are closed whenever a partition's watermark moves, and a partition whose watermark reached
//! `--to` takes no more readings; reading stops once every partition has, or at RAW's last
//! message when the replay started. Differences from what ingest decided live are possible
//! only where ingest's clock was far from the publish time (ingest catching up a backlog:
//! a reading it found too old may be accepted here, one slightly from the future rejected)
//! or where its settings (`--partitions`, time limits) differed from the replay's.
//!
//! **Emitting.** Only windows with `window_start ≥ --from` and `window_end ≤ --to`, and only
//! windows the watermark closed: a window still open when its partition's input ends (the last
//! minute or so of the stream) is not emitted. The warm-up gives the stateful figures (NowCast's
//! 12 hours, the 24-h means, learned free-flow speeds, the duplicate guard) their history; with
//! `--warmup` covering everything READINGS holds since the live service started, the output is
//! byte-identical to what the live service published (same payload, same `Nats-Msg-Id`),
//! provided the live service closed those windows by event time rather than idle advance.
//!
//! **Output.** `--into NAME`: stream `NAME` (created when missing, METRICS' limits), subjects
//! `replay.<name>.metrics.<kind>.<district>[.<sensor>]` (`<name>` = NAME in lower case: the
//! live subject with a prefix that overlaps no other stream), `Nats-Msg-Id` as live (so a
//! rerun within the duplicate window is deduplicated). `--into METRICS` publishes into the live
//! stream on the live subjects with the live ids: the server drops the results it already has.

use crate::config::{Config, Settings};
use crate::fold::{self, Folded, Outcome, Refusal};
use crate::window::{Observed, PartitionState};
use anyhow::Context as _;
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use async_nats::jetstream::Context;
use citypulse_ingest::validate::{TimeLimits, Validator};
use citypulse_runtime::admin::Health;
use citypulse_runtime::duration;
use citypulse_runtime::jetstream::ensure_stream;
use citypulse_runtime::nats::{connect, NatsArgs, NatsMetrics};
use citypulse_runtime::publish::{publish_in_windows, Outgoing};
use citypulse_runtime::shutdown::Shutdown;
use citypulse_runtime::stream_config;
use citypulse_schema::{partition_of, streams, WindowResult};
use clap::{Args, ValueEnum};
use futures::StreamExt;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// NatsArgs' default URL, to tell a `--nats-url` given after `replay` from none.
const DEFAULT_NATS_URL: &str = "nats://127.0.0.1:4222";
/// Results closed and published together (acks awaited in windows of
/// [`crate::nats::RESULTS_WINDOW`], one window end at a time).
const PUBLISH_BATCH: usize = 1_000;
/// How often the progress line is redrawn (on a terminal) and printed (otherwise: every 10th).
const PROGRESS_EVERY: Duration = Duration::from_millis(500);
/// Most READINGS messages a partition's ordered consumer pulls at once (the consumer's
/// `max_batch`; the client asks for 500 otherwise). From a backlog ingest writes about 125
/// readings per message, so 500 would buffer about 6 MB per partition; 20 keep it near 250 KB at
/// the same speed (docs/benchmarks.md, *Full batches from a backlog*).
const READINGS_PULL: i64 = 20;
/// Longest a pull of the replay's ordered consumers waits (the consumers' `max_expires`; the
/// client's default is 30 s, its idle heartbeat 15 s). A pull the client believes outstanding
/// and the server does not have (`citypulse_runtime::source::STALL` has the story) then costs
/// 2 s, not 30: at 100,000 sensors one replay in `scripts/bench` took 39 s instead of 8.
const READINGS_PULL_EXPIRES: Duration = Duration::from_secs(2);
/// Stream names the replay must never write into under `replay.<name>.…` (they are the
/// pipeline's own); `METRICS` is allowed, explicitly, as the live target.
const RESERVED: [&str; 4] = [
    streams::RAW,
    streams::READINGS,
    streams::DLQ,
    streams::ALERTS,
];

/// `replay`: recompute window results for a past range from READINGS (or RAW) into a separate
/// stream.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// NATS connection (also accepted before `replay`).
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Start of the range, RFC 3339 (e.g. 2026-06-01T00:00:00Z): windows starting at or after it
    /// are emitted.
    #[arg(long, env = "CITYPULSE_PROCESSORS_REPLAY_FROM", value_parser = parse_time)]
    pub from: u64,

    /// End of the range, RFC 3339: windows ending at or before it are emitted.
    #[arg(long, env = "CITYPULSE_PROCESSORS_REPLAY_TO", value_parser = parse_time)]
    pub to: u64,

    /// Target stream: results go to stream NAME on `replay.<name>.metrics.…` (created when
    /// missing). "METRICS" publishes into the live stream on the live subjects, where the
    /// server drops results it already has (same Nats-Msg-Id).
    #[arg(long, env = "CITYPULSE_PROCESSORS_REPLAY_INTO", value_parser = parse_target)]
    pub into: String,

    /// How much READINGS (or RAW) before --from is read (stream time) to rebuild the stateful
    /// figures: NowCast (12 h), the 24-h means, learned free-flow speeds. Results of the warm-up
    /// are not emitted. A value longer than the stream's age reads it from its first message.
    #[arg(long, env = "CITYPULSE_PROCESSORS_REPLAY_WARMUP", default_value = "24h", value_parser = duration::parse)]
    pub warmup: Duration,

    /// Window length for the replay. Default: the live service's --window
    /// (CITYPULSE_PROCESSORS_WINDOW).
    #[arg(long = "window", env = "CITYPULSE_PROCESSORS_REPLAY_WINDOW", value_parser = duration::parse_positive)]
    pub window: Option<Duration>,

    /// Hop for hopping windows. Default: the live service's --hop when --window is not given,
    /// else the replay's window (tumbling).
    #[arg(long = "hop", env = "CITYPULSE_PROCESSORS_REPLAY_HOP", value_parser = duration::parse_positive)]
    pub hop: Option<Duration>,

    /// Allowed lateness for the replay. Default: the live service's.
    #[arg(long = "allowed-lateness", env = "CITYPULSE_PROCESSORS_REPLAY_ALLOWED_LATENESS", value_parser = duration::parse)]
    pub allowed_lateness: Option<Duration>,

    /// City file for the replay. Default: the live service's --city.
    #[arg(long = "city", env = "CITYPULSE_PROCESSORS_REPLAY_CITY")]
    pub city: Option<PathBuf>,

    /// Number of READINGS partitions. Default: the live service's.
    #[arg(
        long = "partition-count",
        env = "CITYPULSE_PROCESSORS_REPLAY_PARTITION_COUNT"
    )]
    pub partition_count: Option<u32>,

    /// What to read: "readings" (READINGS, what the live service read) or "raw" (RAW, the
    /// devices' messages, through ingest's validator: for a range READINGS no longer holds).
    #[arg(long, env = "CITYPULSE_PROCESSORS_REPLAY_SOURCE", value_enum, default_value_t = Source::Readings)]
    pub source: Source,

    /// With --source raw: readings whose `ts` is further ahead of their RAW message's publish
    /// time are invalid, as ingest's --max-future-skew (set it to ingest's).
    #[arg(long, env = "CITYPULSE_PROCESSORS_REPLAY_MAX_FUTURE_SKEW", default_value = "30s", value_parser = duration::parse)]
    pub max_future_skew: Duration,

    /// With --source raw: readings whose `ts` is older than this at their RAW message's publish
    /// time are invalid, as ingest's --max-age (set it to ingest's).
    #[arg(long, env = "CITYPULSE_PROCESSORS_REPLAY_MAX_AGE", default_value = "72h", value_parser = duration::parse_positive)]
    pub max_age: Duration,

    /// No progress line on stderr.
    #[arg(long, env = "CITYPULSE_PROCESSORS_REPLAY_QUIET")]
    pub quiet: bool,
}

/// The stream a replay reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// READINGS: validated readings, by partition.
    Readings,
    /// RAW: the devices' messages, validated again as ingest did.
    Raw,
}

impl ReplayArgs {
    /// The NATS settings: given after `replay`, else before it (both read the same variables).
    pub fn nats_args(&self, top: &NatsArgs) -> NatsArgs {
        let mine = &self.nats;
        let default = NatsArgs::url(DEFAULT_NATS_URL);
        NatsArgs {
            nats_url: if mine.nats_url == default.nats_url {
                top.nats_url.clone()
            } else {
                mine.nats_url.clone()
            },
            nats_creds: mine.nats_creds.clone().or_else(|| top.nats_creds.clone()),
            nats_user: mine.nats_user.clone().or_else(|| top.nats_user.clone()),
            nats_password: mine
                .nats_password
                .clone()
                .or_else(|| top.nats_password.clone()),
            nats_inbox_prefix: mine
                .nats_inbox_prefix
                .clone()
                .or_else(|| top.nats_inbox_prefix.clone()),
        }
    }

    /// `--from → --to`, RFC 3339.
    pub fn range(&self) -> String {
        let t = |ms: u64| humantime::format_rfc3339(UNIX_EPOCH + Duration::from_millis(ms));
        format!("{} → {}", t(self.from), t(self.to))
    }
}

fn parse_time(s: &str) -> Result<u64, String> {
    let t = humantime::parse_rfc3339_weak(s.trim())
        .map_err(|e| format!("`{s}` is not an RFC 3339 time (e.g. 2026-06-01T00:00:00Z): {e}"))?;
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("`{s}` is before 1970"))?;
    Ok(duration::millis(ms))
}

fn parse_target(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(format!(
            "`{s}` is not a stream name: 1 to 64 characters among A-Z, a-z, 0-9, _ and -"
        ));
    }
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s)) {
        return Err(format!("`{s}` is one of the pipeline's own streams"));
    }
    if s != streams::METRICS && s.eq_ignore_ascii_case(streams::METRICS) {
        return Err(format!(
            "`{s}`: write \"{}\" to replay into the live stream",
            streams::METRICS
        ));
    }
    Ok(s.to_owned())
}

/// Where results go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The live METRICS stream, live subjects.
    Live,
    /// Stream `name`, subjects `replay.<lower>.metrics.…`.
    Separate {
        /// The stream.
        name: String,
        /// Subject prefix, with its trailing dot: `replay.<lower>.`.
        prefix: String,
    },
}

impl Target {
    /// The target named by `--into`.
    pub fn of(into: &str) -> Target {
        if into == streams::METRICS {
            Target::Live
        } else {
            Target::Separate {
                name: into.to_owned(),
                prefix: format!("replay.{}.", into.to_ascii_lowercase()),
            }
        }
    }

    /// The stream's name.
    pub fn stream(&self) -> &str {
        match self {
            Target::Live => streams::METRICS,
            Target::Separate { name, .. } => name,
        }
    }

    /// Where a result with live subject `subject` goes.
    pub fn subject(&self, subject: &str) -> String {
        match self {
            Target::Live => subject.to_owned(),
            Target::Separate { prefix, .. } => format!("{prefix}{subject}"),
        }
    }
}

/// A validated replay.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The core's settings and the partition count (every partition is replayed; the
    /// ownership settings are not used).
    pub settings: Settings,
    /// Range start, ms.
    pub from: u64,
    /// Range end, ms.
    pub to: u64,
    /// Where reading starts (stream time), ms.
    pub read_from: u64,
    /// Where results go.
    pub target: Target,
    /// What is read.
    pub source: Source,
    /// With [`Source::Raw`]: ingest's time limits, applied at each RAW message's publish time.
    pub time_limits: TimeLimits,
    /// Draw the progress line.
    pub progress: bool,
}

impl Plan {
    /// The live settings (`config`) with the replay's overrides, validated.
    pub fn new(config: &Config, args: &ReplayArgs) -> Result<Plan, String> {
        if args.from >= args.to {
            return Err("--from must be before --to".to_owned());
        }
        // Every partition is replayed, whatever this instance's ownership flags say.
        let mut live = config.clone();
        live.command = None;
        if let Some(w) = args.window {
            live.window = w;
            live.hop = None;
        }
        if let Some(h) = args.hop {
            live.hop = Some(h);
        }
        if let Some(l) = args.allowed_lateness {
            live.allowed_lateness = l;
        }
        if let Some(c) = &args.city {
            live.city = Some(c.clone());
        }
        if let Some(n) = args.partition_count {
            live.partition_count = n;
        }
        let settings = live.settings()?;
        Ok(Plan {
            settings,
            from: args.from,
            to: args.to,
            read_from: args.from.saturating_sub(duration::millis(args.warmup)),
            target: Target::of(&args.into),
            source: args.source,
            time_limits: TimeLimits {
                max_future_skew_ms: duration::millis(args.max_future_skew),
                max_age_ms: duration::millis(args.max_age),
            },
            progress: !args.quiet,
        })
    }

    /// Whether a closed window is in the range.
    pub fn emits(&self, w: &WindowResult) -> bool {
        w.window_start >= self.from && w.window_end <= self.to
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages read (READINGS, or RAW with `--source raw`).
    pub messages: u64,
    /// RAW messages ingest's validator refuses (with `--source raw`; not counted in `readings`).
    pub invalid: u64,
    /// Readings that reached the fold (each with one outcome below).
    pub readings: u64,
    /// Accepted into windows.
    pub accepted: u64,
    /// Behind the watermark.
    pub late: u64,
    /// Refused (undecodable, wrong partition, invalid values, duplicates).
    pub rejected: u64,
    /// Window results closed in the range and published.
    pub results: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl Summary {
    /// Readings per second of wall time.
    pub fn rate(&self) -> f64 {
        self.readings as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} messages, ", self.messages)?;
        if self.invalid > 0 {
            write!(f, "{} invalid, ", self.invalid)?;
        }
        write!(
            f,
            "{} readings (accepted {}, late {}, rejected {}), {} window results in {:.1} s: {:.0} readings/s",
            self.readings,
            self.accepted,
            self.late,
            self.rejected,
            self.results,
            self.elapsed.as_secs_f64(),
            self.rate()
        )
    }
}

/// Counters the partitions share with the progress line.
#[derive(Debug, Default)]
struct Counters {
    messages: AtomicU64,
    invalid: AtomicU64,
    readings: AtomicU64,
    accepted: AtomicU64,
    late: AtomicU64,
    rejected: AtomicU64,
    results: AtomicU64,
    /// Messages to read at most (every partition's pending count at the start).
    total: AtomicU64,
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
    fn get(c: &AtomicU64) -> u64 {
        c.load(Ordering::Relaxed)
    }
}

/// Runs a replay until every partition is done (or `shutdown`), then returns what it did.
pub async fn run(
    plan: Plan,
    client: async_nats::Client,
    shutdown: Shutdown,
) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let js = async_nats::jetstream::new(client);
    let count = plan.settings.partition_count;
    // READINGS must be partitioned as --partition-count says, since a partition's readings
    // share one watermark. Reading RAW, a READINGS that is gone is no reason to stop.
    let readings = match js.get_stream(streams::READINGS).await {
        Ok(stream) => Some(stream),
        Err(e) if plan.source == Source::Raw => {
            tracing::warn!(error = %e, "stream {} not found; --partition-count {count} unchecked",
                streams::READINGS);
            None
        }
        Err(e) => return Err(e).with_context(|| format!("stream {} not found", streams::READINGS)),
    };
    let readings = match readings {
        Some(mut stream) => {
            let end_seq = crate::nats::check_partitioning(&mut stream, count).await?;
            Some((stream, end_seq))
        }
        None => None,
    };
    provision(&js, &plan).await?;
    tracing::info!(from = plan.from, to = plan.to, read_from = plan.read_from,
        source = ?plan.source, stream = plan.target.stream(), windows = %plan.settings.core.spec,
        allowed_lateness_ms = plan.settings.core.allowed_lateness_ms, "replay starting");

    let counters = Arc::new(Counters::default());
    let plan = Arc::new(plan);
    let stop = shutdown.child();
    let publisher = Publisher {
        js: js.clone(),
        plan: Arc::clone(&plan),
        counters: Arc::clone(&counters),
        shutdown: stop.clone(),
    };
    let progress = plan.progress.then(|| {
        let (counters, stop) = (Arc::clone(&counters), stop.clone());
        tokio::spawn(progress_line(counters, started, stop))
    });
    let result = match (plan.source, readings) {
        (Source::Raw, _) => replay_raw(&js, publisher).await,
        (Source::Readings, Some((stream, end_seq))) => {
            replay_readings(&stream, end_seq, publisher).await
        }
        (Source::Readings, None) => Ok(()),
    };
    stop.trigger();
    if let Some(p) = progress {
        let _ = p.await;
    }
    result?;
    if shutdown.is_triggered() {
        anyhow::bail!("interrupted");
    }
    let c = &counters;
    Ok(Summary {
        messages: Counters::get(&c.messages),
        invalid: Counters::get(&c.invalid),
        readings: Counters::get(&c.readings),
        accepted: Counters::get(&c.accepted),
        late: Counters::get(&c.late),
        rejected: Counters::get(&c.rejected),
        results: Counters::get(&c.results),
        elapsed: started.elapsed(),
    })
}

/// READINGS, one task per partition, until each is done; the first error stops the others.
async fn replay_readings(
    readings: &Stream,
    end_seq: u64,
    publisher: Publisher,
) -> anyhow::Result<()> {
    let plan = Arc::clone(&publisher.plan);
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..plan.settings.partition_count {
        let consumer = open(readings, p, plan.read_from).await?;
        let pending = consumer.cached_info().num_pending;
        Counters::add(&publisher.counters.total, pending);
        if pending == 0 {
            continue;
        }
        let run = PartitionReplay {
            lane: Lane::new(p, &plan),
            publisher: publisher.clone(),
            end_seq,
        };
        tasks.spawn(run.run(consumer));
    }
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done.map_err(anyhow::Error::from).and_then(|r| r) {
            publisher.shutdown.trigger();
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// RAW in stream order through ingest's validator, each valid reading to its partition's lane,
/// until every partition is done or RAW's end at the start.
async fn replay_raw(js: &Context, publisher: Publisher) -> anyhow::Result<()> {
    let plan = Arc::clone(&publisher.plan);
    let counters = Arc::clone(&publisher.counters);
    let mut raw = js
        .get_stream(streams::RAW)
        .await
        .with_context(|| format!("stream {} not found", streams::RAW))?;
    let end_seq = raw.info().await?.state.last_sequence;
    let consumer = raw
        .create_consumer(pull::OrderedConfig {
            deliver_policy: deliver_from(plan.read_from)?,
            description: Some("citypulse processors replay from RAW".to_owned()),
            ..Default::default()
        })
        .await
        .context("creating the replay consumer of RAW")?;
    let pending = consumer.cached_info().num_pending;
    Counters::add(&counters.total, pending);
    if pending == 0 {
        return Ok(());
    }
    let validator = Validator::new(plan.time_limits);
    let count = plan.settings.partition_count;
    let mut lanes: Vec<Lane> = (0..count).map(|p| Lane::new(p, &plan)).collect();
    let mut messages = consumer.messages().await.context("reading RAW")?;
    loop {
        let next = tokio::select! {
            biased;
            _ = publisher.shutdown.cancelled() => return Ok(()),
            next = messages.next() => next,
        };
        let Some(message) = next else {
            anyhow::bail!("the RAW consumer ended");
        };
        let message = message.context("reading RAW")?;
        let (seq, pending, published) = match message.info() {
            Ok(i) => (i.stream_sequence, i.pending, i.published),
            Err(e) => anyhow::bail!("RAW message without info: {e}"),
        };
        if seq > end_seq {
            break;
        }
        Counters::add(&counters.messages, 1);
        // Ingest's clock when it validated the message, as closely as it can be known.
        let at_ms = u64::try_from(published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        match validator.validate(&message.subject, &message.payload, at_ms) {
            Err(_) => Counters::add(&counters.invalid, 1),
            Ok(accepted) => {
                let p = partition_of(&accepted.subject.district, count);
                if let Some(lane) = lanes.get_mut(p as usize).filter(|l| !l.done) {
                    let wm = lane.state.watermark();
                    let mut tally = Tally::default();
                    tally.count(&lane.state.observe(&accepted.reading, 0));
                    tally.add_to(&counters);
                    if lane.state.watermark() != wm {
                        // A slice at a time, as from READINGS.
                        while lane.close_some(&plan, PUBLISH_BATCH) > 0 {
                            if lane.outbox.len() >= PUBLISH_BATCH {
                                publisher.publish(&mut lane.outbox).await?;
                            }
                        }
                    }
                }
            }
        }
        let finished = pending == 0 || seq >= end_seq || lanes.iter().all(|l| l.done);
        let queued: usize = lanes.iter().map(|l| l.outbox.len()).sum();
        if queued >= PUBLISH_BATCH || finished {
            for lane in &mut lanes {
                publisher.publish(&mut lane.outbox).await?;
            }
        }
        if finished {
            break;
        }
    }
    for lane in &lanes {
        tracing::debug!(partition = lane.id, watermark = ?lane.state.watermark(), "partition replayed");
    }
    Ok(())
}

/// The `replay` command: connects, replays, prints the summary on stdout (progress and logs on
/// stderr). No admin server: it is a one-off task.
pub async fn command(config: &Config, args: &ReplayArgs) -> ExitCode {
    let result = async {
        let plan = Plan::new(config, args).map_err(anyhow::Error::msg)?;
        let (health, shutdown) = (Health::new(), Shutdown::install());
        let nats_metrics = NatsMetrics::new(&prometheus::Registry::new())?;
        let nats = args.nats_args(&config.nats);
        let client = connect(&nats, "citypulse-processors-replay", nats_metrics, health).await?;
        run(plan, client, shutdown).await
    };
    match result.await {
        Ok(summary) => {
            println!("replayed {} into {}: {summary}", args.range(), args.into);
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "replay failed");
            ExitCode::FAILURE
        }
    }
}

/// Creates the target stream when missing; a separate one must take its subjects.
async fn provision(js: &Context, plan: &Plan) -> anyhow::Result<()> {
    match &plan.target {
        Target::Live => {
            ensure_stream(js, stream_config::metrics(plan.settings.metrics_limits))
                .await
                .context("provisioning the METRICS stream")?;
        }
        Target::Separate { name, prefix } => {
            let subjects = format!("{prefix}{}", streams::METRICS_SUBJECTS);
            let desired = async_nats::jetstream::stream::Config {
                name: name.clone(),
                subjects: vec![subjects.clone()],
                description: Some(format!(
                    "citypulse processors replay: window results of a past range on {subjects}"
                )),
                ..stream_config::metrics(plan.settings.metrics_limits)
            };
            let mut stream = ensure_stream(js, desired)
                .await
                .with_context(|| format!("provisioning the replay stream {name}"))?;
            let info = stream.info().await?;
            if !info.config.subjects.contains(&subjects) {
                anyhow::bail!(
                    "stream {name} exists with subjects {:?}, not {subjects}; choose another --into",
                    info.config.subjects
                );
            }
        }
    }
    Ok(())
}

/// Where an ordered consumer starts: the first message stored at or after `from_ms`.
fn deliver_from(from_ms: u64) -> anyhow::Result<DeliverPolicy> {
    if from_ms == 0 {
        return Ok(DeliverPolicy::All);
    }
    let nanos = i128::from(from_ms) * 1_000_000;
    Ok(DeliverPolicy::ByStartTime {
        start_time: time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
            .context("--from minus --warmup is out of range")?,
    })
}

/// An ordered consumer of partition `p` from stream time `from_ms`.
async fn open(
    readings: &Stream,
    p: u32,
    from_ms: u64,
) -> anyhow::Result<async_nats::jetstream::consumer::Consumer<pull::OrderedConfig>> {
    readings
        .create_consumer(pull::OrderedConfig {
            filter_subject: crate::nats::partition_filter(p),
            deliver_policy: deliver_from(from_ms)?,
            description: Some(format!("citypulse processors replay, partition {p}")),
            max_batch: READINGS_PULL,
            max_expires: READINGS_PULL_EXPIRES,
            ..Default::default()
        })
        .await
        .with_context(|| format!("creating the replay consumer of partition {p}"))
}

/// A partition's windowing state and the results it has queued.
struct Lane {
    id: u32,
    state: PartitionState,
    outbox: Vec<Outgoing>,
    closed: Vec<WindowResult>,
    /// Its watermark has reached --to: every window of the range is closed.
    done: bool,
}

impl Lane {
    fn new(id: u32, plan: &Plan) -> Lane {
        Lane {
            id,
            state: PartitionState::new(plan.settings.core.clone()),
            outbox: Vec::new(),
            closed: Vec::new(),
            done: false,
        }
    }

    /// Closes the next `max` results at most of the windows the watermark passed and queues
    /// those in the range; returns how many were closed (0: none left).
    fn close_some(&mut self, plan: &Plan, max: usize) -> usize {
        self.closed.clear();
        let n = self.state.close_some(&mut self.closed, max);
        for w in self.closed.iter().filter(|w| plan.emits(w)) {
            let subject = plan.target.subject(&w.subject());
            let m = Outgoing::new(subject, w.msg_id(), w.encode().into());
            self.outbox.push(m.in_epoch(w.window_end));
        }
        self.done = !self.state.closing() && self.state.watermark().is_some_and(|wm| wm >= plan.to);
        n
    }
}

/// Publishes queued results into the target.
#[derive(Clone)]
struct Publisher {
    js: Context,
    plan: Arc<Plan>,
    counters: Arc<Counters>,
    shutdown: Shutdown,
}

impl Publisher {
    async fn publish(&self, outbox: &mut Vec<Outgoing>) -> anyhow::Result<()> {
        if outbox.is_empty() {
            return Ok(());
        }
        // Counted: a rerun's duplicates are not sent twice to match acks to results.
        publish_in_windows(
            &self.js,
            outbox,
            crate::nats::RESULTS_WINDOWS,
            &self.shutdown,
            &|_| {},
        )
        .await
        .with_context(|| format!("publishing into {}", self.plan.target.stream()))?;
        Counters::add(&self.counters.results, outbox.len() as u64);
        outbox.clear();
        Ok(())
    }
}

/// One READINGS partition's replay.
struct PartitionReplay {
    lane: Lane,
    publisher: Publisher,
    /// The stream's last sequence when the replay started: nothing after it is read.
    end_seq: u64,
}

/// Counts each reading's outcome (no metrics, no dead letters: the live service did that).
#[derive(Default)]
struct Tally {
    readings: u64,
    accepted: u64,
    late: u64,
    rejected: u64,
}

impl Tally {
    fn count(&mut self, observed: &Observed) {
        self.readings += 1;
        match observed {
            Observed::Accepted => self.accepted += 1,
            Observed::Late(_) => self.late += 1,
            Observed::Rejected(_) => self.rejected += 1,
        }
    }

    fn add_to(&self, c: &Counters) {
        Counters::add(&c.readings, self.readings);
        Counters::add(&c.accepted, self.accepted);
        Counters::add(&c.late, self.late);
        Counters::add(&c.rejected, self.rejected);
    }
}

impl Folded for Tally {
    fn observed(&mut self, outcome: Outcome<'_>) {
        self.count(&outcome.observed);
    }
    fn refused(&mut self, _: Refusal) {
        self.readings += 1;
        self.rejected += 1;
    }
}

impl PartitionReplay {
    async fn run(
        mut self,
        consumer: async_nats::jetstream::consumer::Consumer<pull::OrderedConfig>,
    ) -> anyhow::Result<()> {
        let id = self.lane.id;
        let plan = Arc::clone(&self.publisher.plan);
        let count = plan.settings.partition_count;
        let mut messages = consumer
            .messages()
            .await
            .with_context(|| format!("reading partition {id}"))?;
        loop {
            let next = tokio::select! {
                biased;
                _ = self.publisher.shutdown.cancelled() => return Ok(()),
                next = messages.next() => next,
            };
            let Some(message) = next else {
                anyhow::bail!("partition {id}: the READINGS consumer ended");
            };
            let message = message.with_context(|| format!("reading partition {id}"))?;
            let (seq, pending) = match message.info() {
                Ok(i) => (i.stream_sequence, i.pending),
                Err(e) => anyhow::bail!("partition {id}: message without info: {e}"),
            };
            if seq > self.end_seq {
                break;
            }
            let mut tally = Tally::default();
            // Processing time 0: the idle clock is never consulted (no idle advance here).
            let lane = &mut self.lane;
            let slot = fold::Slot {
                partition: id,
                count,
            };
            fold::fold_message(
                &mut lane.state,
                slot,
                &message.subject,
                &message.payload,
                0,
                &mut tally,
            );
            Counters::add(&self.publisher.counters.messages, 1);
            tally.add_to(&self.publisher.counters);
            // A slice at a time: a window of a large partition is tens of thousands of
            // results, encoded here (at 100,000 sensors the replay peaked at 175 MiB closing
            // whole windows).
            while lane.close_some(&plan, PUBLISH_BATCH) > 0 {
                if lane.outbox.len() >= PUBLISH_BATCH {
                    self.publisher.publish(&mut lane.outbox).await?;
                }
            }
            let done = pending == 0 || seq >= self.end_seq || lane.done;
            if lane.outbox.len() >= PUBLISH_BATCH || done {
                self.publisher.publish(&mut lane.outbox).await?;
            }
            if done {
                break;
            }
        }
        self.publisher.publish(&mut self.lane.outbox).await?;
        tracing::debug!(partition = id, watermark = ?self.lane.state.watermark(), "partition replayed");
        Ok(())
    }
}

/// Redraws one progress line on stderr (a terminal) or prints one every 5 s (otherwise) until
/// `stop`; the fraction is of the messages pending at the start, an upper bound (a partition
/// stops as soon as its watermark passes --to).
async fn progress_line(counters: Arc<Counters>, started: Instant, stop: Shutdown) {
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    let mut n = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        n += 1;
        if tty || n % 10 == 0 {
            let line = progress_text(&counters, started.elapsed());
            let mut err = std::io::stderr().lock();
            let _ = if tty {
                write!(err, "\r{line}\x1b[K")
            } else {
                writeln!(err, "{line}")
            };
            let _ = err.flush();
        }
    }
    if tty {
        let _ = writeln!(std::io::stderr().lock());
    }
}

fn progress_text(c: &Counters, elapsed: Duration) -> String {
    let (done, total) = (Counters::get(&c.messages), Counters::get(&c.total).max(1));
    let secs = elapsed.as_secs_f64().max(1e-9);
    let per_message = secs / done.max(1) as f64;
    let eta = Duration::from_secs_f64(per_message * total.saturating_sub(done) as f64);
    format!(
        "replay: {done}/{total} messages ({:.1}%), {} readings, {:.0} readings/s, {} results, ETA ≤ {}",
        100.0 * done as f64 / total as f64,
        Counters::get(&c.readings),
        Counters::get(&c.readings) as f64 / secs,
        Counters::get(&c.results),
        humantime::format_duration(Duration::from_secs(eta.as_secs()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn plan(args: &[&str]) -> Result<Plan, String> {
        let mut argv = vec!["citypulse-processors", "replay"];
        argv.extend_from_slice(args);
        let config = Config::try_parse_from(argv).map_err(|e| e.to_string())?;
        let Some(crate::config::Command::Replay(r)) = &config.command else {
            return Err("no replay subcommand".to_owned());
        };
        Plan::new(&config, r)
    }

    const RANGE: [&str; 4] = [
        "--from",
        "2026-01-01T10:00:00Z",
        "--to",
        "2026-01-01T12:00:00Z",
    ];

    #[test]
    fn defaults_are_the_live_settings_with_a_day_of_warm_up_into_a_separate_stream() {
        let mut args = RANGE.to_vec();
        args.extend(["--into", "Backfill_1"]);
        let p = plan(&args).expect("valid");
        assert_eq!(p.from, 1_767_261_600_000);
        assert_eq!(p.to, p.from + 7_200_000);
        assert_eq!(p.read_from, p.from - 24 * 3_600_000);
        assert_eq!(p.settings.core.spec.size_ms(), 60_000);
        assert_eq!(p.settings.partition_count, 8);
        assert_eq!(p.target.stream(), "Backfill_1");
        assert_eq!(
            p.target.subject("metrics.air.d01"),
            "replay.backfill_1.metrics.air.d01"
        );
    }

    #[test]
    fn overrides_and_the_live_target() {
        let mut args = RANGE.to_vec();
        args.extend([
            "--into",
            "METRICS",
            "--window",
            "5m",
            "--warmup",
            "0s",
            "--partition-count",
            "4",
        ]);
        let p = plan(&args).expect("valid");
        assert_eq!(p.target, Target::Live);
        assert_eq!(p.target.subject("metrics.air.d01"), "metrics.air.d01");
        assert_eq!(p.settings.core.spec.size_ms(), 300_000);
        assert_eq!(p.settings.core.spec.hop_ms(), 300_000);
        assert_eq!(p.settings.partition_count, 4);
        assert_eq!(p.read_from, p.from);
    }

    #[test]
    fn raw_is_validated_with_ingests_default_time_limits_unless_told() {
        let mut args = RANGE.to_vec();
        args.extend(["--into", "X"]);
        let p = plan(&args).expect("valid");
        assert_eq!(p.source, Source::Readings);
        let ingest = citypulse_ingest::Config::try_parse_from(["citypulse-ingest"])
            .expect("ingest's defaults");
        assert_eq!(p.time_limits, ingest.time_limits());
        args.extend([
            "--source",
            "raw",
            "--max-age",
            "7d",
            "--max-future-skew",
            "1m",
        ]);
        let p = plan(&args).expect("valid");
        assert_eq!(p.source, Source::Raw);
        assert_eq!(p.time_limits.max_age_ms, 7 * 24 * 3_600_000);
        assert_eq!(p.time_limits.max_future_skew_ms, 60_000);
    }

    #[test]
    fn invalid_replays_say_what_is_wrong() {
        let with = |extra: &[&'static str]| {
            let mut a = RANGE.to_vec();
            a.extend_from_slice(extra);
            a
        };
        for (args, needle) in [
            (with(&["--into", "READINGS"]), "pipeline's own streams"),
            (with(&["--into", "metrics"]), "live stream"),
            (with(&["--into", "a.b"]), "not a stream name"),
            (
                with(&["--into", "X", "--source", "kafka"]),
                "possible values",
            ),
            (with(&["--into", "X", "--max-age", "0s"]), "--max-age"),
            (
                with(&["--into", "X", "--hop", "2m", "--window", "5m"]),
                "multiple of the hop",
            ),
            (
                vec![
                    "--from",
                    "yesterday",
                    "--to",
                    "2026-01-01T12:00:00Z",
                    "--into",
                    "X",
                ],
                "RFC 3339",
            ),
            (
                vec![
                    "--from",
                    "2026-01-01T12:00:00Z",
                    "--to",
                    "2026-01-01T10:00:00Z",
                    "--into",
                    "X",
                ],
                "before --to",
            ),
        ] {
            let err = plan(&args).expect_err("invalid");
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }

    #[test]
    fn only_windows_inside_the_range_are_emitted() {
        let mut args = RANGE.to_vec();
        args.extend(["--into", "X"]);
        let p = plan(&args).expect("valid");
        let w = |start: u64, end: u64| WindowResult {
            window_start: start,
            window_end: end,
            district: "d01".into(),
            sensor: None,
            readings: 1,
            sensors: 1,
            metrics: citypulse_schema::WindowMetrics::Air(Box::default()),
        };
        assert!(p.emits(&w(p.from, p.from + 60_000)));
        assert!(p.emits(&w(p.to - 60_000, p.to)));
        assert!(!p.emits(&w(p.from - 60_000, p.from)));
        assert!(!p.emits(&w(p.to, p.to + 60_000)));
        assert!(!p.emits(&w(p.to - 240_000, p.to + 60_000)));
    }
}
