"""Models: four Spark MLlib models tracked in MLflow, trained on the training set (see
crypto_assets.defs.training_data). Each model asset trains on a time split, evaluates itself, its naive baseline and the current
champion on the same holdout, logs everything with lineage tags, registers a version, and in
the same step runs its champion gate (a blocking check spec): only a version that beats the
baseline by the margin and the champion moves the `champion` alias. A rejected version or a tie
keeps the champion and the run green (a WARN check result: the UI shows the rejection, nothing
downstream is blocked, predictions go on with the old champion); only a broken gate (metrics
missing) fails with ERROR and blocks.
"""

from collections.abc import Callable
from typing import Any

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pydantic import Field

from crypto_assets.ml.registry import ERROR, GateVerdict, Logged, gate_and_promote, load_champion, log_model
from crypto_assets.ml.training_set import DIRECTION_HORIZON_MINUTES, FEATURES, REGRESSION_HORIZONS
from crypto_assets.resources import LakehouseResource
from crypto_assets.resources.mlflow import MlflowResource
from crypto_assets.resources.priority import ComputePriorityResource

MODELS = dict(group_name="models", kinds={"spark", "mlflow"}, owners=["team:ml"], code_version="1")
def _lineage(context: dg.AssetExecutionContext, path: str, split, extra: dict | None = None) -> dict[str, str]:
    tags = {
        "dagster_run_id": context.run.run_id,
        "asset_key": context.asset_key.to_user_string(),
        "code_version": context.assets_def.code_versions_by_key.get(context.asset_key) or "",
        "training_set_path": path,
        "split_time": str(split.split_time),
        "train_rows": str(split.train_rows),
        "test_rows": str(split.test_rows),
        "train_max_time": str(split.train_max_time),
        "test_min_time": str(split.test_min_time),
    }
    tags.update({k: str(v) for k, v in (extra or {}).items()})
    return tags


def data_window(path: str) -> dict[str, str]:
    """Min/max event time and row count of the training set file the models read, exact, from
    its event_time column alone (pyarrow, milliseconds; was a Spark job per model)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    t = pq.read_table(path, columns=["event_time"])["event_time"]
    mm = pc.min_max(t)
    return {"data_min_time": str(mm["min"].as_py()), "data_max_time": str(mm["max"].as_py()), "data_rows": str(len(t))}


def training_dataset(df, path: str, window: dict[str, str]):
    """The training set as an MLflow Spark dataset (source path, schema, plan digest) without a
    pass over its rows. `mlflow.data.from_spark` profiles the dataset with an RDD countApprox
    through Python workers over every row: log_input waits 5 s for it and the job then keeps
    both cores busy in the background (~14 s more on 1M rows), delaying the next Spark job."""
    from mlflow.data.spark_dataset import SparkDataset
    from mlflow.data.spark_dataset_source import SparkDatasetSource

    class _Counted(SparkDataset):
        @property
        def profile(self):
            return {"approx_count": int(window["data_rows"])}  # exact, from data_window

    return _Counted(df=df, source=SparkDatasetSource(path=path), name="training_set")


def with_baseline(metrics: dict, baseline: dict, higher_better: dict[str, bool]) -> dict[str, float]:
    """The metrics plus baseline_<k> and lift_<k> (over the baseline; higher is better unless
    higher_better[k] is False) for every metric the baseline has."""
    out = dict(metrics)
    for k, v in metrics.items():
        b = baseline.get(k)
        if b is None:
            continue
        out[f"baseline_{k}"] = b
        out[f"lift_{k}"] = (v - b) if higher_better.get(k, True) else (b - v)
    return out


def _md(logged, metrics: dict, extra: dict | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {
        "mlflow_run_id": logged.run_id,
        "mlflow_run": dg.MetadataValue.url(logged.url) if logged.url.startswith("http") else logged.url,
        "registered_model": logged.registered_name,
        "model_version": logged.version,
    }
    md.update({k: round(float(v), 6) for k, v in metrics.items()})
    md.update(extra or {})
    return md


def _read(pyspark: LazyPySparkResource, path: str):
    return pyspark.spark_session.read.parquet(path)


# ----------------------------------------------------------------------------- champion gates
def _gate_spec(asset: str, description: str) -> dg.AssetCheckSpec:
    """Evaluated in the model's own step. Blocking, but only an ERROR (a broken gate) blocks:
    a rejection is a WARN result, so the run stays green and predictions use the old champion."""
    return dg.AssetCheckSpec(f"{asset}_gate", asset=asset, blocking=True, description=description)


def _severity(verdicts: list[GateVerdict]) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if any(v.outcome == ERROR for v in verdicts) else dg.AssetCheckSeverity.WARN


def _gate(context: dg.AssetExecutionContext, mlflow: MlflowResource, logged: Logged, metric: str,
          higher_is_better: bool, margin: float) -> GateVerdict:
    v = gate_and_promote(mlflow, logged.registered_name, context.run.run_id, metric, higher_is_better, margin,
                         version=logged.version)
    (context.log.info if v.passed else context.log.warning)(f"{logged.registered_name} v{v.version}: {v.outcome}: {v.reason}")
    return v


def _gate_result(v: GateVerdict) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=v.passed,
        severity=_severity([v]),
        description=v.reason,
        metadata={"outcome": v.outcome, "promoted": v.promoted, "version": v.version or "none", "metric": v.metric,
                  "value": v.value, "baseline": v.baseline, "champion_value": v.champion,
                  "champion_before": v.champion_version or "none",
                  "champion_after": v.version if v.promoted else (v.champion_version or "none")},
    )


def _champion_metrics(context: dg.AssetExecutionContext, champ_version: str | None,
                      score: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The champion's metrics on this run's holdout (the gate compares on the same rows)."""
    try:
        return score()
    except Exception as exc:  # noqa: BLE001 - e.g. the feature set changed
        context.log.warning(f"champion v{champ_version} could not score this holdout: {exc}")
        return {}


# ----------------------------------------------------------------------------- models
class TrendModelConfig(dg.Config):
    horizon_minutes: int = DIRECTION_HORIZON_MINUTES
    max_iter: int = Field(default=50, description="LogisticRegression iterations")
    reg_param: float = 0.001
    train_fraction: float = 0.8
    gate_margin: float = Field(default=0.01, description="AUC must exceed the baseline's by this much")


@dg.asset(deps=["training_set"], check_specs=[_gate_spec("trend_model", "AUC beats the majority baseline by the "
          "margin and the champion on the same holdout; promotes")], **MODELS)
def trend_model(context: dg.AssetExecutionContext, config: TrendModelConfig, lakehouse: LakehouseResource,
                pyspark: LazyPySparkResource, mlflow: MlflowResource, compute_priority: ComputePriorityResource) -> dg.MaterializeResult:
    """LogisticRegression (+ StandardScaler) on the direction of the next 15 minutes."""
    compute_priority.lower(context.log)
    from crypto_assets.ml.train import binary_metrics, linear_coefficients, train_trend

    path = str(lakehouse.lake_path / "training" / "training_set.parquet")
    df = _read(pyspark, path)
    params = {"max_iter": config.max_iter, "reg_param": config.reg_param, "train_fraction": config.train_fraction,
              "horizon_minutes": config.horizon_minutes, "features": ",".join(FEATURES)}
    t = train_trend(df, FEATURES, config.horizon_minutes, params)
    metrics = with_baseline(t.metrics, t.extra["baseline"], {})
    champ_version, champ = load_champion(mlflow, mlflow.registered_name("trend_model"))
    if champ is not None:
        cm = _champion_metrics(context, champ_version, lambda: binary_metrics(champ.transform(t.split.test), "label_up"))
        metrics.update({f"champion_{k}": v for k, v in cm.items()})
    window = data_window(path)
    logged = log_model(
        mlflow, "trend_model", t.model, params=params, metrics=metrics,
        tags=_lineage(context, path, t.split, window), dataset=training_dataset(df, path, window),
        artifacts={"linear_coefficients.json": linear_coefficients(t.model), "baseline.json": t.extra["baseline"]},
    )
    t.split.unpersist()
    context.log.info(f"trend_model v{logged.version}: AUC {t.metrics['auc_roc']:.4f} vs baseline 0.5")
    verdict = _gate(context, mlflow, logged, "auc_roc", True, config.gate_margin)
    return dg.MaterializeResult(
        metadata=_md(logged, metrics, {"champion_version_before": champ_version or "none", "gate": verdict.outcome,
                                       "train_rows": t.split.train_rows, "test_rows": t.split.test_rows}),
        check_results=[_gate_result(verdict)],
    )


class AnomalyModelConfig(dg.Config):
    num_trees: int = 100
    max_depth: int = 10
    negatives_per_positive: int = Field(default=20, description="negatives sampled per anomaly when training")
    train_fraction: float = 0.8
    gate_margin: float = Field(default=0.01, description="PR-AUC must exceed the baseline's by this much")


@dg.asset(deps=["training_set"], check_specs=[_gate_spec("anomaly_model", "PR-AUC beats the majority baseline by "
          "the margin and the champion on the same holdout; promotes")], **MODELS)
def anomaly_model(context: dg.AssetExecutionContext, config: AnomalyModelConfig, lakehouse: LakehouseResource,
                  pyspark: LazyPySparkResource, mlflow: MlflowResource, compute_priority: ComputePriorityResource) -> dg.MaterializeResult:
    """RandomForestClassifier learning the anomaly labels (100 trees, depth 10 by default)."""
    compute_priority.lower(context.log)
    from crypto_assets.ml.train import binary_metrics, train_anomaly

    path = str(lakehouse.lake_path / "training" / "training_set.parquet")
    df = _read(pyspark, path)
    params = {"num_trees": config.num_trees, "max_depth": config.max_depth, "train_fraction": config.train_fraction,
              "negatives_per_positive": config.negatives_per_positive, "features": ",".join(FEATURES)}
    try:
        t = train_anomaly(df, FEATURES, params)
    except ValueError as exc:  # too few anomalies yet: skipped, the champion stays, the run stays green
        context.log.info(f"anomaly_model skipped: {exc}")
        return dg.MaterializeResult(metadata={"skipped": str(exc)}, check_results=[dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.WARN, description=f"no model trained: {exc}; champion unchanged")])
    metrics = with_baseline(t.metrics, t.extra["baseline"], {})
    champ_version, champ = load_champion(mlflow, mlflow.registered_name("anomaly_model"))
    if champ is not None:
        cm = _champion_metrics(context, champ_version, lambda: binary_metrics(champ.transform(t.split.test), "label_anomaly"))
        metrics.update({f"champion_{k}": v for k, v in cm.items()})
    window = data_window(path)
    logged = log_model(
        mlflow, "anomaly_model", t.model, params=params, metrics=metrics,
        tags=_lineage(context, path, t.split, window),
        dataset=training_dataset(df, path, window),
        artifacts={"baseline.json": t.extra["baseline"],
                   "feature_importances.json": dict(zip(FEATURES, t.model.stages[-1].featureImportances.toArray().tolist()))},
    )
    t.split.unpersist()
    verdict = _gate(context, mlflow, logged, "pr_auc", True, config.gate_margin)
    return dg.MaterializeResult(
        metadata=_md(logged, metrics, {"train_positives": t.extra["train_positives"], "gate": verdict.outcome,
                                       "champion_version_before": champ_version or "none"}),
        check_results=[_gate_result(verdict)],
    )


class PriceModelConfig(dg.Config):
    horizons: list[str] = Field(default_factory=lambda: list(REGRESSION_HORIZONS))
    reg_param: float = 0.01
    train_fraction: float = 0.8
    min_train_rows: int = 200
    gate_margin: float = Field(default=0.0, description="relative RMSE improvement required over persistence")


@dg.asset(deps=["training_set"], check_specs=[_gate_spec("price_model", "each trained horizon beats persistence "
          "RMSE by the margin and its champion; promotes")], **MODELS)
def price_model(context: dg.AssetExecutionContext, config: PriceModelConfig, lakehouse: LakehouseResource,
                pyspark: LazyPySparkResource, mlflow: MlflowResource, compute_priority: ComputePriorityResource) -> dg.MaterializeResult:
    """LinearRegression forecasting the return at 1h/4h/24h, one registered model per horizon,
    trained where enough history exists; RMSE/MAE beside persistence (the gate's baseline) and
    zero-return."""
    compute_priority.lower(context.log)
    from pyspark.ml.evaluation import RegressionEvaluator

    from crypto_assets.ml.train import linear_coefficients, price_frame, train_price

    path = str(lakehouse.lake_path / "training" / "training_set.parquet")
    df = _read(pyspark, path)
    md: dict[str, Any] = {}
    verdicts: dict[str, GateVerdict] = {}
    skipped: dict[str, str] = {}
    window = data_window(path)  # once, not per horizon
    frame = price_frame(df, FEATURES)  # read and cached once for all horizons
    try:
        for h in config.horizons:
            params = {"horizon": h, "reg_param": config.reg_param, "train_fraction": config.train_fraction,
                      "min_train_rows": config.min_train_rows, "features": ",".join(FEATURES)}
            try:
                t = train_price(frame, FEATURES, h, REGRESSION_HORIZONS[h], params)
            except ValueError as exc:
                context.log.info(f"price model {h} skipped: {exc}")
                md[f"{h}_skipped"] = skipped[h] = str(exc)
                continue
            base = t.extra["baseline"]
            metrics = dict(t.metrics)
            # The gate's baseline is persistence (the past return over the same horizon, carried
            # forward); zero-return is logged beside it as the harder bar, with its lift.
            metrics.update({"baseline_rmse": base["rmse_persistence"], "baseline_mae": base["mae_persistence"],
                            "zero_return_rmse": base["rmse_zero"], "zero_return_mae": base["mae_zero"],
                            "lift_rmse": base["rmse_persistence"] - t.metrics["rmse"],
                            "lift_rmse_vs_zero_return": base["rmse_zero"] - t.metrics["rmse"]})
            champ_version, champ = load_champion(mlflow, mlflow.registered_name(f"price_model_{h}"))
            if champ is not None:
                ev = RegressionEvaluator(labelCol=f"fwd_return_{h}", metricName="rmse")
                metrics.update({f"champion_{k}": v for k, v in _champion_metrics(
                    context, champ_version, lambda: {"rmse": ev.evaluate(champ.transform(t.split.test))}).items()})
            logged = log_model(
                mlflow, "price_model", t.model, params=params, metrics=metrics,
                tags=_lineage(context, path, t.split, {**window, "horizon": h}),
                dataset=training_dataset(df, path, window),
                artifacts={"linear_coefficients.json": linear_coefficients(t.model), "baseline.json": base},
                register_as=f"price_model_{h}",
            )
            t.split.unpersist()
            verdicts[h] = _gate(context, mlflow, logged, "rmse", False, config.gate_margin)
            md.update({f"{h}_{k}": round(v, 8) for k, v in metrics.items()})
            md.update({f"{h}_model_version": logged.version, f"{h}_mlflow_run_id": logged.run_id,
                       f"{h}_gate": verdicts[h].outcome})
    finally:
        frame.unpersist()
    md["horizons_trained"] = list(verdicts)
    return dg.MaterializeResult(metadata=md, check_results=[_price_gate_result(verdicts, skipped)])


def _price_gate_result(verdicts: dict[str, GateVerdict], skipped: dict[str, str]) -> dg.AssetCheckResult:
    """One check over the horizons: passed when every trained horizon passed; nothing trained
    (too little history) is a WARN, not an error: the champions stay and the run goes on."""
    if not verdicts:
        return dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.WARN,
            description="no price model was trained in this run (not enough history); champions unchanged"
            + "".join(f"; {reason}" for reason in skipped.values()),
            metadata={"horizons_trained": [], "horizons_skipped": sorted(skipped)},
        )
    md: dict[str, Any] = {"horizons_trained": list(verdicts), "horizons_skipped": sorted(skipped)}
    for h, v in verdicts.items():
        md.update({f"{h}_outcome": v.outcome, f"{h}_promoted": v.promoted, f"{h}_version": v.version or "none",
                   f"{h}_champion_after": v.version if v.promoted else (v.champion_version or "none")})
    return dg.AssetCheckResult(
        passed=all(v.passed for v in verdicts.values()),
        severity=_severity(list(verdicts.values())),
        description="; ".join(f"{h} v{v.version}: {v.outcome}: {v.reason}" for h, v in verdicts.items()),
        metadata=md,
    )


class ClustersConfig(dg.Config):
    k: int = Field(default=3, description="clusters; capped at the number of coins - 1")
    gate_margin: float = Field(default=0.05, description="silhouette must exceed random clusters' by this much")


@dg.asset(deps=["training_set"], check_specs=[_gate_spec("coin_clusters", "silhouette beats random clusters by "
          "the margin and the champion's on the same coin profiles; promotes")], **MODELS)
def coin_clusters(context: dg.AssetExecutionContext, config: ClustersConfig, lakehouse: LakehouseResource,
                  pyspark: LazyPySparkResource, mlflow: MlflowResource, compute_priority: ComputePriorityResource) -> dg.MaterializeResult:
    """KMeans over per-coin volatility/volume/return profiles; silhouette vs random clusters."""
    compute_priority.lower(context.log)
    from crypto_assets.ml.train import train_clusters

    path = str(lakehouse.lake_path / "training" / "training_set.parquet")
    df = _read(pyspark, path)
    t = train_clusters(df, {"k": config.k, "seed": 7})
    metrics = {"silhouette": t.metrics["silhouette"], "baseline_silhouette": t.extra["baseline"]["silhouette"],
               "lift_silhouette": t.metrics["silhouette"] - t.extra["baseline"]["silhouette"]}
    champ_version, champ = load_champion(mlflow, mlflow.registered_name("coin_clusters"))
    if champ is not None:  # the champion's clusters of the same coin profiles
        from pyspark.ml.evaluation import ClusteringEvaluator

        ev = ClusteringEvaluator(featuresCol="features", predictionCol="prediction")
        metrics.update({f"champion_{k}": v for k, v in _champion_metrics(
            context, champ_version, lambda: {"silhouette": ev.evaluate(champ.transform(t.split.test))}).items()})
    logged = log_model(
        mlflow, "coin_clusters", t.model, params={"k": t.params["k"]}, metrics=metrics,
        tags={**_lineage(context, path, t.split, data_window(path))},
        artifacts={"assignment.json": t.extra["assignment"]},
    )
    verdict = _gate(context, mlflow, logged, "silhouette", True, config.gate_margin)
    groups: dict[int, list[str]] = {}
    for coin, c in t.extra["assignment"].items():
        groups.setdefault(c, []).append(coin)
    clusters = "\n".join(f"- cluster {c}: {', '.join(sorted(v))}" for c, v in sorted(groups.items()))
    return dg.MaterializeResult(
        metadata=_md(logged, metrics, {"gate": verdict.outcome, "champion_version_before": champ_version or "none",
                                       "clusters": dg.MetadataValue.md(clusters)}),
        check_results=[_gate_result(verdict)],
    )
