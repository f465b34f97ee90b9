"""Bronze layer: raw_ticks, the exactly-once pull from Kafka into DuckDB (+ Parquet).

The asset is materialized by the incremental step (crypto_assets/defs/incremental.py), which
runs the pull at the start of every pass; this module holds its spec, its checks and what one
pull reports.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from crypto_assets.defs import checks
from crypto_assets.defs.metadata import table_definition_metadata
from crypto_assets.ingest.results import PullResult

DUCKDB_POOL = "duckdb_writer"

RAW_TICKS = dg.AssetSpec(
    "raw_ticks",
    group_name="bronze",
    kinds={"kafka", "duckdb", "parquet"},
    owners=["team:data-eng"],
    tags={"layer": "bronze"},
    code_version="2",
    skippable=True,
    metadata=table_definition_metadata("raw_ticks"),
    description="Contract-valid ticks pulled from `crypto_raw` in bounded micro-batches, exactly once. Rows and "
    "offsets commit in one DuckDB transaction; unusable messages go to `quarantine` and `crypto_raw_dlq` with "
    "their reason and never stop the batch.",
)
CHECKS = [checks.QUARANTINE_RATE, checks.OFFSET_CONTIGUITY]


def pull_numbers(result: PullResult) -> dict[str, Any]:
    """What one pull adds to the run's totals (summed over passes)."""
    return {
        "messages_read": result.messages,
        "rows_written": result.rows_written,
        "quarantined": result.quarantined,
        "bytes_read": result.bytes,
        "dlq_published": result.dlq_published,
        "offsets_lost_to_retention": sum(result.offsets_lost.values()),
        **{f"quarantine_reasons/{k}": v for k, v in result.reasons.items()},
    }


def pull_last(result: PullResult) -> dict[str, Any]:
    """What the newest pull says (kept from the last pass)."""
    offsets_md = "| partition | next offset | remaining lag |\n|---|---|---|\n" + "\n".join(
        f"| {p.partition} | {p.next_offset} | {p.lag} |" for p in result.plans
    )
    return {
        "offsets": dg.MetadataValue.md(offsets_md),
        "remaining_lag": sum(result.remaining_lag.values()),
        "cluster_id": result.cluster_id or "",
        "bootstrap_servers": result.bootstrap,
    }


def batch_range(result: PullResult) -> tuple[int, int] | None:
    ids = [b.batch_id for b in result.batches]
    return (min(ids), max(ids)) if ids else None
