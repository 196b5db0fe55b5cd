//! The archive's store against a real PostgreSQL: a batch holding rows already archived (a
//! redelivery after a crash, a device's very late repeat) is written once with the duplicates
//! skipped, and plain inserts resume once a batch is new again; every column of every kind of
//! reading is archived exactly, by the plain `COPY` and by the skipping insert alike; a device
//! whose counter restarted is archived, not skipped; an earlier version's archive is converted by
//! the documented scripts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use citypulse_harness::Postgres;
use citypulse_ingest::store::{key, Rows, Store};
use citypulse_schema::{Air, Measurement, Reading, Traffic};
use std::ops::Range;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

/// The archive as an earlier version (v0.2) created it: key `(sensor, seq)`, a `(sensor, ts)`
/// index, the database's collation.
const EARLIER_SCHEMA: &str = include_str!("sql/readings_v0_2.sql");

/// The time of a loop detector's reading `seq`, every 30 s.
fn ts(seq: u64) -> u64 {
    1_700_000_000_000 + seq * 30_000
}

fn reading(seq: u64) -> Reading {
    reading_at(seq, ts(seq))
}

fn reading_at(seq: u64, ts: u64) -> Reading {
    Reading {
        sensor: "loop-1".into(),
        district: "d1".into(),
        ts,
        seq,
        data: Measurement::Traffic(Traffic {
            count: 3,
            interval_s: 30,
            occupancy: 0.1,
            speed_kmh: Some(42.0),
            lanes: 2,
        }),
    }
}

fn rows(seqs: Range<u64>) -> Rows {
    let mut rows = Rows::default();
    for seq in seqs {
        rows.push(&reading(seq)).unwrap();
    }
    rows
}

/// Readings `seqs` of a counter that restarted a day after reading 0: the numbers again, newer.
fn restarted(seqs: Range<u64>) -> Rows {
    let mut rows = Rows::default();
    for seq in seqs {
        rows.push(&reading_at(seq, ts(seq) + 86_400_000)).unwrap();
    }
    rows
}

/// `(count(*), count(DISTINCT (seq, ts)))` of the archive (one sensor).
async fn counted(client: &tokio_postgres::Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT (seq, ts)) FROM readings",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The names of the readings table's indexes, sorted.
async fn indexes(client: &tokio_postgres::Client) -> Vec<String> {
    let rows = client
        .query(
            "SELECT indexname::text FROM pg_indexes WHERE tablename = 'readings' ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|&n| n.to_owned()).collect()
}

/// A device whose counter restarted sends `seq` numbers again, at newer times: ingest passes them
/// on (a `seq` far below the newest with a newer time is a restart, `SeqGuard`), and the archive
/// keeps them, while a repeat of a reading (its `ts` too) is still written once.
#[tokio::test]
async fn a_restarted_counter_is_archived_and_a_repeat_is_not() {
    let pg = Postgres::start();
    let url = pg.create_database("restart").await;
    let store = Store::connect(&url, TIMEOUT).await.unwrap();
    let client = common::pg(&url).await;
    assert_eq!(key(&client).await.unwrap(), names(&["sensor", "ts", "seq"]));
    assert_eq!(
        indexes(&client).await,
        names(&["readings_district_ts", "readings_pkey"])
    );

    assert_eq!(store.insert(&rows(0..100), TIMEOUT).await.unwrap(), 100);
    assert_eq!(store.insert(&restarted(0..5), TIMEOUT).await.unwrap(), 5);
    assert!(!store.is_skipping(), "a restart is not a conflict");
    // Redelivered: the restart's readings and the first ones, with their times.
    assert_eq!(store.insert(&restarted(3..6), TIMEOUT).await.unwrap(), 1);
    assert_eq!(store.insert(&rows(98..100), TIMEOUT).await.unwrap(), 0);
    assert_eq!(counted(&client).await, (106, 106));
}

#[tokio::test]
async fn a_batch_with_archived_rows_is_written_once_and_plain_inserts_resume() {
    let pg = Postgres::start();
    let url = pg.create_database("archive").await;
    let store = Store::connect(&url, TIMEOUT).await.unwrap();

    assert_eq!(store.insert(&rows(0..3), TIMEOUT).await.unwrap(), 3);
    assert!(!store.is_skipping());
    // Redelivered: two of its four rows are archived already.
    assert_eq!(store.insert(&rows(1..5), TIMEOUT).await.unwrap(), 2);
    assert!(
        store.is_skipping(),
        "the next write should skip existing keys"
    );
    // Still redelivered (nothing new): skipping goes on.
    assert_eq!(store.insert(&rows(3..5), TIMEOUT).await.unwrap(), 0);
    assert!(store.is_skipping());
    // New again: written (skipping), then plain inserts.
    assert_eq!(store.insert(&rows(5..7), TIMEOUT).await.unwrap(), 2);
    assert!(!store.is_skipping());
    assert_eq!(store.insert(&rows(7..8), TIMEOUT).await.unwrap(), 1);
    // One key twice within a batch.
    let mut twice = rows(8..9);
    twice.push(&reading(8)).unwrap();
    assert_eq!(store.insert(&twice, TIMEOUT).await.unwrap(), 1);

    let client = common::pg(&url).await;
    let row = client
        .query_one(
            "SELECT count(*), count(DISTINCT seq), min(seq), max(seq) FROM readings",
            &[],
        )
        .await
        .unwrap();
    let (n, distinct, lo, hi): (i64, i64, i64, i64) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!((n, distinct, lo, hi), (9, 9, 0, 8));
}

/// Every column of a reading, as the table should hold it: `ts` as ms since the epoch, then
/// count, interval_s, occupancy, speed_kmh, lanes and the eight air fields in table order.
type Columns = (
    String,
    i64,
    String,
    String,
    i64,
    [Option<i32>; 3],
    [Option<f64>; 10],
);

/// What the archive should hold for `r`, written out from the reading's own fields.
fn expected(r: &Reading) -> Columns {
    let (mut ints, mut floats) = ([None; 3], [None; 10]);
    let kind = match &r.data {
        Measurement::Traffic(t) => {
            ints = [t.count, t.interval_s, t.lanes].map(|n| Some(n as i32));
            (floats[0], floats[1]) = (Some(t.occupancy), t.speed_kmh);
            "traffic"
        }
        Measurement::Air(a) => {
            ints[1] = a.interval_s.map(|i| i as i32);
            floats[2..].copy_from_slice(&[
                a.pm25_ugm3,
                a.pm10_ugm3,
                a.o3_ppb,
                a.no2_ppb,
                a.so2_ppb,
                a.co_ppm,
                a.temp_c,
                a.rh_pct,
            ]);
            "air"
        }
    };
    let (sensor, district, seq, ts) = (r.sensor.clone(), r.district.clone(), r.seq, r.ts);
    (
        sensor,
        seq as i64,
        district,
        kind.into(),
        ts as i64,
        ints,
        floats,
    )
}

/// A traffic reading with or without a speed, or an air reading with every field or a few.
fn varied(seq: u64) -> Reading {
    let data = match seq % 4 {
        0 => Measurement::Traffic(Traffic {
            count: 17 + seq as u32,
            interval_s: 30,
            occupancy: 0.125,
            speed_kmh: Some(47.25 + seq as f64),
            lanes: 3,
        }),
        1 => Measurement::Traffic(Traffic {
            count: 0,
            interval_s: 60,
            occupancy: 0.0,
            speed_kmh: None,
            lanes: 1,
        }),
        2 => Measurement::Air(Air {
            pm25_ugm3: Some(9.5),
            pm10_ugm3: Some(21.75),
            o3_ppb: Some(41.0 + seq as f64),
            no2_ppb: Some(12.5),
            so2_ppb: Some(1.25),
            co_ppm: Some(0.375),
            temp_c: Some(-3.5),
            rh_pct: Some(88.0),
            interval_s: Some(3600),
        }),
        _ => Measurement::Air(Air {
            pm25_ugm3: Some(33.0 + seq as f64),
            no2_ppb: Some(7.0),
            ..Air::default()
        }),
    };
    Reading {
        sensor: format!("s-{}", seq % 3),
        district: format!("d{}", seq % 2),
        ts: 1_700_000_000_123 + seq * 61_001,
        seq,
        data,
    }
}

#[tokio::test]
async fn every_column_is_archived_exactly_by_the_copy_and_by_the_skipping_insert() {
    let pg = Postgres::start();
    let url = pg.create_database("columns").await;
    let store = Store::connect(&url, TIMEOUT).await.unwrap();
    let batch = |seqs: Range<u64>| {
        let mut rows = Rows::default();
        for seq in seqs {
            rows.push(&varied(seq)).unwrap();
        }
        rows
    };
    // 0..8 copied plainly; 4..12 meets existing keys, so 8..12 goes through the skipping insert.
    assert_eq!(store.insert(&batch(0..8), TIMEOUT).await.unwrap(), 8);
    assert!(!store.is_skipping());
    assert_eq!(store.insert(&batch(4..12), TIMEOUT).await.unwrap(), 4);
    assert!(store.is_skipping());

    let client = common::pg(&url).await;
    let rows = client
        .query(
            "SELECT sensor, seq, district, kind, (extract(epoch FROM ts) * 1000)::int8, \
             count, interval_s, lanes, occupancy, speed_kmh, pm25_ugm3, pm10_ugm3, o3_ppb, \
             no2_ppb, so2_ppb, co_ppm, temp_c, rh_pct FROM readings ORDER BY seq",
            &[],
        )
        .await
        .unwrap();
    let archived: Vec<Columns> = rows
        .iter()
        .map(|row| {
            (
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                std::array::from_fn(|i| row.get(5 + i)),
                std::array::from_fn(|i| row.get(8 + i)),
            )
        })
        .collect();
    let want: Vec<Columns> = (0..12).map(|seq| expected(&varied(seq))).collect();
    assert_eq!(archived, want);
}

/// The identifier columns' collations, in table order.
async fn collations(client: &tokio_postgres::Client) -> Vec<(String, Option<String>)> {
    let rows = client
        .query(
            "SELECT column_name::text, collation_name::text FROM information_schema.columns \
             WHERE table_name = 'readings' AND data_type = 'text' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

fn bytewise() -> Vec<(String, Option<String>)> {
    ["sensor", "district", "kind"]
        .map(|name| (name.to_owned(), Some("C".to_owned())))
        .to_vec()
}

/// The identifiers collate bytewise whatever the database's locale, so the three B-trees compare
/// them with `memcmp`, not the locale's `strcoll`.
#[tokio::test]
async fn the_identifier_columns_collate_bytewise() {
    let pg = Postgres::start();
    let url = pg.create_database("collation").await;
    let _store = Store::connect(&url, TIMEOUT).await.unwrap();
    assert_eq!(collations(&common::pg(&url).await).await, bytewise());
}

/// An archive created before the identifiers collated bytewise is left alone at start, and
/// `sql/readings_collate_c.sql` converts it, rows kept; ingest writes on after it.
#[tokio::test]
async fn an_earlier_archive_is_converted_by_the_documented_script() {
    let pg = Postgres::start();
    let url = pg.create_database("upgrade").await;
    let client = common::pg(&url).await;
    client.batch_execute(EARLIER_SCHEMA).await.unwrap();
    let store = Store::connect(&url, TIMEOUT).await.unwrap();
    assert_eq!(store.insert(&rows(0..3), TIMEOUT).await.unwrap(), 3);
    let default = |name: &str| (name.to_owned(), None);
    let left = vec![default("sensor"), default("district"), default("kind")];
    assert_eq!(collations(&client).await, left, "start-up leaves it alone");
    drop(store);

    client
        .batch_execute(include_str!("../sql/readings_collate_c.sql"))
        .await
        .unwrap();
    assert_eq!(collations(&client).await, bytewise());
    let store = Store::connect(&url, TIMEOUT).await.unwrap();
    assert_eq!(store.insert(&rows(2..5), TIMEOUT).await.unwrap(), 2);
    let count: i64 = client
        .query_one("SELECT count(DISTINCT seq) FROM readings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 5);
}

/// An archive keyed `(sensor, seq)` by an earlier version is left alone at start (a restarted
/// counter's readings are skipped there, as before), and `sql/readings_key_sensor_ts_seq.sql`
/// gives it the new key and drops the index the key makes redundant, rows kept; ingest writes
/// on after it, the restart's readings included.
#[tokio::test]
async fn an_earlier_key_is_converted_by_the_documented_script() {
    let pg = Postgres::start();
    let url = pg.create_database("key").await;
    let client = common::pg(&url).await;
    client.batch_execute(EARLIER_SCHEMA).await.unwrap();
    let store = Store::connect(&url, TIMEOUT).await.unwrap();
    assert_eq!(store.insert(&rows(0..100), TIMEOUT).await.unwrap(), 100);
    assert_eq!(store.insert(&restarted(0..5), TIMEOUT).await.unwrap(), 0);
    assert_eq!(key(&client).await.unwrap(), names(&["sensor", "seq"]));
    let earlier = [
        "readings_district_ts",
        "readings_pkey",
        "readings_sensor_ts",
    ];
    assert_eq!(indexes(&client).await, names(&earlier), "start-up left it");
    drop(store);

    client
        .batch_execute(include_str!("../sql/readings_key_sensor_ts_seq.sql"))
        .await
        .unwrap();
    assert_eq!(key(&client).await.unwrap(), names(&["sensor", "ts", "seq"]));
    assert_eq!(
        indexes(&client).await,
        names(&["readings_district_ts", "readings_pkey"])
    );
    let store = Store::connect(&url, TIMEOUT).await.unwrap();
    assert_eq!(store.insert(&restarted(0..5), TIMEOUT).await.unwrap(), 5);
    assert_eq!(store.insert(&rows(99..101), TIMEOUT).await.unwrap(), 1);
    assert_eq!(counted(&client).await, (106, 106));
    // A rollback: the earlier version's start-up DDL passes on the converted table.
    drop(store);
    client.batch_execute(EARLIER_SCHEMA).await.unwrap();
    let store = Store::connect(&url, TIMEOUT).await.unwrap();
    assert_eq!(store.insert(&restarted(5..7), TIMEOUT).await.unwrap(), 2);
}

/// `sql/readings_partitioned.sql` converts an earlier version's archive too: rows kept, the new
/// key on the partitioned table, the restart's readings archived after it.
#[tokio::test]
async fn an_earlier_archive_is_partitioned_by_the_documented_script() {
    let pg = Postgres::start();
    let url = pg.create_database("partitioned").await;
    let client = common::pg(&url).await;
    client.batch_execute(EARLIER_SCHEMA).await.unwrap();
    let store = Store::connect(&url, TIMEOUT).await.unwrap();
    assert_eq!(store.insert(&rows(0..100), TIMEOUT).await.unwrap(), 100);
    drop(store);

    client
        .batch_execute(include_str!("../sql/readings_partitioned.sql"))
        .await
        .unwrap();
    assert!(
        common::is_partitioned(&client).await,
        "readings is partitioned"
    );
    assert_eq!(key(&client).await.unwrap(), names(&["sensor", "ts", "seq"]));
    let store = Store::connect(&url, TIMEOUT).await.unwrap();
    assert_eq!(store.insert(&restarted(0..5), TIMEOUT).await.unwrap(), 5);
    assert_eq!(store.insert(&rows(99..101), TIMEOUT).await.unwrap(), 1);
    assert_eq!(counted(&client).await, (106, 106));
}
