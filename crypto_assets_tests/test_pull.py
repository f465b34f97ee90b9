"""The exactly-once pull against the real embedded broker and a real DuckDB file."""

from __future__ import annotations

import random
import string
from collections import Counter

from crypto_assets.ingest.config import BRONZE_DATASET, PullConfig
from crypto_assets.ingest.offsets import lost_offsets_notice, plan_partitions
from crypto_assets.ingest.pull import pull_raw_ticks
from crypto_assets.ingest.results import PartitionPlan
from crypto_assets_tests.helpers import evaluate_sensor, produce, tick, ticks
from crypto_assets_tests.lake_helpers import assert_mirror_equals_table
from crypto_assets_tests.topic_helpers import read_topic, watermarks


def _table(lakehouse, sql):
    with lakehouse.connect() as conn:
        return conn.sql(sql).fetchall()


def test_pull_reads_everything_once_and_is_idempotent(kafka, lakehouse):
    sent = ticks(500)
    assert produce(kafka, sent) == 500
    r1 = pull_raw_ticks(kafka, lakehouse, PullConfig(batch_size=120))
    assert r1.messages == 500 and r1.rows_written == 500 and r1.quarantined == 0
    assert len(r1.batches) == 5  # 500 messages in transactions of at most 120
    assert sum(r1.remaining_lag.values()) == 0
    r2 = pull_raw_ticks(kafka, lakehouse)
    assert r2.messages == 0 and r2.batches == []
    rows = _table(lakehouse, "SELECT kafka_partition, kafka_offset FROM raw_ticks ORDER BY ALL")
    assert rows == [(r.partition, r.offset) for r in read_topic(kafka.bootstrap(), kafka.raw_topic)]  # each once
    # offsets are contiguous per partition and end at the high watermark
    offs = _table(
        lakehouse,
        "SELECT kafka_partition, min(from_offset), max(next_offset), sum(message_count) FROM ingest_offsets GROUP BY 1",
    )
    assert sum(o[3] for o in offs) == 500
    for _p, lo, hi, n in offs:
        assert hi - lo == n
    # the Parquet mirror holds the same rows, every column
    with lakehouse.connect() as conn:
        assert_mirror_equals_table(conn, lakehouse.lake_path, BRONZE_DATASET, "raw_ticks")


def test_pull_respects_max_messages_and_resumes(kafka, lakehouse):
    produce(kafka, ticks(300))
    r1 = pull_raw_ticks(kafka, lakehouse, PullConfig(max_messages=100))
    assert r1.messages == 100
    assert sum(r1.remaining_lag.values()) == 200
    r2 = pull_raw_ticks(kafka, lakehouse, PullConfig(max_messages=1000))
    assert r2.messages == 200
    assert _table(lakehouse, "SELECT kafka_partition, kafka_offset FROM raw_ticks ORDER BY ALL") == [
        (r.partition, r.offset) for r in read_topic(kafka.bootstrap(), kafka.raw_topic)
    ]


def test_snapshot_ignores_messages_after_start(kafka, lakehouse):
    produce(kafka, ticks(50))
    r = pull_raw_ticks(kafka, lakehouse)
    produce(kafka, ticks(50, start=50))
    assert r.messages == 50
    assert pull_raw_ticks(kafka, lakehouse).messages == 50


def _reason(plan: PartitionPlan) -> str:
    """The reason a plan resets its partition (it does)."""
    assert plan.reset_reason is not None, plan
    return plan.reset_reason


def test_plan_partitions_notices_broker_changes():
    # first run: start at low watermark
    plans = plan_partitions({0: (0, 10)}, {}, "c1")
    assert plans[0].start == 0 and plans[0].reset_reason is None
    # normal resume
    assert plan_partitions({0: (0, 10)}, {0: (7, "c1")}, "c1")[0].start == 7
    # broker restarted: new cluster id
    p = plan_partitions({0: (0, 3)}, {0: (7, "c1")}, "c2")[0]
    assert p.start == 0 and "cluster id changed" in _reason(p)
    # stored offset beyond high watermark (topic recreated)
    p = plan_partitions({0: (0, 3)}, {0: (7, "c1")}, "c1")[0]
    assert p.start == 0 and "beyond the high watermark" in _reason(p)
    # retention deleted unread data
    p = plan_partitions({0: (20, 30)}, {0: (7, "c1")}, "c1")[0]
    assert p.start == 20 and "13 messages" in _reason(p) and "retention" in _reason(p)


def test_positions_follow_the_offsets_and_the_next_pull_resumes_from_them(kafka, lakehouse):
    """ingest_positions (read by every pull) equals the last ingest_offsets row per partition,
    and the next pull resumes exactly where it points."""
    from crypto_assets.ingest.pull import pull_raw_ticks
    from crypto_assets_tests.helpers import produce
    from crypto_assets_tests.helpers import ticks as make

    produce(kafka, make(40))
    pull_raw_ticks(kafka, lakehouse)
    produce(kafka, make(25, start=40))
    pull_raw_ticks(kafka, lakehouse)
    last_sql = """SELECT kafka_partition, next_offset FROM ingest_offsets WHERE kafka_topic = ?
                  QUALIFY row_number() OVER (PARTITION BY kafka_partition ORDER BY batch_id DESC) = 1 ORDER BY 1"""
    with lakehouse.connect() as conn:
        positions = conn.sql("SELECT kafka_partition, next_offset FROM ingest_positions WHERE kafka_topic = ? ORDER BY 1",
                             params=[kafka.raw_topic]).fetchall()
        assert positions == conn.sql(last_sql, params=[kafka.raw_topic]).fetchall()
        assert sum(n for _, n in positions) == 65
    produce(kafka, make(10, start=65))
    pull_raw_ticks(kafka, lakehouse)
    with lakehouse.connect() as conn:
        offsets = conn.sql("SELECT kafka_partition, kafka_offset FROM raw_ticks ORDER BY ALL").fetchall()
        assert len(offsets) == len(set(offsets)) == 75  # no message read twice, none skipped
        assert conn.sql("SELECT count(*) FROM quarantine").fetchall()[0][0] == 0


def test_plan_partitions_first_pull_on_a_truncated_log():
    plans = plan_partitions({0: (250, 300), 1: (0, 10)}, {}, "c1")
    assert (plans[0].start, plans[0].lost) == (250, 250)
    assert "first pull" in _reason(plans[0]) and "0..249 (250 messages)" in _reason(plans[0])
    assert (plans[1].start, plans[1].lost, plans[1].reset_reason) == (0, 0, None)
    plans += plan_partitions({2: (40, 50)}, {2: (30, "c1")}, "c1")  # a stored offset behind the log
    assert lost_offsets_notice(plans) == "260 offsets were deleted by retention before they were read (partition 0: 250, partition 2: 10)."
    assert lost_offsets_notice(plans[1:2]) is None


def test_first_pull_says_how_many_offsets_retention_deleted(kafka, lakehouse):
    """The embedded broker keeps ~5 MB per partition: 250 ticks padded with 40 KB of random
    letters (lz4 cannot shrink them) push the oldest out of their partition before the first pull."""
    rng = random.Random(5)
    padded = [tick(i, "bitcoin") | {"source": "".join(rng.choices(string.ascii_letters, k=40_000))} for i in range(250)]
    produce(kafka, padded + ticks(30, coins=("ethereum", "solana", "cardano")))
    from confluent_kafka import Consumer, TopicPartition

    probe = Consumer({"bootstrap.servers": kafka.bootstrap(), "group.id": "wm-probe"})
    parts = probe.list_topics(kafka.raw_topic, timeout=5).topics[kafka.raw_topic].partitions
    marks = {p: probe.get_watermark_offsets(TopicPartition(kafka.raw_topic, p), timeout=5, cached=False) for p in parts}
    probe.close()
    truncated = {p: lo for p, (lo, hi) in marks.items() if lo > 0}
    assert truncated, marks  # bitcoin's partition lost its oldest messages

    r = pull_raw_ticks(kafka, lakehouse)
    assert r.offsets_lost == truncated
    for p, low in truncated.items():
        assert any(f"partition {p}: first pull" in n and f"0..{low - 1} ({low} messages)" in n for n in r.notices), r.notices
    total = ", ".join(f"partition {p}: {n}" for p, n in sorted(truncated.items()))
    assert f"{sum(truncated.values())} offsets were deleted by retention before they were read ({total})." in r.notices
    for p, (lo, hi) in marks.items():  # every partition read from its low watermark, nothing else
        rows = _table(lakehouse, f"SELECT kafka_offset FROM raw_ticks WHERE kafka_partition = {p} ORDER BY 1")
        assert [o for (o,) in rows] == list(range(lo, hi)), p
    resets = _table(lakehouse, "SELECT kafka_partition, from_offset, reset_reason FROM ingest_offsets WHERE reset_reason IS NOT NULL")
    assert {q: f for q, f, _ in resets} == truncated and len(resets) == len(truncated)
    assert all("deleted by retention before any pull read them" in reason for _, _, reason in resets)
    # the next pull starts from the stored offsets: nothing more to say
    produce(kafka, [tick(1000, "bitcoin")])
    again = pull_raw_ticks(kafka, lakehouse)
    assert again.notices == [] and again.offsets_lost == {} and again.messages == 1


def _group_offsets(kafka) -> dict[int, int]:
    """The consumer group's committed offset per partition (partitions it never committed left out)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": kafka.bootstrap(), "group.id": kafka.consumer_group, "enable.auto.commit": False})
    try:
        parts = sorted(c.list_topics(kafka.raw_topic, timeout=10).topics[kafka.raw_topic].partitions)
        committed = c.committed([TopicPartition(kafka.raw_topic, p) for p in parts], timeout=10)
        return {tp.partition: tp.offset for tp in committed if tp.offset >= 0}
    finally:
        c.close()


def test_pull_commits_the_consumer_group_so_the_backlog_is_zero(kafka, lakehouse):
    """The group offsets (monitoring only) are what the backlog sensor reads: after each pull they
    equal the next offsets DuckDB stored, i.e. every partition's high watermark, and the sensor
    sees no backlog. If the commit broke, the sensor would see the whole topic as lag forever."""
    import dagster as dg

    from crypto_assets.definitions import incremental_job
    from crypto_assets.defs.automation import build_backlog_sensor
    from crypto_assets.kafka.lag import measure_backlog

    sensor = build_backlog_sensor(incremental_job, min_messages=1, max_wait_seconds=3600)

    def sensor_says():
        with dg.DagsterInstance.ephemeral() as instance:
            return evaluate_sensor(sensor, dg.build_sensor_context(instance=instance, resources={"kafka": kafka}))

    def stored():
        return dict(_table(lakehouse, f"SELECT kafka_partition, next_offset FROM ingest_positions "
                                      f"WHERE kafka_topic = '{kafka.raw_topic}'"))

    produce(kafka, ticks(90))
    highs = {p: hi for p, (_, hi) in watermarks(kafka.bootstrap(), kafka.raw_topic).items()}
    assert _group_offsets(kafka) == {} and measure_backlog(kafka, with_age=False).lag == 90
    r = pull_raw_ticks(kafka, lakehouse)
    read = {p: hi for p, (_, hi) in r.offset_ranges.items()}
    assert read == stored() == _group_offsets(kafka) == {p: hi for p, hi in highs.items() if hi > 0}
    backlog = measure_backlog(kafka, with_age=False)
    assert backlog.partitions == {p: (hi, hi, 0) for p, hi in highs.items()}
    result = sensor_says()
    assert not result.run_requests and "no backlog" in result.skip_message

    # new messages: the backlog is exactly them, per partition; the next pull commits past them
    produce(kafka, ticks(7, start=90))
    new = Counter(r.partition for r in read_topic(kafka.bootstrap(), kafka.raw_topic) if r.offset >= highs[r.partition])
    backlog = measure_backlog(kafka, with_age=False)
    assert {p: lag for p, (_, _, lag) in backlog.partitions.items() if lag} == dict(new)
    assert len(sensor_says().run_requests) == 1
    pull_raw_ticks(kafka, lakehouse)
    highs = {p: hi for p, (_, hi) in watermarks(kafka.bootstrap(), kafka.raw_topic).items()}
    assert stored() == _group_offsets(kafka) == {p: hi for p, hi in highs.items() if hi > 0}
    assert measure_backlog(kafka, with_age=False).lag == 0
    assert "no backlog" in sensor_says().skip_message
