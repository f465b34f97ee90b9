"""Sensors: launch an incremental run that drains the Kafka backlog when one appears."""

import json

import dagster as dg

from crypto_assets.kafka.errors import BrokerUnavailable
from crypto_assets.kafka.lag import measure_backlog
from crypto_assets.resources import KafkaResource

ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
          dg.DagsterRunStatus.STARTED]


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
    """Request ONE run of `job` when lag ≥ min_messages or the oldest pending message is older
    than max_wait_seconds; the run keeps draining new messages for `drain_seconds`. The cursor
    holds the high watermarks last requested, so the same backlog is never requested twice; a
    queued or running run of the job makes it wait."""

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
        except BrokerUnavailable as exc:
            return dg.SkipReason(str(exc))
        if backlog.lag == 0:
            return dg.SkipReason(f"no backlog on {kafka.raw_topic}: {backlog.describe()}")
        age = backlog.oldest_pending_age_s or 0.0
        if backlog.lag < min_messages and age < max_wait_seconds:
            return dg.SkipReason(
                f"{backlog.describe()}: below {min_messages} messages and younger than {max_wait_seconds:.0f}s"
            )
        previous = json.loads(context.cursor) if context.cursor else {}
        if previous.get("highs") == backlog.highs:
            return dg.SkipReason(f"{backlog.describe()}: this backlog was already requested (run key {previous.get('run_key')})")
        active = context.instance.get_runs(
            filters=dg.RunsFilter(job_name=job.name, statuses=ACTIVE), limit=1
        )
        if active:
            return dg.SkipReason(f"{backlog.describe()}: run {active[0].run_id[:8]} of {job.name} is still queued/running")
        run_key = "backlog-" + "-".join(f"{p}:{h}" for p, h in backlog.highs.items())
        context.update_cursor(json.dumps({"highs": backlog.highs, "run_key": run_key}))
        return dg.RunRequest(
            run_key=run_key,
            run_config=incremental_run_config(drain_seconds),
            tags={"trigger": "kafka_backlog", "lag": str(backlog.lag)},
        )

    return kafka_backlog_sensor
