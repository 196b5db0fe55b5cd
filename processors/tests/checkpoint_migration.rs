//! A v0.1 partition resumes from its format-1 checkpoint: the fixture `checkpoint_v1.cbor` was
//! written by the v0.1 code (commit 47b49d4, see `fixtures/README.md`) after folding the
//! readings of `fixtures/checkpoint_v1_readings.rs` before the cut. Migrated and restored, it
//! must close the same windows with the same results as a current-format partition that folded
//! every reading from the start.
//!
//! Why equality is the right expectation here: format 2 judges an hour by the minutes its
//! readings cover (45 of 60), format 1 by its quarter-hours with a reading (3 of 4); the
//! migration turns each quarter-hour v0.1 saw into that 15-minute span. The two rules agree
//! whenever a station reports every few minutes (the fixture's 5), which is the case the
//! migration has to get right; they may legitimately disagree on an hour cut by the checkpoint
//! when its readings are sparse (one reading late in each of 3 quarters: v0.1 counted 3
//! quarters, the readings themselves cover less). Such an hour is judged by the migrated
//! quarters, as v0.1 would have judged it. The fixture has both a station whose hour in
//! progress at the cut is valid (`aq-1`: quarters 0–2 before the cut, quarter 3 after) and one
//! whose hour is not (`aq-2`: quarters 0–1, then silent), so a conversion that counted too much
//! or too little coverage changes the results.
//!
//! The other place where the formats legitimately differ: an hour complete before the cut is
//! kept as v0.1 computed its mean, floored to the thousandth (format 2 floors to the billionth).
//! A figure computed from it can then differ by less than 0.001 unit from a pure format-2 run,
//! and a truncated one (NowCast, AQI) only when it lies that close above a truncation step. The
//! fixture's hour 0 (complete at the cut) has the O3, NO2 and SO2 means 43.25, 20.25 and 3.25
//! (whole thousandths, reported as the 1-h values until hour 1 completes), and PM means whose
//! NowCasts truncate alike, so equality is the expectation here too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "fixtures/checkpoint_v1_readings.rs"]
mod fixture;

use citypulse_harness::NatsServer;
use citypulse_processors::checkpoint::{self, CheckpointError, Manifest};
use citypulse_processors::nats::{checkpoint_bucket, CheckpointStore};
use citypulse_processors::window::{Observed, PartitionState};
use citypulse_schema::{Measurement, Reading, WindowMetrics, WindowResult};

const FIXTURE: &[u8] = include_bytes!("fixtures/checkpoint_v1.cbor");
/// The same cut of the same readings, written uncompressed in format 2 (v0.2 before format 3).
const FIXTURE_V2: &[u8] = include_bytes!("fixtures/checkpoint_v2.cbor");
const HOUR: u64 = 3_600_000;

fn fold(state: &mut PartitionState, readings: &[Reading]) -> Vec<WindowResult> {
    for r in readings {
        assert_eq!(state.observe(r, 0), Observed::Accepted, "{r:?}");
    }
    let mut out = Vec::new();
    state.close_ready(&mut out);
    out
}

/// Where the fixture was cut: the first reading at or after `CUT_TS`.
fn cut(readings: &[Reading]) -> usize {
    readings
        .iter()
        .position(|r| r.ts >= fixture::CUT_TS)
        .expect("readings after the cut")
}

/// The O3 mean of `sensor`'s readings in `[from, from + 1 h)`, computed from the readings
/// (thousandths summed, floored to the billionth as the EPA truncation requires).
fn o3_hour_mean(readings: &[Reading], sensor: &str, from: u64) -> f64 {
    let values: Vec<i128> = readings
        .iter()
        .filter(|r| r.sensor == sensor && (from..from + HOUR).contains(&r.ts))
        .map(|r| match &r.data {
            Measurement::Air(a) => (a.o3_ppb.expect("o3") * 1000.0).round() as i128,
            Measurement::Traffic(_) => unreachable!("an air station"),
        })
        .collect();
    let nanos = (values.iter().sum::<i128>() * 1_000_000).div_euclid(values.len() as i128);
    nanos as f64 / 1e9
}

fn air_result<'a>(results: &'a [WindowResult], sensor: &str, end: u64) -> &'a WindowResult {
    results
        .iter()
        .find(|w| w.sensor.as_deref() == Some(sensor) && w.window_end == end)
        .expect("the station's window")
}

#[test]
fn a_v1_checkpoint_resumes_where_it_stopped() {
    let readings = fixture::readings();
    let cut = cut(&readings);
    let c = checkpoint::decode(0, FIXTURE).expect("a format-1 checkpoint migrates");
    assert_eq!((c.format, c.partition), (1, 0));
    assert_eq!(
        c.last_seq as usize, cut,
        "the fixture was cut where the readings say"
    );

    let mut fresh = PartitionState::new(fixture::config());
    let before = fold(&mut fresh, &readings[..cut]);
    // v0.1 closed the same windows before the cut: its outbox is their tail.
    let tail: Vec<String> = before[before.len() - c.outbox.len()..]
        .iter()
        .map(WindowResult::msg_id)
        .collect();
    let outbox: Vec<String> = c.outbox.iter().map(|o| o.msg_id.clone()).collect();
    assert_eq!(outbox, tail);
    for o in &c.outbox {
        let w = WindowResult::decode(&o.payload.0).expect("a v0.1 result still decodes");
        assert_eq!(
            (w.subject(), w.msg_id()),
            (o.subject.clone(), o.msg_id.clone())
        );
    }

    let mut migrated = PartitionState::restore(fixture::config(), c.state).expect("same spec");
    assert_eq!(migrated.watermark(), fresh.watermark());
    let resumed = fold(&mut migrated, &readings[cut..]);
    let expected = fold(&mut fresh, &readings[cut..]);
    assert_eq!(resumed.len(), expected.len());
    for (r, e) in resumed.iter().zip(&expected) {
        assert_eq!(r, e);
    }

    // The figures that depend on the migrated state: the hour in progress at the cut (hour 1)
    // is valid for aq-1 and not for aq-2, and hour 0 (complete at the cut) feeds the NowCast.
    let end = fixture::T0 + 2 * HOUR + 5 * 60_000;
    let WindowMetrics::Air(a1) = &air_result(&resumed, "aq-1", end).metrics else {
        panic!("air metrics");
    };
    let hour1 = fixture::T0 + HOUR;
    assert_eq!(a1.o3_1h_ppb, Some(o3_hour_mean(&readings, "aq-1", hour1)));
    assert!(a1.pm25_nowcast_ugm3.is_some());
    let WindowMetrics::Air(a2) = &air_result(&resumed, "aq-2", end).metrics else {
        panic!("air metrics");
    };
    assert_eq!(a2.o3_1h_ppb, None, "aq-2 covered 2 quarters of hour 1");
}

/// A format-2 checkpoint (uncompressed, written by v0.2 itself) is read as it is: the very state
/// this build reaches from the same readings, and it resumes to the same results.
#[test]
fn a_v2_checkpoint_resumes_where_it_stopped() {
    let readings = fixture::readings();
    let cut = cut(&readings);
    assert_ne!(FIXTURE_V2[..4], [0x28, 0xb5, 0x2f, 0xfd], "not compressed");
    let c = checkpoint::decode(0, FIXTURE_V2).expect("format 2 is read");
    assert_eq!((c.format, c.partition, c.last_seq as usize), (2, 0, cut));

    let mut fresh = PartitionState::new(fixture::config());
    let before = fold(&mut fresh, &readings[..cut]);
    assert_eq!(&c.state, fresh.data());
    let tail: Vec<String> = before[before.len() - 6..]
        .iter()
        .map(WindowResult::msg_id)
        .collect();
    let outbox: Vec<String> = c.outbox.iter().map(|o| o.msg_id.clone()).collect();
    assert_eq!(outbox, tail);

    let mut restored = PartitionState::restore(fixture::config(), c.state).expect("same spec");
    let resumed = fold(&mut restored, &readings[cut..]);
    let expected = fold(&mut fresh, &readings[cut..]);
    assert!(!expected.is_empty());
    assert_eq!(resumed, expected);
}

#[test]
fn a_migrated_checkpoint_is_written_back_in_the_current_format() {
    let c = checkpoint::decode(0, FIXTURE).expect("migrates");
    let bytes = checkpoint::encode(0, c.last_seq, &c.state, &c.outbox);
    let again = checkpoint::decode(0, &bytes).expect("decodes");
    assert_eq!(again.format, checkpoint::FORMAT);
    assert_eq!(
        (again.last_seq, &again.state, &again.outbox),
        (c.last_seq, &c.state, &c.outbox)
    );
}

/// The fixture with its top-level `format` replaced.
fn with_format(format: u32) -> Vec<u8> {
    let mut v: ciborium::Value = ciborium::from_reader(FIXTURE).expect("cbor");
    let map = v.as_map_mut().expect("a map");
    for (k, val) in map.iter_mut() {
        if k.as_text() == Some("format") {
            *val = ciborium::Value::from(format);
        }
    }
    let mut out = Vec::new();
    ciborium::into_writer(&v, &mut out).expect("encodes");
    out
}

#[test]
fn unknown_formats_and_corrupt_checkpoints_are_still_refused() {
    for format in [0, 4, 99] {
        assert_eq!(
            checkpoint::decode(0, &with_format(format)),
            Err(CheckpointError::Format { found: format })
        );
    }
    // Format-1 bytes labelled format 2 or 3 are not misread as those.
    for format in [checkpoint::FORMAT_2, checkpoint::FORMAT] {
        assert!(matches!(
            checkpoint::decode(0, &with_format(format)),
            Err(CheckpointError::Malformed(_))
        ));
    }
    assert!(matches!(
        checkpoint::decode(0, &FIXTURE[..FIXTURE.len() / 2]),
        Err(CheckpointError::Malformed(_))
    ));
    assert!(matches!(
        checkpoint::decode(0, b"not cbor at all"),
        Err(CheckpointError::Malformed(_))
    ));
    assert_eq!(
        checkpoint::decode(5, FIXTURE),
        Err(CheckpointError::Partition {
            expected: 5,
            found: 0
        })
    );
    let mut m = Manifest::describe(FIXTURE, 0, usize::MAX, 1);
    m.format = 4;
    assert_eq!(
        Manifest::decode(&m.encode()),
        Err(CheckpointError::Format { found: 4 })
    );
}

/// A checkpoint of an earlier format in the bucket, as that version left it (its manifest's
/// format, the checkpoint inline), loads through the store and is read; the next save is the
/// current format, compressed.
async fn an_earlier_checkpoint_in_the_bucket_is_replaced(fixture: &[u8], format: u32) {
    let server = NatsServer::start();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let kv = checkpoint_bucket(&js, 1).await.unwrap();
    let mut m = Manifest::describe(fixture, 0, 64 * 1024, 24 * 1024);
    m.format = format;
    kv.put(checkpoint::manifest_key(0), m.encode().into())
        .await
        .unwrap();

    let mut store = CheckpointStore::new(kv.clone(), 0, 1024 * 1024);
    let bytes = store.load().await.unwrap().expect("the earlier checkpoint");
    let c = checkpoint::decode(0, &bytes).expect("read");
    assert_eq!(c.format, format);
    let next = checkpoint::encode(0, c.last_seq, &c.state, &c.outbox);
    store.save(&bytes::Bytes::from(next.clone())).await.unwrap();

    let stored = kv.get(checkpoint::manifest_key(0)).await.unwrap().unwrap();
    let m = Manifest::decode(&stored).unwrap();
    assert_eq!((m.format, m.len), (checkpoint::FORMAT, next.len() as u64));
    assert!(
        next.len() < fixture.len(),
        "{} bytes after, {} before",
        next.len(),
        fixture.len()
    );
    let mut reader = CheckpointStore::new(kv, 0, 1024 * 1024);
    let again = checkpoint::decode(0, &reader.load().await.unwrap().unwrap()).unwrap();
    assert_eq!(
        (again.format, &again.state, &again.outbox),
        (checkpoint::FORMAT, &c.state, &c.outbox)
    );
}

/// The v0.1 KV layout: a format-1 manifest with the checkpoint inline.
#[tokio::test]
async fn a_v1_checkpoint_in_the_bucket_loads_and_is_replaced_by_the_current_format() {
    an_earlier_checkpoint_in_the_bucket_is_replaced(FIXTURE, 1).await;
}

/// v0.2 before format 3: an uncompressed format-2 checkpoint.
#[tokio::test]
async fn a_v2_checkpoint_in_the_bucket_loads_and_is_replaced_by_the_current_format() {
    an_earlier_checkpoint_in_the_bucket_is_replaced(FIXTURE_V2, 2).await;
}
