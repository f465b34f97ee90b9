"""MLflow runs, lineage tags, registration, and the champion gate."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crypto_assets.ml.spark_import_guard import guard_spark_connect_import
from crypto_assets.resources.mlflow import MlflowResource

guard_spark_connect_import()  # before mlflow.spark imports pyspark.ml.connect (see the module)

CHAMPION = "champion"


@dataclass
class Logged:
    registered_name: str
    version: str
    run_id: str
    experiment_id: str
    url: str


def log_model(
    mlf: MlflowResource,
    model_name: str,
    spark_model,
    *,
    params: dict[str, Any],
    metrics: dict[str, float],
    tags: dict[str, str],
    dataset=None,
    artifacts: dict[str, Any] | None = None,
    register_as: str | None = None,
) -> Logged:
    """One MLflow run: params, metrics (model, baseline, lift), lineage tags, the input dataset,
    JSON artifacts and the Spark model, registered as a new version."""
    mlflow = mlf.activate()
    import mlflow.spark as mlflow_spark

    exp_id = mlf.experiment_id(model_name)
    name = mlf.registered_name(register_as or model_name)
    with mlflow.start_run(experiment_id=exp_id, run_name=f"{model_name}-{tags.get('dagster_run_id', '')[:8]}") as run:
        mlflow.log_params({k: v for k, v in params.items() if v is not None})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        mlflow.set_tags(tags)
        if dataset is not None:
            mlflow.log_input(dataset, context="training")
        with tempfile.TemporaryDirectory() as tmp:
            for fname, obj in (artifacts or {}).items():
                p = Path(tmp) / fname
                p.write_text(json.dumps(obj, indent=2, default=str))
                mlflow.log_artifact(str(p))
        # Explicit requirements: inferring them imports the model in a subprocess (~25 s per model).
        import pyspark

        info = mlflow_spark.log_model(
            spark_model, artifact_path="model", registered_model_name=name,
            pip_requirements=[f"pyspark=={pyspark.__version__}"],
        )
        run_id = run.info.run_id
    client = mlf.client()
    version = str(info.registered_model_version) if getattr(info, "registered_model_version", None) else None
    if version is None:
        versions = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
        version = str(max(int(v.version) for v in versions))
    for k in ("dagster_run_id", "asset_key", "code_version"):
        if k in tags:
            client.set_model_version_tag(name, version, k, tags[k])
    client.set_model_version_tag(name, version, "gate", "pending")
    return Logged(name, version, run_id, exp_id, mlf.run_url(exp_id, run_id))


def champion_version(mlf: MlflowResource, registered_name: str) -> str | None:
    """The version the `champion` alias points at; None when there is no such registered model
    or no champion yet. Any other failure (the store unreachable, a bad name) raises: taken for
    "no champion", it would let a gate promote a version without comparing it with the champion."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    try:
        model = mlf.client().get_registered_model(registered_name)
    except MlflowException as exc:
        if exc.error_code != ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
            raise
        return None
    version = (model.aliases or {}).get(CHAMPION)
    return str(version) if version is not None else None


def load_champion(mlf: MlflowResource, registered_name: str):
    """(version, Spark PipelineModel) of the champion, or (None, None)."""
    version = champion_version(mlf, registered_name)
    if version is None:
        return None, None
    mlf.activate()
    import mlflow.spark as mlflow_spark

    return version, mlflow_spark.load_model(f"models:/{registered_name}@{CHAMPION}")


def champion_artifact(mlf: MlflowResource, registered_name: str, filename: str) -> tuple[str | None, dict | None]:
    version = champion_version(mlf, registered_name)
    if version is None:
        return None, None
    client = mlf.client()
    mv = client.get_model_version(registered_name, version)
    mlf.activate()
    import mlflow.artifacts as mlflow_artifacts

    with tempfile.TemporaryDirectory() as tmp:
        path = mlflow_artifacts.download_artifacts(run_id=mv.run_id, artifact_path=filename, dst_path=tmp)
        return version, json.loads(Path(path).read_text())


TIE_RTOL = 1e-6
"""Relative difference under which a new version ties with the champion: retraining on unchanged
data reproduces the champion up to floating-point noise, which must neither promote nor reject."""

PROMOTED, TIED, REJECTED, ERROR = "promoted", "tied", "rejected", "error"


@dataclass
class GateVerdict:
    outcome: str  # PROMOTED | TIED | REJECTED | ERROR
    version: str | None
    metric: str
    value: float | None
    baseline: float | None
    champion: float | None  # the champion's metric on the same holdout
    champion_version: str | None  # the champion before this gate
    reason: str

    @property
    def passed(self) -> bool:
        """Beats its baseline by the margin and is no worse than the champion (promoted or tied)."""
        return self.outcome in (PROMOTED, TIED)

    @property
    def promoted(self) -> bool:
        return self.outcome == PROMOTED


def judge(metric: str, value: float | None, base: float | None, champ: float | None, higher_is_better: bool,
          margin: float, champion_version: str | None = None, rtol: float = TIE_RTOL) -> tuple[str, str]:
    """(outcome, reason) of the gate: beat the baseline by `margin` (absolute for higher-is-better
    metrics, relative for errors), then beat the champion on the same holdout. Within `rtol` of
    the champion it is a tie and the champion stays."""
    if value is None or base is None:
        return ERROR, f"{metric} or its baseline is missing from the MLflow run"
    beats = value >= base + margin if higher_is_better else value <= base * (1 - margin)
    if not beats:
        return REJECTED, f"{metric} {value:.6g} does not beat the baseline {base:.6g} by the margin {margin:g}"
    if champ is None:
        return PROMOTED, f"{metric} {value:.6g} beats the baseline {base:.6g}; no champion to compare with"
    who = f"champion v{champion_version}" if champion_version else "champion"
    diff = value - champ if higher_is_better else champ - value  # > 0: better than the champion
    if abs(diff) <= rtol * max(abs(value), abs(champ)):
        return TIED, (f"{metric} {value:.6g} ties with the {who} ({champ:.6g}, |difference| {abs(diff):.2g} within "
                      f"{rtol:g} relative); the {who} stays")
    if diff < 0:
        return REJECTED, (f"{metric} {value:.6g} is worse than the {who}'s {champ:.6g} by {-diff:.2g} on the same "
                          "holdout; the champion stays")
    return PROMOTED, f"{metric} {value:.6g} beats the baseline {base:.6g} and the {who}'s {champ:.6g} by {diff:.2g}"


def gate_and_promote(
    mlf: MlflowResource,
    registered_name: str,
    dagster_run_id: str,
    metric: str,
    higher_is_better: bool,
    margin: float,
    *,
    version: str | None = None,
    rtol: float = TIE_RTOL,
) -> GateVerdict:
    """The champion gate for `version` (default: the newest version this Dagster run registered),
    judged on the metrics of its MLflow run (model, `baseline_<metric>`, `champion_<metric>`):
    only a promotion moves the `champion` alias. The verdict is tagged on the version."""
    client = mlf.client()
    if version is None:
        versions = client.search_model_versions(f"name='{registered_name}'")
        mine = [v for v in versions if (v.tags or {}).get("dagster_run_id") == dagster_run_id]
        if not mine:
            return GateVerdict(ERROR, None, metric, None, None, None, None, "this run registered no version")
        version = str(max(int(v.version) for v in mine))
    mv = client.get_model_version(registered_name, version)
    m = _run_metrics(client, mv)
    value, base, champ = m.get(metric), m.get(f"baseline_{metric}"), m.get(f"champion_{metric}")
    before = champion_version(mlf, registered_name)
    outcome, reason = judge(metric, value, base, champ, higher_is_better, margin, before, rtol)
    if outcome == PROMOTED:
        client.set_registered_model_alias(registered_name, CHAMPION, mv.version)
    tag = {PROMOTED: "passed", TIED: "tied", REJECTED: "rejected", ERROR: "error"}[outcome]
    client.set_model_version_tag(registered_name, mv.version, "gate", tag)
    client.set_model_version_tag(registered_name, mv.version, "gate_reason", reason)
    return GateVerdict(outcome, str(mv.version), metric, value, base, champ, before, reason)


def _run_metrics(client, mv) -> dict[str, float]:
    """The metrics of the MLflow run that logged model version `mv`."""
    if mv.run_id is None:  # every version here is logged by log_model's run; one registered by hand may not be
        raise ValueError(f"{mv.name} v{mv.version} was not logged by an MLflow run: it has no metrics")
    return client.get_run(mv.run_id).data.metrics


PRIMARY_METRIC = {"trend_model": "auc_roc", "anomaly_model": "pr_auc", "price_model": "rmse", "coin_clusters": "silhouette"}


def model_summary(mlf: MlflowResource) -> list[dict]:
    """Per registered model: latest version, its gate verdict, primary metric vs baseline, champion."""
    client = mlf.client()
    out = []
    for rm in sorted(client.search_registered_models(), key=lambda r: r.name):
        versions = client.search_model_versions(f"name='{rm.name}'")
        if not versions:
            continue
        latest = max(versions, key=lambda v: int(v.version))
        short = rm.name.split(".", 1)[-1]
        metric = PRIMARY_METRIC.get(short.split("_1h")[0].split("_4h")[0].split("_24h")[0], "auc_roc")
        m = _run_metrics(client, latest)
        out.append(
            {
                "model": short,
                "latest_version": latest.version,
                "gate": (latest.tags or {}).get("gate", "?"),
                "metric": metric,
                "value": m.get(metric),
                "baseline": m.get(f"baseline_{metric}"),
                "champion_version": champion_version(mlf, rm.name),
                "run_id": latest.run_id,
            }
        )
    return out
