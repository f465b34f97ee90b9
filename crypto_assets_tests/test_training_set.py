"""The training set's forward/backward price lookups (numpy searchsorted per coin) match what
the ASOF joins they replaced returned, on an irregular market with gaps and a duplicated tick."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from crypto_assets.ml.training_set import _lookup_specs, _register_lookups
from crypto_assets.warehouse.tables import TABLES


def _market(conn) -> None:
    conn.execute(TABLES["market_features"].ddl)
    rng = np.random.default_rng(3)
    t0 = datetime(2026, 10, 1, tzinfo=UTC)
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
    coin, sym, t, price, seq = zip(*rows, strict=False)
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


# ------------------------------------------------------------------ bounded lookups (predictions)
def _gappy_market(conn) -> None:
    """Two coins; solana pauses for 30 hours right before the rows scored, so a backward lookup
    (momentum) reaches a tick far older than any lookup window."""
    conn.execute(TABLES["market_features"].ddl)
    t0 = datetime(2026, 10, 1, tzinfo=UTC)
    rows, seq = [], 0
    for coin, gap_at in (("bitcoin", None), ("solana", 2500)):
        t = t0
        for i in range(3000):
            t += timedelta(seconds=60 + (i * 7) % 13, hours=30 if i == gap_at else 0)
            rows.append((coin, coin[:3].upper(), t, 100 + ((i * 31) % 17) / 10, seq))
            seq += 1
    coin, sym, t, price, seq = zip(*sorted(rows, key=lambda r: r[2]), strict=False)
    conn.register("ticks_in", pa.table({"coin_id": coin, "symbol": sym, "event_time": pa.array(t, pa.timestamp("us", "UTC")),
                                       "price_usd": price, "feature_seq": np.arange(len(t))}))
    conn.execute("INSERT INTO market_features (coin_id, symbol, event_time, price_usd, feature_seq) "
                 "SELECT coin_id, symbol, event_time, price_usd, feature_seq FROM ticks_in")
    conn.unregister("ticks_in")


@pytest.mark.parametrize("where", [
    # solana after its gap only: the tick before the pause is older than the whole lookup window
    "f.event_time >= (SELECT max(event_time) FROM market_features) - INTERVAL 10 HOUR",
    "f.event_time >= (SELECT max(event_time) FROM market_features) - INTERVAL 36 HOUR",
    "f.feature_seq BETWEEN 2000 AND 2100",  # a slice in the middle: labels look past its end
    "f.feature_seq > 5990",  # the newest rows
    "FALSE",
])
def test_bounded_lookups_give_the_same_features(where):
    from crypto_assets.ml.training_set import feature_sql

    conn = duckdb.connect()
    conn.execute("SET TimeZone='UTC'")
    _gappy_market(conn)
    conn.execute(TABLES["ohlcv_1m"].ddl)
    conn.execute(TABLES["anomalies"].ddl)
    out = {}
    for bounded in (False, True):
        _register_lookups(conn, 15, where, bounded=bounded)
        try:
            rel = conn.sql(f"SELECT * FROM ({feature_sql(15, where)}) ORDER BY coin_id, event_time")
            cols = [d[0] for d in rel.description]
            out[bounded] = rel.fetchall()
        finally:
            conn.unregister("feature_lookups")
    assert out[True] == out[False]
    if where != "FALSE":
        assert out[True], "the filter selects rows"
    if "10 HOUR" in where:  # solana's first tick after the gap: its momentum reaches back over the 30 h pause
        assert {r[0] for r in out[True]} == {"solana"}
        assert out[True][0][cols.index("momentum_60m")] != 0


def test_anomaly_model_without_anomalies_is_skipped_not_failed(spark):
    """A training window with no anomaly (a quiet market, a small demo) cannot train a
    classifier: train_anomaly says why, and the asset skips green (see defs/models.py and ml/model_specs.py)."""
    from datetime import datetime, timedelta

    import pytest

    from crypto_assets.ml.train import NotEnoughData, train_anomaly
    from crypto_assets.ml.training_set import FEATURES

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [(t0 + timedelta(minutes=i), *[float(i % 7)] * len(FEATURES), 0) for i in range(200)]
    df = spark.createDataFrame(rows, ["event_time", *FEATURES, "label_anomaly"])
    with pytest.raises(ValueError, match="0 anomalies") as raised:
        train_anomaly(df, FEATURES, {"train_fraction": 0.8})
    assert type(raised.value) is NotEnoughData  # the one failure a skippable model spec skips green
