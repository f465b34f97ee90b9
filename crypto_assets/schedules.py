"""Schedules: hourly retraining of the training set, the four models and predictions; the
maintenance job. All in UTC, started by default only when automation is on."""

import dagster as dg


def build_schedule(name: str, job, cron: str, default_on: bool, description: str,
                   run_config: dict | None = None) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name=name,
        job=job,
        run_config=run_config,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING if default_on else dg.DefaultScheduleStatus.STOPPED,
        description=description,
    )


def build_retraining_schedule(job, cron: str = "0 * * * *", default_on: bool = False) -> dg.ScheduleDefinition:
    return build_schedule("retraining_schedule", job, cron, default_on,
                          "Rebuild the training set and retrain the models; champions move only through the gates.")
