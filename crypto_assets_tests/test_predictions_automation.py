"""predictions' automation condition, evaluated by Dagster's own evaluator across cron ticks:
requested after the next tick once features OR a model have changed, never before the tick,
never twice for the same updates."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg

from crypto_assets.definitions import defs
from crypto_assets.defs import predictions as predictions_module
from crypto_assets.defs.predictions import PREDICTIONS_CRON, predictions_condition

CRON = "*/5 * * * *"
KEY = dg.AssetKey("predictions")
DEPS = [dg.AssetSpec(k) for k in ("market_features", "trend_model", "anomaly_model", "price_model")]


def _t0() -> datetime:
    """One minute past a 5-minute tick, in the past: the evaluation times must not be ahead of
    the wall-clock times Dagster stamps on the materializations reported between them."""
    now = datetime.now(UTC) - timedelta(days=1)
    return now.replace(minute=now.minute - now.minute % 5, second=0, microsecond=0) + timedelta(minutes=1)


class Evaluator:
    def __init__(self, instance: dg.DagsterInstance):
        self.instance = instance
        self.cursor = None
        # the predictions asset's own spec (its deps), with the condition on a fixed cron
        real = predictions_module.predictions.specs_by_key[KEY]
        self.assets = [*DEPS, dg.AssetSpec(KEY, deps=real.deps, automation_condition=predictions_condition(CRON))]

    def requested(self, at: datetime) -> bool:
        # Definitions(assets=...) is what it builds from a list itself; its annotation omits AssetSpec
        r = dg.evaluate_automation_conditions(defs=dg.Definitions(assets=self.assets), instance=self.instance,
                                              asset_selection=dg.AssetSelection.assets(KEY),
                                              evaluation_time=at, cursor=self.cursor)
        self.cursor = r.cursor
        return r.get_num_requested(KEY) == 1

    def update(self, key: str) -> None:
        self.instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=key))


def test_features_alone_trigger_predictions_after_the_next_tick():
    t0 = _t0()  # ticks at t0 - 1 min, t0 + 4 min, t0 + 9 min, ...
    with dg.DagsterInstance.ephemeral() as instance:
        ev = Evaluator(instance)
        assert not ev.requested(t0)  # first evaluation: nothing has happened yet
        ev.update("market_features")  # features only: no model retrained
        assert not ev.requested(t0 + timedelta(minutes=2))  # new features, but no tick yet
        assert ev.requested(t0 + timedelta(minutes=4, seconds=30))  # the tick passed: requested
        assert not ev.requested(t0 + timedelta(minutes=5))  # the request is handled
        assert not ev.requested(t0 + timedelta(minutes=9, seconds=30))  # a tick, but nothing new
        ev.update("market_features")
        assert ev.requested(t0 + timedelta(minutes=10))  # new features after that tick: now
        ev.update("market_features")
        assert not ev.requested(t0 + timedelta(minutes=11))  # new again, but the next tick is due at +14
        assert ev.requested(t0 + timedelta(minutes=14, seconds=10))


def test_a_retrained_model_alone_triggers_predictions():
    t0 = _t0()
    with dg.DagsterInstance.ephemeral() as instance:
        ev = Evaluator(instance)
        assert not ev.requested(t0)
        ev.update("trend_model")  # a retrain (its champion may or may not have moved); no new features
        assert not ev.requested(t0 + timedelta(minutes=1))
        assert ev.requested(t0 + timedelta(minutes=4, seconds=30))
        assert not ev.requested(t0 + timedelta(minutes=9, seconds=30))  # a tick, nothing new
        # a tick has passed since the last request: the next update is predicted at once
        ev.update("price_model")
        assert ev.requested(t0 + timedelta(minutes=10))
        assert not ev.requested(t0 + timedelta(minutes=15))


def test_the_code_location_uses_the_condition():
    cond = defs.resolve_asset_graph().get(KEY).automation_condition
    assert cond == predictions_condition(PREDICTIONS_CRON)
    assert cond is not None
    label = cond.get_label()
    assert label is not None and PREDICTIONS_CRON in label
