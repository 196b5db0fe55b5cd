//! ADAPTER: what ingest provisions and sends on NATS — stream and consumer settings, the
//! headers of a validated reading and of a dead letter, and ack mapping.

use crate::config::Config;
use crate::validate::Rejection;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream;
use async_nats::jetstream::{AckKind, Message};
use async_nats::HeaderMap;
use citypulse_runtime::stream_config;
use citypulse_schema::streams;
use std::time::Duration;

/// A dead letter's body is the original payload, cut to this size: large enough for any
/// plausible reading (the decoder refuses above 4 KiB), small enough that a megabyte of garbage
/// cannot make the dead letter itself unpublishable and stall the stream.
pub const MAX_DEAD_LETTER_BODY: usize = 64 * 1024;

/// Header of a dead letter whose body was cut: the original payload length in bytes.
pub const HEADER_ORIGINAL_SIZE: &str = "Citypulse-Original-Size";

/// Longest `Citypulse-Detail` value.
const MAX_DETAIL_CHARS: usize = 256;

/// How long an ack, nak or term may take to be handed to the client.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the server waits before redelivering a message whose output was not acknowledged.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);

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

/// The validator's consumer on RAW. `max_ack_pending` leaves room for a full pull batch on top
/// of the publishes in flight.
pub fn validator_consumer(config: &Config) -> pull::Config {
    let pending = (i64::from(config.batch_size) + i64::from(config.max_in_flight)) * 4;
    durable(
        config.consumer_name.clone(),
        config.ack_wait,
        pending.max(10_000),
    )
}

/// The archive's consumer on READINGS, independent of the validator's.
pub fn archive_consumer(config: &Config) -> pull::Config {
    durable(
        config.archive_consumer_name(),
        config.ack_wait,
        (i64::from(config.archive_batch_size) * 2).max(10_000),
    )
}

/// Headers of a validated reading on READINGS: its natural key as `Nats-Msg-Id`.
pub fn reading_headers(msg_id: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(async_nats::header::NATS_MESSAGE_ID, msg_id);
    h
}

/// The `Nats-Msg-Id` of the dead letter of RAW message `raw_sequence`.
pub fn dead_letter_msg_id(raw_sequence: u64) -> String {
    format!("raw:{raw_sequence}")
}

/// A dead letter: subject `dlq.<reason>`, headers with the reason, a one-line human detail, the
/// source subject and RAW sequence; body the original payload (cut to
/// [`MAX_DEAD_LETTER_BODY`], with [`HEADER_ORIGINAL_SIZE`] when cut).
pub fn dead_letter(
    rejection: &Rejection,
    source_subject: &str,
    raw_sequence: u64,
    payload: &bytes::Bytes,
) -> (String, HeaderMap, bytes::Bytes) {
    let reason = rejection.reason();
    let mut h = HeaderMap::new();
    h.insert(
        async_nats::header::NATS_MESSAGE_ID,
        dead_letter_msg_id(raw_sequence).as_str(),
    );
    h.insert(streams::HEADER_REASON, reason);
    h.insert(
        streams::HEADER_DETAIL,
        header_text(&rejection.to_string()).as_str(),
    );
    h.insert(streams::HEADER_SOURCE_SUBJECT, source_subject);
    h.insert(
        streams::HEADER_SOURCE_SEQUENCE,
        raw_sequence.to_string().as_str(),
    );
    let body = if payload.len() > MAX_DEAD_LETTER_BODY {
        h.insert(HEADER_ORIGINAL_SIZE, payload.len().to_string().as_str());
        payload.slice(..MAX_DEAD_LETTER_BODY)
    } else {
        payload.clone()
    };
    (citypulse_schema::subject::dlq_subject(reason), h, body)
}

/// Makes `s` safe as one header value: control characters (CR and LF would end the header)
/// become spaces, and it is cut to a sane length. The detail quotes payload text, which is
/// attacker-controlled.
pub fn header_text(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_DETAIL_CHARS)
        .collect();
    if s.chars().count() > MAX_DETAIL_CHARS {
        out.push('…');
    }
    out.trim().to_owned()
}

/// Settles a message (ack, nak with delay, or term). A failure is returned, never raised: the
/// server redelivers after `ack_wait` and the duplicate is absorbed downstream.
pub async fn settle(msg: &Message, kind: AckKind) -> bool {
    matches!(
        tokio::time::timeout(ACK_TIMEOUT, msg.ack_with(kind)).await,
        Ok(Ok(()))
    )
}

/// The RAW stream sequence of a delivered message (0 when the reply subject is not a JetStream
/// ack subject, which a JetStream consumer never delivers).
pub fn stream_sequence(msg: &Message) -> u64 {
    msg.info().map(|i| i.stream_sequence).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Rejection;
    use citypulse_schema::DecodeError;
    use clap::Parser;

    #[test]
    fn header_text_is_one_safe_line() {
        assert_eq!(header_text("a\r\nb\tc"), "a  b c");
        let long = "x".repeat(1000);
        assert_eq!(header_text(&long).chars().count(), MAX_DETAIL_CHARS + 1);
    }

    #[test]
    fn dead_letter_carries_reason_detail_source_and_original_bytes() {
        let rej = Rejection::Decode(DecodeError::UnknownKind("bus\r\nX-Evil: 1".into()));
        let payload = bytes::Bytes::from_static(b"\xa1\x64kind\x63bus");
        let (subject, h, body) = dead_letter(&rej, "sensors.d1.traffic.s1", 42, &payload);
        assert_eq!(subject, "dlq.unknown_kind");
        assert_eq!(body, payload);
        assert_eq!(
            h.get(streams::HEADER_REASON).unwrap().as_str(),
            "unknown_kind"
        );
        assert_eq!(
            h.get(streams::HEADER_DETAIL).unwrap().as_str(),
            "unknown kind `bus  X-Evil: 1`"
        );
        assert_eq!(
            h.get(streams::HEADER_SOURCE_SUBJECT).unwrap().as_str(),
            "sensors.d1.traffic.s1"
        );
        assert_eq!(
            h.get(streams::HEADER_SOURCE_SEQUENCE).unwrap().as_str(),
            "42"
        );
        assert_eq!(
            h.get(async_nats::header::NATS_MESSAGE_ID).unwrap().as_str(),
            "raw:42"
        );
        assert!(h.get(HEADER_ORIGINAL_SIZE).is_none());
    }

    #[test]
    fn a_huge_dead_letter_is_cut_and_says_so() {
        let rej = Rejection::Decode(DecodeError::Oversized {
            len: 1 << 20,
            max: 4096,
        });
        let payload = bytes::Bytes::from(vec![7u8; 1 << 20]);
        let (_, h, body) = dead_letter(&rej, "sensors.a.air.b", 1, &payload);
        assert_eq!(body.len(), MAX_DEAD_LETTER_BODY);
        assert_eq!(h.get(HEADER_ORIGINAL_SIZE).unwrap().as_str(), "1048576");
    }

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
        assert_eq!(validator_consumer(&c).max_deliver, -1);
        assert_eq!(
            archive_consumer(&c).durable_name.as_deref(),
            Some("ingest-archive")
        );
    }
}
