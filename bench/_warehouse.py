"""Bulk history for the in-process benches (incremental.py, training.py, lake_files.py):
vectorised random-walk ticks and a loader that appends a tick frame to raw_ticks as one raw
batch, the way a pull commits one, without going through Kafka."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

import numpy as np
import polars as pl

TICK_S = 10  # seconds between two ticks of one coin (TickGen)
HIST_END = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # first new tick of coin 0 is here

RAW_COLUMNS = (
    "coin_id, symbol, source, schema_version, price_usd, market_cap_usd, volume_24h_usd, change_24h_pct, "
    "change_7d_pct, last_updated_at, ingestion_timestamp, kafka_topic, kafka_partition, kafka_offset, "
    "kafka_timestamp, batch_id, ingested_at"
)


class TickGen:
    """Vectorised per-coin random walks; `take(n_per_coin)` continues where the last call ended.
    Tick i of coin k (i counted from the first history tick) is at
    HIST_END - history_per_coin * 10 s + i * 10 s + k s."""

    def __init__(self, history_per_coin: int, seed: int) -> None:
        from crypto_assets.kafka.tick_contract import DEFAULT_COINS

        self.rng = np.random.default_rng(seed)
        self.coins = DEFAULT_COINS
        self.base_us = int((HIST_END - timedelta(seconds=TICK_S * history_per_coin)).timestamp() * 1_000_000)
        self.i = 0  # next tick index (per coin)
        self.logp = np.log([c.ref_price for c in self.coins])
        self.logv = np.log([c.ref_volume for c in self.coins])
        sec_per_year = 365 * 24 * 3600
        self.sigma = np.array([c.annual_vol for c in self.coins]) * np.sqrt(TICK_S / sec_per_year)
        self.supply = np.array([c.ref_volume * 30 / c.ref_price for c in self.coins])
        self.ids = [c.coin_id for c in self.coins]
        self.symbols = [c.symbol for c in self.coins]

    def take(self, n_per_coin: int) -> pl.DataFrame:
        k = len(self.coins)
        rng = self.rng
        shocks = rng.normal(0.0, 1.0, size=(k, n_per_coin)) * self.sigma[:, None]
        logp = self.logp[:, None] + np.cumsum(shocks, axis=1)
        self.logp = logp[:, -1].copy()
        logv = self.logv[:, None] + np.cumsum(rng.normal(0.0, 0.001, size=(k, n_per_coin)), axis=1)
        self.logv = logv[:, -1].copy()
        price = np.exp(logp)
        vol = np.exp(logv) * np.where(rng.random((k, n_per_coin)) < 2e-4, 4.0, 1.0)  # rare spikes
        idx = np.arange(self.i, self.i + n_per_coin, dtype=np.int64)
        self.i += n_per_coin
        t_us = self.base_us + idx[None, :] * (TICK_S * 1_000_000) + np.arange(k, dtype=np.int64)[:, None] * 1_000_000
        coin_k = np.repeat(np.arange(k, dtype=np.int32), n_per_coin)
        df = pl.DataFrame(
            {
                "k": coin_k,
                "last_updated_at": pl.Series(t_us.ravel()).cast(pl.Datetime("us", "UTC")),
                "price_usd": price.ravel(),
                "market_cap_usd": (price * self.supply[:, None]).ravel(),
                "volume_24h_usd": vol.ravel(),
            }
        )
        id_map = dict(enumerate(self.ids))
        sym_map = dict(enumerate(self.symbols))
        return (
            df.with_columns(
                coin_id=pl.col("k").replace_strict(id_map, return_dtype=pl.String),
                symbol=pl.col("k").replace_strict(sym_map, return_dtype=pl.String),
            )
            .drop("k")
            .sort("last_updated_at")
        )


class Loader:
    """Appends a tick frame (coin_id, symbol, last_updated_at, price_usd, market_cap_usd,
    volume_24h_usd and optionally the change columns) to raw_ticks as one raw batch (what a pull
    commits), plus its ingest_batches row. Batch ids and offsets are counted here instead of
    max() scans."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.batch_id = conn.sql("SELECT coalesce(max(batch_id), 0) FROM ingest_batches").fetchall()[0][0]
        self.offset = conn.sql("SELECT coalesce(max(kafka_offset), -1) + 1 FROM raw_ticks").fetchall()[0][0]

    def append(self, ticks: pl.DataFrame) -> int:
        """Insert the batch; returns its batch_id."""
        self.batch_id += 1
        n = ticks.height
        ing = cast(datetime, ticks["last_updated_at"].max()) + timedelta(seconds=1)  # a Datetime column's max
        absent = {c: pl.lit(None, dtype=pl.Float64) for c in ("change_24h_pct", "change_7d_pct") if c not in ticks.columns}
        df = ticks.with_columns(
            source=pl.lit("bench"),
            schema_version=pl.lit(1, dtype=pl.Int32),
            **absent,
            ingestion_timestamp=pl.col("last_updated_at") + pl.duration(seconds=2),
            kafka_topic=pl.lit("crypto_raw"),
            kafka_partition=pl.lit(0, dtype=pl.Int32),
            kafka_offset=pl.int_range(n, dtype=pl.Int64) + self.offset,
            kafka_timestamp=pl.col("last_updated_at") + pl.duration(seconds=2),
            batch_id=pl.lit(self.batch_id, dtype=pl.Int64),
            ingested_at=pl.lit(ing, dtype=pl.Datetime("us", "UTC")),
        )
        self.offset += n
        self.conn.register("bench_raw_in", df.to_arrow())
        try:
            self.conn.execute(f"INSERT INTO raw_ticks SELECT {RAW_COLUMNS} FROM bench_raw_in")
        finally:
            self.conn.unregister("bench_raw_in")
        self.conn.execute(
            "INSERT INTO ingest_batches VALUES (?, 'bench', 'crypto_raw', 'c', ?, ?, 0, 0, ?, ?, now(), now())",
            [self.batch_id, n, n, ticks["last_updated_at"].min(), ticks["last_updated_at"].max()],
        )
        return self.batch_id
