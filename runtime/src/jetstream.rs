//! JetStream plumbing: idempotent stream and bucket provisioning, retried at start-up
//! ([`provision`]); durable publishing; consumer lag; how long streams hold their input.

use crate::publish::Outgoing;
use crate::retention;
use crate::shutdown::Shutdown;
use async_nats::jetstream::context::CreateStreamErrorKind;
use async_nats::jetstream::kv;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::stream::{Config, Stream};
use async_nats::jetstream::Context;
use prometheus::IntGauge;
use std::time::Duration;

/// How long a service keeps provisioning its streams and buckets at start ([`provision`])
/// before it gives up: NATS may still be starting, a cluster electing its leaders, or a busy
/// cluster answering after the 5 s request timeout.
pub const PROVISION_PATIENCE: Duration = Duration::from_secs(60);

/// Longest pause between two provisioning attempts.
const PROVISION_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Runs `attempt` until it succeeds: after a failure (logged at WARN, naming `what`) it pauses
/// (100 ms, doubling up to 2 s) and tries again, for up to [`PROVISION_PATIENCE`]; then the last
/// error is returned. `Ok(None)` on shutdown. The start-up of every service provisions its
/// streams and buckets through this, so none exits because NATS answered late once.
pub async fn provision<T, F, Fut>(
    what: &str,
    shutdown: &Shutdown,
    mut attempt: F,
) -> anyhow::Result<Option<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = tokio::time::Instant::now() + PROVISION_PATIENCE;
    let mut backoff = Duration::from_millis(100);
    loop {
        let tried = tokio::select! {
            biased;
            () = shutdown.cancelled() => return Ok(None),
            tried = attempt() => tried,
        };
        match tried {
            Ok(done) => return Ok(Some(done)),
            Err(e) if tokio::time::Instant::now() + backoff < deadline => {
                tracing::warn!(what, error = %format!("{e:#}"), "cannot provision yet; retrying");
            }
            Err(e) => return Err(e.context(format!("provisioning {what}"))),
        }
        if !shutdown.back_off(&mut backoff, PROVISION_MAX_BACKOFF).await {
            return Ok(None);
        }
    }
}

/// [`ensure_stream`] through [`provision`]: `Ok(None)` on shutdown.
pub async fn provision_stream(
    js: &Context,
    desired: Config,
    shutdown: &Shutdown,
) -> anyhow::Result<Option<Stream>> {
    let what = format!("stream {}", desired.name);
    provision(&what, shutdown, || ensure_stream(js, desired.clone())).await
}

/// Opens the key-value bucket `config.bucket`, creating it with `config` when it does not
/// exist. Safe to call from several instances at once. An existing bucket is kept as it is.
pub async fn ensure_bucket(js: &Context, config: kv::Config) -> anyhow::Result<kv::Store> {
    let mut last = None;
    for _attempt in 0..3 {
        if let Ok(store) = js.get_key_value(&config.bucket).await {
            return Ok(store);
        }
        match js.create_key_value(config.clone()).await {
            Ok(store) => {
                tracing::info!(bucket = %config.bucket, "created key-value bucket");
                return Ok(store);
            }
            // Created meanwhile by someone else, or not answered in time: read it again.
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "bucket {} could neither be read nor created: {}",
        config.bucket,
        last.map_or_else(String::new, |e| e.to_string())
    ))
}

/// Creates the stream when it does not exist; when it does, keeps it as it is (never destroys
/// data) and logs, at WARN, every setting that differs from `desired`. Safe to call from several
/// services and instances at once.
pub async fn ensure_stream(js: &Context, desired: Config) -> anyhow::Result<Stream> {
    for _attempt in 0..3 {
        match js.get_stream(&desired.name).await {
            Ok(mut stream) => {
                let info = stream.info().await?;
                for diff in config_differences(&info.config, &desired) {
                    tracing::warn!(stream = %desired.name, difference = %diff,
                        "existing stream differs from the desired settings; keeping it as it is");
                }
                return Ok(stream);
            }
            Err(_) => match js.create_stream(desired.clone()).await {
                Ok(stream) => {
                    tracing::info!(stream = %desired.name, subjects = ?desired.subjects, "created stream");
                    return Ok(stream);
                }
                // Someone else created it between our get and our create: read it again.
                Err(e) if matches!(e.kind(), CreateStreamErrorKind::JetStream(_)) => {
                    tracing::debug!(stream = %desired.name, error = %e, "create raced; retrying get");
                }
                Err(e) => {
                    return Err(anyhow::anyhow!("creating stream {}: {e}", desired.name));
                }
            },
        }
    }
    Err(anyhow::anyhow!(
        "stream {} could neither be read nor created",
        desired.name
    ))
}

/// Human-readable differences between an existing stream's settings and the desired ones, over
/// the settings citypulse cares about.
pub fn config_differences(existing: &Config, desired: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |what: &str, a: String, b: String| {
        if a != b {
            out.push(format!("{what}: existing {a}, desired {b}"));
        }
    };
    let mut es = existing.subjects.clone();
    let mut ds = desired.subjects.clone();
    es.sort();
    ds.sort();
    cmp("subjects", format!("{es:?}"), format!("{ds:?}"));
    cmp(
        "storage",
        format!("{:?}", existing.storage),
        format!("{:?}", desired.storage),
    );
    cmp(
        "max_age",
        format!("{:?}", existing.max_age),
        format!("{:?}", desired.max_age),
    );
    // The server reports "no limit" as -1 and "default replicas" as 1; a config built with
    // `..Default::default()` says 0 for both. Compare meanings, not spellings.
    let bytes = |b: i64| {
        if b <= 0 {
            "unlimited".to_owned()
        } else {
            b.to_string()
        }
    };
    let replicas = |r: usize| r.max(1).to_string();
    cmp(
        "max_bytes",
        bytes(existing.max_bytes),
        bytes(desired.max_bytes),
    );
    cmp(
        "duplicate_window",
        format!("{:?}", existing.duplicate_window),
        format!("{:?}", desired.duplicate_window),
    );
    cmp(
        "num_replicas",
        replicas(existing.num_replicas),
        replicas(desired.num_replicas),
    );
    cmp(
        "subject_transform",
        format!("{:?}", existing.subject_transform),
        format!("{:?}", desired.subject_transform),
    );
    out
}

/// Why [`publish_durably`] gave up.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Shutdown was requested before the server acknowledged the message.
    #[error("shutdown before the publish of {subject} was acknowledged")]
    Cancelled {
        /// The subject being published.
        subject: String,
    },
}

/// Publishes `msg` through JetStream and waits for the server's ack, retrying with the same
/// `Nats-Msg-Id` (so the server deduplicates a retry whose first attempt did land) with capped
/// exponential backoff until acked or shutdown. `on_retry` is called with a bounded reason for
/// every failed attempt (for a metric). The message's epoch plays no part here.
pub async fn publish_durably(
    js: &Context,
    msg: &Outgoing,
    shutdown: &Shutdown,
    mut on_retry: impl FnMut(&'static str),
) -> Result<PublishAck, PublishError> {
    let Outgoing {
        subject,
        msg_id,
        payload,
        ..
    } = msg;
    let mut headers = msg.headers.clone();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, msg_id.as_str());
    let mut backoff = Duration::from_millis(50);
    loop {
        let attempt = async {
            let ack = js
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await
                .map_err(|_| "publish")?;
            ack.await.map_err(|_| "ack")
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Err(PublishError::Cancelled { subject: subject.clone() }),
            result = attempt => match result {
                Ok(ack) => return Ok(ack),
                Err(reason) => {
                    on_retry(reason);
                    tracing::debug!(%subject, msg_id, reason, "publish not acknowledged; retrying");
                }
            },
        }
        if !shutdown
            .back_off(&mut backoff, Duration::from_secs(2))
            .await
        {
            return Err(PublishError::Cancelled {
                subject: subject.clone(),
            });
        }
    }
}

/// How often the services read their consumers' lag.
pub const CONSUMER_LAG_INTERVAL: Duration = Duration::from_secs(5);

/// Shortest polling period [`watch_consumer_lag`] accepts (a zero period would spin).
const MIN_LAG_INTERVAL: Duration = Duration::from_millis(10);

/// A durable consumer whose lag [`watch_consumer_lag`] shows, and the gauges it shows it in.
#[derive(Debug, Clone)]
pub struct ConsumerLag {
    /// The stream.
    pub stream: String,
    /// The durable consumer's name.
    pub consumer: String,
    /// Set to the consumer's `num_pending`: messages not yet delivered.
    pub pending: IntGauge,
    /// Set to the consumer's `num_ack_pending`: delivered, not yet acknowledged.
    pub ack_pending: IntGauge,
}

/// Reads `lag`'s consumer every `every` (at least 10 ms) until shutdown and sets its gauges
/// ([`ConsumerLag`]). A failed read (the consumer not created yet, or being recreated; NATS
/// unreachable) is logged at DEBUG and leaves the gauges as they were until the next read
/// succeeds.
pub async fn watch_consumer_lag(
    js: Context,
    lag: ConsumerLag,
    every: Duration,
    shutdown: Shutdown,
) {
    let ConsumerLag {
        stream,
        consumer,
        pending,
        ack_pending,
    } = lag;
    // A handle without a request: the stream may not exist yet either.
    let handle = match js.get_stream_no_info(&stream).await {
        Ok(handle) => handle,
        Err(e) => {
            tracing::warn!(%stream, %consumer, error = %e, "cannot watch consumer lag");
            return;
        }
    };
    let mut ticks = shutdown.every(every.max(MIN_LAG_INTERVAL));
    while ticks.tick().await {
        let info = tokio::select! {
            biased;
            () = shutdown.cancelled() => return,
            info = handle.consumer_info(&consumer) => info,
        };
        match info {
            Ok(info) => {
                pending.set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
                ack_pending.set(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
            }
            Err(e) => {
                tracing::debug!(%stream, %consumer, error = %e, "cannot read consumer info; lag not updated");
            }
        }
    }
}

/// How often the services look at their streams' retention ([`watch_retention`]).
pub const RETENTION_LOOK: Duration = Duration::from_secs(15);
/// The trailing span [`watch_retention`] takes a stream's input rate over.
pub const RETENTION_SPAN: Duration = Duration::from_secs(300);

/// How many looks in a row [`watch_retention`] may fail at a stream before its series goes,
/// rather than hold an old figure: a minute at [`RETENTION_LOOK`].
pub const RETENTION_STALE_LOOKS: u32 = 4;

/// The streams whose retention [`watch_retention`] shows, and the gauges it shows it in.
#[derive(Debug, Clone)]
pub struct StreamRetention {
    /// The streams.
    pub streams: Vec<String>,
    /// One series per stream, its one label the stream's name: the seconds of its current
    /// input its limits hold ([`retention::Horizon`]). A series appears at the stream's first
    /// estimate (two looks), so that none reads 0 (a stream about to lose data) at start, and
    /// goes after [`RETENTION_STALE_LOOKS`] failed looks, so that none holds an old figure.
    pub seconds: prometheus::GaugeVec,
}

/// One stream [`watch_retention`] looks at.
struct Watched {
    stream: String,
    horizon: retention::Horizon,
    /// Looks failed in a row.
    failures: u32,
}

/// Looks at each stream's state and limits every `every` (at least 10 ms) until shutdown, and
/// sets its series to the seconds of its input, at the rate of the last [`RETENTION_SPAN`], that
/// its limits hold ([`retention::Horizon::seconds`]; `+Inf` when none binds). A failed look (the
/// stream not there yet, NATS unreachable) is logged at DEBUG and skipped; after
/// [`RETENTION_STALE_LOOKS`] in a row the series is removed, with a WARN.
pub async fn watch_retention(
    js: Context,
    watched: StreamRetention,
    every: Duration,
    shutdown: Shutdown,
) {
    let start = tokio::time::Instant::now();
    let mut streams: Vec<Watched> = watched
        .streams
        .iter()
        .map(|stream| Watched {
            stream: stream.clone(),
            horizon: retention::Horizon::new(RETENTION_SPAN),
            failures: 0,
        })
        .collect();
    let mut ticks = shutdown.every(every.max(MIN_LAG_INTERVAL));
    while ticks.tick().await {
        for w in &mut streams {
            let info = tokio::select! {
                biased;
                () = shutdown.cancelled() => return,
                info = stream_info(&js, &w.stream) => info,
            };
            match info {
                Ok(info) => {
                    w.failures = 0;
                    w.horizon.observe(retention::Look {
                        at: start.elapsed(),
                        last_seq: info.state.last_sequence,
                        messages: info.state.messages,
                        bytes: info.state.bytes,
                    });
                    let limits = retention::Limits {
                        max_messages: info.config.max_messages,
                        max_bytes: info.config.max_bytes,
                        max_age: info.config.max_age,
                    };
                    if let Some(seconds) = w.horizon.seconds(&limits) {
                        watched.seconds.with_label_values(&[&w.stream]).set(seconds);
                    }
                }
                Err(e) => w.failed(&e, &watched.seconds),
            }
        }
    }
}

impl Watched {
    /// A look failed: DEBUG, and at [`RETENTION_STALE_LOOKS`] in a row the series goes (WARN).
    fn failed(&mut self, error: &anyhow::Error, seconds: &prometheus::GaugeVec) {
        let stream = &self.stream;
        tracing::debug!(%stream, %error, "cannot read stream info; retention not updated");
        self.failures = self.failures.saturating_add(1);
        if self.failures >= RETENTION_STALE_LOOKS && seconds.remove_label_values(&[stream]).is_ok()
        {
            tracing::warn!(%stream, %error, looks = self.failures,
                "cannot look at the stream; its retention is no longer shown");
        }
    }
}

/// One stream's info, asked afresh.
async fn stream_info(
    js: &Context,
    stream: &str,
) -> anyhow::Result<async_nats::jetstream::stream::Info> {
    let handle = js.get_stream_no_info(stream).await?;
    Ok(handle.get_info().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config {
            name: "S".into(),
            subjects: vec!["b.>".into(), "a.>".into()],
            ..Default::default()
        }
    }

    #[test]
    fn server_defaults_are_not_reported_as_differences() {
        let desired = config();
        let mut existing = config();
        existing.max_bytes = -1;
        existing.num_replicas = 1;
        existing.subjects.reverse();
        assert_eq!(
            config_differences(&existing, &desired),
            Vec::<String>::new()
        );
    }

    #[test]
    fn real_differences_are_each_reported() {
        let desired = config();
        let mut existing = config();
        existing.max_bytes = 1024;
        existing.max_age = Duration::from_secs(60);
        existing.num_replicas = 3;
        let diffs = config_differences(&existing, &desired);
        assert_eq!(diffs.len(), 3, "{diffs:?}");
        assert!(diffs[0].starts_with("max_age"), "{diffs:?}");
        assert!(
            diffs[1].contains("existing 1024, desired unlimited"),
            "{diffs:?}"
        );
        assert!(diffs[2].contains("existing 3, desired 1"), "{diffs:?}");
    }
}
