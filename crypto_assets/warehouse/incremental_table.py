"""The incremental protocol every transform follows, in one place.

    with incremental_table(conn, "ohlcv_1m", upstream="clean_ticks") as inc:
        if inc.nothing_new:
            return ...                      # nothing was written: no transaction was opened
        ... SQL over the rows WHERE {inc.window}, stamped with inc.new_seq ...
        inc.mark_touched("SELECT minute AS event_time, symbol FROM new_rows")

On entry: the table's state (hwm, seq) and the upstream's position (the newest sequence number it
has stamped) are read; when the upstream has nothing past hwm, no transaction is opened and
nothing is written on exit. Otherwise a transaction is opened, and on a normal exit (also a
return from inside the block) the state moves to (upstream position, seq + 1) in that same
transaction before COMMIT, so the rows and the state commit together; on an exception (or a
kill) the transaction rolls back and the next run processes the same window again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

import duckdb

from crypto_assets.faults import fault_point
from crypto_assets.warehouse.lake_export import mark_dirty
from crypto_assets.warehouse.sql import transaction
from crypto_assets.warehouse.table_spec import Table
from crypto_assets.warehouse.tables import TABLES
from crypto_assets.warehouse.watermarks import get_state, position, set_state


@dataclass
class Increment:
    """One run of a derived table: the upstream sequence numbers in (hwm, upstream] are new."""

    conn: duckdb.DuckDBPyConnection
    table: Table
    upstream_table: Table | None
    hwm: int  # upstream sequence number processed so far
    seq: int  # this table's run sequence before this run
    upstream: int  # upstream sequence number this run processes up to
    _open: bool = False
    _save: bool = True

    @property
    def nothing_new(self) -> bool:
        return self.upstream_table is not None and self.upstream <= self.hwm

    @property
    def new_seq(self) -> int:
        """The sequence number this run stamps on the rows it writes."""
        return self.seq + 1

    @property
    def window(self) -> str:
        """SQL predicate on the upstream table: its rows stamped since the last run."""
        assert self.upstream_table is not None, self.table.name  # a table with no upstream has no window
        col = self.upstream_table.seq_column
        return f"{col} > {int(self.hwm)} AND {col} <= {int(self.upstream)}"

    def mark_touched(self, source_sql: str, table: str | None = None) -> None:
        """Mark the Parquet hours of the rows `source_sql` selects (`event_time`, `symbol`) for
        re-export, in this run's transaction; of this table's mirror, or of `table`'s."""
        if not self._open:
            raise RuntimeError("mark_touched outside the increment's transaction (nothing new?)")
        mark_dirty(self.conn, cast(str, TABLES[table].dataset if table else self.table.dataset), source_sql)

    def keep_state(self) -> None:
        """Commit without moving the state: the run found nothing to change after all."""
        self._save = False


@contextlib.contextmanager
def incremental_table(
    conn: duckdb.DuckDBPyConnection, table: str, upstream: str | None, before_commit: str | None = None,
    upstream_position: int | None = None,
) -> Iterator[Increment]:
    """An increment of `table` over what `upstream` stamped since its last run (see the module
    docstring). `upstream=None`: a change of the table's rows that no upstream drives (a manual
    repair): always a transaction, and on exit only the table's own sequence moves on, so its
    consumers see the re-stamped rows as new. `before_commit` names a fault point (crypto_assets.faults)
    between the state update and COMMIT. `upstream_position` processes up to that sequence number
    instead of the upstream's newest (a benchmark or test that applies batches one by one)."""
    hwm, seq = get_state(conn, table)
    up = (position(conn, upstream) if upstream_position is None else upstream_position) if upstream else hwm
    inc = Increment(conn, TABLES[table], TABLES[upstream] if upstream else None, hwm, seq, up)
    if inc.nothing_new:
        yield inc
        return
    with transaction(conn):
        inc._open = True
        try:
            yield inc
        finally:
            inc._open = False
        if inc._save:
            set_state(conn, table, up, inc.new_seq)
        if before_commit:
            fault_point(before_commit)
