"""Parquet mirrors of warehouse tables, derived from DuckDB and never the other way round.

Partitions to rewrite are recorded in `lake_dirty` inside the same transaction that changed
the rows. Export rewrites each dirty partition completely into a staging directory, atomically
renames the file into place and only then clears the marker, so a crash at any point leaves
either the old file or the new one, and a marker that makes the next run redo the work.
One file per (day, symbol) partition: no pile-up of tiny files.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import duckdb

from crypto_assets.db import scalar
from crypto_assets.faults import fault_point


@dataclass
class ExportResult:
    partitions: int
    rows: int
    files: list[str]


def mark_dirty(conn: duckdb.DuckDBPyConnection, dataset: str, source_sql: str) -> None:
    """Record (day, symbol) partitions touched by the rows `source_sql` selects (must expose
    `event_time` and `symbol`). Call inside the transaction that wrote those rows."""
    conn.execute(
        f"""
        INSERT INTO lake_dirty
        SELECT DISTINCT ?, CAST(event_time AS DATE), symbol FROM ({source_sql})
        ON CONFLICT DO NOTHING
        """,
        [dataset],
    )


def export_dirty(
    conn: duckdb.DuckDBPyConnection,
    lake_root: Path,
    dataset: str,
    table: str,
    time_column: str,
    order_by: str,
) -> ExportResult:
    """Rewrite every dirty partition of `dataset` from `table` into lake_root/dataset/date=/symbol=."""
    dirty = conn.sql(
        "SELECT day, symbol FROM lake_dirty WHERE dataset = ? ORDER BY day, symbol", params=[dataset]
    ).fetchall()
    if not dirty:
        return ExportResult(0, 0, [])
    target = lake_root / dataset
    # Staging lives outside the dataset tree so readers globbing the dataset never see it;
    # leftovers of a killed export are removed first (there is only one writer).
    staging_root = lake_root / ".staging"
    prefix = dataset.replace("/", "__") + "-"
    for stale in staging_root.glob(prefix + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = staging_root / f"{prefix}{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        conn.execute(
            f"""
            COPY (
                SELECT t.*, CAST(t.{time_column} AS DATE) AS date
                FROM {table} t
                SEMI JOIN (SELECT day, symbol FROM lake_dirty WHERE dataset = $dataset) d
                  ON CAST(t.{time_column} AS DATE) = d.day AND t.symbol = d.symbol
                WHERE t.{time_column} >= (SELECT min(day) FROM lake_dirty WHERE dataset = $dataset)
                ORDER BY {order_by}
            ) TO '{staging}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date, symbol),
                              WRITE_PARTITION_COLUMNS false, OVERWRITE true)
            """,
            {"dataset": dataset},
        )
        files: list[str] = []
        for day, symbol in dirty:
            part = f"date={day.isoformat()}/symbol={symbol}"
            produced = sorted((staging / part).glob("*.parquet"))
            final_dir = target / part
            final_dir.mkdir(parents=True, exist_ok=True)
            final = final_dir / "part-0.parquet"
            if produced:
                if len(produced) > 1:
                    merged = staging / f"merge-{uuid.uuid4().hex[:6]}.parquet"
                    paths = ", ".join(f"'{p}'" for p in produced)
                    conn.execute(f"COPY (SELECT * FROM read_parquet([{paths}])) TO '{merged}' (FORMAT parquet, COMPRESSION zstd)")
                    produced = [merged]
                os.replace(produced[0], final)
                files.append(str(final))
            else:
                # Every row of the partition is gone (e.g. re-derived elsewhere): drop the file.
                final.unlink(missing_ok=True)
            fault_point("during_parquet_export")
        # Clear the markers once every file is in place: one statement (one commit) instead of one
        # per partition. A crash before this leaves them all, and the next run redoes the export.
        conn.execute(
            """
            DELETE FROM lake_dirty USING (SELECT unnest($days) AS day, unnest($symbols) AS symbol) d
            WHERE lake_dirty.dataset = $dataset AND lake_dirty.day = d.day AND lake_dirty.symbol = d.symbol
            """,
            {"dataset": dataset, "days": [d for d, _ in dirty], "symbols": [s for _, s in dirty]},
        )
        rows = scalar(conn, f"SELECT count(*) FROM read_parquet({files!r})" if files else "SELECT 0")
        return ExportResult(len(dirty), int(rows), files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
