//! Active/standby with the real binary: two instances in one group, one evaluates and answers
//! operator requests; SIGKILL it mid-episode and the standby takes over from the KV checkpoint
//! and publishes the rest exactly once. A paused active instance that wakes up after the standby
//! took over writes no checkpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use async_nats::jetstream::Context;
use citypulse_harness::{free_port, http_get, NatsServer};
use citypulse_schema::WindowResult;
use common::*;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

/// Minutes 0-1: AQI pending (for 3m). 2-4: fires, escalates. 5-12: steps down, resolves.
fn phases() -> [Vec<WindowResult>; 3] {
    let aqi = [120, 120, 120, 160, 160, 145, 130, 80, 80, 80, 80, 80, 80];
    let minute = |m: usize| {
        vec![
            air("d1", None, m as u64, aqi[m]),
            air("d1", Some("a"), m as u64, 40),
        ]
    };
    let range = |r: std::ops::Range<usize>| r.flat_map(minute).collect::<Vec<_>>();
    [range(0..2), range(2..5), range(5..13)]
}

const FAST: [&str; 6] = [
    "--checkpoint-interval",
    "100ms",
    "--ack-wait",
    "5s",
    "--housekeeping-interval",
    "100ms",
];

struct Instance {
    bin: Binary,
    admin: SocketAddr,
}

impl Instance {
    fn spawn(url: &str, rules: &Path, dir: &Path, name: &str, extra: &[&str]) -> Instance {
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
        ];
        args.extend_from_slice(extra);
        Instance {
            bin: Binary::spawn(&args, dir, name),
            admin,
        }
    }

    /// `Some(true)` when `/healthz` says active, `Some(false)` standby, `None` unreachable.
    fn active(&self) -> Option<bool> {
        let (_, body) = http_get(self.admin, "/healthz").ok()?;
        if body.contains("role: active") {
            Some(true)
        } else if body.contains("role: standby") {
            Some(false)
        } else {
            None
        }
    }

    /// A metric summed over its label sets, from `/metrics` (0 when absent).
    fn metric(&self, name: &str) -> f64 {
        let Ok((_, text)) = http_get(self.admin, "/metrics") else {
            return 0.0;
        };
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    fn requests(&self) -> f64 {
        self.metric("citypulse_alerts_requests_total")
    }
}

/// Waits until exactly one of `xs` is active and both see two members, the same one for two
/// seconds in a row (a handover after the second one joined has then happened or will not);
/// returns its index.
async fn settled_active(xs: &[&Instance]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut since: Option<(usize, Instant)> = None;
    loop {
        assert!(Instant::now() < deadline, "no settled active instance");
        let roles: Vec<Option<bool>> = xs.iter().map(|x| x.active()).collect();
        let members_ok = xs
            .iter()
            .all(|x| x.metric("citypulse_alerts_group_members") == xs.len() as f64);
        let active: Vec<usize> = (0..xs.len()).filter(|i| roles[*i] == Some(true)).collect();
        match (members_ok, active.as_slice()) {
            (true, [one]) if roles.iter().all(Option::is_some) => match since {
                Some((i, t)) if i == *one => {
                    if t.elapsed() >= Duration::from_secs(2) {
                        return *one;
                    }
                }
                _ => since = Some((*one, Instant::now())),
            },
            _ => since = None,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn list(client: &async_nats::Client, n: usize) {
    for _ in 0..n {
        let reply = tokio::time::timeout(
            Duration::from_secs(5),
            client.request("citypulse.alerts.list", "{}".into()),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(!reply.payload.is_empty());
    }
}

/// Every ALERTS message as (subject, Nats-Msg-Id, payload), in order.
async fn transitions(js: &Context) -> Vec<(String, String, Vec<u8>)> {
    let Ok(mut stream) = js.get_stream("ALERTS").await else {
        return Vec::new();
    };
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        let m = stream.get_raw_message(seq).await.unwrap();
        let id = m
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|v| v.to_string())
            .unwrap_or_default();
        out.push((m.subject.to_string(), id, m.payload.to_vec()));
    }
    out
}

/// One instance, no kill: what ALERTS holds afterwards.
async fn uninterrupted_run(dir: &Path, rules: &Path) -> Vec<(String, String, Vec<u8>)> {
    let server = NatsServer::start();
    let url = server.url();
    let (client, js) = jetstream(&url).await;
    let x = Instance::spawn(&url, rules, dir, "uninterrupted", &FAST);
    wait_answering(&client, &x).await;
    let mut last = 0;
    for phase in phases() {
        last = publish_all(&js, &phase).await;
    }
    wait_processed(&js, last).await;
    x.bin.kill();
    transitions(&js).await
}

async fn wait_answering(client: &async_nats::Client, x: &Instance) {
    let what = format!("an instance answering list (log: {})", x.bin.log.display());
    citypulse_harness::wait_for(DEADLINE, &what, || async {
        tokio::time::timeout(
            Duration::from_millis(300),
            client.request("citypulse.alerts.list", "{}".into()),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_active_instance_mid_episode_the_standby_publishes_the_rest_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_rules_dir, rules) = rules_file(TEST_RULES);
    let reference = uninterrupted_run(dir.path(), &rules).await;
    let want = evaluate_all(phases().iter().flatten());
    assert_eq!(reference.len(), want.len(), "{want:#?}");

    let server = NatsServer::start();
    let url = server.url();
    let (client, js) = jetstream(&url).await;
    let a = Instance::spawn(&url, &rules, dir.path(), "a", &FAST);
    wait_answering(&client, &a).await;
    let b = Instance::spawn(&url, &rules, dir.path(), "b", &FAST);
    let mut xs = vec![a, b];
    let active = settled_active(&xs.iter().collect::<Vec<_>>()).await;

    // Pending, then firing and escalating: two transitions, checkpointed and acked.
    let [p1, p2, p3] = phases();
    publish_all(&js, &p1).await;
    wait_processed(&js, publish_all(&js, &p2).await).await;
    let fired = transitions(&js).await;
    assert_eq!(fired.len(), 2, "firing and escalation");
    assert_eq!(fired, reference[..2].to_vec());

    // Only the active instance answers operator requests.
    let before: Vec<f64> = xs.iter().map(Instance::requests).collect();
    list(&client, 10).await;
    let after: Vec<f64> = xs.iter().map(Instance::requests).collect();
    assert_eq!(
        after[active] - before[active],
        10.0,
        "answered by the active"
    );
    assert_eq!(
        after[1 - active],
        before[1 - active],
        "the standby answered"
    );

    // SIGKILL the active one between the firing and its resolution; the rest of the episode
    // arrives while nobody is active.
    let dead = xs.remove(active);
    let new = &xs[0];
    assert_eq!(new.active(), Some(false));
    let killed = Instant::now();
    dead.bin.kill();
    let last = publish_all(&js, &p3).await;
    citypulse_harness::wait_for(DEADLINE, "the standby active", || async {
        new.active() == Some(true)
    })
    .await;
    let takeover = killed.elapsed();
    println!("takeover (SIGKILL of the active → the standby active): {takeover:?}");
    wait_processed(&js, last).await;

    // Exactly the uninterrupted run's transitions: none lost, none repeated.
    let seen = transitions(&js).await;
    assert_eq!(
        seen,
        reference,
        "log of the new active: {}",
        new.bin.log_text()
    );
    // The new active resumed from the checkpoint: it published only the rest of the episode
    // (a replay of the firing would have counted here, even if the server dropped it).
    assert_eq!(
        new.metric("citypulse_alerts_transitions_total"),
        (reference.len() - 2) as f64
    );
    // It answers operator requests now.
    let before = new.requests();
    list(&client, 3).await;
    assert_eq!(new.requests() - before, 3.0);
    assert!(
        takeover < Duration::from_secs(10),
        "takeover took {takeover:?} with the default 5 s TTL"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_active_instance_paused_past_its_lease_writes_no_checkpoint_when_it_wakes() {
    let dir = tempfile::tempdir().unwrap();
    let (_rules_dir, rules) = rules_file(TEST_RULES);
    let server = NatsServer::start();
    let url = server.url();
    let (client, js) = jetstream(&url).await;
    // The first instance never checkpoints on its own, so it holds unwritten state when it is
    // paused; the second one checkpoints often.
    let never = [
        "--checkpoint-interval",
        "1h",
        "--checkpoint-every",
        "1000000",
        "--max-ack-pending",
        "2000000",
        "--ack-wait",
        "2h",
    ];
    let zombie = Instance::spawn(&url, &rules, dir.path(), "zombie", &never);
    wait_answering(&client, &zombie).await;
    let successor = Instance::spawn(&url, &rules, dir.path(), "successor", &FAST);
    let [p1, p2, p3] = phases();
    publish_all(&js, &p1).await;
    publish_all(&js, &p2).await;
    wait_alerts(&js, 2).await;
    assert_eq!(zombie.active(), Some(true));

    // Paused (a long GC pause, a frozen VM) past its lease: the successor takes over, replays
    // from the start and finishes the episode.
    zombie.bin.signal("STOP");
    citypulse_harness::wait_for(Duration::from_secs(30), "the successor active", || async {
        successor.active() == Some(true)
    })
    .await;
    wait_processed(&js, publish_all(&js, &p3).await).await;
    let kv = js.get_key_value("citypulse_alerts").await.unwrap();
    let manifest = kv.entry("manifest").await.unwrap().unwrap();

    // The zombie wakes up, finds its lease gone and stops without writing.
    zombie.bin.signal("CONT");
    citypulse_harness::wait_for(DEADLINE, "the zombie standing by", || async {
        zombie.metric("citypulse_alerts_group_released_total") >= 1.0
            && zombie.active() == Some(false)
    })
    .await;
    let now = kv.entry("manifest").await.unwrap().unwrap();
    assert_eq!(
        (now.revision, now.value),
        (manifest.revision, manifest.value),
        "the checkpoint was overwritten; zombie log: {}",
        zombie.bin.log_text()
    );
    // The successor still owns the checkpoint and keeps writing it.
    let more = vec![air("d1", None, 13, 80), air("d1", Some("a"), 13, 40)];
    wait_processed(&js, publish_all(&js, &more).await).await;
    let want = evaluate_all(phases().iter().flatten().chain(&more));
    let seen: Vec<_> = alerts_stream(&js)
        .await
        .into_iter()
        .map(|p| p.event)
        .collect();
    assert_eq!(seen, want);
    assert_eq!(successor.active(), Some(true));
}
