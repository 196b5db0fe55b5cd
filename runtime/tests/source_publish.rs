//! The ordered source and the group publisher against a real nats-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream::{self, context::ContextBuilder, stream};
use citypulse_harness::NatsServer;
use citypulse_runtime::publish::{publish_all, Outgoing};
use citypulse_runtime::shutdown::Shutdown;
use citypulse_runtime::source::{ack_floor, Source, SourceConfig, SourceEvent};
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

fn source_config() -> SourceConfig {
    SourceConfig {
        durable: "reader".into(),
        description: "test".into(),
        filter_subject: String::new(),
        ack_wait: Duration::from_secs(30),
        max_ack_pending: 1000,
        batch: 10,
        heartbeat: Duration::from_secs(5),
    }
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
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&events);
    let observer = Arc::new(move |e: SourceEvent| seen.lock().unwrap().push(e));
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
