"""Shared by the exchange WebSocket tests: the local REST server as a fixture body, the real
gap healer pointed at it, and the tape comparisons (what a product's trades say, whichever way
they came)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from crypto_assets.producers.exchanges.healing import GapHealer
from crypto_assets.producers.exchanges.trade_stream import Backoff
from crypto_assets.settings import exchange_settings
from crypto_assets_tests.exchange_rest_server import ExchangeRestServer, make_tape, start_rest_server
from crypto_assets_tests.exchange_ws_server import Trade, product_tape

REPO = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 12, 2, 13, 45, tzinfo=UTC)
FAST = Backoff(base_s=0.05, cap_s=0.2)


def rest_server() -> Iterator[ExchangeRestServer]:
    """The exchanges' REST API (exchange_rest_server.py) for one test, which appends its tapes."""
    srv = start_rest_server()
    yield srv
    srv.stop()


def real_healer(rest: ExchangeRestServer, max_attempts: int = 1) -> GapHealer:
    """The project's gap healer (healing.py) pointed at the local REST server."""
    cfg = exchange_settings({"COINBASE_REST_URL": rest.url, "BINANCE_REST_URL": rest.url})
    return GapHealer.from_settings(cfg, max_attempts=max_attempts)


def on_rest(rest: ExchangeRestServer, exchange: str, product: str, n: int, first_id: int, seed: int) -> list[Trade]:
    """n trades of a product on the REST server's tape, returned as the stream will send them."""
    tp = make_tape(n, first_id=first_id, seed=seed)
    rest.append(exchange, product, tp)
    return product_tape(product, tp)


def as_traded(trades: list[dict], product: str) -> list[tuple]:
    """What a product's trades say, whichever way they came (stream or REST)."""
    return [(t["trade_id"], t["price"], t["size"], t["side"], t["trade_time"]) for t in trades if t["product"] == product]


def expected(tape_: list[Trade], exchange: str) -> list[tuple]:
    """`as_traded` of a tape, from the tape itself (Binance stamps trades to the millisecond)."""
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ"
    return [(t.trade_id, t.price, t.size, t.taker_side,
             (t.time if exchange == "coinbase" else t.time.replace(microsecond=t.time.microsecond // 1000 * 1000))
             .strftime(fmt)) for t in tape_]


