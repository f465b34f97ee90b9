"""The API's access to the lake: a briefly cached file listing and parameterised DuckDB queries.

One in-memory DuckDB for the process; each request runs on its own cursor (a connection to the
same database, safe to use from one thread while others use theirs), so concurrent requests
never share a connection. The lake's shared read lock is held only while a dataset is listed
(as `lake_views.snapshot` does), never while a query runs: a reader holding it for a query would
delay the pipeline's export, which takes it exclusively, and many overlapping requests could
keep it from ever getting it. That is safe because the export and the compaction only ever
rename complete files into place or unlink them: a query sees whole files, and a file unlinked
between the listing and the read (a compaction replaced hour files by a day file) fails the
query with an IO error, after which the dataset is listed again and the query retried.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import duckdb

from crypto_assets.warehouse.lake_layout import hive_types, leaf_date, list_dataset_files, read_lock

LISTING_TTL_S = 2.0  # a new hour file shows up in the API within this long
READ_LOCK_TIMEOUT_S = 10.0
RETRIES = 3  # listings tried when files vanish under a query (each compaction of a day is one)


def quote(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def files_between(files: Sequence[Path], first: date | None, last: date | None, symbol: str | None = None) -> list[Path]:
    """The files of the leaves dated first..last (inclusive; None: open), and of `symbol`'s leaves
    if given (for a dataset with a symbol= directory level)."""
    out = []
    for p in files:
        if symbol is not None and p.parent.name != f"symbol={symbol}":
            continue
        d = leaf_date(p.parent)
        if (first is None or d >= first) and (last is None or d <= last):
            out.append(p)
    return out


def newest_leaf_files(files: Sequence[Path]) -> list[Path]:
    """Per symbol directory, the files of its newest day (a per-symbol dataset's newest rows of
    each coin are there), from the listing alone."""
    newest: dict[str, date] = {}
    for p in files:
        sym, d = p.parent.name, leaf_date(p.parent)
        newest[sym] = max(newest.get(sym, d), d)
    return [p for p in files if leaf_date(p.parent) == newest[p.parent.name]]


class LakeSource:
    """Queries over the lake's datasets for the API, safe for concurrent requests."""

    def __init__(self, lake_root: Path, *, ttl_s: float = LISTING_TTL_S, threads: int = 2, memory_limit: str = "1GB"):
        self.lake_root = Path(lake_root)
        self.ttl_s = ttl_s
        self.listings = 0  # how often a dataset was listed (the cache's hit rate, tests)
        self._cache: dict[str, tuple[float, list[Path]]] = {}
        self._lock = threading.Lock()
        self._db = duckdb.connect(":memory:", config={"threads": threads, "memory_limit": memory_limit})
        self._db.execute("SET GLOBAL TimeZone = 'UTC'")

    def close(self) -> None:
        self._db.close()

    def files(self, dataset: str, *, fresh: bool = False) -> list[Path]:
        """The dataset's data files, listed under the shared lake lock at most every ttl_s seconds."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(dataset)
            if hit is not None and not fresh and now - hit[0] < self.ttl_s:
                return hit[1]
        with read_lock(self.lake_root, [dataset], timeout_s=READ_LOCK_TIMEOUT_S):
            listed = list_dataset_files(self.lake_root, dataset)
        with self._lock:
            self._cache[dataset] = (time.monotonic(), listed)
            self.listings += 1
        return listed

    def source(self, dataset: str, files: Sequence[Path]) -> str:
        """A read_parquet table expression over `files` (paths from our own listing, quoted; no
        request input ever reaches the SQL text), with `date` (and `symbol`) from the directories."""
        names = ", ".join(quote(str(p)) for p in files)
        return (f"read_parquet([{names}], hive_partitioning = true, union_by_name = true, "
                f"hive_types = {hive_types(dataset)}, hive_types_autocast = false)")

    def query(self, dataset: str, pick: Callable[[list[Path]], list[Path]],
              sql: Callable[[str], str], params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of `sql(source)` over the files `pick` chooses from the dataset's listing, with
        `params` bound (`?` placeholders); [] when no file qualifies."""
        for attempt in range(RETRIES):
            files = pick(self.files(dataset, fresh=attempt > 0))
            if not files:
                return []
            cur = self._db.cursor()
            try:
                cur.execute(sql(self.source(dataset, files)), list(params))
                cols = [d[0] for d in (cur.description or [])]
                return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
            except duckdb.IOException:
                if attempt == RETRIES - 1:
                    raise
            finally:
                cur.close()
        return []
