//! End-to-end and deployment tests for citypulse. Its `tests/` run the real service binaries,
//! the configs in `deploy/`, and clients written in another language against real servers
//! started by `citypulse-harness`. Its only code is a dev-only helper for them:
//!
//! - [`pipeline`]: [`pipeline::Pipeline`] starts the whole system (nats-server, PostgreSQL and
//!   the four service binaries as child processes) and [`pipeline::Prometheus`] scrapes it.
//! - [`deploy`]: a copy of `deploy/nats` to start servers from, dev TLS certificates, sensor
//!   credentials from `citypulse-nats-auth`, MQTT publishes with `mosquitto_pub`.
//! - [`outputs`]: what a finished run left in its streams and archive, and how two runs compare
//!   (the fault tests' checks).
//!
//! The tests:
//!
//! - `tests/deploy_nats.rs`: the nats-server configs load, and their permissions hold.
//! - `tests/deploy_pipeline.rs`: every service binary runs with its own deploy credential against
//!   the deploy accounts over TLS, and a sensor's MQTT readings come out of the processors as a
//!   window result.
//! - `tests/demo_alerts.rs`: the simulator's episode and incident, through every service as a real
//!   process, fire alerts that resolve.
//! - `tests/contract_python.rs`: a subscriber written with another NATS client and CBOR library
//!   (Python's nats-py and cbor2) receives readings that match the contract.
//! - `tests/deploy_manifests.rs`: `scripts/validate-deploy` accepts the compose file and the
//!   Kubernetes manifests, and rejects broken copies of them.
//! - `tests/observability.rs`: promtool accepts the Prometheus configs and alert rules (and their
//!   unit tests pass); against the running pipeline, every PromQL expression of the Grafana
//!   dashboards returns data, every alert rule evaluates, and stopping a stage fires its stall
//!   alert.
//! - `tests/whole_pipeline_faults.rs`: SIGKILLs of nats-server and of every service change no
//!   window result, alert transition or archived reading.
//! - `tests/cluster_faults.rs`: the same on a three-node cluster with R3 streams when one node is
//!   SIGKILLed and restarted; the services reconnect by themselves.
//! - `tests/bench_smoke.rs`: `scripts/bench`, tiny, on this build's binaries: every stage reports
//!   a rate and the counts add up.

pub mod deploy;
pub mod outputs;
pub mod pipeline;
