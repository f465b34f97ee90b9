"""The champion gate's verdict as a pure function: promote only a real improvement, keep the
champion on a tie (a retrain on unchanged data), reject what is worse or beats no baseline."""

from __future__ import annotations

import math

import pytest

from crypto_assets.ml.registry import ERROR, PROMOTED, REJECTED, TIE_RTOL, TIED, Evidence, GateVerdict, judge


def ev(metric="auc_roc", value=0.62, base=0.5, ci=(0.05, 0.15), champ=None, holdout=None, name="last_direction",
       lift=None) -> Evidence:
    """Evidence as an MLflow run holds it; the lift defaults to the point inside the interval."""
    lift = sum(ci) / 2 if lift is None and ci is not None else lift
    lo, hi = ci if ci is not None else (None, None)
    return Evidence(metric, value, base, lift, lo, hi, name, 0.9, champ, holdout)


def test_first_version_whose_interval_clears_the_margin_is_promoted():
    outcome, reason = judge(ev(), True, 0.0)
    assert outcome == PROMOTED and "no champion" in reason
    assert reason.startswith("auc_roc 0.62 vs last_direction 0.5: lift 0.1, 90% CI [0.05, 0.15] clears the margin 0")


def test_a_point_lift_above_the_margin_with_the_interval_below_it_is_rejected():
    """The motivating case: AUC 0.527 vs 0.521, a lift of 0.006 whose interval reaches below 0."""
    e = ev(value=0.527, base=0.521, ci=(-0.011, 0.024), lift=0.006)
    outcome, reason = judge(e, True, 0.005)  # the point lift 0.006 > margin 0.005: not enough
    assert outcome == REJECTED
    assert reason == ("auc_roc 0.527 vs last_direction 0.521: lift 0.006, 90% CI [-0.011, 0.024] does not clear "
                      "the margin 0.005")
    assert judge(ev(ci=(0.004, 0.02)), True, 0.005)[0] == REJECTED  # lower bound 0.004 < 0.005
    assert judge(ev(ci=(0.006, 0.02)), True, 0.005)[0] == PROMOTED


def test_the_lower_bound_must_be_strictly_above_the_margin():
    assert judge(ev(ci=(0.0, 0.1)), True, 0.0)[0] == REJECTED
    assert judge(ev(ci=(math.nextafter(0.0, 1.0), 0.1)), True, 0.0)[0] == PROMOTED


@pytest.mark.parametrize("e", [
    Evidence("auc_roc", None, 0.5, 0.1, 0.05, 0.15),
    Evidence("auc_roc", 0.6, None, 0.1, 0.05, 0.15),
    Evidence("auc_roc", 0.6, 0.5, None, 0.05, 0.15),
    Evidence("auc_roc", 0.6, 0.5, 0.1, None, None),  # no interval: a run logged before the walk-forward gate
    Evidence("auc_roc", 0.6, 0.5, 0.1, float("nan"), 0.15),
])
def test_missing_evidence_is_an_error(e):
    outcome, reason = judge(e, True, 0.0)
    assert outcome == ERROR and "missing from the MLflow run" in reason


def test_rmse_lift_is_relative_and_the_champion_compared_on_the_holdout():
    e = ev("rmse", 0.009, 0.010, (0.02, 0.15), name="zero_return", champ=0.0081, holdout=0.0080)
    outcome, reason = judge(e, False, 0.0, champion_version="3")
    assert outcome == PROMOTED and "on the holdout 0.008 beats the champion v3's 0.0081" in reason
    worse = ev("rmse", 0.009, 0.010, (0.02, 0.15), champ=0.0079, holdout=0.0080)
    assert judge(worse, False, 0.0, "3")[0] == REJECTED


def test_the_same_rmse_as_the_champion_is_a_tie_not_worse():
    # the case that used to read "rmse 0.00661 is worse than the champion's 0.00661"
    champ = 0.0066102
    e = ev("rmse", 0.0066, 0.0081, (0.1, 0.3), champ=champ, holdout=champ * (1 + TIE_RTOL / 2))
    outcome, reason = judge(e, False, 0.0, champion_version="3")
    assert outcome == TIED
    assert "ties with the champion v3" in reason and "stays" in reason


@pytest.mark.parametrize("higher", [True, False])
def test_exactly_equal_metrics_tie(higher):
    assert judge(ev(value=0.7, champ=0.7, holdout=0.7), higher, 0.0)[0] == TIED
    assert judge(ev(value=0.7, champ=0.7), higher, 0.0)[0] == TIED  # no holdout logged: the value is compared


def test_worse_than_the_champion_beyond_the_tolerance_is_rejected_with_digits_that_show_it():
    outcome, reason = judge(ev("rmse", 0.0066, 0.0081, (0.1, 0.3), champ=0.006610, holdout=0.006613), False, 0.0,
                            champion_version="3")
    assert outcome == REJECTED
    assert "0.006613" in reason and "0.00661" in reason and "by 3e-06" in reason


@pytest.mark.parametrize("outcome,passed,promoted", [(PROMOTED, True, True), (TIED, True, False),
                                                     (REJECTED, False, False), (ERROR, False, False)])
def test_verdict_flags(outcome, passed, promoted):
    v = GateVerdict(outcome, "2", "m", 1.0, 0.5, 1.0, "1", "r")
    assert (v.passed, v.promoted) == (passed, promoted)


@pytest.mark.parametrize("higher,holdout,champ", [(True, 0.65, 0.70), (False, 0.009, 0.008)])
def test_clearing_the_baseline_but_not_the_champion_is_rejected(higher, holdout, champ):
    e = ev(value=holdout, champ=champ, holdout=holdout)
    outcome, reason = judge(e, higher, 0.0, champion_version="4")
    assert outcome == REJECTED
    assert reason.endswith(f"on the holdout auc_roc {holdout:.6g} is worse than the champion v4's {champ:.6g} by "
                           f"{abs(holdout - champ):.2g}; the champion stays")
    # the same version without a champion would have been promoted: only the champion stops it
    assert judge(ev(value=holdout), higher, 0.0)[0] == PROMOTED


def test_default_margins_are_zero_the_interval_is_the_bar():
    """AUC/PR-AUC/RMSE/silhouette margins are 0 by default: the interval's lower bound > 0 is
    the significance bar; a positive margin (materiality) is the config's choice."""
    from crypto_assets.ml.model_specs import MODEL_SPECS

    assert {s.name: s.config().gate_margin for s in MODEL_SPECS} == dict.fromkeys(
        ("trend_model", "anomaly_model", "price_model", "coin_clusters"), 0.0)


# ---------------------------------------------------------------- gate_and_promote on a real MLflow store
@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    from crypto_assets.resources.mlflow import MlflowResource

    return MlflowResource(home=str(tmp_path_factory.mktemp("gate")))


def _version(mlf, model: str, experiment: str, metrics: dict, dagster_run_id: str = "run-x",
             params: dict | None = None) -> str:
    """A registered version whose MLflow run carries `metrics` (no model artifact needed: the
    gate reads the run's metrics and params only)."""
    mlflow = mlf.activate()
    client = mlf.client()
    name = mlf.registered_name(model)
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - exists
        pass
    with mlflow.start_run(experiment_id=mlf.experiment_id(experiment)) as run:
        mlflow.log_metrics(metrics)
        mlflow.log_params(params or {"baseline_name": "last_direction", "ci_level": 0.9})
    mv = client.create_model_version(name, source=run.info.artifact_uri + "/model", run_id=run.info.run_id)
    client.set_model_version_tag(name, mv.version, "dagster_run_id", dagster_run_id)
    return str(mv.version)


def _auc(value: float, lo: float, hi: float, **more: float) -> dict:
    """An auc_roc run over the strongest baseline 0.5 with the lift interval [lo, hi]."""
    return {"auc_roc": value, "baseline_auc_roc": 0.5, "lift_auc_roc": value - 0.5, "lift_auc_roc_ci_low": lo,
            "lift_auc_roc_ci_high": hi, **more}


def _tags(mlf, name: str, version: str) -> dict:
    return dict(mlf.client().get_model_version(name, version).tags)


@pytest.mark.slow  # a sqlite MLflow store: importing mlflow and creating its schema cost ~15 s of CPU
def test_gate_and_promote_keeps_the_champion_against_a_worse_version(registry):
    import dagster as dg

    from crypto_assets.defs.models import gate_result
    from crypto_assets.ml.registry import champion_version, gate_and_promote

    mlf = registry
    name = mlf.registered_name("trend_model")
    v1 = _version(mlf, "trend_model", "trend_model", _auc(0.70, 0.15, 0.25), "run-1")
    first = gate_and_promote(mlf, name, "run-1", "auc_roc", True, 0.0)  # found by its run id tag
    assert (first.outcome, first.version, first.champion_version) == (PROMOTED, v1, None)
    assert champion_version(mlf, name) == v1
    tags = _tags(mlf, name, v1)
    assert tags["baseline_name"] == "last_direction" and tags["lift_ci"] == "[0.15, 0.25] at 90%"
    assert first.reason.startswith("auc_roc 0.7 vs last_direction 0.5: lift 0.2, 90% CI [0.15, 0.25]")

    # clears the baseline by far, but the champion scored 0.70 on the same holdout
    v2 = _version(mlf, "trend_model", "trend_model", _auc(0.65, 0.1, 0.2, champion_auc_roc=0.70, holdout_auc_roc=0.66),
                  "run-2")
    verdict = gate_and_promote(mlf, name, "run-2", "auc_roc", True, 0.0, version=v2)
    assert (verdict.outcome, verdict.version, verdict.value, verdict.champion, verdict.champion_version) == (
        REJECTED, v2, 0.65, 0.70, v1)
    assert (verdict.baseline_name, verdict.ci_low, verdict.ci_high) == ("last_direction", 0.1, 0.2)
    assert "0.66 is worse than the champion v1's 0.7" in verdict.reason
    assert champion_version(mlf, name) == v1  # unchanged
    tags = _tags(mlf, name, v2)
    assert (tags["gate"], tags["gate_reason"]) == ("rejected", verdict.reason)
    check = gate_result(verdict)
    assert (check.passed, check.severity) == (False, dg.AssetCheckSeverity.WARN)  # a WARN: the run stays green
    assert check.metadata["champion_after"].value == v1 and check.metadata["promoted"].value is False
    assert check.metadata["lift_ci_low"].value == 0.1 and check.metadata["baseline_name"].value == "last_direction"

    # a broken gate (no interval in the run) is the only ERROR
    v3 = _version(mlf, "trend_model", "trend_model", {"auc_roc": 0.9, "baseline_auc_roc": 0.5}, "run-3")
    broken = gate_and_promote(mlf, name, "run-3", "auc_roc", True, 0.0, version=v3)
    assert broken.outcome == ERROR and gate_result(broken).severity == dg.AssetCheckSeverity.ERROR
    assert "lift, ci_low, ci_high missing" in broken.reason
    assert champion_version(mlf, name) == v1 and _tags(mlf, name, v3)["gate"] == "error"

    # a point lift far above the margin, its interval's lower bound below it: rejected
    v4 = _version(mlf, "trend_model", "trend_model", _auc(0.60, -0.01, 0.2), "run-4")
    noisy = gate_and_promote(mlf, name, "run-4", "auc_roc", True, 0.0, version=v4)
    assert noisy.outcome == REJECTED and "does not clear the margin 0" in noisy.reason

    # better than the champion on the holdout: the alias moves
    v5 = _version(mlf, "trend_model", "trend_model", _auc(0.72, 0.1, 0.3, champion_auc_roc=0.70, holdout_auc_roc=0.71),
                  "run-5")
    better = gate_and_promote(mlf, name, "run-5", "auc_roc", True, 0.0, version=v5)
    assert (better.outcome, better.champion_version) == (PROMOTED, v1)
    assert champion_version(mlf, name) == v5 and gate_result(better).metadata["champion_after"].value == v5


@pytest.mark.slow
def test_gate_and_promote_price_model_relative_rmse_lift(registry):
    """price_model_<h>: RMSE, lower is better; the lift (relative to the strongest of zero return
    and persistence) must clear the margin with its interval's lower bound."""
    from crypto_assets.defs.models import horizons_gate_result
    from crypto_assets.ml.registry import champion_version, gate_and_promote

    mlf = registry
    name = mlf.registered_name("price_model_1h")
    params = {"baseline_name": "zero_return", "ci_level": 0.9}
    run = {"rmse": 0.009, "baseline_rmse": 0.010, "lift_rmse": 0.1, "lift_rmse_ci_high": 0.2}
    short = _version(mlf, "price_model_1h", "price_model", {**run, "lift_rmse_ci_low": 0.05}, params=params)
    v = gate_and_promote(mlf, name, "run-x", "rmse", False, 0.05, version=short)
    assert v.outcome == REJECTED and "vs zero_return 0.01" in v.reason and "does not clear the margin 0.05" in v.reason
    assert champion_version(mlf, name) is None
    edge = _version(mlf, "price_model_1h", "price_model", {**run, "lift_rmse_ci_low": 0.0625}, params=params)
    v = gate_and_promote(mlf, name, "run-x", "rmse", False, 0.05, version=edge)
    assert (v.outcome, v.value, v.baseline, v.baseline_name) == (PROMOTED, 0.009, 0.010, "zero_return")
    assert champion_version(mlf, name) == edge
    res = horizons_gate_result({"1h": v}, {"24h": "not enough history"})
    assert res.passed and res.metadata["1h_champion_after"].value == edge
    assert res.metadata["horizons_skipped"].value == ["24h"]


@pytest.mark.slow
def test_champion_version_is_none_only_when_there_is_none(registry):
    """No such registered model, or no champion alias yet: None. Any other failure (here a name
    the registry refuses) raises: taken for "no champion", it would let a gate promote a version
    without comparing it with the champion."""
    from mlflow.exceptions import MlflowException

    from crypto_assets.ml.registry import champion_version

    mlf = registry
    assert champion_version(mlf, mlf.registered_name("never_registered")) is None
    _version(mlf, "no_alias_yet", "no_alias_yet", {"auc_roc": 0.6})
    assert champion_version(mlf, mlf.registered_name("no_alias_yet")) is None
    mlf.client().set_registered_model_alias(mlf.registered_name("no_alias_yet"), "champion", "1")
    assert champion_version(mlf, mlf.registered_name("no_alias_yet")) == "1"
    with pytest.raises(MlflowException, match="name"):
        champion_version(mlf, "")


def test_each_spec_gates_on_the_metric_the_summaries_show():
    """The status and report summaries (registry.PRIMARY_METRIC) show the metric each model's gate
    judges, in the spec table."""
    from crypto_assets.ml.model_specs import MODEL_SPECS
    from crypto_assets.ml.registry import PRIMARY_METRIC

    assert {s.name: s.metric for s in MODEL_SPECS} == PRIMARY_METRIC
    assert {s.name: s.higher_is_better for s in MODEL_SPECS} == {
        "trend_model": True, "anomaly_model": True, "price_model": False, "coin_clusters": True}
