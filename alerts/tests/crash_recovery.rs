//! Crash recovery with the real binary: SIGKILL mid-`for` and mid-firing, and a subscriber reading
//! ALERTS sees exactly what an uninterrupted run publishes; PostgreSQL holds each transition once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use citypulse_harness::{free_port, http_get, NatsServer, Postgres};
use citypulse_schema::WindowResult;
use common::*;
use std::net::SocketAddr;
use std::time::Duration;

/// Minutes 0-1: AQI pending (for 3m). 2-4: fires, escalates. 5-12: steps down, resolves; sensor
/// b is silent from minute 5 to 11 (offline, then back).
fn phases() -> [Vec<WindowResult>; 3] {
    let aqi = [120, 120, 120, 160, 160, 145, 130, 80, 80, 80, 80, 80, 80];
    let minute = |m: usize| {
        let mut ws = vec![
            air("d1", None, m as u64, aqi[m]),
            air("d1", Some("a"), m as u64, 40),
        ];
        if m <= 4 || m == 12 {
            ws.push(air("d1", Some("b"), m as u64, 40));
        }
        ws
    };
    let range = |r: std::ops::Range<usize>| r.flat_map(minute).collect::<Vec<_>>();
    [range(0..2), range(2..5), range(5..13)]
}

fn spawn(
    url: &str,
    rules: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    extra: &[&str],
) -> (Binary, SocketAddr) {
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let addr = admin.to_string();
    let mut args = vec![
        "run",
        "--nats-url",
        url,
        "--rules",
        rules.to_str().unwrap(),
        "--metrics-addr",
        &addr,
        "--housekeeping-interval",
        "100ms",
    ];
    args.extend_from_slice(extra);
    (Binary::spawn(&args, dir, name), admin)
}

async fn wait_ready(url: &str, bin: &mut Binary) {
    let probe = async_nats::connect(url).await.unwrap();
    let what = format!("the binary answering list (log: {})", bin.log.display());
    citypulse_harness::wait_for(DEADLINE, &what, || {
        let probe = probe.clone();
        if let Some(status) = bin.exited() {
            panic!("citypulse-alerts exited with {status}:\n{}", bin.log_text());
        }
        async move {
            tokio::time::timeout(
                Duration::from_millis(300),
                probe.request("citypulse.alerts.list", "{}".into()),
            )
            .await
            .is_ok_and(|r| r.is_ok())
        }
    })
    .await;
}

const FAST: [&str; 4] = ["--checkpoint-interval", "100ms", "--ack-wait", "5s"];
/// No checkpoint during the run: everything after the last one is replayed after a kill.
const NEVER: [&str; 8] = [
    "--checkpoint-interval",
    "1h",
    "--checkpoint-every",
    "1000000",
    "--max-ack-pending",
    "2000000",
    "--ack-wait",
    "2h",
];

async fn uninterrupted_run(dir: &std::path::Path, rules: &std::path::Path) -> Vec<Published> {
    let server = NatsServer::start();
    let url = server.url();
    let (_client, js) = jetstream(&url).await;
    let (mut bin, admin) = spawn(&url, rules, dir, "uninterrupted", &FAST);
    wait_ready(&url, &mut bin).await;
    let mut last = 0;
    for phase in phases() {
        last = publish_all(&js, &phase).await;
    }
    wait_processed(&js, last).await;
    let (status, health) = http_get(admin, "/healthz").unwrap();
    assert_eq!(status, 200, "{health}");
    let (_, metrics) = http_get(admin, "/metrics").unwrap();
    for name in [
        "citypulse_alerts_firing{severity=\"critical\"} 0",
        "citypulse_alerts_transitions_total{severity=\"warning\",state=\"resolved\"} 2",
        "citypulse_alerts_evaluation_latency_seconds_count 6",
        "citypulse_alerts_rules 3",
        "citypulse_alerts_silenced 0",
    ] {
        assert!(metrics.contains(name), "{name} missing in\n{metrics}");
    }
    bin.kill();
    alerts_stream(&js).await
}

#[tokio::test]
async fn sigkill_mid_for_and_mid_firing_publishes_what_an_uninterrupted_run_does_and_stores_each_transition_once(
) {
    let dir = tempfile::tempdir().unwrap();
    let (_rules_dir, rules) = rules_file(TEST_RULES);
    let want = evaluate_all(phases().iter().flatten());
    assert_eq!(want.len(), 6, "{want:#?}");

    let reference = uninterrupted_run(dir.path(), &rules).await;
    let reference_events: Vec<_> = reference.iter().map(|p| p.event.clone()).collect();
    assert_eq!(reference_events, want);

    let pg = Postgres::start();
    let db = pg.create_database("alerts").await;
    let server = NatsServer::start();
    let url = server.url();
    let (_client, js) = jetstream(&url).await;
    let [p1, p2, p3] = phases();
    let with_db = |extra: &[&'static str]| {
        let mut v: Vec<&str> = extra.to_vec();
        v.extend(["--database-url", db.as_str()]);
        v
    };

    // 1. Mid-`for`: AQI has been above 100 for 2 of its 3 minutes; the checkpoint holds the
    //    countdown; the process dies.
    let args = with_db(&FAST);
    let (mut bin, _) = spawn(&url, &rules, dir.path(), "first", &args);
    wait_ready(&url, &mut bin).await;
    wait_processed(&js, publish_all(&js, &p1).await).await;
    assert!(alerts_stream(&js).await.is_empty());
    bin.kill();

    // 2. Mid-firing, without a checkpoint since: the firing and the escalation are published,
    //    then the process dies. The restart replays them; the server drops the duplicates.
    let args = with_db(&NEVER);
    let (mut bin, _) = spawn(&url, &rules, dir.path(), "second", &args);
    wait_ready(&url, &mut bin).await;
    publish_all(&js, &p2).await;
    wait_alerts(&js, 2).await;
    bin.kill();

    // 3. Resume and finish.
    let args = with_db(&FAST);
    let (mut bin, _) = spawn(&url, &rules, dir.path(), "third", &args);
    wait_ready(&url, &mut bin).await;
    let last = publish_all(&js, &p3).await;
    wait_processed(&js, last).await;
    let seen = alerts_stream(&js).await;
    assert_eq!(
        seen.iter().map(Published::brief).collect::<Vec<_>>(),
        reference.iter().map(Published::brief).collect::<Vec<_>>(),
        "log of the last run: {}",
        bin.log_text()
    );
    assert_eq!(seen, reference);

    // PostgreSQL: each transition exactly once, all of them published.
    let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    citypulse_harness::wait_for(DEADLINE, "6 rows in alert_events", || {
        let client = &client;
        async move {
            client
                .query_one("SELECT count(*) FROM alert_events", &[])
                .await
                .map(|r| r.get::<_, i64>(0) == 6)
                .unwrap_or(false)
        }
    })
    .await;
    let rows = client
        .query(
            "SELECT id, state, severity, (extract(epoch FROM at) * 1000)::bigint, published
             FROM alert_events ORDER BY at, state, severity",
            &[],
        )
        .await
        .unwrap();
    let mut got: Vec<(String, String, String, i64, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let mut want_rows: Vec<_> = want
        .iter()
        .map(|e| {
            (
                e.id.clone(),
                e.state.to_string(),
                e.severity.to_string(),
                e.at as i64,
                true,
            )
        })
        .collect();
    got.sort();
    want_rows.sort();
    assert_eq!(got, want_rows);
    bin.kill();
}
