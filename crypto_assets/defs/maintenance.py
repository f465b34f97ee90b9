"""Housekeeping that keeps a long-running installation bounded, as one job on a schedule (visible
and switchable in the UI like the others): the Dagster storage purge, the MLflow prune and the
lake compaction. Ops, not assets: they change how things are kept, never what the data is.

`compact_lake` merges the hour files of closed days into day files. It needs no DuckDB
connection (it reads and writes only Parquet under the lake locks), so it takes no slot of the
duckdb_writer pool and runs beside the live pipeline.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from crypto_assets.defs.automation import build_schedule
from crypto_assets.defs.run_purge import prune_mlflow, purge_dagster_storage
from crypto_assets.resources import LakehouseResource
from crypto_assets.warehouse.lake_compaction import compact_lake as run_compaction
from crypto_assets.warehouse.lake_layout import LAKE_DATASETS


class CompactLakeConfig(dg.Config):
    grace_hours: float = Field(default=1.0, ge=0, description="a day is closed once its end plus this is past")
    datasets: list[str] = Field(default_factory=lambda: list(LAKE_DATASETS), description="datasets to compact (default all)")
    as_of: str | None = Field(default=None, description="ISO-8601 instant to use as 'now' (default: the UTC wall clock)")


def _as_of(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    t = datetime.fromisoformat(value)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@dg.op(tags={"kind": "parquet"})
def compact_lake(context: dg.OpExecutionContext, config: CompactLakeConfig, lakehouse: LakehouseResource) -> dg.Output[dict]:
    """Compact closed days of the Parquet lake into one file per (dataset, symbol, day)."""
    unknown = sorted(set(config.datasets) - set(LAKE_DATASETS))
    if unknown:
        raise dg.Failure(f"unknown lake datasets {unknown}; known: {sorted(LAKE_DATASETS)}")
    res = run_compaction(
        lakehouse.lake_path, now=_as_of(config.as_of), grace=timedelta(hours=config.grace_hours), datasets=config.datasets
    )
    md = res.metadata()
    context.log.info(
        f"compacted {md['days_compacted']} days: {md['files_before']} hour files -> {md['files_after']} day files, "
        f"{md['rows']} rows, {md['bytes_before']} -> {md['bytes_after']} bytes; {md['dataset_files']} files in the lake"
    )
    per = md.pop("per_dataset")
    metadata = dict(md)
    metadata["per_dataset"] = dg.MetadataValue.json(per)
    return dg.Output({**md, "per_dataset": per}, metadata=metadata)


@dg.job(
    name="maintenance_job",
    executor_def=dg.in_process_executor,
    description="Purge old Dagster runs (keeping every asset's latest materialization and check result), prune old "
    "MLflow model versions (keeping the champions), compact closed days of the Parquet lake.",
)
def maintenance_job() -> None:
    purge_dagster_storage()
    prune_mlflow()
    compact_lake()


def build_maintenance_schedule(cron: str, default_on: bool, keep_hours: float = 24.0) -> dg.ScheduleDefinition:
    return build_schedule("maintenance_schedule", maintenance_job, cron, default_on,
                          f"Keep Dagster storage (runs older than {keep_hours:g} h), MLflow and the Parquet lake at a "
                          "steady size.",
                          run_config={"ops": {"purge_dagster_storage": {"config": {"keep_hours": keep_hours}}}})
