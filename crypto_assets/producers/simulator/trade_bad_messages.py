"""Malformed messages for the trades topic, for quarantine demos: what each `TRADE_BAD_KINDS` kind
looks like on the wire (`make_bad_trade`) and how many follow each valid trade
(`TradeBadInjector`), the trade-side twin of bad_messages.py.

With `SimulatorConfig.trade_bad_ratio` > 0, after each valid trade Geometric(1 - ratio) - 1 bad
messages follow, so they make up `ratio` of the stream on average while the valid trades stay
exactly those of a run without them. Kinds rotate through shuffled rounds of `TRADE_BAD_KINDS`.
Every kind but `duplicate` is one bronze quarantines; a `duplicate` is an exact re-send of an
earlier valid trade, which bronze must keep once (dedupe on exchange, product, trade_id).
"""

from __future__ import annotations

import numpy as np
import orjson

from crypto_assets.kafka.tick_contract import MAX_MESSAGE_BYTES
from crypto_assets.kafka.trade_contract import TRADE_REQUIRED_FIELDS
from crypto_assets.producers.simulator.bad_messages import BadInjector

TRADE_BAD_KINDS: tuple[str, ...] = (
    "invalid_json",  # truncated JSON / Python repr
    "non_utf8",  # bytes that are not UTF-8
    "not_object",  # JSON array, string, number or null
    "missing_field",  # a TRADE_REQUIRED_FIELDS key removed
    "schema_version",  # schema_version 2
    "negative_trade_id",
    "float_price",  # "price": 90123.45 (a JSON number, not an exact decimal string)
    "inexact_price",  # more decimals than DECIMAL(18,8) holds: "0.123456789"
    "zero_price",
    "negative_size",
    "invalid_side",  # "hold"
    "coin_mismatch",  # coin_id that is not what the base currency maps to
    "ancient_time",  # 1970
    "future_time",  # 2200
    "oversized",  # larger than the contract's size limit
    "duplicate",  # exact re-send of an earlier valid trade
)


def make_bad_trade(kind: str, rng: np.random.Generator, valid: dict) -> tuple[bytes, bytes]:
    """One malformed message of `kind` derived from the valid trade `valid` -> (key, value).
    For "duplicate", `valid` is the earlier trade to re-send (exact bytes)."""
    t = dict(valid)
    key = f"{t.get('exchange', '')}:{t.get('product', '')}".encode()
    if kind == "invalid_json":
        raw = orjson.dumps(t)
        value = raw[: int(rng.integers(1, len(raw) - 1))] if rng.integers(2) else repr(t).encode()
        return key, value
    if kind == "non_utf8":
        return key, orjson.dumps(t).replace(b'"side":"', b'"side":"\xff\xfe')
    if kind == "not_object":
        return key, (orjson.dumps(list(t.values())), orjson.dumps(t["price"]), b"12.5", b"null")[int(rng.integers(4))]
    if kind == "missing_field":
        t.pop(str(rng.choice(TRADE_REQUIRED_FIELDS)), None)
    elif kind == "schema_version":
        t["schema_version"] = 2
    elif kind == "negative_trade_id":
        t["trade_id"] = -int(t["trade_id"])
    elif kind == "float_price":
        t["price"] = float(t["price"])
    elif kind == "inexact_price":
        t["price"] = t["price"] + "123456789" if "." in t["price"] else t["price"] + ".123456789"
    elif kind == "zero_price":
        t["price"] = "0"
    elif kind == "negative_size":
        t["size"] = "-" + t["size"]
    elif kind == "invalid_side":
        t["side"] = "hold"
    elif kind == "coin_mismatch":
        t["coin_id"] = "not-" + str(t["coin_id"])
    elif kind == "ancient_time":
        t["trade_time"] = f"1970-01-01T00:00:{int(rng.integers(60)):02d}Z"
    elif kind == "future_time":
        t["trade_time"] = f"2200-01-01T00:00:{int(rng.integers(60)):02d}Z"
    elif kind == "oversized":
        t["padding"] = "x" * (MAX_MESSAGE_BYTES + int(rng.integers(1, 4096)))
    elif kind != "duplicate":
        raise ValueError(f"unknown bad trade kind {kind!r}; expected one of {TRADE_BAD_KINDS}")
    return key, orjson.dumps(t)


class TradeBadInjector(BadInjector):
    """Decides how many bad messages follow each valid trade and which kinds they are."""

    kinds = TRADE_BAD_KINDS

    @staticmethod
    def make(kind: str, rng: np.random.Generator, valid: dict) -> tuple[bytes, bytes]:
        return make_bad_trade(kind, rng, valid)
