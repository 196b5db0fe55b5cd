//! Process settings: flags and `CITYPULSE_PROCESSORS_*` environment variables, validated into
//! [`Settings`].

use crate::registry::SegmentRegistry;
use crate::window::{CoreConfig, WindowSpec};
use citypulse_runtime::duration;
use citypulse_runtime::nats::NatsArgs;
use citypulse_runtime::stream_config::Limits;
use citypulse_runtime::telemetry::LogArgs;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// The shortest METRICS duplicate window accepted: a restart within it republishes nothing a
/// subscriber can see twice.
pub const MIN_DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

/// citypulse processors: event-time windows over validated readings (stream READINGS), traffic
/// congestion and air-quality metrics published per window on `metrics.<kind>.<district>[.<sensor>]`.
#[derive(Debug, Clone, Parser)]
#[command(name = "citypulse-processors", version)]
pub struct Config {
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,

    /// Window length, e.g. "1m" or "5m". Windows are aligned to the Unix epoch.
    #[arg(long, env = "CITYPULSE_PROCESSORS_WINDOW", default_value = "1m", value_parser = duration::parse_positive)]
    pub window: Duration,

    /// Distance between window starts for hopping windows (e.g. "1m" with --window 5m); the
    /// window must be a whole number of hops. Default: the window length (tumbling windows).
    #[arg(long, env = "CITYPULSE_PROCESSORS_HOP", value_parser = duration::parse_positive)]
    pub hop: Option<Duration>,

    /// How far behind the newest event time of its partition a reading may be and still count.
    /// Older readings are counted as late, never merged.
    #[arg(long, env = "CITYPULSE_PROCESSORS_ALLOWED_LATENESS", default_value = "30s", value_parser = duration::parse)]
    pub allowed_lateness: Duration,

    /// Processing time without any reading after which a partition's watermark advances on its
    /// own (by the time elapsed since its last reading), so a quiet district's windows close.
    #[arg(long, env = "CITYPULSE_PROCESSORS_IDLE_TIMEOUT", default_value = "30s", value_parser = duration::parse_positive)]
    pub idle_timeout: Duration,

    /// Static deployments only: the READINGS partitions this instance owns, "all" or a list
    /// such as "0,1,5" (instances sharing a stream must own disjoint sets). Without it, the
    /// instance joins the consumer group `--group` and the group shares the partitions.
    #[arg(long, env = "CITYPULSE_PROCESSORS_PARTITIONS")]
    pub partitions: Option<Partitions>,

    /// Consumer group: every instance started with the same name shares the partitions (balanced,
    /// rebalanced when an instance joins or leaves; a dead instance's partitions resume elsewhere
    /// from their checkpoints). Ignored with --partitions.
    #[arg(long, env = "CITYPULSE_PROCESSORS_GROUP", default_value = "citypulse")]
    pub group: String,

    /// How long a group member or partition lease lives without being renewed: a killed
    /// instance's partitions move after about this long. Every instance must use the same.
    #[arg(long, env = "CITYPULSE_PROCESSORS_GROUP_TTL", default_value = "5s", value_parser = duration::parse_positive)]
    pub group_ttl: Duration,

    /// Number of READINGS partitions; must match ingest's (the stream's subject transform).
    #[arg(
        long,
        env = "CITYPULSE_PROCESSORS_PARTITION_COUNT",
        default_value_t = 8
    )]
    pub partition_count: u32,

    /// Address of the admin HTTP server (/metrics, /healthz).
    #[arg(
        long,
        env = "CITYPULSE_PROCESSORS_METRICS_ADDR",
        default_value = "127.0.0.1:9102"
    )]
    pub metrics_addr: SocketAddr,

    /// City file (the simulator's TOML) giving each detector's free-flow speed and capacity.
    /// Without it, or for detectors it does not list, free-flow speed is learned.
    #[arg(long, env = "CITYPULSE_PROCESSORS_CITY")]
    pub city: Option<PathBuf>,

    /// Longest time between checkpoints while readings arrive (inputs are acked at each
    /// checkpoint). A partition also checkpoints 1 s after its backlog drains, once; while it
    /// stays caught up, at this interval.
    #[arg(long, env = "CITYPULSE_PROCESSORS_CHECKPOINT_INTERVAL", default_value = "5s", value_parser = duration::parse_positive)]
    pub checkpoint_interval: Duration,

    /// READINGS messages per pull of a partition (each a batch of readings from ingest, about
    /// 125 on a backlog), and at most 4 MiB (or twice the server's `max_payload`): what the
    /// client buffers and what is folded between two looks at the windows. At 100,000 sensors the
    /// processors peaked at 95.3 and 95.6 MiB with 5, at 96.3–99.5 MiB in six runs with 10 and at
    /// 102.8 MiB in one with 25, at the same speed (docs/benchmarks.md, *Full batches from a
    /// backlog*).
    #[arg(long, env = "CITYPULSE_PROCESSORS_BATCH_SIZE", default_value_t = 5)]
    pub batch_size: usize,

    /// Deduplication window of the METRICS stream when this service creates it (at least 10 min).
    #[arg(long, env = "CITYPULSE_PROCESSORS_DUPLICATE_WINDOW", default_value = "10m", value_parser = duration::parse_positive)]
    pub duplicate_window: Duration,

    /// How long METRICS keeps window results when this service creates it.
    #[arg(long, env = "CITYPULSE_PROCESSORS_METRICS_MAX_AGE", default_value = "7d", value_parser = duration::parse_positive)]
    pub metrics_max_age: Duration,

    /// Replicas of what this service creates: METRICS, the checkpoint bucket and the group
    /// bucket (3 on a 3-node JetStream cluster, so losing a node stops nothing).
    #[arg(long, env = "CITYPULSE_PROCESSORS_STREAM_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,

    /// A one-off task instead of the service (the service runs when omitted).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// One-off tasks.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Recompute the window results of a past range from READINGS into a separate stream
    /// (backfill after a change); takes the service's settings, which its flags override.
    Replay(crate::replay::ReplayArgs),
}

/// Which partitions an instance owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Partitions {
    /// Every partition.
    All,
    /// These partitions.
    List(Vec<u32>),
}

impl FromStr for Partitions {
    type Err = String;
    fn from_str(s: &str) -> Result<Partitions, String> {
        let s = s.trim();
        if s.eq_ignore_ascii_case("all") {
            return Ok(Partitions::All);
        }
        let mut list = s
            .split(',')
            .map(|p| {
                p.trim().parse::<u32>().map_err(|_| {
                    format!("`{p}` is not a partition number (expected \"all\" or e.g. \"0,1,5\")")
                })
            })
            .collect::<Result<Vec<u32>, String>>()?;
        list.sort_unstable();
        list.dedup();
        Ok(Partitions::List(list))
    }
}

impl Partitions {
    /// The partition numbers among `count`.
    pub fn resolve(&self, count: u32) -> Result<Vec<u32>, String> {
        match self {
            Partitions::All => Ok((0..count).collect()),
            Partitions::List(list) => match list.iter().find(|p| **p >= count) {
                Some(p) => Err(format!(
                    "partition {p} does not exist: --partition-count is {count} (partitions 0..{})",
                    count.saturating_sub(1)
                )),
                None => Ok(list.clone()),
            },
        }
    }
}

/// How an instance finds its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// A fixed list (`--partitions`).
    Static(Vec<u32>),
    /// A share of the consumer group's.
    Group {
        /// `--group`.
        name: String,
        /// `--group-ttl`.
        ttl: Duration,
    },
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The windowing core's configuration.
    pub core: Arc<CoreConfig>,
    /// Which partitions this instance works on.
    pub ownership: Ownership,
    /// Partitions of READINGS.
    pub partition_count: u32,
    /// Longest time between checkpoints.
    pub checkpoint_interval: Duration,
    /// Most readings per flush.
    pub batch_size: usize,
    /// METRICS' limits: `--metrics-max-age` and `--duplicate-window`, no byte limit, one
    /// replica.
    pub metrics_limits: Limits,
}

impl Config {
    /// Validates the flags and loads the city file, reporting the first problem.
    pub fn settings(&self) -> Result<Settings, String> {
        let hop = self.hop.unwrap_or(self.window);
        let spec = WindowSpec::hopping(duration::millis(self.window), duration::millis(hop))
            .map_err(|e| e.to_string())?;
        if self.partition_count == 0 {
            return Err("--partition-count must be at least 1".to_owned());
        }
        let ownership = match &self.partitions {
            Some(p) => {
                let partitions = p.resolve(self.partition_count)?;
                if partitions.is_empty() {
                    return Err("--partitions names no partition".to_owned());
                }
                Ownership::Static(partitions)
            }
            None => {
                citypulse_runtime::group::validate_name(&self.group)?;
                if self.group_ttl < citypulse_runtime::group::MIN_TTL {
                    return Err(format!(
                        "--group-ttl {:?} is shorter than {:?}",
                        self.group_ttl,
                        citypulse_runtime::group::MIN_TTL
                    ));
                }
                Ownership::Group {
                    name: self.group.clone(),
                    ttl: self.group_ttl,
                }
            }
        };
        if self.batch_size == 0 {
            return Err("--batch-size must be at least 1".to_owned());
        }
        if self.duplicate_window < MIN_DUPLICATE_WINDOW {
            return Err(format!(
                "--duplicate-window {:?} is shorter than the required 10 minutes",
                self.duplicate_window
            ));
        }
        let registry = match &self.city {
            None => SegmentRegistry::empty(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| format!("reading city file {}: {e}", path.display()))?;
                SegmentRegistry::from_toml(&text)
                    .map_err(|e| format!("city file {}: {e}", path.display()))?
            }
        };
        Ok(Settings {
            core: Arc::new(CoreConfig {
                spec,
                allowed_lateness_ms: duration::millis(self.allowed_lateness),
                idle_timeout_ms: duration::millis(self.idle_timeout),
                registry,
            }),
            ownership,
            partition_count: self.partition_count,
            checkpoint_interval: self.checkpoint_interval,
            batch_size: self.batch_size,
            metrics_limits: Limits {
                max_age: self.metrics_max_age,
                duplicate_window: self.duplicate_window,
                replicas: usize::from(self.stream_replicas),
                ..Limits::METRICS
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, String> {
        let mut argv = vec!["citypulse-processors"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv)
            .map_err(|e| e.to_string())?
            .settings()
    }

    #[test]
    fn defaults_are_one_minute_tumbling_windows_in_the_default_group_of_eight_partitions() {
        let s = parse(&[]).expect("defaults are valid");
        assert_eq!(s.core.spec, WindowSpec::tumbling(60_000).expect("valid"));
        assert_eq!(s.core.allowed_lateness_ms, 30_000);
        assert_eq!(
            s.ownership,
            Ownership::Group {
                name: "citypulse".into(),
                ttl: Duration::from_secs(5)
            }
        );
        assert_eq!(s.partition_count, 8);
        let all = parse(&["--partitions", "all"]).expect("valid");
        assert_eq!(all.ownership, Ownership::Static((0..8).collect()));
        assert!(s.core.registry.is_empty());
        // Alerts creates METRICS with these when the processors have not yet.
        assert_eq!(s.metrics_limits, Limits::METRICS);
    }

    #[test]
    fn hopping_windows_and_partition_subsets() {
        let s =
            parse(&["--window", "5m", "--hop", "1m", "--partitions", "5, 0,1,1"]).expect("valid");
        assert_eq!(
            s.core.spec,
            WindowSpec::hopping(300_000, 60_000).expect("valid")
        );
        assert_eq!(s.ownership, Ownership::Static(vec![0, 1, 5]));
    }

    #[test]
    fn invalid_settings_say_what_is_wrong() {
        for (args, needle) in [
            (
                &["--window", "5m", "--hop", "2m"][..],
                "multiple of the hop",
            ),
            (&["--partitions", "8"][..], "partition 8 does not exist"),
            (&["--partitions", "x"][..], "not a partition number"),
            (&["--duplicate-window", "2m"][..], "10 minutes"),
            (
                &["--city", "/nonexistent/city.toml"][..],
                "reading city file",
            ),
            (&["--idle-timeout", "0s"][..], "greater than zero"),
            (&["--group", "a.b"][..], "group name"),
            (&["--group-ttl", "1s"][..], "shorter than"),
        ] {
            let err = parse(args).expect_err("invalid");
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
