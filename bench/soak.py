"""Soak: the live stack on a month of history for --duration s; does anything grow or slow down?

    .venv/bin/python bench/soak.py [--history 20000000] [--rate 100] [--duration 1200] [--window 300]
                                   [--sample-every 20] [--keep]
    RETRAIN_CRON="*/10 * * * *" PREDICTIONS_CRON="*/2 * * * *" (the defaults) set the crons.

A benchmark, not a test: it prints numbers per window and PASS/FAIL against the targets; it
exits non-zero when the stack fails (dagster dev dies, nothing ever becomes visible), or with
--strict when a target is missed.

STACK. bench/_history.py copies a cached home with --history ticks (built first if needed)
into var/bench/runs/soak-<pid>; <home>/dagster gets a copy of the repo's dagster.yaml (its run
launcher and queue as they are); an in-process EmbeddedBroker writes broker.json. Then the real
`dagster dev -w workspace.yaml` (webserver + daemon + code server) runs in its own process group
with, like `crypto-assets live`, CRYPTO_AUTOMATION=on, BACKLOG_MIN_MESSAGES=1,
BACKLOG_MAX_WAIT_SECONDS=1, and RETRAIN_CRON / PREDICTIONS_CRON from the environment (defaults
every 10 and every 2 minutes), so the kafka_backlog_sensor launches incremental runs, the
retraining schedule trains and the predictions automation scores, all on the month of history.
The process group is always stopped at the end (SIGINT, SIGTERM, SIGKILL), also on errors.

LOAD AND FRESHNESS. This process produces contract ticks at --rate msg/s (TickProducer;
event time = wall clock in ms, prices continuing the history's random walks). Every
--sample-every'th tick is a sample; it is VISIBLE when a short read-only connection (retried
after 0.1 s while a step holds the write lock) finds it in market_features. Freshness =
visible - produced. Warm-up lasts until the first sample is visible; the next --duration s are
measured, in windows of --window s; then up to --drain s for the measured samples to show up.

PER WINDOW (from snapshots taken every --snapshot-every s, and the finished runs read from the
Dagster instance at each snapshot, before the purge deletes them): freshness p50/p95 of the
samples produced in it and how many were never seen; incremental_job runs that ended in it
(count, median and p95 RUN_START -> end) and their check time (check metadata duration_s where it
exists, else the check-only steps); other runs (training, predictions); sensor ticks; Dagster
storage bytes and files under DAGSTER_HOME at the window's end and its growth per incremental run;
warehouse bytes (file + WAL); lake file count; RSS of the daemon, the webserver, the code
server and the whole dagster dev process tree.

TARGETS: last window's median incremental cost <= 1.1 x the first window's, where the cost of a
run is its compute time per pass (assets + checks as the step reports them, divided by its
passes: a draining run lasts INCREMENTAL_DRAIN_SECONDS whatever it computes; plain run duration is
printed too); Dagster storage growth per sensor cycle (one evaluation of the backlog sensor,
the daemon's ~5 s loop) <= 100 KB over the measured span; the steady state at the default
retention (runs 24 h, skipped sensor ticks 1 day) <= 1 GB, projected from the first window's
growth per cycle (no run is old enough to purge yet) times a day of cycles. The soak runs
maintenance_job every MAINTENANCE_CRON (default here every 5 minutes) with RUN_RETENTION_HOURS
(default here 0.1 h: runs older than 6 minutes are purged), so the purge is exercised within it.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import MB, RUNS_ROOT, db_bytes, dir_stats, fmt, keep_or_remove, load_avg, med, pct  # noqa: E402
from bench._history import build_history  # noqa: E402
from bench._live import Poller, Producer, Walk, stack_exit, stop_producer, walk_ticks  # noqa: E402
from bench._runs import RunStats, run_stats, sensor_ticks  # noqa: E402
from bench._stack import (  # noqa: E402
    interrupt_flag,
    launch_dagster_dev,
    prepare_dagster_home,
    role_rss,
    stack_roles,
    start_broker,
    stop_broker,
    stop_group,
)

RUN_TARGET = 1.1
STORAGE_PER_CYCLE = 100 * 1024
STEADY_MAX = 1024 * MB  # the bound for the instance at the default retention
CYCLES_PER_DAY = 86400 // 5  # the daemon evaluates the backlog sensor about every 5 s


@dataclass
class Snap:
    t: float
    storage: tuple[int, int]  # bytes, files under DAGSTER_HOME
    parts: dict[str, int]  # bytes per top-level entry of DAGSTER_HOME (history, storage, schedules, ...)
    db: int
    lake_files: int
    rss: dict[str, int]
    load: float


def snapshot(home: Path, dev_pid: int) -> Snap:
    parts, files = {}, 0
    for child in (home / "dagster").iterdir():
        b, f = dir_stats(child) if child.is_dir() else (child.stat().st_size, 1)
        parts[child.name] = b
        files += f
    return Snap(time.time(), (sum(parts.values()), files), parts, db_bytes(home), dir_stats(home / "lake")[1],
                role_rss(dev_pid), os.getloadavg()[0])


class RunCollector:
    """Reads finished runs while the soak runs: the purge (RUN_RETENTION_HOURS=0.1 here) deletes
    them within minutes, so a read after the stop would miss every run but the last few."""

    def __init__(self, dagster_home: Path):
        self.dagster_home = dagster_home
        self.incr: dict[str, RunStats] = {}
        self.other: dict[str, tuple] = {}
        self.inst = None

    def poll(self, final: bool = False) -> None:
        import dagster as dg

        if self.inst is None:
            os.environ["DAGSTER_HOME"] = str(self.dagster_home)  # the consolidated event log's base_dir
            self.inst = dg.DagsterInstance.from_config(str(self.dagster_home))
        for rec in self.inst.get_run_records(limit=None if final else 200):
            run = rec.dagster_run
            if run.run_id in self.incr or run.run_id in self.other or not (final or run.is_finished):
                continue
            if run.job_name == "incremental_job":
                self.incr[run.run_id] = run_stats(self.inst, run.run_id)
            else:
                self.other[run.run_id] = (run.job_name, rec.start_time, rec.end_time, run.status.value)

    def close(self) -> None:
        if self.inst is not None:
            self.inst.dispose()


def read_instance(dagster_home: Path, collector: RunCollector):
    """(incremental RunStats, other runs as (job, start, end, status), sensor tick times): the
    runs the collector saw during the soak plus those still in the instance after the stop."""
    import dagster as dg

    collector.poll(final=True)
    collector.close()
    incr = sorted(collector.incr.values(), key=lambda r: r.start or 0.0)
    other = sorted(collector.other.values(), key=lambda o: o[1] or 0.0)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    inst = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        ticks = [t.timestamp for t in sensor_ticks(inst, "kafka_backlog_sensor")]
    finally:
        inst.dispose()
    return incr, other, ticks


def _dur(start: float | None, end: float | None) -> float:
    return end - start if start is not None and end is not None else float("nan")


def at(snaps: list[Snap], t: float) -> Snap:
    """The last snapshot taken at or before t (the first one if none)."""
    best = snaps[0]
    for s in snaps:
        if s.t <= t + 1.0:
            best = s
    return best


def report(args, samples, snaps, incr, other, ticks, t_meas, t_end, t_stop) -> tuple[bool, ...]:
    n_win = max(1, round((t_end - t_meas) / args.window))
    edges = [t_meas + k * args.window for k in range(n_win)] + [t_end]
    print(f"\nPER WINDOW ({n_win} x {args.window:g} s after warm-up; incremental runs by their end; "
          "storage/db/lake/RSS at the window's end):")
    print(f"  {'win':>3} {'samples':>7} {'unseen':>6} {'fresh p50':>9} {'p95':>6} {'runs':>4} {'run p50':>7} {'p95':>6} "
          f"{'checks':>6} {'ticks':>5} {'other runs':>14} {'storage MB':>10} {'files':>6} {'KB/run':>7} {'db MB':>8} "
          f"{'lake':>7} {'daemon':>7} {'websrv':>7} {'codesrv':>7} {'tree MB':>7}")
    rows = []
    for k in range(n_win):
        a, b = edges[k], edges[k + 1]
        win = [s for s in samples if a <= s.produced < b]
        fresh = [s.visible - s.produced for s in win if s.visible is not None]
        runs = [r for r in incr if r.end is not None and a <= r.end < b]
        oth = [o for o in other if o[1] and a <= o[1] < b]
        s0, s1 = at(snaps, a), at(snaps, b)
        grow = s1.storage[0] - s0.storage[0]
        rows.append({"runs": [r.duration for r in runs], "cost": [r.busy_per_pass for r in runs], "grow": grow,
                     "n_runs": len(runs), "n_ticks": sum(1 for t in ticks if a <= t < b), "unseen": len(win) - len(fresh)})
        jobs = {}
        for job, start, end, _st in oth:
            jobs.setdefault(job.replace("__ASSET_JOB", "assets").replace("_job", ""), []).append(_dur(start, end))
        ojobs = " ".join(f"{j}{len(v)}:{med(v):.0f}s" for j, v in jobs.items()) or "-"
        mb = lambda x, s1=s1: f"{s1.rss.get(x, 0) / MB:7.0f}"  # noqa: E731
        print(f"  {k + 1:>3} {len(win):>7} {len(win) - len(fresh):>6} {fmt(pct(fresh, 50), 9)} {fmt(pct(fresh, 95))} "
              f"{len(runs):>4} {fmt(med([r.duration for r in runs]), 7)} {fmt(pct([r.duration for r in runs], 95))} "
              f"{fmt(med([r.check_time for r in runs]))} {sum(1 for t in ticks if a <= t < b):>5} {ojobs:>14} "
              f"{s1.storage[0] / MB:>10.1f} {s1.storage[1]:>6} {grow / max(len(runs), 1) / 1024:>7.0f} {s1.db / MB:>8.0f} "
              f"{s1.lake_files:>7} {mb('daemon')} {mb('webserver')} {mb('code_server')} {mb('total')}")
    print("  (fresh = visible in market_features - produced, s; run = incremental_job RUN_START -> end, s; checks = "
          "check time per run, s; ticks = kafka_backlog_sensor evaluations; other runs = job count:median s; "
          "KB/run = storage growth / incremental runs; daemon/websrv/codesrv = own RSS MB)")
    steps: dict[str, list[float]] = {}
    for r in incr:
        for key, d in {**r.steps, **{f"asset {a}": v for a, v in r.assets.items()},
                       **{f"check {c}": v for c, v in r.checks.items()}}.items():
            steps.setdefault(key, []).append(d)
    if steps:
        print("  per step / asset / check over all incremental runs, median s: "
              + ", ".join(f"{k} {med(v):.2f}" for k, v in steps.items()))
    failed = [r for r in incr if r.status != "SUCCESS"]
    at_stop = [r for r in failed if r.end is None or r.end >= t_stop]
    print(f"  incremental runs: {len(incr)}; not successful: {len(failed) - len(at_stop)} during the soak "
          f"({', '.join(sorted({r.status for r in failed if r not in at_stop})) or 'none'}), {len(at_stop)} cut off by "
          f"the final shutdown")
    print("  other runs (job status +start after warm-up, duration s): " + (", ".join(
        f"{j} {st if st == 'SUCCESS' or (e is not None and e < t_stop) else st + ' at shutdown'} "
        f"+{(s_ or t_stop) - t_meas:.0f} {fmt(_dur(s_, e), 0, 0)}s" for j, s_, e, st in other) or "none"))
    s0, s1 = at(snaps, t_meas), at(snaps, t_end)
    print("  Dagster storage growth over the measured span by entry of DAGSTER_HOME: " + ", ".join(
        f"{k} +{(s1.parts.get(k, 0) - s0.parts.get(k, 0)) / 1024:.0f} KB" for k in sorted(set(s0.parts) | set(s1.parts))))

    first_med, last_med = med(rows[0]["cost"]), med(rows[-1]["cost"])
    ok_run = last_med == last_med and first_med == first_med and last_med <= RUN_TARGET * first_med
    print("  incremental cost per window (median compute s per pass): "
          + ", ".join(f"{fmt(med(r['cost']), 0)}" for r in rows))
    span_runs = sum(r["n_runs"] for r in rows)
    total_grow = at(snaps, t_end).storage[0] - at(snaps, t_meas).storage[0]
    n_ticks = sum(1 for t in ticks if t_meas <= t < t_end)
    per_cycle = total_grow / max(n_ticks, 1)
    ok_cycle = n_ticks > 0 and per_cycle <= STORAGE_PER_CYCLE
    # Window 1 ends before the purge deletes anything (runs older than 6 min, every 5 min): its
    # growth per sensor cycle is the gross rate, kept for a day at the defaults (runs 24 h,
    # skipped ticks 1 day; the few ticks that requested a run, 7 days, are in it too).
    gross = rows[0]["grow"] / max(rows[0]["n_ticks"], 1)
    steady = gross * CYCLES_PER_DAY
    ok_flat = rows[0]["n_ticks"] > 0 and steady <= STEADY_MAX
    unseen = sum(r["unseen"] for r in rows)
    print("\nTARGETS")
    print(f"  last window's median incremental cost per pass <= {RUN_TARGET} x first's: {'PASS' if ok_run else 'FAIL'} "
          f"({fmt(last_med, 0)} s vs {fmt(first_med, 0)} s; run durations {fmt(med(rows[-1]['runs']), 0)} s vs "
          f"{fmt(med(rows[0]['runs']), 0)} s)")
    print(f"  Dagster storage growth per sensor cycle <= {STORAGE_PER_CYCLE // 1024} KB: {'PASS' if ok_cycle else 'FAIL'} "
          f"({per_cycle / 1024:.1f} KB per sensor evaluation over {n_ticks} evaluations; "
          f"{total_grow / max(span_runs, 1) / 1024:.0f} KB per incremental run: +{total_grow / MB:.1f} MB over {span_runs} runs)")
    print(f"  projected steady state at the default retention <= {STEADY_MAX / MB:.0f} MB: {'PASS' if ok_flat else 'FAIL'} "
          f"({gross / 1024:.1f} KB per sensor cycle before any purge x {CYCLES_PER_DAY:,} cycles a day = "
          f"{steady / MB:.0f} MB; window growth {', '.join('+%.2f' % (r['grow'] / MB) for r in rows)} MB with the "
          f"soak's 6-minute retention)")
    print(f"  no unseen sample: {'PASS' if not unseen else 'FAIL'} ({unseen} of "
          f"{sum(1 for s in samples if t_meas <= s.produced < t_end)} measured samples never visible)")
    return ok_run, ok_cycle, ok_flat, not unseen


def integrity(home: Path) -> str:
    import duckdb

    from crypto_assets.kafka.topics import RAW_TOPIC

    con = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    try:
        n, d = con.execute("SELECT count(*), count(DISTINCT (coin_id, last_updated_at)) FROM raw_ticks WHERE kafka_topic = ?",
                           [RAW_TOPIC]).fetchall()[0]
        q = con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0]
    finally:
        con.close()
    return f"live ticks in raw_ticks {n:,} ({n - d} duplicated), quarantine rows {q}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--history", type=int, default=20_000_000, help="ticks of history (cached build)")
    ap.add_argument("--coins", type=int, default=10)
    ap.add_argument("--rate", type=float, default=100.0, help="ticks per second (all coins)")
    ap.add_argument("--duration", type=float, default=1200.0, help="measured span after warm-up (s)")
    ap.add_argument("--window", type=float, default=300.0, help="report window (s)")
    ap.add_argument("--sample-every", type=int, default=20, help="every Nth tick is a freshness sample")
    ap.add_argument("--snapshot-every", type=float, default=15.0, help="storage/RSS snapshot interval (s)")
    ap.add_argument("--drain", type=float, default=90.0, help="max wait for measured samples after the span (s)")
    ap.add_argument("--warmup-timeout", type=float, default=600.0)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--keep", action="store_true", help="keep the soak home (path printed)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    crons = {"RETRAIN_CRON": os.environ.get("RETRAIN_CRON") or "*/10 * * * *",
             "PREDICTIONS_CRON": os.environ.get("PREDICTIONS_CRON") or "*/2 * * * *",
             "MAINTENANCE_CRON": os.environ.get("MAINTENANCE_CRON") or "*/5 * * * *",
             "RUN_RETENTION_HOURS": os.environ.get("RUN_RETENTION_HOURS") or "0.1"}
    print(f"soak benchmark: dagster dev + kafka_backlog_sensor at {args.rate:g} msg/s for {args.duration:g} s "
          f"on {args.history:,} ticks of history; {', '.join(f'{k}={v!r}' for k, v in crons.items())}")
    print(f"  load average at start: {load_avg()}", flush=True)
    home = RUNS_ROOT / f"soak-{os.getpid()}"
    shutil.rmtree(home, ignore_errors=True)
    try:
        return soak(args, home, crons)
    finally:
        keep_or_remove(home, args.keep)


def progress(producer: Producer, pending: dict, s: Snap, now: float, t_meas: float) -> None:
    """One line at each window's end: production, storage, RSS and freshness so far."""
    fresh = [x.visible - x.produced for x in producer.samples if x.visible is not None and x.produced >= t_meas]
    print(f"  +{now - t_meas:5.0f} s  produced {producer.sent}  pending samples {len(pending)}  "
          f"storage {s.storage[0] / MB:.1f} MB / {s.storage[1]} files  db {s.db / MB:.0f} MB  "
          f"RSS daemon {s.rss.get('daemon', 0) / MB:.0f} MB webserver {s.rss.get('webserver', 0) / MB:.0f} MB  "
          f"fresh p95 so far {pct(fresh, 95):.1f} s  load {s.load:.2f}",
          flush=True)


def soak(args, home: Path, crons: dict[str, str]) -> int:
    hist = build_history(home, args.history, coins=args.coins)
    print(f"  {hist.describe()}\n  CRYPTO_HOME {home}", flush=True)
    dagster_home = prepare_dagster_home(home)
    broker = start_broker(home)
    env = {**os.environ, **crons, "CRYPTO_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
           "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, "CRYPTO_AUTOMATION": "on", "BACKLOG_MIN_MESSAGES": "1",
           "BACKLOG_MAX_WAIT_SECONDS": "1", "SPARK_LOCAL_IP": "127.0.0.1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    log_path = home / "dagster-dev.log"
    dev = producer = None
    code, stop_how, snaps = 0, "", []
    t_meas = t_end = None
    with interrupt_flag() as interrupted:
        try:
            from crypto_assets.resources import KafkaResource

            t0 = time.time()
            dev, port = launch_dagster_dev(home, env, log_path)
            print(f"  dagster dev pid {dev.pid} (own process group), port {port}, log {log_path}", flush=True)
            walk = Walk(hist.coin_ids, hist.last_price, hist.last_volume, args.seed)
            producer = Producer(KafkaResource(bootstrap_servers=broker.bootstrap_servers, home=str(home)),
                                walk_ticks(walk, args.rate), args.rate, args.sample_every)
            producer.start()
            poller = Poller(home / "warehouse.duckdb")
            collector = RunCollector(dagster_home)
            pending, next_snap, drain_end, roles_shown = {}, 0.0, None, False
            while True:
                stopped = stack_exit(interrupted, dev, producer, log_path)
                if stopped is not None:
                    code = stopped
                    break
                producer.move_new_samples(pending)
                if poller.poll(pending) and t_meas is None:
                    t_meas = time.time()
                    t_end = t_meas + args.duration
                    snaps = [snapshot(home, dev.pid)]
                    next_snap = t_meas + args.snapshot_every
                    print(f"  warm-up over at +{t_meas - t0:.0f} s (first sample visible); measuring {args.duration:g} s",
                          flush=True)
                now = time.time()
                if t_meas is None and now - t0 > args.warmup_timeout:
                    print(f"nothing visible after {args.warmup_timeout:g} s; see {log_path}", file=sys.stderr)
                    code = 1
                    break
                if t_meas is not None and t_end is not None and now >= next_snap and now < t_end:
                    snaps.append(snapshot(home, dev.pid))
                    collector.poll()
                    next_snap += args.snapshot_every
                    if not roles_shown:
                        print(f"  dagster dev processes: {stack_roles(dev.pid)}", flush=True)
                        roles_shown = True
                    if int((now - t_meas) // args.window) > int((snaps[-2].t - t_meas) // args.window) or now >= t_end:
                        progress(producer, pending, snaps[-1], now, t_meas)
                if t_end is not None and now >= t_end and drain_end is None:
                    snaps.append(snapshot(home, dev.pid))  # the end of the last window
                    drain_end = now + args.drain
                if (drain_end is not None and t_end is not None
                        and (not any(x.produced < t_end for x in pending.values()) or now >= drain_end)):
                    break
                time.sleep(0.02)
        finally:
            stop_producer(producer)  # our client goes before the broker (no reconnect noise)
            t_stop = time.time()
            if dev is not None:
                stop_how = stop_group(dev)
            stop_broker(home, broker)
    print(f"\nRESULT (dagster dev stopped: {stop_how}; produced {producer.sent if producer else 0} ticks; "
          f"load average at end: {load_avg()})")
    if t_meas is None or t_end is None or producer is None or len(snaps) < 2:
        print("dagster dev log (tail):\n" + "\n".join(log_path.read_text(errors="replace").splitlines()[-40:]))
        return code or 1
    incr, other, ticks = read_instance(dagster_home, collector)
    print(f"  {integrity(home)}; DuckDB polls {poller.polls}, {poller.lock_fail} refused by a write lock")
    oks = report(args, producer.samples, snaps, incr, other, ticks, t_meas, min(t_end, snaps[-1].t), t_stop)
    return 1 if code == 0 and args.strict and not all(oks) else code


if __name__ == "__main__":
    sys.exit(main())
