"""A CoinGecko /coins/markets payload as the real API returns it, the contract check for the
ticks mapped from it, and a retrying client that never really sleeps: shared by the CoinGecko
tests, with the scripted server responses the retry and end-to-end tests replay."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from werkzeug import Request, Response

from crypto_assets.kafka.tick_contract import FIELDS, REQUIRED_FIELDS, SCHEMA_VERSION
from crypto_assets.producers.coingecko_client import (
    CoinGeckoClient,
)

MARKETS = "/api/v3/coins/markets"
INGESTED = datetime(2025, 12, 20, 15, 30, 5, tzinfo=UTC)


def _item(cg_id: str, symbol: str, name: str, price, last_updated, **over) -> dict:
    """One /coins/markets row with CoinGecko's real field set (price_change_percentage=24h,7d)."""
    item = {
        "id": cg_id,
        "symbol": symbol,
        "name": name,
        "image": f"https://coin-images.coingecko.com/coins/images/1/large/{cg_id}.png?1696501400",
        "current_price": price,
        "market_cap": 854123456789,
        "market_cap_rank": 1,
        "fully_diluted_valuation": 914000000000,
        "total_volume": 28456789012,
        "high_24h": 44012.5,
        "low_24h": 42011.0,
        "price_change_24h": 995.12,
        "price_change_percentage_24h": 2.34,
        "market_cap_change_24h": 19876543210.0,
        "market_cap_change_percentage_24h": 2.38,
        "circulating_supply": 19600000.0,
        "total_supply": 21000000.0,
        "max_supply": 21000000.0,
        "ath": 126080,
        "ath_change_percentage": -65.5,
        "ath_date": "2025-10-06T18:57:42.558Z",
        "atl": 67.81,
        "atl_change_percentage": 64100.2,
        "atl_date": "2013-07-06T00:00:00.000Z",
        "roi": None,
        "last_updated": last_updated,
        "price_change_percentage_24h_in_currency": 2.34,
        "price_change_percentage_7d_in_currency": -1.23,
    }
    item.update(over)
    return item


def realistic_payload(btc_updated: str = "2025-12-20T15:30:00.123Z") -> list[dict]:
    return [
        _item("bitcoin", "BTC", "Bitcoin", 43521.87, btc_updated),
        _item(
            "ethereum",
            "eth",
            "Ethereum",
            3101.5,
            "2025-12-20T15:29:58.000Z",
            market_cap=373000000000,
            total_volume=18000000000,
            price_change_percentage_24h=-0.51,
            price_change_percentage_7d_in_currency=4.2,
            max_supply=None,
        ),
        # CoinGecko's id for Avalanche is avalanche-2; nulls where CoinGecko gives nulls.
        _item(
            "avalanche-2",
            "avax",
            "Avalanche",
            15.12,
            "2025-12-20T15:29:41.512Z",
            market_cap=None,
            fully_diluted_valuation=None,
            total_volume=None,
            price_change_percentage_24h=None,
            price_change_percentage_7d_in_currency=None,
            max_supply=None,
            total_supply=None,
        ),
    ]


COIN_IDS = ["bitcoin", "ethereum", "avalanche"]


def assert_contract(tick: dict) -> None:
    assert set(tick) == set(FIELDS)
    assert tick["schema_version"] == SCHEMA_VERSION
    assert tick["source"] == "coingecko"
    for name in REQUIRED_FIELDS:
        assert tick[name] is not None, name
    for name, kind in FIELDS.items():
        value = tick[name]
        if value is None:
            continue
        expected = {"int": int, "float": (int, float), "str": str}[kind]
        assert isinstance(value, expected) and not isinstance(value, bool), (name, value)
    for name in ("last_updated_at", "ingestion_timestamp"):
        assert tick[name].endswith("Z")
        datetime.fromisoformat(tick[name])


def fast_client(base_url: str, sleeps: list[float] | None = None, **kw) -> CoinGeckoClient:
    sleeps = [] if sleeps is None else sleeps
    kw.setdefault("random", lambda: 1.0)
    return CoinGeckoClient(base_url, sleep=sleeps.append, **kw)


def scripted(httpserver, *responses):
    """Serve the given Responses (or callables) in order; the last one repeats."""
    calls = {"n": 0}

    def handler(request: Request) -> Response:
        i = min(calls["n"], len(responses) - 1)
        calls["n"] += 1
        r = responses[i]
        return r if isinstance(r, Response) else r(request)

    httpserver.expect_request(MARKETS).respond_with_handler(handler)
    return calls


def ok() -> Response:
    return Response(json.dumps(realistic_payload()), status=200, content_type="application/json")
