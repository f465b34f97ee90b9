"""Metadata every warehouse-table materialization carries, so the UI tells the story.

What a run's materialization shows is about the rows the run wrote (their count, time range
and a preview), plus the table's row count: all cheap on any history size
(DuckDB keeps row counts per row group; the new rows are found through their sequence stamp,
which row-group zone maps prune to the newest row groups).
"""

from typing import Any

import dagster as dg
import duckdb

from crypto_assets.warehouse.sql import first
from crypto_assets.warehouse.tables import TABLES

PREVIEW_ROWS = 3
PREVIEW_COLUMNS = 8


def table_definition_metadata(table: str) -> dict[str, Any]:
    """Definition metadata of a warehouse-table asset: its declared columns, each with its
    description from the table registry (crypto_assets.warehouse.tables), and its table name,
    shown in the catalog without any run storing it."""
    return {"dagster/column_schema": TABLES[table].column_schema(), "dagster/table_name": f"warehouse.main.{table}"}


def markdown_table(rows: list[tuple], columns: list[str]) -> str:
    if not rows:
        return "(empty)"
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join(_fmt(v) for v in r) + " |")
    return "\n".join(out)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)


def table_metadata(
    conn: duckdb.DuckDBPyConnection,
    table: str,
    time_column: str | None = None,
    preview_order: str | None = None,
    new_rows: str | None = None,
) -> dict[str, Any]:
    """Row count, and the time range and a preview of the rows selected by the `new_rows`
    predicate (the whole table when None). The column schema is definition metadata
    (table_definition_metadata), not repeated in every run's events."""
    cols = conn.sql(f"DESCRIBE {table}").fetchall()
    where = new_rows or "TRUE"
    md: dict[str, Any] = {
        "dagster/row_count": int(first(conn, f"SELECT count(*) FROM {table}")[0]),
    }
    if time_column:
        lo, hi = first(conn, f"SELECT min({time_column}), max({time_column}) FROM {table} WHERE {where}")
        if lo is not None:
            md["min_time"] = dg.MetadataValue.timestamp(lo)
            md["max_time"] = dg.MetadataValue.timestamp(hi)
    order = preview_order or (f"{time_column} DESC" if time_column else "1")
    names = [c[0] for c in cols][:PREVIEW_COLUMNS]
    rows = conn.sql(f"SELECT {', '.join(names)} FROM {table} WHERE {where} ORDER BY {order} LIMIT {PREVIEW_ROWS}").fetchall()
    md["preview"] = dg.MetadataValue.md(markdown_table(rows, names))
    return md
