"""raw_ticks → clean_ticks: typed, validated, deduplicated, lateness-bounded.

Validation guarantees that every accepted tick yields finite features: besides the contract
rules, prices and 24h volumes must lie within absolute bounds, and a price many times away from
the coin's recent ones is quarantined as a jump (see plausibility.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import duckdb

from crypto_assets import rejections as R
from crypto_assets.transforms.plausibility import judge_jumps
from crypto_assets.warehouse.incremental_table import incremental_table
from crypto_assets.warehouse.sql import first
from crypto_assets.warehouse.tables import TABLES

ASSET = "clean_ticks"


@dataclass
class CleanConfig:
    lateness: timedelta = timedelta(minutes=10)  # older than the coin's newest tick minus this: late
    max_future_skew: timedelta = timedelta(minutes=5)  # ahead of its ingestion time by more: rejected
    horizon: timedelta = timedelta(days=365)  # older than ingestion minus this: rejected
    # Absolute bounds. Real coins trade from ~1e-8 USD (the smallest meme coins) to ~1e5 USD
    # (bitcoin); the bounds leave 4 orders of magnitude below and 3 above. Between two accepted
    # prices the ratio stays within 1e21 (log within ±49) and squares within 1e-24..1e18, far
    # from float64 overflow, underflow and subnormals, so every feature is finite.
    min_price_usd: float = 1e-12
    max_price_usd: float = 1e9
    # 24h volume: 0 (no trades) or within [min_positive_volume_usd, max_volume_usd]. The largest
    # coin trades ~1e11 USD a day; a positive volume below a millionth of a dollar is an artefact
    # (subnormals, unit errors). Volume ratios then stay within 1e19.
    max_volume_usd: float = 1e13
    min_positive_volume_usd: float = 1e-6
    # Jump guard (plausibility.py): a price more than max_jump_ratio away (either way) from most
    # of the coin's last jump_window candidate ticks within jump_max_age is quarantined. A 50 %
    # crash or a 2x rally is well inside; unit errors (x100 cents, x1e8 sats, 1e18 wei) are not.
    max_jump_ratio: float = 10.0
    jump_window: int = 5  # 0 disables the guard
    jump_max_age: timedelta = timedelta(hours=6)  # older predecessors do not count (a coin back after a pause)


@dataclass
class CleanResult:
    raw_batches: tuple[int, int] | None  # (first, last) raw batch processed
    rows_in: int = 0
    rows_out: int = 0
    quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    min_event_time: datetime | None = None  # of accepted rows: where downstream must recompute
    max_event_time: datetime | None = None
    seq: int = 0


_DETAILS = {
    R.UNKNOWN_COIN: "coin_id is not in the configured COINS",
    R.INVALID_PRICE: "price_usd must be finite and > 0",
    R.PRICE_OUT_OF_RANGE: "price_usd is outside the plausible range",
    R.INVALID_VOLUME: "volume_24h_usd must be finite and >= 0",
    R.VOLUME_OUT_OF_RANGE: "volume_24h_usd is outside the plausible range",
    R.TIMESTAMP_IN_FUTURE: "last_updated_at is ahead of its ingestion time by more than the allowed skew",
    R.TIMESTAMP_TOO_OLD: "last_updated_at is older than the configured horizon",
    R.LATE: "arrived after the coin's newest tick minus the lateness window",
    R.PRICE_JUMP: "price_usd is many times away from the coin's recent prices",
    R.DUPLICATE: "same (coin_id, last_updated_at) is already in clean_ticks",
}


def clean_increment(conn: duckdb.DuckDBPyConnection, coins: list[str], cfg: CleanConfig | None = None) -> CleanResult:
    cfg = cfg or CleanConfig()
    conn.execute(TABLES["clean_coin_state"].ddl)
    conn.execute(TABLES["clean_price_window"].ddl)
    now = datetime.now(UTC)
    with incremental_table(conn, ASSET, upstream="raw_ticks", before_commit="clean_before_commit") as inc:
        if inc.nothing_new:
            return CleanResult(None, seq=inc.seq)
        conn.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE clean_in AS
            SELECT r.*, row_number() OVER (PARTITION BY coin_id, last_updated_at
                                           ORDER BY batch_id, kafka_partition, kafka_offset) AS dup_rank
            FROM raw_ticks r WHERE {inc.window}
            """
        )
        conn.execute(
            """
            CREATE OR REPLACE TEMP TABLE clean_judged AS
            SELECT i.*,
              CASE
                WHEN NOT list_contains($coins, i.coin_id) THEN 'unknown_coin'
                WHEN NOT isfinite(i.price_usd) OR i.price_usd <= 0 THEN 'invalid_price'
                WHEN i.price_usd < $min_price OR i.price_usd > $max_price THEN 'price_out_of_range'
                WHEN NOT isfinite(i.volume_24h_usd) OR i.volume_24h_usd < 0 THEN 'invalid_volume'
                WHEN i.volume_24h_usd > $max_volume OR (i.volume_24h_usd > 0 AND i.volume_24h_usd < $min_volume)
                  THEN 'volume_out_of_range'
                WHEN i.last_updated_at > i.ingested_at + $skew THEN 'timestamp_in_future'
                WHEN i.last_updated_at < i.ingested_at - $horizon THEN 'timestamp_too_old'
                WHEN i.dup_rank > 1 THEN 'duplicate'
                WHEN s.max_event_time IS NOT NULL AND i.last_updated_at < s.max_event_time - $lateness THEN 'late'
              END AS verdict,
              CASE  -- the value and the rule (NULL: the fixed text of _DETAILS)
                WHEN verdict = 'unknown_coin' THEN printf('coin_id %s is not in the configured COINS', i.coin_id)
                WHEN verdict = 'invalid_price' THEN printf('price_usd %g must be finite and > 0', i.price_usd)
                WHEN verdict = 'price_out_of_range' THEN printf('price_usd %g is outside [%g, %g] USD', i.price_usd, $min_price, $max_price)
                WHEN verdict = 'invalid_volume' THEN printf('volume_24h_usd %g must be finite and >= 0', i.volume_24h_usd)
                WHEN verdict = 'volume_out_of_range'
                  THEN printf('volume_24h_usd %g is neither 0 nor within [%g, %g] USD', i.volume_24h_usd, $min_volume, $max_volume)
                WHEN verdict = 'timestamp_in_future'
                  THEN printf('last_updated_at %s is %s ahead of its ingestion at %s (allowed skew %s)',
                              i.last_updated_at, i.last_updated_at - i.ingested_at, i.ingested_at, $skew)
                WHEN verdict = 'timestamp_too_old'
                  THEN printf('last_updated_at %s is %s before its ingestion at %s (horizon %s)',
                              i.last_updated_at, i.ingested_at - i.last_updated_at, i.ingested_at, $horizon)
                WHEN verdict = 'late'
                  THEN printf('last_updated_at %s is before the coin''s newest tick %s minus the lateness %s',
                              i.last_updated_at, s.max_event_time, $lateness)
              END AS detail
            FROM clean_in i LEFT JOIN clean_coin_state s USING (coin_id)
            """,
            {
                "coins": coins,
                "min_price": cfg.min_price_usd,
                "max_price": cfg.max_price_usd,
                "min_volume": cfg.min_positive_volume_usd,
                "max_volume": cfg.max_volume_usd,
                "skew": cfg.max_future_skew,
                "horizon": cfg.horizon,
                "lateness": cfg.lateness,
            },
        )
        # Duplicates of rows cleaned by earlier runs (bronze dedups too; this is the second line).
        conn.execute(
            """
            UPDATE clean_judged SET verdict = 'duplicate', detail = NULL
            FROM (SELECT coin_id, event_time FROM clean_ticks
                  WHERE event_time >= (SELECT min(last_updated_at) FROM clean_judged WHERE verdict IS NULL OR verdict = 'late')
                    AND event_time <= (SELECT max(last_updated_at) FROM clean_judged WHERE verdict IS NULL OR verdict = 'late')) c
            WHERE (clean_judged.verdict IS NULL OR clean_judged.verdict = 'late') AND clean_judged.coin_id = c.coin_id
              AND clean_judged.last_updated_at = c.event_time
            """
        )
        judge_jumps(conn, cfg)
        conn.execute(
            "UPDATE clean_judged SET detail = map($reasons, $details)[verdict] WHERE verdict IS NOT NULL AND detail IS NULL",
            {"reasons": list(_DETAILS), "details": list(_DETAILS.values())},
        )
        conn.execute(
            """
            INSERT INTO clean_ticks
            SELECT coin_id, symbol, source, last_updated_at, price_usd, market_cap_usd, volume_24h_usd,
                   change_24h_pct, change_7d_pct, ingestion_timestamp, kafka_partition, kafka_offset,
                   batch_id, $seq
            FROM clean_judged WHERE verdict IS NULL ORDER BY last_updated_at
            """,
            {"seq": inc.new_seq},
        )
        conn.execute(
            """
            INSERT INTO quarantine
            SELECT 'clean_ticks', verdict, detail, kafka_topic, kafka_partition, kafka_offset, NULL, NULL, NULL,
                   coin_id, last_updated_at, batch_id, $now, $now
            FROM clean_judged WHERE verdict IS NOT NULL
            """,
            {"now": now},
        )
        conn.execute(
            """
            INSERT INTO clean_coin_state
            SELECT coin_id, max(last_updated_at) FROM clean_judged WHERE verdict IS NULL GROUP BY 1
            ON CONFLICT (coin_id) DO UPDATE SET max_event_time = greatest(clean_coin_state.max_event_time, excluded.max_event_time)
            """
        )
        inc.mark_touched("SELECT last_updated_at AS event_time, symbol FROM clean_judged WHERE verdict IS NULL")
        counts = first(
            conn,
            """
            SELECT count(*), count(*) FILTER (verdict IS NULL),
                   min(last_updated_at) FILTER (verdict IS NULL), max(last_updated_at) FILTER (verdict IS NULL)
            FROM clean_judged
            """,
        )
        reasons = dict(
            conn.sql("SELECT verdict, count(*) FROM clean_judged WHERE verdict IS NOT NULL GROUP BY 1").fetchall()
        )
    rows_in, rows_out = int(counts[0]), int(counts[1])
    return CleanResult(
        raw_batches=(inc.hwm + 1, inc.upstream),
        rows_in=rows_in,
        rows_out=rows_out,
        quarantined=rows_in - rows_out,
        reasons={k: int(v) for k, v in reasons.items()},
        min_event_time=counts[2],
        max_event_time=counts[3],
        seq=inc.new_seq,
    )
