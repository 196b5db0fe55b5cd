//! The whole pipeline on a three-node JetStream cluster (every stream and bucket R3) survives
//! the SIGKILL of one node mid-run: nothing lost, nothing doubled, nothing changed, and the
//! services reconnect by themselves (none is restarted).
//!
//! Two pipelines replay the same seeded city (same `--start`, seed and size: about 67,000
//! readings): one uninterrupted on a single nats-server, one on the cluster, where the node
//! holding the most service connections is killed once RAW holds 30 % of the readings and
//! restarted (same store) once it holds 60 % and at least 5 s have passed. Once each has gone
//! quiet, the test checks that every stream and KV bucket on the cluster has 3 replicas, and
//! compares
//! - METRICS: the multiset of (subject, `Nats-Msg-Id`, payload bytes);
//! - ALERTS: the same for the alert transitions (each once, resolutions after firings);
//! - PostgreSQL: the archive holds every reading once, by (sensor, seq);
//!
//! and requires ingest, the processors and alerts to be the processes started at launch, healthy
//! (connected) at the end, and every one that was connected to the killed node to have counted
//! the disconnection.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream;
use citypulse_e2e::outputs::{
    all_messages, archive_counts, archive_gaps, assert_lifecycle, first_difference, progress,
    stream_len, Messages,
};
use citypulse_e2e::pipeline::{Pipeline, PipelineOptions, Service, SimulatorOptions};
use citypulse_harness::http_get;
use citypulse_schema::streams;
use futures::StreamExt;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant, UNIX_EPOCH};

/// The city: 300 sensors over two simulated hours (hourly air-quality means close too).
const SENSORS: u64 = 300;
const SIMULATED: Duration = Duration::from_secs(2 * 3600);
/// How long the counts must stay unchanged before a run counts as finished: longer than the
/// processors' idle timeout (30 s), after which they close the last windows.
const QUIET: Duration = Duration::from_secs(40);
/// The node is killed once RAW holds this share of the readings...
const KILL_AT: f64 = 0.30;
/// ...and restarted once RAW holds this share and it has been down at least `DOWN_AT_LEAST`.
const RESTART_AT: f64 = 0.60;
const DOWN_AT_LEAST: Duration = Duration::from_secs(5);
/// The services that must outlive the node loss (the simulator exits when its replay is done).
const LONG_RUNNING: [Service; 3] = [Service::Ingest, Service::Processors, Service::Alerts];

/// The replayed morning of `whole_pipeline_faults`: Wednesday 2026-01-07, 06:00 UTC, with the
/// demo incident, so the run has alerts to compare whatever the wall-clock time of the test.
const START_MS: u64 = 1_767_765_600_000;

fn options(cluster: bool) -> PipelineOptions {
    PipelineOptions {
        simulator: Some(SimulatorOptions {
            start_at: Some(UNIX_EPOCH + Duration::from_millis(START_MS)),
            duration: Some(SIMULATED),
            sensors: SENSORS,
            seed: 2026,
            faults: "none".to_owned(),
            args: vec!["--events".to_owned(), "demo".to_owned()],
            ..SimulatorOptions::default()
        }),
        // The fixed morning is months old: let ingest take it (its default refuses readings
        // older than 72 hours).
        ingest_args: vec!["--max-age".to_owned(), "87600h".to_owned()],
        rust_log: "info,async_nats=warn".to_owned(),
        cluster,
        ..PipelineOptions::default()
    }
}

/// What a finished run left behind.
#[derive(Debug)]
struct Outcome {
    raw: u64,
    metrics: Messages,
    alerts: Messages,
    archived: i64,
    archived_distinct: i64,
    /// When the archive does not hold every RAW reading: which are missing, and where.
    archive_gaps: String,
    /// Replicas of every stream (KV buckets included).
    replicas: BTreeMap<String, usize>,
}

/// The node kill of the cluster run: which node, and what it held when it went.
#[derive(Debug, Default)]
struct Kill {
    node: usize,
    /// Client names of the service connections it served.
    clients: Vec<String>,
    /// Streams (and KV buckets) it led.
    leading: Vec<String>,
}

/// Runs the pipeline to quiescence; on the cluster, kills and restarts one node on the way.
async fn run(cluster: bool, expected_raw: u64) -> (Outcome, Option<Kill>, Pipeline) {
    let mut pipeline = Pipeline::launch(options(cluster));
    let pids: Vec<Option<u32>> = LONG_RUNNING.iter().map(|&s| pipeline.pid(s)).collect();
    // On the cluster the test's own client knows every node and reconnects like the services,
    // whichever node goes down (a read during the outage fails and counts as 0: it only delays
    // the end of the run).
    let urls: Vec<String> = if cluster {
        pipeline.cluster().urls()
    } else {
        vec![pipeline.url()]
    };
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connect(urls)
        .await
        .unwrap();
    let js = jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut kill: Option<(Kill, Instant)> = None;
    let mut restarted = !cluster;
    let mut last = [-1; 5];
    let mut still_since = Instant::now();
    loop {
        assert!(
            Instant::now() < deadline,
            "the pipeline did not finish in time"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let raw = stream_len(&js, streams::RAW).await;
        if cluster && kill.is_none() && raw as f64 >= KILL_AT * expected_raw as f64 {
            let k = pick_victim(&mut pipeline);
            eprintln!(
                "at {raw} RAW messages: SIGKILL of node n{} (serving {:?}, leading {:?})",
                k.node, k.clients, k.leading
            );
            pipeline.cluster().kill_node(k.node);
            kill = Some((k, Instant::now()));
            still_since = Instant::now();
            continue;
        }
        if let (false, Some((k, at))) = (restarted, &kill) {
            if raw as f64 >= RESTART_AT * expected_raw as f64 && at.elapsed() >= DOWN_AT_LEAST {
                eprintln!(
                    "at {raw} RAW messages, {:.1} s after the kill: restarting node n{}",
                    at.elapsed().as_secs_f64(),
                    k.node
                );
                pipeline.cluster().restart_node(k.node);
                restarted = true;
                still_since = Instant::now();
                continue;
            }
        }
        let now = progress(&js, &pipeline).await;
        let simulator_done = !pipeline.is_running(Service::Simulator);
        if now != last || !simulator_done || !restarted {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= QUIET {
            break;
        }
    }
    // The services started at launch are the ones still running: none crashed or was restarted.
    for (&s, pid) in LONG_RUNNING.iter().zip(&pids) {
        assert!(
            pipeline.is_running(s),
            "{} is not running at the end:\n{}",
            s.binary(),
            pipeline.log(s)
        );
        assert_eq!(pipeline.pid(s), *pid, "{} was restarted", s.binary());
    }
    let (archived, archived_distinct) = archive_counts(&pipeline).await;
    let raw = stream_len(&js, streams::RAW).await;
    let archive_gaps = if archived_distinct == raw as i64 {
        String::new()
    } else {
        archive_gaps(&js, &pipeline).await
    };
    // Every stream of the account: the pipeline's and the KV buckets (checkpoints, groups).
    let mut replicas = BTreeMap::new();
    let mut infos = js.streams();
    while let Some(info) = infos.next().await {
        let info = info.unwrap();
        replicas.insert(info.config.name, info.config.num_replicas);
    }
    let outcome = Outcome {
        raw,
        metrics: all_messages(&js, streams::METRICS).await,
        alerts: all_messages(&js, streams::ALERTS).await,
        archived,
        archived_distinct,
        archive_gaps,
        replicas,
    };
    (outcome, kill.map(|(k, _)| k), pipeline)
}

/// The node serving the most service connections (ties: the one leading the most streams), so
/// that the kill disconnects services and moves stream leaders.
fn pick_victim(pipeline: &mut Pipeline) -> Kill {
    let cluster = pipeline.cluster();
    let nodes = cluster.urls().len();
    let mut leaders: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in 0..nodes {
        let jsz = get_json(
            cluster.node(i).monitor_addr(),
            "/jsz?accounts=true&streams=true",
        );
        for s in jsz["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        {
            if let (Some(name), Some(leader)) =
                (s["name"].as_str(), s["cluster"]["leader"].as_str())
            {
                let led = leaders.entry(leader.to_owned()).or_default();
                if !led.iter().any(|n| n == name) {
                    led.push(name.to_owned());
                }
            }
        }
    }
    (0..nodes)
        .map(|i| {
            let connz = get_json(cluster.node(i).monitor_addr(), "/connz?limit=1024");
            let clients: Vec<String> = connz["connections"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["name"].as_str())
                .filter(|n| n.starts_with("citypulse-"))
                .map(str::to_owned)
                .collect();
            let leading = leaders.get(&format!("n{i}")).cloned().unwrap_or_default();
            Kill {
                node: i,
                clients,
                leading,
            }
        })
        .max_by_key(|k| (k.clients.len(), k.leading.len(), std::cmp::Reverse(k.node)))
        .unwrap()
}

fn get_json(addr: std::net::SocketAddr, path: &str) -> Value {
    let (status, body) = http_get(addr, path).unwrap();
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// `citypulse_nats_connection_events_total{event="<event>"}` of `service`.
fn connection_events(pipeline: &Pipeline, service: Service, event: &str) -> f64 {
    let line = format!("citypulse_nats_connection_events_total{{event=\"{event}\"}} ");
    pipeline
        .metrics_text(service)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&line)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_nats_node_of_three_changes_no_result_and_services_reconnect() {
    let started = Instant::now();
    // Both runs replay the same two hours of the same morning: the reference on one server.
    let (clean, _, single) = run(false, 0).await;
    drop(single);
    assert!(
        clean.raw >= 50_000,
        "the run must cover at least 50,000 readings, got {}",
        clean.raw
    );
    assert!(
        !clean.metrics.is_empty(),
        "the clean run published no window result"
    );
    assert!(
        !clean.alerts.is_empty(),
        "the clean run fired no alert: nothing to compare"
    );
    eprintln!(
        "uninterrupted run on one server: {} readings, {} window results, {} alert transitions \
         ({:.0} s)",
        clean.raw,
        clean.metrics.len(),
        clean.alerts.len(),
        started.elapsed().as_secs_f64()
    );
    let (faulted, kill, pipeline) = run(true, clean.raw).await;
    let kill = kill.expect("the cluster run killed a node");

    // Every comparison is made before any fails, so one run reports all that differ.
    let mut failures = Vec::new();
    for name in [
        streams::RAW,
        streams::READINGS,
        streams::DLQ,
        streams::METRICS,
        streams::ALERTS,
    ] {
        if !faulted.replicas.contains_key(name) {
            failures.push(format!("no stream {name} on the cluster"));
        }
    }
    for (name, r) in &faulted.replicas {
        if *r != 3 {
            failures.push(format!("{name} has {r} replicas on the cluster, not 3"));
        }
    }
    if faulted.raw != clean.raw {
        failures.push(format!(
            "RAW holds {} readings, the uninterrupted run {}",
            faulted.raw, clean.raw
        ));
    }
    if (faulted.archived, faulted.archived_distinct) != (clean.raw as i64, clean.raw as i64) {
        failures.push(format!(
            "the archive holds {} rows ({} distinct by (sensor, seq)), not every reading once ({}): {}",
            faulted.archived, faulted.archived_distinct, clean.raw, faulted.archive_gaps
        ));
    }
    if faulted.metrics != clean.metrics {
        failures.push(format!(
            "window results differ: {}",
            first_difference(&clean.metrics, &faulted.metrics)
        ));
    }
    if faulted.alerts != clean.alerts {
        failures.push(format!(
            "alert transitions differ: {}",
            first_difference(&clean.alerts, &faulted.alerts)
        ));
    }
    // Reconnected by themselves: healthy (their health includes the NATS connection), and each
    // one the killed node served counted the disconnection.
    for s in LONG_RUNNING {
        match http_get(pipeline.admin_addr(s), "/healthz") {
            Ok((200, _)) => {}
            other => failures.push(format!("{} /healthz at the end: {other:?}", s.binary())),
        }
        if kill.clients.iter().any(|c| c == s.binary()) {
            let disconnected = connection_events(&pipeline, s, "disconnected");
            if disconnected < 1.0 {
                failures.push(format!(
                    "{} was connected to the killed node but counted no disconnection",
                    s.binary()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Alert transitions: each once, resolutions after firings.
    assert_lifecycle(&faulted.alerts);
    eprintln!(
        "cluster run matches: node n{} killed (served {:?}, led {:?}); {:.0} s in all",
        kill.node,
        kill.clients,
        kill.leading,
        started.elapsed().as_secs_f64()
    );
}
