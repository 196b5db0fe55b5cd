//! SHELL: reading METRICS and ALERTS into the [`Live`] state and broadcasting every change.
//!
//! Three ordered push consumers (ephemeral, flow-controlled, recreated by the client on a gap;
//! delivered to this client's inbox, so the web view never pulls from another consumer):
//! - `latest`: METRICS `metrics.>`, `DeliverPolicy::LastPerSubject`, then live — a fresh page
//!   is full at once, and per-sensor results feed the worst segments;
//! - `history`: METRICS `metrics.*.*` (district results) from two hours ago (stored time), then
//!   live — the district panel's charts;
//! - `alerts`: ALERTS `alerts.>`, `DeliverPolicy::LastPerSubject`, then live — the feed.
//!
//! The active alerts (with their acknowledgements) come from the alerts service itself,
//! `citypulse.alerts.list`, asked after each transition, each relayed request, and every
//! `--active-refresh`.

use crate::decode::cbor_to_json;
use crate::live::{Live, Update, HISTORY_MS};
use crate::metrics::WebMetrics;
use async_nats::jetstream::consumer::{push::OrderedConfig, DeliverPolicy};
use citypulse_runtime::admin::Health;
use citypulse_runtime::shutdown::Shutdown;
use citypulse_schema::{streams, AlertEvent, WindowResult};
use futures::StreamExt;
use serde_json::Value;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{broadcast, Notify};

/// Subject of the alerts service's list request.
pub const ALERTS_LIST: &str = "citypulse.alerts.list";
/// Longest pause between attempts to create a consumer.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the HTTP side and the consumers share.
#[derive(Debug)]
pub struct Shared {
    live: Mutex<Live>,
    tx: broadcast::Sender<Arc<Update>>,
    /// Metrics.
    pub metrics: WebMetrics,
    /// Wakes the active-alerts refresher.
    pub refresh: Notify,
}

impl Shared {
    /// State, a broadcast channel holding `buffer` updates, metrics.
    pub fn new(live: Live, buffer: usize, metrics: WebMetrics) -> Shared {
        let (tx, _) = broadcast::channel(buffer.max(1));
        Shared {
            live: Mutex::new(live),
            tx,
            metrics,
            refresh: Notify::new(),
        }
    }

    /// The state, locked. A poisoned lock (a panic while holding it) still holds usable state.
    pub fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies `f` to the state and broadcasts its update, under the lock: a page that
    /// subscribes and takes its snapshot under the same lock misses nothing.
    pub fn apply(&self, f: impl FnOnce(&mut Live) -> Option<Update>) {
        let mut live = self.live();
        if let Some(u) = f(&mut live) {
            self.metrics.updates.with_label_values(&[u.event]).inc();
            // No receiver is fine: nobody is watching.
            let _ = self.tx.send(Arc::new(u));
        }
    }

    /// A new page: its receiver and the snapshot it starts from.
    pub fn subscribe(&self) -> (broadcast::Receiver<Arc<Update>>, Value) {
        let live = self.live();
        (self.tx.subscribe(), live.snapshot())
    }
}

/// Which consumer, and what a message does to the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Latest,
    History,
    Alerts,
}

impl Role {
    fn label(self) -> &'static str {
        match self {
            Role::Latest => "latest",
            Role::History => "history",
            Role::Alerts => "alerts",
        }
    }

    /// The `/healthz` check of this consumer.
    fn check(self) -> &'static str {
        match self {
            Role::Latest => "metrics_consumer",
            Role::History => "history_consumer",
            Role::Alerts => "alerts_consumer",
        }
    }

    fn stream(self) -> &'static str {
        match self {
            Role::Latest | Role::History => streams::METRICS,
            Role::Alerts => streams::ALERTS,
        }
    }

    fn config(self, deliver_subject: String) -> OrderedConfig {
        let (filter, deliver_policy) = match self {
            Role::Latest => (streams::METRICS_SUBJECTS, DeliverPolicy::LastPerSubject),
            Role::History => {
                let from = time::OffsetDateTime::now_utc()
                    - time::Duration::milliseconds(HISTORY_MS as i64);
                (
                    "metrics.*.*",
                    DeliverPolicy::ByStartTime { start_time: from },
                )
            }
            Role::Alerts => (streams::ALERTS_SUBJECTS, DeliverPolicy::LastPerSubject),
        };
        OrderedConfig {
            deliver_subject,
            filter_subject: filter.to_owned(),
            deliver_policy,
            ..OrderedConfig::default()
        }
    }

    /// Validates and applies one payload; false when it is not a contract message.
    fn apply(self, shared: &Shared, payload: &[u8]) -> bool {
        let valid = match self {
            Role::Alerts => AlertEvent::decode(payload).is_ok(),
            Role::Latest | Role::History => WindowResult::decode(payload).is_ok(),
        };
        let Some(body) = cbor_to_json(payload).ok().filter(|_| valid) else {
            return false;
        };
        match self {
            Role::Latest => shared.apply(|l| l.latest(&body)),
            Role::History => shared.apply(|l| {
                l.history(&body);
                None
            }),
            Role::Alerts => {
                shared.apply(|l| l.alert(&body));
                shared.refresh.notify_one();
            }
        }
        true
    }
}

/// Starts the three consumers and the active-alerts refresher.
pub fn spawn_all(
    client: async_nats::Client,
    shared: Arc<Shared>,
    health: Health,
    shutdown: Shutdown,
    active_refresh: Duration,
    request_timeout: Duration,
) -> Vec<tokio::task::JoinHandle<()>> {
    let js = async_nats::jetstream::new(client.clone());
    let roles = [Role::Latest, Role::History, Role::Alerts];
    // Unhealthy until each consumer reads.
    for role in roles {
        health.set(role.check(), false);
    }
    let mut tasks: Vec<_> = roles
        .into_iter()
        .map(|role| {
            tokio::spawn(follow(
                client.clone(),
                js.clone(),
                role,
                shared.clone(),
                health.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    tasks.push(tokio::spawn(refresh_active(
        client,
        shared,
        shutdown,
        active_refresh,
        request_timeout,
    )));
    tasks
}

/// One consumer, created again (after a pause) whenever it fails, until shutdown.
async fn follow(
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    role: Role,
    shared: Arc<Shared>,
    health: Health,
    shutdown: Shutdown,
) {
    let check = role.check();
    let mut backoff = Duration::from_millis(100);
    loop {
        let inbox = client.new_inbox();
        match consume(&js, role, inbox, &shared, &health, check, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                health.set(check, false);
                shared.metrics.restarts.inc();
                tracing::warn!(
                    consumer = role.label(),
                    stream = role.stream(),
                    error = format!("{e:#}"),
                    "consumer failed; creating it again"
                );
            }
        }
        if !shutdown.back_off(&mut backoff, MAX_BACKOFF).await {
            return;
        }
    }
}

/// Creates the ordered consumer and applies its messages until shutdown (`Ok`) or an error.
async fn consume(
    js: &async_nats::jetstream::Context,
    role: Role,
    inbox: String,
    shared: &Shared,
    health: &Health,
    check: &'static str,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let stream = js.get_stream(role.stream()).await?;
    let consumer = stream.create_consumer(role.config(inbox)).await?;
    let mut messages = consumer.messages().await?;
    health.set(check, true);
    tracing::info!(consumer = role.label(), stream = role.stream(), "reading");
    let label = [role.label()];
    loop {
        let msg = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(()),
            m = messages.next() => m,
        };
        let msg = match msg {
            Some(m) => m?,
            None => anyhow::bail!("the consumer's message stream ended"),
        };
        shared.metrics.messages.with_label_values(&label).inc();
        if !role.apply(shared, &msg.payload) {
            shared.metrics.invalid.with_label_values(&label).inc();
            tracing::debug!(subject = %msg.subject, "not a contract message; skipped");
        }
    }
}

/// Asks the alerts service for its active alerts whenever woken, and every `every`.
async fn refresh_active(
    client: async_nats::Client,
    shared: Arc<Shared>,
    shutdown: Shutdown,
    every: Duration,
    timeout: Duration,
) {
    loop {
        match request(&client, ALERTS_LIST, Vec::new(), timeout).await {
            Ok(body) => match serde_json::from_slice::<Value>(&body) {
                Ok(list) if list.get("alerts").is_some() => shared.apply(|l| l.set_active(list)),
                _ => tracing::warn!("the alerts service's list reply is not a list"),
            },
            Err(e) => tracing::debug!(error = %e, "active alerts not refreshed"),
        }
        tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            () = shared.refresh.notified() => {}
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Why a relayed request got no reply.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Nobody answers the subject (the alerts service is not running).
    #[error("the alerts service does not answer ({0})")]
    Unavailable(String),
    /// No reply in time.
    #[error("no reply from the alerts service within {0:?}")]
    Timeout(Duration),
}

/// One request to the alerts service.
pub async fn request(
    client: &async_nats::Client,
    subject: &str,
    body: Vec<u8>,
    timeout: Duration,
) -> Result<bytes::Bytes, RequestError> {
    let fut = client.request(subject.to_owned(), body.into());
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(msg)) => Ok(msg.payload),
        Ok(Err(e)) => Err(RequestError::Unavailable(e.to_string())),
        Err(_) => Err(RequestError::Timeout(timeout)),
    }
}
