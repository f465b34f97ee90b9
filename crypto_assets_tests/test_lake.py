"""Parquet mirrors: one file per (UTC hour, symbol), rewritten only when its rows changed."""

from datetime import UTC, datetime, timedelta

from crypto_assets.warehouse.lake_export import export_dirty, mark_dirty

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
