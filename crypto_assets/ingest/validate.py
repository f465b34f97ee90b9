"""Bronze's judgement of parsed messages, as SQL over the staged rows: why a row is unusable,
one expression shared by the optimistic insert of
a clean batch and the row-by-row judgement so both always agree, and the detail of each reason."""

from __future__ import annotations

from datetime import datetime, timedelta

from crypto_assets.kafka.tick_contract import SCHEMA_VERSION

# Earliest plausible tick (the Bitcoin genesis block); anything before is an absurd timestamp.
EARLIEST_EVENT_TIME = "2009-01-03"

# The staged rows (parsed JSON + Kafka coordinates) with their timestamps typed.
TYPED_SQL = """
SELECT s.*,
       try_cast(s.last_updated_at AS TIMESTAMPTZ)      AS event_time,
       try_cast(s.ingestion_timestamp AS TIMESTAMPTZ)  AS ingest_time
FROM staged s
"""

# Why a typed row is unusable (NULL = valid).
REASON_SQL = f"""
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
        WHEN event_time < TIMESTAMPTZ '{EARLIEST_EVENT_TIME} 00:00:00+00' THEN 'timestamp_too_old'
        WHEN event_time > $now + $max_skew THEN 'timestamp_in_future'
        WHEN ingestion_timestamp IS NOT NULL AND ingest_time IS NULL THEN 'invalid_timestamp'
      END"""

_JUDGE_SQL = f"""
CREATE OR REPLACE TEMP TABLE judged AS
WITH typed AS ({TYPED_SQL}), reasoned AS (
    SELECT t.*, {REASON_SQL} AS reason
    FROM typed t
)
SELECT r.*, {{verdict}} AS verdict
FROM reasoned r
"""

# The second and later copies of a (coin_id, event time) in the batch are duplicates.
_IN_BATCH_DUPLICATE_VERDICT = f"""
  CASE WHEN r.reason IS NULL AND (
         row_number() OVER (PARTITION BY r.reason IS NULL, r.coin_id, r.event_time
                            ORDER BY r.kafka_partition, r.kafka_offset) > 1)
       THEN 'duplicate' ELSE r.reason END"""

# A raw_ticks row from a typed (or judged) row; $topic, $batch_id and $now are the batch's.
RAW_COLUMNS_SQL = """coin_id, symbol, source, schema_version, price_usd, market_cap_usd, volume_24h_usd,
                   change_24h_pct, change_7d_pct, event_time, ingest_time, $topic, kafka_partition,
                   kafka_offset, make_timestamptz(kafka_ts_ms * 1000), $batch_id, $now"""

_DETAILS = {
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
}


def detail_for(reason: str) -> str:
    """The quarantine detail of a reason the SQL above gives."""
    if reason.startswith("missing"):
        return reason.replace(":", " ")
    return _DETAILS.get(reason, reason)


def judge_sql(in_batch_dups: bool) -> str:
    """The statement that judges every staged row into temp table `judged` (verdict NULL =
    valid). Without repeated (coin_id, event_time) keys in the batch the window (a sort of the
    whole batch, the costliest part of judging) cannot find anything, so it is skipped."""
    return _JUDGE_SQL.format(verdict=_IN_BATCH_DUPLICATE_VERDICT if in_batch_dups else "r.reason")


def judge_params(coins: list[str], now: datetime, max_skew: timedelta) -> dict:
    """The parameters REASON_SQL reads."""
    return {"schema_version": SCHEMA_VERSION, "coins": coins, "now": now, "max_skew": max_skew}
