"""The model side of the report: every MLflow run of the report's experiments with its primary
metric, every naive baseline candidate, the strongest, the lift with its interval, joined to
registered versions, gate tags and the champion alias."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from crypto_assets.ml.registry import PRIMARY_METRIC, baseline_candidates, champion_version

if TYPE_CHECKING:
    from crypto_assets.resources.mlflow import MlflowResource

REPORT_MODELS = ("trend_model", "anomaly_model", "price_model", "coin_clusters")
LOWER_IS_BETTER = {"rmse", "mae"}


@dataclass
class ModelPoint:
    run_id: str
    time: datetime
    value: float
    baseline: float | None
    version: str | None = None
    gate: str | None = None
    baselines: dict[str, float] = field(default_factory=dict)  # every candidate the run logged
    baseline_name: str | None = None  # the strongest (the gate's bar)
    lift: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    ci_level: float | None = None


@dataclass
class ModelSeries:
    name: str  # registered short name: trend_model, price_model_1h, ...
    experiment: str  # experiment short name: price_model for every horizon
    metric: str
    points: list[ModelPoint]
    champion_version: str | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER

    @property
    def champion(self) -> ModelPoint | None:
        return next((p for p in self.points if p.version is not None and p.version == self.champion_version), None)

    @property
    def latest(self) -> ModelPoint | None:
        return self.points[-1] if self.points else None


def load_model_history(mlf: MlflowResource, models: tuple[str, ...] = REPORT_MODELS, max_runs: int = 500) -> list[ModelSeries]:
    """Every run of the experiments `<prefix>/<model>` with its primary metric and baseline, in
    start-time order, joined to registered versions (gate tag, champion alias) where they exist.
    Runs need no registered model: a run with the metric is a point. A default (sqlite) store
    that does not exist yet means no runs: it is not created just to be found empty."""
    if not mlf.tracking_uri and not (Path(mlf.home).resolve() / "mlflow" / "mlflow.db").exists():
        return []
    client = mlf.client()
    out: list[ModelSeries] = []
    for model in models:
        exp = client.get_experiment_by_name(f"{mlf.experiment_prefix}/{model}")
        if exp is None:
            continue
        metric = PRIMARY_METRIC.get(model, "auc_roc")
        runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"], max_results=max_runs)
        series: dict[str, ModelSeries] = {}
        for r in runs:
            value = r.data.metrics.get(metric)
            if value is None or r.info.status == "FAILED":
                continue
            name = model
            if model == "price_model":
                horizon = r.data.tags.get("horizon") or r.data.params.get("horizon")
                name = f"price_model_{horizon}" if horizon else model
            t = datetime.fromtimestamp((r.info.start_time or 0) / 1000.0, tz=UTC)
            s = series.setdefault(name, ModelSeries(name, model, metric, []))
            m, params = r.data.metrics, r.data.params
            s.points.append(ModelPoint(
                r.info.run_id, t, float(value), m.get(f"baseline_{metric}"), baselines=baseline_candidates(metric, m),
                baseline_name=params.get("baseline_name"), lift=m.get(f"lift_{metric}"),
                ci_low=m.get(f"lift_{metric}_ci_low"), ci_high=m.get(f"lift_{metric}_ci_high"),
                ci_level=float(params["ci_level"]) if "ci_level" in params else None))
        for name, s in sorted(series.items()):
            _attach_versions(mlf, client, mlf.registered_name(name), s)
            s.points.sort(key=lambda p: p.time)
            out.append(s)
    return out


def _attach_versions(mlf: MlflowResource, client, registered_name: str, s: ModelSeries) -> None:
    """The registered version and gate tag of each point, and the champion: none when the model
    was never registered (no versions) or has no champion alias yet (champion_version). Any other
    failure of the store raises."""
    by_run = {v.run_id: v for v in client.search_model_versions(f"name='{registered_name}'")}
    if not by_run:  # never registered
        return
    for p in s.points:
        v = by_run.get(p.run_id)
        if v is not None:
            p.version = str(v.version)
            p.gate = (v.tags or {}).get("gate")
    s.champion_version = champion_version(mlf, registered_name)

