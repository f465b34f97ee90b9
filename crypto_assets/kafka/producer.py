"""The one way sources write to Kafka: an idempotent producer with delivery accounting."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Producer

from crypto_assets.kafka.errors import BrokerUnavailable
from crypto_assets.resources.kafka import KafkaResource


@dataclass
class DeliveryStats:
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


class TickProducer:
    """Wraps confluent-kafka's idempotent producer (acks=all) for contract ticks.

    `send` encodes a tick dict (key = coin_id); `send_raw` writes arbitrary bytes, which the
    simulator uses to inject malformed messages. `flush` raises if any delivery failed, so a
    source never reports success for messages the broker did not take. `on_delivery(err, msg)`,
    when given, is called after the accounting for every delivery report (a benchmark times acks
    with it); `poll` serves delivery reports while the caller waits.
    """

    def __init__(self, kafka: KafkaResource, topic: str | None = None,
                 on_delivery: Callable[[Any, Any], None] | None = None, **overrides: Any) -> None:
        self.topic = topic or kafka.raw_topic
        self.bootstrap = kafka.bootstrap()
        self._producer = Producer(kafka.producer_config(**overrides))
        self._delivery_hook = on_delivery
        self.stats = DeliveryStats()

    def _on_delivery(self, err, msg) -> None:
        if err is None:
            self.stats.delivered += 1
        else:
            self.stats.failed += 1
            if len(self.stats.errors) < 20:
                self.stats.errors.append(str(err))
        if self._delivery_hook is not None:
            self._delivery_hook(err, msg)

    def poll(self, timeout_s: float = 0.0) -> int:
        """Serve delivery reports for up to timeout_s; returns how many were served."""
        return self._producer.poll(timeout_s)

    def send_raw(self, key: bytes | str | None, value: bytes, headers: list | None = None) -> None:
        while True:
            try:
                self._producer.produce(
                    self.topic, key=key, value=value, headers=headers, on_delivery=self._on_delivery
                )
                break
            except BufferError:
                # Local queue full: serve delivery reports until there is room.
                self._producer.poll(0.05)
        self.stats.sent += 1
        self._producer.poll(0)

    def send(self, tick: dict) -> None:
        self.send_raw(tick["coin_id"], orjson.dumps(tick))

    def flush(self, timeout_s: float = 30.0) -> DeliveryStats:
        deadline = time.monotonic() + timeout_s
        remaining = self._producer.flush(timeout_s)
        while remaining and time.monotonic() < deadline:
            remaining = self._producer.flush(1.0)
        if remaining:
            raise BrokerUnavailable(
                f"{remaining} message(s) still undelivered to Kafka at {self.bootstrap} after "
                f"{timeout_s:.0f}s: is the broker running?"
            )
        if self.stats.failed:
            raise BrokerUnavailable(
                f"{self.stats.failed} message(s) failed delivery to {self.bootstrap}: "
                + "; ".join(self.stats.errors[:3])
            )
        return self.stats

    def __enter__(self) -> TickProducer:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is None:
            self.flush()
        else:
            self._producer.flush(5.0)
