//! Postgres: a real server answers, and a table survives stop and start_again.

// Helpers outside #[test] fns are test code too; clippy only exempts the fns themselves.
#![allow(clippy::unwrap_used)]

use citypulse_harness::Postgres;
use tokio_postgres::{Client, NoTls};

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

#[tokio::test]
async fn select_one_answers() {
    let pg = Postgres::start();
    assert_eq!(
        pg.url(),
        format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port())
    );
    let client = connect(&pg.url()).await;
    let one: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
}

#[tokio::test]
async fn table_survives_stop_and_start_again() {
    let mut pg = Postgres::start();
    let client = connect(&pg.url()).await;
    client
        .batch_execute(
            "CREATE TABLE readings (sensor text, seq bigint); \
                        INSERT INTO readings VALUES ('aq-1', 7);",
        )
        .await
        .unwrap();
    drop(client);

    pg.stop();
    assert!(
        tokio_postgres::connect(&pg.url(), NoTls).await.is_err(),
        "connected while stopped"
    );
    pg.start_again();

    let client = connect(&pg.url()).await;
    let seq: i64 = client
        .query_one("SELECT seq FROM readings", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seq, 7);
}

#[tokio::test]
async fn create_database_returns_a_usable_url() {
    let pg = Postgres::start();
    let url = pg.create_database("citypulse").await;
    assert!(url.ends_with("/citypulse"), "{url}");
    let client = connect(&url).await;
    let name: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "citypulse");
}
