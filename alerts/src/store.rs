//! PostgreSQL adapter: the alert history. One task owns the client; it reads numbered rows from
//! the [`Outbox`] the pipeline appends to, writes them in batches inside one transaction with
//! idempotent statements, and removes what was committed (rows not yet committed travel in the
//! checkpoint, so a crash loses none). The outbox is the only buffer: bounded, one copy a row.
//!
//! Tables (created idempotently):
//! - `alert_events`: one row per transition, keyed by `(id, state, severity, at)`; a re-write
//!   after a crash changes nothing (except `published`, which only turns true: a suppressed
//!   firing published later when its silence ends).
//! - `alert_acks`: acknowledgements, keyed by `(id, acked_by, at)`.
//! - `alert_silences`: silences, keyed by id; removal fills `removed_at`/`removed_by`.

use crate::engine::{Ack, Silence};
use crate::metrics::AlertsMetrics;
use crate::outbox::Outbox;
use citypulse_runtime::admin::Health;
use citypulse_runtime::shutdown::Shutdown;
use citypulse_schema::AlertEvent;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

/// One row of alert history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Row {
    /// A transition.
    Event {
        /// The transition.
        event: AlertEvent,
        /// Whether it was published on ALERTS.
        published: bool,
        /// The silence that suppressed it.
        silence: Option<String>,
    },
    /// An acknowledgement.
    Ack(Ack),
    /// A silence, created or (with `removed`) ended.
    Silence {
        /// The silence.
        silence: Silence,
        /// Who removed it (`expired` when it ran out) and when (wall-clock ms).
        removed: Option<(String, u64)>,
    },
}

/// The schema, applied at every connect.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alert_events (
    id          text             NOT NULL,
    state       text             NOT NULL,
    severity    text             NOT NULL,
    at          timestamptz      NOT NULL,
    rule        text             NOT NULL,
    kind        text             NOT NULL,
    district    text             NOT NULL,
    sensor      text,
    metric      text             NOT NULL,
    value       double precision NOT NULL,
    threshold   double precision NOT NULL,
    started_at  timestamptz      NOT NULL,
    summary     text             NOT NULL,
    published   boolean          NOT NULL,
    silence_id  text,
    recorded_at timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (id, state, severity, at)
);
CREATE INDEX IF NOT EXISTS alert_events_at ON alert_events (at);
CREATE INDEX IF NOT EXISTS alert_events_district_at ON alert_events (district, at);
CREATE TABLE IF NOT EXISTS alert_acks (
    id        text        NOT NULL,
    acked_by  text        NOT NULL,
    comment   text        NOT NULL,
    at        timestamptz NOT NULL,
    PRIMARY KEY (id, acked_by, at)
);
CREATE TABLE IF NOT EXISTS alert_silences (
    id          text        PRIMARY KEY,
    rule        text,
    district    text,
    kind        text,
    severity    text,
    sensor      text,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    created_by  text        NOT NULL,
    comment     text        NOT NULL,
    removed_at  timestamptz,
    removed_by  text
);
";

const BATCH: usize = 500;

/// Handle of the store task.
#[derive(Debug, Clone)]
pub struct Store {
    outbox: Outbox,
}

impl Store {
    /// Starts the task that owns the PostgreSQL connection (reconnecting forever, with the
    /// `postgres` health check reflecting it) and writes what `outbox` receives.
    pub fn spawn(
        url: String,
        outbox: Outbox,
        metrics: AlertsMetrics,
        health: Health,
        shutdown: Shutdown,
    ) -> (Store, tokio::task::JoinHandle<()>) {
        let task = tokio::spawn(writer(url, outbox.clone(), metrics, health, shutdown));
        (Store { outbox }, task)
    }

    /// The rows waiting for PostgreSQL.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }
}

fn time(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "PostgreSQL connection closed");
        }
    });
    client.batch_execute(SCHEMA).await?;
    Ok(client)
}

async fn writer(
    url: String,
    outbox: Outbox,
    metrics: AlertsMetrics,
    health: Health,
    shutdown: Shutdown,
) {
    health.set("postgres", false);
    let mut client: Option<Client> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        // Connect first (eagerly, so /healthz tells the truth before the first alert).
        let Some(c) = client.as_mut() else {
            match connect(&url).await {
                Ok(c) => {
                    tracing::info!("connected to PostgreSQL; alert history schema ready");
                    health.set("postgres", true);
                    client = Some(c);
                    backoff = Duration::from_millis(100);
                }
                Err(e) => {
                    metrics.store_error();
                    tracing::warn!(error = %e, retry_in = ?backoff, "cannot connect to PostgreSQL; alert history waits");
                    health.set("postgres", false);
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
            continue;
        };
        let batch = outbox.oldest(BATCH);
        let Some((last, _)) = batch.last() else {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                _ = outbox.pushed() => {}
            }
            continue;
        };
        match write(c, &batch).await {
            Ok(()) => {
                metrics.store_rows("written", batch.len());
                outbox.commit(*last);
            }
            Err(e) => {
                metrics.store_error();
                tracing::warn!(error = %e, rows = batch.len(), "writing alert history failed; reconnecting and retrying");
                health.set("postgres", false);
                client = None;
            }
        }
    }
}

async fn write(client: &mut Client, rows: &[(u64, Row)]) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let events: Vec<_> = rows
        .iter()
        .filter_map(|(_, r)| match r {
            Row::Event {
                event,
                published,
                silence,
            } => Some((event, *published, silence)),
            _ => None,
        })
        .collect();
    if !events.is_empty() {
        write_events(&tx, &events).await?;
    }
    for (_, row) in rows {
        match row {
            Row::Event { .. } => {}
            Row::Ack(a) => {
                tx.execute(
                    "INSERT INTO alert_acks (id, acked_by, comment, at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                    &[&a.id, &a.by, &a.comment, &time(a.at)],
                )
                .await?;
            }
            Row::Silence {
                silence: s,
                removed,
            } => {
                let m = &s.matcher;
                let kind = m.kind.map(|k| k.as_str());
                let severity = m.severity.map(|k| k.as_str());
                let removed_by = removed.as_ref().map(|(by, _)| by.as_str());
                let removed_at = removed.as_ref().map(|(_, at)| time(*at));
                tx.execute(
                    "INSERT INTO alert_silences
                       (id, rule, district, kind, severity, sensor, starts_at, ends_at, created_by,
                        comment, removed_at, removed_by)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT (id) DO UPDATE SET
                       removed_at = COALESCE(alert_silences.removed_at, EXCLUDED.removed_at),
                       removed_by = COALESCE(alert_silences.removed_by, EXCLUDED.removed_by)",
                    &[
                        &s.id,
                        &m.rule,
                        &m.district,
                        &kind,
                        &severity,
                        &m.sensor,
                        &time(s.starts_at),
                        &time(s.ends_at),
                        &s.by,
                        &s.comment,
                        &removed_at,
                        &removed_by,
                    ],
                )
                .await?;
            }
        }
    }
    tx.commit().await
}

/// `INSERT INTO alert_events … VALUES` with `rows` rows of placeholders, upserting `published`.
fn insert_events_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO alert_events (id, state, severity, at, rule, kind, district, sensor, metric,
           value, threshold, started_at, summary, published, silence_id) VALUES ",
    );
    for i in 0..rows {
        if i > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..EVENT_COLS {
            if c > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("${}", i * EVENT_COLS + c + 1));
        }
        sql.push(')');
    }
    sql.push_str(
        " ON CONFLICT (id, state, severity, at) DO UPDATE SET
            published = alert_events.published OR EXCLUDED.published",
    );
    sql
}

/// Columns of an `alert_events` insert.
const EVENT_COLS: usize = 15;

/// One multi-row upsert for the transitions of a batch.
async fn write_events(
    tx: &tokio_postgres::Transaction<'_>,
    events: &[(&AlertEvent, bool, &Option<String>)],
) -> Result<(), tokio_postgres::Error> {
    struct Owned {
        state: &'static str,
        severity: &'static str,
        kind: &'static str,
        at: SystemTime,
        started_at: SystemTime,
    }
    let owned: Vec<Owned> = events
        .iter()
        .map(|(e, _, _)| Owned {
            state: e.state.as_str(),
            severity: e.severity.as_str(),
            kind: e.kind.as_str(),
            at: time(e.at),
            started_at: time(e.started_at),
        })
        .collect();
    let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(events.len() * EVENT_COLS);
    for ((e, published, silence), o) in events.iter().zip(&owned) {
        params.extend_from_slice(&[
            &e.id,
            &o.state,
            &o.severity,
            &o.at,
            &e.rule,
            &o.kind,
            &e.district,
            &e.sensor,
            &e.metric,
            &e.value,
            &e.threshold,
            &o.started_at,
            &e.summary,
            published,
            *silence,
        ]);
    }
    // ON CONFLICT cannot touch the same row twice in one statement: check the batch first.
    let mut seen = std::collections::BTreeSet::new();
    let unique = events
        .iter()
        .all(|(e, _, _)| seen.insert((e.id.as_str(), e.state, e.severity, e.at)));
    if unique {
        tx.execute(insert_events_sql(events.len()).as_str(), &params)
            .await?;
    } else {
        // Rare (a suppressed firing published within the same batch): one row at a time.
        let one = insert_events_sql(1);
        for row in params.chunks(EVENT_COLS) {
            tx.execute(one.as_str(), row).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_row_of_an_insert_numbers_its_own_placeholders() {
        let sql = insert_events_sql(2);
        let values = (1..=2 * EVENT_COLS)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .chunks(EVENT_COLS)
            .map(|row| format!("({})", row.join(",")))
            .collect::<Vec<_>>()
            .join(",");
        assert!(
            sql.contains(&format!("VALUES {values} ON CONFLICT")),
            "{sql}"
        );
    }
}
