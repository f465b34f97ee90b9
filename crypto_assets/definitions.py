"""The code location: one Definitions object with every asset, check, job and resource."""

from __future__ import annotations

import dagster as dg

from crypto_assets.assets import ingest
from crypto_assets.settings import build_resources

ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets(ingest.raw_ticks),
    description="Pull the Kafka backlog into bronze (raw_ticks) once.",
)

demo_job = dg.define_asset_job(
    "demo_job",
    selection=dg.AssetSelection.all(),
    description="Every asset and check, in dependency order: what `crypto-assets demo` runs.",
)

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([ingest]),
    jobs=[ingest_job, demo_job],
    resources=build_resources(),
)
