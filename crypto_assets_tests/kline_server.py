"""A local exchange that answers the two klines endpoints like Binance and Coinbase do, on
pytest-httpserver: Binance `/api/v3/klines` (inclusive startTime/endTime in ms, at most `limit`
rows oldest first, decimals as strings, the used-weight header, a 429 with Retry-After on demand)
and Coinbase `/products/{id}/candles` (ISO start/end, a 400 above 300 buckets, rows newest first
with JSON numbers, minutes without trades absent, a 404 for an unknown product).

Prices follow from (product, minute) so a test can say what any minute's candle must be.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from pytest_httpserver import URIPattern
from werkzeug import Request, Response

WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"
# One Coinbase price has more digits than a float keeps (16 significant): it must arrive exact.
EXACT_PRICE = "12345678.12345678"


def price(product: str, minute_epoch: int) -> Decimal:
    """The close of a product's minute (epoch seconds of its start)."""
    base = {"BTCUSDT": 90000, "ETHUSDT": 3000, "BTC-USD": 90100, "ETH-USD": 3010}.get(product, 100)
    return Decimal(base) + Decimal((minute_epoch // 60) % 1000) / 100 + Decimal("0.12345678")


@dataclass
class FakeExchange:
    """Both exchanges' klines endpoints; `missing` = {product: set of minute epochs without a candle}."""

    missing: dict[str, set[int]] = field(default_factory=dict)
    exact_minute: int | None = None  # the Coinbase BTC-USD minute whose close is EXACT_PRICE
    throttle_once: set[str] = field(default_factory=set)  # Binance symbols answered 429 on their first request
    binance_calls: list[dict[str, str]] = field(default_factory=list)
    coinbase_calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    weight: int = 0

    def install(self, httpserver) -> None:
        httpserver.expect_request("/api/v3/klines").respond_with_handler(self.binance)
        httpserver.expect_request(_CandlesPath()).respond_with_handler(self.coinbase)

    def _minutes(self, product: str, lo_s: int, hi_s: int) -> list[int]:
        first = -(-lo_s // 60) * 60  # the first minute start >= lo_s
        gone = self.missing.get(product, set())
        return [m for m in range(first, hi_s + 1, 60) if m not in gone]

    def binance(self, request: Request) -> Response:
        args = dict(request.args)
        self.binance_calls.append(args)
        symbol = args["symbol"]
        if symbol in self.throttle_once:
            self.throttle_once.discard(symbol)
            return Response(json.dumps({"code": -1003, "msg": "Too many requests; current limit is 6000 request "
                                        "weight per 1 MINUTE."}), 429, {"Retry-After": "1"},
                            content_type="application/json")
        if symbol not in ("BTCUSDT", "ETHUSDT"):
            return Response(json.dumps({"code": -1121, "msg": "Invalid symbol."}), 400, content_type="application/json")
        limit = min(int(args.get("limit", 500)), 1000)
        minutes = self._minutes(symbol, int(args["startTime"]) // 1000, int(args["endTime"]) // 1000)[:limit]
        rows = []
        for m in minutes:
            c = price(symbol, m)
            rows.append([m * 1000, str(c - 1), str(c + 2), str(c - 3), str(c), "1.50000000", m * 1000 + 59_999,
                         str(c * Decimal("1.5")), 7, "0.60000000", str(c * Decimal("0.6")), "0"])
        self.weight += 2
        return Response(json.dumps(rows), 200, {WEIGHT_HEADER: str(self.weight)}, content_type="application/json")

    def coinbase(self, request: Request) -> Response:
        product = request.path.split("/")[2]
        args = dict(request.args)
        self.coinbase_calls.append((product, args))
        if product not in ("BTC-USD", "ETH-USD"):
            return Response(json.dumps({"message": "NotFound"}), 404, content_type="application/json")
        lo = int(datetime.fromisoformat(args["start"]).replace(tzinfo=UTC).timestamp())
        hi = int(datetime.fromisoformat(args["end"]).replace(tzinfo=UTC).timestamp())
        if (hi - lo) // int(args["granularity"]) + 1 > 300:
            return Response(json.dumps({"message": "granularity too small for the requested time range. Count of "
                                        "aggregations requested exceeds 300"}), 400, content_type="application/json")
        rows = []
        for m in reversed(self._minutes(product, lo, hi)):  # newest first
            c = EXACT_PRICE if product == "BTC-USD" and m == self.exact_minute else str(price(product, m))
            rows.append(f"[{m}, {Decimal(c) - 3}, {Decimal(c) + 2}, {Decimal(c) - 1}, {c}, 2.25]")
        return Response("[" + ", ".join(rows) + "]", 200, content_type="application/json")


class _CandlesPath(URIPattern):
    """Matches /products/<id>/candles."""

    def match(self, uri: str) -> bool:
        parts = uri.split("/")
        return len(parts) == 4 and parts[1] == "products" and parts[3] == "candles"
