"""Shared by the lake compaction tests and their child process: a small warehouse table mirrored
to hour files, and reads of the lake and of the table compared by identity (every column)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from crypto_assets.warehouse.lake_export import export_dirty, mark_dirty
from crypto_assets.warehouse.lake_layout import duckdb_source, read_lock

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)
DATASET = "silver/clean_ticks"  # a registered dataset name (its sort order: coin_id, event_time)
BY_DATE_DATASET = "gold/ohlcv_1m"  # a date-only one (symbol in the files; sort order: coin_id, minute)
TABLE = "t"
COLUMNS = "coin_id, symbol, event_time, price, note"
COINS = (("bitcoin", "btc"), ("ethereum", "eth"))


def create_table(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (coin_id VARCHAR, symbol VARCHAR, event_time TIMESTAMPTZ, "
                 "price DOUBLE, note VARCHAR, minute TIMESTAMPTZ)")


def insert_rows(conn: duckdb.DuckDBPyConnection, start: datetime, hours: int, step_min: int = 10,
                tag: str = "base", dataset: str = DATASET) -> None:
    """Rows every `step_min` minutes for every coin, marked dirty in the same transaction."""
    create_table(conn)
    coins = ", ".join(f"('{cid}', '{sym}', {k})" for k, (cid, sym) in enumerate(COINS))
    conn.execute("BEGIN TRANSACTION")
    conn.execute(
        f"""
        INSERT INTO {TABLE}
        SELECT cid, sym, $start + to_minutes({step_min} * i), round(1000.0 * k + i + 0.25, 6), $tag || '-' || i,
               date_trunc('minute', $start + to_minutes({step_min} * i))
        FROM (VALUES {coins}) c(cid, sym, k), range({hours * 60 // step_min}) r(i)
        """,
        {"start": start, "tag": tag},
    )
    mark_dirty(conn, dataset, f"SELECT event_time, symbol FROM {TABLE} WHERE note LIKE '{tag}-%'")
    conn.execute("COMMIT")


def export(conn: duckdb.DuckDBPyConnection, lake_root: Path, dataset: str = DATASET, **kw):
    return export_dirty(conn, lake_root, dataset, TABLE, "event_time", "coin_id, event_time", **kw)


def export_registered(conn: duckdb.DuckDBPyConnection, lake_root: Path, name: str):
    """export_dirty of a registry table, with the mirror, time column and order the registry gives it."""
    from crypto_assets.warehouse.tables import TABLES

    t = TABLES[name]
    assert t.dataset is not None and t.time_column is not None and t.export_order is not None, t
    return export_dirty(conn, lake_root, t.dataset, t.name, t.time_column, t.export_order)


def query_rows(sql: str) -> list[tuple]:
    """The rows of a query on DuckDB's default connection (a query that returns rows)."""
    rel = duckdb.sql(sql)
    assert rel is not None, sql
    return rel.fetchall()


def table_rows(conn: duckdb.DuckDBPyConnection) -> Counter:
    return Counter(conn.sql(f"SELECT {COLUMNS} FROM {TABLE}").fetchall())


def lake_rows(lake_root: Path, dataset: str = DATASET) -> Counter:
    """Every row of the dataset's files (symbol from the directory or the file), read under the shared lock."""
    return mirror_rows(lake_root, dataset, COLUMNS)


def table_columns(conn: duckdb.DuckDBPyConnection, table: str) -> str:
    """Every column of a warehouse table, comma-separated, in table order."""
    return ", ".join(conn.sql(f"SELECT * FROM {table} LIMIT 0").columns)


def warehouse_rows(conn: duckdb.DuckDBPyConnection, table: str, columns: str | None = None) -> Counter:
    """The multiset of a warehouse table's rows (every column unless `columns`)."""
    return Counter(conn.sql(f"SELECT {columns or table_columns(conn, table)} FROM {table}").fetchall())


def mirror_rows(lake_root: Path, dataset: str, columns: str, missing_ok: bool = False) -> Counter:
    """The multiset of the dataset's rows in the lake (`columns` of its files, `symbol` and `date`
    from the directories), read under the shared lock. No file: FileNotFoundError, or empty with
    `missing_ok`."""
    with read_lock(lake_root, [dataset]):
        mem = duckdb.connect()
        try:
            mem.execute("SET TimeZone = 'UTC'")
            try:
                source = duckdb_source(lake_root, dataset)
            except FileNotFoundError:
                if missing_ok:
                    return Counter()
                raise
            return Counter(mem.sql(f"SELECT {columns} FROM {source}").fetchall())
        finally:
            mem.close()


def assert_mirror_equals_table(conn: duckdb.DuckDBPyConnection, lake_root: Path, dataset: str, table: str) -> None:
    """The lake holds exactly the table's rows, every column compared, each as often as in the
    table (a lost row plus a duplicate of another fails, where equal counts would pass)."""
    columns = table_columns(conn, table)
    want, got = warehouse_rows(conn, table, columns), mirror_rows(lake_root, dataset, columns, missing_ok=True)
    missing, extra = want - got, got - want
    assert not missing and not extra, (
        f"{dataset} != {table}: {sum(missing.values())} rows missing from the lake (e.g. {list(missing)[:2]}), "
        f"{sum(extra.values())} extra (e.g. {list(extra)[:2]})"
    )


def lake_state(lake_root: Path, dataset: str = DATASET) -> dict[str, list[tuple]]:
    """Relative path -> the file's rows in file order: equal states are the same files with
    the same rows in the same order."""
    base = Path(lake_root) / dataset
    mem = duckdb.connect()
    try:
        mem.execute("SET TimeZone = 'UTC'")
        return {
            str(p.relative_to(base)): mem.sql(f"SELECT * FROM read_parquet('{p}', hive_partitioning = false)").fetchall()
            for p in sorted(base.rglob("*")) if p.is_file()
        }
    finally:
        mem.close()
