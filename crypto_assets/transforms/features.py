"""clean_ticks → market_features: per-tick returns, time-window SMAs, EMA, volatility, z-score.

Windows are event-time ranges (t - w, t] per coin, not row counts. A run recomputes, per coin,
every tick from the earliest new (possibly late) tick onwards, reading 15 minutes of earlier
ticks plus one more (the previous tick of the first row in the window) as context; the EMA
continues from the last stored value before that point, so incremental runs reproduce a full
recomputation.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

import duckdb
import polars as pl

from crypto_assets.warehouse.incremental_table import incremental_table
from crypto_assets.warehouse.sql import first

ASSET = "market_features"
UPSTREAM = "clean_ticks"
LOOKBACK = timedelta(minutes=15)
EMA_SPAN = 20
EMA_ALPHA = 2.0 / (EMA_SPAN + 1)

FEATURE_COLUMNS = [
    "coin_id", "symbol", "event_time", "price_usd", "volume_24h_usd", "return_pct", "log_return",
    "sma_1m", "sma_5m", "sma_15m", "ema_20", "volatility_15m", "zscore_15m", "volume_change_pct",
    "ticks_15m",
]


@dataclass
class FeaturesResult:
    rows_written: int = 0
    coins: int = 0
    recomputed_from: datetime | None = None
    seq: int = 0


def _finite(expr: pl.Expr) -> pl.Expr:
    """A ratio that is not representable in float64 (an overflow) is undefined: null."""
    return pl.when(expr.is_finite()).then(expr).otherwise(None)


def _pow2_scale(prices: pl.Series) -> float:
    """The power of two at or below the largest price (at least the smallest normal float, whose
    reciprocal is finite: polars divides by multiplying with it). Dividing by it is exact, so
    windows summed over prices / scale give bit-identical results without overflowing."""
    top = cast(float | None, prices.max())
    if top is None or not math.isfinite(top) or top <= 0:
        return 1.0
    return max(math.ldexp(1.0, math.frexp(top)[1] - 1), sys.float_info.min)


def _unscale(scaled: pl.Expr, scale: float) -> pl.Expr:
    """A mean of scaled prices back in USD. A mean cannot exceed its largest price, but its
    rounding can by an ulp; next to float64's maximum that overflows, and the true value is then
    the maximum itself."""
    x = scaled * scale
    return pl.when(scaled.is_finite() & x.is_infinite() & (x > 0)).then(pl.lit(sys.float_info.max)).otherwise(_finite(x))


def compute_features(ticks: pl.DataFrame, ema_state: dict[str, float]) -> pl.DataFrame:
    """Features for one or more coins. `ticks` has coin_id, symbol, event_time, price_usd,
    volume_24h_usd, is_target (False for context rows); only target rows are returned.
    `ema_state[coin]` is the EMA at the last tick before the first target (absent: start fresh).

    Finite input yields finite (or null) output even at float64's extremes: windows and the EMA
    run on prices scaled by a power of two, the log return falls back to ln p - ln p_prev when
    the ratio overflows, and a return, z-score or volume change that is not representable is
    null. clean_ticks' bounds keep all of this far from the edge; this is the second line."""
    if ticks.height == 0:
        return pl.DataFrame(schema={c: pl.Float64 for c in FEATURE_COLUMNS})
    out = []
    for part in ticks.sort("coin_id", "event_time").partition_by("coin_id", maintain_order=True):
        coin = part["coin_id"][0]
        scale = _pow2_scale(part["price_usd"])
        p = pl.col("price_usd")
        ps = pl.col("scaled")
        ratio = p / pl.col("prev_price")
        f = part.with_columns(
            scaled=p / scale,
            prev_price=p.shift(1),
            prev_volume=pl.col("volume_24h_usd").shift(1),
        ).with_columns(
            return_pct=_finite((ratio - 1.0) * 100.0),
            log_return=pl.when(ratio.is_finite() & (ratio > 0))
            .then(ratio.log())
            .otherwise(p.log() - pl.col("prev_price").log()),
            volume_change_pct=pl.when(pl.col("prev_volume") > 0)
            .then(_finite((pl.col("volume_24h_usd") / pl.col("prev_volume") - 1.0) * 100.0))
            .otherwise(None),
        ).with_columns(
            sma_1m=ps.rolling_mean_by("event_time", "1m"),
            sma_5m=ps.rolling_mean_by("event_time", "5m"),
            sma_15m=ps.rolling_mean_by("event_time", "15m"),
            price_std_15m=ps.rolling_std_by("event_time", "15m", ddof=0),
            volatility_15m=pl.col("log_return").rolling_std_by("event_time", "15m", ddof=0),
        )
        # ticks in (t - 15m, t]: difference of cumulative counts via a range search
        times = f["event_time"]
        idx_start = times.search_sorted(times - LOOKBACK, side="right")
        f = f.with_columns(ticks_15m=(pl.Series(range(1, f.height + 1)) - idx_start).cast(pl.Int32))
        f = f.with_columns(
            zscore_15m=pl.when(pl.col("price_std_15m") > 0)
            .then(_finite((ps - pl.col("sma_15m")) / pl.col("price_std_15m")))
            .otherwise(None),
        )
        targets = f.filter(pl.col("is_target"))
        prices = targets["scaled"]
        if coin in ema_state and ema_state[coin] is not None:
            seeded = pl.concat([pl.Series([ema_state[coin] / scale], dtype=pl.Float64), prices])
            ema = seeded.ewm_mean(alpha=EMA_ALPHA, adjust=False).slice(1)
        else:
            ema = prices.ewm_mean(alpha=EMA_ALPHA, adjust=False)
        targets = targets.with_columns(ema_20=ema).with_columns(
            _unscale(pl.col(c), scale).alias(c) for c in ("sma_1m", "sma_5m", "sma_15m", "ema_20")
        )
        out.append(targets.select(FEATURE_COLUMNS))
    return pl.concat(out)


def _build_context(conn: duckdb.DuckDBPyConnection) -> None:
    """Per coin: ctx_start = last tick at or before t_min - 15 min (the previous tick of the first
    row inside any target's window; t_min - 15 min when there is none) and prev_time = last tick
    before t_min (whose stored EMA seeds the recursion). Searched within a day first, then
    without bound for coins that paused longer (a coin that stops and restarts)."""
    conn.execute(
        """
        CREATE OR REPLACE TEMP TABLE feat_ctx AS
        SELECT s.coin_id, s.t_min,
               (SELECT max(c.event_time) FROM clean_ticks c
                WHERE c.coin_id = s.coin_id AND c.event_time <= s.t_min - $lb
                  AND c.event_time >= s.t_min - $lb - INTERVAL 1 DAY) AS ctx_start,
               (SELECT max(c.event_time) FROM clean_ticks c
                WHERE c.coin_id = s.coin_id AND c.event_time < s.t_min
                  AND c.event_time >= s.t_min - $lb - INTERVAL 1 DAY) AS prev_time
        FROM feat_starts s
        """,
        {"lb": LOOKBACK},
    )
    conn.execute(
        """
        UPDATE feat_ctx SET
          ctx_start = (SELECT max(c.event_time) FROM clean_ticks c
                       WHERE c.coin_id = feat_ctx.coin_id AND c.event_time <= feat_ctx.t_min - $lb),
          prev_time = coalesce(prev_time, (SELECT max(c.event_time) FROM clean_ticks c
                       WHERE c.coin_id = feat_ctx.coin_id AND c.event_time < feat_ctx.t_min))
        WHERE ctx_start IS NULL
        """,
        {"lb": LOOKBACK},
    )
    conn.execute("UPDATE feat_ctx SET ctx_start = t_min - $lb WHERE ctx_start IS NULL", {"lb": LOOKBACK})


def features_increment(conn: duckdb.DuckDBPyConnection) -> FeaturesResult:
    with incremental_table(conn, ASSET, upstream=UPSTREAM) as inc:
        if inc.nothing_new:
            return FeaturesResult(seq=inc.seq)
        conn.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE feat_starts AS
            SELECT coin_id, min(event_time) AS t_min FROM clean_ticks
            WHERE {inc.window} GROUP BY 1
            """
        )
        _build_context(conn)
        ticks = conn.sql(
            """
            SELECT c.coin_id, c.symbol, c.event_time, c.price_usd, c.volume_24h_usd,
                   c.event_time >= x.t_min AS is_target
            FROM clean_ticks c JOIN feat_ctx x USING (coin_id)
            WHERE c.event_time >= x.ctx_start AND c.event_time >= (SELECT min(ctx_start) FROM feat_ctx)
            ORDER BY c.coin_id, c.event_time
            """
        ).pl()
        ema_rows = conn.sql(
            """
            SELECT f.coin_id, f.ema_20 FROM market_features f JOIN feat_ctx x
              ON f.coin_id = x.coin_id AND f.event_time = x.prev_time
            WHERE f.event_time >= (SELECT min(prev_time) FROM feat_ctx)
            """
        ).fetchall()
        feats = compute_features(ticks, {c: v for c, v in ema_rows})
        conn.execute(
            """
            DELETE FROM market_features USING feat_starts s
            WHERE market_features.coin_id = s.coin_id AND market_features.event_time >= s.t_min
              AND market_features.event_time >= (SELECT min(t_min) FROM feat_starts)
            """
        )
        conn.register("feats_new", feats.with_columns(feature_seq=pl.lit(inc.new_seq, dtype=pl.Int64)).to_arrow())
        conn.execute(f"INSERT INTO market_features SELECT {', '.join(FEATURE_COLUMNS)}, feature_seq FROM feats_new ORDER BY event_time")
        inc.mark_touched("SELECT event_time, symbol FROM feats_new")
        conn.unregister("feats_new")
        t_min = first(conn, "SELECT min(t_min), count(*) FROM feat_starts")
    return FeaturesResult(rows_written=feats.height, coins=int(t_min[1]), recomputed_from=t_min[0], seq=inc.new_seq)
