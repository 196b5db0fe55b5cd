//! ADAPTER: the PostgreSQL readings archive. One [`Store`] owns one connection; the archive task
//! owns the store.
//!
//! The table is created idempotently at connect. Its natural key is `(sensor, ts, seq)`, so a
//! batch written twice (a redelivery after a crash between COMMIT and ack) inserts nothing the
//! second time. A batch is one `COPY … FROM STDIN (FORMAT binary)`: one statement, one
//! transaction, however many rows, and no parsing of text or arrays on the server.
//!
//! **Why `(sensor, ts, seq)`.** A repeat of a reading (a redelivery, a device's retry) repeats its
//! `ts` as well as its `seq`, so the key absorbs it as `(sensor, seq)` would. But a device whose
//! counter restarted sends `seq` numbers it sent before, at newer times: ingest passes those on
//! (docs/wire-format.md), and under a `(sensor, seq)` key the archive skipped them as
//! duplicates — readings lost. And the key, led by `(sensor, ts)`, serves a sensor's time range
//! itself, so the table needs one index besides it, `(district, ts)`, not two: each B-tree
//! entry of a row lands at a sensor's place in the tree, and the second one cost PostgreSQL about
//! a third of its CPU per archived row (docs/benchmarks.md, *The archive: one index fewer*).
//! An archive created by an earlier version keeps its `(sensor, seq)` key and works as before
//! (with a warning at connect); `sql/readings_key_sensor_ts_seq.sql` converts it.
//!
//! **Plain first, skipping after a conflict.** `ON CONFLICT DO NOTHING` makes PostgreSQL insert
//! each row speculatively (probe the key, insert, confirm): on PostgreSQL 15 here, 200,000 rows
//! took 2.6–2.8 s with it and 1.6–1.8 s without (`psql \timing`, `INSERT … SELECT
//! generate_series`, this table and its indexes). Duplicates only come after a crash or a
//! device's very late repeat, so a batch is copied plainly; if it violates the key, the whole
//! statement rolls back and the batch is written again as one `INSERT … SELECT FROM unnest($1,
//! …) ON CONFLICT DO NOTHING` (`COPY` cannot skip a row). The store keeps skipping until a
//! skipping write finds no existing row (a redelivered run of batches is written once each, not
//! twice), then goes back to plain copies.
//!
//! Queries by district or sensor over a time range use `(district, ts)` and the key.
//! The identifiers (`sensor`, `district`, `kind`) collate as `"C"`, bytewise, whatever the
//! database's locale: the B-trees then compare them with `memcmp` rather than the
//! locale's `strcoll`, and an `ORDER BY` sorts the ids (`[a-z0-9_-]`) by byte. On a
//! `C.UTF-8` cluster (what `scripts/demo`'s `initdb` gets on Debian) PostgreSQL spent 9.9–12.2
//! µs of CPU per archived row against 11.5–12.9 (`scripts/bench --pg-locale C.UTF-8`,
//! docs/benchmarks.md, *The archive: identifiers collated bytewise*).
//! A TimescaleDB hypertable or a natively range-partitioned table needs the partitioning column
//! in every unique index: `ts` is in the key already, and the insert names no conflict target,
//! so neither needs a change (recipe in `ingest/README.md`).

use citypulse_schema::{Air, Measurement, Reading};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use std::time::SystemTime;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls, Statement};

/// Creates the readings table and its indexes if they do not exist.
pub const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS readings (
    sensor      text COLLATE "C" NOT NULL,
    seq         bigint           NOT NULL CHECK (seq >= 0),
    district    text COLLATE "C" NOT NULL,
    kind        text COLLATE "C" NOT NULL CHECK (kind IN ('traffic', 'air')),
    ts          timestamptz      NOT NULL,
    count       integer,
    interval_s  integer,
    occupancy   double precision,
    speed_kmh   double precision,
    lanes       integer,
    pm25_ugm3   double precision,
    pm10_ugm3   double precision,
    o3_ppb      double precision,
    no2_ppb     double precision,
    so2_ppb     double precision,
    co_ppm      double precision,
    temp_c      double precision,
    rh_pct      double precision,
    archived_at timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (sensor, ts, seq)
);
CREATE INDEX IF NOT EXISTS readings_district_ts ON readings (district, ts);
"#;

/// The columns a batch writes, in the order [`Rows::row`] and [`Rows::columns`] give their
/// values, with their types: the one list [`copy_statement`] and [`insert_statement`] are built
/// from ([`SCHEMA`] adds constraints and defaults).
const COLUMNS: [(&str, Type); 18] = [
    ("sensor", Type::TEXT),
    ("seq", Type::INT8),
    ("district", Type::TEXT),
    ("kind", Type::TEXT),
    ("ts", Type::TIMESTAMPTZ),
    ("count", Type::INT4),
    ("interval_s", Type::INT4),
    ("occupancy", Type::FLOAT8),
    ("speed_kmh", Type::FLOAT8),
    ("lanes", Type::INT4),
    ("pm25_ugm3", Type::FLOAT8),
    ("pm10_ugm3", Type::FLOAT8),
    ("o3_ppb", Type::FLOAT8),
    ("no2_ppb", Type::FLOAT8),
    ("so2_ppb", Type::FLOAT8),
    ("co_ppm", Type::FLOAT8),
    ("temp_c", Type::FLOAT8),
    ("rh_pct", Type::FLOAT8),
];

/// The types of [`COLUMNS`], in order: what the binary copy writes.
fn column_types() -> Vec<Type> {
    COLUMNS.iter().map(|(_, ty)| ty.clone()).collect()
}

/// [`COLUMNS`]' names, comma-separated.
fn column_names() -> String {
    COLUMNS.map(|(name, _)| name).join(", ")
}

/// Copies a batch (fails on an existing key: see the module docs).
fn copy_statement() -> String {
    format!(
        "COPY readings ({}) FROM STDIN (FORMAT binary)",
        column_names()
    )
}

/// Inserts a batch given as parallel arrays, one parameter per column; with [`SKIP_EXISTING`],
/// the write after a conflict.
fn insert_statement() -> String {
    let names = column_names();
    let arrays: Vec<String> = COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (_, ty))| format!("${}::{}[]", i + 1, ty.name()))
        .collect();
    format!(
        "INSERT INTO readings ({names}) SELECT {names} FROM unnest({}) AS t({names})",
        arrays.join(", ")
    )
}

/// Appended to [`insert_statement`]: a row whose key exists is skipped. No conflict target:
/// whatever the key is (`(sensor, seq)`, or `(sensor, seq, ts)` after a conversion to a
/// hypertable or partitioned table), a duplicate is skipped.
const SKIP_EXISTING: &str = "ON CONFLICT DO NOTHING";

/// Why the archive could not write.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Connecting, creating the schema or preparing the insert failed.
    #[error("connecting to PostgreSQL: {0}")]
    Connect(#[source] tokio_postgres::Error),
    /// Connecting took longer than the timeout.
    #[error("connecting to PostgreSQL timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// The batch insert failed (nothing of it was written).
    #[error("writing {rows} rows: {source}")]
    Write {
        /// Rows in the failed batch.
        rows: usize,
        /// The driver's error.
        #[source]
        source: tokio_postgres::Error,
    },
    /// The batch insert did not answer in time (it may still commit; the key makes that
    /// harmless).
    #[error("writing {rows} rows timed out after {timeout:?}")]
    WriteTimeout {
        /// Rows in the batch.
        rows: usize,
        /// The timeout.
        timeout: Duration,
    },
    /// A reading does not fit the table (a value the validator should have refused).
    #[error("reading {msg_id} does not fit the table: {what}")]
    Unfit {
        /// The reading's natural key.
        msg_id: String,
        /// What does not fit.
        what: &'static str,
    },
}

impl StoreError {
    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            StoreError::Connect(_) | StoreError::ConnectTimeout(_) => "connect",
            StoreError::Write { .. } | StoreError::WriteTimeout { .. } => "write",
            StoreError::Unfit { .. } => "undecodable",
        }
    }
}

/// A batch of rows as parallel column arrays, reusable across batches.
#[derive(Debug, Default)]
pub struct Rows {
    sensor: Vec<String>,
    seq: Vec<i64>,
    district: Vec<String>,
    kind: Vec<&'static str>,
    ts: Vec<SystemTime>,
    count: Vec<Option<i32>>,
    interval_s: Vec<Option<i32>>,
    occupancy: Vec<Option<f64>>,
    speed_kmh: Vec<Option<f64>>,
    lanes: Vec<Option<i32>>,
    /// `pm25_ugm3` … `rh_pct`, in [`Air::values`]' order (the table's too).
    air: [Vec<Option<f64>>; Air::VALUES],
}

impl Rows {
    /// Row `i`'s values, in [`COLUMNS`]' order.
    fn row(&self, i: usize) -> [&(dyn ToSql + Sync); 18] {
        [
            &self.sensor[i],
            &self.seq[i],
            &self.district[i],
            &self.kind[i],
            &self.ts[i],
            &self.count[i],
            &self.interval_s[i],
            &self.occupancy[i],
            &self.speed_kmh[i],
            &self.lanes[i],
            &self.air[0][i],
            &self.air[1][i],
            &self.air[2][i],
            &self.air[3][i],
            &self.air[4][i],
            &self.air[5][i],
            &self.air[6][i],
            &self.air[7][i],
        ]
    }

    /// The batch's columns as arrays, in [`COLUMNS`]' order: the parameters of
    /// [`insert_statement`].
    fn columns(&self) -> [&(dyn ToSql + Sync); 18] {
        [
            &self.sensor,
            &self.seq,
            &self.district,
            &self.kind,
            &self.ts,
            &self.count,
            &self.interval_s,
            &self.occupancy,
            &self.speed_kmh,
            &self.lanes,
            &self.air[0],
            &self.air[1],
            &self.air[2],
            &self.air[3],
            &self.air[4],
            &self.air[5],
            &self.air[6],
            &self.air[7],
        ]
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.sensor.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.sensor.is_empty()
    }

    /// Empties the batch, keeping the allocations.
    pub fn clear(&mut self) {
        self.sensor.clear();
        self.seq.clear();
        self.district.clear();
        self.kind.clear();
        self.ts.clear();
        self.count.clear();
        self.interval_s.clear();
        self.occupancy.clear();
        self.speed_kmh.clear();
        self.lanes.clear();
        self.air.iter_mut().for_each(Vec::clear);
    }

    /// Appends a reading; refuses one whose numbers do not fit the columns (nothing is pushed
    /// then).
    pub fn push(&mut self, r: &Reading) -> Result<(), StoreError> {
        let unfit = |what| StoreError::Unfit {
            msg_id: r.msg_id(),
            what,
        };
        let seq = i64::try_from(r.seq).map_err(|_| unfit("seq above 2^63-1"))?;
        let ts = timestamp(r.ts).ok_or_else(|| unfit("ts after the year 9999"))?;
        let (mut count, mut interval_s, mut occupancy, mut speed_kmh, mut lanes) =
            (None, None, None, None, None);
        let mut air = [None; Air::VALUES];
        match &r.data {
            Measurement::Traffic(t) => {
                count = Some(i32::try_from(t.count).map_err(|_| unfit("count above 2^31-1"))?);
                interval_s = Some(
                    i32::try_from(t.interval_s).map_err(|_| unfit("interval_s above 2^31-1"))?,
                );
                lanes = Some(i32::try_from(t.lanes).map_err(|_| unfit("lanes above 2^31-1"))?);
                occupancy = Some(t.occupancy);
                speed_kmh = t.speed_kmh;
            }
            Measurement::Air(a) => {
                if let Some(i) = a.interval_s {
                    interval_s =
                        Some(i32::try_from(i).map_err(|_| unfit("interval_s above 2^31-1"))?);
                }
                air = a.values();
            }
        }
        self.sensor.push(r.sensor.clone());
        self.seq.push(seq);
        self.district.push(r.district.clone());
        self.kind.push(r.kind().as_str());
        self.ts.push(ts);
        self.count.push(count);
        self.interval_s.push(interval_s);
        self.occupancy.push(occupancy);
        self.speed_kmh.push(speed_kmh);
        self.lanes.push(lanes);
        for (column, value) in self.air.iter_mut().zip(air) {
            column.push(value);
        }
        Ok(())
    }
}

/// The last millisecond of the year 9999 (UTC), since the Unix epoch: a bound well inside
/// PostgreSQL's `timestamptz` (to the year 294276) and its driver's microsecond arithmetic.
const MAX_TS_MS: u64 = 253_402_300_799_999;

/// A reading's `ts` (ms since the Unix epoch) as a time the driver writes exactly; `None` after
/// the year 9999.
fn timestamp(ts_ms: u64) -> Option<SystemTime> {
    (ts_ms <= MAX_TS_MS).then(|| SystemTime::UNIX_EPOCH + Duration::from_millis(ts_ms))
}

/// The columns of the readings table's primary key, in key order.
pub async fn key(client: &Client) -> Result<Vec<String>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT a.attname::text FROM pg_index i \
             CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) \
             JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
             WHERE i.indrelid = 'readings'::regclass AND i.indisprimary ORDER BY k.n",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// A connection to the archive with its statements prepared.
pub struct Store {
    client: Client,
    copy: Statement,
    /// [`column_types`], for the binary copy.
    types: Vec<Type>,
    insert_skipping: Statement,
    /// The last write met an existing key, and no skipping write since found none.
    skipping: AtomicBool,
    connection: tokio::task::JoinHandle<()>,
}

impl Store {
    /// Connects, creates the schema if needed and prepares the insert, within `timeout`.
    pub async fn connect(url: &str, timeout: Duration) -> Result<Store, StoreError> {
        let connecting = async {
            let (client, connection) = tokio_postgres::connect(url, NoTls)
                .await
                .map_err(StoreError::Connect)?;
            let connection = tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "PostgreSQL connection ended");
                }
            });
            client
                .batch_execute(SCHEMA)
                .await
                .map_err(StoreError::Connect)?;
            let key = key(&client).await.map_err(StoreError::Connect)?;
            if !key.iter().any(|c| c == "ts") {
                tracing::warn!(
                    key = %key.join(", "),
                    "the readings archive's key is an earlier version's: readings of a device \
                     whose counter restarted are skipped as duplicates; \
                     ingest/sql/readings_key_sensor_ts_seq.sql converts it"
                );
            }
            let copy = client
                .prepare(&copy_statement())
                .await
                .map_err(StoreError::Connect)?;
            let insert_skipping = client
                .prepare(&format!("{} {SKIP_EXISTING}", insert_statement()))
                .await
                .map_err(StoreError::Connect)?;
            Ok(Store {
                client,
                copy,
                types: column_types(),
                insert_skipping,
                skipping: AtomicBool::new(false),
                connection,
            })
        };
        match tokio::time::timeout(timeout, connecting).await {
            Ok(result) => result,
            Err(_) => Err(StoreError::ConnectTimeout(timeout)),
        }
    }

    /// Writes `rows` in one transaction; returns how many were new. Plainly, or skipping
    /// existing keys after a conflict (module docs). Each statement is bounded by `timeout`; on
    /// timeout it may still commit, which the natural key makes harmless.
    pub async fn insert(&self, rows: &Rows, timeout: Duration) -> Result<u64, StoreError> {
        if !self.skipping.load(Ordering::Relaxed) {
            match self.copy(rows, timeout).await {
                Err(StoreError::Write { source, .. })
                    if source.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
                {
                    self.skipping.store(true, Ordering::Relaxed);
                }
                plain => return plain,
            }
        }
        let inserted = self.insert_skipping(rows, timeout).await?;
        if inserted == rows.len() as u64 {
            self.skipping.store(false, Ordering::Relaxed);
        }
        Ok(inserted)
    }

    /// Whether the next write skips existing keys (the last one met some).
    pub fn is_skipping(&self) -> bool {
        self.skipping.load(Ordering::Relaxed)
    }

    /// Copies `rows` in one statement (all or none of them).
    async fn copy(&self, rows: &Rows, timeout: Duration) -> Result<u64, StoreError> {
        let copying = async {
            let sink = self.client.copy_in(&self.copy).await?;
            let mut writer = std::pin::pin!(BinaryCopyInWriter::new(sink, &self.types));
            for i in 0..rows.len() {
                writer.as_mut().write(&rows.row(i)).await?;
            }
            writer.finish().await
        };
        bounded(copying, rows.len(), timeout).await
    }

    /// Runs the prepared skipping insert on `rows`.
    async fn insert_skipping(&self, rows: &Rows, timeout: Duration) -> Result<u64, StoreError> {
        let params = rows.columns();
        let write = self.client.execute(&self.insert_skipping, &params);
        bounded(write, rows.len(), timeout).await
    }
}

/// Awaits a write of `rows` rows for at most `timeout`.
async fn bounded(
    write: impl std::future::Future<Output = Result<u64, tokio_postgres::Error>>,
    rows: usize,
    timeout: Duration,
) -> Result<u64, StoreError> {
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(source)) => Err(StoreError::Write { rows, source }),
        Err(_) => Err(StoreError::WriteTimeout { rows, timeout }),
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use citypulse_schema::{Air, Traffic};

    /// A loop detector's reading.
    fn loop_reading(speed_kmh: Option<f64>) -> Reading {
        Reading {
            sensor: "l1".into(),
            district: "d1".into(),
            ts: 5,
            seq: 1,
            data: Measurement::Traffic(Traffic {
                count: 3,
                interval_s: 30,
                occupancy: 0.1,
                speed_kmh,
                lanes: 2,
            }),
        }
    }

    /// The columns the statements name are the table's, in its order (less what it fills itself).
    #[test]
    fn the_statements_name_the_tables_columns() {
        let body = &SCHEMA[SCHEMA.find('(').unwrap() + 1..SCHEMA.find("PRIMARY KEY").unwrap()];
        let table: Vec<&str> = body
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|&name| name != "archived_at")
            .collect();
        assert_eq!(table, COLUMNS.map(|(name, _)| name));
        assert_eq!(
            copy_statement(),
            format!(
                "COPY readings ({}) FROM STDIN (FORMAT binary)",
                table.join(", ")
            )
        );
        let insert = insert_statement();
        assert!(insert.contains("unnest($1::text[], $2::int8[], $3::text[], $4::text[], $5::timestamptz[], $6::int4[]"), "{insert}");
        assert!(insert.ends_with("$18::float8[]) AS t(sensor, seq, district, kind, ts, count, interval_s, occupancy, speed_kmh, lanes, pm25_ugm3, pm10_ugm3, o3_ppb, no2_ppb, so2_ppb, co_ppm, temp_c, rh_pct)"), "{insert}");
    }

    /// Each value a row or a column gives is of its column's type: a field out of place in
    /// [`Rows::row`] or [`Rows::columns`] would be written to the wrong column.
    #[test]
    fn values_fit_their_columns_types() {
        let mut rows = Rows::default();
        rows.push(&loop_reading(Some(40.0))).unwrap();
        let mut out = bytes::BytesMut::new();
        for (value, (name, ty)) in rows.row(0).into_iter().zip(&COLUMNS) {
            assert!(
                value.to_sql_checked(ty, &mut out).is_ok(),
                "row value for {name}"
            );
        }
        let arrays = column_types().iter().map(array_of).collect::<Vec<_>>();
        for (value, (ty, (name, _))) in rows.columns().into_iter().zip(arrays.iter().zip(&COLUMNS))
        {
            assert!(
                value.to_sql_checked(ty, &mut out).is_ok(),
                "column array for {name}"
            );
        }
        // And the check can fail: a float is not an int4.
        assert!((&0.1f64 as &(dyn ToSql + Sync))
            .to_sql_checked(&Type::INT4, &mut out)
            .is_err());
    }

    /// The array type of `ty`, for the columns used here.
    fn array_of(ty: &Type) -> Type {
        match *ty {
            Type::TEXT => Type::TEXT_ARRAY,
            Type::INT8 => Type::INT8_ARRAY,
            Type::INT4 => Type::INT4_ARRAY,
            Type::FLOAT8 => Type::FLOAT8_ARRAY,
            Type::TIMESTAMPTZ => Type::TIMESTAMPTZ_ARRAY,
            _ => panic!("no array type for {ty}"),
        }
    }

    #[test]
    fn rows_are_parallel_columns() {
        let mut rows = Rows::default();
        rows.push(&loop_reading(None)).unwrap();
        rows.push(&Reading {
            sensor: "a1".into(),
            district: "d1".into(),
            ts: 6,
            seq: 2,
            data: Measurement::Air(Air {
                pm25_ugm3: Some(9.1),
                ..Air::default()
            }),
        })
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.kind, vec!["traffic", "air"]);
        assert_eq!(rows.count, vec![Some(3), None]);
        assert_eq!(rows.air[0], vec![None, Some(9.1)]);
        let too_big = Reading {
            sensor: "a1".into(),
            district: "d1".into(),
            ts: 6,
            seq: u64::MAX,
            data: Measurement::Air(Air::default()),
        };
        assert!(rows.push(&too_big).is_err());
        assert_eq!(rows.len(), 2);
        rows.clear();
        assert!(rows.is_empty());
        assert!(rows.seq.is_empty());
    }
}
