"""The tick contract's rows (crypto_raw -> raw_ticks): the optimistic insert of a clean batch,
proven clean on the stored typed columns, and the careful path, a verdict per row, for a batch
with bad rows or duplicates of (coin_id, last_updated_at). Runs inside the pull's transaction
(crypto_assets.ingest.write)."""

from __future__ import annotations

from datetime import datetime
from typing import cast

import duckdb
import polars as pl

from crypto_assets.ingest.config import BRONZE_DATASET, PullConfig
from crypto_assets.ingest.contract import BatchRows, RowsOutcome
from crypto_assets.ingest.validate import RAW_COLUMNS_SQL, REASON_SQL, TYPED_SQL, detail_for, judge_params, judge_sql
from crypto_assets.warehouse.lake_export import mark_dirty
from crypto_assets.warehouse.sql import first, scalar


def write_tick_rows(b: BatchRows) -> RowsOutcome:
    """Insert the batch optimistically; if it was not clean, roll back, BEGIN again and judge it
    row by row. Leaves the transaction open with the rows, quarantine rows and dirty markers."""
    conn = b.conn
    rules = judge_params(b.coins, b.now, b.cfg.max_future_skew)
    ev = insert_clean(conn, b.topic, b.batch_id, b.now, rules, b.staged_rows)
    if ev is not None:
        return RowsOutcome(b.staged_rows, ev, {})
    # A bad row or a duplicate: undo the optimistic insert and judge row by row.
    conn.execute("ROLLBACK")
    conn.execute("BEGIN TRANSACTION")
    in_batch_dups = scalar(
        conn, "SELECT count(*) - count(DISTINCT (coin_id, try_cast(last_updated_at AS TIMESTAMPTZ))) FROM staged"
    )
    written, ev, reasons = write_judged(conn, b.topic, b.batch_id, b.now, b.vals, b.keys, bool(in_batch_dups),
                                        rules, b.cfg)
    return RowsOutcome(written, ev, reasons)


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
