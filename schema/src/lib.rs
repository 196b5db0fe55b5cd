//! The citypulse wire contract (v1): everything that crosses a process boundary.
//!
//! - [`subject`]: the subject map — [`SensorSubject`] parses and builds
//!   `sensors.<district>.<kind>.<sensor_id>`; builders for `metrics.…`, `alerts.…`, `dlq.…`; and
//!   [`partition_of`], the server's subject-mapping partition function.
//! - [`Reading`] (with [`Traffic`] and [`Air`] measurements), [`WindowResult`] and
//!   [`AlertEvent`]: the three messages, each with `encode`/`decode` to CBOR and a `msg_id` used
//!   as JetStream's `Nats-Msg-Id` for deduplication.
//! - [`DecodeError`]: why bytes are not a contract message, with a bounded
//!   [`reason`](DecodeError::reason) for metrics and dead-letter subjects.
//! - [`vocab`]: the closed vocabularies ([`Kind`], [`Severity`], [`Pollutant`], [`Los`], …).
//! - [`streams`]: names and subjects of the JetStream streams.
//! - [`batch`]: the internal READINGS batch format (not public contract); [`seq`]: per-sensor
//!   duplicate detection by sequence number.
//!
//! The contract is also written as CDDL (RFC 8610) in `schema/citypulse.cddl`, with golden CBOR
//! fixtures in `schema/fixtures/` that the tests decode forever. Readers tolerate unknown keys; a
//! breaking change bumps `v`.
//!
//! This crate is pure: no async runtime, no NATS client, no clock.

pub mod alert;
pub mod batch;
pub mod codec;
mod lengths;
pub mod reading;
pub mod seq;
pub mod streams;
pub mod subject;
pub mod vocab;
pub mod window;

pub use alert::AlertEvent;
pub use codec::{DecodeError, MAX_READING_BYTES};
pub use reading::{reading_msg_id, Air, Measurement, Reading, Traffic, SCHEMA_VERSION};
pub use subject::{partition_of, SensorSubject, SubjectError};
pub use vocab::{AlertState, AqiCategory, EaqiBand, Kind, Los, Pollutant, Severity, UnknownToken};
pub use window::{metric_names, AirMetrics, TrafficMetrics, WindowMetrics, WindowResult};
