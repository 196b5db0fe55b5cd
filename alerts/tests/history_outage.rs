//! PostgreSQL outages and the alert history (issue 13, bounded memory): while PostgreSQL is
//! down, the rows wait in the outbox and alert delivery goes on; an outage within the outbox's
//! cap loses no row, a longer one keeps the newest `--history-outbox-cap` rows and counts the
//! ones it dropped. Real nats-server and PostgreSQL; the service runs in this process.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use citypulse_harness::{NatsServer, Postgres};
use common::*;
use std::collections::BTreeSet;

const CAP: u32 = 20;

/// Air windows that fire `aqi-usg` once in each of `districts` districts named `<prefix><n>`.
fn firing(prefix: &str, districts: u32) -> Vec<citypulse_schema::WindowResult> {
    (0..districts)
        .flat_map(|d| (0..6).map(move |m| air(&format!("{prefix}{d}"), None, m, 120)))
        .collect()
}

/// `(id, state)` of every row in alert_events.
async fn rows(client: &tokio_postgres::Client) -> BTreeSet<(String, String)> {
    client
        .query("SELECT id, state FROM alert_events", &[])
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default()
}

/// `(id, state)` of published transitions, as the history stores them.
fn keys(published: &[Published]) -> BTreeSet<(String, String)> {
    published
        .iter()
        .map(|p| (p.event.id.clone(), p.event.state.as_str().to_owned()))
        .collect()
}

async fn wait_rows(client: &tokio_postgres::Client, want: &BTreeSet<(String, String)>) {
    citypulse_harness::wait_for(DEADLINE, &format!("{} rows", want.len()), || async {
        rows(client).await == *want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_within_the_cap_loses_no_row_and_a_longer_one_keeps_the_newest() {
    let mut pg = Postgres::start();
    let db = pg.create_database("alerts").await;
    let server = NatsServer::start();
    let (_client, js) = jetstream(&server.url()).await;
    let svc = start_in_process(&server.url(), TEST_RULES, |c| {
        c.database_url = Some(db.clone());
        c.history_outbox_cap = CAP;
    })
    .await;

    // PostgreSQL up: five firings, five rows.
    let last = publish_all(&js, &firing("up", 5)).await;
    wait_processed(&js, last).await;
    let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut want = keys(&alerts_stream(&js).await);
    assert_eq!(want.len(), 5);
    wait_rows(&client, &want).await;
    drop(client);

    // Down: 15 firings (within the cap) are published at once and wait in the outbox.
    tokio::task::block_in_place(|| pg.stop());
    let last = publish_all(&js, &firing("short", 15)).await;
    wait_processed(&js, last).await;
    let published = alerts_stream(&js).await;
    assert_eq!(published.len(), 20, "delivery does not wait for PostgreSQL");
    assert_eq!(svc.metric("citypulse_alerts_store_pending_rows"), 15.0);
    tokio::task::block_in_place(|| pg.start_again());
    let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    want = keys(&published);
    wait_rows(&client, &want).await;
    drop(client);

    // Down again: 30 firings, 10 over the cap; the newest 20 are written once it is back.
    tokio::task::block_in_place(|| pg.stop());
    let last = publish_all(&js, &firing("long", 30)).await;
    wait_processed(&js, last).await;
    let published = alerts_stream(&js).await;
    assert_eq!(published.len(), 50);
    assert_eq!(
        svc.metric("citypulse_alerts_store_pending_rows"),
        f64::from(CAP)
    );
    tokio::task::block_in_place(|| pg.start_again());
    let (client, conn) = tokio_postgres::connect(&db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    want.extend(keys(&published[published.len() - CAP as usize..]));
    wait_rows(&client, &want).await;
    let dropped = citypulse_harness::wait_for(DEADLINE, "10 dropped rows counted", || async {
        svc.metric("citypulse_alerts_store_rows_total") >= 50.0
    });
    dropped.await;
    let registry = svc.registry.gather();
    let counted = |result: &str| {
        registry
            .iter()
            .filter(|f| f.name() == "citypulse_alerts_store_rows_total")
            .flat_map(|f| f.get_metric())
            .filter(|m| m.get_label().iter().any(|l| l.value() == result))
            .map(|m| m.get_counter().get_value())
            .sum::<f64>()
    };
    assert_eq!(counted("dropped"), 10.0);
    assert_eq!(counted("written"), 40.0);
    svc.stop().await;
}
