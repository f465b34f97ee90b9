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
    value: float | None  # pooled out-of-sample
    baseline: float | None  # the strongest naive baseline's
    champion: float | None  # the champion's metric on the same holdout
    champion_version: str | None  # the champion before this gate
    reason: str
    baseline_name: str | None = None
    lift: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None

    @property
    def passed(self) -> bool:
        """Clears its baseline and is no worse than the champion (promoted or tied)."""
        return self.outcome in (PROMOTED, TIED)

    @property
    def promoted(self) -> bool:
        return self.outcome == PROMOTED


@dataclass(frozen=True)
class Evidence:
    """What the gate reads from a version's MLflow run: the pooled out-of-sample metric, the
    strongest naive baseline (name, value), the lift over it with its interval, the new version's
    metric on the champion's holdout (the last fold's test rows) and the champion's there."""

    metric: str
    value: float | None
    baseline: float | None
    lift: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    baseline_name: str = "baseline"
    level: float = 0.9
    champion: float | None = None
    holdout: float | None = None  # None: `value` is on the champion's holdout too

    @classmethod
    def from_run(cls, metric: str, metrics: dict[str, float], params: dict[str, str]) -> Evidence:
        return cls(metric, metrics.get(metric), metrics.get(f"baseline_{metric}"), metrics.get(f"lift_{metric}"),
                   metrics.get(f"lift_{metric}_ci_low"), metrics.get(f"lift_{metric}_ci_high"),
                   params.get("baseline_name", "baseline"), float(params.get("ci_level", 0.9)),
                   metrics.get(f"champion_{metric}"), metrics.get(f"holdout_{metric}"))

    def summary(self) -> str:
        """E.g. "auc_roc 0.527 vs last_direction 0.521: lift 0.006, 90% CI [-0.011, 0.024]"."""
        return (f"{self.metric} {self.value:.4g} vs {self.baseline_name} {self.baseline:.4g}: lift {self.lift:.3g}, "
                f"{self.level:.0%} CI [{self.ci_low:.3g}, {self.ci_high:.3g}]")


def judge(e: Evidence, higher_is_better: bool, margin: float, champion_version: str | None = None,
          rtol: float = TIE_RTOL) -> tuple[str, str]:
    """(outcome, reason) of the gate. The lift over the strongest baseline (absolute for
    higher-is-better metrics, relative for errors) must clear `margin` with the lower bound of
    its interval (strictly); then the version must beat the champion on the same holdout.
    Within `rtol` of the champion it is a tie and the champion stays. Missing evidence: ERROR."""
    need = {"value": e.value, "baseline": e.baseline, "lift": e.lift, "ci_low": e.ci_low, "ci_high": e.ci_high}
    missing = [k for k, v in need.items() if v is None or v != v]  # None or NaN
    if missing:
        return ERROR, f"{e.metric}: {', '.join(missing)} missing from the MLflow run"
    head = e.summary()
    if not e.ci_low > margin:  # type: ignore[operator]  # checked above
        return REJECTED, f"{head} does not clear the margin {margin:g}"
    if e.champion is None:
        return PROMOTED, f"{head} clears the margin {margin:g}; no champion to compare with"
    mine = e.holdout if e.holdout is not None else e.value
    assert mine is not None
    champ = e.champion
    who = f"champion v{champion_version}" if champion_version else "champion"
    diff = mine - champ if higher_is_better else champ - mine  # > 0: better than the champion
    if abs(diff) <= rtol * max(abs(mine), abs(champ)):
        return TIED, (f"{head}; on the holdout {e.metric} {mine:.6g} ties with the {who} ({champ:.6g}, |difference| "
                      f"{abs(diff):.2g} within {rtol:g} relative); the {who} stays")
    if diff < 0:
        return REJECTED, (f"{head}; on the holdout {e.metric} {mine:.6g} is worse than the {who}'s {champ:.6g} by "
                          f"{-diff:.2g}; the champion stays")
    return PROMOTED, f"{head} clears the margin {margin:g}; on the holdout {mine:.6g} beats the {who}'s {champ:.6g} by {diff:.2g}"


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
    judged on the evidence in its MLflow run (`Evidence.from_run`): only a promotion moves the
    `champion` alias. The verdict, the baseline's name and the interval are tagged on the version."""
    client = mlf.client()
    if version is None:
        versions = client.search_model_versions(f"name='{registered_name}'")
        mine = [v for v in versions if (v.tags or {}).get("dagster_run_id") == dagster_run_id]
        if not mine:
            return GateVerdict(ERROR, None, metric, None, None, None, None, "this run registered no version")
        version = str(max(int(v.version) for v in mine))
    mv = client.get_model_version(registered_name, version)
    run = _run(client, mv)
    e = Evidence.from_run(metric, run.data.metrics, run.data.params)
    before = champion_version(mlf, registered_name)
    outcome, reason = judge(e, higher_is_better, margin, before, rtol)
    if outcome == PROMOTED:
        client.set_registered_model_alias(registered_name, CHAMPION, mv.version)
    tag = {PROMOTED: "passed", TIED: "tied", REJECTED: "rejected", ERROR: "error"}[outcome]
    tags = {"gate": tag, "gate_reason": reason, "baseline_name": e.baseline_name}
    if e.ci_low is not None and e.ci_high is not None:
        tags["lift_ci"] = f"[{e.ci_low:.6g}, {e.ci_high:.6g}] at {e.level:.0%}"
    for k, v in tags.items():
        client.set_model_version_tag(registered_name, mv.version, k, v)
    return GateVerdict(outcome, str(mv.version), metric, e.value, e.baseline, e.champion, before, reason,
                       e.baseline_name, e.lift, e.ci_low, e.ci_high)


def _run(client, mv):
    """The MLflow run that logged model version `mv`."""
    if mv.run_id is None:  # every version here is logged by log_model's run; one registered by hand may not be
        raise ValueError(f"{mv.name} v{mv.version} was not logged by an MLflow run: it has no metrics")
    return client.get_run(mv.run_id)


PRIMARY_METRIC = {"trend_model": "auc_roc", "anomaly_model": "pr_auc", "price_model": "rmse", "coin_clusters": "silhouette"}


def baseline_candidates(metric: str, metrics: dict[str, float]) -> dict[str, float]:
    """Every naive baseline the run logged for `metric` (`baseline_<candidate>_<metric>`)."""
    pre, suf = "baseline_", f"_{metric}"
    return {k[len(pre):-len(suf)]: v for k, v in sorted(metrics.items())
            if k.startswith(pre) and k.endswith(suf) and k != f"baseline_{metric}" and len(k) > len(pre) + len(suf)}


def model_summary(mlf: MlflowResource) -> list[dict]:
    """Per registered model: latest version, its gate verdict, primary metric vs every baseline
    candidate and the strongest, the lift with its interval, champion."""
    client = mlf.client()
    out = []
    for rm in sorted(client.search_registered_models(), key=lambda r: r.name):
        versions = client.search_model_versions(f"name='{rm.name}'")
        if not versions:
            continue
        latest = max(versions, key=lambda v: int(v.version))
        short = rm.name.split(".", 1)[-1]
        metric = PRIMARY_METRIC.get(short.split("_1h")[0].split("_4h")[0].split("_24h")[0], "auc_roc")
        run = _run(client, latest)
        m, params = run.data.metrics, run.data.params
        out.append(
            {
                "model": short,
                "latest_version": latest.version,
                "gate": (latest.tags or {}).get("gate", "?"),
                "gate_reason": (latest.tags or {}).get("gate_reason", ""),
                "metric": metric,
                "value": m.get(metric),
                "baseline": m.get(f"baseline_{metric}"),
                "baseline_name": params.get("baseline_name"),
                "baselines": baseline_candidates(metric, m),
                "lift": m.get(f"lift_{metric}"),
                "ci_low": m.get(f"lift_{metric}_ci_low"),
                "ci_high": m.get(f"lift_{metric}_ci_high"),
                "ci_level": float(params["ci_level"]) if "ci_level" in params else None,
                "folds": int(m["folds_used"]) if "folds_used" in m else None,
                "champion_version": champion_version(mlf, rm.name),
                "run_id": latest.run_id,
            }
        )
    return out


def summary_number(v: float | None) -> str:
    return f"{v:.4f}" if v is not None else "n/a"


def summary_baseline(m: dict) -> str:
    """The strongest baseline of a `model_summary` row: name and value."""
    return f"{m.get('baseline_name') or 'baseline'} {summary_number(m['baseline'])}"


def summary_lift(m: dict) -> str:
    """The lift and its interval of a `model_summary` row, e.g. "0.006 [-0.011, 0.024] 90%"."""
    if m.get("lift") is None or m.get("ci_low") is None or m.get("ci_high") is None:
        return "n/a"
    level = f" {m['ci_level']:.0%}" if m.get("ci_level") else ""
    return f"{m['lift']:.3g} [{m['ci_low']:.3g}, {m['ci_high']:.3g}]{level}"
