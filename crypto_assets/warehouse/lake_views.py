"""The Parquet mirrors as DuckDB views named like the warehouse tables, on an in-memory DuckDB.

A job that only reads (the training set) runs on the lake and never opens warehouse.duckdb,
whose single read-write process is almost always the live pipeline's incremental step.

A dataset is its files as `crypto_assets.warehouse.lake_export.list_dataset_files` lists them under its leaf
directories (`date=*/symbol=*/`, or `date=*/` for the small gold datasets): the export's hour
files and a compacted day file. `date` (and `symbol` where it is a
directory level) comes back from the directory names. Each view has
exactly its table's columns, names and types in table order (from the warehouse DDL), so SQL
written against the warehouse runs unchanged; a dataset without files yet is an empty view.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterable, Iterator
from datetime import date
from pathlib import Path

import duckdb

from crypto_assets.warehouse.lake_layout import hive_types, list_dataset_files, read_lock
from crypto_assets.warehouse.tables import TABLES

SHAPE_SCHEMA = "lake_shape"  # empty tables with the warehouse DDL: the views' column list


def _quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def lake_views(conn: duckdb.DuckDBPyConnection, lake_root: Path, datasets: Iterable[str]) -> dict[str, int]:
    """Create (or replace) one view per dataset ("gold/market_features" -> view market_features)
    over its Parquet files; returns the number of files each view reads. The views name their
    files, so those must not be replaced under a running read: hold `read_lock` (`lake_reader`)."""
    files: dict[str, int] = {}
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SHAPE_SCHEMA}")
    for dataset in datasets:
        table = dataset.rsplit("/", 1)[-1]
        shape = f"{SHAPE_SCHEMA}.{table}"
        conn.execute(re.sub(r"CREATE TABLE IF NOT EXISTS \w+", f"CREATE OR REPLACE TABLE {shape}", TABLES[table].ddl, count=1))
        cols = conn.sql(
            "SELECT column_name, data_type FROM duckdb_columns() WHERE schema_name = ? AND table_name = ? "
            "ORDER BY column_index", params=[SHAPE_SCHEMA, table],
        ).fetchall()
        # the exact file list (a compacted day file supersedes hour files a killed run left beside it)
        paths = list_dataset_files(lake_root, dataset)
        n = len(paths)
        if n:
            # union_by_name: a file written before a column was added reads it as NULL
            source = (f"read_parquet([{', '.join(_quote(str(p)) for p in paths)}], hive_partitioning = true, "
                      f"union_by_name = true, hive_types = {hive_types(dataset)}, hive_types_autocast = false)")
        else:
            source = shape
        select = ", ".join(f'CAST("{c}" AS {t}) AS "{c}"' for c, t in cols)
        conn.execute(f"CREATE OR REPLACE VIEW {table} AS SELECT {select} FROM {source}")
        files[table] = n
    return files


SNAPSHOTS = ".snapshots"  # under the lake root, outside every dataset tree


def snapshot(lake_root: Path, datasets: Iterable[str], since: date | None = None) -> Path:
    """Hard links to the datasets' current files under <lake>/.snapshots/<id>/, same layout.

    Taken under the shared read lock, which is held only while the files are listed and linked
    (milliseconds for thousands of files), not while the caller reads them: a long read (the
    training set over a month of features takes minutes) would otherwise hold the export, which
    takes the dataset's lock exclusively, and with it the live pipeline. The export and the
    compaction only ever replace or unlink names, so a linked file stays as it was. `since`:
    only the days from then on (a bounded training window reads a bounded set of files)."""
    lake_root = Path(lake_root)
    root = lake_root / SNAPSHOTS / uuid.uuid4().hex[:12]
    datasets = list(datasets)
    with read_lock(lake_root, datasets):
        for dataset in datasets:
            for src in list_dataset_files(lake_root, dataset, since):
                dst = root / src.relative_to(lake_root)
                dst.parent.mkdir(parents=True, exist_ok=True)
                os.link(src, dst)
    return root


def _remove_stale_snapshots(lake_root: Path, older_than_s: float = 6 * 3600) -> None:
    """Snapshots of readers that were killed (a finished reader removes its own)."""
    for d in (Path(lake_root) / SNAPSHOTS).glob("*"):
        with contextlib.suppress(OSError):
            if time.time() - d.stat().st_mtime > older_than_s:
                shutil.rmtree(d, ignore_errors=True)


@contextlib.contextmanager
def lake_reader(
    lake_root: Path,
    datasets: Iterable[str],
    *,
    threads: int = 2,
    memory_limit: str = "4GB",
    temp_directory: Path | None = None,
    since: date | None = None,
) -> Iterator[tuple[duckdb.DuckDBPyConnection, dict[str, int]]]:
    """An in-memory DuckDB (UTC) with `lake_views` over a snapshot of `datasets`, and the file
    count per view. Everything the caller reads inside the `with` block sees one set of files."""
    config: dict = {"threads": threads, "memory_limit": memory_limit}
    if temp_directory is not None:  # an in-memory database spills to ./.tmp otherwise
        Path(temp_directory).mkdir(parents=True, exist_ok=True)
        config["temp_directory"] = str(temp_directory)
    datasets = list(datasets)
    _remove_stale_snapshots(lake_root)
    snap = snapshot(lake_root, datasets, since)
    conn = duckdb.connect(":memory:", config=config)
    try:
        conn.execute("SET TimeZone = 'UTC'")
        yield conn, lake_views(conn, snap, datasets)
    finally:
        conn.close()
        shutil.rmtree(snap, ignore_errors=True)
