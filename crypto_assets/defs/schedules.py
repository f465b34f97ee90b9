"""Schedules: hourly retraining of the training set, the four models and predictions; the
maintenance job. All in UTC, started by default only when automation is on."""

import dagster as dg


ACTIVE = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
          dg.DagsterRunStatus.STARTED]


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
