//! Flags and environment of `citypulse-web`. Every setting also reads an environment variable
//! (`CITYPULSE_WEB_*`; shared infrastructure ones are plain: `NATS_URL`, `LOG_FORMAT`).

use citypulse_runtime::duration;
use citypulse_runtime::nats::NatsArgs;
use citypulse_runtime::telemetry::LogArgs;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// citypulse web view: a live map of the city's districts (US AQI, European AQI, level of
/// service, travel time index), the alert feed with acknowledge and silence, and a district panel
/// with two hours of history, pushed to browsers with Server-Sent Events.
#[derive(Debug, Clone, Parser)]
#[command(name = "citypulse-web", version)]
pub struct Config {
    /// NATS connection.
    #[command(flatten)]
    pub nats: NatsArgs,
    /// Logging.
    #[command(flatten)]
    pub log: LogArgs,
    /// Address of the page and its API (HTTP).
    #[arg(long, env = "CITYPULSE_WEB_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the admin HTTP server (/metrics, /healthz).
    #[arg(
        long,
        env = "CITYPULSE_WEB_METRICS_ADDR",
        default_value = "127.0.0.1:9104"
    )]
    pub metrics_addr: SocketAddr,
    /// City file (the simulator's TOML) drawn on the map; the built-in city when omitted.
    #[arg(long, env = "CITYPULSE_WEB_CITY")]
    pub city: Option<PathBuf>,
    /// Scale the city to exactly this many sensors, as the simulator's `--sensors` does (each
    /// district keeps its share), so both draw the same city without a large city file.
    #[arg(long, env = "CITYPULSE_WEB_SENSORS",
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub sensors: Option<u64>,
    /// Updates a browser may fall behind by before it is dropped (it reconnects and starts from
    /// a fresh snapshot).
    #[arg(long, env = "CITYPULSE_WEB_CLIENT_BUFFER", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub client_buffer: u32,
    /// Most browsers connected at once (further ones get 503).
    #[arg(long, env = "CITYPULSE_WEB_MAX_CLIENTS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_clients: u32,
    /// How long to wait for the alerts service's reply to a list/ack/silence request.
    #[arg(long, env = "CITYPULSE_WEB_REQUEST_TIMEOUT", default_value = "5s", value_parser = duration::parse_positive)]
    pub request_timeout: Duration,
    /// How often the list of active alerts is refreshed from the alerts service (also after
    /// every alert transition and every acknowledgement or silence).
    #[arg(long, env = "CITYPULSE_WEB_ACTIVE_REFRESH", default_value = "10s", value_parser = duration::parse_positive)]
    pub active_refresh: Duration,
}

impl Config {
    /// Settings for tests: defaults, this NATS URL, ephemeral ports.
    pub fn for_url(url: &str) -> Config {
        Config::parse_from([
            "citypulse-web",
            "--nats-url",
            url,
            "--listen",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_listen_on_loopback() {
        let c = Config::parse_from(["citypulse-web"]);
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.metrics_addr.to_string(), "127.0.0.1:9104");
        assert_eq!(c.client_buffer, 1024);
        assert!(c.city.is_none());
        let t = Config::for_url("nats://127.0.0.1:1");
        assert_eq!(t.listen.port(), 0);
    }
}
