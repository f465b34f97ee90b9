"""Kafka topics, declared once: the embedded broker set-up, `crypto-assets topics create`
(used by docker-compose's init container) and the assets all read this table."""

from __future__ import annotations

from dataclasses import dataclass, field

RAW_TOPIC = "crypto_raw"
TRADES_TOPIC = "crypto_trades"  # exchange trades (kafka/trade_contract.py), key exchange:product
DLQ_TOPIC = "crypto_raw_dlq"
TRADES_DLQ_TOPIC = "crypto_trades_dlq"  # trades raw_trades quarantined, as they arrived
ALERTS_TOPIC = "crypto_alerts"
PREDICTIONS_TOPIC = "crypto_predictions"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    retention_ms: int
    compression: str = "lz4"
    extra: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        return {
            "retention.ms": str(self.retention_ms),
            "compression.type": self.compression,
            **self.extra,
        }


DAY_MS = 24 * 3600 * 1000

# The embedded (librdkafka mock) broker ignores these and auto-creates 4 partitions per topic;
# the spec therefore asks for 4 on crypto_raw so both stacks behave alike.
TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(RAW_TOPIC, partitions=4, retention_ms=7 * DAY_MS),
    TopicSpec(TRADES_TOPIC, partitions=4, retention_ms=7 * DAY_MS),
    TopicSpec(DLQ_TOPIC, partitions=1, retention_ms=30 * DAY_MS),
    TopicSpec(TRADES_DLQ_TOPIC, partitions=1, retention_ms=30 * DAY_MS),
    TopicSpec(ALERTS_TOPIC, partitions=1, retention_ms=30 * DAY_MS),
    TopicSpec(PREDICTIONS_TOPIC, partitions=1, retention_ms=7 * DAY_MS),
)
