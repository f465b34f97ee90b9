"""The pull's read of one batch: each partition from its next offset up to the high watermark
snapshotted when the pull began (the batch never chases new data), as parallel lists."""

from __future__ import annotations

import operator
import time
from typing import cast

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from crypto_assets.ingest.config import PullConfig
from crypto_assets.ingest.consumer import RawConsumer, broker_error
from crypto_assets.ingest.results import PartitionPlan, add_time

# (partition, offset, key, value, timestamp_ms) of each message read, in parallel lists
Consumed = tuple[list[int], list[int], list[bytes | None], list[bytes | None], list[int]]

_TS_MS = operator.itemgetter(1)  # Message.timestamp() -> (type, ms)


def consume_batch(client: RawConsumer, topic: str, plans: list[PartitionPlan], limit: int, cfg: PullConfig,
                  timings: dict[str, float] | None = None) -> Consumed:
    """Read up to `limit` messages, each partition from its next_offset up to its snapshot high.

    Returns parallel lists (partition, offset, key, value, timestamp_ms). Per partition the
    result is a contiguous prefix, so the next offset of a partition is its last offset + 1.
    """
    consumer = client.consumer
    todo = {pl_.partition: pl_ for pl_ in plans if pl_.next_offset < pl_.high}
    parts: list[int] = []
    offs: list[int] = []
    keys: list[bytes | None] = []
    vals: list[bytes | None] = []
    tss: list[int] = []
    if not todo or limit <= 0:
        return parts, offs, keys, vals, tss
    consumer.assign([TopicPartition(topic, p, plan.next_offset) for p, plan in todo.items()])
    ends = {p: plan.high for p, plan in todo.items()}
    # Next offset to arrive per partition. consume(n) waits for n messages or the timeout, so
    # asking for no more than the snapshot still holds keeps the last chunk of a batch (and every
    # small live batch) from sitting out the poll timeout.
    position = {p: plan.next_offset for p, plan in todo.items()}
    last_progress = time.monotonic()
    try:
        while todo and len(offs) < limit:
            below_snapshot = sum(ends[p] - position[p] for p in todo)
            want = max(1, min(cfg.consume_chunk, limit - len(offs), below_snapshot))
            t_fetch = time.perf_counter()
            msgs = consumer.consume(want, timeout=cfg.poll_timeout_s)
            add_time(timings, "consume_fetch", t_fetch)
            if not msgs:
                # Nothing arrived: partitions whose fetch position is past the snapshot are done
                # (covers offset gaps such as transaction markers).
                positions = consumer.position([TopicPartition(topic, p) for p in todo])
                for tp in positions:
                    if tp.offset >= 0 and tp.offset >= ends[tp.partition]:
                        todo.pop(tp.partition, None)
                if todo and time.monotonic() - last_progress > cfg.idle_timeout_s:
                    raise broker_error(
                        client.bootstrap,
                        TimeoutError(
                            f"no messages for {cfg.idle_timeout_s:.0f}s while partitions "
                            f"{sorted(todo)} are below their high watermark"
                        ),
                    )
                continue
            last_progress = time.monotonic()
            # The per-message work below runs as C-level map()s over Message methods: this loop
            # is the pull's hot path.
            if any(map(Message.error, msgs)):
                errors = [m for m in msgs if m.error() is not None]
                err = cast(KafkaError, errors[0].error())
                if err.code() == KafkaError._PARTITION_EOF:
                    msgs = [m for m in msgs if m.error() is None]
                else:
                    raise broker_error(client.bootstrap, KafkaException(err))
            # a message without an error has its partition and offset (the stubs say int | None)
            m_parts = cast("list[int]", list(map(Message.partition, msgs)))
            m_offs = cast("list[int]", list(map(Message.offset, msgs)))
            # Within a partition messages arrive in offset order, so the last one seen is the highest.
            last = dict(zip(m_parts, m_offs, strict=True))
            if any(o >= ends[p] for p, o in last.items()):  # past a snapshot end: drop those
                keep = [o < ends[p] for p, o in zip(m_parts, m_offs, strict=True)]
                msgs = [m for m, k in zip(msgs, keep, strict=True) if k]
                m_parts = [p for p, k in zip(m_parts, keep, strict=True) if k]
                m_offs = [o for o, k in zip(m_offs, keep, strict=True) if k]
            room = limit - len(offs)
            if len(msgs) > room:  # arrival order is offset order within a partition: a prefix per partition
                msgs, m_parts, m_offs = msgs[:room], m_parts[:room], m_offs[:room]
            parts.extend(m_parts)
            offs.extend(m_offs)
            keys.extend(map(Message.key, msgs))
            vals.extend(map(Message.value, msgs))
            tss.extend(map(_TS_MS, map(Message.timestamp, msgs)))
            # Partitions that reached their snapshot end are done.
            for p, o in dict(zip(m_parts, m_offs, strict=True)).items():
                position[p] = o + 1
                if o + 1 >= ends[p]:
                    todo.pop(p, None)
    finally:
        consumer.unassign()
    return parts, offs, keys, vals, tss
