"""Bronze's judgement of staged trades (crypto_assets.kafka.trade_contract), as SQL over the whole
batch: the typed columns (exact decimals, timestamps), why a trade is unusable (one reason, the
first rule it breaks; crypto_assets.rejections names them) and a detail that quotes the value.

Prices and sizes must be plain decimals that DECIMAL(18,8) holds exactly: up to 10 integer
digits and 8 significant decimals (trailing zeros beyond are fine). A cast would silently round
`0.123456789` or accept `1e5`; the pattern refuses both, so what is stored is what was sent.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from crypto_assets import rejections as R
from crypto_assets.ingest.validate import EARLIEST_EVENT_TIME
from crypto_assets.kafka.trade_contract import COIN_BY_BASE, ORIGINS, SIDES, TRADE_REQUIRED_FIELDS, TRADE_SCHEMA_VERSION

DECIMAL_PATTERN = r"[0-9]{1,10}(\.[0-9]{1,8}0*)?"
_STRING_REQUIRED = [f for f in TRADE_REQUIRED_FIELDS if f not in ("schema_version", "trade_id")]

# The staged trades with their exact decimals and timestamps typed (NULL where they do not parse).
TYPED_SQL = f"""
SELECT s.*,
       CASE WHEN regexp_full_match(s.price, '{DECIMAL_PATTERN}') THEN CAST(s.price AS DECIMAL(18,8)) END AS price_d,
       CASE WHEN regexp_full_match(s.size, '{DECIMAL_PATTERN}') THEN CAST(s.size AS DECIMAL(18,8)) END AS size_d,
       try_cast(s.trade_time AS TIMESTAMPTZ)  AS trade_ts,
       try_cast(s.received_at AS TIMESTAMPTZ) AS received_ts
FROM staged s
"""

_MISSING = "\n".join(
    f"        WHEN {f} IS NULL OR {f} = '' THEN '{R.missing(f)}'" for f in _STRING_REQUIRED
)

# The product id names base and quote: BASE-QUOTE (Coinbase) or BASEQUOTE (Binance), upper case.
_PRODUCT_OK = ("CASE WHEN contains(product, '-') THEN product = base_currency || '-' || quote_currency "
               "ELSE upper(product) = base_currency || quote_currency END")
# What the contract maps the base currency to (trade_contract.coin_id_for), in SQL.
_EXPECTED_COIN = "coalesce(map_extract_value(MAP($bases, $coins), upper(base_currency)), lower(base_currency))"

# Why a typed trade is unusable (NULL = valid).
REASON_SQL = f"""
      CASE
        WHEN schema_version IS NULL THEN '{R.missing("schema_version")}'
        WHEN schema_version <> $schema_version THEN '{R.UNSUPPORTED_SCHEMA_VERSION}'
{_MISSING}
        WHEN trade_id IS NULL THEN '{R.missing("trade_id")}'
        WHEN trade_id < 0 THEN '{R.INVALID_TRADE_ID}'
        WHEN price_d IS NULL OR price_d <= 0 THEN '{R.INVALID_PRICE}'
        WHEN size_d IS NULL OR size_d <= 0 THEN '{R.INVALID_SIZE}'
        WHEN NOT list_contains($sides, side) THEN '{R.INVALID_SIDE}'
        WHEN NOT list_contains($origins, origin) THEN '{R.INVALID_ORIGIN}'
        WHEN NOT ({_PRODUCT_OK}) THEN '{R.PRODUCT_MISMATCH}'
        WHEN coin_id <> {_EXPECTED_COIN} THEN '{R.COIN_MISMATCH}'
        WHEN trade_ts IS NULL THEN '{R.INVALID_TIMESTAMP}'
        WHEN trade_ts < TIMESTAMPTZ '{EARLIEST_EVENT_TIME} 00:00:00+00' THEN '{R.TIMESTAMP_TOO_OLD}'
        WHEN trade_ts > $now + $max_skew THEN '{R.TIMESTAMP_IN_FUTURE}'
        WHEN received_at IS NOT NULL AND received_ts IS NULL THEN '{R.INVALID_TIMESTAMP}'
      END"""

# The detail of a reason, quoting the offending value (columns of the judged row).
DETAIL_SQL = f"""
      CASE
        WHEN starts_with(reason, '{R.MISSING_PREFIX}') THEN replace(reason, ':', ' ')
        WHEN reason = '{R.UNSUPPORTED_SCHEMA_VERSION}' THEN printf('schema_version %d is not {TRADE_SCHEMA_VERSION}', schema_version)
        WHEN reason = '{R.INVALID_TRADE_ID}' THEN printf('trade_id %d is negative', trade_id)
        WHEN reason = '{R.INVALID_PRICE}' THEN printf('price %s is not an exact decimal > 0 with at most 8 decimals', price)
        WHEN reason = '{R.INVALID_SIZE}' THEN printf('size %s is not an exact decimal > 0 with at most 8 decimals', size)
        WHEN reason = '{R.INVALID_SIDE}' THEN printf('side %s is not one of {", ".join(SIDES)}', side)
        WHEN reason = '{R.INVALID_ORIGIN}' THEN printf('origin %s is not one of {", ".join(ORIGINS)}', origin)
        WHEN reason = '{R.PRODUCT_MISMATCH}' THEN printf('product %s does not name base %s and quote %s', product,
                                                          base_currency, quote_currency)
        WHEN reason = '{R.COIN_MISMATCH}' THEN printf('coin_id %s, but base %s maps to %s', coin_id, base_currency,
                                                       {_EXPECTED_COIN})
        WHEN reason = '{R.INVALID_TIMESTAMP}' AND trade_ts IS NULL THEN printf('trade_time %s is not ISO-8601', trade_time)
        WHEN reason = '{R.INVALID_TIMESTAMP}' THEN printf('received_at %s is not ISO-8601', received_at)
        WHEN reason = '{R.TIMESTAMP_TOO_OLD}' THEN printf('trade_time %s is before {EARLIEST_EVENT_TIME}', trade_time)
        WHEN reason = '{R.TIMESTAMP_IN_FUTURE}' THEN printf('trade_time %s is more than %s ahead of the pull''s clock',
                                                             trade_time, $max_skew)
        ELSE reason
      END"""


def judge_params(now: datetime, max_skew: timedelta) -> dict:
    """The parameters REASON_SQL and DETAIL_SQL read."""
    return {
        "schema_version": TRADE_SCHEMA_VERSION, "sides": list(SIDES), "origins": list(ORIGINS), "now": now,
        "max_skew": max_skew, "bases": list(COIN_BY_BASE), "coins": list(COIN_BY_BASE.values()),
    }
