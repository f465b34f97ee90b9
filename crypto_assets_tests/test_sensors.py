"""The backlog sensor against the embedded broker, with build_sensor_context; schedules;
the one-writer pool configuration."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import dagster as dg
import orjson
import yaml

from crypto_assets.definitions import AUTOMATION, defs, incremental_job
from crypto_assets.defs.automation import build_backlog_sensor, incremental_run_config
from crypto_assets.kafka.lag import measure_backlog
from crypto_assets.resources import KafkaResource
from crypto_assets.settings import automation_settings
from crypto_assets_tests.helpers import evaluate_sensor, produce, ticks

REPO = Path(__file__).resolve().parents[1]


def _own_tags(req: dg.RunRequest) -> dict:
    """The tags the sensor sets (evaluate_tick adds dagster/sensor_name)."""
    return {k: v for k, v in req.tags.items() if not k.startswith("dagster/")}


def _eval(sensor, kafka, instance, cursor=None):
    ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"kafka": kafka})
    result = evaluate_sensor(sensor, ctx)
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
        assert cursor is not None
        highs = json.loads(cursor)["highs"]
        assert highs == measure_backlog(kafka, with_age=False).highs and sum(highs.values()) == 50
        assert r.run_requests[0].run_key == "backlog-" + "-".join(f"{p}:{h}" for p, h in highs.items())

        # same backlog again: no second request
        r2, _ = _eval(sensor, kafka, instance, cursor=cursor)
        assert not r2.run_requests and "already requested" in r2.skip_message and "lag 50" in r2.skip_message

        # new messages make it a new backlog
        produce(kafka, ticks(5, start=50))
        r3, _ = _eval(sensor, kafka, instance, cursor=cursor)
        assert len(r3.run_requests) == 1 and r3.run_requests[0].run_key != r.run_requests[0].run_key


def _produce_at(kafka, n: int, timestamp_ms: int, start: int = 0) -> None:
    """n ticks whose Kafka timestamp (CreateTime, what the sensor's age reads) is timestamp_ms."""
    from confluent_kafka import Producer

    p = Producer(kafka.producer_config())
    for t in ticks(n, start=start):
        p.produce(kafka.raw_topic, key=t["coin_id"], value=orjson.dumps(t), timestamp=timestamp_ms)
    assert p.flush(30) == 0


def test_backlog_below_min_and_younger_than_max_wait_requests_nothing(kafka):
    produce(kafka, ticks(3))
    backlog = measure_backlog(kafka)
    assert backlog.lag == 3 and backlog.oldest_pending_age_s is not None  # the age was measured
    assert backlog.oldest_pending_age_s < 3600
    with dg.DagsterInstance.ephemeral() as instance:
        lazy = build_backlog_sensor(incremental_job, min_messages=100, max_wait_seconds=3600)
        r, _ = _eval(lazy, kafka, instance)
        assert not r.run_requests
        assert "lag 3" in r.skip_message and "below 100 messages and younger than 3600s" in r.skip_message


def test_backlog_count_reaching_min_requests_a_run(kafka):
    produce(kafka, ticks(10))
    with dg.DagsterInstance.ephemeral() as instance:
        r, _ = _eval(build_backlog_sensor(incremental_job, min_messages=11, max_wait_seconds=3600), kafka, instance)
        assert not r.run_requests and "below 11 messages" in r.skip_message
        r, _ = _eval(build_backlog_sensor(incremental_job, min_messages=10, max_wait_seconds=3600), kafka, instance)
        assert len(r.run_requests) == 1 and _own_tags(r.run_requests[0]) == {"trigger": "kafka_backlog", "lag": "10"}


def test_backlog_older_than_max_wait_requests_a_run(kafka):
    """Three ticks, far below min_messages, whose oldest is two hours old: a max wait of one hour
    requests a run, one of three hours does not (the age is measured, not assumed)."""
    two_hours_ago_ms = int((time.time() - 7200) * 1000)
    _produce_at(kafka, 3, two_hours_ago_ms)
    backlog = measure_backlog(kafka)
    assert backlog.lag == 3 and backlog.oldest_pending_age_s is not None and 7200 <= backlog.oldest_pending_age_s < 7200 + 600
    with dg.DagsterInstance.ephemeral() as instance:
        patient = build_backlog_sensor(incremental_job, min_messages=100, max_wait_seconds=3 * 3600)
        r, _ = _eval(patient, kafka, instance)
        assert not r.run_requests and "younger than 10800s" in r.skip_message
        hurried = build_backlog_sensor(incremental_job, min_messages=100, max_wait_seconds=3600)
        r, _ = _eval(hurried, kafka, instance)
        assert len(r.run_requests) == 1 and r.run_requests[0].tags["lag"] == "3"


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


DEFAULTS = {  # README "Automation" and the env knobs' defaults in crypto_assets/settings.py
    "default_on": False,
    "interval_s": 2,
    "min_messages": 500,
    "max_wait_seconds": 10.0,
    "drain_seconds": 120.0,
    "retrain_cron": "0 * * * *",
    "predictions_cron": "*/5 * * * *",
    "maintenance_cron": "*/30 * * * *",
    "run_retention_hours": 24.0,
    "report_cron": "*/15 * * * *",
    "report_keep": 96,
}
KNOBS = ["CRYPTO_AUTOMATION", "SENSOR_INTERVAL_SECONDS", "BACKLOG_MIN_MESSAGES", "BACKLOG_MAX_WAIT_SECONDS",
         "INCREMENTAL_DRAIN_SECONDS", "RETRAIN_CRON", "PREDICTIONS_CRON", "MAINTENANCE_CRON", "RUN_RETENTION_HOURS",
         "REPORT_CRON", "REPORT_KEEP"]


def test_automation_settings_defaults_and_overrides():
    assert automation_settings({}).as_dict() == DEFAULTS
    env = dict(zip(KNOBS, ["on", "7", "1", "2.5", "30", "5 * * * *", "*/2 * * * *", "0 3 * * *", "48",
                        "*/10 * * * *", "4"], strict=True))
    assert automation_settings(env).as_dict() == {
        "default_on": True, "interval_s": 7, "min_messages": 1, "max_wait_seconds": 2.5, "drain_seconds": 30.0,
        "retrain_cron": "5 * * * *", "predictions_cron": "*/2 * * * *", "maintenance_cron": "0 3 * * *",
        "run_retention_hours": 48.0, "report_cron": "*/10 * * * *", "report_keep": 4,
    }


def test_automation_definitions_use_the_defaults():
    set_knobs = [k for k in KNOBS if os.environ.get(k)]
    assert not set_knobs, f"{set_knobs} set in the environment: scripts/test.sh unsets them to test the defaults"
    assert AUTOMATION.as_dict() == DEFAULTS
    sensor = defs.resolve_sensor_def("kafka_backlog_sensor")
    assert sensor.job_name == "incremental_job" and sensor.minimum_interval_seconds == 2
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert sensor.description == ("lag ≥ 500 messages or oldest pending ≥ 10s → one incremental run that drains the "
                                  "backlog for 120s")
    for name, job, cron in [("retraining_schedule", "training_job", "0 * * * *"),
                            ("maintenance_schedule", "maintenance_job", "*/30 * * * *"),
                            ("report_schedule", "report_job", "*/15 * * * *")]:
        sched = defs.resolve_schedule_def(name)
        assert (sched.job_name, sched.cron_schedule, sched.execution_timezone) == (job, cron, "UTC")
        assert sched.default_status == dg.DefaultScheduleStatus.STOPPED
    auto = defs.resolve_sensor_def("predictions_automation")
    assert auto.default_status == dg.DefaultSensorStatus.STOPPED
    incremental = {k.to_user_string() for k in defs.resolve_job_def("incremental_job").asset_layer.selected_asset_keys}
    assert incremental == {"raw_ticks", "raw_trades", "clean_ticks", "market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats",
                           "correlations", "anomalies", "trade_bars_1s", "trade_bars_1m", "trade_bars_1h"}  # never trains
    graph = defs.resolve_asset_graph()
    condition = graph.get(dg.AssetKey("predictions")).automation_condition
    assert condition is not None
    assert condition.get_label() == (
        "every '*/5 * * * *' tick with new features or models")


def test_default_backlog_sensor_thresholds(kafka):
    """The sensor in the definitions: 499 fresh messages wait, the 500th requests a run that
    drains for 120 s. (Fresh: produced just before; the 10 s age limit is not reached unless
    the machine stalls that long.)"""
    sensor = defs.resolve_sensor_def("kafka_backlog_sensor")
    with dg.DagsterInstance.ephemeral() as instance:
        produce(kafka, ticks(499))
        r, _ = _eval(sensor, kafka, instance)
        assert not r.run_requests
        assert "lag 499" in r.skip_message and "below 500 messages and younger than 10s" in r.skip_message
        produce(kafka, ticks(1, start=499))
        r, _ = _eval(sensor, kafka, instance)
        (req,) = r.run_requests
        assert _own_tags(req) == {"trigger": "kafka_backlog", "lag": "500"}
        assert req.run_config == incremental_run_config(120.0) == {
            "ops": {"incremental": {"config": {"drain_seconds": 120.0}}}}


def test_duckdb_writers_share_a_pool_of_one():
    cfg = yaml.safe_load((REPO / "dagster.yaml").read_text())
    assert cfg["concurrency"]["pools"]["default_limit"] == 1
    graph = defs.resolve_asset_graph()
    writers = ["raw_ticks", "raw_trades", "clean_ticks", "market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats",
               "correlations", "anomalies", "trade_bars_1s", "trade_bars_1m", "trade_bars_1h"]
    for key in writers:
        node = graph.get(dg.AssetKey(key))
        assert node.pools == {"duckdb_writer"}, key
    # Steps that only read DuckDB (or never open it) hold no writer slot; predictions writes in
    # one short transaction and relies on the file lock (see defs/predictions.py).
    for key in ["training_set", "trend_model", "anomaly_model", "price_model", "coin_clusters", "predictions",
                "market_report"]:
        assert not graph.get(dg.AssetKey(key)).pools, key
    from crypto_assets.defs.schema_checks import warehouse_schema

    assert warehouse_schema.op.pool is None  # the incremental checks run inside the pooled step
    assert cfg["concurrency"]["pools"]["granularity"] == "op"  # the slot is held by the step, not its run


def test_retraining_schedule_skips_while_a_training_run_is_active():
    """On a long history a retrain can outlast its cron interval: the next tick is skipped
    instead of starting a second training run beside it."""
    sched = defs.resolve_schedule_def("retraining_schedule")
    with dg.instance_for_test() as instance:
        with dg.build_schedule_context(instance=instance) as ctx:
            assert len(sched.evaluate_tick(ctx).run_requests or ()) == 1
        instance.add_run(dg.DagsterRun(job_name="training_job", run_id="abcdef12-0000-0000-0000-000000000001",
                                       status=dg.DagsterRunStatus.STARTED))
        with dg.build_schedule_context(instance=instance) as ctx:
            assert not sched.evaluate_tick(ctx).run_requests
