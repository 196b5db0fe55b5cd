//! Graceful shutdown: one token, triggered by SIGINT/SIGTERM or by code, awaited everywhere.

use std::time::Duration;
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

    /// A signal that this one triggers, and that can also be triggered on its own: stops a
    /// group of tasks (say, after one of them failed) without stopping the process.
    pub fn child(&self) -> Self {
        Self {
            token: self.token.child_token(),
        }
    }

    /// The pause of a retry loop: sleeps `backoff` unless shutdown comes first, then doubles it
    /// up to `max`. `false` on shutdown.
    pub async fn back_off(&self, backoff: &mut Duration, max: Duration) -> bool {
        let slept = tokio::select! {
            biased;
            () = self.cancelled() => false,
            () = tokio::time::sleep(*backoff) => true,
        };
        *backoff = (*backoff * 2).min(max);
        slept
    }

    /// A tick every `period` until shutdown ([`Every::tick`]), the first at once. A tick that
    /// came late (the loop's work took longer) delays the next ones rather than bunching them.
    pub fn every(&self, period: Duration) -> Every {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Every {
            interval,
            shutdown: self.clone(),
        }
    }
}

/// The ticks of a periodic loop that ends with shutdown ([`Shutdown::every`]).
#[derive(Debug)]
pub struct Every {
    interval: tokio::time::Interval,
    shutdown: Shutdown,
}

impl Every {
    /// Waits for the next tick: `false` on shutdown.
    pub async fn tick(&mut self) -> bool {
        tokio::select! {
            biased;
            () = self.shutdown.cancelled() => false,
            _ = self.interval.tick() => true,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn back_off_doubles_up_to_the_cap_and_stops_on_shutdown() {
        let shutdown = Shutdown::new();
        let mut backoff = Duration::from_millis(2);
        let max = Duration::from_millis(5);
        assert!(shutdown.back_off(&mut backoff, max).await);
        assert_eq!(backoff, Duration::from_millis(4));
        assert!(shutdown.back_off(&mut backoff, max).await);
        assert_eq!(backoff, max);
        shutdown.trigger();
        assert!(!shutdown.back_off(&mut backoff, max).await);
    }

    #[test]
    fn a_child_follows_its_parent_but_not_the_other_way() {
        let parent = Shutdown::new();
        let child = parent.child();
        child.trigger();
        assert!(child.is_triggered() && !parent.is_triggered());
        let other = parent.child();
        parent.trigger();
        assert!(other.is_triggered());
    }
}
