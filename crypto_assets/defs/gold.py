"""Gold layer: per-tick features, candles with indicators, hourly stats, correlations, anomalies;
their checks (rules and specs)."""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg

from crypto_assets.defs.check_verdicts import Seqs, Verdict, offender_table, seq_scope
from crypto_assets.defs.code_versions import source_version
from crypto_assets.defs.metadata import table_definition_metadata
from crypto_assets.transforms.anomalies import anomalies_increment, correlations_refresh, publish_alerts
from crypto_assets.transforms.candles import candles_1m_increment, hourly_increment
from crypto_assets.transforms.features import features_increment
from crypto_assets.transforms.trade_anomalies import trade_anomalies_increment


def _gold(key: str, deps: list[str], logic: tuple[Callable, ...], description: str,
          kinds: set[str] | None = None) -> dg.AssetSpec:
    """A gold spec whose code version is the hash of `logic`, the transforms that compute it."""
    return dg.AssetSpec(key, deps=deps, group_name="gold", kinds=kinds or {"duckdb", "parquet"},
                        owners=["team:data-eng"], tags={"layer": "gold"}, code_version=source_version(*logic),
                        skippable=True, description=description, metadata=table_definition_metadata(key))


MARKET_FEATURES = _gold(
    "market_features", ["clean_ticks"], (features_increment,),
    "One row per clean tick: return, log return, SMA over 1/5/15 minutes of event time, EMA(20), 15-minute "
    "volatility (population std of log returns), z-score of price against its 15-minute window, 24h-volume "
    "change %. Incremental; late ticks recompute the affected windows.")
OHLCV_1M = _gold(
    "ohlcv_1m", ["clean_ticks"], (candles_1m_increment,),
    "1-minute candles per coin with RSI(14) (Wilder) and Bollinger bands (20, 2σ) on closes, as TA-Lib defines "
    "them; the RSI recursion carries its state across runs.")
OHLCV_1H = _gold("ohlcv_1h", ["clean_ticks"], (hourly_increment,), "Hourly candles per coin (open/high/low/close/volume/tick count).")
HOURLY_STATS = _gold("hourly_stats", ["clean_ticks"], (hourly_increment,),
                     "Per coin and hour: average/min/max/population-std price, average 24h volume, tick count.")
CORRELATIONS = _gold("correlations", ["ohlcv_1m"], (correlations_refresh,),
                     "Pairwise Pearson correlation of 1-minute returns over the last 24 h and 7 d (rows: coin_a, "
                     "coin_b, window, corr, n).")
ANOMALIES = _gold(
    "anomalies", ["market_features", "trade_bars_1m"], (anomalies_increment, publish_alerts, trade_anomalies_increment),
    "|z| > 3 against the 15-minute window and 24h-volume spikes > 200 % vs the previous tick (source `ticks`); on "
    "1-minute trade bars, |z| > 3 of the log return against the trailing hour and traded volume > 5x the trailing "
    "bars' mean (source `trades:<exchange>:<product>`). Each new anomaly is published once to `crypto_alerts`.",
    kinds={"duckdb", "kafka"})

GOLD_SPECS = [MARKET_FEATURES, ANOMALIES, OHLCV_1M, OHLCV_1H, HOURLY_STATS, CORRELATIONS]
FEATURES_FINITE = dg.AssetCheckSpec("market_features_finite", asset="market_features", blocking=True,
                                    description="no NaN/Inf where a value is defined (the rows each pass wrote)")
RSI_RANGE = dg.AssetCheckSpec("ohlcv_1m_rsi_range", asset="ohlcv_1m", blocking=True,
                              description="RSI in [0, 100], sane OHLC and bands (the candles each pass wrote)")
CHECKS = [FEATURES_FINITE, RSI_RANGE]


FEATURE_NUMERIC = ("return_pct", "log_return", "sma_1m", "sma_5m", "sma_15m", "ema_20", "volatility_15m",
                   "zscore_15m", "volume_change_pct")


def features_finite(conn, seq: Seqs = None) -> Verdict:
    bad_expr = " OR ".join(f"({c} IS NOT NULL AND NOT isfinite({c}))" for c in FEATURE_NUMERIC)
    scope = seq_scope("feature_seq", seq)
    counts_sql = ", ".join(f"count(*) FILTER ({c} IS NOT NULL AND NOT isfinite({c}))" for c in FEATURE_NUMERIC)
    row = conn.sql(f"SELECT {counts_sql}, count(*) FILTER (volatility_15m < 0) FROM market_features WHERE {scope}").fetchall()[0]
    counts = dict(zip(FEATURE_NUMERIC, (int(v) for v in row[:-1]), strict=True))
    neg_vol = int(row[-1])
    bad = {c: n for c, n in counts.items() if n}
    md: dict = {"non_finite_counts": counts, "negative_volatility": neg_vol}
    if bad or neg_vol:
        md["offending_rows"] = dg.MetadataValue.md(offender_table(
            conn, f"SELECT coin_id, event_time, price_usd, {', '.join(bad) or 'volatility_15m'} FROM market_features "
                  f"WHERE {scope} AND ({bad_expr} OR volatility_15m < 0) ORDER BY event_time",
            ["coin_id", "event_time", "price_usd", *(bad or ["volatility_15m"])]))
    return Verdict(not bad and neg_vol == 0, md, f"NaN/Inf in {bad}" if bad else "all defined values finite")


def rsi_in_range(conn, seq: Seqs = None) -> Verdict:
    scope = seq_scope("candle_seq", seq)
    bad_rsi = "rsi_14 IS NOT NULL AND (NOT isfinite(rsi_14) OR rsi_14 < 0 OR rsi_14 > 100)"
    bad_bb = "bb_upper < bb_lower OR NOT isfinite(bb_middle)"
    bad_ohlc = "NOT (low <= open AND open <= high AND low <= close AND close <= high)"
    out, bb, ohlc = conn.sql(
        f"SELECT count(*) FILTER ({bad_rsi}), count(*) FILTER ({bad_bb}), count(*) FILTER ({bad_ohlc}) "
        f"FROM ohlcv_1m WHERE {scope}").fetchall()[0]
    md: dict = {"rsi_out_of_range": int(out), "bad_bollinger": int(bb), "bad_ohlc": int(ohlc)}
    if out or bb or ohlc:
        md["offending_rows"] = dg.MetadataValue.md(offender_table(
            conn, f"SELECT coin_id, minute, open, high, low, close, rsi_14 FROM ohlcv_1m "
                  f"WHERE {scope} AND (({bad_rsi}) OR ({bad_bb}) OR ({bad_ohlc})) ORDER BY minute",
            ["coin_id", "minute", "open", "high", "low", "close", "rsi_14"]))
    return Verdict(out == 0 and bb == 0 and ohlc == 0, md)
