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
        # the matched ticks (sigma, lmb_sigma: test_large_move_label_is_about_the_next_15_minutes)
        cols = [d[0] for d in conn.sql("SELECT * FROM feature_lookups").description if d[0] not in ("sigma", "lmb_sigma")]
        ours = conn.sql(f"SELECT {', '.join(cols)} FROM feature_lookups ORDER BY coin_id, event_time").fetchall()
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
    conn.execute(TABLES["trade_bars_1m"].ddl)
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


def test_anomaly_model_without_large_moves_is_skipped_not_failed(spark):
    """A training window with no large move (a quiet market, a small demo) cannot train a
    classifier: train_anomaly says why, and the asset skips green (see defs/models.py and ml/model_specs.py)."""
    from datetime import datetime, timedelta

    import pytest

    from crypto_assets.ml.train import NotEnoughData, train_anomaly
    from crypto_assets.ml.training_set import FEATURES

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [(t0 + timedelta(minutes=i), *[float(i % 7)] * len(FEATURES), 0, 0) for i in range(200)]
    df = spark.createDataFrame(rows, ["event_time", *FEATURES, "label_large_move", "past_large_move"])
    with pytest.raises(ValueError, match="0 large moves") as raised:
        train_anomaly(df, FEATURES, {"train_fraction": 0.8})
    assert type(raised.value) is NotEnoughData  # the one failure a skippable model spec skips green


# ------------------------------------------------------------------ the large-move label and its baselines
def _constructed(conn, prices: list[float], vol: float = 0.001, step_s: int = 60) -> datetime:
    """One coin, a tick every `step_s` seconds at the given prices, volatility_15m fixed."""
    conn.execute(TABLES["market_features"].ddl)
    conn.execute(TABLES["ohlcv_1m"].ddl)
    conn.execute(TABLES["trade_bars_1m"].ddl)
    t0 = datetime(2026, 10, 1, tzinfo=UTC)
    ts = [t0 + timedelta(seconds=step_s * i) for i in range(len(prices))]
    conn.register("ticks_in", pa.table({"event_time": pa.array(ts, pa.timestamp("us", "UTC")), "price_usd": prices,
                                        "feature_seq": np.arange(len(prices))}))
    conn.execute("INSERT INTO market_features (coin_id, symbol, event_time, price_usd, volatility_15m, feature_seq) "
                 f"SELECT 'bitcoin', 'btc', event_time, price_usd, {vol}, feature_seq FROM ticks_in")
    conn.unregister("ticks_in")
    return t0


def _rows(conn) -> dict[int, dict]:
    """Training rows by minute since the first tick."""
    from crypto_assets.ml.training_set import feature_sql

    _register_lookups(conn, 15, "TRUE")
    try:
        df = conn.sql(f"SELECT * FROM ({feature_sql(15)}) ORDER BY event_time").pl()
    finally:
        conn.unregister("feature_lookups")
    t0 = df["event_time"][0]
    return {int((r["event_time"] - t0).total_seconds() // 60): r for r in df.iter_rows(named=True)}


def test_large_move_label_is_about_the_next_15_minutes():
    """A 5% jump at minute 300 (3 sigma of a 15-minute return is ~0.4% here): rows in the 15
    minutes before it are positives; rows after it are negatives whose *past* window holds the
    jump (past_large_move, the persistence baseline); no label without 4 hours of history before
    t nor in the last 15 minutes (no tick at t + 15 min), no baseline without that 15 min back."""
    from crypto_assets.ml.training_set import LARGE_MOVE_SIGMAS

    conn = duckdb.connect()
    conn.execute("SET TimeZone='UTC'")
    prices = [100.0 * (1 + 1e-4 * ((i * 3) % 7 - 3)) * (1.05 if i >= 300 else 1.0) for i in range(420)]
    _constructed(conn, prices)
    rows = _rows(conn)
    label = {m: r["label_large_move"] for m, r in rows.items()}
    past = {m: r["past_large_move"] for m, r in rows.items()}
    assert all(label[m] is None for m in range(240))  # the 4-hour variance window is not covered yet
    assert all(label[m] == 1 for m in range(285, 300))  # the jump is within (t, t + 15 min]
    assert all(label[m] == 0 for m in range(240, 285)) and all(label[m] == 0 for m in range(300, 405))
    assert all(label[m] is None for m in range(406, 420))  # nothing 15 minutes ahead
    assert all(past[m] == 1 for m in range(300, 315))  # the jump was in the previous 15 minutes
    assert all(past[m] == 0 for m in range(255, 300)) and all(past[m] == 0 for m in range(315, 420))
    assert all(past[m] is None for m in range(255))  # no threshold 15 minutes back
    # past_move_sigmas: the feature form of the baseline, in sigmas of the previous window, clipped
    assert rows[310]["past_move_sigmas"] == 10.0 and 0 < rows[270]["past_move_sigmas"] < LARGE_MOVE_SIGMAS
    assert rows[5]["past_move_sigmas"] == 0.0
    # past_return_h: the return since the tick 15 minutes back
    assert rows[70]["past_return_h"] == pytest.approx(prices[70] / prices[55] - 1)
    assert rows[5]["past_return_h"] is None
    # the threshold: realized variance of the returns ending in (t - 4 h, t], scaled to 15 minutes
    _register_lookups(conn, 15, "TRUE")
    try:
        sigma = [r[0] for r in conn.sql("SELECT sigma FROM feature_lookups ORDER BY event_time").fetchall()]
    finally:
        conn.unregister("feature_lookups")
    r2 = np.diff(np.log(prices)) ** 2
    assert sigma[239] is None
    assert sigma[240] == pytest.approx(np.sqrt(r2[:240].sum() * 15 / 240), rel=1e-9)
    assert sigma[330] == pytest.approx(np.sqrt(r2[90:330].sum() * 15 / 240), rel=1e-9)  # the jump's return in it


def test_large_move_label_is_null_without_a_volatility_or_a_tick_at_the_horizon():
    conn = duckdb.connect()
    conn.execute("SET TimeZone='UTC'")
    _constructed(conn, [100.0] * 400)  # no variance: no threshold
    rows = _rows(conn)
    assert all(r["label_large_move"] is None and r["past_large_move"] is None for r in rows.values())
    # ticks every 21 minutes: the first tick at or after t + 15 min is 21 min ahead, beyond the 5 min tolerance
    conn = duckdb.connect()
    conn.execute("SET TimeZone='UTC'")
    _constructed(conn, [100.0 * (1.1 if i % 2 else 1.0) for i in range(30)], step_s=21 * 60)
    rows = _rows(conn)
    assert all(r["label_large_move"] is None and r["past_large_move"] is None for r in rows.values())
    assert all(r["fwd_return_h"] is None and r["past_return_h"] is None for r in rows.values())


def _bar(conn, exchange: str, product: str, minute: datetime, buy: float, sell: float, vwap: float, trades: int) -> None:
    base = buy + sell
    conn.execute(
        "INSERT INTO trade_bars_1m (exchange, product, coin_id, bar_start, open, high, low, close, base_volume, quote_volume,"
        " vwap, trade_count, buy_volume, sell_volume, first_trade_id, last_trade_id, quote_volume_exact, rsi_n, bar_seq) "
        "VALUES (?, ?, 'bitcoin', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, 2, ?, 0, 1)",
        [exchange, product, minute, vwap, vwap, vwap, vwap, base, base * vwap, vwap, trades, buy, sell, base * vwap])


def test_trade_bar_features_come_from_the_last_complete_minute_of_every_exchange():
    """Ticks at mm:30; bars of minute 10 (two exchanges) and 20 (one). The row at 10:30 sees no
    bar of minute 10 (not over yet); at 11:30 the two exchanges' minute 10 summed; at 15:30 still
    minute 10 (ended 4.5 min ago); at 16:30 nothing (older than 5 min: all 0, the flag too)."""
    conn = duckdb.connect()
    conn.execute("SET TimeZone='UTC'")
    t0 = _constructed(conn, [100.0] * 60)
    t0 = t0 + timedelta(seconds=30)
    conn.execute("UPDATE market_features SET event_time = event_time + INTERVAL 30 SECOND")
    m10 = t0.replace(second=0) + timedelta(minutes=10)
    _bar(conn, "coinbase", "BTC-USD", m10, buy=3.0, sell=1.0, vwap=99.0, trades=9)
    _bar(conn, "binance", "BTCUSDT", m10, buy=1.0, sell=3.0, vwap=101.0, trades=10)  # summed: imbalance 0
    _bar(conn, "coinbase", "BTC-USD", m10 + timedelta(minutes=10), buy=4.0, sell=0.0, vwap=80.0, trades=3)
    rows = _rows(conn)
    feats = {m: (r["trade_imbalance"], r["r_vwap"], r["log_trade_count"], r["has_trade_bars"]) for m, r in rows.items()}
    assert feats[10] == (0, 0, 0, 0)  # minute 10 is not over at 10:30
    imb, r_vwap, n, has = feats[11]
    assert (imb, has) == (0, 1) and r_vwap == pytest.approx(100 / 100 - 1, abs=1e-12) and n == pytest.approx(np.log(20))
    assert feats[15] == feats[11] and feats[16] == (0, 0, 0, 0)
    imb, r_vwap, n, has = feats[21]
    assert (imb, has) == (1, 1) and r_vwap == pytest.approx(100 / 80 - 1) and n == pytest.approx(np.log(4))
    assert feats[25][3] == 1 and all(feats[m] == (0, 0, 0, 0) for m in range(26, 60))
