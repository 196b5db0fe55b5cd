//! Shared helpers of the integration tests: crafted window results, publishing to METRICS,
//! reading ALERTS, running the service in-process or as the real binary.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream::{self, Context};
use async_nats::HeaderMap;
use citypulse_alerts::config::RunConfig;
use citypulse_alerts::nats::{metrics_stream, HEADER_SILENCED};
use citypulse_runtime::admin::Health;
use citypulse_runtime::jetstream::ensure_stream;
use citypulse_runtime::shutdown::Shutdown;
use citypulse_schema::{AirMetrics, AlertEvent, AlertState, Severity, WindowMetrics, WindowResult};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const MIN: u64 = 60_000;
/// 2026-01-01T00:00:00Z.
pub const T0: u64 = 1_767_225_600_000;
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Rules of the integration tests: a two-level AQI alert per district and an offline rule.
pub const TEST_RULES: &str = r#"
[settings]
silent_after = 5

[[rule]]
name = "aqi-usg"
group = "aqi"
kind = "air"
metric = "aqi"
op = ">"
threshold = 100
clear = 90
for = "3m"
hold_down = "5m"
severity = "warning"
summary = "AQI {value} ({category}) in {district}"

[[rule]]
name = "aqi-unhealthy"
group = "aqi"
kind = "air"
metric = "aqi"
op = ">"
threshold = 150
clear = 140
for = "2m"
hold_down = "5m"
severity = "critical"
summary = "AQI {value} ({category}) in {district}"

[[rule]]
name = "offline"
kind = "air"
condition = "offline"
intervals = 3
severity = "warning"
summary = "{sensor} in {district} offline"
"#;

pub fn at(minute: u64) -> u64 {
    T0 + minute * MIN
}

/// A one-minute air window `[minute, minute + 1)`.
pub fn air(district: &str, sensor: Option<&str>, minute: u64, aqi: u16) -> WindowResult {
    WindowResult {
        window_start: at(minute),
        window_end: at(minute + 1),
        district: district.into(),
        sensor: sensor.map(Into::into),
        readings: 2,
        sensors: 1,
        metrics: WindowMetrics::Air(Box::new(AirMetrics {
            aqi: Some(aqi),
            ..AirMetrics::default()
        })),
    }
}

/// The transitions the pure evaluator decides for `windows` under [`TEST_RULES`]: what the
/// service must publish.
pub fn evaluate_all<'a>(windows: impl IntoIterator<Item = &'a WindowResult>) -> Vec<AlertEvent> {
    let rules = citypulse_alerts::engine::rules::load(TEST_RULES).unwrap();
    let mut ev = citypulse_alerts::engine::Evaluator::new(std::sync::Arc::new(rules));
    let mut out = Vec::new();
    for w in windows {
        ev.evaluate(w, &mut out);
    }
    out
}

pub async fn jetstream(url: &str) -> (async_nats::Client, Context) {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client.clone());
    ensure_stream(&js, metrics_stream()).await.unwrap();
    (client, js)
}

/// Publishes a window result the way the processors do; returns its METRICS sequence.
pub async fn publish(js: &Context, w: &WindowResult) -> u64 {
    let mut headers = HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, w.msg_id().as_str());
    js.publish_with_headers(w.subject(), headers, w.encode().into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence
}

pub async fn publish_all(js: &Context, ws: &[WindowResult]) -> u64 {
    let mut last = 0;
    for w in ws {
        last = publish(js, w).await;
    }
    last
}

/// Waits until the `alerts` consumer acked METRICS up to `seq` (acks follow checkpoints, so the
/// effects of every message up to `seq` are published and checkpointed).
pub async fn wait_processed(js: &Context, seq: u64) {
    let stream = js.get_stream("METRICS").await.unwrap();
    citypulse_harness::wait_for(DEADLINE, &format!("METRICS acked up to {seq}"), || {
        let stream = stream.clone();
        async move {
            match stream.consumer_info("alerts").await {
                Ok(info) => info.ack_floor.stream_sequence >= seq,
                Err(_) => false,
            }
        }
    })
    .await;
}

/// One message of ALERTS.
#[derive(Debug, Clone, PartialEq)]
pub struct Published {
    pub subject: String,
    pub event: AlertEvent,
    pub silenced: bool,
}

impl Published {
    /// (subject, state, severity, minute of `at`).
    pub fn brief(&self) -> (String, AlertState, Severity, u64) {
        (
            self.subject.clone(),
            self.event.state,
            self.event.severity,
            (self.event.at - T0) / MIN,
        )
    }
}

pub fn published(subject: &str, headers: Option<&HeaderMap>, payload: &[u8]) -> Published {
    Published {
        subject: subject.to_owned(),
        event: AlertEvent::decode(payload).unwrap(),
        silenced: headers
            .and_then(|h| h.get(HEADER_SILENCED))
            .is_some_and(|v| v.as_str() == "true"),
    }
}

/// Everything in the ALERTS stream, in order.
pub async fn alerts_stream(js: &Context) -> Vec<Published> {
    let Ok(mut stream) = js.get_stream("ALERTS").await else {
        return Vec::new();
    };
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(m) = stream.get_raw_message(seq).await {
            out.push(published(&m.subject, Some(&m.headers), &m.payload));
        }
    }
    out
}

/// Waits until ALERTS holds at least `n` messages and returns them.
pub async fn wait_alerts(js: &Context, n: usize) -> Vec<Published> {
    citypulse_harness::wait_for(DEADLINE, &format!("{n} messages in ALERTS"), || async {
        alerts_stream(js).await.len() >= n
    })
    .await;
    alerts_stream(js).await
}

/// Writes a rule file into a temp dir.
pub fn rules_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

/// The service running in this process (`citypulse_alerts::run`).
pub struct InProcess {
    pub shutdown: Shutdown,
    pub registry: prometheus::Registry,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _rules: tempfile::TempDir,
}

/// Fast checkpoints so that tests synchronise on acks quickly.
pub fn test_config(url: &str, rules: PathBuf) -> RunConfig {
    let mut cfg = RunConfig::for_url(url);
    cfg.rules = Some(rules);
    cfg.checkpoint_interval = Duration::from_millis(50);
    cfg.housekeeping_interval = Duration::from_millis(50);
    cfg.ack_wait = Duration::from_secs(5);
    cfg
}

pub async fn start_in_process(
    url: &str,
    rules: &str,
    tweak: impl FnOnce(&mut RunConfig),
) -> InProcess {
    let (dir, path) = rules_file(rules);
    let mut cfg = test_config(url, path);
    tweak(&mut cfg);
    let registry = prometheus::Registry::new();
    let health = Health::new();
    // Connected as the binary is: reconnecting forever.
    let client = citypulse_runtime::nats::connect(
        &cfg.nats,
        "citypulse-alerts-test",
        citypulse_runtime::nats::NatsMetrics::new(&registry).unwrap(),
        health.clone(),
    )
    .await
    .unwrap();
    let shutdown = Shutdown::new();
    let task = tokio::spawn(citypulse_alerts::run(
        cfg,
        client,
        registry.clone(),
        health,
        shutdown.clone(),
    ));
    let svc = InProcess {
        shutdown,
        registry,
        task,
        _rules: dir,
    };
    // Ready once the operator subjects answer.
    let probe = async_nats::connect(url).await.unwrap();
    citypulse_harness::wait_for(DEADLINE, "the alerts service answering list", || {
        let probe = probe.clone();
        async move {
            tokio::time::timeout(
                Duration::from_millis(500),
                probe.request("citypulse.alerts.list", "{}".into()),
            )
            .await
            .is_ok_and(|r| r.is_ok())
        }
    })
    .await;
    svc
}

impl InProcess {
    pub async fn stop(self) {
        self.shutdown.trigger();
        self.task.await.unwrap().unwrap();
    }

    /// A metric's value (summed over its label sets) from the service's registry.
    pub fn metric(&self, name: &str) -> f64 {
        use prometheus::proto::MetricType;
        self.registry
            .gather()
            .iter()
            .filter(|f| f.name() == name)
            .flat_map(|f| f.get_metric().iter().map(move |m| (f.get_field_type(), m)))
            .map(|(t, m)| match t {
                MetricType::COUNTER => m.get_counter().get_value(),
                MetricType::GAUGE => m.get_gauge().get_value(),
                _ => m.get_histogram().get_sample_count() as f64,
            })
            .sum()
    }
}

/// The real binary as a child process.
pub struct Binary {
    child: Child,
    pub log: PathBuf,
}

impl Binary {
    pub fn spawn(args: &[&str], log_dir: &std::path::Path, name: &str) -> Binary {
        let log = log_dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_citypulse-alerts"))
            .args(args)
            .env_remove("DATABASE_URL")
            .env("RUST_LOG", "info,citypulse_alerts=debug")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Binary { child, log }
    }

    /// SIGKILL: a crash, no shutdown path runs.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends `signal` (say `STOP` or `CONT`) with kill(1).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// The exit status, once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
