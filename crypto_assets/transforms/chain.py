"""The incremental chain in dependency order, outside Dagster: for benchmarks and tests that
compare many small runs with one big one. Dagster runs the same functions as assets."""

from __future__ import annotations

import duckdb

from crypto_assets.transforms.candles import candles_1m_increment, hourly_increment
from crypto_assets.transforms.clean import CleanConfig, clean_increment
from crypto_assets.transforms.features import features_increment
from crypto_assets.transforms.anomalies import anomalies_increment, correlations_refresh


def run_incremental(conn: duckdb.DuckDBPyConnection, coins: list[str], clean_cfg: CleanConfig | None = None) -> dict:
    return {
        "clean_ticks": clean_increment(conn, coins, clean_cfg),
        "ohlcv_1m": candles_1m_increment(conn),
        "market_features": features_increment(conn),
        "ohlcv_1h": hourly_increment(conn, "ohlcv_1h"),
        "hourly_stats": hourly_increment(conn, "hourly_stats"),
        "correlations": correlations_refresh(conn),
        "anomalies": anomalies_increment(conn),
    }
