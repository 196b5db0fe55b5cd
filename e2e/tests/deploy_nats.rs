//! deploy/nats: every config loads in the pinned nats-server, and the permissions of
//! `accounts.conf` hold under a real server.
//!
//! The permission tests copy `deploy/nats/` into a temp dir (byte for byte, plus a sensor issued
//! by `deploy/nats/citypulse-nats-auth`; helpers in `citypulse_e2e::deploy`) and start the harness's server with an `include` of the
//! copy's `accounts.conf`: what is tested is what is deployed. A refusal is checked twice: the
//! client is told "Permissions Violation" (async-nats reports it as a server error event), and
//! the forbidden message never reaches an admin subscriber (it would have arrived between two
//! allowed messages of the same connection, since a connection's messages keep their order).
//!
//! Needs: nats-server (scripts/install-deps), openssl, mosquitto_pub (Debian package
//! `mosquitto-clients`) and the Python package bcrypt in .tools/python-deploy
//! (`scripts/validate-deploy --install-only`). A missing one fails the test with the fix.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, kv, stream};
use async_nats::{Client, ConnectOptions, Event};
use citypulse_e2e::deploy::{
    auth_tool, copy_nats_dir, dev_certs, dev_password, issue_sensor, mqtt_publish, repo, DeployCopy,
};
use citypulse_harness::{free_port, nats_server_bin, wait_for, NatsServer};
use citypulse_runtime::stream_config::{self, Limits};
use citypulse_schema::{partition_of, streams, Air, Measurement, Reading};
use futures::StreamExt;

const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Configs load
// ---------------------------------------------------------------------------------------------

#[test]
fn every_nats_config_loads_in_the_pinned_server() {
    let work = tempfile::tempdir().unwrap();
    let certs = dev_certs(work.path());
    let conf_dir = copy_nats_dir(work.path());
    point_tls_at(&conf_dir, &certs);

    let (top_level, included) = include_graph(&conf_dir);
    let all = conf_files(&conf_dir);
    for file in &all {
        assert!(
            top_level.contains(file) || included.contains(file),
            "{file} is neither a server config nor included by one"
        );
    }
    // The cluster nodes and the Kubernetes node are the configs a server is started with.
    for expected in ["nats-1.conf", "nats-2.conf", "nats-3.conf", "nats-k8s.conf"] {
        assert!(
            top_level.contains(expected),
            "{expected} missing: {top_level:?}"
        );
    }
    for expected in [
        "server.conf",
        "accounts.conf",
        "passwords.conf",
        "sensors.conf",
    ] {
        assert!(
            included.contains(expected),
            "{expected} is not included by any config"
        );
    }
    for file in &top_level {
        let out = nats_test_config(&conf_dir.join(file));
        assert!(
            out.status.success() && out.text.contains("is valid"),
            "nats-server -t -c {file} failed:\n{}",
            out.text
        );
    }
}

#[test]
fn node_configs_do_not_load_without_their_tls_certificates() {
    // The same check without certificates must fail, and name the certificate: -t really loads
    // the TLS blocks, so the passing test above proves the certificates fit the configs.
    let work = tempfile::tempdir().unwrap();
    let conf_dir = copy_nats_dir(work.path());
    let out = nats_test_config(&conf_dir.join("nats-1.conf"));
    assert!(
        !out.status.success(),
        "loaded without certificates:\n{}",
        out.text
    );
    assert!(
        out.text.contains("/etc/nats/tls/server.pem"),
        "{}",
        out.text
    );
}

#[tokio::test]
async fn node_configs_form_a_tls_cluster_with_replicated_jetstream() {
    let work = tempfile::tempdir().unwrap();
    let certs = dev_certs(work.path());
    let cluster = LocalCluster::start(work.path(), &certs);

    // Clients must speak TLS and trust the dev CA; the node certificate names 127.0.0.1.
    let admin =
        ConnectOptions::with_user_and_password("admin".into(), dev_password("ADMIN_PASSWORD"))
            .add_root_certificates(certs.join("ca.pem"))
            .require_tls(true)
            .connect(cluster.client_urls())
            .await
            .expect("TLS connect as admin");
    let js = jetstream::new(admin.clone());
    let config = stream::Config {
        name: streams::RAW.into(),
        subjects: vec![streams::RAW_SUBJECTS.into()],
        num_replicas: 3,
        ..Default::default()
    };
    let mut raw = citypulse_harness::create_stream_patiently(&js, config).await;
    let info = raw.info().await.unwrap();
    let cluster_info = info.cluster.clone().expect("cluster info of an R3 stream");
    assert_eq!(cluster_info.replicas.len(), 2, "{cluster_info:?}");

    // A device on another node, over MQTT with TLS, lands in the replicated RAW stream.
    let sensor = issue_sensor(&cluster.conf_dir(1), "d01", "air", "aq-1");
    cluster.reload_all();
    let reading = air_reading("d01", "aq-1", 1);
    mqtt_publish(
        &cluster.mqtt_port(2),
        &certs,
        &sensor.user,
        &sensor.password,
        "sensors/d01/air/aq-1",
        &reading,
    )
    .expect("MQTT publish of an allowed topic");
    wait_for(DEADLINE, "the MQTT reading in RAW", || {
        let js = js.clone();
        async move {
            let mut s = js.get_stream(streams::RAW).await.unwrap();
            s.info().await.unwrap().state.messages == 1
        }
    })
    .await;
    let stored = raw
        .get_last_raw_message_by_subject("sensors.d01.air.aq-1")
        .await
        .unwrap();
    assert_eq!(stored.payload.as_ref(), reading.as_slice());
}

// ---------------------------------------------------------------------------------------------
// Sensor credentials
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn sensor_credential_publishes_to_its_own_subject_only() {
    let deploy = DeployCopy::new();
    let sensor = issue_sensor(&deploy.conf_dir, "d01", "air", "aq-1");
    let server = deploy.start("");
    let admin = connect_admin(&server).await;
    let mut seen = admin.subscribe(">").await.unwrap();
    wait_subscribed(&server, ">").await;

    let (device, errors) = connect_as(&server, &sensor.user, &sensor.password).await;
    device
        .publish("sensors.d01.air.aq-1", "allowed-1".into())
        .await
        .unwrap();
    device
        .publish("sensors.d01.air.aq-2", "another sensor".into())
        .await
        .unwrap();
    device
        .publish("sensors.d01.traffic.aq-1", "another kind".into())
        .await
        .unwrap();
    device
        .publish("sensors.d01.air.aq-1.x", "a longer subject".into())
        .await
        .unwrap();
    device
        .publish("readings.d01.air.aq-1", "the pipeline".into())
        .await
        .unwrap();
    device
        .publish("sensors.d01.air.aq-1", "allowed-2".into())
        .await
        .unwrap();
    device.flush().await.unwrap();

    let got = collect_until(&mut seen, "allowed-2").await;
    assert_eq!(
        got,
        vec![
            ("sensors.d01.air.aq-1".to_owned(), "allowed-1".to_owned()),
            ("sensors.d01.air.aq-1".to_owned(), "allowed-2".to_owned()),
        ]
    );
    for subject in [
        "sensors.d01.air.aq-2",
        "sensors.d01.traffic.aq-1",
        "sensors.d01.air.aq-1.x",
        "readings.d01.air.aq-1",
    ] {
        errors.expect_violation("Publish", subject).await;
    }

    // A device subscribes to nothing.
    let _sub = device.subscribe("sensors.>").await.unwrap();
    device.flush().await.unwrap();
    errors.expect_violation("Subscription", "sensors.>").await;
}

#[tokio::test]
async fn sensor_credential_is_refused_with_a_wrong_password_and_by_other_accounts() {
    let deploy = DeployCopy::new();
    let sensor = issue_sensor(&deploy.conf_dir, "d01", "air", "aq-1");
    let server = deploy.start("");
    let wrong =
        ConnectOptions::with_user_and_password(sensor.user.clone(), "not-the-password".into())
            .connect(server.url())
            .await;
    assert!(wrong.is_err(), "connected with a wrong password");
    // The device is in the SENSORS account: a CITYPULSE subscriber of its subject sees it only
    // through the export, and the device itself cannot reach CITYPULSE's JetStream API.
    let (device, errors) = connect_as(&server, &sensor.user, &sensor.password).await;
    device
        .publish("$JS.API.STREAM.CREATE.RAW", "{}".into())
        .await
        .unwrap();
    device.flush().await.unwrap();
    errors
        .expect_violation("Publish", "$JS.API.STREAM.CREATE.RAW")
        .await;
}

#[test]
fn sensor_tool_refuses_tokens_that_would_widen_a_permission() {
    let deploy = DeployCopy::new();
    for (district, kind, id) in [
        ("d01", "air", "*"),
        ("d01", "air", ">"),
        ("d01", "air", "aq.1"),
        ("*", "air", "aq-1"),
        ("d01", "water", "aq-1"),
        ("D01", "air", "aq-1"),
    ] {
        let out = auth_tool(&deploy.conf_dir)
            .args([
                "sensor",
                "add",
                "--district",
                district,
                "--kind",
                kind,
                "--id",
                id,
            ])
            .output()
            .unwrap();
        assert!(!out.status.success(), "accepted {district}/{kind}/{id}");
    }
    let before = std::fs::read_to_string(deploy.conf_dir.join("sensors.conf")).unwrap();
    let original = std::fs::read_to_string(repo().join("deploy/nats/sensors.conf")).unwrap();
    assert_eq!(before, original, "a refused add changed sensors.conf");
}

#[tokio::test]
async fn generated_service_passwords_replace_the_dev_ones() {
    // The production path: citypulse-nats-auth passwords writes bcrypt hashes for the servers
    // and the plain values for the services; the dev passwords stop working.
    let deploy = DeployCopy::new();
    let out = auth_tool(&deploy.conf_dir)
        .args(["passwords", "--cost", "4"])
        .arg(&deploy.conf_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hashed = std::fs::read_to_string(deploy.conf_dir.join("passwords.conf")).unwrap();
    assert_eq!(hashed.matches("\"$2b$04$").count(), 8, "{hashed}");
    let env = std::fs::read_to_string(deploy.conf_dir.join("credentials.env")).unwrap();
    let plain: HashMap<&str, &str> = env.lines().filter_map(|l| l.split_once('=')).collect();
    let server = deploy.start("");

    let (ingest, _) = connect_with_inbox(
        &server,
        "ingest",
        plain["INGEST_PASSWORD"],
        "_INBOX.citypulse-ingest",
    )
    .await;
    jetstream::new(ingest)
        .create_stream(raw_config())
        .await
        .expect("ingest with its new password");
    let old =
        ConnectOptions::with_user_and_password("ingest".into(), dev_password("INGEST_PASSWORD"))
            .connect(server.url())
            .await;
    assert!(old.is_err(), "the dev password still works");
}

#[tokio::test]
async fn mqtt_reading_from_a_sensor_credential_reaches_nats_byte_identical() {
    let deploy = DeployCopy::new();
    let sensor = issue_sensor(&deploy.conf_dir, "d01", "air", "aq-1");
    let certs = dev_certs(deploy.work.path());
    let mqtt_port = free_port();
    let server = deploy.start(&format!(
        "mqtt {{\n  listen: 127.0.0.1:{mqtt_port}\n  tls {{\n    cert_file: {:?}\n    key_file: {:?}\n  }}\n}}\n",
        certs.join("server.pem"),
        certs.join("server-key.pem"),
    ));
    let admin = connect_admin(&server).await;
    let js = jetstream::new(admin.clone());
    js.create_stream(raw_config()).await.unwrap();
    let mut seen = admin.subscribe("sensors.>").await.unwrap();
    wait_subscribed(&server, "sensors.>").await;

    let reading = air_reading("d01", "aq-1", 7);
    let port = mqtt_port.to_string();
    mqtt_publish(
        &port,
        &certs,
        &sensor.user,
        &sensor.password,
        "sensors/d01/air/aq-1",
        &reading,
    )
    .expect("MQTT QoS 1 publish to the sensor's own topic");
    let msg = tokio::time::timeout(DEADLINE, seen.next())
        .await
        .expect("no message")
        .unwrap();
    assert_eq!(msg.subject.as_str(), "sensors.d01.air.aq-1");
    assert_eq!(
        msg.payload.as_ref(),
        reading.as_slice(),
        "payload changed on the way"
    );
    // Through the export into CITYPULSE, where RAW stores it as is.
    let mut raw = js.get_stream(streams::RAW).await.unwrap();
    let stored = raw
        .get_last_raw_message_by_subject("sensors.d01.air.aq-1")
        .await
        .unwrap();
    assert_eq!(stored.payload.as_ref(), reading.as_slice());

    // Another sensor's topic is refused, and a service user may not connect over MQTT at all.
    let other = air_reading("d01", "aq-2", 1);
    let forbidden = mqtt_publish(
        &port,
        &certs,
        &sensor.user,
        &sensor.password,
        "sensors/d01/air/aq-2",
        &other,
    );
    let service = mqtt_publish(
        &port,
        &certs,
        "simulator",
        &dev_password("SIMULATOR_PASSWORD"),
        "sensors/d01/air/aq-2",
        &other,
    );
    assert!(service.is_err(), "a service user connected over MQTT");
    let again = air_reading("d01", "aq-1", 8);
    mqtt_publish(
        &port,
        &certs,
        &sensor.user,
        &sensor.password,
        "sensors/d01/air/aq-1",
        &again,
    )
    .expect("MQTT publish after a refusal");
    let msg = tokio::time::timeout(DEADLINE, seen.next())
        .await
        .expect("no message")
        .unwrap();
    assert_eq!(
        (msg.subject.as_str(), msg.payload.as_ref()),
        ("sensors.d01.air.aq-1", again.as_slice()),
        "something arrived between the two allowed readings (forbidden publish: {forbidden:?})"
    );
    assert_eq!(raw.info().await.unwrap().state.messages, 2);
}

// ---------------------------------------------------------------------------------------------
// Service credentials: each does its job and is refused outside its role
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn simulator_credential_feeds_raw_and_nothing_else() {
    let deploy = DeployCopy::new();
    let server = deploy.start("");
    let (sim, errors) = connect_service(&server, "simulator", "SIMULATOR_PASSWORD").await;
    let js = jetstream::new(sim.clone());
    js.create_stream(raw_config())
        .await
        .expect("simulator provisions RAW");
    js.get_stream(streams::RAW)
        .await
        .expect("simulator reads RAW's info");
    js.publish("sensors.d01.traffic.tl-1", "r".into())
        .await
        .unwrap()
        .await
        .expect("JetStream ack of a simulated reading");

    refused_publish(&sim, &errors, "readings.d01.traffic.tl-1").await;
    refused_publish(&sim, &errors, "$JS.API.STREAM.DELETE.RAW").await;
    refused_subscribe(&sim, &errors, "sensors.>").await;
    refused_js_create(&js, &errors, "METRICS", "metrics.>").await;
    assert_stream_count(&server, streams::RAW, 1).await;
}

#[tokio::test]
async fn each_service_reads_its_own_inbox_only() {
    let deploy = DeployCopy::new();
    let server = deploy.start("");
    let users = [
        ("simulator", "SIMULATOR_PASSWORD"),
        ("ingest", "INGEST_PASSWORD"),
        ("processors", "PROCESSORS_PASSWORD"),
        ("alerts", "ALERTS_PASSWORD"),
        ("alerts-cli", "ALERTS_CLI_PASSWORD"),
        ("web", "WEB_PASSWORD"),
    ];
    for (i, (user, password)) in users.iter().enumerate() {
        let (client, errors) = connect_service(&server, user, password).await;
        // Its own inbox works: a JetStream API request is answered there (the CLI, which may
        // not call the JetStream API, gets its answers in the alerts test).
        if *user != "alerts-cli" {
            jetstream::new(client.clone())
                .query_account()
                .await
                .unwrap_or_else(|e| panic!("{user} asking JetStream for its account: {e}"));
        }
        // Every reply in the account, and the next service's replies, are refused.
        refused_subscribe(&client, &errors, "_INBOX.>").await;
        let (next, _) = users[(i + 1) % users.len()];
        refused_subscribe(&client, &errors, &format!("_INBOX.citypulse-{next}.>")).await;
    }
}

#[tokio::test]
async fn ingest_credential_runs_the_ingest_pipeline_and_nothing_else() {
    let deploy = DeployCopy::new();
    let server = deploy.start("");
    let admin = connect_admin(&server).await;
    let (ingest, errors) = connect_service(&server, "ingest", "INGEST_PASSWORD").await;
    let js = jetstream::new(ingest.clone());

    let raw = js
        .create_stream(raw_config())
        .await
        .expect("ingest provisions RAW");
    let readings = js
        .create_stream(readings_config())
        .await
        .expect("ingest provisions READINGS");
    js.create_stream(dlq_config())
        .await
        .expect("ingest provisions DLQ");
    let reading = air_reading("d01", "aq-1", 1);
    jetstream::new(admin.clone())
        .publish("sensors.d01.air.aq-1", reading.clone().into())
        .await
        .unwrap()
        .await
        .unwrap();

    // Validate: a durable pull consumer on RAW, fetch, ack.
    let consumer = raw
        .create_consumer(pull::Config {
            durable_name: Some("ingest".into()),
            ..Default::default()
        })
        .await
        .expect("ingest creates its RAW consumer");
    let msg = fetch_one(&consumer).await;
    assert_eq!(msg.payload.as_ref(), reading.as_slice());
    msg.double_ack().await.expect("ingest acks RAW");
    // Publish the validated reading and a dead letter, both acked by JetStream.
    js.publish("readings.d01.air.aq-1", reading.clone().into())
        .await
        .unwrap()
        .await
        .expect("JetStream ack of a validated reading");
    js.publish("dlq.decode", "junk".into())
        .await
        .unwrap()
        .await
        .expect("JetStream ack of a dead letter");
    // The PostgreSQL writer's durable consumer on READINGS.
    let store = readings
        .create_consumer(pull::Config {
            durable_name: Some("ingest-store".into()),
            ..Default::default()
        })
        .await
        .expect("ingest creates its READINGS consumer");
    let msg = fetch_one(&store).await;
    let partition = partition_of("d01", 8);
    assert_eq!(
        msg.subject.as_str(),
        format!("readings.{partition}.d01.air.aq-1")
    );
    msg.double_ack().await.expect("ingest acks READINGS");

    refused_publish(&ingest, &errors, "metrics.air.d01").await;
    refused_publish(&ingest, &errors, "sensors.d01.air.aq-1").await;
    refused_publish(&ingest, &errors, "$JS.API.STREAM.DELETE.RAW").await;
    refused_publish(&ingest, &errors, "$JS.API.STREAM.PURGE.READINGS").await;
    refused_subscribe(&ingest, &errors, "alerts.>").await;
    refused_js_create(&js, &errors, "METRICS", "metrics.>").await;
}

#[tokio::test]
async fn processors_credential_windows_readings_and_nothing_else() {
    let deploy = DeployCopy::new();
    let server = deploy.start("");
    let admin = connect_admin(&server).await;
    let admin_js = jetstream::new(admin.clone());
    admin_js.create_stream(readings_config()).await.unwrap();
    admin_js.create_stream(dlq_config()).await.unwrap();
    admin_js
        .create_stream(alerts_kv_stream_placeholder())
        .await
        .unwrap();
    admin_js
        .publish("readings.d01.air.aq-1", "r".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let (proc, errors) = connect_service(&server, "processors", "PROCESSORS_PASSWORD").await;
    let js = jetstream::new(proc.clone());

    // The partition consumer processors-p<N> on READINGS.
    let partition = partition_of("d01", 8);
    let readings = js
        .get_stream(streams::READINGS)
        .await
        .expect("processors read READINGS' info");
    let consumer = readings
        .create_consumer(pull::Config {
            durable_name: Some(format!("processors-p{partition}")),
            filter_subject: format!("readings.{partition}.>"),
            ..Default::default()
        })
        .await
        .expect("processors create a partition consumer");
    let msg = fetch_one(&consumer).await;
    msg.double_ack().await.expect("processors ack READINGS");
    // Window results to METRICS.
    js.create_stream(metrics_config())
        .await
        .expect("processors provision METRICS");
    js.publish("metrics.air.d01", "w".into())
        .await
        .unwrap()
        .await
        .expect("JetStream ack of a window");
    js.publish("metrics.air.d01.aq-1", "w".into())
        .await
        .unwrap()
        .await
        .expect("JetStream ack of a window");
    // A reading it cannot use is dead-lettered (DLQ is ingest's stream).
    js.publish("dlq.bad_partition", "r".into())
        .await
        .unwrap()
        .await
        .expect("JetStream ack of a processors dead letter");
    // Checkpoints in KV.
    kv_round_trip(&js, "citypulse_processors").await;

    refused_publish(&proc, &errors, "alerts.warning.air.d01").await;
    refused_publish(&proc, &errors, "readings.d01.air.aq-1").await;
    refused_publish(&proc, &errors, "$JS.API.STREAM.DELETE.READINGS").await;
    refused_publish(&proc, &errors, "$KV.citypulse_alerts.k").await;
    refused_js_create(&js, &errors, streams::READINGS, "readings.*.*.*").await;
    let denied = tokio::time::timeout(
        Duration::from_millis(300),
        js.get_key_value("citypulse_alerts"),
    )
    .await;
    assert!(
        !matches!(denied, Ok(Ok(_))),
        "processors opened the alerts bucket"
    );
    errors
        .expect_violation("Publish", "$JS.API.STREAM.INFO.KV_citypulse_alerts")
        .await;
}

#[tokio::test]
async fn alerts_credential_evaluates_metrics_answers_the_cli_and_nothing_else() {
    let deploy = DeployCopy::new();
    let server = deploy.start("");
    let admin = connect_admin(&server).await;
    let (alerts, errors) = connect_service(&server, "alerts", "ALERTS_PASSWORD").await;
    let (cli, cli_errors) = connect_service(&server, "alerts-cli", "ALERTS_CLI_PASSWORD").await;
    let js = jetstream::new(alerts.clone());

    // alerts may start before processors and ingest: it provisions METRICS and DLQ as they do.
    js.create_stream(metrics_config())
        .await
        .expect("alerts provision METRICS");
    js.create_stream(dlq_config())
        .await
        .expect("alerts provision DLQ");
    jetstream::new(admin.clone())
        .publish("metrics.air.d01", "w".into())
        .await
        .unwrap()
        .await
        .unwrap();
    js.publish("dlq.not_a_window", "junk".into())
        .await
        .unwrap()
        .await
        .expect("JetStream ack of the alerts service's dead letter");

    let metrics = js
        .get_stream(streams::METRICS)
        .await
        .expect("alerts read METRICS' info");
    let consumer = metrics
        .create_consumer(pull::Config {
            durable_name: Some("alerts".into()),
            ..Default::default()
        })
        .await
        .expect("alerts create their METRICS consumer");
    fetch_one(&consumer)
        .await
        .double_ack()
        .await
        .expect("alerts ack METRICS");
    js.create_stream(alerts_config())
        .await
        .expect("alerts provision ALERTS");
    kv_round_trip(&js, "citypulse_alerts").await;

    // The CLI watches alert transitions and talks to the service by request/reply.
    let mut tail = cli
        .subscribe("alerts.>")
        .await
        .expect("the CLI tails alerts");
    // ... and `tail` knows the server has its subscription by an echo through its own inbox.
    citypulse_runtime::nats::round_trip(&cli, DEADLINE)
        .await
        .expect("the CLI may echo a message through its own inbox");
    let mut service = alerts
        .subscribe("citypulse.alerts.>")
        .await
        .expect("alerts serve requests");
    wait_subscribed(&server, "alerts.>").await;
    wait_subscribed(&server, "citypulse.alerts.>").await;
    js.publish("alerts.warning.air.d01", "fired".into())
        .await
        .unwrap()
        .await
        .expect("JetStream ack of an alert");
    let got = tokio::time::timeout(DEADLINE, tail.next())
        .await
        .unwrap_or_else(|_| panic!("no alert; CLI errors: {:?}", cli_errors.0.lock().unwrap()))
        .unwrap();
    assert_eq!(got.subject.as_str(), "alerts.warning.air.d01");
    let responder = tokio::spawn(async move {
        let req = service.next().await.unwrap();
        alerts
            .publish(req.reply.unwrap(), "1 firing".into())
            .await
            .unwrap();
        alerts.flush().await.unwrap();
        alerts
    });
    let answer = tokio::time::timeout(DEADLINE, cli.request("citypulse.alerts.list", "".into()))
        .await
        .expect("no answer")
        .expect("the CLI's request is answered");
    assert_eq!(answer.payload.as_ref(), b"1 firing");
    let alerts = responder.await.unwrap();

    refused_publish(&alerts, &errors, "metrics.air.d01").await;
    refused_publish(&alerts, &errors, "readings.d01.air.aq-1").await;
    refused_publish(&alerts, &errors, "$KV.citypulse_processors.k").await;
    refused_publish(&alerts, &errors, "$JS.API.STREAM.DELETE.ALERTS").await;
    // The CLI can neither forge an alert nor touch a stream nor read window results.
    refused_publish(&cli, &cli_errors, "alerts.critical.air.d01").await;
    refused_publish(&cli, &cli_errors, "$JS.API.STREAM.DELETE.ALERTS").await;
    refused_subscribe(&cli, &cli_errors, "metrics.>").await;
    assert_stream_count(&server, streams::ALERTS, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_credential_reads_metrics_and_alerts_asks_the_alerts_service_and_nothing_else() {
    use citypulse_schema::{AlertEvent, AlertState, Kind, Severity, WindowMetrics, WindowResult};
    let deploy = DeployCopy::new();
    let server = deploy.start("");
    let admin = connect_admin(&server).await;
    let admin_js = jetstream::new(admin.clone());
    admin_js.create_stream(metrics_config()).await.unwrap();
    admin_js.create_stream(alerts_config()).await.unwrap();
    let window = WindowResult {
        window_start: 0,
        window_end: 60_000,
        district: "d01".into(),
        sensor: None,
        readings: 1,
        sensors: 1,
        metrics: WindowMetrics::Air(Box::new(citypulse_schema::AirMetrics {
            aqi: Some(77),
            ..Default::default()
        })),
    };
    let alert = AlertEvent {
        id: "aqi:d01:1".into(),
        rule: "aqi-usg".into(),
        state: AlertState::Firing,
        severity: Severity::Warning,
        kind: Kind::Air,
        district: "d01".into(),
        sensor: None,
        metric: "aqi".into(),
        value: 120.0,
        threshold: 100.0,
        started_at: 0,
        at: 60_000,
        summary: "AQI 120".into(),
    };
    for (subject, payload) in [
        (window.subject(), window.encode()),
        (alert.subject(), alert.encode()),
    ] {
        admin_js
            .publish(subject, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // The alerts service answers the operator requests.
    let (alerts, _) = connect_service(&server, "alerts", "ALERTS_PASSWORD").await;
    let mut requests = alerts.subscribe("citypulse.alerts.>").await.unwrap();
    wait_subscribed(&server, "citypulse.alerts.>").await;
    tokio::spawn(async move {
        while let Some(req) = requests.next().await {
            let body = if req.subject.as_str() == "citypulse.alerts.list" {
                r#"{"alerts":[],"silences":[]}"#
            } else {
                r#"{"id":"aqi:d01:1","by":"ana","comment":"","at":1}"#
            };
            alerts
                .publish(req.reply.unwrap(), body.into())
                .await
                .unwrap();
        }
    });

    // The real web view runs under the credential: its consumers read both streams.
    let (web, errors) = connect_service(&server, "web", "WEB_PASSWORD").await;
    let cfg = citypulse_web::config::Config::for_url(&server.url());
    let health = citypulse_runtime::admin::Health::new();
    let shutdown = citypulse_runtime::shutdown::Shutdown::new();
    let running = citypulse_web::start(
        &cfg,
        web.clone(),
        prometheus::Registry::new(),
        health.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let h = health.clone();
    wait_for(DEADLINE, "the web view's consumers read", || {
        let ok = h.is_healthy();
        async move { ok }
    })
    .await;
    wait_for(
        DEADLINE,
        "the web view holds the result, the alert and the list",
        || {
            let state = citypulse_harness::http_get(running.web, "/api/state")
                .map(|(_, body)| body)
                .unwrap_or_default();
            let ok = state.contains(r#""aqi":77"#)
                && state.contains(r#""id":"aqi:d01:1""#)
                && state.contains(r#""silences":[]"#);
            async move { ok }
        },
    )
    .await;
    let ack = tokio::time::timeout(
        DEADLINE,
        web.request(
            "citypulse.alerts.ack",
            r#"{"id":"aqi:d01:1","by":"ana"}"#.into(),
        ),
    )
    .await
    .expect("no answer")
    .expect("the web view's request is answered");
    assert!(String::from_utf8_lossy(&ack.payload).contains(r#""by":"ana""#));
    assert!(
        errors.0.lock().unwrap().is_empty(),
        "{:?}",
        errors.0.lock().unwrap()
    );

    // Nothing else: no stream subject, no stream change, no other consumer, no acks, no raw
    // subscriptions.
    let js = jetstream::new(web.clone());
    refused_js_create(&js, &errors, "METRICS", "metrics.>").await;
    for subject in [
        "metrics.air.d01",
        "alerts.critical.air.d01",
        "sensors.d01.air.aq-1",
        "dlq.x",
        "$JS.API.STREAM.DELETE.METRICS",
        "$JS.API.STREAM.PURGE.ALERTS",
        "$JS.API.CONSUMER.DELETE.METRICS.alerts",
        "$JS.API.CONSUMER.MSG.NEXT.METRICS.alerts",
        "$JS.API.CONSUMER.DURABLE.CREATE.METRICS.x",
        "$JS.API.CONSUMER.CREATE.READINGS",
        "$JS.ACK.METRICS.alerts.1.1.1.1.1",
        "$KV.citypulse_alerts.x",
    ] {
        refused_publish(&web, &errors, subject).await;
    }
    refused_subscribe(&web, &errors, "metrics.>").await;
    refused_subscribe(&web, &errors, "citypulse.alerts.>").await;
    assert_stream_count(&server, streams::METRICS, 1).await;
    assert_stream_count(&server, streams::ALERTS, 1).await;
    shutdown.trigger();
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn conf_files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".conf"))
        .collect()
}

/// (configs included by no other = the ones a server is started with, configs included).
fn include_graph(dir: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let all = conf_files(dir);
    let mut included = BTreeSet::new();
    for file in &all {
        for line in std::fs::read_to_string(dir.join(file)).unwrap().lines() {
            if let Some(rest) = line.trim().strip_prefix("include ") {
                let target = rest.trim().trim_matches('"').to_owned();
                assert!(
                    all.contains(&target),
                    "{file} includes {target}, which is not in deploy/nats"
                );
                included.insert(target);
            }
        }
    }
    let top = all.difference(&included).cloned().collect();
    (top, included)
}

/// Rewrites the certificate directory of the copied server.conf to `certs`.
fn point_tls_at(conf_dir: &Path, certs: &Path) {
    let path = conf_dir.join("server.conf");
    let text = std::fs::read_to_string(&path).unwrap();
    let n = text.matches("/etc/nats/tls/").count();
    assert!(
        n >= 6,
        "server.conf should name its certificates under /etc/nats/tls/ ({n} found)"
    );
    std::fs::write(
        &path,
        text.replace("/etc/nats/tls/", &format!("{}/", certs.display())),
    )
    .unwrap();
}

struct Output {
    status: std::process::ExitStatus,
    text: String,
}

fn nats_test_config(path: &Path) -> Output {
    let out = Command::new(nats_server_bin())
        .args(["-t", "-c"])
        .arg(path)
        .env("POD_NAME", "nats-0")
        .output()
        .unwrap();
    Output {
        status: out.status,
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// Server errors a connection was told about ("Permissions Violation for ...").
#[derive(Clone, Default)]
struct Errors(Arc<Mutex<Vec<String>>>);

impl Errors {
    async fn expect_violation(&self, kind: &str, subject: &str) {
        let want = format!("Permissions Violation for {kind} to \"{subject}\"");
        let what = format!("the error {want:?}");
        let errors = self.clone();
        wait_for(DEADLINE, &what, || {
            let found = errors.0.lock().unwrap().iter().any(|e| e.contains(&want));
            async move { found }
        })
        .await;
    }
}

async fn connect_as(server: &NatsServer, user: &str, password: &str) -> (Client, Errors) {
    connect_with_inbox(server, user, password, "_INBOX").await
}

async fn connect_with_inbox(
    server: &NatsServer,
    user: &str,
    password: &str,
    inbox_prefix: &str,
) -> (Client, Errors) {
    let errors = Errors::default();
    let sink = errors.clone();
    let client = ConnectOptions::with_user_and_password(user.into(), password.into())
        .custom_inbox_prefix(inbox_prefix)
        .event_callback(move |event| {
            let sink = sink.clone();
            async move {
                if let Event::ServerError(e) = event {
                    sink.0.lock().unwrap().push(e.to_string());
                }
            }
        })
        .connect(server.url())
        .await
        .unwrap_or_else(|e| panic!("connecting as {user}: {e}"));
    (client, errors)
}

/// Connects as a service user with the inbox prefix the service uses (`_INBOX.citypulse-<user>`,
/// the runtime's default for client `citypulse-<user>`).
async fn connect_service(server: &NatsServer, user: &str, password_var: &str) -> (Client, Errors) {
    let prefix = format!("_INBOX.citypulse-{user}");
    connect_with_inbox(server, user, &dev_password(password_var), &prefix).await
}

async fn connect_admin(server: &NatsServer) -> Client {
    connect_as(server, "admin", &dev_password("ADMIN_PASSWORD"))
        .await
        .0
}

/// Waits until the server has registered a subscription to `subject` (a client's flush only
/// sends; a subscriber on one connection is not yet known to the server when another publishes).
async fn wait_subscribed(server: &NatsServer, subject: &str) {
    let port = server.monitor_addr().port();
    // Go's JSON encoder writes '>' as \u003e.
    let quoted = format!("\"{}\"", subject.replace('>', "\\u003e"));
    wait_for(DEADLINE, &format!("a subscription to {subject}"), || {
        let found = http_get(port, "/connz?subs=1").is_some_and(|(_, body)| body.contains(&quoted));
        async move { found }
    })
    .await;
}

async fn refused_publish(client: &Client, errors: &Errors, subject: &str) {
    client
        .publish(subject.to_owned(), "x".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    errors.expect_violation("Publish", subject).await;
}

async fn refused_subscribe(client: &Client, errors: &Errors, subject: &str) {
    let _sub = client.subscribe(subject.to_owned()).await.unwrap();
    client.flush().await.unwrap();
    errors.expect_violation("Subscription", subject).await;
}

/// A stream the credential may not create: the API request is refused (and so never answered).
async fn refused_js_create(js: &jetstream::Context, errors: &Errors, name: &str, subjects: &str) {
    let config = stream::Config {
        name: name.into(),
        subjects: vec![subjects.into()],
        ..Default::default()
    };
    let attempt = tokio::time::timeout(Duration::from_millis(300), js.create_stream(config)).await;
    assert!(!matches!(attempt, Ok(Ok(_))), "created stream {name}");
    errors
        .expect_violation("Publish", &format!("$JS.API.STREAM.CREATE.{name}"))
        .await;
}

async fn assert_stream_count(server: &NatsServer, name: &str, expected: u64) {
    let js = jetstream::new(connect_admin(server).await);
    let mut stream = js.get_stream(name).await.unwrap();
    assert_eq!(
        stream.info().await.unwrap().state.messages,
        expected,
        "messages in {name}"
    );
}

async fn fetch_one(consumer: &jetstream::consumer::Consumer<pull::Config>) -> jetstream::Message {
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_secs(5))
        .messages()
        .await
        .expect("fetch request");
    batch
        .next()
        .await
        .expect("a message")
        .expect("a message, not an error")
}

async fn kv_round_trip(js: &jetstream::Context, bucket: &str) {
    let store = js
        .create_key_value(kv::Config {
            bucket: bucket.into(),
            history: 1,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("creating bucket {bucket}: {e}"));
    let store2 = js
        .get_key_value(bucket)
        .await
        .unwrap_or_else(|e| panic!("opening {bucket}: {e}"));
    store
        .put("p3.watermark", "1700000000000".into())
        .await
        .expect("KV put");
    let got = store2.get("p3.watermark").await.expect("KV get");
    assert_eq!(got.as_deref(), Some(&b"1700000000000"[..]));
    let keys: Vec<String> = store
        .keys()
        .await
        .expect("KV keys")
        .map(|k| k.unwrap())
        .collect()
        .await;
    assert_eq!(keys, vec!["p3.watermark".to_owned()]);
    store.delete("p3.watermark").await.expect("KV delete");
}

/// `limits` with a byte limit that lets several streams fit the deploy account's 1 GB of file
/// storage; the streams below are otherwise the services' own ([`stream_config`]).
fn fitting(limits: Limits) -> Limits {
    Limits {
        max_bytes: 16 * 1024 * 1024,
        ..limits
    }
}

fn raw_config() -> stream::Config {
    stream_config::raw(fitting(Limits::RAW))
}

fn dlq_config() -> stream::Config {
    stream_config::dlq(fitting(Limits::DLQ))
}

fn readings_config() -> stream::Config {
    stream_config::readings(fitting(Limits::READINGS), 8)
}

fn metrics_config() -> stream::Config {
    stream_config::metrics(fitting(Limits::METRICS))
}

fn alerts_config() -> stream::Config {
    stream_config::alerts(fitting(Limits::ALERTS))
}

/// The alerts service's bucket, made by an admin, so a refusal to open it is a permission and
/// not a missing bucket.
fn alerts_kv_stream_placeholder() -> stream::Config {
    stream::Config {
        name: "KV_citypulse_alerts".into(),
        subjects: vec!["$KV.citypulse_alerts.>".into()],
        max_messages_per_subject: 1,
        allow_direct: true,
        ..Default::default()
    }
}

fn air_reading(district: &str, sensor: &str, seq: u64) -> Vec<u8> {
    Reading {
        sensor: sensor.into(),
        district: district.into(),
        ts: 1_700_000_000_000 + seq * 60_000,
        seq,
        data: Measurement::Air(Air {
            pm25_ugm3: Some(12.3),
            o3_ppb: Some(41.0),
            ..Default::default()
        }),
    }
    .encode()
}

/// Collects (subject, payload) until a message with payload `last` arrives.
async fn collect_until(sub: &mut async_nats::Subscriber, last: &str) -> Vec<(String, String)> {
    let mut got = Vec::new();
    loop {
        let msg = tokio::time::timeout(DEADLINE, sub.next())
            .await
            .unwrap_or_else(|_| panic!("{last:?} never arrived; got {got:?}"))
            .unwrap();
        let payload = String::from_utf8_lossy(&msg.payload).into_owned();
        got.push((msg.subject.to_string(), payload.clone()));
        if payload == last {
            return got;
        }
    }
}

/// The three compose node configs (nats-1..3.conf) run on 127.0.0.1: each node gets its own copy
/// of deploy/nats with only its listen addresses, the store dir and the certificate dir
/// substituted, and the route host names pointed at 127.0.0.1.
struct LocalCluster {
    nodes: Vec<LocalNode>,
}

struct LocalNode {
    name: String,
    dir: PathBuf,
    client: u16,
    monitor: u16,
    mqtt: u16,
    child: std::process::Child,
}

/// Why a cluster start did not come up.
enum NotFormed {
    /// A node could not bind one of its drawn ports: draw again.
    PortInUse,
    /// Anything else: the message carries every node's log tail.
    Failed(String),
}

/// Draws of fresh ports before a port clash fails the test.
const PORT_ATTEMPTS: usize = 5;

impl LocalCluster {
    fn start(work: &Path, certs: &Path) -> Self {
        for attempt in 1..=PORT_ATTEMPTS {
            match Self::try_start(&work.join(format!("attempt{attempt}")), certs) {
                Ok(cluster) => return cluster,
                Err(NotFormed::PortInUse) if attempt < PORT_ATTEMPTS => {}
                Err(NotFormed::PortInUse) => {
                    panic!("ports still in use after {PORT_ATTEMPTS} draws")
                }
                Err(NotFormed::Failed(why)) => panic!("{why}"),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn try_start(work: &Path, certs: &Path) -> Result<Self, NotFormed> {
        // The harness's ports lie below the kernel's ephemeral range, so no outgoing connection
        // (a route dialing a peer, a test client) can take one before its node binds it.
        let ports: Vec<[u16; 5]> = (0..3)
            .map(|_| {
                [
                    free_port(),
                    free_port(),
                    free_port(),
                    free_port(),
                    free_port(),
                ]
            })
            .collect();
        let mut prepared = Vec::new();
        for (i, [client, route, monitor, mqtt, ws]) in ports.iter().copied().enumerate() {
            let n = i + 1;
            let dir = copy_nats_dir(&work.join(format!("node{n}")));
            point_tls_at(&dir, certs);
            let server = dir.join("server.conf");
            let mut text = std::fs::read_to_string(&server).unwrap();
            for (from, to) in [
                ("port: 4222", format!("listen: 127.0.0.1:{client}")),
                ("http_port: 8222", format!("http: 127.0.0.1:{monitor}")),
                ("port: 8883", format!("listen: 127.0.0.1:{mqtt}")),
                ("port: 8443", format!("listen: 127.0.0.1:{ws}")),
                (
                    "\"/data/jetstream\"",
                    format!("{:?}", dir.join("jetstream")),
                ),
            ] {
                assert_eq!(
                    text.matches(from).count(),
                    1,
                    "server.conf should contain {from:?} once"
                );
                text = text.replace(from, &to);
            }
            std::fs::write(&server, text).unwrap();
            let node_conf = dir.join(format!("nats-{n}.conf"));
            let mut text = std::fs::read_to_string(&node_conf).unwrap();
            assert_eq!(text.matches("port: 6222\n").count(), 1);
            text = text.replace("port: 6222\n", &format!("listen: 127.0.0.1:{route}\n"));
            for (j, peer) in ports.iter().enumerate() {
                let from = format!("nats-route://nats-{}:6222", j + 1);
                assert_eq!(
                    text.matches(&from).count(),
                    1,
                    "nats-{n}.conf should route to {from}"
                );
                text = text.replace(&from, &format!("nats-route://127.0.0.1:{}", peer[1]));
            }
            std::fs::write(&node_conf, text).unwrap();
            prepared.push((format!("nats-{n}"), dir, node_conf, client, monitor, mqtt));
        }
        // Spawned only once every config is written, so a failed substitution leaks no process;
        // from here on, dropping the cluster kills the nodes.
        let mut cluster = LocalCluster { nodes: Vec::new() };
        for (name, dir, node_conf, client, monitor, mqtt) in prepared {
            let log = std::fs::File::create(dir.join("nats.log")).unwrap();
            let child = Command::new(nats_server_bin())
                .arg("-c")
                .arg(&node_conf)
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap();
            cluster.nodes.push(LocalNode {
                name,
                dir,
                client,
                monitor,
                mqtt,
                child,
            });
        }
        cluster.wait_formed()?;
        Ok(cluster)
    }

    /// Every node answers /healthz 200 (JetStream current with a meta leader) and has routes to
    /// both others, and the meta leader counts both other peers as current (without that, a
    /// replicated stream created at once can fail with "no suitable peers for placement, peer
    /// offline" on a busy machine).
    fn wait_formed(&mut self) -> Result<(), NotFormed> {
        let start = std::time::Instant::now();
        loop {
            let ready = self.nodes.iter().all(|n| {
                let peers = (1..=3).filter(|p| format!("nats-{p}") != n.name);
                let routez: String = http_get(n.monitor, "/routez")
                    .map(|(_, b)| b.split_whitespace().collect())
                    .unwrap_or_default();
                http_get(n.monitor, "/healthz").is_some_and(|(s, _)| s == 200)
                    && peers
                        .into_iter()
                        .all(|p| routez.contains(&format!("\"remote_name\":\"nats-{p}\"")))
            }) && self
                .nodes
                .iter()
                .any(|n| meta_peers_current(n.monitor) == 2);
            if ready {
                return Ok(());
            }
            let exited = self
                .nodes
                .iter_mut()
                .any(|n| n.child.try_wait().is_ok_and(|status| status.is_some()));
            if exited && self.logs().contains("address already in use") {
                return Err(NotFormed::PortInUse);
            }
            if exited || start.elapsed() > Duration::from_secs(30) {
                let why = if exited {
                    "a node exited"
                } else {
                    "the cluster did not form in 30 s"
                };
                return Err(NotFormed::Failed(format!("{why}:\n{}", self.log_tails())));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| std::fs::read_to_string(n.dir.join("nats.log")).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The last lines of each node's log, without the repeated health-check warnings that
    /// would crowd out the cause.
    fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let log = std::fs::read_to_string(n.dir.join("nats.log")).unwrap_or_default();
                let lines: Vec<&str> = log
                    .lines()
                    .filter(|l| !l.contains("Healthcheck failed"))
                    .collect();
                let tail = lines[lines.len().saturating_sub(60)..].join("\n");
                format!("---- {} ----\n{tail}", n.name)
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn client_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| format!("tls://127.0.0.1:{}", n.client))
            .collect()
    }

    fn conf_dir(&self, n: usize) -> PathBuf {
        self.nodes[n - 1].dir.clone()
    }

    fn mqtt_port(&self, n: usize) -> String {
        self.nodes[n - 1].mqtt.to_string()
    }

    /// Copies node 1's sensors.conf to every node and reloads them all (what an operator does
    /// after issuing a credential), then waits until each node knows the new users.
    fn reload_all(&self) {
        let sensors = std::fs::read(self.nodes[0].dir.join("sensors.conf")).unwrap();
        for node in &self.nodes {
            std::fs::write(node.dir.join("sensors.conf"), &sensors).unwrap();
            let before = http_get(node.monitor, "/varz").map(|(_, b)| config_load_time(&b));
            let status = Command::new("kill")
                .arg("-HUP")
                .arg(node.child.id().to_string())
                .status()
                .unwrap();
            assert!(status.success());
            let start = std::time::Instant::now();
            while http_get(node.monitor, "/varz").map(|(_, b)| config_load_time(&b)) == before {
                assert!(start.elapsed() < DEADLINE, "node did not reload its config");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn config_load_time(varz: &str) -> String {
    varz.lines()
        .find(|l| l.contains("\"config_load_time\""))
        .unwrap_or_default()
        .to_owned()
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.child.kill();
            let _ = node.child.wait();
        }
    }
}

/// `GET path` from the monitoring port on 127.0.0.1: (status, body), or `None` while it does
/// not answer.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    citypulse_harness::http_get(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), path).ok()
}

/// How many peers the node at `monitor` sees as current in the JetStream meta group, if it is
/// the meta leader (only the leader lists them in /jsz); 0 otherwise.
fn meta_peers_current(monitor: u16) -> usize {
    let Some((200, body)) = http_get(monitor, "/jsz") else {
        return 0;
    };
    citypulse_harness::meta_peers_current(&body)
}
