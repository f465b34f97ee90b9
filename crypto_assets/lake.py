"""Parquet mirrors of warehouse tables, derived from DuckDB and never the other way round.

Layout: <dataset>/date=YYYY-MM-DD/symbol=<sym>/part-HH.parquet, one file per UTC hour. The
(hour, symbol) files to rewrite are recorded in `lake_pending` inside the same transaction that
changed the rows. Export rewrites each pending file completely into a staging directory,
atomically renames it into place and only then clears the marker, so a crash at any point leaves
either the old file or the new one, and a marker that makes the next run redo the work.
Hour-sized files keep an export proportional to the new data (a live run rewrites the current
hour, not the whole day) without a pile-up of tiny files. A day directory written by the older
whole-day layout (part-0.parquet) is rewritten hour by hour the next time it is touched.
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


LEGACY_DAY_FILE = "part-0.parquet"


def hour_file(hour: int) -> str:
    return f"part-{hour:02d}.parquet"


def mark_dirty(conn: duckdb.DuckDBPyConnection, dataset: str, source_sql: str) -> None:
    """Record the (hour, symbol) files touched by the rows `source_sql` selects (must expose
    `event_time` and `symbol`). Call inside the transaction that wrote those rows."""
    conn.execute(
        f"""
        INSERT INTO lake_pending
        SELECT DISTINCT ?, date_trunc('hour', CAST(event_time AS TIMESTAMPTZ)), symbol FROM ({source_sql})
        ON CONFLICT DO NOTHING
        """,
        [dataset],
    )


def mark_whole_days(conn: duckdb.DuckDBPyConnection, source_sql: str, params: dict | None = None) -> None:
    """Mark all 24 hours of the (dataset, day, symbol) rows `source_sql` selects: for day-level
    markers and day files of the older layout."""
    conn.execute(
        f"""
        INSERT INTO lake_pending
        SELECT dataset, CAST(day AS TIMESTAMPTZ) + to_hours(h), symbol FROM ({source_sql}), range(24) r(h)
        ON CONFLICT DO NOTHING
        """,
        params,
    )


def _day_dir(target: Path, day, symbol: str) -> Path:
    return target / f"date={day.isoformat()}" / f"symbol={symbol}"


def _pending(conn: duckdb.DuckDBPyConnection, dataset: str) -> list[tuple]:
    return conn.sql(
        "SELECT hour, symbol FROM lake_pending WHERE dataset = ? ORDER BY hour, symbol", params=[dataset]
    ).fetchall()


def export_dirty(
    conn: duckdb.DuckDBPyConnection,
    lake_root: Path,
    dataset: str,
    table: str,
    time_column: str,
    order_by: str,
) -> ExportResult:
    """Rewrite every pending (hour, symbol) file of `dataset` from `table`."""
    dirty = _pending(conn, dataset)
    if not dirty:
        return ExportResult(0, 0, [])
    target = lake_root / dataset
    days = {(h.date(), sym) for h, sym in dirty}
    legacy = sorted(d for d in days if (_day_dir(target, *d) / LEGACY_DAY_FILE).exists())
    if legacy:
        # a whole-day file from the older layout: rewrite all 24 hours of its day, then drop it
        mark_whole_days(
            conn,
            "SELECT $dataset AS dataset, unnest($days) AS day, unnest($symbols) AS symbol",
            {"dataset": dataset, "days": [d for d, _ in legacy], "symbols": [sym for _, sym in legacy]},
        )
        dirty = _pending(conn, dataset)
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
                SELECT t.*, CAST(t.{time_column} AS DATE) AS date, hour(t.{time_column}) AS hr
                FROM {table} t
                SEMI JOIN (SELECT hour, symbol FROM lake_pending WHERE dataset = $dataset) d
                  ON date_trunc('hour', t.{time_column}) = d.hour AND t.symbol = d.symbol
                WHERE t.{time_column} >= (SELECT min(hour) FROM lake_pending WHERE dataset = $dataset)
                ORDER BY {order_by}
            ) TO '{staging}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date, symbol, hr),
                              WRITE_PARTITION_COLUMNS false, OVERWRITE true)
            """,
            {"dataset": dataset},
        )
        files: list[str] = []
        for hour, symbol in dirty:
            part = _day_dir(target, hour.date(), symbol).relative_to(target)
            produced = sorted((staging / part / f"hr={hour.hour}").glob("*.parquet"))
            final_dir = target / part
            final_dir.mkdir(parents=True, exist_ok=True)
            final = final_dir / hour_file(hour.hour)
            if produced:
                if len(produced) > 1:
                    merged = staging / f"merge-{uuid.uuid4().hex[:6]}.parquet"
                    paths = ", ".join(f"'{p}'" for p in produced)
                    conn.execute(f"COPY (SELECT * FROM read_parquet([{paths}])) TO '{merged}' (FORMAT parquet, COMPRESSION zstd)")
                    produced = [merged]
                os.replace(produced[0], final)
                files.append(str(final))
            else:
                # Every row of the hour is gone (e.g. re-derived elsewhere): drop the file.
                final.unlink(missing_ok=True)
            fault_point("during_parquet_export")
        for day, symbol in legacy:  # its rows now live in the hour files
            (_day_dir(target, day, symbol) / LEGACY_DAY_FILE).unlink(missing_ok=True)
        # Clear the markers once every file is in place: one statement (one commit) instead of one
        # per partition. A crash before this leaves them all, and the next run redoes the export.
        conn.execute(
            """
            DELETE FROM lake_pending USING (SELECT unnest($hours) AS hour, unnest($symbols) AS symbol) d
            WHERE lake_pending.dataset = $dataset AND lake_pending.hour = d.hour AND lake_pending.symbol = d.symbol
            """,
            {"dataset": dataset, "hours": [h for h, _ in dirty], "symbols": [sym for _, sym in dirty]},
        )
        rows = scalar(conn, f"SELECT count(*) FROM read_parquet({files!r})" if files else "SELECT 0")
        return ExportResult(len(dirty), int(rows), files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
