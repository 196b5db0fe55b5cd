//! `citypulse tail` and `citypulse decode` as processes, against real subjects on a real
//! nats-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::HeaderMap;
use citypulse_harness::NatsServer;
use citypulse_schema::streams::{HEADER_DETAIL, HEADER_REASON};
use citypulse_schema::{
    AirMetrics, AlertEvent, AlertState, AqiCategory, Kind, Measurement, Reading, Severity, Traffic,
    WindowMetrics, WindowResult,
};
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_citypulse");

fn window() -> WindowResult {
    WindowResult {
        window_start: 1_767_225_600_000,
        window_end: 1_767_225_660_000,
        district: "d04".into(),
        sensor: None,
        readings: 4,
        sensors: 2,
        metrics: WindowMetrics::Air(Box::new(AirMetrics {
            aqi: Some(162),
            category: Some(AqiCategory::Unhealthy),
            pm25_nowcast_ugm3: Some(75.3),
            ..AirMetrics::default()
        })),
    }
}

fn alert() -> AlertEvent {
    AlertEvent {
        id: "aqi:d04:1".into(),
        rule: "aqi-unhealthy".into(),
        state: AlertState::Firing,
        severity: Severity::Critical,
        kind: Kind::Air,
        district: "d04".into(),
        sensor: None,
        metric: "aqi".into(),
        value: 162.0,
        threshold: 150.0,
        started_at: 1_767_225_600_000,
        at: 1_767_225_660_000,
        summary: "AQI 162 (unhealthy) in d04".into(),
    }
}

/// How long a test waits for a line of `citypulse tail`.
const LINE_DEADLINE: Duration = Duration::from_secs(30);

/// Starts `citypulse tail` and waits until it has subscribed (its stderr says so). Its stdout
/// lines arrive on the receiver, so that a missing line fails the test instead of hanging it.
fn tail(url: &str, args: &[&str]) -> (Child, Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["tail", "--nats-url", url])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.starts_with("tailing "), "{line}");
    let out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in out.lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn lines(out: &mut Receiver<String>, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            out.recv_timeout(LINE_DEADLINE).unwrap_or_else(|e| {
                panic!("`citypulse tail` printed {i} of {n} lines, then nothing for {LINE_DEADLINE:?} ({e})")
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_window_results_of_the_subject_filter_only() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let (mut child, mut out) = tail(&nats.url(), &["metrics.air.>", "--json", "--count", "1"]);
    let mut traffic = window();
    traffic.metrics = WindowMetrics::Traffic(Default::default());
    client
        .publish("metrics.traffic.d04", traffic.encode().into())
        .await
        .unwrap();
    client
        .publish(window().subject(), window().encode().into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let got = lines(&mut out, 1);
    let v: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(v["type"], "window");
    assert_eq!(v["subject"], "metrics.air.d04");
    assert_eq!(v["data"]["aqi"], 162);
    assert_eq!(v["data"]["category"], "unhealthy");
    assert_eq!(v["data"]["pm25_nowcast_ugm3"], 75.3);
    assert!(v.get("problem").is_none(), "{v}");
    assert!(child.wait().unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_readings_alerts_and_dead_letters_as_lines() {
    let nats = NatsServer::start();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let (mut child, mut out) = tail(&nats.url(), &[">", "--count", "3"]);
    let reading = Reading {
        sensor: "loop-d01-007".into(),
        district: "d01".into(),
        ts: 1_767_225_600_000,
        seq: 42,
        data: Measurement::Traffic(Traffic {
            count: 12,
            interval_s: 30,
            occupancy: 0.125,
            speed_kmh: Some(48.5),
            lanes: 2,
        }),
    };
    client
        .publish(reading.claimed_subject(), reading.encode().into())
        .await
        .unwrap();
    client
        .publish(alert().subject(), alert().encode().into())
        .await
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_REASON, "malformed_cbor");
    headers.insert(HEADER_DETAIL, "unexpected end of input");
    client
        .publish_with_headers("dlq.malformed_cbor", headers, "\u{a1}".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let got = lines(&mut out, 3);
    assert!(
        got[0].starts_with("reading     sensors.d01.traffic.loop-d01-007  "),
        "{}",
        got[0]
    );
    assert!(
        got[0].contains(" speed_kmh=48.5 ") && got[0].contains(" ts=2026-01-01T00:00:00.000Z"),
        "{}",
        got[0]
    );
    assert!(
        got[1].starts_with("alert       alerts.critical.air.d04  "),
        "{}",
        got[1]
    );
    assert!(
        got[1].contains(r#"summary="AQI 162 (unhealthy) in d04""#),
        "{}",
        got[1]
    );
    assert!(got[1].contains(" state=firing "), "{}", got[1]);
    assert_eq!(
        got[2],
        r#"dead_letter dlq.malformed_cbor  reason=malformed_cbor detail="unexpected end of input""#
    );
    assert!(child.wait().unwrap().success());
}

fn decode(args: &[&str], input: &[u8]) -> std::process::Output {
    let mut child = Command::new(BIN)
        .arg("decode")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn decode_turns_a_cbor_payload_into_json() {
    let out = decode(&["--compact"], &alert().encode());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // The same object serde gives the alert event, field for field.
    assert_eq!(v, serde_json::to_value(alert()).unwrap());

    // With a subject, the payload must be what the subject carries.
    let out = decode(&["--subject", "metrics.air.d04"], &alert().encode());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("metrics.air.d04: window result:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = decode(&[], b"\xff\xff");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not CBOR"));
}
