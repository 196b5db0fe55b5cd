//! citypulse web view: a live map of the city for people.
//!
//! **In**: window results from the JetStream stream METRICS and alert transitions from ALERTS,
//! through ordered consumers (the last message of every subject first, then live; district
//! results of the last two hours for the charts); the alerts service's request-reply API
//! (`citypulse.alerts.{list,ack,silence,unsilence}`) for the active alerts and the page's
//! buttons. **Out**: one HTML page (embedded, no build step) and its JSON API, and Server-Sent
//! Events to every open page. The web view writes nothing to NATS but relayed requests: all
//! state stays with the services.
//!
//! Module map:
//! - PURE: [`layout`] (city → map geometry), [`palette`] (category colours and WCAG contrast),
//!   [`live`] (latest results, history, feed), [`decode`] (CBOR → JSON, also for the `citypulse`
//!   terminal tool).
//! - SHELL: [`feed`] (consumers, active-alerts refresher, request relay), [`server`] (HTTP, SSE).
//! - [`config`], [`metrics`].

pub mod config;
pub mod decode;
pub mod feed;
pub mod layout;
pub mod live;
pub mod metrics;
pub mod palette;
pub mod server;

use anyhow::Context as _;
use citypulse_runtime::admin::{self, Health};
use citypulse_runtime::shutdown::Shutdown;
use citypulse_simulator::city::City;
use config::Config;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

/// The city drawn: the file given with `--city`, else the built-in one; scaled to `--sensors`
/// like the simulator's.
pub fn load_city(cfg: &Config) -> anyhow::Result<City> {
    let sensors = cfg.sensors.map(|n| n as usize);
    let city = match (&cfg.city, sensors) {
        (None, Some(n)) => return Ok(City::builtin_scaled(n)),
        (None, None) => City::builtin(),
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading city file {}", path.display()))?;
            City::from_toml(&text).with_context(|| format!("city file {}", path.display()))?
        }
    };
    match sensors {
        Some(n) => Ok(city.scaled(n)?),
        None => Ok(city),
    }
}

/// Loop detector → segment id.
fn segments_of(city: &City) -> HashMap<String, String> {
    city.districts
        .iter()
        .flat_map(|d| &d.segments)
        .flat_map(|s| s.detectors.iter().map(|det| (det.clone(), s.id.clone())))
        .collect()
}

/// A running web view.
#[derive(Debug)]
pub struct Running {
    /// Where the page is served.
    pub web: SocketAddr,
    /// Where `/metrics` and `/healthz` are served.
    pub admin: SocketAddr,
    /// Ends when the server stopped (after shutdown).
    pub task: tokio::task::JoinHandle<()>,
}

/// Starts the admin server, the consumers and the page's server; returns once they listen.
pub async fn start(
    cfg: &Config,
    client: async_nats::Client,
    registry: prometheus::Registry,
    health: Health,
    shutdown: Shutdown,
) -> anyhow::Result<Running> {
    let city = load_city(cfg)?;
    let web_metrics = metrics::WebMetrics::new(&registry).context("registering metrics")?;
    let (admin_addr, admin_task) =
        admin::serve(cfg.metrics_addr, registry, health.clone(), shutdown.clone())
            .await
            .with_context(|| format!("binding the admin server to {}", cfg.metrics_addr))?;
    let shared = Arc::new(feed::Shared::new(
        live::Live::new(segments_of(&city)),
        cfg.client_buffer as usize,
        web_metrics,
    ));
    let consumers = feed::spawn_all(
        client.clone(),
        shared.clone(),
        health,
        shutdown.clone(),
        cfg.active_refresh,
        cfg.request_timeout,
    );
    let state = server::AppState {
        shared,
        client,
        layout_json: Arc::new(serde_json::to_string(&layout::layout(&city))?),
        palette_json: Arc::new(serde_json::to_string(&palette::palette())?),
        request_timeout: cfg.request_timeout,
        max_clients: i64::from(cfg.max_clients),
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding the web server to {}", cfg.listen))?;
    let web = listener.local_addr()?;
    let app = server::router(state);
    let s = shutdown.clone();
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "web server failed");
        }
        for t in consumers {
            let _ = t.await;
        }
        let _ = admin_task.await;
    });
    tracing::info!(url = %format!("http://{web}/"), districts = city.districts.len(),
        sensors = city.sensor_count(), "web view listening");
    Ok(Running {
        web,
        admin: admin_addr,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_city_is_the_builtin_one_scaled_like_the_simulators() {
        let builtin = load_city(&Config::parse_from(["citypulse-web"])).unwrap();
        assert_eq!(builtin, City::builtin());
        let big = load_city(&Config::parse_from(["citypulse-web", "--sensors", "1000"])).unwrap();
        assert_eq!(big, City::builtin_scaled(1000));
        assert_eq!(big.sensor_count(), 1000);
        let missing = Config::parse_from(["citypulse-web", "--city", "/nonexistent/city.toml"]);
        let err = format!("{:#}", load_city(&missing).unwrap_err());
        assert!(
            err.contains("reading city file /nonexistent/city.toml"),
            "{err}"
        );
        let seg = segments_of(&City::builtin());
        let first = &City::builtin().districts[0].segments[0];
        assert_eq!(seg.get(&first.detectors[0]), Some(&first.id));
    }
}
