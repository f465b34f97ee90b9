"""Silver layer: clean_ticks, typed and validated, with everything rejected in quarantine; its
config, its checks (their rules and specs)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import dagster as dg
from pydantic import Field

from crypto_assets.defs.check_verdicts import OFFENDERS, WARN, Seqs, Verdict, count_of, offender_table, seq_scope
from crypto_assets.defs.code_versions import source_version
from crypto_assets.defs.metadata import markdown_table, table_definition_metadata
from crypto_assets.transforms.clean import CleanConfig, clean_increment


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


CLEAN_TICKS = dg.AssetSpec(
    "clean_ticks",
    deps=["raw_ticks"],
    group_name="silver",
    kinds={"duckdb", "parquet"},
    owners=["team:data-eng"],
    tags={"layer": "silver"},
    code_version=source_version(clean_increment, CleanConfig, CleanTicksConfig),
    skippable=True,
    metadata=table_definition_metadata("clean_ticks"),
    description="Typed, validated ticks deduplicated on (coin_id, event_time); only raw batches not yet cleaned "
    "are read. Rejected rows go to `quarantine` (stage clean_ticks) with their rule.",
)
CLEAN_UNIQUE = dg.AssetCheckSpec("clean_ticks_unique", asset="clean_ticks", blocking=True,
                                 description="(coin_id, event_time) is unique (the keys each pass inserted)")
CLEAN_POSITIVE = dg.AssetCheckSpec("clean_ticks_positive_price", asset="clean_ticks", blocking=True,
                                   description="price > 0 and finite, volume >= 0 (the rows each pass inserted)")
FRESHNESS = dg.AssetCheckSpec("clean_ticks_freshness", asset="clean_ticks", description="the newest tick is recent")
RECONCILIATION = dg.AssetCheckSpec("clean_ticks_reconciliation", asset="clean_ticks",
                                   description="raw = clean + quarantined for every raw batch cleaned")
CHECKS = [CLEAN_UNIQUE, CLEAN_POSITIVE, FRESHNESS, RECONCILIATION]
SEVERITY = {FRESHNESS.key: WARN}  # the others fail as errors


def unique_ticks(conn, seq: Seqs = None) -> Verdict:
    """(coin_id, event_time) unique: the keys this pass inserted, looked up in the table."""
    if seq is None:
        dups_sql = "SELECT coin_id, event_time, count(*) AS n FROM clean_ticks GROUP BY ALL HAVING count(*) > 1"
    else:
        dups_sql = f"""
            WITH n AS (SELECT coin_id, event_time FROM clean_ticks WHERE {seq_scope('clean_seq', seq)})
            SELECT c.coin_id, c.event_time, count(*) AS n FROM clean_ticks c SEMI JOIN n USING (coin_id, event_time)
            WHERE c.event_time >= (SELECT min(event_time) FROM n) AND c.event_time <= (SELECT max(event_time) FROM n)
            GROUP BY ALL HAVING count(*) > 1"""
    dups = count_of(conn, f"SELECT count(*) FROM ({dups_sql})")
    md: dict = {"duplicate_keys": dups}
    if dups:
        md["offending_rows"] = dg.MetadataValue.md(offender_table(conn, dups_sql + " ORDER BY 2", ["coin_id", "event_time", "copies"]))
    return Verdict(dups == 0, md, f"{dups} duplicated (coin_id, event_time) keys")


def positive_prices(conn, seq: Seqs = None) -> Verdict:
    where = f"{seq_scope('clean_seq', seq)} AND (NOT (price_usd > 0) OR NOT isfinite(price_usd) OR volume_24h_usd < 0)"
    bad = count_of(conn, f"SELECT count(*) FROM clean_ticks WHERE {where}")
    md: dict = {"bad_rows": bad}
    if bad:
        md["offending_rows"] = dg.MetadataValue.md(offender_table(
            conn, f"SELECT coin_id, event_time, price_usd, volume_24h_usd, kafka_partition, kafka_offset "
                  f"FROM clean_ticks WHERE {where} ORDER BY event_time",
            ["coin_id", "event_time", "price_usd", "volume_24h_usd", "partition", "offset"]))
    return Verdict(bad == 0, md, f"{bad} rows with price <= 0, non-finite price or negative volume")


def freshness(conn, max_age_minutes: float, now: datetime | None = None) -> Verdict:
    """Age of the newest tick, from the per-coin state clean_ticks keeps (one row per coin)."""
    now = now or datetime.now(UTC)
    newest = conn.sql("SELECT max(max_event_time) FROM clean_coin_state").fetchall()[0][0]
    if newest is None:
        return Verdict(False, {"newest_tick": "none"}, "no ticks at all")
    age_min = (now - newest).total_seconds() / 60
    return Verdict(age_min <= max_age_minutes, {"newest_tick_age_minutes": round(age_min, 2),
                                                  "max_age_minutes": max_age_minutes})


def reconciliation(conn, batches: tuple[int, int] | None = None) -> Verdict:
    """raw = clean + quarantined for every raw batch clean_ticks processed (in this pass)."""
    if batches is None:
        rng = "batch_id <= (SELECT coalesce(max(hwm), 0) FROM asset_state WHERE asset = 'clean_ticks')"
    else:
        rng = f"batch_id BETWEEN {int(batches[0])} AND {int(batches[1])}"
    rows = conn.sql(
        f"""
        WITH r AS (SELECT batch_id, count(*) AS raw FROM raw_ticks WHERE {rng} GROUP BY 1),
        c AS (SELECT raw_batch_id AS batch_id, count(*) AS clean FROM clean_ticks
              WHERE {rng.replace('batch_id', 'raw_batch_id')} GROUP BY 1),
        q AS (SELECT batch_id, count(*) AS quarantined FROM quarantine WHERE stage = 'clean_ticks' AND {rng} GROUP BY 1)
        SELECT r.batch_id, r.raw, coalesce(c.clean, 0), coalesce(q.quarantined, 0)
        FROM r LEFT JOIN c USING (batch_id) LEFT JOIN q USING (batch_id)
        WHERE r.raw <> coalesce(c.clean, 0) + coalesce(q.quarantined, 0)
        ORDER BY 1
        """
    ).fetchall()
    md: dict = {"unbalanced_batches": len(rows)}
    if rows:
        md["offending_batches"] = dg.MetadataValue.md(markdown_table(rows[:OFFENDERS], ["batch_id", "raw", "clean", "quarantined"]))
    return Verdict(not rows, md,
                   "raw = clean + quarantined for every cleaned batch" if not rows else f"{len(rows)} batches do not balance")
