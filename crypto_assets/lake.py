"""Parquet mirrors of warehouse tables, derived from DuckDB and never the other way round.

Layout: <dataset>/date=YYYY-MM-DD/symbol=<sym>/ holds either hour files part-HH.parquet (open
days) or one day.parquet (closed days, written by crypto_assets.lake_compaction). `symbol` and
`date` live only in the directory names (the files hold the other columns), so readers get them
from hive partitioning. The (hour, symbol) files to rewrite are recorded in `lake_pending` inside
the same transaction that changed the rows. Export rewrites each pending file completely into a
staging directory, atomically renames it into place and only then clears the marker, so a crash
at any point leaves either the old file or the new one, and a marker that makes the next run redo
the work. Hour-sized files keep an export proportional to the new data (a live run rewrites the
current hour, not the whole day); compaction then merges a closed day into one file, so the file
count grows by one per (dataset, symbol, day) instead of 24.

A marker for a day that already has a day file (a late row for an old day) rewrites the whole
day file from DuckDB: the invariant every writer keeps is "a day file, once in place, holds every
row of its (day, symbol); hour files beside it are leftovers of a killed run, to delete". A day
directory written by the older whole-day layout (part-0.parquet) is rewritten hour by hour the
next time it is touched, or compacted like hour files.

Locks (fcntl.flock on <lake>/.locks/<dataset>.lock, one per dataset so a training read of gold
never delays the live bronze export): the export and compaction take it exclusively while they
change a dataset's files, readers take it shared (`read_lock`) while they list and read them, so
a reader never sees a day both compacted and in hour files, nor a file deleted under it. Lock
order is always DuckDB connection first, then lake lock; never call the export or compaction
while this process holds `read_lock` (flock locks of one process on two descriptors conflict).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
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
DAY_FILE = "day.parquet"
HOUR_FILE_RE = re.compile(r"part-\d\d\.parquet")
LOCK_TIMEOUT_S = 300.0

# Every dataset mirrored hour by hour, with the ORDER BY its export uses (as the assets call
# export_dirty); compaction sorts day files the same way. gold/correlations is one file, not here.
LAKE_DATASETS: dict[str, str] = {
    "bronze/raw_ticks": "coin_id, last_updated_at",
    "silver/clean_ticks": "coin_id, event_time",
    "gold/market_features": "coin_id, event_time",
    "gold/ohlcv_1m": "coin_id, minute",
    "gold/ohlcv_1h": "coin_id, hour",
    "gold/hourly_stats": "coin_id, hour",
    "gold/anomalies": "event_time",
}


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


# ------------------------------------------------------------------ locks and readers
class LakeLockTimeout(TimeoutError):
    """Another process held a dataset's lake lock for longer than the timeout."""


def _lock_path(lake_root: Path, dataset: str) -> Path:
    return Path(lake_root) / ".locks" / (dataset.replace("/", "__") + ".lock")


@contextlib.contextmanager
def dataset_lock(lake_root: Path, dataset: str, *, exclusive: bool = True,
                 timeout_s: float | None = LOCK_TIMEOUT_S) -> Iterator[None]:
    """flock on the dataset's lock file (created once, never deleted: a deleted lock file would
    let two processes lock two different inodes). Closing the descriptor releases it, also when
    the process is killed."""
    path = _lock_path(lake_root, dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
        if timeout_s is None:
            fcntl.flock(fd, mode)
        else:
            deadline, delay = time.monotonic() + timeout_s, 0.001
            while True:
                try:
                    fcntl.flock(fd, mode | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise LakeLockTimeout(f"{path} still locked after {timeout_s} s") from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
        yield
    finally:
        os.close(fd)


@contextlib.contextmanager
def read_lock(lake_root: Path, datasets: Iterable[str] | None = None,
              timeout_s: float | None = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Shared lock on `datasets` (default: every hour-file dataset), taken in one fixed order.
    Hold it while listing and reading files, after opening any DuckDB warehouse connection."""
    with contextlib.ExitStack() as stack:
        for ds in sorted(set(datasets if datasets is not None else LAKE_DATASETS)):
            stack.enter_context(dataset_lock(lake_root, ds, exclusive=False, timeout_s=timeout_s))
        yield


def dataset_glob(lake_root: Path, dataset: str) -> str:
    """A glob matching every data file of a dataset: day files, hour files and legacy part-0
    files; staging (<lake>/.staging) and locks stay outside it. Exact under `read_lock`, except
    after a compaction or export killed between writing a day file and deleting the hour files
    beside it, until the next run of either: `list_dataset_files` is exact then too."""
    return str(Path(lake_root) / dataset / "date=*" / "symbol=*" / "*.parquet")


def list_dataset_files(lake_root: Path, dataset: str) -> list[Path]:
    """The dataset's data files, sorted (call under `read_lock` for a consistent list). A day
    file supersedes any hour file beside it (the leftovers of a killed run hold no row it lacks)."""
    out: list[Path] = []
    for leaf in sorted((Path(lake_root) / dataset).glob("date=*/symbol=*")):
        names = sorted(n for n in os.listdir(leaf) if n.endswith(".parquet"))
        out += [leaf / n for n in ([DAY_FILE] if DAY_FILE in names else names)]
    return out


def duckdb_source(lake_root: Path, dataset: str) -> str:
    """A read_parquet([...]) table expression over `list_dataset_files` (so call it under
    `read_lock`), with `date` and `symbol` typed from the directory names (a symbol made of
    digits stays VARCHAR)."""
    files = ", ".join(f"'{p}'" for p in list_dataset_files(lake_root, dataset))
    if not files:
        raise FileNotFoundError(f"no Parquet files under {Path(lake_root) / dataset}")
    return (f"read_parquet([{files}], hive_partitioning = true, union_by_name = true, "
            "hive_types = {'date': DATE, 'symbol': VARCHAR})")


def spark_read_dataset(spark, lake_root: Path, dataset: str):
    """A Spark DataFrame over the dataset's files, listed under the shared lock, with `date`
    and `symbol` from the directory names. Spark reads lazily: run its actions inside
    `read_lock(lake_root, [dataset])` so compaction cannot delete a listed file meanwhile.
    (recursiveFileLookup would drop `symbol` and `date`: it turns partition discovery off.)"""
    base = Path(lake_root) / dataset
    with read_lock(lake_root, [dataset]):
        files = [str(p) for p in list_dataset_files(lake_root, dataset)]
        if not files:
            raise FileNotFoundError(f"no Parquet files under {base}")
        # explicit partition types: inference would turn a numeric-looking symbol into an int
        return spark.read.schema(_spark_schema(files[-1])).option("basePath", str(base)).parquet(*files)


def _spark_schema(path: str):
    """The file's columns (the newest file: a column added later is in it) plus the two
    partition columns, `date` and `symbol`."""
    import pyarrow.parquet as pq
    from pyspark.sql.pandas.types import from_arrow_schema
    from pyspark.sql.types import DateType, StringType, StructField, StructType

    fields = [f for f in from_arrow_schema(pq.read_schema(path)).fields if f.name not in ("date", "symbol")]
    return StructType([*fields, StructField("date", DateType()), StructField("symbol", StringType())])


# ------------------------------------------------------------------ export
def _day_dir(target: Path, day, symbol: str) -> Path:
    return target / f"date={day.isoformat()}" / f"symbol={symbol}"


def _pending(conn: duckdb.DuckDBPyConnection, dataset: str) -> list[tuple]:
    return conn.sql(
        "SELECT hour, symbol FROM lake_pending WHERE dataset = ? ORDER BY hour, symbol", params=[dataset]
    ).fetchall()


def remove_leftovers(leaf: Path) -> list[Path]:
    """Delete the hour and legacy files beside a day file (all their rows are in it)."""
    gone = [p for p in sorted(leaf.iterdir()) if HOUR_FILE_RE.fullmatch(p.name) or p.name == LEGACY_DAY_FILE]
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
    """Rewrite every pending (hour, symbol) file of `dataset` from `table`; for a day that is
    already compacted, its day file instead. Holds the dataset's lake lock while it does."""
    if not _pending(conn, dataset):
        return ExportResult(0, 0, [])
    with dataset_lock(lake_root, dataset, timeout_s=lock_timeout_s):
        return _export_locked(conn, Path(lake_root), dataset, table, time_column, order_by)


def _export_locked(conn, lake_root: Path, dataset: str, table: str, time_column: str, order_by: str) -> ExportResult:
    dirty = _pending(conn, dataset)  # re-read: decided under the lock, with the lake as it is now
    target = lake_root / dataset
    days = {(h.date(), sym) for h, sym in dirty}
    compacted = sorted(d for d in days if (_day_dir(target, *d) / DAY_FILE).exists())
    legacy = sorted(d for d in days - set(compacted) if (_day_dir(target, *d) / LEGACY_DAY_FILE).exists())
    if legacy:
        # a whole-day file from the older layout: rewrite all 24 hours of its day, then drop it
        mark_whole_days(
            conn,
            "SELECT $dataset AS dataset, unnest($days) AS day, unnest($symbols) AS symbol",
            {"dataset": dataset, "days": [d for d, _ in legacy], "symbols": [sym for _, sym in legacy]},
        )
        dirty = _pending(conn, dataset)
    in_day_files = set(compacted)
    hourly = [(h, sym) for h, sym in dirty if (h.date(), sym) not in in_day_files]
    # Staging lives outside the dataset tree so readers globbing the dataset never see it.
    # Leftovers of a killed export are removed first: under the lock nobody else has any.
    staging_root = lake_root / ".staging"
    prefix = dataset.replace("/", "__") + "-"
    for stale in staging_root.glob(prefix + "*"):
        shutil.rmtree(stale, ignore_errors=True)
    staging = staging_root / f"{prefix}{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        files = _export_hours(conn, target, staging, table, time_column, order_by, hourly)
        files += _export_days(conn, target, staging, table, time_column, order_by, compacted)
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


def _export_hours(conn, target: Path, staging: Path, table: str, time_column: str, order_by: str,
                  hourly: list[tuple]) -> list[str]:
    """One partitioned COPY for every pending hour of a day without a day file. The sort is the
    COPY's ORDER_BY option: a partitioned write does not keep the order of an ORDER BY in its
    query (DuckDB writes the partitions' rows out of order), ORDER_BY sorts every file."""
    if not hourly:
        return []
    conn.execute(
        f"""
        COPY (
            SELECT t.*, CAST(t.{time_column} AS DATE) AS date, hour(t.{time_column}) AS hr
            FROM {table} t
            SEMI JOIN (SELECT unnest($hours) AS hour, unnest($symbols) AS symbol) d
              ON date_trunc('hour', t.{time_column}) = d.hour AND t.symbol = d.symbol
            WHERE t.{time_column} >= $lo
        ) TO '{staging}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date, symbol, hr), ORDER_BY ({order_by}),
                          WRITE_PARTITION_COLUMNS false, OVERWRITE true)
        """,
        {"hours": [h for h, _ in hourly], "symbols": [sym for _, sym in hourly], "lo": min(h for h, _ in hourly)},
    )
    files: list[str] = []
    for hour, symbol in hourly:
        part = _day_dir(target, hour.date(), symbol).relative_to(target)
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
            os.replace(produced[0], final)
            files.append(str(final))
        else:
            # Every row of the hour is gone (e.g. re-derived elsewhere): drop the file.
            final.unlink(missing_ok=True)
        fault_point("during_parquet_export")
    return files


def _export_days(conn, target: Path, staging: Path, table: str, time_column: str, order_by: str,
                 compacted: list[tuple[date, str]]) -> list[str]:
    """Rewrite each compacted (day, symbol) with a pending marker from DuckDB, whole: one small
    COPY per day (late rows for old days are rare), sorted like the hour files."""
    files: list[str] = []
    for day, symbol in compacted:
        leaf = _day_dir(target, day, symbol)
        staged = staging / f"day-{uuid.uuid4().hex[:8]}.parquet"
        lo = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
        n = conn.execute(
            f"""
            COPY (
                SELECT * EXCLUDE (symbol) FROM {table}
                WHERE symbol = $symbol AND {time_column} >= $lo AND {time_column} < $hi
                  AND CAST({time_column} AS DATE) = $day
                ORDER BY {order_by}
            ) TO '{staged}' (FORMAT parquet, COMPRESSION zstd)
            """,
            {"symbol": symbol, "lo": lo, "hi": lo + timedelta(days=1), "day": day},
        ).fetchall()[0][0]
        if n:
            os.replace(staged, leaf / DAY_FILE)
            files.append(str(leaf / DAY_FILE))
        else:
            (leaf / DAY_FILE).unlink(missing_ok=True)
        fault_point("export_day_file_replaced")
        remove_leftovers(leaf)
    return files
