//! Stream provisioning and durable publishing against a real nats-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream::{self, stream};
use citypulse_harness::NatsServer;
use citypulse_runtime::jetstream::{ensure_stream, publish_durably};
use citypulse_runtime::shutdown::Shutdown;
use futures::StreamExt;
use std::time::Duration;

fn config(max_age: Duration) -> stream::Config {
    stream::Config {
        name: "TEST".into(),
        subjects: vec!["test.>".into()],
        storage: stream::StorageType::File,
        max_age,
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    }
}

#[tokio::test]
async fn ensure_stream_creates_once_and_keeps_data_on_different_settings() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);

    ensure_stream(&js, config(Duration::from_secs(3600)))
        .await
        .unwrap();
    js.publish("test.a", "one".into())
        .await
        .unwrap()
        .await
        .unwrap();

    // Same settings again: a no-op. Different settings: kept, data intact.
    ensure_stream(&js, config(Duration::from_secs(3600)))
        .await
        .unwrap();
    let mut s = ensure_stream(&js, config(Duration::from_secs(60)))
        .await
        .unwrap();
    let info = s.info().await.unwrap();
    assert_eq!(info.state.messages, 1);
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
}

#[tokio::test]
async fn concurrent_provisioning_creates_one_stream() {
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let results = futures::future::join_all(
        (0..8).map(|_| ensure_stream(&js, config(Duration::from_secs(3600)))),
    )
    .await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(js.stream_names().count().await, 1);
}

#[tokio::test]
async fn publish_durably_outlasts_a_server_outage_and_dedups_retries() {
    let mut server = NatsServer::start();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(server.url())
        .await
        .unwrap();
    let js = jetstream::new(client);
    ensure_stream(&js, config(Duration::from_secs(3600)))
        .await
        .unwrap();
    let shutdown = Shutdown::new();

    server.stop();
    let retries = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let publishing = {
        let js = js.clone();
        let shutdown = shutdown.clone();
        let retries = retries.clone();
        tokio::spawn(async move {
            publish_durably(
                &js,
                "test.x".into(),
                "x:1",
                Default::default(),
                "payload".into(),
                &shutdown,
                |_| {
                    retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                },
            )
            .await
        })
    };
    citypulse_harness::wait_for(Duration::from_secs(30), "a failed attempt", || async {
        retries.load(std::sync::atomic::Ordering::Relaxed) > 0
    })
    .await;
    server.start_again();
    let ack = publishing.await.unwrap().unwrap();
    assert_eq!(ack.stream, "TEST");

    // The same id again is recognised as a duplicate and stored once.
    let again = publish_durably(
        &js,
        "test.x".into(),
        "x:1",
        Default::default(),
        "payload".into(),
        &shutdown,
        |_| {},
    )
    .await
    .unwrap();
    assert!(again.duplicate);
    let mut s = js.get_stream("TEST").await.unwrap();
    assert_eq!(s.info().await.unwrap().state.messages, 1);
}

#[tokio::test]
async fn publish_durably_stops_on_shutdown() {
    let mut server = NatsServer::start();
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(server.url())
        .await
        .unwrap();
    let js = jetstream::new(client);
    server.stop();
    let shutdown = Shutdown::new();
    shutdown.trigger();
    let result = publish_durably(
        &js,
        "test.y".into(),
        "y:1",
        Default::default(),
        "p".into(),
        &shutdown,
        |_| {},
    )
    .await;
    assert!(result.is_err());
}
