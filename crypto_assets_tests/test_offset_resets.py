"""The resets README.md describes, end to end against real mock clusters: when the broker's log no
longer matches the stored offsets (embedded broker restarted: new cluster id; topic recreated:
stored offset beyond the high watermark; retention deleted unread messages) the pull says so,
records it in ingest_offsets.reset_reason and reads exactly the messages the log now holds (by
partition, offset and value), from the earliest available offset; said once, not every run.

The mock cluster cannot delete a topic (no DeleteTopics, no controller for the AdminClient) nor
delete records (DeleteRecords is unsupported): a recreated topic is a new topic of the same name
on a second mock cluster whose cluster id the stored positions are given, which is what a
recreated topic looks like to the pull (same cluster, same name, a log that starts over);
retention is the mock's own (~5 MB per partition), pushed past a stored position by padded
messages."""

from __future__ import annotations

import random
import string
from datetime import datetime

import orjson
import pytest

from crypto_assets.ingest.pull import pull_raw_ticks
from crypto_assets.kafka.embedded_broker import EmbeddedBroker
from crypto_assets.resources import KafkaResource
from crypto_assets_tests.helpers import produce, tick, ticks
from crypto_assets_tests.topic_helpers import read_topic, watermarks

pytestmark = pytest.mark.slow


def _on(kafka: KafkaResource, broker: EmbeddedBroker) -> KafkaResource:
    """The same topics and group on another cluster."""
    return KafkaResource(**{**kafka.model_dump(exclude_none=True), "bootstrap_servers": broker.bootstrap_servers})


def _positions(lakehouse, topic) -> dict[int, tuple[int, str]]:
    with lakehouse.connect() as conn:
        rows = conn.sql("SELECT kafka_partition, next_offset, cluster_id FROM ingest_positions WHERE kafka_topic = ?",
                        params=[topic]).fetchall()
    return {p: (o, c) for p, o, c in rows}


def _ingested(lakehouse, result) -> dict[tuple[int, int], tuple]:
    """(partition, offset) -> the row's values, for the rows of this pull's batches."""
    ids = [b.batch_id for b in result.batches]
    with lakehouse.connect() as conn:
        rows = conn.sql(
            "SELECT kafka_partition, kafka_offset, coin_id, last_updated_at, price_usd, source FROM raw_ticks "
            "WHERE list_contains(?, batch_id)",
            params=[ids],
        ).fetchall()
        assert conn.sql("SELECT count(*) FROM quarantine WHERE list_contains(?, batch_id)",
                        params=[ids]).fetchall() == [(0,)]
    out = {(p, o): tuple(v) for p, o, *v in rows}
    assert len(out) == len(rows), "an offset ingested twice by one pull"
    return out


def _values(records) -> dict[tuple[int, int], tuple]:
    out = {}
    for r in records:
        m = orjson.loads(r.value)
        t = datetime.fromisoformat(m["last_updated_at"].replace("Z", "+00:00"))
        out[(r.partition, r.offset)] = (m["coin_id"], t, m["price_usd"], m["source"])
    return out


def _resets(lakehouse, result) -> dict[int, tuple[int, str]]:
    with lakehouse.connect() as conn:
        rows = conn.sql(
            "SELECT kafka_partition, from_offset, reset_reason FROM ingest_offsets "
            "WHERE reset_reason IS NOT NULL AND list_contains(?, batch_id)",
            params=[[b.batch_id for b in result.batches]],
        ).fetchall()
    out = {p: (f, reason) for p, f, reason in rows}
    assert len(out) == len(rows)
    return out


def _all_event_keys(lakehouse) -> list[tuple]:
    with lakehouse.connect() as conn:
        return conn.sql("SELECT coin_id, last_updated_at FROM raw_ticks ORDER BY ALL").fetchall()


def _event_keys(messages) -> list[tuple]:
    return sorted((m["coin_id"], datetime.fromisoformat(m["last_updated_at"].replace("Z", "+00:00"))) for m in messages)


@pytest.mark.parametrize("scenario", ["broker_restarted", "topic_recreated"])
def test_log_that_starts_over_is_read_from_its_start(kafka, lakehouse, scenario):
    first_msgs = ticks(60)  # 20 per coin: every stored offset is >= 20
    second_msgs = ticks(9, start=1000)  # 3 per coin: every new high watermark is < 20
    a = EmbeddedBroker()
    a.start(topics=[kafka.raw_topic])
    b = None
    try:
        ka = _on(kafka, a)
        produce(ka, first_msgs)
        first = pull_raw_ticks(ka, lakehouse)
        assert first.notices == [] and first.messages == 60
        stored = {p: o for p, (o, _c) in _positions(lakehouse, kafka.raw_topic).items()}
        b = EmbeddedBroker()  # started while `a` runs: a different cluster (its id names its address)
        b.start(topics=[kafka.raw_topic])
        assert b.bootstrap_servers is not None  # started
    finally:
        a.stop()
    try:
        assert b.cluster_id != a.cluster_id
        kb = _on(kafka, b)
        produce(kb, second_msgs)
        on_b = read_topic(b.bootstrap_servers, kafka.raw_topic)
        highs = {p: hi for p, (_lo, hi) in watermarks(b.bootstrap_servers, kafka.raw_topic).items()}
        assert all(highs[p] < o for p, o in stored.items())
        if scenario == "topic_recreated":
            with lakehouse.connect() as conn:  # the stored offsets came from this very cluster
                conn.execute("UPDATE ingest_positions SET cluster_id = ?", [b.cluster_id])
            expected = {
                p: f"partition {p}: stored offset {o} is beyond the high watermark {highs[p]} (topic recreated or log "
                   f"truncated). Resuming from the earliest available offset 0."
                for p, o in stored.items()
            }
        else:
            expected = {
                p: f"partition {p}: the cluster id changed ({a.cluster_id} -> {b.cluster_id}); the broker was "
                   f"restarted or replaced, so stored offset {o} does not refer to this log. Resuming from the "
                   f"earliest available offset 0."
                for p, o in stored.items()
            }
        r = pull_raw_ticks(kb, lakehouse)
        assert r.notices == [expected[p] for p in sorted(expected)]
        assert r.offsets_lost == {}
        # exactly the new log's messages, each with its values, from offset 0 of every partition
        assert _ingested(lakehouse, r) == _values(on_b)
        assert {p: lo for p, (lo, _hi) in r.offset_ranges.items()} == {p: 0 for p, hi in highs.items() if hi}
        assert _resets(lakehouse, r) == {p: (0, reason) for p, reason in expected.items()}
        assert {p: o for p, (o, _c) in _positions(lakehouse, kafka.raw_topic).items()} == {
            p: hi for p, hi in highs.items() if hi or p in stored
        }
        assert _all_event_keys(lakehouse) == _event_keys(first_msgs + second_msgs)  # nothing lost, nothing twice
        # said once: the next pull resumes from the new offsets without a word
        produce(kb, [tick(2000, "ethereum")])
        again = pull_raw_ticks(kb, lakehouse)
        assert again.notices == [] and again.messages == 1 and _resets(lakehouse, again) == {}
    finally:
        b.stop()


def test_retention_past_the_stored_offset_is_reported_and_the_rest_read_once(kafka, lakehouse):
    """A pull stores its offsets; then retention (the mock keeps ~5 MB per partition) deletes
    bitcoin's partition past them before the next pull: that pull says how many offsets were lost,
    per partition and in total, records it, and reads every message still in the log once."""
    first_msgs = ticks(30)
    produce(kafka, first_msgs)
    assert pull_raw_ticks(kafka, lakehouse).messages == 30
    stored = {p: o for p, (o, _c) in _positions(lakehouse, kafka.raw_topic).items()}
    btc = {r.partition for r in read_topic(kafka.bootstrap(), kafka.raw_topic) if r.key == b"bitcoin"}
    rng = random.Random(11)  # 40 KB of random letters: lz4 cannot shrink them
    padded = [tick(100 + i, "bitcoin") | {"source": "".join(rng.choices(string.ascii_letters, k=40_000))}
              for i in range(250)]
    more = ticks(6, coins=("ethereum", "solana"), start=500)
    produce(kafka, padded + more)
    marks = watermarks(kafka.bootstrap(), kafka.raw_topic)
    lost = {p: lo - stored.get(p, 0) for p, (lo, _hi) in marks.items() if lo > stored.get(p, 0)}
    assert set(lost) == btc, (marks, stored)  # only bitcoin's partition lost unread messages
    left = read_topic(kafka.bootstrap(), kafka.raw_topic)
    unread = [r for r in left if r.offset >= stored.get(r.partition, 0)]

    r = pull_raw_ticks(kafka, lakehouse)
    assert r.offsets_lost == lost
    per_partition = [
        f"partition {p}: offsets {stored[p]}..{marks[p][0] - 1} ({n} messages) were deleted by retention before "
        f"they were read. Resuming from the earliest available offset {marks[p][0]}."
        for p, n in sorted(lost.items())
    ]
    total = ", ".join(f"partition {p}: {n}" for p, n in sorted(lost.items()))
    assert r.notices == [*per_partition, f"{sum(lost.values())} offsets were deleted by retention before they were "
                                         f"read ({total})."]
    # every message still in the log and not read before, once, with its values; nothing else
    assert _ingested(lakehouse, r) == _values(unread)
    assert _resets(lakehouse, r) == {p: (marks[p][0], reason) for p, reason in zip(sorted(lost), per_partition, strict=True)}
    assert {p: o for p, (o, _c) in _positions(lakehouse, kafka.raw_topic).items()} == {
        p: hi for p, (_lo, hi) in marks.items() if hi
    }
    survivors = [x.json() for x in unread]
    assert _all_event_keys(lakehouse) == _event_keys(first_msgs + survivors)
    again = pull_raw_ticks(kafka, lakehouse)
    assert again.notices == [] and again.offsets_lost == {} and again.messages == 0
