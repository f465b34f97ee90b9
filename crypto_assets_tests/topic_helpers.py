"""Read a topic of the embedded broker completely, for comparisons by identity.

`read_topic` snapshots every partition's watermarks and reads each one from its low to its high
watermark (the snapshot), so the result is exactly what the topic holds, never "what arrived
before a poll timed out"."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, cast

import orjson


@dataclass(frozen=True)
class Record:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode()
        return None

    def int_header(self, name: str) -> int:
        """A header the message carries, holding an integer."""
        value = self.header(name)
        assert value is not None, f"[{self.partition}]@{self.offset} has no {name} header"
        return int(value)

    def json(self) -> Any:
        """The value, parsed (the message has one)."""
        assert self.value is not None, f"[{self.partition}]@{self.offset} has no value"
        return orjson.loads(self.value)

    def text_key(self) -> str:
        """The key, decoded (the message has one)."""
        assert self.key is not None, f"[{self.partition}]@{self.offset} has no key"
        return self.key.decode()


def partitions(consumer, topic: str, deadline: float) -> list[int]:
    """The topic's partitions; metadata can come back empty for a moment (e.g. while a producer
    is connecting), so ask again until the deadline."""
    while True:
        md = consumer.list_topics(topic=topic, timeout=10).topics.get(topic)
        if md is not None and md.partitions and md.error is None:
            return sorted(md.partitions)
        assert time.monotonic() < deadline, f"no partitions for topic {topic}: {md and md.error}"
        time.sleep(0.1)


def watermarks(bootstrap: str, topic: str, wait_s: float = 0.0) -> dict[int, tuple[int, int]]:
    """(low, high) per partition; a topic that does not exist has none, unless `wait_s` > 0: then
    it must exist, and its metadata is asked for again until then (see `partitions`)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4().hex[:8]}"})
    try:
        if wait_s > 0:
            parts = partitions(c, topic, time.monotonic() + wait_s)
        else:
            parts = sorted(c.list_topics(topic, timeout=10).topics[topic].partitions)
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False) for p in parts}
    finally:
        c.close()


def read_topic(bootstrap: str, topic: str, *, whole: bool = False, give_up_s: float = 60.0) -> list[Record]:
    """Every message the topic holds, sorted by (partition, offset): each partition read from its
    low to its high watermark as snapshotted when called (call it after the producers flushed;
    later messages are left out). Fails on an offset read twice and, at the give-up bound (a
    bound for a broken broker, not a timing claim), naming the partitions not read to their end.
    A topic that does not exist reads as empty. `whole`: the topic must exist (its metadata is
    asked for until it shows) and hold every message ever sent to it: no partition's low
    watermark above 0 (dropped by retention), no offset missing below its high watermark."""
    from confluent_kafka import Consumer, TopicPartition

    marks = watermarks(bootstrap, topic, wait_s=give_up_s if whole else 0.0)
    if whole:
        lost = {p: lo for p, (lo, _) in marks.items() if lo != 0}
        assert not lost, f"{topic}: partitions start at offsets {lost}: messages were dropped by retention"
    todo = {p: hi for p, (lo, hi) in marks.items() if hi > lo}
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "enable.partition.eof": False})
    got: dict[tuple[int, int], Record] = {}
    try:
        if todo:
            c.assign([TopicPartition(topic, p, marks[p][0]) for p in todo])
        deadline = time.monotonic() + give_up_s
        while todo:
            assert time.monotonic() < deadline, f"{topic}: partitions {sorted(todo)} not read to their end"
            for m in c.consume(1000, timeout=0.2):
                assert m.error() is None, m.error()
                p, o = m.partition(), m.offset()
                assert p is not None and o is not None
                if p in todo and o < todo[p]:
                    assert (p, o) not in got, f"{topic}: offset {(p, o)} read twice"
                    # a consumed message's headers are a list of (name, value) pairs
                    headers = cast("list[tuple[str, bytes]]", m.headers() or [])
                    got[(p, o)] = Record(p, o, m.key(), m.value(), tuple(headers))
                    if o + 1 >= todo[p]:
                        todo.pop(p)
    finally:
        c.close()
    if whole:
        want = {(p, o) for p, (_, hi) in marks.items() for o in range(hi)}
        assert set(got) == want, f"{topic}: missing {sorted(want - set(got))[:10]} of {len(want)}"
    return [got[k] for k in sorted(got)]
