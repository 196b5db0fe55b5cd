//! The tools for people, run as the real binary: `check-rules`, and `tail`, `list`, `ack`,
//! `silence`, `unsilence` against a running service.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use citypulse_harness::NatsServer;
use common::*;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_citypulse-alerts");

async fn cli(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .env_remove("NATS_URL")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_rules_accepts_the_default_file_and_reports_every_error_with_its_line() {
    let default = concat!(env!("CARGO_MANIFEST_DIR"), "/rules/default.toml");
    let (ok, out, err) = cli(&["check-rules", default]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("valid") && out.contains("aqi: aqi-usg (warning) → aqi-unhealthy (critical)"),
        "{out}"
    );

    let (_dir, bad) = rules_file(
        "[[rule]]\nname = \"x\"\nkind = \"air\"\nmetric = \"aqi\"\nop = \">\"\nthreshold = 1\n\
         severity = \"urgent\"\nsummary = \"{oops}\"\n",
    );
    let (ok, out, err) = cli(&["check-rules", bad.to_str().unwrap()]).await;
    assert!(!ok, "{out}");
    assert!(err.contains(":line 7: unknown Severity `urgent`"), "{err}");
    assert!(
        err.contains(":line 8: `summary`: unknown placeholder"),
        "{err}"
    );
    assert!(err.contains("2 error(s)"), "{err}");
}

#[tokio::test]
async fn people_tail_list_ack_and_silence_from_the_command_line() {
    let server = NatsServer::start();
    let url = server.url();
    let (_client, js) = jetstream(&url).await;
    let svc = start_in_process(&url, TEST_RULES, |_| {}).await;

    let mut tail = Command::new(BIN)
        .args([
            "tail",
            "--no-color",
            "--nats-url",
            &url,
            "--severity",
            "warning",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut err = BufReader::new(tail.stderr.take().unwrap()).lines();
    let first = tokio::time::timeout(DEADLINE, err.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        first.as_deref(),
        Some("tailing alerts.*.*.* (Ctrl-C to stop)")
    );
    let mut out = BufReader::new(tail.stdout.take().unwrap()).lines();

    let fire: Vec<_> = (0..4).map(|m| air("d1", None, m, 120)).collect();
    wait_processed(&js, publish_all(&js, &fire).await).await;
    let line = tokio::time::timeout(DEADLINE, out.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let id = format!("aqi:d1:{}", at(3));
    assert_eq!(
        line,
        format!("2026-01-01T00:03:00Z FIRING   warning  air     d1               AQI 120 (unhealthy for sensitive groups) in d1  [{id}]")
    );

    let (ok, listed, e) = cli(&["list", "--nats-url", &url]).await;
    assert!(ok, "{e}");
    assert!(listed.contains(&id), "{listed}");

    let (ok, acked, e) = cli(&[
        "ack",
        &id,
        "--by",
        "ana",
        "--comment",
        "checking the station",
        "--nats-url",
        &url,
    ])
    .await;
    assert!(ok, "{e}");
    assert!(
        acked.starts_with(&format!("acknowledged {id} by ana at ")),
        "{acked}"
    );
    let (ok, _, e) = cli(&["ack", "aqi:nope:1", "--by", "ana", "--nats-url", &url]).await;
    assert!(!ok);
    assert!(e.contains("no active alert with id `aqi:nope:1`"), "{e}");

    let (ok, silenced, e) = cli(&[
        "silence",
        "--district",
        "d9",
        "--severity",
        "critical",
        "--for",
        "2h",
        "--by",
        "ana",
        "--nats-url",
        &url,
    ])
    .await;
    assert!(ok, "{e}");
    assert!(
        silenced.starts_with("silence s1 [district=d9 severity=critical] until "),
        "{silenced}"
    );

    let (ok, listed, _) = cli(&["list", "--nats-url", &url]).await;
    assert!(ok);
    assert!(
        listed.contains("acked by ana at ") && listed.contains("(checking the station)"),
        "{listed}"
    );
    assert!(
        listed.contains("silence s1 [district=d9 severity=critical]"),
        "{listed}"
    );

    let (ok, removed, e) = cli(&["unsilence", "s1", "--by", "ana", "--nats-url", &url]).await;
    assert!(ok, "{e}");
    assert!(removed.starts_with("removed silence s1"), "{removed}");

    // The resolution reaches the tail too.
    let calm = [air("d1", None, 4, 50)];
    wait_processed(&js, publish_all(&js, &calm).await).await;
    let line = tokio::time::timeout(DEADLINE, out.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        line.contains("RESOLVED warning") && line.ends_with(&format!("[{id}]")),
        "{line}"
    );

    // No service: a clear error, not a hang.
    svc.stop().await;
    let (ok, _, e) = cli(&["list", "--nats-url", &url, "--timeout", "300ms"]).await;
    assert!(!ok);
    assert!(e.contains("citypulse.alerts.list"), "{e}");
    tail.kill().await.unwrap();
}
