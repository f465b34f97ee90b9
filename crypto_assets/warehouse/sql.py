"""Tiny DuckDB 2.0 helpers: relations no longer have fetchone() and a half-read execute()
result blocks the connection, so single values are read through fully-fetched relations."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import duckdb


def first(conn: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> tuple:
    rows = conn.sql(sql, params=params).fetchall() if params is not None else conn.sql(sql).fetchall()
    return rows[0] if rows else ()


def scalar(conn: duckdb.DuckDBPyConnection, sql: str, params: Any = None) -> Any:
    row = first(conn, sql, params)
    return row[0] if row else None


@contextlib.contextmanager
def transaction(conn: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """BEGIN … COMMIT, or ROLLBACK on any exception (a kill leaves DuckDB's WAL to undo it)."""
    conn.execute("BEGIN TRANSACTION")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
