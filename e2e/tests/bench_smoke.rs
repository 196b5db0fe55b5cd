//! `scripts/bench`, tiny: the benchmark a user runs still runs against the binaries of this
//! build, every stage reports a positive rate, and the counts add up — every reading the
//! simulator says it published is read by the baseline, validated and archived by ingest, folded
//! in by the processors, and the live pipeline run carries the same readings. Speed itself is
//! measured by the script (docs/benchmarks.md), never asserted here.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use citypulse_e2e::deploy::{repo, scripts_python};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace's binaries of the profile this test was built with: the test executable is
/// `target/<profile>/deps/<test>-<hash>`.
fn binaries_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    deps.parent().unwrap().to_path_buf()
}

fn stage<'a>(report: &'a Value, prefix: &str) -> &'a Value {
    report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["stage"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no stage `{prefix}` in the report: {report:#}"))
}

fn items(stage: &Value) -> u64 {
    stage["items"].as_u64().unwrap()
}

fn run_bench(json: &Path) -> String {
    let bin_dir = binaries_dir();
    assert!(
        bin_dir.join("citypulse-simulator").exists(),
        "no binaries in {}: run `cargo build --workspace --bins` first (scripts/test does)",
        bin_dir.display()
    );
    let out = Command::new(repo().join("scripts/bench"))
        .args([
            "--sensors",
            "300",
            "--minutes",
            "2",
            "--no-build",
            "--bin-dir",
        ])
        .arg(&bin_dir)
        .arg("--json")
        .arg(json)
        .args(["--stage-timeout", "120"])
        .output()
        .expect("running scripts/bench");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "scripts/bench failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn scripts_bench_runs_every_stage_and_the_counts_add_up() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let stdout = run_bench(&json);
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let pipeline = &report["pipeline"];
    let mut rows: Vec<&Value> = report["stages"].as_array().unwrap().iter().collect();
    rows.push(pipeline);
    assert_eq!(
        rows.len(),
        8,
        "load, baseline, 2 × ingest, processors, replay, alerts, pipeline"
    );
    for row in &rows {
        assert!(items(row) > 0, "no items: {row:#}");
        assert!(row["rate"].as_f64().unwrap() > 0.0, "no rate: {row:#}");
        // CPU counts in 10 ms clock ticks: a tiny stage may round to 0, but it is reported.
        assert!(
            row["service_cpu_us"].as_f64().unwrap() >= 0.0,
            "no CPU: {row:#}"
        );
        assert!(row["peak_rss_kib"].as_u64().unwrap() > 0, "no RSS: {row:#}");
        let name = row["stage"].as_str().unwrap();
        assert!(
            stdout.contains(name),
            "`{name}` is not in the table:\n{stdout}"
        );
    }

    let cpu: f64 = rows
        .iter()
        .map(|r| r["service_cpu_us"].as_f64().unwrap())
        .sum();
    assert!(cpu > 0.0, "no stage used any CPU: {report:#}");

    // The simulator's own count (its "simulator stopped" log line) is the reference.
    let load = stage(&report, "load");
    let published = load["simulator_published"].as_u64().unwrap();
    assert_eq!(
        items(load),
        published,
        "RAW holds what the simulator published"
    );
    // 300 sensors, 2 minutes: every detector reports 4 times (30 s), every station twice (60 s).
    assert!((600..=1200).contains(&published), "{published} readings");
    assert_eq!(items(stage(&report, "baseline")), published);
    let validated = stage(&report, "ingest RAW");
    assert_eq!(items(validated), published);
    assert_eq!(
        validated["dead_lettered"].as_u64().unwrap(),
        0,
        "--faults none"
    );
    let archive = stage(&report, "ingest incl");
    assert_eq!(archive["archived_rows"].as_u64().unwrap(), published);
    assert_eq!(items(stage(&report, "processors")), published);
    // The replay reads the same backlog again.
    assert_eq!(items(stage(&report, "replay")), published);
    // The alerts read every window result the processors wrote.
    let written = stage(&report, "processors")["stream_messages"]["METRICS"].as_u64();
    assert!(written.unwrap() > 0, "the processors closed no window");
    assert_eq!(Some(items(stage(&report, "alerts"))), written);
    // The live run publishes the same readings again, into a fresh store.
    assert_eq!(items(pipeline), published);
    assert_eq!(pipeline["archived_rows"].as_u64().unwrap(), published);
    assert!(pipeline["window_results"].as_u64().unwrap() > 0);
    for group in ["ingest", "archive", "processors", "alerts"] {
        let lag = &pipeline["lag"][group];
        assert!(
            !lag["consumers"].as_array().unwrap().is_empty(),
            "no consumers found for {group}: {pipeline:#}"
        );
    }
    // Ratios are against the baseline of the same run.
    let base = stage(&report, "baseline")["rate"].as_f64().unwrap();
    let ratio = validated["ratio"].as_f64().unwrap();
    let rate = validated["rate"].as_f64().unwrap();
    assert!((ratio - rate / base).abs() < 1e-9);
}

/// The bench's end-of-stage test (scripts/bench.py `Snapshot.drained`) on made-up /jsz answers,
/// no servers: a partition consumer the service recreated mid-stage (after a missed heartbeat)
/// counts its acknowledgements afresh, so they no longer add up to the stream's messages; the
/// stage is still over once nothing is pending and the stream's last message is acknowledged.
/// Before, such a stage waited out its timeout (seen at 100,000 sensors with `--batch-size 100`).
#[test]
fn a_consumer_recreated_mid_stage_still_ends_its_stage() {
    let drained = |p0_pending: u64, p0_floor: u64| -> bool {
        let script = format!(
            r#"
import bench
def consumer(name, pending, acked, floor):
    return {{"name": name, "num_pending": pending, "num_ack_pending": 0,
             "ack_floor": {{"consumer_seq": acked, "stream_seq": floor}},
             "delivered": {{"consumer_seq": acked}}}}
jsz = {{"account_details": [{{"stream_detail": [{{"name": "READINGS",
        "state": {{"messages": 10, "last_seq": 10}},
        "consumer_detail": [consumer("p0", {p0_pending}, 2, {p0_floor}),
                            consumer("p1", 0, 4, 8)]}}]}}]}}
snap = bench.Snapshot(0, jsz, 0)
print(snap.drained([("READINGS", "p0"), ("READINGS", "p1")]))
"#
        );
        scripts_python(&script).trim() == "True"
    };
    // p0 was recreated at sequence 7 and acknowledged 2 messages, through the last (10).
    assert!(drained(0, 10));
    // Still something pending, or the last message not yet acknowledged: not over.
    assert!(!drained(1, 10));
    assert!(!drained(0, 9));
}
