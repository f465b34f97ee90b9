"""Automation: the jobs (asset selections by layer group), the sensors and the schedules that
launch them, all defined here and registered once by crypto_assets.definitions.

- incremental_job: bronze → silver → gold, launched by kafka_backlog_sensor when a backlog appears;
- training_job: the `models` group (training set, four models, predictions) on retraining_schedule;
- predictions_automation: re-scores new features on a cron between retrains;
- maintenance_job (crypto_assets.defs.maintenance) on maintenance_schedule;
- klines_backfill_job: the `history` group (daily klines partitions), backfilled by hand.
Sensors and schedules start RUNNING only when automation is on (`crypto-assets live` sets it).
"""

import json

import dagster as dg

from crypto_assets.defs.schema_checks import warehouse_schema
from crypto_assets.kafka.errors import BrokerUnavailable
from crypto_assets.kafka.lag import measure_backlog
from crypto_assets.resources import KafkaResource
from crypto_assets.settings import AutomationSettings

ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
          dg.DagsterRunStatus.STARTED]

# ----------------------------------------------------------------------------------------- jobs
INCREMENTAL = dg.AssetSelection.groups("bronze", "silver", "gold")
TRAINING = dg.AssetSelection.groups("models")
# Column-schema drift only happens when code changes: it is checked hourly with training and in
# every full run, not in the ingest or incremental runs.
SCHEMA_DRIFT = dg.AssetSelection.checks(warehouse_schema)

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("raw_ticks", "raw_trades") - SCHEMA_DRIFT,
    description="Pull the Kafka backlog into bronze (raw_ticks, raw_trades) once.",
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

# The history backfill: daily partitions of exchange klines, launched as a backfill from the UI/CLI.
HISTORY = dg.AssetSelection.groups("history")

klines_backfill_job = dg.define_asset_job(
    "klines_backfill_job",
    selection=HISTORY,
    description="Load the exchanges' 1-minute klines of one UTC day per partition: backfill a range of "
    "partitions (e.g. the last 90 days) from the UI or `dagster job backfill`.",
    executor_def=dg.in_process_executor,
)

demo_job = dg.define_asset_job(
    "demo_job",
    selection=dg.AssetSelection.all() - HISTORY,
    description="Every asset and check but the history backfill (it needs the exchanges), in dependency order: "
    "what `crypto-assets demo` runs.",
    executor_def=dg.in_process_executor,
)


# -------------------------------------------------------------------------------------- sensors
def incremental_run_config(drain_seconds: float) -> dict:
    """The run config of a sensor-launched incremental run: drain the backlog for this long."""
    return {"ops": {"incremental": {"config": {"drain_seconds": float(drain_seconds)}}}}


def build_backlog_sensor(
    job,
    *,
    interval_s: int = 5,
    min_messages: int = 500,
    max_wait_seconds: float = 10.0,
    drain_seconds: float = 120.0,
    default_on: bool = False,
) -> dg.SensorDefinition:
    """Request ONE run of `job` when lag (of ticks and trades together) ≥ min_messages or the
    oldest pending message is older than max_wait_seconds; the run keeps draining new messages
    for `drain_seconds`. The cursor holds the high watermarks last requested, so the same backlog
    is never requested twice; a queued or running run of the job makes it wait."""

    @dg.sensor(
        name="kafka_backlog_sensor",
        job=job,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING if default_on else dg.DefaultSensorStatus.STOPPED,
        description=f"lag ≥ {min_messages} messages or oldest pending ≥ {max_wait_seconds:.0f}s → one incremental run "
        f"that drains the backlog for {drain_seconds:.0f}s",
    )
    def kafka_backlog_sensor(context: dg.SensorEvaluationContext, kafka: KafkaResource):
        try:
            backlog = measure_backlog(kafka, timeout_s=2.0)
            trades = measure_backlog(kafka, timeout_s=2.0, topic=kafka.trades_topic)
        except BrokerUnavailable as exc:
            return dg.SkipReason(str(exc))
        lag = backlog.lag + trades.lag
        # Trades join the description, cursor and run key once their topic holds anything, so a
        # deployment without a trade source reads exactly as before.
        trade_highs = trades.highs if any(trades.highs.values()) else {}
        described = backlog.describe() + (f"; {kafka.trades_topic} {trades.describe()}" if trade_highs else "")
        if lag == 0:
            return dg.SkipReason(f"no backlog on {kafka.raw_topic} or {kafka.trades_topic}: {described}")
        age = max(backlog.oldest_pending_age_s or 0.0, trades.oldest_pending_age_s or 0.0)
        if lag < min_messages and age < max_wait_seconds:
            return dg.SkipReason(
                f"{described}: below {min_messages} messages and younger than {max_wait_seconds:.0f}s"
            )
        previous = json.loads(context.cursor) if context.cursor else {}
        if previous.get("highs") == backlog.highs and previous.get("trade_highs", {}) == trade_highs:
            return dg.SkipReason(f"{described}: this backlog was already requested (run key {previous.get('run_key')})")
        active = context.instance.get_runs(
            filters=dg.RunsFilter(job_name=job.name, statuses=ACTIVE), limit=1
        )
        if active:
            return dg.SkipReason(f"{described}: run {active[0].run_id[:8]} of {job.name} is still queued/running")
        run_key = "backlog-" + "-".join(f"{p}:{h}" for p, h in backlog.highs.items())
        if trade_highs:
            run_key += "-trades-" + "-".join(f"{p}:{h}" for p, h in trade_highs.items())
        context.update_cursor(json.dumps({"highs": backlog.highs, "trade_highs": trade_highs, "run_key": run_key}))
        return dg.RunRequest(
            run_key=run_key,
            run_config=incremental_run_config(drain_seconds),
            tags={"trigger": "kafka_backlog", "lag": str(lag)},
        )

    return kafka_backlog_sensor


def build_predictions_sensor(default_on: bool) -> dg.AutomationConditionSensorDefinition:
    """Evaluates the predictions asset's automation condition (its cron, after new features)."""
    return dg.AutomationConditionSensorDefinition(
        "predictions_automation",
        target=dg.AssetSelection.assets("predictions"),
        default_status=dg.DefaultSensorStatus.RUNNING if default_on else dg.DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=30,
    )


# ------------------------------------------------------------------------------------ schedules
def _not_running(job_name: str):
    """A tick while the job's previous run is still queued or running is skipped: on a long
    history a retrain can outlast its cron interval, and two at once would only compete."""
    def should_execute(context: dg.ScheduleEvaluationContext) -> bool:
        return not context.instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=ACTIVE), limit=1)

    return should_execute


def build_schedule(name: str, job, cron: str, default_on: bool, description: str,
                   run_config: dict | None = None) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=name,
        job=job,
        run_config=run_config,
        should_execute=_not_running(job.name),
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING if default_on else dg.DefaultScheduleStatus.STOPPED,
        description=description,
    )


def build_retraining_schedule(job, cron: str = "0 * * * *", default_on: bool = False) -> dg.ScheduleDefinition:
    return build_schedule("retraining_schedule", job, cron, default_on,
                          "Rebuild the training set and retrain the models; champions move only through the gates.")


def build_automation(settings: AutomationSettings) -> tuple[list, list]:
    """The sensors and schedules of this code location for these settings."""
    from crypto_assets.defs.maintenance import build_maintenance_schedule

    sensors = [
        build_backlog_sensor(
            incremental_job,
            interval_s=settings.interval_s,
            min_messages=settings.min_messages,
            max_wait_seconds=settings.max_wait_seconds,
            drain_seconds=settings.drain_seconds,
            default_on=settings.default_on,
        ),
        build_predictions_sensor(settings.default_on),
    ]
    schedules = [
        build_retraining_schedule(training_job, settings.retrain_cron, settings.default_on),
        build_maintenance_schedule(settings.maintenance_cron, settings.default_on, settings.run_retention_hours),
    ]
    return sensors, schedules
