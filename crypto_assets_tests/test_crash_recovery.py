"""Exactly-once under crashes: kill -9 the pull at each dangerous point, re-run, and check that
every produced message is in DuckDB exactly once (as a row or a quarantine entry)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from crypto_assets.faults import ENV_VAR
from crypto_assets_tests.helpers import produce, ticks

pytestmark = pytest.mark.slow


def _run_child(kafka, home, batch_size, fault=None, kill_after=None):
    env = dict(os.environ)
    env.pop(ENV_VAR, None)
    if fault:
        env[ENV_VAR] = fault
    args = [sys.executable, "-m", "crypto_assets_tests.pull_child", json.dumps(kafka.model_dump(exclude_none=True)),
            str(home), str(batch_size)]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out.decode(), err.decode()


def _assert_exactly_once(kafka, lakehouse, produced: int):
    with lakehouse.connect() as conn:
        seen = conn.sql(
            """
            SELECT kafka_partition, kafka_offset FROM raw_ticks WHERE kafka_topic = $t
            UNION ALL
            SELECT kafka_partition, kafka_offset FROM quarantine WHERE stage = 'raw_ticks' AND kafka_topic = $t
            """,
            params={"t": kafka.raw_topic},
        ).fetchall()
        gaps = conn.sql(
            """
            SELECT kafka_partition, from_offset, lag(next_offset) OVER (PARTITION BY kafka_partition ORDER BY batch_id) AS prev
            FROM ingest_offsets QUALIFY prev IS NOT NULL AND prev <> from_offset
            """
        ).fetchall()
        parquet_rows = conn.sql(
            f"SELECT count(*) FROM read_parquet('{lakehouse.lake_path}/bronze/raw_ticks/**/*.parquet')"
        ).fetchall()[0][0]
        dirty = conn.sql("SELECT count(*) FROM lake_pending").fetchall()[0][0]
        rows = conn.sql("SELECT count(*) FROM raw_ticks").fetchall()[0][0]
    assert len(seen) == produced, f"{len(seen)} ingested != {produced} produced"
    assert len(set(seen)) == produced, "duplicate offsets ingested"
    assert gaps == []
    assert dirty == 0 and parquet_rows == rows


@pytest.mark.parametrize("fault", ["before_write", "after_duckdb_commit", "during_parquet_export", "before_dlq_mark"])
def test_kill_at_fault_point_then_rerun(kafka, lakehouse, home, fault):
    messages = ticks(1500, coins=("bitcoin", "ethereum", "solana", "cardano", "litecoin"))
    messages.insert(700, (b"bitcoin", b"{broken json"))  # so the DLQ path runs too
    produce(kafka, messages)
    code, out, err = _run_child(kafka, home, batch_size=500, fault=fault)
    assert code == -signal.SIGKILL, (code, out, err)
    code, out, err = _run_child(kafka, home, batch_size=500)
    assert code == 0, err
    _assert_exactly_once(kafka, lakehouse, len(messages))


def test_kill_at_random_moments(kafka, lakehouse, home):
    rng = random.Random(7)
    messages = ticks(20_000, coins=("bitcoin", "ethereum", "solana", "cardano", "litecoin", "uniswap"))
    produce(kafka, messages)
    for _ in range(4):
        _run_child(kafka, home, batch_size=2_000, kill_after=rng.uniform(1.0, 2.5))
    code, out, err = _run_child(kafka, home, batch_size=2_000)
    assert code == 0, err
    _assert_exactly_once(kafka, lakehouse, len(messages))
