"""The embedded broker as its own process, and what the pull does when Kafka is down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from crypto_assets.ingest.pull import pull_raw_ticks
from crypto_assets.kafka.embedded_broker import resolve_bootstrap
from crypto_assets.kafka.errors import BrokerUnavailable
from crypto_assets.resources import KafkaResource, LakehouseResource
from crypto_assets_tests.helpers import produce, ticks

pytestmark = pytest.mark.slow


def _start_broker(home: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "crypto_assets.ops.cli", "broker", "--home", str(home)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        path = home / "broker.json"
        if path.exists():
            info = json.loads(path.read_text())
            if info["pid"] == proc.pid:
                return proc, info["bootstrap_servers"]
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("broker did not start")


def _ids(batch: list[dict]) -> set[tuple[str, datetime]]:
    return {(t["coin_id"], datetime.fromisoformat(t["last_updated_at"].replace("Z", "+00:00"))) for t in batch}


def _raw_ids(lakehouse) -> list[tuple[str, datetime]]:
    with lakehouse.connect() as conn:
        return conn.sql("SELECT coin_id, last_updated_at FROM raw_ticks").fetchall()


def _offsets(lakehouse):
    with lakehouse.connect() as conn:
        return conn.sql("SELECT * FROM ingest_offsets ORDER BY batch_id, kafka_partition").fetchall()


def test_resolution_order(tmp_path, monkeypatch):
    with pytest.raises(BrokerUnavailable, match="crypto-assets broker --background"):
        resolve_bootstrap(None, tmp_path)
    (tmp_path / "broker.json").write_text(json.dumps({"bootstrap_servers": "127.0.0.1:1234"}))
    assert resolve_bootstrap(None, tmp_path) == "127.0.0.1:1234"
    assert resolve_bootstrap("kafka:9092", tmp_path) == "kafka:9092"
    (tmp_path / "broker.json").write_text(
        json.dumps({"bootstrap_servers": "127.0.0.1:1234", "pid": 2**22 + 12345, "host": os.uname().nodename})
    )
    with pytest.raises(BrokerUnavailable, match="not running"):
        resolve_bootstrap(None, tmp_path)


def test_unreachable_broker_fails_with_address(home):
    kafka = KafkaResource(bootstrap_servers="127.0.0.1:1", home=str(home), timeout_s=2)
    lakehouse = LakehouseResource(home=str(home))
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1 is unreachable"):
        pull_raw_ticks(kafka, lakehouse)
    assert _offsets(lakehouse) == []


def test_broker_paused_then_back_catches_up(home):
    proc, address = _start_broker(home)
    try:
        kafka = KafkaResource(home=str(home), timeout_s=3)  # resolves through broker.json
        assert kafka.bootstrap() == address
        lakehouse = LakehouseResource(home=str(home))
        produce(kafka, ticks(300))
        first = pull_raw_ticks(kafka, lakehouse)
        assert first.rows_written == 300 and set(_raw_ids(lakehouse)) == _ids(ticks(300))
        produce(kafka, ticks(200, start=300))
        before = _offsets(lakehouse)
        os.kill(proc.pid, signal.SIGSTOP)  # hung broker: connections time out
        try:
            with pytest.raises(BrokerUnavailable) as info:
                pull_raw_ticks(kafka, lakehouse)
            assert address in str(info.value) and "no offsets" in str(info.value)
            assert _offsets(lakehouse) == before
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        again = pull_raw_ticks(kafka, lakehouse)
        assert again.rows_written == 200
        rows = _raw_ids(lakehouse)
        assert len(rows) == 500 and set(rows) == _ids(ticks(500))  # each tick once
    finally:
        proc.terminate()
        proc.wait(10)


def test_broker_restarted_is_noticed_and_pull_resumes(home):
    proc, address = _start_broker(home)
    kafka = KafkaResource(home=str(home), timeout_s=3)
    lakehouse = LakehouseResource(home=str(home))
    try:
        produce(kafka, ticks(100))
        assert pull_raw_ticks(kafka, lakehouse).rows_written == 100
    finally:
        proc.terminate()
        proc.wait(10)
    assert not (home / "broker.json").exists()  # the broker removes its file on exit
    with pytest.raises(BrokerUnavailable, match="crypto-assets broker"):
        pull_raw_ticks(kafka, lakehouse)
    proc2, address2 = _start_broker(home)  # in-memory: a new, empty log
    try:
        produce(kafka, ticks(40, start=1000))
        r = pull_raw_ticks(kafka, lakehouse)
        assert r.rows_written == 40
        assert any("cluster id changed" in n for n in r.notices)
        rows = _raw_ids(lakehouse)
        assert len(rows) == 140 and set(rows) == _ids(ticks(100)) | _ids(ticks(40, start=1000))
        with lakehouse.connect() as conn:
            resets = conn.sql("SELECT count(*) FROM ingest_offsets WHERE reset_reason IS NOT NULL").fetchall()[0][0]
        assert resets >= 1
        assert pull_raw_ticks(kafka, lakehouse).notices == []  # said once, not every run
    finally:
        proc2.terminate()
        proc2.wait(10)
