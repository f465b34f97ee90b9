"""The set-up of bench/training.py (timed, outside the targets): simulator paths appended to
raw_ticks in raw batches with run_incremental after each; the Spark session from the package's
spark_config; the driver JVM's pid and -Xmx; CPU time of this process and its children; Spark
jobs and tasks per job group."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np
import polars as pl

from bench._common import mb_kb, status_kb
from bench._warehouse import Loader
from crypto_assets.kafka.tick_contract import DEFAULT_COIN_IDS, coins_for
from crypto_assets.producers.simulator.prices import MarketSimulator
from crypto_assets.resources import LakehouseResource
from crypto_assets.settings import spark_config
from crypto_assets.transforms.chain import run_incremental

END = datetime(2026, 11, 1, tzinfo=UTC)


def tick_frame(batch, ids: list[str], symbols: list[str]) -> pl.DataFrame:
    """A simulator PathBatch (n steps x c coins) as contract ticks, in event-time order."""
    n, c = batch.price.shape
    t_us = np.round(batch.times * 1e6).astype(np.int64)

    def col(a: np.ndarray) -> pl.Series:
        return pl.Series(a.ravel()).fill_nan(None)

    return pl.DataFrame(
        {
            "coin_id": np.tile(np.array(ids, dtype=object), n),
            "symbol": np.tile(np.array(symbols, dtype=object), n),
            "last_updated_at": pl.Series(np.repeat(t_us, c)).cast(pl.Datetime("us", "UTC")),
            "price_usd": batch.price.ravel(),
            "market_cap_usd": batch.market_cap.ravel(),
            "volume_24h_usd": batch.volume_24h.ravel(),
            "change_24h_pct": col(batch.change_24h),
            "change_7d_pct": col(batch.change_7d),
        },
        schema_overrides={"coin_id": pl.String, "symbol": pl.String},
    )


def build_warehouse(lh: LakehouseResource, rows: int, step_s: float, batch_rows: int, seed: int) -> dict:
    coins = coins_for(list(DEFAULT_COIN_IDS))
    ids, symbols = [c.coin_id for c in coins], [c.symbol for c in coins]
    n_steps = max(1, rows // len(coins))
    start = END.timestamp() - n_steps * step_s
    per_batch = max(1, batch_rows // len(coins))
    sim = MarketSimulator(coins, seed)
    times = defaultdict(float)
    t_all = time.perf_counter()
    with lh.connect() as conn:
        loader = Loader(conn)
        for nb, k0 in enumerate(range(0, n_steps, per_batch), 1):
            k1 = min(n_steps, k0 + per_batch)
            t = time.perf_counter()
            ticks = tick_frame(sim.advance(start + step_s * np.arange(k0, k1), step_s), ids, symbols)
            times["generate (simulator)"] += time.perf_counter() - t
            t = time.perf_counter()
            loader.append(ticks)
            times["insert raw"] += time.perf_counter() - t
            t = time.perf_counter()
            res = run_incremental(conn, ids)
            dt = time.perf_counter() - t
            times["run_incremental"] += dt
            cr = res["clean_ticks"]
            if cr.quarantined or cr.rows_out != ticks.height:
                raise SystemExit(f"setup batch {nb}: clean wrote {cr.rows_out} of {ticks.height} "
                                 f"(quarantined {cr.quarantined}: {cr.reasons})")
            print(f"    batch {nb}: {ticks.height:,} ticks, run_incremental {dt:6.1f} s; "
                  f"RSS {mb_kb(status_kb('VmRSS'))}, peak so far {mb_kb(status_kb('VmHWM'))}", flush=True)
            del ticks
        t = time.perf_counter()
        conn.execute("CHECKPOINT")
        times["checkpoint"] = time.perf_counter() - t
        counts = dict(conn.sql(
            "SELECT 'market_features', count(*) FROM market_features UNION ALL "
            "SELECT 'ohlcv_1m', count(*) FROM ohlcv_1m UNION ALL SELECT 'anomalies', count(*) FROM anomalies UNION ALL "
            "SELECT 'anomalous rows', count(*) FROM (SELECT DISTINCT coin_id, event_time FROM anomalies)"
        ).fetchall())
    times["total"] = time.perf_counter() - t_all
    return {"times": dict(times), "counts": counts, "n_steps": n_steps, "coins": ids,
            "span_days": n_steps * step_s / 86400, "batches": nb}


def start_spark():
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for k, v in spark_config({}).items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def jvm_pid() -> int | None:
    """The Spark driver JVM: a java child (grandchild) of this process."""
    try:
        import psutil

        for p in psutil.Process().children(recursive=True):
            with contextlib.suppress(Exception):
                if "java" in p.name() or any("java" in a for a in p.cmdline()[:1]):
                    return p.pid
    except Exception:  # noqa: BLE001
        pass
    return None


def jvm_xmx(pid: int | None) -> str:
    if pid is None:
        return "?"
    try:
        import psutil

        for a in psutil.Process(pid).cmdline():
            if a.startswith("-Xmx"):
                return a[4:]
    except Exception:  # noqa: BLE001
        pass
    return "?"


class CpuMeter:
    """CPU seconds (user + system) of this process and all its descendants (the Spark driver
    JVM, PySpark's Python workers): less sensitive to other load on the machine than wall time."""

    def __init__(self) -> None:
        try:
            import psutil

            self._psutil = psutil
        except ImportError:
            self._psutil = None

    def read(self) -> tuple[float, float]:
        own = time.process_time()
        kids = 0.0
        if self._psutil is not None:
            for p in self._psutil.Process().children(recursive=True):
                with contextlib.suppress(Exception):
                    ct = p.cpu_times()
                    kids += ct.user + ct.system
        return own, kids


def spark_jobs(spark, group: str) -> tuple[int, int]:
    st = spark.sparkContext.statusTracker()
    jobs = st.getJobIdsForGroup(group)
    tasks = 0
    for j in jobs:
        info = st.getJobInfo(j)
        for s in (info.stageIds if info else []):
            si = st.getStageInfo(s)
            tasks += si.numTasks if si else 0
    return len(jobs), tasks
