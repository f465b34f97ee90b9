"""market_features (+ ohlcv_1m, trade_bars_1m) → a labelled training set in Parquet.

Features look only backwards (the RSI/Bollinger and the exchange trades of the last *complete*
minute, momentum over the past 15/60 minutes); labels look forwards (first tick at or after t + h, accepted only if
it is within 5 minutes of t + h so gaps do not masquerade as returns). No label is a function
of a feature: the large-move label is about the price *after* t, its threshold from data <= t
(the anomaly rule's own flag on the tick, which its inputs zscore_15m/volume_change_pct decide,
was a circular target a forest re-learns from its inputs).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from crypto_assets.warehouse.atomic_files import atomic_write

FEATURES = [
    "return_pct", "log_return", "r_sma_1m", "r_sma_5m", "r_sma_15m", "r_ema_20", "volatility_15m",
    "zscore_15m", "volume_change_pct", "momentum_15m", "momentum_60m", "rsi_14", "bb_pctb",
    "past_move_sigmas", "trade_imbalance", "r_vwap", "log_trade_count", "has_trade_bars",
]
REGRESSION_HORIZONS = {"1h": 60, "4h": 240, "24h": 1440}
DIRECTION_HORIZON_MINUTES = 15  # the direction label (fwd_return_h) and the trend model look this far ahead
TOLERANCE_MINUTES = 5  # a lookup at t ± m accepts a tick at most this much further away (gaps are not returns)

# label_large_move: |ln(p(t + 15 min) / p(t))| > 3 sigma of a 15-minute log return, sigma from data
# <= t: the realized variance (sum of squared tick log returns) over (t - 4 h, t], scaled to 15
# minutes (variance adds up over time, whatever the tick rate). Not volatility_15m x sqrt(ticks):
# 15 returns make a noisy sigma whose low draws make a "large" move easy, so the label was in part
# the noise of its own threshold, a feature: on the simulator (constant diffusion volatility)
# -volatility_15m alone ranked that label better (PR-AUC 0.120) than the forest did (0.091).
# 3 sigma: rare enough to be large, common enough that a week holds hundreds of positives.
LARGE_MOVE_MINUTES = 15
LARGE_MOVE_SIGMAS = 3.0
VOL_WINDOW_MINUTES = 240  # the realized-variance window; a row without a tick at or before t - 4 h has no label
_RV_UNIT = 1e-14  # squared returns summed as integers of this unit: exact, the same sum however far back it starts
_RV_CAP = 0.01  # a squared tick return counts at most as a 10% move (bad data must not own the threshold)
PAST_MOVE_SIGMAS_CAP = 10.0  # past_move_sigmas is clipped: near-zero volatility must not sway a linear model
# Trade-bar features come from the coin's last complete minute of exchange trades (every exchange
# and product of the coin summed), if that minute ended at most this long before t: an older bar
# says nothing about now (a paused stream), and a coin the trade stream does not cover has none.
# Either way they are 0 (neutral) with has_trade_bars = 0.
TRADE_BAR_MAX_AGE_MINUTES = TOLERANCE_MINUTES


@dataclass
class TrainingSetInfo:
    path: Path
    rows: int
    min_time: datetime | None
    max_time: datetime | None
    rows_per_coin: dict[str, int]
    positive_rate: float | None
    large_move_rate: float | None
    labelled: dict[str, int]


def _lookup_specs(horizon_minutes: int) -> list[tuple[str, int]]:
    """(alias, minutes): > 0 the first tick at or after t + m, < 0 the last tick at or before t - |m|."""
    return ([("m15", -15), ("m60", -60), ("h", horizon_minutes), ("hb", -horizon_minutes),
             ("lm", LARGE_MOVE_MINUTES), ("lmb", -LARGE_MOVE_MINUTES)]
            + [(f"r{k}", m) for k, m in REGRESSION_HORIZONS.items()]
            + [(f"p{k}", -m) for k, m in REGRESSION_HORIZONS.items()])


_TICK_COLS = "coin_id, epoch_us(event_time) AS t, price_usd"


def _ticks_sql(conn: duckdb.DuckDBPyConnection, horizon_minutes: int, where: str) -> str:
    """The ticks the lookups of the rows matching `where` can reach: those from the furthest
    backward target of the oldest row to the furthest forward horizon (+ its 5-minute tolerance)
    of the newest row, plus each coin's last tick before that window. A backward lookup's answer
    is in the window or is that last tick; a forward answer beyond the window is later than any
    label accepts (feature_sql), so the features are the same as over the whole table, at a cost
    in proportion to the rows scored rather than to the history."""
    lo, hi = conn.sql(f"SELECT min(f.event_time), max(f.event_time) FROM market_features f WHERE {where}").fetchall()[0]
    if lo is None:
        return f"SELECT {_TICK_COLS} FROM market_features WHERE FALSE"
    specs = _lookup_specs(horizon_minutes)
    back = max(max(-m for _, m in specs if m < 0), VOL_WINDOW_MINUTES + LARGE_MOVE_MINUTES + 1)
    fwd = max(m for _, m in specs if m > 0) + TOLERANCE_MINUTES
    start, end = f"TIMESTAMPTZ '{lo.isoformat()}' - INTERVAL {back} MINUTE", f"TIMESTAMPTZ '{hi.isoformat()}' + INTERVAL {fwd} MINUTE"
    return f"""
        SELECT {_TICK_COLS} FROM market_features
        WHERE event_time >= {start} AND event_time <= {end}
        UNION ALL
        SELECT coin_id, epoch_us(max(event_time)), arg_max(price_usd, event_time)
        FROM market_features WHERE event_time < {start} GROUP BY coin_id
    """


def _register_lookups(conn: duckdb.DuckDBPyConnection, horizon_minutes: int, where: str, bounded: bool = False) -> None:
    """Per market_features row matching `where` (alias f): event time and price of the tick a
    given number of minutes before/after it, as the view `feature_lookups`. The same matches as
    `ASOF LEFT JOIN market_features` (>= for forward, <= for backward, per coin), found with one
    numpy searchsorted per coin and lookup over the coin's sorted ticks; ten ASOF joins sorted
    the whole table (and the ever wider left side) ten times, for 10 new rows as for 1M.
    Also the large-move threshold, from data at or before t: `sigma` = sigma of a 15-minute log
    return at t (`_sigma_15m`), `lmb_sigma` the same at the tick 15 minutes back (the previous
    window's threshold).
    `bounded`: search only the ticks the rows can reach (`_ticks_sql`; for a few new rows)."""
    source = _ticks_sql(conn, horizon_minutes, where) if bounded else f"SELECT {_TICK_COLS} FROM market_features"
    ticks = conn.sql(f"SELECT * FROM ({source}) ORDER BY coin_id, t").fetchnumpy()
    # DISTINCT: one lookup row per (coin, time), so a duplicated tick cannot multiply the join
    probes = conn.sql(f"SELECT DISTINCT coin_id, epoch_us(f.event_time) AS t FROM market_features f WHERE {where} "
                      "ORDER BY coin_id, t").fetchnumpy()
    coins, t, price = np.asarray(ticks["coin_id"], dtype=object), np.asarray(ticks["t"]), np.asarray(ticks["price_usd"])
    pc, pt = np.asarray(probes["coin_id"], dtype=object), np.asarray(probes["t"])
    specs = _lookup_specs(horizon_minutes)
    idx = {a: np.full(len(pt), -1, dtype=np.int64) for a, _ in specs}
    sigma_now = np.full(len(pt), np.nan)
    sig = np.full(len(t), np.nan)  # per tick: the threshold's sigma there
    starts = np.flatnonzero(np.r_[True, coins[1:] != coins[:-1]]) if len(coins) else np.array([], dtype=np.int64)
    ends = np.r_[starts[1:], len(coins)]
    pstarts = np.flatnonzero(np.r_[True, pc[1:] != pc[:-1]]) if len(pc) else np.array([], dtype=np.int64)
    pends = np.r_[pstarts[1:], len(pc)]
    where_coin = dict(zip(coins[starts], zip(starts, ends, strict=False), strict=False))
    for lo, hi in zip(starts, ends, strict=False):
        sig[lo:hi] = _sigma_15m(t[lo:hi], price[lo:hi])
    for ps, pe in zip(pstarts, pends, strict=False):
        lo, hi = where_coin[pc[ps]]
        seg, q = t[lo:hi], pt[ps:pe]
        sigma_now[ps:pe] = sig[lo + np.searchsorted(seg, q, side="right") - 1]  # the row's own (last) tick
        for alias, m in specs:
            us = abs(m) * 60_000_000
            if m > 0:  # first tick at or after q + m
                j = np.searchsorted(seg, q + us, side="left")
                ok = j < len(seg)
            else:  # last tick at or before q - |m|
                j = np.searchsorted(seg, q - us, side="right") - 1
                ok = j >= 0
            idx[alias][ps:pe] = np.where(ok, lo + j, -1)
    cols = {"coin_id": pa.array(pc, type=pa.string()),
            "event_time": pa.array(pt, type=pa.timestamp("us", tz="UTC"))}
    for alias, _ in specs:
        j = idx[alias]
        miss = j < 0
        cols[f"{alias}_t"] = pa.array(np.where(miss, 0, t[j]), type=pa.timestamp("us", tz="UTC"), mask=miss)
        cols[f"{alias}_p"] = pa.array(np.where(miss, 0.0, price[j]), mask=miss)
    j = idx["lmb"]
    for name, v in (("sigma", sigma_now), ("lmb_sigma", np.where(j < 0, np.nan, sig[j]))):
        cols[name] = pa.array(np.nan_to_num(v), mask=np.isnan(v))
    conn.register("feature_lookups", pa.table(cols))


def _sigma_15m(t: np.ndarray, price: np.ndarray) -> np.ndarray:
    """Per tick of one coin (sorted times `t` in us), sigma of a LARGE_MOVE_MINUTES log return:
    sqrt(sum of squared tick log returns over (t - VOL_WINDOW_MINUTES, t] x horizon / window).
    NaN without a tick at or before t - window (history shorter than the window) or with a zero
    variance. Summed as int64 multiples of _RV_UNIT, so a window's sum does not depend on where
    the cumulative sum started (the bounded lookups of predictions start later than training)."""
    out = np.full(len(t), np.nan)
    if len(t) < 2:
        return out
    r2 = np.minimum(np.diff(np.log(price)) ** 2, _RV_CAP)  # r2[i - 1]: the return ending at tick i
    cum = np.r_[0, np.cumsum(np.rint(r2 / _RV_UNIT).astype(np.int64))]  # cum[i]: returns ending at ticks 1..i
    s = np.searchsorted(t, t - VOL_WINDOW_MINUTES * 60_000_000, side="right")  # first tick inside the window
    ok = s >= 1  # a tick at or before t - window: the window is covered
    rv = (cum - cum[np.maximum(s - 1, 0)]) * _RV_UNIT  # returns ending at ticks s..i (the first spans its start)
    var = rv * (LARGE_MOVE_MINUTES / VOL_WINDOW_MINUTES)
    good = ok & (var > 0)
    out[good] = np.sqrt(var[good])
    return out


def _trade_minutes_sql(where: str) -> str:
    """Per coin and minute, its trade bars summed over exchanges and products (volumes and the
    quote value exact, as decimals, so the sums do not depend on their order). Only the minutes
    a row matching `where` can use: older ones are beyond TRADE_BAR_MAX_AGE_MINUTES of each."""
    return f"""
        SELECT coin_id, bar_start, sum(buy_volume)::DOUBLE AS buy, sum(sell_volume)::DOUBLE AS sell,
               (sum(quote_volume_exact) / nullif(sum(base_volume), 0))::DOUBLE AS vwap, sum(trade_count)::DOUBLE AS trades
        FROM trade_bars_1m
        WHERE bar_start >= (SELECT min(f.event_time) FROM market_features f WHERE {where})
                           - INTERVAL {TRADE_BAR_MAX_AGE_MINUTES + 1} MINUTE
        GROUP BY coin_id, bar_start"""


def feature_sql(horizon_minutes: int = DIRECTION_HORIZON_MINUTES, where: str = "TRUE") -> str:
    """SELECT of features and labels for the market_features rows matching `where` (alias f);
    needs the `feature_lookups` view of the same rows (`_register_lookups`). Baselines beside
    them, backward-looking like the features: past_return_h (the last horizon's return: "same
    direction again" for label_up) and past_large_move (the large-move rule on the previous
    15 minutes, with that window's own threshold: persistence for label_large_move)."""
    tol, lm = TOLERANCE_MINUTES, LARGE_MOVE_MINUTES
    fwd_cols = [
        f"""CASE WHEN l.r{k}_t <= f.event_time + INTERVAL {m + tol} MINUTE
                 THEN l.r{k}_p / f.price_usd - 1 END AS fwd_return_{k},
            CASE WHEN l.p{k}_t >= f.event_time - INTERVAL {m + tol} MINUTE
                 THEN f.price_usd / l.p{k}_p - 1 END AS past_return_{k}"""
        for k, m in REGRESSION_HORIZONS.items()
    ]
    # the previous window's move in its sigmas (NULL: no tick 15 min back, or no volatility then)
    past_sigmas = (f"CASE WHEN l.lmb_t >= f.event_time - INTERVAL {lm + tol} MINUTE "
                   "THEN abs(ln(f.price_usd / l.lmb_p)) / l.lmb_sigma END")
    fresh = (f"coalesce(tb.bar_start + INTERVAL 1 MINUTE > f.event_time - INTERVAL {TRADE_BAR_MAX_AGE_MINUTES} MINUTE, "
             "FALSE)")
    sql = f"""
        SELECT f.coin_id, f.symbol, f.event_time, f.price_usd,
               coalesce(f.return_pct, 0) AS return_pct,
               coalesce(f.log_return, 0) AS log_return,
               f.price_usd / f.sma_1m - 1 AS r_sma_1m,
               f.price_usd / f.sma_5m - 1 AS r_sma_5m,
               f.price_usd / f.sma_15m - 1 AS r_sma_15m,
               f.price_usd / f.ema_20 - 1 AS r_ema_20,
               coalesce(f.volatility_15m, 0) AS volatility_15m,
               coalesce(f.zscore_15m, 0) AS zscore_15m,
               coalesce(f.volume_change_pct, 0) AS volume_change_pct,
               coalesce(ln(f.price_usd / l.m15_p), 0) AS momentum_15m,
               coalesce(ln(f.price_usd / l.m60_p), 0) AS momentum_60m,
               coalesce(c.rsi_14, 50) AS rsi_14,
               coalesce(CASE WHEN c.bb_upper > c.bb_lower THEN (c.close - c.bb_lower) / (c.bb_upper - c.bb_lower) END, 0.5) AS bb_pctb,
               least(coalesce({past_sigmas}, 0), {PAST_MOVE_SIGMAS_CAP}) AS past_move_sigmas,  -- (least skips NULLs)
               CASE WHEN {fresh} AND tb.buy + tb.sell > 0 THEN (tb.buy - tb.sell) / (tb.buy + tb.sell) ELSE 0 END
                 AS trade_imbalance,
               CASE WHEN {fresh} AND tb.vwap > 0 THEN f.price_usd / tb.vwap - 1 ELSE 0 END AS r_vwap,
               CASE WHEN {fresh} THEN ln(1 + tb.trades) ELSE 0 END AS log_trade_count,
               ({fresh})::INTEGER AS has_trade_bars,
               CASE WHEN l.hb_t >= f.event_time - INTERVAL {horizon_minutes + tol} MINUTE
                    THEN f.price_usd / l.hb_p - 1 END AS past_return_h,
               ({past_sigmas} > {LARGE_MOVE_SIGMAS})::INTEGER AS past_large_move,
               CASE WHEN l.h_t <= f.event_time + INTERVAL {horizon_minutes + tol} MINUTE
                    THEN l.h_p / f.price_usd - 1 END AS fwd_return_h,
               {', '.join(fwd_cols)},
               CASE WHEN l.lm_t <= f.event_time + INTERVAL {lm + tol} MINUTE
                    THEN (abs(ln(l.lm_p / f.price_usd)) > {LARGE_MOVE_SIGMAS} * l.sigma)::INTEGER
               END AS label_large_move
        FROM market_features f
        JOIN feature_lookups l ON l.coin_id = f.coin_id AND l.event_time = f.event_time
        ASOF LEFT JOIN ohlcv_1m c ON c.coin_id = f.coin_id AND c.minute + INTERVAL 1 MINUTE <= f.event_time
        ASOF LEFT JOIN ({_trade_minutes_sql(where)}) tb
          ON tb.coin_id = f.coin_id AND tb.bar_start + INTERVAL 1 MINUTE <= f.event_time
        WHERE {where}
    """
    return sql


def feature_rows(conn: duckdb.DuckDBPyConnection, hwm: int, upstream_seq: int, max_age_hours: float):
    """Features (polars) of feature rows written after `hwm`, within max_age_hours of the newest."""
    where = (
        f"f.feature_seq > {int(hwm)} AND f.feature_seq <= {int(upstream_seq)} AND "
        f"f.event_time >= (SELECT max(event_time) FROM market_features) - INTERVAL {float(max_age_hours) * 3600} SECOND"
    )
    _register_lookups(conn, DIRECTION_HORIZON_MINUTES, where, bounded=True)
    try:
        return conn.sql(f"SELECT * FROM ({feature_sql(DIRECTION_HORIZON_MINUTES, where)}) ORDER BY event_time, coin_id").pl()
    finally:
        conn.unregister("feature_lookups")


def build_training_set(conn: duckdb.DuckDBPyConnection, out_dir: Path, horizon_minutes: int = DIRECTION_HORIZON_MINUTES,
                       window_days: float | None = None) -> TrainingSetInfo:
    """The labelled rows of the last `window_days` before the newest feature row (all of them if
    None), with the same features and labels as over the whole history (bounded lookups)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    where = "TRUE"
    if window_days is not None:
        where = (f"f.event_time >= (SELECT max(event_time) FROM market_features) "
                 f"- INTERVAL {float(window_days) * 86400} SECOND")
    sql = feature_sql(horizon_minutes, where)
    _register_lookups(conn, horizon_minutes, where, bounded=window_days is not None)
    try:
        conn.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE training_rows AS
            SELECT *, CASE WHEN fwd_return_h IS NULL THEN NULL ELSE (fwd_return_h > 0)::INTEGER END AS label_up
            FROM ({sql}) ORDER BY event_time, coin_id
            """
        )
    finally:
        conn.unregister("feature_lookups")
    path = out_dir / "training_set.parquet"
    with atomic_write(path, fsync=False) as tmp:  # rebuilt by the next retrain
        conn.execute(f"COPY training_rows TO '{tmp}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 100000)")
    stats = conn.sql(
        """
        SELECT count(*), min(event_time), max(event_time), avg(label_up), avg(label_large_move),
               count(label_up), count(fwd_return_1h), count(fwd_return_4h), count(fwd_return_24h),
               count(label_large_move)
        FROM training_rows
        """
    ).fetchall()[0]
    per_coin = dict(conn.sql("SELECT coin_id, count(*) FROM training_rows GROUP BY 1 ORDER BY 1").fetchall())
    conn.execute("DROP TABLE training_rows")
    return TrainingSetInfo(
        path=path,
        rows=int(stats[0]),
        min_time=stats[1],
        max_time=stats[2],
        rows_per_coin={k: int(v) for k, v in per_coin.items()},
        positive_rate=stats[3],
        large_move_rate=stats[4],
        labelled={"direction": int(stats[5]), "1h": int(stats[6]), "4h": int(stats[7]), "24h": int(stats[8]),
                  "large_move": int(stats[9])},
    )
