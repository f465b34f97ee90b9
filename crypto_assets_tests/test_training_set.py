"""The training set's forward/backward price lookups (numpy searchsorted per coin) match what
the ASOF joins they replaced returned, on an irregular market with gaps and a duplicated tick."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from crypto_assets.ml.training_set import _lookup_specs, _register_lookups
from crypto_assets.warehouse_schema import MARKET_FEATURES_DDL


def _market(conn) -> None:
    conn.execute(MARKET_FEATURES_DDL)
    rng = np.random.default_rng(3)
    t0 = datetime(2026, 10, 1, tzinfo=timezone.utc)
    rows = []
    for coin in ("bitcoin", "ethereum", "solana"):
        t = t0 + timedelta(seconds=int(rng.integers(0, 90)))
        for i in range(3000):
            # mostly ~1 tick/min with jitter, sometimes a gap of minutes to hours
            step = float(rng.choice([rng.uniform(5, 110), rng.uniform(300, 900), rng.uniform(3600, 5 * 3600)],
                                    p=[0.97, 0.025, 0.005]))
            t += timedelta(seconds=step, microseconds=int(rng.integers(0, 1_000_000)))
            rows.append((coin, coin[:3].upper(), t, float(100 + rng.normal()), i))
    rows.append(rows[1500])  # a duplicated tick
    coin, sym, t, price, seq = zip(*rows)
    conn.register("ticks_in", pa.table({"coin_id": coin, "symbol": sym, "event_time": pa.array(t, pa.timestamp("us", "UTC")),
                                       "price_usd": price, "feature_seq": seq}))
    conn.execute("INSERT INTO market_features (coin_id, symbol, event_time, price_usd, feature_seq) "
                 "SELECT coin_id, symbol, event_time, price_usd, feature_seq FROM ticks_in")
    conn.unregister("ticks_in")


def _reference(conn, horizon: int, where: str) -> str:
    joins, cols = [], []
    for alias, m in _lookup_specs(horizon):
        op, sign = (">=", "+") if m > 0 else ("<=", "-")
        joins.append(f"ASOF LEFT JOIN market_features {alias} ON {alias}.coin_id = f.coin_id "
                     f"AND {alias}.event_time {op} f.event_time {sign} INTERVAL {abs(m)} MINUTE")
        cols.append(f"{alias}.event_time AS {alias}_t, {alias}.price_usd AS {alias}_p")
    return (f"SELECT DISTINCT f.coin_id, f.event_time, {', '.join(cols)} FROM market_features f {' '.join(joins)} "
            f"WHERE {where}")


@pytest.mark.parametrize("horizon,where", [(15, "TRUE"), (30, "f.feature_seq >= 2990"), (15, "FALSE")])
def test_lookups_match_asof_joins(horizon, where):
    conn = duckdb.connect()
    conn.execute("SET TimeZone='UTC'")
    _market(conn)
    _register_lookups(conn, horizon, where)
    try:
        ours = conn.sql("SELECT * FROM feature_lookups ORDER BY coin_id, event_time").fetchall()
        cols = [d[0] for d in conn.sql("SELECT * FROM feature_lookups").description]
    finally:
        conn.unregister("feature_lookups")
    ref_sql = _reference(conn, horizon, where)
    ref = conn.sql(f"SELECT {', '.join(cols)} FROM ({ref_sql}) ORDER BY coin_id, event_time").fetchall()
    assert len(ours) == len(ref)
    assert ours == ref
    if where == "TRUE":
        assert len(ours) == 9000  # one row per distinct (coin, time): the duplicate is not doubled
        assert any(r[cols.index("r24h_t")] is None for r in ours)  # the end has no 24h label
        assert any(r[cols.index("m60_t")] is None for r in ours)  # the start has no 60 min history
