//! Ingest against a real nats-server and PostgreSQL, in-process: every reading gets a verdict,
//! valid ones reach READINGS and the archive once, invalid ones reach `dlq.<reason>` with the
//! right headers, counters agree; the partition transform matches the schema's function;
//! existing streams are kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use ciborium::Value;
use citypulse_harness::{wait_for, NatsServer, Postgres};
use citypulse_ingest::validate::Rejection;
use citypulse_schema::streams::{
    HEADER_DETAIL, HEADER_REASON, HEADER_SOURCE_SEQUENCE, HEADER_SOURCE_SUBJECT,
};
use citypulse_schema::{partition_of, Air, Measurement, Reading};
use common::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn cbor(entries: &[(&str, Value)]) -> Vec<u8> {
    let map = Value::Map(
        entries
            .iter()
            .map(|(k, v)| (Value::Text((*k).to_owned()), v.clone()))
            .collect(),
    );
    let mut out = Vec::new();
    ciborium::into_writer(&map, &mut out).unwrap();
    out
}

fn edit(mut r: Reading, f: impl FnOnce(&mut Reading)) -> Reading {
    f(&mut r);
    r
}

fn traffic(r: &mut Reading) -> &mut citypulse_schema::Traffic {
    match &mut r.data {
        Measurement::Traffic(t) => t,
        Measurement::Air(_) => panic!("not traffic"),
    }
}

fn air(r: &mut Reading) -> &mut Air {
    match &mut r.data {
        Measurement::Air(a) => a,
        Measurement::Traffic(_) => panic!("not air"),
    }
}

/// Invalid messages, one or more per rejection reason: (subject, payload, reason).
fn invalid(now: u64) -> Vec<(String, Vec<u8>, &'static str)> {
    // Sensor 900 is a loop detector, 901 an air station; sequence numbers are distinct from
    // the valid readings'.
    let t = || reading(900, 1, now);
    let a = || reading(901, 1, now);
    let on = |r: Reading, reason| (raw_subject(&r), r.encode(), reason);
    let good = t().encode();
    let subject = raw_subject(&t());
    vec![
        ("sensors.d00.traffic".into(), good.clone(), "bad_subject"),
        (
            "sensors.D00.traffic.loop-0900".into(),
            good.clone(),
            "bad_subject",
        ),
        (subject.clone(), vec![0xa0; 5000], "oversized"),
        (
            subject.clone(),
            good[..good.len() - 3].to_vec(),
            "malformed_cbor",
        ),
        (
            subject.clone(),
            b"{\"json\": true}".to_vec(),
            "malformed_cbor",
        ),
        (subject.clone(), vec![0x83, 1, 2, 3], "not_a_map"),
        (
            subject.clone(),
            cbor(&[("v", 1.into()), ("kind", 7.into())]),
            "wrong_type",
        ),
        (
            subject.clone(),
            cbor(&[("v", 1.into()), ("kind", "traffic".into())]),
            "missing_field",
        ),
        (
            subject.clone(),
            cbor(&[("v", 1.into()), ("kind", "bus\r\nX-Injected: 1".into())]),
            "unknown_kind",
        ),
        (
            subject.clone(),
            cbor(&[("v", 9.into()), ("kind", "traffic".into())]),
            "unsupported_version",
        ),
        (
            "sensors.d00.traffic.loop-0902".into(),
            good.clone(),
            "identity_mismatch",
        ),
        on(edit(t(), |r| r.seq = u64::MAX), "seq_out_of_range"),
        on(edit(t(), |r| r.ts = now + 3_600_000), "future_timestamp"),
        on(edit(t(), |r| r.ts = now - 100 * 3_600_000), "too_old"),
        on(edit(t(), |r| traffic(r).occupancy = f64::NAN), "not_finite"),
        on(
            edit(a(), |r| air(r).pm25_ugm3 = Some(f64::INFINITY)),
            "not_finite",
        ),
        on(
            edit(t(), |r| traffic(r).interval_s = 0),
            "interval_out_of_range",
        ),
        on(edit(t(), |r| traffic(r).lanes = 12), "lanes_out_of_range"),
        on(
            edit(t(), |r| traffic(r).occupancy = 1.5),
            "occupancy_out_of_range",
        ),
        on(
            edit(t(), |r| traffic(r).count = 5000),
            "count_exceeds_capacity",
        ),
        on(
            edit(t(), |r| traffic(r).speed_kmh = Some(400.0)),
            "speed_out_of_range",
        ),
        on(
            edit(a(), |r| air(r).pm25_ugm3 = Some(-50.0)),
            "negative_concentration",
        ),
        on(
            edit(a(), |r| air(r).no2_ppb = Some(1e6)),
            "concentration_out_of_range",
        ),
        on(
            edit(a(), |r| air(r).temp_c = Some(80.0)),
            "temperature_out_of_range",
        ),
        on(
            edit(a(), |r| air(r).rh_pct = Some(140.0)),
            "humidity_out_of_range",
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reading_gets_one_verdict_valid_ones_archived_once_invalid_ones_dead_lettered() {
    let nats = NatsServer::start();
    let pg = Postgres::start();
    let running = Running::start(config(&args(&nats.url(), Some(&pg.url())), &[])).await;
    let js = jetstream(&nats.url()).await;
    wait_for(WAIT, "RAW provisioned", || async {
        js.get_stream("RAW").await.is_ok()
    })
    .await;

    let now = now_ms();
    // N valid readings from 20 sensors; two air readings with small negative noise.
    let mut valid: Vec<Reading> = (0..60u32)
        .map(|i| reading(i % 20, u64::from(i / 20), now))
        .collect();
    valid.push(edit(reading(1, 100, now), |r| {
        air(r).pm25_ugm3 = Some(-0.5)
    }));
    valid.push(edit(reading(3, 100, now), |r| air(r).o3_ppb = Some(-2.0)));
    let bad = invalid(now);
    let covered: BTreeSet<&str> = bad.iter().map(|(_, _, r)| *r).collect();
    assert_eq!(
        covered,
        Rejection::reasons().collect(),
        "every reason has a case"
    );

    // Interleave, and send one valid reading twice (a device retry without a message id).
    let mut expected_reason: HashMap<u64, (&str, String, Vec<u8>)> = HashMap::new();
    let mut bad_iter = bad.into_iter();
    for (i, r) in valid.iter().enumerate() {
        js.publish(raw_subject(r), r.encode().into())
            .await
            .unwrap()
            .await
            .unwrap();
        if i % 2 == 0 {
            if let Some((subject, payload, reason)) = bad_iter.next() {
                let ack = js
                    .publish(subject.clone(), payload.clone().into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
                expected_reason.insert(ack.sequence, (reason, subject, payload));
            }
        }
    }
    for (subject, payload, reason) in bad_iter {
        let ack = js
            .publish(subject.clone(), payload.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
        expected_reason.insert(ack.sequence, (reason, subject, payload));
    }
    let again = &valid[5];
    js.publish(raw_subject(again), again.encode().into())
        .await
        .unwrap()
        .await
        .unwrap();
    let n = valid.len();
    let m = expected_reason.len();

    wait_for(WAIT, "N readings archived and M dead letters", || async {
        archived(&pg.url()).await == Some((n as i64, n as i64))
            && stream_len(&js, "DLQ").await == m as u64
            && readings_len(&js).await == n as u64
    })
    .await;
    // Every RAW message settled: acked or terminated, none pending.
    let raw = js.get_stream("RAW").await.unwrap();
    wait_for(WAIT, "RAW consumer drained", || async {
        let info = raw.consumer_info("ingest").await.unwrap();
        info.num_pending == 0 && info.num_ack_pending == 0
    })
    .await;

    // Dead letters: the right subject and headers, the original bytes.
    let mut per_reason: BTreeMap<&str, usize> = BTreeMap::new();
    for dl in all_messages(&js, "DLQ").await {
        let h = |name: &str| dl.headers.get(name).unwrap().as_str().to_owned();
        let seq: u64 = h(HEADER_SOURCE_SEQUENCE).parse().unwrap();
        let (reason, subject, payload) = expected_reason
            .remove(&seq)
            .expect("one dead letter per bad message");
        assert_eq!(h(HEADER_REASON), reason);
        assert_eq!(dl.subject.as_str(), format!("dlq.{reason}"));
        assert_eq!(h(HEADER_SOURCE_SUBJECT), subject);
        assert_eq!(dl.payload.as_ref(), payload.as_slice());
        assert!(!h(HEADER_DETAIL).is_empty());
        assert!(!h(HEADER_DETAIL).contains('\n'));
        *per_reason.entry(reason).or_insert(0) += 1;
    }
    assert!(
        expected_reason.is_empty(),
        "missing dead letters: {expected_reason:?}"
    );

    // READINGS: each valid reading once, as validated (negative noise clamped).
    let ids = readings_per_id(&js).await;
    assert_eq!(ids.len(), n);
    assert!(ids.values().all(|c| *c == 1));
    for r in &valid {
        assert_eq!(ids.get(&r.msg_id()), Some(&1), "{}", r.msg_id());
    }
    let client = common::pg(&pg.url()).await;
    let row = client
        .query_one(
            "SELECT pm25_ugm3, district, kind, (extract(epoch FROM ts) * 1000)::int8 \
             FROM readings WHERE sensor = 'aq-0001' AND seq = 100",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<f64>>(0), Some(0.0));
    assert_eq!(row.get::<_, String>(1), "d01");
    assert_eq!(row.get::<_, String>(2), "air");
    assert_eq!(row.get::<_, i64>(3), i64::try_from(now).unwrap());

    // Counters agree with what is stored.
    let reg = &running;
    for reason in Rejection::reasons() {
        let expected = per_reason.get(reason).copied().unwrap_or(0) as f64;
        assert_eq!(
            reg.metric("citypulse_ingest_rejected_total", &[("reason", reason)]),
            expected,
            "{reason}"
        );
    }
    let accepted = reg.metric("citypulse_ingest_accepted_total", &[("kind", "traffic")])
        + reg.metric("citypulse_ingest_accepted_total", &[("kind", "air")]);
    assert_eq!(accepted, (n + 1) as f64, "the duplicate is valid too");
    assert_eq!(
        reg.metric("citypulse_ingest_received_total", &[]),
        (n + 1 + m) as f64
    );
    assert_eq!(
        reg.metric(
            "citypulse_ingest_duplicates_total",
            &[("stream", "readings")]
        ),
        1.0
    );
    assert_eq!(
        reg.metric(
            "citypulse_ingest_adjusted_total",
            &[("adjustment", "clamped_negative"), ("field", "pm25_ugm3")]
        ),
        1.0
    );
    assert_eq!(
        reg.metric("citypulse_ingest_archived_rows_total", &[]),
        n as f64
    );
    wait_for(WAIT, "archive lag back to zero", || async {
        reg.metric("citypulse_ingest_archive_lag_messages", &[]) == 0.0
    })
    .await;
    running.stop().await;
}

#[tokio::test]
async fn readings_are_stored_in_the_partition_the_schema_predicts() {
    let nats = NatsServer::start();
    let running = Running::start(config(&args(&nats.url(), None), &["--partitions", "5"])).await;
    let js = jetstream(&nats.url()).await;
    wait_for(WAIT, "RAW provisioned", || async {
        js.get_stream("RAW").await.is_ok()
    })
    .await;
    let now = now_ms();
    let mut districts: Vec<String> = (0..60).map(|i| format!("d{i:02}")).collect();
    districts.extend(["north-side", "old_town", "x", "harbour-2"].map(String::from));
    for (i, d) in districts.iter().enumerate() {
        let mut r = reading(0, i as u64, now);
        r.district = d.clone();
        r.sensor = format!("loop-{i}");
        js.publish(raw_subject(&r), r.encode().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    wait_for(WAIT, "every reading on READINGS", || async {
        readings_len(&js).await == districts.len() as u64
    })
    .await;
    let mut seen = BTreeSet::new();
    for (subject, r) in all_readings(&js).await {
        let tokens: Vec<&str> = subject.split('.').collect();
        let partition = tokens[1].parse::<u32>().unwrap();
        // The batch is filed under its partition, and so is every reading in it.
        assert_eq!(partition, partition_of(tokens[2], 5), "{subject}");
        assert_eq!(partition, partition_of(&r.district, 5), "{subject}");
        seen.insert(partition);
    }
    assert_eq!(seen.len(), 5, "64 districts fill all 5 partitions");
    running.stop().await;
}

#[tokio::test]
async fn a_restart_with_other_settings_keeps_existing_streams_and_their_data() {
    let nats = NatsServer::start();
    let base = args(&nats.url(), None);
    let js = jetstream(&nats.url()).await;

    let first = Running::start(config(&base, &["--raw-max-age", "1h"])).await;
    let r = reading(2, 1, now_ms());
    wait_for(WAIT, "RAW provisioned", || async {
        js.get_stream("RAW").await.is_ok()
    })
    .await;
    js.publish(raw_subject(&r), r.encode().into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_for(WAIT, "the reading validated", || async {
        readings_len(&js).await == 1
    })
    .await;
    first.stop().await;

    let second = Running::start(config(&base, &["--raw-max-age", "2h", "--partitions", "3"])).await;
    let r2 = reading(2, 2, now_ms());
    js.publish(raw_subject(&r2), r2.encode().into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_for(WAIT, "the second reading validated", || async {
        readings_len(&js).await == 2
    })
    .await;
    let mut raw = js.get_stream("RAW").await.unwrap();
    let info = raw.info().await.unwrap();
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    assert_eq!(info.state.messages, 2);
    let mut readings = js.get_stream("READINGS").await.unwrap();
    let transform = readings
        .info()
        .await
        .unwrap()
        .config
        .subject_transform
        .clone()
        .unwrap();
    assert!(transform.destination.contains("partition(8,1)"));
    // Without a database URL there is no archive consumer.
    assert!(readings.consumer_info("ingest-archive").await.is_err());
    second.stop().await;
}

/// A device whose counter restarted: its readings numbered again from 0, at newer times, reach
/// READINGS and the archive, once each, and are not counted as repeats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_counter_restarted_is_archived_in_full() {
    let nats = NatsServer::start();
    let pg = Postgres::start();
    let base = args(&nats.url(), Some(&pg.url()));
    let js = jetstream(&nats.url()).await;
    let start = now_ms() - 200_000;
    let running = Running::start(config(&base, &[])).await;
    wait_for(WAIT, "RAW provisioned", || async {
        js.get_stream("RAW").await.is_ok()
    })
    .await;
    // 70 readings a second apart, then the counter restarts at 0, 100 s after the first.
    let sent = (0..70)
        .map(|seq| reading(0, seq, start + seq * 1000))
        .chain((0..5).map(|seq| reading(0, seq, start + 100_000 + seq * 1000)));
    for r in sent {
        js.publish(raw_subject(&r), r.encode().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    wait_for(WAIT, "75 rows archived", || async {
        archived(&pg.url()).await == Some((75, 70))
    })
    .await;
    assert_eq!(readings_len(&js).await, 75);
    let metric = |name| running.metric(name, &[]);
    assert_eq!(metric("citypulse_ingest_archived_rows_total"), 75.0);
    assert_eq!(metric("citypulse_ingest_archive_duplicate_rows_total"), 0.0);
    let repeats = [("stream", "readings")];
    assert_eq!(
        running.metric("citypulse_ingest_duplicates_total", &repeats),
        0.0
    );
    running.stop().await;
}

/// The end of a backlog is archived the moment it is reached, not after `--archive-max-delay`
/// spent waiting for a batch that will not fill: after an outage or a restart the archive shows
/// as caught up as soon as it is (scripts/bench saw the last 6,000 rows of a backlog wait a
/// second, the default delay). Live, a batch still gathers what arrives within the delay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_end_of_a_backlog_is_archived_without_waiting_for_the_batch_to_fill() {
    let nats = NatsServer::start();
    let pg = Postgres::start();
    let js = jetstream(&nats.url()).await;
    // Without PostgreSQL: 95 readings validated into READINGS messages of 10 (one partition),
    // waiting for the archive.
    let running = Running::start(config(&args(&nats.url(), None), &["--batch-size", "10"])).await;
    wait_for(WAIT, "RAW provisioned", || async {
        js.get_stream("RAW").await.is_ok()
    })
    .await;
    let start = now_ms() - 200_000;
    for seq in 0..95 {
        let r = reading(0, seq, start + seq * 1000);
        js.publish(raw_subject(&r), r.encode().into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    wait_for(WAIT, "95 readings on READINGS", || async {
        readings_len(&js).await == 95
    })
    .await;
    running.stop().await;
    // The archive takes 4 messages a batch, so the backlog ends in a batch that cannot fill; it
    // would wait 10 minutes for more.
    let mut base = args(&nats.url(), Some(&pg.url()));
    let delay = base
        .iter()
        .position(|a| a == "--archive-max-delay")
        .unwrap();
    base[delay + 1] = "10m".into();
    let extra = ["--archive-batch-size", "4"];
    let running = Running::start(config(&base, &extra)).await;
    wait_for(WAIT, "95 rows archived", || async {
        archived(&pg.url()).await == Some((95, 95))
    })
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_stays_idempotent_on_a_time_partitioned_table() {
    let nats = NatsServer::start();
    let pg = Postgres::start();
    let base = args(&nats.url(), Some(&pg.url()));
    let js = jetstream(&nats.url()).await;
    let now = now_ms();
    let publish_range = |from: u64, to: u64| {
        let js = js.clone();
        async move {
            for seq in from..to {
                let r = reading(u32::try_from(seq % 4).unwrap(), seq, now);
                js.publish(raw_subject(&r), r.encode().into())
                    .await
                    .unwrap()
                    .await
                    .unwrap();
            }
        }
    };

    let first = Running::start(config(&base, &[])).await;
    wait_for(WAIT, "RAW provisioned", || async {
        js.get_stream("RAW").await.is_ok()
    })
    .await;
    publish_range(0, 20).await;
    wait_for(WAIT, "20 rows archived", || async {
        archived(&pg.url()).await == Some((20, 20))
    })
    .await;
    first.stop().await;

    // Convert with the documented recipe, and make the archive read READINGS from the start
    // again: the 20 archived readings come back as redeliveries.
    let client = common::pg(&pg.url()).await;
    client
        .batch_execute(include_str!("../sql/readings_partitioned.sql"))
        .await
        .unwrap();
    js.get_stream("READINGS")
        .await
        .unwrap()
        .delete_consumer("ingest-archive")
        .await
        .unwrap();

    let second = Running::start(config(&base, &[])).await;
    publish_range(20, 50).await;
    wait_for(WAIT, "50 rows archived once each", || async {
        archived(&pg.url()).await == Some((50, 50))
            && second.metric("citypulse_ingest_archive_duplicate_rows_total", &[]) == 20.0
    })
    .await;
    assert!(
        common::is_partitioned(&client).await,
        "readings is partitioned"
    );
    let key = citypulse_ingest::store::key(&client).await.unwrap();
    assert_eq!(key, ["sensor", "ts", "seq"]);
    let in_default: i64 = client
        .query_one("SELECT count(*) FROM readings_default", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_default, 0, "every row in its monthly partition");
    assert_eq!(
        second.metric("citypulse_ingest_archived_rows_total", &[]),
        30.0
    );
    second.stop().await;
}
