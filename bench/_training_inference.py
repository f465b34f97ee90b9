"""Batch inference of bench/training.py on the training-set rows: numpy score_linear with the
exported coefficients against Spark transform of the same models (they must agree), the random
forest via Spark, and the predictions asset's first anomaly scoring code against the Arrow path
it uses now."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import polars as pl

from crypto_assets.ml.scoring import score_linear
from crypto_assets.ml.training_set import FEATURES

AGREE_TOL = 1e-9
T = TypeVar("T")


def timed(fn: Callable[[], T], reps: int = 1) -> tuple[T, float, list[float]]:
    """The result of the last of `reps` (at least one) calls of fn, their median time and every time."""
    ts: list[float] = []

    def once() -> T:
        t = time.perf_counter()
        res = fn()
        ts.append(time.perf_counter() - t)
        return res

    res = once()
    for _ in range(reps - 1):
        res = once()
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
        ours, med_s, all_s = timed(lambda coef=coef: score_linear(rows, coef), reps=3)
        results[f"numpy {name}"] = (med_s, all_s)
        # Spark: the same pipeline model; price models need the coalesce train_price applies
        s_in = sdf
        if name.startswith("price_"):
            past = f"past_return_{name.split('_', 1)[1]}"
            s_in = s_in.withColumn(past, F.coalesce(F.col(past), F.lit(0.0)))
        pred = t.model.transform(s_in)
        col = vector_to_array(F.col("probability"))[1] if name == "trend" else F.col("prediction")
        out = pred.select("coin_id", F.unix_micros("event_time").alias("t_us"), col.alias("p"))
        _, s_noop, _ = timed(lambda out=out: out.write.format("noop").mode("overwrite").save())
        spark_pdf, s_collect, _ = timed(lambda out=out: out.toPandas())
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
        out = pred.select("coin_id", F.unix_micros("event_time").alias("t_us"), vector_to_array(F.col("probability"))[1].alias("p"))
        _, s_noop, _ = timed(lambda: out.write.format("noop").mode("overwrite").save())
        _, s_collect, _ = timed(lambda: out.toPandas())
        # the predictions asset's first scoring code, and its current one (Arrow both ways and one
        # double column back, as defs/predictions.py does now), on asset_rows rows
        sub = rows.head(asset_rows)

        def asset_path():
            s = spark.createDataFrame(sub.select(["coin_id", "event_time", *FEATURES]).to_pandas())
            probs = an.model.transform(s).select("coin_id", "event_time", "probability").toPandas()
            return np.array([float(p[1]) for p in probs["probability"]])

        def arrow_path():
            s = spark.createDataFrame(sub.select(FEATURES).to_pandas())
            return an.model.transform(s).select(vector_to_array(F.col("probability"))[1].alias("p")).toPandas()["p"].to_numpy()

        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            p_asset, s_asset, _ = timed(asset_path)
            p_arrow, s_arrow, _ = timed(arrow_path)
        same = bool(np.array_equal(p_asset, p_arrow))
        if not same:
            errors.append(f"anomaly: the Arrow scoring path differs from the asset's (max abs diff "
                          f"{np.max(np.abs(p_asset - p_arrow)):.3e})")
        results["spark anomaly"] = (s_noop, s_collect, s_asset, s_arrow, sub.height, same)
        print(f"    anomaly RF spark noop {s_noop:.2f} s, spark collect {s_collect:.2f} s, "
              f"asset path {s_asset:.2f} s / Arrow path {s_arrow:.2f} s for {sub.height:,} rows", flush=True)
    sdf.unpersist()
