"""The bounded, exactly-once micro-batch pull from `crypto_raw` into DuckDB.

DuckDB is the system of record for offsets. A pull
  1. snapshots the high watermarks (the batch never chases new data),
  2. reconciles the offsets stored in `ingest_offsets` with the broker's log (restarted embedded
     broker, recreated topic, retention) and says what it found,
  3. reads with `assign()` from the stored offsets (no consumer-group rebalance),
  4. parses in bulk, and writes rows, quarantine rows, per-partition offsets and Parquet dirty
     markers in ONE transaction per batch,
  5. only then commits offsets to the Kafka consumer group (for lag monitoring only),
  6. publishes newly quarantined messages to the DLQ (an outbox, exactly once: crypto_assets.kafka.outbox), and
  7. re-exports the touched Parquet partitions.
A kill at any point leaves DuckDB with all of a batch or none of it; the next pull re-reads
exactly what was not committed.
"""

from __future__ import annotations

import logging
import operator
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import polars as pl

from crypto_assets.kafka.tick_contract import MAX_MESSAGE_BYTES, SCHEMA_VERSION
from crypto_assets.warehouse.sql import first, scalar, transaction
from crypto_assets.faults import fault_armed, fault_point
from crypto_assets.ingest.parse import parse_values
from crypto_assets.warehouse.lake_export import ExportResult, export_dirty, mark_dirty
from crypto_assets.kafka.errors import BrokerUnavailable
from crypto_assets.resources.kafka import KafkaResource
from crypto_assets.resources.lakehouse import LakehouseResource

log = logging.getLogger(__name__)

BRONZE_DATASET = "bronze/raw_ticks"
# Earliest plausible tick (the Bitcoin genesis block); anything before is an absurd timestamp.
EARLIEST_EVENT_TIME = "2009-01-03"


@dataclass
class PullConfig:
    max_messages: int = 1_000_000  # per run; the rest waits for the next run
    # Per DuckDB transaction: bounds memory (~1 KB per message). Above one DuckDB row group
    # (122,880 rows) a full batch is written straight into the database file rather than
    # through the WAL and a second write at the checkpoint.
    batch_size: int = 150_000
    consume_chunk: int = 10_000
    poll_timeout_s: float = 0.5
    idle_timeout_s: float = 15.0  # no progress this long below the snapshot → error
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_stored_bytes: int = 64 * 1024  # raw bytes kept per quarantine row
    max_future_skew: timedelta = timedelta(days=1)
    export_parquet: bool = True
    publish_dlq: bool = True


@dataclass
class PartitionPlan:
    partition: int
    low: int
    high: int
    stored: int | None
    start: int
    reset_reason: str | None = None
    next_offset: int = 0  # advanced as batches commit
    lost: int = 0  # offsets deleted by retention before they were read

    @property
    def lag(self) -> int:
        return max(self.high - self.next_offset, 0)


@dataclass
class BatchStats:
    batch_id: int
    messages: int
    rows_written: int
    quarantined: int
    bytes: int
    ranges: dict[int, tuple[int, int]]
    min_event_time: datetime | None
    max_event_time: datetime | None
    reasons: dict[str, int]


@dataclass
class PullResult:
    topic: str
    bootstrap: str
    cluster_id: str | None
    batches: list[BatchStats] = field(default_factory=list)
    plans: list[PartitionPlan] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    kafka_commit_ok: bool = True
    dlq_published: int = 0
    export: ExportResult | None = None
    remaining_lag: dict[int, int] = field(default_factory=dict)

    @property
    def messages(self) -> int:
        return sum(b.messages for b in self.batches)

    @property
    def rows_written(self) -> int:
        return sum(b.rows_written for b in self.batches)

    @property
    def quarantined(self) -> int:
        return sum(b.quarantined for b in self.batches)

    @property
    def bytes(self) -> int:
        return sum(b.bytes for b in self.batches)

    @property
    def reasons(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for b in self.batches:
            for k, v in b.reasons.items():
                out[k] = out.get(k, 0) + v
        return out

    @property
    def offsets_lost(self) -> dict[int, int]:
        """partition -> offsets deleted by retention before any pull read them."""
        return {p.partition: p.lost for p in self.plans if p.lost}

    @property
    def offset_ranges(self) -> dict[int, tuple[int, int]]:
        """partition -> (first offset read, next offset) over the whole run."""
        out: dict[int, tuple[int, int]] = {}
        for b in self.batches:
            for p, (lo, hi) in b.ranges.items():
                out[p] = (min(lo, out[p][0]), max(hi, out[p][1])) if p in out else (lo, hi)
        return out


def _broker_error(bootstrap: str, exc: Exception) -> BrokerUnavailable:
    return BrokerUnavailable(
        f"Kafka broker at {bootstrap} is unreachable: {exc}. Nothing was read and no offsets "
        "were advanced. Start the broker (`crypto-assets broker --background` for the embedded "
        "one) or fix KAFKA_BOOTSTRAP_SERVERS, then re-run."
    )


def _stored_offsets(conn, topic: str) -> dict[int, tuple[int, str | None]]:
    rows = conn.sql(
        "SELECT kafka_partition, next_offset, cluster_id FROM ingest_positions WHERE kafka_topic = ?", params=[topic]
    ).fetchall()
    if not rows:
        # a warehouse from before ingest_positions: derive them once from the offsets history
        conn.execute(
            """
            INSERT INTO ingest_positions
            SELECT kafka_topic, kafka_partition, next_offset, cluster_id, batch_id FROM ingest_offsets
            WHERE kafka_topic = ?
            QUALIFY row_number() OVER (PARTITION BY kafka_partition ORDER BY batch_id DESC) = 1
            ON CONFLICT DO NOTHING
            """,
            [topic],
        )
        rows = conn.sql(
            "SELECT kafka_partition, next_offset, cluster_id FROM ingest_positions WHERE kafka_topic = ?", params=[topic]
        ).fetchall()
    return {int(p): (int(o), c) for p, o, c in rows}


def plan_partitions(
    watermarks: dict[int, tuple[int, int]],
    stored: dict[int, tuple[int, str | None]],
    cluster_id: str | None,
) -> list[PartitionPlan]:
    """Decide where each partition starts, noticing when the stored offsets no longer describe
    the broker's log. Pure: unit-tested on its own."""
    plans = []
    for p in sorted(watermarks):
        low, high = watermarks[p]
        prev = stored.get(p)
        reason = None
        lost = 0
        if prev is None:
            start = low
            if low > 0:  # a new partition's log starts at 0: the first `low` offsets are gone
                lost = low
                reason = (
                    f"partition {p}: first pull, and the log already starts at offset {low}: offsets "
                    f"0..{low - 1} ({low} messages) were deleted by retention before any pull read them. "
                    f"Starting from the earliest available offset {low}."
                )
        else:
            offset, prev_cluster = prev
            if prev_cluster and cluster_id and prev_cluster != cluster_id:
                reason = (
                    f"partition {p}: the cluster id changed ({prev_cluster} -> {cluster_id}); the broker "
                    f"was restarted or replaced, so stored offset {offset} does not refer to this log. "
                    f"Resuming from the earliest available offset {low}."
                )
                start = low
            elif offset > high:
                reason = (
                    f"partition {p}: stored offset {offset} is beyond the high watermark {high} (topic "
                    f"recreated or log truncated). Resuming from the earliest available offset {low}."
                )
                start = low
            elif offset < low:
                lost = low - offset
                reason = (
                    f"partition {p}: offsets {offset}..{low - 1} ({low - offset} messages) were deleted "
                    f"by retention before they were read. Resuming from the earliest available offset {low}."
                )
                start = low
            else:
                start = offset
        plans.append(PartitionPlan(p, low, high, prev[0] if prev else None, start, reason, start, lost))
    return plans


def lost_offsets_notice(plans: list[PartitionPlan]) -> str | None:
    """One line with the total of offsets retention deleted unread, per partition."""
    lost = {p.partition: p.lost for p in plans if p.lost}
    if not lost:
        return None
    parts = ", ".join(f"partition {p}: {n}" for p, n in sorted(lost.items()))
    return f"{sum(lost.values())} offsets were deleted by retention before they were read ({parts})."


class _Consumer:
    """Owns the confluent-kafka consumer for one pull; converts broker failures to BrokerUnavailable."""

    def __init__(self, kafka: KafkaResource) -> None:
        from confluent_kafka import Consumer

        self.kafka = kafka
        self.bootstrap = kafka.bootstrap()
        self.consumer = Consumer(kafka.consumer_config(**{"auto.offset.reset": "error"}))

    def metadata(self, topic: str) -> tuple[str | None, list[int]]:
        from confluent_kafka import KafkaException

        try:
            md = self.consumer.list_topics(topic=topic, timeout=self.kafka.timeout_s)
        except KafkaException as exc:
            raise _broker_error(self.bootstrap, exc) from exc
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None and not tmd.partitions:
            return md.cluster_id, []
        return md.cluster_id, sorted(tmd.partitions)

    def watermarks(self, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
        from confluent_kafka import KafkaException, TopicPartition

        out = {}
        for p in partitions:
            try:
                out[p] = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=self.kafka.timeout_s, cached=False
                )
            except KafkaException as exc:
                raise _broker_error(self.bootstrap, exc) from exc
            if out[p] is None:
                raise _broker_error(self.bootstrap, TimeoutError("watermark query timed out"))
        return out

    def close(self) -> None:
        try:
            self.consumer.close()
        except Exception:  # noqa: BLE001 - closing a consumer of a dead broker may raise
            pass


_TS_MS = operator.itemgetter(1)  # Message.timestamp() -> (type, ms)


def _consume_batch(
    client: _Consumer, topic: str, plans: list[PartitionPlan], limit: int, cfg: PullConfig
) -> tuple[list[int], list[int], list[bytes | None], list[bytes | None], list[int]]:
    """Read up to `limit` messages, each partition from its next_offset up to its snapshot high.

    Returns parallel lists (partition, offset, key, value, timestamp_ms). Per partition the
    result is a contiguous prefix, so the next offset of a partition is its last offset + 1.
    """
    from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

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
            msgs = consumer.consume(want, timeout=cfg.poll_timeout_s)
            if not msgs:
                # Nothing arrived: partitions whose fetch position is past the snapshot are done
                # (covers offset gaps such as transaction markers).
                positions = consumer.position([TopicPartition(topic, p) for p in todo])
                for tp in positions:
                    if tp.offset >= 0 and tp.offset >= ends[tp.partition]:
                        todo.pop(tp.partition, None)
                if todo and time.monotonic() - last_progress > cfg.idle_timeout_s:
                    raise _broker_error(
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
                err = errors[0].error()
                if err.code() == KafkaError._PARTITION_EOF:
                    msgs = [m for m in msgs if m.error() is None]
                else:
                    raise _broker_error(client.bootstrap, KafkaException(err))
            m_parts = list(map(Message.partition, msgs))
            m_offs = list(map(Message.offset, msgs))
            # Within a partition messages arrive in offset order, so the last one seen is the highest.
            last = dict(zip(m_parts, m_offs))
            if any(o >= ends[p] for p, o in last.items()):  # past a snapshot end: drop those
                keep = [o < ends[p] for p, o in zip(m_parts, m_offs)]
                msgs = [m for m, k in zip(msgs, keep) if k]
                m_parts = [p for p, k in zip(m_parts, keep) if k]
                m_offs = [o for o, k in zip(m_offs, keep) if k]
            room = limit - len(offs)
            if len(msgs) > room:  # arrival order is offset order within a partition: a prefix per partition
                msgs, m_parts, m_offs = msgs[:room], m_parts[:room], m_offs[:room]
            parts.extend(m_parts)
            offs.extend(m_offs)
            keys.extend(map(Message.key, msgs))
            vals.extend(map(Message.value, msgs))
            tss.extend(map(_TS_MS, map(Message.timestamp, msgs)))
            # Partitions that reached their snapshot end are done.
            for p, o in dict(zip(m_parts, m_offs)).items():
                position[p] = o + 1
                if o + 1 >= ends[p]:
                    todo.pop(p, None)
    finally:
        consumer.unassign()
    return parts, offs, keys, vals, tss


# The staged rows (parsed JSON + Kafka coordinates) with their timestamps typed.
_TYPED_SQL = """
SELECT s.*,
       try_cast(s.last_updated_at AS TIMESTAMPTZ)      AS event_time,
       try_cast(s.ingestion_timestamp AS TIMESTAMPTZ)  AS ingest_time
FROM staged s
"""

# Why a typed row is unusable (NULL = valid). One expression shared by the optimistic insert of
# a clean batch and the row-by-row judgement, so both always agree.
_REASON_SQL = """
      CASE
        WHEN schema_version IS NULL THEN 'missing:schema_version'
        WHEN schema_version <> $schema_version THEN 'unsupported_schema_version'
        WHEN source IS NULL OR source = '' THEN 'missing:source'
        WHEN coin_id IS NULL OR coin_id = '' THEN 'missing:coin_id'
        WHEN symbol IS NULL OR symbol = '' THEN 'missing:symbol'
        WHEN price_usd IS NULL THEN 'missing:price_usd'
        WHEN last_updated_at IS NULL THEN 'missing:last_updated_at'
        WHEN NOT list_contains($coins, coin_id) THEN 'unknown_coin'
        WHEN NOT isfinite(price_usd) THEN 'non_finite_price'
        WHEN price_usd <= 0 THEN 'non_positive_price'
        WHEN volume_24h_usd < 0 OR NOT isfinite(volume_24h_usd) THEN 'invalid_volume'
        WHEN market_cap_usd < 0 OR NOT isfinite(market_cap_usd) THEN 'invalid_market_cap'
        WHEN event_time IS NULL THEN 'invalid_timestamp'
        WHEN event_time < TIMESTAMPTZ '2009-01-03 00:00:00+00' THEN 'timestamp_too_old'
        WHEN event_time > $now + $max_skew THEN 'timestamp_in_future'
        WHEN ingestion_timestamp IS NOT NULL AND ingest_time IS NULL THEN 'invalid_timestamp'
      END"""

_JUDGE_SQL = f"""
CREATE OR REPLACE TEMP TABLE judged AS
WITH typed AS ({_TYPED_SQL}), reasoned AS (
    SELECT t.*, {_REASON_SQL} AS reason
    FROM typed t
)
SELECT r.*, {{verdict}} AS verdict
FROM reasoned r
"""

# The second and later copies of a (coin_id, event time) in the batch are duplicates.
_IN_BATCH_DUPLICATE_VERDICT = """
  CASE WHEN r.reason IS NULL AND (
         row_number() OVER (PARTITION BY r.reason IS NULL, r.coin_id, r.event_time
                            ORDER BY r.kafka_partition, r.kafka_offset) > 1)
       THEN 'duplicate' ELSE r.reason END"""

_RAW_COLUMNS_SQL = """coin_id, symbol, source, schema_version, price_usd, market_cap_usd, volume_24h_usd,
                   change_24h_pct, change_7d_pct, event_time, ingest_time, $topic, kafka_partition,
                   kafka_offset, make_timestamptz(kafka_ts_ms * 1000), $batch_id, $now"""


def _detail_for(reason: str) -> str:
    return {
        "unsupported_schema_version": f"schema_version is not {SCHEMA_VERSION}",
        "unknown_coin": "coin_id is not in the configured COINS",
        "non_finite_price": "price_usd is NaN or infinite",
        "non_positive_price": "price_usd must be > 0",
        "invalid_volume": "volume_24h_usd must be >= 0 and finite",
        "invalid_market_cap": "market_cap_usd must be >= 0 and finite",
        "invalid_timestamp": "timestamp is not ISO-8601",
        "timestamp_too_old": f"last_updated_at before {EARLIEST_EVENT_TIME}",
        "timestamp_in_future": "last_updated_at too far in the future",
        "duplicate": "same (coin_id, last_updated_at) already ingested",
    }.get(reason, reason.replace(":", " ") if reason.startswith("missing") else reason)


def _judge_sql(in_batch_dups: bool) -> str:
    """Without repeated (coin_id, event_time) keys in the batch the window (a sort of the whole
    batch, the costliest part of judging) cannot find anything, so it is skipped."""
    return _JUDGE_SQL.format(verdict=_IN_BATCH_DUPLICATE_VERDICT if in_batch_dups else "r.reason")


_COORD_TYPES = {"kafka_partition": pl.Int32, "kafka_offset": pl.Int64, "kafka_ts_ms": pl.Int64}


def _stage(
    consumed: tuple[list[int], list[int], list, list, list[int]], cfg: PullConfig
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse the values and attach their Kafka coordinates: (staged rows, parse rejects with their
    raw bytes and key)."""
    parts, offs, keys, vals, tss = consumed
    parsed = parse_values([v if v is not None else b"" for v in vals] if None in vals else vals,
                          max_bytes=cfg.max_message_bytes)
    coords = pl.DataFrame(
        [pl.Series(name, col, dtype=dtype) for (name, dtype), col in zip(_COORD_TYPES.items(), (parts, offs, tss))]
    )
    meta = coords.with_row_index("idx")
    if not parsed.rejects.height and parsed.parsed.height == len(offs) and parsed.parsed["idx"].is_sorted():
        # Every message parsed, in order (the normal case): the coordinates line up row by row.
        staged = parsed.parsed.hstack(coords)
    else:
        staged = parsed.parsed.join(meta, on="idx", how="left")
    rejects = parsed.rejects.join(meta, on="idx", how="left")
    rej_idx = rejects["idx"].to_list()
    rejects = rejects.with_columns(
        raw_value=pl.Series("raw_value", [(vals[i] or b"")[: cfg.max_stored_bytes] for i in rej_idx], dtype=pl.Binary),
        raw_size=pl.Series("raw_size", [len(vals[i] or b"") for i in rej_idx], dtype=pl.Int64),
        message_key=pl.Series("message_key", [keys[i] for i in rej_idx], dtype=pl.Binary),
    )
    return staged, rejects


def _insert_clean(conn, topic: str, batch_id: int, now: datetime, rules: dict, expected: int) -> tuple | None:
    """The normal batch has no bad row and no duplicate: insert it straight from the staged rows,
    then prove it was clean on the stored, typed columns (cheap: no casts, zone maps on batch_id
    and event time). Returns (min, max) event time, or None when the batch needs the careful path
    (the caller rolls back)."""
    (inserted,) = conn.execute(
        f"INSERT INTO raw_ticks SELECT {_RAW_COLUMNS_SQL} FROM ({_TYPED_SQL}) WHERE ({_REASON_SQL}) IS NULL",
        {**rules, "topic": topic, "batch_id": batch_id},
    ).fetchone()
    if inserted != expected:
        return None
    lo, hi = first(conn, "SELECT min(last_updated_at), max(last_updated_at) FROM raw_ticks WHERE batch_id = ?", [batch_id])
    if lo is None:
        return lo, hi
    # Repeated (coin_id, event time) among the rows in the batch's time range: inside the batch or
    # against ticks committed earlier. The range keeps the cost proportional to the batch.
    dups = scalar(
        conn,
        "SELECT count(*) - count(DISTINCT (coin_id, last_updated_at)) FROM raw_ticks "
        "WHERE last_updated_at BETWEEN ? AND ?",
        [lo, hi],
    )
    if dups:
        return None
    mark_dirty(
        conn, BRONZE_DATASET, f"SELECT last_updated_at AS event_time, symbol FROM raw_ticks WHERE batch_id = {int(batch_id)}"
    )
    return lo, hi


def _write_judged(
    conn, topic: str, batch_id: int, now: datetime, vals: list[bytes | None], keys: list, in_batch_dups: bool,
    rules: dict, cfg: PullConfig,
) -> tuple[int, tuple, dict[str, int]]:
    """The careful path for a batch with bad rows or duplicates: a verdict per row, valid rows to
    raw_ticks, the others to quarantine with their raw bytes. Returns (written, (min, max) event
    time, semantic reasons)."""
    conn.execute(_judge_sql(in_batch_dups), rules)
    # Duplicates of ticks committed by earlier batches.
    conn.execute(
        """
        UPDATE judged SET verdict = 'duplicate'
        FROM (SELECT coin_id, last_updated_at FROM raw_ticks
              WHERE last_updated_at BETWEEN (SELECT min(event_time) FROM judged WHERE verdict IS NULL)
                                        AND (SELECT max(event_time) FROM judged WHERE verdict IS NULL)) r
        WHERE judged.verdict IS NULL AND judged.coin_id = r.coin_id AND judged.event_time = r.last_updated_at
        """
    )
    params = {"topic": topic, "batch_id": batch_id, "now": now}
    conn.execute(f"INSERT INTO raw_ticks SELECT {_RAW_COLUMNS_SQL} FROM judged WHERE verdict IS NULL", params)
    written, lo, hi = first(
        conn, "SELECT count(*), min(event_time), max(event_time) FROM judged WHERE verdict IS NULL"
    )
    # Semantic rejects need their raw bytes; fetch them only for the (few) rejected rows.
    bad = conn.sql("SELECT idx, verdict FROM judged WHERE verdict IS NOT NULL").pl()
    if bad.height:
        bad_idx = bad["idx"].to_list()
        conn.register(
            "bad_raw",
            pl.DataFrame(
                {
                    "idx": pl.Series(bad_idx, dtype=pl.UInt32),
                    "raw": pl.Series([(vals[i] or b"")[: cfg.max_stored_bytes] for i in bad_idx], dtype=pl.Binary),
                    "raw_size": pl.Series([len(vals[i] or b"") for i in bad_idx], dtype=pl.Int64),
                    "message_key": pl.Series([keys[i] for i in bad_idx], dtype=pl.Binary),
                    "detail": pl.Series([_detail_for(v) for v in bad["verdict"].to_list()], dtype=pl.String),
                }
            ).to_arrow(),
        )
        conn.execute(
            """
            INSERT INTO quarantine
            SELECT 'raw_ticks', j.verdict, b.detail, $topic, j.kafka_partition, j.kafka_offset,
                   b.message_key, b.raw, b.raw_size, j.coin_id, j.event_time, $batch_id, $now, NULL
            FROM judged j JOIN bad_raw b USING (idx)
            """,
            params,
        )
    if written:
        mark_dirty(conn, BRONZE_DATASET, "SELECT event_time, symbol FROM judged WHERE verdict IS NULL")
    reasons = dict(conn.sql("SELECT verdict, count(*) FROM judged WHERE verdict IS NOT NULL GROUP BY 1").fetchall())
    return int(written), (lo, hi), reasons


def _write_batch(
    conn,
    topic: str,
    cluster_id: str | None,
    run_id: str | None,
    plans: list[PartitionPlan],
    consumed: tuple[list[int], list[int], list, list, list[int]],
    coins: list[str],
    cfg: PullConfig,
    started_at: datetime,
) -> BatchStats:
    _parts, offs, keys, vals, _tss = consumed
    n = len(offs)
    now = datetime.now(timezone.utc)
    staged, rejects = _stage(consumed, cfg)
    conn.register("staged", staged.to_arrow())
    conn.register("rejects_in", rejects.to_arrow())
    fault_point("before_write")
    rules = {"schema_version": SCHEMA_VERSION, "coins": coins, "now": now, "max_skew": cfg.max_future_skew}
    conn.execute("BEGIN TRANSACTION")
    try:
        batch_id = scalar(conn, "SELECT coalesce(max(batch_id), 0) + 1 FROM ingest_batches")
        ev = _insert_clean(conn, topic, batch_id, now, rules, staged.height)
        if ev is not None:
            written, reasons = staged.height, {}
        else:
            # A bad row or a duplicate: undo the optimistic insert and judge row by row.
            conn.execute("ROLLBACK")
            conn.execute("BEGIN TRANSACTION")
            in_batch_dups = scalar(
                conn,
                "SELECT count(*) - count(DISTINCT (coin_id, try_cast(last_updated_at AS TIMESTAMPTZ))) FROM staged",
            )
            written, ev, reasons = _write_judged(
                conn, topic, batch_id, now, vals, keys, bool(in_batch_dups), rules, cfg
            )
        if rejects.height:
            conn.execute(
                """
                INSERT INTO quarantine
                SELECT 'raw_ticks', reason, detail, $topic, kafka_partition, kafka_offset, message_key,
                       raw_value, raw_size, NULL, NULL, $batch_id, $now, NULL
                FROM rejects_in
                """,
                {"topic": topic, "batch_id": batch_id, "now": now},
            )
            for reason, count in rejects.group_by("reason").len().iter_rows():
                reasons[reason] = reasons.get(reason, 0) + count
        ranges: dict[int, tuple[int, int]] = {}
        counts: dict[int, int] = {}
        if n:
            rng = (
                staged.select("kafka_partition", "kafka_offset")
                .vstack(rejects.select("kafka_partition", "kafka_offset"))
                .group_by("kafka_partition")
                .agg(pl.col("kafka_offset").min().alias("lo"), pl.col("kafka_offset").max().alias("hi"), pl.len())
            )
            for p, lo_, hi_, cnt in rng.iter_rows():
                ranges[int(p)] = (int(lo_), int(hi_) + 1)
                counts[int(p)] = int(cnt)
        offset_rows = []
        for plan in plans:
            if plan.partition in ranges:
                lo_, nxt = ranges[plan.partition]
                from_offset = plan.next_offset
                if lo_ != from_offset:
                    raise RuntimeError(
                        f"partition {plan.partition}: read started at {lo_}, expected {from_offset}"
                    )
                count = counts[plan.partition]
            elif plan.reset_reason and plan.start == plan.next_offset:
                from_offset = nxt = plan.start  # record the reset even if nothing was read (once: it is stored)
                count = 0
            else:
                continue
            offset_rows.append(
                [
                    batch_id, topic, plan.partition, from_offset, nxt, count, cluster_id,
                    plan.reset_reason if plan.start == plan.next_offset else None, now,
                ]
            )
        if offset_rows:
            conn.executemany("INSERT INTO ingest_offsets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", offset_rows)
            conn.executemany(
                """
                INSERT INTO ingest_positions VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (kafka_topic, kafka_partition) DO UPDATE SET next_offset = excluded.next_offset,
                    cluster_id = excluded.cluster_id, batch_id = excluded.batch_id
                """,
                [[r[1], r[2], r[4], r[6], r[0]] for r in offset_rows],
            )
        quarantined = n - written
        nbytes = sum(map(len, filter(None, vals)))
        conn.execute(
            "INSERT INTO ingest_batches VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [batch_id, run_id, topic, cluster_id, n, written, quarantined, nbytes, ev[0], ev[1], started_at, now],
        )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        for name in ("staged", "rejects_in", "bad_raw"):
            try:
                conn.unregister(name)
            except Exception:  # noqa: BLE001
                pass
    for plan in plans:
        if plan.partition in ranges:
            plan.next_offset = ranges[plan.partition][1]
    return BatchStats(batch_id, n, int(written), int(quarantined), nbytes, ranges, ev[0], ev[1], reasons)


def _commit_group_offsets(client: _Consumer, topic: str, plans: list[PartitionPlan]) -> bool:
    """Mirror DuckDB's offsets into the consumer group; only lag monitoring reads them."""
    from confluent_kafka import TopicPartition

    offsets = [TopicPartition(topic, p.partition, p.next_offset) for p in plans if p.next_offset > 0]
    if not offsets:
        return True
    try:
        client.consumer.commit(offsets=offsets, asynchronous=False)
        return True
    except Exception as exc:  # noqa: BLE001 - the DuckDB offsets are the truth; lag will catch up
        log.warning("committing offsets to the consumer group failed (monitoring only): %s", exc)
        return False


def _dlq_identity(source_topic: str):
    """(source partition, source offset) of a DLQ message of `source_topic`, else None."""
    from crypto_assets.kafka.outbox import header

    def identity(message) -> tuple[int, int] | None:
        if header(message, "source.topic") != source_topic:
            return None
        try:
            return int(header(message, "source.partition")), int(header(message, "source.offset"))
        except (TypeError, ValueError):
            return None

    return identity


def _mark_dlq_sent(conn, source_topic: str, sent: list[tuple[int, int]]) -> None:
    conn.register(
        "sent",
        pl.DataFrame(
            {"p": pl.Series([p for p, _ in sent], dtype=pl.Int32), "o": pl.Series([o for _, o in sent], dtype=pl.Int64)}
        ).to_arrow(),
    )
    try:
        conn.execute(
            """
            UPDATE quarantine SET dlq_published_at = now()
            FROM sent WHERE quarantine.stage = 'raw_ticks' AND quarantine.kafka_topic = ?
              AND quarantine.kafka_partition = sent.p AND quarantine.kafka_offset = sent.o
              AND quarantine.dlq_published_at IS NULL
            """,
            [source_topic],
        )
    finally:
        conn.unregister("sent")


def publish_dlq(conn, kafka: KafkaResource, source_topic: str, limit: int = 100_000) -> int:
    """Send quarantined-but-unsent raw messages to the DLQ topic with the reason in headers,
    then mark them sent: an outbox, exactly once also across a kill (crypto_assets.kafka.outbox).
    Returns how many were sent by this call."""
    from crypto_assets.kafka.outbox import already_sent, begin_send, end_send

    outbox = f"dlq:{source_topic}"
    found = already_sent(conn, kafka, outbox, _dlq_identity(source_topic))
    if found is not None:  # an interrupted send: mark what reached the topic, send the rest below
        with transaction(conn):
            if found:
                _mark_dlq_sent(conn, source_topic, sorted(found))
            end_send(conn, outbox)
    rows = conn.sql(
        """
        SELECT kafka_partition, kafka_offset, message_key, raw_value, reason, coalesce(detail, ''), batch_id
        FROM quarantine
        WHERE stage = 'raw_ticks' AND kafka_topic = ? AND dlq_published_at IS NULL
        ORDER BY kafka_partition, kafka_offset LIMIT ?
        """,
        params=[source_topic, limit],
    ).fetchall()
    if not rows:
        return 0
    from crypto_assets.kafka.producer import TickProducer

    begin_send(conn, kafka, outbox, kafka.dlq_topic)
    producer = TickProducer(kafka, topic=kafka.dlq_topic)
    for i, (part, off, key, raw, reason, detail, batch_id) in enumerate(rows):
        if i == len(rows) // 2 and fault_armed("dlq_half_sent"):
            producer.flush()
            fault_point("dlq_half_sent")
        producer.send_raw(
            key,
            raw or b"",
            headers=[
                ("reason", reason.encode()),
                ("detail", detail.encode()),
                ("source.topic", source_topic.encode()),
                ("source.partition", str(part).encode()),
                ("source.offset", str(off).encode()),
                ("batch_id", str(batch_id).encode()),
            ],
        )
    producer.flush()
    fault_point("before_dlq_mark")
    with transaction(conn):
        _mark_dlq_sent(conn, source_topic, [(r[0], r[1]) for r in rows])
        end_send(conn, outbox)
    return len(rows)


def pull_raw_ticks(
    kafka: KafkaResource,
    lakehouse: LakehouseResource,
    cfg: PullConfig | None = None,
    run_id: str | None = None,
    logger: logging.Logger | Any | None = None,
) -> PullResult:
    """Run one bounded pull (possibly several committed batches) and return what happened."""
    cfg = cfg or PullConfig()
    logger = logger or log
    t0 = time.monotonic()
    started_at = datetime.now(timezone.utc)
    topic = kafka.raw_topic
    client = _Consumer(kafka)
    result = PullResult(topic=topic, bootstrap=client.bootstrap, cluster_id=None)
    try:
        cluster_id, partitions = client.metadata(topic)
        result.cluster_id = cluster_id
        if not partitions:
            result.notices.append(f"topic {topic} does not exist yet on {client.bootstrap}: nothing to read")
            return result
        watermarks = client.watermarks(topic, partitions)
        with lakehouse.connect() as conn:
            plans = plan_partitions(watermarks, _stored_offsets(conn, topic), cluster_id)
            result.plans = plans
            summary = lost_offsets_notice(plans)
            for notice in [p.reset_reason for p in plans if p.reset_reason] + ([summary] if summary else []):
                result.notices.append(notice)
                logger.warning(notice)
            budget = cfg.max_messages
            first = True
            while True:
                limit = min(cfg.batch_size, budget)
                consumed = _consume_batch(client, topic, plans, limit, cfg)
                if not consumed[1] and not (first and any(p.reset_reason for p in plans)):
                    break
                stats = _write_batch(
                    conn, topic, cluster_id, run_id, plans, consumed, list(lakehouse.coins), cfg, started_at
                )
                first = False
                result.batches.append(stats)
                logger.info(
                    f"batch {stats.batch_id}: {stats.messages} messages -> {stats.rows_written} rows, "
                    f"{stats.quarantined} quarantined"
                )
                fault_point("after_duckdb_commit")
                result.kafka_commit_ok &= _commit_group_offsets(client, topic, plans)
                budget -= stats.messages
                if budget <= 0 or not consumed[1]:
                    break
            if cfg.publish_dlq:
                result.dlq_published = publish_dlq(conn, kafka, topic)
            if cfg.export_parquet:
                result.export = export_dirty(
                    conn, lakehouse.lake_path, BRONZE_DATASET, "raw_ticks", "last_updated_at",
                    "coin_id, last_updated_at",
                )
        result.remaining_lag = {p.partition: p.lag for p in plans}
    finally:
        client.close()
        result.duration_s = time.monotonic() - t0
    return result
