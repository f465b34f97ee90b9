"""A pull killed inside its DuckDB write transaction: the offsets it stored are exactly the
messages it stored (README: offsets and rows commit in ONE transaction per batch), and a re-run
ingests every message exactly once.

The named fault points (crypto_assets.faults) sit before the transaction and after its commit;
this kill lands between the two. The child process SIGKILLs itself on entering the function that
writes a batch's rows (`tick_rows.insert_clean` on the normal path, `tick_rows.write_judged` on the careful one),
which runs after BEGIN: the same kill -9 as a fault point, placed by a profile hook instead of a
line in the package.
"""

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Consumer, TopicPartition

from crypto_assets_tests.helpers import produce, tick

CHILD = r"""
import json, os, signal, sys
from crypto_assets.ingest import config, pull, tick_rows
from crypto_assets.resources import KafkaResource, LakehouseResource

target, kill_on = sys.argv[3], int(sys.argv[4])
code = getattr(tick_rows, target).__code__ if target else None
calls = 0

def hook(frame, event, arg):
    global calls
    if event == "call" and frame.f_code is code:
        calls += 1
        if calls == kill_on:
            os.kill(os.getpid(), signal.SIGKILL)

if code is not None:
    sys.setprofile(hook)
r = pull.pull_raw_ticks(KafkaResource(**json.loads(sys.argv[1])), LakehouseResource(home=sys.argv[2]),
                        config.PullConfig(batch_size=500))
print(json.dumps({"messages": r.messages, "rows": r.rows_written, "quarantined": r.quarantined}))
"""


def _pull(kafka, home, target: str = "", kill_on: int = 0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CRYPTO_ASSETS_FAULT"}
    return subprocess.run([sys.executable, "-c", CHILD, json.dumps(kafka.model_dump(exclude_none=True)), str(home),
                           target, str(kill_on)], env=env, capture_output=True, text=True, timeout=120)


def _log_offsets(kafka) -> set[tuple[int, int]]:
    c = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": "atomicity-probe"})
    try:
        parts = c.list_topics(topic=kafka.raw_topic, timeout=10).topics[kafka.raw_topic].partitions
        out = set()
        for p in parts:
            lo, hi = c.get_watermark_offsets(TopicPartition(kafka.raw_topic, p), timeout=10)
            out |= {(p, o) for o in range(lo, hi)}
        return out
    finally:
        c.close()


def _stored(lakehouse, topic: str) -> tuple[list[tuple[int, int]], set[tuple[int, int]]]:
    """(every stored message's (partition, offset), with repeats; the offsets the positions cover)."""
    with lakehouse.connect(read_only=True) as conn:
        seen = conn.sql(
            "SELECT kafka_partition, kafka_offset FROM raw_ticks WHERE kafka_topic = $t UNION ALL "
            "SELECT kafka_partition, kafka_offset FROM quarantine WHERE stage = 'raw_ticks' AND kafka_topic = $t",
            params={"t": topic},
        ).fetchall()
        positions = conn.sql("SELECT kafka_partition, next_offset FROM ingest_positions WHERE kafka_topic = $t",
                             params={"t": topic}).fetchall()
        batches = conn.sql("SELECT kafka_partition, from_offset, next_offset FROM ingest_offsets "
                           "WHERE kafka_topic = $t", params={"t": topic}).fetchall()
    covered = {(p, o) for p, nxt in positions for o in range(nxt)}
    assert covered == {(p, o) for p, lo, nxt in batches for o in range(lo, nxt)}, "positions != offsets history"
    return seen, covered


@pytest.mark.parametrize("target, kill_on", [("insert_clean", 2), ("write_judged", 1)])
def test_kill_inside_the_write_transaction_then_rerun(kafka, lakehouse, home, target, kill_on):
    base = datetime.now(UTC) - timedelta(hours=1)
    coins = ("bitcoin", "ethereum", "solana", "cardano")
    messages = [tick(i, coins[i % len(coins)], base=base) for i in range(1500)]
    messages[700] = tick(700, "bitcoin", price=-1.0, base=base)  # a semantic reject: the careful path
    assert produce(kafka, messages) == 1500
    log = _log_offsets(kafka)
    assert len(log) == 1500

    killed = _pull(kafka, home, target, kill_on)
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stdout, killed.stderr[-3000:])
    seen, covered = _stored(lakehouse, kafka.raw_topic)
    # what the positions say was ingested is exactly what is stored: no offset without its row
    assert sorted(seen) == sorted(covered)
    assert len(seen) < 1500  # the kill did land before the end ...
    if kill_on > 1:
        assert seen  # ... and after a batch that committed

    rerun = _pull(kafka, home)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    seen, covered = _stored(lakehouse, kafka.raw_topic)
    assert sorted(seen) == sorted(log)  # every message once: no gap, no repeat
    assert covered == log
    with lakehouse.connect(read_only=True) as conn:
        rejected = conn.execute("SELECT kafka_partition, kafka_offset, reason FROM quarantine WHERE kafka_topic = ?",
                                [kafka.raw_topic]).fetchall()
    assert len(rejected) == 1 and rejected[0][2] == "invalid_price", rejected
