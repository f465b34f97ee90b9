"""Exactly-once under crashes: kill -9 the pull at each dangerous point, re-run, and check by
identity that every message on the topic is in DuckDB exactly once (as a row with its values, or
as a quarantine entry with its bytes), that the Parquet mirror holds exactly the rows of
raw_ticks, and that every quarantined message is on the DLQ topic exactly once."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime

import pytest

from crypto_assets.faults import ENV_VAR
from crypto_assets.ingest.config import BRONZE_DATASET
from crypto_assets_tests.helpers import encoded, produce, tick, ticks
from crypto_assets_tests.lake_helpers import assert_mirror_equals_table
from crypto_assets_tests.topic_helpers import read_topic, watermarks

pytestmark = pytest.mark.slow

COINS = ("bitcoin", "ethereum", "solana", "cardano", "litecoin")
# Bad messages of both kinds: parse rejects (quarantined from the staged batch) and semantic
# rejects (judged row by row), each with the one reason it must get.
BAD = {
    b"{broken json": "invalid_json",
    b"[1, 2]": "not_object",
    b"": "empty_message",
    b"\xff\xfe not utf-8": "not_utf8",
    encoded(tick(9001, "bitcoin") | {"coin_id": "notacoin"}): "unknown_coin",
    encoded(tick(9002, "litecoin", price=-5.0)): "invalid_price",
}


def _messages() -> list:
    messages: list = list(ticks(1500, coins=COINS))
    for k, (value, _reason) in enumerate(BAD.items()):
        messages.insert(100 + 250 * k, (COINS[k % len(COINS)].encode(), value))
    return messages


def _child_args(kafka, home, batch_size, *extra):
    return [sys.executable, "-m", "crypto_assets_tests.pull_child", json.dumps(kafka.model_dump(exclude_none=True)),
            str(home), str(batch_size), *extra]


def _env(fault=None):
    env = dict(os.environ)
    env.pop(ENV_VAR, None)
    if fault:
        env[ENV_VAR] = fault
    return env


def _run_child(kafka, home, batch_size, fault=None):
    proc = subprocess.run(_child_args(kafka, home, batch_size), env=_env(fault), capture_output=True, timeout=120)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


def _state(lakehouse, kafka):
    """What DuckDB holds after a run (or a kill): batches, quarantine outbox markers, pending exports."""
    with lakehouse.connect() as conn:
        batches = conn.sql("SELECT batch_id, messages FROM ingest_batches ORDER BY 1").fetchall()
        marks = conn.sql(
            "SELECT kafka_partition, kafka_offset, dlq_published_at IS NOT NULL FROM quarantine "
            "WHERE stage = 'raw_ticks' AND kafka_topic = ? ORDER BY 1, 2",
            params=[kafka.raw_topic],
        ).fetchall()
        pending = conn.sql("SELECT count(*) FROM lake_pending").fetchall()[0][0]
    return batches, marks, pending


def _dlq_sources(kafka) -> Counter:
    """(source partition, source offset) of every message on the DLQ topic, with multiplicity."""
    return Counter((r.int_header("source.partition"), r.int_header("source.offset"))
                   for r in read_topic(kafka.bootstrap(), kafka.dlq_topic))


def _assert_exactly_once(kafka, lakehouse):
    produced = {(r.partition, r.offset): r for r in read_topic(kafka.bootstrap(), kafka.raw_topic)}
    with lakehouse.connect() as conn:
        rows = conn.sql(
            "SELECT kafka_partition, kafka_offset, coin_id, last_updated_at, price_usd, volume_24h_usd "
            "FROM raw_ticks WHERE kafka_topic = ?",
            params=[kafka.raw_topic],
        ).fetchall()
        quarantined = conn.sql(
            "SELECT kafka_partition, kafka_offset, reason, message_key, raw_value, batch_id, dlq_published_at "
            "FROM quarantine WHERE stage = 'raw_ticks' AND kafka_topic = ?",
            params=[kafka.raw_topic],
        ).fetchall()
        gaps = conn.sql(
            """
            SELECT kafka_partition, from_offset, lag(next_offset) OVER (PARTITION BY kafka_partition ORDER BY batch_id) AS prev
            FROM ingest_offsets QUALIFY prev IS NOT NULL AND prev <> from_offset
            """
        ).fetchall()
        pending = conn.sql("SELECT * FROM lake_pending").fetchall()
        assert_mirror_equals_table(conn, lakehouse.lake_path, BRONZE_DATASET, "raw_ticks")
    # every offset of the topic exactly once, as a row or as a quarantine entry
    seen = Counter((p, o) for p, o, *_ in rows) + Counter((p, o) for p, o, *_ in quarantined)
    assert seen == Counter(produced.keys()), (
        f"missing {sorted(set(produced) - set(seen))[:5]}, twice {[k for k, n in seen.items() if n > 1][:5]}, "
        f"unknown {sorted(set(seen) - set(produced))[:5]}"
    )
    # ... holding that message: its values, or its bytes and the reason it was rejected
    for p, o, coin, t, price, volume in rows:
        m = produced[(p, o)].json()
        assert (coin, t, price, volume) == (
            m["coin_id"], datetime.fromisoformat(m["last_updated_at"].replace("Z", "+00:00")), m["price_usd"],
            m["volume_24h_usd"],
        ), (p, o)
    assert {(p, o): (reason, key, raw) for p, o, reason, key, raw, *_ in quarantined} == {
        (r.partition, r.offset): (BAD[r.value or b""], r.key, r.value or b"")
        for r in produced.values() if (r.value or b"") in BAD
    }
    assert gaps == [] and pending == []
    # the DLQ outbox: every quarantined message on the DLQ topic exactly once, with its bytes,
    # key, reason and source coordinates, and marked sent
    dlq = read_topic(kafka.bootstrap(), kafka.dlq_topic)
    assert Counter((r.int_header("source.partition"), r.int_header("source.offset")) for r in dlq) == Counter(
        (p, o) for p, o, *_ in quarantined
    )
    by_source = {(p, o): (reason, key, raw, batch) for p, o, reason, key, raw, batch, _ in quarantined}
    for r in dlq:
        src = (r.int_header("source.partition"), r.int_header("source.offset"))
        assert (r.header("reason"), r.key, r.value, r.int_header("batch_id")) == by_source[src]
        assert r.header("source.topic") == kafka.raw_topic
    assert all(published for *_, published in quarantined)


# What DuckDB and the DLQ topic must show right after the kill: proof that it landed where named.
def _check_kill_landed(fault, kafka, lakehouse, n_messages):
    batches, marks, pending = _state(lakehouse, kafka)
    dlq = _dlq_sources(kafka)
    if fault == "before_write":  # before the first transaction: nothing committed, nothing sent
        assert batches == [] and marks == [] and dlq == Counter()
    elif fault == "after_duckdb_commit":  # right after the first commit, before the DLQ and the export
        assert batches == [(1, 500)] and not any(sent for *_, sent in marks) and dlq == Counter() and pending > 0
    else:  # every batch committed
        assert sum(n for _, n in batches) == n_messages and len(marks) == len(BAD)
        unsent = [(p, o) for p, o, sent in marks if not sent]
        if fault == "during_parquet_export":  # the DLQ went out before the export was killed
            assert unsent == [] and dlq == Counter((p, o) for p, o, _ in marks) and pending > 0
        elif fault == "before_dlq_mark":  # all sent, none marked
            assert len(unsent) == len(BAD) and dlq == Counter(unsent)
        elif fault == "dlq_half_sent":  # the first half sent, none marked
            assert len(unsent) == len(BAD) and dlq == Counter(unsent[: len(BAD) // 2])
        else:
            raise AssertionError(fault)


@pytest.mark.parametrize(
    "fault", ["before_write", "after_duckdb_commit", "during_parquet_export", "before_dlq_mark", "dlq_half_sent"]
)
def test_kill_at_fault_point_then_rerun(kafka, lakehouse, home, fault):
    messages = _messages()
    assert produce(kafka, messages) == len(messages)
    code, out, err = _run_child(kafka, home, batch_size=500, fault=fault)
    assert code == -signal.SIGKILL, (code, out, err)
    _check_kill_landed(fault, kafka, lakehouse, len(messages))
    code, out, err = _run_child(kafka, home, batch_size=500)
    assert code == 0, err
    _assert_exactly_once(kafka, lakehouse)


_BATCH_LINE = re.compile(r"^batch (\d+): (\d+) messages")


def test_kill_at_random_moments(kafka, lakehouse, home):
    """Four kills, each one a seeded delay after the child reported a committed batch (the line the
    pull logs right after COMMIT), so every kill lands after at least one commit of its run, at a
    different moment of the batch after it. Each child must have died of the SIGKILL (or finished);
    after each kill DuckDB holds every batch the child reported, and more batches than before."""
    rng = random.Random(7)
    messages = ticks(20_000, coins=(*COINS, "uniswap"))
    produce(kafka, messages)
    highs = {p: hi for p, (_lo, hi) in watermarks(kafka.bootstrap(), kafka.raw_topic).items()}
    committed: set[int] = set()
    killed_mid_pull = 0
    for kill in range(4):
        wait_for = 1 + kill % 2  # commits to see in this run before the kill
        delay = 0.0 if kill == 0 else rng.uniform(0.0, 0.15)
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen(_child_args(kafka, home, 2_000, "progress"), env=_env(), stdout=subprocess.PIPE,
                                    stderr=err, text=True)
            reported: dict[int, int] = {}
            assert proc.stdout is not None  # stdout=PIPE
            for line in proc.stdout:
                m = _BATCH_LINE.match(line)
                if m:
                    reported[int(m.group(1))] = int(m.group(2))
                    if len(reported) == wait_for:
                        break
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            proc.stdout.close()
            code = proc.wait(timeout=60)
            err.seek(0)
            assert code in (-signal.SIGKILL, 0), (code, err.read().decode()[-2000:])
        assert len(reported) == wait_for or code == 0  # it committed what we waited for, or finished
        with lakehouse.connect() as conn:
            batches = dict(conn.sql("SELECT batch_id, messages FROM ingest_batches").fetchall())
            positions = dict(conn.sql("SELECT kafka_partition, next_offset FROM ingest_positions").fetchall())
        # every batch the child said it committed survived the kill, with its size, and the kill
        # came after new commits (the committed set grew)
        assert reported.items() <= batches.items(), (reported, batches)
        assert committed < set(batches), (committed, batches)
        committed = set(batches)
        if code == -signal.SIGKILL and any(positions.get(p, 0) < hi for p, hi in highs.items()):
            killed_mid_pull += 1  # died after a commit with messages still to read
    assert killed_mid_pull >= 1
    code, out, err = _run_child(kafka, home, batch_size=2_000)
    assert code == 0, err
    _assert_exactly_once(kafka, lakehouse)
