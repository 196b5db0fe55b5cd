//! End-to-end and deployment tests for citypulse. This crate has no code of its own: its
//! `tests/` run the real service binaries, the configs in `deploy/`, and clients written in
//! another language against real servers started by `citypulse-harness`.
//!
//! - `tests/deploy_nats.rs`: the nats-server configs load, and their permissions hold.
//! - `tests/contract_python.rs`: a subscriber written with another NATS client and CBOR library
//!   (Python's nats-py and cbor2) receives readings that match the contract.
//! - `tests/deploy_manifests.rs`: `scripts/validate-deploy` accepts the compose file and the
//!   Kubernetes manifests, and rejects broken copies of them.
