//! ADAPTER: what ingest provisions on NATS — stream and consumer settings, message ids. Dead letters are built by [`citypulse_runtime::publish::dead_letter`].

use crate::config::Config;
use async_nats::jetstream::stream;
use citypulse_runtime::source::{pull_bytes, SourceConfig, FILL_WAIT};
use citypulse_runtime::stream_config;
use std::time::Duration;

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

/// Most bytes of RAW a pull of the validator asks for (the limit rises to hold the largest
/// message, [`pull_bytes`]). A pull of 1,000 readings is about 200 KB; a device may publish up
/// to the server's `max_payload` (1 MB in deploy/), which 1,000 at a time would be 1 GB.
pub const RAW_PULL_BYTES: usize = 8 << 20;

/// Most bytes of READINGS a pull of the archive asks for, and an archive batch holds (and one
/// message more): about 20,000 readings, two writes of
/// [`MAX_ROWS_PER_WRITE`](crate::archive::MAX_ROWS_PER_WRITE) rows, in READINGS messages of
/// about 125 readings each (ingest's 1,000-message batch over 8 partitions); ingest writes them
/// up to 512 KiB. The limit rises to twice the server's
/// `max_payload` when that is more ([`pull_bytes`]).
pub const ARCHIVE_PULL_BYTES: usize = 2 << 20;

/// The validator's consumer on RAW, read in order ([`SourceConfig`]): a pull batch is
/// `--batch-size` messages and at most [`RAW_PULL_BYTES`], and the server lets a few batches be
/// delivered ahead of the acks. `max_payload` is the server's.
pub fn validator_consumer(config: &Config, max_payload: usize) -> SourceConfig {
    let batch = usize::try_from(config.batch_size).unwrap_or(1000);
    SourceConfig {
        durable: config.consumer_name.clone(),
        description: "citypulse ingest: RAW validator".to_owned(),
        filter_subject: String::new(),
        ack_wait: config.ack_wait,
        max_ack_pending: (i64::from(config.batch_size) * 4).max(10_000),
        batch,
        max_bytes: pull_bytes(RAW_PULL_BYTES, max_payload),
        heartbeat: HEARTBEAT,
        fill_wait: FILL_WAIT,
        linger: config.linger,
    }
}

/// The archive's consumer on READINGS, independent of the validator's, read in order: a
/// batch is up to `--archive-batch-size` READINGS messages and [`ARCHIVE_PULL_BYTES`].
pub fn archive_consumer(config: &Config, max_payload: usize) -> SourceConfig {
    SourceConfig {
        durable: config.archive_consumer_name(),
        description: "citypulse ingest: READINGS archive".to_owned(),
        filter_subject: String::new(),
        ack_wait: config.ack_wait,
        max_ack_pending: (i64::from(config.archive_batch_size) * 4).max(10_000),
        batch: usize::try_from(config.archive_batch_size).unwrap_or(1000),
        max_bytes: pull_bytes(ARCHIVE_PULL_BYTES, max_payload),
        heartbeat: HEARTBEAT,
        fill_wait: FILL_WAIT,
        linger: Duration::ZERO,
    }
}

/// The `Nats-Msg-Id` of the dead letter of RAW message `raw_sequence`.
pub fn dead_letter_msg_id(raw_sequence: u64) -> String {
    format!("raw:{raw_sequence}")
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
        assert_eq!(validator_consumer(&c, 1 << 20).consumer(0).max_deliver, -1);
        assert_eq!(
            Some(archive_consumer(&c, 1 << 20).durable.as_str()),
            Some("ingest-archive")
        );
        // A pull holds the largest message a server with a larger `max_payload` accepts.
        assert_eq!(validator_consumer(&c, 1 << 20).max_bytes, RAW_PULL_BYTES);
        assert_eq!(validator_consumer(&c, 8 << 20).max_bytes, 16 << 20);
        assert_eq!(archive_consumer(&c, 1 << 20).max_bytes, ARCHIVE_PULL_BYTES);
    }
}
