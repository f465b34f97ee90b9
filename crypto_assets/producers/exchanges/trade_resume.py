"""Where a restarted trade source picks up: the newest trade id per product already on the topic.

A stream that is stopped (or killed) and started again would otherwise begin a fresh tape, and
the trades between its last message and its first new one would be a silent hole. Instead the
source reads the tail of each partition of `crypto_trades` (bounded: `tail` messages each, so a
start costs the same whatever the topic holds), takes the highest trade id per product of its
exchange, and seeds the stream with it: the first trade after the restart then reveals the gap,
which is healed over REST like any other. What a killed run had not yet delivered is not on the
topic, so it is fetched again, not skipped.
"""

from __future__ import annotations

import time
import uuid

import orjson
from confluent_kafka import Consumer, TopicPartition

from crypto_assets.resources.kafka import KafkaResource


def resume_points(kafka: KafkaResource, topic: str, exchange: str, *, tail: int = 5000,
                  give_up_s: float = 30.0) -> dict[str, int]:
    """{product: newest trade_id} of `exchange` among the last `tail` messages of each partition
    (a product quiet for longer than that starts afresh)."""
    c = Consumer(kafka.consumer_config(**{"group.id": f"crypto_assets.resume.{uuid.uuid4().hex[:8]}"}))
    prefix = f"{exchange}:".encode()
    newest: dict[str, int] = {}
    try:
        md = c.list_topics(topic=topic, timeout=kafka.timeout_s).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            return {}
        todo: dict[int, int] = {}
        starts = []
        for p in sorted(md.partitions):
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=kafka.timeout_s, cached=False)
            if hi > lo:
                todo[p] = hi
                starts.append(TopicPartition(topic, p, max(lo, hi - tail)))
        if not todo:
            return {}
        c.assign(starts)
        deadline = time.monotonic() + give_up_s
        while todo and time.monotonic() < deadline:
            for m in c.consume(1000, timeout=0.2):
                if m.error() is not None:
                    continue
                p, o = m.partition(), m.offset()
                key, value = m.key(), m.value()
                if isinstance(key, bytes) and key.startswith(prefix) and value:
                    try:
                        tid = int(orjson.loads(value)["trade_id"])
                    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                        continue  # bronze quarantines it; it says nothing about where we are
                    product = key[len(prefix):].decode()
                    newest[product] = max(tid, newest.get(product, tid))
                if p in todo and o is not None and o + 1 >= todo[p]:
                    todo.pop(p)
        if todo:
            raise TimeoutError(f"{topic}: partitions {sorted(todo)} not read to their end in {give_up_s:.0f}s")
    finally:
        c.close()
    return newest
