"""A local HTTP server that answers like Coinbase Exchange's and Binance Spot's trade endpoints.

Gap healing (and the WebSocket end-to-end test) need an exchange that pages, limits and fails
the way the real ones do, without the internet. One server speaks both, from a *tape* of trades
per product:

- Coinbase `GET /products/{id}/trades?limit=&after=`: newest first, trades with id < `after`,
  at most 1,000, headers `CB-BEFORE` (newest id of the page) and `CB-AFTER` (oldest: the cursor of
  the next page); an unknown product is a 404 `{"message": "NotFound"}`.
- Binance `GET /api/v3/historicalTrades?symbol=&fromId=&limit=`: ascending from `fromId`, at most
  1,000, 25 weight per request reported in `X-MBX-USED-WEIGHT-1M` (per minute of `clock`); past
  6,000 a 429 with `Retry-After`; an unknown symbol is a 400 `{"code": -1121, ...}`.
- `oldest_kept[(exchange, product)]`: ids below it are no longer served (exchange retention).
- `fail_next(exchange, status, ...)` scripts the next answers: 429/418 with Retry-After, 5xx.

`start_rest_server(...)` starts it in a thread (no pytest needed) and returns the server: `.url`
is the base URL for both COINBASE_REST_URL and BINANCE_REST_URL, `.stop()` ends it.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

BINANCE_WEIGHT_LIMIT_1M = 6000
HISTORICAL_TRADES_WEIGHT = 25
EIGHT = Decimal("0.00000001")


@dataclass(frozen=True)
class TapeTrade:
    """One trade as the exchange recorded it; rendered per exchange by the functions below."""

    trade_id: int
    price: str  # eight decimals, as both exchanges print them
    size: str
    taker_side: str  # "buy" | "sell"
    time: datetime  # aware UTC, microseconds


def make_tape(n: int, *, first_id: int = 1, start: datetime = datetime(2026, 12, 2, 13, 0, tzinfo=UTC),
              price: str = "90000.00", seed: int = 13) -> list[TapeTrade]:
    """`n` trades with consecutive ids: a seeded random walk in cents, sizes in satoshi-like units,
    about 20 trades a second."""
    rng = random.Random(seed)
    cents = int(Decimal(price) * 100)
    t = start
    out: list[TapeTrade] = []
    for i in range(n):
        cents = max(1, cents + rng.randint(-50, 50))
        size = Decimal(rng.randint(1, 5_000_000)) * EIGHT
        t = t + timedelta(microseconds=rng.randint(1, 100_000))
        out.append(TapeTrade(first_id + i, str((Decimal(cents) / 100).quantize(EIGHT)), str(size.quantize(EIGHT)),
                             rng.choice(("buy", "sell")), t))
    return out


def coinbase_record(t: TapeTrade) -> dict:
    """The trade as `/products/{id}/trades` prints it: `side` is the MAKER's side."""
    return {"time": t.time.strftime("%Y-%m-%dT%H:%M:%S.%fZ"), "trade_id": t.trade_id, "price": t.price,
            "size": t.size, "side": "sell" if t.taker_side == "buy" else "buy"}


def binance_record(t: TapeTrade) -> dict:
    """The trade as `/api/v3/historicalTrades` prints it (milliseconds; buyer is maker = taker sold)."""
    quote = (Decimal(t.price) * Decimal(t.size)).quantize(EIGHT)
    return {"id": t.trade_id, "price": t.price, "qty": t.size, "quoteQty": str(quote),
            "time": _ms(t.time),
            "isBuyerMaker": t.taker_side == "sell", "isBestMatch": True}


def _ms(ts: datetime) -> int:
    return int((ts - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1))


@dataclass
class Scripted:
    status: int
    body: object
    headers: dict[str, str]
    skip: int = 0  # normal answers to give before this one


class ExchangeRestServer:
    """The server and its state; see the module doc."""

    def __init__(self, coinbase: Mapping[str, list[TapeTrade]] | None = None,
                 binance: Mapping[str, list[TapeTrade]] | None = None, *,
                 oldest_kept: Mapping[tuple[str, str], int] | None = None, used_weight: int = 0,
                 clock: Callable[[], float] = time.time, host: str = "127.0.0.1", port: int = 0) -> None:
        self.tapes: dict[tuple[str, str], list[TapeTrade]] = {}
        for product, tape in (coinbase or {}).items():
            self.tapes[("coinbase", product)] = sorted(tape, key=lambda t: t.trade_id)
        for symbol, tape in (binance or {}).items():
            self.tapes[("binance", symbol.upper())] = sorted(tape, key=lambda t: t.trade_id)
        self.oldest_kept = dict(oldest_kept or {})
        self.clock = clock
        self.used_weight, self._weight_minute = used_weight, int(clock() // 60)
        self.requests: list[tuple[str, str, dict[str, str]]] = []  # (exchange, path, params)
        self._scripts: dict[str, deque[Scripted]] = {"coinbase": deque(), "binance": deque()}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> ExchangeRestServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="exchange-rest", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ExchangeRestServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def append(self, exchange: str, product: str, trades: list[TapeTrade]) -> None:
        """More trades on a product's tape (the market goes on while a stream is down)."""
        with self._lock:
            tape = self.tapes.setdefault((exchange, product), [])
            tape.extend(trades)
            tape.sort(key=lambda t: t.trade_id)

    def fail_next(self, exchange: str, status: int, *, retry_after: float | None = None, times: int = 1,
                  body: object | None = None, skip: int = 0) -> None:
        """After `skip` normal answers, the next `times` requests to `exchange` get `status` (with
        Retry-After when given) and `body` (the exchange's error body by default)."""
        if body is None:
            body = _error_body(exchange, status)
        headers = {"Retry-After": f"{retry_after:g}"} if retry_after is not None else {}
        with self._lock:
            self._scripts[exchange].extend(Scripted(status, body, headers, skip if i == 0 else 0)
                                           for i in range(times))

    def requests_to(self, exchange: str) -> list[dict[str, str]]:
        return [params for ex, _, params in self.requests if ex == exchange]

    # -- request handling (called from the server threads) ------------------------------------

    def answer(self, path: str, params: dict[str, str]) -> tuple[int, object, dict[str, str]]:
        exchange = "binance" if path.startswith("/api/v3/") else "coinbase"
        with self._lock:
            self.requests.append((exchange, path, params))
            extra: dict[str, str] = {}
            if exchange == "binance":
                minute = int(self.clock() // 60)
                if minute != self._weight_minute:
                    self.used_weight, self._weight_minute = 0, minute
                self.used_weight += HISTORICAL_TRADES_WEIGHT
                extra["X-MBX-USED-WEIGHT-1M"] = str(self.used_weight)
            script = self._scripts[exchange]
            if script and script[0].skip > 0:
                script[0].skip -= 1
            elif script:
                s = script.popleft()
                return s.status, s.body, extra | s.headers
            if exchange == "binance" and self.used_weight > BINANCE_WEIGHT_LIMIT_1M:
                wait = 60 - int(self.clock() % 60)
                return 429, _error_body("binance", 429), extra | {"Retry-After": str(wait)}
            if exchange == "binance":
                status, body, headers = self._binance(path, params)
            else:
                status, body, headers = self._coinbase(path, params)
            return status, body, extra | headers

    def _served(self, exchange: str, product: str) -> list[TapeTrade]:
        floor = self.oldest_kept.get((exchange, product))
        tape = self.tapes[(exchange, product)]
        return tape if floor is None else [t for t in tape if t.trade_id >= floor]

    def _coinbase(self, path: str, params: dict[str, str]) -> tuple[int, object, dict[str, str]]:
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "products" or parts[2] != "trades":
            return 404, {"message": "route not found"}, {}
        product = unquote(parts[1])
        if ("coinbase", product) not in self.tapes:
            return 404, {"message": "NotFound"}, {}
        try:
            limit = int(params.get("limit", "1000"))
            after = int(params["after"]) if "after" in params else None
        except ValueError:
            return 400, {"message": "Invalid limit or cursor"}, {}
        if not 1 <= limit <= 1000:
            return 400, {"message": "limit must be between 1 and 1000"}, {}
        older = [t for t in self._served("coinbase", product) if after is None or t.trade_id < after]
        page = list(reversed(older[-limit:]))
        headers = {"CB-BEFORE": str(page[0].trade_id), "CB-AFTER": str(page[-1].trade_id)} if page else {}
        return 200, [coinbase_record(t) for t in page], headers

    def _binance(self, path: str, params: dict[str, str]) -> tuple[int, object, dict[str, str]]:
        if path != "/api/v3/historicalTrades":
            return 404, {"code": -1, "msg": "route not found"}, {}
        symbol = params.get("symbol")
        if not symbol:
            return 400, {"code": -1102, "msg": "Mandatory parameter 'symbol' was not sent, was empty/null, "
                                               "or malformed."}, {}
        if ("binance", symbol) not in self.tapes:
            return 400, {"code": -1121, "msg": "Invalid symbol."}, {}
        try:
            limit = int(params.get("limit", "500"))
            from_id = int(params["fromId"]) if "fromId" in params else None
        except ValueError:
            return 400, {"code": -1100, "msg": "Illegal characters found in a parameter."}, {}
        if not 1 <= limit <= 1000:
            return 400, {"code": -1130, "msg": "Data sent for parameter 'limit' is not valid."}, {}
        served = self._served("binance", symbol)
        page = ([t for t in served if t.trade_id >= from_id][:limit] if from_id is not None
                else served[-limit:])
        return 200, [binance_record(t) for t in page], {}


def _error_body(exchange: str, status: int) -> object:
    if exchange == "coinbase":
        return {"message": "Public rate limit exceeded" if status == 429 else f"HTTP {status}"}
    if status == 418:
        return {"code": -1003, "msg": "Way too much request weight used; IP banned until 1796212800000."}
    if status == 429:
        return {"code": -1003, "msg": "Too much request weight used; current limit is 6000 request weight "
                                      "per 1 MINUTE."}
    return {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."}


def _handler_for(server: ExchangeRestServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            split = urlsplit(self.path)
            params = {k: v[-1] for k, v in parse_qs(split.query).items()}
            status, body, headers = server.answer(split.path, params)
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (stdlib signature)
            pass

    return Handler


def start_rest_server(coinbase: Mapping[str, list[TapeTrade]] | None = None,
                      binance: Mapping[str, list[TapeTrade]] | None = None, *,
                      oldest_kept: Mapping[tuple[str, str], int] | None = None, used_weight: int = 0,
                      clock: Callable[[], float] = time.time, host: str = "127.0.0.1",
                      port: int = 0) -> ExchangeRestServer:
    """Start the server in a daemon thread; `.url` is its base URL, `.stop()` ends it."""
    return ExchangeRestServer(coinbase, binance, oldest_kept=oldest_kept, used_weight=used_weight,
                              clock=clock, host=host, port=port).start()


class FakeTime:
    """A clock the client's sleeps advance (the server shares it for the Binance weight minute)."""

    def __init__(self, start: float = 1_796_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s

    def clock(self) -> float:
        return self.now
