"""The loop shared by the exchange WebSocket sources: connect, read, sequence, heal, produce.

An exchange feed (`coinbase_ws.CoinbaseFeed`, `binance_ws.BinanceFeed`) only knows its protocol:
the URL, what to send after connecting, and how to turn a frame into trades and heartbeats. The
stream here does the rest, the same for both:

- reconnects after any disconnect (network error, the server's 24-hour close, a subscription
  ack that never comes) with capped exponential backoff and jitter, one log line and one count
  per reconnect;
- keeps reading while it works: the websockets library answers the server's pings from its
  reader, and a REST heal runs in a thread so the connection stays served;
- drops trades already sent (duplicates, replays after a reconnect) and detects missing ids per
  product (`trade_tape.TradeTape`): a jump, a heartbeat's `last_trade_id` ahead of us, or the
  first trade after a reconnect. The missing ids go to the gap healer, and the healed trades are
  produced BEFORE the trade that revealed the gap, so each product's tape stays in id order;
- counts and skips a malformed frame (one bad frame never stops the stream);
- writes a stats line every `stats_every_s` and flushes the producer then and on stop.

The healer is injected (`TradeHealer`): `healing.GapHealer.heal` fetches from the exchange's REST API.
"""

from __future__ import annotations

import asyncio
import random as _random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from crypto_assets.producers.exchanges.healing import GapNotHealed
from crypto_assets.producers.exchanges.trade_tape import Hole, TradeTape

LogFn = Callable[[str], Any]
TradeSink = Callable[[dict], None]


class TradeHealer(Protocol):
    """Fetches the trades of `product` with ids first_missing..last_missing (inclusive) from the
    exchange's REST API, as contract dicts (origin `rest`): `healing.GapHealer.heal`. May return
    fewer; may raise (`healing.GapNotHealed` carries the part it did fetch): the rest of the gap
    then stays open and is reported."""

    def __call__(self, exchange: str, product: str, first_missing: int, last_missing: int, /) -> Sequence[dict]: ...


@dataclass(frozen=True)
class Heartbeat:
    """The exchange's statement of a product's latest trade id (Coinbase `heartbeat`)."""

    product: str
    last_trade_id: int


@dataclass(frozen=True)
class Subscribed:
    """The exchange confirmed the subscription (Coinbase `subscriptions`)."""

    detail: str


@dataclass(frozen=True)
class ExchangeMessage:
    """An error the exchange reported in-band (Coinbase `error`)."""

    text: str


Event = dict | Heartbeat | Subscribed | ExchangeMessage


class MalformedFrame(ValueError):
    """A frame that is not a message of the protocol (bad JSON, missing or invalid fields)."""


class SubscriptionRejected(RuntimeError):
    """The exchange refused the subscription (e.g. an unknown product): retrying cannot help."""


class ExchangeFeed(Protocol):
    """One exchange's WebSocket protocol (see the module doc)."""

    exchange: str
    needs_ack: bool  # wait for a `Subscribed` event before the connection counts as up

    def url(self) -> str: ...

    async def on_open(self, ws: ClientConnection) -> None: ...

    def parse(self, frame: str | bytes, received_at: datetime) -> list[Event]: ...


@dataclass
class StreamStats:
    """What the stats line and the final summary report."""

    trades_sent: int = 0
    ws_trades: int = 0
    rest_trades: int = 0
    connections: int = 0
    reconnects: int = 0
    duplicates_dropped: int = 0
    late_filled: int = 0  # out-of-order trades that filled a hole
    gaps_seen: int = 0
    gaps_healed: int = 0  # gaps whose every trade came back from REST
    heal_failures: int = 0
    malformed: int = 0
    exchange_errors: int = 0
    missing_open: int = 0  # trades still missing (holes not healed)


@dataclass(frozen=True)
class Backoff:
    """Delay before reconnect attempt n (0-based): min(cap, base * 2^n), times a jitter factor in
    [0.5, 1) so a fleet of sources that lost the same server does not come back in lockstep."""

    base_s: float = 0.5
    cap_s: float = 30.0

    def delay(self, attempt: int, rnd: float) -> float:
        return min(self.cap_s, self.base_s * (2.0 ** min(attempt, 30))) * (0.5 + rnd / 2.0)


class AckTimeout(TimeoutError):
    """No subscription ack within `ack_timeout_s`."""


class TradeStream:
    """Runs one feed into a sink until stopped (see the module doc); `run` returns the stats."""

    def __init__(
        self,
        feed: ExchangeFeed,
        sink: TradeSink,
        *,
        healer: TradeHealer | None = None,
        stop_event: threading.Event | None = None,
        max_trades: int | None = None,
        duration_s: float | None = None,
        stats_every_s: float = 60.0,
        flush: Callable[[], Any] | None = None,
        backoff: Backoff | None = None,
        ack_timeout_s: float = 10.0,
        open_timeout_s: float = 10.0,
        ping_interval_s: float | None = 20.0,
        log: LogFn = print,
        random: Callable[[], float] = _random.random,
        max_holes: int = 1000,
        resume: Mapping[str, int] | None = None,
    ) -> None:
        self.feed, self.sink, self.healer = feed, sink, healer
        self.stop = stop_event or threading.Event()
        self.max_trades, self.duration_s = max_trades, duration_s
        self.stats_every_s, self.flush = stats_every_s, flush
        self.backoff = backoff or Backoff()
        self.ack_timeout_s, self.open_timeout_s = ack_timeout_s, open_timeout_s
        self.ping_interval_s = ping_interval_s
        self.log, self.random = log, random
        self.tape = TradeTape(max_holes=max_holes)
        for product, last_id in (resume or {}).items():  # a restart continues the tape on the topic
            self.tape.baseline(product, last_id)
        self.stats = StreamStats()
        self._name = feed.exchange
        self._deadline: float | None = None
        self._next_stats = 0.0

    # ------------------------------------------------------------------ public
    def run(self) -> StreamStats:
        """Blocking: run the stream on a fresh event loop until a stop condition."""
        return asyncio.run(self.run_async())

    async def run_async(self) -> StreamStats:
        started = time.monotonic()
        self._deadline = started + self.duration_s if self.duration_s is not None else None
        self._next_stats = started + self.stats_every_s
        attempt = 0
        try:
            while not self._done():
                try:
                    confirmed = await self._connection()
                except SubscriptionRejected:
                    raise
                except (ConnectionClosed, InvalidHandshake, OSError, TimeoutError) as exc:
                    confirmed = None
                    reason = _reason(exc)
                else:
                    reason = "closed"
                if self._done():
                    break
                if confirmed:
                    attempt = 0
                delay = self.backoff.delay(attempt, self.random())
                attempt += 1
                self.stats.reconnects += 1
                self.log(f"{self._name}: connection lost ({reason}); reconnect #{self.stats.reconnects} "
                         f"in {delay:.2f}s (attempt {attempt} since the last good connection)")
                await self._sleep(delay)
        finally:
            self._stats_line(final=True)
        return self.stats

    # ------------------------------------------------------------------ one connection
    async def _connection(self) -> bool:
        """Connect and read until the connection ends or a stop condition; True once the
        connection was confirmed (ack or first trade), which resets the backoff."""
        url = self.feed.url()
        async with connect(url, open_timeout=self.open_timeout_s, ping_interval=self.ping_interval_s,
                           ping_timeout=self.ping_interval_s, close_timeout=2.0, max_queue=4096,
                           max_size=2 ** 22) as ws:
            self.stats.connections += 1
            self.log(f"{self._name}: connected to {url} (connection {self.stats.connections})")
            await self.feed.on_open(ws)
            confirmed = not self.feed.needs_ack
            opened = time.monotonic()
            while not self._done():
                self._maybe_stats()
                if not confirmed and time.monotonic() - opened > self.ack_timeout_s:
                    raise AckTimeout(f"no subscription ack within {self.ack_timeout_s:g}s")
                try:
                    frame = await asyncio.wait_for(ws.recv(), timeout=0.25)
                except TimeoutError:
                    continue
                try:
                    events = self.feed.parse(frame, datetime.now(UTC))
                except MalformedFrame as exc:
                    self.stats.malformed += 1
                    self.log(f"WARNING {self._name}: malformed frame skipped ({exc}): {_preview(frame)}")
                    continue
                for event in events:
                    if isinstance(event, Subscribed):
                        confirmed = True
                        self.log(f"{self._name}: subscribed ({event.detail})")
                    elif isinstance(event, ExchangeMessage):
                        self.stats.exchange_errors += 1
                        self.log(f"ERROR {self._name}: the exchange says: {event.text}")
                        if not confirmed:
                            raise SubscriptionRejected(f"{self._name} rejected the subscription: {event.text}")
                    elif isinstance(event, Heartbeat):
                        await self._on_heartbeat(event)
                    else:
                        confirmed = True
                        await self._on_trade(event)
                    if self._done():
                        break
            return confirmed

    # ------------------------------------------------------------------ sequencing
    async def _on_trade(self, trade: dict) -> None:
        product, trade_id = trade["product"], int(trade["trade_id"])
        if self.tape.is_sent(product, trade_id):
            self.stats.duplicates_dropped += 1
            return
        gap = self.tape.gap_before(product, trade_id)
        if gap is not None:
            await self._heal(product, gap, f"trade {trade_id} arrived after {gap[0] - 1}")
        if self.tape.mark_sent(product, trade_id):
            self.stats.late_filled += 1
        self._send(trade)
        self.stats.ws_trades += 1

    async def _on_heartbeat(self, hb: Heartbeat) -> None:
        p = self.tape.product(hb.product)
        if p.last_id is None:
            self.tape.baseline(hb.product, hb.last_trade_id)
        elif hb.last_trade_id > p.last_id:
            await self._heal(hb.product, (p.last_id + 1, hb.last_trade_id),
                             f"heartbeat says the last trade is {hb.last_trade_id}, ours is {p.last_id}")

    async def _heal(self, product: str, gap: Hole, why: str) -> None:
        """Record the gap, fetch its trades over REST and send the ones still missing, in id order."""
        lo, hi = gap
        self.stats.gaps_seen += 1
        self.tape.record_gap(product, gap)
        self.log(f"{self._name}: gap in {product}: trade ids {lo}..{hi} missing ({hi - lo + 1}; {why})")
        if self.healer is None:
            self._note_open(product, gap, "no gap healer configured")
            return
        failure = None
        try:
            healed: Sequence[dict] = await asyncio.to_thread(self.healer, self._name, product, lo, hi)
        except GapNotHealed as exc:  # publish the part that was fetched; the rest stays open
            healed, failure = exc.trades, f"heal failed ({exc.kind}): {exc.reason}"
        except Exception as exc:  # noqa: BLE001 - any failed heal leaves the gap open; the stream goes on
            healed, failure = (), f"heal failed: {type(exc).__name__}: {exc}"
        if failure is not None:
            self.stats.heal_failures += 1
        filled = 0
        for t in sorted(healed, key=lambda t: int(t["trade_id"])):
            tid = int(t["trade_id"])
            if lo <= tid <= hi and not self.tape.is_sent(product, tid):
                self.tape.mark_sent(product, tid)
                self._send(t)
                self.stats.rest_trades += 1
                filled += 1
        if filled == hi - lo + 1:
            self.stats.gaps_healed += 1
            self.log(f"{self._name}: gap in {product} healed: {filled} trade(s) {lo}..{hi} fetched over REST")
        else:
            self._note_open(product, gap, f"{failure or 'heal incomplete'}; REST gave {filled} of {hi - lo + 1} trade(s)")

    def _note_open(self, product: str, gap: Hole, why: str) -> None:
        self.stats.missing_open = self.tape.missing()
        self.log(f"WARNING {self._name}: gap in {product} {gap[0]}..{gap[1]} still open: {why}")

    def _send(self, trade: dict) -> None:
        self.sink(trade)
        self.stats.trades_sent += 1

    # ------------------------------------------------------------------ stopping, stats
    def _done(self) -> bool:
        if self.stop.is_set():
            return True
        if self.max_trades is not None and self.stats.trades_sent >= self.max_trades:
            return True
        return self._deadline is not None and time.monotonic() >= self._deadline

    async def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._done() and (left := end - time.monotonic()) > 0:
            self._maybe_stats()  # an outage still reports, every stats_every_s
            await asyncio.sleep(min(left, 0.25))

    def _maybe_stats(self) -> None:
        if time.monotonic() >= self._next_stats:
            self._next_stats = time.monotonic() + self.stats_every_s
            self._stats_line()

    def _stats_line(self, final: bool = False) -> None:
        if self.flush is not None:
            self.flush()
        s = self.stats
        s.missing_open = self.tape.missing()
        self.log(f"{self._name}: {'final ' if final else ''}stats: {s.trades_sent} trades sent ({s.ws_trades} ws, "
                 f"{s.rest_trades} rest), reconnects {s.reconnects}, duplicates dropped {s.duplicates_dropped}, "
                 f"gaps seen {s.gaps_seen} healed {s.gaps_healed} (missing {s.missing_open}), "
                 f"late {s.late_filled}, malformed {s.malformed}, exchange errors {s.exchange_errors}")

    def summary(self) -> dict[str, Any]:
        return asdict(self.stats) | {"open_gaps": {p: [list(h) for h in hs] for p, hs in self.tape.open_holes().items()}}


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        rcvd = exc.rcvd
        return f"closed by the server, code {rcvd.code} {rcvd.reason!r}" if rcvd else "connection dropped without a close frame"
    return f"{type(exc).__name__}: {exc}"


def _preview(frame: str | bytes, n: int = 120) -> str:
    text = frame if isinstance(frame, str) else frame.decode("utf-8", "replace")
    return repr(text[:n]) + ("..." if len(text) > n else "")
