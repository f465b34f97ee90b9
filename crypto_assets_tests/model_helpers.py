"""A market from tick frames, through the real pipeline up to the models: raw_ticks batch ->
run_incremental -> the Parquet gold mirrors -> (the training_set asset) -> the model assets via
dg.materialize. Shared by test_small_universe.py and test_shuffled_labels.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
from dagster_pyspark import LazyPySparkResource

from crypto_assets.defs import models, training_data
from crypto_assets.producers.simulator.config import SimulatorConfig
from crypto_assets.producers.simulator.messages import generate_ticks
from crypto_assets.resources import LakehouseResource
from crypto_assets.resources.mlflow import MlflowResource
from crypto_assets.resources.priority import ComputePriorityResource
from crypto_assets.settings import spark_config
from crypto_assets.transforms.chain import run_incremental
from crypto_assets_tests.silver_helpers import export_gold_mirrors, insert_raw_batch

MODEL_ASSETS = [models.trend_model, models.anomaly_model, models.price_model, models.coin_clusters]
SMALL_FOREST = {"num_trees": 10, "max_depth": 5}
TWO_FOLDS = {"folds": 2}  # walk-forward test windows: the same test span as the default 3 in one fit less


def small_ops(*names: str) -> dict:
    """Run config of the named model assets: two walk-forward folds, the anomaly forest small."""
    return {n: {"config": {**TWO_FOLDS, **(SMALL_FOREST if n == "anomaly_model" else {})}} for n in names}


def simulated_ticks(coins: list[str], minutes: int, seed: int = 11, end: datetime | None = None) -> pl.DataFrame:
    """The simulator's 60 s ticks for `minutes` minutes ending at `end` (default now; a fixed end
    makes the market, and so the models' figures, the same on every run)."""
    start = (end or datetime.now(UTC)).replace(second=0, microsecond=0) - timedelta(minutes=minutes)
    ticks = generate_ticks(SimulatorConfig(coins=tuple(coins), seed=seed), minutes, start, "60s")
    return pl.DataFrame(ticks, infer_schema_length=None).select(
        "coin_id", "symbol", pl.col("last_updated_at").str.to_datetime(time_zone="UTC").alias("last_updated_at"),
        "price_usd", "volume_24h_usd",
    )


def load_market(lh: LakehouseResource, ticks: pl.DataFrame) -> None:
    """One raw batch, the silver/gold transforms, and the mirrors the training set reads."""
    with lh.connect() as conn:
        insert_raw_batch(conn, ticks)
        run_incremental(conn, list(lh.coins))
        export_gold_mirrors(conn, lh.lake_path)


def model_resources(home: Path, coins: list[str]) -> dict:
    return {"lakehouse": LakehouseResource(home=str(home), coins=coins), "mlflow": MlflowResource(home=str(home)),
            "pyspark": LazyPySparkResource(spark_config=spark_config({})),
            "compute_priority": ComputePriorityResource(nice=0)}


def materialize(assets: list, resources: dict, ops: dict | None = None) -> dg.ExecuteInProcessResult:
    """The assets in one run; the run's failure is returned (raise_on_error=False), not raised."""
    return dg.materialize(assets, resources=resources, run_config={"ops": ops or {}}, raise_on_error=False)


def training_set_path(lh: LakehouseResource) -> Path:
    return lh.lake_path / "training" / "training_set.parquet"


def gates(result: dg.ExecuteInProcessResult) -> dict[str, dg.AssetCheckEvaluation]:
    return {e.check_name: e for e in result.get_asset_check_evaluations()}


def metadata(result: dg.ExecuteInProcessResult, asset: str) -> dict:
    mats = result.asset_materializations_for_node(asset)
    assert mats, f"{asset} was not materialized"
    return {k: v.value for k, v in mats[0].metadata.items()}


ASSETS_WITH_TRAINING_SET = [training_data.training_set, *MODEL_ASSETS]
