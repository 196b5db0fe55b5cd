//! The contract, seen by a stranger: a subscriber written with another NATS client and another
//! CBOR library (Python's nats-py and cbor2, `e2e/python/contract_subscriber.py`) receives the
//! simulator's readings on the documented subjects, and they match the contract — payload
//! identity equals the subject's tokens, `seq` goes up by one per sensor — except exactly where
//! the simulator's truth file says it injected a fault.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use citypulse_e2e::deploy::repo;
use citypulse_harness::NatsServer;
use citypulse_runtime::shutdown::Shutdown;
use citypulse_simulator::config::{now_ms, Config};
use citypulse_simulator::truth::{self, TruthRecord};
use clap::Parser;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, UNIX_EPOCH};

/// Where scripts/install-deps puts nats-py and cbor2.
fn python_path() -> PathBuf {
    let dir = std::env::var_os("CITYPULSE_PYTHONPATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".tools/python"));
    assert!(
        dir.join("nats").is_dir() && dir.join("cbor2").is_dir(),
        "nats-py and cbor2 are not installed in {}; run scripts/install-deps",
        dir.display()
    );
    dir
}

struct Subscriber {
    child: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

impl Subscriber {
    /// Starts the Python subscriber and waits for its "ready" line (subscription registered).
    fn start(url: &str, count: usize) -> Subscriber {
        let mut child = Command::new("python3")
            .arg(repo().join("e2e/python/contract_subscriber.py"))
            .args([
                "--url",
                url,
                "--count",
                &count.to_string(),
                "--timeout",
                "90",
            ])
            .env("PYTHONPATH", python_path())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 must be installed");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().expect("subscriber exited early").unwrap();
        assert_eq!(first, "ready");
        Subscriber { child, lines }
    }

    fn summary(mut self) -> serde_json::Value {
        let line = self.lines.next().expect("no summary").unwrap();
        assert!(self.child.wait().unwrap().success());
        serde_json::from_str(&line).unwrap()
    }
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A simulated start an hour ago, on a whole minute: fixed once per test so that runs repeat.
fn start() -> String {
    rfc3339(now_ms() / 60_000 * 60_000 - 3_600_000)
}

async fn simulate(url: &str, start: &str, truth_file: &Path, extra: &[&str]) -> Vec<TruthRecord> {
    let truth_arg = truth_file.display().to_string();
    let mut args = vec![
        "citypulse-simulator",
        "--nats-url",
        url,
        "--truth",
        &truth_arg,
        "--start",
        start,
        "--duration",
        "5m",
        "--speed",
        "max",
        "--sensors",
        "200",
    ];
    args.extend_from_slice(extra);
    let config = Config::try_parse_from(args).unwrap();
    let plan = config.plan(now_ms()).unwrap();
    let client = async_nats::connect(url).await.unwrap();
    let summary = citypulse_simulator::run(
        &config,
        plan,
        client,
        &prometheus::Registry::new(),
        Shutdown::new(),
    )
    .await
    .unwrap();
    assert!(summary.completed);
    truth::parse(&std::fs::read_to_string(truth_file).unwrap()).unwrap()
}

#[tokio::test]
async fn a_python_subscriber_receives_contract_readings_on_the_documented_subjects() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let start = start();
    // Without faults, every message must be valid and every sensor's seq contiguous.
    let expected_messages = {
        let records = simulate(
            &server.url(),
            &start,
            &dir.path().join("dry-run.jsonl"),
            &["--faults", "none"],
        )
        .await;
        records.iter().filter(|r| r.sent).count()
    };
    let subscriber = Subscriber::start(&server.url(), expected_messages);
    let records = simulate(
        &server.url(),
        &start,
        &dir.path().join("truth.jsonl"),
        &["--faults", "none"],
    )
    .await;
    let summary = subscriber.summary();

    let sensors: std::collections::BTreeSet<&str> =
        records.iter().map(|r| r.subject.as_str()).collect();
    assert_eq!(summary["messages"], expected_messages);
    assert_eq!(summary["valid"], expected_messages);
    assert_eq!(summary["invalid"], serde_json::json!({}));
    assert_eq!(summary["seq_gaps"], 0);
    assert_eq!(summary["seq_regressions"], 0);
    assert_eq!(summary["sensors"], sensors.len());
    assert!(summary["by_kind"]["traffic"].as_u64().unwrap() > 0);
    assert!(summary["by_kind"]["air"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn the_python_subscriber_finds_exactly_the_malformed_payloads_the_truth_file_names() {
    let server = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let start = start();
    let flags = ["--faults", "none", "--fault-malformed", "0.05"];
    let dry = simulate(&server.url(), &start, &dir.path().join("dry.jsonl"), &flags).await;
    let sent = dry.iter().filter(|r| r.sent).count();
    let subscriber = Subscriber::start(&server.url(), sent);
    let records = simulate(
        &server.url(),
        &start,
        &dir.path().join("truth.jsonl"),
        &flags,
    )
    .await;
    assert_eq!(records, dry, "the simulator is deterministic");
    let summary = subscriber.summary();

    let malformed = records
        .iter()
        .filter(|r| r.sent && r.fault.as_deref() == Some("malformed"))
        .count();
    assert!(malformed > 20, "{malformed}");
    let invalid: u64 = summary["invalid"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(summary["messages"], sent);
    assert_eq!(invalid, malformed as u64);
    assert_eq!(summary["valid"], (sent - malformed) as u64);
}
