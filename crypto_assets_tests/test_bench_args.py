"""bench/freshness.py's automation options parse and reach dagster dev's environment (the
benchmark itself is long and not run here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("bench_freshness", Path(__file__).resolve().parent.parent / "bench" / "freshness.py")
assert _spec is not None and _spec.loader is not None  # a .py file path has a spec with a loader
freshness = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = freshness  # its dataclasses look their module up
_spec.loader.exec_module(freshness)


def _env(*argv: str) -> dict[str, str]:
    a = freshness.build_parser().parse_args(list(argv))
    return freshness.automation_env(a.retrain_cron, a.predictions_cron, a.keep_automation)


def test_crons_are_parked_by_default():
    assert _env() == {"RETRAIN_CRON": freshness.NEVER_CRON, "PREDICTIONS_CRON": freshness.NEVER_CRON}


def test_short_crons_keep_retraining_and_predictions_in_the_window():
    assert _env("--retrain-cron", "*/3 * * * *", "--predictions-cron", "*/1 * * * *") == {
        "RETRAIN_CRON": "*/3 * * * *", "PREDICTIONS_CRON": "*/1 * * * *"}
    # one given, the other parked (or left at its default with --keep-automation)
    assert _env("--retrain-cron", "*/3 * * * *") == {"RETRAIN_CRON": "*/3 * * * *", "PREDICTIONS_CRON": freshness.NEVER_CRON}
    assert _env("--retrain-cron", "*/3 * * * *", "--keep-automation") == {"RETRAIN_CRON": "*/3 * * * *"}
    assert _env("--keep-automation") == {}


def test_an_invalid_cron_is_refused(capsys):
    with pytest.raises(SystemExit):
        freshness.build_parser().parse_args(["--retrain-cron", "every 3 minutes"])
    assert "not a cron schedule" in capsys.readouterr().err
