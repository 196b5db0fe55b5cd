//! The ordered source and the group publisher against a real nats-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream::{self, context::ContextBuilder, stream};
use citypulse_harness::{NatsServer, PullDropProxy};
use citypulse_runtime::publish::{publish_all, publish_in_windows, Acks, Outgoing, Windows};
use citypulse_runtime::shutdown::Shutdown;
use citypulse_runtime::source::{
    ack_floor, pull_bytes, Observer, Source, SourceConfig, SourceEvent, FILL_WAIT, PROBE, STALL,
};
use futures::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

async fn test_stream(js: &jetstream::Context) -> stream::Stream {
    js.create_stream(stream::Config {
        name: "TEST".into(),
        subjects: vec!["test.>".into()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap()
}

fn messages(tag: &str, n: usize) -> Vec<Outgoing> {
    (0..n)
        .map(|i| {
            Outgoing::new(
                format!("test.{tag}"),
                format!("{tag}:{i}"),
                format!("{i}").into(),
            )
        })
        .collect()
}

/// Several callers at once, each with more messages than the context has in-flight permits:
/// every message is acknowledged (sending while holding unpolled acks would deadlock here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_groups_larger_than_the_in_flight_permits_all_land() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = ContextBuilder::new()
        .max_ack_inflight(16)
        .backpressure_on_inflight(true)
        .build(client);
    let mut s = test_stream(&js).await;
    let shutdown = Shutdown::new();
    let groups = (0..4).map(|g| {
        let (js, shutdown) = (js.clone(), shutdown.clone());
        tokio::spawn(async move {
            let out = messages(&format!("g{g}"), 200);
            publish_all(&js, &out, &shutdown, &|_| {}).await.unwrap()
        })
    });
    let all = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(groups))
        .await
        .expect("every group acknowledged (no deadlock on the in-flight permits)");
    for acks in all {
        let acks = acks.unwrap();
        assert_eq!(acks.len(), 200);
        assert!(acks.iter().all(|a| !a.duplicate));
    }
    assert_eq!(s.info().await.unwrap().state.messages, 800);
}

/// Each ack is the one of its own message: over several windows, the i-th ack names the i-th
/// stored sequence and reads back as the i-th payload; a second publish of the same group is
/// stored nothing and acked as duplicates of the same sequences; retries are counted only for
/// messages the fast path could not place (none here).
#[tokio::test]
async fn acks_come_back_in_message_order_and_a_repeat_is_acked_as_duplicates() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let s = test_stream(&js).await;
    let out = messages("order", 300);
    let retries = Mutex::new(0);
    let count = |_: &'static str| *retries.lock().unwrap() += 1;
    let first = publish_all(&js, &out, &Shutdown::new(), &count)
        .await
        .unwrap();
    let seqs: Vec<u64> = first.iter().map(|a| a.sequence).collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<u64>>());
    assert!(first.iter().all(|a| !a.duplicate && a.stream == "TEST"));
    for (i, ack) in first.iter().enumerate().step_by(37) {
        let stored = s.get_raw_message(ack.sequence).await.unwrap();
        assert_eq!(stored.payload, out[i].payload, "message {i}");
    }
    let again = publish_all(&js, &out, &Shutdown::new(), &count)
        .await
        .unwrap();
    assert!(again.iter().all(|a| a.duplicate));
    assert_eq!(again.iter().map(|a| a.sequence).collect::<Vec<_>>(), seqs);
    assert_eq!(*retries.lock().unwrap(), 0);
    let mut s = s;
    assert_eq!(s.info().await.unwrap().state.messages, 300);
}

/// Publishes a group of 300 — on one stream, then (other ids) alternating between two — a third
/// of it published before, and checks that every ack is its own message's: its stream, its
/// stored payload, and `duplicate` exactly for the repeats. Acks of one window may come back out of order here (two streams
/// answer independently; a clustered stream answers a duplicate before earlier messages are
/// replicated), so the fast path must notice and place them exactly.
async fn each_ack_is_its_own_message(js: &jetstream::Context, replicas: usize) {
    let mut streams = Vec::new();
    for (name, subjects) in [("TEST", "test.>"), ("OTHER", "other.>")] {
        let config = stream::Config {
            name: name.into(),
            subjects: vec![subjects.into()],
            duplicate_window: Duration::from_secs(120),
            num_replicas: replicas,
            ..Default::default()
        };
        streams.push(citypulse_harness::create_stream_patiently(js, config).await);
    }
    let one = |_: usize| 0_usize;
    let alternating = |i: usize| i % 2;
    for (layout, stream_of) in [
        ("one", &one as &dyn Fn(usize) -> usize),
        ("two", &alternating),
    ] {
        check_acks(js, &mut streams, layout, stream_of).await;
    }
}

async fn check_acks(
    js: &jetstream::Context,
    streams: &mut [stream::Stream],
    layout: &str,
    stream_of: &dyn Fn(usize) -> usize,
) {
    let before = [count(&mut streams[0]).await, count(&mut streams[1]).await];
    let out: Vec<Outgoing> = (0..300)
        .map(|i| {
            let subject = ["test.a", "other.a"][stream_of(i)];
            Outgoing::new(
                subject.into(),
                format!("{layout}:{i}"),
                format!("{i}").into(),
            )
        })
        .collect();
    let earlier: Vec<Outgoing> = out.iter().step_by(3).cloned().collect();
    publish_all(js, &earlier, &Shutdown::new(), &|_| {})
        .await
        .unwrap();
    let acks = publish_all(js, &out, &Shutdown::new(), &|_| {})
        .await
        .unwrap();
    assert_eq!(acks.len(), out.len());
    let mut added = [0, 0];
    for (i, (m, ack)) in out.iter().zip(&acks).enumerate() {
        let s = stream_of(i);
        added[s] += 1;
        assert_eq!(ack.stream, ["TEST", "OTHER"][s], "{layout}: message {i}");
        assert_eq!(ack.duplicate, i % 3 == 0, "{layout}: message {i}");
        let stored = streams[s].get_raw_message(ack.sequence).await.unwrap();
        assert_eq!(stored.payload, m.payload, "{layout}: message {i}");
    }
    for (s, stream) in streams.iter_mut().enumerate() {
        assert_eq!(count(stream).await, before[s] + added[s], "{layout}");
    }
}

async fn count(s: &mut stream::Stream) -> u64 {
    s.info().await.unwrap().state.messages
}

#[tokio::test]
async fn each_ack_is_its_own_message_across_streams_and_among_duplicates() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    each_ack_is_its_own_message(&jetstream::new(client), 1).await;
}

#[tokio::test]
async fn each_ack_is_its_own_message_in_a_cluster() {
    let cluster = citypulse_harness::NatsCluster::start();
    let client = async_nats::connect(cluster.urls()).await.unwrap();
    each_ack_is_its_own_message(&jetstream::new(client), 3).await;
}

/// A server with the TEST stream, and a core NATS subscriber of its subjects, subscribed before
/// anything is published (the server is kept for the test's length).
async fn watched_stream() -> (
    NatsServer,
    jetstream::Context,
    stream::Stream,
    async_nats::Subscriber,
) {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    let s = test_stream(&js).await;
    let seen = client.subscribe("test.>").await.unwrap();
    client.flush().await.unwrap();
    (server, js, s, seen)
}

/// How many messages `seen` has received. Every publish of one connection reaches it in order,
/// so after the acks it has them all; it waits half a second for a copy that would come after.
async fn deliveries(seen: &mut async_nats::Subscriber) -> usize {
    let mut n = 0;
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(500), seen.next()).await {
        n += 1;
    }
    n
}

/// A publisher that only counts its acks (the simulator, `Acks::Counted`) puts each message on
/// the wire once, duplicates among them or not: a core NATS subscriber of the subjects (any
/// client of the public `sensors.` contract) sees every publish once. Every message is acked,
/// the duplicates are counted exactly, and the stream stores each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counted_acks_send_each_message_once_among_duplicates() {
    let (_server, js, mut s, mut seen) = watched_stream().await;
    let out = messages("c", 300);
    let earlier: Vec<Outgoing> = out.iter().step_by(3).cloned().collect();
    let shutdown = Shutdown::new();
    let counted = Windows {
        max: 64,
        acks: Acks::Counted,
        subject_once: false,
    };
    let first = publish_in_windows(&js, &earlier, counted, &shutdown, &|_| {})
        .await
        .unwrap();
    let acks = publish_in_windows(&js, &out, counted, &shutdown, &|_| {})
        .await
        .unwrap();
    assert_eq!(first.len(), 100);
    assert_eq!(acks.len(), 300);
    assert_eq!(acks.iter().filter(|a| a.duplicate).count(), 100);
    assert_eq!(count(&mut s).await, 300);
    let deliveries = deliveries(&mut seen).await;
    assert_eq!(
        deliveries, 400,
        "each of the 100 + 300 publishes on the wire once"
    );
}

/// A message published alone, again (the alerts' transitions are, after a crash): its one ack
/// is its own, so it goes on the wire once more, not twice, and is acked as the duplicate of
/// what the first publish stored.
#[tokio::test]
async fn a_lone_message_published_again_is_sent_once() {
    let (_server, js, mut s, mut seen) = watched_stream().await;
    let one = messages("lone", 1);
    let first = publish_all(&js, &one, &Shutdown::new(), &|_| {})
        .await
        .unwrap();
    let again = publish_all(&js, &one, &Shutdown::new(), &|_| {})
        .await
        .unwrap();
    assert!(!first[0].duplicate && again[0].duplicate);
    assert_eq!(again[0].sequence, first[0].sequence);
    assert_eq!(count(&mut s).await, 1);
    let deliveries = deliveries(&mut seen).await;
    assert_eq!(deliveries, 2, "each of the two publishes on the wire once");
}

/// Publishes `(subject, id, epoch)`s in windows that never hold a subject twice, the first
/// message too close to `max_payload` for the fast path (left to the JetStream context, after
/// the rest of its window landed), and returns the ids in the order the stream stored them.
async fn stored_order_with_a_careful_first(out: &[(&str, &str, u64)]) -> Vec<String> {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let big = vec![b'x'; client.server_info().max_payload - 4096];
    let js = jetstream::new(client);
    let mut s = test_stream(&js).await;
    let out: Vec<Outgoing> = out
        .iter()
        .enumerate()
        .map(|(i, (subject, id, epoch))| {
            let body = if i == 0 {
                big.clone()
            } else {
                id.as_bytes().to_vec()
            };
            Outgoing::new((*subject).into(), (*id).into(), body.into()).in_epoch(*epoch)
        })
        .collect();
    let windows = Windows::counted_in_subject_order(64);
    let acks = publish_in_windows(&js, &out, windows, &Shutdown::new(), &|_| {})
        .await
        .unwrap();
    assert_eq!(acks.len(), out.len());
    assert_eq!(count(&mut s).await, out.len() as u64);
    let mut order = Vec::new();
    for seq in 1..=out.len() as u64 {
        let m = s.get_raw_message(seq).await.unwrap();
        let id = m.headers.get("Nats-Msg-Id").unwrap().as_str().to_owned();
        order.push(id);
    }
    order
}

/// With each subject at most once per window, a message left to the careful path is still
/// stored before the next one of its own subject (a device's next reading, a subject's next
/// window result), which the alerts would otherwise drop as older than the last they saw.
/// Other subjects' messages of its window may be stored ahead of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_left_to_the_careful_path_lands_before_the_next_of_its_subject() {
    let out = [
        ("test.a", "a:1", 0),
        ("test.b", "b:1", 0),
        ("test.a", "a:2", 0),
    ];
    let order = stored_order_with_a_careful_first(&out).await;
    assert_eq!(order, ["b:1", "a:1", "a:2"], "stored in this order");
}

/// Across epochs: a message left to the careful path lands before every message of the next
/// epoch of its call (the processors' next window end), not merely before its subject's next
/// one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_left_to_the_careful_path_lands_before_the_next_epoch() {
    let out = [
        ("test.a", "a:1", 1),
        ("test.b", "b:1", 1),
        ("test.c", "c:2", 2),
        ("test.d", "d:2", 2),
    ];
    let order = stored_order_with_a_careful_first(&out).await;
    assert_eq!(order, ["b:1", "a:1", "c:2", "d:2"], "stored in this order");
}

/// The events a source reports, recorded, and the observer that records them.
fn recorded() -> (Arc<Mutex<Vec<SourceEvent>>>, Observer) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    (events, Arc::new(move |e| seen.lock().unwrap().push(e)))
}

fn source_config() -> SourceConfig {
    SourceConfig {
        durable: "reader".into(),
        description: "test".into(),
        filter_subject: String::new(),
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 1000,
        batch: 10,
        max_bytes: 0,
        heartbeat: Duration::from_secs(5),
        fill_wait: FILL_WAIT,
        linger: Duration::ZERO,
    }
}

/// A backlog is handed out in full batches: while the server has more for the consumer, a batch
/// waits for what is on its way instead of handing out whatever the client had buffered when it
/// was asked (a tenth of the batch size, seen in `scripts/bench`: ingest then wrote READINGS
/// messages of 15 readings instead of 125). Caught up, the rest comes at once, in one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_is_handed_out_in_full_batches() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let stream = test_stream(&js).await;
    publish_all(&js, &messages("f", 2_050), &Shutdown::new(), &|_| {})
        .await
        .unwrap();
    // Long enough for any machine: the batches below do not depend on how fast this one is.
    let config = SourceConfig {
        batch: 500,
        max_ack_pending: 10_000,
        fill_wait: Duration::from_secs(10),
        linger: Duration::ZERO,
        ..source_config()
    };
    let mut reader = Source::new(stream, config, 0, Arc::new(|_| {}));
    let shutdown = Shutdown::new();
    let mut sizes = Vec::new();
    let mut last = 0;
    while last < 2_050 {
        let mut batch = Vec::new();
        assert!(reader.next_batch(&mut batch, &shutdown).await);
        assert_eq!(batch[0].seq, last + 1, "in order");
        last = batch.last().unwrap().seq;
        sizes.push(batch.len());
        if let Some(d) = batch.last() {
            reader.ack(d).await;
        }
    }
    assert_eq!(sizes, [500, 500, 500, 500, 50]);
    assert!(reader.caught_up());
    assert_eq!(reader.position(), 2_050);
}

/// With a linger, a batch caught up with a steady stream waits for what its producers publish
/// next instead of going out with the one message that had arrived: ingest's READINGS messages
/// are a batch each, so fewer, larger ones cost the server and every consumer downstream less.
/// The batch still ends when full (here long before the linger) or when the linger is over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lingering_batch_waits_for_the_next_messages_of_a_steady_stream() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let stream = test_stream(&js).await;
    let config = SourceConfig {
        batch: 10,
        linger: Duration::from_secs(30),
        ..source_config()
    };
    let mut reader = Source::new(stream, config, 0, Arc::new(|_| {}));
    let all = messages("l", 13);
    publish_all(&js, &all[..1], &Shutdown::new(), &|_| {})
        .await
        .unwrap();
    let producer = {
        let js = js.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            for m in all[1..].chunks(1) {
                publish_all(&js, m, &Shutdown::new(), &|_| {})
                    .await
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let shutdown = Shutdown::new();
    let mut batch = Vec::new();
    assert!(reader.next_batch(&mut batch, &shutdown).await);
    let seqs: Vec<u64> = batch.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>(), "one full batch");
    producer.await.unwrap();
    // A batch that does not fill goes out when its linger is over: another reader, lingering
    // 300 ms, after the tenth message.
    let config = SourceConfig {
        durable: "lingering".into(),
        batch: 100,
        linger: Duration::from_millis(300),
        ..source_config()
    };
    let stream = js.get_stream("TEST").await.unwrap();
    let mut reader = Source::new(stream, config, 10, Arc::new(|_| {}));
    batch.clear();
    let started = std::time::Instant::now();
    let next = tokio::time::timeout(
        Duration::from_secs(10),
        reader.next_batch(&mut batch, &shutdown),
    );
    assert!(next.await.expect("the linger's end hands the batch out"));
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "it lingered"
    );
    let seqs: Vec<u64> = batch.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, [11, 12, 13]);
}

/// A pull the server holds but does not serve while it holds messages for the consumer (here:
/// the consumer's `max_ack_pending` reached) is given up after `STALL` and the consumer
/// reopened after the last message handed out: the reader goes on in order instead of waiting
/// for the missed heartbeats, which never come while the server answers the pull with
/// heartbeats. The wait counts in all, across the calls a caller's faster timer cancels (the
/// processors tick every second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_the_server_does_not_serve_while_it_has_more_is_reopened() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let stream = test_stream(&js).await;
    publish_all(&js, &messages("s", 20), &Shutdown::new(), &|_| {})
        .await
        .unwrap();
    let (events, observer) = recorded();
    let config = SourceConfig {
        max_ack_pending: 5,
        ..source_config()
    };
    let mut reader = Source::new(stream, config, 0, observer);
    let shutdown = Shutdown::new();
    let mut got = Vec::new();
    while got.len() < 5 {
        assert!(reader.next_batch(&mut got, &shutdown).await);
    }
    assert_eq!(got.len(), 5, "the server stops at max_ack_pending");
    assert!(!reader.caught_up(), "the server said it had more");
    // As the services call it: raced against a timer faster than STALL, which cancels it.
    let started = std::time::Instant::now();
    while got.len() == 5 {
        assert!(
            started.elapsed() < STALL * 5,
            "the stalled pull is given up and the consumer reopened"
        );
        tokio::select! {
            more = reader.next_batch(&mut got, &shutdown) => assert!(more),
            () = tokio::time::sleep(STALL / 4) => {}
        }
    }
    assert!(started.elapsed() >= STALL, "not before {STALL:?}");
    let seqs: Vec<u64> = got.iter().map(|d| d.seq).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as u64).collect::<Vec<_>>(),
        "in order"
    );
    assert!(seqs.len() > 5);
    assert!(events
        .lock()
        .unwrap()
        .contains(&SourceEvent::PullError("stalled")));
}

/// A pull request lost on its way to the server, while the server has more for the consumer:
/// the client still counts it outstanding and asks for nothing more, and the server, holding no
/// request, sends neither messages nor heartbeats (async-nats 0.51 can also lose count of its
/// requests so, docs/benchmarks.md). The source asks the server after `PROBE` and, told it holds
/// no pull request, reopens the consumer then (`unserved`) rather than after `STALL`
/// (`stalled`); the reader goes on in stream order. Requests of 5 messages, as the processors'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_the_server_never_got_is_noticed_by_asking_the_server() {
    // The first request (5 messages) reaches the server; the second, sent once the client has
    // taken three of them, does not.
    let events = read_past_a_lost_pull_request(1, 5, 20).await;
    assert!(
        events.contains(&SourceEvent::PullError("unserved")),
        "found by asking the server: {events:?}"
    );
    assert!(
        !events.contains(&SourceEvent::PullError("stalled")),
        "not after STALL: {events:?}"
    );
}

/// The same loss for the first pull request of a newly opened consumer, before any message told
/// the reader whether the server has more: the reader asks the server after `PROBE` as well, and
/// reopens (`unserved`) rather than waiting for the missed heartbeats (twice 5 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_first_pull_request_is_noticed_by_asking_the_server() {
    let events = read_past_a_lost_pull_request(0, 10, 20).await;
    assert_noticed_by_asking(&events);
}

/// As above on an empty stream: the server holds no request and has nothing yet, which is not
/// "caught up". The reader reopens, and what is published a second later arrives without
/// waiting for the missed heartbeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_first_pull_request_on_an_empty_stream_is_noticed_by_asking_the_server() {
    let events = read_past_a_lost_pull_request(0, 10, 0).await;
    assert_noticed_by_asking(&events);
}

/// A pull request lost once the reader has caught up: the first request (10 messages) takes
/// all that is stored, the next, sent once the client has taken some of them, does not reach
/// the server. What is published a second later then waits for a request the server does not
/// hold. Caught up, the reader still asks the server after `IDLE_LOOK` without a message, and
/// reopens (`unserved`) rather than waiting for the missed heartbeats (twice 5 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_request_lost_while_caught_up_is_noticed_by_asking_the_server() {
    let events = read_past_a_lost_pull_request(1, 10, 10).await;
    assert_noticed_by_asking(&events);
}

/// Reopened because the server held no pull request (`unserved`), not after the missed
/// heartbeats or `STALL`.
fn assert_noticed_by_asking(events: &[SourceEvent]) {
    assert!(
        events.contains(&SourceEvent::PullError("unserved")),
        "found by asking the server: {events:?}"
    );
    for late in ["missing_heartbeat", "stalled"] {
        assert!(
            !events.contains(&SourceEvent::PullError(late)),
            "not by {late}: {events:?}"
        );
    }
}

/// Reads 20 messages, `batch` per pull request, through a [`PullDropProxy`] that lets `skip`
/// pull requests through and drops the next: `stored` of them stored before the reader opens
/// the consumer, the rest published a second later. Asserts that all 20 arrive, in order, and
/// that one request was dropped; returns the source's events.
async fn read_past_a_lost_pull_request(skip: u32, batch: usize, stored: usize) -> Vec<SourceEvent> {
    let server = NatsServer::start();
    let proxy = PullDropProxy::start(&server.url());
    let client = async_nats::connect(proxy.url()).await.unwrap();
    let js = jetstream::new(client);
    let stream = test_stream(&js).await;
    let all = messages("s", 20);
    publish_all(&js, &all[..stored], &Shutdown::new(), &|_| {})
        .await
        .unwrap();
    let (events, observer) = recorded();
    let config = SourceConfig {
        batch,
        ..source_config()
    };
    proxy.drop_pull_request_after(skip);
    let mut reader = Source::new(stream, config, 0, observer);
    let later = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        publish_all(&js, &all[stored..], &Shutdown::new(), &|_| {})
            .await
            .unwrap();
    });
    let shutdown = Shutdown::new();
    let mut got = Vec::new();
    let started = std::time::Instant::now();
    while got.len() < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the reader stopped at {} of 20 messages",
            got.len()
        );
        // As the services call it: raced against a timer, which cancels it.
        tokio::select! {
            more = reader.next_batch(&mut got, &shutdown) => assert!(more),
            () = tokio::time::sleep(PROBE / 2) => {}
        }
    }
    later.await.unwrap();
    assert_eq!(proxy.dropped(), 1, "a pull request was lost");
    let seqs: Vec<u64> = got.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, (1..=20).collect::<Vec<u64>>(), "in order");
    let recorded = events.lock().unwrap().clone();
    recorded
}

/// A reader opened on an empty stream asks the server once, learns it has nothing, and then
/// waits quietly: no reopening while nothing comes (past `STALL`), and what is published later
/// arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_on_an_empty_stream_waits_without_reopening() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let stream = test_stream(&js).await;
    let (events, observer) = recorded();
    let mut reader = Source::new(stream, source_config(), 0, observer);
    let shutdown = Shutdown::new();
    let mut got = Vec::new();
    let quiet = tokio::time::timeout(STALL * 2, reader.next_batch(&mut got, &shutdown)).await;
    assert!(quiet.is_err() && got.is_empty(), "nothing to hand out");
    assert!(reader.caught_up(), "the server said it has nothing");
    publish_all(&js, &messages("s", 3), &Shutdown::new(), &|_| {})
        .await
        .unwrap();
    while got.len() < 3 {
        let more = tokio::time::timeout(
            Duration::from_secs(5),
            reader.next_batch(&mut got, &shutdown),
        );
        assert!(more.await.expect("the published messages arrive"));
    }
    let events = events.lock().unwrap().clone();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, SourceEvent::PullError(_))),
        "no reopening: {events:?}"
    );
}

/// A reader that dies with messages handed out but not acked: the next one resumes right after
/// the ack floor, in stream order — not with newer messages while the old ones wait out the ack
/// wait (30 s here) for the server to redeliver them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_reader_resumes_in_order_after_the_ack_floor() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let stream = test_stream(&js).await;
    publish_all(&js, &messages("a", 50), &Shutdown::new(), &|_| {})
        .await
        .unwrap();
    let (events, observer) = recorded();
    let shutdown = Shutdown::new();

    // The first reader takes 20, acks through 10, and is dropped (a crash).
    let mut first = Source::new(stream.clone(), source_config(), 0, observer.clone());
    let mut got = Vec::new();
    while got.len() < 20 {
        assert!(first.next_batch(&mut got, &shutdown).await);
    }
    let tenth = got.iter().find(|d| d.seq == 10).unwrap();
    first.ack(tenth).await;
    drop(got);
    drop(first);
    let floor = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let f = ack_floor(&stream, "reader").await.unwrap();
            if f == 10 {
                return f;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the ack reaches the server");

    // The second reader starts after the floor and sees 11..=50 in order, at once.
    let mut second = Source::new(stream, source_config(), floor, observer);
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while got.len() < 40 {
            assert!(second.next_batch(&mut got, &shutdown).await);
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the rest arrives without waiting for the ack wait"
    );
    let seqs: Vec<u64> = got.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, (11..=50).collect::<Vec<u64>>());
    assert_eq!(second.position(), 50);
    assert!(!events.lock().unwrap().contains(&SourceEvent::Gap));
}

/// A reader whose consumer the server no longer has after a crash (created moments before the
/// SIGKILL, or its state lost): the client's pull requests then get "no responders" and missed
/// heartbeats, never a message. The source must recreate the consumer after its position by
/// itself and read on — not wait forever (a whole-pipeline fault run once left one processors
/// partition silent for the rest of the run this way).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_whose_consumer_the_restarted_server_lost_reads_on() {
    let mut server = NatsServer::start();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(server.url())
        .await
        .unwrap();
    let js = jetstream::new(client);
    let stream = test_stream(&js).await;
    publish_all(&js, &messages("a", 30), &Shutdown::new(), &|_| {})
        .await
        .unwrap();
    let shutdown = Shutdown::new();
    let mut config = source_config();
    config.heartbeat = Duration::from_secs(1);
    let mut reader = Source::new(stream, config, 0, Arc::new(|_| {}));
    let mut got = Vec::new();
    while got.len() < 30 {
        assert!(reader.next_batch(&mut got, &shutdown).await);
    }

    // Crash; the restarted server has the stream but not the consumer.
    server.stop();
    let consumer_dir = server
        .store_dir()
        .join("jetstream/$G/streams/TEST/obs/reader");
    assert!(consumer_dir.is_dir(), "{}", consumer_dir.display());
    std::fs::remove_dir_all(&consumer_dir).unwrap();
    server.start_again();
    publish_all(&js, &messages("b", 20), &Shutdown::new(), &|_| {})
        .await
        .unwrap();

    // Read as the services do: racing the source against a timer that cancels `next_batch`
    // every 20 ms. (The alerts service's lifecycle tests, with a 50 ms housekeeping tick,
    // caught a reopening pause that restarted on every cancellation.)
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while got.len() < 50 {
            tokio::select! {
                more = reader.next_batch(&mut got, &shutdown) => assert!(more),
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the reader stalled with {} of 50 messages",
        got.len()
    );
    let seqs: Vec<u64> = got.iter().map(|d| d.seq).collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<u64>>());
}

/// `n` messages of `size` bytes each.
fn large_messages(n: usize, size: usize) -> Vec<Outgoing> {
    (0..n)
        .map(|i| {
            Outgoing::new(
                "test.large".into(),
                format!("large:{i}"),
                vec![b'x'; size].into(),
            )
        })
        .collect()
}

/// Reads `n` messages as the services do, handing each batch's payload bytes to `batch_bytes`.
async fn read_all(reader: &mut Source, n: usize, mut batch_bytes: impl FnMut(usize)) -> Vec<u64> {
    let shutdown = Shutdown::new();
    let mut seqs = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        while seqs.len() < n {
            let mut batch = Vec::new();
            assert!(reader.next_batch(&mut batch, &shutdown).await);
            batch_bytes(batch.iter().map(|d| d.message.payload.len()).sum());
            seqs.extend(batch.iter().map(|d| d.seq));
            // Time for whatever the pull asked for to arrive before the next batch is taken.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the reader stalled after {} of {n} messages",
        seqs.len()
    );
    seqs
}

/// Large messages: a pull of 100 messages would be 20 MB here. With a byte limit, what one
/// batch holds stays within twice the limit (a pull in flight while the last one is being
/// read), and every message still arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_is_bounded_in_bytes_as_well_as_in_messages() {
    const SIZE: usize = 200 * 1024;
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let max_bytes = pull_bytes(1 << 20, client.server_info().max_payload);
    let js = jetstream::new(client);
    let stream = test_stream(&js).await;
    publish_all(&js, &large_messages(100, SIZE), &Shutdown::new(), &|_| {})
        .await
        .unwrap();
    let mut config = source_config();
    (config.batch, config.max_bytes) = (100, max_bytes);
    let mut reader = Source::new(stream, config, 0, Arc::new(|_| {}));
    let mut largest = 0;
    let seqs = read_all(&mut reader, 100, |bytes| largest = largest.max(bytes)).await;
    assert_eq!(seqs, (1..=100).collect::<Vec<u64>>());
    assert!(
        largest <= 2 * max_bytes,
        "a batch held {largest} bytes with a pull limit of {max_bytes}"
    );
}

/// A message larger than the bytes a service asks for is delivered all the same: the limit is
/// raised to hold the largest message the server accepts (the server never splits one, and a
/// pull too small for it would be answered with nothing, again and again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_the_wanted_bytes_is_delivered() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let max_payload = client.server_info().max_payload;
    let js = jetstream::new(client);
    let stream = test_stream(&js).await;
    publish_all(
        &js,
        &large_messages(3, max_payload - 4096),
        &Shutdown::new(),
        &|_| {},
    )
    .await
    .unwrap();
    let mut config = source_config();
    config.max_bytes = pull_bytes(64 * 1024, max_payload);
    let mut reader = Source::new(stream, config, 0, Arc::new(|_| {}));
    let seqs = read_all(&mut reader, 3, |_| {}).await;
    assert_eq!(seqs, vec![1, 2, 3]);
}
