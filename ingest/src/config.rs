//! Process settings: flags, each with an environment variable and a default.

use crate::validate::TimeLimits;
use citypulse_runtime::duration;
use citypulse_runtime::nats::NatsArgs;
use citypulse_runtime::stream_config::Limits;
use citypulse_runtime::telemetry::LogArgs;
use clap::Parser;
use std::net::SocketAddr;
use std::time::Duration;

/// citypulse-ingest: validates every reading on RAW (`sensors.>`), publishes good ones to
/// READINGS, dead-letters bad ones on `dlq.<reason>`, and archives READINGS to PostgreSQL.
#[derive(Debug, Clone, Parser)]
#[command(name = "citypulse-ingest", version)]
pub struct Config {
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,

    /// PostgreSQL URL of the readings archive (e.g. postgres://user@host/db). Without it, ingest
    /// validates and publishes but archives nothing (and says so at start).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// Address of the admin HTTP server (/metrics, /healthz).
    #[arg(
        long,
        env = "CITYPULSE_INGEST_METRICS_ADDR",
        default_value = "127.0.0.1:9101"
    )]
    pub metrics_addr: SocketAddr,

    /// Readings whose `ts` is further ahead of the ingest clock are rejected
    /// (`future_timestamp`): one bad clock must not push watermarks ahead for everyone.
    #[arg(long, env = "CITYPULSE_INGEST_MAX_FUTURE_SKEW", default_value = "30s", value_parser = duration::parse)]
    pub max_future_skew: Duration,

    /// Readings whose `ts` is older than this are rejected (`too_old`). Generous by default so
    /// a gateway's backlog after an outage still lands.
    #[arg(long, env = "CITYPULSE_INGEST_MAX_AGE", default_value = "72h", value_parser = duration::parse_positive)]
    pub max_age: Duration,

    /// Number of READINGS partitions (districts are hashed into them by the server's
    /// `partition(N,1)` subject mapping). Used when READINGS is created.
    #[arg(long, env = "CITYPULSE_INGEST_PARTITIONS", default_value_t = 8,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub partitions: u32,

    /// Maximum age of messages kept in RAW (replay horizon). Used when RAW is created.
    #[arg(long, env = "CITYPULSE_INGEST_RAW_MAX_AGE", default_value = "7d", value_parser = duration::parse_positive)]
    pub raw_max_age: Duration,

    /// Maximum size of RAW ("512MiB", "1GiB", or bytes); the oldest messages go first.
    #[arg(long, env = "CITYPULSE_INGEST_RAW_MAX_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub raw_max_bytes: i64,

    /// Maximum age of messages kept in READINGS. This is also how long the archive may be down
    /// without losing rows.
    #[arg(long, env = "CITYPULSE_INGEST_READINGS_MAX_AGE", default_value = "7d", value_parser = duration::parse_positive)]
    pub readings_max_age: Duration,

    /// Maximum size of READINGS.
    #[arg(long, env = "CITYPULSE_INGEST_READINGS_MAX_BYTES", default_value = "1GiB", value_parser = parse_bytes)]
    pub readings_max_bytes: i64,

    /// Maximum age of dead letters kept in DLQ.
    #[arg(long, env = "CITYPULSE_INGEST_DLQ_MAX_AGE", default_value = "30d", value_parser = duration::parse_positive)]
    pub dlq_max_age: Duration,

    /// Maximum size of DLQ.
    #[arg(long, env = "CITYPULSE_INGEST_DLQ_MAX_BYTES", default_value = "128MiB", value_parser = parse_bytes)]
    pub dlq_max_bytes: i64,

    /// Replicas of the streams ingest creates (3 on a 3-node JetStream cluster).
    #[arg(long, env = "CITYPULSE_INGEST_STREAM_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,

    /// Duplicate window of RAW, READINGS and DLQ: a message id seen within it is stored once.
    /// Must exceed --ack-wait so that a redelivery after a crash is recognised.
    #[arg(long, env = "CITYPULSE_INGEST_DUPLICATE_WINDOW", default_value = "2m", value_parser = duration::parse_positive)]
    pub duplicate_window: Duration,

    /// RAW messages per pull and per validated batch, and at most 8 MiB a pull (or twice the
    /// server's `max_payload`): a batch's readings become one READINGS message per partition.
    #[arg(long, env = "CITYPULSE_INGEST_BATCH_SIZE", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub batch_size: u32,

    /// How long a batch that is not full waits for more RAW messages after its first one
    /// when ingest keeps up with the devices ("0s": publish what has arrived). Larger batches
    /// make fewer, larger READINGS messages for the processors and the archive; each reading
    /// waits at most this long more on its way to them.
    #[arg(long, env = "CITYPULSE_INGEST_LINGER", default_value = "20ms", value_parser = linger)]
    pub linger: Duration,

    /// Deprecated and ignored since v0.2 (a RAW batch is now published as one READINGS message
    /// per partition, all awaited together); still accepted so that v0.1 settings keep working.
    #[arg(long, env = "CITYPULSE_INGEST_MAX_IN_FLIGHT", default_value_t = 512, hide = true,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_in_flight: u32,

    /// How long the server waits for an ack before redelivering (validator and archive
    /// consumers); after a crash, unacked messages come back after this long.
    #[arg(long, env = "CITYPULSE_INGEST_ACK_WAIT", default_value = "30s", value_parser = duration::parse_positive)]
    pub ack_wait: Duration,

    /// READINGS messages (each a batch of readings) taken per round, and at most 2 MiB of them
    /// (or twice the server's `max_payload`), written to PostgreSQL 10,000 rows per statement
    /// (one transaction each).
    #[arg(long, env = "CITYPULSE_INGEST_ARCHIVE_BATCH_SIZE", default_value_t = 1000,
          value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub archive_batch_size: u32,

    /// Longest wait to fill an archive batch before writing what there is, live (the end of a
    /// backlog is written at once).
    #[arg(long, env = "CITYPULSE_INGEST_ARCHIVE_MAX_DELAY", default_value = "1s", value_parser = duration::parse_positive)]
    pub archive_max_delay: Duration,

    /// Most sensors whose recent `seq` ingest tracks (to drop repeats and count missing
    /// readings); beyond it the least recently seen one is forgotten (it starts fresh, and the
    /// holes of its window are counted missing). About 165 bytes per sensor (ingest/README.md).
    #[arg(long, env = "CITYPULSE_INGEST_MAX_TRACKED_SENSORS", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    pub max_tracked_sensors: u32,

    /// Durable consumer name on RAW; the archive's consumer on READINGS is `<name>-archive`.
    #[arg(long, env = "CITYPULSE_INGEST_CONSUMER_NAME", default_value = "ingest")]
    pub consumer_name: String,

    /// Group of ingest instances (on the same NATS) that share the two stages: the RAW
    /// validator and the PostgreSQL archive each run on one instance at a time, under a lease;
    /// a third instance stands by. A stage of an instance that dies resumes on another one.
    #[arg(long, env = "CITYPULSE_INGEST_GROUP", default_value = "citypulse",
          value_parser = citypulse_runtime::group::parse_name)]
    pub group: String,

    /// How long a stage's lease lives without renewal (renewed every fifth of it): a stage of a
    /// dead instance resumes elsewhere this long after. Every instance must use the same value.
    #[arg(long, env = "CITYPULSE_INGEST_GROUP_TTL", default_value = "5s",
          value_parser = citypulse_runtime::group::parse_ttl)]
    pub group_ttl: Duration,
}

impl Config {
    /// Checks what clap cannot check field by field.
    pub fn validate(&self) -> Result<(), String> {
        if self.duplicate_window <= self.ack_wait {
            return Err(format!(
                "--duplicate-window ({:?}) must exceed --ack-wait ({:?}), or a redelivery after \
                 a crash would be published twice",
                self.duplicate_window, self.ack_wait
            ));
        }
        for (flag, window, age) in [
            ("--raw-max-age", self.duplicate_window, self.raw_max_age),
            (
                "--readings-max-age",
                self.duplicate_window,
                self.readings_max_age,
            ),
            ("--dlq-max-age", self.duplicate_window, self.dlq_max_age),
        ] {
            if window > age {
                return Err(format!(
                    "--duplicate-window ({window:?}) must not exceed {flag} ({age:?})"
                ));
            }
        }
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !token(&self.consumer_name) {
            return Err(format!(
                "--consumer-name `{}` must be letters, digits, - and _",
                self.consumer_name
            ));
        }
        Ok(())
    }

    /// The validator's time limits.
    pub fn time_limits(&self) -> TimeLimits {
        TimeLimits {
            max_future_skew_ms: duration::millis(self.max_future_skew),
            max_age_ms: duration::millis(self.max_age),
        }
    }

    /// RAW's limits from `--raw-max-age`, `--raw-max-bytes`, `--duplicate-window` and
    /// `--stream-replicas`.
    pub fn raw_limits(&self) -> Limits {
        self.limits(self.raw_max_age, self.raw_max_bytes)
    }

    /// READINGS' limits from `--readings-max-age`, `--readings-max-bytes`,
    /// `--duplicate-window` and `--stream-replicas`.
    pub fn readings_limits(&self) -> Limits {
        self.limits(self.readings_max_age, self.readings_max_bytes)
    }

    /// DLQ's limits from `--dlq-max-age`, `--dlq-max-bytes`, `--duplicate-window` and
    /// `--stream-replicas`.
    pub fn dlq_limits(&self) -> Limits {
        self.limits(self.dlq_max_age, self.dlq_max_bytes)
    }

    fn limits(&self, max_age: Duration, max_bytes: i64) -> Limits {
        Limits {
            max_age,
            max_bytes,
            duplicate_window: self.duplicate_window,
            replicas: usize::from(self.stream_replicas),
        }
    }

    /// Name of the archive's durable consumer on READINGS.
    pub fn archive_consumer_name(&self) -> String {
        format!("{}-archive", self.consumer_name)
    }
}

/// The most a batch may linger: a second (a reading waiting longer for its batch than the
/// alert rules' shortest useful reaction is not a trade anyone wants).
pub const MAX_LINGER: Duration = Duration::from_secs(1);

/// Parses `--linger`: a duration from zero to [`MAX_LINGER`].
fn linger(s: &str) -> Result<Duration, String> {
    match duration::parse(s)? {
        d if d > MAX_LINGER => Err(format!("--linger `{s}` must be at most {MAX_LINGER:?}")),
        d => Ok(d),
    }
}

/// Parses a size: bytes, or a number with `KB`/`MB`/`GB` (powers of 1000) or `KiB`/`MiB`/`GiB`
/// (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("invalid size `{s}` (e.g. 512MiB, 1GB, 1048576)"))?;
    let mult: i64 = match unit.trim() {
        "" | "B" => 1,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => return Err(format!("unknown size unit `{other}` in `{s}`")),
    };
    match n.checked_mul(mult) {
        Some(v) if v > 0 => Ok(v),
        _ => Err(format!("size `{s}` must be positive and below 2^63")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("citypulse-ingest").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn default_stream_limits_are_the_canonical_ones() {
        // The simulator and alerts create RAW and DLQ with these when ingest has not yet.
        let c = parse(&[]);
        assert_eq!(c.raw_limits(), Limits::RAW);
        assert_eq!(c.readings_limits(), Limits::READINGS);
        assert_eq!(c.dlq_limits(), Limits::DLQ);
    }

    #[test]
    fn stream_flags_set_the_limits() {
        let c = parse(&[
            "--dlq-max-age",
            "1d",
            "--dlq-max-bytes",
            "2MiB",
            "--duplicate-window",
            "5m",
            "--stream-replicas",
            "3",
        ]);
        let want = Limits {
            max_age: Duration::from_secs(24 * 3600),
            max_bytes: 2 << 20,
            duplicate_window: Duration::from_secs(300),
            replicas: 3,
        };
        assert_eq!(c.dlq_limits(), want);
    }

    #[test]
    fn defaults_are_valid() {
        let c = parse(&[]);
        c.validate().unwrap();
        assert_eq!(c.partitions, 8);
        assert_eq!(c.max_future_skew, Duration::from_secs(30));
        assert_eq!(c.max_age, Duration::from_secs(72 * 3600));
        assert_eq!(c.archive_consumer_name(), "ingest-archive");
        assert_eq!(c.time_limits().max_future_skew_ms, 30_000);
        assert_eq!(c.max_tracked_sensors, 1_000_000);
    }

    #[test]
    fn max_tracked_sensors_must_be_positive() {
        assert_eq!(
            parse(&["--max-tracked-sensors", "5"]).max_tracked_sensors,
            5
        );
        assert!(Config::try_parse_from(["x", "--max-tracked-sensors", "0"]).is_err());
        assert!(Config::try_parse_from(["x", "--max-tracked-sensors", "100000001"]).is_err());
    }

    #[test]
    fn linger_defaults_to_20ms_and_takes_zero_up_to_a_second() {
        assert_eq!(parse(&[]).linger, Duration::from_millis(20));
        assert_eq!(parse(&["--linger", "0s"]).linger, Duration::ZERO);
        assert_eq!(parse(&["--linger", "1s"]).linger, MAX_LINGER);
        let err = Config::try_parse_from(["x", "--linger", "2s"]).unwrap_err();
        assert!(err.to_string().contains("at most"), "{err}");
        assert!(Config::try_parse_from(["x", "--linger", "soon"]).is_err());
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("1GB"), Ok(1_000_000_000));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("1TB").is_err());
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999GiB").is_err());
    }

    #[test]
    fn a_duplicate_window_shorter_than_ack_wait_is_refused() {
        let c = parse(&["--ack-wait", "5m", "--duplicate-window", "2m"]);
        assert!(c.validate().unwrap_err().contains("--ack-wait"));
        assert!(Config::try_parse_from(["x", "--partitions", "0"]).is_err());
        let c = parse(&["--consumer-name", "a.b"]);
        assert!(c.validate().is_err());
    }
}
