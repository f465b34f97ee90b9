"""Between two passes of a draining run: wait until Kafka has something new to pull.

One consumer for the whole run reads the high watermarks of the partitions the last pulls read
(ticks and trades; no fetch, no group): a probe costs one round trip per partition, so a
draining run that finds nothing new for a while sleeps instead of opening DuckDB and the
consumer every pass, and a pass woken by ticks does not pull the trade topic (nor the other
way round): a topic without new messages costs no pull.
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

    def topics_with_messages(self, pulls: Sequence[PullResult]) -> set[str]:
        """The topics of `pulls` with a partition holding messages past where its pull stopped."""
        from confluent_kafka import TopicPartition

        out: set[str] = set()
        for pull in pulls:
            for p in pull.plans:
                _lo, hi = self.consumer.get_watermark_offsets(TopicPartition(pull.topic, p.partition), timeout=2.0,
                                                              cached=False)
                if hi > p.next_offset:
                    out.add(pull.topic)
                    break
        return out

    def wait_for_messages(self, pulls: Sequence[PullResult], not_before: float, deadline: float) -> set[str]:
        """Sleep until `not_before` (monotonic), then until a partition has messages past where the
        last pull of its topic stopped; return those topics (the next pass pulls only them).
        Empty when `deadline` comes first (the run ends)."""
        while True:
            now = time.monotonic()
            if now >= deadline:
                return set()
            if now < not_before:
                time.sleep(min(not_before, deadline) - now)
                continue
            fresh = self.topics_with_messages(pulls)
            if fresh:
                return fresh
            time.sleep(self.poll_s)

    def close(self) -> None:
        self.consumer.close()
