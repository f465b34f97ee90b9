"""Bronze's write of one consumed batch: parse and stage it, insert it (optimistically when it
is clean, row by row with verdicts when it is not), quarantine the rejects with their raw
bytes, and record offsets, positions and the batch, all in ONE DuckDB transaction."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import cast

import duckdb
import polars as pl

from crypto_assets.faults import fault_point
from crypto_assets.ingest.config import BRONZE_DATASET, PullConfig
from crypto_assets.ingest.consume import Consumed
from crypto_assets.ingest.parse import parse_values
from crypto_assets.ingest.results import BatchStats, PartitionPlan, add_time
from crypto_assets.ingest.validate import RAW_COLUMNS_SQL, REASON_SQL, TYPED_SQL, detail_for, judge_params, judge_sql
from crypto_assets.warehouse.lake_export import mark_dirty
from crypto_assets.warehouse.sql import first, scalar

_COORD_TYPES = {"kafka_partition": pl.Int32, "kafka_offset": pl.Int64, "kafka_ts_ms": pl.Int64}


def stage(consumed: Consumed, cfg: PullConfig,
          timings: dict[str, float] | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Parse the values and attach their Kafka coordinates: (staged rows, parse rejects with their
    raw bytes and key)."""
    parts, offs, keys, vals, tss = consumed
    t_parse = time.perf_counter()
    parsed = parse_values([v if v is not None else b"" for v in vals] if None in vals else cast("list[bytes]", vals),
                          max_bytes=cfg.max_message_bytes)
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


def insert_clean(
    conn: duckdb.DuckDBPyConnection, topic: str, batch_id: int, now: datetime, rules: dict, expected: int
) -> tuple | None:
    """The normal batch has no bad row and no duplicate: insert it straight from the staged rows,
    then prove it was clean on the stored, typed columns (cheap: no casts, zone maps on batch_id
    and event time). Returns (min, max) event time, or None when the batch needs the careful path
    (the caller rolls back)."""
    (inserted,) = cast(tuple, conn.execute(
        f"INSERT INTO raw_ticks SELECT {RAW_COLUMNS_SQL} FROM ({TYPED_SQL}) WHERE ({REASON_SQL}) IS NULL",
        {**rules, "topic": topic, "batch_id": batch_id},
    ).fetchone())  # an INSERT returns its row count
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


def write_judged(
    conn: duckdb.DuckDBPyConnection, topic: str, batch_id: int, now: datetime, vals: list[bytes | None], keys: list,
    in_batch_dups: bool, rules: dict, cfg: PullConfig,
) -> tuple[int, tuple, dict[str, int]]:
    """The careful path for a batch with bad rows or duplicates: a verdict per row, valid rows to
    raw_ticks, the others to quarantine with their raw bytes. Returns (written, (min, max) event
    time, semantic reasons)."""
    conn.execute(judge_sql(in_batch_dups), rules)
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
    conn.execute(f"INSERT INTO raw_ticks SELECT {RAW_COLUMNS_SQL} FROM judged WHERE verdict IS NULL", params)
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
                    "detail": pl.Series([detail_for(v) for v in bad["verdict"].to_list()], dtype=pl.String),
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


def write_batch(
    conn: duckdb.DuckDBPyConnection,
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
    staged, rejects = stage(consumed, cfg, timings)
    conn.register("staged", staged.to_arrow())
    conn.register("rejects_in", rejects.to_arrow())
    fault_point("before_write")
    rules = judge_params(coins, now, cfg.max_future_skew)
    conn.execute("BEGIN TRANSACTION")
    try:
        batch_id = scalar(conn, "SELECT coalesce(max(batch_id), 0) + 1 FROM ingest_batches")
        ev = insert_clean(conn, topic, batch_id, now, rules, staged.height)
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
            written, ev, reasons = write_judged(
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
