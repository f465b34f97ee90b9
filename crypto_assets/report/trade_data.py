"""The trade side of the report: the 1-minute trade bars (`trade_bars_1m`, built from exchange or
simulated trades) of a window read from DuckDB, and one summary per product (`load_trades`).

The window is anchored on the newest trade bar, like the tick candles' on the newest candle, so a
report of old data still shows its last hours. A warehouse without the table (built before trade
bars existed) or without trades yields an empty `TradeData`, and the report says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import duckdb
import polars as pl

TRADE_BARS = "trade_bars_1m"
BAR_COLUMNS = ("exchange", "product", "coin_id", "bar_start", "open", "high", "low", "close", "base_volume",
               "quote_volume", "vwap", "trade_count", "buy_volume", "sell_volume")


@dataclass
class ProductSummary:
    """One product's numbers over the window (volumes in base and quote currency)."""

    exchange: str
    product: str
    coin_id: str
    bars: int
    trades: int
    first_bar: datetime
    last_bar: datetime
    open: float
    close: float
    high: float
    low: float
    base_volume: float
    quote_volume: float
    vwap: float | None  # quote volume / base volume over the window
    buy_share: float | None  # taker-buy share of the base volume

    @property
    def key(self) -> str:
        return f"{self.exchange}:{self.product}"

    @property
    def change_pct(self) -> float:
        return (self.close / self.open - 1.0) * 100.0


@dataclass
class TradeData:
    window_end: datetime | None
    window_start: datetime | None
    hours: float
    bars: pl.DataFrame  # trade_bars_1m rows of the window, numbers as Float64
    products: list[ProductSummary]

    @property
    def trades(self) -> int:
        return sum(p.trades for p in self.products)

    @property
    def bar_count(self) -> int:
        return sum(p.bars for p in self.products)

    def bars_of(self, key: str) -> pl.DataFrame:
        exchange, _, product = key.partition(":")
        return self.bars.filter((pl.col("exchange") == exchange) & (pl.col("product") == product))


def _has_table(conn: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(conn.sql("SELECT count(*) FROM duckdb_tables() WHERE table_name = $t", params={"t": name}).fetchall()[0][0])


def load_trades(conn: duckdb.DuckDBPyConnection, hours: float, coin_order: list[str] | None = None) -> TradeData:
    """The trade bars of the last `hours` before the newest one and a summary per product,
    ordered like the coins (then exchange, product)."""
    if not _has_table(conn, TRADE_BARS):
        return TradeData(None, None, hours, pl.DataFrame(), [])
    end = conn.sql(f"SELECT max(bar_start) FROM {TRADE_BARS}").fetchall()[0][0]
    if end is None:
        return TradeData(None, None, hours, pl.DataFrame(), [])
    start = end - timedelta(hours=hours)
    numeric = {"open", "high", "low", "close", "base_volume", "quote_volume", "vwap", "buy_volume", "sell_volume"}
    cols = ", ".join(f"CAST({c} AS DOUBLE) AS {c}" if c in numeric else c for c in BAR_COLUMNS)
    bars = conn.sql(
        f"SELECT {cols} FROM {TRADE_BARS} WHERE bar_start > $start ORDER BY exchange, product, bar_start",
        params={"start": start},
    ).pl()
    rows = conn.sql(
        f"""
        SELECT exchange, product, any_value(coin_id), count(*), sum(trade_count),
               min(bar_start), max(bar_start),
               CAST(arg_min(open, bar_start) AS DOUBLE), CAST(arg_max(close, bar_start) AS DOUBLE),
               CAST(max(high) AS DOUBLE), CAST(min(low) AS DOUBLE),
               CAST(sum(base_volume) AS DOUBLE), CAST(sum(quote_volume) AS DOUBLE),
               CAST(sum(quote_volume) AS DOUBLE) / nullif(CAST(sum(base_volume) AS DOUBLE), 0),
               CAST(sum(buy_volume) AS DOUBLE) / nullif(CAST(sum(base_volume) AS DOUBLE), 0)
        FROM {TRADE_BARS} WHERE bar_start > $start GROUP BY exchange, product
        """,
        params={"start": start},
    ).fetchall()
    products = [
        ProductSummary(ex, prod, coin, int(n), int(trades or 0), first, last, o, c, h, lo, base, quote, vwap, buys)
        for ex, prod, coin, n, trades, first, last, o, c, h, lo, base, quote, vwap, buys in rows
    ]
    order = {c: i for i, c in enumerate(coin_order or [])}
    products.sort(key=lambda p: (order.get(p.coin_id, len(order)), p.coin_id, p.exchange, p.product))
    return TradeData(end, start, hours, bars, products)
