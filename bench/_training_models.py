"""(b) and (c) of bench/training.py: the four models trained as the training job's assets train
them (one Spark session, the assets' default parameters), then per model what its asset does
after training (champion lookup, data window, MLflow input dataset, log_model + registration),
each part timed; the champion gates, timed as information."""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bench._training_profile import Profiler
from bench._training_setup import CpuMeter, spark_jobs
from crypto_assets.ml.lineage import data_window, training_dataset
from crypto_assets.ml.training_set import DIRECTION_HORIZON_MINUTES, FEATURES, REGRESSION_HORIZONS
from crypto_assets.resources.mlflow import MlflowResource

if TYPE_CHECKING:
    from pyspark.sql import DataFrame

    from crypto_assets.ml.train import Trained


def _model_specs() -> list[tuple[str, str, Callable[[DataFrame], Trained]]]:
    """(asset, model, train function) in the order the training job runs them."""
    from crypto_assets.ml import train as T

    feats = ",".join(FEATURES)
    specs = [("trend_model", "trend", lambda df: T.train_trend(df, FEATURES, DIRECTION_HORIZON_MINUTES, {
                  "max_iter": 50, "reg_param": 0.001,
                  "horizon_minutes": DIRECTION_HORIZON_MINUTES, "features": feats})),
             ("anomaly_model", "anomaly", lambda df: T.train_anomaly(df, FEATURES, {
                  "num_trees": 100, "max_depth": 10, "negatives_per_positive": 20,
                  "features": feats}))]
    for h, m in REGRESSION_HORIZONS.items():
        specs.append(("price_model", f"price_{h}", lambda df, _h=h, _m=m: T.train_price(
            df, FEATURES, _h, _m, {"horizon": _h, "reg_param": 0.01, "min_train_rows": 200,
                                   "features": feats})))
    specs.append(("coin_clusters", "clusters", lambda df: T.train_clusters(df, {"k": 3, "seed": 7})))
    return specs


def run_models(spark, mlf: MlflowResource, path: str, prof: Profiler, timings: dict) -> tuple[dict, dict]:
    """(b) and (c), model by model as the assets do it (one Spark session, in-process executor
    as training_job: train, then champion lookup / data window / dataset / log_model), timed apart."""
    cpu = CpuMeter()
    trained: dict = {}
    logged: dict = {}
    run_id = "bench-" + datetime.now(UTC).strftime("%Y%m%d%H%M%S")
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
        jobs, tasks = spark_jobs(spark, f"train_{name}")
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
        jobs, tasks = spark_jobs(spark, f"log_{name}")
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
    from crypto_assets.ml.model_specs import ANOMALY_MODEL, COIN_CLUSTERS, PRICE_MODEL, TREND_MODEL

    spec = {"trend": TREND_MODEL, "anomaly": ANOMALY_MODEL, "clusters": COIN_CLUSTERS}.get(name, PRICE_MODEL)
    metrics, artifacts = spec.metrics(t), spec.artifacts(t)  # what the asset logs
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
