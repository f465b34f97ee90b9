"""Model assets, generated one per entry of the ModelSpec table (crypto_assets.ml.model_specs),
each with its champion gate as its blocking check spec; they train on the training set (see
crypto_assets.defs.training_data).

Each model asset is evaluated walk-forward (several consecutive test windows, each predicted by
a fit on the past: ml/walk_forward.py) against its strongest naive baseline on the same
out-of-sample rows, with a block-bootstrap interval of the lift; the current champion is scored
on the last window. Everything is logged with lineage tags, a version registered (the last
fold's model), and in the same step its champion gate runs with the margin of its own config:
only a version whose lift interval's lower bound clears the margin and that beats the champion
on the same holdout moves the `champion` alias. A rejected
version or a tie keeps the champion and the run green (a WARN check result: the UI shows the
rejection, nothing downstream is blocked, predictions go on with the old champion); only a
broken gate (metrics missing) fails with ERROR and blocks. Too little history for a model whose
spec is `skippable` is a WARN as well; every other error fails the step.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import dagster as dg
from dagster_pyspark import LazyPySparkResource
from pyspark.errors import AnalysisException, IllegalArgumentException
from pyspark.sql import DataFrame

from crypto_assets.defs.code_versions import source_version
from crypto_assets.ml.lineage import data_window, lineage_tags, training_dataset
from crypto_assets.ml.model_specs import (
    ANOMALY_MODEL,
    COIN_CLUSTERS,
    PRICE_MODEL,
    TREND_MODEL,
    GatedConfig,
    ModelSpec,
)
from crypto_assets.ml.registry import (
    ERROR,
    GateVerdict,
    Logged,
    gate_and_promote,
    load_champion,
    log_model,
)
from crypto_assets.ml.train import NotEnoughData, Trained
from crypto_assets.resources import LakehouseResource
from crypto_assets.resources.mlflow import MlflowResource
from crypto_assets.resources.priority import ComputePriorityResource

MODELS: dict[str, Any] = {"group_name": "models", "kinds": {"spark", "mlflow"}, "owners": ["team:ml"]}

# What a champion that cannot score this run's holdout raises (a feature or label column it
# reads is missing or of another type: the feature set changed since it was trained). The gate
# then compares with the baseline only; any other error fails the step.
CHAMPION_CANNOT_SCORE = (AnalysisException, IllegalArgumentException)


# ----------------------------------------------------------------------------- champion gates
def gate_spec(spec: ModelSpec) -> dg.AssetCheckSpec:
    """Evaluated in the model's own step. Blocking, but only an ERROR (a broken gate) blocks:
    a rejection is a WARN result, so the run stays green and predictions use the old champion."""
    return dg.AssetCheckSpec(f"{spec.name}_gate", asset=spec.name, blocking=True, description=spec.gate_description)


def _severity(verdicts: list[GateVerdict]) -> dg.AssetCheckSeverity:
    return dg.AssetCheckSeverity.ERROR if any(v.outcome == ERROR for v in verdicts) else dg.AssetCheckSeverity.WARN


def gate_result(v: GateVerdict) -> dg.AssetCheckResult:
    """The check result of one registered model's gate."""
    return dg.AssetCheckResult(
        passed=v.passed,
        severity=_severity([v]),
        description=v.reason,
        metadata={"outcome": v.outcome, "promoted": v.promoted, "version": v.version or "none", "metric": v.metric,
                  "value": v.value, "baseline": v.baseline, "baseline_name": v.baseline_name or "none",
                  "lift": v.lift, "lift_ci_low": v.ci_low, "lift_ci_high": v.ci_high, "champion_value": v.champion,
                  "champion_before": v.champion_version or "none",
                  "champion_after": v.version if v.promoted else (v.champion_version or "none")},
    )


def horizons_gate_result(verdicts: dict[str, GateVerdict], skipped: dict[str, str]) -> dg.AssetCheckResult:
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


def champion_metrics(log: logging.Logger, champ_version: str | None,
                     score: Callable[[], dict[str, float]]) -> dict[str, float]:
    """The champion's metrics on this run's holdout (the gate compares on the same rows), or none
    when the champion cannot score it (CHAMPION_CANNOT_SCORE); other errors propagate."""
    try:
        return score()
    except CHAMPION_CANNOT_SCORE as exc:
        log.warning(f"champion v{champ_version} could not score this holdout: {exc}")
        return {}


# ----------------------------------------------------------------------------- the shared step
@dataclass
class _Registered:
    """One registered model's outcome in this step."""

    trained: Trained
    metrics: dict[str, float]
    logged: Logged
    verdict: GateVerdict
    champion_before: str | None


_H = TypeVar("_H", str, None)  # a horizon ("1h"), or None for a model without horizons


def _md(logged: Logged, metrics: dict, extra: dict | None = None) -> dict[str, Any]:
    md: dict[str, Any] = {
        "mlflow_run_id": logged.run_id,
        "mlflow_run": dg.MetadataValue.url(logged.url) if logged.url.startswith("http") else logged.url,
        "registered_model": logged.registered_name,
        "model_version": logged.version,
    }
    md.update({k: round(float(v), 6) for k, v in metrics.items() if not k.startswith("fold_")})  # folds: in MLflow
    md.update(extra or {})
    return md


def _register_and_gate(context: dg.AssetExecutionContext, spec: ModelSpec, config: GatedConfig,
                       mlflow: MlflowResource, t: Trained, df: DataFrame, path: str, window: dict[str, str],
                       horizon: str | None) -> _Registered:
    """Score the champion on the same holdout, log and register the new version, gate it."""
    metrics = spec.metrics(t)
    registered = spec.registered(horizon)
    champ_version, champ = load_champion(mlflow, mlflow.registered_name(registered))
    if champ is not None:
        cm = champion_metrics(context.log, champ_version, lambda: spec.champion_metrics(champ, t))
        metrics.update({f"champion_{k}": v for k, v in cm.items()})
    code_version = context.assets_def.code_versions_by_key.get(context.asset_key) or ""
    logged = log_model(
        mlflow, spec.name, t.model, params=spec.logged_params(t), metrics=metrics,
        tags=lineage_tags(context.run.run_id, context.asset_key.to_user_string(), code_version, path, t.split,
                          {**window, **({"horizon": horizon} if horizon else {})}),
        dataset=training_dataset(df, path, window) if spec.logs_dataset else None,
        artifacts=spec.artifacts(t), register_as=registered,
    )
    t.split.unpersist()
    v = gate_and_promote(mlflow, logged.registered_name, context.run.run_id, spec.metric, spec.higher_is_better,
                         config.gate_margin, version=logged.version)
    log = context.log.info if v.passed else context.log.warning
    log(f"{logged.registered_name} v{v.version}: {v.outcome}: {v.reason}")
    return _Registered(t, metrics, logged, v, champ_version)


def _train_and_gate(context: dg.AssetExecutionContext, spec: ModelSpec, config: GatedConfig,
                    lakehouse: LakehouseResource, pyspark: LazyPySparkResource,
                    mlflow: MlflowResource) -> dg.MaterializeResult:
    """Train each registered model of the spec (one, or one per horizon), register and gate it."""
    path = str(lakehouse.lake_path / "training" / "training_set.parquet")
    df = pyspark.spark_session.read.parquet(path)
    window = data_window(path)  # once, not per horizon
    source = spec.prepare(df) if spec.prepare else df

    def each(horizons: list[_H]) -> tuple[dict[_H, _Registered], dict[_H, str]]:
        skippable = (NotEnoughData,) if spec.skippable else ()
        done: dict[_H, _Registered] = {}
        skipped: dict[_H, str] = {}
        for h in horizons:
            try:
                t = spec.fit(source, spec.params(config, h))
            except skippable as exc:
                context.log.info(f"{spec.registered(h)} skipped: {exc}")
                skipped[h] = str(exc)
                continue
            done[h] = _register_and_gate(context, spec, config, mlflow, t, df, path, window, h)
        return done, skipped

    try:
        if spec.horizons:
            return _per_horizon_result(spec, *each(spec.horizons(config)))
        return _single_result(spec, *each([None]))
    finally:
        if spec.prepare:
            source.unpersist()


def _single_result(spec: ModelSpec, done: dict[None, _Registered], skipped: dict[None, str]) -> dg.MaterializeResult:
    if None in skipped:
        return dg.MaterializeResult(metadata={"skipped": skipped[None]}, check_results=[dg.AssetCheckResult(
            passed=False, severity=dg.AssetCheckSeverity.WARN,
            description=f"no model trained: {skipped[None]}; champion unchanged")])
    r = done[None]
    extra = {"champion_version_before": r.champion_before or "none", "gate": r.verdict.outcome,
             **spec.metadata(r.trained)}
    return dg.MaterializeResult(metadata=_md(r.logged, r.metrics, extra), check_results=[gate_result(r.verdict)])


def _per_horizon_result(spec: ModelSpec, done: dict[str, _Registered], skipped: dict[str, str]) -> dg.MaterializeResult:
    md: dict[str, Any] = {f"{h}_skipped": reason for h, reason in skipped.items()}
    for h, r in done.items():
        md.update({f"{h}_{k}": round(v, 8) for k, v in r.metrics.items() if not k.startswith("fold_")})
        md.update({f"{h}_{k}": v for k, v in spec.metadata(r.trained).items()})
        md.update({f"{h}_model_version": r.logged.version, f"{h}_mlflow_run_id": r.logged.run_id,
                   f"{h}_gate": r.verdict.outcome})
    md["horizons_trained"] = list(done)
    verdicts = {h: r.verdict for h, r in done.items()}
    return dg.MaterializeResult(metadata=md, check_results=[horizons_gate_result(verdicts, skipped)])


# ----------------------------------------------------------------------------- the assets
def model_asset(spec: ModelSpec) -> dg.AssetsDefinition:
    """The spec's asset, its gate as its blocking check spec, and its code version: a hash of the
    source of this step, the spec's entry and what they call (defs/code_versions.py), so that
    Dagster shows a model stale, and its MLflow versions carry another `code_version`, exactly
    when its training or gating logic changed."""

    def step(context: dg.AssetExecutionContext, config: spec.config,  # type: ignore[valid-type]
             lakehouse: LakehouseResource, pyspark: LazyPySparkResource, mlflow: MlflowResource,
             compute_priority: ComputePriorityResource) -> dg.MaterializeResult:
        compute_priority.lower(context.log)
        return _train_and_gate(context, spec, config, lakehouse, pyspark, mlflow)

    return dg.asset(name=spec.name, deps=["training_set"], description=spec.description, check_specs=[gate_spec(spec)],
                    code_version=source_version(model_asset, spec), **MODELS)(step)


trend_model = model_asset(TREND_MODEL)
anomaly_model = model_asset(ANOMALY_MODEL)
price_model = model_asset(PRICE_MODEL)
coin_clusters = model_asset(COIN_CLUSTERS)
