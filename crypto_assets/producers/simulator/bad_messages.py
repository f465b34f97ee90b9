"""Malformed messages for the raw topic: what each `BAD_KINDS` kind looks like on the wire
(`make_bad_message`) and how many follow each valid tick (`BadInjector`).

With `SimulatorConfig.bad_ratio` > 0, malformed messages are injected *between* valid ticks:
after each valid tick, Geometric(1 - bad_ratio) - 1 bad messages follow, so bad messages make
up `bad_ratio` of the stream on average while the valid ticks stay exactly the ones a run with
`bad_ratio=0` would send. Kinds rotate through shuffled rounds of `BAD_KINDS`, so
every kind shows up once per `len(BAD_KINDS)` bad messages. The injector draws from the
`bad_*` streams of `MarketSimulator.rng`, never from the ones the prices use.
"""

from __future__ import annotations

import json
from collections import deque
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson

from crypto_assets.kafka.tick_contract import MAX_MESSAGE_BYTES, REQUIRED_FIELDS, iso_utc

UNKNOWN_COINS: tuple[tuple[str, str], ...] = (
    ("dogwifsim", "wifs"),
    ("not-a-coin", "nac"),
    ("zz-unlisted-token", "zzz"),
)

BAD_KINDS: tuple[str, ...] = (
    "invalid_json",  # truncated / single-quoted / trailing-comma JSON
    "non_utf8",  # bytes that are not UTF-8
    "not_object",  # JSON array, number, null, string or bool
    "missing_field",  # a REQUIRED_FIELDS key removed
    "string_price",  # "price_usd": "123.4"
    "string_schema_version",  # "schema_version": "1"
    "zero_price",
    "negative_price",
    "nan_price",  # the bytes NaN, as Python's json.dumps writes them
    "infinite_price",  # the bytes Infinity
    "ancient_timestamp",  # 1970 / 1900
    "future_timestamp",  # 2200
    "oversized",  # valid JSON object larger than contract.MAX_MESSAGE_BYTES
    "unknown_coin",  # coin_id not in the configured coins
    "duplicate",  # exact re-send of an earlier valid message
)


def make_bad_message(kind: str, rng: np.random.Generator, valid_tick: dict) -> tuple[bytes, bytes]:
    """One malformed message of `kind` derived from `valid_tick` -> (key bytes, value bytes).

    For "duplicate", `valid_tick` must be the earlier valid tick to re-send (exact bytes).
    """
    tick = dict(valid_tick)
    key = str(tick.get("coin_id", "")).encode()
    if kind == "invalid_json":
        raw = orjson.dumps(tick)
        variant = int(rng.integers(3))
        if variant == 0:
            value = raw[: int(rng.integers(1, len(raw) - 1))]  # truncated: object never closed
        elif variant == 1:
            value = repr(tick).encode()  # Python repr: single quotes, None
        else:
            value = raw[:-1] + b",}"  # trailing comma
    elif kind == "non_utf8":
        marker = "__NON_UTF8__"
        raw = orjson.dumps({**tick, "symbol": marker})
        value = raw.replace(marker.encode(), str(tick.get("symbol", "")).encode() + b"\xff\xfe\xc3(")
    elif kind == "not_object":
        variant = int(rng.integers(5))
        value = (
            orjson.dumps(list(tick.values())),
            orjson.dumps(tick.get("price_usd")),
            b"null",
            orjson.dumps(str(tick.get("coin_id"))),
            b"true",
        )[variant]
    elif kind == "missing_field":
        tick.pop(str(rng.choice(REQUIRED_FIELDS)), None)
        value = orjson.dumps(tick)
    elif kind == "string_price":
        tick["price_usd"] = repr(float(tick["price_usd"]))
        value = orjson.dumps(tick)
    elif kind == "string_schema_version":
        tick["schema_version"] = str(tick["schema_version"])
        value = orjson.dumps(tick)
    elif kind == "zero_price":
        tick["price_usd"] = 0.0
        value = orjson.dumps(tick)
    elif kind == "negative_price":
        tick["price_usd"] = -abs(float(tick["price_usd"])) or -1.0
        value = orjson.dumps(tick)
    elif kind == "nan_price":
        tick["price_usd"] = float("nan")
        value = json.dumps(tick, separators=(",", ":")).encode()
    elif kind == "infinite_price":
        tick["price_usd"] = float("inf")
        value = json.dumps(tick, separators=(",", ":")).encode()
    elif kind == "ancient_timestamp":
        year = (1970, 1900)[int(rng.integers(2))]
        ts = datetime(year, 1, 1, tzinfo=UTC) + timedelta(seconds=int(rng.integers(0, 86_400)))
        tick["last_updated_at"] = iso_utc(ts)
        value = orjson.dumps(tick)
    elif kind == "future_timestamp":
        ts = datetime(2200, 1, 1, tzinfo=UTC) + timedelta(seconds=int(rng.integers(0, 365 * 86_400)))
        tick["last_updated_at"] = iso_utc(ts)
        value = orjson.dumps(tick)
    elif kind == "oversized":
        tick["padding"] = "x" * (MAX_MESSAGE_BYTES + int(rng.integers(1, 4096)))
        value = orjson.dumps(tick)
    elif kind == "unknown_coin":
        coin_id, symbol = UNKNOWN_COINS[int(rng.integers(len(UNKNOWN_COINS)))]
        tick["coin_id"], tick["symbol"] = coin_id, symbol
        key = coin_id.encode()
        value = orjson.dumps(tick)
    elif kind == "duplicate":
        value = orjson.dumps(tick)
    else:
        raise ValueError(f"unknown bad message kind {kind!r}; expected one of {BAD_KINDS}")
    return key, value


class BadInjector:
    """Decides how many bad messages follow each valid tick and which kinds they are (every kind
    once per shuffled round). `kinds` and `make` are what a subclass for another contract changes."""

    kinds: tuple[str, ...] = BAD_KINDS

    @staticmethod
    def make(kind: str, rng: np.random.Generator, valid: dict) -> tuple[bytes, bytes]:
        return make_bad_message(kind, rng, valid)

    def __init__(self, rng: dict[str, np.random.Generator], ratio: float) -> None:
        self.ratio = ratio
        self.rng_counts = rng["bad_counts"]
        self.rng_kinds = rng["bad_kinds"]
        self.rng_content = rng["bad_content"]
        self._round: list[str] = []
        self.recent: deque[dict] = deque(maxlen=64)

    def counts(self, n: int) -> list[int] | None:
        if self.ratio <= 0:
            return None
        return (self.rng_counts.geometric(1.0 - self.ratio, n) - 1).tolist()

    def next(self, template: dict) -> tuple[str, bytes, bytes]:
        if not self._round:
            self._round = [self.kinds[i] for i in self.rng_kinds.permutation(len(self.kinds))]
        kind = self._round.pop()
        source = template
        if kind == "duplicate" and self.recent:
            source = self.recent[int(self.rng_content.integers(len(self.recent)))]
        key, value = self.make(kind, self.rng_content, source)
        return kind, key, value
