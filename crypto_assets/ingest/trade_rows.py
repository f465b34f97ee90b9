"""The trade contract's rows (crypto_trades -> raw_trades), inside the pull's transaction
(crypto_assets.ingest.write): judge every staged trade in one statement, drop the trades seen
before (same exchange, product and trade_id: in this batch at a lower offset, or in a stored run
of trade_id_ranges), insert the new ones, quarantine the bad ones with their raw bytes, and move
the id runs and gaps (crypto_assets.ingest.trade_ranges).

Seen-before trades are normal for a trade tape (a REST heal overlaps the stream, a reconnect
replays the last match): they are counted (`skipped`), not quarantined, and the first copy
stored wins.
"""

from __future__ import annotations

import polars as pl

from crypto_assets.ingest.contract import BatchRows, RowsOutcome
from crypto_assets.ingest.trade_ranges import record_ranges
from crypto_assets.ingest.trade_validate import DETAIL_SQL, REASON_SQL, TYPED_SQL, judge_params
from crypto_assets.warehouse.lake_export import mark_dirty
from crypto_assets.warehouse.sql import first, scalar
from crypto_assets.warehouse.tables import TABLES

RAW_TRADES = TABLES["raw_trades"]
DATASET: str = RAW_TRADES.dataset or ""

# The second and later copies of a trade in the batch (by offset) are seen; the window (a sort
# of the batch) runs only when the batch repeats a key.
_IN_BATCH_RANK = ("row_number() OVER (PARTITION BY r.reason IS NULL, r.exchange, r.product, r.trade_id "
                  "ORDER BY r.kafka_partition, r.kafka_offset) > 1")

_JUDGE_SQL = f"""
CREATE OR REPLACE TEMP TABLE judged_trades AS
WITH typed AS ({TYPED_SQL}),
reasoned AS (SELECT t.*, {REASON_SQL} AS reason FROM typed t),
flagged AS (
    SELECT r.*, r.reason IS NULL AND (@in_batch OR h.first_id IS NOT NULL) AS seen
    FROM reasoned r
    LEFT JOIN trade_id_ranges h ON h.exchange = r.exchange AND h.product = r.product
                               AND r.reason IS NULL AND r.trade_id BETWEEN h.first_id AND h.last_id
)
SELECT f.*, CASE WHEN reason IS NOT NULL THEN {DETAIL_SQL} END AS detail FROM flagged f
"""

_INSERT_SQL = """
INSERT INTO raw_trades
SELECT exchange, product, base_currency, quote_currency, coin_id, trade_id, price_d, size_d, side, trade_ts,
       received_ts, origin, schema_version, $topic, kafka_partition, kafka_offset,
       make_timestamptz(kafka_ts_ms * 1000), $batch_id, $now
FROM judged_trades WHERE reason IS NULL AND NOT seen
"""


def judge_sql(in_batch_repeats: bool) -> str:
    return _JUDGE_SQL.replace("@in_batch", _IN_BATCH_RANK if in_batch_repeats else "FALSE")


def write_trade_rows(b: BatchRows) -> RowsOutcome:
    conn = b.conn
    params = {"topic": b.topic, "batch_id": b.batch_id, "now": b.now}
    repeats = scalar(conn, "SELECT count(*) - count(DISTINCT (exchange, product, trade_id)) FROM staged")
    conn.execute(judge_sql(bool(repeats)), judge_params(b.now, b.cfg.max_future_skew))
    conn.execute(_INSERT_SQL, params)
    written, skipped, lo, hi = first(
        conn, "SELECT count(*) FILTER (WHERE reason IS NULL AND NOT seen), count(*) FILTER (WHERE seen), "
              "min(trade_ts) FILTER (WHERE reason IS NULL AND NOT seen), max(trade_ts) FILTER (WHERE reason IS NULL "
              "AND NOT seen) FROM judged_trades",
    )
    bad = conn.sql("SELECT idx FROM judged_trades WHERE reason IS NOT NULL").pl()
    if bad.height:
        _quarantine(b, bad["idx"].to_list(), params)
    if written:
        mark_dirty(conn, DATASET, "SELECT trade_ts AS event_time, product AS symbol FROM judged_trades "
                                  "WHERE reason IS NULL AND NOT seen")
    extra = record_ranges(conn, b.batch_id, b.now) if written else {}
    reasons = dict(conn.sql("SELECT reason, count(*) FROM judged_trades WHERE reason IS NOT NULL GROUP BY 1").fetchall())
    return RowsOutcome(int(written), (lo, hi), reasons, skipped=int(skipped), extra={"duplicates": int(skipped), **extra})


def _quarantine(b: BatchRows, bad_idx: list[int], params: dict) -> None:
    """The rejected trades to quarantine with their raw bytes (fetched only for them)."""
    b.conn.register(
        "bad_raw",
        pl.DataFrame({
            "idx": pl.Series(bad_idx, dtype=pl.UInt32),
            "raw": pl.Series([(b.vals[i] or b"")[: b.cfg.max_stored_bytes] for i in bad_idx], dtype=pl.Binary),
            "raw_size": pl.Series([len(b.vals[i] or b"") for i in bad_idx], dtype=pl.Int64),
            "message_key": pl.Series([b.keys[i] for i in bad_idx], dtype=pl.Binary),
        }).to_arrow(),
    )
    b.conn.execute(
        """
        INSERT INTO quarantine
        SELECT 'raw_trades', j.reason, j.detail, $topic, j.kafka_partition, j.kafka_offset, r.message_key, r.raw,
               r.raw_size, j.coin_id, j.trade_ts, $batch_id, $now, NULL
        FROM judged_trades j JOIN bad_raw r USING (idx)
        """,
        params,
    )
