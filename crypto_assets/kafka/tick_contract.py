"""The tick message contract on `crypto_raw` and the default coin universe.

Producers, the raw pull and the tests all import from here so the contract is stated once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

SCHEMA_VERSION = 1

# Field name -> JSON type expected in the message ("int", "float", "str").
FIELDS: dict[str, str] = {
    "schema_version": "int",
    "source": "str",
    "coin_id": "str",
    "symbol": "str",
    "price_usd": "float",
    "market_cap_usd": "float",
    "volume_24h_usd": "float",
    "change_24h_pct": "float",
    "change_7d_pct": "float",
    "last_updated_at": "str",
    "ingestion_timestamp": "str",
}

# A tick without these is unusable; the others may be null (CoinGecko returns nulls).
REQUIRED_FIELDS: tuple[str, ...] = (
    "schema_version",
    "source",
    "coin_id",
    "symbol",
    "price_usd",
    "last_updated_at",
)

# Messages larger than this are quarantined unparsed (a tick is ~300 bytes).
MAX_MESSAGE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Coin:
    coin_id: str
    symbol: str
    coingecko_id: str
    # Price level around which the simulator starts (USD), roughly late-2025 markets.
    ref_price: float
    # Typical 24h traded volume in USD, used by the simulator.
    ref_volume: float
    # Annualised volatility used by the simulator.
    annual_vol: float


DEFAULT_COINS: tuple[Coin, ...] = (
    Coin("bitcoin", "btc", "bitcoin", 90_000.0, 35e9, 0.55),
    Coin("ethereum", "eth", "ethereum", 3_100.0, 18e9, 0.70),
    Coin("solana", "sol", "solana", 140.0, 4e9, 0.90),
    Coin("cardano", "ada", "cardano", 0.45, 6e8, 0.85),
    Coin("polygon", "pol", "polygon-ecosystem-token", 0.20, 1.5e8, 0.95),
    Coin("chainlink", "link", "chainlink", 14.0, 5e8, 0.85),
    Coin("avalanche", "avax", "avalanche-2", 15.0, 4e8, 0.95),
    Coin("polkadot", "dot", "polkadot", 2.5, 2.5e8, 0.90),
    Coin("uniswap", "uni", "uniswap", 6.0, 2e8, 0.95),
    Coin("litecoin", "ltc", "litecoin", 85.0, 5e8, 0.70),
)

DEFAULT_COIN_IDS: tuple[str, ...] = tuple(c.coin_id for c in DEFAULT_COINS)
COINS_BY_ID: dict[str, Coin] = {c.coin_id: c for c in DEFAULT_COINS}


def coins_for(ids: tuple[str, ...] | list[str]) -> tuple[Coin, ...]:
    """Coins for the given ids; unknown ids get a neutral profile so a new coin can be added by config."""
    out = []
    for coin_id in ids:
        coin = COINS_BY_ID.get(coin_id)
        if coin is None:
            coin = Coin(coin_id, coin_id[:5], coin_id, 1.0, 1e8, 0.9)
        out.append(coin)
    return tuple(out)


def iso_utc(ts: datetime) -> str:
    """Render a timestamp the way the contract wants it: UTC, second precision or better, 'Z'."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    ts = ts.astimezone(UTC)
    if ts.microsecond:
        return ts.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    return ts.strftime("%Y-%m-%dT%H:%M:%SZ")


def make_tick(
    *,
    source: str,
    coin_id: str,
    symbol: str,
    price_usd: float,
    last_updated_at: datetime,
    market_cap_usd: float | None = None,
    volume_24h_usd: float | None = None,
    change_24h_pct: float | None = None,
    change_7d_pct: float | None = None,
    ingestion_timestamp: datetime | None = None,
) -> dict:
    """Build one contract message (a dict ready for JSON encoding)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "source": source,
        "coin_id": coin_id,
        "symbol": symbol,
        "price_usd": price_usd,
        "market_cap_usd": market_cap_usd,
        "volume_24h_usd": volume_24h_usd,
        "change_24h_pct": change_24h_pct,
        "change_7d_pct": change_7d_pct,
        "last_updated_at": iso_utc(last_updated_at),
        "ingestion_timestamp": iso_utc(ingestion_timestamp or datetime.now(UTC)),
    }
