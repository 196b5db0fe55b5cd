//! The small runtime every citypulse service shares, so that each service's `main` only wires:
//!
//! - [`telemetry`]: structured logs with `tracing` ([`telemetry::LogArgs`], text or JSON).
//! - [`admin`]: the admin HTTP server, `/metrics` (Prometheus text) and `/healthz`
//!   ([`admin::Health`]).
//! - [`shutdown`]: [`shutdown::Shutdown`], a clonable signal that SIGINT/SIGTERM trigger.
//! - [`nats`]: [`nats::NatsArgs`] and [`nats::connect`], with connection events logged and counted
//!   ([`nats::NatsMetrics`]).
//! - [`jetstream`]: idempotent stream provisioning ([`jetstream::ensure_stream`]) and publishing
//!   with acks and retries under a stable `Nats-Msg-Id` ([`jetstream::publish_durably`]), and
//!   consumer lag as gauges ([`jetstream::watch_consumer_lag`]).
//! - [`stream_config`]: every JetStream stream's settings ([`stream_config::Limits`] and one builder per
//!   stream), so the owner of a stream and a service that merely needs it create it alike.
//! - [`duration`]: human durations ("30s", "2h") for clap, and [`duration::millis`]; [`clock`]: the
//!   wall clock in ms.
//!
//! Nothing here knows the domain beyond the wire contract's stream names; all of it is I/O
//! plumbing.

pub mod admin;
pub mod clock;
pub mod duration;
pub mod jetstream;
pub mod nats;
pub mod shutdown;
pub mod stream_config;
pub mod telemetry;
