//! `citypulse-alerts replay` (the real binary) over the METRICS a live run evaluated lists exactly
//! the transitions the live service published on ALERTS, in order, with their subjects and ids;
//! a narrower range lists the live transitions within it, including a resolution whose firing
//! came before the range.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use citypulse_harness::NatsServer;
use citypulse_schema::{AlertEvent, AlertState, WindowResult};
use common::*;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Three districts over 30 minutes: d1 goes unhealthy (pending, firing, escalating, stepping
/// down, resolving) while its sensor b is silent from minute 5 to 11 (offline, then back); d2
/// has a later, shorter warning episode; d3 stays clean.
fn windows() -> Vec<WindowResult> {
    let d1 = [
        120, 120, 120, 160, 160, 145, 130, 80, 80, 80, 80, 80, 80, 80, 80,
    ];
    let mut ws = Vec::new();
    for m in 0..30u64 {
        let i = m as usize;
        ws.push(air("d1", None, m, d1.get(i).copied().unwrap_or(70)));
        ws.push(air("d1", Some("a"), m, 40));
        if !(5..=11).contains(&m) {
            ws.push(air("d1", Some("b"), m, 40));
        }
        let d2 = if (12..20).contains(&m) { 130 } else { 60 };
        ws.push(air("d2", None, m, d2));
        ws.push(air("d2", Some("c"), m, 40));
        ws.push(air("d3", None, m, 50));
    }
    ws
}

fn rfc3339(ms: u64) -> String {
    humantime::format_rfc3339(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Runs `citypulse-alerts replay …`, asserting it succeeds; its stdout lines.
fn replay(url: &str, args: &[&str]) -> Vec<String> {
    let started = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_citypulse-alerts"))
        .arg("replay")
        .args(["--nats-url", url])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "replay failed: {stderr}");
    eprintln!("replay took {:?}: {stderr}", started.elapsed());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}

/// The `--json` lines as (subject, event), checking each line's id.
fn parsed(lines: &[String]) -> Vec<(String, AlertEvent)> {
    lines
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let e: AlertEvent = serde_json::from_value(v["data"].clone()).unwrap();
            assert_eq!(v["type"], "alert");
            assert_eq!(v["msg_id"], e.msg_id(), "{l}");
            (v["subject"].as_str().unwrap().to_owned(), e)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rule_replay_lists_exactly_the_transitions_the_live_run_published() {
    let server = NatsServer::start();
    let url = server.url();
    let (_client, js) = jetstream(&url).await;
    let ws = windows();
    let last = publish_all(&js, &ws).await;
    let svc = start_in_process(&url, TEST_RULES, |_| {}).await;
    wait_processed(&js, last).await;
    svc.stop().await;
    let live: Vec<(String, AlertEvent)> = alerts_stream(&js)
        .await
        .into_iter()
        .map(|p| {
            assert!(!p.silenced);
            (p.subject, p.event)
        })
        .collect();
    // The episode exercises firing, escalation, step-down, resolution and offline sensors.
    let rules: std::collections::BTreeSet<&str> =
        live.iter().map(|(_, e)| e.rule.as_str()).collect();
    assert!(
        rules.contains("aqi-usg") && rules.contains("aqi-unhealthy") && rules.contains("offline"),
        "{rules:?}"
    );
    assert!(live.iter().any(|(_, e)| e.state == AlertState::Resolved));
    assert!(live.len() >= 8, "{} live transitions", live.len());

    let (_dir, rules) = rules_file(TEST_RULES);
    let rules = rules.to_str().unwrap();
    let (from, to) = (at(0), at(30));
    let all = replay(
        &url,
        &[
            "--from",
            &rfc3339(from),
            "--to",
            &rfc3339(to),
            "--rules",
            rules,
            "--json",
        ],
    );
    assert_eq!(parsed(&all), live, "the whole range");

    // A range starting mid-episode: d1's firing is before it, its resolution inside.
    let (from, to) = (at(6), at(18));
    let want: Vec<_> = live
        .iter()
        .filter(|(_, e)| (from..=to).contains(&e.at))
        .cloned()
        .collect();
    assert!(want
        .iter()
        .any(|(_, e)| e.state == AlertState::Resolved && e.started_at < from));
    assert!(want.len() < live.len());
    let part = replay(
        &url,
        &[
            "--from",
            &rfc3339(from),
            "--to",
            &rfc3339(to),
            "--rules",
            rules,
            "--json",
        ],
    );
    assert_eq!(parsed(&part), want, "the range {from}..={to}");

    // As text, one line per transition.
    let text = replay(
        &url,
        &[
            "--from",
            &rfc3339(from),
            "--to",
            &rfc3339(to),
            "--rules",
            rules,
        ],
    );
    assert_eq!(text.len(), want.len());
    for (line, (_, e)) in text.iter().zip(&want) {
        assert!(line.contains(&e.id), "{line}");
        assert!(line.contains(&e.state.as_str().to_uppercase()), "{line}");
    }
    // Nothing was published or checkpointed by the replays.
    assert_eq!(alerts_stream(&js).await.len(), live.len());
}
