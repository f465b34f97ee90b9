"""Gold layer: per-tick features, candles with indicators, hourly stats, correlations, anomalies."""

from __future__ import annotations

import dagster as dg

from crypto_assets.defs import checks
from crypto_assets.defs.metadata import table_definition_metadata


def _gold(key: str, deps: list[str], description: str, kinds: set[str] | None = None) -> dg.AssetSpec:
    return dg.AssetSpec(key, deps=deps, group_name="gold", kinds=kinds or {"duckdb", "parquet"},
                        owners=["team:data-eng"], tags={"layer": "gold"}, code_version="2", skippable=True,
                        description=description, metadata=table_definition_metadata(key))


MARKET_FEATURES = _gold(
    "market_features", ["clean_ticks"],
    "One row per clean tick: return, log return, SMA over 1/5/15 minutes of event time, EMA(20), 15-minute "
    "volatility (population std of log returns), z-score of price against its 15-minute window, 24h-volume "
    "change %. Incremental; late ticks recompute the affected windows.")
OHLCV_1M = _gold(
    "ohlcv_1m", ["clean_ticks"],
    "1-minute candles per coin with RSI(14) (Wilder) and Bollinger bands (20, 2σ) on closes, as TA-Lib defines "
    "them; the RSI recursion carries its state across runs.")
OHLCV_1H = _gold("ohlcv_1h", ["clean_ticks"], "Hourly candles per coin (open/high/low/close/volume/tick count).")
HOURLY_STATS = _gold("hourly_stats", ["clean_ticks"],
                     "Per coin and hour: average/min/max/population-std price, average 24h volume, tick count.")
CORRELATIONS = _gold("correlations", ["ohlcv_1m"],
                     "Pairwise Pearson correlation of 1-minute returns over the last 24 h and 7 d (rows: coin_a, "
                     "coin_b, window, corr, n).")
ANOMALIES = _gold(
    "anomalies", ["market_features"],
    "|z| > 3 against the 15-minute window and 24h-volume spikes > 200 % vs the previous tick, with rule, severity "
    "and values. Each new anomaly is published once to `crypto_alerts`.", kinds={"duckdb", "kafka"})

GOLD_SPECS = [MARKET_FEATURES, ANOMALIES, OHLCV_1M, OHLCV_1H, HOURLY_STATS, CORRELATIONS]
CHECKS = [checks.FEATURES_FINITE, checks.RSI_RANGE]
