"""The code location: one Definitions object with every asset, check, job, sensor, schedule
and resource. Cross-cutting policy (automation, executors) is applied here, once."""

import dagster as dg

from crypto_assets.defs import incremental, models, predictions, report, training_data
from crypto_assets.defs.schema_checks import warehouse_schema
from crypto_assets.defs.maintenance import build_maintenance_schedule, maintenance_job
from crypto_assets.defs.schedules import build_retraining_schedule
from crypto_assets.defs.sensors import build_backlog_sensor
from crypto_assets.settings import automation_settings, build_resources

ASSET_MODULES = [incremental, training_data, models, predictions, report]
AUTOMATION = automation_settings()

INCREMENTAL = dg.AssetSelection.assets(
    "raw_ticks", "clean_ticks", "market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats", "correlations", "anomalies"
)
TRAINING = dg.AssetSelection.assets("training_set", "trend_model", "anomaly_model", "price_model", "coin_clusters", "predictions")
# Column-schema drift only happens when code changes: it is checked hourly with training and in
# every full run, not in the ingest or incremental runs.
SCHEMA_DRIFT = dg.AssetSelection.checks(warehouse_schema)

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("raw_ticks") - SCHEMA_DRIFT,
    description="Pull the Kafka backlog into bronze (raw_ticks) once.",
    executor_def=dg.in_process_executor,
)

# Launched by the backlog sensor: one step that drains the backlog pass after pass.
incremental_job = dg.define_asset_job(
    "incremental_job",
    selection=INCREMENTAL - SCHEMA_DRIFT,
    description="What the backlog sensor launches: raw → clean → features/candles → anomalies, draining the backlog.",
    executor_def=dg.in_process_executor,
)

training_job = dg.define_asset_job(
    "training_job",
    selection=TRAINING | SCHEMA_DRIFT,
    description="Build the training set, retrain the four models (gated promotion), then predict; "
    "check the bronze/silver/gold column schemas for drift.",
    executor_def=dg.in_process_executor,  # one Spark session for all four models
)

demo_job = dg.define_asset_job(
    "demo_job",
    selection=dg.AssetSelection.all(),
    description="Every asset and check, in dependency order: what `crypto-assets demo` runs.",
    executor_def=dg.in_process_executor,
)

assets = dg.load_assets_from_modules(ASSET_MODULES)

defs = dg.Definitions(
    assets=assets,
    asset_checks=[warehouse_schema],
    jobs=[ingest_job, incremental_job, training_job, demo_job, maintenance_job],
    sensors=[
        build_backlog_sensor(
            incremental_job,
            interval_s=AUTOMATION["interval_s"],
            min_messages=AUTOMATION["min_messages"],
            max_wait_seconds=AUTOMATION["max_wait_seconds"],
            drain_seconds=AUTOMATION["drain_seconds"],
            default_on=AUTOMATION["default_on"],
        ),
        dg.AutomationConditionSensorDefinition(
            "predictions_automation",
            target=dg.AssetSelection.assets("predictions"),
            default_status=dg.DefaultSensorStatus.RUNNING if AUTOMATION["default_on"] else dg.DefaultSensorStatus.STOPPED,
            minimum_interval_seconds=30,
        ),
    ],
    schedules=[
        build_retraining_schedule(training_job, AUTOMATION["retrain_cron"], AUTOMATION["default_on"]),
        build_maintenance_schedule(AUTOMATION["maintenance_cron"], AUTOMATION["default_on"],
                                   AUTOMATION["run_retention_hours"]),
    ],
    resources=build_resources(),
    # Steps are short and share heavy state (DuckDB file, one Spark session): run them in the
    # run's process instead of paying a Python + Dagster start-up per step.
    executor=dg.in_process_executor,
)
