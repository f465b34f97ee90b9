"""The four models as one table. Their assets had four near-identical bodies; what really differs
between them is data and a few small functions, kept here, one `ModelSpec` per model, while the
one training-and-gating step that defs/models.py generates from each entry is shared.

A spec names the model (asset key, MLflow experiment, registered model), its Config (each has
the gate's `gate_margin`: the gate reads it from the asset's own config), the ml/train.py
function that fits it, the gate's metric and direction, what the gate's baseline is, and the
gate's description; its small functions turn the config into training parameters, score the
champion on this run's holdout, and say what is logged (metrics, artifacts) and shown
(metadata). Each spec is its own statement, so its code version (see defs/code_versions.py)
covers its own entry only.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import dagster as dg
from pydantic import Field
from pyspark.ml.classification import RandomForestClassificationModel
from pyspark.ml.evaluation import ClusteringEvaluator, RegressionEvaluator
from pyspark.sql import DataFrame

from crypto_assets.ml.train import (
    Trained,
    binary_metrics,
    linear_coefficients,
    price_frame,
    train_anomaly,
    train_clusters,
    train_price,
    train_trend,
)
from crypto_assets.ml.training_set import DIRECTION_HORIZON_MINUTES, FEATURES, REGRESSION_HORIZONS


class GatedConfig(dg.Config):
    """What every model's config holds: the margin of its champion gate."""

    gate_margin: float


class TrendModelConfig(GatedConfig):
    horizon_minutes: int = DIRECTION_HORIZON_MINUTES
    max_iter: int = Field(default=50, description="LogisticRegression iterations")
    reg_param: float = 0.001
    train_fraction: float = 0.8
    gate_margin: float = Field(default=0.01, description="AUC must exceed the baseline's by this much")


class AnomalyModelConfig(GatedConfig):
    num_trees: int = 100
    max_depth: int = 10
    negatives_per_positive: int = Field(default=20, description="negatives sampled per large move when training")
    train_fraction: float = 0.8
    gate_margin: float = Field(default=0.01, description="PR-AUC must exceed the baseline's by this much")


class PriceModelConfig(GatedConfig):
    horizons: list[str] = Field(default_factory=lambda: list(REGRESSION_HORIZONS))
    reg_param: float = 0.01
    train_fraction: float = 0.8
    min_train_rows: int = 200
    gate_margin: float = Field(default=0.0, description="relative RMSE improvement required over persistence")


class ClustersConfig(GatedConfig):
    k: int = Field(default=3, description="clusters; capped at the number of coins - 1")
    gate_margin: float = Field(default=0.05, description="silhouette must exceed random clusters' by this much")


def with_baseline(metrics: dict[str, float], baseline: dict[str, float],
                  higher_better: dict[str, bool] | None = None) -> dict[str, float]:
    """The model's metrics, plus `baseline_<m>` and `lift_<m>` (positive: better than the
    baseline) for each metric the baseline has too."""
    out = dict(metrics)
    for k, v in metrics.items():
        b = baseline.get(k)
        if b is None:
            continue
        out[f"baseline_{k}"] = b
        out[f"lift_{k}"] = (v - b) if (higher_better or {}).get(k, True) else (b - v)
    return out


@dataclass(frozen=True)
class ModelSpec:
    """One model: what defs/models.py needs to generate its asset and its gate."""

    name: str  # asset key, MLflow experiment, registered model (per horizon: <name>_<horizon>)
    config: type[GatedConfig]
    train: Callable[..., Trained]  # the ml/train.py function: train(source, *train_args(params), params)
    train_args: Callable[[dict[str, Any]], tuple]
    metric: str  # the gate's metric, logged with baseline_<metric> and champion_<metric>
    higher_is_better: bool
    baseline: str  # what the gate's baseline is
    gate_description: str
    description: str
    params: Callable[[Any, str | None], dict[str, Any]]  # (config, horizon) -> training parameters
    champion_metrics: Callable[[Any, Trained], dict[str, float]]  # (champion model, new run) on its holdout
    artifacts: Callable[[Trained], dict[str, Any]]  # JSON artifacts of the MLflow run
    metrics: Callable[[Trained], dict[str, float]] = lambda t: with_baseline(t.metrics, t.extra["baseline"])
    logged_params: Callable[[Trained], dict[str, Any]] = lambda t: t.params  # MLflow params
    metadata: Callable[[Trained], dict[str, Any]] = lambda t: {}  # extra materialization metadata
    horizons: Callable[[Any], list[str]] | None = None  # one registered model per horizon of the config
    prepare: Callable[[DataFrame], DataFrame] | None = None  # shared (cached) input of all horizons
    logs_dataset: bool = True  # log the training set as the MLflow run's input dataset
    skippable: bool = False  # NotEnoughData skips green (the champion stays) instead of failing

    def fit(self, source: DataFrame, params: dict[str, Any]) -> Trained:
        return self.train(source, *self.train_args(params), params)

    def registered(self, horizon: str | None) -> str:
        return f"{self.name}_{horizon}" if horizon else self.name


def _price_metrics(t: Trained) -> dict[str, float]:
    """The gate's baseline is persistence (the past return over the same horizon, carried
    forward); zero-return is logged beside it as the harder bar, with its lift."""
    base = t.extra["baseline"]
    return {**t.metrics, "baseline_rmse": base["rmse_persistence"], "baseline_mae": base["mae_persistence"],
            "zero_return_rmse": base["rmse_zero"], "zero_return_mae": base["mae_zero"],
            "lift_rmse": base["rmse_persistence"] - t.metrics["rmse"],
            "lift_rmse_vs_zero_return": base["rmse_zero"] - t.metrics["rmse"]}


def _cluster_list(t: Trained) -> dict[str, Any]:
    groups: dict[int, list[str]] = {}
    for coin, c in t.extra["assignment"].items():
        groups.setdefault(c, []).append(coin)
    return {"clusters": dg.MetadataValue.md("\n".join(f"- cluster {c}: {', '.join(sorted(v))}"
                                                      for c, v in sorted(groups.items())))}


TREND_MODEL = ModelSpec(
    name="trend_model", config=TrendModelConfig, train=train_trend,
    train_args=lambda p: (FEATURES, p["horizon_minutes"]),
    metric="auc_roc", higher_is_better=True, baseline="the training period's majority class (ROC-AUC 0.5)",
    gate_description="AUC beats the majority baseline by the margin and the champion on the same holdout; promotes",
    description=f"LogisticRegression (+ StandardScaler) on the direction of the next {DIRECTION_HORIZON_MINUTES} minutes.",
    params=lambda c, _h: {"max_iter": c.max_iter, "reg_param": c.reg_param, "train_fraction": c.train_fraction,
                          "horizon_minutes": c.horizon_minutes, "features": ",".join(FEATURES)},
    champion_metrics=lambda champ, t: binary_metrics(champ.transform(t.split.test), "label_up"),
    artifacts=lambda t: {"linear_coefficients.json": linear_coefficients(t.model), "baseline.json": t.extra["baseline"]},
    metadata=lambda t: {"train_rows": t.split.train_rows, "test_rows": t.split.test_rows},
)

ANOMALY_MODEL = ModelSpec(
    name="anomaly_model", config=AnomalyModelConfig, train=train_anomaly, train_args=lambda p: (FEATURES,),
    metric="pr_auc", higher_is_better=True, baseline="the training period's majority class (PR-AUC = large-move share)",
    gate_description="PR-AUC beats the majority baseline by the margin and the champion on the same holdout; promotes",
    description="RandomForest on the probability of a large move in the next 15 minutes (100 trees, depth 10 by default).",
    params=lambda c, _h: {"num_trees": c.num_trees, "max_depth": c.max_depth, "train_fraction": c.train_fraction,
                          "negatives_per_positive": c.negatives_per_positive, "features": ",".join(FEATURES)},
    champion_metrics=lambda champ, t: binary_metrics(champ.transform(t.split.test), "label_large_move"),
    artifacts=lambda t: {"baseline.json": t.extra["baseline"], "feature_importances.json": dict(
        zip(FEATURES, cast(RandomForestClassificationModel, t.model.stages[-1]).featureImportances.toArray().tolist(), strict=False))},
    metadata=lambda t: {"train_positives": t.extra["train_positives"]},
    skippable=True,  # too few large moves yet: skipped, the champion stays, the run stays green
)

PRICE_MODEL = ModelSpec(
    name="price_model", config=PriceModelConfig, train=train_price,
    train_args=lambda p: (FEATURES, p["horizon"], REGRESSION_HORIZONS[p["horizon"]]),
    metric="rmse", higher_is_better=False, baseline="persistence: the past return over the horizon, carried forward",
    gate_description="each trained horizon beats persistence RMSE by the margin and its champion; promotes",
    description="LinearRegression forecasting the return at 1h/4h/24h, one registered model per horizon, trained "
                "where enough history exists; RMSE/MAE beside persistence (the gate's baseline) and zero-return.",
    params=lambda c, h: {"horizon": h, "reg_param": c.reg_param, "train_fraction": c.train_fraction,
                         "min_train_rows": c.min_train_rows, "features": ",".join(FEATURES)},
    champion_metrics=lambda champ, t: {"rmse": RegressionEvaluator(
        labelCol=f"fwd_return_{t.params['horizon']}", metricName="rmse").evaluate(champ.transform(t.split.test))},
    artifacts=lambda t: {"linear_coefficients.json": linear_coefficients(t.model), "baseline.json": t.extra["baseline"]},
    metrics=_price_metrics,
    horizons=lambda c: list(c.horizons),
    prepare=lambda df: price_frame(df, FEATURES),  # read and cached once for all horizons
    skippable=True,  # a horizon without enough history is skipped; its champion stays
)

COIN_CLUSTERS = ModelSpec(
    name="coin_clusters", config=ClustersConfig, train=train_clusters, train_args=lambda p: (),
    metric="silhouette", higher_is_better=True, baseline="the same coins in k random clusters",
    gate_description="silhouette beats random clusters by the margin and the champion's on the same coin profiles; "
                     "promotes",
    description="KMeans over per-coin volatility/volume/return profiles; silhouette vs random clusters.",
    params=lambda c, _h: {"k": c.k, "seed": 7},
    champion_metrics=lambda champ, t: {"silhouette": ClusteringEvaluator(
        featuresCol="features", predictionCol="prediction").evaluate(champ.transform(t.split.test))},
    artifacts=lambda t: {"assignment.json": t.extra["assignment"]},
    logged_params=lambda t: {"k": t.params["k"]},  # k as trained (capped at the number of coins - 1)
    metadata=_cluster_list,
    logs_dataset=False,
)

MODEL_SPECS: tuple[ModelSpec, ...] = (TREND_MODEL, ANOMALY_MODEL, PRICE_MODEL, COIN_CLUSTERS)
