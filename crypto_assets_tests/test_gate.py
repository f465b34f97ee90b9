"""The champion gate's verdict as a pure function: promote only a real improvement, keep the
champion on a tie (a retrain on unchanged data), reject what is worse or beats no baseline."""

from __future__ import annotations

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
