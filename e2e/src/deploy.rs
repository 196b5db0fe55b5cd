//! Helpers for tests of `deploy/`: a copy of `deploy/nats` to start servers from, the dev TLS
//! certificates, sensor credentials issued by `deploy/nats/citypulse-nats-auth`, and MQTT
//! publishes with a real MQTT client (`mosquitto_pub`).
//!
//! Needs openssl (certificates), the Python package bcrypt in `.tools/python-deploy`
//! (`scripts/validate-deploy --install-only`, run here on first use) and `mosquitto_pub`
//! (Debian package `mosquitto-clients`). A missing one panics with the fix.

// Dev-only, like the harness: a broken test environment panics with the reason.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use citypulse_harness::NatsServer;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Runs Python `code` with `scripts/` importable (`import bench`, `import soak`), for tests of
/// the scripts' pure parts; its standard output. Panics with its stderr when it fails.
pub fn scripts_python(code: &str) -> String {
    let code = format!(
        "import sys\nsys.path.insert(0, {:?})\n{code}",
        repo().join("scripts").display().to_string()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &code])
        .output()
        .expect("running python3");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// A dev password from the committed `deploy/nats/passwords.conf` (`NAME: "value"` lines), e.g.
/// `dev_password("INGEST_PASSWORD")`.
pub fn dev_password(var: &str) -> String {
    let text = std::fs::read_to_string(repo().join("deploy/nats/passwords.conf")).unwrap();
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim() == var)
        .map(|(_, v)| v.trim().trim_matches('"').to_owned())
        .unwrap_or_else(|| panic!("{var} not in deploy/nats/passwords.conf"))
}

/// Copies `deploy/nats/` (files only) into `<under>/nats` and returns that dir.
pub fn copy_nats_dir(under: &Path) -> PathBuf {
    let dst = under.join("nats");
    std::fs::create_dir_all(&dst).unwrap();
    for entry in std::fs::read_dir(repo().join("deploy/nats")).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), dst.join(entry.file_name())).unwrap();
        }
    }
    dst
}

/// Runs `deploy/tls/gen-dev-certs.sh` into `<under>/tls` and returns that dir (`ca.pem`,
/// `server.pem`, `server-key.pem`; the server certificate names localhost and 127.0.0.1).
pub fn dev_certs(under: &Path) -> PathBuf {
    let out = under.join("tls");
    let status = Command::new(repo().join("deploy/tls/gen-dev-certs.sh"))
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("running deploy/tls/gen-dev-certs.sh: {e}"));
    assert!(
        status.status.success(),
        "gen-dev-certs.sh failed (needs openssl):\n{}{}",
        String::from_utf8_lossy(&status.stdout),
        String::from_utf8_lossy(&status.stderr)
    );
    out
}

/// An `include` line for nats-server that reaches `path` from the harness's temp dir.
///
/// nats-server joins an include path to the including file's directory even when it is
/// absolute, so the path climbs to the root first: extra `..` at the root are no-ops.
pub fn include_line(path: &Path) -> String {
    let abs = path.to_str().unwrap().trim_start_matches('/');
    format!("include \"{}{abs}\"\n", "../".repeat(64))
}

/// A copy of `deploy/nats` in a temp dir, to add sensors to and start servers from.
#[derive(Debug)]
pub struct DeployCopy {
    /// The temp dir (deleted on drop); the copy is its `nats/`.
    pub work: tempfile::TempDir,
    /// `<work>/nats`.
    pub conf_dir: PathBuf,
}

impl DeployCopy {
    /// Copies `deploy/nats` into a new temp dir.
    pub fn new() -> Self {
        let work = tempfile::tempdir().unwrap();
        let conf_dir = copy_nats_dir(work.path());
        DeployCopy { work, conf_dir }
    }

    /// The config text of [`DeployCopy::start`]: an include of the copy's `accounts.conf`, then
    /// `extra`.
    pub fn config(&self, extra: &str) -> String {
        format!(
            "{}{extra}",
            include_line(&self.conf_dir.join("accounts.conf"))
        )
    }

    /// A harness server (127.0.0.1, JetStream) with the copy's accounts.conf and `extra`.
    pub fn start(&self, extra: &str) -> NatsServer {
        NatsServer::start_with_config(&self.config(extra))
    }
}

impl Default for DeployCopy {
    fn default() -> Self {
        Self::new()
    }
}

/// A user and its plain password.
#[derive(Debug, Clone)]
pub struct Credential {
    /// User name.
    pub user: String,
    /// Plain password.
    pub password: String,
}

/// Installs the deploy Python tools (bcrypt) once per test process; a no-op when present.
fn ensure_python_tools() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        let out = Command::new(repo().join("scripts/validate-deploy"))
            .arg("--install-only")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "scripts/validate-deploy --install-only failed (needs python3 and pip):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// `citypulse-nats-auth` of the copy in `conf_dir`, with the deploy Python tools on its path.
pub fn auth_tool(conf_dir: &Path) -> Command {
    ensure_python_tools();
    let mut cmd = Command::new(conf_dir.join("citypulse-nats-auth"));
    cmd.env("PYTHONPATH", repo().join(".tools/python-deploy"));
    cmd
}

/// Issues a sensor credential into `conf_dir/sensors.conf` with `citypulse-nats-auth sensor add`
/// (bcrypt cost 4: fast, for tests).
pub fn issue_sensor(conf_dir: &Path, district: &str, kind: &str, id: &str) -> Credential {
    let out = auth_tool(conf_dir)
        .args([
            "sensor",
            "add",
            "--district",
            district,
            "--kind",
            kind,
            "--id",
            id,
            "--cost",
            "4",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "citypulse-nats-auth sensor add failed (bcrypt missing? run scripts/validate-deploy --install-only):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let kv: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(kv["subject"], format!("sensors.{district}.{kind}.{id}"));
    assert_eq!(kv["mqtt_topic"], format!("sensors/{district}/{kind}/{id}"));
    Credential {
        user: kv["user"].to_owned(),
        password: kv["password"].to_owned(),
    }
}

/// Publishes `payload` with mosquitto_pub over MQTT+TLS (trusting `certs/ca.pem`, host
/// `localhost`) at QoS 1; `Err(output)` when it fails.
pub fn mqtt_publish(
    port: &str,
    certs: &Path,
    user: &str,
    password: &str,
    topic: &str,
    payload: &[u8],
) -> Result<(), String> {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), payload).unwrap();
    let out = Command::new(mosquitto_pub())
        .args([
            "-h",
            "localhost",
            "-p",
            port,
            "-q",
            "1",
            "-t",
            topic,
            "-u",
            user,
            "-P",
            password,
        ])
        .arg("--cafile")
        .arg(certs.join("ca.pem"))
        .arg("-f")
        .arg(file.path())
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn mosquitto_pub() -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join("mosquitto_pub"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("mosquitto_pub not found on PATH: apt-get install mosquitto-clients (scripts/install-deps)")
        })
}
