"""Silver layer: clean_ticks, typed and validated, with everything rejected in quarantine."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
from pydantic import Field

from crypto_assets.defs import checks
from crypto_assets.defs.metadata import table_definition_metadata
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
    lateness_minutes: float = Field(default=CleanConfig.lateness.total_seconds() / 60,
                                    description="ticks older than the coin's newest minus this are quarantined as late")
    max_future_skew_minutes: float = Field(default=CleanConfig.max_future_skew.total_seconds() / 60,
                                           description="allowed clock skew ahead of ingestion time")
    horizon_days: float = Field(default=CleanConfig.horizon.days,
                                description="ticks older than this (vs ingestion) are rejected")
    min_price_usd: float = Field(default=CleanConfig.min_price_usd, description="lowest plausible price (price_out_of_range)")
    max_price_usd: float = Field(default=CleanConfig.max_price_usd, description="highest plausible price (price_out_of_range)")
    min_positive_volume_usd: float = Field(default=CleanConfig.min_positive_volume_usd,
                                           description="a 24h volume is 0 or at least this (volume_out_of_range)")
    max_volume_usd: float = Field(default=CleanConfig.max_volume_usd, description="highest plausible 24h volume")
    max_jump_ratio: float = Field(default=CleanConfig.max_jump_ratio,
                                  description="price_jump: this far (either way) from most of the coin's recent ticks")
    jump_window: int = Field(default=CleanConfig.jump_window, description="recent ticks the jump guard compares with; 0: off")
    jump_max_age_hours: float = Field(default=CleanConfig.jump_max_age.total_seconds() / 3600,
                                      description="older recent ticks do not count (a coin back after a pause)")

    def to_clean_config(self) -> CleanConfig:
        return CleanConfig(
            lateness=timedelta(minutes=self.lateness_minutes),
            max_future_skew=timedelta(minutes=self.max_future_skew_minutes),
            horizon=timedelta(days=self.horizon_days),
            min_price_usd=self.min_price_usd,
            max_price_usd=self.max_price_usd,
            min_positive_volume_usd=self.min_positive_volume_usd,
            max_volume_usd=self.max_volume_usd,
            max_jump_ratio=self.max_jump_ratio,
            jump_window=self.jump_window,
            jump_max_age=timedelta(hours=self.jump_max_age_hours),
        )
