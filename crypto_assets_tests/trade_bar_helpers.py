"""Trades written straight into raw_trades (no Kafka), one pull batch at a time, as the bronze
pull would leave them (an ingest_batches row per batch, ids unique per product), and a naive
reference for the bars: plain Python Decimal over the trades, none of the package's SQL."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import polars as pl

from crypto_assets.warehouse.sql import scalar

T0 = datetime(2026, 11, 1, tzinfo=UTC)
PRODUCTS = (("coinbase", "BTC-USD", "bitcoin", 90_000.0), ("coinbase", "ETH-USD", "ethereum", 3_000.0),
            ("binance", "SOLUSDT", "solana", 150.0))
Q8 = Decimal("0.00000001")


@dataclass(frozen=True)
class Trade:
    exchange: str
    product: str
    coin_id: str
    trade_id: int
    price: Decimal
    size: Decimal
    side: str
    trade_time: datetime


def make_trades(n_per_product: int, seed: int = 1, start: datetime = T0, mean_gap_ms: int = 700,
                products=PRODUCTS) -> list[Trade]:
    """A random walk of trades per product: gaps of 0..2*mean ms (so several trades share a
    microsecond now and then), prices with 2-8 decimals, sizes with 8, both sides."""
    rng = np.random.default_rng(seed)
    out = []
    for ex, prod, coin, p0 in products:
        gaps = rng.integers(0, 2 * mean_gap_ms, size=n_per_product)
        gaps[rng.random(n_per_product) < 0.05] = 0  # same millisecond as the previous trade
        times = [start + timedelta(milliseconds=int(g)) for g in np.cumsum(gaps)]
        prices = p0 * np.exp(np.cumsum(rng.normal(0, 3e-4, n_per_product)))
        for i in range(n_per_product):
            price = Decimal(f"{prices[i]:.{int(rng.integers(2, 9))}f}")
            size = Decimal(int(rng.integers(1, 3_000_000_000))) * Q8
            out.append(Trade(ex, prod, coin, 1000 + i, price, size, "buy" if rng.random() < 0.5 else "sell", times[i]))
    return out


def insert_batch(conn, trades: list[Trade]) -> int:
    """One pull batch: the trades into raw_trades (offsets continue per partition) and its
    ingest_batches row, in one transaction. Returns the batch id."""
    batch = int(scalar(conn, "SELECT coalesce(max(batch_id), 0) + 1 FROM ingest_batches"))
    offset = int(scalar(conn, "SELECT coalesce(max(kafka_offset), -1) + 1 FROM raw_trades"))
    now = datetime.now(UTC)
    df = pl.DataFrame({
        "exchange": [t.exchange for t in trades], "product": [t.product for t in trades],
        "coin_id": [t.coin_id for t in trades], "trade_id": [t.trade_id for t in trades],
        "price": [str(t.price) for t in trades], "size": [str(t.size) for t in trades],
        "side": [t.side for t in trades], "trade_time": [t.trade_time for t in trades],
        "kafka_offset": list(range(offset, offset + len(trades))),
    }, schema_overrides={"trade_time": pl.Datetime("us", "UTC")})
    conn.register("tb_in", df.to_arrow())
    conn.execute("BEGIN TRANSACTION")
    conn.execute(
        """INSERT INTO raw_trades
           SELECT exchange, product, split_part(product, '-', 1), 'USD', coin_id, trade_id, price::DECIMAL(18,8),
                  size::DECIMAL(18,8), side, trade_time, trade_time, 'ws', 1, 'crypto_trades', 0, kafka_offset, NULL,
                  $b, $now
           FROM tb_in""", {"b": batch, "now": now})
    conn.execute("INSERT INTO ingest_batches VALUES ($b, NULL, 'crypto_trades', NULL, $n, $n, 0, 0, NULL, NULL, $now, $now)",
                 {"b": batch, "n": len(trades), "now": now})
    conn.execute("COMMIT")
    conn.unregister("tb_in")
    return batch


def reference_bars(trades: list[Trade], seconds: int) -> dict[tuple, dict]:
    """Bars of `seconds` per (exchange, product, bar_start), by the textbook definitions."""
    groups: dict[tuple, list[Trade]] = defaultdict(list)
    for t in trades:
        epoch = int(t.trade_time.timestamp() * 1_000_000) // 1_000_000
        start = datetime.fromtimestamp(epoch // seconds * seconds, UTC)
        groups[(t.exchange, t.product, start)].append(t)
    out = {}
    for key, ts in groups.items():
        ts.sort(key=lambda t: (t.trade_time, t.trade_id))
        base = sum((t.size for t in ts), Decimal(0))
        quote_exact = sum((t.price * t.size for t in ts), Decimal(0))
        quote = quote_exact.quantize(Q8, rounding=ROUND_HALF_UP)
        buy = sum((t.size for t in ts if t.side == "buy"), Decimal(0))
        out[key] = {
            "coin_id": ts[0].coin_id, "open": ts[0].price, "high": max(t.price for t in ts),
            "low": min(t.price for t in ts), "close": ts[-1].price, "base_volume": base, "quote_volume": quote,
            "vwap": float(quote_exact / base), "trade_count": len(ts), "buy_volume": buy, "sell_volume": base - buy,
            "first_trade_id": ts[0].trade_id, "last_trade_id": ts[-1].trade_id, "quote_volume_exact": quote_exact,
        }
    return out


def stored_bars(conn, table: str) -> dict[tuple, dict]:
    cols = ["coin_id", "open", "high", "low", "close", "base_volume", "quote_volume", "vwap", "trade_count",
            "buy_volume", "sell_volume", "first_trade_id", "last_trade_id", "quote_volume_exact"]
    rows = conn.sql(f"SELECT exchange, product, bar_start, {', '.join(cols)} FROM {table}").fetchall()
    return {(r[0], r[1], r[2]): dict(zip(cols, r[3:], strict=True)) for r in rows}
