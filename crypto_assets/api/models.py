"""Response models of the read API: they are its OpenAPI schema, so every field says what it is
(the column comments of the warehouse tables, crypto_assets/warehouse/derived_tables.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class Coin(BaseModel):
    coin_id: str = Field(description="coin identifier (CoinGecko style), e.g. bitcoin")
    symbol: str = Field(description="ticker symbol, e.g. btc")
    coingecko_id: str = Field(description="the coin's id on CoinGecko")
    has_data: bool = Field(description="the gold mirror holds features of this coin")


class LatestPrice(BaseModel):
    coin_id: str
    symbol: str
    event_time: datetime = Field(description="event time of the coin's newest tick in the gold mirror")
    price_usd: float = Field(description="price in USD")
    volume_24h_usd: float | None = Field(description="traded volume over the last 24 h in USD")
    return_pct: float | None = Field(description="simple return vs the previous tick, in %")


class LatestFeatures(BaseModel):
    coin_id: str
    symbol: str
    event_time: datetime = Field(description="event time of the coin's newest feature row")
    price_usd: float
    volume_24h_usd: float | None
    return_pct: float | None = Field(description="simple return vs the previous tick, in %")
    log_return: float | None
    sma_1m: float | None = Field(description="mean price over (t - 1 min, t]")
    sma_5m: float | None = Field(description="mean price over (t - 5 min, t]")
    sma_15m: float | None = Field(description="mean price over (t - 15 min, t]")
    ema_20: float | None = Field(description="20-tick EMA")
    volatility_15m: float | None = Field(description="population std of log returns over (t - 15 min, t]")
    zscore_15m: float | None = Field(description="z-score of the price against its 15-minute window")
    volume_change_pct: float | None = Field(description="24h volume vs the previous tick, in %")
    ticks_15m: int | None = Field(description="ticks in (t - 15 min, t]")


class Candle(BaseModel):
    time: datetime = Field(description="start of the UTC minute or hour")
    open: float
    high: float
    low: float
    close: float
    volume: float | None = Field(description="last 24h USD volume seen in the interval (the feed carries no trade volume)")
    tick_count: int = Field(description="clean ticks in the interval")
    return_pct: float | None = Field(default=None, description="1m only: close vs the previous close, in %")
    rsi_14: float | None = Field(default=None, description="1m only: Wilder RSI(14) of closes")
    bb_middle: float | None = Field(default=None, description="1m only: Bollinger(20, 2) middle band")
    bb_upper: float | None = Field(default=None, description="1m only: Bollinger(20, 2) upper band")
    bb_lower: float | None = Field(default=None, description="1m only: Bollinger(20, 2) lower band")


class CandlePage(BaseModel):
    coin_id: str
    symbol: str
    interval: Literal["1m", "1h"]
    items: list[Candle] = Field(description="candles in ascending time")
    next_cursor: str | None = Field(description="pass as `cursor` for the next page; null on the last page")


class Anomaly(BaseModel):
    anomaly_id: str = Field(description="md5(coin_id | event_time | rule): stable, never duplicated")
    coin_id: str
    symbol: str
    event_time: datetime
    rule: str = Field(description="price_zscore | volume_spike | trade_return_zscore | trade_volume_spike")
    severity: str = Field(description="warning | critical")
    value: float = Field(description="the z-score, or the volume change %")
    threshold: float = Field(description="the rule's threshold the value exceeded")
    price_usd: float
    volume_24h_usd: float | None
    detected_at: datetime = Field(description="when the anomalies run found it")
    source: str = Field(description="ticks, or trades:<exchange>:<product>")


class AnomalyPage(BaseModel):
    items: list[Anomaly] = Field(description="newest first")
    next_cursor: str | None


class Prediction(BaseModel):
    coin_id: str
    symbol: str
    event_time: datetime = Field(description="event time of the feature row scored")
    price_usd: float
    trend_prob_up: float | None = Field(description="trend model: probability of a rise over the direction horizon")
    trend_model_version: str | None = Field(description="trend model version that scored the row")
    anomaly_prob: float | None = Field(description="anomaly model: probability of a large move in the next 15 min")
    anomaly_model_version: str | None = Field(description="anomaly model version that scored the row")
    forecast_return_1h: float | None
    forecast_return_4h: float | None
    forecast_return_24h: float | None
    price_model_versions: str | None = Field(description="price model versions per horizon, e.g. 1h:v3,4h:v2")
    predicted_at: datetime = Field(description="when the row was scored")


class PredictionPage(BaseModel):
    items: list[Prediction] = Field(description="newest first")
    next_cursor: str | None


class CoinHealth(BaseModel):
    coin_id: str
    symbol: str
    newest_event_time: datetime | None = Field(description="newest feature row of the coin in the gold mirror")
    age_seconds: float | None = Field(description="now minus newest_event_time")
    fresh: bool = Field(description="age_seconds <= stale_after_seconds")


class Health(BaseModel):
    status: Literal["ok", "stale", "empty"] = Field(
        description="ok: every configured coin is fresh; stale: one or more is not; empty: no data at all")
    checked_at: datetime
    stale_after_seconds: float
    coins: list[CoinHealth]


class ErrorBody(BaseModel):
    detail: str
