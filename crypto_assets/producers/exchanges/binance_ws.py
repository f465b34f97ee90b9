"""Binance Spot combined trade stream: `/stream?streams=btcusdt@trade/...` -> contract trades.

Nothing is sent after connecting: the streams are in the URL. Each frame wraps one event:

    {"stream": "btcusdt@trade", "data": {"e": "trade", "E": 1764682205123, "s": "BTCUSDT",
     "t": 12345, "p": "90123.45", "q": "0.01", "T": 1764682205120, "m": true, ...}}

`t` is the trade id, `T` the trade time in epoch milliseconds, `m` "the buyer is the market
maker": then the seller took liquidity, so the taker side is `sell`. The server pings every few
minutes (answered by the websockets library while the stream keeps reading) and closes every
connection after 24 hours: the stream reconnects, and the first trade after it reveals any gap.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

from crypto_assets.kafka.trade_contract import ProductError, make_trade
from crypto_assets.producers.exchanges.trade_stream import Event, MalformedFrame

EXCHANGE = "binance"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def stream_path(symbols: Sequence[str]) -> str:
    """The combined-stream path for the symbols' trade streams (names are lower case)."""
    return "/stream?streams=" + "/".join(f"{s.lower()}@trade" for s in symbols)


def _field(data: dict, key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if isinstance(value, bool) and kind is not bool:
        raise MalformedFrame(f"data.{key} is {value!r}")
    if not isinstance(value, kind):
        raise MalformedFrame(f"data.{key} is {value!r}")
    return value


def parse_frame(frame: str | bytes, received_at: datetime) -> list[Event]:
    """One combined-stream frame -> [trade]; other event types are ignored, anything
    unreadable raises MalformedFrame."""
    try:
        msg = orjson.loads(frame)
    except orjson.JSONDecodeError as exc:
        raise MalformedFrame(f"not JSON: {exc}") from exc
    if not isinstance(msg, dict) or not isinstance(msg.get("data"), dict):
        raise MalformedFrame("expected {\"stream\": ..., \"data\": {...}}")
    data = msg["data"]
    if data.get("e") != "trade":
        if isinstance(data.get("e"), str):
            return []
        raise MalformedFrame(f"data.e is {data.get('e')!r}")
    symbol = _field(data, "s", str)
    trade_ms = _field(data, "T", int)
    try:
        return [make_trade(exchange=EXCHANGE, product=symbol.upper(), trade_id=_field(data, "t", int),
                           price=_field(data, "p", str), size=_field(data, "q", str),
                           side="sell" if _field(data, "m", bool) else "buy",
                           trade_time=EPOCH + timedelta(milliseconds=trade_ms),
                           received_at=received_at, origin="ws")]
    except (ValueError, ProductError) as exc:
        if isinstance(exc, MalformedFrame):
            raise
        raise MalformedFrame(str(exc)) from exc


class BinanceFeed:
    """The Binance combined-stream protocol for `trade_stream.TradeStream`."""

    exchange = EXCHANGE
    needs_ack = False

    def __init__(self, ws_url: str, symbols: Sequence[str]) -> None:
        if not symbols:
            raise ValueError("binance: no symbols to follow")
        self.ws_url = ws_url.rstrip("/")
        self.symbols = tuple(s.lower() for s in symbols)

    def url(self) -> str:
        return self.ws_url + stream_path(self.symbols)

    async def on_open(self, ws: ClientConnection) -> None:
        return None

    def parse(self, frame: str | bytes, received_at: datetime) -> list[Event]:
        return parse_frame(frame, received_at)
