"""Kafka connection settings and client factories.

The bootstrap address is resolved at use time (not when the code location loads) because the
embedded broker may be started after Dagster: explicit setting / `KAFKA_BOOTSTRAP_SERVERS`,
else `$CRYPTO_HOME/broker.json` written by `crypto-assets broker`, else a clear error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from crypto_assets.ops.processes import pid_alive
from crypto_assets.kafka.topics import ALERTS_TOPIC, DLQ_TOPIC, PREDICTIONS_TOPIC, RAW_TOPIC

BROKER_FILE = "broker.json"


class BrokerUnavailable(RuntimeError):
    """Kafka cannot be reached (or no broker is configured); nothing was advanced."""


def read_broker_file(home: str | Path) -> dict | None:
    path = Path(home) / BROKER_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def resolve_bootstrap(explicit: str | None, home: str | Path) -> str:
    """Bootstrap servers: explicit/env value, else the embedded broker's file, else an error."""
    if explicit:
        return explicit
    info = read_broker_file(home)
    path = Path(home) / BROKER_FILE
    if info is None:
        raise BrokerUnavailable(
            "No Kafka broker configured: KAFKA_BOOTSTRAP_SERVERS is not set and "
            f"{path} does not exist. Start the embedded broker with "
            "`crypto-assets broker --background` (or point KAFKA_BOOTSTRAP_SERVERS at a cluster)."
        )
    pid = info.get("pid")
    if pid and info.get("host") == os.uname().nodename and not pid_alive(int(pid)):
        raise BrokerUnavailable(
            f"{path} names the embedded broker at {info.get('bootstrap_servers')} but its process "
            f"(pid {pid}) is not running. Start it again with `crypto-assets broker --background`."
        )
    return str(info["bootstrap_servers"])


class KafkaResource(dg.ConfigurableResource):
    """Where Kafka is and how to talk to it; hands out confluent-kafka clients."""

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
    dlq_topic: str = DLQ_TOPIC
    alerts_topic: str = ALERTS_TOPIC
    predictions_topic: str = PREDICTIONS_TOPIC
    consumer_group: str = "crypto_assets.raw_ticks"
    timeout_s: float = Field(default=10.0, description="metadata/watermark/commit timeout")

    def bootstrap(self) -> str:
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

    def producer(self, **overrides: Any):
        from confluent_kafka import Producer

        return Producer(self.producer_config(**overrides))

    def consumer(self, **overrides: Any):
        from confluent_kafka import Consumer

        return Consumer(self.consumer_config(**overrides))
