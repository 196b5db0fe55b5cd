//! The small runtime every citypulse service shares, so that each service's `main` only wires:
//!
//! - [`telemetry`]: structured logs with `tracing` ([`telemetry::LogArgs`], text or JSON).
//! - [`admin`]: the admin HTTP server, `/metrics` (Prometheus text) and `/healthz`
//!   ([`admin::Health`]).
//! - [`shutdown`]: [`shutdown::Shutdown`], a clonable signal that SIGINT/SIGTERM trigger.
//! - [`nats`]: [`nats::NatsArgs`] and [`nats::connect`], with connection events logged and counted
//!   ([`nats::NatsMetrics`]).
//! - [`jetstream`]: idempotent stream and bucket provisioning ([`jetstream::ensure_stream`],
//!   [`jetstream::ensure_bucket`]), retried with back-off at start-up by every service
//!   ([`jetstream::provision`]), and publishing
//!   with acks and retries under a stable `Nats-Msg-Id` ([`jetstream::publish_durably`]), and
//!   consumer lag as gauges ([`jetstream::watch_consumer_lag`]), and how long each stream's
//!   limits hold its input ([`jetstream::watch_retention`], on the pure [`retention`]).
//! - [`source`]: [`source::Source`], a durable consumer read strictly in stream order, in
//!   batches bounded in messages and in bytes ([`source::pull_bytes`]), with cumulative acks and
//!   resumption from a checkpoint or the ack floor.
//! - [`publish`]: [`publish::publish_all`], a group of messages published with bounded acks in
//!   flight (a window's acks to one reply subject, not one request each) and retried under
//!   their `Nats-Msg-Id`; [`publish::publish_in_windows`], the same in the caller's
//!   [`publish::Windows`]: larger, each subject at most once per window (so a retried message
//!   never lands behind the next one of its subject), and the acks merely counted where no one
//!   needs to know which is whose (the processors' results, the simulator's readings); in both,
//!   a window never holds two epochs ([`publish::Outgoing::epoch`]: the processors' window
//!   ends), so every message of one epoch is stored before any of the next;
//!   [`publish::dead_letter`], the one dead-letter
//!   builder (sanitised headers).
//! - [`stream_config`]: every JetStream stream's settings ([`stream_config::Limits`] and one builder per
//!   stream), so the owner of a stream and a service that merely needs it create it alike.
//! - [`metrics`]: the one way to build and register metrics in the process's registry.
//! - [`alloc`]: the memory allocator every service binary installs.
//! - [`group`]: instances sharing units of work (partitions, an active role) through leases in
//!   a KV bucket whose keys expire: membership, balanced assignment, fencing.
//! - [`zstd_cbor`]: state as CBOR in one zstd frame with its checksum (the services'
//!   checkpoints), and uncompressed CBOR of earlier versions read as it is.
//! - [`cadence`]: when a consumer that acks after its checkpoint writes one (PURE, time passed
//!   in).
//! - [`small_map`] and [`id`]: a map and a key for the services' per-sensor state, smaller and
//!   faster than `BTreeMap` and `String` there, serialized as they are (PURE).
//! - [`duration`]: human durations ("30s", "2h") for clap, and [`duration::millis`]; [`clock`]: the
//!   wall clock in ms.
//!
//! Nothing here knows the domain beyond the wire contract's stream names; all of it is I/O
//! plumbing.

pub mod admin;
pub mod alloc;
pub mod cadence;
pub mod clock;
pub mod duration;
pub mod group;
pub mod id;
pub mod jetstream;
pub mod metrics;
pub mod nats;
pub mod publish;
pub mod retention;
pub mod shutdown;
pub mod small_map;
pub mod source;
pub mod stream_config;
pub mod telemetry;
pub mod zstd_cbor;
