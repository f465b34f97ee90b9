"""Contract trades for the bronze tests, built with trade_contract.make_trade and produced to the
test's `crypto_trades` topic with the project's producer (key exchange:product)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from crypto_assets.kafka.producer import TickProducer
from crypto_assets.kafka.trade_contract import make_trade, trade_key
from crypto_assets.resources import KafkaResource

# Trades are judged against the pull's clock (at most a day ahead): date them an hour ago.
T0 = (datetime.now(UTC) - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
PRODUCTS = (("coinbase", "BTC-USD"), ("coinbase", "ETH-USD"), ("binance", "SOLUSDT"))


def trade(trade_id: int, exchange: str = "coinbase", product: str = "BTC-USD", origin: str = "ws",
          t0: datetime = T0) -> dict[str, Any]:
    """Trade `trade_id` of a product: one a second from t0, a price and size that vary with the id."""
    return make_trade(
        exchange=exchange, product=product, trade_id=trade_id,
        price=Decimal("90000.5") + Decimal(trade_id % 97) / 100, size=Decimal("0.001") * (1 + trade_id % 13),
        side="buy" if trade_id % 3 else "sell", trade_time=t0 + timedelta(seconds=trade_id % 86_000, microseconds=trade_id % 999_983),
        received_at=t0 + timedelta(seconds=trade_id % 86_000, milliseconds=150), origin=origin,
    )


def tape(ids, products=PRODUCTS) -> list[dict[str, Any]]:
    """The trades `ids` of every product, interleaved product by product."""
    return [trade(i, ex, prod) for i in ids for ex, prod in products]


def produce_trades(kafka: KafkaResource, messages: list) -> int:
    """Send trades (dicts, encoded, keyed exchange:product) or (key, bytes) pairs to the trades
    topic; returns how many were delivered."""
    with TickProducer(kafka, topic=kafka.trades_topic) as p:
        for m in messages:
            if isinstance(m, dict):
                p.send_raw(trade_key(m["exchange"], m["product"]), orjson.dumps(m))
            else:
                p.send_raw(m[0], m[1])
    return p.stats.delivered
