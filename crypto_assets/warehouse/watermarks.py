"""Per-asset incremental state: the upstream high-water mark and the asset's own sequence.

Each derived table stamps its rows with the asset's sequence number; a downstream asset
processes rows whose stamp is past its own high-water mark. State moves in the same DuckDB
transaction as the rows, so a crash never leaves the two out of step.
"""

from __future__ import annotations

from datetime import datetime, timezone

import duckdb

from crypto_assets.warehouse.sql import first


def get_state(conn: duckdb.DuckDBPyConnection, asset: str) -> tuple[int, int]:
    row = first(conn, "SELECT hwm, seq FROM asset_state WHERE asset = ?", [asset])
    return (int(row[0]), int(row[1])) if row else (0, 0)


def set_state(conn: duckdb.DuckDBPyConnection, asset: str, hwm: int, seq: int) -> None:
    conn.execute(
        """
        INSERT INTO asset_state VALUES (?, ?, ?, ?)
        ON CONFLICT (asset) DO UPDATE SET hwm = excluded.hwm, seq = excluded.seq, updated_at = excluded.updated_at
        """,
        [asset, hwm, seq, datetime.now(timezone.utc)],
    )
