"""The exchanges' public REST APIs as a Dagster resource: where they are and what to load.

The history backfill asks it for one rate-limited client per exchange per run
(crypto_assets.producers.exchanges.rest_http), so the request weight and spacing a client
tracks cover every request the run makes. Built from ExchangeSettings (crypto_assets.settings).
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from crypto_assets.producers.exchanges.rest_http import ExchangeRestClient
from crypto_assets.settings import BINANCE_REST_URL, COINBASE_REST_URL, DEFAULT_BINANCE_SYMBOLS, DEFAULT_COINBASE_PRODUCTS


class ExchangeRestResource(dg.ConfigurableResource):
    """Base URLs and the configured products of Coinbase and Binance."""

    coinbase_rest_url: str = Field(default=COINBASE_REST_URL, description="Coinbase Exchange REST base URL")
    binance_rest_url: str = Field(default=BINANCE_REST_URL, description="Binance Spot REST base URL")
    coinbase_products: list[str] = Field(default_factory=lambda: list(DEFAULT_COINBASE_PRODUCTS),
                                         description="Coinbase product ids, e.g. BTC-USD")
    binance_symbols: list[str] = Field(default_factory=lambda: list(DEFAULT_BINANCE_SYMBOLS),
                                       description="Binance symbols, e.g. btcusdt")
    max_retry_after_s: float = Field(default=120.0, description="longest Retry-After waited out; longer fails the run")

    def binance_client(self) -> ExchangeRestClient:
        return ExchangeRestClient.binance(self.binance_rest_url, max_retry_after_s=self.max_retry_after_s)

    def coinbase_client(self) -> ExchangeRestClient:
        return ExchangeRestClient.coinbase(self.coinbase_rest_url, max_retry_after_s=self.max_retry_after_s)
