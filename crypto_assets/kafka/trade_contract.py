"""The trade message contract on `crypto_trades`: one executed exchange trade per message.

The exchange sources (producers/coinbase, producers/binance), the simulator's trade mode, the
`raw_trades` pull and the tests all build or read trades through this module, so the contract
is stated once. Version 1:

| field            | JSON   | meaning |
|------------------|--------|---------|
| schema_version   | int    | 1 |
| exchange         | string | `coinbase`, `binance` or `simulator` |
| product          | string | the exchange's own product id: `BTC-USD` (Coinbase), `BTCUSDT` (Binance) |
| base_currency    | string | upper case, e.g. `BTC` |
| quote_currency   | string | upper case, e.g. `USD`, `USDT` |
| coin_id          | string | the CoinGecko-style coin id of the base currency (`bitcoin`), so trades join ticks |
| trade_id         | int    | the exchange's trade id, increasing by 1 per product: a jump is a gap |
| price            | string | exact decimal, as the exchange sent it (`"90123.45"`): never a float |
| size             | string | exact decimal, in base currency |
| side             | string | the TAKER's side, `buy` or `sell` (Coinbase sends the maker's side; Binance `m`) |
| trade_time       | string | ISO 8601 UTC, when the exchange matched the trade |
| received_at      | string | ISO 8601 UTC, when the source received it |
| origin           | string | `ws` (live stream), `rest` (fetched to heal a gap) or `simulator` |

Message key: `exchange:product` (all trades of a product in one partition, in order).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

from crypto_assets.kafka.tick_contract import DEFAULT_COINS

TRADE_SCHEMA_VERSION = 1

# Field name -> JSON type expected in the message ("int", "str").
TRADE_FIELDS: dict[str, str] = {
    "schema_version": "int",
    "exchange": "str",
    "product": "str",
    "base_currency": "str",
    "quote_currency": "str",
    "coin_id": "str",
    "trade_id": "int",
    "price": "str",
    "size": "str",
    "side": "str",
    "trade_time": "str",
    "received_at": "str",
    "origin": "str",
}

# Every field is required except received_at (a replayed archive may not know it).
TRADE_REQUIRED_FIELDS: tuple[str, ...] = tuple(f for f in TRADE_FIELDS if f != "received_at")

SIDES = ("buy", "sell")
ORIGINS = ("ws", "rest", "simulator")

# Quote currencies recognised at the end of a Binance symbol, longest first (FDUSD before USD).
BINANCE_QUOTES: tuple[str, ...] = ("FDUSD", "USDT", "USDC", "TUSD", "BUSD", "USD", "EUR", "BTC", "ETH", "BNB", "TRY")

# Base currency (upper case) -> coin_id, for the default universe; POL's predecessor MATIC too.
COIN_BY_BASE: dict[str, str] = {c.symbol.upper(): c.coin_id for c in DEFAULT_COINS} | {"MATIC": "polygon"}


class ProductError(ValueError):
    """A product id that cannot be split into base and quote currency."""


def trade_key(exchange: str, product: str) -> str:
    """The Kafka message key of a product's trades."""
    return f"{exchange}:{product}"


def split_product(exchange: str, product: str) -> tuple[str, str]:
    """(base, quote) of an exchange product id: `BTC-USD` on Coinbase, `BTCUSDT` on Binance."""
    if "-" in product:
        base, _, quote = product.partition("-")
        if base and quote:
            return base.upper(), quote.upper()
        raise ProductError(f"{exchange} product {product!r}: expected BASE-QUOTE")
    upper = product.upper()
    for quote in BINANCE_QUOTES:
        if upper.endswith(quote) and len(upper) > len(quote):
            return upper[: -len(quote)], quote
    raise ProductError(f"{exchange} product {product!r}: no known quote currency at its end ({', '.join(BINANCE_QUOTES)})")


def coin_id_for(base_currency: str) -> str:
    """The coin id a base currency maps to; an unknown base maps to its lower-case name, so a new
    product joins a coin of that id once the coin is configured."""
    return COIN_BY_BASE.get(base_currency.upper(), base_currency.lower())


def exact_decimal(value: object) -> str:
    """A price or size as the exact decimal string the contract carries (no float round trip).
    Raises ValueError for anything that is not a finite decimal."""
    if isinstance(value, bool) or not isinstance(value, (str, int, Decimal)):
        raise ValueError(f"expected a decimal string, got {type(value).__name__} {value!r}")
    try:
        d = Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"not a decimal: {value!r}") from exc
    if not d.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    return str(value) if isinstance(value, str) else format(d, "f")


def make_trade(
    *,
    exchange: str,
    product: str,
    trade_id: int,
    price: str | Decimal,
    size: str | Decimal,
    side: str,
    trade_time: datetime,
    received_at: datetime | None,
    origin: str,
) -> dict:
    """Build one contract message (a dict ready for JSON encoding)."""
    if side not in SIDES:
        raise ValueError(f"side must be one of {SIDES}, got {side!r}")
    if origin not in ORIGINS:
        raise ValueError(f"origin must be one of {ORIGINS}, got {origin!r}")
    base, quote = split_product(exchange, product)
    return {
        "schema_version": TRADE_SCHEMA_VERSION,
        "exchange": exchange,
        "product": product,
        "base_currency": base,
        "quote_currency": quote,
        "coin_id": coin_id_for(base),
        "trade_id": int(trade_id),
        "price": exact_decimal(price),
        "size": exact_decimal(size),
        "side": side,
        "trade_time": iso_utc_micros(trade_time),
        "received_at": iso_utc_micros(received_at) if received_at is not None else None,
        "origin": origin,
    }


def iso_utc_micros(ts: datetime) -> str:
    """ISO 8601 UTC with 'Z', to the microsecond when the time has one (exchanges stamp trades to
    the microsecond; tick_contract.iso_utc keeps milliseconds)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    ts = ts.astimezone(UTC)
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ") if ts.microsecond else ts.strftime("%Y-%m-%dT%H:%M:%SZ")
