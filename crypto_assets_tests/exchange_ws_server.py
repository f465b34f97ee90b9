"""A local WebSocket server that speaks the Coinbase Exchange feed and the Binance combined
trade stream, playing a scripted trade tape, so the stream sources are tested offline.

The path picks the protocol: `/` is Coinbase (the client must send a `subscribe` first; the
server checks it, answers `subscriptions` or an `error` for an unknown product), `/stream?
streams=<sym>@trade/...` is Binance (nothing to send; only the named symbols' trades go out).
Each accepted connection of a protocol plays the next script of that protocol, a list of steps:
trades (`Send`), heartbeats (`Beat`), raw frames (`Raw`, e.g. malformed), pings that must be
answered (`Ping`), an abrupt disconnect without a close frame (`Drop`), a server close like
Binance's 24-hour one (`Close`), pauses. When its script ends a connection stays open, idle,
until the client leaves; connections beyond the scripts are idle from the start.

It records what a test asserts on: every connection's path, the subscribe messages, pongs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import orjson
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from crypto_assets_tests.exchange_rest_server import TapeTrade

COINBASE_PRODUCTS = ("BTC-USD", "ETH-USD", "SOL-USD")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Trade:
    """One trade of the tape, in the exchange's own product naming (BTC-USD or BTCUSDT)."""

    product: str
    trade_id: int
    price: str
    size: str
    taker_side: str  # buy | sell
    time: datetime


@dataclass(frozen=True)
class Send:
    trade: Trade
    kind: str = "match"  # Coinbase: match | last_match


@dataclass(frozen=True)
class Beat:
    """A Coinbase heartbeat stating the product's latest trade id."""

    product: str
    last_trade_id: int


@dataclass(frozen=True)
class Raw:
    text: str


@dataclass(frozen=True)
class Ping:
    """Ping the client and wait up to timeout_s for its pong."""

    timeout_s: float = 5.0


@dataclass(frozen=True)
class Drop:
    """Cut the TCP connection without a close frame (a network failure)."""


@dataclass(frozen=True)
class Close:
    code: int = 1000
    reason: str = "24h connection limit"


@dataclass(frozen=True)
class Pause:
    seconds: float


Step = Send | Beat | Raw | Ping | Drop | Close | Pause
Script = Sequence[Step]


def product_tape(product: str, trades: Sequence[TapeTrade]) -> list[Trade]:
    """The REST server's tape (`exchange_rest_server.make_tape`) as one product's stream trades,
    so the stream and the REST heal serve the very same trades."""
    return [Trade(product, t.trade_id, t.price, t.size, t.taker_side, t.time) for t in trades]


def coinbase_frame(step: Send | Beat, sequence: int) -> str:
    if isinstance(step, Beat):
        return orjson.dumps({"type": "heartbeat", "sequence": sequence, "last_trade_id": step.last_trade_id,
                             "product_id": step.product, "time": _iso(datetime.now(UTC))}).decode()
    t = step.trade
    return orjson.dumps({
        "type": step.kind, "trade_id": t.trade_id, "maker_order_id": f"m-{t.trade_id}",
        "taker_order_id": f"t-{t.trade_id}", "side": "sell" if t.taker_side == "buy" else "buy",
        "size": t.size, "price": t.price, "product_id": t.product, "sequence": sequence, "time": _iso(t.time),
    }).decode()


def binance_frame(t: Trade) -> str:
    ms = (t.time - EPOCH) // timedelta(milliseconds=1)
    return orjson.dumps({"stream": f"{t.product.lower()}@trade", "data": {
        "e": "trade", "E": ms + 2, "s": t.product, "t": t.trade_id, "p": t.price, "q": t.size,
        "T": ms, "m": t.taker_side == "sell", "M": True}}).decode()


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Record:
    connections: list[str] = field(default_factory=list)  # request paths, in order
    subscribes: list[dict] = field(default_factory=list)
    pongs: int = 0
    unanswered_pings: int = 0
    sent_trades: int = 0


class ExchangeWsServer:
    """The server in a background thread; `url` is ws://127.0.0.1:<port> (use as both
    COINBASE_WS_URL and BINANCE_WS_URL)."""

    def __init__(self, coinbase: Sequence[Script] = (), binance: Sequence[Script] = (),
                 products: Sequence[str] = COINBASE_PRODUCTS, ack: bool = True) -> None:
        self.scripts = {"coinbase": list(coinbase), "binance": list(binance)}
        self.products = set(products)
        self.ack = ack  # False: accept a Coinbase subscription and never confirm it
        self.record = Record()
        self._accepted = {"coinbase": 0, "binance": 0}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self.port = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> ExchangeWsServer:
        self._thread = threading.Thread(target=self._run, name="exchange-ws-server", daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "exchange WS server did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> ExchangeWsServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        async with serve(self._handle, "127.0.0.1", 0, ping_interval=None) as server:
            self._server = server
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await server.wait_closed()

    async def _handle(self, ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else "/"
        self.record.connections.append(path)
        try:
            if urlsplit(path).path == "/stream":
                await self._binance(ws, path)
            else:
                await self._coinbase(ws)
        except ConnectionClosed:
            pass

    def _next_script(self, protocol: str) -> Script:
        i = self._accepted[protocol]
        self._accepted[protocol] += 1
        scripts = self.scripts[protocol]
        return scripts[i] if i < len(scripts) else ()

    async def _coinbase(self, ws: ServerConnection) -> None:
        try:
            msg = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        except (TimeoutError, orjson.JSONDecodeError):
            await self._error(ws, "Failed to subscribe", "expected a subscribe message first")
            return
        self.record.subscribes.append(msg)
        products = msg.get("product_ids") if isinstance(msg, dict) else None
        if not isinstance(msg, dict) or msg.get("type") != "subscribe" or not isinstance(products, list):
            await self._error(ws, "Failed to subscribe", "type subscribe with product_ids required")
            return
        unknown = [p for p in products if p not in self.products]
        if unknown:
            await self._error(ws, "Failed to subscribe", f"{unknown[0]} is not a valid product")
            return
        if not self.ack:
            await ws.wait_closed()
            return
        channels = [c for c in msg.get("channels", []) if c in ("matches", "heartbeat")]
        await ws.send(orjson.dumps({"type": "subscriptions", "channels": [
            {"name": c, "product_ids": products} for c in channels]}).decode())
        await self._play(ws, self._next_script("coinbase"), lambda s, n: coinbase_frame(s, n),
                         lambda t: t.product in products)

    async def _binance(self, ws: ServerConnection, path: str) -> None:
        streams = parse_qs(urlsplit(path).query).get("streams", [""])[0].split("/")
        symbols = {s.split("@")[0].upper() for s in streams if s.endswith("@trade")}
        await self._play(ws, self._next_script("binance"),
                         lambda s, n: binance_frame(s.trade) if isinstance(s, Send) else None,
                         lambda t: t.product in symbols)

    async def _play(self, ws: ServerConnection, script: Script, render, wanted) -> None:
        sequence = 1000
        for step in script:
            if isinstance(step, (Send, Beat)):
                if isinstance(step, Send) and not wanted(step.trade):
                    continue
                sequence += 1
                frame = render(step, sequence)
                if frame is not None:
                    await ws.send(frame)
                    self.record.sent_trades += isinstance(step, Send)
            elif isinstance(step, Raw):
                await ws.send(step.text)
            elif isinstance(step, Ping):
                waiter = await ws.ping()
                try:
                    await asyncio.wait_for(waiter, step.timeout_s)
                    self.record.pongs += 1
                except TimeoutError:
                    self.record.unanswered_pings += 1
            elif isinstance(step, Drop):
                ws.transport.abort()
                return
            elif isinstance(step, Close):
                await ws.close(step.code, step.reason)
                return
            elif isinstance(step, Pause):
                await asyncio.sleep(step.seconds)
        await ws.wait_closed()

    async def _error(self, ws: ServerConnection, message: str, reason: str) -> None:
        await ws.send(orjson.dumps({"type": "error", "message": message, "reason": reason}).decode())
        await ws.close(1008, reason[:100])
