//! The service against a real nats-server: crafted window results cross and recross thresholds
//! and produce exactly the expected alert events on the expected subjects; operators silence,
//! acknowledge and unsilence over request/reply; bad input is dead-lettered; removed rules
//! resolve their alerts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use citypulse_alerts::api::{AckRequest, ListResponse, SilenceRequest, UnsilenceRequest};
use citypulse_alerts::cli::request;
use citypulse_alerts::engine::{Ack, Matcher, RuleSet, Silence};
use citypulse_harness::NatsServer;
use citypulse_schema::{AlertState::*, Kind, Severity::*, WindowResult};
use common::*;
use futures::StreamExt;
use std::time::Duration;

/// d1's AQI climbs, escalates, steps down and clears; sensor b goes quiet and comes back.
fn scenario() -> Vec<WindowResult> {
    let aqi = [50, 120, 120, 120, 160, 160, 160, 145, 130, 95, 80, 80];
    let mut ws = Vec::new();
    for (m, v) in aqi.iter().enumerate() {
        let m = m as u64;
        ws.push(air("d1", None, m, *v));
        ws.push(air("d1", Some("a"), m, 40));
        if m <= 5 || m == 11 {
            ws.push(air("d1", Some("b"), m, 40));
        }
    }
    ws
}

#[tokio::test]
async fn crossing_and_recrossing_thresholds_publishes_exactly_the_expected_events() {
    let server = NatsServer::start();
    let (client, js) = jetstream(&server.url()).await;
    let mut sub = client.subscribe("alerts.>").await.unwrap();
    // The server has the subscription before the service starts (a flush only writes it out).
    citypulse_runtime::nats::round_trip(&client, Duration::from_secs(10))
        .await
        .unwrap();
    let svc = start_in_process(&server.url(), TEST_RULES, |_| {}).await;

    let windows = scenario();
    let last = publish_all(&js, &windows).await;
    wait_processed(&js, last).await;

    let in_stream = alerts_stream(&js).await;
    let briefs: Vec<_> = in_stream.iter().map(Published::brief).collect();
    let w = |s: &str| s.to_owned();
    assert_eq!(
        briefs,
        vec![
            (w("alerts.warning.air.d1"), Firing, Warning, 4), // AQI > 100 since minute 1, for 3m
            (w("alerts.critical.air.d1"), Firing, Critical, 6), // > 150 since 4, for 2m
            (w("alerts.warning.air.d1"), Firing, Warning, 9), // 130: below 140, steps down
            (w("alerts.warning.air.d1"), Firing, Warning, 9), // b silent since 6, 3 intervals
            (w("alerts.warning.air.d1"), Resolved, Warning, 11), // 80 ≤ 90
            (w("alerts.warning.air.d1"), Resolved, Warning, 12), // b reports again
        ]
    );
    let aqi_id = &in_stream[0].event.id;
    assert_eq!(*aqi_id, format!("aqi:d1:{}", at(4)));
    for i in [1, 2, 4] {
        assert_eq!(&in_stream[i].event.id, aqi_id);
    }
    assert_eq!(in_stream[3].event.sensor.as_deref(), Some("b"));
    assert_eq!(in_stream[3].event.id, in_stream[5].event.id);
    assert_eq!(in_stream[1].event.summary, "AQI 160 (unhealthy) in d1");

    // The same as the pure evaluator decides.
    let got: Vec<_> = in_stream.iter().map(|p| p.event.clone()).collect();
    assert_eq!(got, evaluate_all(&windows));

    // A plain subscriber received exactly these messages.
    let mut received = Vec::new();
    while received.len() < in_stream.len() {
        let m = tokio::time::timeout(DEADLINE, sub.next())
            .await
            .unwrap()
            .unwrap();
        received.push(published(&m.subject, m.headers.as_ref(), &m.payload));
    }
    assert_eq!(received, in_stream);
    assert!(
        tokio::time::timeout(Duration::from_millis(200), sub.next())
            .await
            .is_err(),
        "no further alert messages"
    );

    // Re-publishing the same window results (a processor replay) changes nothing.
    let mut again = 0;
    for w in &windows {
        let mut h = async_nats::HeaderMap::new();
        // A new message id, so the METRICS stream stores it again.
        h.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("replay-{}", w.msg_id()).as_str(),
        );
        again = js
            .publish_with_headers(w.subject(), h, w.encode().into())
            .await
            .unwrap()
            .await
            .unwrap()
            .sequence;
    }
    wait_processed(&js, again).await;
    assert_eq!(alerts_stream(&js).await, in_stream);
    assert_eq!(svc.metric("citypulse_alerts_transitions_total"), 6.0);
    assert_eq!(
        svc.metric("citypulse_alerts_window_results_total"),
        (2 * windows.len()) as f64
    );
    assert_eq!(
        svc.metric("citypulse_alerts_evaluation_latency_seconds"),
        6.0
    );
    assert_eq!(svc.metric("citypulse_alerts_rules"), 3.0);
    svc.stop().await;
}

#[tokio::test]
async fn operators_silence_ack_and_unsilence_over_request_reply_and_it_survives_a_restart() {
    let server = NatsServer::start();
    let url = server.url();
    let (client, js) = jetstream(&url).await;
    let svc = start_in_process(&url, TEST_RULES, |_| {}).await;
    let t = Duration::from_secs(5);

    let s1: Silence = request(
        &client,
        "citypulse.alerts.silence",
        &SilenceRequest {
            matcher: Matcher {
                district: Some("d2".into()),
                ..Matcher::default()
            },
            duration: "1h".into(),
            by: "ana".into(),
            comment: "sensor maintenance".into(),
        },
        t,
    )
    .await
    .unwrap();
    assert_eq!(s1.id, "s1");

    // d2 fires under the silence: recorded, listed, not published.
    let fire: Vec<_> = (0..4).map(|m| air("d2", None, m, 120)).collect();
    wait_processed(&js, publish_all(&js, &fire).await).await;
    assert!(alerts_stream(&js).await.is_empty());
    let list: ListResponse = request(&client, "citypulse.alerts.list", &serde_json::json!({}), t)
        .await
        .unwrap();
    assert_eq!(list.alerts.len(), 1);
    let alert = &list.alerts[0];
    assert_eq!(
        (alert.published, alert.silenced_by.as_deref()),
        (false, Some("s1"))
    );
    assert_eq!(list.silences, vec![s1.clone()]);
    let id = alert.event.id.clone();

    let ack: Ack = request(
        &client,
        "citypulse.alerts.ack",
        &AckRequest {
            id: id.clone(),
            by: "bo".into(),
            comment: "on it".into(),
        },
        t,
    )
    .await
    .unwrap();
    assert_eq!((ack.id.as_str(), ack.by.as_str()), (id.as_str(), "bo"));
    let unknown = request::<_, Ack>(
        &client,
        "citypulse.alerts.ack",
        &AckRequest {
            id: "nope".into(),
            by: "bo".into(),
            comment: String::new(),
        },
        t,
    )
    .await
    .unwrap_err();
    assert_eq!(unknown.to_string(), "no active alert with id `nope`");

    // A restart keeps the ack, the silence and the suppressed incident.
    svc.stop().await;
    let svc = start_in_process(&url, TEST_RULES, |_| {}).await;
    let list: ListResponse = request(
        &client,
        "citypulse.alerts.list",
        &serde_json::json!({"kind": "air"}),
        t,
    )
    .await
    .unwrap();
    assert_eq!(list.alerts.len(), 1);
    assert_eq!(list.alerts[0].ack.as_ref(), Some(&ack));
    assert_eq!(list.silences, vec![s1.clone()]);

    // Unsilencing publishes the firing people did not see, unchanged.
    let _: Silence = request(
        &client,
        "citypulse.alerts.unsilence",
        &UnsilenceRequest {
            id: "s1".into(),
            by: "ana".into(),
        },
        t,
    )
    .await
    .unwrap();
    let seen = wait_alerts(&js, 1).await;
    // Held since the start of minute 0, for 3 minutes: fired at the end of minute 2.
    assert_eq!(
        seen[0].brief(),
        ("alerts.warning.air.d2".into(), Firing, Warning, 3)
    );
    assert_eq!(seen[0].event.id, id);
    assert!(!seen[0].silenced);

    // Silenced again while firing: the resolution is published anyway (its firing was), marked.
    let _: Silence = request(
        &client,
        "citypulse.alerts.silence",
        &SilenceRequest {
            matcher: Matcher {
                rule: Some("aqi".into()),
                kind: Some(Kind::Air),
                ..Matcher::default()
            },
            duration: "1h".into(),
            by: "ana".into(),
            comment: String::new(),
        },
        t,
    )
    .await
    .unwrap();
    let calm = [air("d2", None, 4, 80)];
    wait_processed(&js, publish_all(&js, &calm).await).await;
    let seen = wait_alerts(&js, 2).await;
    assert_eq!(
        seen[1].brief(),
        ("alerts.warning.air.d2".into(), Resolved, Warning, 5)
    );
    assert!(seen[1].silenced);
    assert_eq!(seen[1].event.id, id);

    // A whole incident under the silence (after the 5-minute hold-down) is never published.
    let again: Vec<_> = (10..14)
        .map(|m| air("d2", None, m, 120))
        .chain([air("d2", None, 14, 60)])
        .collect();
    wait_processed(&js, publish_all(&js, &again).await).await;
    assert_eq!(alerts_stream(&js).await.len(), 2);
    assert_eq!(svc.metric("citypulse_alerts_suppressed_total"), 2.0);
    let list: ListResponse = request(&client, "citypulse.alerts.list", &serde_json::json!({}), t)
        .await
        .unwrap();
    assert!(list.alerts.is_empty());
    svc.stop().await;
}

#[tokio::test]
async fn a_metrics_message_that_is_not_a_window_result_is_dead_lettered_and_the_rest_flows() {
    let server = NatsServer::start();
    let (_client, js) = jetstream(&server.url()).await;
    let svc = start_in_process(&server.url(), TEST_RULES, |_| {}).await;
    js.publish("metrics.air.d1", "not cbor".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let fire: Vec<_> = (0..4).map(|m| air("d1", None, m, 120)).collect();
    wait_processed(&js, publish_all(&js, &fire).await).await;
    assert_eq!(wait_alerts(&js, 1).await.len(), 1);

    let dlq = js.get_stream("DLQ").await.unwrap();
    let m = dlq.get_raw_message(1).await.unwrap();
    let reason = WindowResult::decode(b"not cbor").unwrap_err().reason();
    assert_eq!(m.subject.as_str(), format!("dlq.{reason}"));
    assert_eq!(
        m.headers.get("Citypulse-Reason").map(|v| v.as_str()),
        Some(reason)
    );
    assert_eq!(&m.payload[..], b"not cbor");
    assert_eq!(
        m.headers
            .get("Citypulse-Source-Subject")
            .map(|v| v.as_str()),
        Some("metrics.air.d1")
    );
    assert_eq!(
        m.headers
            .get("Citypulse-Source-Sequence")
            .map(|v| v.as_str()),
        Some("1")
    );
    assert_eq!(svc.metric("citypulse_alerts_rejected_total"), 1.0);
    svc.stop().await;
}

#[tokio::test]
async fn alerts_of_a_removed_rule_resolve_when_the_service_starts_with_the_changed_file() {
    let server = NatsServer::start();
    let url = server.url();
    let (_client, js) = jetstream(&url).await;
    let svc = start_in_process(&url, TEST_RULES, |_| {}).await;
    let fire: Vec<_> = (0..4).map(|m| air("d1", None, m, 120)).collect();
    wait_processed(&js, publish_all(&js, &fire).await).await;
    assert_eq!(wait_alerts(&js, 1).await.len(), 1);
    svc.stop().await;

    let without_aqi = TEST_RULES
        .split("[[rule]]\nname = \"offline\"")
        .nth(1)
        .map(|rest| format!("[[rule]]\nname = \"offline\"{rest}"))
        .unwrap();
    assert_eq!(
        citypulse_alerts::engine::rules::load(&without_aqi)
            .map(|r: RuleSet| r.rule_count())
            .unwrap(),
        1
    );
    let svc = start_in_process(&url, &without_aqi, |_| {}).await;
    let seen = wait_alerts(&js, 2).await;
    assert_eq!(
        seen[1].brief(),
        ("alerts.warning.air.d1".into(), Resolved, Warning, 4)
    );
    assert_eq!(
        seen[0].brief(),
        ("alerts.warning.air.d1".into(), Firing, Warning, 3)
    );
    assert_eq!(seen[1].event.id, seen[0].event.id);
    assert!(
        seen[1].event.summary.contains("removed"),
        "{}",
        seen[1].event.summary
    );
    svc.stop().await;
}

#[tokio::test]
async fn a_nats_server_restart_mid_stream_loses_no_transition_and_duplicates_none() {
    let mut server = NatsServer::start();
    let url = server.url();
    let (_client, js) = jetstream(&url).await;
    let svc = start_in_process(&url, TEST_RULES, |_| {}).await;
    let windows = scenario();
    let (first, rest) = windows.split_at(windows.len() / 2);
    wait_processed(&js, publish_all(&js, first).await).await;

    // A crash of the server (SIGKILL) with the service connected.
    server.restart();
    let (_client, js) = jetstream(&url).await;
    let mut last = 0;
    for w in rest {
        // The service's publishes may still be retrying; the test's own are plain.
        last = publish(&js, w).await;
    }
    wait_processed(&js, last).await;

    let got: Vec<_> = alerts_stream(&js)
        .await
        .into_iter()
        .map(|p| p.event)
        .collect();
    assert_eq!(got, evaluate_all(&windows));
    svc.stop().await;
}

/// A drained backlog is checkpointed and acked about a second after it drains (the runtime's
/// `Cadence`), not at `--checkpoint-interval` — here an hour, and no count threshold is reached.
#[tokio::test]
async fn a_drained_backlog_is_acked_within_seconds_even_with_an_hour_checkpoint_interval() {
    let server = NatsServer::start();
    let (_client, js) = jetstream(&server.url()).await;
    let svc = start_in_process(&server.url(), TEST_RULES, |cfg| {
        cfg.checkpoint_interval = Duration::from_secs(3600);
        cfg.ack_wait = Duration::from_secs(7200);
        cfg.checkpoint_every = 1_000_000;
        cfg.max_ack_pending = 2_000_000;
    })
    .await;
    let last = publish_all(&js, &scenario()).await;
    // DEADLINE (20 s): the caught-up checkpoint comes a second after the last one.
    wait_processed(&js, last).await;
    svc.stop().await;
}
