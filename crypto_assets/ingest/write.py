"""Bronze's write of one consumed batch, the same for every contract: parse and stage it, let
the contract's row writer judge and insert it (crypto_assets.ingest.contract), quarantine the
parse rejects with their raw bytes, and record offsets, positions and the batch, all in ONE
DuckDB transaction."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import cast

import duckdb
import polars as pl

from crypto_assets.faults import fault_point
from crypto_assets.ingest.config import PullConfig
from crypto_assets.ingest.consume import Consumed
from crypto_assets.ingest.contract import BatchRows, BronzeContract
from crypto_assets.ingest.parse import parse_values
from crypto_assets.ingest.results import BatchStats, PartitionPlan, add_time
from crypto_assets.kafka.tick_contract import FIELDS
from crypto_assets.warehouse.sql import scalar

_COORD_TYPES = {"kafka_partition": pl.Int32, "kafka_offset": pl.Int64, "kafka_ts_ms": pl.Int64}


def stage(consumed: Consumed, cfg: PullConfig, timings: dict[str, float] | None = None,
          fields: dict[str, str] = FIELDS, strict_strings: tuple[str, ...] = ()) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse the values with the contract's fields and attach their Kafka coordinates: (staged
    rows, parse rejects with their raw bytes and key)."""
    parts, offs, keys, vals, tss = consumed
    t_parse = time.perf_counter()
    parsed = parse_values([v if v is not None else b"" for v in vals] if None in vals else cast("list[bytes]", vals),
                          max_bytes=cfg.max_message_bytes, fields=fields, strict_strings=strict_strings)
    add_time(timings, "parse", t_parse)
    coords = pl.DataFrame(
        [pl.Series(name, col, dtype=dtype) for (name, dtype), col in zip(_COORD_TYPES.items(), (parts, offs, tss), strict=True)]
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


def write_batch(
    conn: duckdb.DuckDBPyConnection,
    contract: BronzeContract,
    topic: str,
    cluster_id: str | None,
    run_id: str | None,
    plans: list[PartitionPlan],
    consumed: Consumed,
    coins: list[str],
    cfg: PullConfig,
    started_at: datetime,
    timings: dict[str, float] | None = None,
) -> BatchStats:
    """Write one consumed batch in ONE transaction: rows, quarantine rows, offsets, positions, the
    batch record and Parquet dirty markers; then advance the plans' next offsets."""
    _parts, offs, keys, vals, _tss = consumed
    n = len(offs)
    now = datetime.now(UTC)
    staged, rejects = stage(consumed, cfg, timings, contract.fields, contract.strict_strings)
    conn.register("staged", staged.to_arrow())
    conn.register("rejects_in", rejects.to_arrow())
    fault_point("before_write")
    conn.execute("BEGIN TRANSACTION")
    try:
        batch_id = scalar(conn, "SELECT coalesce(max(batch_id), 0) + 1 FROM ingest_batches")
        outcome = contract.write_rows(BatchRows(conn, topic, batch_id, now, staged.height, vals, keys, coins, cfg))
        written, ev, reasons = outcome.written, outcome.event_range, dict(outcome.reasons)
        if rejects.height:
            conn.execute(
                """
                INSERT INTO quarantine
                SELECT $stage, reason, detail, $topic, kafka_partition, kafka_offset, message_key,
                       raw_value, raw_size, NULL, NULL, $batch_id, $now, NULL
                FROM rejects_in
                """,
                {"stage": contract.table, "topic": topic, "batch_id": batch_id, "now": now},
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
        quarantined = n - written - outcome.skipped
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
    return BatchStats(batch_id, n, int(written), int(quarantined), nbytes, ranges, ev[0], ev[1], reasons,
                      outcome.skipped, outcome.extra)
