//! `citypulse-alerts replay`: the transitions a rule file would have made over a past range of
//! window results ("what would these rules have fired last week?"). Reads METRICS, or a stream
//! written by `citypulse-processors replay`, with an ordered consumer (no durable consumer, no
//! checkpoint, nothing published) through the same pure evaluator and publication policy as the
//! service, and prints the transitions whose time (`at`) lies within the range.
//!
//! **Order and range.** Window results are evaluated in stream order, as the service evaluates
//! them, from the first message stored at or after `--from` − `--warmup` (stream time) up to the
//! stream's last message when the replay started. The warm-up rebuilds what was pending or
//! firing when the range starts: with a warm-up reaching back to where the service started, over
//! the stream the service read, the output is exactly what it published (no silences: a replay
//! knows none, so it prints every transition an unsilenced service would publish).
//!
//! **Silent districts** are judged in event time only (`--district-silence-grace` behind the
//! newest window end), where the service also waits for the grace in processing time; a stream
//! written by a processors replay holds its partitions far apart in event time, so judge it with
//! `--district-silence-grace 0s`.

use crate::cli::format_event;
use crate::engine::{Evaluator, Notifier, Route, RuleSet};
use anyhow::Context as _;
use async_nats::jetstream::consumer::{pull, DeliverPolicy};
use citypulse_runtime::duration;
use citypulse_runtime::nats::NatsArgs;
use citypulse_schema::streams;
use citypulse_schema::{AlertEvent, AlertState, WindowResult};
use clap::Args;
use futures::StreamExt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// `replay`: the transitions a rule file would have made over a past range.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Start of the range, RFC 3339 (e.g. 2026-06-01T00:00:00Z): transitions at or after it
    /// are printed.
    #[arg(long, env = "CITYPULSE_ALERTS_REPLAY_FROM", value_parser = parse_time)]
    pub from: u64,
    /// End of the range, RFC 3339: transitions at or before it are printed.
    #[arg(long, env = "CITYPULSE_ALERTS_REPLAY_TO", value_parser = parse_time)]
    pub to: u64,
    /// Rule file (TOML); the embedded default rules when omitted.
    #[arg(long, env = "CITYPULSE_ALERTS_REPLAY_RULES")]
    pub rules: Option<PathBuf>,
    /// Stream of window results to read: METRICS, or one written by `citypulse-processors
    /// replay --into NAME`.
    #[arg(long, env = "CITYPULSE_ALERTS_REPLAY_SOURCE", default_value = streams::METRICS)]
    pub source: String,
    /// How much of the stream before --from is evaluated (stream time) to know what is pending
    /// or firing when the range starts; its transitions are not printed.
    #[arg(long, env = "CITYPULSE_ALERTS_REPLAY_WARMUP", default_value = "24h", value_parser = duration::parse)]
    pub warmup: Duration,
    /// A district with no result while the newest window end advanced by this much is judged
    /// silent/offline (event time only); "0s" disables this judgement.
    #[arg(long, env = "CITYPULSE_ALERTS_REPLAY_DISTRICT_SILENCE_GRACE", default_value = "15m", value_parser = duration::parse)]
    pub district_silence_grace: Duration,
    /// One JSON object per line (type, subject, msg_id, data) instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_time(s: &str) -> Result<u64, String> {
    let t = humantime::parse_rfc3339_weak(s.trim())
        .map_err(|e| format!("`{s}` is not an RFC 3339 time (e.g. 2026-06-01T00:00:00Z): {e}"))?;
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_err(|_| format!("`{s}` is before 1970"))?;
    Ok(duration::millis(ms))
}

/// What a replay went through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Messages read.
    pub messages: u64,
    /// Of which not window results (skipped).
    pub undecodable: u64,
    /// Transitions printed (in the range).
    pub printed: u64,
    /// Of which firing.
    pub firing: u64,
}

impl Summary {
    /// Prints transition `e` to `out` (a JSON line with `json`, else a line for people) and
    /// counts it.
    fn print(&mut self, out: &mut impl Write, e: &AlertEvent, json: bool) -> anyhow::Result<()> {
        self.printed += 1;
        if e.state == AlertState::Firing {
            self.firing += 1;
        }
        if json {
            writeln!(out, "{}", json_line(e)?)?;
        } else {
            writeln!(out, "{}", format_event(e, false, false))?;
        }
        Ok(())
    }
}

/// The pure part: evaluates window results in order and keeps the transitions in the range.
#[derive(Debug)]
pub struct Replay {
    evaluator: Evaluator,
    notifier: Notifier,
    from: u64,
    to: u64,
    grace_ms: u64,
    judged_at: u64,
    scratch: Vec<AlertEvent>,
}

impl Replay {
    /// A replay of `[from, to]` (ms) under `rules`.
    pub fn new(rules: Arc<RuleSet>, from: u64, to: u64, grace_ms: u64) -> Replay {
        Replay {
            evaluator: Evaluator::new(rules),
            notifier: Notifier::new(),
            from,
            to,
            grace_ms,
            judged_at: 0,
            scratch: Vec::new(),
        }
    }

    /// Evaluates one window result; the transitions in the range it caused go to `out`, in the
    /// order the service would publish them.
    pub fn evaluate(&mut self, w: &WindowResult, out: &mut Vec<AlertEvent>) {
        self.scratch.clear();
        self.evaluator.evaluate(w, &mut self.scratch);
        let clock = self.evaluator.clock();
        if self.grace_ms > 0 && clock > self.grace_ms && clock > self.judged_at {
            self.judged_at = clock;
            self.evaluator
                .tick(clock - self.grace_ms, &mut self.scratch);
        }
        for e in self.scratch.drain(..) {
            // No silences: every firing is published, and so is the resolution of every
            // published one.
            let published = matches!(self.notifier.route(&e, e.at), Route::Publish { .. });
            if published && (self.from..=self.to).contains(&e.at) {
                out.push(e);
            }
        }
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// One transition as a JSON line, as `citypulse tail --json` prints one (type, subject, data),
/// with its `Nats-Msg-Id`.
pub fn json_line(e: &AlertEvent) -> serde_json::Result<String> {
    serde_json::to_string(&serde_json::json!({
        "type": "alert",
        "subject": e.subject(),
        "msg_id": e.msg_id(),
        "data": e,
    }))
}

/// `replay`: prints the transitions (stdout), then a summary (stderr).
pub async fn replay(args: ReplayArgs) -> anyhow::Result<()> {
    if args.from >= args.to {
        anyhow::bail!("--from must be before --to");
    }
    let rules = crate::rules_from(args.rules.as_deref())?;
    let started = Instant::now();
    let client = super::connect(&args.nats).await?;
    let js = async_nats::jetstream::new(client);
    let mut stream = js
        .get_stream(&args.source)
        .await
        .with_context(|| format!("stream {} not found", args.source))?;
    let end_seq = stream.info().await?.state.last_sequence;
    let read_from = args.from.saturating_sub(duration::millis(args.warmup));
    let consumer = ordered_from(&stream, read_from, &args.source).await?;
    let mut r = Replay::new(
        Arc::new(rules),
        args.from,
        args.to,
        duration::millis(args.district_silence_grace),
    );
    let mut summary = Summary::default();
    let mut events = Vec::new();
    let mut out = std::io::stdout().lock();
    if consumer.cached_info().num_pending > 0 {
        let mut messages = consumer.messages().await?;
        while let Some(m) = messages.next().await {
            let m = m.with_context(|| format!("reading stream {}", args.source))?;
            let info = m
                .info()
                .map_err(|e| anyhow::anyhow!("a message without info: {e}"))?;
            let (seq, left) = (info.stream_sequence, info.pending);
            if seq > end_seq {
                break;
            }
            summary.messages += 1;
            match WindowResult::decode(&m.payload) {
                Ok(w) => r.evaluate(&w, &mut events),
                Err(_) => summary.undecodable += 1,
            }
            for e in events.drain(..) {
                summary.print(&mut out, &e, args.json)?;
            }
            if left == 0 || seq >= end_seq {
                break;
            }
        }
    }
    out.flush()?;
    eprintln!(
        "{} → {}: {} transitions ({} firing, {} resolved) from {} messages of {} ({} not window results) in {:.1} s",
        rfc3339(args.from),
        rfc3339(args.to),
        summary.printed,
        summary.firing,
        summary.printed - summary.firing,
        summary.messages,
        args.source,
        summary.undecodable,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// An ordered consumer on `stream` (named `source`) from the messages stored at `from_ms`.
async fn ordered_from(
    stream: &async_nats::jetstream::stream::Stream,
    from_ms: u64,
    source: &str,
) -> anyhow::Result<async_nats::jetstream::consumer::Consumer<pull::OrderedConfig>> {
    let nanos = i128::from(from_ms) * 1_000_000;
    stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
                    .context("--from minus --warmup is out of range")?,
            },
            description: Some("citypulse alerts replay".to_owned()),
            ..Default::default()
        })
        .await
        .with_context(|| format!("reading stream {source}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rules;
    use citypulse_schema::{AirMetrics, WindowMetrics};

    const RULES: &str = r#"
[[rule]]
name = "aqi-usg"
kind = "air"
metric = "aqi"
op = ">"
threshold = 100
clear = 90
for = "2m"
severity = "warning"
summary = "AQI {value} in {district}"
"#;

    fn air(minute: u64, aqi: u16) -> WindowResult {
        WindowResult {
            window_start: minute * 60_000,
            window_end: (minute + 1) * 60_000,
            district: "d01".into(),
            sensor: None,
            readings: 1,
            sensors: 1,
            metrics: WindowMetrics::Air(Box::new(AirMetrics {
                aqi: Some(aqi),
                ..AirMetrics::default()
            })),
        }
    }

    fn run(from_minute: u64, to_minute: u64) -> Vec<(AlertState, u64)> {
        let rules = Arc::new(rules::load(RULES).expect("valid rules"));
        let mut r = Replay::new(rules, from_minute * 60_000, to_minute * 60_000, 0);
        let mut out = Vec::new();
        for (m, aqi) in [120, 120, 120, 120, 80, 80, 80].into_iter().enumerate() {
            r.evaluate(&air(m as u64, aqi), &mut out);
        }
        out.iter().map(|e| (e.state, e.at / 60_000)).collect()
    }

    #[test]
    fn transitions_outside_the_range_are_evaluated_but_not_printed() {
        let all = run(0, 100);
        assert_eq!(
            all,
            vec![(AlertState::Firing, 2), (AlertState::Resolved, 5)]
        );
        // The firing before the range still makes the resolution inside it.
        assert_eq!(run(3, 100), vec![(AlertState::Resolved, 5)]);
        assert_eq!(run(0, 4), vec![(AlertState::Firing, 2)]);
    }

    #[test]
    fn a_json_line_carries_subject_id_and_the_event() {
        let rules = Arc::new(rules::load(RULES).expect("valid rules"));
        let mut r = Replay::new(rules, 0, u64::MAX, 0);
        let mut out = Vec::new();
        for m in 0..4 {
            r.evaluate(&air(m, 150), &mut out);
        }
        let line = json_line(&out[0]).expect("serializes");
        let v: serde_json::Value = serde_json::from_str(&line).expect("JSON");
        assert_eq!(v["subject"], out[0].subject());
        assert_eq!(v["msg_id"], out[0].msg_id());
        let back: AlertEvent = serde_json::from_value(v["data"].clone()).expect("an event");
        assert_eq!(back, out[0]);
    }
}
