//! The web view against a real nats-server: a fresh page starts from the last message of every
//! subject, a METRICS message reaches an open page within a second, and a browser that stops
//! reading is dropped and counted without slowing anyone else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use citypulse_harness::{http_get, NatsServer};
use citypulse_runtime::admin::Health;
use citypulse_runtime::shutdown::Shutdown;
use citypulse_runtime::stream_config::{self, Limits};
use citypulse_schema::{AirMetrics, AqiCategory, WindowMetrics, WindowResult};
use citypulse_web::config::Config;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const T0: u64 = 1_767_225_600_000;

fn air(district: &str, end: u64, aqi: u16) -> WindowResult {
    WindowResult {
        window_start: end - 60_000,
        window_end: end,
        district: district.into(),
        sensor: None,
        readings: 2,
        sensors: 1,
        metrics: WindowMetrics::Air(Box::new(AirMetrics {
            aqi: Some(aqi),
            category: Some(AqiCategory::of(aqi)),
            ..AirMetrics::default()
        })),
    }
}

/// `air(…)` with an extra unknown field of `pad` bytes (readers tolerate unknown keys), so a
/// few thousand updates fill any socket buffer.
fn padded(w: &WindowResult, pad: usize) -> Vec<u8> {
    let mut v: ciborium::Value = ciborium::from_reader(&w.encode()[..]).unwrap();
    if let ciborium::Value::Map(m) = &mut v {
        m.push(("padding".into(), "x".repeat(pad).into()));
    }
    let mut out = Vec::new();
    ciborium::into_writer(&v, &mut out).unwrap();
    out
}

struct Web {
    web: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    shutdown: Shutdown,
}

async fn start(nats: &NatsServer, buffer: u32) -> (Web, async_nats::jetstream::Context) {
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    js.create_stream(stream_config::metrics(Limits::METRICS))
        .await
        .unwrap();
    js.create_stream(stream_config::alerts(Limits::ALERTS))
        .await
        .unwrap();
    // Before the web view starts: the snapshot must carry it (last message per subject).
    js.publish("metrics.air.d01", air("d01", T0, 40).encode().into())
        .await
        .unwrap()
        .await
        .unwrap();
    js.publish(
        "metrics.air.d01",
        air("d01", T0 + 60_000, 61).encode().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let mut cfg = Config::for_url(&nats.url());
    cfg.client_buffer = buffer;
    let shutdown = Shutdown::new();
    let health = Health::new();
    let running = citypulse_web::start(
        &cfg,
        client,
        prometheus::Registry::new(),
        health.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    citypulse_harness::wait_for(Duration::from_secs(10), "consumers ready", || {
        let h = health.clone();
        async move { h.is_healthy() }
    })
    .await;
    // Healthy means the consumers exist, not that they have read: wait for the latest result
    // of metrics.air.d01 (the one message that consumer delivers) before any snapshot.
    let admin = running.admin;
    citypulse_harness::wait_for(Duration::from_secs(10), "the latest result read", || async move {
        metric(admin, "citypulse_web_messages_total{consumer=\"latest\"} ") >= 1.0
    })
    .await;
    let web = Web {
        web: running.web,
        admin: running.admin,
        shutdown,
    };
    (web, js)
}

/// An SSE connection: sends the request, returns a line reader.
async fn open_events(addr: std::net::SocketAddr) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET /api/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    BufReader::new(s)
}

/// The data of the next event named `name`.
async fn next_event(r: &mut BufReader<TcpStream>, name: &str) -> String {
    let mut line = String::new();
    let mut current = String::new();
    loop {
        line.clear();
        assert!(r.read_line(&mut line).await.unwrap() > 0, "stream ended");
        let l = line.trim_end();
        if let Some(e) = l.strip_prefix("event: ") {
            current = e.to_owned();
        } else if let Some(d) = l.strip_prefix("data: ") {
            if current == name {
                return d.to_owned();
            }
        }
    }
}

fn metric(admin: std::net::SocketAddr, line_prefix: &str) -> f64 {
    let (_, body) = http_get(admin, "/metrics").unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(line_prefix))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_starts_full_and_sees_new_results_within_a_second() {
    let nats = NatsServer::start();
    let (web, js) = start(&nats, 64).await;
    let mut events = open_events(web.web).await;
    let snapshot: serde_json::Value =
        serde_json::from_str(&next_event(&mut events, "snapshot").await).unwrap();
    // The last message of the subject, not the first.
    assert_eq!(snapshot["air"]["d01"]["aqi"], 61);
    assert_eq!(snapshot["air"]["d01"]["category"], "moderate");

    let sent = Instant::now();
    js.publish("metrics.air.d02", air("d02", T0, 163).encode().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let update: serde_json::Value =
        serde_json::from_str(&next_event(&mut events, "district").await).unwrap();
    let took = sent.elapsed();
    assert_eq!(update["district"], "d02");
    assert_eq!(update["result"]["aqi"], 163);
    assert_eq!(update["result"]["category"], "unhealthy");
    assert!(took < Duration::from_secs(1), "{took:?}");

    let (status, state) = http_get(web.web, "/api/state").unwrap();
    assert_eq!(status, 200);
    assert!(state.contains(r#""aqi":163"#), "{state}");
    let (_, d) = http_get(web.web, "/api/district/d01").unwrap();
    let d: serde_json::Value = serde_json::from_str(&d).unwrap();
    // Both results are two hours old at most relative to each other: both in the history.
    assert_eq!(d["air_history"].as_array().unwrap().len(), 2, "{d}");
    assert_eq!(metric(web.admin, "citypulse_web_clients "), 1.0);
    web.shutdown.trigger();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_stops_reading_is_dropped_and_counted() {
    let nats = NatsServer::start();
    let (web, js) = start(&nats, 16).await;
    // Connects, reads nothing more after the request: its socket buffers fill, then the
    // server's per-client buffer.
    let stalled = {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut s = socket.connect(web.web).await.unwrap();
        s.write_all(format!("GET /api/events HTTP/1.1\r\nHost: {}\r\n\r\n", web.web).as_bytes())
            .await
            .unwrap();
        s
    };
    citypulse_harness::wait_for(
        Duration::from_secs(5),
        "the stalled browser connected",
        || async { metric(web.admin, "citypulse_web_clients ") == 1.0 },
    )
    .await;
    // 3,000 updates of about 3 KB: far more than socket buffers and 16 updates hold.
    let mut acks = Vec::new();
    for i in 0..3_000u64 {
        let bytes = padded(&air("d03", T0 + i * 60_000, (i % 300) as u16), 3_000);
        acks.push(js.publish("metrics.air.d03", bytes.into()).await.unwrap());
    }
    for a in acks {
        a.await.unwrap();
    }
    citypulse_harness::wait_for(
        Duration::from_secs(20),
        "the stalled browser dropped",
        || async {
            metric(
                web.admin,
                "citypulse_web_clients_dropped_total{reason=\"slow\"} ",
            ) >= 1.0
        },
    )
    .await;
    assert_eq!(metric(web.admin, "citypulse_web_clients "), 0.0);
    // The server is not held up: it reads everything, and a new page starts from the newest.
    let last = (T0 + 2_999 * 60_000).to_string();
    citypulse_harness::wait_for(
        Duration::from_secs(20),
        "the newest result read",
        || async { http_get(web.web, "/api/state").is_ok_and(|(_, s)| s.contains(&last)) },
    )
    .await;
    let mut fresh = open_events(web.web).await;
    let snapshot: serde_json::Value =
        serde_json::from_str(&next_event(&mut fresh, "snapshot").await).unwrap();
    assert_eq!(snapshot["air"]["d03"]["window_end"], T0 + 2_999 * 60_000);
    drop(stalled);
    web.shutdown.trigger();
}
