"""The incremental chain in dependency order, outside Dagster: for benchmarks and tests that
compare many small runs with one big one. Dagster runs the same functions as assets."""

from __future__ import annotations

import time

import duckdb

from crypto_assets.transforms.anomalies import anomalies_increment, correlations_refresh
from crypto_assets.transforms.candles import candles_1m_increment, hourly_increment
from crypto_assets.transforms.clean import CleanConfig, clean_increment
from crypto_assets.transforms.features import features_increment


def run_incremental(conn: duckdb.DuckDBPyConnection, coins: list[str], clean_cfg: CleanConfig | None = None,
                    timings: dict[str, float] | None = None) -> dict:
    """Every step once, in dependency order; returns each step's result under its table's name.
    With `timings`, each step's wall seconds are added to it under the same name (a benchmark
    reads the per-step cost of one increment from it)."""
    steps = (
        ("clean_ticks", lambda: clean_increment(conn, coins, clean_cfg)),
        ("ohlcv_1m", lambda: candles_1m_increment(conn)),
        ("market_features", lambda: features_increment(conn)),
        ("ohlcv_1h", lambda: hourly_increment(conn, "ohlcv_1h")),
        ("hourly_stats", lambda: hourly_increment(conn, "hourly_stats")),
        ("correlations", lambda: correlations_refresh(conn)),
        ("anomalies", lambda: anomalies_increment(conn)),
    )
    out = {}
    for name, step in steps:
        t = time.perf_counter()
        out[name] = step()
        if timings is not None:
            timings[name] = timings.get(name, 0.0) + time.perf_counter() - t
    return out
