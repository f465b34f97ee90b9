"""Parquet mirrors of warehouse tables, derived from DuckDB and never the other way round.

The (hour, symbol) files to rewrite are recorded in `lake_pending` inside the same transaction
that changed the rows. Export rewrites each pending file completely into a staging directory,
atomically renames it into place and only then clears the marker, so a crash at any point leaves
either the old file or the new one, and a marker that makes the next run redo the work. Hour-
sized files keep an export proportional to the new data (a live run rewrites the current hour,
not the whole day); compaction then merges a closed day into one file, so the file count grows
by one per leaf and day instead of 24.

A marker for a day that already has a day file (a late row for an old day) rewrites the whole
day file from DuckDB: the invariant every writer keeps is "a day file, once in place, holds every
row of its (day, symbol); hour files beside it are leftovers of a killed run, to delete".

The layout, the locks and the readers are in crypto_assets.warehouse.lake_layout."""

from __future__ import annotations

import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb

from crypto_assets.faults import fault_point
from crypto_assets.warehouse.atomic_files import publish_file
from crypto_assets.warehouse.lake_layout import (
    DAY_FILE,
    HOUR_FILE_RE,
    LOCK_TIMEOUT_S,
    by_symbol,
    dataset_lock,
    hour_file,
    leaf_dir,
)
from crypto_assets.warehouse.sql import scalar


@dataclass
class ExportResult:
    partitions: int
    rows: int
    files: list[str]



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


# ------------------------------------------------------------------ export
def _pending(conn: duckdb.DuckDBPyConnection, dataset: str) -> list[tuple]:
    return conn.sql(
        "SELECT hour, symbol FROM lake_pending WHERE dataset = ? ORDER BY hour, symbol", params=[dataset]
    ).fetchall()


def remove_leftovers(leaf: Path) -> list[Path]:
    """Delete the hour files beside a day file (all their rows are in it)."""
    gone = [p for p in sorted(leaf.iterdir()) if HOUR_FILE_RE.fullmatch(p.name)]
    for i, p in enumerate(gone):
        p.unlink(missing_ok=True)
        if i == 0:
            fault_point("leftovers_partly_deleted")
    return gone


def export_dirty(
    conn: duckdb.DuckDBPyConnection,
    lake_root: Path,
    dataset: str,
    table: str,
    time_column: str,
    order_by: str,
    lock_timeout_s: float | None = LOCK_TIMEOUT_S,
) -> ExportResult:
    """Rewrite every pending hour file of `dataset` from `table`; for a day that is already
    compacted, its day file instead. Holds the dataset's lake lock while it does."""
    if not _pending(conn, dataset):
        return ExportResult(0, 0, [])
    with dataset_lock(lake_root, dataset, timeout_s=lock_timeout_s):
        return _export_locked(conn, Path(lake_root), dataset, table, time_column, order_by)


def _export_locked(conn, lake_root: Path, dataset: str, table: str, time_column: str, order_by: str) -> ExportResult:
    target = lake_root / dataset
    dirty = _pending(conn, dataset)  # re-read: decided under the lock, with the lake as it is now
    sym = by_symbol(dataset)
    # the leaves to rewrite: (day, symbol) per symbol, (day, None) for a date-only dataset
    days = {(h.date(), s if sym else None) for h, s in dirty}
    compacted = sorted(d for d in days if (leaf_dir(target, dataset, *d) / DAY_FILE).exists())
    in_day_files = set(compacted)
    hourly = sorted({(h, s if sym else None) for h, s in dirty if (h.date(), s if sym else None) not in in_day_files})
    # Staging lives outside the dataset tree so readers globbing the dataset never see it.
    # Leftovers of a killed export are removed first: under the lock nobody else has any.
    staging_root = lake_root / ".staging"
    prefix = dataset.replace("/", "__") + "-"
    for stale in staging_root.glob(prefix + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = staging_root / f"{prefix}{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        files = _export_hours(conn, target, dataset, staging, table, time_column, order_by, hourly)
        files += _export_days(conn, target, dataset, staging, table, time_column, order_by, compacted)
        # Clear the markers once every file is in place: one statement (one commit) instead of one
        # per partition. A crash before this leaves them all, and the next run redoes the export.
        conn.execute(
            """
            DELETE FROM lake_pending USING (SELECT unnest($hours) AS hour, unnest($symbols) AS symbol) d
            WHERE lake_pending.dataset = $dataset AND lake_pending.hour = d.hour AND lake_pending.symbol = d.symbol
            """,
            {"dataset": dataset, "hours": [h for h, _ in dirty], "symbols": [s for _, s in dirty]},
        )
        rows = scalar(conn, f"SELECT count(*) FROM read_parquet({files!r})" if files else "SELECT 0")
        return ExportResult(len(dirty), int(rows), files)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _export_hours(conn, target: Path, dataset: str, staging: Path, table: str, time_column: str, order_by: str,
                  hourly: list[tuple]) -> list[str]:
    """One partitioned COPY for every pending hour of a day without a day file (per symbol, or
    every symbol's rows of the hour for a date-only dataset). The sort is the COPY's ORDER_BY
    option: a partitioned write does not keep the order of an ORDER BY in its query (DuckDB
    writes the partitions' rows out of order), ORDER_BY sorts every file."""
    if not hourly:
        return []
    sym = by_symbol(dataset)
    if sym:
        keys, on, parts = "unnest($hours) AS hour, unnest($symbols) AS symbol", "AND t.symbol = d.symbol", "date, symbol, hr"
    else:
        keys, on, parts = "unnest($hours) AS hour", "", "date, hr"
    params = {"hours": [h for h, _ in hourly], "lo": min(h for h, _ in hourly)}
    if sym:
        params["symbols"] = [s for _, s in hourly]
    conn.execute(
        f"""
        COPY (
            SELECT t.*, CAST(t.{time_column} AS DATE) AS date, hour(t.{time_column}) AS hr
            FROM {table} t
            SEMI JOIN (SELECT {keys}) d ON date_trunc('hour', t.{time_column}) = d.hour {on}
            WHERE t.{time_column} >= $lo
        ) TO '{staging}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY ({parts}), ORDER_BY ({order_by}),
                          WRITE_PARTITION_COLUMNS false, OVERWRITE true)
        """,
        params,
    )
    files: list[str] = []
    for hour, symbol in hourly:
        part = leaf_dir(target, dataset, hour.date(), symbol).relative_to(target)
        produced = sorted((staging / part / f"hr={hour.hour}").glob("*.parquet"))
        final_dir = target / part
        final_dir.mkdir(parents=True, exist_ok=True)
        final = final_dir / hour_file(hour.hour)
        if produced:
            if len(produced) > 1:
                merged = staging / f"merge-{uuid.uuid4().hex[:6]}.parquet"
                paths = ", ".join(f"'{p}'" for p in produced)
                conn.execute(f"COPY (SELECT * FROM read_parquet([{paths}], hive_partitioning = false) ORDER BY {order_by}) "
                             f"TO '{merged}' (FORMAT parquet, COMPRESSION zstd)")
                produced = [merged]
            publish_file(produced[0], final, fsync=False)  # its rows stay in DuckDB
            files.append(str(final))
        else:
            # Every row of the hour is gone (e.g. re-derived elsewhere): drop the file.
            final.unlink(missing_ok=True)
        fault_point("during_parquet_export")
    return files


def _export_days(conn, target: Path, dataset: str, staging: Path, table: str, time_column: str, order_by: str,
                 compacted: list[tuple]) -> list[str]:
    """Rewrite each compacted leaf with a pending marker from DuckDB, whole: one small COPY per
    day (late rows for old days are rare), sorted like the hour files."""
    files: list[str] = []
    sym = by_symbol(dataset)
    for day, symbol in compacted:
        leaf = leaf_dir(target, dataset, day, symbol)
        staged = staging / f"day-{uuid.uuid4().hex[:8]}.parquet"
        lo = datetime(day.year, day.month, day.day, tzinfo=UTC)
        n = conn.execute(
            f"""
            COPY (
                SELECT * {"EXCLUDE (symbol)" if sym else ""} FROM {table}
                WHERE {"symbol = $symbol AND" if sym else ""} {time_column} >= $lo AND {time_column} < $hi
                  AND CAST({time_column} AS DATE) = $day
                ORDER BY {order_by}
            ) TO '{staged}' (FORMAT parquet, COMPRESSION zstd)
            """,
            {"lo": lo, "hi": lo + timedelta(days=1), "day": day} | ({"symbol": symbol} if sym else {}),
        ).fetchall()[0][0]
        if n:
            publish_file(staged, leaf / DAY_FILE, fsync=False)
            files.append(str(leaf / DAY_FILE))
        else:
            (leaf / DAY_FILE).unlink(missing_ok=True)
        fault_point("export_day_file_replaced")
        remove_leftovers(leaf)
    return files
