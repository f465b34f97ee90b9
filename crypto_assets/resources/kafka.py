"""Kafka connection settings and client configuration, as a Dagster resource.

The address comes from configuration (crypto_assets.settings: `KAFKA_BOOTSTRAP_SERVERS`). When
none is configured the resource asks, at use time rather than when the code location loads
(the embedded broker may be started after Dagster), for the embedded broker's recorded address
(crypto_assets.kafka.embedded_broker.resolve_bootstrap), which fails with a clear error when
there is none.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field

from crypto_assets.kafka.embedded_broker import resolve_bootstrap
from crypto_assets.kafka.topics import (
    ALERTS_TOPIC,
    DLQ_TOPIC,
    PREDICTIONS_TOPIC,
    RAW_TOPIC,
    TRADES_DLQ_TOPIC,
    TRADES_TOPIC,
)


class KafkaResource(dg.ConfigurableResource):
    """Where Kafka is and how to talk to it: the confluent-kafka configuration of every client."""

    bootstrap_servers: str | None = Field(
        default=None,
        description="host:port list; empty means the embedded broker recorded in broker.json",
    )
    home: str = Field(default="var", description="CRYPTO_HOME, where broker.json lives")
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_ca_location: str | None = None
    raw_topic: str = RAW_TOPIC
    trades_topic: str = TRADES_TOPIC
    dlq_topic: str = DLQ_TOPIC
    trades_dlq_topic: str = TRADES_DLQ_TOPIC
    alerts_topic: str = ALERTS_TOPIC
    predictions_topic: str = PREDICTIONS_TOPIC
    consumer_group: str = "crypto_assets.raw_ticks"
    timeout_s: float = Field(default=10.0, description="metadata/watermark/commit timeout")

    def bootstrap(self) -> str:
        """The configured address, else the running embedded broker's (BrokerUnavailable if none)."""
        return resolve_bootstrap(self.bootstrap_servers, self.home)

    def _common(self) -> dict[str, Any]:
        conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap()}
        for key, value in (
            ("security.protocol", self.security_protocol),
            ("sasl.mechanism", self.sasl_mechanism),
            ("sasl.username", self.sasl_username),
            ("sasl.password", self.sasl_password),
            ("ssl.ca.location", self.ssl_ca_location),
        ):
            if value:
                conf[key] = value
        return conf

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        """Idempotent producer: acks=all, no duplicates on retry, ordered per partition."""
        conf = {
            **self._common(),
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 20,
            "compression.type": "lz4",
            "message.timeout.ms": int(self.timeout_s * 3000),
        }
        conf.update(overrides)
        return conf

    def consumer_config(self, **overrides: Any) -> dict[str, Any]:
        """Consumer used with assign(): offsets come from DuckDB, the group is only for lag."""
        conf = {
            **self._common(),
            "group.id": self.consumer_group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": False,
            "fetch.max.bytes": 64 * 1024 * 1024,
            "max.partition.fetch.bytes": 16 * 1024 * 1024,
            "queued.max.messages.kbytes": 256 * 1024,
            # When the prefetch queue is full librdkafka postpones the next fetch by this much
            # (default 1 s). A pull drains the queue in well under a second, so the default left
            # it idle, waiting for data, for up to a second per batch.
            "fetch.queue.backoff.ms": 10,
            "socket.timeout.ms": int(self.timeout_s * 1000),
        }
        conf.update(overrides)
        return conf
