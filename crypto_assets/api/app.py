"""The FastAPI app: routes, input validation and error answers; the SQL is in queries.py.

Handlers are plain functions, so uvicorn runs them in its thread pool, each on its own DuckDB
cursor (lake_source.LakeSource). Times without an offset are UTC; a range is [start, end)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import orjson
from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response

from crypto_assets import settings
from crypto_assets.api import queries
from crypto_assets.api.lake_source import LISTING_TTL_S, LakeSource
from crypto_assets.api.models import (
    AnomalyPage,
    CandlePage,
    Coin,
    CoinHealth,
    ErrorBody,
    Health,
    LatestFeatures,
    LatestPrice,
    PredictionPage,
)
from crypto_assets.kafka.tick_contract import coins_for

MAX_LIMIT = 5000
DEFAULT_LIMIT = 1000
STALE_AFTER_S = 900.0  # a coin whose newest feature row is older than this is stale in /health

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description=f"rows per page (at most {MAX_LIMIT})")]
Start = Annotated[datetime | None, Query(description="inclusive lower bound of the time (ISO 8601; no offset = UTC)")]
End = Annotated[datetime | None, Query(description="exclusive upper bound of the time (ISO 8601; no offset = UTC)")]
Cursor = Annotated[str | None, Query(description="next_cursor of the previous page")]
_ERRORS: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "unknown coin"},
           400: {"model": ErrorBody, "description": "a cursor this API did not hand out"}}


def _utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _range(start: datetime | None, end: datetime | None) -> tuple[datetime | None, datetime | None]:
    start, end = _utc(start), _utc(end)
    if start is not None and end is not None and start >= end:
        raise HTTPException(422, f"start ({start.isoformat()}) must be before end ({end.isoformat()})")
    return start, end


def create_app(lake_root: Path | None = None, coin_ids: list[str] | None = None,
               stale_after_s: float = STALE_AFTER_S, listing_ttl_s: float = LISTING_TTL_S) -> FastAPI:
    """The read API over `lake_root` (default: the lakehouse's, <CRYPTO_HOME>/lake) for the
    configured coins (default: $COINS)."""
    root = Path(lake_root) if lake_root is not None else settings.lakehouse_resource().lake_path
    coins = {c.coin_id: c for c in coins_for(coin_ids or settings.coin_ids())}
    lake = LakeSource(root, ttl_s=listing_ttl_s)
    app = FastAPI(
        title="crypto_assets read API",
        version="1",
        description="Read-only access to the gold tables through their Parquet mirror (never the pipeline's DuckDB "
                    "file). Times are UTC; ranges are [start, end); pages follow `next_cursor`.",
    )
    app.state.lake = lake

    @app.exception_handler(queries.BadCursor)
    def _bad_cursor(_: Request, exc: queries.BadCursor) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=400)

    def known(coin: str | None) -> str | None:
        if coin is not None and coin not in coins:
            raise HTTPException(404, f"unknown coin {coin!r}; known: {', '.join(sorted(coins))}")
        return coin

    @app.get("/coins", response_model=list[Coin], summary="The configured coins and whether the lake has their data")
    def list_coins() -> list[Coin]:
        have = queries.coins_with_data(lake)
        return [Coin(coin_id=c.coin_id, symbol=c.symbol, coingecko_id=c.coingecko_id, has_data=c.symbol in have)
                for c in coins.values()]

    @app.get("/prices/latest", response_model=list[LatestPrice], responses=_ERRORS,
             summary="Each coin's newest price (from market_features)")
    def latest_prices(coin: str | None = None) -> list[dict]:
        return queries.latest_features(lake, known(coin))

    @app.get("/features/latest", response_model=list[LatestFeatures], responses=_ERRORS,
             summary="Each coin's newest feature row")
    def latest_features(coin: str | None = None) -> list[dict]:
        return queries.latest_features(lake, known(coin))

    @app.get("/candles", response_model=CandlePage, responses=_ERRORS, summary="A coin's OHLCV candles, ascending")
    def candles(coin: str, interval: Literal["1m", "1h"] = "1m", start: Start = None, end: End = None,
                limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None) -> Response:
        c = coins[known(coin) or coin]
        start, end = _range(start, end)
        page = queries.candles(lake, c.coin_id, interval, start, end, limit, cursor)
        # the hot path: rows of our own typed table, serialised straight to JSON (CandlePage is
        # its documented shape; validating 5000 rows again would cost a third of the request)
        return Response(orjson.dumps({"coin_id": c.coin_id, "symbol": c.symbol, "interval": interval,
                                      "items": page.items, "next_cursor": page.next_cursor}),
                        media_type="application/json")

    @app.get("/anomalies", response_model=AnomalyPage, responses=_ERRORS, summary="Detected anomalies, newest first")
    def anomalies(coin: str | None = None, severity: Literal["warning", "critical"] | None = None,
                  rule: str | None = None, start: Start = None, end: End = None, limit: Limit = DEFAULT_LIMIT,
                  cursor: Cursor = None) -> AnomalyPage:
        start, end = _range(start, end)
        page = queries.anomalies(lake, known(coin), severity, rule, start, end, limit, cursor)
        return AnomalyPage.model_validate({"items": page.items, "next_cursor": page.next_cursor})

    @app.get("/predictions", response_model=PredictionPage, responses=_ERRORS,
             summary="Model predictions with the model versions that made them, newest first")
    def predictions(coin: str | None = None, start: Start = None, end: End = None, limit: Limit = DEFAULT_LIMIT,
                    cursor: Cursor = None) -> PredictionPage:
        start, end = _range(start, end)
        page = queries.predictions(lake, known(coin), start, end, limit, cursor)
        return PredictionPage.model_validate({"items": page.items, "next_cursor": page.next_cursor})

    @app.get("/health", response_model=Health, summary="Data freshness per coin: newest feature row and its age")
    def health() -> Health:
        now = datetime.now(UTC)
        newest = {r["coin_id"]: r["event_time"] for r in queries.latest_features(lake)}
        per_coin = []
        for c in coins.values():
            t = newest.get(c.coin_id)
            age = (now - t).total_seconds() if t is not None else None
            per_coin.append(CoinHealth(coin_id=c.coin_id, symbol=c.symbol, newest_event_time=t, age_seconds=age,
                                       fresh=age is not None and age <= stale_after_s))
        status = "empty" if not newest else ("ok" if all(h.fresh for h in per_coin) else "stale")
        return Health(status=status, checked_at=now, stale_after_seconds=stale_after_s, coins=per_coin)

    return app
