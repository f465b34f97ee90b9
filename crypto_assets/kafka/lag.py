"""The one consumer-lag reader, for the backlog sensor and `crypto-assets status`: short
timeouts, no long poll().

Lag = high watermark − the consumer group's committed offset (mirrored from DuckDB by every
pull). The oldest pending message's age comes from reading ONE message at the committed offset
with a sub-second timeout.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import cast

from confluent_kafka import Consumer, KafkaException, TopicPartition

from crypto_assets.kafka.errors import unreachable
from crypto_assets.resources.kafka import KafkaResource


@dataclass
class Backlog:
    bootstrap: str
    partitions: dict[int, tuple[int, int, int]] = field(default_factory=dict)  # p -> (committed, high, lag)
    oldest_pending_age_s: float | None = None

    @property
    def lag(self) -> int:
        return sum(v[2] for v in self.partitions.values())

    @property
    def highs(self) -> dict[str, int]:
        return {str(p): v[1] for p, v in sorted(self.partitions.items())}

    def describe(self) -> str:
        parts = " ".join(f"p{p}={v[2]}" for p, v in sorted(self.partitions.items()))
        age = f", oldest pending {self.oldest_pending_age_s:.1f}s" if self.oldest_pending_age_s is not None else ""
        return f"lag {self.lag} ({parts}){age}"


def measure_backlog(kafka: KafkaResource, timeout_s: float = 2.0, with_age: bool = True,
                    topic: str | None = None) -> Backlog:
    """Lag per partition of `topic` (default the raw topic; none when the topic does not exist
    yet) and, with `with_age`, the age of the oldest pending message. BrokerUnavailable when
    Kafka is down."""
    topic = topic or kafka.raw_topic
    bootstrap = kafka.bootstrap()
    c = Consumer(
        kafka.consumer_config(
            **{"socket.timeout.ms": int(timeout_s * 1000), "session.timeout.ms": 6000, "fetch.wait.max.ms": 100}
        )
    )
    try:
        try:
            md = c.list_topics(topic=topic, timeout=timeout_s)
        except KafkaException as exc:
            raise unreachable(bootstrap, exc) from exc
        tmd = md.topics.get(topic)
        out = Backlog(bootstrap)
        if tmd is None or not tmd.partitions:
            return out
        parts = sorted(tmd.partitions)
        try:
            committed = c.committed([TopicPartition(topic, p) for p in parts], timeout=timeout_s)
            for tp in committed:
                lo, hi = c.get_watermark_offsets(TopicPartition(topic, tp.partition), timeout=timeout_s)
                pos = tp.offset if tp.offset >= 0 else lo
                pos = max(pos, lo)
                out.partitions[tp.partition] = (pos, hi, max(hi - pos, 0))
        except KafkaException as exc:
            raise unreachable(bootstrap, exc) from exc
        pending = [TopicPartition(topic, p, v[0]) for p, v in out.partitions.items() if v[2] > 0]
        if with_age and pending:
            c.assign(pending)
            deadline = time.monotonic() + min(timeout_s, 1.0)
            oldest_ms = None
            seen: set[int] = set()
            while time.monotonic() < deadline and len(seen) < len(pending):
                for m in c.consume(len(pending), timeout=0.2):
                    if m.error() is None and m.partition() not in seen:
                        seen.add(cast(int, m.partition()))
                        ts = m.timestamp()[1]
                        oldest_ms = ts if oldest_ms is None else min(oldest_ms, ts)
            if oldest_ms is not None:
                out.oldest_pending_age_s = max(time.time() - oldest_ms / 1000.0, 0.0)
        return out
    finally:
        c.close()
