//! [`Pipeline`]: the whole citypulse system, started for a test: a real nats-server (or a
//! three-node cluster, [`PipelineOptions::cluster`]) and PostgreSQL (from `citypulse-harness`)
//! and the four service binaries as child processes, each with its admin server (`/metrics`,
//! `/healthz`) on a free 127.0.0.1 port. Plus [`Prometheus`]: a real Prometheus scraping them
//! every second.
//!
//! Dev-only, and synchronous like the harness: starting blocks until everything is ready (every
//! wait polls a readiness signal, never a blind sleep), which is fine inside `#[tokio::test]`.
//! Dropping a [`Pipeline`] or a [`Prometheus`] kills what it started (SIGKILL) and deletes its
//! temp dir; when the test is panicking it first prints the tail of every log.
//!
//! The service binaries are the workspace's, of the profile the test was built with
//! (`target/<profile>/citypulse-*`): build them first with `cargo build --workspace --bins`.
//!
//! ```no_run
//! use citypulse_e2e::pipeline::{Pipeline, PipelineOptions, Service, StopSignal};
//!
//! let mut p = Pipeline::launch(PipelineOptions::default());
//! let prometheus = p.start_prometheus(None);
//! p.stop_signal(Service::Processors, StopSignal::Stop); // freeze a stage
//! p.stop_signal(Service::Processors, StopSignal::Cont);
//! p.kill(Service::Alerts); // crash one...
//! p.start(Service::Alerts); // ...and restart it with the same flags and admin port
//! let up = prometheus.query("up").unwrap();
//! # let _ = up;
//! ```

// Like the harness, this module exists to fail loudly: a pipeline that cannot start is a broken
// test environment, and a panic carrying the reason and the logs is the most useful report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use citypulse_harness::{free_port, http_get, NatsCluster, NatsServer, Postgres};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};
use tempfile::TempDir;

/// How long a service may take to answer `/healthz` with 200 after it is spawned.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Prometheus may take to answer `/-/ready`.
const PROMETHEUS_READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Poll interval of every wait.
const POLL: Duration = Duration::from_millis(50);
/// New ports drawn when a first start loses a port race.
const PORT_ATTEMPTS: usize = 5;
/// Log lines printed per process when a test panics.
const TAIL_LINES: usize = 40;

/// One of the four citypulse services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    /// `citypulse-simulator`: publishes readings to `sensors.>`.
    Simulator,
    /// `citypulse-ingest`: RAW → READINGS, DLQ, PostgreSQL.
    Ingest,
    /// `citypulse-processors`: READINGS → METRICS.
    Processors,
    /// `citypulse-alerts`: METRICS → ALERTS, PostgreSQL.
    Alerts,
}

impl Service {
    /// Every service, in pipeline order.
    pub const ALL: [Service; 4] = [
        Service::Simulator,
        Service::Ingest,
        Service::Processors,
        Service::Alerts,
    ];

    /// Short name: `simulator`, `ingest`, `processors`, `alerts`.
    pub fn name(self) -> &'static str {
        match self {
            Service::Simulator => "simulator",
            Service::Ingest => "ingest",
            Service::Processors => "processors",
            Service::Alerts => "alerts",
        }
    }

    /// The binary, `citypulse-<name>`; also the Prometheus job name (as in
    /// `deploy/prometheus/prometheus.yml`).
    pub fn binary(self) -> &'static str {
        match self {
            Service::Simulator => "citypulse-simulator",
            Service::Ingest => "citypulse-ingest",
            Service::Processors => "citypulse-processors",
            Service::Alerts => "citypulse-alerts",
        }
    }
}

/// A job-control signal for [`Pipeline::stop_signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGSTOP: the process freezes (sockets stay open, nothing is answered: Prometheus's
    /// scrapes time out and NATS eventually drops the client as a slow/stale connection).
    Stop,
    /// SIGCONT: a stopped process resumes.
    Cont,
}

/// The simulator's flags.
#[derive(Debug, Clone)]
pub struct SimulatorOptions {
    /// `--speed`: `max` (as fast as possible up to the wall clock, then real time) or a factor.
    pub speed: String,
    /// `--start` is this long before the launch (whole seconds): with `max`, the simulator
    /// catches up on that much history, then runs in real time.
    pub start_ago: Duration,
    /// `--start` at exactly this time instead of `start_ago` before the launch: two pipelines
    /// launched with the same `start_at` (and seed) publish the same readings.
    pub start_at: Option<SystemTime>,
    /// `--duration` (simulated time); `None`: until stopped. A simulator that finishes exits,
    /// which its Prometheus job then reports as down.
    pub duration: Option<Duration>,
    /// The built-in city scaled to this many sensors (36: 31 loop detectors and 5 air stations
    /// over the 12 districts), written by `citypulse-simulator city --print --sensors N` and
    /// given to the simulator and the processors as `--city` (free-flow speeds, capacities).
    pub sensors: u64,
    /// `--seed`.
    pub seed: u64,
    /// `--faults`: `none` or `demo` (about 1.6 % faulty readings of every kind).
    pub faults: String,
    /// Extra flags, appended last (e.g. `--events none`, `--truth FILE`).
    pub args: Vec<String>,
}

impl Default for SimulatorOptions {
    /// `--speed max`, three hours of history (enough for hourly air-quality figures), 36
    /// sensors, seed 42, no faults, until stopped.
    fn default() -> Self {
        SimulatorOptions {
            speed: "max".to_owned(),
            start_ago: Duration::from_secs(3 * 3600),
            start_at: None,
            duration: None,
            sensors: 36,
            seed: 42,
            faults: "none".to_owned(),
            args: Vec::new(),
        }
    }
}

/// What [`Pipeline::launch`] starts.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// The simulator's flags; `None` starts no simulator (the test publishes itself).
    pub simulator: Option<SimulatorOptions>,
    /// `false`: [`Pipeline::launch`] configures the simulator (flags, admin address, Prometheus
    /// target) but does not spawn it; start it with [`Pipeline::start`] (e.g. once Prometheus
    /// scrapes, so that it sees the catch-up).
    pub start_simulator: bool,
    /// Extra flags of `citypulse-ingest`.
    pub ingest_args: Vec<String>,
    /// Extra flags of `citypulse-processors`.
    pub processors_args: Vec<String>,
    /// Extra flags of `citypulse-alerts` (`run`).
    pub alerts_args: Vec<String>,
    /// `RUST_LOG` of every service.
    pub rust_log: String,
    /// `None`: the harness's plain nats-server ([`NatsServer::start`]). `Some(text)`: one started
    /// with [`NatsServer::start_with_config`]`(text)`, e.g. the deploy accounts and TLS
    /// ([`crate::deploy::DeployCopy::config`]); give the services their credentials in `env`.
    pub nats_config: Option<String>,
    /// `true`: the harness's three-node JetStream cluster ([`NatsCluster::start`]) instead of
    /// one server. Every service gets all three client URLs, comma-separated, as `NATS_URL`,
    /// and ingest, the processors and alerts `--stream-replicas 3` (as
    /// `CITYPULSE_<SERVICE>_STREAM_REPLICAS`), so every stream and bucket they create lives on
    /// all three nodes (RAW too: ingest creates it before the simulator starts). Not combinable
    /// with `nats_config`.
    pub cluster: bool,
    /// Extra environment variables per service, set after the pipeline's own (so they override
    /// them), e.g. `NATS_USER`, `NATS_PASSWORD`, `SSL_CERT_FILE` or a `tls://` `NATS_URL`.
    pub env: BTreeMap<Service, Vec<(String, String)>>,
}

impl Default for PipelineOptions {
    /// The default simulator, started; no extra flags; `RUST_LOG=info`.
    fn default() -> Self {
        PipelineOptions {
            simulator: Some(SimulatorOptions::default()),
            start_simulator: true,
            ingest_args: Vec::new(),
            processors_args: Vec::new(),
            alerts_args: Vec::new(),
            rust_log: "info".to_owned(),
            nats_config: None,
            cluster: false,
            env: BTreeMap::new(),
        }
    }
}

/// One service process: its flags (fixed at launch), admin address and log file.
#[derive(Debug)]
struct Proc {
    service: Service,
    binary: PathBuf,
    /// Flags without `--metrics-addr` (added at spawn, so a lost port race can change it).
    args: Vec<String>,
    admin: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
    /// Length of the log when the current process was spawned.
    log_mark: u64,
    /// Extra environment ([`PipelineOptions::env`]).
    env: Vec<(String, String)>,
}

/// The whole pipeline: nats-server, PostgreSQL and the services as child processes.
///
/// Every service gets `NATS_URL` ([`Pipeline::url`]), `DATABASE_URL` (ingest and alerts: their
/// tables are created in the harness's `postgres` database), `RUST_LOG`, and `--metrics-addr
/// 127.0.0.1:<free port>` (on a cluster also `CITYPULSE_<SERVICE>_STREAM_REPLICAS=3`); ingest
/// also gets stream size limits that fit the harness's nats-server (RAW and READINGS 128 MiB,
/// DLQ 32 MiB, as `CITYPULSE_INGEST_*_MAX_BYTES`). No other `CITYPULSE_*`, `NATS_*` or
/// `DATABASE_URL` variable of the test's own environment reaches them. Logs (stdout and stderr,
/// every restart appended) are in the pipeline's temp dir: [`Pipeline::log`].
/// [`PipelineOptions::env`] comes last.
#[derive(Debug)]
pub struct Pipeline {
    procs: BTreeMap<Service, Proc>,
    city: Option<PathBuf>,
    rust_log: String,
    // Dropped after the processes (fields drop in declaration order, after `Drop::drop`).
    nats: Nats,
    postgres: Postgres,
    dir: TempDir,
}

impl Pipeline {
    /// Starts nats-server and PostgreSQL, then ingest, the processors and alerts one after the
    /// other, each once the previous one answers `/healthz` and has created its streams (RAW,
    /// READINGS, DLQ; METRICS; ALERTS), so every stream gets its owner's settings; then the
    /// simulator (when configured and `start_simulator`), and waits until it is healthy. The
    /// simulator's `--start` is fixed here, even when it is started later.
    ///
    /// # Panics
    /// When a binary is missing (build them with `cargo build --workspace --bins`), or a process
    /// exits or is not healthy within 30 s (the panic carries its log).
    pub fn launch(options: PipelineOptions) -> Pipeline {
        let bin_dir = binaries_dir();
        for s in Service::ALL {
            let path = bin_dir.join(s.binary());
            assert!(
                path.is_file(),
                "{} not found: run `cargo build --workspace --bins` first (the e2e tests run the \
                 service binaries of the profile they were built with)",
                path.display()
            );
        }
        assert!(
            !(options.cluster && options.nats_config.is_some()),
            "PipelineOptions: `cluster` and `nats_config` do not combine"
        );
        let nats = match &options.nats_config {
            _ if options.cluster => Nats::Cluster(NatsCluster::start()),
            None => Nats::Single(NatsServer::start()),
            Some(config) => Nats::Single(NatsServer::start_with_config(config)),
        };
        let postgres = Postgres::start();
        let dir = tempfile::Builder::new()
            .prefix("citypulse-pipeline-")
            .tempdir()
            .expect("creating the pipeline's temp dir");
        let mut pipeline = Pipeline {
            procs: BTreeMap::new(),
            city: None,
            rust_log: options.rust_log.clone(),
            nats,
            postgres,
            dir,
        };

        let city = options
            .simulator
            .as_ref()
            .map(|sim| pipeline.write_city(&bin_dir, sim.sensors));
        pipeline.city.clone_from(&city);
        let mut processors_args = Vec::new();
        if let Some(city) = &city {
            // The processors take free-flow speeds and capacities from the same city.
            processors_args.extend(["--city".to_owned(), path_arg(city)]);
        }
        processors_args.extend(options.processors_args.iter().cloned());
        let mut alerts_args = vec!["run".to_owned()];
        alerts_args.extend(options.alerts_args.iter().cloned());

        // One after the other, each once its streams exist, so that every stream gets the
        // settings of the service that owns it (the others create a missing one with theirs).
        pipeline.add(
            Service::Ingest,
            &bin_dir,
            options.ingest_args.clone(),
            &options,
        );
        pipeline.add(Service::Processors, &bin_dir, processors_args, &options);
        pipeline.add(Service::Alerts, &bin_dir, alerts_args, &options);
        for (s, streams) in [
            (Service::Ingest, &["RAW", "READINGS", "DLQ"][..]),
            (Service::Processors, &["METRICS"][..]),
            (Service::Alerts, &["ALERTS"][..]),
        ] {
            pipeline.spawn(s);
            pipeline.first_start(s);
            pipeline.wait_streams(streams);
        }

        if let (Some(sim), Some(city)) = (&options.simulator, &city) {
            let start = sim
                .start_at
                .unwrap_or_else(|| SystemTime::now() - sim.start_ago);
            let mut args = vec![
                "--speed".to_owned(),
                sim.speed.clone(),
                "--start".to_owned(),
                humantime::format_rfc3339_seconds(start).to_string(),
                "--city".to_owned(),
                path_arg(city),
                "--seed".to_owned(),
                sim.seed.to_string(),
                "--faults".to_owned(),
                sim.faults.clone(),
            ];
            if let Some(d) = sim.duration {
                args.extend(["--duration".to_owned(), format!("{}s", d.as_secs().max(1))]);
            }
            args.extend(sim.args.iter().cloned());
            pipeline.add(Service::Simulator, &bin_dir, args, &options);
            if options.start_simulator {
                pipeline.spawn(Service::Simulator);
                pipeline.first_start(Service::Simulator);
            }
        }
        pipeline
    }

    /// The `NATS_URL` the services get: `nats://127.0.0.1:PORT`, or with
    /// [`PipelineOptions::cluster`] the three nodes' URLs, comma-separated (a test's own
    /// `async_nats` client takes one URL or a list: use [`Pipeline::cluster`]'s `urls()`).
    pub fn url(&self) -> String {
        match &self.nats {
            Nats::Single(server) => server.url(),
            Nats::Cluster(cluster) => cluster.urls().join(","),
        }
    }

    /// The nats-server (monitoring URL, `restart()`, `stop()`, ...).
    ///
    /// # Panics
    /// When the pipeline runs on a cluster ([`Pipeline::cluster`]).
    pub fn nats(&mut self) -> &mut NatsServer {
        match &mut self.nats {
            Nats::Single(server) => server,
            Nats::Cluster(_) => panic!("this pipeline runs on a cluster: use Pipeline::cluster"),
        }
    }

    /// The three-node cluster ([`PipelineOptions::cluster`]): `urls()`, `node(i)`,
    /// `kill_node(i)`, `restart_node(i)`.
    ///
    /// # Panics
    /// When the pipeline runs on one server ([`Pipeline::nats`]).
    pub fn cluster(&mut self) -> &mut NatsCluster {
        match &mut self.nats {
            Nats::Cluster(cluster) => cluster,
            Nats::Single(_) => panic!("this pipeline runs on one nats-server: use Pipeline::nats"),
        }
    }

    /// The PostgreSQL URL the services write to.
    pub fn database_url(&self) -> String {
        self.postgres.url()
    }

    /// The PostgreSQL cluster.
    pub fn postgres(&mut self) -> &mut Postgres {
        &mut self.postgres
    }

    /// The services this pipeline runs (the simulator only when configured).
    pub fn services(&self) -> Vec<Service> {
        self.procs.keys().copied().collect()
    }

    /// The city file given to the simulator and the processors (`None` without a simulator).
    pub fn city_file(&self) -> Option<&Path> {
        self.city.as_deref()
    }

    /// The admin address (`/metrics`, `/healthz`) of `service`; it stays the same across
    /// [`Pipeline::kill`] and [`Pipeline::start`].
    ///
    /// # Panics
    /// When the pipeline does not run `service`.
    pub fn admin_addr(&self, service: Service) -> SocketAddr {
        self.proc(service).admin
    }

    /// `GET /metrics` of `service`: the Prometheus text exposition.
    ///
    /// # Errors
    /// When the service does not answer 200.
    pub fn metrics_text(&self, service: Service) -> Result<String, String> {
        match http_get(self.admin_addr(service), "/metrics") {
            Ok((200, body)) => Ok(body),
            Ok((status, body)) => Err(format!("{}: /metrics {status}: {body}", service.name())),
            Err(e) => Err(format!("{}: /metrics: {e}", service.name())),
        }
    }

    /// The sum over all label sets of metric `name` in `service`'s `/metrics`; 0 when the
    /// metric is absent or the service does not answer.
    pub fn metric_sum(&self, service: Service, name: &str) -> f64 {
        let Ok(text) = self.metrics_text(service) else {
            return 0.0;
        };
        text.lines()
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// The OS process id of `service`, while it runs.
    pub fn pid(&self, service: Service) -> Option<u32> {
        self.proc(service).child.as_ref().map(Child::id)
    }

    /// Whether `service`'s process is running (a stopped one counts as running).
    pub fn is_running(&mut self, service: Service) -> bool {
        let p = self.proc_mut(service);
        match &mut p.child {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills `service` with SIGKILL (a crash: no shutdown, no final checkpoint) and waits until
    /// it is gone. Does nothing when it is not running.
    pub fn kill(&mut self, service: Service) {
        if let Some(mut child) = self.proc_mut(service).child.take() {
            // kill fails only when the process has exited already; wait reaps it either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts `service` (again) with the same flags and admin address, and waits until it is
    /// healthy: after [`Pipeline::kill`], after it exited, or for the first time when the
    /// simulator was not started by [`Pipeline::launch`]. A restarted simulator replays from the same `--start` (its readings keep their
    /// message ids, so JetStream deduplicates those inside the duplicate window).
    ///
    /// # Panics
    /// When it is running already, or does not become healthy within 30 s.
    pub fn start(&mut self, service: Service) {
        assert!(
            !self.is_running(service),
            "{} is already running",
            service.binary()
        );
        // It may have exited on its own (a simulator with --duration): reaped by is_running.
        self.proc_mut(service).child = None;
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        loop {
            self.spawn(service);
            match self.wait_one(service, deadline) {
                Ok(()) => return,
                // A client's outgoing connection may hold the port for a moment; keep the port
                // (Prometheus scrapes it) and try again until the deadline.
                Err(NotHealthy::PortInUse) if Instant::now() < deadline => {
                    self.proc_mut(service).child = None;
                    std::thread::sleep(POLL * 4);
                }
                Err(e) => self.fail(service, &e),
            }
        }
    }

    /// Sends SIGSTOP or SIGCONT to `service`.
    ///
    /// # Panics
    /// When it is not running, or `kill` fails.
    pub fn stop_signal(&self, service: Service, signal: StopSignal) {
        let pid = self
            .pid(service)
            .unwrap_or_else(|| panic!("{} is not running", service.binary()));
        let sig = match signal {
            StopSignal::Stop => "-STOP",
            StopSignal::Cont => "-CONT",
        };
        let status = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("running kill(1)");
        assert!(status.success(), "kill {sig} {pid} failed: {status}");
    }

    /// Waits until every running service answers `/healthz` with 200.
    ///
    /// # Panics
    /// When a service exits, or is not healthy within 30 s (with its log).
    pub fn wait_healthy(&mut self) {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        for s in self.services() {
            if self.proc(s).child.is_none() {
                continue;
            }
            if let Err(e) = self.wait_one(s, deadline) {
                self.fail(s, &e);
            }
        }
    }

    /// Everything `service` wrote to stdout and stderr, over all its starts.
    pub fn log(&self, service: Service) -> String {
        std::fs::read_to_string(&self.proc(service).log).unwrap_or_default()
    }

    /// Starts Prometheus 2.x (`prometheus` from `PATH`, or `PROMETHEUS_BIN`) on a free port with
    /// a temp TSDB: scrape and evaluation interval 1 s, one job per service named like the
    /// deployed ones (`citypulse-<service>`), and `rules_dir/*.yml` as rule files when given.
    /// Returns once `/-/ready` answers 200.
    ///
    /// # Panics
    /// When Prometheus is missing, exits, or is not ready within 30 s (with its log).
    pub fn start_prometheus(&self, rules_dir: Option<&Path>) -> Prometheus {
        self.start_prometheus_with(rules_dir, &[])
    }

    /// [`Pipeline::start_prometheus`] with extra command-line flags (e.g.
    /// `--web.console.templates=…`).
    ///
    /// # Panics
    /// As [`Pipeline::start_prometheus`].
    pub fn start_prometheus_with(&self, rules_dir: Option<&Path>, flags: &[String]) -> Prometheus {
        let targets: Vec<(String, SocketAddr)> = self
            .procs
            .values()
            .map(|p| (p.service.binary().to_owned(), p.admin))
            .collect();
        Prometheus::start(&targets, rules_dir, flags)
    }

    // --- internals ------------------------------------------------------------------------------

    fn proc(&self, service: Service) -> &Proc {
        self.procs
            .get(&service)
            .unwrap_or_else(|| panic!("this pipeline runs no {}", service.binary()))
    }

    fn proc_mut(&mut self, service: Service) -> &mut Proc {
        self.procs
            .get_mut(&service)
            .unwrap_or_else(|| panic!("this pipeline runs no {}", service.binary()))
    }

    fn write_city(&self, bin_dir: &Path, sensors: u64) -> PathBuf {
        let out = Command::new(bin_dir.join(Service::Simulator.binary()))
            .args(["city", "--print", "--sensors", &sensors.to_string()])
            .env_remove("CITYPULSE_SIM_CITY")
            .output()
            .expect("running citypulse-simulator city --print");
        assert!(
            out.status.success(),
            "citypulse-simulator city --print --sensors {sensors} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let path = self.dir.path().join("city.toml");
        std::fs::write(&path, &out.stdout).expect("writing the city file");
        path
    }

    fn add(
        &mut self,
        service: Service,
        bin_dir: &Path,
        args: Vec<String>,
        options: &PipelineOptions,
    ) {
        let proc = Proc {
            service,
            binary: bin_dir.join(service.binary()),
            args,
            admin: SocketAddr::from((Ipv4Addr::LOCALHOST, free_port())),
            log: self.dir.path().join(format!("{}.log", service.name())),
            child: None,
            log_mark: 0,
            env: options.env.get(&service).cloned().unwrap_or_default(),
        };
        self.procs.insert(service, proc);
    }

    fn spawn(&mut self, service: Service) {
        let (nats_url, database_url, rust_log) =
            (self.url(), self.postgres.url(), self.rust_log.clone());
        let replicas = matches!(self.nats, Nats::Cluster(_)).then_some("3");
        let p = self.proc_mut(service);
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p.log)
            .expect("opening a service log");
        p.log_mark = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(&p.binary);
        // The subcommand (alerts' `run`) must come first; the address flag goes after it.
        let (head, tail) = match p.args.first().map(String::as_str) {
            Some("run") => p.args.split_at(1),
            _ => p.args.split_at(0),
        };
        cmd.args(head)
            .arg("--metrics-addr")
            .arg(p.admin.to_string())
            .args(tail);
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if key.starts_with("CITYPULSE_") || key.starts_with("NATS_") || key == "DATABASE_URL" {
                cmd.env_remove(&key);
            }
        }
        if service == Service::Ingest {
            // The harness's nats-server allows 1 GB of file storage, and JetStream reserves each
            // stream's max_bytes: ingest's defaults (1 GiB for RAW alone) would leave nothing for
            // the other streams and buckets. Flags in `ingest_args` still override these.
            cmd.env("CITYPULSE_INGEST_RAW_MAX_BYTES", "128MiB")
                .env("CITYPULSE_INGEST_READINGS_MAX_BYTES", "128MiB")
                .env("CITYPULSE_INGEST_DLQ_MAX_BYTES", "32MiB");
        }
        if let Some(replicas) = replicas {
            let key = match service {
                Service::Ingest => Some("CITYPULSE_INGEST_STREAM_REPLICAS"),
                Service::Processors => Some("CITYPULSE_PROCESSORS_STREAM_REPLICAS"),
                Service::Alerts => Some("CITYPULSE_ALERTS_STREAM_REPLICAS"),
                // The simulator finds RAW created by ingest (with its replicas).
                Service::Simulator => None,
            };
            if let Some(key) = key {
                cmd.env(key, replicas);
            }
        }
        cmd.env("NATS_URL", nats_url)
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", rust_log)
            .env_remove("LOG_FORMAT")
            .envs(p.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        let _ = writeln!(
            log,
            "=== citypulse-e2e: {} {}",
            p.binary.display(),
            cmd.get_args()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        let out = log.try_clone().expect("cloning the log handle");
        cmd.stdout(Stdio::from(out)).stderr(Stdio::from(log));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawning {}: {e}", p.binary.display()));
        p.child = Some(child);
    }

    /// Waits for a freshly spawned service; on a lost port race draws a new port and respawns.
    fn first_start(&mut self, service: Service) {
        for _ in 0..PORT_ATTEMPTS {
            match self.wait_one(service, Instant::now() + HEALTHY_TIMEOUT) {
                Ok(()) => return,
                Err(NotHealthy::PortInUse) => {
                    let p = self.proc_mut(service);
                    p.child = None;
                    p.admin = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
                    self.spawn(service);
                }
                Err(e) => self.fail(service, &e),
            }
        }
        self.fail(
            service,
            &NotHealthy::Exited(format!("admin port in use after {PORT_ATTEMPTS} draws")),
        );
    }

    fn wait_one(&mut self, service: Service, deadline: Instant) -> Result<(), NotHealthy> {
        loop {
            let p = self.proc_mut(service);
            let Some(child) = &mut p.child else {
                return Err(NotHealthy::Exited("not running".to_owned()));
            };
            if let Ok(Some(status)) = child.try_wait() {
                let log = read_from(&p.log, p.log_mark);
                return Err(if log.contains("in use") {
                    NotHealthy::PortInUse
                } else {
                    NotHealthy::Exited(status.to_string())
                });
            }
            let last = match http_get(p.admin, "/healthz") {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => format!("/healthz {status}: {}", body.trim()),
                Err(e) => format!("/healthz: {e}"),
            };
            if Instant::now() >= deadline {
                return Err(NotHealthy::Timeout(last));
            }
            std::thread::sleep(POLL);
        }
    }

    fn wait_streams(&self, names: &[&str]) {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        // A cluster node reports the streams it holds a replica of: ask every node.
        let addrs: Vec<SocketAddr> = match &self.nats {
            Nats::Single(server) => vec![server.monitor_addr()],
            Nats::Cluster(cluster) => (0..cluster.urls().len())
                .map(|i| cluster.node(i).monitor_addr())
                .collect(),
        };
        let mut missing: Vec<&str> = names.to_vec();
        while Instant::now() < deadline {
            for addr in &addrs {
                if let Ok((200, body)) = http_get(*addr, "/jsz?accounts=true&streams=true") {
                    let present = stream_names(&body);
                    missing.retain(|n| !present.iter().any(|p| p == n));
                }
            }
            if missing.is_empty() {
                return;
            }
            std::thread::sleep(POLL);
        }
        panic!(
            "streams {missing:?} were not created within {HEALTHY_TIMEOUT:?}\n{}",
            self.tails()
        );
    }

    fn fail(&self, service: Service, why: &NotHealthy) -> ! {
        let p = self.proc(service);
        let why = match why {
            NotHealthy::PortInUse => "could not bind its admin port".to_owned(),
            NotHealthy::Exited(status) => format!("exited ({status})"),
            NotHealthy::Timeout(last) => {
                format!("not healthy within {HEALTHY_TIMEOUT:?} (last check: {last})")
            }
        };
        panic!(
            "{} (admin {}): {why}\n{}",
            service.binary(),
            p.admin,
            self.tails()
        );
    }

    fn tails(&self) -> String {
        self.procs
            .values()
            .map(|p| tail(&p.log, TAIL_LINES))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("citypulse-e2e: service logs\n{}", self.tails());
        }
        // SIGKILL works on stopped processes too.
        for s in self.services() {
            self.kill(s);
        }
        self.keep_logs();
    }
}

impl Pipeline {
    /// With `CITYPULSE_E2E_KEEP_LOGS=<dir>`, copies every service's whole log into
    /// `<dir>/<pid>-<n>/` before the temp dir goes (the tails printed on a panic are often not
    /// enough to diagnose a fault test).
    fn keep_logs(&self) {
        let Some(dir) = std::env::var_os("CITYPULSE_E2E_KEEP_LOGS") else {
            return;
        };
        static RUNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let to = PathBuf::from(dir).join(format!("{}-{n}", std::process::id()));
        if std::fs::create_dir_all(&to).is_err() {
            return;
        }
        for p in self.procs.values() {
            if let Some(name) = p.log.file_name() {
                let _ = std::fs::copy(&p.log, to.join(name));
            }
        }
        eprintln!("citypulse-e2e: service logs kept in {}", to.display());
    }
}

/// The NATS a pipeline runs on.
#[derive(Debug)]
enum Nats {
    Single(NatsServer),
    Cluster(NatsCluster),
}

/// Why a service did not become healthy.
enum NotHealthy {
    PortInUse,
    Exited(String),
    Timeout(String),
}

/// A Prometheus server started by [`Pipeline::start_prometheus`], with helpers for its HTTP API.
/// Dropping it kills the process and deletes its TSDB.
#[derive(Debug)]
pub struct Prometheus {
    addr: SocketAddr,
    child: Option<Child>,
    log: PathBuf,
    dir: TempDir,
}

impl Prometheus {
    fn start(
        targets: &[(String, SocketAddr)],
        rules_dir: Option<&Path>,
        flags: &[String],
    ) -> Prometheus {
        let bin =
            std::env::var_os("PROMETHEUS_BIN").map_or_else(|| "prometheus".into(), PathBuf::from);
        let dir = tempfile::Builder::new()
            .prefix("citypulse-prometheus-")
            .tempdir()
            .expect("creating Prometheus's temp dir");
        let config = dir.path().join("prometheus.yml");
        std::fs::write(&config, prometheus_config(targets, rules_dir))
            .expect("writing the Prometheus config");
        let log = dir.path().join("prometheus.log");
        let mut prom = Prometheus {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            child: None,
            log,
            dir,
        };
        for _ in 0..PORT_ATTEMPTS {
            prom.addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
            let out = File::create(&prom.log).expect("creating the Prometheus log");
            let err = out.try_clone().expect("cloning the log handle");
            let child = Command::new(&bin)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    prom.dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={}", prom.addr))
                .arg("--storage.tsdb.retention.time=1d")
                .args(flags)
                .stdin(Stdio::null())
                .stdout(Stdio::from(out))
                .stderr(Stdio::from(err))
                .spawn()
                .unwrap_or_else(|e| {
                    panic!(
                        "starting {}: {e} (Prometheus 2.x is needed: scripts/install-deps \
                         installs Debian's `prometheus`; or set PROMETHEUS_BIN)",
                        bin.display()
                    )
                });
            prom.child = Some(child);
            match prom.wait_ready() {
                Ok(()) => return prom,
                Err(NotHealthy::PortInUse) => prom.child = None,
                Err(NotHealthy::Exited(status)) => {
                    panic!(
                        "prometheus exited ({status})\n{}",
                        tail(&prom.log, TAIL_LINES)
                    )
                }
                Err(NotHealthy::Timeout(last)) => panic!(
                    "prometheus not ready within {PROMETHEUS_READY_TIMEOUT:?} ({last})\n{}",
                    tail(&prom.log, TAIL_LINES)
                ),
            }
        }
        panic!("prometheus: no free port after {PORT_ATTEMPTS} draws");
    }

    fn wait_ready(&mut self) -> Result<(), NotHealthy> {
        let deadline = Instant::now() + PROMETHEUS_READY_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                    return Err(if log.contains("address already in use") {
                        NotHealthy::PortInUse
                    } else {
                        NotHealthy::Exited(status.to_string())
                    });
                }
            }
            let last = match http_get(self.addr, "/-/ready") {
                Ok((200, _)) => return Ok(()),
                Ok((status, body)) => format!("/-/ready {status}: {}", body.trim()),
                Err(e) => format!("/-/ready: {e}"),
            };
            if Instant::now() >= deadline {
                return Err(NotHealthy::Timeout(last));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The base URL, `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `GET path` of the HTTP API (e.g. `/api/v1/targets`): the `data` of a `"status":
    /// "success"` answer.
    ///
    /// # Errors
    /// When the request fails, the answer is not JSON, or its status is not `success` (the
    /// message carries Prometheus's error).
    pub fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let (status, body) = http_get(self.addr, path_and_query)
            .map_err(|e| format!("GET {path_and_query}: {e}"))?;
        let json: Value = serde_json::from_str(&body)
            .map_err(|e| format!("GET {path_and_query}: {status}, not JSON ({e}): {body}"))?;
        if json["status"] != "success" {
            return Err(format!(
                "GET {path_and_query}: {status} {}: {}",
                json["errorType"], json["error"]
            ));
        }
        Ok(json["data"].clone())
    }

    /// Evaluates `expr` now (`/api/v1/query`) and returns the result: the samples of a vector
    /// (each `{"metric": {...}, "value": [t, "v"]}`), or a one-element list with the `[t, "v"]`
    /// of a scalar.
    ///
    /// # Errors
    /// As [`Prometheus::api`] (a PromQL syntax error, an unknown function, ...).
    pub fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api(&format!("/api/v1/query?query={}", url_encode(expr)))?;
        match data["resultType"].as_str() {
            Some("vector" | "matrix") => Ok(data["result"].as_array().cloned().unwrap_or_default()),
            Some("scalar" | "string") => Ok(vec![data["result"].clone()]),
            other => Err(format!("{expr}: unexpected result type {other:?}")),
        }
    }

    /// The rule groups (`/api/v1/rules`): each with `rules`, each rule with `name`, `health`
    /// (`ok`, `err`, `unknown` before its first evaluation), `lastError` and, for alerting
    /// rules, `state` and `alerts`.
    ///
    /// # Errors
    /// As [`Prometheus::api`].
    pub fn rule_groups(&self) -> Result<Vec<Value>, String> {
        Ok(self.api("/api/v1/rules")?["groups"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// The pending and firing alerts (`/api/v1/alerts`): each with `labels`, `annotations`,
    /// `state` (`pending` or `firing`), `activeAt` (RFC 3339) and `value`.
    ///
    /// # Errors
    /// As [`Prometheus::api`].
    pub fn alerts(&self) -> Result<Vec<Value>, String> {
        Ok(self.api("/api/v1/alerts")?["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// `GET path` (e.g. a console page): status and body.
    ///
    /// # Errors
    /// When the request fails.
    pub fn get(&self, path: &str) -> std::io::Result<(u16, String)> {
        http_get(self.addr, path)
    }

    /// Everything Prometheus logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("citypulse-e2e: {}", tail(&self.log, TAIL_LINES));
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The test Prometheus's configuration: every target its own job, 1 s intervals.
fn prometheus_config(targets: &[(String, SocketAddr)], rules_dir: Option<&Path>) -> String {
    let mut c = String::from(
        "# Written by citypulse-e2e (Pipeline::start_prometheus).\n\
         global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
    );
    if let Some(dir) = rules_dir {
        c.push_str(&format!(
            "rule_files:\n  - {:?}\n",
            dir.join("*.yml").display().to_string()
        ));
    }
    c.push_str("scrape_configs:\n");
    for (job, addr) in targets {
        c.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: [\"{addr}\"]\n"
        ));
    }
    c
}

/// The workspace's binaries of the profile this test was built with: the test executable is
/// `target/<profile>/deps/<test>-<hash>`, the binaries are in `target/<profile>/`.
fn binaries_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let dir = exe
        .parent()
        .expect("the test executable is in a directory")
        .to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().map_or(dir.clone(), Path::to_path_buf)
    } else {
        dir
    }
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Stream names in a nats-server `/jsz?streams=true` answer.
fn stream_names(body: &str) -> Vec<String> {
    let Ok(json) = serde_json::from_str::<Value>(body) else {
        return Vec::new();
    };
    json["account_details"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
        .filter_map(|s| s["name"].as_str().map(str::to_owned))
        .collect()
}

/// Percent-encodes a query parameter value (RFC 3986 unreserved characters stay).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(char::from(b));
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The log from byte `from` on.
fn read_from(path: &Path, from: u64) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(0).min(text.len());
    String::from_utf8_lossy(&text[start..]).into_owned()
}

/// The last `lines` lines of a log, headed by its path.
fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| format!("({e})"));
    let all: Vec<&str> = text.lines().collect();
    let start = all.len().saturating_sub(lines);
    format!(
        "--- {} (last {lines} lines) ---\n{}",
        path.display(),
        all[start..].join("\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_percent_encoded() {
        assert_eq!(
            url_encode(r#"sum by (x) (rate(a{b=~"c.*"}[1m]))"#),
            "sum%20by%20%28x%29%20%28rate%28a%7Bb%3D~%22c.%2A%22%7D%5B1m%5D%29%29"
        );
    }

    #[test]
    fn prometheus_config_has_one_job_per_service_and_the_rules() {
        let c = prometheus_config(
            &[(
                "citypulse-ingest".to_owned(),
                "127.0.0.1:10001".parse().unwrap(),
            )],
            Some(Path::new("/tmp/rules")),
        );
        assert!(c.contains("scrape_interval: 1s"));
        assert!(c.contains("rule_files:\n  - \"/tmp/rules/*.yml\"\n"));
        assert!(c.contains("- job_name: citypulse-ingest\n"));
        assert!(c.contains("targets: [\"127.0.0.1:10001\"]"));
    }

    #[test]
    fn stream_names_are_read_from_jsz() {
        let body = r#"{"account_details":[{"name":"$G","stream_detail":[{"name":"RAW"},{"name":"DLQ"}]}]}"#;
        assert_eq!(stream_names(body), vec!["RAW", "DLQ"]);
        assert!(stream_names("not json").is_empty());
    }
}
