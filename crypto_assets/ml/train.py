"""Spark MLlib training with a time split and naive baselines on the same holdout.

Rows are split at a time quantile; training rows must also have their label window end
before the split (an embargo of one horizon), so no label peeks into the test period.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import numpy as np
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel, RandomForestClassifier
from pyspark.ml.clustering import KMeans
from pyspark.ml.evaluation import ClusteringEvaluator
from pyspark.ml.feature import StandardScaler, StandardScalerModel, VectorAssembler
from pyspark.ml.regression import LinearRegression, LinearRegressionModel
from pyspark.sql import DataFrame, Row
from pyspark.sql import functions as F

from crypto_assets.ml.evaluation import pr_auc, roc_auc
from crypto_assets.ml.training_set import LARGE_MOVE_MINUTES, REGRESSION_HORIZONS


class NotEnoughData(ValueError):
    """Too little data to train or evaluate a model (no labelled rows yet, one class only, too
    few rows or coins). The only failure a model asset may turn into a green skip (see
    ml/model_specs.py `skippable`); any other error fails the step."""


def _only_row(df: DataFrame) -> Row:
    """The row of a global aggregate (no groupBy): Spark returns exactly one, even over no rows."""
    row = df.first()
    if row is None:
        raise RuntimeError("a global aggregate returned no row")
    return row


@dataclass
class Split:
    train: DataFrame
    test: DataFrame
    split_time: datetime
    train_rows: int
    test_rows: int
    train_max_time: datetime | None
    test_min_time: datetime | None
    train_label_mean: float | None = None
    test_label_mean: float | None = None
    cached: DataFrame | None = None

    def unpersist(self) -> None:
        """Release the cached rows (call when the holdout is no longer needed)."""
        if self.cached is not None:
            self.cached.unpersist()


@dataclass
class Trained:
    model: PipelineModel
    metrics: dict[str, float]
    params: dict[str, Any]
    split: Split
    extra: dict[str, Any] = field(default_factory=dict)


def time_split(df: DataFrame, label: str, horizon_minutes: int, train_fraction: float = 0.8,
               cache: bool = True) -> Split:
    """One cached copy of the labelled rows (unless `cache` is False: the input is cached
    already); the quantile, both sides' counts, time bounds and label means in two passes over
    it (was: three Parquet scans and two cached copies)."""
    df = df.filter(F.col(label).isNotNull())
    if cache:
        df = df.cache()
    ts = F.col("event_time").cast("double")
    split_s = _only_row(df.select(F.percentile_approx(ts, train_fraction, 10000).alias("q")))["q"]
    if split_s is None:
        if cache:
            df.unpersist()
        raise NotEnoughData(f"no rows with a {label} label: not enough history for this horizon")
    in_train = ts + horizon_minutes * 60 < split_s
    in_test = ts >= split_s
    y = F.col(label).cast("double")
    st = _only_row(df.agg(
        F.count(F.when(in_train, 1)).alias("n_tr"), F.max(F.when(in_train, F.col("event_time"))).alias("t_tr"),
        F.avg(F.when(in_train, y)).alias("y_tr"),
        F.count(F.when(in_test, 1)).alias("n_te"), F.min(F.when(in_test, F.col("event_time"))).alias("t_te"),
        F.avg(F.when(in_test, y)).alias("y_te"),
    ))

    return Split(df.filter(in_train), df.filter(in_test), datetime.fromtimestamp(split_s, tz=UTC),
                 st["n_tr"], st["n_te"], st["t_tr"], st["t_te"], st["y_tr"], st["y_te"], df if cache else None)


def _assembler(features: list[str]) -> list:
    return [
        VectorAssembler(inputCols=features, outputCol="raw_features", handleInvalid="keep"),
        StandardScaler(inputCol="raw_features", outputCol="features", withMean=True, withStd=True),
    ]


def _fit_on_cached_vectors(train: DataFrame, features: list[str], label: str, head) -> PipelineModel:
    """Pipeline(VectorAssembler, StandardScaler, head).fit(train), stage by stage, with the scaled
    vectors cached once for the head: LogisticRegression reads its input twice (summary, then
    blockify) and would otherwise assemble and scale every row twice more. Same stages, same
    model as Pipeline.fit."""
    assembler, scaler = _assembler(features)
    assembled = assembler.transform(train)
    scaler_model = scaler.fit(assembled)
    scaled = scaler_model.transform(assembled).select("features", label).cache()
    try:
        head_model = head.fit(scaled)
    finally:
        scaled.unpersist()
    return PipelineModel(stages=[assembler, scaler_model, head_model])


def binary_metrics(pred: DataFrame, label: str) -> dict[str, float]:
    """ROC-AUC, PR-AUC (exact trapezoids, ml/evaluation.py) and accuracy from one collect of
    (score, prediction, label): 3 doubles per holdout row via Arrow, instead of three Spark
    passes with two sorts."""
    from pyspark.ml.functions import vector_to_array

    pdf = pred.select(vector_to_array(F.col("probability"))[1].alias("s"), F.col("prediction").cast("double").alias("p"),
                      F.col(label).cast("double").alias("y")).toPandas()
    s, p, y = (pdf[c].to_numpy(dtype=np.float64) for c in ("s", "p", "y"))
    return {"auc_roc": roc_auc(s, y), "pr_auc": pr_auc(s, y), "accuracy": float(np.mean(p == y)) if len(y) else 0.0}


def majority_baseline(split: Split, label: str) -> dict[str, float]:
    """Majority class of the training period, scored on the holdout."""
    p_train = split.train_label_mean or 0.0
    majority = 1.0 if p_train >= 0.5 else 0.0
    p_test = split.test_label_mean or 0.0
    acc = p_test if majority == 1.0 else 1.0 - p_test
    # A constant score ranks nothing: ROC-AUC 0.5, PR-AUC = share of positives.
    return {"auc_roc": 0.5, "pr_auc": p_test, "accuracy": acc, "train_positive_rate": p_train}


def train_trend(df: DataFrame, features: list[str], horizon_minutes: int, params: dict) -> Trained:
    df = df.select("event_time", *features, "label_up")  # cache only what the model reads
    split = time_split(df, "label_up", horizon_minutes, params.get("train_fraction", 0.8))
    lr = LogisticRegression(
        featuresCol="features", labelCol="label_up", maxIter=params.get("max_iter", 50),
        regParam=params.get("reg_param", 0.001), elasticNetParam=params.get("elastic_net", 0.0),
        tol=params.get("tol", 1e-6),
    )
    model = _fit_on_cached_vectors(split.train, features, "label_up", lr)
    metrics = binary_metrics(model.transform(split.test), "label_up")
    return Trained(model, metrics, params, split, {"baseline": majority_baseline(split, "label_up")})


def train_anomaly(df: DataFrame, features: list[str], params: dict) -> Trained:
    df = df.select("event_time", *features, "label_large_move")  # cache only what the model reads
    split = time_split(df.withColumn("label_large_move", F.col("label_large_move").cast("double")), "label_large_move",
                       LARGE_MOVE_MINUTES,  # a training row's label window must end before the holdout
                       params.get("train_fraction", 0.8))
    train = split.train
    ratio = params.get("negatives_per_positive", 20)
    pos = train.filter(F.col("label_large_move") == 1).count()
    neg = split.train_rows - pos
    if not pos or not neg:  # a one-class forest predicts a 1-element probability: nothing to learn or gate
        split.unpersist()
        raise NotEnoughData(f"the training window holds {pos} large moves and {neg} quiet ticks: a classifier needs both")
    if neg > pos * ratio:  # large moves are rare: keep every positive, sample negatives
        train = train.sampleBy("label_large_move", {0.0: pos * ratio / neg, 1.0: 1.0}, seed=params.get("seed", 7))
    rf = RandomForestClassifier(
        featuresCol="raw_features", labelCol="label_large_move", numTrees=params.get("num_trees", 100),
        maxDepth=params.get("max_depth", 10), seed=params.get("seed", 7), subsamplingRate=params.get("subsampling", 1.0),
        maxBins=params.get("max_bins", 32), maxMemoryInMB=params.get("max_memory_mb", 256),
        cacheNodeIds=True,  # same trees; each level no longer re-walks every tree from the root (~-40% fit time)
    )
    # The (sampled) training rows, assembled and cached once: the forest reads its input several
    # times (metadata, split candidates, binning), each a sampleBy over all training rows otherwise.
    assembler = VectorAssembler(inputCols=features, outputCol="raw_features", handleInvalid="keep")
    train = assembler.transform(train).select("raw_features", "label_large_move").cache()
    try:
        used = train.count()
        model = PipelineModel(stages=[assembler, rf.fit(train)])
    finally:
        train.unpersist()
    metrics = binary_metrics(model.transform(split.test), "label_large_move")
    return Trained(model, metrics, params, split, {"baseline": majority_baseline(split, "label_large_move"),
                                                  "train_positives": pos, "train_negatives_used": used - pos})


def price_frame(df: DataFrame, features: list[str]) -> DataFrame:
    """What every price horizon reads (features, forward returns, past returns with 0 for
    missing), cached once for all horizons: the caller unpersists it after the last one."""
    pasts = [F.coalesce(F.col(f"past_return_{h}"), F.lit(0.0)).alias(f"past_return_{h}") for h in REGRESSION_HORIZONS]
    return df.select("event_time", *features, *(f"fwd_return_{h}" for h in REGRESSION_HORIZONS), *pasts).cache()


def train_price(df: DataFrame, features: list[str], horizon: str, horizon_minutes: int, params: dict) -> Trained:
    """One horizon. `df` is the training set, or better `price_frame(training set)`, shared by
    the horizons (then no per-horizon copy is cached)."""
    from pyspark import StorageLevel

    label, past = f"fwd_return_{horizon}", f"past_return_{horizon}"
    shared = df.storageLevel != StorageLevel.NONE
    df = df.select("event_time", *features, label, F.coalesce(F.col(past), F.lit(0.0)).alias(past))
    split = time_split(df, label, horizon_minutes, params.get("train_fraction", 0.8), cache=not shared)
    if split.train_rows < params.get("min_train_rows", 200) or split.test_rows < params.get("min_test_rows", 50):
        split.unpersist()
        raise NotEnoughData(f"{horizon}: {split.train_rows} train / {split.test_rows} test rows is not enough history")
    lr = LinearRegression(featuresCol="features", labelCol=label, regParam=params.get("reg_param", 0.01),
                          maxIter=params.get("max_iter", 50))
    model = Pipeline(stages=[*_assembler(features + [past]), lr]).fit(split.train)
    # model errors and both baselines in one pass over the holdout (was: three)
    y, p, b = F.col(label), F.col("prediction"), F.col(past)  # past: 0 where missing (select above)
    row = _only_row(model.transform(split.test).select(
        F.sqrt(F.avg((y - p) ** 2)).alias("rmse"), F.avg(F.abs(y - p)).alias("mae"),
        F.sqrt(F.avg(y ** 2)).alias("rmse_zero"), F.avg(F.abs(y)).alias("mae_zero"),
        F.sqrt(F.avg((y - b) ** 2)).alias("rmse_persistence"), F.avg(F.abs(y - b)).alias("mae_persistence"),
    ))
    metrics = {"rmse": float(row["rmse"]), "mae": float(row["mae"])}
    base = {k: float(row[k]) for k in ("rmse_zero", "mae_zero", "rmse_persistence", "mae_persistence")}
    return Trained(model, metrics, params, split, {"baseline": base})


PROFILE_FEATURES = ["avg_volatility", "std_log_return", "avg_abs_return", "avg_abs_volume_change", "avg_momentum_60m"]


def coin_profiles(df: DataFrame) -> DataFrame:
    return df.groupBy("coin_id").agg(
        F.avg("volatility_15m").alias("avg_volatility"),
        F.stddev_pop("log_return").alias("std_log_return"),
        F.avg(F.abs("return_pct")).alias("avg_abs_return"),
        F.avg(F.abs("volume_change_pct")).alias("avg_abs_volume_change"),
        F.avg("momentum_60m").alias("avg_momentum_60m"),
    ).na.fill(0.0)


def train_clusters(df: DataFrame, params: dict) -> Trained:
    profiles = coin_profiles(df).cache()
    n = profiles.count()
    k = max(2, min(params.get("k", 3), n - 1)) if n > 2 else n
    if n < 3:
        raise NotEnoughData(f"{n} coins: need at least 3 for a clustering with a silhouette")
    km = KMeans(featuresCol="features", k=k, seed=params.get("seed", 7), maxIter=params.get("max_iter", 50))
    model = Pipeline(stages=[*_assembler(PROFILE_FEATURES), km]).fit(profiles)
    pred = model.transform(profiles).cache()
    sil = ClusteringEvaluator(featuresCol="features", predictionCol="prediction").evaluate(pred)
    # Baseline: the same coins in k random clusters (round-robin by a seeded shuffle).
    rnd = pred.withColumn("prediction", (F.abs(F.hash("coin_id", F.lit(params.get("seed", 7)))) % k).cast("int"))
    # A draw that puts every coin in one cluster has no silhouette (Spark asserts two clusters): 0.
    # Counted first rather than caught, so that no other failure passes for it.
    one_cluster = rnd.select("prediction").distinct().count() < 2
    evaluator = ClusteringEvaluator(featuresCol="features", predictionCol="prediction")
    sil_rand = 0.0 if one_cluster else evaluator.evaluate(rnd)
    assignment = {r["coin_id"]: int(r["prediction"]) for r in pred.select("coin_id", "prediction").collect()}
    split = Split(profiles, profiles, datetime.now(), n, n, None, None)
    return Trained(model, {"silhouette": sil}, {**params, "k": k}, split,
                   {"baseline": {"silhouette": sil_rand}, "assignment": assignment})


def linear_coefficients(model: PipelineModel) -> dict:
    """Export a scaler + linear model pipeline as plain numbers, so scoring needs no Spark."""
    assembler = cast(VectorAssembler, model.stages[0])
    scaler = cast(StandardScalerModel, model.stages[1])
    head = cast(LogisticRegressionModel | LinearRegressionModel, model.stages[-1])
    out = {
        "features": list(assembler.getInputCols()),
        "mean": [float(x) for x in scaler.mean.toArray()],
        "std": [float(x) for x in scaler.std.toArray()],
        "coefficients": [float(x) for x in head.coefficients.toArray()],
        "intercept": float(head.intercept),
        "kind": "logistic" if head.__class__.__name__.startswith("Logistic") else "linear",
    }
    return out
