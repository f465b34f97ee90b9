"""The one outbox: exactly-once publication of DuckDB rows (the DLQ, the alerts, the predictions)
to a Kafka topic.

Marking rows sent once the broker has them leaves a window: a process killed after the send and
before the mark would send them all again on the next run. So a send first records, committed,
where every partition of the target topic ends (`outbox_sends`), then sends and flushes, then
marks the rows and deletes the record in one transaction. A record still there means a send was
interrupted (kill, broker failure): the next publish reads the topic from the recorded offsets,
marks the rows whose messages are there (recognised by `Outbox.identity`) and sends only the
others. The producer is idempotent (no duplicate on retry), so every row reaches the topic
exactly once.

An `Outbox` says what is particular to one outbox (which rows are unsent and what message each
becomes, how to mark rows sent, how to recognise its messages on the topic, its fault points);
`publish` is the loop all of them share. It opens the warehouse through `connect` only for short
accesses and never while it sends or reads the topic: a caller that already holds a connection
passes `held(conn)`.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Hashable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import duckdb
import polars as pl
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from crypto_assets.faults import fault_armed, fault_point
from crypto_assets.kafka.errors import BrokerUnavailable, unreachable
from crypto_assets.kafka.producer import TickProducer
from crypto_assets.resources.kafka import KafkaResource
from crypto_assets.warehouse.sql import transaction

Connect = Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]]


@dataclass(frozen=True)
class OutboxMessage:
    """One unsent row as the message it becomes; `ident` is what `Outbox.identity` returns for
    that message when it is read back, and what `Outbox.mark_sent` receives."""

    ident: Hashable
    key: bytes | str | None
    value: bytes
    headers: list[tuple[str, bytes]] | None = None


@dataclass(frozen=True)
class Outbox:
    name: str  # its rows in outbox_sends: "alerts", "predictions", "dlq:<source topic>"
    topic: str
    # the unsent rows, oldest first, at most `limit` of them
    pending: Callable[[duckdb.DuckDBPyConnection, int], list[OutboxMessage]]
    # marks the rows with these idents sent (inside the caller's transaction); rows already
    # marked stay as they are
    mark_sent: Callable[[duckdb.DuckDBPyConnection, list], None]
    # the ident of a message read back from the topic; None: not one of this outbox's messages
    identity: Callable[[Any], Hashable | None]
    half_sent_fault: str | None = None  # crypto_assets.faults point: kill after half was sent
    before_mark_fault: str | None = None  # ... after all was sent, before the mark


def held(conn: duckdb.DuckDBPyConnection) -> Connect:
    """`connect` for a caller that already holds the connection (publish never closes it)."""
    return lambda: contextlib.nullcontext(conn)


def header(message: Any, name: str) -> str | None:
    """A header's value as text (None when absent)."""
    for k, v in message.headers() or ():
        if k == name and v is not None:
            return v.decode()
    return None


def publish(kafka: KafkaResource, outbox: Outbox, connect: Connect, limit: int) -> int:
    """Send the outbox's unsent rows (at most `limit`) to its topic and mark them sent, first
    finishing an interrupted send. Returns how many messages this call sent."""
    with connect() as conn:
        interrupted = _interrupted_send(conn, outbox.name)
        messages = outbox.pending(conn, limit) if interrupted is None else []
    if interrupted is not None:  # an interrupted send: mark what reached the topic, send the rest below
        found = _already_sent(kafka, outbox, *interrupted)
        with connect() as conn:
            with transaction(conn):
                if found:
                    outbox.mark_sent(conn, sorted(found))
                _forget_send(conn, outbox.name)
            messages = outbox.pending(conn, limit)
    if not messages:
        return 0
    ends = _watermarks(kafka, outbox.topic)
    now = datetime.now(UTC)
    # A partition missing here (the topic does not exist yet) is read from its start.
    rows = [[outbox.name, outbox.topic, p, hi, now] for p, (_lo, hi) in ends.items()] or [
        [outbox.name, outbox.topic, -1, 0, now]]
    with connect() as conn, transaction(conn):
        _forget_send(conn, outbox.name)
        conn.executemany("INSERT INTO outbox_sends VALUES (?, ?, ?, ?, ?)", rows)
    producer = TickProducer(kafka, topic=outbox.topic)
    for i, m in enumerate(messages):
        if outbox.half_sent_fault and i == len(messages) // 2 and fault_armed(outbox.half_sent_fault):
            producer.flush()
            fault_point(outbox.half_sent_fault)
        producer.send_raw(m.key, m.value, headers=m.headers)
    producer.flush()
    if outbox.before_mark_fault:
        fault_point(outbox.before_mark_fault)
    with connect() as conn, transaction(conn):
        outbox.mark_sent(conn, [m.ident for m in messages])
        _forget_send(conn, outbox.name)
    return len(messages)


def _interrupted_send(conn: duckdb.DuckDBPyConnection, name: str) -> tuple[str, dict[int, int]] | None:
    """None when no send of this outbox was interrupted; else (the topic it wrote to, partition
    -> where it began)."""
    rows = conn.sql("SELECT topic, kafka_partition, start_offset FROM outbox_sends WHERE outbox = ?",
                    params=[name]).fetchall()
    if not rows:
        return None
    return rows[0][0], {p: o for _t, p, o in rows if p >= 0}


def _forget_send(conn: duckdb.DuckDBPyConnection, name: str) -> None:
    conn.execute("DELETE FROM outbox_sends WHERE outbox = ?", [name])


def _consumer(kafka: KafkaResource) -> Consumer:
    # assign() only, never a commit: the group id is a throwaway
    return Consumer(kafka.consumer_config(**{"group.id": f"{kafka.consumer_group}.outbox-{uuid.uuid4().hex[:8]}"}))


def _watermarks(kafka: KafkaResource, topic: str, consumer: Consumer | None = None) -> dict[int, tuple[int, int]]:
    c = consumer if consumer is not None else _consumer(kafka)
    try:
        tmd = c.list_topics(topic=topic, timeout=kafka.timeout_s).topics.get(topic)
        parts = sorted(tmd.partitions) if tmd is not None else []
        marks = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=kafka.timeout_s, cached=False)
                 for p in parts}
    except KafkaException as exc:
        raise unreachable(kafka.bootstrap(), exc) from exc
    finally:
        if consumer is None:
            c.close()
    if any(m is None for m in marks.values()):
        raise BrokerUnavailable(f"Kafka broker at {kafka.bootstrap()}: watermark query for {topic} timed out")
    return marks


def _already_sent(kafka: KafkaResource, outbox: Outbox, topic: str, starts: dict[int, int]) -> set:
    """The idents of the outbox's messages on `topic` from where the interrupted send began."""
    found: set = set()
    c = _consumer(kafka)
    try:
        marks = _watermarks(kafka, topic, c)
        todo = _read_from(marks, starts)
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
                    f"what an interrupted send of the {outbox.name} outbox published; nothing was sent or marked"
                )
            for m in msgs:
                if (err := m.error()) is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    raise BrokerUnavailable(f"reading {topic} at {kafka.bootstrap()}: {m.error()}")
                p = m.partition()
                if p in todo:
                    ident = outbox.identity(m)
                    if ident is not None:
                        found.add(ident)
                    if cast(int, m.offset()) + 1 >= marks[p][1]:
                        todo.pop(p)
    finally:
        c.close()
    return found


def _read_from(marks: dict[int, tuple[int, int]], starts: dict[int, int]) -> dict[int, int]:
    """partition -> first offset to read back, for the partitions with something to read; a
    recorded offset outside the log (broker restarted, retention) is clamped to it."""
    todo = {p: min(max(starts.get(p, lo), lo), hi) for p, (lo, hi) in marks.items()}
    return {p: o for p, o in todo.items() if o < marks[p][1]}


def idents_frame(idents: Sequence[tuple], schema: dict[str, Any]) -> Any:
    """Tuple idents as an Arrow table with `schema`'s columns (name -> polars type), for a
    mark_sent to register and join on."""
    columns = [list(col) for col in zip(*idents, strict=True)] if idents else [[] for _ in schema]
    return pl.DataFrame(columns, schema=schema, orient="col").to_arrow()
