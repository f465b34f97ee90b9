"""Take ticks back out of clean_ticks by hand (`crypto-assets quarantine-ticks`): for a tick the
rules accepted but should not have (a coin's bad first tick, which nothing can refute, or a
bound that was too loose), or to unblock a failed blocking check.

The ticks move to `quarantine` (stage clean_ticks, reason `manual`), so raw = clean +
quarantined still holds per raw batch. Every derived asset then recomputes the coin from the
last remaining tick before them: that tick is stamped with a new clean_ticks sequence, the way
new rows are, so the next run of market_features, the candles and the hourly stats rebuilds
the coin from there (and deletes what it derived from the removed ticks). When no earlier tick
remains, the coin's derived rows before its first remaining tick are deleted here.
All of it is one transaction.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb

from crypto_assets.transforms.clean import ASSET
from crypto_assets.warehouse.incremental_table import incremental_table
from crypto_assets.warehouse.sql import first
from crypto_assets.warehouse.tables import TABLES

# Derived per-coin tables: table -> the date_trunc unit of its rows' times (None: a tick's own time).
DERIVED = {"market_features": None, "ohlcv_1m": "minute", "ohlcv_1h": "hour", "hourly_stats": "hour"}


def quarantine_clean_ticks(
    conn: duckdb.DuckDBPyConnection, coin_id: str, start: datetime, end: datetime, detail: str
) -> int:
    """Move the clean ticks of `coin_id` with start <= event_time <= end to quarantine; returns
    how many moved. The next incremental run recomputes everything derived from them."""
    conn.execute(TABLES["clean_coin_state"].ddl)
    now = datetime.now(UTC)
    p = {"coin": coin_id, "start": start, "end": end}
    where = "coin_id = $coin AND event_time BETWEEN $start AND $end"
    with incremental_table(conn, ASSET, upstream=None) as inc:
        conn.execute(f"CREATE OR REPLACE TEMP TABLE repair_moved AS SELECT * FROM clean_ticks WHERE {where}", p)
        moved = first(conn, "SELECT count(*) FROM repair_moved")[0]
        if not moved:
            inc.keep_state()
            return 0
        conn.execute(
            """
            INSERT INTO quarantine
            SELECT 'clean_ticks', 'manual', $detail, r.kafka_topic, c.kafka_partition, c.kafka_offset, NULL, NULL, NULL,
                   c.coin_id, c.event_time, c.raw_batch_id, $now, $now
            FROM repair_moved c
            LEFT JOIN raw_ticks r ON r.batch_id = c.raw_batch_id AND r.kafka_partition = c.kafka_partition
                                 AND r.kafka_offset = c.kafka_offset
            """,
            {"detail": detail, "now": now},
        )
        for table in (ASSET, *DERIVED):
            inc.mark_touched("SELECT event_time, symbol FROM repair_moved", table)
        conn.execute(f"DELETE FROM clean_ticks WHERE {where}", p)
        before = first(conn, "SELECT max(event_time) FROM clean_ticks WHERE coin_id = $coin AND event_time < $t",
                       {"coin": coin_id, "t": start})[0]
        if before is None:
            # Nothing earlier to recompute from: drop what was derived before the first remaining tick.
            after = first(conn, "SELECT min(event_time) FROM clean_ticks WHERE coin_id = $coin AND event_time > $t",
                          {"coin": coin_id, "t": end})[0]
            limit = {"coin": coin_id, "t": after or datetime.max.replace(tzinfo=UTC)}
            for table, unit in DERIVED.items():
                bound = f"date_trunc('{unit}', $t)" if unit else "$t"
                conn.execute(f"DELETE FROM {table} WHERE coin_id = $coin AND {TABLES[table].time_column} < {bound}", limit)
            conn.execute("DELETE FROM anomalies WHERE coin_id = $coin AND event_time < $t AND published_at IS NULL", limit)
        anchor = before if before is not None else after
        if anchor is not None:
            conn.execute(
                "UPDATE clean_ticks SET clean_seq = $seq WHERE coin_id = $coin AND event_time = $t",
                {"seq": inc.new_seq, "coin": coin_id, "t": anchor},
            )
        conn.execute(
            "UPDATE clean_coin_state SET max_event_time = coalesce("
            "(SELECT max(event_time) FROM clean_ticks WHERE coin_id = $coin), max_event_time) WHERE coin_id = $coin",
            {"coin": coin_id},
        )
    return int(moved)
