"""Small helpers shared by the tests: produce contract ticks, count a topic's messages (read them
with topic_helpers.read_topic)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import orjson

from crypto_assets.kafka.producer import TickProducer
from crypto_assets.kafka.tick_contract import COINS_BY_ID, make_tick
from crypto_assets.resources import KafkaResource
from crypto_assets_tests.topic_helpers import partitions

# Test ticks go through bronze's and silver's wall-clock rules (at most 5 minutes ahead of their
# ingestion, at most 365 days behind it), so they are dated relative to now: midnight UTC three
# to four days ago. A whole day keeps minute/hour buckets aligned as with any fixed midnight,
# and leaves days of room before "now" for the longest tick series a test produces.
BASE_TIME = (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class SensorTick:
    """What a sensor's evaluation returned, Dagster's None (nothing requested, no message) read as empty."""

    run_requests: list[dg.RunRequest]
    skip_message: str
    cursor: str | None


def evaluate_sensor(sensor: dg.SensorDefinition, context: dg.SensorEvaluationContext) -> SensorTick:
    data = sensor.evaluate_tick(context)
    return SensorTick(list(data.run_requests or ()), data.skip_message or "", data.cursor)


def tick(i: int, coin_id: str = "bitcoin", price: float | None = None, base: datetime = BASE_TIME) -> dict[str, Any]:
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


def ticks(n: int, coins: tuple[str, ...] = ("bitcoin", "ethereum", "solana"), start: int = 0) -> list[dict[str, Any]]:
    return [tick(start + i, coins[i % len(coins)]) for i in range(n)]


def encoded(t: dict) -> bytes:
    return orjson.dumps(t)


def topic_size(kafka: KafkaResource, topic: str | None = None, deadline_s: float = 60.0) -> int:
    """How many messages `topic` holds (the sum of its high watermarks)."""
    from confluent_kafka import Consumer, TopicPartition

    topic = topic or kafka.raw_topic
    consumer = Consumer(kafka.consumer_config(**{"group.id": f"{kafka.consumer_group}.reader"}))
    try:
        parts = partitions(consumer, topic, time.monotonic() + deadline_s)
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    finally:
        consumer.close()
