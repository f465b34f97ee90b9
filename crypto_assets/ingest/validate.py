"""Bronze's judgement of parsed messages, as SQL over the staged rows: why a row is unusable
(crypto_assets.rejections names the reasons), one expression shared by the optimistic insert of
a clean batch and the row-by-row judgement so both always agree, and the detail of each reason."""

from __future__ import annotations

from datetime import datetime, timedelta

from crypto_assets import rejections as R
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
        WHEN schema_version IS NULL THEN '{R.missing("schema_version")}'
        WHEN schema_version <> $schema_version THEN '{R.UNSUPPORTED_SCHEMA_VERSION}'
        WHEN source IS NULL OR source = '' THEN '{R.missing("source")}'
        WHEN coin_id IS NULL OR coin_id = '' THEN '{R.missing("coin_id")}'
        WHEN symbol IS NULL OR symbol = '' THEN '{R.missing("symbol")}'
        WHEN price_usd IS NULL THEN '{R.missing("price_usd")}'
        WHEN last_updated_at IS NULL THEN '{R.missing("last_updated_at")}'
        WHEN NOT list_contains($coins, coin_id) THEN '{R.UNKNOWN_COIN}'
        WHEN NOT isfinite(price_usd) OR price_usd <= 0 THEN '{R.INVALID_PRICE}'
        WHEN volume_24h_usd < 0 OR NOT isfinite(volume_24h_usd) THEN '{R.INVALID_VOLUME}'
        WHEN market_cap_usd < 0 OR NOT isfinite(market_cap_usd) THEN '{R.INVALID_MARKET_CAP}'
        WHEN event_time IS NULL THEN '{R.INVALID_TIMESTAMP}'
        WHEN event_time < TIMESTAMPTZ '{EARLIEST_EVENT_TIME} 00:00:00+00' THEN '{R.TIMESTAMP_TOO_OLD}'
        WHEN event_time > $now + $max_skew THEN '{R.TIMESTAMP_IN_FUTURE}'
        WHEN ingestion_timestamp IS NOT NULL AND ingest_time IS NULL THEN '{R.INVALID_TIMESTAMP}'
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
       THEN '{R.DUPLICATE}' ELSE r.reason END"""

# A raw_ticks row from a typed (or judged) row; $topic, $batch_id and $now are the batch's.
RAW_COLUMNS_SQL = """coin_id, symbol, source, schema_version, price_usd, market_cap_usd, volume_24h_usd,
                   change_24h_pct, change_7d_pct, event_time, ingest_time, $topic, kafka_partition,
                   kafka_offset, make_timestamptz(kafka_ts_ms * 1000), $batch_id, $now"""

_DETAILS = {
    R.UNSUPPORTED_SCHEMA_VERSION: f"schema_version is not {SCHEMA_VERSION}",
    R.UNKNOWN_COIN: "coin_id is not in the configured COINS",
    R.INVALID_PRICE: "price_usd must be finite and > 0",
    R.INVALID_VOLUME: "volume_24h_usd must be >= 0 and finite",
    R.INVALID_MARKET_CAP: "market_cap_usd must be >= 0 and finite",
    R.INVALID_TIMESTAMP: "timestamp is not ISO-8601",
    R.TIMESTAMP_TOO_OLD: f"last_updated_at before {EARLIEST_EVENT_TIME}",
    R.TIMESTAMP_IN_FUTURE: "last_updated_at too far in the future",
    R.DUPLICATE: "same (coin_id, last_updated_at) already ingested",
}


def detail_for(reason: str) -> str:
    """The quarantine detail of a reason the SQL above gives."""
    if reason.startswith(R.MISSING_PREFIX):
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
