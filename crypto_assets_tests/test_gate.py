"""The champion gate's verdict as a pure function: promote only a real improvement, keep the
champion on a tie (a retrain on unchanged data), reject what is worse or beats no baseline."""

from __future__ import annotations

import math

import pytest

from crypto_assets.ml.registry import ERROR, PROMOTED, REJECTED, TIE_RTOL, TIED, GateVerdict, judge


def test_first_version_beating_the_baseline_is_promoted():
    outcome, reason = judge("auc_roc", 0.62, 0.5, None, True, 0.01)
    assert outcome == PROMOTED and "no champion" in reason


@pytest.mark.parametrize("value,higher", [(0.505, True), (0.0071, False)])
def test_not_beating_the_baseline_by_the_margin_is_rejected(value, higher):
    base = 0.5 if higher else 0.0070
    outcome, reason = judge("m", value, base, None, higher, 0.01)
    assert outcome == REJECTED and "does not beat the baseline" in reason


def test_the_same_rmse_as_the_champion_is_a_tie_not_worse():
    # the case that used to read "rmse 0.00661 is worse than the champion's 0.00661"
    champ = 0.0066102
    value = champ * (1 + TIE_RTOL / 2)
    outcome, reason = judge("rmse", value, 0.0081, champ, False, 0.0, champion_version="3")
    assert outcome == TIED
    assert "ties with the champion v3" in reason and "stays" in reason


@pytest.mark.parametrize("higher", [True, False])
def test_exactly_equal_metrics_tie(higher):
    assert judge("m", 0.7, 0.5 if higher else 0.9, 0.7, higher, 0.0)[0] == TIED


def test_worse_than_the_champion_beyond_the_tolerance_is_rejected_with_digits_that_show_it():
    outcome, reason = judge("rmse", 0.006613, 0.0081, 0.006610, False, 0.0, champion_version="3")
    assert outcome == REJECTED
    assert "0.006613" in reason and "0.00661" in reason and "by 3e-06" in reason


@pytest.mark.parametrize("higher,value,champ", [(True, 0.64, 0.63), (False, 0.0065, 0.0066)])
def test_better_than_the_champion_is_promoted(higher, value, champ):
    outcome, _ = judge("m", value, 0.5 if higher else 0.0081, champ, higher, 0.0)
    assert outcome == PROMOTED


def test_missing_metric_is_an_error():
    assert judge("auc_roc", None, 0.5, None, True, 0.01)[0] == ERROR
    assert judge("auc_roc", 0.6, None, None, True, 0.01)[0] == ERROR


@pytest.mark.parametrize("outcome,passed,promoted", [(PROMOTED, True, True), (TIED, True, False),
                                                     (REJECTED, False, False), (ERROR, False, False)])
def test_verdict_flags(outcome, passed, promoted):
    v = GateVerdict(outcome, "2", "m", 1.0, 0.5, 1.0, "1", "r")
    assert (v.passed, v.promoted) == (passed, promoted)


# ------------------------------------------------------------------- the champion on the same holdout
@pytest.mark.parametrize("metric,value,base,champ,higher,margin", [
    ("auc_roc", 0.65, 0.5, 0.70, True, 0.01),  # beats the baseline by 0.15, loses to the champion by 0.05
    ("rmse", 0.009, 0.010, 0.008, False, 0.05),  # 10 % under persistence, 12.5 % over the champion
])
def test_beating_the_baseline_but_not_the_champion_is_rejected(metric, value, base, champ, higher, margin):
    outcome, reason = judge(metric, value, base, champ, higher, margin, champion_version="4")
    assert outcome == REJECTED
    assert reason == (f"{metric} {value:.6g} is worse than the champion v4's {champ:.6g} by {abs(value - champ):.2g} "
                      "on the same holdout; the champion stays")
    # the same version without a champion would have been promoted: only the champion stops it
    assert judge(metric, value, base, None, higher, margin)[0] == PROMOTED


# ------------------------------------------------------------------------------- the margin's edge
# Dyadic numbers, so base + margin and base * (1 - margin) are exact in binary floating point.
HIGH_BASE, HIGH_MARGIN, HIGH_EDGE = 0.5, 0.0625, 0.5625
LOW_BASE, LOW_MARGIN, LOW_EDGE = 0.0078125, 0.25, 0.005859375
assert HIGH_BASE + HIGH_MARGIN == HIGH_EDGE and LOW_BASE * (1 - LOW_MARGIN) == LOW_EDGE


@pytest.mark.parametrize("value,outcome", [
    (HIGH_EDGE, PROMOTED),  # beats the baseline by exactly the margin
    (math.nextafter(HIGH_EDGE, 0.0), REJECTED),  # by one ulp less
    (math.nextafter(HIGH_EDGE, 1.0), PROMOTED),
])
def test_margin_edge_higher_is_better(value, outcome):
    assert judge("auc_roc", value, HIGH_BASE, None, True, HIGH_MARGIN)[0] == outcome


@pytest.mark.parametrize("value,outcome", [
    (LOW_EDGE, PROMOTED),  # exactly gate_margin (25 %) under persistence's RMSE
    (math.nextafter(LOW_EDGE, 1.0), REJECTED),  # one ulp short of it
    (math.nextafter(LOW_EDGE, 0.0), PROMOTED),
])
def test_margin_edge_lower_is_better(value, outcome):
    assert judge("rmse", value, LOW_BASE, None, False, LOW_MARGIN)[0] == outcome


@pytest.mark.parametrize("scale", [2.0**-10, 1.0, 2.0**10])
def test_price_model_margin_is_relative_to_persistence(scale):
    """price_model's gate_margin is a relative RMSE improvement: the same 25 % at any scale of
    the returns, where an absolute margin of 0.25 would be unreachable for small RMSEs and
    trivial for large ones."""
    base = 4.0 * scale
    assert judge("rmse", 3.0 * scale, base, None, False, 0.25)[0] == PROMOTED  # exactly 25 % better
    assert judge("rmse", 3.0 * scale * (1 + 2**-20), base, None, False, 0.25)[0] == REJECTED
    assert judge("rmse", 2.0 * scale, base, None, False, 0.25)[0] == PROMOTED
    if scale > 1:
        # 16 better than persistence's 4096: far more than 0.25 in absolute terms, but 0.4 %: rejected
        assert judge("rmse", base - 16.0, base, None, False, 0.25)[0] == REJECTED


def test_price_model_default_margin_accepts_persistence_level():
    """price_model's default gate_margin is 0: an RMSE equal to persistence's passes the baseline
    bar (<=), one ulp above it does not."""
    from crypto_assets.ml.model_specs import PriceModelConfig

    margin = PriceModelConfig().gate_margin
    assert margin == 0.0
    assert judge("rmse", 0.01, 0.01, None, False, margin)[0] == PROMOTED
    assert judge("rmse", math.nextafter(0.01, 1.0), 0.01, None, False, margin)[0] == REJECTED


# ---------------------------------------------------------------- gate_and_promote on a real MLflow store
@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    from crypto_assets.resources.mlflow import MlflowResource

    return MlflowResource(home=str(tmp_path_factory.mktemp("gate")))


def _version(mlf, model: str, experiment: str, metrics: dict, dagster_run_id: str = "run-x") -> str:
    """A registered version whose MLflow run carries `metrics` (no model artifact needed: the
    gate reads the run's metrics only)."""
    mlflow = mlf.activate()
    client = mlf.client()
    name = mlf.registered_name(model)
    try:
        client.create_registered_model(name)
    except Exception:  # noqa: BLE001 - exists
        pass
    with mlflow.start_run(experiment_id=mlf.experiment_id(experiment)) as run:
        mlflow.log_metrics(metrics)
    mv = client.create_model_version(name, source=run.info.artifact_uri + "/model", run_id=run.info.run_id)
    client.set_model_version_tag(name, mv.version, "dagster_run_id", dagster_run_id)
    return str(mv.version)


def _tags(mlf, name: str, version: str) -> dict:
    return dict(mlf.client().get_model_version(name, version).tags)


@pytest.mark.slow  # a sqlite MLflow store: importing mlflow and creating its schema cost ~15 s of CPU
def test_gate_and_promote_keeps_the_champion_against_a_worse_version(registry):
    import dagster as dg

    from crypto_assets.defs.models import gate_result
    from crypto_assets.ml.registry import champion_version, gate_and_promote

    mlf = registry
    name = mlf.registered_name("trend_model")
    v1 = _version(mlf, "trend_model", "trend_model", {"auc_roc": 0.70, "baseline_auc_roc": 0.5}, "run-1")
    first = gate_and_promote(mlf, name, "run-1", "auc_roc", True, 0.01)  # found by its run id tag
    assert (first.outcome, first.version, first.champion_version) == (PROMOTED, v1, None)
    assert champion_version(mlf, name) == v1

    # beats the baseline by far, but the champion scored 0.70 on the same holdout
    v2 = _version(mlf, "trend_model", "trend_model",
                  {"auc_roc": 0.65, "baseline_auc_roc": 0.5, "champion_auc_roc": 0.70}, "run-2")
    verdict = gate_and_promote(mlf, name, "run-2", "auc_roc", True, 0.01, version=v2)
    assert verdict == GateVerdict(REJECTED, v2, "auc_roc", 0.65, 0.5, 0.70, v1, verdict.reason)
    assert "worse than the champion v1's 0.7" in verdict.reason
    assert champion_version(mlf, name) == v1  # unchanged
    tags = _tags(mlf, name, v2)
    assert (tags["gate"], tags["gate_reason"]) == ("rejected", verdict.reason)
    check = gate_result(verdict)
    assert (check.passed, check.severity) == (False, dg.AssetCheckSeverity.WARN)  # a WARN: the run stays green
    assert check.metadata["champion_after"].value == v1 and check.metadata["promoted"].value is False

    # a broken gate (no baseline in the run) is the only ERROR
    v3 = _version(mlf, "trend_model", "trend_model", {"auc_roc": 0.9}, "run-3")
    broken = gate_and_promote(mlf, name, "run-3", "auc_roc", True, 0.01, version=v3)
    assert broken.outcome == ERROR and gate_result(broken).severity == dg.AssetCheckSeverity.ERROR
    assert champion_version(mlf, name) == v1 and _tags(mlf, name, v3)["gate"] == "error"

    # better than the champion: the alias moves
    v4 = _version(mlf, "trend_model", "trend_model",
                  {"auc_roc": 0.72, "baseline_auc_roc": 0.5, "champion_auc_roc": 0.70}, "run-4")
    better = gate_and_promote(mlf, name, "run-4", "auc_roc", True, 0.01, version=v4)
    assert (better.outcome, better.champion_version) == (PROMOTED, v1)
    assert champion_version(mlf, name) == v4 and gate_result(better).metadata["champion_after"].value == v4


@pytest.mark.slow
def test_gate_and_promote_price_model_rmse_margin(registry):
    """price_model_<h>: RMSE, lower is better, margin relative to persistence (baseline_rmse)."""
    from crypto_assets.defs.models import horizons_gate_result
    from crypto_assets.ml.registry import champion_version, gate_and_promote

    mlf = registry
    name = mlf.registered_name("price_model_1h")
    short = _version(mlf, "price_model_1h", "price_model",
                     {"rmse": math.nextafter(LOW_EDGE, 1.0), "baseline_rmse": LOW_BASE})
    v = gate_and_promote(mlf, name, "run-x", "rmse", False, LOW_MARGIN, version=short)
    assert v.outcome == REJECTED and "does not beat the baseline" in v.reason
    assert champion_version(mlf, name) is None
    edge = _version(mlf, "price_model_1h", "price_model", {"rmse": LOW_EDGE, "baseline_rmse": LOW_BASE})
    v = gate_and_promote(mlf, name, "run-x", "rmse", False, LOW_MARGIN, version=edge)
    assert (v.outcome, v.value, v.baseline) == (PROMOTED, LOW_EDGE, LOW_BASE)
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
