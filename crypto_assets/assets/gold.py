"""Gold layer: per-tick features, candles with indicators, hourly stats, correlations."""

import dagster as dg

from crypto_assets.assets.ingest import DUCKDB_POOL
from crypto_assets.assets.metadata import table_metadata
from crypto_assets.lake import export_dirty
from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.candles import candles_1m_increment, hourly_increment
from crypto_assets.transforms.features import DATASET as FEATURES_DATASET
from crypto_assets.transforms.features import features_increment
from crypto_assets.transforms.market import correlations_refresh

GOLD = dict(group_name="gold", kinds={"duckdb", "parquet"}, owners=["team:data-eng"], pool=DUCKDB_POOL, code_version="1")


@dg.asset(deps=["clean_ticks"], op_tags={"dagster/priority": "10"}, **GOLD)  # freshness path first
def market_features(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """One row per clean tick: return, log return, SMA over 1/5/15 minutes of event time,
    EMA(20), 15-minute volatility (population std of log returns), z-score of price against its
    15-minute window, 24h-volume change %. Incremental; late ticks recompute the affected windows."""
    with lakehouse.connect() as conn:
        res = features_increment(conn)
        export = export_dirty(conn, lakehouse.lake_path, FEATURES_DATASET, "market_features", "event_time", "coin_id, event_time")
        md = table_metadata(conn, "market_features", "event_time")
    md.update(
        {
            "rows_recomputed": res.rows_written,
            "coins_touched": res.coins,
            "recomputed_from": str(res.recomputed_from) if res.recomputed_from else "nothing new",
            "parquet_partitions_rewritten": export.partitions,
        }
    )
    return dg.MaterializeResult(metadata=md)


@dg.asset(deps=["clean_ticks"], **GOLD)
def ohlcv_1m(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """1-minute candles per coin with RSI(14) (Wilder) and Bollinger bands (20, 2σ) on closes,
    as TA-Lib defines them; the RSI recursion carries its state across runs."""
    with lakehouse.connect() as conn:
        res = candles_1m_increment(conn)
        export = export_dirty(conn, lakehouse.lake_path, "gold/ohlcv_1m", "ohlcv_1m", "minute", "coin_id, minute")
        md = table_metadata(conn, "ohlcv_1m", "minute")
    md.update({"candles_recomputed": res.rows_written, "parquet_partitions_rewritten": export.partitions})
    return dg.MaterializeResult(metadata=md)


@dg.asset(deps=["clean_ticks"], **GOLD)
def ohlcv_1h(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """Hourly candles per coin (open/high/low/close/volume/tick count)."""
    with lakehouse.connect() as conn:
        res = hourly_increment(conn, "ohlcv_1h")
        export_dirty(conn, lakehouse.lake_path, "gold/ohlcv_1h", "ohlcv_1h", "hour", "coin_id, hour")
        md = table_metadata(conn, "ohlcv_1h", "hour")
    md["candles_recomputed"] = res.rows_written
    return dg.MaterializeResult(metadata=md)


@dg.asset(deps=["clean_ticks"], **GOLD)
def hourly_stats(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """Per coin and hour: average/min/max/population-std price, average 24h volume, tick count."""
    with lakehouse.connect() as conn:
        res = hourly_increment(conn, "hourly_stats")
        export_dirty(conn, lakehouse.lake_path, "gold/hourly_stats", "hourly_stats", "hour", "coin_id, hour")
        md = table_metadata(conn, "hourly_stats", "hour")
    md["hours_recomputed"] = res.rows_written
    return dg.MaterializeResult(metadata=md)


@dg.asset(deps=["ohlcv_1m"], **GOLD)
def correlations(context: dg.AssetExecutionContext, lakehouse: LakehouseResource) -> dg.MaterializeResult:
    """Pairwise Pearson correlation of 1-minute returns over the last 24 h and 7 d (rows:
    coin_a, coin_b, window, corr, n)."""
    with lakehouse.connect() as conn:
        res = correlations_refresh(conn)
        path = lakehouse.lake_path / "gold" / "correlations"
        path.mkdir(parents=True, exist_ok=True)
        tmp = path / "correlations.parquet.tmp"
        conn.execute(f"COPY (SELECT * FROM correlations ORDER BY window_name, coin_a, coin_b) TO '{tmp}' (FORMAT parquet)")
        import os

        os.replace(tmp, path / "correlations.parquet")
        md = table_metadata(conn, "correlations", preview_order="corr DESC NULLS LAST")
        top = conn.sql(
            "SELECT coin_a, coin_b, round(corr, 3) FROM correlations WHERE window_name = '24h' ORDER BY corr DESC NULLS LAST LIMIT 3"
        ).fetchall()
    md["window_end"] = str(res.get("window_end", ""))
    md["most_correlated_24h"] = ", ".join(f"{a}/{b} {c}" for a, b, c in top)
    return dg.MaterializeResult(metadata=md)
