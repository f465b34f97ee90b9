"""The embedded Kafka broker: librdkafka's mock cluster, owned by one process, and how other
processes find it.

A client created with `test.mock.num.brokers` starts an in-memory cluster that speaks the real
Kafka protocol on 127.0.0.1; other processes connect to the address it logs. Data lives only as
long as the owning process, and each partition keeps only about 5 MB (older messages are
dropped, like retention on a real broker).

The owning process records its address in `$CRYPTO_HOME/broker.json`; `resolve_bootstrap` is
the one reader of that record (with a check that its process still runs), used by
KafkaResource when no address is configured.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, Producer

from crypto_assets.kafka.errors import BrokerUnavailable
from crypto_assets.kafka.topics import TOPICS
from crypto_assets.ops.processes import pid_alive
from crypto_assets.warehouse.atomic_files import atomic_write

BROKER_FILE = "broker.json"

_ADDR_RE = re.compile(r"replaced with (\S+)")


class _AddressCatcher(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.address: str | None = None
        self.found = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        match = _ADDR_RE.search(record.getMessage())
        if match:
            self.address = match.group(1)
            self.found.set()


class EmbeddedBroker:
    """Start/stop a mock cluster in this process and create the declared topics."""

    def __init__(self, num_brokers: int = 1) -> None:
        self.num_brokers = num_brokers
        self._owner = None
        self.bootstrap_servers: str | None = None
        self.cluster_id: str | None = None

    def start(self, topics: list[str] | None = None, timeout_s: float = 10.0) -> str:
        catcher = _AddressCatcher()
        logger = logging.getLogger(f"crypto_assets.kafka.embedded_broker.{id(self)}")
        logger.propagate = False
        logger.addHandler(catcher)
        logger.setLevel(logging.DEBUG)
        self._owner = Producer({"test.mock.num.brokers": self.num_brokers, "logger": logger})
        deadline = time.monotonic() + timeout_s
        while not catcher.found.is_set() and time.monotonic() < deadline:
            self._owner.poll(0.05)
        if catcher.address is None:
            raise RuntimeError("librdkafka mock cluster did not report its address")
        self.bootstrap_servers = catcher.address
        # Auto-create the topics (4 partitions each on the mock cluster) so watermarks exist.
        probe = Consumer({"bootstrap.servers": self.bootstrap_servers, "group.id": "crypto_assets.setup"})
        try:
            for name in topics if topics is not None else [t.name for t in TOPICS]:
                probe.list_topics(topic=name, timeout=timeout_s)
            self.cluster_id = probe.list_topics(timeout=timeout_s).cluster_id
        finally:
            probe.close()
        return self.bootstrap_servers

    def stop(self) -> None:
        """Destroy the owning client, which tears the cluster (and all its data) down."""
        owner, self._owner = self._owner, None
        if owner is not None:
            del owner
            gc.collect()

    def __enter__(self) -> EmbeddedBroker:
        if self._owner is None:
            self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def write_broker_file(home: Path, broker: EmbeddedBroker) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / BROKER_FILE
    # published whole (readers find the previous broker's file or this one); no fsync: a broker
    # that outlives a machine crash does not exist, the next start writes the file again
    with atomic_write(path, fsync=False) as tmp:
        tmp.write_text(
            json.dumps(
                {
                    "bootstrap_servers": broker.bootstrap_servers,
                    "cluster_id": broker.cluster_id,
                    "pid": os.getpid(),
                    "host": os.uname().nodename,
                    "started_at": datetime.now(UTC).isoformat(),
                    "kind": "librdkafka-mock",
                },
                indent=2,
            )
        )
    return path


def remove_broker_file(home: Path) -> None:
    """Remove broker.json only if it is ours (another broker may have replaced it)."""
    path = home / BROKER_FILE
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if info.get("pid") == os.getpid():
        path.unlink(missing_ok=True)


def read_broker_file(home: str | Path) -> dict | None:
    """The embedded broker's record in `home` (None when absent or unreadable)."""
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
