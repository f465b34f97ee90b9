"""The registry of every warehouse table (crypto_assets.warehouse.table_spec.Table): the one place
that says a table's DDL, its Parquet mirror, its time and sequence columns and what each column
means. Everything that creates, exports, checks or describes a table looks it up here; and
ensure_schema creates the tables on connect (idempotent), and the views over them (`bars_1m`
once the trade bars and the klines tables are both registered)."""

from __future__ import annotations

import duckdb

from crypto_assets.warehouse.derived_tables import DERIVED_TABLES
from crypto_assets.warehouse.ingest_tables import INGEST_TABLES
from crypto_assets.warehouse.kline_tables import BARS_1M_REQUIRES, BARS_1M_VIEW, KLINE_TABLES
from crypto_assets.warehouse.table_spec import Table
from crypto_assets.warehouse.trade_bar_tables import TRADE_BAR_TABLES
from crypto_assets.warehouse.trade_tables import TRADE_TABLES

TABLES: dict[str, Table] = {t.name: t for t in INGEST_TABLES + TRADE_TABLES + KLINE_TABLES + DERIVED_TABLES + TRADE_BAR_TABLES}

# Mirrored hour by hour through lake_pending (export_dirty; compaction merges closed days).
HOURLY_MIRRORED: tuple[Table, ...] = tuple(t for t in TABLES.values() if t.dataset and not t.single_file)


def table_of_dataset(dataset: str) -> Table:
    """The table a Parquet dataset mirrors ("gold/ohlcv_1m" -> ohlcv_1m)."""
    return next(t for t in TABLES.values() if t.dataset == dataset)


# One query that binds every table created on connect (see ensure_schema).
_ON_CONNECT = [t for t in TABLES.values() if t.on_connect]
# Views over tables created on connect, created with them: name -> DDL.
VIEWS: dict[str, str] = {"bars_1m": BARS_1M_VIEW} if all(
    n in TABLES and TABLES[n].on_connect for n in BARS_1M_REQUIRES) else {}
# Selecting every declared column also fails when a release added a column an older warehouse lacks.
_PROBE = " UNION ALL ".join(
    [f"(SELECT 1 FROM (SELECT {', '.join(t.column_names)} FROM main.{t.name}) LIMIT 0)" for t in _ON_CONNECT]
    + [f"(SELECT 1 FROM main.{name} LIMIT 0)" for name in VIEWS])


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create missing tables, and add the columns a release added since an older one created a
    table (nullable or defaulted ones: `Table.add_column_ddl`), so an upgraded pipeline keeps its
    warehouse. Every DDL is `CREATE TABLE IF NOT EXISTS`, a no-op when the table
    exists, so when one query that binds every declared column of every table succeeds (~7 ms; ~2 ms when it bound
    the tables only, which missed an added column) the DDL statements
    (~12-17 ms on every connect) are skipped. (A duckdb_tables() lookup costs more than the DDL.)
    Call it outside a transaction (LakehouseResource.connect does, on a fresh connection): a
    failed probe aborts an open transaction."""
    try:
        conn.execute(_PROBE).fetchall()
        return
    except (duckdb.CatalogException, duckdb.BinderException):
        pass
    for t in _ON_CONNECT:
        conn.execute(t.ddl)
        have = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' AND table_name = ?",
            [t.name]).fetchall()}
        for stmt in t.add_column_ddl(have):  # a table an older release created: add what it lacks
            conn.execute(stmt)
    for ddl in VIEWS.values():
        conn.execute(ddl)
