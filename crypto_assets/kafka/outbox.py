"""Exactly-once publication of a DuckDB outbox (the DLQ, the alerts) to a Kafka topic.

Marking rows sent once the broker has them leaves a window: a process killed after the send and
before the mark would send them all again on the next run. So a send first records, committed,
where every partition of the target topic ends (`outbox_sends`), then sends and flushes, then
marks the rows and deletes the record in one transaction. A record still there means a send was
interrupted (kill, broker failure): the next publish reads the topic from the recorded offsets,
marks the rows whose messages are there (matched by a header) and sends only the others. The
producer is idempotent (no duplicate on retry), so every row reaches the topic exactly once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from crypto_assets.warehouse.sql import transaction
from crypto_assets.kafka.errors import BrokerUnavailable
from crypto_assets.resources.kafka import KafkaResource


def _consumer(kafka: KafkaResource):
    from confluent_kafka import Consumer

    # assign() only, never a commit: the group id is a throwaway
    return Consumer(kafka.consumer_config(**{"group.id": f"{kafka.consumer_group}.outbox-{uuid.uuid4().hex[:8]}"}))


def _watermarks(consumer, kafka: KafkaResource, topic: str) -> dict[int, tuple[int, int]]:
    from confluent_kafka import KafkaException, TopicPartition

    try:
        tmd = consumer.list_topics(topic=topic, timeout=kafka.timeout_s).topics.get(topic)
        parts = sorted(tmd.partitions) if tmd is not None else []
        marks = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=kafka.timeout_s, cached=False)
                 for p in parts}
    except KafkaException as exc:
        raise BrokerUnavailable(f"Kafka broker at {kafka.bootstrap()} is unreachable: {exc}") from exc
    if any(m is None for m in marks.values()):
        raise BrokerUnavailable(f"Kafka broker at {kafka.bootstrap()}: watermark query for {topic} timed out")
    return marks


def begin_send(conn, kafka: KafkaResource, outbox: str, topic: str) -> None:
    """Record (committed) where each partition of `topic` ends, before anything is sent."""
    c = _consumer(kafka)
    try:
        marks = _watermarks(c, kafka, topic)
    finally:
        c.close()
    now = datetime.now(timezone.utc)
    # A partition missing here (the topic does not exist yet) is read from its start.
    rows = [[outbox, topic, p, hi, now] for p, (_lo, hi) in marks.items()] or [[outbox, topic, -1, 0, now]]
    with transaction(conn):
        conn.execute("DELETE FROM outbox_sends WHERE outbox = ?", [outbox])
        conn.executemany("INSERT INTO outbox_sends VALUES (?, ?, ?, ?, ?)", rows)


def end_send(conn, outbox: str) -> None:
    """Forget the record: inside the transaction that marks the rows sent."""
    conn.execute("DELETE FROM outbox_sends WHERE outbox = ?", [outbox])


def already_sent(conn, kafka: KafkaResource, outbox: str, identity: Callable[[Any], Any]) -> set | None:
    """None when no send of this outbox was interrupted; else the identities (`identity(message)`;
    None skips a message) of the messages on the topic from where the interrupted send began."""
    rows = conn.sql("SELECT topic, kafka_partition, start_offset FROM outbox_sends WHERE outbox = ?",
                    params=[outbox]).fetchall()
    if not rows:
        return None
    from confluent_kafka import KafkaError, TopicPartition

    topic = rows[0][0]
    starts = {p: o for _t, p, o in rows if p >= 0}
    found: set = set()
    c = _consumer(kafka)
    try:
        marks = _watermarks(c, kafka, topic)
        # an offset outside the log (broker restarted, retention) is clamped to it
        todo = {p: min(max(starts.get(p, lo), lo), hi) for p, (lo, hi) in marks.items()}
        todo = {p: o for p, o in todo.items() if o < marks[p][1]}
        if todo:
            c.assign([TopicPartition(topic, p, o) for p, o in todo.items()])
        give_up = time.monotonic() + 3 * kafka.timeout_s
        while todo:
            msgs = c.consume(1000, timeout=0.2)
            if msgs:
                give_up = time.monotonic() + 3 * kafka.timeout_s
            elif time.monotonic() > give_up:
                raise BrokerUnavailable(
                    f"could not read {topic} (partitions {sorted(todo)}) to its end at {kafka.bootstrap()} to find "
                    f"what an interrupted send of the {outbox} outbox published; nothing was sent or marked"
                )
            for m in msgs:
                if m.error() is not None:
                    if m.error().code() == KafkaError._PARTITION_EOF:
                        continue
                    raise BrokerUnavailable(f"reading {topic} at {kafka.bootstrap()}: {m.error()}")
                p = m.partition()
                if p in todo:
                    ident = identity(m)
                    if ident is not None:
                        found.add(ident)
                    if m.offset() + 1 >= marks[p][1]:
                        todo.pop(p)
    finally:
        c.close()
    return found


def header(message, name: str) -> str | None:
    """A header's value as text (None when absent)."""
    for k, v in message.headers() or ():
        if k == name and v is not None:
            return v.decode()
    return None
