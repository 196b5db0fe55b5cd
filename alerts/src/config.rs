//! Command line: `run` (the default, alias `serve`) and the tools for people (`check-rules`,
//! `tail`, `list`, `ack`, `silence`, `unsilence`, `replay`). Every service setting also reads an
//! environment variable; shared infrastructure ones are plain (`NATS_URL`, `DATABASE_URL`).

use citypulse_runtime::duration;
use citypulse_runtime::nats::NatsArgs;
use citypulse_runtime::telemetry::LogArgs;
use citypulse_schema::{Kind, Severity};
use clap::{Args, Parser, Subcommand};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// citypulse alerts: threshold rules with duration and hysteresis over window results, a
/// guaranteed firing → resolved lifecycle on `alerts.<severity>.<kind>.<district>`.
#[derive(Debug, Parser)]
#[command(name = "citypulse-alerts", version)]
pub struct Cli {
    /// What to do (`run` when omitted).
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service (the default when no subcommand is given).
    #[command(alias = "serve")]
    Run(Box<RunConfig>),
    /// Validate a rule file and exit: 0 when valid, 1 with every error and its line otherwise.
    CheckRules {
        /// The rule file (TOML).
        file: PathBuf,
    },
    /// Print live alert transitions as they are published.
    Tail(TailArgs),
    /// List active alerts and silences (asks the running service).
    List(ListArgs),
    /// Acknowledge an active alert.
    Ack(AckArgs),
    /// Silence matching alerts for a while.
    Silence(SilenceArgs),
    /// Remove a silence.
    Unsilence(UnsilenceArgs),
    /// Print the transitions a rule file would have made over a past range of METRICS (or of a
    /// replayed stream); publishes nothing, touches no checkpoint.
    Replay(crate::cli::replay::ReplayArgs),
}

/// Settings of the service.
#[derive(Debug, Clone, Args)]
pub struct RunConfig {
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
    /// Rule file (TOML); the embedded default rules (alerts/rules/default.toml) when omitted.
    #[arg(long, env = "CITYPULSE_ALERTS_RULES")]
    pub rules: Option<PathBuf>,
    /// PostgreSQL URL for the alert history (table alert_events); without it the history is
    /// not stored.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// History rows kept for PostgreSQL while it is unreachable (about 300 bytes each, in
    /// memory and in the checkpoint); beyond this the oldest are dropped, counted in
    /// citypulse_alerts_store_rows_total{result="dropped"}, rather than stalling alerts.
    #[arg(long, env = "CITYPULSE_ALERTS_HISTORY_OUTBOX_CAP", default_value_t = 100_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub history_outbox_cap: u32,
    /// Address of the admin HTTP server (/metrics, /healthz).
    #[arg(
        long,
        env = "CITYPULSE_ALERTS_METRICS_ADDR",
        default_value = "127.0.0.1:9103"
    )]
    pub metrics_addr: SocketAddr,
    /// Durable consumer name on the METRICS stream.
    #[arg(long, env = "CITYPULSE_ALERTS_CONSUMER", default_value = "alerts")]
    pub consumer: String,
    /// KV bucket holding the evaluator checkpoint.
    #[arg(
        long,
        env = "CITYPULSE_ALERTS_KV_BUCKET",
        default_value = "citypulse_alerts"
    )]
    pub kv_bucket: String,
    /// Replicas of what this service creates: ALERTS (and METRICS or DLQ when it creates them),
    /// the checkpoint bucket and the group bucket (3 on a 3-node JetStream cluster).
    #[arg(long, env = "CITYPULSE_ALERTS_STREAM_REPLICAS", default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub stream_replicas: u8,
    /// Longest time between checkpoints while there is new state.
    #[arg(long, env = "CITYPULSE_ALERTS_CHECKPOINT_INTERVAL", default_value = "1s", value_parser = duration::parse_positive)]
    pub checkpoint_interval: Duration,
    /// Checkpoint after this many METRICS messages at the latest.
    #[arg(long, env = "CITYPULSE_ALERTS_CHECKPOINT_EVERY", default_value_t = 50_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub checkpoint_every: u32,
    /// Unacknowledged METRICS messages the server may hand out (must exceed --checkpoint-every).
    #[arg(
        long,
        env = "CITYPULSE_ALERTS_MAX_ACK_PENDING",
        default_value_t = 100_000
    )]
    pub max_ack_pending: u32,
    /// How long the server waits for an ack before redelivering (must exceed
    /// --checkpoint-interval).
    #[arg(long, env = "CITYPULSE_ALERTS_ACK_WAIT", default_value = "30s", value_parser = duration::parse_positive)]
    pub ack_wait: Duration,
    /// A district from which no result arrived while the newest event time advanced by this
    /// much — and, in processing time, for this long — is judged silent/offline; "0s" disables
    /// this judgement (results of the district itself still are).
    #[arg(long, env = "CITYPULSE_ALERTS_DISTRICT_SILENCE_GRACE", default_value = "15m", value_parser = duration::parse)]
    pub district_silence_grace: Duration,
    /// How often silences expire and quiet districts are judged (wall clock).
    #[arg(long, env = "CITYPULSE_ALERTS_HOUSEKEEPING_INTERVAL", default_value = "1s", value_parser = duration::parse_positive)]
    pub housekeeping_interval: Duration,
    /// Active/standby group: of the instances started with the same name (on the same NATS),
    /// the one holding the group's lease evaluates and answers operator requests; the others
    /// wait and take over from its KV checkpoint once it stops renewing the lease (killed,
    /// cut off).
    #[arg(long, env = "CITYPULSE_ALERTS_GROUP", default_value = "citypulse", value_parser = citypulse_runtime::group::parse_name)]
    pub group: String,
    /// How long the active instance's lease lives without renewal (renewed every fifth of it):
    /// a standby takes over this long after the active one died. Every instance must use the
    /// same value.
    #[arg(long, env = "CITYPULSE_ALERTS_GROUP_TTL", default_value = "5s", value_parser = citypulse_runtime::group::parse_ttl)]
    pub group_ttl: Duration,
}

impl RunConfig {
    /// Checks settings that depend on each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_ack_pending <= self.checkpoint_every {
            return Err(format!(
                "--max-ack-pending {} must exceed --checkpoint-every {}",
                self.max_ack_pending, self.checkpoint_every
            ));
        }
        if self.ack_wait <= self.checkpoint_interval {
            return Err(format!(
                "--ack-wait {:?} must exceed --checkpoint-interval {:?}",
                self.ack_wait, self.checkpoint_interval
            ));
        }
        Ok(())
    }

    /// Settings for tests and tools: defaults, this NATS URL, an ephemeral admin port.
    pub fn for_url(url: &str) -> RunConfig {
        let mut cfg =
            RunConfig::parse_from(["run", "--nats-url", url, "--metrics-addr", "127.0.0.1:0"]);
        cfg.database_url = None;
        cfg
    }

    fn parse_from<'a, I: IntoIterator<Item = &'a str>>(args: I) -> RunConfig {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            run: RunConfig,
        }
        // The arguments above are valid by construction; clap exits with a message otherwise.
        Wrapper::parse_from(args).run
    }
}

/// NATS flags of the client tools.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// How long to wait for the service's reply.
    #[arg(long, env = "CITYPULSE_ALERTS_REQUEST_TIMEOUT", default_value = "5s", value_parser = duration::parse_positive)]
    pub timeout: Duration,
}

/// The filter `tail` and `list` share.
#[derive(Debug, Clone, Args)]
pub struct AlertFilter {
    /// Only alerts at least this severe.
    #[arg(long)]
    pub severity: Option<Severity>,
    /// Only this district.
    #[arg(long)]
    pub district: Option<String>,
    /// Only this kind.
    #[arg(long)]
    pub kind: Option<Kind>,
}

/// `tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Which alerts to show.
    #[command(flatten)]
    pub filter: AlertFilter,
    /// No ANSI colours (also off when stdout is not a terminal).
    #[arg(long)]
    pub no_color: bool,
}

/// `list`.
#[derive(Debug, Clone, Args)]
pub struct ListArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Which alerts to list.
    #[command(flatten)]
    pub filter: AlertFilter,
    /// Print the JSON reply instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `ack`.
#[derive(Debug, Clone, Args)]
pub struct AckArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Alert id (from `list` or `tail`).
    pub id: String,
    /// Who acknowledges.
    #[arg(long)]
    pub by: String,
    /// What is being done.
    #[arg(long, default_value = "")]
    pub comment: String,
}

/// `silence`.
#[derive(Debug, Clone, Args)]
pub struct SilenceArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Rule or group name.
    #[arg(long)]
    pub rule: Option<String>,
    /// District.
    #[arg(long)]
    pub district: Option<String>,
    /// Kind.
    #[arg(long)]
    pub kind: Option<Kind>,
    /// Severity.
    #[arg(long)]
    pub severity: Option<Severity>,
    /// Sensor id.
    #[arg(long)]
    pub sensor: Option<String>,
    /// How long ("2h").
    #[arg(long = "for", value_parser = duration::parse_positive)]
    pub duration: Duration,
    /// Who silences.
    #[arg(long)]
    pub by: String,
    /// Why.
    #[arg(long, default_value = "")]
    pub comment: String,
}

/// `unsilence`.
#[derive(Debug, Clone, Args)]
pub struct UnsilenceArgs {
    /// Connection.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Silence id (from `silence` or `list`).
    pub id: String,
    /// Who removes it.
    #[arg(long)]
    pub by: String,
}

const SUBCOMMANDS: &[&str] = &[
    "run",
    "serve",
    "check-rules",
    "tail",
    "list",
    "ack",
    "silence",
    "unsilence",
    "replay",
    "help",
];

/// Inserts `run` when no subcommand is given, so `citypulse-alerts --nats-url …` runs the
/// service. `--help` and `--version` at the top stay the top-level ones.
pub fn with_default_command(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let mut args: Vec<OsString> = args.into_iter().collect();
    let first = args.get(1).and_then(|a| a.to_str()).unwrap_or("");
    let top_level = ["-h", "--help", "-V", "--version"].contains(&first);
    if !top_level && !SUBCOMMANDS.contains(&first) {
        args.insert(1.min(args.len()), OsString::from("run"));
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(with_default_command(args.iter().map(OsString::from)))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn run_is_the_default_subcommand() {
        for args in [
            &["citypulse-alerts"][..],
            &["citypulse-alerts", "--nats-url", "nats://127.0.0.1:1"],
            &["citypulse-alerts", "serve"],
        ] {
            assert!(matches!(parse(args).command, Command::Run(_)), "{args:?}");
        }
        let Command::Run(cfg) = parse(&["citypulse-alerts"]).command else {
            unreachable!()
        };
        assert_eq!(cfg.metrics_addr.to_string(), "127.0.0.1:9103");
        assert!(cfg.validate().is_ok());
    }

    #[test]
    fn client_subcommands_parse() {
        let c = parse(&[
            "x",
            "silence",
            "--district",
            "d04",
            "--for",
            "2h",
            "--by",
            "ana",
        ]);
        let Command::Silence(s) = c.command else {
            panic!("{c:?}")
        };
        assert_eq!(s.duration, Duration::from_secs(7200));
        assert!(matches!(
            parse(&["x", "tail", "--severity", "warning", "--no-color"]).command,
            Command::Tail(TailArgs { no_color: true, .. })
        ));
    }

    #[test]
    fn dependent_settings_are_checked() {
        let mut cfg = RunConfig::for_url("nats://127.0.0.1:1");
        assert_eq!(cfg.validate(), Ok(()));
        cfg.checkpoint_every = cfg.max_ack_pending;
        assert!(cfg.validate().unwrap_err().contains("max-ack-pending"));
    }
}
