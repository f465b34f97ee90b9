"""Gap healing: fetch the trades a stream missed from the exchange's REST API.

A WebSocket source sees a gap as a trade-id jump (or learns of one after a reconnect). It calls
`GapHealer.heal(exchange, product, first_missing, last_missing)` and publishes what comes back
(contract trades with origin `rest`, ascending by id) before it goes on. When the exchange cannot
give the whole range, `heal` raises `GapNotHealed`: its `trades` are the part that *was* fetched
(publish them too: they are valid), `missing` the id ranges still open, `kind` why. The stream
records the open ranges as gaps and carries on; nothing here stops it.

The call blocks (requests, rate-limit waits): from asyncio, run it in a thread
(`await asyncio.to_thread(healer.heal, ...)`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NoReturn

from crypto_assets.producers.exchanges.binance_rest import BinanceTrades
from crypto_assets.producers.exchanges.coinbase_rest import CoinbaseTrades, FetchResult
from crypto_assets.producers.exchanges.rest_http import (
    ExchangeRestClient,
    RestRateLimited,
    RestRequestError,
    RestUnavailable,
)
from crypto_assets.settings import ExchangeSettings, exchange_settings

logger = logging.getLogger(__name__)

DEFAULT_MAX_GAP = 100_000  # trades per heal: 100 Coinbase / Binance pages, bounded work per gap

# GapNotHealed.kind values
UNKNOWN_PRODUCT = "unknown_product"  # the exchange rejected the product (Coinbase 404, Binance 400)
RATE_LIMITED = "rate_limited"  # a 429/418 asked for a longer wait than the client accepts
UNAVAILABLE = "unavailable"  # 5xx/timeouts outlived the retries
NOT_SERVED = "not_served"  # the exchange answered but without some ids (older than it keeps)
TOO_LARGE = "too_large"  # more ids than max_gap: not fetched at all
BAD_RESPONSE = "bad_response"  # a body that is not a list of trades, or unreadable records
UNSUPPORTED = "unsupported_exchange"  # no REST client for this exchange


class GapNotHealed(RuntimeError):
    """The exchange could not give every trade of [first, last]; the gap stays open."""

    def __init__(self, kind: str, exchange: str, product: str, first: int, last: int, reason: str,
                 trades: list[dict] | None = None, missing: list[tuple[int, int]] | None = None) -> None:
        self.kind, self.exchange, self.product = kind, exchange, product
        self.first, self.last, self.reason = first, last, reason
        self.trades: list[dict] = trades or []
        self.missing: list[tuple[int, int]] = missing if missing is not None else [(first, last)]
        open_ids = sum(b - a + 1 for a, b in self.missing)
        super().__init__(f"{exchange} {product} trades {first}..{last} not healed ({kind}): {reason}; "
                         f"{len(self.trades)} fetched, {open_ids} still missing")


@dataclass
class HealStats:
    """Counters for the source's stats line and metrics."""

    gaps_healed: int = 0
    gaps_open: int = 0  # heals that raised GapNotHealed
    trades_fetched: int = 0  # contract trades returned (healed or partial)
    ids_missing: int = 0  # ids left in open gaps
    requests: int = 0
    rate_limit_waits: int = 0  # 429/418 waited out + pauses for the Binance weight budget
    waited_s: float = 0.0


def missing_ranges(ids: list[int], first: int, last: int) -> list[tuple[int, int]]:
    """The id ranges of [first, last] that `ids` (ascending, inside the range) do not cover."""
    out: list[tuple[int, int]] = []
    expect = first
    for i in ids:
        if i > expect:
            out.append((expect, i - 1))
        expect = max(expect, i + 1)
    if expect <= last:
        out.append((expect, last))
    return out


class GapHealer:
    """Heal trade-id gaps on Coinbase and Binance (see the module doc)."""

    def __init__(self, *, coinbase: CoinbaseTrades | None = None, binance: BinanceTrades | None = None,
                 max_gap: int = DEFAULT_MAX_GAP) -> None:
        self.sources: dict[str, CoinbaseTrades | BinanceTrades] = {}
        if coinbase is not None:
            self.sources["coinbase"] = coinbase
        if binance is not None:
            self.sources["binance"] = binance
        self.max_gap = max_gap
        self._gaps = HealStats()

    @classmethod
    def from_settings(cls, settings: ExchangeSettings | None = None, *, max_gap: int = DEFAULT_MAX_GAP,
                      **client_kw: Any) -> GapHealer:
        """Both exchanges at COINBASE_REST_URL / BINANCE_REST_URL; `client_kw` goes to both
        `ExchangeRestClient`s (e.g. `max_retry_after_s`, or `sleep`/`clock` in tests)."""
        s = settings or exchange_settings()
        return cls(coinbase=CoinbaseTrades(ExchangeRestClient.coinbase(s.coinbase_rest_url, **client_kw)),
                   binance=BinanceTrades(ExchangeRestClient.binance(s.binance_rest_url, **client_kw)),
                   max_gap=max_gap)

    def close(self) -> None:
        for source in self.sources.values():
            source.client.close()

    def __enter__(self) -> GapHealer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stats(self) -> HealStats:
        """Gap counters plus the REST clients' request and rate-limit counters."""
        clients = [s.client.stats for s in self.sources.values()]
        return HealStats(
            gaps_healed=self._gaps.gaps_healed, gaps_open=self._gaps.gaps_open,
            trades_fetched=self._gaps.trades_fetched, ids_missing=self._gaps.ids_missing,
            requests=sum(c.requests for c in clients),
            rate_limit_waits=sum(c.rate_limited + c.weight_waits for c in clients),
            waited_s=sum(c.waited_s for c in clients),
        )

    def heal(self, exchange: str, product: str, first_missing: int, last_missing: int) -> list[dict]:
        """Every trade with first_missing <= trade_id <= last_missing, ascending by id, as contract
        trades (origin `rest`); or GapNotHealed with the part fetched and the ranges still open."""
        if first_missing > last_missing:
            raise ValueError(f"empty gap [{first_missing}, {last_missing}]")
        first, last = first_missing, last_missing
        source = self.sources.get(exchange)
        if source is None:
            self._open(GapNotHealed(UNSUPPORTED, exchange, product, first, last,
                                    f"no REST client for {exchange!r} (have {sorted(self.sources)})"))
        size = last - first + 1
        if size > self.max_gap:
            self._open(GapNotHealed(TOO_LARGE, exchange, product, first, last,
                                    f"{size} trades is more than max_gap={self.max_gap}"))
        got = FetchResult()
        failure: tuple[str, Exception] | None = None
        try:
            source.fetch_range(product, first, last, into=got)
        except RestRequestError as exc:
            failure = (UNKNOWN_PRODUCT if exc.status in (400, 404) else BAD_RESPONSE, exc)
        except RestRateLimited as exc:
            failure = (RATE_LIMITED, exc)
        except RestUnavailable as exc:
            failure = (UNAVAILABLE, exc)
        except ValueError as exc:
            failure = (BAD_RESPONSE, exc)
        trades = got.in_id_order()
        self._gaps.trades_fetched += len(trades)
        missing = missing_ranges([t["trade_id"] for t in trades], first, last)
        if failure is not None:
            kind, exc = failure
            self._open(GapNotHealed(kind, exchange, product, first, last, str(exc), trades, missing), exc)
        if missing:
            kind, why = ((BAD_RESPONSE, f"{len(got.malformed)} unreadable records, first: {got.malformed[0]}")
                         if got.malformed else (NOT_SERVED, "the exchange did not return these ids "
                                                "(older than it keeps, or never existed)"))
            self._open(GapNotHealed(kind, exchange, product, first, last, why, trades, missing))
        self._gaps.gaps_healed += 1
        logger.info("%s %s: healed trades %d..%d (%d fetched in %d requests)", exchange, product,
                    first, last, len(trades), got.pages)
        return trades

    def _open(self, err: GapNotHealed, cause: Exception | None = None) -> NoReturn:
        self._gaps.gaps_open += 1
        self._gaps.ids_missing += sum(b - a + 1 for a, b in err.missing)
        logger.warning("gap stays open: %s", err)
        raise err from cause
