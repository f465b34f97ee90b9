"""Schedules: hourly retraining of the training set, the four models and predictions."""

import dagster as dg


def build_retraining_schedule(job, cron: str = "0 * * * *", default_on: bool = False) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="retraining_schedule",
        job=job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING if default_on else dg.DefaultScheduleStatus.STOPPED,
        description="Rebuild the training set and retrain the models; champions move only through the gates.",
    )
