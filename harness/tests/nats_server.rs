//! NatsServer against a real nats-server: JetStream data survives a crash restart, stop and
//! start_again keep the port, failures are loud.

use std::net::TcpStream;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use citypulse_harness::{http_get, wait_for, NatsServer};

fn raw_stream() -> stream::Config {
    stream::Config {
        name: "RAW".to_owned(),
        subjects: vec!["sensors.>".to_owned()],
        storage: stream::StorageType::File,
        ..Default::default()
    }
}

#[tokio::test]
async fn acked_message_survives_a_crash_restart() {
    let mut server = NatsServer::start();
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client.clone());
    js.create_stream(raw_stream()).await.unwrap();
    js.publish("sensors.d01.air.aq-1", "reading".into())
        .await
        .unwrap()
        .await
        .unwrap();

    drop(js);
    drop(client);

    server.restart();

    // A fresh client: the old one may not have noticed the crash yet, so its state says nothing.
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let stream = js.get_stream("RAW").await.unwrap();
    let message = stream.get_raw_message(1).await.unwrap();
    assert_eq!(message.subject.as_str(), "sensors.d01.air.aq-1");
    assert_eq!(message.payload, "reading");
    assert!(server.store_dir().join("jetstream").is_dir());
}

#[tokio::test]
async fn stop_closes_the_port_and_start_again_reopens_it() {
    let mut server = NatsServer::start();
    let port = server.port();
    server.stop();
    assert!(!server.is_running());
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} open after stop"
    );

    server.start_again();
    assert_eq!(server.port(), port);
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(raw_stream()).await.unwrap();
    js.publish("sensors.d02.traffic.tl-1", "x".into())
        .await
        .unwrap()
        .await
        .unwrap();
}

#[tokio::test]
async fn extra_config_is_applied() {
    let server = NatsServer::start_with_config("max_payload: 4096\n");
    let client = async_nats::connect(server.url()).await.unwrap();
    assert_eq!(client.server_info().max_payload, 4096);
}

#[test]
fn monitoring_endpoint_answers() {
    let server = NatsServer::start();
    let addr = server.monitor_addr();
    assert_eq!(server.monitor_url(), format!("http://{addr}"));
    let (status, body) = http_get(addr, "/healthz").expect("monitoring port answers");
    assert_eq!(status, 200, "{body}");
}

#[test]
#[should_panic(expected = "exited early")]
fn a_bad_config_fails_loudly_with_the_log() {
    let _server = NatsServer::start_with_config("this is { not valid\n");
}

#[tokio::test]
#[should_panic(expected = "timed out after")]
async fn wait_for_panics_with_what_it_waited_for() {
    wait_for(Duration::from_millis(60), "never", || async { false }).await;
}
