//! Dev-only integration-test harness: real servers, on free ports, in temp dirs.
//!
//! Use it as a `[dev-dependencies]` entry. Main types:
//! - [`NatsServer`]: one `nats-server` with JetStream, bound to 127.0.0.1, with an HTTP monitoring
//!   port; [`NatsServer::stop`], [`NatsServer::start_again`] and [`NatsServer::restart`] keep the
//!   port and the store dir, for outage and crash tests.
//! - [`NatsCluster`]: three JetStream nodes with routes, ready once a meta leader is elected;
//!   [`create_stream_patiently`] for the replicated streams a test creates on it.
//! - [`Postgres`]: a throwaway PostgreSQL cluster (`initdb` in a temp dir), run as an unprivileged
//!   user when the tests run as root.
//! - [`PullDropProxy`]: a TCP proxy in front of a nats-server that loses one JetStream pull
//!   request, for tests of a consumer whose request never reached the server.
//! - [`wait_for`]: poll a condition instead of sleeping; [`free_port`] and [`http_get`] for tests
//!   that start processes of their own.
//!
//! Every start waits on a readiness signal (the monitoring `/healthz` endpoint and the client
//! port's `INFO` line for NATS, `pg_ctl -w` for PostgreSQL), never on a blind sleep, and fails
//! with the server's log tail when the server does not come up. Dropping a handle kills the
//! server and deletes its directory.
//!
//! Binaries: `nats-server` ≥ 2.11 from `NATS_SERVER_BIN`, the project's `.tools/bin`, or `PATH`
//! ([`nats_server_bin`]); PostgreSQL's `initdb`, `pg_ctl` and `postgres` from `PATH` or
//! `/usr/lib/postgresql/*/bin`. `scripts/install-deps` installs both. A missing binary is a panic,
//! never a skipped test.
//!
//! Module map: `nats` (nats-server and cluster), `postgres`, `net` (free ports, a minimal HTTP
//! GET, log tails), `proxy`.

// A harness exists to fail loudly: a server that cannot start is a broken test environment, and
// a panic carrying the reason and the server's log is the most useful report there is.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod nats;
mod net;
mod postgres;
mod proxy;

use std::future::Future;
use std::time::Duration;

pub use nats::{
    create_stream_patiently, meta_peers_current, nats_server_bin, NatsCluster, NatsServer,
};
pub use net::{free_port, http_get};
pub use postgres::Postgres;
pub use proxy::PullDropProxy;

/// Polls `f` every 20 ms until it returns `true`; panics with `what` once `deadline` has passed.
///
/// Integration tests use it instead of sleeping: it returns as soon as the condition holds. The
/// deadline is measured on tokio's clock, so it follows paused time in tests that pause it.
///
/// ```no_run
/// # async fn demo(count: impl Fn() -> u64) {
/// use std::time::Duration;
/// citypulse_harness::wait_for(Duration::from_secs(10), "100 readings stored", || async {
///     count() >= 100
/// })
/// .await;
/// # }
/// ```
pub async fn wait_for<F, Fut>(deadline: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    loop {
        if f().await {
            return;
        }
        if start.elapsed() >= deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
