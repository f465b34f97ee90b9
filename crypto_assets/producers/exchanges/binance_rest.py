"""Binance Spot trades over REST: `GET /api/v3/historicalTrades`, to heal a gap.

The endpoint returns up to 1,000 trades ascending from `fromId` and costs 25 request weight
(the client keeps the per-minute weight budget from `X-MBX-USED-WEIGHT-1M`). A gap [first, last]
is paged forward: `fromId=first`, then one past the newest id returned, until `last` is reached.
`isBuyerMaker` true means the taker sold.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from crypto_assets.kafka.trade_contract import make_trade
from crypto_assets.producers.exchanges.coinbase_rest import FetchResult
from crypto_assets.producers.exchanges.rest_http import ExchangeRestClient

logger = logging.getLogger(__name__)

BINANCE_TRADES_PAGE = 1000  # the endpoint's maximum `limit`
HISTORICAL_TRADES_WEIGHT = 25


def binance_trade(record: Any, symbol: str, received_at: datetime | None) -> dict:
    """One `historicalTrades` record as a contract trade (origin `rest`); ValueError if malformed."""
    if not isinstance(record, dict):
        raise ValueError(f"trade record is not an object: {record!r}")
    try:
        trade_id, price, qty = record["id"], record["price"], record["qty"]
        time_ms, buyer_maker = record["time"], record["isBuyerMaker"]
    except KeyError as exc:
        raise ValueError(f"trade record without {exc.args[0]!r}: {record!r}") from None
    if isinstance(trade_id, bool) or not isinstance(trade_id, int):
        raise ValueError(f"id is not an integer: {record!r}")
    if isinstance(time_ms, bool) or not isinstance(time_ms, int):
        raise ValueError(f"time is not integer milliseconds: {record!r}")
    if not isinstance(buyer_maker, bool):
        raise ValueError(f"isBuyerMaker is not a boolean: {record!r}")
    when = datetime.fromtimestamp(time_ms // 1000, UTC).replace(microsecond=(time_ms % 1000) * 1000)
    return make_trade(exchange="binance", product=symbol, trade_id=trade_id, price=price, size=qty,
                      side="sell" if buyer_maker else "buy", trade_time=when,
                      received_at=received_at, origin="rest")


class BinanceTrades:
    """Fetch a symbol's trades by id range from Binance Spot (see the module doc)."""

    def __init__(self, client: ExchangeRestClient, *, page_size: int = BINANCE_TRADES_PAGE) -> None:
        if not 1 <= page_size <= BINANCE_TRADES_PAGE:
            raise ValueError(f"page_size must be 1..{BINANCE_TRADES_PAGE}")
        self.client, self.page_size = client, page_size

    def fetch_range(self, symbol: str, first: int, last: int, into: FetchResult | None = None) -> FetchResult:
        """Trades with `first <= id <= last`, ascending. Ids Binance does not return are absent:
        the caller compares the ids with the range. `into` collects the pages as they come, so a
        caller keeps what was fetched when a later page raises."""
        if first > last:
            raise ValueError(f"empty range [{first}, {last}]")
        symbol = symbol.upper()
        out = FetchResult() if into is None else into
        from_id = first
        while from_id <= last:
            limit = min(self.page_size, last - from_id + 1)
            body = self.client.get_json("/api/v3/historicalTrades",
                                        {"symbol": symbol, "fromId": from_id, "limit": limit},
                                        weight=HISTORICAL_TRADES_WEIGHT)
            out.pages += 1
            if not isinstance(body, list):
                raise ValueError(f"binance historicalTrades: expected a JSON list, got {str(body)[:200]!r}")
            received = datetime.now(UTC)
            newest = None
            for record in body:
                try:
                    trade = binance_trade(record, symbol, received)
                except ValueError as exc:
                    out.malformed.append(str(exc))
                    logger.warning("binance %s: unreadable trade record skipped: %s", symbol, exc)
                    raw_id = record.get("id") if isinstance(record, dict) else None
                    if isinstance(raw_id, int) and not isinstance(raw_id, bool):
                        newest = raw_id if newest is None else max(newest, raw_id)
                    continue
                newest = trade["trade_id"] if newest is None else max(newest, trade["trade_id"])
                out.add(trade, first, last)
            if newest is None or newest < from_id:
                break  # an empty page, or one that does not move forward: nothing more to get
            from_id = newest + 1
        out.trades = out.in_id_order()
        return out
