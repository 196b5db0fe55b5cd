"""citypulse soak: the whole pipeline on the built-in city, live, for a set time, watched for slow
growth. Run it through `scripts/soak` (builds the release binaries, installs what is missing).

nats-server, PostgreSQL, ingest, processors and alerts start as separate processes (the
machinery of scripts/bench.py); the simulator publishes the city scaled to --sensors in real time
with the demo faults and events. Every --sample seconds the soak records, per process, its
resident memory (VmRSS, and its anonymous part RssAnon: the heap without the binary's pages) and
CPU time, and per pipeline stage its consumer lag (pending plus unacknowledged messages), into
soak.csv; at the end it draws soak.png (memory and lag over time) and judges (on VmRSS):

  memory   each service's RSS at the end is at most --max-growth (10 %) above its RSS at the end
           of the warm-up (medians of the samples in the last tenth of each span, and at least
           in its last minute: one cycle of the one-minute windows, against noise);
  lag      each stage's lag over the second half stays below the bound: what the simulator
           publishes in --max-lag-seconds (60 s) of real time.

With --pg-outage-minutes, PostgreSQL is stopped at the end of the warm-up for that long and
started again (a simulated clock: --speed 12 makes 10 minutes of outage two hours of the city's
readings). Memory is then judged at the end of the outage as well, the lag only after it, and
once the run is over the simulator stops, the services drain, and the soak checks that nothing
was lost: the archive holds every reading ingest put on READINGS, and alert_events every alert
transition on ALERTS.

The report also gives, not judged, the processors' checkpointed state and how long each stream
(RAW, READINGS, DLQ) holds the city's input at the end, from ingest's
citypulse_ingest_stream_retention_seconds: the outage each consumer could ride out at this size.

Exit status 0 when both hold, 1 otherwise (the report says which), 2 on an error.
"""
import argparse
import csv
import os
import struct
import sys
import time
import zlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402  (scripts/bench.py: processes, servers, /jsz snapshots)

SERVICES = ("ingest", "processors", "alerts")


def rss_kib(pid, field="VmRSS"):
    """A memory figure of `pid` from /proc/<pid>/status, KiB: VmRSS (resident) or RssAnon (its
    anonymous part: heap and stacks, not the binary's pages); None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(f"{field}:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="scripts/soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)

    def opt(flag, var, default, **kw):
        ap.add_argument(flag, default=os.environ.get(var, default),
                        help=f"{kw.pop('help')} (env {var}; default {default})", **kw)

    opt("--sensors", "CITYPULSE_SOAK_SENSORS", 100_000, type=int, help="sensors in the city")
    opt("--minutes", "CITYPULSE_SOAK_MINUTES", 60, type=float, help="how long to run")
    opt("--warmup-minutes", "CITYPULSE_SOAK_WARMUP_MINUTES", 10, type=float,
        help="memory growth is judged from the end of this span")
    opt("--sample", "CITYPULSE_SOAK_SAMPLE", 10, type=float, help="seconds between samples")
    opt("--speed", "CITYPULSE_SOAK_SPEED", 1, type=float,
        help="simulated seconds per second of the live simulator")
    opt("--pg-outage-minutes", "CITYPULSE_SOAK_PG_OUTAGE_MINUTES", 0, type=float,
        help="stop PostgreSQL this long from the end of the warm-up (0: no outage)")
    opt("--max-growth", "CITYPULSE_SOAK_MAX_GROWTH", 0.10, type=float,
        help="allowed RSS growth after the warm-up, as a fraction")
    opt("--max-lag-seconds", "CITYPULSE_SOAK_MAX_LAG_SECONDS", 60, type=float,
        help="allowed lag, in seconds of the publish rate")
    opt("--bin-dir", "CITYPULSE_SOAK_BIN_DIR", "target/release", help="service binaries")
    opt("--out", "CITYPULSE_SOAK_OUT", "target/soak", help="where soak.csv and soak.png go")
    opt("--nats-server", "CITYPULSE_SOAK_NATS_SERVER", "nats-server", help="nats-server binary")
    opt("--pg-bindir", "CITYPULSE_SOAK_PG_BINDIR", "/usr/lib/postgresql/bin",
        help="PostgreSQL's bin dir")
    ap.add_argument("--keep", action="store_true", help="keep logs and data")
    args = ap.parse_args(argv)
    if args.warmup_minutes >= args.minutes:
        ap.error("--warmup-minutes must be shorter than --minutes")
    if args.pg_outage_minutes < 0 or args.speed <= 0:
        ap.error("--pg-outage-minutes must be at least 0 and --speed above 0")
    if args.warmup_minutes + args.pg_outage_minutes >= args.minutes:
        ap.error("the warm-up and the outage must end before --minutes")
    # What bench.Run and its helpers read.
    args.seed, args.stage_timeout, args.poll_interval = 42, 600, 1.0
    return args


def start(run, args):
    """Servers, the three services (consumers known per stage) and the live simulator."""
    nats = bench.NatsServer(run, args.nats_server, "soak-nats")
    pg = bench.Postgres(run, args.pg_bindir)
    run.cleanups.append(pg.stop)
    pg.create_db("citypulse")
    bench.write_city(run)
    services, groups = bench.pipeline_groups(run, nats, pg.url("citypulse"))
    sim = bench.Child(run, "simulator", [
        run.bin("citypulse-simulator"), "--nats-url", nats.url,
        "--metrics-addr", f"127.0.0.1:{bench.free_port()}", "--city", run.city,
        "--speed", f"{args.speed:g}", "--faults", "demo", "--events", "all",
        "--log-format", "json"])
    return nats, pg, services, groups, sim


def sample(t0, nats, procs, groups):
    """One row per process and one per stage: (t, name, rss_kib, cpu_s, lag, anon_kib,
    state_kib); state_kib, the processors' checkpointed state (the sum of their
    citypulse_processors_state_bytes), tells state that grows with the city's history from
    memory that should not."""
    snap = nats.snapshot()
    t = round(snap.t - t0, 1)
    rows = []
    for name, child in procs.items():
        if not child.alive():
            raise child.died()
        state = processors_state_kib(child) if name == "processors" else ""
        rows.append((t, name, rss_kib(child.pid), round(child.cpu(), 2), "",
                     rss_kib(child.pid, "RssAnon"), state))
    for stage, keys in groups.items():
        rows.append((t, f"lag:{stage}", "", "", snap.lag(keys), "", ""))
    # RAW's last sequence, not its message count: the count stops rising once RAW reaches its
    # size limit and drops its oldest readings, which made a 100,000-sensor hour report half the
    # simulator's rate (and a lag bound half as large).
    return rows, snap.last_seq.get(bench.RAW, 0)


def processors_state_kib(child):
    """The processors' checkpointed state in KiB, or "" when their /metrics does not answer."""
    try:
        return round(scrape(child, "citypulse_processors_state_bytes") / 1024)
    except bench.BenchError:
        return ""


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else None


def judge(rows, args, rate):
    """(passed, lines of the report)."""
    end = max(r[0] for r in rows)
    warm = args.warmup_minutes * 60
    back = warm + args.pg_outage_minutes * 60
    lines, ok = [], True
    # The end of a span: its last tenth, and at least a minute and one and a half sampling
    # intervals (up to half an interval past its end: samples do not fall on the span's edges).
    # A minute is the pipeline's cycle: the one-minute windows close together once a minute of
    # the city's time, and their results reach alerts as one burst, so RSS peaks then. A median
    # over a whole cycle judges the level; over less, it judges the phase (a CI run failed on a
    # spike at the last sample: processors 64 -> 83 MiB, flat but for that peak).
    reach = max(60.0, 1.5 * args.sample)
    tail = lambda a, b: (b - max(0.1 * (b - a), reach), b + args.sample / 2)  # noqa: E731
    spans = [("at the end", (warm, end))]
    if args.pg_outage_minutes:
        spans.insert(0, ("at the end of the PostgreSQL outage", (warm, back)))
    for name in SERVICES:
        series = [(r[0], r[2]) for r in rows if r[1] == name and r[2] not in ("", None)]
        at = lambda span: median([v for t, v in series if span[0] <= t <= span[1]])  # noqa
        w = at(tail(0, warm))
        for when, span in spans:
            e = at(tail(*span))
            if not (w and e):
                ok = False
                lines.append(f"{name:<11} RSS: no samples to judge {when}")
                continue
            growth = (e - w) / w
            good = growth <= args.max_growth
            ok &= good
            lines.append(f"{name:<11} RSS {w / 1024:8.1f} MiB after warm-up, {e / 1024:8.1f} MiB "
                         f"{when}: {growth * 100:+6.1f} %  {'ok' if good else 'GROWS'}")
    # Not judged, to read the processors' RSS by: their checkpointed state (windows, hourly
    # means of the last 24 hours, learned speeds) legitimately grows until the city has a day of
    # history.
    state = [(r[0], r[6]) for r in rows if r[1] == "processors" and r[6] not in ("", None)]
    w = median([v for t, v in state if tail(0, warm)[0] <= t <= tail(0, warm)[1]])
    e = median([v for t, v in state if tail(warm, end)[0] <= t <= tail(warm, end)[1]])
    if w is not None and e is not None:
        lines.append(f"processors  checkpointed state {w / 1024:8.1f} MiB after warm-up, "
                     f"{e / 1024:8.1f} MiB at the end (not judged)")
    bound = max(rate * args.max_lag_seconds, 1000)
    # The second half of the run, or of what follows the outage (the archive catches up).
    since = back + (end - back) / 2 if args.pg_outage_minutes else end / 2
    for name in sorted({r[1] for r in rows if r[1].startswith("lag:")}):
        lags = [r[4] for r in rows if r[1] == name and r[0] >= since]
        worst = max(lags) if lags else 0
        good = worst <= bound
        ok &= good
        lines.append(f"{name[4:]:<11} lag at most {worst:>9} messages from t={since:.0f} s "
                     f"(bound {bound:.0f}): {'ok' if good else 'UNBOUNDED'}")
    return ok, lines


def outage(pg, t, args, state):
    """Stops PostgreSQL at the end of the warm-up and starts it again after the outage; the
    new state ("before", "down", "back")."""
    warm = args.warmup_minutes * 60
    if state == "before" and args.pg_outage_minutes and t >= warm:
        pg.stop()
        bench.log(f"t={t:.0f}s PostgreSQL stopped for {args.pg_outage_minutes:g} min")
        return "down"
    if state == "down" and t >= warm + args.pg_outage_minutes * 60:
        pg.start()
        bench.log(f"t={t:.0f}s PostgreSQL started again")
        return "back"
    return state


def scrape(child, name, match=""):
    """Sum of the series of metric `name` whose labels contain `match`, from a service's
    /metrics."""
    body = bench.http_get(f"http://127.0.0.1:{child.admin_port}/metrics")
    if body is None:
        raise bench.BenchError(f"{child.name}'s /metrics did not answer")
    total = 0.0
    for line in body.decode().splitlines():
        series, _, value = line.rpartition(" ")
        if series.split("{")[0] == name and match in series:
            total += float(value)
    return total


def retention_line(ingest):
    """How long each stream's limits hold its input at the end of the run, as ingest shows it
    (citypulse_ingest_stream_retention_seconds): the outage each consumer can ride out at this
    city's rate. Not judged."""
    held = []
    for stream in ("RAW", "READINGS", "DLQ"):
        try:
            seconds = scrape(ingest, "citypulse_ingest_stream_retention_seconds",
                             f'stream="{stream}"')
        except bench.BenchError:
            seconds = None
        held.append(f"{stream} {seconds / 60:,.1f} min" if seconds else f"{stream} unknown")
    return "streams     hold at this rate: " + ", ".join(held) + " (not judged)"


def nothing_lost(nats, pg, services, groups, sim):
    """After an outage: the simulator stops, the archive and alerts drain; then every reading
    on READINGS is archived and every transition on ALERTS recorded. (passed, report lines)."""
    sim.stop()
    bench.wait_until("the archive and alerts drained", lambda: (
        lambda s: groups["archive"] and all(s.caught_up(k) for k in groups["archive"])
        and s.delivered(groups["alerts"]))(
            nats.snapshot()), 1800)
    ingest, db = services["ingest"], "citypulse"
    on_readings = int(scrape(ingest, "citypulse_ingest_accepted_total")
                      - scrape(ingest, "citypulse_ingest_duplicates_total", 'stream="readings"'))
    archived = pg.rows("readings", db)
    on_alerts = nats.snapshot().messages("ALERTS")
    recorded = lambda: int(pg.sql("SELECT count(*) FROM alert_events WHERE published", db) or 0)
    # The history writer commits on its own schedule: give it a minute.
    deadline = time.monotonic() + 60
    while recorded() < on_alerts and time.monotonic() < deadline:
        time.sleep(1)
    checks = [("archive", archived, on_readings, "readings ingest put on READINGS"),
              ("alert_events", recorded(), on_alerts, "alert transitions on ALERTS")]
    lines = [f"{what:<12} {got:>10} rows for {want:>10} {of}: "
             f"{'ok' if got == want else 'LOST' if got < want else 'EXTRA'}"
             for what, got, want, of in checks]
    return all(got == want for _, got, want, _ in checks), lines


def png(path, panels, width=900, height=560):
    """A plain chart (no plotting library): one panel per entry of `panels`, stacked, each
    [(rgb, [(t, v), ...])] drawn on a common scale from 0 to the panel's maximum; time on the x
    axis. Colours: COLOURS (the report names them)."""
    pixels = bytearray(b"\xff" * (width * height * 3))
    t_end = max((t for panel in panels for _, pts in panel for t, _ in pts), default=1) or 1
    band = height // len(panels)

    def put(x, y, rgb):
        if 0 <= x < width and 0 <= y < height:
            i = (y * width + x) * 3
            pixels[i:i + 3] = bytes(rgb)

    for k, panel in enumerate(panels):
        top, bottom = k * band + 10, (k + 1) * band - 20
        for x in range(40, width - 10):
            put(x, bottom, (0, 0, 0))
        for y in range(top, bottom):
            put(40, y, (0, 0, 0))
        peak = max((v for _, pts in panel for _, v in pts), default=0) or 1
        for rgb, pts in panel:
            prev = None
            for t, v in pts:
                x = 40 + int((width - 50) * t / t_end)
                y = bottom - int((bottom - top) * v / peak)
                if prev:
                    steps = max(abs(x - prev[0]), abs(y - prev[1]), 1)
                    for i in range(steps + 1):
                        put(prev[0] + (x - prev[0]) * i // steps,
                            prev[1] + (y - prev[1]) * i // steps, rgb)
                prev = (x, y)
    raw = b"".join(b"\x00" + bytes(pixels[y * width * 3:(y + 1) * width * 3])
                   for y in range(height))

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height,
                                                                   8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


# soak.png: RSS above (ingest blue, processors green, alerts red, nats-server grey), consumer lag
# below (the same colours; the archive orange).
COLOURS = {"ingest": (31, 119, 180), "processors": (44, 160, 44), "alerts": (214, 39, 40),
           "nats-server": (127, 127, 127), "archive": (255, 127, 14)}


def write_outputs(args, rows):
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "soak.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "process_or_stage", "rss_kib", "cpu_s", "lag_messages", "anon_kib",
                    "state_kib"])
        w.writerows(rows)
    def points(name, column):
        return [(r[0], r[column]) for r in rows if r[1] == name and r[column] not in ("", None)]

    memory = [(COLOURS[n], points(n, 2)) for n in SERVICES + ("nats-server",)]
    lag = [(COLOURS[n[4:]], points(n, 4))
           for n in sorted({r[1] for r in rows if r[1].startswith("lag:")})]
    png(os.path.join(args.out, "soak.png"), [memory, lag])


def soak(run, args):
    nats, pg, services, groups, sim = start(run, args)
    procs = {**services, "nats-server": nats.child, "simulator": sim}
    rows, t0, pg_state = [], time.monotonic(), "before"
    raw0, end, misses = None, t0 + args.minutes * 60, 0
    first_t = last_t = 0.0
    while time.monotonic() < end:
        pg_state = outage(pg, time.monotonic() - t0, args, pg_state)
        try:
            got, raw = sample(t0, nats, procs, groups)
            misses = 0
        except bench.BenchError as e:
            # A monitoring endpoint that does not answer in time on a busy machine costs one
            # sample, not the run; a minute of them, or a process that died, ends it.
            misses += 1
            if "did not answer" not in str(e) or misses * args.sample >= 60:
                raise
            bench.log(f"t={time.monotonic() - t0:.0f}s sample skipped: {e}")
            time.sleep(args.sample)
            continue
        rows.extend(got)
        if raw0 is None:
            raw0, first_t = raw, got[0][0]
        last_t = got[0][0]
        bench.log(f"t={got[0][0]:.0f}s RAW={raw} " + " ".join(
            f"{r[1]}={r[2] or r[4]}" for r in got))
        time.sleep(max(0.0, args.sample - (time.monotonic() - t0 - got[0][0])))
    rate = (raw - raw0) / max(last_t - first_t, 1)  # readings stored in RAW per second
    write_outputs(args, rows)
    ok, lines = judge(rows, args, rate)
    lines.append(retention_line(services["ingest"]))
    if args.pg_outage_minutes:
        kept, more = nothing_lost(nats, pg, services, groups, sim)
        ok &= kept
        lines += more
    outage_text = (f", PostgreSQL down from minute {args.warmup_minutes:g} for "
                   f"{args.pg_outage_minutes:g}" if args.pg_outage_minutes else "")
    print(f"soak: {args.sensors} sensors at speed {args.speed:g}, {args.minutes:g} min (warm-up "
          f"{args.warmup_minutes:g}{outage_text}), {rate:,.0f} readings/s; {args.out}/soak.csv, "
          f"{args.out}/soak.png (RSS above, lag below; ingest blue, processors green, alerts red,"
          f" nats-server grey, archive orange)")
    print("\n".join(lines))
    return ok


def main(argv):
    args = parse_args(argv)
    bench.stop_on_signals()
    run, ok = bench.Run(args), False
    try:
        bench.check_flags(run)
        ok = soak(run, args)
    except bench.BenchError as e:
        bench.log(f"error: {e}")
        return 2
    except KeyboardInterrupt:
        bench.log("interrupted")
        return 130
    finally:
        run.close(ok)
    print("soak: passed" if ok else "soak: FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
