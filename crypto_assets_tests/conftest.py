"""Shared fixtures: one embedded Kafka broker per test session (a real protocol over TCP),
unique topics per test so tests never see each other's messages, and a temp CRYPTO_HOME."""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")

from crypto_assets.kafka.embedded_broker import EmbeddedBroker  # noqa: E402
from crypto_assets.resources import KafkaResource, LakehouseResource  # noqa: E402


@pytest.fixture(scope="session")
def broker():
    b = EmbeddedBroker()
    b.start(topics=[])
    yield b
    b.stop()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    h = tmp_path / "var"
    h.mkdir()
    return h


@pytest.fixture
def kafka(broker: EmbeddedBroker, home: Path) -> KafkaResource:
    """A KafkaResource on the session broker with topics private to this test."""
    suffix = uuid.uuid4().hex[:8]
    res = KafkaResource(
        bootstrap_servers=broker.bootstrap_servers,
        home=str(home),
        raw_topic=f"crypto_raw_{suffix}",
        dlq_topic=f"crypto_raw_dlq_{suffix}",
        trades_topic=f"crypto_trades_{suffix}",
        trades_dlq_topic=f"crypto_trades_dlq_{suffix}",
        alerts_topic=f"crypto_alerts_{suffix}",
        predictions_topic=f"crypto_predictions_{suffix}",
        consumer_group=f"crypto_assets.test.{suffix}",
        timeout_s=5.0,
    )
    from confluent_kafka import Consumer

    probe = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "probe"})
    for t in (res.raw_topic, res.dlq_topic, res.trades_topic, res.trades_dlq_topic, res.alerts_topic,
              res.predictions_topic):
        probe.list_topics(topic=t, timeout=5)
    probe.close()
    return res


@pytest.fixture
def lakehouse(home: Path) -> LakehouseResource:
    return LakehouseResource(home=str(home))


@pytest.fixture(scope="session")
def spark():
    """One local[2] Spark session for the whole test session (the JVM is slow to start);
    the LazyPySparkResource used by the assets picks this session up via getOrCreate."""
    from crypto_assets.settings import spark_config

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # Python UDF workers: this venv, not the PATH's python3
    from pyspark.sql import SparkSession

    builder = SparkSession.builder
    for k, v in spark_config({}).items():
        builder = builder.config(k, v)
    session = builder.getOrCreate()
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
