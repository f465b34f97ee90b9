"""The market side of the report: the candles, anomalies and correlations of a window read from
DuckDB, and one snapshot of key numbers per coin (`load_market`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb
import polars as pl


@dataclass
class CoinSnapshot:
    coin_id: str
    symbol: str
    last_time: datetime | None
    last_price: float | None
    change_24h_pct: float | None
    change_span_hours: float | None  # < 24 when the history is shorter than a day
    volatility_15m: float | None  # std of log returns over 15 min (fraction)
    rsi_14: float | None
    anomalies_24h: int = 0
    anomalies_by_rule: dict[str, int] = field(default_factory=dict)


@dataclass
class MarketData:
    window_end: datetime | None
    window_start: datetime | None
    hours: float
    candles: pl.DataFrame  # ohlcv_1m rows in the window
    anomalies: pl.DataFrame  # anomalies rows in the window
    correlations: pl.DataFrame  # the whole correlations table
    snapshots: list[CoinSnapshot]

    @property
    def coins(self) -> list[str]:
        return [s.coin_id for s in self.snapshots]

    def symbol(self, coin_id: str) -> str:
        for s in self.snapshots:
            if s.coin_id == coin_id:
                return s.symbol
        return coin_id


def load_market(conn: duckdb.DuckDBPyConnection, hours: float, coin_order: list[str] | None = None) -> MarketData:
    """Candles and anomalies of the last `hours` before the newest candle, the correlations and
    one snapshot per coin. The window is anchored on the data, not the wall clock."""
    end = conn.sql("SELECT max(minute) FROM ohlcv_1m").fetchall()[0][0]
    corr = conn.sql("SELECT coin_a, coin_b, window_name, window_end, corr, n FROM correlations").pl()
    if end is None:
        empty = conn.sql("SELECT * FROM ohlcv_1m LIMIT 0").pl()
        anom = conn.sql("SELECT * FROM anomalies LIMIT 0").pl()
        return MarketData(None, None, hours, empty, anom, corr, [])
    start = end - timedelta(hours=hours)
    candles = conn.sql(
        "SELECT coin_id, symbol, minute, open, high, low, close, rsi_14, bb_upper, bb_middle, bb_lower "
        "FROM ohlcv_1m WHERE minute > $start ORDER BY coin_id, minute",
        params={"start": start},
    ).pl()
    anomalies = conn.sql(
        "SELECT coin_id, symbol, event_time, rule, severity, value, price_usd FROM anomalies "
        "WHERE event_time > $start ORDER BY event_time",
        params={"start": start},
    ).pl()
    snap_rows = conn.sql(
        """
        WITH last AS (   -- aggregates, not a window over the whole table: no sort
            SELECT coin_id, arg_max(symbol, event_time) AS symbol, max(event_time) AS event_time,
                   arg_max(price_usd, event_time) AS price_usd, arg_max(volatility_15m, event_time) AS volatility_15m
            FROM market_features GROUP BY coin_id
        ), ref AS (   -- the last price at or before 24 h ago, else the oldest one within the day
            SELECT m.coin_id,
                   arg_max(m.price_usd, m.event_time) FILTER (m.event_time <= l.event_time - INTERVAL 24 HOUR) AS p_old,
                   max(m.event_time) FILTER (m.event_time <= l.event_time - INTERVAL 24 HOUR) AS t_old,
                   arg_min(m.price_usd, m.event_time) FILTER (m.event_time > l.event_time - INTERVAL 24 HOUR) AS p_first,
                   min(m.event_time) FILTER (m.event_time > l.event_time - INTERVAL 24 HOUR) AS t_first
            FROM market_features m JOIN last l USING (coin_id)
            WHERE m.event_time >= l.event_time - INTERVAL 25 HOUR
            GROUP BY 1
        ), rsi AS (
            SELECT coin_id, arg_max(rsi_14, minute) AS rsi_14 FROM ohlcv_1m WHERE rsi_14 IS NOT NULL GROUP BY coin_id
        )
        SELECT l.coin_id, l.symbol, l.event_time, l.price_usd,
               coalesce(r.p_old, r.p_first), coalesce(r.t_old, r.t_first), l.volatility_15m, s.rsi_14
        FROM last l LEFT JOIN ref r USING (coin_id) LEFT JOIN rsi s USING (coin_id)
        """
    ).fetchall()
    anom_24h = conn.sql(
        """
        SELECT a.coin_id, a.rule, count(*) FROM anomalies a
        JOIN (SELECT coin_id, max(event_time) AS t FROM market_features GROUP BY 1) l USING (coin_id)
        WHERE a.event_time > l.t - INTERVAL 24 HOUR GROUP BY ALL
        """
    ).fetchall()
    by_coin: dict[str, dict[str, int]] = {}
    for coin, rule, n in anom_24h:
        by_coin.setdefault(coin, {})[rule] = int(n)
    snaps = []
    for coin, sym, t, price, p_ref, t_ref, vol, rsi in snap_rows:
        change = span = None
        if p_ref and t_ref is not None and t_ref < t:
            change = (price / p_ref - 1.0) * 100.0
            span = (t - t_ref).total_seconds() / 3600.0
        rules = by_coin.get(coin, {})
        snaps.append(CoinSnapshot(coin, sym, t, price, change, span, vol, rsi, sum(rules.values()), rules))
    order = {c: i for i, c in enumerate(coin_order or [])}
    snaps.sort(key=lambda s: (order.get(s.coin_id, len(order)), s.coin_id))
    return MarketData(end, start, hours, candles, anomalies, corr, snaps)

