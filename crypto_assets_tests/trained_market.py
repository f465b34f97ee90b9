"""The simulated market test_models.py trains on, its positive-control labels, and the readers
of what the predictions asset wrote and published."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from typing import cast

import numpy as np
import orjson
import polars as pl
from confluent_kafka import Consumer, TopicPartition

from crypto_assets.producers.simulator.config import SimulatorConfig
from crypto_assets.producers.simulator.messages import generate_ticks
from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.chain import run_incremental
from crypto_assets_tests.silver_helpers import export_gold_mirrors, insert_raw_batch

COINS = ["bitcoin", "ethereum", "solana", "cardano", "litecoin"]


def market(lh: LakehouseResource, days: float = 1.5) -> None:
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(days=days)
    ticks = generate_ticks(SimulatorConfig(coins=tuple(COINS), seed=11), int(days * 1440), start, "60s")
    df = pl.DataFrame(ticks, infer_schema_length=None).select(
        "coin_id", "symbol",
        pl.col("last_updated_at").str.to_datetime(time_zone="UTC").alias("last_updated_at"),
        "price_usd", "volume_24h_usd",
    )
    with lh.connect() as conn:
        insert_raw_batch(conn, df)
        run_incremental(conn, COINS)
        export_gold_mirrors(conn, lh.lake_path)  # the training set reads the Parquet mirrors


def positive_control(path) -> None:
    """Labels a model can learn, each a function of a feature at time t (where the real label is
    defined): up = the price above its 5-minute SMA, a large move = |z-score| > 2, the forward
    returns = half the distance to the 15-minute SMA plus a little seeded noise. A model that
    cannot clear its baselines' intervals on these is broken; on the simulator's random walk the
    honest outcome may well be a rejection (test_the_random_walk_market_gets_an_honest_verdict)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = cast(pl.DataFrame, pl.from_arrow(pq.read_table(path)))
    noise = np.random.default_rng(3).normal(size=t.height) * 1e-4
    out = t.with_columns(
        pl.when(pl.col("label_up").is_not_null()).then((pl.col("r_sma_5m") > 0).cast(pl.Int32)).alias("label_up"),
        pl.when(pl.col("label_large_move").is_not_null()).then((pl.col("zscore_15m").abs() > 2).cast(pl.Int32))
        .alias("label_large_move"),
        *(pl.when(pl.col(f"fwd_return_{h}").is_not_null()).then(0.5 * pl.col("r_sma_15m") + pl.Series(noise))
          .alias(f"fwd_return_{h}") for h in ("1h", "4h", "24h")),
    )
    pq.write_table(cast(pa.Table, out.to_arrow()), path)


def training_path(home) -> str:
    return str(home / "lake" / "training" / "training_set.parquet")


def published(kafka) -> list[tuple[int, int, str, dict]]:
    """Every message on the predictions topic, read to its high watermarks: (partition, offset,
    key, value)."""
    c = Consumer({"bootstrap.servers": kafka.bootstrap(), "group.id": "predictions-check", "enable.auto.commit": False})
    md = c.list_topics(kafka.predictions_topic, timeout=5)
    parts = list(md.topics[kafka.predictions_topic].partitions)
    ends = {p: c.get_watermark_offsets(TopicPartition(kafka.predictions_topic, p), timeout=5)[1] for p in parts}
    c.assign([TopicPartition(kafka.predictions_topic, p, 0) for p in parts])
    out, pos = [], {p: 0 for p in parts}
    for _ in range(200):
        if all(pos[p] >= ends[p] for p in parts):
            break
        for m in c.consume(500, timeout=0.5):
            if m.error() is None:
                out.append(m)
                p, o = m.partition(), m.offset()
                assert p is not None and o is not None  # a consumed message has both
                pos[p] = o + 1
    c.close()
    assert all(pos[p] >= ends[p] for p in parts), (pos, ends)
    return sorted((m.partition(), m.offset(), m.key().decode(), orjson.loads(m.value())) for m in out)


def fresh_copy(trained, tmp_path) -> LakehouseResource:
    """The trained warehouse with no predictions yet, in its own home (the champions stay in the
    fixture's MLflow store)."""
    lh = LakehouseResource(home=str(tmp_path / "copy"), coins=COINS)
    lh.root.mkdir(parents=True)
    shutil.copy(trained["lh"].duckdb_path, lh.duckdb_path)
    wal = trained["lh"].duckdb_path.with_name(trained["lh"].duckdb_path.name + ".wal")
    if wal.exists():  # the newest commits live in the WAL until DuckDB checkpoints it (every 16 MB)
        shutil.copy(wal, lh.duckdb_path.with_name(lh.duckdb_path.name + ".wal"))
    with lh.connect() as conn:
        conn.execute("DROP TABLE IF EXISTS predictions")
        conn.execute("DELETE FROM asset_state WHERE asset = 'predictions'")
    return lh


PRED_COLUMNS = ["coin_id", "event_time", "trend_prob_up", "trend_model_version", "anomaly_prob", "anomaly_model_version",
                 "forecast_return_1h", "forecast_return_4h", "forecast_return_24h", "price_model_versions",
                 "predicted_at", "published_at"]


def prediction_rows(lh) -> list[dict]:
    with lh.connect(read_only=True) as conn:
        return conn.sql(f"SELECT {', '.join(PRED_COLUMNS)} FROM predictions ORDER BY coin_id, event_time").pl().to_dicts()


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z")


def assert_split_counts(tags: dict, horizon: timedelta) -> None:
    """The row counts in the lineage tags are the last walk-forward fold's split, recounted here
    from the training-set file: every row is unlabelled (no label yet: the last 15 minutes), in
    train (labelled, its label window ends before the last test window), in the embargo
    (labelled, label window reaches past its start) or in test (at or after it)."""
    import pyarrow.parquet as pq

    ts = cast(pl.DataFrame, pl.from_arrow(pq.read_table(tags["training_set_path"], columns=["event_time", "label_up"])))
    split = datetime.fromisoformat(tags["split_time"])
    labelled = ts.filter(pl.col("label_up").is_not_null())
    train = labelled.filter(pl.col("event_time") + horizon < split).height
    embargo = labelled.filter((pl.col("event_time") < split) & (pl.col("event_time") + horizon >= split)).height
    test = labelled.filter(pl.col("event_time") >= split).height
    unlabelled = ts.height - labelled.height
    assert (int(tags["train_rows"]), int(tags["test_rows"])) == (train, test)
    assert int(tags["data_rows"]) == ts.height == train + embargo + test + unlabelled
    assert embargo > 0 and unlabelled > 0  # both exclusions really remove rows on this market
