//! deploy/: the compose file, the Kubernetes manifests, Prometheus and Grafana provisioning and
//! the Dockerfile pass `scripts/validate-deploy` (compose-spec schema, Kubernetes schemas in
//! strict mode, cross-references), and broken copies of them do not.
//!
//! Needs python3 with pip (the script installs its pinned tools into .tools/python-deploy).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use citypulse_e2e::deploy::repo;
use std::path::Path;
use std::process::{Command, Output};

fn validate(deploy_dir: Option<&Path>) -> Output {
    let mut cmd = Command::new(repo().join("scripts/validate-deploy"));
    if let Some(dir) = deploy_dir {
        cmd.arg("--deploy-dir").arg(dir);
    }
    cmd.output().expect("running scripts/validate-deploy")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A copy of deploy/ in a temp dir, with `edits` applied as (file, from, to) replacements that
/// must each match.
fn broken_copy(edits: &[(&str, &str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&repo().join("deploy"), dir.path());
    for (file, from, to) in edits {
        let path = dir.path().join(file);
        let original = std::fs::read_to_string(&path).unwrap();
        assert!(
            original.contains(from),
            "{file} no longer contains {from:?}; update this test"
        );
        std::fs::write(&path, original.replacen(from, to, 1)).unwrap();
    }
    dir
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            if entry.file_name() != "dev" {
                copy_dir(&entry.path(), &target);
            }
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn deploy_manifests_pass_validation() {
    let out = validate(None);
    assert!(
        out.status.success(),
        "scripts/validate-deploy failed:\n{}",
        text(&out)
    );
    assert!(text(&out).contains("OK ("), "{}", text(&out));
}

#[test]
fn an_unchanged_copy_passes_so_the_broken_copies_below_fail_for_their_edit() {
    let copy = broken_copy(&[]);
    let out = validate(Some(copy.path()));
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn kubernetes_manifest_with_a_wrong_type_is_rejected() {
    let copy = broken_copy(&[("k8s/nats.yaml", "replicas: 3", "replicas: three")]);
    let out = validate(Some(copy.path()));
    assert!(!out.status.success(), "accepted replicas: three");
    assert!(
        text(&out).contains("nats.yaml: StatefulSet/nats: spec.replicas"),
        "{}",
        text(&out)
    );
}

#[test]
fn kubernetes_manifest_with_an_unknown_field_is_rejected() {
    let copy = broken_copy(&[(
        "k8s/citypulse.yaml",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFileSystem: true",
    )]);
    let out = validate(Some(copy.path()));
    assert!(!out.status.success(), "accepted a misspelt field");
    assert!(
        text(&out).contains("readOnlyRootFileSystem"),
        "{}",
        text(&out)
    );
}

#[test]
fn compose_file_with_an_unknown_key_is_rejected() {
    let copy = broken_copy(&[(
        "compose.yaml",
        "    image: postgres:15-bookworm",
        "    imagee: postgres:15-bookworm",
    )]);
    let out = validate(Some(copy.path()));
    assert!(!out.status.success(), "accepted imagee");
    assert!(
        text(&out).contains("compose-spec: services/postgres"),
        "{}",
        text(&out)
    );
}

#[test]
fn compose_service_with_another_services_nats_password_is_rejected() {
    let copy = broken_copy(&[(
        "compose.yaml",
        "NATS_PASSWORD: ${INGEST_PASSWORD}",
        "NATS_PASSWORD: ${ALERTS_PASSWORD}",
    )]);
    let out = validate(Some(copy.path()));
    assert!(!out.status.success(), "accepted a mismatched password");
    assert!(
        text(&out).contains("ingest: NATS_PASSWORD should be ${INGEST_PASSWORD}"),
        "{}",
        text(&out)
    );
}

#[test]
fn metrics_port_out_of_step_with_prometheus_is_rejected() {
    let copy = broken_copy(&[(
        "prometheus/prometheus-compose.yml",
        "ingest:9101",
        "ingest:9111",
    )]);
    let out = validate(Some(copy.path()));
    assert!(!out.status.success(), "accepted a wrong scrape port");
    assert!(
        text(&out).contains("job citypulse-ingest should scrape ingest:9101"),
        "{}",
        text(&out)
    );
}
