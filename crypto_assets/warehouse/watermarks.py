"""Per-asset incremental state: the upstream high-water mark and the asset's own sequence.

Each derived table stamps its rows with the asset's sequence number; a downstream asset
processes rows whose stamp is past its own high-water mark. State moves in the same DuckDB
transaction as the rows (crypto_assets.warehouse.incremental_table), so a crash never leaves
the two out of step.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from crypto_assets.warehouse.sql import first, scalar


def get_state(conn: duckdb.DuckDBPyConnection, asset: str) -> tuple[int, int]:
    """(hwm, seq) of `asset`; (0, 0) before its first run."""
    row = first(conn, "SELECT hwm, seq FROM asset_state WHERE asset = ?", [asset])
    return (int(row[0]), int(row[1])) if row else (0, 0)


def set_state(conn: duckdb.DuckDBPyConnection, asset: str, hwm: int, seq: int) -> None:
    conn.execute(
        """
        INSERT INTO asset_state VALUES (?, ?, ?, ?)
        ON CONFLICT (asset) DO UPDATE SET hwm = excluded.hwm, seq = excluded.seq, updated_at = excluded.updated_at
        """,
        [asset, hwm, seq, datetime.now(UTC)],
    )


def position(conn: duckdb.DuckDBPyConnection, table: str) -> int:
    """The newest sequence number `table` has stamped on its rows: what a consumer processes up
    to. raw_ticks is stamped by the pull with its batch id; ingest_batches is written in the same
    transaction as the batch rows, one row per batch (not per tick). raw_trades is stamped the
    same way (batch ids are one sequence over both topics), so a trade consumer's window may hold
    tick batches too, which simply have no trade rows."""
    if table in ("raw_ticks", "raw_trades"):
        return int(scalar(conn, "SELECT coalesce(max(batch_id), 0) FROM ingest_batches"))
    return get_state(conn, table)[1]
