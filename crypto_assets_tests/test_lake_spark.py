"""Spark reads a dataset with day files and hour files mixed and gets exactly the DuckDB rows."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest

from crypto_assets.warehouse.lake_compaction import compact_lake
from crypto_assets.warehouse.lake_layout import read_lock, spark_read_dataset
from crypto_assets_tests.lake_helpers import DATASET, T0, export, insert_rows

pytestmark = pytest.mark.slow


def test_spark_reads_day_and_hour_files_with_symbol_from_the_path(lakehouse, spark):
    from pyspark.sql import functions as F

    root = lakehouse.lake_path
    with lakehouse.connect() as conn:
        insert_rows(conn, T0, hours=72)
        export(conn, root)
        compact_lake(root, now=T0 + timedelta(days=2, hours=1, seconds=1))  # days 0-1: day files; day 2: hours
        expected = Counter(conn.sql(
            "SELECT coin_id, symbol, epoch_us(event_time), price, note, CAST(event_time AS DATE) FROM t").fetchall())
    assert {p.name for p in (root / DATASET).rglob("*.parquet")} >= {"day.parquet", "part-00.parquet"}

    with read_lock(root, [DATASET]):  # Spark reads lazily: the actions run under the lock
        df = spark_read_dataset(spark, root, DATASET)
        assert dict(df.dtypes)["symbol"] == "string" and dict(df.dtypes)["date"] == "date"
        got = Counter(tuple(r) for r in df.select(
            "coin_id", "symbol", F.unix_micros("event_time"), "price", "note", "date").collect())
        # partition discovery off: the files hold no `symbol` or `date` column, so they are lost
        plain = spark.read.option("recursiveFileLookup", "true").parquet(str(root / DATASET))
        assert "symbol" not in plain.columns and "date" not in plain.columns and plain.count() == df.count()
    assert got == expected
