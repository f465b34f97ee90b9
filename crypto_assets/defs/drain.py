"""Between two passes of a draining run: wait until Kafka has something new to pull.

One consumer for the whole run reads the high watermarks of the partitions the last pulls read
(ticks and trades; no fetch, no group): a probe costs one round trip per partition, so a
draining run that finds nothing new for a while sleeps instead of opening DuckDB and the
consumer every pass.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from crypto_assets.ingest.results import PullResult
from crypto_assets.resources import KafkaResource


class BacklogProbe:
    def __init__(self, kafka: KafkaResource, poll_s: float = 0.1) -> None:
        from confluent_kafka import Consumer

        self.poll_s = poll_s
        self.consumer = Consumer(kafka.consumer_config(**{"socket.timeout.ms": 2000}))

    def has_messages(self, pulls: Sequence[PullResult]) -> bool:
        """Whether a partition of a pull's topic has messages past where that pull stopped."""
        from confluent_kafka import TopicPartition

        for pull in pulls:
            for p in pull.plans:
                _lo, hi = self.consumer.get_watermark_offsets(TopicPartition(pull.topic, p.partition), timeout=2.0,
                                                              cached=False)
                if hi > p.next_offset:
                    return True
        return False

    def wait_for_messages(self, pulls: Sequence[PullResult], not_before: float, deadline: float) -> bool:
        """Sleep until `not_before` (monotonic), then until a partition has messages past where the
        last pull stopped. False when `deadline` comes first (the run ends)."""
        while True:
            now = time.monotonic()
            if now >= deadline:
                return False
            if now < not_before:
                time.sleep(min(not_before, deadline) - now)
                continue
            if self.has_messages(pulls):
                return True
            time.sleep(self.poll_s)

    def close(self) -> None:
        self.consumer.close()
