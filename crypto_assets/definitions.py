"""The code location: one Definitions object with every asset, check, job and resource."""

import dagster as dg

from crypto_assets.assets import alerts, gold, ingest, models, predictions, silver
from crypto_assets.checks import ALL_CHECKS
from crypto_assets.settings import build_resources

ASSET_MODULES = [ingest, silver, gold, alerts, models, predictions]

INCREMENTAL = dg.AssetSelection.assets(
    "raw_ticks", "clean_ticks", "market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats", "correlations", "anomalies"
)

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("raw_ticks"),
    description="Pull the Kafka backlog into bronze (raw_ticks) once.",
)

incremental_job = dg.define_asset_job(
    "incremental_job",
    selection=INCREMENTAL,
    description="The cheap path the backlog sensor launches: raw → clean → features/candles → anomalies.",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets("training_set", "trend_model", "anomaly_model", "price_model", "coin_clusters", "predictions"),
    description="Build the training set, retrain the four models (gated promotion), then predict.",
)

demo_job = dg.define_asset_job(
    "demo_job",
    selection=dg.AssetSelection.all(),
    description="Every asset and check, in dependency order: what `crypto-assets demo` runs.",
)

defs = dg.Definitions(
    assets=dg.load_assets_from_modules(ASSET_MODULES),
    asset_checks=[*ALL_CHECKS, *models.MODEL_CHECKS],
    jobs=[ingest_job, incremental_job, training_job, demo_job],
    resources=build_resources(),
)
