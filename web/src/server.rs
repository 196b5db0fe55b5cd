//! SHELL: the page's HTTP server.
//!
//! | route | what |
//! |---|---|
//! | `GET /` `/app.js` `/app.css` | the page, embedded in the binary |
//! | `GET /api/layout` | the map ([`crate::layout::Layout`]) |
//! | `GET /api/palette` | measures, categories and colours ([`crate::palette::Palette`]) |
//! | `GET /api/state` | the snapshot a fresh page starts from |
//! | `GET /api/district/{id}` | the district panel: history, latest results, worst segments |
//! | `GET /api/events` | Server-Sent Events: `snapshot`, then `district`, `alert`, `active` |
//! | `POST /api/alerts/{op}` | relays `list`, `ack`, `silence`, `unsilence` to `citypulse.alerts.<op>` |
//!
//! A browser that falls more than `--client-buffer` updates behind is dropped (counted as
//! `slow`); its `EventSource` reconnects and starts from a fresh snapshot. Sending never waits for
//! a browser.

use crate::feed::{self, Shared};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures::Stream;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");

/// Everything a request handler needs.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Live state, broadcast, metrics.
    pub shared: Arc<Shared>,
    /// For relayed requests.
    pub client: async_nats::Client,
    /// `/api/layout`, rendered once.
    pub layout_json: Arc<String>,
    /// `/api/palette`, rendered once.
    pub palette_json: Arc<String>,
    /// `--request-timeout`.
    pub request_timeout: Duration,
    /// `--max-clients`.
    pub max_clients: i64,
}

/// The router.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/app.css",
            get(|| async { asset("text/css; charset=utf-8", APP_CSS) }),
        )
        .route(
            "/api/layout",
            get(|State(s): State<AppState>| async move {
                json(StatusCode::OK, s.layout_json.to_string())
            }),
        )
        .route(
            "/api/palette",
            get(|State(s): State<AppState>| async move {
                json(StatusCode::OK, s.palette_json.to_string())
            }),
        )
        .route("/api/state", get(state_snapshot))
        .route("/api/district/{id}", get(district))
        .route("/api/events", get(events))
        .route("/api/alerts/{op}", post(relay))
        .with_state(state)
}

/// The weight of the page: HTML, JavaScript and CSS, in bytes.
pub fn page_bytes() -> usize {
    INDEX_HTML.len() + APP_JS.len() + APP_CSS.len()
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response()
}

async fn state_snapshot(State(s): State<AppState>) -> Response {
    let snapshot = s.shared.live().snapshot();
    json(StatusCode::OK, snapshot.to_string())
}

async fn district(State(s): State<AppState>, Path(id): Path<String>) -> Response {
    let d = s.shared.live().district(&id);
    json(StatusCode::OK, d.to_string())
}

/// Decrements the client gauge when a stream ends, however it ends.
struct ClientGuard(prometheus::IntGauge);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn events(State(s): State<AppState>) -> Response {
    let m = &s.shared.metrics;
    if m.clients.get() >= s.max_clients {
        m.dropped.with_label_values(&["full"]).inc();
        return json(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"too many browsers connected"}"#.to_owned(),
        );
    }
    m.clients.inc();
    let guard = ClientGuard(m.clients.clone());
    let (rx, snapshot) = s.shared.subscribe();
    let first = Event::default()
        .event("snapshot")
        .data(snapshot.to_string());
    let dropped = m.dropped.with_label_values(&["slow"]);
    Sse::new(updates(rx, first, dropped, guard))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// The snapshot, then every update, until the browser falls behind or the server stops.
fn updates(
    rx: tokio::sync::broadcast::Receiver<Arc<crate::live::Update>>,
    first: Event,
    dropped: prometheus::IntCounter,
    guard: ClientGuard,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures::stream::unfold(
        (Some(first), rx, dropped, guard),
        |(first, mut rx, dropped, guard)| async move {
            if let Some(ev) = first {
                return Some((Ok(ev), (None, rx, dropped, guard)));
            }
            match rx.recv().await {
                Ok(u) => {
                    let ev = Event::default().event(u.event).data(u.data.as_str());
                    Some((Ok(ev), (None, rx, dropped, guard)))
                }
                Err(RecvError::Lagged(missed)) => {
                    dropped.inc();
                    tracing::info!(missed, "a slow browser was dropped; it will reconnect");
                    None
                }
                Err(RecvError::Closed) => None,
            }
        },
    )
}

/// `POST /api/alerts/{op}`: the body goes to `citypulse.alerts.<op>` as is, the reply comes back
/// as is (200, or 400 when the service refused it with `{"error": …}`; 503 when it does not
/// answer).
async fn relay(State(s): State<AppState>, Path(op): Path<String>, body: Bytes) -> Response {
    let op: &'static str = match op.as_str() {
        "list" => "list",
        "ack" => "ack",
        "silence" => "silence",
        "unsilence" => "unsilence",
        _ => {
            return json(
                StatusCode::NOT_FOUND,
                r#"{"error":"unknown operation (list, ack, silence, unsilence)"}"#.to_owned(),
            )
        }
    };
    let subject = format!("citypulse.alerts.{op}");
    let outcome = feed::request(&s.client, &subject, body.to_vec(), s.request_timeout).await;
    let (label, response) = match outcome {
        Ok(reply) => {
            let refused = serde_json::from_slice::<serde_json::Value>(&reply)
                .map(|v| v.get("error").is_some())
                .unwrap_or(true);
            let text = String::from_utf8_lossy(&reply).into_owned();
            if refused {
                ("refused", json(StatusCode::BAD_REQUEST, text))
            } else {
                ("ok", json(StatusCode::OK, text))
            }
        }
        Err(e) => (
            "unavailable",
            json(
                StatusCode::SERVICE_UNAVAILABLE,
                serde_json::json!({"error": e.to_string()}).to_string(),
            ),
        ),
    };
    s.shared.metrics.api.with_label_values(&[op, label]).inc();
    if op != "list" {
        s.shared.refresh.notify_one();
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_page_weighs_under_300_kb() {
        let bytes = super::page_bytes();
        assert!(bytes < 300 * 1024, "{bytes} bytes");
        assert!(bytes > 1000, "{bytes} bytes: the assets are embedded");
    }
}
