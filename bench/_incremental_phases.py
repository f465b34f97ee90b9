"""The phases of bench/incremental.py: a warehouse with history, one measured increment (raw
batch, run_incremental with its per-step timings, Parquet export, checkpoint), the row-count
check, the full-recompute baseline and the SQL-timing increments of --profile-sql."""

from __future__ import annotations

import gc
import re
import time
from collections import defaultdict
from itertools import islice
from pathlib import Path

import numpy as np
import polars as pl

from bench._common import status_kb
from bench._history import EXPORTS as ALL_EXPORTS
from bench._sql_timing import TimedConnection, package_frames
from bench._warehouse import Loader, TickGen
from crypto_assets.kafka.tick_contract import DEFAULT_COIN_IDS
from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.chain import run_incremental
from crypto_assets.transforms.features import features_increment
from crypto_assets.warehouse.lake_export import export_dirty

# (dataset, table, time column, order by) of silver and gold without anomalies, as defs/silver.py
# and defs/gold.py call export_dirty
EXPORTS = [e for e in ALL_EXPORTS if e[0].startswith(("silver/", "gold/")) and e[0] != "gold/anomalies"]
STEPS = ["clean", "candles_1m", "features", "hourly_1h", "hourly_stats", "correlations", "anomalies"]
STEP_OF = dict(zip(["clean_ticks", "ohlcv_1m", "market_features", "ohlcv_1h", "hourly_stats", "correlations",
                    "anomalies"], STEPS, strict=True))  # run_incremental's result names -> the report's step names


def _norm_sql(sql: str) -> str:
    """Whitespace collapsed; numbers and quoted paths replaced so both warehouses' statements match."""
    sql = re.sub(r"\[('[^']*'(, )?)+\]", "[<files>]", sql)
    sql = re.sub(r"'/[^']*'", "'<path>'", sql)
    sql = re.sub(r"\b\d+\b", "N", sql)
    return re.sub(r"\s+", " ", sql).strip()


class SqlProfiler(TimedConnection):
    """Connection proxy timing every statement run by the transforms (execute(), and the
    fetch of sql() relations: pl/fetchall/arrow). Keyed by (calling function, SQL text)."""

    def __init__(self, conn) -> None:
        self.times: dict[tuple[str, str], float] = defaultdict(float)
        self.calls = 0
        super().__init__(conn, self._key, self._add, fetches=("pl", "fetchall", "arrow"))

    @staticmethod
    def _key(sql: str) -> tuple[str, str]:
        names = [name for _stem, name, _line in islice(package_frames(), 3)]
        caller = names[0] if names else "?"
        if caller in ("get_state", "set_state", "first", "scalar", "mark_dirty") and len(names) > 1:
            caller = f"{names[1]}>{caller}" if caller in ("mark_dirty",) else names[1]
        return caller, _norm_sql(sql)

    def _add(self, key, kind: str, dt: float) -> None:
        if kind == "register":  # not a statement
            return
        if kind != "fetch":
            self.calls += 1
        self.times[key] += dt


class Warehouse:
    setup_parts: int  # set by setup()
    setup_batches: int
    db_size: int  # bytes, set after the runs (bench/incremental.py)
    lake_size: int

    def __init__(self, label: str, history: int, root: Path, seed: int) -> None:
        self.label = label
        self.history = history
        self.home = root / label
        self.lh = LakehouseResource(home=str(self.home), coins=list(DEFAULT_COIN_IDS))
        self.coins = list(DEFAULT_COIN_IDS)
        self.per_coin = history // len(self.coins)
        self.gen = TickGen(self.per_coin, seed)
        self.setup_times: dict[str, float] = defaultdict(float)
        self.runs: list[dict[str, float]] = []
        self.exports: list[dict[str, float]] = []
        self.inserts: list[float] = []
        self.checkpoints: list[float] = []
        self.export_parts: list[int] = []
        self.baseline: dict | None = None
        self.sql_profile: dict | None = None


def export_all(conn, wh: Warehouse) -> tuple[dict[str, float], int]:
    times, parts = {}, 0
    for dataset, table, tcol, order in EXPORTS:
        t = time.perf_counter()
        res = export_dirty(conn, wh.lh.lake_path, dataset, table, tcol, order)
        times[dataset] = time.perf_counter() - t
        parts += res.partitions
    return times, parts


def setup(conn, wh: Warehouse, batch_rows: int) -> None:
    per_batch = max(1, batch_rows // len(wh.coins))
    loader = Loader(conn)
    left = wh.per_coin
    nb = 0
    t_all = time.perf_counter()
    while left > 0:
        n = min(per_batch, left)
        t = time.perf_counter()
        ticks = wh.gen.take(n)
        wh.setup_times["generate"] += time.perf_counter() - t
        t = time.perf_counter()
        loader.append(ticks)
        wh.setup_times["insert raw"] += time.perf_counter() - t
        del ticks
        t = time.perf_counter()
        res = run_incremental(conn, wh.coins)
        dt = time.perf_counter() - t
        wh.setup_times["run_incremental"] += dt
        nb += 1
        left -= n
        cr = res["clean_ticks"]
        if cr.quarantined:
            raise SystemExit(f"setup batch {nb}: {cr.quarantined} ticks quarantined: {cr.reasons}")
        print(
            f"    [{wh.label}] batch {nb}: {n * len(wh.coins):,} ticks, run_incremental {dt:6.2f} s "
            f"(clean rows out {cr.rows_out:,}); RSS {(status_kb('VmRSS') or 0) / 1024:,.0f} MB, "
            f"peak so far {(status_kb('VmHWM') or 0) / 1024:,.0f} MB",
            flush=True,
        )
    t = time.perf_counter()
    _, parts = export_all(conn, wh)
    wh.setup_times["parquet export (all)"] = time.perf_counter() - t
    print(f"    [{wh.label}] export of all {parts} partitions {wh.setup_times['parquet export (all)']:.1f} s; "
          f"peak RSS so far {(status_kb('VmHWM') or 0) / 1024:,.0f} MB", flush=True)
    wh.setup_parts = parts
    t = time.perf_counter()
    conn.execute("CHECKPOINT")
    wh.setup_times["checkpoint"] = time.perf_counter() - t
    wh.setup_times["total"] = time.perf_counter() - t_all
    wh.setup_batches = nb
    dirty = conn.sql("SELECT count(*) FROM lake_pending").fetchall()[0][0]
    if dirty:
        raise SystemExit(f"[{wh.label}] {dirty} partitions still dirty after the setup export")


def increment(conn, wh: Warehouse, loader: Loader, n_new: int, rep: int) -> None:
    """One measured increment: append n_new ticks as one raw batch, run_incremental, export, checkpoint."""
    ticks = wh.gen.take(max(1, n_new // len(wh.coins)))
    t = time.perf_counter()
    loader.append(ticks)
    wh.inserts.append(time.perf_counter() - t)
    gc.collect()
    timings: dict[str, float] = {}
    c = time.process_time()
    t = time.perf_counter()
    res = run_incremental(conn, wh.coins, timings=timings)
    total = time.perf_counter() - t
    cpu = time.process_time() - c
    step = {STEP_OF[k]: v for k, v in timings.items()}
    step["total"] = total
    step["cpu"] = cpu
    wh.runs.append(step)
    cr = res["clean_ticks"]
    if cr.rows_out != ticks.height or cr.quarantined:
        raise SystemExit(f"[{wh.label}] increment {rep + 1}: clean wrote {cr.rows_out} of {ticks.height} "
                         f"(quarantined {cr.quarantined}: {cr.reasons})")
    c = time.process_time()
    t = time.perf_counter()
    ex, parts = export_all(conn, wh)
    ex["total"] = time.perf_counter() - t
    ex["cpu"] = time.process_time() - c
    wh.exports.append(ex)
    wh.export_parts.append(parts)
    t = time.perf_counter()
    conn.execute("CHECKPOINT")
    wh.checkpoints.append(time.perf_counter() - t)
    print(
        f"    [{wh.label}] increment {rep + 1}: {ticks.height:,} ticks, run_incremental {total * 1000:7.1f} ms "
        f"(cpu {cpu * 1000:6.1f}), export {ex['total'] * 1000:7.1f} ms ({parts} partitions), "
        f"checkpoint {wh.checkpoints[-1] * 1000:6.1f} ms",
        flush=True,
    )


def check_counts(conn, wh: Warehouse, n_new_total: int) -> list[str]:
    errors = []
    expect = wh.per_coin * len(wh.coins) + n_new_total
    got = dict(
        conn.sql(
            """
            SELECT 'clean_ticks', count(*) FROM clean_ticks UNION ALL
            SELECT 'market_features', count(*) FROM market_features UNION ALL
            SELECT 'quarantine', count(*) FROM quarantine UNION ALL
            SELECT 'lake_pending', count(*) FROM lake_pending
            """
        ).fetchall()
    )
    if got["clean_ticks"] != expect:
        errors.append(f"[{wh.label}] clean_ticks {got['clean_ticks']} != {expect}")
    if got["market_features"] != expect:
        errors.append(f"[{wh.label}] market_features {got['market_features']} != {expect}")
    if got["quarantine"]:
        errors.append(f"[{wh.label}] quarantine holds {got['quarantine']} rows")
    if got["lake_pending"]:
        errors.append(f"[{wh.label}] lake_pending holds {got['lake_pending']} rows after export")
    return errors


FEATURE_CHECK_COLS = ["price_usd", "return_pct", "log_return", "sma_1m", "sma_5m", "sma_15m", "ema_20",
                      "volatility_15m", "zscore_15m", "volume_change_pct", "ticks_15m"]


def _feature_signature(conn) -> pl.DataFrame:
    cols = ", ".join(f"{c}::DOUBLE AS {c}" for c in FEATURE_CHECK_COLS)
    return conn.sql(f"SELECT coin_id, event_time, {cols} FROM market_features ORDER BY coin_id, event_time").pl()


def naive_baseline(conn, wh: Warehouse) -> None:
    """Full recomputation of market_features over all history, compared with the incremental table."""
    before = _feature_signature(conn)
    rows = conn.sql("SELECT count(*) FROM clean_ticks").fetchall()[0][0]
    t0 = time.perf_counter()
    conn.execute("DELETE FROM market_features")
    conn.execute("UPDATE asset_state SET hwm = 0 WHERE asset = 'market_features'")
    t1 = time.perf_counter()
    res = features_increment(conn)
    t2 = time.perf_counter()
    after = _feature_signature(conn)
    same_keys = before.height == after.height and before.select("coin_id", "event_time").equals(
        after.select("coin_id", "event_time"))
    per_col: dict[str, tuple[float, float, int]] = {}  # col -> (max abs diff, max rel diff, rows over tolerance)
    if same_keys:
        for c in FEATURE_CHECK_COLS:
            a, b = before[c].to_numpy(), after[c].to_numpy()
            na, nb = np.isnan(a), np.isnan(b)
            if not np.array_equal(na, nb):
                per_col[c] = (float("inf"), float("inf"), int((na != nb).sum()))
                continue
            m = ~na
            if m.any():
                d = np.abs(a[m] - b[m])
                rel = d / np.maximum(np.abs(b[m]), 1e-300)
                # polars.testing.assert_frame_equal(rel_tol=1e-9, abs_tol=1e-9), as tests/test_incremental.py uses
                over = int((d > 1e-9 + 1e-9 * np.abs(b[m])).sum())
                per_col[c] = (float(d.max()), float(rel.max()), over)
    worst = max(per_col.items(), key=lambda kv: kv[1][1], default=("-", (0.0, 0.0, 0)))
    wh.baseline = {
        "rows": rows,
        "written": res.rows_written,
        "delete_reset": t1 - t0,
        "features_full": t2 - t1,
        "same_keys": same_keys,
        "per_col": per_col,
        "worst": worst,
        "over_tol": sum(v[2] for v in per_col.values()),
    }


def profile_sql(conn, wh: Warehouse, loader: Loader, n_new: int) -> None:
    """One extra increment through the SQL-timing proxy (after the measured ones); per-statement
    times are appended to wh.sql_profile so medians over several such increments can be shown."""
    loader.append(wh.gen.take(max(1, n_new // len(wh.coins))))
    prof = SqlProfiler(conn)
    t = time.perf_counter()
    run_incremental(prof.as_connection(), wh.coins)
    total = time.perf_counter() - t
    ex_prof = SqlProfiler(conn)
    t = time.perf_counter()
    for dataset, table, tcol, order in EXPORTS:
        export_dirty(ex_prof.as_connection(), wh.lh.lake_path, dataset, table, tcol, order)
    ex_total = time.perf_counter() - t
    conn.execute("CHECKPOINT")
    sp = wh.sql_profile = wh.sql_profile or {"run": defaultdict(list), "export": defaultdict(list),
                                              "run_total": [], "export_total": [], "run_calls": [], "export_calls": []}
    sp["run_calls"].append(prof.calls)
    sp["export_calls"].append(ex_prof.calls)
    for k, v in prof.times.items():
        sp["run"][k].append(v)
    for k, v in ex_prof.times.items():
        sp["export"][k].append(v)
    sp["run_total"].append(total)
    sp["export_total"].append(ex_total)


