"""The whole Dagster incremental_job run for a small increment, over a small vs a large history.

    .venv/bin/python bench/incremental_run.py [--small 100000] [--large 20000000] [--new 10000]
                                              [--rounds 5] [--coins 10] [--keep]

A benchmark, not a test: it prints numbers and PASS/FAIL against the target (median run time
large / small <= 1.2); it exits non-zero when a run fails or does not deliver the new ticks
(or, with --strict, when the target is missed).

HISTORIES. bench/_history.py builds (or takes from var/bench/cache/) a home with --small and
one with --large ticks of history, raw_ticks and every derived table with their incremental
state and Parquet mirrors, as a month of live runs leaves them (build time printed).

ONE RUN. Runs alternate small, large, small, large, ... (--rounds each), so load from anything
else on the machine hits both alike. Each run gets a fresh copy of its history in its own home
(var/bench/runs/...), a DagsterInstance from the repo's dagster.yaml copied into <home>/dagster,
a fresh EmbeddedBroker (broker.json in the home) and --new ticks produced by the package's
TickProducer on crypto_raw, continuing the history (same coins, one tick per coin per second
right after its last tick, prices continuing its random walks). Then a fresh Python process
(as a run worker imports the code location afresh) imports crypto_assets.definitions, opens
the instance and times

    defs.get_job_def("incremental_job").execute_in_process(instance=..., run_config=...)

with the run config the sensor uses: crypto_assets.defs.automation.incremental_run_config(0) (one pass,
no drain) where it exists, else {}, and the sensor's tags. That is every step, check and
metadata query of the job, as the sensor launches it (without the launch itself: queue, fork).
Afterwards the bench checks that exactly the new ticks reached raw_ticks (crypto_raw) and
market_features.

REPORTED per run and as medians per history size: execute_in_process wall time, RUN_START ->
RUN_SUCCESS, every step's STEP_START -> STEP_SUCCESS (whatever steps the job has), and the
`duration_s` of each asset materialization and check evaluation whose metadata carries it;
Dagster storage bytes the run added under <home>/dagster (sqlite run/event storage, compute
logs); load average before and after. Target: median wall time large / small <= 1.2.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import MB, RUNS_ROOT, dir_stats, fmt, load_avg, med  # noqa: E402
from bench._history import build_history  # noqa: E402
from bench._live import Walk, tick_bytes  # noqa: E402
from bench._runs import run_stats  # noqa: E402
from bench._stack import prepare_dagster_home, start_broker, stop_broker  # noqa: E402

TARGET = 1.2
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def worker() -> int:
    """One incremental_job run in this (fresh) process; prints RESULT <json>."""
    import dagster as dg

    import crypto_assets.defs.automation as sensors
    from crypto_assets.definitions import defs

    dagster_home = Path(os.environ["DAGSTER_HOME"])
    make_config = getattr(sensors, "incremental_run_config", None)
    run_config = make_config(0) if make_config else {}
    job = defs.get_job_def("incremental_job")
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    instance.get_runs(limit=1)  # storage exists before the "before" size
    before = dir_stats(dagster_home)
    t0 = time.perf_counter()
    result = job.execute_in_process(instance=instance, run_config=run_config, raise_on_error=False,
                                    tags={"trigger": "kafka_backlog", "lag": os.environ["BENCH_LAG"]})
    wall = time.perf_counter() - t0
    rs = run_stats(instance, result.run_id)
    instance.dispose()
    after = dir_stats(dagster_home)
    print("RESULT " + json.dumps({
        "ok": result.success, "wall": wall, "run": rs.duration, "steps": rs.steps, "assets": rs.assets,
        "checks": rs.checks, "check_time": rs.check_time, "run_config": bool(make_config),
        "storage_bytes": after[0] - before[0], "storage_files": after[1] - before[1],
    }), flush=True)
    return 0


def produce(hist, n_new: int, broker, seed: int) -> None:
    """n_new ticks continuing the history: tick i (from hist.ticks on) at start + i * step."""
    from crypto_assets.kafka.producer import TickProducer
    from crypto_assets.resources import KafkaResource

    walk = Walk(hist.coin_ids, hist.last_price, hist.last_volume, seed)
    tp = TickProducer(KafkaResource(bootstrap_servers=broker.bootstrap_servers, home=str(hist.home)))
    for j in range(n_new):
        i = hist.ticks + j
        coin, price, vol = walk.step(j, 1.0)
        ts = EPOCH + timedelta(microseconds=hist.start_us + round(i * hist.step_us))  # exact: no float seconds
        tp.send_raw(coin.coin_id, tick_bytes(coin, price, vol, ts))
    tp.flush(30.0)


def verify(hist, n_new: int) -> str | None:
    """None when exactly the new ticks are in raw_ticks (crypto_raw) and in market_features."""
    import duckdb

    from crypto_assets.kafka.topics import RAW_TOPIC

    con = duckdb.connect(str(hist.home / "warehouse.duckdb"), read_only=True)
    try:
        t_end = hist.end_us - 1  # the new ticks start at end_us, the history ends one step before
        raw = con.execute("SELECT count(*), count(DISTINCT (coin_id, last_updated_at)) FROM raw_ticks WHERE kafka_topic = ?",
                          [RAW_TOPIC]).fetchall()[0]
        feat = con.execute("SELECT count(*) FROM market_features WHERE event_time > make_timestamp(?)::TIMESTAMPTZ",
                           [t_end]).fetchall()[0][0]
        q = con.execute("SELECT count(*) FROM quarantine").fetchall()[0][0]
    finally:
        con.close()
    if raw != (n_new, n_new) or feat != n_new or q:
        return f"raw_ticks (crypto_raw) {raw}, new market_features rows {feat}, quarantine {q}; expected {n_new}"
    return None


def one_run(label: str, ticks: int, rnd: int, args) -> dict:
    home = RUNS_ROOT / f"incremental-{label}-{rnd}-{os.getpid()}"
    shutil.rmtree(home, ignore_errors=True)
    hist = build_history(home, ticks, coins=args.coins)
    dagster_home = prepare_dagster_home(home)
    broker = start_broker(home)
    try:
        produce(hist, args.new, broker, seed=rnd)
        env = {**os.environ, "CRYPTO_HOME": str(home), "DAGSTER_HOME": str(dagster_home),
               "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers, "SPARK_LOCAL_IP": "127.0.0.1",
               "BENCH_LAG": str(args.new)}
        load_before = os.getloadavg()[0]
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker"], env=env, cwd=home,
                              capture_output=True, text=True, timeout=args.timeout)
        load_after = os.getloadavg()[0]
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            raise RuntimeError(f"worker failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        res = json.loads(lines[-1][len("RESULT "):])
        res.update(label=label, ticks=ticks, round=rnd, load_before=load_before, load_after=load_after,
                   copy_s=hist.copy_s, error=None if res["ok"] else "run failed")
        if res["ok"]:
            res["error"] = verify(hist, args.new)
        if res["error"] and args.keep:
            print(f"  kept {home} (worker log below)\n{proc.stderr[-2000:]}")
        return res
    finally:
        stop_broker(home, broker)
        if not args.keep:
            shutil.rmtree(home, ignore_errors=True)


def report(results: list[dict], args, sizes: dict[str, int]) -> bool:
    print("\nALL RUNS in order (s; storage = bytes/files the run added under DAGSTER_HOME):")
    step_keys: list[str] = []
    for r in results:
        step_keys += [k for k in r["steps"] if k not in step_keys]
    print("  steps: " + ", ".join(f"s{i + 1} {k}" for i, k in enumerate(step_keys)))
    print(f"  {'run':<5} {'history':>11} {'wall':>6} {'run':>6} {'checks':>6} {'storage':>9} {'load':>11}  steps")
    for r in results:
        steps = " ".join(f"s{step_keys.index(k) + 1}={v:.2f}" for k, v in r["steps"].items())
        print(f"  {r['label']}{r['round'] + 1:<4} {r['ticks']:>11,} {fmt(r['wall'])} {fmt(r['run'])} {fmt(r['check_time'])} "
              f"{r['storage_bytes'] / 1024:>7.0f}KB {r['load_before']:>5.2f}->{r['load_after']:<5.2f}  {steps}"
              + (f"  ERROR {r['error']}" if r["error"] else ""))
    labels = list(sizes)
    by = {lb: [r for r in results if r["label"] == lb and not r["error"]] for lb in labels}
    print(f"\nMEDIANS per history size ({', '.join(f'{lb}: {len(by[lb])} good runs' for lb in labels)}; "
          f"run config from sensors.incremental_run_config: {'yes' if results and results[0]['run_config'] else 'no ({})'}):")
    print(f"  {'':<44}" + "".join(f"{f'{lb} {sizes[lb]:,}':>16}" for lb in labels) + f"{'ratio':>9}")

    def row(name: str, get) -> float:
        vals = [med([get(r) for r in by[lb]]) for lb in labels]
        ratio = vals[1] / vals[0] if vals[0] and vals[0] == vals[0] else float("nan")
        print(f"  {name:<44}" + "".join(f"{fmt(v, 16, 3)}" for v in vals) + f"{fmt(ratio, 9)}")
        return ratio

    ratio = row("execute_in_process wall", lambda r: r["wall"])
    row("RUN_START -> end", lambda r: r["run"])
    row("check time", lambda r: r["check_time"])
    for k in step_keys:
        row(f"step {k}", lambda r, k=k: r["steps"].get(k))
    for kind in ("assets", "checks"):
        names: list[str] = []
        for r in results:
            names += [n for n in r[kind] if n not in names]
        for n in names:
            row(f"{kind[:-1]} {n} duration_s", lambda r, n=n, kind=kind: r[kind].get(n))
    row("Dagster storage KB added", lambda r: r["storage_bytes"] / 1024)
    row("Dagster storage files added", lambda r: r["storage_files"])
    row("history copy (not measured)", lambda r: r["copy_s"])
    ok = ratio == ratio and ratio <= TARGET
    print(f"\nTARGET median wall large/small <= {TARGET}: {'PASS' if ok else 'FAIL'} (ratio {ratio:.2f})")
    return ok


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--small", type=int, default=100_000, help="ticks of history, A")
    ap.add_argument("--large", type=int, default=20_000_000, help="ticks of history, B")
    ap.add_argument("--new", type=int, default=10_000, help="new ticks per run")
    ap.add_argument("--rounds", type=int, default=5, help="runs per history size (interleaved ABAB...)")
    ap.add_argument("--coins", type=int, default=10)
    ap.add_argument("--timeout", type=float, default=900.0, help="per run (s)")
    ap.add_argument("--keep", action="store_true", help="keep the run homes (paths printed)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker()
    n_new = max(1, args.new // args.coins) * args.coins
    args.new = n_new
    sizes = {"A": args.small, "B": args.large}
    t_start = time.time()
    print(f"incremental_run benchmark: one whole incremental_job run (execute_in_process) for {n_new:,} new ticks, "
          f"history {args.small:,} (A) vs {args.large:,} (B) ticks, {args.rounds} rounds ABAB...")
    print(f"  load average at start: {load_avg()}")
    for lb, n in sizes.items():  # build (or find) both caches before anything is timed
        print(f"  {lb}: {build_history(None, n, coins=args.coins).describe()}", flush=True)
    results = []
    for rnd in range(args.rounds):
        for lb, n in sizes.items():
            r = one_run(lb, n, rnd, args)
            results.append(r)
            print(f"  round {rnd + 1} {lb}: wall {r['wall']:.2f} s, run {r['run']:.2f} s, "
                  f"storage +{r['storage_bytes'] / 1024:.0f} KB, load {r['load_before']:.2f} -> {r['load_after']:.2f}"
                  + (f"  ERROR {r['error']}" if r["error"] else ""), flush=True)
    ok = report(results, args, sizes)
    print(f"load average at end: {load_avg()}; bench wall time {time.time() - t_start:.0f} s "
          f"(peak Dagster storage per run {max(r['storage_bytes'] for r in results) / MB:.2f} MB)")
    if any(r["error"] for r in results):
        return 2
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
