"""Where the lake's Parquet files live and how to read them safely: layout, locks, readers.

Layout: a leaf directory holds either hour files part-HH.parquet (open days) or one day.parquet
(closed days, written by crypto_assets.warehouse.lake_compaction). The large per-coin datasets (bronze,
silver, market_features) have a leaf per (day, symbol), <dataset>/date=YYYY-MM-DD/symbol=<sym>/,
with `date` and `symbol` only in the directory names; the small gold ones (candles, hourly stats,
anomalies: 24-1440 rows per coin and day) have a leaf per day, <dataset>/date=YYYY-MM-DD/, with
`symbol` a column in the file, so a closed day costs one file for all coins, not ten. Readers get
the directory columns from hive partitioning (`hive_types`).

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
import time
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path
from typing import cast

from crypto_assets.warehouse.tables import HOURLY_MIRRORED

DAY_FILE = "day.parquet"
HOUR_FILE_RE = re.compile(r"part-\d\d\.parquet")
LOCK_TIMEOUT_S = 300.0

# Every dataset mirrored hour by hour, with the ORDER BY its export uses (the table registry's);
# compaction sorts day files the same way. gold/correlations is one file, not here.
LAKE_DATASETS: dict[str, str] = {cast(str, t.dataset): cast(str, t.export_order) for t in HOURLY_MIRRORED}
# The small datasets, partitioned by date only; every other one has a symbol= directory level.
BY_DATE: frozenset[str] = frozenset(cast(str, t.dataset) for t in HOURLY_MIRRORED if t.by_date)


def by_symbol(dataset: str) -> bool:
    return dataset not in BY_DATE


def leaf_pattern(dataset: str) -> str:
    """Glob of the dataset's leaf directories, relative to the dataset root."""
    return "date=*/symbol=*" if by_symbol(dataset) else "date=*"


def hive_types(dataset: str) -> str:
    """The hive_types struct for DuckDB's read_parquet (a symbol made of digits stays VARCHAR)."""
    return "{'date': DATE, 'symbol': VARCHAR}" if by_symbol(dataset) else "{'date': DATE}"


def leaf_dir(target: Path, dataset: str, day, symbol: str | None) -> Path:
    """The directory that holds (day, symbol)'s rows under the dataset root `target`."""
    d = target / f"date={day.isoformat()}"
    return d / f"symbol={symbol}" if by_symbol(dataset) else d


def hour_file(hour: int) -> str:
    return f"part-{hour:02d}.parquet"


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
    """A glob matching every data file of a dataset: day files and hour files; staging
    (<lake>/.staging) and locks stay outside it. Exact under `read_lock`, except after a
    compaction or export killed between writing a day file and deleting the hour files beside
    it, until the next run of either: `list_dataset_files` is exact then too."""
    return str(Path(lake_root) / dataset / leaf_pattern(dataset) / "*.parquet")


def leaf_date(leaf: Path) -> date:
    """The day of a leaf directory (date=D or date=D/symbol=S)."""
    part = leaf.name if leaf.name.startswith("date=") else leaf.parent.name
    return date.fromisoformat(part.removeprefix("date="))


def newest_date(lake_root: Path, dataset: str) -> date | None:
    """The newest day directory of a dataset (a listing of its top level, no file read)."""
    days = []
    for d in (Path(lake_root) / dataset).glob("date=*"):
        try:
            days.append(date.fromisoformat(d.name.removeprefix("date=")))
        except ValueError:
            continue
    return max(days, default=None)


def list_dataset_files(lake_root: Path, dataset: str, since: date | None = None) -> list[Path]:
    """The dataset's data files, sorted (call under `read_lock` for a consistent list), of the
    days from `since` on if given. A day file supersedes any hour file beside it (the leftovers
    of a killed run hold no row it lacks)."""
    out: list[Path] = []
    for leaf in sorted((Path(lake_root) / dataset).glob(leaf_pattern(dataset))):
        if since is not None and leaf_date(leaf) < since:
            continue
        names = sorted(n for n in os.listdir(leaf) if n.endswith(".parquet") and (leaf / n).is_file())
        out += [leaf / n for n in ([DAY_FILE] if DAY_FILE in names else names)]
    return out


def duckdb_source(lake_root: Path, dataset: str) -> str:
    """A read_parquet([...]) table expression over `list_dataset_files` (so call it under
    `read_lock`), with `date` (and `symbol` for a per-symbol dataset) typed from the directory
    names."""
    files = ", ".join(f"'{p}'" for p in list_dataset_files(lake_root, dataset))
    if not files:
        raise FileNotFoundError(f"no Parquet files under {Path(lake_root) / dataset}")
    return (f"read_parquet([{files}], hive_partitioning = true, union_by_name = true, "
            f"hive_types = {hive_types(dataset)})")


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
        schema = _spark_schema(files[-1], by_symbol(dataset))
        return spark.read.schema(schema).option("basePath", str(base)).parquet(*files)


def _spark_schema(path: str, with_symbol_dir: bool = True):
    """The file's columns (the newest file: a column added later is in it) plus the partition
    columns: `date`, and `symbol` where it is a directory level."""
    import pyarrow.parquet as pq
    from pyspark.sql.pandas.types import from_arrow_schema
    from pyspark.sql.types import DateType, StringType, StructField, StructType

    parts = [StructField("date", DateType())] + ([StructField("symbol", StringType())] if with_symbol_dir else [])
    names = {f.name for f in parts}
    fields = [f for f in from_arrow_schema(pq.read_schema(path)).fields if f.name not in names]
    return StructType([*fields, *parts])


