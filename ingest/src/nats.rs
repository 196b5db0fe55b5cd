//! ADAPTER: what ingest provisions on NATS — stream and consumer settings, message ids — and the
//! archive's ack mapping. Dead letters are built by [`citypulse_runtime::publish::dead_letter`].

use crate::config::Config;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream;
use async_nats::jetstream::{AckKind, Message};
use citypulse_runtime::source::SourceConfig;
use citypulse_runtime::stream_config;
use std::time::Duration;

/// How long an ack, nak or term may take to be handed to the client.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// Idle heartbeat of the validator's pull: a silent server is noticed after two.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// RAW with this process's limits: what devices publish, replayable; a device (or gateway)
/// that sets `Nats-Msg-Id` is deduplicated within the window.
pub fn raw_stream(config: &Config) -> stream::Config {
    stream_config::raw(config.raw_limits())
}

/// READINGS with this process's limits and partition count, deduplicated on `<sensor>:<seq>`.
pub fn readings_stream(config: &Config) -> stream::Config {
    stream_config::readings(config.readings_limits(), config.partitions)
}

/// DLQ with this process's limits, deduplicated on the RAW sequence so a redelivered bad
/// message is dead-lettered once.
pub fn dlq_stream(config: &Config) -> stream::Config {
    stream_config::dlq(config.dlq_limits())
}

/// A durable pull consumer with explicit acks that never gives up on a message.
fn durable(name: String, ack_wait: Duration, max_ack_pending: i64) -> pull::Config {
    pull::Config {
        durable_name: Some(name),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait,
        // Unlimited: a message is only ever settled by an ack (done) or a term (dead-lettered).
        max_deliver: -1,
        max_ack_pending,
        ..Default::default()
    }
}

/// The validator's consumer on RAW, read in order ([`SourceConfig`]): a pull batch is
/// `--batch-size` messages, and the server lets a few batches be delivered ahead of the acks.
pub fn validator_consumer(config: &Config) -> SourceConfig {
    let batch = usize::try_from(config.batch_size).unwrap_or(1000);
    SourceConfig {
        durable: config.consumer_name.clone(),
        description: "citypulse ingest: RAW validator".to_owned(),
        filter_subject: String::new(),
        ack_wait: config.ack_wait,
        max_ack_pending: (i64::from(config.batch_size) * 4).max(10_000),
        batch,
        heartbeat: HEARTBEAT,
    }
}

/// The archive's consumer on READINGS, independent of the validator's.
pub fn archive_consumer(config: &Config) -> pull::Config {
    durable(
        config.archive_consumer_name(),
        config.ack_wait,
        (i64::from(config.archive_batch_size) * 2).max(10_000),
    )
}

/// The `Nats-Msg-Id` of the dead letter of RAW message `raw_sequence`.
pub fn dead_letter_msg_id(raw_sequence: u64) -> String {
    format!("raw:{raw_sequence}")
}

/// Settles a message (ack, nak with delay, or term). A failure is returned, never raised: the
/// server redelivers after `ack_wait` and the duplicate is absorbed downstream.
pub async fn settle(msg: &Message, kind: AckKind) -> bool {
    matches!(
        tokio::time::timeout(ACK_TIMEOUT, msg.ack_with(kind)).await,
        Ok(Ok(()))
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn streams_follow_the_contract() {
        let c = Config::try_parse_from(["x", "--partitions", "5"]).unwrap();
        let r = readings_stream(&c);
        assert_eq!(r.subjects, vec!["readings.*.*.*".to_owned()]);
        let t = r.subject_transform.unwrap();
        assert_eq!(
            t.destination,
            "readings.{{partition(5,1)}}.{{wildcard(1)}}.{{wildcard(2)}}.{{wildcard(3)}}"
        );
        assert_eq!(raw_stream(&c).subjects, vec!["sensors.>".to_owned()]);
        assert_eq!(dlq_stream(&c).subjects, vec!["dlq.>".to_owned()]);
        assert_eq!(validator_consumer(&c).consumer(0).max_deliver, -1);
        assert_eq!(
            archive_consumer(&c).durable_name.as_deref(),
            Some("ingest-archive")
        );
    }
}
