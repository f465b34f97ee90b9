"""Parquet mirrors: one file per (UTC hour, symbol), rewritten only when its rows changed, and
warehouses/lakes from the older whole-day layout carried over without losing or doubling rows."""

from datetime import UTC, datetime, timedelta

import duckdb

from crypto_assets.warehouse.lake_export import export_dirty, mark_dirty
from crypto_assets.warehouse.lake_layout import LEGACY_DAY_FILE
from crypto_assets.warehouse.tables import ensure_schema

T0 = datetime(2026, 11, 20, 0, 0, tzinfo=UTC)


def _table(conn, hours: int, start: int = 0) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS t (coin_id VARCHAR, symbol VARCHAR, event_time TIMESTAMPTZ, price DOUBLE)")
    rows = [("bitcoin", "btc", T0 + timedelta(minutes=10 * i), float(i)) for i in range(start, start + hours * 6)]
    conn.executemany("INSERT INTO t VALUES (?, ?, ?, ?)", rows)


def _parquet_rows(conn, root) -> int:
    return conn.sql(f"SELECT count(*) FROM read_parquet('{root}/x/**/*.parquet')").fetchall()[0][0]


def test_export_rewrites_only_the_touched_hour(lakehouse):
    root = lakehouse.lake_path
    with lakehouse.connect() as conn:
        _table(conn, hours=3)
        mark_dirty(conn, "x", "SELECT event_time, symbol FROM t")
        res = export_dirty(conn, root, "x", "t", "event_time", "coin_id, event_time")
        day = root / "x" / "date=2026-11-20" / "symbol=btc"
        assert sorted(p.name for p in day.iterdir()) == ["part-00.parquet", "part-01.parquet", "part-02.parquet"]
        assert res.partitions == 3 and res.rows == 18 and _parquet_rows(conn, root) == 18
        before = {p.name: p.stat().st_mtime_ns for p in day.iterdir()}

        # one new tick in hour 2: only part-02 is rewritten, and nothing is left pending
        conn.execute("INSERT INTO t VALUES ('bitcoin', 'btc', ?, 1.0)", [T0 + timedelta(hours=2, minutes=55)])
        mark_dirty(conn, "x", f"SELECT event_time, symbol FROM t WHERE event_time > '{(T0 + timedelta(hours=2, minutes=50)).isoformat()}'")
        res = export_dirty(conn, root, "x", "t", "event_time", "coin_id, event_time")
        after = {p.name: p.stat().st_mtime_ns for p in day.iterdir()}
        assert res.partitions == 1 and res.files == [str(day / "part-02.parquet")]
        assert after["part-00.parquet"] == before["part-00.parquet"] and after["part-01.parquet"] == before["part-01.parquet"]
        assert _parquet_rows(conn, root) == 19
        assert conn.sql("SELECT count(*) FROM lake_pending").fetchall() == [(0,)]


def test_old_whole_day_layout_is_carried_over(lakehouse):
    root = lakehouse.lake_path
    path = str(lakehouse.duckdb_path)
    lakehouse.root.mkdir(parents=True, exist_ok=True)
    # a warehouse and lake as the older code left them: a lake_dirty day marker and a part-0 day file
    old = duckdb.connect(path)
    old.execute("SET TimeZone = 'UTC'")
    _table(old, hours=4)
    old.execute("CREATE TABLE lake_dirty (dataset VARCHAR NOT NULL, day DATE NOT NULL, symbol VARCHAR NOT NULL, "
                "PRIMARY KEY (dataset, day, symbol))")
    day = root / "x" / "date=2026-11-20" / "symbol=btc"
    day.mkdir(parents=True)
    old.execute(f"COPY (SELECT * EXCLUDE (symbol) FROM t WHERE event_time < '{(T0 + timedelta(hours=3)).isoformat()}') "
                f"TO '{day / LEGACY_DAY_FILE}' (FORMAT parquet)")
    old.execute("INSERT INTO lake_dirty VALUES ('x', DATE '2026-11-20', 'btc')")  # hour 3 was never exported
    old.close()

    with lakehouse.connect() as conn:  # ensure_schema migrates the markers
        assert conn.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'lake_dirty'").fetchall() == [(0,)]
        assert conn.sql("SELECT count(*) FROM lake_pending WHERE dataset = 'x'").fetchall() == [(24,)]
        export_dirty(conn, root, "x", "t", "event_time", "coin_id, event_time")
        assert sorted(p.name for p in day.iterdir()) == [f"part-0{h}.parquet" for h in range(4)]
        assert _parquet_rows(conn, root) == 24  # every row once: nothing lost, nothing doubled
        ensure_schema(conn)  # idempotent

    # a legacy day file without any marker is picked up when its day is next touched
    with lakehouse.connect() as conn:
        other = root / "x" / "date=2026-11-19" / "symbol=btc"
        other.mkdir(parents=True)
        conn.execute("INSERT INTO t VALUES ('bitcoin', 'btc', ?, 5.0), ('bitcoin', 'btc', ?, 6.0)",
                     [T0 - timedelta(hours=5), T0 - timedelta(hours=1)])
        conn.execute(f"COPY (SELECT * EXCLUDE (symbol) FROM t WHERE event_time = '{(T0 - timedelta(hours=5)).isoformat()}') "
                     f"TO '{other / LEGACY_DAY_FILE}' (FORMAT parquet)")
        mark_dirty(conn, "x", f"SELECT event_time, symbol FROM t WHERE event_time = '{(T0 - timedelta(hours=1)).isoformat()}'")
        export_dirty(conn, root, "x", "t", "event_time", "coin_id, event_time")
        assert sorted(p.name for p in other.iterdir()) == ["part-19.parquet", "part-23.parquet"]
        assert _parquet_rows(conn, root) == 26
