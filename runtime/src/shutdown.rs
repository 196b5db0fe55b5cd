//! Graceful shutdown: one token, triggered by SIGINT/SIGTERM or by code, awaited everywhere.

use tokio_util::sync::CancellationToken;

/// A clonable shutdown signal. Every loop selects on [`Shutdown::cancelled`] first.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
}

impl Shutdown {
    /// A signal that only code triggers (tests).
    pub fn new() -> Self {
        Self::default()
    }

    /// A signal that SIGINT (Ctrl-C) and SIGTERM also trigger.
    pub fn install() -> Self {
        let shutdown = Self::new();
        let s = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown requested by signal");
            s.trigger();
        });
        shutdown
    }

    /// Requests shutdown.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// True once shutdown was requested.
    pub fn is_triggered(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Completes when shutdown is requested.
    pub async fn cancelled(&self) {
        self.token.cancelled().await;
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the service");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
