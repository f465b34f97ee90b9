"""The DLQ outbox: quarantined-but-unsent raw messages go to the DLQ topic, their bytes as they
arrived and the reason in headers, exactly once also across a kill (crypto_assets.kafka.outbox)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import duckdb
import polars as pl

from crypto_assets.kafka.outbox import Outbox, OutboxMessage, header, held, idents_frame, publish
from crypto_assets.resources.kafka import KafkaResource


def publish_dlq(conn: duckdb.DuckDBPyConnection, kafka: KafkaResource, source_topic: str, limit: int = 100_000,
                stage: str = "raw_ticks", dlq_topic: str | None = None) -> int:
    """Send the unsent quarantined raw messages of `source_topic` (quarantined by bronze table
    `stage`) to `dlq_topic` (default: the ticks' DLQ), then mark them sent. Returns how many
    were sent by this call."""
    return publish(kafka, dlq_outbox(kafka, source_topic, stage, dlq_topic), held(conn), limit)


def dlq_outbox(kafka: KafkaResource, source_topic: str, stage: str = "raw_ticks", dlq_topic: str | None = None) -> Outbox:
    """The DLQ of `source_topic`: a message per quarantine row, identified by its source
    (partition, offset)."""

    def pending(conn: duckdb.DuckDBPyConnection, limit: int) -> list[OutboxMessage]:
        rows = conn.sql(
            """
            SELECT kafka_partition, kafka_offset, message_key, raw_value, reason, coalesce(detail, ''), batch_id
            FROM quarantine
            WHERE stage = ? AND kafka_topic = ? AND dlq_published_at IS NULL
            ORDER BY kafka_partition, kafka_offset LIMIT ?
            """,
            params=[stage, source_topic, limit],
        ).fetchall()
        return [
            OutboxMessage(
                (part, off),
                key,
                raw or b"",
                [
                    ("reason", reason.encode()),
                    ("detail", detail.encode()),
                    ("source.topic", source_topic.encode()),
                    ("source.partition", str(part).encode()),
                    ("source.offset", str(off).encode()),
                    ("batch_id", str(batch_id).encode()),
                ],
            )
            for part, off, key, raw, reason, detail, batch_id in rows
        ]

    def mark_sent(conn: duckdb.DuckDBPyConnection, sent: list[tuple[int, int]]) -> None:
        conn.register("sent", idents_frame(sent, {"p": pl.Int32, "o": pl.Int64}))
        try:
            conn.execute(
                """
                UPDATE quarantine SET dlq_published_at = now()
                FROM sent WHERE quarantine.stage = ? AND quarantine.kafka_topic = ?
                  AND quarantine.kafka_partition = sent.p AND quarantine.kafka_offset = sent.o
                  AND quarantine.dlq_published_at IS NULL
                """,
                [stage, source_topic],
            )
        finally:
            conn.unregister("sent")

    return Outbox(
        name=f"dlq:{source_topic}",
        topic=dlq_topic or kafka.dlq_topic,
        pending=pending,
        mark_sent=mark_sent,
        identity=_dlq_identity(source_topic),
        half_sent_fault="dlq_half_sent",
        before_mark_fault="before_dlq_mark",
    )


def _dlq_identity(source_topic: str) -> Callable[[Any], tuple[int, int] | None]:
    """(source partition, source offset) of a DLQ message of `source_topic`, else None."""

    def identity(message: Any) -> tuple[int, int] | None:
        if header(message, "source.topic") != source_topic:
            return None
        try:
            return int(cast(str, header(message, "source.partition"))), int(cast(str, header(message, "source.offset")))
        except (TypeError, ValueError):
            return None

    return identity
