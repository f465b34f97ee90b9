"""Exactly-once trades under crashes: kill -9 the trade pull at each fault point of the pull
(crypto_assets.faults) and inside a batch's transaction (after its rows, before its trade-id runs
and gaps), re-run, and compare by identity with the topic: every valid trade exactly once, held
by the first message that carried it, every bad message quarantined once and on
`crypto_trades_dlq` once, the trade-id runs exactly the stored ids, every gap's `missing` exactly
the ids it still lacks, the Parquet mirror exactly the table."""

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

import pytest

from crypto_assets.faults import ENV_VAR
from crypto_assets.kafka.trade_contract import trade_key
from crypto_assets_tests.lake_helpers import assert_mirror_equals_table
from crypto_assets_tests.test_trades_pull import BAD
from crypto_assets_tests.topic_helpers import read_topic
from crypto_assets_tests.trade_helpers import PRODUCTS, produce_trades, trade

pytestmark = pytest.mark.slow

BATCH = 500
HEALED = range(201, 211)  # BTC-USD: missing from the stream, fetched by a "REST heal" at the end
LOST = range(401, 404)  # ETH-USD: never arrive, the gap stays open
BAD_SET = BAD[:8]  # parse and semantic rejects, spread over the batches

CHILD = r"""
import json, os, signal, sys
from crypto_assets.ingest import config, pull, trade_ranges
from crypto_assets.resources import KafkaResource, LakehouseResource

kill_in, kill_on = sys.argv[4], int(sys.argv[5])
if kill_in:
    code, calls = getattr(trade_ranges, kill_in).__code__, [0]

    def hook(frame, event, arg):
        if event == "call" and frame.f_code is code:
            calls[0] += 1
            if calls[0] == kill_on:
                os.kill(os.getpid(), signal.SIGKILL)

    sys.setprofile(hook)
logger = None
if len(sys.argv) > 6 and sys.argv[6] == "progress":  # `batch <id>: ...` on stdout right after each commit
    import logging
    logger = logging.getLogger("trades_child")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
r = pull.pull_raw_trades(KafkaResource(**json.loads(sys.argv[1])), LakehouseResource(home=sys.argv[2]),
                         config.PullConfig(batch_size=int(sys.argv[3])), logger=logger)
print(json.dumps({"messages": r.messages, "rows": r.rows_written, "quarantined": r.quarantined}))
"""


def _messages() -> list:
    """~1,850 trades of three products, shuffled in small windows (out of order), with a jump healed
    by REST copies at the end (which overlap 20 stored trades), a gap that stays open, in-batch
    repeats, and bad messages spread through the topic."""
    rng = random.Random(13)
    out: list = []
    for ex, prod in PRODUCTS:
        ids = [i for i in range(1, 601) if not (prod == "BTC-USD" and i in HEALED) and not (prod == "ETH-USD" and i in LOST)]
        windows = [ids[k:k + 7] for k in range(0, len(ids), 7)]
        for w in windows:
            rng.shuffle(w)
        out += [trade(i, ex, prod) for w in windows for i in w]
    rng.shuffle(out)  # products interleave (each keeps its own order per partition only by arrival)
    out += [trade(i, origin="rest") for i in range(191, 221)]  # the heal, overlapping 20 stored trades
    out += [trade(i, "binance", "SOLUSDT") for i in (5, 300, 599)]  # repeats
    for k, (value, _reason) in enumerate(BAD_SET):
        out.insert(150 + 220 * k, (trade_key("coinbase", "BTC-USD").encode(), value))
    return out


def _run(kafka, home, fault: str | None = None, kill_in: str = "", kill_on: int = 0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR} | ({ENV_VAR: fault} if fault else {})
    return subprocess.run([sys.executable, "-c", CHILD, json.dumps(kafka.model_dump(exclude_none=True)), str(home),
                           str(BATCH), kill_in, str(kill_on)], env=env, capture_output=True, text=True, timeout=180)


def _state(lakehouse):
    with lakehouse.connect() as conn:
        batches = conn.sql("SELECT batch_id, messages FROM ingest_batches ORDER BY 1").fetchall()
        marks = conn.sql("SELECT kafka_partition, kafka_offset, dlq_published_at IS NOT NULL FROM quarantine "
                         "ORDER BY 1, 2").fetchall()
        rows = conn.sql("SELECT count(*) FROM raw_trades").fetchall()[0][0]
        runs = conn.sql("SELECT count(*) FROM trade_id_ranges").fetchall()[0][0]
        pending = conn.sql("SELECT count(*) FROM lake_pending").fetchall()[0][0]
    return batches, marks, rows, runs, pending


def _dlq(kafka) -> Counter:
    return Counter((r.int_header("source.partition"), r.int_header("source.offset"))
                   for r in read_topic(kafka.bootstrap(), kafka.trades_dlq_topic))


def _check_kill_landed(where: str, kafka, lakehouse, n: int) -> None:
    """Proof that the kill happened where it was aimed."""
    batches, marks, rows, runs, pending = _state(lakehouse)
    if where in ("before_write", "record_ranges:1"):  # nothing committed, nothing sent
        assert (batches, marks, rows, runs, _dlq(kafka)) == ([], [], 0, 0, Counter())
    elif where in ("after_duckdb_commit", "record_ranges:2"):  # exactly the first batch
        assert batches == [(1, BATCH)] and runs > 0 and pending > 0 and _dlq(kafka) == Counter()
    else:
        assert sum(m for _, m in batches) == n and len(marks) == len(BAD_SET)
        unsent = [(p, o) for p, o, sent in marks if not sent]
        if where == "during_parquet_export":
            assert unsent == [] and _dlq(kafka) == Counter((p, o) for p, o, _ in marks) and pending > 0
        elif where == "before_dlq_mark":
            assert len(unsent) == len(BAD_SET) and _dlq(kafka) == Counter(unsent)
        elif where == "dlq_half_sent":
            assert len(unsent) == len(BAD_SET) and _dlq(kafka) == Counter(unsent[: len(BAD_SET) // 2])
        else:
            raise AssertionError(where)


def _assert_exactly_once(kafka, lakehouse) -> None:
    topic = read_topic(kafka.bootstrap(), kafka.trades_topic)
    bad = dict(BAD_SET)
    first: dict[tuple, tuple[int, int]] = {}  # each trade's first message (a product lives in one partition)
    for r in topic:
        if (r.value or b"") not in bad:
            m = r.json()
            first.setdefault((m["exchange"], m["product"], m["trade_id"]), (r.partition, r.offset))
    with lakehouse.connect() as conn:
        rows = conn.sql("SELECT exchange, product, trade_id, kafka_partition, kafka_offset FROM raw_trades").fetchall()
        quarantined = conn.sql("SELECT kafka_partition, kafka_offset, reason, raw_value, dlq_published_at IS NOT NULL "
                               "FROM quarantine WHERE stage = 'raw_trades'").fetchall()
        runs = conn.sql("SELECT exchange, product, first_id, last_id FROM trade_id_ranges ORDER BY ALL").fetchall()
        gaps = conn.sql("SELECT exchange, product, first_missing, last_missing, missing, healed_at IS NOT NULL "
                        "FROM trade_gaps ORDER BY ALL").fetchall()
        offsets = conn.sql("""SELECT kafka_partition, from_offset, lag(next_offset) OVER (PARTITION BY kafka_partition
                              ORDER BY batch_id) AS prev FROM ingest_offsets QUALIFY prev IS NOT NULL AND prev <> from_offset
                           """).fetchall()
        read = conn.sql("SELECT sum(messages) FROM ingest_batches").fetchall()[0][0]
        pending = conn.sql("SELECT count(*) FROM lake_pending").fetchall()[0][0]
        assert_mirror_equals_table(conn, lakehouse.lake_path, "bronze/raw_trades", "raw_trades")
    # every valid trade once (no duplicate, no gap), held by its first message
    assert Counter((e, p, i) for e, p, i, *_ in rows) == Counter(list(first))
    assert {(e, p, i): (part, off) for e, p, i, part, off in rows} == first
    # every bad message quarantined once with its reason, sent to the DLQ once
    assert Counter((p, o) for p, o, *_ in quarantined) == Counter((r.partition, r.offset) for r in topic
                                                                  if (r.value or b"") in bad)
    assert all(reason == bad[bytes(raw)] and sent for _p, _o, reason, raw, sent in quarantined)
    assert _dlq(kafka) == Counter((p, o) for p, o, *_ in quarantined)
    assert read == len(topic) and offsets == [] and pending == 0
    # the runs are the stored ids; the only hole left is the lost one, and every gap's missing is exact
    stored: dict[tuple, set[int]] = {}
    for e, p, i, *_ in rows:
        stored.setdefault((e, p), set()).add(i)
    expected_runs = []
    for (e, p), ids in sorted(stored.items()):
        s = sorted(ids)
        start = s[0]
        for a, b in zip(s, s[1:] + [None], strict=True):
            if b != a + 1:
                expected_runs.append((e, p, start, a))
                start = b
    assert runs == expected_runs
    # (a gap is recorded as the hole its batch saw: wider than 401..403 when a shuffled window
    # straddled two batches, then narrowed by the late ids)
    still_missing = {(e, p, i) for e, p, f, last, missing, _h in gaps if missing for i in range(f, last + 1)
                     if i not in stored[(e, p)]}
    assert still_missing == {("coinbase", "ETH-USD", i) for i in LOST}
    for e, p, f, last, missing, healed in gaps:
        assert missing == sum(1 for i in range(f, last + 1) if i not in stored[(e, p)]) and healed == (missing == 0)
    # the BTC-USD hole was found (whole, or in pieces where batches split a shuffled window) and healed
    btc = [(f, last, missing) for _e, p, f, last, missing, _h in gaps if p == "BTC-USD"]
    assert set(HEALED) <= {i for f, last, _m in btc for i in range(f, last + 1)} and all(m == 0 for *_, m in btc)


@pytest.mark.parametrize("where", ["before_write", "record_ranges:1", "after_duckdb_commit", "record_ranges:2",
                                   "during_parquet_export", "before_dlq_mark", "dlq_half_sent"])
def test_kill_the_trade_pull_then_rerun(kafka, lakehouse, home, where):
    messages = _messages()
    assert produce_trades(kafka, messages) == len(messages)
    if ":" in where:  # inside a batch's transaction: its rows inserted, its runs and gaps not yet
        fn, nth = where.split(":")
        proc = _run(kafka, home, kill_in=fn, kill_on=int(nth))
    else:
        proc = _run(kafka, home, fault=where)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    _check_kill_landed(where, kafka, lakehouse, len(messages))
    proc = _run(kafka, home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_exactly_once(kafka, lakehouse)


def test_an_uninterrupted_pull_gives_the_same_tape(kafka, lakehouse, home):
    """The reference the kills are compared with: one clean run passes the same identity checks,
    with every valid trade stored (the heal's overlap and the repeats dropped)."""
    messages = _messages()
    produce_trades(kafka, messages)
    proc = _run(kafka, home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out == {"messages": len(messages), "rows": 3 * 600 - len(LOST), "quarantined": len(BAD_SET)}
    _assert_exactly_once(kafka, lakehouse)


_BATCH_LINE = re.compile(r"^batch (\d+): (\d+) messages")


def test_kill_the_trade_pull_at_random_moments(kafka, lakehouse, home):
    """Three kills, each a seeded delay after the child reported a committed batch (small batches,
    so kills land inside later batches, their transactions, the DLQ send or the export); every
    batch reported survives; then a run to the end leaves the same tape as an uninterrupted one."""
    rng = random.Random(11)
    messages = _messages()
    produce_trades(kafka, messages)
    committed: set[int] = set()
    for kill in range(3):
        with tempfile.TemporaryFile() as err:
            proc = subprocess.Popen([sys.executable, "-c", CHILD, json.dumps(kafka.model_dump(exclude_none=True)),
                                     str(home), "150", "", "0", "progress"],
                                    env={k: v for k, v in os.environ.items() if k != ENV_VAR},
                                    stdout=subprocess.PIPE, stderr=err, text=True)
            reported: dict[int, int] = {}
            assert proc.stdout is not None
            for line in proc.stdout:
                m = _BATCH_LINE.match(line)
                if m:
                    reported[int(m.group(1))] = int(m.group(2))
                    break
            time.sleep(rng.uniform(0.0, 0.2) if kill else 0.0)
            proc.send_signal(signal.SIGKILL)
            proc.stdout.close()
            code = proc.wait(timeout=60)
            err.seek(0)
            assert code in (-signal.SIGKILL, 0), (code, err.read().decode()[-2000:])
        with lakehouse.connect() as conn:
            batches = dict(conn.sql("SELECT batch_id, messages FROM ingest_batches").fetchall())
        assert reported.items() <= batches.items() and committed < set(batches), (reported, batches, committed)
        committed = set(batches)
    proc = _run(kafka, home)
    assert proc.returncode == 0, proc.stderr[-2000:]
    _assert_exactly_once(kafka, lakehouse)
