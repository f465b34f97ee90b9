"""The same trade candles and rolling features by three engines: this project's DuckDB path,
PySpark local[2] (what the source documents use) and pandas; results compared for equality.

    .venv/bin/python bench/engines.py [--trades 10000000] [--days 3] [--seed 13] [--rounds 3]
                                      [--engines ours,spark,pandas] [--strict] [--keep]

A benchmark, not a test: it prints numbers, ratios and PASS/FAIL against the target (ours at
least 5x faster than Spark local[2] with equal results). Exit 1 when the engines' results
differ (or an engine fails); with --strict also when the target is missed.

INPUT. bench/_engines_data.py writes N trades once to var/bench/engines/ (seeded numpy: 8
products on 2 exchanges, tick-rounded prices, exact 8-decimal sizes, multi-fill timestamps,
trade ids per product, over --days days); reused when a file with the same parameters exists.

COMPUTATION (every engine, from that Parquet file to Parquet files of its results): 1-second,
1-minute and 1-hour bars per (exchange, product): open/high/low/close by (trade_time, trade_id),
base and quote volume (exact; quote rounded half-up to 8 decimals), VWAP, trade count, buy/sell
volume, first/last trade id; on the 1-minute closes RSI(14) (Wilder, TA-Lib seed) and
Bollinger(20, 2 population std). ours = raw_trades loaded into a fresh DuckDB warehouse file
(`load`: where the project keeps its trades, as the pull leaves them; timed, printed, and NOT
included in ours' time, as Spark's and pandas' Parquet file is theirs), then
crypto_assets.transforms.trade_bars.trade_bars_full (`compute`) and COPY out (`write`). The
ratio including the load is printed beside.

TIMING. Each engine runs in its own fresh process (no idle JVM or pandas heap beside the one
being timed), rounds interleaved (the order rotates every round), medians per engine. Spark's
session start-up (JVM, context) is timed apart and EXCLUDED from its time. Before
each engine run the bench waits while /work/wt/QUIET (--quiet-file) exists, then holds that
file for the run so cooperating processes pause. Results of every round are compared with the first engine's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fmt, load_avg, med, verdict  # noqa: E402
from bench._engines_data import CACHE, ensure_trades  # noqa: E402

ENGINES = ("ours", "spark", "pandas")
TARGET = 5.0  # ours >= 5x faster than Spark local[2]
DEFAULT_QUIET = Path("/work/wt/QUIET")


def engine_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    bad = [n for n in names if n not in ENGINES]
    if bad or not names or len(set(names)) != len(names):
        raise argparse.ArgumentTypeError(f"engines: a comma-separated subset of {', '.join(ENGINES)} without repeats")
    return names


def positive(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return v


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--trades", type=positive, default=10_000_000, help="trades in the tape (default 10,000,000)")
    ap.add_argument("--days", type=float, default=3.0, help="days the trades span (default 3)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--rounds", type=positive, default=3, help="interleaved rounds of every engine (default 3)")
    ap.add_argument("--engines", type=engine_list, default=list(ENGINES), help="comma-separated, the first is the reference")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per engine run (s)")
    ap.add_argument("--quiet-file", type=Path, default=DEFAULT_QUIET, help="wait while it exists; hold it while timing")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the target is missed too")
    ap.add_argument("--keep", action="store_true", help="keep the engines' output directories")
    ap.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--input", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    return ap


# ----------------------------------------------------------------------------- one engine run
def run_engine(engine: str, path: Path, out: Path) -> dict[str, float]:
    """Phase -> seconds of one engine computing everything from `path` into `out`; `total` is
    what the ratios use (for Spark without `start`, the session start-up)."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    if engine == "ours":
        from bench import _engines_ours

        t = _engines_ours.run(out / "warehouse.duckdb", path, out)
        (out / "warehouse.duckdb").unlink(missing_ok=True)
        return {**t, "total": t["compute"] + t["write"], "with_load": t["load"] + t["compute"] + t["write"]}
    if engine == "spark":
        from bench import _engines_spark

        t0 = time.perf_counter()
        spark = _engines_spark.session()
        t1 = time.perf_counter()
        _engines_spark.run(spark, path, out)
        t2 = time.perf_counter()
        spark.stop()
        return {"start": t1 - t0, "compute": t2 - t1, "total": t2 - t1}
    import pyarrow.parquet as pq

    from bench import _engines_pandas

    t0 = time.perf_counter()
    tables = _engines_pandas.run(path)
    t1 = time.perf_counter()
    for width, table in tables.items():
        (out / f"bars_{width}").mkdir()
        pq.write_table(table, out / f"bars_{width}" / "part-0.parquet")
    t2 = time.perf_counter()
    return {"compute": t1 - t0, "write": t2 - t1, "total": t2 - t0}


def worker(args) -> int:
    t = run_engine(args.worker, args.input, args.out)
    print("RESULT " + json.dumps(t), flush=True)
    return 0


def spawn(engine: str, path: Path, out: Path, timeout: float) -> dict:
    env = {**os.environ, "SPARK_LOCAL_IP": os.environ.get("SPARK_LOCAL_IP", "127.0.0.1")}
    before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", engine, "--input", str(path),
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=timeout)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        return {"engine": engine, "error": f"exit {proc.returncode}: {proc.stderr[-2500:]}", "loadavg": (before, os.getloadavg()[0])}
    return {"engine": engine, **json.loads(lines[-1][7:]), "process": wall, "loadavg": (before, os.getloadavg()[0]), "error": None}


# ----------------------------------------------------------------------------- QUIET window
class Quiet:
    """Wait while the file exists, then hold it (created exclusively, removed on exit or signal)."""

    def __init__(self, path: Path | None):
        self.path, self.held, self.waited = path, False, 0.0

    def __enter__(self) -> Quiet:
        if self.path is None:
            return self
        t0 = time.perf_counter()
        while True:
            try:
                os.close(os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                break
            except FileExistsError:
                time.sleep(5)
            except FileNotFoundError:  # no such directory: nobody to pause
                return self
        self.held, self.waited = True, time.perf_counter() - t0
        return self

    def __exit__(self, *exc) -> None:
        if self.held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # type: ignore[union-attr]
            self.held = False


# ----------------------------------------------------------------------------- report
def report(runs: list[dict], engines: list[str], n: int) -> tuple[dict[str, float], bool]:
    print("\nALL RUNS (s; load = 1-min load average before -> after the run):")
    for r in runs:
        phases = ", ".join(f"{k} {v:.2f}" for k, v in r.items() if k not in ("engine", "loadavg", "error", "round", "total")
                           and isinstance(v, float))
        print(f"  round {r['round'] + 1} {r['engine']:<7} total {fmt(r.get('total'), 8)}  load {r['loadavg'][0]:.2f} -> "
              f"{r['loadavg'][1]:.2f}  ({phases})" + (f"  ERROR {r['error'][:300]}" if r["error"] else ""))
    good = {e: [r for r in runs if r["engine"] == e and not r["error"]] for e in engines}
    meds = {e: med([r["total"] for r in good[e]]) for e in engines}
    print(f"\nMEDIANS over {max(len(v) for v in good.values())} rounds, {n:,} trades:")
    for e in engines:
        extra = ""
        if e == "ours":
            extra = "  (compute {:.2f} + write {:.2f}; the Parquet load into raw_trades before it {:.2f}, not included)".format(
                *(med([r[k] for r in good[e]]) for k in ("compute", "write", "load")))
        if e == "spark":
            extra = f"  (session start-up {med([r['start'] for r in good[e]]):.2f} s, not included)"
        print(f"  {e:<7} {fmt(meds[e], 8)} s  {n / meds[e] / 1e6 if meds[e] == meds[e] else float('nan'):6.2f} M trades/s{extra}")
    ok = True
    if "ours" in engines:
        ours = meds["ours"]
        for e in engines:
            if e != "ours":
                print(f"  ratio {e} / ours: {fmt(meds[e] / ours, 6)}x"
                      + (f"  (vs ours with the Parquet load into raw_trades: "
                         f"{meds[e] / med([r['with_load'] for r in good['ours']]):.2f}x)" if good["ours"] else ""))
        if "spark" in engines:
            ratio = meds["spark"] / ours
            ok = ratio == ratio and ratio >= TARGET
            print(f"\nTARGET ours >= {TARGET:g}x faster than Spark local[2]: {verdict(ok)} ({ratio:.2f}x)")
    return meds, ok


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.worker:
        return worker(args)
    from bench._engines_compare import compare_all, rows

    print(f"engines benchmark: {args.trades:,} trades over {args.days:g} days, engines {', '.join(args.engines)}, "
          f"{args.rounds} rounds; {os.cpu_count()} CPUs")
    print(f"  load average at start: {load_avg()}")
    path, gen_s = ensure_trades(args.trades, args.days, args.seed)
    print(f"  trades: {path} ({path.stat().st_size / 1e6:.0f} MB, " + ("reused)" if gen_s is None else f"written in {gen_s:.1f} s)"))
    quiet = Quiet(args.quiet_file)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the finally below runs
    outs = {e: CACHE / "out" / f"{e}-{os.getpid()}" for e in args.engines}
    runs, errors = [], []
    try:
        for rnd in range(args.rounds):
            order = args.engines[rnd % len(args.engines):] + args.engines[:rnd % len(args.engines)]
            for e in order:
                with quiet:  # one window per engine run: each stays well under 10 minutes
                    waited = f", waited {quiet.waited:.0f} s for {args.quiet_file}" if quiet.waited > 1 else ""
                    r = spawn(e, path, outs[e], args.timeout)
                r["round"] = rnd
                runs.append(r)
                print(f"  round {rnd + 1} {e:<7} " + (f"{r['total']:.2f} s" if not r["error"] else "FAILED")
                      + f"  load {r['loadavg'][0]:.2f} -> {r['loadavg'][1]:.2f}{waited}", flush=True)
            if any(r["error"] for r in runs if r["round"] == rnd):
                errors += [f"{r['engine']} failed: {r['error']}" for r in runs if r["round"] == rnd and r["error"]]
                break
            ref, *rest = args.engines
            diff = compare_all(outs[ref], {e: outs[e] for e in rest})
            errors += [f"round {rnd + 1}: {d}" for d in diff]
            print(f"  round {rnd + 1} results: " + ("equal" if not diff else "DIFFERENT") + " ("
                  + ", ".join(f"bars_{w} {rows(outs[ref], w):,}" for w in ("1s", "1m", "1h")) + f" rows, {ref} as reference)")
    finally:
        quiet.__exit__()
        if not args.keep:
            for d in outs.values():
                shutil.rmtree(d, ignore_errors=True)
    _, ok = report(runs, args.engines, args.trades)
    print(f"load average at end: {load_avg()}")
    if errors:
        print("\nERRORS:\n  " + "\n  ".join(errors))
        return 1
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
