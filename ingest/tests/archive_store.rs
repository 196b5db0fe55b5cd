//! The archive's store against a real PostgreSQL: a batch holding rows already archived (a
//! redelivery after a crash, a device's very late repeat) is written once with the duplicates
//! skipped, and plain inserts resume once a batch is new again.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use citypulse_harness::Postgres;
use citypulse_ingest::store::{Rows, Store};
use citypulse_schema::{Measurement, Reading, Traffic};
use std::ops::Range;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(30);

fn reading(seq: u64) -> Reading {
    Reading {
        sensor: "loop-1".into(),
        district: "d1".into(),
        ts: 1_700_000_000_000 + seq * 30_000,
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

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
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
