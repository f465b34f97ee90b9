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


def watermarks(bootstrap: str, topic: str) -> dict[int, tuple[int, int]]:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"wm-{uuid.uuid4().hex[:8]}"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        return {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False) for p in sorted(parts)}
    finally:
        c.close()


def read_topic(bootstrap: str, topic: str, give_up_s: float = 30.0) -> list[Record]:
    """Every message the topic holds, sorted by (partition, offset)."""
    from confluent_kafka import Consumer, TopicPartition

    marks = watermarks(bootstrap, topic)
    todo = {p: hi for p, (lo, hi) in marks.items() if hi > lo}
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "enable.partition.eof": False})
    out: list[Record] = []
    try:
        if todo:
            c.assign([TopicPartition(topic, p, marks[p][0]) for p in todo])
        deadline = time.monotonic() + give_up_s  # a bound for a broken broker, not a timing claim
        while todo:
            assert time.monotonic() < deadline, f"{topic}: partitions {sorted(todo)} not read to their end"
            for m in c.consume(1000, timeout=0.2):
                assert m.error() is None, m.error()
                p, o = m.partition(), m.offset()
                assert p is not None and o is not None  # a consumed message has both
                # a consumed message's headers are a list of (name, value) pairs
                headers = cast("list[tuple[str, bytes]]", m.headers() or [])
                if p in todo and o < todo[p]:
                    out.append(Record(p, o, m.key(), m.value(), tuple(headers)))
                    if o + 1 >= todo[p]:
                        todo.pop(p)
    finally:
        c.close()
    return sorted(out, key=lambda r: (r.partition, r.offset))
