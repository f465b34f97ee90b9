"""The vocabulary of quarantine reasons, one name per rule, shared by bronze and silver.

A rule that both stages apply (a price that is not a finite number > 0, a timestamp too far
ahead or too far back, a duplicate, an unknown coin) has ONE name here, whatever the stage's
threshold: bronze (crypto_assets.ingest) judges a message against the pull's clock and the
contract, silver (crypto_assets.transforms.clean) a tick against its ingestion time and the
configured bounds; the quarantine row's `stage` and `detail` say which and by how much.
"""

from __future__ import annotations

# --- bronze only: the message is not a usable contract tick (crypto_assets.ingest.parse)
OVERSIZED = "oversized"
EMPTY_MESSAGE = "empty_message"
NOT_UTF8 = "not_utf8"
INVALID_JSON = "invalid_json"
NOT_OBJECT = "not_object"
WRONG_TYPE = "wrong_type"
NON_FINITE_NUMBER = "non_finite_number"
UNPARSEABLE = "unparseable"
MISSING_PREFIX = "missing:"
UNSUPPORTED_SCHEMA_VERSION = "unsupported_schema_version"
INVALID_MARKET_CAP = "invalid_market_cap"
INVALID_TIMESTAMP = "invalid_timestamp"
# --- bronze raw_trades only (crypto_assets.ingest.trade_validate)
INVALID_TRADE_ID = "invalid_trade_id"
INVALID_SIZE = "invalid_size"
INVALID_SIDE = "invalid_side"
INVALID_ORIGIN = "invalid_origin"
PRODUCT_MISMATCH = "product_mismatch"
COIN_MISMATCH = "coin_mismatch"
# --- both stages
UNKNOWN_COIN = "unknown_coin"
INVALID_PRICE = "invalid_price"
INVALID_VOLUME = "invalid_volume"
TIMESTAMP_TOO_OLD = "timestamp_too_old"
TIMESTAMP_IN_FUTURE = "timestamp_in_future"
DUPLICATE = "duplicate"
# --- silver only (crypto_assets.transforms.clean, .plausibility, .repair)
PRICE_OUT_OF_RANGE = "price_out_of_range"
VOLUME_OUT_OF_RANGE = "volume_out_of_range"
PRICE_JUMP = "price_jump"
LATE = "late"
MANUAL = "manual"

MEANINGS: dict[str, str] = {
    OVERSIZED: "the message value is larger than the contract's size limit",
    EMPTY_MESSAGE: "the message value is empty or null",
    NOT_UTF8: "the message value is not UTF-8 text",
    INVALID_JSON: "the message value is not JSON",
    NOT_OBJECT: "the message is JSON but not an object",
    WRONG_TYPE: "a contract field has the wrong JSON type",
    NON_FINITE_NUMBER: "NaN or Infinity in a field other than the price",
    UNPARSEABLE: "the JSON object could not be read with the contract schema",
    MISSING_PREFIX + "<field>": "a required contract field is absent or empty",
    UNSUPPORTED_SCHEMA_VERSION: "schema_version is not the one this pipeline reads",
    INVALID_MARKET_CAP: "market_cap_usd is negative or not finite",
    INVALID_TIMESTAMP: "a timestamp is not ISO-8601",
    INVALID_TRADE_ID: "trade_id is negative",
    INVALID_SIZE: "a trade's size is not an exact decimal > 0 (at most 8 decimals)",
    INVALID_SIDE: "a trade's side is not buy or sell",
    INVALID_ORIGIN: "a trade's origin is not ws, rest or simulator",
    PRODUCT_MISMATCH: "base_currency/quote_currency are not the ones the product id names",
    COIN_MISMATCH: "coin_id is not the one the base currency maps to",
    UNKNOWN_COIN: "coin_id is not in the configured COINS",
    INVALID_PRICE: "price_usd is not a finite number > 0 (a trade's price: not an exact decimal > 0, at most 8 decimals)",
    INVALID_VOLUME: "volume_24h_usd is negative or not finite",
    TIMESTAMP_TOO_OLD: "last_updated_at is too far back (bronze: before 2009-01-03; silver: past the horizon)",
    TIMESTAMP_IN_FUTURE: "last_updated_at is too far ahead (bronze: of the pull's clock; silver: of its ingestion)",
    DUPLICATE: "the same (coin_id, last_updated_at) was already accepted (trades are deduplicated, not quarantined)",
    PRICE_OUT_OF_RANGE: "price_usd is outside the plausible absolute range",
    VOLUME_OUT_OF_RANGE: "volume_24h_usd is neither 0 nor within the plausible absolute range",
    PRICE_JUMP: "price_usd is many times away from the coin's recent prices",
    LATE: "arrived after the coin's newest tick minus the lateness window",
    MANUAL: "taken out by hand (`crypto-assets quarantine-ticks`)",
}


def missing(field: str) -> str:
    """The reason for a required field that is absent: `missing:<field>`."""
    return MISSING_PREFIX + field
