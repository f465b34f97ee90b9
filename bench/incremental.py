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
table, modelled on crypto_assets_tests.silver_helpers.insert_raw_batch but without its two
max() scans), and `run_incremental(conn, coins)` runs after every batch. Then every dirty Parquet
partition is exported once (export_dirty for the five datasets, as the silver/gold assets do) and
the database is checkpointed, so at measurement time nothing is dirty and the WAL is empty.

MEASUREMENT. Both warehouses are open at once and their increments are INTERLEAVED (small 1,
large 1, small 2, ...), so load from anything else on the machine hits both alike. --reps times
(default 3) per warehouse: append --new ticks (all coins, continuing the series right after the
history) as ONE raw batch (insert timed but reported apart), then time one
`run_incremental(conn, coins)` call (wall and process CPU time, all threads). Per-step times come
from timing wrappers installed on the names the pipeline module calls (clean_increment,
candles_1m_increment, features_increment, hourly_increment x2, correlations_refresh,
anomalies_increment), so the measured call is the real run_incremental. Then the Parquet export
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
import re
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

try:  # installed (editable) in the venv; fall back to the checkout this script lives in
    import crypto_assets  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

import crypto_assets.transforms.chain as pipeline_mod  # noqa: E402
from crypto_assets.kafka.tick_contract import DEFAULT_COIN_IDS, DEFAULT_COINS  # noqa: E402
from crypto_assets.warehouse.lake_export import export_dirty  # noqa: E402
from crypto_assets.resources import LakehouseResource  # noqa: E402
from crypto_assets.transforms.features import features_increment  # noqa: E402
from crypto_assets.transforms.chain import run_incremental  # noqa: E402
from crypto_assets.warehouse.tables import TABLES  # noqa: E402

TARGET_RATIO = 1.5
TICK_S = 10  # seconds between two ticks of one coin
HIST_END = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)  # first new tick of coin 0 is here

EXPORTS = [  # (dataset, table, time column, order by): from the table registry, as defs/incremental.py exports
    (TABLES[t].dataset, t, TABLES[t].time_column, TABLES[t].export_order)
    for t in ("clean_ticks", "market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats")
]

STEPS = ["clean", "candles_1m", "features", "hourly_1h", "hourly_stats", "correlations", "anomalies"]

RAW_COLUMNS = (
    "coin_id, symbol, source, schema_version, price_usd, market_cap_usd, volume_24h_usd, change_24h_pct, "
    "change_7d_pct, last_updated_at, ingestion_timestamp, kafka_topic, kafka_partition, kafka_offset, "
    "kafka_timestamp, batch_id, ingested_at"
)


# --------------------------------------------------------------------------------------------
# Tick generation and the bulk loader
# --------------------------------------------------------------------------------------------


class TickGen:
    """Vectorised per-coin random walks; `take(n_per_coin)` continues where the last call ended.
    Tick i of coin k (i counted from the first history tick) is at
    HIST_END - history_per_coin * 10 s + i * 10 s + k s."""

    def __init__(self, history_per_coin: int, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.coins = DEFAULT_COINS
        self.base_us = int((HIST_END - timedelta(seconds=TICK_S * history_per_coin)).timestamp() * 1_000_000)
        self.i = 0  # next tick index (per coin)
        self.logp = np.log([c.ref_price for c in self.coins])
        self.logv = np.log([c.ref_volume for c in self.coins])
        sec_per_year = 365 * 24 * 3600
        self.sigma = np.array([c.annual_vol for c in self.coins]) * np.sqrt(TICK_S / sec_per_year)
        self.supply = np.array([c.ref_volume * 30 / c.ref_price for c in self.coins])
        self.ids = [c.coin_id for c in self.coins]
        self.symbols = [c.symbol for c in self.coins]

    def take(self, n_per_coin: int) -> pl.DataFrame:
        k = len(self.coins)
        rng = self.rng
        shocks = rng.normal(0.0, 1.0, size=(k, n_per_coin)) * self.sigma[:, None]
        logp = self.logp[:, None] + np.cumsum(shocks, axis=1)
        self.logp = logp[:, -1].copy()
        logv = self.logv[:, None] + np.cumsum(rng.normal(0.0, 0.001, size=(k, n_per_coin)), axis=1)
        self.logv = logv[:, -1].copy()
        price = np.exp(logp)
        vol = np.exp(logv) * np.where(rng.random((k, n_per_coin)) < 2e-4, 4.0, 1.0)  # rare spikes
        idx = np.arange(self.i, self.i + n_per_coin, dtype=np.int64)
        self.i += n_per_coin
        t_us = self.base_us + idx[None, :] * (TICK_S * 1_000_000) + np.arange(k, dtype=np.int64)[:, None] * 1_000_000
        coin_k = np.repeat(np.arange(k, dtype=np.int32), n_per_coin)
        df = pl.DataFrame(
            {
                "k": coin_k,
                "last_updated_at": pl.Series(t_us.ravel()).cast(pl.Datetime("us", "UTC")),
                "price_usd": price.ravel(),
                "market_cap_usd": (price * self.supply[:, None]).ravel(),
                "volume_24h_usd": vol.ravel(),
            }
        )
        id_map = dict(enumerate(self.ids))
        sym_map = dict(enumerate(self.symbols))
        return (
            df.with_columns(
                coin_id=pl.col("k").replace_strict(id_map, return_dtype=pl.String),
                symbol=pl.col("k").replace_strict(sym_map, return_dtype=pl.String),
            )
            .drop("k")
            .sort("last_updated_at")
        )


class Loader:
    """Appends a tick frame to raw_ticks as one raw batch (what a pull commits), plus its
    ingest_batches row. Batch ids and offsets are counted here instead of max() scans."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.batch_id = conn.sql("SELECT coalesce(max(batch_id), 0) FROM ingest_batches").fetchall()[0][0]
        self.offset = conn.sql("SELECT coalesce(max(kafka_offset), -1) + 1 FROM raw_ticks").fetchall()[0][0]

    def append(self, ticks: pl.DataFrame) -> int:
        self.batch_id += 1
        n = ticks.height
        ing = ticks["last_updated_at"].max() + timedelta(seconds=1)
        df = ticks.with_columns(
            source=pl.lit("bench"),
            schema_version=pl.lit(1, dtype=pl.Int32),
            change_24h_pct=pl.lit(None, dtype=pl.Float64),
            change_7d_pct=pl.lit(None, dtype=pl.Float64),
            ingestion_timestamp=pl.col("last_updated_at") + pl.duration(seconds=2),
            kafka_topic=pl.lit("crypto_raw"),
            kafka_partition=pl.lit(0, dtype=pl.Int32),
            kafka_offset=pl.int_range(n, dtype=pl.Int64) + self.offset,
            kafka_timestamp=pl.col("last_updated_at") + pl.duration(seconds=2),
            batch_id=pl.lit(self.batch_id, dtype=pl.Int64),
            ingested_at=pl.lit(ing, dtype=pl.Datetime("us", "UTC")),
        )
        self.offset += n
        self.conn.register("bench_raw_in", df.to_arrow())
        try:
            self.conn.execute(f"INSERT INTO raw_ticks SELECT {RAW_COLUMNS} FROM bench_raw_in")
        finally:
            self.conn.unregister("bench_raw_in")
        self.conn.execute(
            "INSERT INTO ingest_batches VALUES (?, 'bench', 'crypto_raw', 'c', ?, ?, 0, 0, ?, ?, now(), now())",
            [self.batch_id, n, n, ticks["last_updated_at"].min(), ticks["last_updated_at"].max()],
        )
        return self.batch_id


# --------------------------------------------------------------------------------------------
# Instrumentation
# --------------------------------------------------------------------------------------------


class StepTimer:
    """Timing wrappers on the names pipeline.run_incremental looks up at call time."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self.enabled = False
        self._orig = {}

    def install(self) -> None:
        def wrap(attr, name_fn):
            orig = getattr(pipeline_mod, attr)
            self._orig[attr] = orig

            def timed(*a, **kw):
                t = time.perf_counter()
                try:
                    return orig(*a, **kw)
                finally:
                    if self.enabled:
                        name = name_fn(*a, **kw)
                        self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - t

            setattr(pipeline_mod, attr, timed)

        wrap("clean_increment", lambda *a, **k: "clean")
        wrap("candles_1m_increment", lambda *a, **k: "candles_1m")
        wrap("features_increment", lambda *a, **k: "features")
        wrap("hourly_increment", lambda conn, asset, **k: "hourly_1h" if asset == "ohlcv_1h" else "hourly_stats")
        wrap("correlations_refresh", lambda *a, **k: "correlations")
        wrap("anomalies_increment", lambda *a, **k: "anomalies")

    def uninstall(self) -> None:
        for attr, orig in self._orig.items():
            setattr(pipeline_mod, attr, orig)


def _norm_sql(sql: str) -> str:
    """Whitespace collapsed; numbers and quoted paths replaced so both warehouses' statements match."""
    sql = re.sub(r"\[('[^']*'(, )?)+\]", "[<files>]", sql)
    sql = re.sub(r"'/[^']*'", "'<path>'", sql)
    sql = re.sub(r"\b\d+\b", "N", sql)
    return re.sub(r"\s+", " ", sql).strip()


class SqlProfiler:
    """Connection proxy timing every statement run by the transforms (execute(), and the
    fetch of sql() relations: pl/fetchall/arrow). Keyed by (calling function, SQL text)."""

    def __init__(self, conn) -> None:
        self._conn = conn
        self.times: dict[tuple[str, str], float] = defaultdict(float)
        self.calls = 0

    def _key(self, sql: str) -> tuple[str, str]:
        f = sys._getframe(2)
        names = []
        while f is not None and len(names) < 3:
            if f.f_code.co_filename.find("crypto_assets") >= 0 and "bench" not in f.f_code.co_filename:
                names.append(f.f_code.co_name)
            f = f.f_back
        caller = names[0] if names else "?"
        if caller in ("get_state", "set_state", "first", "scalar", "mark_dirty") and len(names) > 1:
            caller = f"{names[1]}>{caller}" if caller in ("mark_dirty",) else names[1]
        return caller, _norm_sql(sql)

    def execute(self, sql, *a, **kw):
        key = self._key(sql)
        self.calls += 1
        t = time.perf_counter()
        try:
            return self._conn.execute(sql, *a, **kw)
        finally:
            self.times[key] += time.perf_counter() - t

    def sql(self, sql, *a, **kw):
        key = self._key(sql)
        self.calls += 1
        t = time.perf_counter()
        rel = self._conn.sql(sql, *a, **kw)
        self.times[key] += time.perf_counter() - t
        return _TimedRel(rel, self, key)

    def __getattr__(self, name):
        return getattr(self._conn, name)


class _TimedRel:
    def __init__(self, rel, prof: SqlProfiler, key) -> None:
        self._rel, self._prof, self._key = rel, prof, key

    def _timed(self, meth, *a, **kw):
        t = time.perf_counter()
        try:
            return getattr(self._rel, meth)(*a, **kw)
        finally:
            self._prof.times[self._key] += time.perf_counter() - t

    def pl(self, *a, **kw):
        return self._timed("pl", *a, **kw)

    def fetchall(self, *a, **kw):
        return self._timed("fetchall", *a, **kw)

    def arrow(self, *a, **kw):
        return self._timed("arrow", *a, **kw)

    def __getattr__(self, name):
        return getattr(self._rel, name)


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _dir_size(p: Path) -> int:
    return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


class Warehouse:
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
            f"(clean rows out {cr.rows_out:,}); RSS {(_status_kb('VmRSS') or 0) / 1024:,.0f} MB, "
            f"peak so far {(_status_kb('VmHWM') or 0) / 1024:,.0f} MB",
            flush=True,
        )
    t = time.perf_counter()
    _, parts = export_all(conn, wh)
    wh.setup_times["parquet export (all)"] = time.perf_counter() - t
    print(f"    [{wh.label}] export of all {parts} partitions {wh.setup_times['parquet export (all)']:.1f} s; "
          f"peak RSS so far {(_status_kb('VmHWM') or 0) / 1024:,.0f} MB", flush=True)
    wh.setup_parts = parts
    t = time.perf_counter()
    conn.execute("CHECKPOINT")
    wh.setup_times["checkpoint"] = time.perf_counter() - t
    wh.setup_times["total"] = time.perf_counter() - t_all
    wh.setup_batches = nb
    dirty = conn.sql("SELECT count(*) FROM lake_pending").fetchall()[0][0]
    if dirty:
        raise SystemExit(f"[{wh.label}] {dirty} partitions still dirty after the setup export")


def increment(conn, wh: Warehouse, loader: "Loader", n_new: int, rep: int, timer: StepTimer) -> None:
    """One measured increment: append n_new ticks as one raw batch, run_incremental, export, checkpoint."""
    ticks = wh.gen.take(max(1, n_new // len(wh.coins)))
    t = time.perf_counter()
    loader.append(ticks)
    wh.inserts.append(time.perf_counter() - t)
    gc.collect()
    timer.times = {}
    timer.enabled = True
    c = time.process_time()
    t = time.perf_counter()
    res = run_incremental(conn, wh.coins)
    total = time.perf_counter() - t
    cpu = time.process_time() - c
    timer.enabled = False
    step = dict(timer.times)
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


def profile_sql(conn, wh: Warehouse, loader: "Loader", n_new: int) -> None:
    """One extra increment through the SQL-timing proxy (after the measured ones); per-statement
    times are appended to wh.sql_profile so medians over several such increments can be shown."""
    loader.append(wh.gen.take(max(1, n_new // len(wh.coins))))
    prof = SqlProfiler(conn)
    t = time.perf_counter()
    run_incremental(prof, wh.coins)
    total = time.perf_counter() - t
    ex_prof = SqlProfiler(conn)
    t = time.perf_counter()
    for dataset, table, tcol, order in EXPORTS:
        export_dirty(ex_prof, wh.lh.lake_path, dataset, table, tcol, order)
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


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def med(xs) -> float:
    return statistics.median(xs) if xs else float("nan")


def ms(x: float) -> str:
    return f"{x * 1000:9.1f}"


def report(small: Warehouse, large: Warehouse, args, n_new_per_rep: int, t_start: float) -> bool:
    print()
    print("=" * 100)
    print(f"INCREMENTAL BENCHMARK  (duckdb threads=2, memory_limit=4GB via LakehouseResource; "
          f"{len(DEFAULT_COIN_IDS)} coins, 1 tick / {TICK_S} s / coin)")
    print("=" * 100)
    print("\nSetup (not measured):")
    for wh in (small, large):
        st = wh.setup_times
        span_days = wh.per_coin * TICK_S / 86400
        print(f"  {wh.label:>5}: {wh.history:>10,} ticks of history ({span_days:.1f} days), {wh.setup_batches} raw batches; "
              f"total {st['total']:.1f} s = generate {st['generate']:.1f} + insert {st['insert raw']:.1f} + "
              f"run_incremental {st['run_incremental']:.1f} + export {st['parquet export (all)']:.1f} "
              f"({wh.setup_parts} partitions) + checkpoint {st['checkpoint']:.1f}; "
              f"db {wh.db_size / 2**20:,.0f} MB, lake {wh.lake_size / 2**20:,.0f} MB")

    print(f"\nOne increment = {n_new_per_rep:,} new ticks ({n_new_per_rep // len(DEFAULT_COIN_IDS)} per coin) in one raw batch; "
          f"median of {args.reps} (ms):")
    hdr = f"  {'step':<34}{'small':>10}{'large':>10}{'large/small':>13}"
    print(hdr)
    print("  " + "-" * (len(hdr) - 2))
    rows = []
    for s in STEPS:
        rows.append((f"run_incremental: {s}", med([r.get(s, 0.0) for r in small.runs]), med([r.get(s, 0.0) for r in large.runs])))
    rows.append(("run_incremental: hourly (1h+stats)",
                 med([r.get("hourly_1h", 0) + r.get("hourly_stats", 0) for r in small.runs]),
                 med([r.get("hourly_1h", 0) + r.get("hourly_stats", 0) for r in large.runs])))
    rows.append(("RUN_INCREMENTAL TOTAL", med([r["total"] for r in small.runs]), med([r["total"] for r in large.runs])))
    for name, a, b in rows:
        print(f"  {name:<34}{ms(a)}{ms(b)}{b / a if a > 0 else float('nan'):>12.2f}x")
    print("  " + "-" * (len(hdr) - 2))
    for dataset, *_ in EXPORTS:
        a, b = med([e[dataset] for e in small.exports]), med([e[dataset] for e in large.exports])
        print(f"  {'export ' + dataset:<34}{ms(a)}{ms(b)}{b / a if a > 0 else float('nan'):>12.2f}x")
    ea, eb = med([e["total"] for e in small.exports]), med([e["total"] for e in large.exports])
    print(f"  {'PARQUET EXPORT TOTAL':<34}{ms(ea)}{ms(eb)}{eb / ea:>12.2f}x"
          f"   (partitions per increment: {small.export_parts[0]} / {large.export_parts[0]})")
    ra, rb = med([r["total"] for r in small.runs]), med([r["total"] for r in large.runs])
    ta = med([r["total"] + e["total"] for r, e in zip(small.runs, small.exports)])
    tb = med([r["total"] + e["total"] for r, e in zip(large.runs, large.exports)])
    print(f"  {'RUN + EXPORT':<34}{ms(ta)}{ms(tb)}{tb / ta:>12.2f}x")
    print("  " + "-" * (len(hdr) - 2))
    ca_run, cb_run = med([r["cpu"] for r in small.runs]), med([r["cpu"] for r in large.runs])
    ca_ex, cb_ex = med([e["cpu"] for e in small.exports]), med([e["cpu"] for e in large.exports])
    print(f"  {'(info) run_incremental CPU time':<34}{ms(ca_run)}{ms(cb_run)}{cb_run / ca_run:>12.2f}x"
          "   (process CPU, all threads: less sensitive to other load)")
    print(f"  {'(info) export CPU time':<34}{ms(ca_ex)}{ms(cb_ex)}{cb_ex / ca_ex:>12.2f}x")
    ia, ib = med(small.inserts), med(large.inserts)
    ca, cb = med(small.checkpoints), med(large.checkpoints)
    print(f"  {'(info) raw batch insert':<34}{ms(ia)}{ms(ib)}{ib / ia:>12.2f}x")
    print(f"  {'(info) CHECKPOINT after increment':<34}{ms(ca)}{ms(cb)}{cb / ca:>12.2f}x")
    print("\n  all reps, in run order (run_incremental / export, ms):")
    for wh in (small, large):
        print(f"    {wh.label:>5}: " + ", ".join(f"{r['total'] * 1000:.1f} / {e['total'] * 1000:.1f}"
                                           for r, e in zip(wh.runs, wh.exports)))
    print(f"  load average after the measured increments: {' '.join(f'{x:.2f}' for x in args.load_after)} "
          f"({os.cpu_count()} CPUs; anything else running on the machine shows up as noise)")

    ratio = rb / ra
    ok = ratio <= TARGET_RATIO
    ratio_all = tb / ta
    print(f"\nTarget: run_incremental total large/small = {ratio:.2f} (<= {TARGET_RATIO})  "
          f"{'PASS' if ok else 'FAIL'}")
    print(f"        (run_incremental + Parquet export: {ratio_all:.2f}  "
          f"{'PASS' if ratio_all <= TARGET_RATIO else 'FAIL'} against the same bound, informational)")

    print("\nNaive baseline: full recomputation of market_features (delete + hwm reset + features_increment):")
    for wh in (small, large):
        b = wh.baseline
        if not b:
            continue
        inc = med([r.get("features", 0.0) for r in wh.runs])
        print(f"  {wh.label:>5}: {b['rows']:,} rows: full {b['features_full'] * 1000:,.1f} ms "
              f"(+ delete/reset {b['delete_reset'] * 1000:,.1f} ms) vs incremental features step {inc * 1000:,.1f} ms "
              f"-> {b['features_full'] / inc:,.0f}x; full vs incremental table: "
              f"{'same rows' if b['same_keys'] else 'ROWS DIFFER'}, worst column {b['worst'][0]} "
              f"(max abs diff {b['worst'][1][0]:.1e}, max rel diff {b['worst'][1][1]:.1e}); "
              f"{b['over_tol']} values outside rel/abs tol 1e-9")
        if args.verbose_diff:
            for c, (d, r, o) in b["per_col"].items():
                print(f"           {c:<18} max abs {d:.2e}  max rel {r:.2e}  over tol {o}")

    if small.sql_profile and large.sql_profile:
        n = len(large.sql_profile["run_total"])
        print(f"\nSQL profile: {n} extra increments per warehouse through a timing proxy (median ms per increment).")
        for part in ("run", "export"):
            ps, pg = small.sql_profile[part], large.sql_profile[part]
            by_caller: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
            for k, v in ps.items():
                by_caller[k[0]][0] += med(v)
            for k, v in pg.items():
                by_caller[k[0]][1] += med(v)
            print(f"  [{part}] wall small {med(small.sql_profile[part + '_total']) * 1000:.1f}, "
                  f"large {med(large.sql_profile[part + '_total']) * 1000:.1f}; SQL time "
                  f"{sum(v[0] for v in by_caller.values()) * 1000:.1f} / {sum(v[1] for v in by_caller.values()) * 1000:.1f}"
                  f" in {med(small.sql_profile[part + '_calls']):.0f} / {med(large.sql_profile[part + '_calls']):.0f} statements; "
                  "by calling function (small, large):")
            for caller, (a, b) in sorted(by_caller.items(), key=lambda kv: -kv[1][1]):
                print(f"      {a * 1000:8.1f} {b * 1000:8.1f}  {caller}")
            keys = set(ps) | set(pg)
            diffs = sorted(keys, key=lambda k: med(pg.get(k, [0.0])) - med(ps.get(k, [0.0])), reverse=True)
            print(f"    statements whose time grows most with history (small, large):")
            for k in diffs[: args.profile_top]:
                caller, sql = k
                print(f"      {med(ps.get(k, [0.0])) * 1000:8.1f} {med(pg.get(k, [0.0])) * 1000:8.1f}  {caller}: {sql[:140]}")

    rusage_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ph = {k: (f"{v / 1024:,.0f} MB" if v else "n/a") for k, v in args.phase_hwm.items()}
    print(f"\nPeak RSS: whole process {rusage_kb / 1024:,.0f} MB (ru_maxrss); per phase (VmHWM reset at each phase start): "
          f"setup {ph.get('setup')}, measured increments {ph.get('measure')}, baseline {ph.get('baseline')}")
    print(f"Wall time of the benchmark: {time.perf_counter() - t_start:.1f} s")
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    timer = StepTimer()
    errors: list[str] = []
    try:
        phase_hwm: dict[str, int | None] = {}
        _reset_hwm()
        for wh in (small, large):
            print(f"setup {wh.label}: {wh.history:,} ticks in batches of {args.batch:,}", flush=True)
            with wh.lh.connect() as conn:
                setup(conn, wh, args.batch)
            gc.collect()
        phase_hwm["setup"] = _status_kb("VmHWM")
        timer.install()
        print(f"measure: {args.reps} x {n_new_per_rep:,} new ticks per warehouse, small and large interleaved "
              f"(load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs)", flush=True)
        with contextlib.ExitStack() as stack:
            conns = {wh.label: stack.enter_context(wh.lh.connect()) for wh in (small, large)}
            loaders = {label: Loader(c) for label, c in conns.items()}
            for c in conns.values():  # same cache state for both: one read of the tables the increment touches
                for t in ("raw_ticks", "clean_ticks", "market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats"):
                    c.sql(f"SELECT count(*) FROM {t}").fetchall()
            _reset_hwm()
            for rep in range(args.reps):
                for wh in (small, large):
                    increment(conns[wh.label], wh, loaders[wh.label], n_new_per_rep, rep, timer)
            phase_hwm["measure"] = _status_kb("VmHWM")
            load_after = os.getloadavg()
            for wh in (small, large):
                errors.extend(check_counts(conns[wh.label], wh, n_new_per_rep * args.reps))
            timer.uninstall()
            if args.profile_sql:
                print(f"profile: {args.reps} more increments per warehouse through the SQL-timing proxy", flush=True)
                for _ in range(args.reps):
                    for wh in (small, large):
                        profile_sql(conns[wh.label], wh, loaders[wh.label], n_new_per_rep)
        _reset_hwm()
        for wh in (small, large):
            if wh is large and args.no_large_baseline:
                continue
            print(f"baseline {wh.label}: full recomputation of market_features", flush=True)
            with wh.lh.connect() as conn:
                naive_baseline(conn, wh)
            b = wh.baseline
            if not b["same_keys"] or b["over_tol"]:
                errors.append(f"[{wh.label}] full recomputation differs from the incremental market_features "
                              f"(same rows: {b['same_keys']}, {b['over_tol']} values outside tolerance; "
                              f"worst {b['worst'][0]}: {b['worst'][1]})")
        phase_hwm["baseline"] = _status_kb("VmHWM")
        args.phase_hwm = phase_hwm
        args.load_after = load_after
        for wh in (small, large):
            wh.db_size = wh.lh.duckdb_path.stat().st_size
            wh.lake_size = _dir_size(wh.lh.lake_path)
        ok = report(small, large, args, n_new_per_rep, t_start)
    finally:
        timer.uninstall()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if errors:
        print("\nCORRECTNESS ERRORS:")
        for e in errors:
            print("  " + e)
        return 2
    return 1 if (args.strict and not ok) else 0


if __name__ == "__main__":
    sys.exit(main())
