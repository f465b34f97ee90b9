"""The two markets of bench/models.py and the pipeline up to the models: real daily MSFT closes
(crypto_assets.producers.real_series) or the simulator's ticks of the same length, one raw
batch (bench/_warehouse.py's Loader), run_incremental, the Parquet mirrors (as the incremental
step exports them), then the training_set asset and the four model assets in one
dg.materialize against a fresh sqlite MLflow under the bench's temporary home."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
from dagster_pyspark import LazyPySparkResource

from bench._warehouse import Loader
from crypto_assets.defs import models, training_data
from crypto_assets.producers.real_series import RealSeries, series_ticks
from crypto_assets.producers.simulator.config import SimulatorConfig
from crypto_assets.producers.simulator.messages import generate_ticks
from crypto_assets.resources import LakehouseResource
from crypto_assets.resources.mlflow import MlflowResource
from crypto_assets.resources.priority import ComputePriorityResource
from crypto_assets.settings import spark_config
from crypto_assets.transforms.chain import run_incremental
from crypto_assets.warehouse.lake_export import export_dirty
from crypto_assets.warehouse.tables import TABLES

ASSETS = [training_data.training_set, models.trend_model, models.anomaly_model, models.price_model,
          models.coin_clusters]


@dataclass
class Market:
    """One market's ticks and what they are."""

    label: str
    coin_id: str
    ticks: pl.DataFrame
    note: str


def real_market(series: RealSeries, end: datetime, days: int | None) -> Market:
    ticks = series_ticks(series, coin_id="msft", symbol="msft", end=end, days=days)
    first, last = series.frame["date"].tail(ticks.height)[0], series.frame["date"][-1]
    return Market(f"real: {series.name.split(' ')[0]} daily closes", "msft", ticks,
                  f"{ticks.height:,} trading days {first}..{last}, one per simulated minute; {series.source}; "
                  f"licence {series.licence}")


def simulated_market(n: int, end: datetime, seed: int) -> Market:
    """The simulator's one-coin market, one tick a minute, as many ticks as the real one."""
    start = end - timedelta(minutes=n - 1)
    raw = generate_ticks(SimulatorConfig(coins=("bitcoin",), seed=seed), n, start, "60s")
    ticks = pl.DataFrame(raw, infer_schema_length=None).select(
        "coin_id", "symbol", pl.col("last_updated_at").str.to_datetime(time_zone="UTC").alias("last_updated_at"),
        "price_usd", "volume_24h_usd", "market_cap_usd",
    )
    return Market("simulated: the demo's simulator", "bitcoin", ticks,
                  f"{ticks.height:,} ticks of one coin at 60 s (regime drifts, ~20 min momentum, jumps), seed {seed}")


def build(market: Market, home: Path) -> tuple[dict, dict[str, float]]:
    """The market's warehouse and lake under `home`; returns the assets' resources and timings."""
    lh = LakehouseResource(home=str(home), coins=[market.coin_id])
    times: dict[str, float] = {}
    ticks = market.ticks
    if "market_cap_usd" not in ticks.columns:
        ticks = ticks.with_columns(market_cap_usd=pl.lit(None, dtype=pl.Float64))
    with lh.connect() as conn:
        t = time.perf_counter()
        Loader(conn).append(ticks)
        run_incremental(conn, [market.coin_id])
        times["run_incremental"] = time.perf_counter() - t
        t = time.perf_counter()
        for table in TABLES.values():  # what the incremental step exports (defs/incremental.py)
            if table.dataset and not table.single_file and table.time_column and table.export_order:
                export_dirty(conn, lh.lake_path, table.dataset, table.name, table.time_column, table.export_order)
        times["parquet export"] = time.perf_counter() - t
        times["quarantined"] = float(conn.sql("SELECT count(*) FROM quarantine").fetchall()[0][0])
    resources = {"lakehouse": lh, "mlflow": MlflowResource(home=str(home)),
                 "pyspark": LazyPySparkResource(spark_config=spark_config({})),
                 "compute_priority": ComputePriorityResource(nice=0)}
    return resources, times


def train(resources: dict, ops: dict) -> tuple[dg.ExecuteInProcessResult, float]:
    """training_set + the four models in one run (its failure is reported, not raised)."""
    t = time.perf_counter()
    quiet = {"console": {"config": {"log_level": "WARNING"}}}  # the report is the output, not the event log
    result = dg.materialize(ASSETS, resources=resources, run_config={"ops": ops, "loggers": quiet}, raise_on_error=False)
    return result, time.perf_counter() - t


def default_end() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
