//! The admin HTTP server: `/metrics` in Prometheus text format and `/healthz`.

use crate::shutdown::Shutdown;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, Registry, TextEncoder};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

/// Named readiness checks; `/healthz` answers 200 when all pass, 503 otherwise, listing each,
/// followed by informational notes (say, `role: standby`) that do not affect the status.
#[derive(Debug, Clone, Default)]
pub struct Health {
    checks: Arc<Mutex<BTreeMap<&'static str, bool>>>,
    notes: Arc<Mutex<BTreeMap<&'static str, String>>>,
}

impl Health {
    /// No checks yet: healthy.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets one named check.
    pub fn set(&self, check: &'static str, ok: bool) {
        if let Ok(mut c) = self.checks.lock() {
            c.insert(check, ok);
        }
    }

    /// Sets one named note: shown by `/healthz`, never failing it.
    pub fn note(&self, name: &'static str, value: impl Into<String>) {
        if let Ok(mut n) = self.notes.lock() {
            n.insert(name, value.into());
        }
    }

    /// True when every check passes.
    pub fn is_healthy(&self) -> bool {
        self.checks
            .lock()
            .map(|c| c.values().all(|ok| *ok))
            .unwrap_or(false)
    }

    fn report(&self) -> String {
        let mut out = match self.checks.lock() {
            Ok(c) if c.is_empty() => "ok\n".to_owned(),
            Ok(c) => c
                .iter()
                .map(|(k, ok)| format!("{k}: {}\n", if *ok { "ok" } else { "failing" }))
                .collect(),
            Err(_) => return "health state poisoned\n".to_owned(),
        };
        if let Ok(n) = self.notes.lock() {
            for (k, v) in n.iter() {
                out.push_str(&format!("{k}: {v}\n"));
            }
        }
        out
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Registry,
    health: Health,
}

/// Binds `addr` and serves `/metrics` and `/healthz` until `shutdown`. Returns the bound address
/// (useful with port 0) and the server task.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    health: Health,
    shutdown: Shutdown,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(AdminState { registry, health });
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin server failed");
        }
    });
    tracing::info!(addr = %bound, "admin server listening (/metrics, /healthz)");
    Ok((bound, task))
}

async fn metrics(State(s): State<AdminState>) -> impl IntoResponse {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&s.registry.gather(), &mut buf) {
        Ok(()) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
            buf,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn healthz(State(s): State<AdminState>) -> impl IntoResponse {
    let code = if s.health.is_healthy() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, s.health.report())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_fails_when_any_check_fails() {
        let h = Health::new();
        assert!(h.is_healthy());
        h.set("nats", true);
        h.set("postgres", false);
        assert!(!h.is_healthy());
        assert!(h.report().contains("postgres: failing"));
        h.set("postgres", true);
        assert!(h.is_healthy());
        h.note("role", "standby");
        assert!(h.is_healthy());
        assert!(h.report().ends_with("role: standby\n"), "{}", h.report());
    }
}
