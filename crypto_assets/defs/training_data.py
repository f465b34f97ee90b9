"""The training set: features and labels of a bounded window, from the Parquet gold mirrors.

Built on an in-memory DuckDB over a snapshot of the lake, so retraining never opens
warehouse.duckdb (nor takes the duckdb_writer pool) that the live pipeline holds. The window
(`window_days`, a week by default) bounds what a retrain reads and computes however long the
pipeline has run: the files of the window plus the days its 24-hour lookbacks reach.
"""

import math
from datetime import timedelta

import dagster as dg
from pydantic import Field

from crypto_assets.defs.code_versions import source_version
from crypto_assets.ml.training_set import DIRECTION_HORIZON_MINUTES, FEATURES, build_training_set
from crypto_assets.resources import LakehouseResource
from crypto_assets.resources.priority import ComputePriorityResource
from crypto_assets.warehouse.lake_layout import newest_date
from crypto_assets.warehouse.lake_views import lake_reader
from crypto_assets.warehouse.tables import TABLES

TRAINING_WINDOW_DAYS = 7.0  # a week of minute-level history: ~600k rows for 10 coins


def _mirror(table: str) -> str:
    """The Parquet dataset a table is mirrored to, which the training set reads."""
    dataset = TABLES[table].dataset
    if dataset is None:
        raise ValueError(f"table {table} has no Parquet mirror: the training set cannot read it")
    return dataset


FEATURES_DATASET = _mirror("market_features")
# lake datasets, read as views named like the tables
# (not anomalies: no label or feature is the anomaly rule's output, see ml/training_set.py)
TRAINING_INPUTS = (FEATURES_DATASET, _mirror("ohlcv_1m"), _mirror("trade_bars_1m"))  # no trade bars yet: an empty view


class TrainingSetConfig(dg.Config):
    horizon_minutes: int = Field(default=DIRECTION_HORIZON_MINUTES,
                                 description="direction label: sign of the return over this horizon")
    window_days: float | None = Field(
        default=TRAINING_WINDOW_DAYS, gt=0,
        description="train on the last N days of features (null: the whole history); bounds a retrain's cost")


# Lookbacks reach 24 h + 5 min into the past: files from this many days before the window are read.
_LOOKBACK_DAYS = 2


def _training_set(context: dg.AssetExecutionContext, config: TrainingSetConfig, lakehouse: LakehouseResource,
                  compute_priority: ComputePriorityResource) -> dg.MaterializeResult:
    """Features (backward-looking only), baselines (past returns, the previous window's large
    move) and labels (direction over the horizon, forward returns at 1h/4h/24h where history
    allows, a large move in the next 15 minutes) as Parquet under lake/training/, read from the
    gold Parquet mirrors (market_features, ohlcv_1m, trade_bars_1m), not from warehouse.duckdb."""
    compute_priority.lower(context.log)
    since = None
    newest = newest_date(lakehouse.lake_path, FEATURES_DATASET)
    if config.window_days is not None and newest is not None:
        since = newest - timedelta(days=math.ceil(config.window_days) + _LOOKBACK_DAYS)
    with lake_reader(lakehouse.lake_path, TRAINING_INPUTS, threads=lakehouse.duckdb_threads,
                     memory_limit=lakehouse.duckdb_memory_limit, temp_directory=lakehouse.root / "tmp" / "training_set",
                     since=since) as (conn, files):
        info = build_training_set(conn, lakehouse.lake_path / "training", config.horizon_minutes, config.window_days)
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(str(info.path)),
            "lake_files_read": files,
            "dagster/row_count": info.rows,
            "min_event_time": dg.MetadataValue.timestamp(info.min_time) if info.min_time else "none",
            "max_event_time": dg.MetadataValue.timestamp(info.max_time) if info.max_time else "none",
            "rows_per_coin": info.rows_per_coin,
            "labelled_rows": info.labelled,
            "positive_rate": round(info.positive_rate or 0.0, 4),
            "large_move_rate": round(info.large_move_rate or 0.0, 5),
            "horizon_minutes": config.horizon_minutes,
            "window_days": config.window_days if config.window_days is not None else "all",
            "lake_files_since": since.isoformat() if since else "all",
            "features": FEATURES,
        }
    )


# Decorated here, not with @, so that its code version can hash the function's own source and
# what it calls (see defs/code_versions.py).
training_set = dg.asset(
    name="training_set",
    deps=["market_features", "ohlcv_1m", "trade_bars_1m"],
    group_name="models",
    kinds={"duckdb", "parquet"},
    owners=["team:ml"],
    code_version=source_version(_training_set, TrainingSetConfig),
)(_training_set)
