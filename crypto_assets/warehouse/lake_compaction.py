"""Compaction of closed days: the hour files of a leaf (dataset, day[, symbol]) merged into one day file.

Hour files keep the export proportional to new data, but cost 24 files per leaf and day; once a
day can no longer receive ticks it is merged into <leaf>/day.parquet (<dataset>/date=D/symbol=S/
for the per-coin datasets, <dataset>/date=D/ for the small date-only ones, see crypto_assets.warehouse.lake_export),
sorted like the hour files, so the lake grows by one file per leaf and day. A day is
closed when its end plus a grace period (default 1 h) is before `now` (UTC wall clock, injectable).
A late row for a closed day still reaches the lake: its marker makes the export rewrite the day
file from DuckDB (see crypto_assets.warehouse.lake_export).

Why merge the hour files (an in-memory DuckDB connection over read_parquet) rather than rewrite
from the warehouse: the live pipeline holds the read-write lock on warehouse.duckdb almost every
second, and DuckDB allows one read-write process per file (a read-only one is refused while it
is held), so compaction would wait on, or stall, ingestion. The hour files already hold the
exported rows; rows still pending in DuckDB are the export's business, and it handles a day file
as well as hour files. So compaction touches only the lake, under the dataset's lake lock.

Per day, under the exclusive dataset lock: merge the hour files into <lake>/.staging, fsync,
rename to day.parquet (the commit point), delete the hour files. A kill -9 anywhere leaves one of:
a staging file (deleted by the next run under the lock: no live writer has one then), only hour
files (compacted again), or a day file with some hour files beside it (leftovers: the day file
already holds their rows, so they are deleted, never merged). Re-running therefore gives the
same lake as an uninterrupted run.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb

from crypto_assets.faults import fault_point
from crypto_assets.warehouse.atomic_files import atomic_write
from crypto_assets.warehouse.lake_export import remove_leftovers
from crypto_assets.warehouse.lake_layout import (
    DAY_FILE,
    HOUR_FILE_RE,
    LAKE_DATASETS,
    LOCK_TIMEOUT_S,
    by_symbol,
    dataset_lock,
    list_dataset_files,
)

DEFAULT_GRACE = timedelta(hours=1)


@dataclass
class DatasetCompaction:
    dataset: str
    days_compacted: int = 0
    files_before: int = 0      # hour files merged into the new day files
    files_after: int = 0       # day files written
    rows: int = 0              # rows in the day files written
    bytes_before: int = 0
    bytes_after: int = 0
    leftovers_removed: int = 0  # hour files beside an existing day file (a killed run's)
    dataset_files: int = 0     # data files of the dataset after the run


@dataclass
class CompactionResult:
    now: datetime
    grace: timedelta
    datasets: list[DatasetCompaction]

    def total(self, name: str) -> int:
        return sum(getattr(d, name) for d in self.datasets)

    def metadata(self) -> dict:
        """Numbers for a Dagster output: totals plus one line per dataset."""
        keys = ("days_compacted", "files_before", "files_after", "rows", "bytes_before", "bytes_after",
                "leftovers_removed", "dataset_files")
        md: dict = {k: self.total(k) for k in keys}
        md["now"] = self.now.isoformat()
        md["grace_hours"] = self.grace.total_seconds() / 3600
        md["per_dataset"] = {d.dataset: {k: v for k, v in asdict(d).items() if k != "dataset"} for d in self.datasets}
        return md


def is_closed(day: date, now: datetime, grace: timedelta = DEFAULT_GRACE) -> bool:
    """A day is closed once its end (next UTC midnight) plus the grace period is before `now`."""
    end = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
    return end + grace < now


def _closed_leaves(target: Path, dataset: str, now: datetime, grace: timedelta) -> list[tuple[date, Path]]:
    """(day, leaf directory) of every closed day that still has hour files. Costs one
    directory listing per leaf of the dataset, not a read of any file."""
    out = []
    for day_dir in sorted(target.glob("date=*")):
        try:
            day = date.fromisoformat(day_dir.name.removeprefix("date="))
        except ValueError:
            continue
        if not is_closed(day, now, grace):
            continue
        for leaf in sorted(day_dir.glob("symbol=*")) if by_symbol(dataset) else [day_dir]:
            if any(HOUR_FILE_RE.fullmatch(n) for n in os.listdir(leaf)):
                out.append((day, leaf))
    return out


def _compact_leaf(conn: duckdb.DuckDBPyConnection, staging_root: Path, prefix: str, leaf: Path,
                  order_by: str | None, stats: DatasetCompaction) -> None:
    names = set(os.listdir(leaf))  # listed again under the lock: the export may have changed it
    hours = sorted(n for n in names if HOUR_FILE_RE.fullmatch(n))
    if DAY_FILE in names:  # committed by a killed run (or the export): the rest are leftovers
        stats.leftovers_removed += len(remove_leftovers(leaf))
        return
    inputs = [leaf / n for n in hours]
    if not inputs:
        return
    paths = ", ".join(f"'{p}'" for p in inputs)
    order = f"ORDER BY {order_by}" if order_by else ""  # else file (hour) order, kept by DuckDB
    before = sum(p.stat().st_size for p in inputs)
    # fsync before the rename: the day file becomes the only copy of the hour files' rows
    with atomic_write(leaf / DAY_FILE, tmp=staging_root / f"{prefix}{uuid.uuid4().hex[:8]}.parquet") as staged:
        rows = conn.execute(
            f"COPY (SELECT * FROM read_parquet([{paths}], hive_partitioning = false, union_by_name = true) {order}) "
            f"TO '{staged}' (FORMAT parquet, COMPRESSION zstd)"
        ).fetchall()[0][0]
        fault_point("compact_staged")
    fault_point("compact_day_file_in_place")
    for i, p in enumerate(inputs):
        p.unlink()
        if i == 0:
            fault_point("compact_hour_files_partly_deleted")
    stats.days_compacted += 1
    stats.files_before += len(inputs)
    stats.files_after += 1
    stats.rows += int(rows)
    stats.bytes_before += before
    stats.bytes_after += (leaf / DAY_FILE).stat().st_size


def compact_dataset(lake_root: Path, dataset: str, *, now: datetime | None = None,
                    grace: timedelta = DEFAULT_GRACE, order_by: str | None = None,
                    lock_timeout_s: float | None = LOCK_TIMEOUT_S) -> DatasetCompaction:
    """Compact every closed day of one dataset. The lock is taken per day, so the live export
    waits at most one day's merge (milliseconds), never the whole backlog."""
    lake_root = Path(lake_root)
    now = now or datetime.now(UTC)
    order_by = order_by or LAKE_DATASETS.get(dataset)
    stats = DatasetCompaction(dataset)
    target = lake_root / dataset
    if not target.is_dir():
        return stats
    staging_root = lake_root / ".staging"
    staging_root.mkdir(parents=True, exist_ok=True)
    prefix = "compact-" + dataset.replace("/", "__") + "-"
    with dataset_lock(lake_root, dataset, timeout_s=lock_timeout_s):
        # a killed compaction's staging files: under the lock no live compaction has one
        for stale in staging_root.glob(prefix + "*"):
            stale.unlink(missing_ok=True)
    conn = duckdb.connect(config={"threads": 1, "memory_limit": "1GB"})  # in memory: no warehouse lock
    try:
        for _day, leaf in _closed_leaves(target, dataset, now, grace):
            with dataset_lock(lake_root, dataset, timeout_s=lock_timeout_s):
                _compact_leaf(conn, staging_root, prefix, leaf, order_by, stats)
            fault_point("compact_day_done")
    finally:
        conn.close()
    stats.dataset_files = len(list_dataset_files(lake_root, dataset))
    return stats


def compact_lake(lake_root: Path, *, now: datetime | None = None, grace: timedelta = DEFAULT_GRACE,
                 datasets: list[str] | None = None,
                 lock_timeout_s: float | None = LOCK_TIMEOUT_S) -> CompactionResult:
    """Compact the closed days of `datasets` (default: every hour-file dataset)."""
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware (UTC)")
    results = [
        compact_dataset(lake_root, ds, now=now, grace=grace, lock_timeout_s=lock_timeout_s)
        for ds in (datasets if datasets is not None else list(LAKE_DATASETS))
    ]
    return CompactionResult(now, grace, results)
