//! Command line and environment: [`Config`] (clap), resolved into a [`Plan`] before anything
//! connects, so a bad flag or city file fails fast with every error listed.

use crate::city::events::EventMode;
use crate::city::{City, CityFileErrors, ScaleError};
use crate::engine::Settings;
use crate::faults::{FaultRateError, FaultRates};
use crate::pacer::Speed;
use citypulse_runtime::nats::NatsArgs;
use citypulse_runtime::telemetry::LogArgs;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

const ABOUT: &str = "Seeded, deterministic smart-city simulator: loop detectors and air-quality \
stations publishing CBOR readings to sensors.<district>.<kind>.<sensor_id> through JetStream.";

const LONG_ABOUT: &str = "\
Seeded, deterministic smart-city simulator: loop detectors and air-quality stations publishing
CBOR readings to sensors.<district>.<kind>.<sensor_id> through JetStream (stream RAW, created on
sensors.> if missing), with Nats-Msg-Id = <sensor>:<seq> and retries under the same id.

Time: simulated time runs --speed times faster than the wall clock, but never ahead of it: no
valid reading has a ts in the future. Without --start, a run at --speed above 1 (or max) starts
exactly 24 hours before the current wall-clock second (now - 24h) and catches up, then continues
in real time (speed 1); at --speed 1 or below it starts at the current second. --speed max (or
0) runs as fast as possible up to the wall clock, then in real time. --duration stops after that
much simulated time; without it the simulator runs until SIGINT/SIGTERM.

The same --seed, --start, --duration, city, intervals, events and fault rates publish
byte-identical payloads in the same order.";

/// `citypulse-simulator`: flags and environment.
#[derive(Debug, Clone, Parser)]
#[command(name = "citypulse-simulator", version, about = ABOUT, long_about = LONG_ABOUT)]
pub struct Config {
    /// Inspect the city instead of running it.
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub nats: NatsArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub log: LogArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub sim: SimArgs,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub faults: FaultArgs,

    /// Address of the admin HTTP server (/metrics, /healthz).
    #[arg(
        long,
        env = "CITYPULSE_SIM_METRICS_ADDR",
        default_value = "127.0.0.1:9100"
    )]
    pub metrics_addr: SocketAddr,

    /// Write the ground truth (every generated message, with its fault) as JSON lines here.
    #[arg(long, env = "CITYPULSE_SIM_TRUTH", value_name = "FILE")]
    pub truth: Option<PathBuf>,

    /// Publish with core NATS (no acks, like MQTT QoS 0 devices) instead of JetStream.
    #[arg(long, env = "CITYPULSE_SIM_CORE")]
    pub core: bool,

    /// JetStream publishes awaiting their acks at once, sent together; also how far out of order
    /// a reading can land in RAW after a lost publish (throughput vs reordering).
    #[arg(long, env = "CITYPULSE_SIM_MAX_IN_FLIGHT", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub max_in_flight: u32,

    /// How often to log progress (readings/s, published, acked, errors, simulated time).
    #[arg(long, env = "CITYPULSE_SIM_PROGRESS_INTERVAL", default_value = "5s",
          value_parser = citypulse_runtime::duration::parse_positive)]
    pub progress_interval: Duration,

    /// After shutdown is requested, how long the readings already generated may take to be
    /// acknowledged before the simulator gives up (logged as possible data loss).
    #[arg(long, env = "CITYPULSE_SIM_DRAIN_TIMEOUT", default_value = "30s",
          value_parser = citypulse_runtime::duration::parse)]
    pub drain_timeout: Duration,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Load and validate the city (built-in, or --city, scaled by --sensors) and summarise it.
    City(CityCommand),
}

/// `city` subcommand flags.
#[derive(Debug, Clone, Args)]
pub struct CityCommand {
    /// Print the city as a TOML city file (the segment registry other services can load).
    #[arg(long)]
    pub print: bool,
}

/// What to simulate.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Seed of every random draw (noise, faults, incidents, episodes).
    #[arg(long, env = "CITYPULSE_SIM_SEED", default_value_t = 42)]
    pub seed: u64,

    /// Simulated seconds per wall-clock second: a number > 0 (60 = one simulated hour per
    /// minute), or `max` (or 0) for as fast as possible. Never ahead of the wall clock.
    #[arg(long, env = "CITYPULSE_SIM_SPEED", default_value = "1")]
    pub speed: Speed,

    /// Simulated start, RFC 3339 (e.g. 2026-01-05T06:00:00Z or 2026-01-05T07:00:00+01:00).
    /// Default: now - 24h when --speed is above 1 or max, else now (whole seconds).
    #[arg(long, env = "CITYPULSE_SIM_START", value_parser = parse_rfc3339_ms, value_name = "RFC3339")]
    pub start: Option<u64>,

    /// Stop after this much simulated time (e.g. 2h, 90m). Default: run until stopped.
    #[arg(long, env = "CITYPULSE_SIM_DURATION",
          value_parser = citypulse_runtime::duration::parse_positive)]
    pub duration: Option<Duration>,

    /// City file (TOML). Default: the built-in city (12 districts, ~350 sensors).
    #[arg(long, env = "CITYPULSE_SIM_CITY", value_name = "FILE", global = true)]
    pub city: Option<PathBuf>,

    /// Scale the city to exactly this many sensors (each district keeps its share).
    #[arg(long, env = "CITYPULSE_SIM_SENSORS", global = true,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub sensors: Option<u64>,

    /// Loop detector counting interval (whole seconds, 1s..=1h).
    #[arg(long, env = "CITYPULSE_SIM_TRAFFIC_INTERVAL", default_value = "30s",
          value_parser = parse_interval)]
    pub traffic_interval: u32,

    /// Air station sampling interval (whole seconds, 1s..=1h).
    #[arg(long, env = "CITYPULSE_SIM_AIR_INTERVAL", default_value = "60s",
          value_parser = parse_interval)]
    pub air_interval: u32,

    /// Incidents and pollution episodes: `all` (a demo incident at start + 20 min and a PM2.5
    /// episode at start + 10 min, then random ones), `demo` (only those two), `none`.
    #[arg(long, env = "CITYPULSE_SIM_EVENTS", value_enum, default_value_t = EventMode::All)]
    pub events: EventMode,
}

/// A named set of fault rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FaultPreset {
    /// No faults.
    None,
    /// About 1.6 % of readings faulty, every kind represented.
    Demo,
}

/// Fault injection: each rate is the fraction of readings hit (0..=1; the rates must sum to at
/// most 1). A rate flag overrides the preset's value.
#[derive(Debug, Clone, Args)]
pub struct FaultArgs {
    /// Preset fault rates (individual --fault-* flags override them).
    #[arg(long, env = "CITYPULSE_SIM_FAULTS", value_enum, default_value_t = FaultPreset::None)]
    pub faults: FaultPreset,
    /// Fraction of readings not sent (the seq still advances: a gap).
    #[arg(long, env = "CITYPULSE_SIM_FAULT_DROPOUT", value_parser = parse_rate, value_name = "RATE")]
    pub fault_dropout: Option<f64>,
    /// Fraction of readings repeating the sensor's last values (in runs of 10 readings).
    #[arg(long, env = "CITYPULSE_SIM_FAULT_STUCK", value_parser = parse_rate, value_name = "RATE")]
    pub fault_stuck: Option<f64>,
    /// Fraction of readings with one absurd value (PM2.5 x20, speed 400 km/h).
    #[arg(long, env = "CITYPULSE_SIM_FAULT_SPIKE", value_parser = parse_rate, value_name = "RATE")]
    pub fault_spike: Option<f64>,
    /// Fraction of readings with one negative value.
    #[arg(long, env = "CITYPULSE_SIM_FAULT_NEGATIVE", value_parser = parse_rate, value_name = "RATE")]
    pub fault_negative: Option<f64>,
    /// Fraction of readings with ts far off (25 h to 7 days ahead, or 2 to 48 h behind).
    #[arg(long, env = "CITYPULSE_SIM_FAULT_CLOCK_SKEW", value_parser = parse_rate, value_name = "RATE")]
    pub fault_clock_skew: Option<f64>,
    /// Fraction of readings held back and delivered 2 to 10 intervals late (out of order).
    #[arg(long, env = "CITYPULSE_SIM_FAULT_LATE", value_parser = parse_rate, value_name = "RATE")]
    pub fault_late: Option<f64>,
    /// Fraction of readings delivered twice (same bytes; Nats-Msg-Id of the copy ends in :dup).
    #[arg(long, env = "CITYPULSE_SIM_FAULT_DUPLICATE", value_parser = parse_rate, value_name = "RATE")]
    pub fault_duplicate: Option<f64>,
    /// Fraction of readings malformed (truncated CBOR, a wrong type, or a foreign identity).
    #[arg(long, env = "CITYPULSE_SIM_FAULT_MALFORMED", value_parser = parse_rate, value_name = "RATE")]
    pub fault_malformed: Option<f64>,
}

impl FaultArgs {
    /// The preset with the individual flags applied.
    pub fn rates(&self) -> FaultRates {
        let base = match self.faults {
            FaultPreset::None => FaultRates::NONE,
            FaultPreset::Demo => FaultRates::DEMO,
        };
        FaultRates {
            dropout: self.fault_dropout.unwrap_or(base.dropout),
            stuck: self.fault_stuck.unwrap_or(base.stuck),
            spike: self.fault_spike.unwrap_or(base.spike),
            negative: self.fault_negative.unwrap_or(base.negative),
            clock_skew: self.fault_clock_skew.unwrap_or(base.clock_skew),
            late: self.fault_late.unwrap_or(base.late),
            duplicate: self.fault_duplicate.unwrap_or(base.duplicate),
            malformed: self.fault_malformed.unwrap_or(base.malformed),
        }
    }
}

/// Why the configuration cannot run.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    /// The city file could not be read.
    #[error("reading city file {path}: {source}")]
    CityRead {
        /// The path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The city file is invalid.
    #[error("city file {path}: {errors}")]
    CityInvalid {
        /// The path.
        path: PathBuf,
        /// Every error, with lines.
        errors: CityFileErrors,
    },
    /// The city cannot be scaled to `--sensors`.
    #[error(transparent)]
    Scale(#[from] ScaleError),
    /// The fault rates are unusable.
    #[error(transparent)]
    Faults(#[from] FaultRateError),
}

/// A resolved, validated run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The city.
    pub city: City,
    /// Engine settings (seed, start, intervals, faults, events).
    pub settings: Settings,
    /// Speed.
    pub speed: Speed,
    /// End of the run (exclusive), ms; `None`: until stopped.
    pub end_ms: Option<u64>,
}

impl SimArgs {
    /// The simulated start: `--start`, or the default for the speed at wall time `now_ms`
    /// (whole seconds; minus 24 h when accelerated).
    pub fn start_ms(&self, now_ms: u64) -> u64 {
        self.start.unwrap_or_else(|| {
            let now = now_ms / 1000 * 1000;
            if self.speed.is_accelerated() {
                now.saturating_sub(24 * 3_600_000)
            } else {
                now
            }
        })
    }

    /// The city: the file or the built-in one, scaled to `--sensors`.
    pub fn load_city(&self) -> Result<City, PlanError> {
        let city = match &self.city {
            None => match self.sensors {
                Some(n) => return Ok(City::builtin_scaled(n as usize)),
                None => City::builtin(),
            },
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| PlanError::CityRead {
                    path: path.clone(),
                    source,
                })?;
                City::from_toml(&text).map_err(|errors| PlanError::CityInvalid {
                    path: path.clone(),
                    errors,
                })?
            }
        };
        match self.sensors {
            Some(n) => Ok(city.scaled(n as usize)?),
            None => Ok(city),
        }
    }
}

impl Config {
    /// Loads the city and resolves times and rates at wall time `now_ms`.
    pub fn plan(&self, now_ms: u64) -> Result<Plan, PlanError> {
        let rates = self.faults.rates();
        rates.validate()?;
        let city = self.sim.load_city()?;
        let start_ms = self.sim.start_ms(now_ms);
        let settings = Settings {
            seed: self.sim.seed,
            start_ms,
            traffic_interval_s: self.sim.traffic_interval,
            air_interval_s: self.sim.air_interval,
            faults: rates,
            events: self.sim.events,
        };
        Ok(Plan {
            city,
            settings,
            speed: self.sim.speed,
            end_ms: self
                .sim
                .duration
                .map(|d| start_ms.saturating_add(d.as_millis() as u64)),
        })
    }
}

/// Wall-clock now, ms since the Unix epoch.
pub use citypulse_runtime::clock::now_ms;

/// A fault rate: a number in 0..=1.
fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "invalid rate `{s}`: expected a fraction in 0..=1, e.g. 0.01"
        )),
    }
}

/// An interval: a human duration of whole seconds, 1 s to 1 h.
fn parse_interval(s: &str) -> Result<u32, String> {
    let d = citypulse_runtime::duration::parse(s)?;
    if d.subsec_nanos() != 0 || !(1..=3600).contains(&d.as_secs()) {
        return Err(format!(
            "invalid interval `{s}`: expected whole seconds from 1s to 1h"
        ));
    }
    Ok(d.as_secs() as u32)
}

/// RFC 3339 time (`Z` or a numeric offset) to ms since the Unix epoch.
pub fn parse_rfc3339_ms(s: &str) -> Result<u64, String> {
    let bad = |e: &dyn std::fmt::Display| {
        format!("invalid time `{s}`: {e} (expected RFC 3339, e.g. 2026-01-05T06:00:00Z)")
    };
    let s = s.trim();
    // humantime takes UTC only: strip a numeric offset and apply it ourselves.
    let split = s
        .len()
        .checked_sub(6)
        .and_then(|i| Some((s.get(..i)?, s.get(i..)?)));
    let (utc, offset_min): (String, i64) = match split {
        Some((head, tail))
            if (tail.starts_with('+') || tail.starts_with('-'))
                && tail.as_bytes()[3] == b':'
                && head.contains('T') =>
        {
            let sign = if tail.starts_with('-') { -1 } else { 1 };
            let h: i64 = tail[1..3].parse().map_err(|e| bad(&e))?;
            let m: i64 = tail[4..6].parse().map_err(|e| bad(&e))?;
            (format!("{head}Z"), sign * (h * 60 + m))
        }
        _ => (s.to_owned(), 0),
    };
    let t = humantime::parse_rfc3339(&utc).map_err(|e| bad(&e))?;
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map_err(|e| bad(&e))?
        .as_millis() as i64;
    u64::try_from(ms - offset_min * 60_000).map_err(|e| bad(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("citypulse-simulator").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn rfc3339_with_offsets() {
        assert_eq!(parse_rfc3339_ms("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(
            parse_rfc3339_ms("2026-01-01T00:00:00Z"),
            Ok(1_767_225_600_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2026-01-01T01:00:00+01:00"),
            Ok(1_767_225_600_000)
        );
        assert_eq!(
            parse_rfc3339_ms("2025-12-31T23:00:00.500-01:00"),
            Ok(1_767_225_600_500)
        );
        assert!(parse_rfc3339_ms("yesterday").is_err());
    }

    #[test]
    fn default_start_is_a_day_back_when_accelerated() {
        let now = 1_767_225_600_123;
        let day = 86_400_000;
        assert_eq!(parse(&[]).sim.start_ms(now), now - 123);
        assert_eq!(parse(&["--speed", "60"]).sim.start_ms(now), now - 123 - day);
        assert_eq!(
            parse(&["--speed", "max"]).sim.start_ms(now),
            now - 123 - day
        );
        assert_eq!(parse(&["--speed", "0.5"]).sim.start_ms(now), now - 123);
        let explicit = parse(&["--speed", "60", "--start", "2026-01-01T00:00:00Z"]);
        assert_eq!(explicit.sim.start_ms(now), 1_767_225_600_000);
    }

    #[test]
    fn flags_are_validated() {
        let bad = |args: &[&str]| {
            Config::try_parse_from(std::iter::once("sim").chain(args.iter().copied())).is_err()
        };
        assert!(bad(&["--fault-dropout", "1.5"]));
        assert!(bad(&["--fault-dropout", "-0.1"]));
        assert!(bad(&["--speed", "-2"]));
        assert!(bad(&["--traffic-interval", "1500ms"]));
        assert!(bad(&["--air-interval", "2h"]));
        assert!(bad(&["--sensors", "0"]));
        assert!(bad(&["--duration", "0s"]));
        assert!(bad(&["--start", "tomorrow"]));
        assert!(!bad(&[
            "--duration",
            "2h",
            "--speed",
            "60",
            "--sensors",
            "100000"
        ]));
    }

    #[test]
    fn fault_flags_override_the_preset_and_sum_is_checked() {
        let c = parse(&["--faults", "demo", "--fault-dropout", "0.2"]);
        let r = c.faults.rates();
        assert_eq!(r.dropout, 0.2);
        assert_eq!(r.late, FaultRates::DEMO.late);
        let c = parse(&["--fault-dropout", "0.7", "--fault-late", "0.7"]);
        assert!(matches!(c.plan(0), Err(PlanError::Faults(_))));
    }

    #[test]
    fn plan_resolves_the_end_and_scales_the_city() {
        let c = parse(&[
            "--start",
            "2026-01-01T00:00:00Z",
            "--duration",
            "2h",
            "--sensors",
            "1000",
        ]);
        let plan = c.plan(0).unwrap();
        assert_eq!(plan.end_ms, Some(1_767_225_600_000 + 7_200_000));
        assert_eq!(plan.city.sensor_count(), 1000);
    }

    #[test]
    fn city_subcommand_takes_global_flags() {
        let c = parse(&["city", "--print", "--sensors", "500"]);
        assert!(matches!(
            c.command,
            Some(Command::City(CityCommand { print: true }))
        ));
        assert_eq!(c.sim.sensors, Some(500));
    }

    #[test]
    fn every_flag_has_an_env_var() {
        use clap::CommandFactory;
        let cmd = Config::command();
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let env = arg.get_env().map(|e| e.to_string_lossy().into_owned());
            assert!(env.is_some(), "--{id} has no env var");
        }
    }
}
