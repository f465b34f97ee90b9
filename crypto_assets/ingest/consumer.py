"""The pull's Kafka consumer: one per pull, assign() only (no consumer-group rebalance), and
every broker failure turned into BrokerUnavailable with the address and what to do."""

from __future__ import annotations

from confluent_kafka import Consumer, KafkaException, TopicPartition

from crypto_assets.kafka.errors import BrokerUnavailable, unreachable
from crypto_assets.resources.kafka import KafkaResource


def broker_error(bootstrap: str, exc: BaseException) -> BrokerUnavailable:
    """The pull's BrokerUnavailable: the address, the cause, that nothing advanced, the fix."""
    return BrokerUnavailable(
        f"{unreachable(bootstrap, exc)}. Nothing was read and no offsets were advanced. Start the "
        "broker (`crypto-assets broker --background` for the embedded one) or fix "
        "KAFKA_BOOTSTRAP_SERVERS, then re-run."
    )


class RawConsumer:
    """Owns the confluent-kafka consumer for one pull; converts broker failures to BrokerUnavailable."""

    def __init__(self, kafka: KafkaResource) -> None:
        self.kafka = kafka
        self.bootstrap = kafka.bootstrap()
        self.consumer = Consumer(kafka.consumer_config(**{"auto.offset.reset": "error"}))

    def metadata(self, topic: str) -> tuple[str | None, list[int]]:
        """(cluster id, partitions of `topic`; none when the topic does not exist yet)."""
        try:
            md = self.consumer.list_topics(topic=topic, timeout=self.kafka.timeout_s)
        except KafkaException as exc:
            raise broker_error(self.bootstrap, exc) from exc
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None and not tmd.partitions:
            return md.cluster_id, []
        return md.cluster_id, sorted(tmd.partitions)

    def watermarks(self, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
        """partition -> (low, high) watermark, asked of the broker (not cached)."""
        out = {}
        for p in partitions:
            try:
                out[p] = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=self.kafka.timeout_s, cached=False
                )
            except KafkaException as exc:
                raise broker_error(self.bootstrap, exc) from exc
            if out[p] is None:
                raise broker_error(self.bootstrap, TimeoutError("watermark query timed out"))
        return out

    def close(self) -> None:
        try:
            self.consumer.close()
        except Exception:  # noqa: BLE001 - closing a consumer of a dead broker may raise
            pass
