"""Incremental silver/gold benchmark: does the cost of one small increment stay flat as history grows?

    .venv/bin/python bench/incremental.py [--history-small 100000] [--history-large 5000000]
                                          [--new 10000] [--reps 3] [--batch 500000]
                                          [--profile-sql] [--keep]

A benchmark, not a test: it prints numbers and PASS/FAIL against the target; it exits non-zero
only when a correctness check fails (or with --strict, when the target is missed).

SETUP (not measured, but timed and printed). Two warehouses under temporary CRYPTO_HOMEs, opened
through the package's LakehouseResource (so with its DuckDB settings: 2 threads, 4 GB), each with
the 10 default coins: one with --history-small ticks of history, one with --history-large.
Ticks are generated vectorised (numpy/polars): each coin ticks every 10 s (coin k offset by k s,
so event times interleave and (coin_id, event_time) is unique), geometric random-walk prices at
each coin's annual volatility, 24h volume as a slow random walk with rare x4 spikes (so some
anomalies fire). Both histories END at the same instant (HIST_END, 12:00 UTC), so the day
partition the new ticks land in holds the same rows in both warehouses and the Parquet export of
it is comparable. History is appended to raw_ticks in batches of --batch rows (a registered Arrow
table, bench/_warehouse.py's Loader: modelled on crypto_assets_tests.silver_helpers.insert_raw_batch
but without its two max() scans), and `run_incremental(conn, coins)` runs after every batch. Then every dirty Parquet
partition is exported once (export_dirty for the five datasets, as the silver/gold assets do) and
the database is checkpointed, so at measurement time nothing is dirty and the WAL is empty.

MEASUREMENT. Both warehouses are open at once and their increments are INTERLEAVED (small 1,
large 1, small 2, ...), so load from anything else on the machine hits both alike. --reps times
(default 3) per warehouse: append --new ticks (all coins, continuing the series right after the
history) as ONE raw batch (insert timed but reported apart), then time one
`run_incremental(conn, coins)` call (wall and process CPU time, all threads). Per-step times come
from run_incremental itself (its `timings` argument: clean, candles_1m, features, hourly x2,
correlations, anomalies), so the measured call is the real run_incremental. Then the Parquet export
of the touched partitions is timed: export_dirty for silver/clean_ticks, gold/market_features,
gold/ohlcv_1m, gold/ohlcv_1h, gold/hourly_stats. A CHECKPOINT after that is timed too and
reported as information (each Dagster asset closes its connection, and closing the last
connection checkpoints); it is not part of the ratio. Medians over the reps are reported.
Target: median wall time of run_incremental, large / small <= 1.5. After the increments the row
counts are checked (clean_ticks = market_features = ticks appended, nothing quarantined, nothing
left dirty).

BASELINE. In the same run, on the small warehouse (and on the large one too unless
--no-large-baseline): full recomputation of market_features over all history -- delete
market_features, reset its asset_state hwm to 0, rerun features_increment -- to show what the
incremental path saves. The recomputed table is compared against the incrementally built one
(it must match within rel 1e-9 + abs 1e-9, the tolerance tests/test_incremental.py uses), which
is also a correctness check of incremental == full over many batches.

--profile-sql: after the measured increments, --reps more increments per warehouse (again
interleaved) run through a connection proxy that times every SQL statement (execute(), and the
fetch of sql() relations); printed: SQL time by calling function and the statements whose time
grows most from small to large history (median per increment; numbers in the SQL are masked so
the same statement matches across warehouses).

Peak RSS: ru_maxrss of the process, and VmHWM per phase (reset through /proc/self/clear_refs at
the start of setup, measurement and baseline).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import dir_stats, keep_or_remove, print_errors, reset_hwm, status_kb  # noqa: E402
from bench._incremental_phases import Warehouse, check_counts, increment, naive_baseline, profile_sql, setup  # noqa: E402
from bench._incremental_report import report  # noqa: E402
from bench._warehouse import Loader  # noqa: E402
from crypto_assets.kafka.tick_contract import DEFAULT_COIN_IDS  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--history-small", type=int, default=100_000)
    ap.add_argument("--history-large", type=int, default=5_000_000)
    ap.add_argument("--new", type=int, default=10_000, help="ticks per increment (all coins)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=500_000, help="raw batch size while building history")
    ap.add_argument("--no-large-baseline", action="store_true", help="run the full-recompute baseline on the small warehouse only")
    ap.add_argument("--profile-sql", action="store_true", help="time every SQL statement of one extra increment")
    ap.add_argument("--profile-top", type=int, default=12)
    ap.add_argument("--verbose-diff", action="store_true", help="per-column diffs of the baseline comparison")
    ap.add_argument("--keep", action="store_true", help="keep the temporary warehouses (path printed)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = ap.parse_args()

    t_start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="bench-incremental-"))
    print(f"warehouses under {root}", flush=True)
    small = Warehouse("small", args.history_small, root, seed=11)
    large = Warehouse("large", args.history_large, root, seed=12)
    n_new_per_rep = max(1, args.new // len(DEFAULT_COIN_IDS)) * len(DEFAULT_COIN_IDS)
    errors: list[str] = []
    try:
        phase_hwm: dict[str, int | None] = {}
        reset_hwm()
        for wh in (small, large):
            print(f"setup {wh.label}: {wh.history:,} ticks in batches of {args.batch:,}", flush=True)
            with wh.lh.connect() as conn:
                setup(conn, wh, args.batch)
            gc.collect()
        phase_hwm["setup"] = status_kb("VmHWM")
        print(f"measure: {args.reps} x {n_new_per_rep:,} new ticks per warehouse, small and large interleaved "
              f"(load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs)", flush=True)
        with contextlib.ExitStack() as stack:
            conns = {wh.label: stack.enter_context(wh.lh.connect()) for wh in (small, large)}
            loaders = {label: Loader(c) for label, c in conns.items()}
            for c in conns.values():  # same cache state for both: one read of the tables the increment touches
                for t in ("raw_ticks", "clean_ticks", "market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats"):
                    c.sql(f"SELECT count(*) FROM {t}").fetchall()
            reset_hwm()
            for rep in range(args.reps):
                for wh in (small, large):
                    increment(conns[wh.label], wh, loaders[wh.label], n_new_per_rep, rep)
            phase_hwm["measure"] = status_kb("VmHWM")
            load_after = os.getloadavg()
            for wh in (small, large):
                errors.extend(check_counts(conns[wh.label], wh, n_new_per_rep * args.reps))
            if args.profile_sql:
                print(f"profile: {args.reps} more increments per warehouse through the SQL-timing proxy", flush=True)
                for _ in range(args.reps):
                    for wh in (small, large):
                        profile_sql(conns[wh.label], wh, loaders[wh.label], n_new_per_rep)
        reset_hwm()
        for wh in (small, large):
            if wh is large and args.no_large_baseline:
                continue
            print(f"baseline {wh.label}: full recomputation of market_features", flush=True)
            with wh.lh.connect() as conn:
                naive_baseline(conn, wh)
            b = wh.baseline
            if b is None:
                raise RuntimeError(f"[{wh.label}] the full recomputation recorded no comparison")
            if not b["same_keys"] or b["over_tol"]:
                errors.append(f"[{wh.label}] full recomputation differs from the incremental market_features "
                              f"(same rows: {b['same_keys']}, {b['over_tol']} values outside tolerance; "
                              f"worst {b['worst'][0]}: {b['worst'][1]})")
        phase_hwm["baseline"] = status_kb("VmHWM")
        args.phase_hwm = phase_hwm
        args.load_after = load_after
        for wh in (small, large):
            wh.db_size = wh.lh.duckdb_path.stat().st_size
            wh.lake_size = dir_stats(wh.lh.lake_path)[0]
        ok = report(small, large, args, n_new_per_rep, t_start)
    finally:
        keep_or_remove(root, args.keep)
    if print_errors(errors):
        return 2
    return 1 if (args.strict and not ok) else 0


if __name__ == "__main__":
    sys.exit(main())
