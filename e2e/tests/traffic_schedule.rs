//! Issue 10, item 5, through the real services: a seeded 24-hour run of the built-in city with
//! demo faults (simulator → ingest → processors → alerts over NATS and PostgreSQL), its
//! congestion alerts compared with the simulator's schedule. The schedule is recomputed here
//! from the same city, seed and start (the schedule is a function of them alone).
//!
//! Every incident the traffic feels (expected demand at its start above the capacity it leaves,
//! with a 10 % margin) raises a congestion alert on its corridor within 15 minutes of its start,
//! resolved within 30 minutes of its end; no congestion alert fires in a district outside its
//! incidents; every strong pollution episode raises its district's AQI alert.
//! `e2e/tests/traffic_alerts_core.rs` checks the traffic side on the pure cores.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use async_nats::jetstream;
use citypulse_e2e::pipeline::{Pipeline, PipelineOptions, SimulatorOptions};
use citypulse_schema::{streams, AlertEvent, AlertState, Kind, WindowResult};
use citypulse_simulator::city::events::{Episode, EventMode, Incident, Schedule};
use citypulse_simulator::city::patterns::{traffic_demand, LocalTime};
use citypulse_simulator::city::City;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MINUTE: u64 = 60_000;
const SENSORS: u64 = 348;

/// Every message of a stream, decoded.
async fn stream<T>(js: &jetstream::Context, name: &str, decode: fn(&[u8]) -> Option<T>) -> Vec<T> {
    let Ok(mut s) = js.get_stream(name).await else {
        return Vec::new();
    };
    let info = s.info().await.unwrap().state.clone();
    let mut out = Vec::new();
    for seq in info.first_sequence..=info.last_sequence {
        if let Ok(m) = s.get_raw_message(seq).await {
            out.extend(decode(&m.payload));
        }
    }
    out
}

fn felt(city: &City, i: &Incident) -> bool {
    let seg = city
        .districts
        .iter()
        .flat_map(|d| &d.segments)
        .nth(i.segment)
        .unwrap();
    traffic_demand(LocalTime::at(i.start_ms, city.utc_offset_minutes)) * seg.peak_demand
        > 1.1 * i.capacity_factor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_day_through_the_services_alerts_on_its_incidents_only() {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // The pipeline passes `--start` as now − 24 h in whole seconds.
    let start_ms = (now_ms - 24 * 3_600_000) / 1000 * 1000;
    let pipeline = Pipeline::launch(PipelineOptions {
        simulator: Some(SimulatorOptions {
            start_ago: Duration::from_secs(24 * 3600),
            sensors: SENSORS,
            faults: "demo".to_owned(),
            args: vec!["--events".to_owned(), "all".to_owned()],
            ..SimulatorOptions::default()
        }),
        ..PipelineOptions::default()
    });
    let city = City::builtin_scaled(SENSORS as usize);
    let js = jetstream::new(async_nats::connect(pipeline.url()).await.unwrap());
    // Caught up once the district windows reach the launch time.
    citypulse_harness::wait_for(Duration::from_secs(900), "24 hours of windows", || async {
        let Ok(s) = js.get_stream(streams::METRICS).await else {
            return false;
        };
        let Ok(m) = s
            .get_last_raw_message_by_subject("metrics.traffic.d01")
            .await
        else {
            return false;
        };
        WindowResult::decode(&m.payload).is_ok_and(|w| w.window_end + 3 * MINUTE >= now_ms)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let all_alerts: Vec<AlertEvent> =
        stream(&js, streams::ALERTS, |b| AlertEvent::decode(b).ok()).await;
    let alerts: Vec<AlertEvent> = all_alerts
        .iter()
        .filter(|a| a.kind == Kind::Traffic && a.rule.starts_with("congestion"))
        .cloned()
        .collect();

    let mut schedule = Schedule::new(&city, 42, start_ms, EventMode::All);
    let mut incidents: Vec<Incident> = Vec::new();
    let mut episodes: Vec<Episode> = Vec::new();
    let mut t = start_ms;
    while t < now_ms {
        schedule.advance_to(t);
        for e in schedule.episodes() {
            if !episodes
                .iter()
                .any(|x| x.start_ms == e.start_ms && x.district == e.district)
            {
                episodes.push(e.clone());
            }
        }
        for i in schedule.incidents() {
            if !incidents
                .iter()
                .any(|x| x.start_ms == i.start_ms && x.segment == i.segment)
            {
                incidents.push(i.clone());
            }
        }
        t += MINUTE;
    }
    println!(
        "{} incidents ({} felt), {} congestion alert events",
        incidents.len(),
        incidents.iter().filter(|i| felt(&city, i)).count(),
        alerts.len()
    );
    let roads: Vec<_> = city.districts.iter().flat_map(|d| &d.segments).collect();
    let on_corridor = |a: &AlertEvent, i: &Incident| {
        a.district == city.districts[i.road.district].id
            && a.sensor.as_deref().is_some_and(|s| {
                roads
                    .iter()
                    .position(|r| r.detectors.iter().any(|d| d == s))
                    .is_some_and(|k| {
                        roads[k].corridor == roads[i.segment].corridor && k <= i.segment
                    })
            })
    };
    for i in incidents
        .iter()
        .filter(|i| felt(&city, i) && i.start_ms + 15 * MINUTE < now_ms)
    {
        let fired = alerts
            .iter()
            .find(|a| a.state == AlertState::Firing && a.at >= i.start_ms && on_corridor(a, i))
            .unwrap_or_else(|| panic!("no alert for {i:?}: {alerts:#?}"));
        assert!(fired.at <= i.start_ms + 15 * MINUTE, "{fired:?} for {i:?}");
        if i.end_ms + 30 * MINUTE < now_ms {
            let resolved = alerts
                .iter()
                .find(|a| a.id == fired.id && a.state == AlertState::Resolved)
                .unwrap_or_else(|| panic!("{fired:?} never resolved"));
            assert!(
                resolved.at <= i.end_ms + 30 * MINUTE,
                "{resolved:?} for {i:?}"
            );
        }
    }
    for a in alerts.iter().filter(|a| a.state == AlertState::Firing) {
        let explained = incidents.iter().any(|i| {
            city.districts[i.road.district].id == a.district
                && a.at >= i.start_ms
                && a.at <= i.end_ms + 30 * MINUTE
        });
        assert!(
            explained,
            "congestion alert outside every incident: {a:?}\n{incidents:#?}"
        );
    }
    assert!(
        incidents.iter().any(|i| felt(&city, i)),
        "no incident the traffic felt: {incidents:#?}"
    );

    // Every pollution episode strong enough to lift a district's PM2.5 NowCast past AQI 100
    // (35.4 µg/m³: 40 µg/m³ extra held for an hour or more) and over three hours before the end
    // raises its district's AQI alert between its start and three hours after its peak.
    let mut checked = 0;
    for e in episodes.iter().filter(|e| {
        e.peak_pm25_ugm3 >= 40.0
            && e.hold_ms >= 60 * MINUTE
            && e.start_ms + e.ramp_ms + e.hold_ms + 180 * MINUTE <= now_ms
    }) {
        checked += 1;
        let district = &city.districts[e.district].id;
        let until = e.start_ms + e.ramp_ms + e.hold_ms + 180 * MINUTE;
        assert!(
            all_alerts.iter().any(|a| {
                a.kind == Kind::Air
                    && a.rule.starts_with("aqi")
                    && &a.district == district
                    && a.state == AlertState::Firing
                    && (e.start_ms..=until).contains(&a.at)
            }),
            "episode without its AQI alert: {e:?}"
        );
    }
    assert!(checked > 0, "no strong episode in the day: {episodes:#?}");
}
