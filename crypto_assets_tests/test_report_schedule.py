"""market_report on its own schedule (report_schedule → report_job) and `make ui`'s build of a
missing or stale report (crypto_assets.ops.report_once), with real Dagster execution."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import dagster as dg

from crypto_assets.definitions import defs
from crypto_assets.defs.report import build_report_schedule, report_run_config
from crypto_assets.ops.report_once import ensure_report, report_state
from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.chain import run_incremental
from crypto_assets_tests.silver_helpers import insert_raw_batch, make_ticks


def test_report_schedule_in_the_definitions():
    sched = defs.resolve_schedule_def("report_schedule")
    assert (sched.job_name, sched.cron_schedule, sched.execution_timezone) == ("report_job", "*/15 * * * *", "UTC")
    assert sched.default_status == dg.DefaultScheduleStatus.STOPPED  # automation off in tests
    layer = defs.resolve_job_def("report_job").asset_layer
    assert {k.to_user_string() for k in layer.selected_asset_keys} == {"market_report"}
    # on in live mode and compose (CRYPTO_AUTOMATION=on), with the cron from settings
    on = build_report_schedule("*/5 * * * *", default_on=True, keep_reports=12)
    assert on.default_status == dg.DefaultScheduleStatus.RUNNING and on.cron_schedule == "*/5 * * * *"


def test_report_schedule_evaluates_to_a_pruning_run_and_waits_for_a_running_one():
    sched = defs.resolve_schedule_def("report_schedule")
    with dg.instance_for_test() as instance:
        ctx = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(2026, 1, 1, 0, 15, tzinfo=UTC))
        data = sched.evaluate_tick(ctx)
        assert data.run_requests is not None and len(data.run_requests) == 1
        assert data.run_requests[0].run_config == report_run_config(96)
        # a report run still queued/started: the tick is skipped, not stacked
        instance.add_run(dg.DagsterRun(job_name="report_job", run_id="r1", status=dg.DagsterRunStatus.STARTED))
        data = sched.evaluate_tick(dg.build_schedule_context(instance=instance))
        assert not data.run_requests and data.skip_message


def test_make_ui_builds_a_missing_or_stale_report_once(tmp_path, monkeypatch):
    home = tmp_path / "var"
    assert report_state(home) == "no-warehouse" and ensure_report(home) == "no-warehouse"
    coins = ["bitcoin", "ethereum"]
    lh = LakehouseResource(home=str(home), coins=coins)
    with lh.connect() as conn:
        insert_raw_batch(conn, make_ticks(120, coins, start=datetime.now(UTC) - timedelta(hours=1), seed=5))
        run_incremental(conn, coins)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    (tmp_path / "dagster").mkdir()
    monkeypatch.setenv("COINS", ",".join(coins))
    assert report_state(home) == "stale"
    assert ensure_report(home) == "built"
    assert (home / "reports" / "latest" / "report.md").is_file()
    assert report_state(home) == "current" and ensure_report(home) == "current"
    with dg.DagsterInstance.get() as instance:  # recorded where the UI reads it, with its key figures
        event = instance.get_latest_materialization_event(dg.AssetKey("market_report"))
        assert event is not None and event.asset_materialization is not None
        assert event.asset_materialization.metadata["coins"].value == 2
    # new data after the report: stale again
    later = time.time() + 5
    os.utime(home / "warehouse.duckdb", (later, later))
    assert report_state(home) == "stale"
