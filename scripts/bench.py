"""citypulse benchmark: the released service binaries as separate processes, against a naive
Python consumer of the same stream in the same run. Run it through `scripts/bench`, which builds
the binaries and installs nats-server, nats-py and cbor2 first.

Stages (all by default, in this order):

  load        citypulse-simulator (built-in city scaled to --sensors, --minutes of simulated time,
              --speed max --faults none) publishes the backlog into RAW, then exits.
  baseline    scripts/bench_baseline.py: a nats-py ordered consumer on sensors.> that
              cbor2-decodes every reading into a dict of (district, kind, minute) counts and sums.
  ingest      citypulse-ingest --database-url on the backlog: RAW -> READINGS, and the archive
              READINGS -> PostgreSQL (reported separately).
  processors  citypulse-processors --city on READINGS -> METRICS.
  alerts      citypulse-alerts on METRICS (unit: window results).
  replay      citypulse-processors replay --city over all of READINGS into a stream of its own
              (BENCH_REPLAY), the same backlog the processors stage read; from its start to its
              exit (it stops once every partition is read).
  pipeline    on a fresh nats-server and database: ingest, processors and alerts together, with the
              simulator publishing live at --speed max; every consumer's lag sampled each second.

A stage ends when every consumer the stage's service created (found in nats-server's
/jsz, not by name) has num_pending == 0 and num_ack_pending == 0 and has acknowledged as many
messages as its stream holds; the archive also when PostgreSQL holds one row per valid reading.
Rates run from the service's start to that moment. CPU is utime + stime from /proc/<pid>/stat
(the service's, and nats-server's delta over the stage), peak RSS is VmHWM.

Services get explicit --nats-url, --metrics-addr, --database-url and --city flags. NATS_* and
DATABASE_URL are removed from their environment; other variables (RUST_LOG, CITYPULSE_*) reach
them, so a setting can be tried with its environment variable, and the report lists them.
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
TICKS = os.sysconf("SC_CLK_TCK")
STAGES = ("baseline", "ingest", "processors", "alerts", "replay", "pipeline")
RAW = "RAW"
DLQ = "DLQ"
DROPPED_ENV = ("NATS_URL", "NATS_CREDS", "NATS_USER", "NATS_PASSWORD", "NATS_INBOX_PREFIX",
               "DATABASE_URL")


class BenchError(Exception):
    """A stage could not run or did not finish; the message says which and why."""


def log(msg):
    try:
        print(f"bench: {msg}", file=sys.stderr, flush=True)
    except OSError:  # a full disk under a redirected stderr must not hide the real error
        pass


# --- processes --------------------------------------------------------------------------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """utime + stime of a live process, seconds; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS


def peak_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def http_get(url, timeout=2.0):
    """The body of a 200 answer, else None."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.read()
    except (urllib.error.URLError, OSError, ValueError):
        return None


def child_env():
    env = {k: v for k, v in os.environ.items() if k not in DROPPED_ENV}
    env.setdefault("RUST_LOG", "info")
    return env


class Child:
    """A process of the run, in its own session (Ctrl-C reaches the bench, which stops it).
    Reaped with wait4, so its CPU time and peak RSS stay known after it exits."""

    def __init__(self, run, name, argv):
        self.name = name
        self.log_path = os.path.join(run.logs, f"{name}.log")
        self.argv = argv
        self.rc = self.final_cpu = self.final_rss = None
        with open(self.log_path, "ab") as out:
            self.started = time.monotonic()
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=child_env(),
                                         start_new_session=True)
        self.pid = self.proc.pid
        self.exited_at = None
        run.children.append(self)

    def poll(self):
        """The exit status once it has exited, else None."""
        if self.rc is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid == self.pid:
                self.exited_at = time.monotonic()
                self.rc = os.waitstatus_to_exitcode(status)
                self.proc.returncode = self.rc
                self.final_cpu = usage.ru_utime + usage.ru_stime
                self.final_rss = usage.ru_maxrss  # KiB on Linux
        return self.rc

    def alive(self):
        return self.poll() is None

    def cpu(self):
        value = cpu_seconds(self.pid) if self.alive() else None
        return value if value is not None else (self.final_cpu or 0.0)

    def peak_rss(self):
        value = peak_rss_kib(self.pid) if self.alive() else None
        return value if value is not None else self.final_rss

    def tail(self, lines=15):
        try:
            with open(self.log_path, errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def wait(self, timeout):
        deadline = time.monotonic() + timeout
        while self.alive():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self, timeout=20.0):
        if not self.alive():
            return
        os.kill(self.pid, signal.SIGTERM)
        if not self.wait(timeout):
            log(f"{self.name} (pid {self.pid}) ignored SIGTERM for {timeout:.0f}s: SIGKILL")
            os.kill(self.pid, signal.SIGKILL)
            self.wait(10)

    def died(self):
        return BenchError(f"{self.name} exited with status {self.rc}; "
                          f"log {self.log_path}:\n{self.tail()}")


def stop_on_signals():
    """Ctrl-C stops everything the run started (through the caller's `finally`), also when
    started from a shell that ignores SIGINT in background jobs; SIGTERM and SIGHUP too."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGHUP, lambda *_: sys.exit(129))


def wait_until(what, predicate, timeout, child=None, interval=0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if child is not None and not child.alive():
            raise child.died()
        time.sleep(interval)
    raise BenchError(f"timed out after {timeout:.0f}s waiting for {what}")


# --- servers ----------------------------------------------------------------------------------

class NatsServer:
    """nats-server with JetStream, its store in a new dir, client and monitoring ports free."""

    def __init__(self, run, binary, name):
        self.store = store = os.path.join(run.tmp, f"{name}-store")
        conf = os.path.join(run.tmp, f"{name}.conf")
        # A free port can be taken by another process before the server binds it (tests run
        # side by side): a server that exits at start is tried again on new ports, twice.
        for attempt in range(3):
            self.port, self.monitor = free_port(), free_port()
            with open(conf, "w") as f:
                f.write(f'server_name: {name}\nlisten: 127.0.0.1:{self.port}\n'
                        f'http: 127.0.0.1:{self.monitor}\njetstream {{ store_dir: "{store}" }}\n')
            self.child = Child(run, name, [binary, "-c", conf])
            self.url = f"nats://127.0.0.1:{self.port}"
            try:
                wait_until(f"{name} to be ready",
                           lambda: self.get("/healthz?js-enabled-only=true"), 30, self.child)
                return
            except BenchError:
                if self.child.alive() or attempt == 2:
                    raise
                log(f"{name} exited at start (a port taken?); trying new ports")

    def get(self, path):
        return http_get(f"http://127.0.0.1:{self.monitor}{path}")

    def version(self):
        body = self.get("/varz")
        return json.loads(body).get("version", "?") if body else "?"

    def snapshot(self):
        body = self.get("/jsz?streams=true&consumers=true")
        if body is None:
            if not self.child.alive():
                raise self.child.died()
            raise BenchError("nats-server's /jsz did not answer")
        return Snapshot(time.monotonic(), json.loads(body), self.child.cpu())


class Snapshot:
    """One /jsz answer: message count per stream, and per consumer (stream, name) its pending,
    ack-pending, acknowledged and delivered counts. Durable or not: a service may read with
    named or ordered consumers too. Streams of KV buckets and object stores are left out: their
    watchers are not pipeline stages."""

    def __init__(self, t, jsz, nats_cpu):
        self.t, self.nats_cpu = t, nats_cpu
        self.streams, self.last_seq, self.consumers = {}, {}, {}
        for account in jsz.get("account_details") or []:
            for s in account.get("stream_detail") or []:
                name = s.get("name", "")
                if name.startswith(("KV_", "OBJ_")):
                    continue
                state = s.get("state") or {}
                self.streams[name] = state.get("messages", 0)
                self.last_seq[name] = state.get("last_seq", 0)
                for c in s.get("consumer_detail") or []:
                    self.consumers[(name, c["name"])] = {
                        "pending": c.get("num_pending", 0),
                        "ack_pending": c.get("num_ack_pending", 0),
                        "acked": (c.get("ack_floor") or {}).get("consumer_seq", 0),
                        "acked_stream_seq": (c.get("ack_floor") or {}).get("stream_seq", 0),
                        "delivered": (c.get("delivered") or {}).get("consumer_seq", 0),
                    }

    def messages(self, stream):
        return self.streams.get(stream, 0)

    def lag(self, keys):
        return sum(self.consumers[k]["pending"] + self.consumers[k]["ack_pending"]
                   for k in keys if k in self.consumers)

    def acked(self, keys):
        return sum(self.consumers[k]["acked"] for k in keys if k in self.consumers)

    def delivered(self, keys):
        """Like `drained`, but delivered rather than acknowledged: the service holds the
        last message (acknowledgements may wait for a checkpoint)."""
        if not keys or any(k not in self.consumers or self.consumers[k]["pending"]
                           for k in keys):
            return False
        return all(sum(self.consumers[k]["delivered"] for k in keys if k[0] == s)
                   >= self.messages(s) for s in {s for s, _ in keys})

    def caught_up(self, key):
        """One consumer acknowledged through the end of its stream, nothing pending or
        unacknowledged. Unlike `drained` it holds for a consumer the service recreated at a
        later start (the archive rewinds after a PostgreSQL failure): counted in stream
        sequences, not in the consumer's own."""
        c = self.consumers.get(key)
        return (c is not None and c["pending"] == 0 and c["ack_pending"] == 0
                and c["acked_stream_seq"] >= self.last_seq.get(key[0], 0))

    def drained(self, keys):
        """Every consumer in `keys` exists, nothing is pending or unacknowledged, and on each
        stream they acknowledged at least as many messages as it holds, or (a consumer the
        service recreated mid-stage counts its acknowledgements afresh) one of them
        acknowledged the stream's last message."""
        if not keys or any(k not in self.consumers for k in keys):
            return False
        if self.lag(keys) != 0:
            return False

        def done(stream):
            on = [k for k in keys if k[0] == stream]
            last = max(self.consumers[k]["acked_stream_seq"] for k in on)
            return (self.acked(on) >= self.messages(stream)
                    or last >= self.last_seq.get(stream, 0) > 0)
        return all(done(s) for s in {s for s, _ in keys})


class Postgres:
    """A throwaway cluster: initdb in the run's temp dir, pg_ctl on a free port of 127.0.0.1
    (as `nobody` when the bench runs as root: PostgreSQL refuses root). Default server
    settings (durable commits), like scripts/demo."""

    def __init__(self, run, bindir, locale="C"):
        self.bindir, self.port = bindir, free_port()
        # psql may live elsewhere (the server's bindir on PATH can be a set of links).
        real = os.path.dirname(os.path.realpath(f"{bindir}/initdb"))
        self.psql = next((p for p in (f"{bindir}/psql", f"{real}/psql", shutil.which("psql"))
                          if p and os.access(p, os.X_OK)), None)
        if self.psql is None:
            raise BenchError(f"psql is neither in {bindir} nor on PATH (apt-get install "
                             f"postgresql-client)")
        self.data, self.logs = os.path.join(run.tmp, "pg"), run.logs
        self.user = "nobody" if os.geteuid() == 0 else None
        os.makedirs(self.data)
        if self.user:
            shutil.chown(run.tmp, "nobody")
            os.chmod(run.tmp, 0o755)
            shutil.chown(self.data, "nobody")
        self._run([f"{bindir}/initdb", "-D", self.data, "-U", "postgres", "-A", "trust",
                   "-E", "UTF8", f"--locale={locale}", "--no-sync"])
        self.opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.data}"
        self.start()
        run.cleanups.append(self.stop)

    def start(self):
        """Starts the server (again: same port, same data)."""
        self._run([f"{self.bindir}/pg_ctl", "-D", self.data, "-l", f"{self.data}/server.log",
                   "-w", "-o", self.opts, "start"])
        self.started = True

    def _run(self, argv):
        logs = self.logs
        prefix = ["runuser", "-u", self.user, "--"] if self.user else []
        with open(os.path.join(logs, "postgres.log"), "ab") as out:
            r = subprocess.run(prefix + argv, stdout=out, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, cwd="/")
        if r.returncode != 0:
            raise BenchError(f"{' '.join(argv[:2])} failed (status {r.returncode}); "
                             f"see {logs}/postgres.log")

    def cpu(self):
        """CPU seconds of the server: the postmaster, its children that exited (cutime, cstime)
        and those alive (backends, WAL writer, checkpointer, autovacuum)."""
        try:
            with open(f"{self.data}/postmaster.pid") as f:
                postmaster = int(f.readline())
        except (OSError, ValueError):
            return 0.0
        total = 0.0
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(entry) == postmaster:
                total += sum(int(x) for x in fields[11:15]) / TICKS
            elif int(fields[1]) == postmaster:
                total += (int(fields[11]) + int(fields[12])) / TICKS
        return total

    def create_db(self, db):
        """Creates database `db` and returns its URL."""
        if self.sql(f"CREATE DATABASE {db}") is None:
            raise BenchError(f"could not create database {db}")
        return self.url(db)

    def url(self, db="postgres"):
        return f"postgres://postgres@127.0.0.1:{self.port}/{db}"

    def sql(self, statement, db="postgres"):
        """The first column of the first row, or None when the statement fails (e.g. the
        table does not exist yet)."""
        r = subprocess.run([self.psql, "-X", "-A", "-t", "-q", "-v",
                            "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(self.port),
                            "-U", "postgres", "-d", db, "-c", statement],
                           capture_output=True, text=True, stdin=subprocess.DEVNULL)
        return r.stdout.strip() if r.returncode == 0 else None

    def rows(self, table, db):
        value = self.sql(f"SELECT count(*) FROM {table}", db)
        return int(value) if value else 0

    def stop(self):
        if self.started:
            self.started = False
            self._run([f"{self.bindir}/pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop"])


# --- the run ----------------------------------------------------------------------------------

class Run:
    """Temp dir, logs, every child and cleanup of one bench run; `close` stops them all."""

    def __init__(self, args):
        self.args = args
        # PostgreSQL runs as `nobody` under root: it must reach the dir (/tmp is traversable).
        self.tmp = tempfile.mkdtemp(prefix="citypulse-bench-",
                                    dir="/tmp" if os.geteuid() == 0 else None)
        self.logs = os.path.join(self.tmp, "logs")
        os.makedirs(self.logs)
        self.children, self.cleanups = [], []
        # The same simulated start for the backlog and the live run: the same readings.
        minute = int(time.time()) // 60 * 60
        back = max(24 * 3600, args.minutes * 60 + 600)
        self.start = datetime.datetime.fromtimestamp(minute - back, datetime.timezone.utc) \
            .strftime("%Y-%m-%dT%H:%M:%SZ")
        self.city = os.path.join(self.tmp, "city.toml")

    def bin(self, name):
        return os.path.join(self.args.bin_dir, name)

    def close(self, ok):
        for child in reversed(self.children):
            try:
                child.stop()
            except OSError as e:
                log(f"stopping {child.name}: {e}")
        for cleanup in reversed(self.cleanups):
            try:
                cleanup()
            except (OSError, BenchError) as e:
                log(f"cleanup: {e}")
        if self.args.keep:
            log(f"logs and data kept in {self.tmp}")
        elif ok:
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:  # the logs say what went wrong; the stores only take disk
            for entry in os.listdir(self.tmp):
                path = os.path.join(self.tmp, entry)
                if path != self.logs and os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
            log(f"logs kept in {self.logs}")


def simulator_argv(run, nats):
    a = run.args
    return [run.bin("citypulse-simulator"), "--nats-url", nats.url,
            "--metrics-addr", f"127.0.0.1:{free_port()}", "--sensors", str(a.sensors),
            "--duration", f"{a.minutes}m", "--start", run.start, "--seed", str(a.seed),
            "--speed", "max", "--faults", "none", "--log-format", "json"]


def service_argv(run, service, nats, db_url):
    """The argv of a service, and its admin (metrics, healthz) port."""
    port = free_port()
    common = ["--nats-url", nats.url, "--metrics-addr", f"127.0.0.1:{port}"]
    if service == "ingest":
        return [run.bin("citypulse-ingest")] + common + ["--database-url", db_url], port
    if service == "processors":
        return [run.bin("citypulse-processors")] + common + ["--city", run.city], port
    if service == "alerts":
        return [run.bin("citypulse-alerts"), "run"] + common + ["--database-url", db_url], port
    raise ValueError(service)


def check_flags(run):
    """Every flag the bench passes is in the binary's --help: a renamed flag fails here, with
    a clear message, rather than as a service that exits at start."""
    wanted = {
        ("citypulse-simulator",): simulator_argv(run, _FakeNats)[1:],
        ("citypulse-ingest",): service_argv(run, "ingest", _FakeNats, "x")[0][1:],
        ("citypulse-processors",): service_argv(run, "processors", _FakeNats, "x")[0][1:],
        ("citypulse-alerts", "run"): service_argv(run, "alerts", _FakeNats, "x")[0][2:],
        ("citypulse-processors", "replay"): replay_argv(run, _FakeNats)[2:],
    }
    for (binary, *sub), argv in wanted.items():
        path = run.bin(binary)
        if not os.access(path, os.X_OK):
            raise BenchError(f"{path} is missing: build it (cargo build --release --bins) or "
                             f"point --bin-dir at the binaries")
        r = subprocess.run([path, *sub, "--help"], capture_output=True, text=True)
        missing = [f for f in argv if f.startswith("--") and f not in r.stdout]
        if r.returncode != 0 or missing:
            raise BenchError(f"{binary} {' '.join(sub)} --help does not list {missing}")


class _FakeNats:
    url = "nats://127.0.0.1:1"


def write_city(run):
    with open(run.city, "w") as out:
        r = subprocess.run([run.bin("citypulse-simulator"), "city", "--print", "--sensors",
                            str(run.args.sensors)], stdout=out, stderr=subprocess.PIPE, text=True)
    if r.returncode != 0:
        raise BenchError(f"citypulse-simulator city --print failed: {r.stderr}")


def simulator_summary(path):
    """The fields of the simulator's last "simulator stopped" JSON log line, or {}."""
    found = {}
    try:
        with open(path, errors="replace") as f:
            for line in f:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                fields = entry.get("fields", entry) if isinstance(entry, dict) else {}
                if fields.get("message") == "simulator stopped":
                    found = fields
    except OSError:
        pass
    return found


# --- stages -----------------------------------------------------------------------------------

def row(stage, unit, items, seconds, service_cpu, nats_cpu, rss_kib, **extra):
    """One line of the report. `service_cpu` and `nats_cpu` are seconds over the stage."""
    return dict(stage=stage, unit=unit, items=items, seconds=round(seconds, 3),
                rate=items / seconds if seconds > 0 else 0.0,
                service_cpu_us=service_cpu * 1e6 / items if items and service_cpu is not None
                else None,
                nats_cpu_us=nats_cpu * 1e6 / items if items else None,
                peak_rss_kib=rss_kib, **extra)


def stage_load(run, nats):
    """The simulator publishes the backlog into RAW and exits."""
    cpu0 = nats.child.cpu()
    sim = Child(run, "simulator-load", simulator_argv(run, nats))
    if not sim.wait(run.args.stage_timeout):
        raise BenchError(f"the simulator did not finish within {run.args.stage_timeout}s")
    if sim.rc != 0:
        raise sim.died()
    raw = nats.snapshot().messages(RAW)
    summary = simulator_summary(sim.log_path)
    published = summary.get("acked", summary.get("published"))
    if published is not None and published != raw:
        log(f"warning: the simulator reports {published} acked readings, RAW holds {raw}")
    return row("load: simulator -> RAW (acked)", "readings", raw, sim.exited_at - sim.started,
               sim.cpu(), nats.child.cpu() - cpu0, sim.peak_rss(),
               simulator_published=published)


def stage_baseline(run, nats, count):
    """scripts/bench_baseline.py reads `count` readings of RAW."""
    cpu0 = nats.child.cpu()
    argv = [sys.executable, os.path.join(HERE, "bench_baseline.py"), "--url", nats.url,
            "--count", str(count), "--timeout", str(run.args.stage_timeout)]
    c = Child(run, "baseline", argv)
    if not c.wait(run.args.stage_timeout + 30) or c.rc != 0:
        c.stop()
        raise c.died()
    nats_cpu = nats.child.cpu() - cpu0
    result = None
    with open(c.log_path, errors="replace") as f:
        for line in f:
            if line.startswith("{"):
                result = json.loads(line)
    if result is None or result["messages"] != count:
        raise BenchError(f"the baseline consumer printed no result for {count} messages:\n"
                         f"{c.tail()}")
    return row("baseline: nats-py ordered consumer + cbor2", "readings", result["messages"],
               result["seconds"], c.cpu(), nats_cpu, c.peak_rss(),
               dict_keys=result["keys"], decode_errors=result["decode_errors"])


def follow(run, nats, child, before, marks):
    """Polls /jsz until each mark (label, predicate(snapshot, new consumer keys)) holds, in
    order, with the same new consumers on two polls in a row. Returns {label: (snapshot,
    service CPU s, service peak RSS KiB)} and the keys of the consumers that are not in
    `before` (those the service created)."""
    prev = None
    reached, deadline = {"delivered": None}, child.started + run.args.stage_timeout
    pending = list(marks)
    while pending:
        if not child.alive():
            raise child.died()
        if time.monotonic() > deadline:
            raise BenchError(f"{child.name}: `{pending[0][0]}` not reached within "
                             f"{run.args.stage_timeout}s; log {child.log_path}")
        snap = nats.snapshot()
        cpu, rss = child.cpu(), child.peak_rss()
        keys = sorted(set(snap.consumers) - before)
        if reached["delivered"] is None and keys == prev and snap.delivered(keys):
            reached["delivered"] = round(snap.t - child.started, 3)
        while pending and keys == prev and pending[0][1](snap, keys):
            reached[pending.pop(0)[0]] = (snap, cpu, rss)
        prev = keys
        time.sleep(run.args.poll_interval)
    return reached, keys


def stage_ingest(run, nats, pg, db, nats_cpu0, before):
    argv, _ = service_argv(run, "ingest", nats, pg.url(db))
    pg_cpu0 = pg.cpu()
    child = Child(run, "ingest", argv)

    def validated(snap, keys):
        return snap.drained([k for k in keys if k[0] == RAW])

    def archived(snap, keys):
        rest = [k for k in keys if k[0] != RAW]
        if not snap.drained(rest):
            return False
        return pg.rows("readings", db) >= snap.messages(RAW) - snap.messages(DLQ)

    reached, keys = follow(run, nats, child, before,
                           [("validate", validated), ("archive", archived)])
    pg_cpu = pg.cpu() - pg_cpu0  # ingest idles since the last poll: this is the archive's
    child.stop()
    (s1, cpu1, rss1), (s2, cpu2, rss2) = reached["validate"], reached["archive"]
    rows = pg.rows("readings", db)
    valid = s2.messages(RAW) - s2.messages(DLQ)
    if rows != valid or valid == 0:
        raise BenchError(f"PostgreSQL holds {rows} readings, {valid} were valid and "
                         f"{s2.messages(DLQ)} dead-lettered; log {child.log_path}")
    consumers = [f"{s}/{c}" for s, c in keys]
    return [
        row("ingest RAW -> READINGS", "readings", s1.messages(RAW), s1.t - child.started,
            cpu1, s1.nats_cpu - nats_cpu0, rss1, dead_lettered=s1.messages(DLQ),
            readings_messages=s1.messages("READINGS"),
            consumers=[c for c in consumers if c.startswith(RAW + "/")]),
        row("ingest incl. the archive", "readings", valid, s2.t - child.started, cpu2,
            s2.nats_cpu - nats_cpu0, rss2, archived_rows=rows, consumers=consumers,
            postgres_cpu_us=pg_cpu * 1e6 / valid),
    ], valid


def replay_argv(run, nats):
    """`citypulse-processors replay` over everything READINGS holds."""
    return [run.bin("citypulse-processors"), "replay", "--nats-url", nats.url,
            "--city", run.city, "--from", "2000-01-01T00:00:00Z",
            "--to", "2100-01-01T00:00:00Z", "--into", "BENCH_REPLAY", "--quiet"]


def stage_replay(run, nats, valid):
    """The processors' replay of the whole backlog: start to exit. Its summary line (stdout, in
    the log) gives the readings it read."""
    cpu0 = nats.child.cpu()
    c = Child(run, "replay", replay_argv(run, nats))
    if not c.wait(run.args.stage_timeout) or c.rc != 0:
        c.stop()
        raise c.died()
    readings = results = None
    with open(c.log_path, errors="replace") as f:
        for line in f:
            if line.startswith("replayed "):
                words = line.split()
                readings = int(words[words.index("readings") - 1])
                results = int(words[words.index("window") - 1])
    if readings != valid:
        raise BenchError(f"the replay read {readings} readings, READINGS holds {valid}:\n"
                         f"{c.tail()}")
    return row("replay READINGS -> BENCH_REPLAY", "readings", readings,
               c.exited_at - c.started, c.cpu(), nats.child.cpu() - cpu0, c.peak_rss(),
               window_results=results)


def stage_simple(run, nats, db_url, service, label, unit, items_of, nats_cpu0, before):
    """A service alone on its backlog, done when its new consumers are drained."""
    argv, _ = service_argv(run, service, nats, db_url)
    child = Child(run, service, argv)
    reached, keys = follow(run, nats, child, before,
                           [("done", lambda snap, keys: snap.drained(keys))])
    child.stop()
    snap, cpu, rss = reached["done"]
    return row(label, unit, items_of(snap), snap.t - child.started, cpu,
               snap.nats_cpu - nats_cpu0, rss, consumers=[f"{s}/{c}" for s, c in keys],
               delivered_seconds=reached["delivered"],
               stream_messages=dict(snap.streams))


# --- the whole pipeline, live -----------------------------------------------------------------

def start_service(run, nats, service, db_url, name):
    """Starts a service, waits for its /healthz and for the consumers it creates to stay the
    same for a second. Returns the child and those consumers' keys."""
    before = set(nats.snapshot().consumers)
    argv, port = service_argv(run, service, nats, db_url)
    child = Child(run, name, argv)
    child.admin_port = port
    wait_until(f"{name}'s /healthz", lambda: http_get(f"http://127.0.0.1:{port}/healthz"),
               60, child)
    seen, since, deadline = None, time.monotonic(), time.monotonic() + 60
    while time.monotonic() < deadline:
        keys = sorted(set(nats.snapshot().consumers) - before)
        if keys != seen:
            seen, since = keys, time.monotonic()
        elif keys and time.monotonic() - since >= 1.0:
            return child, keys
        if not child.alive():
            raise child.died()
        time.sleep(0.1)
    raise BenchError(f"{name} created no consumer within 60 s")


def slope(points):
    """Least-squares slope of (t, y) points; None for fewer than 3."""
    if len(points) < 3:
        return None
    n = len(points)
    mt = sum(t for t, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return sum((t - mt) * (y - my) for t, y in points) / var if var else None


def pipeline_groups(run, nats, db_url):
    """ingest, processors and alerts started in order; their consumers as groups (ingest's
    split into the validator on RAW and the rest, the archive)."""
    services, groups = {}, {}
    for service in ("ingest", "processors", "alerts"):
        child, keys = start_service(run, nats, service, db_url, f"pipeline-{service}")
        services[service] = child
        if service == "ingest":
            groups["ingest"] = [k for k in keys if k[0] == RAW]
            groups["archive"] = [k for k in keys if k[0] != RAW]
        else:
            groups[service] = keys
    return services, groups


def pipeline_poll(run, nats, pg, db, services, groups, sim):
    """Samples until the simulator has exited and every group is drained (and the archive
    complete). Returns the snapshots and the moments of interest."""
    samples, marks = [], {}
    deadline = sim.started + run.args.stage_timeout
    while True:
        snap = nats.snapshot()
        snap.cpu = {name: c.cpu() for name, c in services.items()}
        samples.append(snap)
        if not sim.alive() and "sim_end" not in marks:
            if sim.rc != 0:
                raise sim.died()
            marks["sim_end"] = sim.exited_at
        for name, c in services.items():
            if not c.alive():
                raise c.died()
        if "sim_end" in marks and snap.drained(groups["ingest"]):
            # In order: alerts are only done once the processors wrote their last result.
            for g in ("processors", "alerts", "archive"):
                if g == "alerts" and "processors" not in marks:
                    continue
                if g not in marks and snap.drained(groups[g]):
                    marks[g] = snap
            if "archive" in marks and "archive_rows" not in marks:
                valid = snap.messages(RAW) - snap.messages(DLQ)
                if pg.rows("readings", db) >= valid:
                    marks["archive_rows"] = snap
        if all(k in marks for k in ("processors", "alerts", "archive_rows")):
            return samples, marks
        if time.monotonic() > deadline:
            raise BenchError(f"the pipeline did not drain within {run.args.stage_timeout}s")
        time.sleep(run.args.poll_interval)


def lag_report(samples, groups, t0, t_end, rate):
    """Per group: the maximum lag (pending + unacknowledged messages) and its slope over the
    second half of the publishing; `grows` when the slope exceeds 5 % of the publish rate."""
    out = {}
    half = t0 + (t_end - t0) / 2
    for g, keys in groups.items():
        points = [(s.t, s.lag(keys)) for s in samples if half <= s.t <= t_end]
        k = slope(points)
        verdict = "n/a (too short)" if k is None else ("grows" if k > 0.05 * rate else "flat")
        each = {f"{key[0]}/{key[1]}": slope([(s.t, s.lag([key])) for s in samples
                                             if half <= s.t <= t_end]) for key in keys}
        out[g] = {"consumers": [f"{s}/{c}" for s, c in keys],
                  "max_lag": max(s.lag(keys) for s in samples),
                  "slope_per_s": None if k is None else round(k, 1), "verdict": verdict,
                  "slope_per_s_by_consumer": {n: None if v is None else round(v, 1)
                                              for n, v in each.items()}}
    return out


def lag_series(samples, groups, t0):
    """The lag of every group once a second (for --json)."""
    series, next_t = [], t0
    for s in samples:
        if s.t >= next_t:
            series.append({"t": round(s.t - t0, 2), "raw": s.messages(RAW),
                           **{g: s.lag(keys) for g, keys in groups.items()}})
            next_t = s.t + 1.0
    return series


def stage_pipeline(run, nats_binary, pg):
    """Fresh nats-server and database; services first, then the simulator live at max speed."""
    nats = NatsServer(run, nats_binary, "nats-pipeline")
    db = "pipeline"
    services, groups = pipeline_groups(run, nats, pg.create_db(db))
    nats_cpu0 = nats.child.cpu()
    cpu0 = {name: c.cpu() for name, c in services.items()}
    pg_cpu0 = pg.cpu()
    sim = Child(run, "pipeline-simulator", simulator_argv(run, nats))
    samples, marks = pipeline_poll(run, nats, pg, db, services, groups, sim)
    pg_cpu = pg.cpu() - pg_cpu0
    t0, last = sim.started, samples[-1]
    readings = last.messages(RAW)
    valid = readings - last.messages(DLQ)
    if valid == 0:
        raise BenchError(f"ingest dead-lettered all {readings} readings of the live run")
    publish_rate = readings / (marks["sim_end"] - t0)
    proc = marks["processors"]
    cpu = sum(last.cpu[n] - cpu0[n] for n in services)
    rss = sum(c.peak_rss() or 0 for c in services.values())
    per_service = {n: {"cpu_us_per_reading": (last.cpu[n] - cpu0[n]) * 1e6 / valid,
                       "peak_rss_kib": services[n].peak_rss()} for n in services}
    result = row("pipeline: all live, through processors", "readings", valid, proc.t - t0, cpu,
                 last.nats_cpu - nats_cpu0, rss,
                 simulator_readings_per_s=round(publish_rate),
                 simulator_cpu_us=sim.cpu() * 1e6 / readings,
                 postgres_cpu_us=pg_cpu * 1e6 / valid,
                 publishing_seconds=round(marks["sim_end"] - t0, 3),
                 all_drained_seconds=round(last.t - t0, 3),
                 services=per_service,
                 lag=lag_report(samples, groups, t0, marks["sim_end"], publish_rate),
                 lag_series=lag_series(samples, groups, t0),
                 window_results=last.messages("METRICS"), archived_rows=pg.rows("readings", db),
                 readings_messages=last.messages("READINGS"),
                 nats_server=nats.version())
    for c in [sim, *services.values(), nats.child]:
        c.stop()
    return result


# --- report -----------------------------------------------------------------------------------

def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "kernel": platform.release(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}


def fmt_int(x):
    return "-" if x is None else f"{x:,.0f}"


def fmt_num(x, digits=1):
    return "-" if x is None else f"{x:,.{digits}f}"


def table(rows):
    head = ["stage", "items", "unit", "seconds", "per second", "x baseline",
            "svc CPU us", "nats CPU us", "RSS MiB"]
    body = [[r["stage"], fmt_int(r["items"]), r["unit"], fmt_num(r["seconds"], 2),
             fmt_int(r["rate"]), fmt_num(r.get("ratio"), 2), fmt_num(r["service_cpu_us"]),
             fmt_num(r["nats_cpu_us"]),
             fmt_num(None if r["peak_rss_kib"] is None else r["peak_rss_kib"] / 1024)]
            for r in rows]
    widths = [max(len(x[i]) for x in [head] + body) for i in range(len(head))]
    lines = []
    for i, cells in enumerate([head] + body):
        lines.append("  ".join(c.ljust(w) if j in (0, 2) else c.rjust(w)
                               for j, (c, w) in enumerate(zip(cells, widths))))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def consumer_list(names):
    """`RAW/ingest`, or `8 consumers, READINGS/processors-p0 ... READINGS/processors-p7`."""
    if len(names) <= 2:
        return ", ".join(names)
    return f"{len(names)} consumers, {names[0]} ... {names[-1]}"


def pipeline_text(p):
    lines = [f"pipeline: the simulator published {p['items']:,} readings in "
             f"{p['publishing_seconds']:.1f} s ({p['simulator_readings_per_s']:,} readings/s, "
             f"{p['simulator_cpu_us']:.1f} us CPU each); processors drained after "
             f"{p['seconds']:.1f} s, everything (alerts, archive) after "
             f"{p['all_drained_seconds']:.1f} s; {p['window_results']:,} window results, "
             f"{p['archived_rows']:,} archived rows ({p['postgres_cpu_us']:.1f} us of "
             f"PostgreSQL CPU each); READINGS held {p['readings_messages']:,} messages "
             f"({p['items'] / max(p['readings_messages'], 1):.0f} readings each)"]
    for name, s in p["services"].items():
        lines.append(f"  {name}: {s['cpu_us_per_reading']:.1f} us CPU per reading, peak RSS "
                     f"{fmt_num(None if s['peak_rss_kib'] is None else s['peak_rss_kib'] / 1024)}"
                     f" MiB")
    lines.append("  lag (pending + unacknowledged messages) over the second half of the "
                 "publishing:")
    for g, lag in p["lag"].items():
        lines.append(f"    {g:<11} {lag['verdict']:<16} slope {fmt_num(lag['slope_per_s'])}"
                     f" msgs/s, max {lag['max_lag']:,}  ({consumer_list(lag['consumers'])})")
    return "\n".join(lines)


def report(meta, rows, pipeline):
    print(f"citypulse bench  {meta['date']}")
    print(f"command:     {meta['command']}")
    m = meta["machine"]
    print(f"machine:     {m['nproc']} CPUs, {m['cpu']}, Linux {m['kernel']}; load average "
          f"{m['load_average_at_start'][0]} at the start, {m['load_average_at_end'][0]} at the "
          f"end (other work on the machine skews every figure)")
    print(f"nats-server: {meta['nats_server']}   PostgreSQL locale: {meta['pg_locale']}   "
          f"binaries: {meta['bin_dir']}")
    print(f"load:        built-in city scaled to {meta['sensors']:,} sensors, {meta['minutes']} "
          f"simulated minutes from {meta['start']}, seed {meta['seed']}, --speed max "
          f"--faults none")
    if meta["environment"]:
        print(f"environment: {' '.join(meta['environment'])}")
    print()
    print(table(rows + ([pipeline] if pipeline else [])))
    archive = next((r for r in rows if "postgres_cpu_us" in r), None)
    if archive:
        print(f"\n{archive['stage']}: PostgreSQL used {archive['postgres_cpu_us']:.1f} us of CPU"
              f" per archived reading")
    if pipeline:
        print()
        print(pipeline_text(pipeline))
    print()
    print("per second: items / seconds, from the service's start until its consumers are "
          "drained.\nx baseline: readings/s over the naive consumer's readings/s in this run.\n"
          "svc / nats CPU us: CPU microseconds (utime + stime) per item of the service and of "
          "nats-server over the stage.\nRSS MiB: the service's peak resident memory (VmHWM).")


# --- main -------------------------------------------------------------------------------------

def stage_list(ap, text):
    """The stages to run, in order: those asked for and those whose output they read."""
    stages = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        ap.error(f"--stages: unknown {unknown}; choose from {','.join(STAGES)}")
    if "alerts" in stages or "replay" in stages:
        stages += ["processors"]
    if "processors" in stages:
        stages += ["ingest"]
    return [s for s in STAGES if s in stages]


def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__.split("\n\n")[0],
        epilog="Every option also reads an environment variable, named in its help. See "
               "docs/benchmarks.md for how to read the figures.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    env = os.environ.get

    def opt(flag, var, default, **kw):
        ap.add_argument(flag, default=env(var, default),
                        help=f"{kw.pop('help')} (env {var}; default {default})", **kw)

    opt("--sensors", "CITYPULSE_BENCH_SENSORS", 10_000, type=int,
        help="scale the built-in city to this many sensors")
    opt("--minutes", "CITYPULSE_BENCH_MINUTES", 30, type=int, help="simulated minutes")
    opt("--stages", "CITYPULSE_BENCH_STAGES", ",".join(STAGES),
        help=f"comma-separated subset of {','.join(STAGES)}; processors needs ingest's output "
             "and alerts and replay the processors', so they run (and are reported) when "
             "needed")
    opt("--bin-dir", "CITYPULSE_BENCH_BIN_DIR", "target/release",
        help="directory of the citypulse-* binaries")
    opt("--json", "CITYPULSE_BENCH_JSON", None, help="also write the results as JSON here")
    opt("--seed", "CITYPULSE_BENCH_SEED", 42, type=int, help="the simulator's seed")
    opt("--stage-timeout", "CITYPULSE_BENCH_STAGE_TIMEOUT", 900.0, type=float,
        help="seconds a stage may take before the bench gives up")
    opt("--poll-interval", "CITYPULSE_BENCH_POLL_INTERVAL", 0.2, type=float,
        help="seconds between two looks at nats-server's /jsz")
    opt("--nats-server", "CITYPULSE_BENCH_NATS_SERVER", "nats-server",
        help="the nats-server binary (scripts/bench passes the pinned one)")
    opt("--pg-bindir", "CITYPULSE_BENCH_PG_BINDIR", None,
        help="directory of initdb, pg_ctl and psql (scripts/bench finds it)")
    opt("--pg-locale", "CITYPULSE_BENCH_PG_LOCALE", "C",
        help="initdb's --locale for the bench's PostgreSQL (scripts/demo's cluster takes the "
             "system's, often C.UTF-8 or en_US.UTF-8)")
    flag = {"1", "true", "yes"}
    ap.add_argument("--no-build", action="store_true",
                    default=env("CITYPULSE_BENCH_NO_BUILD", "") in flag,
                    help="scripts/bench: do not run `cargo build --release --bins` first (env "
                         "CITYPULSE_BENCH_NO_BUILD=1)")
    ap.add_argument("--keep", action="store_true", default=env("CITYPULSE_BENCH_KEEP", "") in flag,
                    help="keep the temp dir (logs, nats-server stores, PostgreSQL) at the end; "
                         "without it only a failed run's logs stay (env CITYPULSE_BENCH_KEEP=1)")
    args = ap.parse_args(argv)
    args.stages = stage_list(ap, str(args.stages))
    if args.sensors < 1 or not 1 <= args.minutes <= 3000:
        ap.error("--sensors must be >= 1 and --minutes in 1..=3000 (ingest rejects readings "
                 "older than 72 h)")
    if not args.pg_bindir and set(args.stages) - {"baseline"}:
        ap.error("--pg-bindir is required (scripts/bench passes it)")
    return args


def backlog_stages(run, nats, pg):
    """load, then baseline, ingest, processors, alerts on the backlog (those asked for)."""
    stages, rows = run.args.stages, []
    load = stage_load(run, nats)
    rows.append(load)
    log(f"loaded {load['items']:,} readings into RAW in {load['seconds']:.1f} s")
    if "baseline" in stages:
        rows.append(stage_baseline(run, nats, load["items"]))
        log(f"baseline: {rows[-1]['rate']:,.0f} readings/s")
    db_url = pg.create_db("backlog") if pg else None
    if "ingest" in stages:
        snap = nats.snapshot()
        ingest_rows, valid = stage_ingest(run, nats, pg, "backlog", snap.nats_cpu,
                                          set(snap.consumers))
        rows += ingest_rows
        log(f"ingest: {ingest_rows[0]['rate']:,.0f} readings/s, with the archive "
            f"{ingest_rows[1]['rate']:,.0f}")
    specs = [("processors", "processors READINGS -> METRICS", "readings", lambda s: valid),
             ("alerts", "alerts METRICS -> ALERTS", "window results",
              lambda s: s.messages("METRICS"))]
    for service, label, unit, items_of in specs:
        if service in stages:
            snap = nats.snapshot()
            rows.append(stage_simple(run, nats, db_url, service, label, unit, items_of,
                                     snap.nats_cpu, set(snap.consumers)))
            log(f"{service}: {rows[-1]['rate']:,.0f} {unit}/s")
    if "replay" in stages:
        rows.append(stage_replay(run, nats, valid))
        log(f"replay: {rows[-1]['rate']:,.0f} readings/s")
    # The live run starts from nothing; free the disk the backlog took (GiBs at 100,000 sensors).
    nats.child.stop()
    shutil.rmtree(nats.store, ignore_errors=True)
    if pg:
        pg.sql("DROP DATABASE backlog")
    return rows


def check_disk(run):
    """Warns when the temp dir's file system looks too small: about 1.9 readings per sensor and
    simulated minute, and about 4 KB of disk per reading (RAW, READINGS, METRICS, checkpoints,
    two PostgreSQL databases; measured at 10,000 sensors x 30 min)."""
    need = run.args.sensors * run.args.minutes * 1.9 * 4096
    st = os.statvfs(run.tmp)
    free = st.f_bavail * st.f_frsize
    if free < need:
        log(f"warning: {free / 2**30:.1f} GiB free in {run.tmp}, this run may need about "
            f"{need / 2**30:.1f} GiB")


def execute(run, meta):
    args = run.args
    check_disk(run)
    check_flags(run)
    write_city(run)
    pg = (Postgres(run, args.pg_bindir, args.pg_locale) if set(args.stages) - {"baseline"}
          else None)
    rows, pipeline = [], None
    if set(args.stages) - {"pipeline"}:
        nats = NatsServer(run, args.nats_server, "nats-backlog")
        meta["nats_server"] = nats.version()
        rows = backlog_stages(run, nats, pg)
    if "pipeline" in args.stages:
        log("pipeline: fresh nats-server, services first, then the simulator live")
        pipeline = stage_pipeline(run, args.nats_server, pg)
        meta.setdefault("nats_server", pipeline.pop("nats_server", "?"))
    base = next((r["rate"] for r in rows if r["stage"].startswith("baseline")), None)
    for r in rows + ([pipeline] if pipeline else []):
        r["ratio"] = r["rate"] / base if base and r["unit"] == "readings" else None
    return rows, pipeline


def main(argv):
    args = parse_args(argv)
    meta = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": os.environ.get("CITYPULSE_BENCH_COMMAND")
            or shlex.join([sys.argv[0], *argv]),
            "machine": machine(), "bin_dir": os.path.abspath(args.bin_dir),
            "pg_locale": args.pg_locale,
            "sensors": args.sensors, "minutes": args.minutes, "seed": args.seed,
            "stages": args.stages,
            "environment": sorted(f"{k}={v}" for k, v in os.environ.items()
                                  if k.startswith("CITYPULSE_") and not k.startswith(
                                      ("CITYPULSE_BENCH_", "CITYPULSE_PYTHONPATH"))
                                  or k == "RUST_LOG")}
    stop_on_signals()
    run, ok = Run(args), False
    meta["start"] = run.start
    try:
        rows, pipeline = execute(run, meta)
        ok = True
    except BenchError as e:
        log(f"error: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        run.close(ok)
    meta["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    report(meta, rows, pipeline)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({**meta, "stages": rows, "pipeline": pipeline}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
