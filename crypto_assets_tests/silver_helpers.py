"""Build raw_ticks batches directly in DuckDB (no Kafka) to drive the silver/gold transforms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

import numpy as np
import polars as pl

from crypto_assets.kafka.tick_contract import COINS_BY_ID

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def make_ticks(
    n_per_coin: int,
    coins=("bitcoin", "ethereum", "solana"),
    start: datetime = T0,
    seed: int = 1,
    mean_gap_s: float = 20.0,
    price_scale: dict | None = None,
) -> pl.DataFrame:
    """Irregularly spaced random-walk ticks with occasional volume spikes."""
    rng = np.random.default_rng(seed)
    frames = []
    for coin in coins:
        gaps = rng.integers(1, int(mean_gap_s * 2), size=n_per_coin).cumsum()
        times = [start + timedelta(seconds=int(g)) for g in gaps]
        base = (price_scale or {}).get(coin, COINS_BY_ID[coin].ref_price if coin in COINS_BY_ID else 1.0)
        prices = base * np.exp(np.cumsum(rng.normal(0, 0.002, n_per_coin)))
        jumps = rng.random(n_per_coin) < 0.01
        prices = prices * np.where(jumps, 1.05, 1.0)
        vol = 1e8 * np.exp(np.cumsum(rng.normal(0, 0.01, n_per_coin)))
        vol = vol * np.where(rng.random(n_per_coin) < 0.01, 4.0, 1.0)
        frames.append(
            pl.DataFrame(
                {
                    "coin_id": [coin] * n_per_coin,
                    "symbol": [COINS_BY_ID[coin].symbol if coin in COINS_BY_ID else coin[:4]] * n_per_coin,
                    "last_updated_at": times,
                    "price_usd": prices,
                    "volume_24h_usd": vol,
                }
            )
        )
    return pl.concat(frames).sort("last_updated_at")


def insert_raw_batch(conn, ticks: pl.DataFrame, ingested_at: datetime | None = None) -> int:
    """Append ticks to raw_ticks as one new batch (as a pull would); returns the batch id."""
    batch_id = conn.sql("SELECT coalesce(max(batch_id), 0) + 1 FROM ingest_batches").fetchall()[0][0]
    start_off = conn.sql("SELECT coalesce(max(kafka_offset), -1) + 1 FROM raw_ticks").fetchall()[0][0]
    ing = ingested_at or (cast(datetime, ticks["last_updated_at"].max()) + timedelta(seconds=1) if ticks.height else datetime.now(UTC))
    df = ticks.with_columns(
        pl.lit("test").alias("source"),
        pl.lit(1).alias("schema_version"),
        pl.lit(1e9).alias("market_cap_usd"),
        pl.lit(None, dtype=pl.Float64).alias("change_24h_pct"),
        pl.lit(None, dtype=pl.Float64).alias("change_7d_pct"),
        pl.col("last_updated_at").alias("ingestion_timestamp"),
        pl.lit("crypto_raw").alias("kafka_topic"),
        pl.lit(0, dtype=pl.Int32).alias("kafka_partition"),
        (pl.int_range(pl.len(), dtype=pl.Int64) + start_off).alias("kafka_offset"),
        pl.col("last_updated_at").alias("kafka_timestamp"),
        pl.lit(batch_id, dtype=pl.Int64).alias("batch_id"),
        pl.lit(ing).alias("ingested_at"),
    )
    conn.register("raw_in", df.to_arrow())
    conn.execute(
        """
        INSERT INTO raw_ticks SELECT coin_id, symbol, source, schema_version, price_usd, market_cap_usd, volume_24h_usd,
            change_24h_pct, change_7d_pct, last_updated_at, ingestion_timestamp, kafka_topic, kafka_partition,
            kafka_offset, kafka_timestamp, batch_id, ingested_at FROM raw_in
        """
    )
    conn.unregister("raw_in")
    conn.execute(
        "INSERT INTO ingest_batches VALUES (?, 'test', 'crypto_raw', 'c', ?, ?, 0, 0, NULL, NULL, now(), now())",
        [batch_id, ticks.height, ticks.height],
    )
    return batch_id


TABLE_KEYS = {
    "clean_ticks": (["coin_id", "event_time"], ["clean_seq", "raw_batch_id", "kafka_offset", "kafka_partition", "ingestion_timestamp"]),
    "market_features": (["coin_id", "event_time"], ["feature_seq"]),
    "ohlcv_1m": (["coin_id", "minute"], ["candle_seq"]),
    "ohlcv_1h": (["coin_id", "hour"], ["candle_seq"]),
    "hourly_stats": (["coin_id", "hour"], ["stats_seq"]),
    "correlations": (["coin_a", "coin_b", "window_name"], []),
    "anomalies": (["anomaly_id"], ["detected_at", "published_at"]),
}


def table(conn, name: str) -> pl.DataFrame:
    keys, drop = TABLE_KEYS[name]
    return conn.sql(f"SELECT * FROM {name}").pl().drop(drop).sort(keys)


def export_gold_mirrors(conn, lake_root) -> None:
    """What the incremental step does after run_incremental's transforms: export the Parquet
    mirrors the training set reads (the transforms marked the hours they touched)."""
    from crypto_assets.defs.training_data import TRAINING_INPUTS
    from crypto_assets_tests.lake_helpers import export_registered

    for dataset in TRAINING_INPUTS:
        export_registered(conn, lake_root, dataset.rsplit("/", 1)[-1])
