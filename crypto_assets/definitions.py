"""The code location: one Definitions object with every asset, check, job, sensor, schedule
and resource. Jobs, sensors and schedules are built in crypto_assets.defs.automation; resources
and automation settings come from crypto_assets.settings, the one reader of the environment."""

import dagster as dg

from crypto_assets.defs import history, incremental, models, predictions, report, sources, training_data
from crypto_assets.defs.automation import (
    build_automation,
    demo_job,
    incremental_job,
    ingest_job,
    klines_backfill_job,
    training_job,
)
from crypto_assets.defs.maintenance import maintenance_job
from crypto_assets.defs.report import build_report_schedule, report_job
from crypto_assets.defs.run_alerts import build_run_failure_sensor
from crypto_assets.defs.schema_checks import warehouse_schema
from crypto_assets.settings import alert_settings, automation_settings, build_resources

ASSET_MODULES = [incremental, training_data, models, predictions, report, history]
AUTOMATION = automation_settings()
SENSORS, SCHEDULES = build_automation(AUTOMATION)
REPORT_SCHEDULE = build_report_schedule(AUTOMATION.report_cron, AUTOMATION.default_on, AUTOMATION.report_keep)
# Failed runs go to the alert webhooks; on by default once any is configured.
RUN_FAILURE_SENSOR = build_run_failure_sensor(AUTOMATION.default_on or bool(alert_settings().webhooks))

defs = dg.Definitions(
    # the sources and Kafka topics as external assets: lineage from source to output topic
    assets=[*dg.load_assets_from_modules(ASSET_MODULES), *sources.SPECS],
    asset_checks=[warehouse_schema],
    jobs=[ingest_job, incremental_job, training_job, demo_job, maintenance_job, klines_backfill_job,
          report_job],
    sensors=[*SENSORS, RUN_FAILURE_SENSOR],
    schedules=[*SCHEDULES, REPORT_SCHEDULE],
    resources=build_resources(),
    # Steps are short and share heavy state (DuckDB file, one Spark session): run them in the
    # run's process instead of paying a Python + Dagster start-up per step.
    executor=dg.in_process_executor,
)
