"""Housekeeping that keeps a long-running installation bounded: the Dagster storage purge (and the
lake compaction), as one job on a schedule, visible and switchable in the UI like the others."""

import dagster as dg

from crypto_assets.storage_purge import prune_mlflow, purge_dagster_storage


@dg.job(
    name="maintenance_job",
    executor_def=dg.in_process_executor,
    description="Purge old Dagster runs (keeping every asset's latest materialization and check result) and old "
    "MLflow model versions (keeping the champions).",
)
def maintenance_job() -> None:
    purge_dagster_storage()
    prune_mlflow()


def build_maintenance_schedule(cron: str, default_on: bool) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="maintenance_schedule",
        job=maintenance_job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING if default_on else dg.DefaultScheduleStatus.STOPPED,
        description="Keep Dagster storage (and the Parquet lake) at a steady size.",
    )
