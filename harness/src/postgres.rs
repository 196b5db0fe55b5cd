//! A throwaway PostgreSQL cluster: `initdb` in a temp dir, `pg_ctl` to start and stop it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::net::{free_port, tail};

/// How long `pg_ctl start -w` may wait for the server to accept connections, in seconds.
const START_TIMEOUT_S: u32 = 30;
/// How many times a first start draws a new port after losing a race for one.
const PORT_ATTEMPTS: usize = 5;

const FIX: &str = "install the PostgreSQL server (scripts/install-deps, or apt-get install \
                   postgresql) so that initdb, pg_ctl and postgres are on PATH or in \
                   /usr/lib/postgresql/<version>/bin";

/// A real PostgreSQL server for one test, on a free port of 127.0.0.1, with its data in a temp
/// dir.
///
/// The cluster is made by `initdb -A trust -U postgres --no-sync -E UTF8 --locale=C` and runs
/// with `fsync`, `synchronous_commit` and `full_page_writes` off: durability across an OS crash
/// is not under test, a clean stop or start is. Its Unix socket lives in the temp dir too.
///
/// PostgreSQL refuses to run as root. When the tests run as root (containers, CI), `initdb`,
/// `pg_ctl` and the server run as the unprivileged `nobody` user: the temp dir is created under
/// `/tmp` and handed to that user, and the processes are spawned with its uid and gid (and no
/// supplementary groups).
///
/// Dropping the handle stops the server (`pg_ctl stop -m immediate`) and deletes the dir.
#[derive(Debug)]
pub struct Postgres {
    dir: TempDir,
    bindir: PathBuf,
    port: u16,
    /// uid and gid to run as; `None` when the tests do not run as root.
    run_as: Option<(u32, u32)>,
    running: bool,
}

impl Postgres {
    /// Creates a cluster in a new temp dir, starts it on a free port and waits until it accepts
    /// connections.
    ///
    /// # Panics
    /// When the PostgreSQL binaries are missing, or `initdb` or the start fails (the panic
    /// carries the output and the server log).
    pub fn start() -> Postgres {
        let bindir = pg_bindir().to_owned();
        let run_as = if effective_uid() == Some(0) {
            Some(unprivileged_ids())
        } else {
            None
        };
        let mut builder = tempfile::Builder::new();
        builder.prefix("citypulse-pg-");
        // The unprivileged user must reach the dir: /tmp is world-traversable, a root TMPDIR
        // (say /root/tmp) may not be.
        let dir = match run_as {
            Some(_) => builder.tempdir_in("/tmp"),
            None => builder.tempdir(),
        }
        .expect("creating a temp dir for PostgreSQL");
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
                .expect("handing the PostgreSQL temp dir to the unprivileged user");
        }
        let mut pg = Postgres {
            dir,
            bindir,
            port: free_port(),
            run_as,
            running: false,
        };
        pg.initdb();
        for _ in 0..PORT_ATTEMPTS {
            match pg.pg_ctl_start() {
                Ok(()) => return pg,
                Err(StartFailure::PortInUse) => pg.port = free_port(),
                Err(StartFailure::Other(out)) => pg.fail("pg_ctl start", &out),
            }
        }
        pg.fail(
            "pg_ctl start",
            &format!("port still in use after {PORT_ATTEMPTS} draws"),
        );
    }

    /// The connection URL, `postgres://postgres@127.0.0.1:PORT/postgres` (tokio-postgres style).
    pub fn url(&self) -> String {
        self.database_url("postgres")
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Creates database `name` and returns its URL.
    ///
    /// # Panics
    /// When connecting or `CREATE DATABASE` fails. Needs a tokio runtime (it spawns the
    /// connection task).
    pub async fn create_database(&self, name: &str) -> String {
        let (client, connection) = tokio_postgres::connect(&self.url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url()));
        let task = tokio::spawn(connection);
        let quoted = name.replace('"', "\"\"");
        client
            .batch_execute(&format!("CREATE DATABASE \"{quoted}\""))
            .await
            .unwrap_or_else(|e| panic!("creating database {name:?}: {e}"));
        drop(client);
        // The connection ends once the client is gone; its result is of no interest.
        let _ = task.await;
        self.database_url(name)
    }

    /// Stops the server (`pg_ctl stop -m fast`); the data dir and the port are kept for
    /// [`Postgres::start_again`]. Does nothing when it is already stopped.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        let out = self.pg_ctl(&["stop", "-w", "-m", "fast"]);
        if !out.status.success() {
            self.fail("pg_ctl stop -m fast", &describe(&out));
        }
        self.running = false;
    }

    /// Starts a stopped server again with the same data dir and port and waits until it accepts
    /// connections.
    ///
    /// # Panics
    /// When it is running, or does not start.
    pub fn start_again(&mut self) {
        assert!(
            !self.running,
            "PostgreSQL on port {} is already running",
            self.port
        );
        // Keep the port (it is the point of an outage test); a client that grabbed it as its
        // local port during the outage lets go soon.
        let deadline = Instant::now() + Duration::from_secs(u64::from(START_TIMEOUT_S));
        loop {
            match self.pg_ctl_start() {
                Ok(()) => return,
                Err(StartFailure::PortInUse) if Instant::now() < deadline => {
                    sleep(Duration::from_millis(50));
                }
                Err(StartFailure::PortInUse) => self.fail("pg_ctl start", "port in use"),
                Err(StartFailure::Other(out)) => self.fail("pg_ctl start", &out),
            }
        }
    }

    fn database_url(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn initdb(&mut self) {
        let data = self.data_dir();
        let out = self.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--no-sync".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
            ],
        );
        if !out.status.success() {
            self.fail("initdb", &describe(&out));
        }
        // Settings go into postgresql.conf rather than `pg_ctl -o`, which goes through a shell
        // and would be needed again on every start. Later lines win. Appending as root keeps the
        // file's owner.
        let conf = format!(
            "\n# citypulse-harness\n\
             listen_addresses = '127.0.0.1'\n\
             unix_socket_directories = '{}'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = 32MB\n",
            self.dir.path().display()
        );
        let path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&path).expect("reading postgresql.conf");
        text.push_str(&conf);
        std::fs::write(&path, text).expect("writing postgresql.conf");
    }

    fn pg_ctl_start(&mut self) -> Result<(), StartFailure> {
        let timeout = START_TIMEOUT_S.to_string();
        // The port is an option, not a conf line, so a redraw needs no rewrite.
        let port = format!("-p {}", self.port);
        let log = self.log_path();
        let out = self.pg_ctl(&[
            "start".as_ref(),
            "-w".as_ref(),
            "-t".as_ref(),
            timeout.as_ref(),
            "-l".as_ref(),
            log.as_os_str(),
            "-o".as_ref(),
            port.as_ref(),
        ]);
        if out.status.success() {
            self.running = true;
            return Ok(());
        }
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        // The log accumulates over restarts; only this attempt's last lines matter.
        let recent: Vec<&str> = log.lines().rev().take(20).collect();
        if recent
            .iter()
            .any(|l| l.contains("could not bind") || l.contains("already in use"))
        {
            Err(StartFailure::PortInUse)
        } else {
            Err(StartFailure::Other(describe(&out)))
        }
    }

    fn pg_ctl<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        let data = self.data_dir();
        let mut all: Vec<&std::ffi::OsStr> = vec!["-D".as_ref(), data.as_os_str()];
        all.extend(args.iter().map(AsRef::as_ref));
        self.run("pg_ctl", &all)
    }

    /// Runs a PostgreSQL tool from the bindir, as the unprivileged user when needed.
    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) -> Output {
        let path = self.bindir.join(tool);
        let mut cmd = Command::new(&path);
        cmd.args(args)
            .current_dir(self.dir.path())
            .env("LC_ALL", "C")
            .env_remove("PGDATA")
            .env_remove("PGPORT")
            .env_remove("PGHOST")
            .stdin(Stdio::null());
        if let Some((uid, gid)) = self.run_as {
            // std drops supplementary groups (setgroups(0)) before setuid when uid is set.
            cmd.uid(uid).gid(gid);
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("running {}: {e}", path.display()))
    }

    fn fail(&mut self, what: &str, detail: &str) -> ! {
        self.stop_immediately();
        panic!(
            "PostgreSQL {what} failed (port {}, dir {}{}):\n{detail}\n{}",
            self.port,
            self.dir.path().display(),
            match self.run_as {
                Some((uid, _)) => format!(", as uid {uid}"),
                None => String::new(),
            },
            tail(&self.log_path(), 30)
        );
    }

    /// Stops without a shutdown checkpoint; never panics (it runs in `Drop`).
    fn stop_immediately(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let out = self.pg_ctl(&["stop", "-w", "-m", "immediate"]);
        if out.status.success() {
            return;
        }
        // Last resort, so no postmaster outlives the test: SIGKILL the pid from postmaster.pid
        // (its backends exit when they notice the postmaster is gone).
        if let Some(pid) = std::fs::read_to_string(self.data_dir().join("postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().map(str::to_owned))
        {
            let _ = Command::new("kill").args(["-KILL", pid.trim()]).status();
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop_immediately();
    }
}

enum StartFailure {
    PortInUse,
    Other(String),
}

fn describe(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim_end(),
        String::from_utf8_lossy(&out.stderr).trim_end()
    )
}

/// The directory holding `initdb`, `pg_ctl` and `postgres`: `PATH` first, then the highest
/// version under `/usr/lib/postgresql`. Cached for the process.
fn pg_bindir() -> &'static Path {
    static BINDIR: OnceLock<PathBuf> = OnceLock::new();
    BINDIR.get_or_init(|| {
        let complete = |dir: &Path| {
            ["initdb", "pg_ctl", "postgres"]
                .iter()
                .all(|tool| dir.join(tool).is_file())
        };
        let on_path = std::env::var_os("PATH")
            .iter()
            .flat_map(std::env::split_paths)
            .map(|dir| dir.join("initdb"))
            .find(|p| p.is_file())
            // Debian links /usr/lib/postgresql/N/bin tools into PATH one by one; follow the link
            // to the directory that holds all of them.
            .and_then(|initdb| initdb.canonicalize().ok()?.parent().map(Path::to_path_buf))
            .filter(|dir| complete(dir));
        on_path
            .or_else(|| {
                let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
                    .into_iter()
                    .flatten()
                    .flatten()
                    .filter_map(|e| {
                        let version = e.file_name().to_str()?.parse().ok()?;
                        Some((version, e.path().join("bin")))
                    })
                    .filter(|(_, dir)| complete(dir))
                    .collect();
                versions.sort();
                versions.pop().map(|(_, dir)| dir)
            })
            .unwrap_or_else(|| panic!("PostgreSQL server binaries not found; {FIX}"))
    })
}

/// The effective uid, from `/proc/self/status` (std has no geteuid and the crate forbids unsafe).
fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    // "Uid:	real	effective	saved	fs"
    line.split_whitespace().nth(2)?.parse().ok()
}

/// uid and gid of `nobody` from /etc/passwd, else the conventional 65534.
fn unprivileged_ids() -> (u32, u32) {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            let line = passwd.lines().find(|l| l.starts_with("nobody:"))?;
            let mut fields = line.split(':').skip(2);
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .unwrap_or((65_534, 65_534))
}
