"""Coinbase Exchange trades over REST: `GET /products/{product_id}/trades`, to heal a gap.

Coinbase answers newest first, at most 1,000 trades a page, and pages *backwards*: the response
header `CB-AFTER` is the cursor of the next (older) page, passed back as `after=` to get the
trades whose `trade_id` is below it. So a gap [first, last] is fetched from `after=last+1` back
until `first` is reached, and reversed. Each record's `side` is the MAKER's side; the contract
carries the taker's, so it is flipped here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from crypto_assets.kafka.trade_contract import make_trade
from crypto_assets.producers.exchanges.rest_http import ExchangeRestClient

logger = logging.getLogger(__name__)

COINBASE_TRADES_PAGE = 1000  # the endpoint's maximum `limit`
TAKER_SIDE = {"buy": "sell", "sell": "buy"}  # maker side -> taker side


def parse_exchange_time(value: object) -> datetime:
    """An exchange ISO 8601 time (`...Z`, 0 to 9 fractional digits) as an aware UTC datetime.
    Digits beyond microseconds are cut, not rounded, so a trade never moves into the next second."""
    if not isinstance(value, str):
        raise ValueError(f"time must be a string, got {value!r}")
    text = value.strip()
    if "." in text:
        head, _, rest = text.partition(".")
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = head + ("." + rest[:min(digits, 6)] if digits else "") + rest[digits:]
    ts = datetime.fromisoformat(text)
    if ts.tzinfo is None:
        raise ValueError(f"time without a zone: {value!r}")
    return ts.astimezone(UTC)


def coinbase_trade(record: Any, product: str, received_at: datetime | None) -> dict:
    """One `/products/{id}/trades` record as a contract trade (origin `rest`); ValueError if malformed."""
    if not isinstance(record, dict):
        raise ValueError(f"trade record is not an object: {record!r}")
    try:
        trade_id, maker_side = record["trade_id"], record["side"]
        price, size, when = record["price"], record["size"], record["time"]
    except KeyError as exc:
        raise ValueError(f"trade record without {exc.args[0]!r}: {record!r}") from None
    if isinstance(trade_id, bool) or not isinstance(trade_id, int):
        raise ValueError(f"trade_id is not an integer: {record!r}")
    if maker_side not in TAKER_SIDE:
        raise ValueError(f"side is not buy/sell: {record!r}")
    return make_trade(exchange="coinbase", product=product, trade_id=trade_id, price=price, size=size,
                      side=TAKER_SIDE[maker_side], trade_time=parse_exchange_time(when),
                      received_at=received_at, origin="rest")


@dataclass
class FetchResult:
    """What a range fetch got: trades ascending by id, and the records that could not be read."""

    trades: list[dict] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)  # one reason per unreadable record
    pages: int = 0

    def add(self, trade: dict, first: int, last: int) -> None:
        if first <= trade["trade_id"] <= last:
            self.trades.append(trade)

    def in_id_order(self) -> list[dict]:
        """The trades ascending by id, each id once (pages can overlap)."""
        by_id = {t["trade_id"]: t for t in self.trades}
        return [by_id[i] for i in sorted(by_id)]


class CoinbaseTrades:
    """Fetch a product's trades by id range from Coinbase Exchange (see the module doc)."""

    def __init__(self, client: ExchangeRestClient, *, page_size: int = COINBASE_TRADES_PAGE) -> None:
        if not 1 <= page_size <= COINBASE_TRADES_PAGE:
            raise ValueError(f"page_size must be 1..{COINBASE_TRADES_PAGE}")
        self.client, self.page_size = client, page_size

    def fetch_range(self, product: str, first: int, last: int, into: FetchResult | None = None) -> FetchResult:
        """Trades with `first <= trade_id <= last`, ascending. Ids Coinbase no longer serves (or
        never had) are simply absent: the caller compares the ids with the range. `into` collects
        the pages as they come, so a caller keeps what was fetched when a later page raises."""
        if first > last:
            raise ValueError(f"empty range [{first}, {last}]")
        out = FetchResult() if into is None else into
        path = f"/products/{quote(product, safe='')}/trades"
        cursor = last + 1
        while cursor > first:
            limit = min(self.page_size, cursor - first)
            body, headers = self.client.get(path, {"limit": limit, "after": cursor})
            out.pages += 1
            if not isinstance(body, list):
                raise ValueError(f"coinbase {path}: expected a JSON list, got {str(body)[:200]!r}")
            if not body:
                break  # nothing older: the rest of the range is not served
            received = datetime.now(UTC)
            page_ids: list[int] = []
            for record in body:
                try:
                    trade = coinbase_trade(record, product, received)
                except ValueError as exc:
                    out.malformed.append(str(exc))
                    logger.warning("coinbase %s: unreadable trade record skipped: %s", product, exc)
                    continue
                page_ids.append(trade["trade_id"])
                out.add(trade, first, last)
            next_cursor = _cursor(headers.get("CB-AFTER"), page_ids)
            if next_cursor is None or next_cursor >= cursor:
                break  # no usable cursor, or one that does not move back: stop rather than loop
            cursor = next_cursor
        out.trades = out.in_id_order()
        return out


def _cursor(header: str | None, page_ids: list[int]) -> int | None:
    """The next `after=`: the CB-AFTER header, else the oldest id seen on the page."""
    if header:
        try:
            return int(header)
        except ValueError:
            pass
    return min(page_ids) if page_ids else None
