"""1-minute klines (exchange candles) for one UTC day, from the exchanges' public REST APIs.

The history backfill (crypto_assets.defs.history) loads a day per partition; this module pages
through the day and returns a polars frame with the `klines_1m` columns
(crypto_assets.warehouse.kline_tables):

- Binance `GET /api/v3/klines?symbol=BTCUSDT&interval=1m&startTime=ms&endTime=ms&limit=1000`
  (request weight 2; startTime and endTime inclusive, oldest first). A row is `[openTime,
  open, high, low, close, volume, closeTime, quoteAssetVolume, numberOfTrades, takerBuyBase,
  takerBuyQuote, ignore]` with every decimal a string. A day is 2 requests (1,000 + 440). Binance
  gives quote volume, trade count and the taker-buy volume, so vwap = quote / base volume and
  buy/sell volume are known.
- Coinbase Exchange `GET /products/{id}/candles?granularity=60&start=ISO&end=ISO`: at most 300
  buckets per request, NEWEST first, a row `[time (epoch s), low, high, open, close, volume]`
  whose prices are JSON **numbers**, not strings. They are decoded with `parse_float=Decimal`
  from their JSON text, so the digits Coinbase sent reach the DECIMAL columns without a float
  round trip. A minute without a trade has no bucket. A day is 5 requests. Coinbase gives no
  quote volume, trade count or taker split: those columns are NULL.

Decimals are kept to 8 places (DECIMAL(18,8) prices, DECIMAL(38,8) volumes), as the trade
contract stores them. A response that is not a list of rows of the documented shape raises
`KlineFormatError` naming the product and the offending row.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import polars as pl

from crypto_assets.kafka.trade_contract import coin_id_for, split_product
from crypto_assets.producers.exchanges.rest_http import ExchangeRestClient

MINUTES_PER_DAY = 1440
BINANCE_LIMIT = 1000
BINANCE_KLINES_WEIGHT = 2
COINBASE_LIMIT = 300

PRICE = pl.Decimal(18, 8)
VOLUME = pl.Decimal(38, 8)
BAR_START = pl.Datetime("us", "UTC")
# The klines_1m columns the fetchers fill, in table order (loaded_at is added when written).
KLINE_SCHEMA: dict[str, Any] = {
    "exchange": pl.String, "product": pl.String, "coin_id": pl.String, "bar_start": BAR_START,
    "open": PRICE, "high": PRICE, "low": PRICE, "close": PRICE,
    "base_volume": VOLUME, "quote_volume": VOLUME, "vwap": pl.Float64, "trade_count": pl.Int64,
    "buy_volume": VOLUME, "sell_volume": VOLUME,
}
_BINANCE_FIELDS = ["open_time", "open", "high", "low", "close", "volume", "close_time", "quote_volume",
                   "trade_count", "taker_buy_base", "taker_buy_quote", "ignore"]
_COINBASE_SCHEMA: dict[str, Any] = {"time": pl.Int64, "low": PRICE, "high": PRICE, "open": PRICE, "close": PRICE,
                                    "volume": VOLUME}

_REQUIRED = ["bar_start", "open", "high", "low", "close", "base_volume"]


class KlineFormatError(ValueError):
    """An exchange answered the candles request with something that is not rows of candles."""


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """[start, end) of a UTC day."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return start, start + timedelta(days=1)


def binance_symbol(symbol: str) -> str:
    """Binance's REST spelling of a configured symbol (`btcusdt` -> `BTCUSDT`), the product id."""
    return symbol.strip().upper()


def _rows(body: Any, width: int, exchange: str, product: str) -> list[list[Any]]:
    if not isinstance(body, list):
        raise KlineFormatError(f"{exchange} {product}: expected a list of candles, got {str(body)[:200]}")
    for row in body:
        if not isinstance(row, list) or len(row) < width:
            raise KlineFormatError(f"{exchange} {product}: a candle is not a list of {width} fields: {row!r}")
    return body


def _frame(raw: pl.DataFrame, exchange: str, product: str, day: date) -> pl.DataFrame:
    """Identity columns, the day's minutes only, one row per minute, oldest first."""
    start, end = day_bounds(day)
    base, _quote = split_product(exchange, product)
    bad = raw.filter(pl.any_horizontal(pl.col(_REQUIRED).is_null()))
    if bad.height:
        raise KlineFormatError(f"{exchange} {product}: {bad.height} candles with a field that is not a number, "
                               f"first {bad.row(0, named=True)}")
    return (raw.with_columns(exchange=pl.lit(exchange), product=pl.lit(product), coin_id=pl.lit(coin_id_for(base)))
            .filter((pl.col("bar_start") >= start) & (pl.col("bar_start") < end))
            .unique("bar_start", keep="first", maintain_order=True)
            .sort("bar_start")
            .select([pl.col(c).cast(t) for c, t in KLINE_SCHEMA.items()]))


def _cast(raw: pl.DataFrame, casts: dict[str, Any], exchange: str, product: str) -> pl.DataFrame:
    try:
        return raw.with_columns(**casts)
    except pl.exceptions.PolarsError as exc:
        raise KlineFormatError(f"{exchange} {product}: a candle field is not a number: {exc}") from exc


def binance_day(client: ExchangeRestClient, symbol: str, day: date) -> pl.DataFrame:
    """The day's 1-minute klines of one Binance symbol (`btcusdt` or `BTCUSDT`)."""
    product = binance_symbol(symbol)
    start, end = day_bounds(day)
    lo, hi = int(start.timestamp() * 1000), int(end.timestamp() * 1000) - 1
    rows: list[list[Any]] = []
    cursor = lo
    while cursor <= hi:
        page = _rows(client.get_json("/api/v3/klines", {"symbol": product, "interval": "1m", "startTime": cursor,
                                                        "endTime": hi, "limit": BINANCE_LIMIT},
                                     weight=BINANCE_KLINES_WEIGHT), 12, "binance", product)
        rows.extend(page)
        if len(page) < BINANCE_LIMIT:
            break
        last = int(page[-1][0])
        if last < cursor:
            raise KlineFormatError(f"binance {product}: klines went backwards ({last} < {cursor})")
        cursor = last + 60_000
    raw = pl.DataFrame(rows, schema=_BINANCE_FIELDS, orient="row") if rows else \
        pl.DataFrame(schema={f: pl.String for f in _BINANCE_FIELDS})
    vol = pl.col("volume").str.to_decimal(scale=8)
    buy = pl.col("taker_buy_base").str.to_decimal(scale=8)
    quote = pl.col("quote_volume").str.to_decimal(scale=8)
    raw = _cast(raw, {
        "bar_start": pl.from_epoch(pl.col("open_time").cast(pl.Int64), time_unit="ms").dt.replace_time_zone("UTC"),
        **{c: pl.col(c).str.to_decimal(scale=8) for c in ("open", "high", "low", "close")},
        "base_volume": vol, "quote_volume": quote, "buy_volume": buy, "sell_volume": vol - buy,
        "vwap": pl.when(vol > 0).then(quote.cast(pl.Float64) / vol.cast(pl.Float64)),
        "trade_count": pl.col("trade_count").cast(pl.Int64),
    }, "binance", product)
    return _frame(raw, "binance", product, day)


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def coinbase_day(client: ExchangeRestClient, product: str, day: date) -> pl.DataFrame:
    """The day's 1-minute candles of one Coinbase product (`BTC-USD`)."""
    start, end = day_bounds(day)
    rows: list[list[Any]] = []
    for first in range(0, MINUTES_PER_DAY, COINBASE_LIMIT):
        w_start = start + timedelta(minutes=first)
        # end = the window's last bucket + 59 s: its 300 buckets whether Coinbase reads `end` as
        # inclusive or exclusive, never the next window's first
        w_end = min(w_start + timedelta(minutes=COINBASE_LIMIT), end) - timedelta(seconds=1)
        page = client.get_json(f"/products/{product}/candles",
                               {"granularity": 60, "start": _iso(w_start), "end": _iso(w_end)}, parse_float=Decimal)
        rows.extend(_rows(page, 6, "coinbase", product))
    try:  # typed at construction: JSON ints and Decimals alike become DECIMALs
        raw = pl.DataFrame(rows, schema=_COINBASE_SCHEMA, orient="row")
    except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
        raise KlineFormatError(f"coinbase {product}: a candle field is not a number: {exc}") from exc
    raw = raw.with_columns(
        bar_start=pl.from_epoch("time", time_unit="s").dt.replace_time_zone("UTC"),
        base_volume=pl.col("volume"),
        quote_volume=pl.lit(None, VOLUME), vwap=pl.lit(None, pl.Float64), trade_count=pl.lit(None, pl.Int64),
        buy_volume=pl.lit(None, VOLUME), sell_volume=pl.lit(None, VOLUME),
    )
    return _frame(raw, "coinbase", product, day)


def empty_klines() -> pl.DataFrame:
    return pl.DataFrame(schema=KLINE_SCHEMA)
