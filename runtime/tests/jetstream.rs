//! Stream provisioning, durable publishing, consumer lag and stream retention against a real
//! nats-server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream::kv;
use async_nats::jetstream::{self, stream};
use citypulse_harness::NatsServer;
use citypulse_runtime::jetstream::{
    ensure_bucket, ensure_stream, provision, provision_stream, publish_durably, watch_consumer_lag,
    watch_retention, ConsumerLag, StreamRetention,
};
use citypulse_runtime::publish::Outgoing;
use citypulse_runtime::shutdown::Shutdown;
use futures::StreamExt;
use prometheus::core::Collector;
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

/// A service starting while nats-server hangs past its request timeout (suspended here, as a busy
/// cluster placing a replicated stream can be) keeps provisioning its stream and bucket,
/// and gets both once the server answers, instead of exiting with "timed out".
#[tokio::test]
async fn provisioning_outlasts_a_server_that_answers_late() {
    let server = NatsServer::start();
    let mut js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    // Requests time out after 500 ms instead of 5 s, so a few time out within the test's freeze.
    js.set_timeout(Duration::from_millis(500));
    let shutdown = Shutdown::new();
    server.freeze();
    let stream = tokio::spawn({
        let (js, shutdown) = (js.clone(), shutdown.clone());
        async move { provision_stream(&js, config(Duration::from_secs(3600)), &shutdown).await }
    });
    let bucket = tokio::spawn({
        let (js, shutdown) = (js.clone(), shutdown.clone());
        async move {
            let config = kv::Config {
                bucket: "late".into(),
                ..Default::default()
            };
            provision("bucket late", &shutdown, || {
                ensure_bucket(&js, config.clone())
            })
            .await
        }
    });
    // Every attempt of ensure_stream and ensure_bucket (three reads, three creates) has timed
    // out by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.thaw();
    let stream = stream
        .await
        .unwrap()
        .expect("provisioned")
        .expect("no shutdown");
    assert_eq!(stream.cached_info().config.name, "TEST");
    let bucket = bucket
        .await
        .unwrap()
        .expect("provisioned")
        .expect("no shutdown");
    bucket.put("k", "v".into()).await.unwrap();
    assert_eq!(
        js.get_stream("TEST")
            .await
            .unwrap()
            .cached_info()
            .state
            .messages,
        0
    );
}

/// Provisioning gives up on shutdown, with `None`, however long the server hangs.
#[tokio::test]
async fn provisioning_stops_on_shutdown() {
    let server = NatsServer::start();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let shutdown = Shutdown::new();
    server.freeze();
    let provisioning = tokio::spawn({
        let shutdown = shutdown.clone();
        async move { provision_stream(&js, config(Duration::from_secs(3600)), &shutdown).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    shutdown.trigger();
    let ended = tokio::time::timeout(Duration::from_secs(2), provisioning).await;
    server.thaw();
    assert!(ended.expect("ended at once").unwrap().unwrap().is_none());
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
                &Outgoing::new("test.x".into(), "x:1".into(), "payload".into()),
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
        &Outgoing::new("test.x".into(), "x:1".into(), "payload".into()),
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
        &Outgoing::new("test.y".into(), "y:1".into(), "p".into()),
        &shutdown,
        |_| {},
    )
    .await;
    assert!(result.is_err());
}

#[tokio::test]
async fn consumer_lag_follows_pending_then_unacked_then_acked_messages() {
    const N: i64 = 25;
    let server = NatsServer::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    let stream = ensure_stream(&js, config(Duration::from_secs(3600)))
        .await
        .unwrap();
    let pending = prometheus::IntGauge::new("pending", "pending").unwrap();
    let ack_pending = prometheus::IntGauge::new("ack_pending", "ack pending").unwrap();
    // Unset gauges must not pass for a measured backlog.
    pending.set(-1);
    ack_pending.set(-1);
    let shutdown = Shutdown::new();

    // Started before the consumer exists: the failed reads do not end the watcher.
    let lag = ConsumerLag {
        stream: "TEST".into(),
        consumer: "worker".into(),
        pending: pending.clone(),
        ack_pending: ack_pending.clone(),
    };
    let watcher = tokio::spawn(watch_consumer_lag(
        js.clone(),
        lag,
        Duration::from_millis(50),
        shutdown.clone(),
    ));
    for i in 0..N {
        js.publish(format!("test.{i}"), "m".into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let consumer = stream
        .create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("worker".into()),
            ack_policy: jetstream::consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let lag = || (pending.get(), ack_pending.get());
    citypulse_harness::wait_for(Duration::from_secs(10), "N pending", || async {
        lag() == (N, 0)
    })
    .await;

    // Delivered but not acknowledged: pending moves to ack pending.
    let mut batch = consumer
        .fetch()
        .max_messages(usize::try_from(N).unwrap())
        .messages()
        .await
        .unwrap();
    let mut delivered = Vec::new();
    while let Some(m) = batch.next().await {
        delivered.push(m.unwrap());
    }
    assert_eq!(delivered.len(), usize::try_from(N).unwrap());
    citypulse_harness::wait_for(Duration::from_secs(10), "N unacked", || async {
        lag() == (0, N)
    })
    .await;

    for m in delivered {
        m.double_ack().await.unwrap();
    }
    citypulse_harness::wait_for(Duration::from_secs(10), "no lag", || async {
        lag() == (0, 0)
    })
    .await;

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("the watcher stops on shutdown")
        .unwrap();
}

/// The retention gauge of a stream at its byte limit. No series before the watcher's second look;
/// with nothing arriving, the age limit; fed until the stream has dropped two thirds of what it
/// stored (1 MiB held), the byte limit over the rate its sequence rose by and its average message
/// (on its message count, which stops at the limit, the figure would be three times as long);
/// and no series once the stream is gone for a few looks.
#[tokio::test]
async fn retention_is_the_age_limit_when_idle_the_byte_limit_over_the_rate_when_fed() {
    const MAX_BYTES: i64 = 1 << 20;
    let server = NatsServer::start();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let stream = ensure_stream(
        &js,
        stream::Config {
            max_bytes: MAX_BYTES,
            ..config(Duration::from_secs(3600))
        },
    )
    .await
    .unwrap();
    let gauges = prometheus::GaugeVec::new(prometheus::Opts::new("r", "r"), &["stream"]).unwrap();
    let series = || gauges.collect()[0].get_metric().len();
    let seconds = || gauges.with_label_values(&["TEST"]).get();
    let shutdown = Shutdown::new();
    let watched = StreamRetention {
        streams: vec!["TEST".into()],
        seconds: gauges.clone(),
    };
    // The watcher's rate runs from its first look, at the empty stream: so does the test's.
    let t0 = std::time::Instant::now();
    let watcher = tokio::spawn(watch_retention(
        js.clone(),
        watched,
        Duration::from_millis(100),
        shutdown.clone(),
    ));
    assert_eq!(series(), 0, "a series before the second look");
    citypulse_harness::wait_for(Duration::from_secs(10), "the age limit", || async {
        series() == 1 && seconds() == 3600.0
    })
    .await;

    let payload = bytes::Bytes::from(vec![b'x'; 1000]);
    let deadline = t0 + Duration::from_secs(60);
    let state = loop {
        for i in 0..20 {
            js.publish(format!("test.{i}"), payload.clone())
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let state = stream.get_info().await.unwrap().state;
        if state.last_sequence >= 3 * state.messages {
            break state;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the stream never dropped: {state:?}"
        );
    };
    let (got, t1) = (seconds(), std::time::Instant::now());
    #[allow(clippy::cast_precision_loss)]
    let (rate, per_message) = (
        state.last_sequence as f64 / (t1 - t0).as_secs_f64(),
        state.bytes as f64 / state.messages as f64,
    );
    #[allow(clippy::cast_precision_loss)]
    let want = MAX_BYTES as f64 / (rate * per_message);
    assert!(
        (0.8..1.25).contains(&(got / want)),
        "retention {got:.2} s, against {want:.2} s for {rate:.0} messages/s of {per_message:.0} bytes"
    );

    js.delete_stream("TEST").await.unwrap();
    citypulse_harness::wait_for(Duration::from_secs(10), "no series", || async {
        series() == 0
    })
    .await;
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("the watcher stops on shutdown")
        .unwrap();
}
