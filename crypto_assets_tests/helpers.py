"""Small helpers shared by the tests: produce contract ticks, read topics."""

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


def _partitions(consumer, topic: str, deadline: float) -> list[int]:
    """The topic's partitions; metadata can come back empty for a moment (e.g. while a producer
    is connecting), so ask again until the deadline."""
    while True:
        md = consumer.list_topics(topic=topic, timeout=10).topics.get(topic)
        if md is not None and md.partitions and md.error is None:
            return sorted(md.partitions)
        assert time.monotonic() < deadline, f"no partitions for topic {topic}: {md and md.error}"
        time.sleep(0.1)


def topic_size(kafka: KafkaResource, topic: str | None = None, deadline_s: float = 60.0) -> int:
    """How many messages `topic` holds (the sum of its high watermarks)."""
    from confluent_kafka import Consumer, TopicPartition

    topic = topic or kafka.raw_topic
    consumer = Consumer(kafka.consumer_config(**{"group.id": f"{kafka.consumer_group}.reader"}))
    try:
        parts = _partitions(consumer, topic, time.monotonic() + deadline_s)
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in parts)
    finally:
        consumer.close()


def read_topic(kafka: KafkaResource, topic: str | None = None, deadline_s: float = 60.0) -> list:
    """Every message of `topic` (default: the raw topic): all partitions from offset 0 up to the
    high watermarks read when called (call it after the producers flushed). Reads until exactly
    those (partition, offset) pairs arrived, however slow the broker is, up to a generous
    deadline, and fails naming the missing ones, or on an offset read twice. Messages come back
    ordered by (partition, offset)."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    topic = topic or kafka.raw_topic
    consumer = Consumer(
        kafka.consumer_config(**{"group.id": f"{kafka.consumer_group}.reader", "enable.auto.commit": False})
    )
    try:
        deadline = time.monotonic() + deadline_s
        partitions = _partitions(consumer, topic, deadline)
        want = set()
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            assert low == 0, f"{topic}[{p}] starts at offset {low}: messages were dropped by retention"
            want |= {(p, o) for o in range(high)}
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        got: dict[tuple[int, int], object] = {}
        while len(got) < len(want) and time.monotonic() < deadline:
            for msg in consumer.consume(1000, timeout=1.0):
                if (err := msg.error()) is not None:
                    assert err.code() == KafkaError._PARTITION_EOF, err
                    continue
                key = (msg.partition(), msg.offset())
                assert key not in got, f"offset {key} read twice"
                got[key] = msg
        assert set(got) == want, (
            f"{topic}: missing {sorted(want - set(got))[:10]} of {len(want)}, unexpected {sorted(set(got) - want)[:10]}"
        )
        return [got[k] for k in sorted(got)]
    finally:
        consumer.close()
