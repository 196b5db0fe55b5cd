//! `nats-server` with JetStream: one node ([`NatsServer`]) or three ([`NatsCluster`]).

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::net::{free_port, http_get, local, nats_info, tail};

/// How long one server may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a cluster may take to route and elect a JetStream meta leader.
const CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Readiness poll interval.
const POLL: Duration = Duration::from_millis(10);
/// Oldest accepted release: pinned consumers (partitioned processors) need 2.11.
const MIN_VERSION: (u32, u32) = (2, 11);
/// How many times a first start draws new ports after losing a race for one.
const PORT_ATTEMPTS: usize = 5;

/// The `nats-server` binary the harness runs, checked to be release 2.11 or newer.
///
/// Looked up in order: the `NATS_SERVER_BIN` environment variable, the project's install location
/// `<workspace root>/.tools/bin/nats-server` (written by `scripts/install-deps`), then `PATH`.
/// The result is cached for the process.
///
/// # Panics
/// When no binary is found, when `NATS_SERVER_BIN` names a missing file, or when the binary is
/// older than 2.11 (Debian's packaged 2.9 is); the message says how to fix it.
pub fn nats_server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = find_nats_server();
        check_version(&bin);
        bin
    })
    .clone()
}

fn find_nats_server() -> PathBuf {
    const FIX: &str = "run scripts/install-deps (installs the pinned release into .tools/bin), \
                       or set NATS_SERVER_BIN to a nats-server >= 2.11";
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN").filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "NATS_SERVER_BIN={} does not exist; {FIX}",
            bin.display()
        );
        return bin;
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let installed = workspace.join(".tools/bin/nats-server");
    if installed.is_file() {
        return installed.canonicalize().unwrap_or(installed);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "nats-server not found (not in NATS_SERVER_BIN, {}, nor PATH); {FIX}",
                installed.display()
            )
        })
}

fn check_version(bin: &Path) {
    let out = Command::new(bin)
        .arg("--version")
        .output()
        .unwrap_or_else(|e| panic!("running {} --version: {e}", bin.display()));
    // Prints "nats-server: v2.12.8".
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().rsplit('v').next().unwrap_or_default();
    let mut parts = version.split('.').map(|p| p.parse::<u32>().ok());
    let (Some(Some(major)), Some(Some(minor))) = (parts.next(), parts.next()) else {
        panic!(
            "cannot parse the version of {}: {:?}",
            bin.display(),
            text.trim()
        );
    };
    assert!(
        (major, minor) >= MIN_VERSION,
        "{} is nats-server {version}, citypulse needs >= {}.{}; run scripts/install-deps \
         (or point NATS_SERVER_BIN at a newer release)",
        bin.display(),
        MIN_VERSION.0,
        MIN_VERSION.1,
    );
}

/// One `nats-server` with JetStream, listening on 127.0.0.1 only, in its own temp dir.
///
/// The temp dir holds `nats.conf`, the JetStream store (`jetstream/`), the server log
/// (`nats.log`) and anything the process wrote to stdout/stderr (`stderr.log`). Stopping keeps the
/// dir, so a restarted server finds its streams again; dropping kills the process (SIGKILL) and
/// deletes the dir.
///
/// The harness API is synchronous: starting blocks the calling thread until the server is ready,
/// which is fine inside `#[tokio::test]`.
#[derive(Debug)]
pub struct NatsServer {
    dir: TempDir,
    name: String,
    port: u16,
    monitor_port: u16,
    /// Route listener port and every node's route port, for a cluster node.
    cluster: Option<(u16, Vec<u16>)>,
    /// The caller's config text, appended after the generated lines.
    extra_conf: String,
    child: Option<Child>,
    /// Lengths of `nats.log` and `stderr.log` when the current process was spawned: diagnosing a
    /// failed start reads only what that start wrote.
    log_marks: (u64, u64),
    ready_timeout: Duration,
}

impl NatsServer {
    /// Starts a JetStream-enabled server on free ports and waits until it is ready.
    ///
    /// # Panics
    /// When the binary is missing or too old, or the server is not ready within 10 s (the panic
    /// carries the tail of its log).
    pub fn start() -> NatsServer {
        Self::start_with_config("")
    }

    /// Like [`NatsServer::start`], with `extra_conf` appended to the generated config.
    ///
    /// The generated part sets `server_name`, `listen`, `http` (monitoring), `log_file` and a
    /// `jetstream { store_dir, max_memory_store: 256MB, max_file_store: 1GB }` block. Append
    /// blocks such as `accounts { ... }` or `mqtt { listen: ... }`; with accounts, enable
    /// JetStream in the account (`jetstream: enabled`).
    pub fn start_with_config(extra_conf: &str) -> NatsServer {
        let mut server = Self::new("citypulse-test".to_owned(), None, extra_conf);
        server.start_fresh();
        server
    }

    fn new(name: String, cluster: Option<(u16, Vec<u16>)>, extra_conf: &str) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("citypulse-nats-")
            .tempdir()
            .expect("creating a temp dir for nats-server");
        NatsServer {
            dir,
            name,
            port: free_port(),
            monitor_port: free_port(),
            cluster,
            extra_conf: extra_conf.to_owned(),
            child: None,
            log_marks: (0, 0),
            ready_timeout: READY_TIMEOUT,
        }
    }

    /// The client URL, `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The HTTP monitoring base URL, `http://127.0.0.1:MPORT` (append `/varz`, `/jsz`, ...).
    pub fn monitor_url(&self) -> String {
        format!("http://{}", self.monitor_addr())
    }

    /// The HTTP monitoring address, 127.0.0.1:MPORT, for [`crate::http_get`].
    pub fn monitor_addr(&self) -> SocketAddr {
        local(self.monitor_port)
    }

    /// The JetStream `store_dir` (the server keeps its data under `jetstream/` inside it).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// Whether the server process is running (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server and starts it again on the same ports with the same store dir, then
    /// waits until it is ready. The kill is a SIGKILL: the restart is a crash recovery.
    pub fn restart(&mut self) {
        self.stop();
        self.start_again();
    }

    /// Kills the server (SIGKILL) and waits for it to exit; the port closes and the store dir
    /// stays. Does nothing when it is already stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // kill fails only when the process has already exited; wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Suspends the server (SIGSTOP) without closing anything: clients' writes pile up unread
    /// and unacknowledged, as with a server that hangs. A [`NatsServer::stop`] afterwards then
    /// certainly loses what was in flight. Does nothing when it is stopped.
    ///
    /// # Panics
    /// When `kill -STOP` cannot be run.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Resumes a server suspended by [`NatsServer::freeze`] (SIGCONT): it reads what piled up
    /// and answers it. Does nothing when it is stopped.
    ///
    /// # Panics
    /// When `kill -CONT` cannot be run.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        if let Some(child) = &self.child {
            let status = std::process::Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status()
                .unwrap_or_else(|e| panic!("running kill {signal}: {e}"));
            assert!(status.success(), "kill {signal} {} failed", child.id());
        }
    }

    /// Starts a stopped server again on the same ports with the same store dir and waits until it
    /// is ready.
    ///
    /// # Panics
    /// When the server is running, or does not become ready.
    pub fn start_again(&mut self) {
        assert!(
            self.child.is_none(),
            "nats-server {} is already running",
            self.url()
        );
        let deadline = Instant::now() + self.ready_timeout;
        loop {
            self.spawn();
            match self.wait_ready(deadline) {
                Ok(()) => return,
                // A client reconnecting meanwhile may hold the port for a moment; keep the port
                // (it is the point of an outage test) and try again until the deadline.
                Err(NotReady::PortInUse) if Instant::now() < deadline => sleep(POLL * 5),
                Err(e) => self.fail(&e),
            }
        }
    }

    /// Spawns and waits; on a lost port race draws new ports and tries again.
    fn start_fresh(&mut self) {
        for _ in 0..PORT_ATTEMPTS {
            self.spawn();
            match self.wait_ready(Instant::now() + self.ready_timeout) {
                Ok(()) => return,
                Err(NotReady::PortInUse) => {
                    self.port = free_port();
                    self.monitor_port = free_port();
                }
                Err(e) => self.fail(&e),
            }
        }
        self.fail(&NotReady::PortInUse);
    }

    fn config(&self) -> String {
        let store = self.store_dir();
        let log = self.dir.path().join("nats.log");
        let mut conf = format!(
            "server_name: {name}\n\
             listen: 127.0.0.1:{port}\n\
             http: 127.0.0.1:{mport}\n\
             log_file: {log:?}\n\
             logtime: true\n\
             jetstream {{\n  store_dir: {store:?}\n  max_memory_store: 256MB\n  \
             max_file_store: 1GB\n}}\n",
            name = self.name,
            port = self.port,
            mport = self.monitor_port,
        );
        if let Some((route_port, route_ports)) = &self.cluster {
            let routes: Vec<String> = route_ports
                .iter()
                .map(|p| format!("nats-route://127.0.0.1:{p}"))
                .collect();
            let _ = write!(
                conf,
                "cluster {{\n  name: citypulse-test\n  listen: 127.0.0.1:{route_port}\n  \
                 routes: [{}]\n}}\n",
                routes.join(", ")
            );
        }
        conf.push_str(&self.extra_conf);
        conf.push('\n');
        conf
    }

    fn spawn(&mut self) {
        assert!(
            self.child.is_none(),
            "nats-server {} is already running",
            self.url()
        );
        let conf_path = self.dir.path().join("nats.conf");
        std::fs::write(&conf_path, self.config()).expect("writing nats.conf");
        self.log_marks = (self.log_len("nats.log"), self.log_len("stderr.log"));
        let out = self.output_file();
        let err = out.try_clone().expect("cloning the stderr.log handle");
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", nats_server_bin().display()));
        self.child = Some(child);
    }

    /// stdout and stderr, appended across restarts: errors before the log file opens land here.
    fn output_file(&self) -> File {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("stderr.log"))
            .expect("opening stderr.log")
    }

    /// Waits for `/healthz` to answer 200 and the client port to greet with `INFO`.
    ///
    /// For a cluster node `/healthz` answers 200 only once the node is in contact with a
    /// JetStream meta leader and current.
    fn wait_ready(&mut self, deadline: Instant) -> Result<(), NotReady> {
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                let logs = self.logs();
                return Err(if logs.contains("address already in use") {
                    NotReady::PortInUse
                } else {
                    NotReady::Exited(status.to_string())
                });
            }
            let last = match http_get(self.monitor_addr(), "/healthz") {
                Ok((200, _)) if nats_info(self.port) => return Ok(()),
                Ok((200, _)) => "healthz ok, client port not greeting yet".to_owned(),
                Ok((status, body)) => format!("healthz {status}: {}", body.trim()),
                Err(e) => format!("healthz: {e}"),
            };
            if Instant::now() >= deadline {
                return Err(NotReady::Timeout(last));
            }
            sleep(POLL);
        }
    }

    fn log_len(&self, name: &str) -> u64 {
        std::fs::metadata(self.dir.path().join(name)).map_or(0, |m| m.len())
    }

    /// What the current (or last) process wrote to `nats.log` and `stderr.log`.
    fn logs(&self) -> String {
        let since = |name: &str, mark: u64| {
            let bytes = std::fs::read(self.dir.path().join(name)).unwrap_or_default();
            let start = usize::try_from(mark).unwrap_or(usize::MAX).min(bytes.len());
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        };
        since("nats.log", self.log_marks.0) + &since("stderr.log", self.log_marks.1)
    }

    fn log_tails(&self) -> String {
        format!(
            "{}\n{}",
            tail(&self.dir.path().join("nats.log"), 40),
            tail(&self.dir.path().join("stderr.log"), 20)
        )
    }

    fn fail(&mut self, why: &NotReady) -> ! {
        self.stop();
        let why = match why {
            NotReady::PortInUse => format!("ports still in use after {PORT_ATTEMPTS} draws"),
            NotReady::Exited(status) => format!("exited early ({status})"),
            NotReady::Timeout(last) => {
                format!(
                    "not ready after {:?} (last check: {last})",
                    self.ready_timeout
                )
            }
        };
        panic!(
            "nats-server {} ({}): {why}\nconfig {}:\n{}\n{}",
            self.name,
            self.url(),
            self.dir.path().join("nats.conf").display(),
            self.config(),
            self.log_tails()
        );
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Why a server did not become ready.
enum NotReady {
    PortInUse,
    Exited(String),
    Timeout(String),
}

/// Three JetStream nodes (`n0`, `n1`, `n2`) routed together on 127.0.0.1, for replicated (R3)
/// streams and node-failure tests.
///
/// [`NatsCluster::start`] returns once every node is healthy, routed to the other two, and
/// reports an elected JetStream meta leader. Each node is a [`NatsServer`] with its own ports and
/// store dir; killing and restarting a node keeps both.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Number of nodes.
    const SIZE: usize = 3;

    /// Starts three routed JetStream nodes and waits (up to 30 s) until all are healthy, fully
    /// routed, and report a meta leader.
    ///
    /// # Panics
    /// When a node does not start or the cluster does not form in time (with the log tails).
    pub fn start() -> NatsCluster {
        let mut route_ports: Vec<u16> = (0..Self::SIZE).map(|_| free_port()).collect();
        let mut nodes: Vec<NatsServer> = Vec::new();
        for attempt in 0..PORT_ATTEMPTS {
            nodes = (0..Self::SIZE)
                .map(|i| {
                    let cluster = Some((route_ports[i], route_ports.clone()));
                    let mut node = NatsServer::new(format!("n{i}"), cluster, "");
                    node.ready_timeout = CLUSTER_READY_TIMEOUT;
                    node
                })
                .collect();
            nodes.iter_mut().for_each(NatsServer::spawn);
            let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
            let mut lost_race = false;
            for node in &mut nodes {
                match node.wait_ready(deadline) {
                    Ok(()) => {}
                    Err(NotReady::PortInUse) if attempt + 1 < PORT_ATTEMPTS => lost_race = true,
                    Err(e) => node.fail(&e),
                }
            }
            if !lost_race {
                break;
            }
            // Routes name every node's port, so a lost race means new ports for all of them.
            drop(std::mem::take(&mut nodes));
            route_ports = (0..Self::SIZE).map(|_| free_port()).collect();
        }
        let mut cluster = NatsCluster { nodes };
        let deadline = Instant::now() + CLUSTER_READY_TIMEOUT;
        cluster.wait_until(deadline, "a JetStream meta leader", |nodes| {
            nodes.iter().try_for_each(|node| {
                let (status, body) = http_get(node.monitor_addr(), "/jsz")
                    .map_err(|e| format!("{} /jsz: {e}", node.name))?;
                if status == 200 && has_meta_leader(&body) {
                    Ok(())
                } else {
                    Err(format!("{} /jsz {status}: {body}", node.name))
                }
            })
        });
        for i in 0..Self::SIZE {
            cluster.wait_routes(i, deadline);
        }
        // Without this, a replicated stream created at once can fail with "no suitable peers
        // for placement, peer offline" on a busy machine.
        cluster.wait_until(
            deadline,
            "meta leader counting both other peers current",
            |nodes| {
                let counts: Vec<usize> = nodes
                    .iter()
                    .map(|node| {
                        http_get(node.monitor_addr(), "/jsz")
                            .map_or(0, |(_, body)| meta_peers_current(&body))
                    })
                    .collect();
                if counts.contains(&(Self::SIZE - 1)) {
                    Ok(())
                } else {
                    Err(format!("current peers seen by each node: {counts:?}"))
                }
            },
        );
        cluster
    }

    /// The client URLs of all nodes; `async_nats::connect(cluster.urls())` accepts them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Node `i` (0, 1 or 2).
    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    /// Kills node `i` (SIGKILL); its ports and store dir are kept for
    /// [`NatsCluster::restart_node`].
    pub fn kill_node(&mut self, i: usize) {
        self.nodes[i].stop();
    }

    /// Starts node `i` again (killing it first if it runs) and waits until it is healthy (back in
    /// contact with a meta leader, current) and routed to every other running node. Needs a
    /// quorum of running nodes.
    ///
    /// Streams it hosts may still be electing a leader when this returns: poll with
    /// [`crate::wait_for`] for what the test needs next.
    pub fn restart_node(&mut self, i: usize) {
        self.nodes[i].restart();
        self.wait_routes(i, Instant::now() + CLUSTER_READY_TIMEOUT);
    }

    /// Waits until node `i` has a route to every other running node.
    fn wait_routes(&mut self, i: usize, deadline: Instant) {
        let peers: Vec<String> = (0..Self::SIZE)
            .filter(|&j| j != i && self.nodes[j].is_running())
            .map(|j| self.nodes[j].name.clone())
            .collect();
        let what = format!("routes from {} to {peers:?}", self.nodes[i].name);
        self.wait_until(deadline, &what, |nodes| {
            let node = &nodes[i];
            let (_, body) = http_get(node.monitor_addr(), "/routez")
                .map_err(|e| format!("{} /routez: {e}", node.name))?;
            let body: String = body.split_whitespace().collect();
            match peers
                .iter()
                .find(|p| !body.contains(&format!("\"remote_name\":\"{p}\"")))
            {
                None => Ok(()),
                Some(missing) => Err(format!("{} has no route to {missing}", node.name)),
            }
        });
    }

    /// Polls `check` every 10 ms until it passes; past `deadline`, kills the nodes and panics
    /// with `what`, the last failure and every node's log tail.
    fn wait_until(
        &mut self,
        deadline: Instant,
        what: &str,
        mut check: impl FnMut(&[NatsServer]) -> Result<(), String>,
    ) {
        loop {
            let last = match check(&self.nodes) {
                Ok(()) => return,
                Err(last) => last,
            };
            if Instant::now() >= deadline {
                let tails: Vec<String> = self.nodes.iter().map(NatsServer::log_tails).collect();
                self.nodes.iter_mut().for_each(NatsServer::stop);
                panic!(
                    "nats cluster: no {what} after {CLUSTER_READY_TIMEOUT:?} \
                     (last check: {last})\n{}",
                    tails.join("\n")
                );
            }
            sleep(POLL);
        }
    }
}

/// Creates `config`'s stream, waiting up to 30 s for the answer instead of `js`'s request timeout
/// (5 s by default), which placing a replicated stream on a busy two-core machine can outlast
/// (CI of 00ff208 timed out so). Every other request keeps `js`'s timeout: a publish lost to a
/// killed node is still given up on, and retried, after 5 s.
///
/// "No suitable peers for placement, peer offline" (10005) is retried for up to the same 30 s:
/// the meta leader marks a peer online only once that peer's statistics reach it, which can
/// come after the meta group counts the peer current (CI of b63e67a failed so, at creation).
///
/// # Panics
/// When the stream cannot be created.
pub async fn create_stream_patiently(
    js: &async_nats::jetstream::Context,
    config: async_nats::jetstream::stream::Config,
) -> async_nats::jetstream::stream::Stream {
    use async_nats::jetstream::{context::CreateStreamErrorKind, ErrorCode};
    let mut patient = js.clone();
    patient.set_timeout(Duration::from_secs(30));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let error = match patient.create_stream(config.clone()).await {
            Ok(stream) => return stream,
            Err(error) => error,
        };
        let placement = matches!(error.kind(), CreateStreamErrorKind::JetStream(e)
            if e.error_code() == ErrorCode::CLUSTER_NO_PEERS);
        if !placement || Instant::now() >= deadline {
            panic!("creating stream {}: {error}", config.name);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a `/jsz` body names a meta leader (`"meta_cluster": { ..., "leader": "n1", ... }`).
fn has_meta_leader(jsz: &str) -> bool {
    let jsz: String = jsz.split_whitespace().collect();
    let Some((_, meta)) = jsz.split_once("\"meta_cluster\"") else {
        return false;
    };
    let Some((_, after)) = meta.split_once("\"leader\":") else {
        return false;
    };
    after.starts_with('"') && !after.starts_with("\"\"")
}

/// How many peers a `/jsz` body's meta leader counts as current (`"meta_cluster": { ...,
/// "replicas": [{"name": "n0", "current": true, ...}, ...] }`; only the leader lists them).
pub fn meta_peers_current(jsz: &str) -> usize {
    let jsz: String = jsz.split_whitespace().collect();
    let replicas = jsz
        .split_once("\"meta_cluster\"")
        .and_then(|(_, meta)| meta.split_once("\"replicas\":["))
        .map_or("", |(_, after)| after.split(']').next().unwrap_or(""));
    replicas.matches("\"current\":true").count()
}

#[cfg(test)]
mod tests {
    use super::{has_meta_leader, meta_peers_current};

    #[test]
    fn current_meta_peers_are_counted_from_jsz() {
        let jsz = r#"{"meta_cluster": {"leader": "n1", "replicas": [
            {"name": "n0", "current": true, "active": 1},
            {"name": "n2", "current": false, "active": 9}], "cluster_size": 3}}"#;
        assert_eq!(meta_peers_current(jsz), 1);
        assert_eq!(meta_peers_current(&jsz.replace("false", "true")), 2);
        assert_eq!(
            meta_peers_current(r#"{"meta_cluster": {"leader": "n1"}}"#),
            0
        );
        assert_eq!(meta_peers_current(r#"{"config": {"current": true}}"#), 0);
    }

    #[test]
    fn meta_leader_is_read_from_jsz() {
        assert!(has_meta_leader(
            r#"{"meta_cluster": {"name": "c", "leader": "n1", "peer": "x"}}"#
        ));
        assert!(!has_meta_leader(
            r#"{"meta_cluster": {"name": "c", "leader": "", "peer": "x"}}"#
        ));
        assert!(!has_meta_leader(r#"{"meta_cluster": {"name": "c"}}"#));
        assert!(!has_meta_leader(r#"{"config": {}}"#));
    }
}
