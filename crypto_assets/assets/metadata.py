"""Metadata every warehouse-table materialization carries, so the UI tells the story."""

from typing import Any

import dagster as dg
import duckdb

from crypto_assets.db import first


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
    conn: duckdb.DuckDBPyConnection, table: str, time_column: str | None = None, preview_order: str | None = None
) -> dict[str, Any]:
    """Row count, column schema (feeds the schema-change checks), time range and a preview."""
    cols = conn.sql(f"DESCRIBE {table}").fetchall()
    md: dict[str, Any] = {
        "dagster/row_count": int(first(conn, f"SELECT count(*) FROM {table}")[0]),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name=c[0], type=str(c[1])) for c in cols]
        ),
        "dagster/table_name": f"warehouse.main.{table}",
    }
    if time_column:
        lo, hi = first(conn, f"SELECT min({time_column}), max({time_column}) FROM {table}")
        if lo is not None:
            md["min_time"] = dg.MetadataValue.timestamp(lo)
            md["max_time"] = dg.MetadataValue.timestamp(hi)
    order = preview_order or (f"{time_column} DESC" if time_column else "1")
    names = [c[0] for c in cols][:10]
    rows = conn.sql(f"SELECT {', '.join(names)} FROM {table} ORDER BY {order} LIMIT 5").fetchall()
    md["preview"] = dg.MetadataValue.md(markdown_table(rows, names))
    return md
