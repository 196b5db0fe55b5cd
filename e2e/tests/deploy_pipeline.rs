//! The deployed NATS security model with the real services: every service binary runs with its
//! own credential from `deploy/nats/passwords.conf` against a nats-server that loads the deploy
//! accounts and permissions (`deploy/nats/accounts.conf`, copied byte for byte, plus a sensor
//! issued by `deploy/nats/citypulse-nats-auth`) and requires TLS from clients and MQTT devices,
//! as `deploy/nats/server.conf` does. A device publishes CBOR readings with a real MQTT client
//! (mosquitto_pub, QoS 1) and they come out of the processors as window results.
//!
//! Needs what `tests/deploy_nats.rs` needs (nats-server, openssl, mosquitto_pub, bcrypt in
//! .tools/python-deploy) and the service binaries (`cargo build --workspace --bins`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use async_nats::ConnectOptions;
use citypulse_e2e::deploy::{dev_certs, dev_password, issue_sensor, mqtt_publish, DeployCopy};
use citypulse_e2e::pipeline::{Pipeline, PipelineOptions, Service, SimulatorOptions};
use citypulse_harness::{free_port, http_get, wait_for};
use citypulse_schema::{streams, Measurement, Reading, Traffic, WindowResult};
use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(30);
const DISTRICT: &str = "d05";
/// Not a sensor of the simulator's city, so its readings never share this subject.
const SENSOR: &str = "mqtt-tl-1";
const WINDOW_MS: u64 = 60_000;

#[tokio::test]
async fn services_with_their_own_credentials_turn_mqtt_readings_into_window_results() {
    let deploy = DeployCopy::new();
    let certs = dev_certs(deploy.work.path());
    let sensor = issue_sensor(&deploy.conf_dir, DISTRICT, "traffic", SENSOR);
    let mqtt_port = free_port();
    // The client and MQTT TLS of deploy/nats/server.conf (CLIENT_TLS), with the dev certificates.
    let tls = format!(
        "{{\n  cert_file: {:?}\n  key_file: {:?}\n  ca_file: {:?}\n  timeout: 2\n}}",
        certs.join("server.pem"),
        certs.join("server-key.pem"),
        certs.join("ca.pem"),
    );
    let nats_config = deploy.config(&format!(
        "tls: {tls}\nmqtt {{\n  listen: 127.0.0.1:{mqtt_port}\n  tls: {tls}\n}}\n"
    ));

    let mut env = BTreeMap::new();
    for (service, password) in [
        (Service::Simulator, "SIMULATOR_PASSWORD"),
        (Service::Ingest, "INGEST_PASSWORD"),
        (Service::Processors, "PROCESSORS_PASSWORD"),
        (Service::Alerts, "ALERTS_PASSWORD"),
    ] {
        env.insert(
            service,
            vec![
                ("NATS_USER".to_owned(), service.name().to_owned()),
                ("NATS_PASSWORD".to_owned(), dev_password(password)),
                // async-nats trusts the platform roots (rustls-native-certs), which honour this.
                ("SSL_CERT_FILE".to_owned(), path_str(&certs.join("ca.pem"))),
            ],
        );
    }
    let mut p = Pipeline::launch(PipelineOptions {
        // Started last, once the device's windows are checked: its readings (in the recent past)
        // would otherwise move the watermark of a partition past the device's.
        simulator: Some(SimulatorOptions {
            start_ago: Duration::from_secs(120),
            sensors: 12,
            ..SimulatorOptions::default()
        }),
        start_simulator: false,
        // Checkpoints, and so acks, within a second (alerts' default).
        processors_args: vec!["--checkpoint-interval".to_owned(), "1s".to_owned()],
        nats_config: Some(nats_config),
        env,
        ..PipelineOptions::default()
    });

    // Every service is connected as its own user, over TLS, in the CITYPULSE account.
    let monitor = p.nats().monitor_addr();
    for s in [Service::Ingest, Service::Processors, Service::Alerts] {
        assert_connected_over_tls(monitor, s.name()).await;
    }

    // Eight traffic readings, one every 30 s, starting on a window boundary six minutes ago:
    // windows [t0, t0+1m), [t0+1m, t0+2m), [t0+2m, t0+3m) get two each and close once the newest
    // (t0+3.5m) moves the watermark (newest - 30 s allowed lateness) to t0+3m.
    let now_ms = u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    let t0 = (now_ms - 6 * WINDOW_MS) / WINDOW_MS * WINDOW_MS;
    let topic = format!("sensors/{DISTRICT}/traffic/{SENSOR}");
    let port = mqtt_port.to_string();
    for seq in 1..=8u64 {
        let reading = traffic_reading(t0 + (seq - 1) * 30_000, seq);
        mqtt_publish(
            &port,
            &certs,
            &sensor.user,
            &sensor.password,
            &topic,
            &reading,
        )
        .unwrap_or_else(|e| panic!("MQTT publish of reading {seq}: {e}"));
    }

    // The window results on metrics.traffic.<district>.<sensor>, read with the admin user.
    let admin =
        ConnectOptions::with_user_and_password("admin".into(), dev_password("ADMIN_PASSWORD"))
            .add_root_certificates(certs.join("ca.pem"))
            .require_tls(true)
            .connect(p.url())
            .await
            .expect("TLS connect as admin");
    let js = jetstream::new(admin);
    let subject = format!("metrics.traffic.{DISTRICT}.{SENSOR}");
    let expected: Vec<(u64, u64)> = (0..3).map(|w| (t0 + w * WINDOW_MS, 2)).collect();
    wait_for(
        DEADLINE,
        "three closed windows of the MQTT sensor in METRICS",
        || {
            let (js, subject, expected) = (js.clone(), subject.clone(), expected.clone());
            async move {
                let got = sensor_windows(&js, &subject).await;
                expected.iter().all(|(start, _)| got.contains_key(start))
            }
        },
    )
    .await;
    let got = sensor_windows(&js, &subject).await;
    for (start, readings) in &expected {
        assert_eq!(
            got.get(start),
            Some(readings),
            "readings of window {start} (t0 {t0}); all: {got:?}"
        );
    }
    // Nothing else closed before t0, and nothing counted twice.
    assert!(
        got.keys().all(|s| *s >= t0 && (s - t0) % WINDOW_MS == 0),
        "{got:?}"
    );
    assert!(got.values().sum::<u64>() <= 8, "{got:?}");

    // ingest archived all eight; alerts consumed every window result in METRICS so far.
    wait_for(DEADLINE, "ingest archiving the eight readings", || {
        let n = p.metric_sum(Service::Ingest, "citypulse_ingest_archived_rows_total");
        async move { n == 8.0 }
    })
    .await;
    let metrics_count = js
        .get_stream(streams::METRICS)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages;
    assert!(metrics_count >= 3, "METRICS holds {metrics_count} messages");
    wait_for(DEADLINE, "alerts consuming the window results", || {
        let n = p.metric_sum(Service::Alerts, "citypulse_alerts_window_results_total");
        #[allow(clippy::cast_precision_loss)]
        let done = n >= metrics_count as f64;
        async move { done }
    })
    .await;

    // Every consumer acked everything it was given: ingest's on RAW and READINGS, the
    // processors' on READINGS, alerts' on METRICS (an ack is a publish the permissions allow).
    wait_for(
        DEADLINE,
        "every consumer acking all it was delivered",
        || {
            let done = all_acked(monitor);
            async move { done }
        },
    )
    .await;

    // The simulator feeds RAW with its credential: ingest accepts more than the device's eight.
    p.start(Service::Simulator);
    assert_connected_over_tls(monitor, Service::Simulator.name()).await;
    wait_for(DEADLINE, "ingest accepting simulated readings", || {
        let n = p.metric_sum(Service::Ingest, "citypulse_ingest_accepted_total");
        async move { n > 8.0 }
    })
    .await;

    // With PostgreSQL down the archive falls behind, and ingest measures how far: the age of the
    // oldest unarchived reading, read from READINGS (a STREAM.MSG.GET the permissions must allow;
    // the gauge stays 0 when that read is refused). Back up, the archive catches up.
    p.postgres().stop();
    wait_for(
        DEADLINE,
        "ingest reporting the archive lag in seconds",
        || {
            let s = p.metric_sum(Service::Ingest, "citypulse_ingest_archive_lag_seconds");
            async move { s > 0.0 }
        },
    )
    .await;
    p.postgres().start_again();
    wait_for(DEADLINE, "the archive catching up", || {
        let n = p.metric_sum(Service::Ingest, "citypulse_ingest_archive_lag_messages");
        async move { n == 0.0 }
    })
    .await;
    p.wait_healthy();

    // Nobody was refused anything: not in a service's log, not in the server's.
    for s in p.services() {
        let log = p.log(s);
        assert!(!log.is_empty(), "{} wrote no log", s.name());
        assert!(
            !log.contains("Permissions Violation") && !log.contains("Authorization Violation"),
            "{} was refused by the deploy permissions:\n{log}",
            s.name()
        );
    }
    let server_log = std::fs::read_to_string(
        p.nats()
            .store_dir()
            .parent()
            .expect("the harness keeps the store in its temp dir")
            .join("nats.log"),
    )
    .expect("the harness's nats.log");
    assert!(server_log.contains("Server is ready"), "{server_log}");
    assert!(!server_log.contains("Violation"), "{server_log}");
}

/// A connection authenticated as `user` appears (a service may report healthy before its NATS
/// connection is up) and is over TLS, in the CITYPULSE account.
async fn assert_connected_over_tls(monitor: SocketAddr, user: &str) {
    let connection = || {
        let (status, body) = http_get(monitor, "/connz?auth=true&limit=1000").unwrap();
        assert_eq!(status, 200, "{body}");
        let connz: Value = serde_json::from_str(&body).unwrap();
        let conns = connz["connections"].as_array().cloned().unwrap_or_default();
        conns.into_iter().find(|c| c["authorized_user"] == user)
    };
    wait_for(DEADLINE, &format!("a connection as {user}"), || {
        let found = connection().is_some();
        async move { found }
    })
    .await;
    let c = connection().expect("the connection found above");
    assert_eq!(c["account"], "CITYPULSE", "{c}");
    assert!(
        c["tls_version"].as_str().is_some_and(|v| !v.is_empty()),
        "{user} not over TLS: {c}"
    );
}

/// Whether RAW, READINGS and METRICS each have a consumer (READINGS two: ingest's archive and a
/// processors partition) and every consumer on them has acked everything in its stream.
fn all_acked(monitor: SocketAddr) -> bool {
    let Ok((200, body)) = http_get(monitor, "/jsz?accounts=true&streams=true&consumers=true")
    else {
        return false;
    };
    let jsz: Value = serde_json::from_str(&body).unwrap();
    let mut consumers: BTreeMap<String, usize> = BTreeMap::new();
    for account in jsz["account_details"].as_array().into_iter().flatten() {
        for stream in account["stream_detail"].as_array().into_iter().flatten() {
            let name = stream["name"].as_str().unwrap_or_default().to_owned();
            if ![streams::RAW, streams::READINGS, streams::METRICS].contains(&name.as_str()) {
                continue;
            }
            for c in stream["consumer_detail"].as_array().into_iter().flatten() {
                let acked = c["num_ack_pending"] == 0
                    && c["num_pending"] == 0
                    && c["ack_floor"]["stream_seq"] == c["delivered"]["stream_seq"];
                if !acked {
                    return false;
                }
                *consumers.entry(name.clone()).or_default() += 1;
            }
        }
    }
    consumers.get(streams::RAW).is_some_and(|n| *n >= 1)
        && consumers.get(streams::READINGS).is_some_and(|n| *n >= 2)
        && consumers.get(streams::METRICS).is_some_and(|n| *n >= 1)
}

/// window_start → readings of every window result stored on `subject`.
async fn sensor_windows(js: &jetstream::Context, subject: &str) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    let Ok(mut stream) = js.get_stream(streams::METRICS).await else {
        return out;
    };
    let Ok(info) = stream.info().await else {
        return out;
    };
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    if info.state.messages == 0 {
        return out;
    }
    for seq in first..=last {
        let Ok(msg) = stream.get_raw_message(seq).await else {
            continue;
        };
        if msg.subject.as_str() != subject {
            continue;
        }
        let w = WindowResult::decode(&msg.payload)
            .unwrap_or_else(|e| panic!("METRICS seq {seq} is not a window result: {e}"));
        assert_eq!(w.sensor.as_deref(), Some(SENSOR));
        assert_eq!(w.window_end - w.window_start, WINDOW_MS, "{w:?}");
        let previous = out.insert(w.window_start, w.readings);
        assert!(
            previous.is_none(),
            "window {} published twice",
            w.window_start
        );
    }
    out
}

fn traffic_reading(ts: u64, seq: u64) -> Vec<u8> {
    Reading {
        sensor: SENSOR.into(),
        district: DISTRICT.into(),
        ts,
        seq,
        data: Measurement::Traffic(Traffic {
            count: 12,
            interval_s: 30,
            occupancy: 0.12,
            speed_kmh: Some(48.0),
            lanes: 2,
        }),
    }
    .encode()
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("a UTF-8 temp path").to_owned()
}
