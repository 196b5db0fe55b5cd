//! Connecting to NATS: one set of flags for every service, connection events logged and counted.

use crate::admin::Health;
use anyhow::Context as _;
use async_nats::{ConnectOptions, Event};
use clap::Args;
use prometheus::{IntCounterVec, Opts, Registry};
use std::path::PathBuf;
use std::time::Duration;

/// NATS connection flags shared by every service.
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated for a cluster.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Credentials file (JWT + nkey seed) for operator/JWT mode.
    #[arg(long, env = "NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// User name, for servers with user/password accounts.
    #[arg(long, env = "NATS_USER", requires = "nats_password")]
    pub nats_user: Option<String>,
    /// Password for `--nats-user`.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// Prefix of this client's reply subjects (request replies, JetStream API answers and pull
    /// deliveries). Default: `_INBOX.<client name>`, e.g. `_INBOX.citypulse-ingest`, so the
    /// server's permissions can let each service subscribe to its own replies only.
    #[arg(long, env = "NATS_INBOX_PREFIX", value_parser = parse_inbox_prefix)]
    pub nats_inbox_prefix: Option<String>,
}

impl NatsArgs {
    /// Flags for a plain URL (tests, tools).
    pub fn url(url: impl Into<String>) -> Self {
        NatsArgs {
            nats_url: url.into(),
            nats_creds: None,
            nats_user: None,
            nats_password: None,
            nats_inbox_prefix: None,
        }
    }

    /// The inbox prefix of a client named `client_name`: `--nats-inbox-prefix`, else
    /// `_INBOX.<client_name>`.
    pub fn inbox_prefix(&self, client_name: &str) -> String {
        self.nats_inbox_prefix
            .clone()
            .unwrap_or_else(|| format!("_INBOX.{client_name}"))
    }

    /// Connect options with this client's name, inbox prefix and credentials; callers add
    /// their timeouts and reconnect policy.
    pub async fn options(&self, client_name: &str) -> anyhow::Result<ConnectOptions> {
        let mut opts = ConnectOptions::new()
            .name(client_name)
            .custom_inbox_prefix(self.inbox_prefix(client_name));
        if let Some(creds) = &self.nats_creds {
            opts = opts
                .credentials_file(creds)
                .await
                .with_context(|| format!("reading NATS credentials {}", creds.display()))?;
        }
        if let (Some(user), Some(pass)) = (&self.nats_user, &self.nats_password) {
            opts = opts.user_and_password(user.clone(), pass.clone());
        }
        Ok(opts)
    }
}

/// A subject prefix of literal tokens: no wildcards, spaces or empty tokens.
fn parse_inbox_prefix(s: &str) -> Result<String, String> {
    let valid = s
        .split('.')
        .all(|t| !t.is_empty() && !t.contains(['*', '>']) && !t.chars().any(char::is_whitespace));
    if valid {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a subject prefix (dot-separated tokens without wildcards or spaces)"
        ))
    }
}

/// `citypulse_nats_connection_events_total{event}`: connects, disconnects, slow consumers, errors.
#[derive(Debug, Clone)]
pub struct NatsMetrics {
    events: IntCounterVec,
}

impl NatsMetrics {
    /// Registers the NATS metrics in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Self> {
        let events = IntCounterVec::new(
            Opts::new(
                "citypulse_nats_connection_events_total",
                "NATS client connection events by kind.",
            ),
            &["event"],
        )?;
        crate::metrics::register(registry, events.clone())?;
        for e in [
            "connected",
            "disconnected",
            "lame_duck",
            "slow_consumer",
            "server_error",
            "client_error",
            "draining",
            "closed",
            "other",
        ] {
            events.with_label_values(&[e]);
        }
        Ok(NatsMetrics { events })
    }

    fn record(&self, event: &Event) -> &'static str {
        let label = match event {
            Event::Connected => "connected",
            Event::Disconnected => "disconnected",
            Event::LameDuckMode => "lame_duck",
            Event::SlowConsumer(_) => "slow_consumer",
            Event::ServerError(_) => "server_error",
            Event::ClientError(_) => "client_error",
            Event::Draining => "draining",
            Event::Closed => "closed",
            #[allow(unreachable_patterns)] // async-nats may add events
            _ => "other",
        };
        self.events.with_label_values(&[label]).inc();
        label
    }
}

/// Connects with retries forever (a service outlives a NATS restart), naming the client, and
/// logging, counting and reflecting in `health` (check `nats`) every connection event.
pub async fn connect(
    args: &NatsArgs,
    client_name: &str,
    metrics: NatsMetrics,
    health: Health,
) -> anyhow::Result<async_nats::Client> {
    let mut opts = args
        .options(client_name)
        .await?
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .request_timeout(Some(Duration::from_secs(10)));
    health.set("nats", false);
    let h = health.clone();
    opts = opts.event_callback(move |event| {
        let metrics = metrics.clone();
        let health = h.clone();
        async move {
            let label = metrics.record(&event);
            match &event {
                Event::Connected => {
                    health.set("nats", true);
                    tracing::info!(event = label, "NATS connected");
                }
                Event::Disconnected => {
                    health.set("nats", false);
                    tracing::warn!(event = label, "NATS disconnected; reconnecting");
                }
                // What a shutdown does: not a problem.
                Event::Draining | Event::Closed => {
                    health.set("nats", false);
                    tracing::info!(event = label, "NATS connection {label}");
                }
                other => tracing::warn!(event = label, detail = %other, "NATS event"),
            }
        }
    });
    let servers = server_list(&args.nats_url)?;
    let client = opts
        .connect(servers.as_slice())
        .await
        .with_context(|| format!("connecting to NATS at {}", args.nats_url))?;
    Ok(client)
}

/// Waits until the server has processed everything `client` sent before this call, such as a
/// `subscribe`: one empty message to a fresh subject under the client's inbox comes back on the
/// same connection, which the server handles in order.
///
/// `Client::flush` is not this: it only writes the client's buffer to the socket. A tool that
/// says "subscribed" after a flush races a publisher on another connection (seen: `citypulse
/// tail` missed all three messages of its test in 12 of 150 runs on a loaded machine).
///
/// # Errors
/// When nothing comes back within `timeout` (for instance, a user not allowed to publish to its
/// own inbox: the server refuses the message), or the connection fails.
pub async fn round_trip(client: &async_nats::Client, timeout: Duration) -> anyhow::Result<()> {
    use futures::StreamExt as _;
    let subject = client.new_inbox();
    let mut echo = client.subscribe(subject.clone()).await?;
    client.publish(subject, bytes::Bytes::new()).await?;
    client.flush().await?;
    match tokio::time::timeout(timeout, echo.next()).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => anyhow::bail!("the connection closed before the server answered"),
        Err(_) => anyhow::bail!(
            "the server did not echo a message to this client's inbox within {timeout:?}"
        ),
    }
}

/// The servers of `--nats-url`: one URL, or several separated by commas (a cluster's nodes).
fn server_list(urls: &str) -> anyhow::Result<Vec<async_nats::ServerAddr>> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .with_context(|| format!("--nats-url: `{u}` is not a NATS server URL"))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .and_then(|v| {
            anyhow::ensure!(!v.is_empty(), "--nats-url names no server");
            Ok(v)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_is_a_comma_separated_list_of_urls() {
        let list = server_list("nats://127.0.0.1:4222, nats://127.0.0.1:4223,tls://n3:4222")
            .expect("valid");
        assert_eq!(list.len(), 3);
        assert_eq!(list[1].port(), 4223);
        assert!(server_list("nats://127.0.0.1:notaport").is_err());
        assert!(server_list(" , ").is_err());
    }

    #[test]
    fn the_inbox_prefix_defaults_to_the_client_name() {
        let args = NatsArgs::url("nats://127.0.0.1:4222");
        assert_eq!(
            args.inbox_prefix("citypulse-ingest"),
            "_INBOX.citypulse-ingest"
        );
        let args = NatsArgs {
            nats_inbox_prefix: Some("_R.ingest-2".into()),
            ..args
        };
        assert_eq!(args.inbox_prefix("citypulse-ingest"), "_R.ingest-2");
    }

    #[test]
    fn an_inbox_prefix_is_literal_tokens() {
        assert_eq!(
            parse_inbox_prefix("_INBOX.a-b_c"),
            Ok("_INBOX.a-b_c".into())
        );
        for bad in ["", "_INBOX.", "_INBOX.*", "_INBOX.>", "a..b", "a b"] {
            assert!(parse_inbox_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
