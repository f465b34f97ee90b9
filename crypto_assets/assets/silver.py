"""Silver layer: clean_ticks, typed and validated, with everything rejected in quarantine."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
from pydantic import Field

from crypto_assets import checks
from crypto_assets.assets.gold import table_definition_metadata
from crypto_assets.transforms.clean import CleanConfig

CLEAN_TICKS = dg.AssetSpec(
    "clean_ticks",
    deps=["raw_ticks"],
    group_name="silver",
    kinds={"duckdb", "parquet"},
    owners=["team:data-eng"],
    tags={"layer": "silver"},
    code_version="2",
    skippable=True,
    metadata=table_definition_metadata("clean_ticks"),
    description="Typed, validated ticks deduplicated on (coin_id, event_time); only raw batches not yet cleaned "
    "are read. Rejected rows go to `quarantine` (stage clean_ticks) with their rule.",
)
CHECKS = [checks.CLEAN_UNIQUE, checks.CLEAN_POSITIVE, checks.FRESHNESS, checks.RECONCILIATION]


class CleanTicksConfig(dg.Config):
    lateness_minutes: float = Field(default=10.0, description="ticks older than the coin's newest minus this are quarantined as late")
    max_future_skew_minutes: float = Field(default=5.0, description="allowed clock skew ahead of ingestion time")
    horizon_days: float = Field(default=365.0, description="ticks older than this (vs ingestion) are rejected")

    def to_clean_config(self) -> CleanConfig:
        return CleanConfig(
            lateness=timedelta(minutes=self.lateness_minutes),
            max_future_skew=timedelta(minutes=self.max_future_skew_minutes),
            horizon=timedelta(days=self.horizon_days),
        )
