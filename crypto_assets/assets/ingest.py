"""Bronze layer: the exactly-once pull from Kafka into DuckDB (+ Parquet)."""


import dagster as dg
from pydantic import Field

from crypto_assets.assets.metadata import table_metadata
from crypto_assets.ingest.pull import PullConfig, pull_raw_ticks
from crypto_assets.resources import KafkaResource, LakehouseResource

DUCKDB_POOL = "duckdb_writer"


class RawTicksConfig(dg.Config):
    max_messages: int = Field(
        default=PullConfig.max_messages, description="Most messages one run reads; the rest waits"
    )
    batch_size: int = Field(
        default=PullConfig.batch_size,
        description="Messages per DuckDB transaction: bounds memory (~1 KB each); above a DuckDB row group "
        "(122,880) a full batch skips the WAL",
    )
    export_parquet: bool = Field(default=True, description="Rewrite touched bronze Parquet partitions")


@dg.asset(
    group_name="bronze",
    kinds={"kafka", "duckdb", "parquet"},
    owners=["team:data-eng"],
    pool=DUCKDB_POOL,
    tags={"layer": "bronze"},
    code_version="1",
)
def raw_ticks(
    context: dg.AssetExecutionContext,
    config: RawTicksConfig,
    kafka: KafkaResource,
    lakehouse: LakehouseResource,
) -> dg.MaterializeResult:
    """Contract-valid ticks pulled from `crypto_raw` in a bounded micro-batch, exactly once.

    Rows and offsets commit in one DuckDB transaction; unusable messages go to `quarantine`
    and `crypto_raw_dlq` with their reason and never stop the batch.
    """
    result = pull_raw_ticks(
        kafka,
        lakehouse,
        PullConfig(
            max_messages=config.max_messages,
            batch_size=config.batch_size,
            export_parquet=config.export_parquet,
        ),
        run_id=context.run.run_id,
        logger=context.log,
    )
    for notice in result.notices:
        context.log.warning(notice)
    if not result.kafka_commit_ok:
        context.log.warning("offsets were committed to DuckDB but not to the Kafka consumer group (lag monitor only)")

    ranges = result.offset_ranges
    offsets_md = "| partition | from | to (next) | read | remaining lag |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {p.partition} | {ranges.get(p.partition, (p.start, p.start))[0]} | {p.next_offset} | "
        f"{ranges.get(p.partition, (0, 0))[1] - ranges.get(p.partition, (0, 0))[0]} | {p.lag} |"
        for p in result.plans
    )
    event_times = [b.min_event_time for b in result.batches if b.min_event_time] + [
        b.max_event_time for b in result.batches if b.max_event_time
    ]
    metadata: dict[str, dg.MetadataValue | object] = {
        "messages_read": result.messages,
        "rows_written": result.rows_written,
        "quarantined": result.quarantined,
        "bytes_read": result.bytes,
        "batches": [b.batch_id for b in result.batches],
        "offset_ranges": dg.MetadataValue.md(offsets_md),
        "remaining_lag": sum(result.remaining_lag.values()),
        "duration_s": round(result.duration_s, 3),
        "throughput_msgs_per_s": round(result.messages / result.duration_s, 1) if result.duration_s else 0.0,
        "quarantine_reasons": result.reasons,
        "dlq_published": result.dlq_published,
        "cluster_id": result.cluster_id or "",
        "bootstrap_servers": result.bootstrap,
        "notices": dg.MetadataValue.md("\n".join(f"- {n}" for n in result.notices) or "none"),
    }
    if event_times:
        metadata["min_event_time"] = dg.MetadataValue.timestamp(min(event_times))
        metadata["max_event_time"] = dg.MetadataValue.timestamp(max(event_times))
    if result.export is not None:
        metadata["parquet_partitions_rewritten"] = result.export.partitions
        metadata["parquet_path"] = dg.MetadataValue.path(str(lakehouse.lake_path / "bronze" / "raw_ticks"))
    with lakehouse.connect() as conn:
        metadata.update(table_metadata(conn, "raw_ticks", "last_updated_at", "batch_id DESC, kafka_offset DESC"))
    return dg.MaterializeResult(metadata=metadata)
