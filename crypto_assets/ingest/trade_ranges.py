"""Which trade ids bronze already holds, per product, as runs of consecutive ids
(`trade_id_ranges`), and the holes between them (`trade_gaps`).

Why runs and not raw_trades: a duplicate check against raw_trades by (exchange, product,
trade_id) cannot be pruned (row groups mix products whose id ranges overlap), so it would read
the whole history every batch. A product's runs are one row plus one per open hole: the
dedupe join, the merge and the gap bookkeeping all cost the batch plus the touched products'
runs. All statements run inside the pull batch's transaction, over temp table `judged_trades`
(the batch, judged: `reason` NULL and `seen` false = a new valid trade).

A gap is a hole that appears between the runs of a product: ids above the newest id seen (a
jump) or below the oldest one (a late straggler). A later arrival inside a recorded gap (a REST
heal, a late message) shrinks its `missing`; `healed_at` is set when it reaches 0.
"""

from __future__ import annotations

from datetime import datetime

import duckdb

from crypto_assets.warehouse.sql import first

NEW_TRADES = "SELECT exchange, product, trade_id FROM judged_trades WHERE reason IS NULL AND NOT seen"

# Runs of the products in the batch before it (kept to tell new holes from old ones) ...
_BEFORE_SQL = f"""
CREATE OR REPLACE TEMP TABLE trade_spans AS
SELECT t.exchange, t.product, min(r.first_id) AS old_min, max(r.last_id) AS old_max
FROM (SELECT DISTINCT exchange, product FROM ({NEW_TRADES})) t
LEFT JOIN trade_id_ranges r ON r.exchange = t.exchange AND r.product = t.product
GROUP BY ALL
"""

# ... and after it: the batch's own runs (gaps-and-islands) merged with the stored ones.
_MERGED_SQL = f"""
CREATE OR REPLACE TEMP TABLE merged_ranges AS
WITH new AS ({NEW_TRADES}),
islands AS (
    SELECT exchange, product, min(trade_id) AS first_id, max(trade_id) AS last_id
    FROM (SELECT *, trade_id - row_number() OVER (PARTITION BY exchange, product ORDER BY trade_id) AS g FROM new)
    GROUP BY exchange, product, g
),
stored AS (
    SELECT r.exchange, r.product, r.first_id, r.last_id FROM trade_id_ranges r
    SEMI JOIN trade_spans s ON r.exchange = s.exchange AND r.product = s.product
),
all_runs AS (SELECT * FROM stored UNION ALL SELECT * FROM islands),
ordered AS (
    SELECT *, max(last_id) OVER (PARTITION BY exchange, product ORDER BY first_id
                                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_max
    FROM all_runs
),
grouped AS (
    SELECT *, sum(CASE WHEN prev_max IS NULL OR first_id > prev_max + 1 THEN 1 ELSE 0 END)
              OVER (PARTITION BY exchange, product ORDER BY first_id ROWS UNBOUNDED PRECEDING) AS run
    FROM ordered
)
SELECT exchange, product, min(first_id) AS first_id, max(last_id) AS last_id FROM grouped GROUP BY exchange, product, run
"""

# Holes between the merged runs that lie outside what the product covered before: new gaps.
_NEW_GAPS_SQL = """
CREATE OR REPLACE TEMP TABLE new_gaps AS
SELECT h.exchange, h.product, h.first_missing, h.last_missing
FROM (SELECT exchange, product, last_id + 1 AS first_missing,
             lead(first_id) OVER (PARTITION BY exchange, product ORDER BY first_id) - 1 AS last_missing
      FROM merged_ranges) h
JOIN trade_spans s ON h.exchange = s.exchange AND h.product = s.product
WHERE h.last_missing IS NOT NULL AND (s.old_min IS NULL OR h.first_missing > s.old_max OR h.last_missing < s.old_min)
"""

# Open gaps of the batch's products: what of them the merged runs still leave missing.
_HEALS_SQL = """
CREATE OR REPLACE TEMP TABLE gap_heals AS
SELECT g.exchange, g.product, g.first_missing, g.missing AS was,
       g.last_missing - g.first_missing + 1
         - sum(least(m.last_id, g.last_missing) - greatest(m.first_id, g.first_missing) + 1) AS still
FROM trade_gaps g
JOIN merged_ranges m ON g.exchange = m.exchange AND g.product = m.product
                    AND m.first_id <= g.last_missing AND m.last_id >= g.first_missing
WHERE g.missing > 0
GROUP BY g.exchange, g.product, g.first_missing, g.last_missing, g.missing
HAVING still < was
"""


def record_ranges(conn: duckdb.DuckDBPyConnection, batch_id: int, now: datetime) -> dict[str, int]:
    """Merge the batch's new trade ids into `trade_id_ranges`, record the new gaps and shrink the
    ones it fills. Returns the batch's gap counters."""
    conn.execute(_BEFORE_SQL)
    conn.execute(_MERGED_SQL)
    conn.execute(_NEW_GAPS_SQL)
    conn.execute(_HEALS_SQL)
    conn.execute("DELETE FROM trade_id_ranges r USING trade_spans s WHERE r.exchange = s.exchange AND r.product = s.product")
    conn.execute("INSERT INTO trade_id_ranges SELECT exchange, product, first_id, last_id FROM merged_ranges")
    conn.execute(
        "INSERT INTO trade_gaps SELECT exchange, product, first_missing, last_missing, last_missing - first_missing + 1, "
        "$now, $batch_id, NULL FROM new_gaps",
        {"now": now, "batch_id": batch_id},
    )
    conn.execute(
        """
        UPDATE trade_gaps SET missing = h.still, healed_at = CASE WHEN h.still = 0 THEN $now END
        FROM gap_heals h
        WHERE trade_gaps.exchange = h.exchange AND trade_gaps.product = h.product
          AND trade_gaps.first_missing = h.first_missing
        """,
        {"now": now},
    )
    found, missing_found = first(conn, "SELECT count(*), coalesce(sum(last_missing - first_missing + 1), 0) FROM new_gaps")
    healed, filled = first(conn, "SELECT count(*) FILTER (WHERE still = 0), coalesce(sum(was - still), 0) FROM gap_heals")
    return {"gaps_found": int(found), "trades_missing_found": int(missing_found), "gaps_healed": int(healed),
            "trades_healed": int(filled)}
