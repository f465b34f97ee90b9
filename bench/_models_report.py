"""What bench/models.py prints per model and horizon, read back from the run as a user would see
it: the materialization metadata (MLflow run id, skip reasons), the MLflow run's metrics (the
walk-forward's pooled metric, `fold_<i>_<m>`, every `baseline_<candidate>_<m>`, the strongest
`baseline_<m>`, `lift_<m>` and its interval `lift_<m>_ci_low/_high`) and the gate's check result
(outcome and reason). Nothing is recomputed here: the bench shows the pipeline's own verdicts."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from crypto_assets.ml.model_specs import MODEL_SPECS, ModelSpec
from crypto_assets.resources.mlflow import MlflowResource


@dataclass
class Row:
    """One registered model (a model, or one horizon of the price model) of one market."""

    market: str
    model: str  # registered name: trend_model, price_model_1h, ...
    metric: str
    higher_is_better: bool
    skipped: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    outcome: str | None = None
    reason: str | None = None
    baseline_name: str | None = None

    def get(self, key: str) -> float | None:
        return self.metrics.get(key)

    @property
    def candidates(self) -> dict[str, float]:
        """`baseline_<candidate>_<m>` of every candidate (the strongest is `baseline_<m>`)."""
        pat = re.compile(rf"^baseline_(.+)_{re.escape(self.metric)}$")
        return {m.group(1): v for k, v in sorted(self.metrics.items()) if (m := pat.match(k))}

    @property
    def folds(self) -> list[float]:
        pat = re.compile(rf"^fold_(\d+)_{re.escape(self.metric)}$")
        found = sorted((int(m.group(1)), v) for k, v in self.metrics.items() if (m := pat.match(k)))
        return [v for _, v in found]

    @property
    def beats_baseline(self) -> bool | None:
        """The interval's lower bound above 0 (the lift interval's verdict), or, without an
        interval, the point lift above 0; None when not trained."""
        lo = self.get(f"lift_{self.metric}_ci_low")
        lift = self.get(f"lift_{self.metric}")
        if lo is not None:
            return lo > 0
        return None if lift is None else lift > 0


def _check(result: dg.ExecuteInProcessResult, name: str) -> dg.AssetCheckEvaluation | None:
    return next((e for e in result.get_asset_check_evaluations() if e.check_name == f"{name}_gate"), None)


def _failure(result: dg.ExecuteInProcessResult, step: str) -> str:
    for ev in result.all_events:
        if ev.is_step_failure and ev.step_key == step:
            data = ev.step_failure_data
            err = data.error if data is not None else None
            while err is not None and err.cause is not None:  # the error the step raised, not dagster's wrapper
                err = err.cause
            return f"FAILED: {err.message.strip().splitlines()[-1] if err else 'step failure'}"
    return "not materialized"


def _run_metrics(mlflow: MlflowResource, run_id: Any) -> tuple[dict[str, float], str | None]:
    if not run_id:
        return {}, None
    run = mlflow.client().get_run(str(run_id))
    return dict(run.data.metrics), run.data.params.get("baseline_name")


def rows(market: str, result: dg.ExecuteInProcessResult, mlflow: MlflowResource) -> list[Row]:
    """One Row per registered model of each spec (per trained or skipped horizon)."""
    out: list[Row] = []
    for spec in MODEL_SPECS:
        out.extend(_spec_rows(market, spec, result, mlflow))
    return out


def _spec_rows(market: str, spec: ModelSpec, result: dg.ExecuteInProcessResult, mlflow: MlflowResource) -> list[Row]:
    mats = result.asset_materializations_for_node(spec.name)
    check = _check(result, spec.name)
    cmd = {k: v.value for k, v in check.metadata.items()} if check is not None else {}
    if not mats:
        return [Row(market, spec.name, spec.metric, spec.higher_is_better, skipped=_failure(result, spec.name))]
    md: dict[str, Any] = {k: v.value for k, v in mats[0].metadata.items()}
    if spec.horizons is None:
        r = Row(market, spec.name, spec.metric, spec.higher_is_better)
        if "skipped" in md:
            r.skipped = str(md["skipped"])
        else:
            r.metrics, r.baseline_name = _run_metrics(mlflow, md.get("mlflow_run_id"))
            r.outcome = str(cmd.get("outcome", md.get("gate")))
            r.reason = check.description if check is not None else None
            r.baseline_name = r.baseline_name or (str(md["baseline_name"]) if "baseline_name" in md else None)
        return [r]
    found: list[Row] = []
    reasons = _per_horizon_reasons((check.description if check is not None else None) or "")
    horizons = [k[: -len("_skipped")] for k in md if k.endswith("_skipped")] + list(md.get("horizons_trained", []))
    for h in sorted(set(horizons), key=_minutes):
        r = Row(market, spec.registered(h), spec.metric, spec.higher_is_better)
        if f"{h}_skipped" in md:
            r.skipped = str(md[f"{h}_skipped"])
        else:
            r.metrics, r.baseline_name = _run_metrics(mlflow, md.get(f"{h}_mlflow_run_id"))
            r.outcome = str(cmd.get(f"{h}_outcome", md.get(f"{h}_gate")))
            r.reason = reasons.get(h)
        found.append(r)
    return found


def _minutes(h: str) -> int:
    return int(h[:-1]) * (60 if h.endswith("h") else 1)


def _per_horizon_reasons(description: str) -> dict[str, str]:
    """The price gate's description is "<h> v<n>: <outcome>: <reason>; ..." per trained horizon."""
    out = {}
    for part in re.split(r"; (?=\d+h v)", description or ""):
        m = re.match(r"^(\d+h) v\S+: \w+: (.*)$", part.strip(), re.S)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _f(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{x:+.4f}"


def print_rows(market_label: str, note: str, rs: list[Row], seconds: float) -> None:
    print(f"\n=== {market_label}  ({note})")
    print(f"    training_set + 4 models: {seconds:.1f} s")
    for r in rs:
        head = f"  {r.model:<16} {r.metric} ({'higher' if r.higher_is_better else 'lower'} is better)"
        if r.skipped is not None:
            print(f"{head}: SKIPPED: {r.skipped}")
            continue
        m = r.metric
        print(head)
        folds = r.folds
        print(f"      model, walk-forward pooled : {_f(r.get(m))}"
              + (f"   folds: {' '.join(_f(v) for v in folds)}" if folds else "   (no fold metrics logged)"))
        cands = r.candidates
        if cands:
            print("      baselines                  : " + ", ".join(f"{k} {_f(v)}" for k, v in cands.items()))
        base = r.get(f"baseline_{m}")
        value = r.get(m)
        print(f"      strongest baseline         : {r.baseline_name or '?'} {_f(base)}"
              + (f"   (model / baseline {value / base:.3f})" if base and value is not None else ""))
        lo, hi = r.get(f"lift_{m}_ci_low"), r.get(f"lift_{m}_ci_high")
        ci = f"   CI [{_signed(lo)}, {_signed(hi)}]" if lo is not None else "   (no interval logged)"
        how = "model - baseline" if r.higher_is_better else "(baseline - model) / baseline"
        print(f"      lift over it               : {_signed(r.get(f'lift_{m}'))}{ci}   ({how}; > 0: better)")
        print(f"      gate                       : {r.outcome}: {r.reason}")


def summary(all_rows: list[Row]) -> None:
    """One line per market and model: does it beat its strongest baseline (the interval's verdict)?"""
    print("\n=== summary: beats its strongest naive baseline? (lift CI lower bound > 0; gate outcome)")
    for r in all_rows:
        if r.skipped is not None:
            verdict = f"skipped ({r.skipped[:70]})"
        else:
            b = r.beats_baseline
            verdict = f"{'YES' if b else 'no' if b is not None else '?'}; gate {r.outcome}"
        print(f"  {r.market:<10} {r.model:<16} {verdict}")
