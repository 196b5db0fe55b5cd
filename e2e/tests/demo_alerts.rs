//! The demo's story, end to end: the simulator's pollution episode and traffic incident travel
//! through ingest, the processors and the alerts service as real processes, and their alerts
//! fire and resolve — each incident once, with one id shared by its firing and its resolution.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream;
use citypulse_e2e::pipeline::{Pipeline, PipelineOptions, SimulatorOptions};
use citypulse_schema::{streams, AlertEvent, AlertState, Kind};
use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

/// Every alert event in the ALERTS stream, in stream order.
async fn alert_events(js: &jetstream::Context) -> Vec<AlertEvent> {
    let Ok(mut stream) = js.get_stream(streams::ALERTS).await else {
        return Vec::new();
    };
    let n = stream.info().await.unwrap().state.messages;
    let mut out = Vec::new();
    for seq in 1..=n {
        let m = stream.get_raw_message(seq).await.unwrap();
        out.push(AlertEvent::decode(&m.payload).unwrap());
    }
    out
}

/// Incidents (by id) that have both fired and resolved, per kind and rule.
fn completed(events: &[AlertEvent]) -> Vec<(Kind, String, String)> {
    let mut fired: BTreeMap<&str, &AlertEvent> = BTreeMap::new();
    let mut done = Vec::new();
    for e in events {
        match e.state {
            AlertState::Firing => {
                fired.entry(&e.id).or_insert(e);
            }
            AlertState::Resolved => {
                if fired.contains_key(e.id.as_str()) {
                    done.push((e.kind, e.rule.clone(), e.district.clone()));
                }
            }
        }
    }
    done
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_episode_and_incident_fire_alerts_that_resolve() {
    // Nine simulated hours, replayed as fast as the pipeline takes them: the episode (from
    // start + 10 min, about 3 h of PM2.5 above 110 µg/m³) and the incident (start + 20 min, for
    // 40 min) both begin and end inside them, and the NowCast has hours to fall back. The day is
    // fixed, a Wednesday from 07:00 local (2026-01-07T06:00:00Z), so the incident always meets
    // traffic: at night a road closure queues almost nobody (the run's hour of day used to
    // decide whether this test could pass).
    let pipeline = Pipeline::launch(PipelineOptions {
        simulator: Some(SimulatorOptions {
            start_at: Some(UNIX_EPOCH + Duration::from_millis(1_767_765_600_000)),
            duration: Some(Duration::from_secs(9 * 3600)),
            sensors: 348,
            faults: "demo".to_owned(),
            // A skewed clock jumps 25 hours to 7 days ahead: live, ingest rejects it against
            // the wall clock, which is months past this day. Every other demo fault stays.
            args: ["--events", "demo", "--fault-clock-skew", "0"]
                .map(str::to_owned)
                .to_vec(),
            ..SimulatorOptions::default()
        }),
        // The fixed day is months old: let ingest take it (it refuses readings older than 72
        // hours by default).
        ingest_args: vec!["--max-age".to_owned(), "87600h".to_owned()],
        ..PipelineOptions::default()
    });
    let js = jetstream::new(async_nats::connect(pipeline.url()).await.unwrap());

    citypulse_harness::wait_for(
        Duration::from_secs(240),
        "an air alert and a traffic alert that both fired and resolved",
        || async {
            let done = completed(&alert_events(&js).await);
            done.iter()
                .any(|(k, rule, _)| *k == Kind::Air && rule.starts_with("aqi"))
                && done.iter().any(|(k, _, _)| *k == Kind::Traffic)
        },
    )
    .await;

    let events = alert_events(&js).await;
    // The lifecycle holds for every incident: a resolution always follows a firing of the same
    // id, and no incident resolves twice.
    let mut state: BTreeMap<&str, AlertState> = BTreeMap::new();
    for e in &events {
        let before = state.insert(&e.id, e.state);
        if e.state == AlertState::Resolved {
            assert_eq!(before, Some(AlertState::Firing), "{e:?}");
        }
        assert_eq!(
            e.subject(),
            format!("alerts.{}.{}.{}", e.severity, e.kind, e.district)
        );
    }
    // The episode's AQI alert reached the unhealthy range (PM2.5 above 55.5 µg/m³ gives an AQI
    // above 150).
    let aqi: Vec<&AlertEvent> = events
        .iter()
        .filter(|e| e.kind == Kind::Air && e.rule.starts_with("aqi"))
        .collect();
    assert!(
        aqi.iter()
            .any(|e| e.state == AlertState::Firing && e.value > 150.0),
        "{aqi:?}"
    );
}
