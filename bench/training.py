"""Training + batch-inference benchmark: training set, four Spark MLlib models, MLflow, scoring.

    .venv/bin/python bench/training.py [--rows 1000000] [--step-s 60] [--batch 500000]
                                       [--asset-path-rows 200000] [--keep] [--strict]

A benchmark, not a test: it prints numbers and PASS/FAIL against the targets; it exits non-zero
only when a correctness check fails (numpy and Spark disagree on a linear model), or with
--strict when a target is missed.

SETUP (timed and printed, not part of any target). A temporary CRYPTO_HOME with the 10 default
coins, opened through the package's LakehouseResource (DuckDB 2 threads, 4 GB). Prices and
volumes come from the simulator's own vectorised path generator
(`crypto_assets.producers.simulator.MarketSimulator.advance`, the engine behind `simulate_paths` /
`generate_ticks`, without the per-tick dicts): market factor, regime drifts and ~20 min
momentum, so the direction of the next 15 minutes is partly learnable; jumps and volume spikes,
so anomalies fire. --rows / 10 time steps per coin, every --step-s seconds (default 60 s:
1M rows = 100,000 minutes = 69.4 days, so 1h/4h/24h forward labels exist for all but the last
day), ending at END (2026-11-01 00:00 UTC). The ticks are appended to raw_ticks in raw batches of
--batch rows (a registered Arrow table plus its ingest_batches row, as bench/incremental.py's
Loader does), with `run_incremental(conn, coins)` after every batch; then a CHECKPOINT.

MEASURED (the target is (a) + (b) + (c) <= 120 s; Spark session start-up is reported apart):
  (a) `build_training_set(conn, <tmp>/lake/training)` on a fresh LakehouseResource connection
      (the training_set asset's call), with a per-statement breakdown (DuckDB connection proxy).
  (b) on a local[2] SparkSession built from `crypto_assets.settings.spark_config({})`, reading
      the Parquet training set as the model assets do: `train_trend` (the asset's defaults:
      15 min horizon, 50 iterations, reg 0.001), `train_anomaly` (100 trees, depth 10, 20
      negatives per positive), `train_price` for 1h/4h/24h (each horizon that has enough rows),
      `train_clusters` (k=3).
  (c) per model, what the asset does after training before it returns: `load_champion` (a
      registry lookup; there is no champion in a fresh store), `data_window` (min/max/count
      of the training set: a Spark job at first, now the Parquet event_time column via pyarrow),
      the MLflow input dataset (`crypto_assets.ml.lineage.training_dataset`) and
      `crypto_assets.ml.registry.log_model` (params, metrics, lineage tags, input dataset, JSON
      artifacts, `mlflow.spark.log_model` + registration) into a temporary sqlite MLflow
      (`MlflowResource(home=<tmp>)`). The champion gates (`gate_and_promote`) run after that and
      are timed as information, outside the target.
  Timing wrappers (installed from the outside, the package is not modified) attribute the time
  of (b) and (c) to estimator fits (per stage: Pipeline > StandardScaler > LogisticRegression),
  evaluators, DataFrame actions (labelled file:line of the caller in crypto_assets) and MLflow
  calls; Spark jobs and tasks per model come from the status tracker (one job group per model).

INFERENCE (target >= 100,000 predictions/s), on the N training-set rows (all of them by
default), features as the predictions asset sees them:
  (i)  numpy `score_linear` with the exported `linear_coefficients` of the trend and price
       models, from a polars frame already in memory (median of 3 runs);
  (ii) Spark `model.transform` of the same linear models, on the Parquet training set: as a JVM
       only pass (transform + `noop` sink) and collected to the driver (one double column,
       Arrow); the collected values are compared with numpy: max abs diff must be <= 1e-9;
  (iii) the RandomForest anomaly model via Spark, the same two ways, plus the predictions
       asset's first scoring code (polars -> pandas -> `spark.createDataFrame` -> transform ->
       `toPandas` of the probability vectors -> per-row Python) and its current one (Arrow both
       ways and p[1] as one double column, `vector_to_array`, as defs/predictions.py does now),
       on --asset-path-rows rows; the two must give identical values.
  The feature extraction of a prediction run (`feature_rows`, the DuckDB query of the
  predictions asset) over the same N rows is timed as information.

Also printed: the model metrics next to their baselines (so the timings are for models that
learn something), peak RSS of the Python process (ru_maxrss, and VmHWM per phase) and of the
Spark driver JVM (VmHWM of the java child process).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
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

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from crypto_assets.kafka.tick_contract import DEFAULT_COIN_IDS, coins_for  # noqa: E402
from crypto_assets.ml.lineage import data_window, training_dataset  # noqa: E402
from crypto_assets.ml.scoring import score_linear  # noqa: E402
from crypto_assets.ml.training_set import FEATURES, REGRESSION_HORIZONS, build_training_set, feature_rows  # noqa: E402
from crypto_assets.resources import LakehouseResource  # noqa: E402
from crypto_assets.resources.mlflow import MlflowResource  # noqa: E402
from crypto_assets.settings import spark_config  # noqa: E402
from crypto_assets.producers.simulator import MarketSimulator  # noqa: E402
from crypto_assets.warehouse.watermarks import get_state  # noqa: E402
from crypto_assets.transforms.chain import run_incremental  # noqa: E402

END = datetime(2026, 11, 1, tzinfo=timezone.utc)
TARGET_TRAIN_S = 120.0
TARGET_RATE = 100_000.0
AGREE_TOL = 1e-9

RAW_COLUMNS = (
    "coin_id, symbol, source, schema_version, price_usd, market_cap_usd, volume_24h_usd, change_24h_pct, "
    "change_7d_pct, last_updated_at, ingestion_timestamp, kafka_topic, kafka_partition, kafka_offset, "
    "kafka_timestamp, batch_id, ingested_at"
)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _status_kb(field: str, pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_hwm(pid: int | str = "self") -> bool:
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _mb(kb: int | None) -> str:
    return f"{kb / 1024:,.0f} MB" if kb else "n/a"


def _jvm_pid() -> int | None:
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


def _jvm_xmx(pid: int | None) -> str:
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


def rate(n: int, s: float) -> str:
    return f"{n / s:>12,.0f}/s" if s > 0 else "         inf/s"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# --------------------------------------------------------------------------------------------
# setup: simulator paths -> raw_ticks -> run_incremental
# --------------------------------------------------------------------------------------------


class Loader:
    """Appends a tick frame to raw_ticks as one raw batch, plus its ingest_batches row (the
    same as bench/incremental.py's Loader; batch ids and offsets are counted here)."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.batch_id = conn.sql("SELECT coalesce(max(batch_id), 0) FROM ingest_batches").fetchall()[0][0]
        self.offset = conn.sql("SELECT coalesce(max(kafka_offset), -1) + 1 FROM raw_ticks").fetchall()[0][0]

    def append(self, ticks: pl.DataFrame) -> None:
        self.batch_id += 1
        n = ticks.height
        ing = ticks["last_updated_at"].max() + timedelta(seconds=1)
        df = ticks.with_columns(
            source=pl.lit("bench"),
            schema_version=pl.lit(1, dtype=pl.Int32),
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
                  f"RSS {_mb(_status_kb('VmRSS'))}, peak so far {_mb(_status_kb('VmHWM'))}", flush=True)
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


# --------------------------------------------------------------------------------------------
# instrumentation
# --------------------------------------------------------------------------------------------


class DuckTimer:
    """Connection proxy timing execute() and the fetch of sql() relations."""

    def __init__(self, conn) -> None:
        self._conn = conn
        self.times: list[tuple[str, float]] = []

    def _label(self, sql: str) -> str:
        s = " ".join(sql.split())
        if "CREATE OR REPLACE TEMP TABLE training_rows" in s:
            return "CREATE TEMP TABLE training_rows AS SELECT ... FROM (feature_sql) ORDER BY event_time, coin_id"
        if s.startswith("COPY"):
            return "COPY training_rows TO parquet (zstd)"
        if "count(label_up)" in s:
            return "stats query"
        if "GROUP BY 1" in s:
            return "rows per coin"
        return s[:60]

    def execute(self, sql, *a, **kw):
        t = time.perf_counter()
        try:
            return self._conn.execute(sql, *a, **kw)
        finally:
            self.times.append((self._label(sql), time.perf_counter() - t))

    def sql(self, sql, *a, **kw):
        t = time.perf_counter()
        rel = self._conn.sql(sql, *a, **kw)
        self.times.append((self._label(sql) + " (plan)", time.perf_counter() - t))
        timer, label = self, self._label(sql)

        class _Rel:
            def __getattr__(self, name):
                attr = getattr(rel, name)
                if name not in ("fetchall", "pl", "arrow", "fetchone", "df"):
                    return attr

                def timed(*a2, **kw2):
                    t2 = time.perf_counter()
                    try:
                        return attr(*a2, **kw2)
                    finally:
                        timer.times.append((label, time.perf_counter() - t2))

                return timed

        return _Rel()

    def __getattr__(self, name):
        return getattr(self._conn, name)


class Profiler:
    """Wall time per (phase, call path). Wrapped from the outside: Estimator.fit (every stage,
    nested under Pipeline.fit), Evaluator.evaluate, the DataFrame actions the training code calls
    (labelled by the calling crypto_assets file:line), and MLflow's logging calls."""

    def __init__(self) -> None:
        self.times: dict[str, dict[tuple[str, ...], float]] = defaultdict(lambda: defaultdict(float))
        self.calls: dict[str, dict[tuple[str, ...], int]] = defaultdict(lambda: defaultdict(int))
        self.phase: str | None = None
        self.stack: list[str] = []
        self._orig: list[tuple[object, str, object]] = []

    @contextlib.contextmanager
    def in_phase(self, name: str):
        prev, self.phase = self.phase, name
        try:
            yield
        finally:
            self.phase = prev

    @staticmethod
    def _caller() -> str:
        f = sys._getframe(2)
        while f is not None:
            fn = f.f_code.co_filename
            if "crypto_assets" in fn and "pyspark" not in fn and "mlflow" not in fn:
                return f"{Path(fn).stem}.{f.f_code.co_name}:{f.f_lineno}"
            f = f.f_back
        return "?"

    def _wrap(self, owner, attr: str, label, action: bool = False) -> None:
        orig = getattr(owner, attr)
        prof = self

        def timed(*a, **kw):
            if prof.phase is None or (action and prof.stack and prof.stack[-1].startswith("action ")):
                return orig(*a, **kw)
            name = label(*a, **kw)
            prof.stack.append(name)
            key = tuple(prof.stack)
            t = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:
                prof.times[prof.phase][key] += time.perf_counter() - t
                prof.calls[prof.phase][key] += 1
                prof.stack.pop()

        timed.__wrapped__ = orig
        self._orig.append((owner, attr, orig))
        setattr(owner, attr, timed)

    def install(self) -> None:
        from pyspark.ml.base import Estimator
        from pyspark.ml.evaluation import Evaluator
        try:  # pyspark >= 4: the classic (non-Connect) implementation overrides the actions
            from pyspark.sql.classic.dataframe import DataFrame
        except ImportError:
            from pyspark.sql import DataFrame

        self._wrap(Estimator, "fit", lambda self_, *a, **k: f"fit {type(self_).__name__}")
        self._wrap(Evaluator, "evaluate",
                   lambda self_, *a, **k: f"evaluate {type(self_).__name__}({self_.getOrDefault('metricName')})"
                   if self_.hasParam("metricName") else f"evaluate {type(self_).__name__}")
        for meth in ("first", "count", "collect", "toPandas"):
            self._wrap(DataFrame, meth, lambda *a, _m=meth, **k: f"action {_m} @ {Profiler._caller()}", action=True)
        import mlflow
        import mlflow.data
        import mlflow.spark

        for mod, fn in ((mlflow, "log_params"), (mlflow, "log_metrics"), (mlflow, "set_tags"), (mlflow, "log_input"),
                        (mlflow, "log_artifact"), (mlflow, "start_run"), (mlflow.spark, "log_model"),
                        (mlflow.data, "from_spark")):
            self._wrap(mod, fn, lambda *a, _n=f"mlflow.{mod.__name__.split('.')[-1]}.{fn}" if mod is not mlflow
                       else f"mlflow.{fn}", **k: _n)

    def uninstall(self) -> None:
        for owner, attr, orig in reversed(self._orig):
            setattr(owner, attr, orig)
        self._orig.clear()

    def report(self, phase: str, total: float, indent: str = "      ", top: int = 14) -> None:
        times, calls = self.times.get(phase, {}), self.calls.get(phase, {})
        tops = sorted((k for k in times if len(k) == 1), key=lambda k: -times[k])
        for k in tops[:top]:
            n = calls[k]
            print(f"{indent}{times[k]:7.2f} s  {k[0]}" + (f"  (x{n})" if n > 1 else ""))
            kids = sorted((c for c in times if len(c) == 2 and c[0] == k[0]), key=lambda c: -times[c])
            for c in kids:
                n = calls[c]
                print(f"{indent}{times[c]:7.2f} s    > {c[1]}" + (f"  (x{n})" if n > 1 else ""))
        rest = sum(times[k] for k in tops[top:])
        if rest:
            print(f"{indent}{rest:7.2f} s  ({len(tops) - top} more)")
        tracked = sum(times[k] for k in tops)
        print(f"{indent}{total - tracked:7.2f} s  untracked (lazy plan building, sampleBy, cache/unpersist, py4j, Python)")


def _spark_jobs(spark, group: str) -> tuple[int, int]:
    st = spark.sparkContext.statusTracker()
    jobs = st.getJobIdsForGroup(group)
    tasks = 0
    for j in jobs:
        info = st.getJobInfo(j)
        for s in (info.stageIds if info else []):
            si = st.getStageInfo(s)
            tasks += si.numTasks if si else 0
    return len(jobs), tasks


# --------------------------------------------------------------------------------------------
# the measured phases
# --------------------------------------------------------------------------------------------


def start_spark():
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for k, v in spark_config({}).items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _with_baseline(metrics, baseline, higher_better):
    from crypto_assets.ml.model_specs import with_baseline as wb

    return wb(metrics, baseline, higher_better)


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


def _model_specs() -> list[tuple[str, str, object]]:
    """(asset, model, train function) in the order the training job runs them."""
    from crypto_assets.ml import train as T

    feats = ",".join(FEATURES)
    specs = [("trend_model", "trend", lambda df: T.train_trend(df, FEATURES, 15, {
                  "max_iter": 50, "reg_param": 0.001, "train_fraction": 0.8, "horizon_minutes": 15, "features": feats})),
             ("anomaly_model", "anomaly", lambda df: T.train_anomaly(df, FEATURES, {
                  "num_trees": 100, "max_depth": 10, "train_fraction": 0.8, "negatives_per_positive": 20,
                  "features": feats}))]
    for h, m in REGRESSION_HORIZONS.items():
        specs.append(("price_model", f"price_{h}", lambda df, _h=h, _m=m: T.train_price(
            df, FEATURES, _h, _m, {"horizon": _h, "reg_param": 0.01, "train_fraction": 0.8, "min_train_rows": 200,
                                   "features": feats})))
    specs.append(("coin_clusters", "clusters", lambda df: T.train_clusters(df, {"k": 3, "seed": 7})))
    return specs


def run_models(spark, mlf: MlflowResource, path: str, prof: Profiler, timings: dict) -> tuple[dict, dict]:
    """(b) and (c), model by model as the assets do it (one Spark session, in-process executor
    as training_job: train, then champion lookup / data window / dataset / log_model), timed apart."""
    cpu = CpuMeter()
    trained: dict = {}
    logged: dict = {}
    run_id = "bench-" + datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
    from crypto_assets.ml import train as T

    shared: dict = {}  # the price_model asset caches one price_frame for all its horizons
    for asset, name, fn in _model_specs():
        if not name.startswith("price_") and "price" in shared:
            shared.pop("price").unpersist()  # the asset's `finally`, after its last horizon
        # ---- (b) training
        spark.sparkContext.setJobGroup(f"train_{name}", name)
        gc.collect()
        c0 = cpu.read()
        t = time.perf_counter()
        with prof.in_phase(f"train {name}"):
            df = spark.read.parquet(path)  # each asset reads the training set itself
            if name.startswith("price_") and hasattr(T, "price_frame"):
                if "price" not in shared:  # timed with the first horizon, as in the asset
                    shared["price"] = T.price_frame(df, FEATURES)
                df = shared["price"]
            try:
                trained[name] = fn(df)
            except ValueError as exc:
                trained[name] = exc
        dt = time.perf_counter() - t
        c1 = cpu.read()
        timings[f"train {name}"] = dt
        timings[f"cpu train {name}"] = (c1[0] - c0[0], c1[1] - c0[1])
        jobs, tasks = _spark_jobs(spark, f"train_{name}")
        timings[f"jobs train {name}"] = (jobs, tasks)
        tr = trained[name]
        status = "skipped: " + str(tr) if isinstance(tr, ValueError) else \
            f"train {tr.split.train_rows:,} / test {tr.split.test_rows:,} rows"
        print(f"    train {name:<10} {dt:7.2f} s  (cpu py {c1[0] - c0[0]:.1f} + jvm/workers {c1[1] - c0[1]:.1f} s; "
              f"{jobs} Spark jobs, {tasks} tasks; {status})", flush=True)
        if isinstance(tr, ValueError):
            continue
        # ---- (c) MLflow
        spark.sparkContext.setJobGroup(f"log_{name}", name)
        c0 = cpu.read()
        t = time.perf_counter()
        with prof.in_phase(f"log {name}"):
            lg, metrics, parts = log_one(mlf, spark.read.parquet(path), path, asset, name, tr, run_id)
        dt = time.perf_counter() - t
        c1 = cpu.read()
        jobs, tasks = _spark_jobs(spark, f"log_{name}")
        timings[f"log {name}"] = dt
        timings[f"cpu log {name}"] = (c1[0] - c0[0], c1[1] - c0[1])
        timings[f"log parts {name}"] = parts
        logged[name] = (lg, metrics)
        print(f"    log   {name:<10} {dt:7.2f} s  (cpu py {c1[0] - c0[0]:.1f} + jvm/workers {c1[1] - c0[1]:.1f} s; "
              + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
              + f"; {jobs} Spark jobs) -> {lg.registered_name} v{lg.version}", flush=True)
    if "price" in shared:
        shared.pop("price").unpersist()
    sc = spark.sparkContext
    with contextlib.suppress(Exception):
        infos = sc._jsc.sc().getRDDStorageInfo()
        timings["cached"] = (len(infos), sum(i.memSize() for i in infos), sum(i.diskSize() for i in infos))
    return trained, logged


def log_one(mlf: MlflowResource, df, path: str, asset: str, name: str, t, run_id: str):
    """What a model asset does after training (defs/models.py), timed per part."""
    from crypto_assets.ml.registry import load_champion, log_model
    from crypto_assets.ml.train import linear_coefficients

    register_as = f"price_model_{name.split('_', 1)[1]}" if name.startswith("price_") else None
    parts: dict[str, float] = {}
    t1 = time.perf_counter()
    if name != "clusters":  # coin_clusters does not compare with a champion
        load_champion(mlf, mlf.registered_name(register_as or asset))
    parts["load_champion"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    window = data_window(path)
    parts["data_window"] = time.perf_counter() - t1
    tags = {"dagster_run_id": run_id, "asset_key": asset, "code_version": "1", "training_set_path": path,
            "split_time": str(t.split.split_time), "train_rows": str(t.split.train_rows),
            "test_rows": str(t.split.test_rows), "train_max_time": str(t.split.train_max_time),
            "test_min_time": str(t.split.test_min_time), **window}
    if name.startswith("price_"):
        tags["horizon"] = name.split("_", 1)[1]
    base = t.extra["baseline"]
    if name in ("trend", "anomaly"):
        metrics = _with_baseline(t.metrics, base, {})
    elif name == "clusters":
        metrics = {"silhouette": t.metrics["silhouette"], "baseline_silhouette": base["silhouette"],
                   "lift_silhouette": t.metrics["silhouette"] - base["silhouette"]}
    else:
        metrics = dict(t.metrics)
        metrics.update({"baseline_rmse": base["rmse_persistence"], "baseline_mae": base["mae_persistence"],
                        "zero_return_rmse": base["rmse_zero"], "zero_return_mae": base["mae_zero"],
                        "lift_rmse": base["rmse_persistence"] - t.metrics["rmse"],
                        "lift_rmse_vs_zero_return": base["rmse_zero"] - t.metrics["rmse"]})
    artifacts: dict = {"baseline.json": base}
    if name == "trend" or name.startswith("price_"):
        artifacts["linear_coefficients.json"] = linear_coefficients(t.model)
    if name == "anomaly":
        artifacts["feature_importances.json"] = dict(zip(FEATURES, t.model.stages[-1].featureImportances.toArray().tolist()))
    if name == "clusters":
        artifacts = {"assignment.json": t.extra["assignment"]}
    dataset = None
    t1 = time.perf_counter()
    if name != "clusters":  # the coin_clusters asset logs no input dataset
        dataset = training_dataset(df, path, window)
    parts["dataset"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    lg = log_model(mlf, asset, t.model, params=dict(t.params), metrics=metrics, tags=tags, dataset=dataset,
                   artifacts=artifacts, register_as=register_as)
    parts["log_model"] = time.perf_counter() - t1
    if hasattr(t.split, "unpersist"):  # a Split that can release its cache: the asset does so after logging
        t.split.unpersist()
    return lg, metrics, parts


def gates(mlf: MlflowResource, logged: dict) -> tuple[float, list[str]]:
    from crypto_assets.ml.registry import gate_and_promote

    t = time.perf_counter()
    out = []
    for name, (lg, _) in logged.items():
        tags = mlf.client().get_run(lg.run_id).data.tags
        metric, hib, margin = {"trend": ("auc_roc", True, 0.01), "anomaly": ("pr_auc", True, 0.01),
                               "clusters": ("silhouette", True, 0.05)}.get(name, ("rmse", False, 0.0))
        v = gate_and_promote(mlf, lg.registered_name, tags["dagster_run_id"], metric, hib, margin)
        out.append(f"{name}: {'promoted' if v.promoted else 'rejected'} ({v.reason})")
    return time.perf_counter() - t, out


# --------------------------------------------------------------------------------------------
# inference
# --------------------------------------------------------------------------------------------


def _timed(fn, reps: int = 1):
    ts, res = [], None
    for _ in range(reps):
        t = time.perf_counter()
        res = fn()
        ts.append(time.perf_counter() - t)
    return res, statistics.median(ts), ts


def inference(spark, path: str, trained: dict, n_rows: int, asset_rows: int, results: dict, errors: list[str]) -> None:
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from crypto_assets.ml.train import linear_coefficients

    rows = pl.read_parquet(path)
    if n_rows and n_rows < rows.height:
        rows = rows.head(n_rows)
    n = rows.height
    results["n"] = n
    keys = rows.select("coin_id", pl.col("event_time").dt.epoch("us").alias("t_us"))
    sdf = spark.read.parquet(path)
    if n < sdf.count():
        sdf = sdf.limit(n)
    sdf = sdf.cache()
    sdf.count()  # the Spark side reads the Parquet once; not part of any measurement below

    linear = [(k, t) for k, t in trained.items() if (k == "trend" or k.startswith("price_")) and not isinstance(t, ValueError)]
    for name, t in linear:
        coef = linear_coefficients(t.model)
        ours, med_s, all_s = _timed(lambda: score_linear(rows, coef), reps=3)
        results[f"numpy {name}"] = (med_s, all_s)
        # Spark: the same pipeline model; price models need the coalesce train_price applies
        s_in = sdf
        if name.startswith("price_"):
            past = f"past_return_{name.split('_', 1)[1]}"
            s_in = s_in.withColumn(past, F.coalesce(F.col(past), F.lit(0.0)))
        pred = t.model.transform(s_in)
        col = vector_to_array("probability")[1] if name == "trend" else F.col("prediction")
        out = pred.select("coin_id", F.unix_micros("event_time").alias("t_us"), col.alias("p"))
        _, s_noop, _ = _timed(lambda: out.write.format("noop").mode("overwrite").save())
        spark_pdf, s_collect, _ = _timed(lambda: out.toPandas())
        results[f"spark {name}"] = (s_noop, s_collect)
        sp = pl.from_pandas(spark_pdf).with_columns(pl.col("t_us").cast(pl.Int64))
        joined = keys.with_columns(ours=pl.Series(ours)).join(sp, on=["coin_id", "t_us"], how="inner")
        a, b = joined["ours"].to_numpy(), joined["p"].to_numpy()
        nan_mismatch = int((np.isnan(a) != np.isnan(b)).sum())
        m = ~(np.isnan(a) | np.isnan(b))
        diff = float(np.max(np.abs(a[m] - b[m]))) if m.any() else float("nan")
        results[f"agree {name}"] = (joined.height, diff, nan_mismatch)
        if joined.height != n or nan_mismatch or not diff <= AGREE_TOL:
            errors.append(f"{name}: numpy vs Spark: {joined.height:,} of {n:,} rows matched, max abs diff {diff:.3e}, "
                          f"{nan_mismatch} NaN mismatches (tolerance {AGREE_TOL})")
        print(f"    {name:<10} numpy {med_s:.3f} s, spark noop {s_noop:.2f} s, spark collect {s_collect:.2f} s, "
              f"max |numpy - spark| {diff:.2e}", flush=True)

    an = trained.get("anomaly")
    if an is not None and not isinstance(an, ValueError):
        pred = an.model.transform(sdf)
        out = pred.select("coin_id", F.unix_micros("event_time").alias("t_us"), vector_to_array("probability")[1].alias("p"))
        _, s_noop, _ = _timed(lambda: out.write.format("noop").mode("overwrite").save())
        _, s_collect, _ = _timed(lambda: out.toPandas())
        # the predictions asset's first scoring code, and its current one (Arrow both ways and one
        # double column back, as defs/predictions.py does now), on asset_rows rows
        sub = rows.head(asset_rows)

        def asset_path():
            s = spark.createDataFrame(sub.select(["coin_id", "event_time", *FEATURES]).to_pandas())
            probs = an.model.transform(s).select("coin_id", "event_time", "probability").toPandas()
            return np.array([float(p[1]) for p in probs["probability"]])

        def arrow_path():
            s = spark.createDataFrame(sub.select(FEATURES).to_pandas())
            return an.model.transform(s).select(vector_to_array("probability")[1].alias("p")).toPandas()["p"].to_numpy()

        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p_asset, s_asset, _ = _timed(asset_path)
            p_arrow, s_arrow, _ = _timed(arrow_path)
        same = bool(np.array_equal(p_asset, p_arrow))
        if not same:
            errors.append(f"anomaly: the Arrow scoring path differs from the asset's (max abs diff "
                          f"{np.max(np.abs(p_asset - p_arrow)):.3e})")
        results["spark anomaly"] = (s_noop, s_collect, s_asset, s_arrow, sub.height, same)
        print(f"    anomaly RF spark noop {s_noop:.2f} s, spark collect {s_collect:.2f} s, "
              f"asset path {s_asset:.2f} s / Arrow path {s_arrow:.2f} s for {sub.height:,} rows", flush=True)
    sdf.unpersist()


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="market_features rows (all coins)")
    ap.add_argument("--step-s", type=float, default=60.0, help="seconds between two ticks of one coin")
    ap.add_argument("--batch", type=int, default=500_000, help="raw batch size while building the warehouse")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--score-rows", type=int, default=0, help="rows to score (0: the whole training set)")
    ap.add_argument("--asset-path-rows", type=int, default=200_000,
                    help="rows for the predictions asset's anomaly path (pandas -> Spark -> per-row Python)")
    ap.add_argument("--skip-feature-rows", action="store_true", help="do not time feature_rows() over all rows")
    ap.add_argument("--keep", action="store_true", help="keep the temporary CRYPTO_HOME (path printed)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()

    t_start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="bench-training-"))
    home = root / "home"
    lh = LakehouseResource(home=str(home), coins=list(DEFAULT_COIN_IDS))
    mlf = MlflowResource(home=str(home))
    import crypto_assets as pkg

    print(f"package {Path(pkg.__file__).parent}; CRYPTO_HOME {home}; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs",
          flush=True)
    errors: list[str] = []
    hwm: dict[str, int | None] = {}
    timings: dict = {}
    prof = Profiler()
    spark = None
    try:
        # ---------------------------------------------------------------- setup
        _reset_hwm()
        print(f"setup: {args.rows:,} ticks (10 coins, 1 tick / {args.step_s:g} s / coin) in raw batches of {args.batch:,}",
              flush=True)
        setup = build_warehouse(lh, args.rows, args.step_s, args.batch, args.seed)
        t = time.perf_counter()
        mlf.client().search_registered_models()  # creates the sqlite store (a deployment has one already)
        setup["times"]["mlflow store init"] = time.perf_counter() - t
        hwm["setup"] = _status_kb("VmHWM")
        gc.collect()

        # ---------------------------------------------------------------- (a) training set
        _reset_hwm()
        out_dir = lh.lake_path / "training"
        with lh.connect() as conn:
            proxy = DuckTimer(conn)
            c0 = time.process_time()
            t = time.perf_counter()
            info = build_training_set(proxy, out_dir)
            timings["training_set"] = time.perf_counter() - t
            timings["cpu training_set"] = time.process_time() - c0
            timings["_duck"] = proxy.times
            upstream = get_state(conn, "market_features")[1]
        hwm["training_set"] = _status_kb("VmHWM")
        path = str(info.path)
        print(f"    (a) build_training_set {timings['training_set']:.2f} s: {info.rows:,} rows, "
              f"{info.path.stat().st_size / 2**20:.0f} MB Parquet", flush=True)

        # ---------------------------------------------------------------- Spark start
        t = time.perf_counter()
        spark = start_spark()
        timings["spark_start"] = time.perf_counter() - t
        jvm = _jvm_pid()
        print(f"    Spark {spark.version} session start {timings['spark_start']:.2f} s "
              f"(master {spark.sparkContext.master}, driver JVM pid {jvm}, -Xmx{_jvm_xmx(jvm)})", flush=True)
        prof.install()

        # ---------------------------------------------------------------- (b) + (c)
        _reset_hwm()
        if jvm:
            _reset_hwm(jvm)
        load0 = os.getloadavg()
        trained, logged = run_models(spark, mlf, path, prof, timings)
        timings["load"] = (load0, os.getloadavg())
        timings["log_total"] = sum(v for k, v in timings.items() if k.startswith("log ") and isinstance(v, float))
        hwm["models"] = _status_kb("VmHWM")
        hwm["models_jvm"] = _status_kb("VmHWM", jvm) if jvm else None
        timings["gates"], gate_lines = gates(mlf, logged)
        prof.uninstall()

        # ---------------------------------------------------------------- inference
        _reset_hwm()
        if jvm:
            _reset_hwm(jvm)
        results: dict = {}
        print("inference:", flush=True)
        inference(spark, path, trained, args.score_rows, args.asset_path_rows, results, errors)
        if not args.skip_feature_rows:
            with lh.connect() as conn:
                fr, s_fr, _ = _timed(lambda: feature_rows(conn, 0, upstream, 1e9))
            results["feature_rows"] = (s_fr, fr.height)
            del fr
        hwm["inference"] = _status_kb("VmHWM")
        hwm["inference_jvm"] = _status_kb("VmHWM", jvm) if jvm else None
        report(args, setup, info, timings, prof, trained, logged, gate_lines, results, hwm, jvm, t_start)
    finally:
        prof.uninstall()
        if spark is not None:
            spark.stop()
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if errors:
        print("\nCORRECTNESS ERRORS:")
        for e in errors:
            print("  " + e)
        return 2
    ok = timings.get("_ok", True)
    return 1 if (args.strict and not ok) else 0


def report(args, setup, info, timings, prof, trained, logged, gate_lines, results, hwm, jvm, t_start) -> None:
    W = 100
    print()
    print("=" * W)
    print(f"TRAINING BENCHMARK  ({len(setup['coins'])} coins, 1 tick / {args.step_s:g} s / coin; Spark "
          f"{spark_config({})['spark.master']}, shuffle partitions {spark_config({})['spark.sql.shuffle.partitions']}, "
          f"driver memory {spark_config({})['spark.driver.memory']}; DuckDB 2 threads / 4 GB; {os.cpu_count()} CPUs)")
    print("=" * W)
    st = setup["times"]
    c = setup["counts"]
    print(f"\nSetup (not measured): {setup['n_steps'] * len(setup['coins']):,} ticks = {setup['span_days']:.1f} days, "
          f"{setup['batches']} raw batches; total {st['total']:.1f} s = simulator {st['generate (simulator)']:.1f} + "
          f"insert {st['insert raw']:.1f} + run_incremental {st['run_incremental']:.1f} + checkpoint {st['checkpoint']:.1f}; "
          f"MLflow sqlite store creation {st['mlflow store init']:.1f} s")
    print(f"  market_features {c['market_features']:,} rows, ohlcv_1m {c['ohlcv_1m']:,}, anomalies {c['anomalies']:,} "
          f"({c['anomalous rows']:,} distinct anomalous rows)")
    print(f"  training set: {info.rows:,} rows, labelled {info.labelled}, positive rate {info.positive_rate:.4f}, "
          f"anomaly rate {info.anomaly_rate:.5f}")

    # ------------------------------------------------------------------ training times
    print(f"\nTraining pipeline (target: (a) + (b) + (c) <= {TARGET_TRAIN_S:.0f} s)")
    a = timings["training_set"]
    print(f"  (a) build_training_set (DuckDB)                          {a:8.2f} s   (cpu {timings['cpu training_set']:.1f} s)")
    agg: dict[str, float] = defaultdict(float)
    cnt: dict[str, int] = defaultdict(int)
    for label, s in prof_duck(timings):
        agg[label] += s
        cnt[label] += 1
    for label, s in sorted(agg.items(), key=lambda kv: -kv[1]):
        if s >= 0.005:
            print(f"        {s:7.2f} s  {label}")
    print(f"        {a - sum(agg.values()):7.2f} s  outside DuckDB statements (Python, Arrow/numpy work between them)")
    b = sum(v for k, v in timings.items() if k.startswith("train ") and isinstance(v, float))
    print(f"  (b) model training (Spark MLlib)                          {b:8.2f} s")
    for k, v in timings.items():
        if k.startswith("train ") and isinstance(v, float):
            name = k.split(" ", 1)[1]
            jobs, tasks = timings[f"jobs {k}"]
            cp, cj = timings[f"cpu {k}"]
            t = trained[name]
            extra = "skipped: not enough rows" if isinstance(t, ValueError) else \
                f"{t.split.train_rows:,} train / {t.split.test_rows:,} test rows"
            print(f"      {name:<10} {v:7.2f} s   cpu {cp + cj:.1f} s (py {cp:.1f}, jvm/workers {cj:.1f}); "
                  f"{jobs} Spark jobs, {tasks} tasks; {extra}")
            prof.report(k, v, indent="          ")
    cc = timings["log_total"]
    print(f"  (c) MLflow: champion lookup, data window, dataset, log_model + registration {cc:8.2f} s")
    for k, v in timings.items():
        if k.startswith("log ") and not k.startswith("log parts") and isinstance(v, float):
            name = k.split(" ", 1)[1]
            parts = timings[f"log parts {name}"]
            cp, cj = timings[f"cpu {k}"]
            print(f"      {name:<10} {v:7.2f} s   cpu {cp + cj:.1f} s; " + ", ".join(f"{p} {s:.2f}" for p, s in parts.items()))
            prof.report(k, v, indent="          ", top=8)
    total = a + b + cc
    ok = total <= TARGET_TRAIN_S
    timings["_ok"] = ok
    print(f"  TOTAL (a)+(b)+(c)                                         {total:8.2f} s   target <= {TARGET_TRAIN_S:.0f} s  "
          f"{verdict(ok)}")
    print(f"  (not included) Spark session start-up {timings['spark_start']:.2f} s; champion gates (gate_and_promote, "
          f"after the run) {timings['gates']:.2f} s")
    print(f"  (info) with Spark start-up: {total + timings['spark_start']:.2f} s")
    cpu_total = timings["cpu training_set"] + sum(sum(v) for k, v in timings.items() if k.startswith("cpu ") and
                                                  isinstance(v, tuple))
    (l0, l1) = timings["load"]
    print(f"  (info) CPU time of (a)+(b)+(c), this process + JVM + Python workers: {cpu_total:.1f} s on "
          f"{os.cpu_count()} CPUs; load average {l0[0]:.2f} before (b), {l1[0]:.2f} after (c)"
          + ("  -- OTHER LOAD ON THE MACHINE: wall times are inflated" if max(l0[0], l1[0]) > 0.75 * (os.cpu_count() or 1)
             else ""))
    if "cached" in timings:
        n_c, mem, disk = timings["cached"]
        print(f"  (info) still cached in Spark after the four models (one session, as training_job runs them): {n_c} "
              f"RDDs/DataFrames, {mem / 2**20:,.0f} MB in memory, {disk / 2**20:,.0f} MB on disk"
              + ("  -- train/test splits are never unpersisted" if mem + disk > 50 * 2**20 else ""))

    # ------------------------------------------------------------------ metrics
    print("\nModel metrics on the time-split holdout (vs the baselines the gates use):")
    for name, t in trained.items():
        if isinstance(t, ValueError):
            print(f"  {name:<10} skipped: {t}")
            continue
        base = t.extra["baseline"]
        if name in ("trend", "anomaly"):
            print(f"  {name:<10} AUC-ROC {t.metrics['auc_roc']:.4f} (baseline {base['auc_roc']:.4f}), "
                  f"PR-AUC {t.metrics['pr_auc']:.4f} (baseline {base['pr_auc']:.4f}), "
                  f"accuracy {t.metrics['accuracy']:.4f} (majority {base['accuracy']:.4f})"
                  + (f"; train positives {t.extra['train_positives']:,}, negatives used {t.extra['train_negatives_used']:,}"
                     if name == "anomaly" else ""))
        elif name == "clusters":
            print(f"  {name:<10} silhouette {t.metrics['silhouette']:.4f} (random clusters {base['silhouette']:.4f}); "
                  f"assignment {t.extra['assignment']}")
        else:
            print(f"  {name:<10} RMSE {t.metrics['rmse']:.6f} (persistence {base['rmse_persistence']:.6f}, "
                  f"zero return {base['rmse_zero']:.6f}), MAE {t.metrics['mae']:.6f} (persistence "
                  f"{base['mae_persistence']:.6f}, zero {base['mae_zero']:.6f})")
    print("  gates: " + "\n         ".join(gate_lines))

    # ------------------------------------------------------------------ inference
    n = results["n"]
    print(f"\nBatch inference on {n:,} training-set rows (target >= {TARGET_RATE:,.0f} predictions/s):")
    print(f"  {'model':<10} {'path':<52} {'time':>9} {'rate':>14}")
    all_ok = True
    for k in results:
        if not k.startswith("numpy "):
            continue
        name = k.split(" ", 1)[1]
        med_s, all_s = results[k]
        s_noop, s_collect = results[f"spark {name}"]
        rows_, diff, nanm = results[f"agree {name}"]
        ok_np = n / med_s >= TARGET_RATE
        all_ok &= ok_np
        print(f"  {name:<10} {'(i)  numpy score_linear (median of 3)':<52} {med_s:8.3f}s {rate(n, med_s)}  {verdict(ok_np)}")
        print(f"  {'':<10} {'(ii) Spark transform -> noop sink (JVM only)':<52} {s_noop:8.2f}s {rate(n, s_noop)}  "
              f"{verdict(n / s_noop >= TARGET_RATE)}")
        print(f"  {'':<10} {'(ii) Spark transform -> toPandas (1 double col, Arrow)':<52} {s_collect:8.2f}s "
              f"{rate(n, s_collect)}  {verdict(n / s_collect >= TARGET_RATE)}")
        print(f"  {'':<10} numpy vs Spark: {rows_:,} rows matched on (coin_id, event_time), max abs diff {diff:.2e}, "
              f"NaN mismatches {nanm}  {verdict(rows_ == n and nanm == 0 and diff <= AGREE_TOL)} (tol {AGREE_TOL:g})")
    if "spark anomaly" in results:
        s_noop, s_collect, s_asset, s_arrow, n_asset, same = results["spark anomaly"]
        ok_rf = n / s_collect >= TARGET_RATE
        all_ok &= ok_rf
        print(f"  {'anomaly':<10} {'(iii) RF Spark transform -> noop sink (JVM only)':<52} {s_noop:8.2f}s {rate(n, s_noop)}  "
              f"{verdict(n / s_noop >= TARGET_RATE)}")
        print(f"  {'':<10} {'(iii) RF Spark transform -> toPandas (p[1], Arrow)':<52} {s_collect:8.2f}s {rate(n, s_collect)}  "
              f"{verdict(ok_rf)}")
        print(f"  {'':<10} {f'(iii) first predictions asset code, {n_asset:,} rows':<52} {s_asset:8.2f}s {rate(n_asset, s_asset)}  "
              f"{verdict(n_asset / s_asset >= TARGET_RATE)}")
        print(f"  {'':<10}   (polars -> pandas -> createDataFrame -> transform -> toPandas of VectorUDT -> per-row p[1])")
        print(f"  {'':<10} {f'(iii) same rows, Arrow both ways (the asset now)':<52} {s_arrow:8.2f}s "
              f"{rate(n_asset, s_arrow)}  {verdict(n_asset / s_arrow >= TARGET_RATE)}  (identical values: {same})")
    if "feature_rows" in results:
        s_fr, n_fr = results["feature_rows"]
        print(f"  (info) feature_rows() (predictions asset's DuckDB feature query) for {n_fr:,} rows: {s_fr:.2f} s "
              f"{rate(n_fr, s_fr)}")
    print(f"  inference targets (numpy linear + RF collected): {verdict(all_ok)}")

    # ------------------------------------------------------------------ memory
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"\nPeak RSS: Python process {ru / 1024:,.0f} MB (ru_maxrss); per phase (VmHWM reset at phase start): "
          f"setup {_mb(hwm.get('setup'))}, training set {_mb(hwm.get('training_set'))}, models (b)+(c) "
          f"{_mb(hwm.get('models'))}, inference {_mb(hwm.get('inference'))}")
    print(f"          Spark driver JVM (pid {jvm}, -Xmx{_jvm_xmx(jvm)}): VmHWM during (b)+(c) {_mb(hwm.get('models_jvm'))}, "
          f"during inference {_mb(hwm.get('inference_jvm'))}")
    print(f"Wall time of the benchmark: {time.perf_counter() - t_start:.1f} s")


def prof_duck(timings) -> list[tuple[str, float]]:
    return timings.get("_duck", [])


if __name__ == "__main__":
    sys.exit(main())
