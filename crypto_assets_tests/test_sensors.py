"""The backlog sensor against the embedded broker, with build_sensor_context; schedules;
the one-writer pool configuration."""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import yaml

from crypto_assets.definitions import defs, incremental_job
from crypto_assets.resources import KafkaResource
from crypto_assets.sensors import build_backlog_sensor
from crypto_assets_tests.helpers import produce, ticks

REPO = Path(__file__).resolve().parents[1]


def _eval(sensor, kafka, instance, cursor=None):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"kafka": kafka})
    result = sensor.evaluate_tick(ctx)
    return result, ctx.cursor if hasattr(ctx, "cursor") else None


def test_backlog_sensor_skip_request_and_dedupe(kafka):
    sensor = build_backlog_sensor(incremental_job, min_messages=10, max_wait_seconds=3600)
    with dg.DagsterInstance.ephemeral() as instance:
        r, _ = _eval(sensor, kafka, instance)
        assert not r.run_requests and "no backlog" in r.skip_message

        produce(kafka, ticks(50))
        r, _ = _eval(sensor, kafka, instance)
        assert len(r.run_requests) == 1
        assert r.run_requests[0].tags["lag"] == "50"
        cursor = r.cursor
        assert json.loads(cursor)["highs"]

        # same backlog again: no second request
        r2, _ = _eval(sensor, kafka, instance, cursor=cursor)
        assert not r2.run_requests and "already requested" in r2.skip_message and "lag 50" in r2.skip_message

        # new messages make it a new backlog
        produce(kafka, ticks(5, start=50))
        r3, _ = _eval(sensor, kafka, instance, cursor=cursor)
        assert len(r3.run_requests) == 1 and r3.run_requests[0].run_key != r.run_requests[0].run_key


def test_backlog_below_threshold_reports_lag_and_age_triggers(kafka):
    produce(kafka, ticks(3))
    with dg.DagsterInstance.ephemeral() as instance:
        lazy = build_backlog_sensor(incremental_job, min_messages=100, max_wait_seconds=3600)
        r, _ = _eval(lazy, kafka, instance)
        assert not r.run_requests and "lag 3" in r.skip_message and "below 100" in r.skip_message
        eager = build_backlog_sensor(incremental_job, min_messages=100, max_wait_seconds=0.0)
        r, _ = _eval(eager, kafka, instance)
        assert len(r.run_requests) == 1  # the oldest pending message is older than 0 s


def test_backlog_sensor_skips_when_run_in_progress(kafka):
    produce(kafka, ticks(20))
    sensor = build_backlog_sensor(incremental_job, min_messages=1, max_wait_seconds=3600)
    with dg.DagsterInstance.ephemeral() as instance:
        instance.add_run(
            dg.DagsterRun(job_name="incremental_job", run_id="abcdef12-0000-0000-0000-000000000000",
                          status=dg.DagsterRunStatus.STARTED)
        )
        r, _ = _eval(sensor, kafka, instance)
        assert not r.run_requests and "still queued/running" in r.skip_message


def test_backlog_sensor_broker_down(home):
    kafka = KafkaResource(bootstrap_servers="127.0.0.1:1", home=str(home), timeout_s=1)
    sensor = build_backlog_sensor(incremental_job)
    with dg.DagsterInstance.ephemeral() as instance:
        r, _ = _eval(sensor, kafka, instance)
        assert not r.run_requests and "127.0.0.1:1" in r.skip_message


def test_automation_definitions():
    sensor = defs.resolve_sensor_def("kafka_backlog_sensor")
    assert sensor.job_name == "incremental_job" and sensor.minimum_interval_seconds <= 10
    sched = defs.resolve_schedule_def("retraining_schedule")
    assert sched.cron_schedule == "0 * * * *" and sched.job_name == "training_job"
    assert defs.resolve_sensor_def("predictions_automation") is not None
    incremental = {k.to_user_string() for k in defs.resolve_job_def("incremental_job").asset_layer.selected_asset_keys}
    assert {"raw_ticks", "clean_ticks", "market_features", "anomalies"} <= incremental
    assert not incremental & {"trend_model", "training_set"}  # the cheap path never trains
    graph = defs.resolve_asset_graph()
    assert graph.get(dg.AssetKey("predictions")).automation_condition is not None


def test_duckdb_writers_share_a_pool_of_one():
    cfg = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert cfg["concurrency"]["pools"]["default_limit"] == 1
    graph = defs.resolve_asset_graph()
    writers = ["raw_ticks", "clean_ticks", "market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats",
               "correlations", "anomalies"]
    for key in writers:
        node = graph.get(dg.AssetKey(key))
        assert node.pools == {"duckdb_writer"}, key
    # Steps that only read DuckDB (or never open it) hold no writer slot; predictions writes in
    # one short transaction and relies on the file lock (see assets/predictions.py).
    for key in ["training_set", "trend_model", "anomaly_model", "price_model", "coin_clusters", "predictions",
                "market_report"]:
        assert not graph.get(dg.AssetKey(key)).pools, key
    from crypto_assets.assets.schema_checks import warehouse_schema

    assert warehouse_schema.node_def.pool is None  # the incremental checks run inside the pooled step
    assert cfg["concurrency"]["pools"]["granularity"] == "op"  # the slot is held by the step, not its run


def test_retraining_schedule_skips_while_a_training_run_is_active():
    """On a long history a retrain can outlast its cron interval: the next tick is skipped
    instead of starting a second training run beside it."""
    sched = defs.resolve_schedule_def("retraining_schedule")
    with dg.instance_for_test() as instance:
        with dg.build_schedule_context(instance=instance) as ctx:
            assert len(sched.evaluate_tick(ctx).run_requests) == 1
        instance.add_run(dg.DagsterRun(job_name="training_job", run_id="abcdef12-0000-0000-0000-000000000001",
                                       status=dg.DagsterRunStatus.STARTED))
        with dg.build_schedule_context(instance=instance) as ctx:
            assert not sched.evaluate_tick(ctx).run_requests
