"""clean_ticks → ohlcv_1m (+ RSI(14) and Bollinger(20, 2)), ohlcv_1h and hourly_stats.

Affected buckets are rebuilt from the first bucket any new tick falls in. Indicators follow
TA-Lib's definitions on 1-minute closes: RSI seeds its averages with the mean of the first 14
changes, then Wilder-smooths (avg = (prev * 13 + x) / 14); RSI = 100 * gain / (gain + loss),
0 when both are 0. Bollinger uses the SMA and the population std of 20 closes. The RSI state
(changes seen, running sums or averages) is stored on each candle, so a run continues the
recursion from the candle before its first affected one instead of restarting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import duckdb
import numpy as np
import polars as pl

from crypto_assets.warehouse.incremental_table import Increment, incremental_table

UPSTREAM = "clean_ticks"
RSI_PERIOD = 14
BB_PERIOD = 20
BB_K = 2.0

CANDLE_1M_COLUMNS = [
    "coin_id", "symbol", "minute", "open", "high", "low", "close", "volume", "tick_count",
    "return_pct", "rsi_14", "bb_middle", "bb_upper", "bb_lower", "rsi_n", "rsi_gain", "rsi_loss",
]


@dataclass
class CandleResult:
    rows_written: int = 0
    recomputed_from: datetime | None = None
    seq: int = 0


def rsi_with_state(
    closes: np.ndarray, prev_close: float | None, n0: int, gain0: float, loss0: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Continue Wilder's RSI over `closes` from a stored state. Returns (rsi, n, gain, loss)
    per candle; gain/loss hold running sums while n < 14 and Wilder averages from n = 14."""
    m = len(closes)
    rsi = np.full(m, np.nan)
    n_out = np.zeros(m, dtype=np.int64)
    g_out = np.full(m, np.nan)
    l_out = np.full(m, np.nan)
    if m == 0:
        return rsi, n_out, g_out, l_out
    prev = np.concatenate([[prev_close if prev_close is not None else np.nan], closes[:-1]])
    change = closes - prev  # nan for a coin's very first candle
    has = ~np.isnan(change)
    gains = np.where(has, np.maximum(change, 0.0), 0.0)
    losses = np.where(has, np.maximum(-change, 0.0), 0.0)
    n = n0 + np.cumsum(has)
    n_out[:] = np.minimum(n, RSI_PERIOD)
    seeding = n < RSI_PERIOD
    # Running sums while seeding (the state before the 14th change).
    # (gain0 first in the sum, so a split run adds in the same order as an unsplit one: exact)
    g_sum = np.cumsum(np.concatenate([[gain0], gains]))[1:] if n0 < RSI_PERIOD else None
    l_sum = np.cumsum(np.concatenate([[loss0], losses]))[1:] if n0 < RSI_PERIOD else None
    if g_sum is not None and l_sum is not None:  # n0 < RSI_PERIOD
        g_out[seeding] = g_sum[seeding]
        l_out[seeding] = l_sum[seeding]
    # First index at which the averages exist (n reaches 14), and its seed.
    if n0 >= RSI_PERIOD:
        start, g_avg, l_avg = 0, gain0, loss0
        wilder_from = 0  # every candle here applies one Wilder step to the stored average
    else:
        hit = np.nonzero(n >= RSI_PERIOD)[0]
        if len(hit) == 0:
            return rsi, n_out, g_out, l_out
        start = int(hit[0])
        assert g_sum is not None and l_sum is not None  # n0 < RSI_PERIOD here
        g_avg = g_sum[start] / RSI_PERIOD
        l_avg = l_sum[start] / RSI_PERIOD
        g_out[start], l_out[start] = g_avg, l_avg
        wilder_from = start + 1
    # Wilder smoothing from wilder_from on, vectorised: avg_t = (1 - 1/14) avg_{t-1} + x_t / 14
    # is an adjust=False EWM seeded with the previous average.
    if wilder_from < m:
        alpha = 1.0 / RSI_PERIOD
        g_out[wilder_from:] = pl.Series(np.concatenate([[g_avg], gains[wilder_from:]])).ewm_mean(
            alpha=alpha, adjust=False).to_numpy()[1:]
        l_out[wilder_from:] = pl.Series(np.concatenate([[l_avg], losses[wilder_from:]])).ewm_mean(
            alpha=alpha, adjust=False).to_numpy()[1:]
    valid = n >= RSI_PERIOD
    tot = g_out + l_out
    with np.errstate(invalid="ignore", divide="ignore"):
        rsi = np.where(valid, np.where(tot > 0, 100.0 * g_out / tot, 0.0), np.nan)
    return rsi, n_out, g_out, l_out


def _bucket_sql(bucket: str, inc: Increment) -> str:
    return f"""
        WITH starts AS (
            SELECT coin_id, date_trunc('{bucket}', min(event_time)) AS b_min FROM clean_ticks
            WHERE {inc.window} GROUP BY 1
        )
        SELECT c.coin_id, any_value(c.symbol) AS symbol, date_trunc('{bucket}', c.event_time) AS bucket,
               arg_min(c.price_usd, c.event_time) AS open, max(c.price_usd) AS high,
               min(c.price_usd) AS low, arg_max(c.price_usd, c.event_time) AS close,
               arg_max(c.volume_24h_usd, c.event_time) AS volume, count(*)::INTEGER AS tick_count,
               avg(c.price_usd) AS avg_price, stddev_pop(c.price_usd) AS stddev_price,
               avg(c.volume_24h_usd) AS avg_volume
        FROM clean_ticks c JOIN starts s USING (coin_id)
        WHERE c.event_time >= s.b_min AND c.event_time >= (SELECT min(b_min) FROM starts)
        GROUP BY c.coin_id, bucket
        ORDER BY c.coin_id, bucket
    """


def candles_1m_increment(conn: duckdb.DuckDBPyConnection) -> CandleResult:
    with incremental_table(conn, "ohlcv_1m", upstream=UPSTREAM) as inc:
        if inc.nothing_new:
            return CandleResult(seq=inc.seq)
        buckets = conn.sql(_bucket_sql("minute", inc)).pl()
        starts = buckets.group_by("coin_id").agg(pl.col("bucket").min().alias("b_min"))
        conn.register("c1_starts", starts.to_arrow())
        # Context: the BB_PERIOD - 1 candles before each coin's first affected minute, whose
        # last one also carries the RSI state and the previous close.
        ctx = conn.sql(
            f"""
            SELECT o.coin_id, o.minute, o.close, o.rsi_n, o.rsi_gain, o.rsi_loss
            FROM ohlcv_1m o JOIN c1_starts s ON o.coin_id = s.coin_id AND o.minute < s.b_min
            WHERE o.minute >= (SELECT min(b_min) FROM c1_starts) - INTERVAL 3 DAY
            QUALIFY row_number() OVER (PARTITION BY o.coin_id ORDER BY o.minute DESC) <= {BB_PERIOD - 1}
            """
        ).pl()
        # Coins with fewer than BB_PERIOD - 1 candles in the bounded window (paused for more than
        # 3 days, possibly with a few candles since): search without the bound.
        have = dict(ctx.group_by("coin_id").len().iter_rows())
        missing = {c for c in starts["coin_id"] if have.get(c, 0) < BB_PERIOD - 1}
        if missing:
            conn.register("c1_missing", pl.DataFrame({"coin_id": sorted(missing)}).to_arrow())
            more = conn.sql(
                f"""
                SELECT o.coin_id, o.minute, o.close, o.rsi_n, o.rsi_gain, o.rsi_loss
                FROM ohlcv_1m o JOIN c1_starts s ON o.coin_id = s.coin_id AND o.minute < s.b_min
                WHERE o.coin_id IN (SELECT coin_id FROM c1_missing)
                QUALIFY row_number() OVER (PARTITION BY o.coin_id ORDER BY o.minute DESC) <= {BB_PERIOD - 1}
                """
            ).pl()
            conn.unregister("c1_missing")
            ctx = pl.concat([ctx.filter(~pl.col("coin_id").is_in(sorted(missing))), more])
        frames = []
        for part in buckets.partition_by("coin_id", maintain_order=True):
            coin = part["coin_id"][0]
            c = ctx.filter(pl.col("coin_id") == coin).sort("minute")
            closes = part["close"].to_numpy()
            if c.height:
                last = c.row(c.height - 1, named=True)
                prev_close, n0 = last["close"], int(last["rsi_n"])
                g0 = last["rsi_gain"] if last["rsi_gain"] is not None else 0.0
                l0 = last["rsi_loss"] if last["rsi_loss"] is not None else 0.0
            else:
                prev_close, n0, g0, l0 = None, 0, 0.0, 0.0
            rsi, n_arr, g_arr, l_arr = rsi_with_state(closes, prev_close, n0, g0, l0)
            all_closes = pl.concat([c["close"], part["close"]])
            mid = all_closes.rolling_mean(BB_PERIOD).slice(c.height)
            std = all_closes.rolling_std(BB_PERIOD, ddof=0).slice(c.height)
            prev = pl.concat([c["close"].tail(1), part["close"]]).shift(1).slice(1 if c.height else 0)
            if not c.height:
                prev = part["close"].shift(1)
            frames.append(
                part.with_columns(
                    minute=pl.col("bucket"),
                    return_pct=(pl.col("close") / prev - 1.0) * 100.0,
                    rsi_14=pl.Series(rsi).fill_nan(None),
                    bb_middle=mid,
                    bb_upper=mid + BB_K * std,
                    bb_lower=mid - BB_K * std,
                    rsi_n=pl.Series(n_arr, dtype=pl.Int32),
                    rsi_gain=pl.Series(g_arr).fill_nan(None),
                    rsi_loss=pl.Series(l_arr).fill_nan(None),
                ).select(CANDLE_1M_COLUMNS)
            )
        out = pl.concat(frames) if frames else pl.DataFrame()
        conn.execute(
            "DELETE FROM ohlcv_1m USING c1_starts s WHERE ohlcv_1m.coin_id = s.coin_id AND ohlcv_1m.minute >= s.b_min "
            "AND ohlcv_1m.minute >= (SELECT min(b_min) FROM c1_starts)"
        )
        if out.height:
            conn.register("c1_new", out.with_columns(candle_seq=pl.lit(inc.new_seq, dtype=pl.Int64)).to_arrow())
            conn.execute(f"INSERT INTO ohlcv_1m SELECT {', '.join(CANDLE_1M_COLUMNS)}, candle_seq FROM c1_new ORDER BY minute")
            inc.mark_touched("SELECT minute AS event_time, symbol FROM c1_new")
            conn.unregister("c1_new")
        conn.unregister("c1_starts")
    return CandleResult(out.height, starts["b_min"].min() if starts.height else None, inc.new_seq)


def hourly_increment(conn: duckdb.DuckDBPyConnection, asset: str) -> CandleResult:
    """ohlcv_1h or hourly_stats: rebuild the affected hours per coin."""
    with incremental_table(conn, asset, upstream=UPSTREAM) as inc:
        if inc.nothing_new:
            return CandleResult(seq=inc.seq)
        conn.execute(f"CREATE OR REPLACE TEMP TABLE h_new AS {_bucket_sql('hour', inc)}")
        conn.execute("CREATE OR REPLACE TEMP TABLE h_starts AS SELECT coin_id, min(bucket) AS b_min FROM h_new GROUP BY 1")
        conn.execute(
            f"DELETE FROM {asset} USING h_starts s WHERE {asset}.coin_id = s.coin_id AND {asset}.hour >= s.b_min "
            f"AND {asset}.hour >= (SELECT min(b_min) FROM h_starts)"
        )
        if asset == "ohlcv_1h":
            conn.execute(
                "INSERT INTO ohlcv_1h SELECT coin_id, symbol, bucket, open, high, low, close, volume, tick_count, $seq "
                "FROM h_new ORDER BY bucket",
                {"seq": inc.new_seq},
            )
        else:
            conn.execute(
                "INSERT INTO hourly_stats SELECT coin_id, symbol, bucket, avg_price, low, high, stddev_price, avg_volume, "
                "tick_count, $seq FROM h_new ORDER BY bucket",
                {"seq": inc.new_seq},
            )
        inc.mark_touched("SELECT bucket AS event_time, symbol FROM h_new")
        rows = conn.sql("SELECT count(*), min(b_min) FROM h_new, (SELECT min(b_min) AS b_min FROM h_starts)").fetchall()[0]
    return CandleResult(int(rows[0]), rows[1], inc.new_seq)
