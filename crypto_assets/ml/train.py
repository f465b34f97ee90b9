"""Spark MLlib fits of the four models, evaluated walk-forward (ml/walk_forward.py) against
their strongest naive baselines on the same out-of-sample rows (ml/evaluation.py).

Each `train_*` defines how a fold's training rows become a model and which naive forecasts it
must beat: trend: the training period's majority class and "the same direction as the last
horizon"; anomaly: majority and persistence (the large-move rule over the previous horizon);
price: zero return and persistence (the past return over the horizon). Clusters are
cross-sectional (one profile per coin): no time folds; random clusterings are the baseline.
`time_split` (one split with an embargo of one horizon) stays for callers that want one.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import numpy as np
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel, RandomForestClassifier
from pyspark.ml.clustering import KMeans
from pyspark.ml.feature import StandardScaler, StandardScalerModel, VectorAssembler
from pyspark.ml.functions import vector_to_array
from pyspark.ml.regression import LinearRegression, LinearRegressionModel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from crypto_assets.ml.evaluation import Assessment, pr_auc, random_cluster_interval, roc_auc
from crypto_assets.ml.training_set import LARGE_MOVE_MINUTES, REGRESSION_HORIZONS
from crypto_assets.ml.walk_forward import FoldInfo, NotEnoughData, Split, Task, Trained, config_of, only_row, walk_forward

__all__ = ["NotEnoughData", "Split", "Trained", "binary_metrics", "cluster_silhouette", "linear_coefficients",
           "price_frame", "time_split", "train_anomaly", "train_clusters", "train_price", "train_trend"]
_only_row = only_row


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


def _majority(info: FoldInfo) -> Column:
    """The training period's majority class as a constant forecast (its positive rate as the
    score: a constant ranks nothing, ROC-AUC 0.5 and PR-AUC the share of positives per window)."""
    return F.lit(info.train_label_mean)


def _probability() -> Column:
    return vector_to_array(F.col("probability"))[1]


def _prediction() -> Column:
    return F.col("prediction")


def _walk(df: DataFrame, task: Task, params: dict, cache: bool = True) -> Trained:
    wf, split, model = walk_forward(df, task, config_of(params), cache=cache)
    return Trained(model, wf.pooled, {**params, **wf.params()}, split, {"walk_forward": wf})


TREND_LABEL, TREND_PAST = "label_up", "past_return_h"


def train_trend(df: DataFrame, features: list[str], horizon_minutes: int, params: dict) -> Trained:
    """LogisticRegression on the direction of the next horizon. Baselines: majority, and the
    direction of the past horizon's return (score 1 up, 0 down, 0.5 flat or unknown)."""
    df = df.select("event_time", *features, TREND_LABEL, TREND_PAST)  # cache only what the model reads

    def fit(train: DataFrame, _info: FoldInfo) -> PipelineModel:
        lr = LogisticRegression(
            featuresCol="features", labelCol=TREND_LABEL, maxIter=params.get("max_iter", 50),
            regParam=params.get("reg_param", 0.001), elasticNetParam=params.get("elastic_net", 0.0),
            tol=params.get("tol", 1e-6))
        return _fit_on_cached_vectors(train, features, TREND_LABEL, lr)

    past = F.col(TREND_PAST)
    last_direction = F.when(past > 0, 1.0).when(past < 0, 0.0).otherwise(0.5)
    return _walk(df, Task(TREND_LABEL, horizon_minutes, "auc_roc", ("auc_roc", "pr_auc"), fit, _probability,
                          lambda i: {"majority": _majority(i), "last_direction": last_direction}, hard=_prediction,
                          min_train_rows=params.get("min_train_rows", 100), classes=("ups", "downs")), params)


ANOMALY_LABEL, ANOMALY_PAST = "label_large_move", "past_large_move"


def train_anomaly(df: DataFrame, features: list[str], params: dict) -> Trained:
    """RandomForest on large moves (|next return| > 3x recent volatility). Baselines: majority,
    and persistence (the same rule over the previous horizon, 0 where unknown)."""
    horizon = int(params.get("horizon_minutes", LARGE_MOVE_MINUTES))
    df = df.select("event_time", *features, F.col(ANOMALY_LABEL).cast("double").alias(ANOMALY_LABEL), ANOMALY_PAST)
    ratio, seed = params.get("negatives_per_positive", 20), params.get("seed", 7)
    counts: dict[str, int] = {}

    def fit(train: DataFrame, info: FoldInfo) -> PipelineModel:
        pos = round(info.train_label_mean * info.train_rows)
        neg = info.train_rows - pos
        if not pos or not neg:  # a one-class forest predicts a 1-element probability: nothing to learn
            raise NotEnoughData(f"the training window holds {pos} large moves and {neg} other ticks: "
                                "a classifier needs both")
        if neg > pos * ratio:  # large moves are rare: keep every positive, sample negatives
            train = train.sampleBy(ANOMALY_LABEL, {0.0: pos * ratio / neg, 1.0: 1.0}, seed=seed)
        rf = RandomForestClassifier(
            featuresCol="raw_features", labelCol=ANOMALY_LABEL, numTrees=params.get("num_trees", 100),
            maxDepth=params.get("max_depth", 10), seed=seed, subsamplingRate=params.get("subsampling", 1.0),
            maxBins=params.get("max_bins", 32), maxMemoryInMB=params.get("max_memory_mb", 256),
            cacheNodeIds=True,  # same trees; each level no longer re-walks every tree from the root (~-40% fit time)
        )
        # The (sampled) training rows, assembled and cached once: the forest reads its input several
        # times (metadata, split candidates, binning), each a sampleBy over all training rows otherwise.
        assembler = VectorAssembler(inputCols=features, outputCol="raw_features", handleInvalid="keep")
        rows = assembler.transform(train).select("raw_features", ANOMALY_LABEL).cache()
        try:
            used = rows.count()
            model = PipelineModel(stages=[assembler, rf.fit(rows)])
        finally:
            rows.unpersist()
        counts.update(train_positives=pos, train_negatives_used=used - pos)
        return model

    persistence = F.coalesce(F.col(ANOMALY_PAST).cast("double"), F.lit(0.0))
    t = _walk(df, Task(ANOMALY_LABEL, horizon, "pr_auc", ("auc_roc", "pr_auc"), fit, _probability,
                       lambda i: {"majority": _majority(i), "persistence": persistence}, hard=_prediction,
                       min_train_rows=params.get("min_train_rows", 100), classes=("large moves", "other ticks")), params)
    t.extra.update(counts)  # the last fold's: the registered model's
    return t


def price_frame(df: DataFrame, features: list[str]) -> DataFrame:
    """What every price horizon reads (features, forward returns, past returns with 0 for
    missing), cached once for all horizons: the caller unpersists it after the last one."""
    pasts = [F.coalesce(F.col(f"past_return_{h}"), F.lit(0.0)).alias(f"past_return_{h}") for h in REGRESSION_HORIZONS]
    return df.select("event_time", *features, *(f"fwd_return_{h}" for h in REGRESSION_HORIZONS), *pasts).cache()


def train_price(df: DataFrame, features: list[str], horizon: str, horizon_minutes: int, params: dict) -> Trained:
    """One horizon: LinearRegression on the forward return. Baselines: zero return and
    persistence (the past return over the horizon, 0 where unknown). `df` is the training set,
    or better `price_frame(training set)`, shared by the horizons (then no per-horizon copy is
    cached)."""
    from pyspark import StorageLevel

    label, past = f"fwd_return_{horizon}", f"past_return_{horizon}"
    shared = df.storageLevel != StorageLevel.NONE
    df = df.select("event_time", *features, label, F.coalesce(F.col(past), F.lit(0.0)).alias(past))

    def fit(train: DataFrame, _info: FoldInfo) -> PipelineModel:
        lr = LinearRegression(featuresCol="features", labelCol=label, regParam=params.get("reg_param", 0.01),
                              maxIter=params.get("max_iter", 50))
        return Pipeline(stages=[*_assembler(features + [past]), lr]).fit(train)

    task = Task(label, horizon_minutes, "rmse", ("rmse", "mae"), fit, _prediction,
                lambda _i: {"zero_return": F.lit(0.0), "persistence": F.col(past)},
                min_train_rows=params.get("min_train_rows", 200), min_test_rows=params.get("min_test_rows", 50))
    try:
        return _walk(df, task, params, cache=not shared)
    except NotEnoughData as exc:
        raise NotEnoughData(f"{horizon}: {exc}") from exc


PROFILE_FEATURES = ["avg_volatility", "std_log_return", "avg_abs_return", "avg_abs_volume_change", "avg_momentum_60m"]


def coin_profiles(df: DataFrame) -> DataFrame:
    return df.groupBy("coin_id").agg(
        F.avg("volatility_15m").alias("avg_volatility"),
        F.stddev_pop("log_return").alias("std_log_return"),
        F.avg(F.abs("return_pct")).alias("avg_abs_return"),
        F.avg(F.abs("volume_change_pct")).alias("avg_abs_volume_change"),
        F.avg("momentum_60m").alias("avg_momentum_60m"),
    ).na.fill(0.0)


def _scaled_clusters(model: PipelineModel, profiles: DataFrame) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(scaled features, cluster, coin) per profile, one small collect."""
    pdf = model.transform(profiles).select("coin_id", vector_to_array(F.col("features")).alias("x"),
                                           "prediction").toPandas()
    x = np.array(pdf["x"].tolist(), dtype=np.float64).reshape(len(pdf), -1)
    return x, pdf["prediction"].to_numpy(dtype=np.int64), [str(c) for c in pdf["coin_id"]]


def cluster_silhouette(model: PipelineModel, profiles: DataFrame) -> dict[str, float]:
    """A (champion) clustering's silhouette on these profiles (numpy, as the gate's), or none
    when it puts every coin in one cluster (no silhouette)."""
    from crypto_assets.ml.evaluation import silhouette

    x, labels, _ = _scaled_clusters(model, profiles)
    return {"silhouette": silhouette(x, labels)} if len(np.unique(labels)) > 1 else {}


def train_clusters(df: DataFrame, params: dict) -> Trained:
    """KMeans over per-coin profiles; its silhouette against random clusterings of the same coins
    with the same k (ml/evaluation.py `random_cluster_interval`)."""
    profiles = coin_profiles(df).cache()
    n = profiles.count()
    if n < 3:
        profiles.unpersist()
        raise NotEnoughData(f"{n} coin(s): a clustering needs at least 3 (k >= 2 clusters with a silhouette, "
                            "k at most coins - 1)")
    k = max(2, min(params.get("k", 3), n - 1))
    km = KMeans(featuresCol="features", k=k, seed=params.get("seed", 7), maxIter=params.get("max_iter", 50))
    model = Pipeline(stages=[*_assembler(PROFILE_FEATURES), km]).fit(profiles)
    x, labels, coins = _scaled_clusters(model, profiles)
    if len(np.unique(labels)) < 2:
        profiles.unpersist()
        raise NotEnoughData(f"KMeans put all {n} coins in one cluster: no silhouette")
    iv = random_cluster_interval(x, labels, resamples=int(params.get("bootstrap_resamples", 200)),
                                 seed=int(params.get("seed", 7)), level=float(params.get("ci_level", 0.9)))
    assessment = Assessment("silhouette", iv.model, {"random": iv.baseline}, "random", iv)
    split = Split(profiles, profiles, datetime.now(UTC), n, n, None, None, cached=profiles)
    return Trained(model, {"silhouette": iv.model}, {**params, "k": k, "baseline_name": "random"}, split,
                   {"assessment": assessment, "assignment": dict(zip(coins, (int(c) for c in labels), strict=True))})


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
