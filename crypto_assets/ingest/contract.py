"""What makes one bronze pull different from another, stated as data: the topic it reads, the
table and quarantine stage it writes, the JSON fields it parses and the function that judges,
deduplicates and inserts a staged batch. The pull itself (offsets, micro-batches, the one DuckDB
transaction, the DLQ outbox, the Parquet mirror) is the same code for every contract: ticks and
trades differ only in what is listed here (crypto_assets.ingest.contracts holds the two)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import duckdb

    from crypto_assets.ingest.config import PullConfig
    from crypto_assets.resources.kafka import KafkaResource


@dataclass
class BatchRows:
    """What a contract's row writer gets: the open transaction's batch, its staged rows
    (temp view `staged`: parsed fields, `idx`, kafka_partition, kafka_offset, kafka_ts_ms) and
    the raw messages, for the quarantine rows of the ones it rejects."""

    conn: duckdb.DuckDBPyConnection
    topic: str
    batch_id: int
    now: datetime
    staged_rows: int
    vals: list[bytes | None]
    keys: list[bytes | None]
    coins: list[str]
    cfg: PullConfig


@dataclass
class RowsOutcome:
    """What a row writer did inside the transaction. `skipped`: messages dropped on purpose and
    not quarantined (trades seen before); `extra`: the contract's own counters (gaps found ...)."""

    written: int
    event_range: tuple[datetime | None, datetime | None]
    reasons: dict[str, int]
    skipped: int = 0
    extra: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class BronzeContract:
    """One topic -> one bronze table. `write_rows` runs inside the batch's transaction after
    `staged` is registered; it may roll back and BEGIN again (the tick path's optimistic insert)
    but must leave a transaction open, and must mark the Parquet hours it touched."""

    table: str  # bronze table (its mirror in the table registry), and the `stage` of its quarantine rows
    fields: dict[str, str]  # JSON field -> "int" | "float" | "str": the parse schema
    topic_setting: str  # the KafkaResource field naming the topic read ...
    dlq_setting: str  # ... and the one naming its DLQ topic
    write_rows: Callable[[BatchRows], RowsOutcome]
    # Fields that must arrive as JSON strings: polars would read a number into a String column
    # silently (a float price would pass as "90123.45"), so the parse verifies them.
    strict_strings: tuple[str, ...] = ()

    def topic(self, kafka: KafkaResource) -> str:
        return getattr(kafka, self.topic_setting)

    def dlq_topic(self, kafka: KafkaResource) -> str:
        return getattr(kafka, self.dlq_setting)
