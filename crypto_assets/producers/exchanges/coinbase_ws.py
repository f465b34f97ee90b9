"""Coinbase Exchange WebSocket feed: the `matches` and `heartbeat` channels -> contract trades.

After connecting the client sends
`{"type": "subscribe", "product_ids": [...], "channels": ["matches", "heartbeat"]}`; the server
answers `subscriptions` (the ack), then per product one `last_match` (its latest trade) and a
`match` per trade:

    {"type": "match", "trade_id": 10, "maker_order_id": "...", "taker_order_id": "...",
     "side": "sell", "size": "0.01", "price": "90123.45", "product_id": "BTC-USD",
     "sequence": 50, "time": "2026-12-02T13:30:05.123456Z"}

`side` is the MAKER's order side, so the taker (the contract's side) is the opposite. Every
second each product gets a `heartbeat` with `last_trade_id`, which tells a quiet stream that it
missed trades. An `error` (`message`, `reason`) before the ack means the subscription was
refused (e.g. an unknown product).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

from crypto_assets.kafka.trade_contract import ProductError, make_trade
from crypto_assets.producers.exchanges.trade_stream import (
    Event,
    ExchangeMessage,
    Heartbeat,
    MalformedFrame,
    Subscribed,
)

EXCHANGE = "coinbase"
CHANNELS = ("matches", "heartbeat")
TAKER_SIDE = {"buy": "sell", "sell": "buy"}  # maker side -> taker side


def subscribe_message(products: Sequence[str]) -> dict[str, Any]:
    return {"type": "subscribe", "product_ids": list(products), "channels": list(CHANNELS)}


def parse_time(value: Any) -> datetime:
    """Coinbase's `time` ("2026-12-02T13:30:05.123456Z") -> aware UTC datetime."""
    if not isinstance(value, str):
        raise MalformedFrame(f"time is {value!r}, expected an ISO 8601 string")
    try:
        ts = datetime.fromisoformat(value)
    except ValueError as exc:
        raise MalformedFrame(f"time {value!r} is not ISO 8601") from exc
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _int(msg: dict, key: str) -> int:
    value = msg.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise MalformedFrame(f"{key} is {value!r}, expected an integer")
    try:
        return int(value)
    except ValueError as exc:
        raise MalformedFrame(f"{key} is {value!r}, expected an integer") from exc


def parse_match(msg: dict, received_at: datetime) -> dict:
    """A `match` / `last_match` message -> a contract trade (origin ws)."""
    maker = msg.get("side")
    if maker not in TAKER_SIDE:
        raise MalformedFrame(f"side is {maker!r}, expected buy or sell")
    product = msg.get("product_id")
    if not isinstance(product, str) or not product:
        raise MalformedFrame(f"product_id is {product!r}")
    try:
        return make_trade(exchange=EXCHANGE, product=product, trade_id=_int(msg, "trade_id"),
                          price=msg.get("price"), size=msg.get("size"),  # type: ignore[arg-type]
                          side=TAKER_SIDE[maker], trade_time=parse_time(msg.get("time")),
                          received_at=received_at, origin="ws")
    except (ValueError, ProductError) as exc:
        if isinstance(exc, MalformedFrame):
            raise
        raise MalformedFrame(str(exc)) from exc


def parse_frame(frame: str | bytes, received_at: datetime) -> list[Event]:
    """One Coinbase frame -> stream events; unknown message types are ignored (the feed adds
    fields and types over time), anything unreadable raises MalformedFrame."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise MalformedFrame(f"not JSON: {exc}") from exc
    if not isinstance(msg, dict):
        raise MalformedFrame(f"expected a JSON object, got {type(msg).__name__}")
    kind = msg.get("type")
    if kind in ("match", "last_match"):
        return [parse_match(msg, received_at)]
    if kind == "heartbeat":
        product = msg.get("product_id")
        if not isinstance(product, str) or not product:
            raise MalformedFrame(f"heartbeat product_id is {product!r}")
        return [Heartbeat(product, _int(msg, "last_trade_id"))]
    if kind == "subscriptions":
        channels = msg.get("channels") or []
        detail = ", ".join(
            f"{c.get('name')}: {','.join(c.get('product_ids') or [])}" for c in channels if isinstance(c, dict)
        )
        return [Subscribed(detail or "no channels listed")]
    if kind == "error":
        return [ExchangeMessage(f"{msg.get('message')!s}: {msg.get('reason')!s}")]
    if not isinstance(kind, str):
        raise MalformedFrame(f"type is {kind!r}")
    return []


class CoinbaseFeed:
    """The Coinbase Exchange protocol for `trade_stream.TradeStream`."""

    exchange = EXCHANGE
    needs_ack = True

    def __init__(self, ws_url: str, products: Sequence[str]) -> None:
        if not products:
            raise ValueError("coinbase: no products to subscribe to")
        self.ws_url = ws_url
        self.products = tuple(products)

    def url(self) -> str:
        return self.ws_url

    async def on_open(self, ws: ClientConnection) -> None:
        await ws.send(orjson.dumps(subscribe_message(self.products)).decode())

    def parse(self, frame: str | bytes, received_at: datetime) -> list[Event]:
        return parse_frame(frame, received_at)
