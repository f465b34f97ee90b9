"""Silver layer: clean_ticks, typed and validated, with everything rejected in quarantine."""

import dagster as dg
from pydantic import Field

from crypto_assets.assets.ingest import DUCKDB_POOL
from crypto_assets.assets.metadata import table_metadata
from crypto_assets.lake import export_dirty
from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.clean import DATASET, CleanConfig, clean_increment


class CleanTicksConfig(dg.Config):
    lateness_minutes: float = Field(default=10.0, description="ticks older than the coin's newest minus this are quarantined as late")
    max_future_skew_minutes: float = Field(default=5.0, description="allowed clock skew ahead of ingestion time")
    horizon_days: float = Field(default=365.0, description="ticks older than this (vs ingestion) are rejected")


@dg.asset(
    deps=["raw_ticks"],
    group_name="silver",
    kinds={"duckdb", "parquet"},
    owners=["team:data-eng"],
    pool=DUCKDB_POOL,
    code_version="1",
    op_tags={"dagster/priority": "10"},  # the freshness path (raw -> clean -> features) runs first
)
def clean_ticks(context: dg.AssetExecutionContext, config: CleanTicksConfig, lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """Typed, validated ticks deduplicated on (coin_id, event_time); only raw batches not yet
    cleaned are read. Rejected rows go to `quarantine` (stage clean_ticks) with their rule."""
    from datetime import timedelta

    cfg = CleanConfig(
        lateness=timedelta(minutes=config.lateness_minutes),
        max_future_skew=timedelta(minutes=config.max_future_skew_minutes),
        horizon=timedelta(days=config.horizon_days),
    )
    with lakehouse.connect() as conn:
        res = clean_increment(conn, list(lakehouse.coins), cfg)
        export = export_dirty(conn, lakehouse.lake_path, DATASET, "clean_ticks", "event_time", "coin_id, event_time")
        md = table_metadata(conn, "clean_ticks", "event_time")
    if res.raw_batches is None:
        context.log.info("no new raw batches: nothing to clean")
    md.update(
        {
            "raw_batches": str(res.raw_batches) if res.raw_batches else "none new",
            "rows_in": res.rows_in,
            "rows_written": res.rows_out,
            "quarantined": res.quarantined,
            "quarantine_reasons": res.reasons,
            "parquet_partitions_rewritten": export.partitions,
            "parquet_path": dg.MetadataValue.path(str(lakehouse.lake_path / DATASET)),
        }
    )
    return dg.MaterializeResult(metadata=md)
