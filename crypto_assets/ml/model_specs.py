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
from dataclasses import asdict, dataclass
from typing import Any, cast

import dagster as dg
from pydantic import Field
from pyspark.ml.classification import RandomForestClassificationModel
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.sql import DataFrame

from crypto_assets.ml.evaluation import Assessment
from crypto_assets.ml.train import (
    ANOMALY_LABEL,
    Trained,
    binary_metrics,
    cluster_silhouette,
    linear_coefficients,
    price_frame,
    train_anomaly,
    train_clusters,
    train_price,
    train_trend,
)
from crypto_assets.ml.training_set import DIRECTION_HORIZON_MINUTES, FEATURES, LARGE_MOVE_MINUTES, REGRESSION_HORIZONS


class GatedConfig(dg.Config):
    """What every model's config holds: its champion gate's margin (the lower bound of the lift
    interval must exceed it) and the walk-forward evaluation the gate reads."""

    gate_margin: float = Field(default=0.0, description="the lift's CI lower bound must exceed this")
    folds: int = Field(default=3, description="walk-forward test windows (consecutive, train on the past)")
    test_fraction: float = Field(default=0.3, description="share of the labelled time span the test windows cover")
    bootstrap_resamples: int = Field(default=200, description="block-bootstrap resamples of the lift interval")
    block_rows: int | None = Field(default=None, description="bootstrap block length; default: "
                                   "max(n^(1/3), rows per label horizon)")
    ci_level: float = Field(default=0.9, description="confidence level of the lift interval")


def walk_forward_params(c: GatedConfig) -> dict[str, Any]:
    return {"folds": c.folds, "test_fraction": c.test_fraction, "bootstrap_resamples": c.bootstrap_resamples,
            "block_rows": c.block_rows, "ci_level": c.ci_level}


# The margins are 0: the lift interval is the noise bar now (its lower bound must be > 0 at 90 %);
# a positive margin would ask for a materially better model on top, a choice left to the config.
class TrendModelConfig(GatedConfig):
    horizon_minutes: int = DIRECTION_HORIZON_MINUTES
    max_iter: int = Field(default=50, description="LogisticRegression iterations")
    reg_param: float = 0.001


class AnomalyModelConfig(GatedConfig):
    num_trees: int = 100
    max_depth: int = 10
    negatives_per_positive: int = Field(default=20, description="negatives sampled per large move when training")


class PriceModelConfig(GatedConfig):
    horizons: list[str] = Field(default_factory=lambda: list(REGRESSION_HORIZONS))
    reg_param: float = 0.01
    min_train_rows: int = 200
    gate_margin: float = Field(default=0.0, description="the relative RMSE lift's CI lower bound must exceed this")


class ClustersConfig(GatedConfig):
    k: int = Field(default=3, description="clusters; capped at the number of coins - 1")


def assessment_of(t: Trained) -> Assessment:
    """The gate's evidence of a trained model: walk-forward, or (clusters) random clusterings."""
    wf = t.extra.get("walk_forward")
    return wf.assessment if wf is not None else t.extra["assessment"]


def gate_metrics(t: Trained) -> dict[str, float]:
    """What the MLflow run logs for the gate and the report: walk-forward per-fold and pooled
    metrics, every baseline candidate, the strongest, the lift and its interval, `holdout_<m>`."""
    wf = t.extra.get("walk_forward")
    if wf is not None:
        return wf.metrics()
    a = assessment_of(t)
    return {**t.metrics, **a.metrics(), f"holdout_{a.metric}": a.value}


def evaluation_json(t: Trained) -> dict[str, Any]:
    """The evaluation as an MLflow artifact: folds, dropped folds, baselines, the lift interval."""
    a = assessment_of(t)
    out: dict[str, Any] = {"metric": a.metric, "value": a.value, "baselines": a.baselines,
                           "baseline_name": a.baseline_name, "interval": asdict(a.interval)}
    wf = t.extra.get("walk_forward")
    if wf is not None:
        out.update(folds=[{**asdict(f), "test_start": str(f.test_start), "test_end": str(f.test_end)} for f in wf.folds],
                   dropped=wf.dropped, pooled=wf.pooled, baseline_metrics=wf.baselines)
    return out


def gate_metadata(t: Trained) -> dict[str, Any]:
    """Materialization metadata: the key numbers of the gate's evidence."""
    a = assessment_of(t)
    wf = t.extra.get("walk_forward")
    md = wf.metadata() if wf is not None else {
        "baseline_name": a.baseline_name,
        "lift_ci": f"{a.interval.describe()} over {a.baseline_name} {a.baseline_value:.4g}"}
    return md


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
    metrics: Callable[[Trained], dict[str, float]] = gate_metrics
    logged_params: Callable[[Trained], dict[str, Any]] = lambda t: t.params  # MLflow params
    metadata: Callable[[Trained], dict[str, Any]] = gate_metadata  # extra materialization metadata
    horizons: Callable[[Any], list[str]] | None = None  # one registered model per horizon of the config
    prepare: Callable[[DataFrame], DataFrame] | None = None  # shared (cached) input of all horizons
    logs_dataset: bool = True  # log the training set as the MLflow run's input dataset
    skippable: bool = False  # NotEnoughData skips green (the champion stays) instead of failing

    def fit(self, source: DataFrame, params: dict[str, Any]) -> Trained:
        return self.train(source, *self.train_args(params), params)

    def registered(self, horizon: str | None) -> str:
        return f"{self.name}_{horizon}" if horizon else self.name


def _cluster_list(t: Trained) -> dict[str, Any]:
    groups: dict[int, list[str]] = {}
    for coin, c in t.extra["assignment"].items():
        groups.setdefault(c, []).append(coin)
    return {**gate_metadata(t), "clusters": dg.MetadataValue.md(
        "\n".join(f"- cluster {c}: {', '.join(sorted(v))}" for c, v in sorted(groups.items())))}


_GATE = ("{m}'s lift over the strongest naive baseline ({b}) on the pooled walk-forward out-of-sample rows "
         "has a block-bootstrap CI lower bound above the margin, and it beats the champion on the last fold's "
         "holdout; promotes")

TREND_MODEL = ModelSpec(
    name="trend_model", config=TrendModelConfig, train=train_trend,
    train_args=lambda p: (FEATURES, p["horizon_minutes"]),
    metric="auc_roc", higher_is_better=True,
    baseline="the better of the training period's majority class and the last horizon's direction",
    gate_description=_GATE.format(m="ROC-AUC", b="majority class or last direction"),
    description=f"LogisticRegression (+ StandardScaler) on the direction of the next {DIRECTION_HORIZON_MINUTES} "
                "minutes, evaluated walk-forward.",
    params=lambda c, _h: {"max_iter": c.max_iter, "reg_param": c.reg_param, "horizon_minutes": c.horizon_minutes,
                          "features": ",".join(FEATURES), **walk_forward_params(c)},
    champion_metrics=lambda champ, t: binary_metrics(champ.transform(t.split.test), "label_up"),
    artifacts=lambda t: {"linear_coefficients.json": linear_coefficients(t.model), "evaluation.json": evaluation_json(t)},
)

ANOMALY_MODEL = ModelSpec(
    name="anomaly_model", config=AnomalyModelConfig, train=train_anomaly, train_args=lambda p: (FEATURES,),
    metric="pr_auc", higher_is_better=True,
    baseline="the better of the majority class and persistence (a large move over the previous horizon)",
    gate_description=_GATE.format(m="PR-AUC", b="majority class or persistence"),
    description="RandomForestClassifier on large moves (|return over the next 15 min| > 3x recent volatility; "
                "100 trees, depth 10 by default), evaluated walk-forward.",
    params=lambda c, _h: {"num_trees": c.num_trees, "max_depth": c.max_depth, "horizon_minutes": LARGE_MOVE_MINUTES,
                          "negatives_per_positive": c.negatives_per_positive, "features": ",".join(FEATURES),
                          **walk_forward_params(c)},
    champion_metrics=lambda champ, t: binary_metrics(champ.transform(t.split.test), ANOMALY_LABEL),
    artifacts=lambda t: {"evaluation.json": evaluation_json(t), "feature_importances.json": dict(
        zip(FEATURES, cast(RandomForestClassificationModel, t.model.stages[-1]).featureImportances.toArray().tolist(), strict=False))},
    metadata=lambda t: {**gate_metadata(t), "train_positives": t.extra["train_positives"]},
    skippable=True,  # too few large moves yet: skipped, the champion stays, the run stays green
)

PRICE_MODEL = ModelSpec(
    name="price_model", config=PriceModelConfig, train=train_price,
    train_args=lambda p: (FEATURES, p["horizon"], REGRESSION_HORIZONS[p["horizon"]]),
    metric="rmse", higher_is_better=False, baseline="the better of zero return and persistence (the past return "
                                                    "over the horizon, carried forward)",
    gate_description="each trained horizon: " + _GATE.format(m="RMSE (relative lift)", b="zero return or persistence"),
    description="LinearRegression forecasting the return at 1h/4h/24h, one registered model per horizon, trained "
                "where enough history exists, evaluated walk-forward against zero return and persistence.",
    params=lambda c, h: {"horizon": h, "reg_param": c.reg_param, "min_train_rows": c.min_train_rows,
                         "features": ",".join(FEATURES), **walk_forward_params(c)},
    champion_metrics=lambda champ, t: {"rmse": RegressionEvaluator(
        labelCol=f"fwd_return_{t.params['horizon']}", metricName="rmse").evaluate(champ.transform(t.split.test))},
    artifacts=lambda t: {"linear_coefficients.json": linear_coefficients(t.model), "evaluation.json": evaluation_json(t)},
    horizons=lambda c: list(c.horizons),
    prepare=lambda df: price_frame(df, FEATURES),  # read and cached once for all horizons
    skippable=True,  # a horizon without enough history is skipped; its champion stays
)

COIN_CLUSTERS = ModelSpec(
    name="coin_clusters", config=ClustersConfig, train=train_clusters, train_args=lambda p: (),
    metric="silhouette", higher_is_better=True, baseline="the same coins in random clusters of the same sizes (k)",
    gate_description="silhouette minus random clusterings' (same coins, same k and sizes): the interval's lower "
                     "bound above the margin, and the champion's on the same coin profiles; promotes",
    description="KMeans over per-coin volatility/volume/return profiles; silhouette vs random clusterings.",
    params=lambda c, _h: {"k": c.k, "seed": 7, "bootstrap_resamples": c.bootstrap_resamples, "ci_level": c.ci_level},
    champion_metrics=lambda champ, t: cluster_silhouette(champ, t.split.test),
    artifacts=lambda t: {"assignment.json": t.extra["assignment"], "evaluation.json": evaluation_json(t)},
    logged_params=lambda t: {k: t.params[k] for k in ("k", "bootstrap_resamples", "ci_level", "baseline_name")},
    metadata=_cluster_list,
    logs_dataset=False,
    skippable=True,  # fewer than 3 coins: no clustering to judge; skipped green with the reason
)

MODEL_SPECS: tuple[ModelSpec, ...] = (TREND_MODEL, ANOMALY_MODEL, PRICE_MODEL, COIN_CLUSTERS)
