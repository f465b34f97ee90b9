"""Small helpers shared by the tests: produce contract ticks, read tables."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import orjson

from crypto_assets.contract import COINS_BY_ID, make_tick
from crypto_assets.resources import KafkaResource
from crypto_assets.sources.producer import TickProducer

BASE_TIME = datetime(2026, 11, 1, tzinfo=timezone.utc)


def tick(i: int, coin_id: str = "bitcoin", price: float | None = None, base: datetime = BASE_TIME) -> dict:
    coin = COINS_BY_ID[coin_id]
    return make_tick(
        source="test",
        coin_id=coin_id,
        symbol=coin.symbol,
        price_usd=price if price is not None else coin.ref_price * (1 + 0.001 * (i % 7)),
        market_cap_usd=1e9,
        volume_24h_usd=1e8 + i,
        change_24h_pct=0.5,
        change_7d_pct=-1.0,
        last_updated_at=base + timedelta(seconds=i),
        ingestion_timestamp=base + timedelta(seconds=i, milliseconds=200),
    )


def produce(kafka: KafkaResource, messages: list) -> int:
    """Send dict ticks (encoded) or (key, bytes) pairs; returns how many were delivered."""
    with TickProducer(kafka) as p:
        for m in messages:
            if isinstance(m, dict):
                p.send(m)
            else:
                p.send_raw(m[0], m[1])
    return p.stats.delivered


def ticks(n: int, coins: tuple[str, ...] = ("bitcoin", "ethereum", "solana"), start: int = 0) -> list[dict]:
    return [tick(start + i, coins[i % len(coins)]) for i in range(n)]


def encoded(t: dict) -> bytes:
    return orjson.dumps(t)
