"""The PySpark engine, as the source documents build candles: the DataFrame API on a local[2]
session, groupBy with min_by/max_by over (trade_time, trade_id) for open/close, exact
DECIMAL sums (price × size is DECIMAL(37,16), its sum rounded half-up to DECIMAL(38,8)),
open/close ordered by one long key (the microsecond inside the second and the trade id) so the
aggregation stays a HashAggregate, 1-minute and 1-hour bars rolled up from the cached 1-second bars, Bollinger as window
functions over the 20 rows up to a bar, and Wilder's RSI (a recursion, which window functions
cannot express) with applyInPandas per product, the usual PySpark answer.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pandas as pd

from bench._common import REPO
from bench._engines_features import BB_K, BB_N, KEY, columns, wilder_rsi

ID_LIMIT = 1 << 43
SPARK_CONF = {
    "spark.master": "local[2]",
    "spark.app.name": "bench_engines",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.sql.shuffle.partitions": "4",
    "spark.sql.adaptive.enabled": "true",
    "spark.sql.adaptive.coalescePartitions.enabled": "true",
    "spark.driver.memory": "3g",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
}


def session(conf: dict[str, str] | None = None):
    """A local[2] session whose Python workers run this interpreter with this checkout importable."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if str(REPO) not in paths:
        os.environ["PYTHONPATH"] = os.pathsep.join([str(REPO), *[p for p in paths if p]])

    builder = SparkSession.builder
    for k, v in {**SPARK_CONF, **(conf or {})}.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def _rsi(pdf: pd.DataFrame) -> pd.DataFrame:
    pdf = pdf.sort_values("bar_start")
    changes = pdf["close_d"].diff().to_numpy()
    return pdf[KEY].assign(rsi_14=wilder_rsi(changes))


def frames(spark, path: Path) -> dict:
    """The three bar DataFrames (lazy; the 1-second bars are cached once computed)."""
    from pyspark import StorageLevel
    from pyspark.sql import Window
    from pyspark.sql import functions as F
    from pyspark.sql.types import DecimalType, DoubleType, StringType, StructField, StructType, TimestampType

    dec38 = DecimalType(38, 8)
    t = spark.read.parquet(str(path)).select("exchange", "product", "trade_id", "price", "size", "side", "trade_time")
    # (trade_time, trade_id) order inside a second as ONE long (microsecond * 2^43 + trade id, exact
    # for ids below 2^43, as ours): a struct key forces SortAggregate, a long keeps HashAggregate.
    ids_fit = t.agg(F.max("trade_id")).first()[0] < ID_LIMIT
    order = ((F.unix_micros("trade_time") % 1_000_000) * ID_LIMIT + F.col("trade_id")) if ids_fit \
        else F.struct("trade_time", "trade_id")
    zero = F.lit(0).cast(DecimalType(18, 8))
    b1s = (t.groupBy("exchange", "product", F.date_trunc("second", "trade_time").alias("bar_start"))
           .agg(F.min_by("price", order).alias("open"), F.max("price").alias("high"), F.min("price").alias("low"),
                F.max_by("price", order).alias("close"), F.sum("size").alias("base_volume"),
                F.sum(F.col("price") * F.col("size")).alias("quote_exact"),
                F.sum(F.when(F.col("side") == "buy", F.col("size")).otherwise(zero)).alias("buy_volume"),
                F.sum(F.when(F.col("side") == "sell", F.col("size")).otherwise(zero)).alias("sell_volume"),
                F.count(F.lit(1)).alias("trade_count"),
                F.min_by("trade_id", order).alias("first_trade_id"), F.max_by("trade_id", order).alias("last_trade_id"))
           .persist(StorageLevel.MEMORY_AND_DISK))

    def finish(df, width: str):
        quote = F.col("quote_exact").cast(dec38)
        return (df.withColumn("quote_volume", quote)
                .withColumn("base_volume", F.col("base_volume").cast(dec38))
                .withColumn("buy_volume", F.col("buy_volume").cast(dec38))
                .withColumn("sell_volume", F.col("sell_volume").cast(dec38))
                .withColumn("vwap", F.col("quote_exact").cast("double") / F.col("base_volume").cast("double")))

    out = {"1s": finish(b1s, "1s")}
    for width, unit in (("1m", "minute"), ("1h", "hour")):
        out[width] = finish(
            b1s.groupBy("exchange", "product", F.date_trunc(unit, "bar_start").alias("bar_start_w"))
            .agg(F.min_by("open", "bar_start").alias("open"), F.max("high").alias("high"), F.min("low").alias("low"),
                 F.max_by("close", "bar_start").alias("close"), F.sum("base_volume").alias("base_volume"),
                 F.sum("quote_exact").alias("quote_exact"), F.sum("buy_volume").alias("buy_volume"),
                 F.sum("sell_volume").alias("sell_volume"), F.sum("trade_count").alias("trade_count"),
                 F.min_by("first_trade_id", "bar_start").alias("first_trade_id"),
                 F.max_by("last_trade_id", "bar_start").alias("last_trade_id"))
            .withColumnRenamed("bar_start_w", "bar_start"), width)
    m = out["1m"]
    w = Window.partitionBy("exchange", "product").orderBy("bar_start").rowsBetween(-(BB_N - 1), 0)
    close_d = F.col("close").cast("double")
    full = F.count(F.lit(1)).over(w) == BB_N
    mid, std = F.avg(close_d).over(w), F.stddev_pop(close_d).over(w)
    m = (m.withColumn("bb_middle", F.when(full, mid)).withColumn("bb_std", F.when(full, std))
         .withColumn("bb_upper", F.col("bb_middle") + BB_K * F.col("bb_std"))
         .withColumn("bb_lower", F.col("bb_middle") - BB_K * F.col("bb_std")))
    rsi_schema = StructType([StructField("exchange", StringType()), StructField("product", StringType()),
                             StructField("bar_start", TimestampType()), StructField("rsi_14", DoubleType())])
    rsi = (m.select(*KEY, close_d.alias("close_d")).groupBy("exchange", "product").applyInPandas(_rsi, rsi_schema))
    out["1m"] = m.join(rsi, KEY)
    return {width: df.select(*columns(width)) for width, df in out.items()}


def run(spark, path: Path, out_dir: Path) -> None:
    """Compute and write the three bar tables as Parquet directories (for the comparison)."""
    for width, df in frames(spark, path).items():
        df.write.mode("overwrite").parquet(str(out_dir / f"bars_{width}"))
    spark.catalog.clearCache()

