"""RSI(14) and Bollinger(20, 2) on a product's 1-minute trade-bar closes, continued from the bars
before the first recomputed one, so a run over a tail of the series gives bit for bit what a run
over the whole series gives.

RSI is ohlcv_1m's (crypto_assets.transforms.candles.rsi_with_state, TA-Lib's definition, with its
state carried on each bar). Bollinger is computed per window from its 20 closes (numpy over a
sliding view), not with a running sum: a running sum's rounding depends on where the series
starts, a per-window mean does not. The same definitions as ohlcv_1m: SMA and population std.
"""

from __future__ import annotations

import numpy as np
import polars as pl

from crypto_assets.transforms.candles import BB_K, BB_PERIOD, RSI_PERIOD, rsi_with_state

INDICATOR_COLUMNS = ["return_pct", "log_return", "rsi_14", "bb_middle", "bb_upper", "bb_lower", "rsi_n", "rsi_gain",
                     "rsi_loss"]


def bollinger(closes: np.ndarray, context: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(middle, upper, lower) for each of `closes`, with up to BB_PERIOD - 1 earlier closes as
    `context`; NaN where fewer than BB_PERIOD closes exist."""
    m = len(closes)
    mid = np.full(m, np.nan)
    std = np.full(m, np.nan)
    series = np.concatenate([context[-(BB_PERIOD - 1):] if len(context) else context, closes])
    offset = len(series) - m  # index in `series` of closes[0]
    if len(series) >= BB_PERIOD:
        windows = np.lib.stride_tricks.sliding_window_view(series, BB_PERIOD)  # window j ends at series[j + 19]
        first = max(offset - (BB_PERIOD - 1), 0)  # the first window that ends at or after closes[0]
        w = windows[first:]
        ends = np.arange(first, len(windows)) + BB_PERIOD - 1 - offset
        mid[ends] = w.mean(axis=1)
        std[ends] = w.std(axis=1)
    return mid, mid + BB_K * std, mid - BB_K * std


def product_indicators(closes: np.ndarray, context: pl.DataFrame) -> dict[str, np.ndarray]:
    """Indicators of one product's bars `closes` (float, in time order). `context` holds the bars
    before them, oldest first, with close, rsi_n, rsi_gain, rsi_loss (empty: a new series)."""
    if context.height:
        last = context.row(context.height - 1, named=True)
        prev_close, n0 = float(last["close"]), int(last["rsi_n"])
        g0 = last["rsi_gain"] if last["rsi_gain"] is not None else 0.0
        l0 = last["rsi_loss"] if last["rsi_loss"] is not None else 0.0
        ctx_closes = context["close"].cast(pl.Float64).to_numpy()
    else:
        prev_close, n0, g0, l0 = None, 0, 0.0, 0.0
        ctx_closes = np.empty(0)
    rsi, n_arr, g_arr, l_arr = rsi_with_state(closes, prev_close, n0, g0, l0)
    prev = np.concatenate([[np.nan if prev_close is None else prev_close], closes[:-1]])
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = closes / prev
        ret = (ratio - 1.0) * 100.0
        log_ret = np.log(ratio)
    mid, up, lo = bollinger(closes, ctx_closes)
    return {"return_pct": ret, "log_return": log_ret, "rsi_14": rsi, "bb_middle": mid, "bb_upper": up, "bb_lower": lo,
            "rsi_n": n_arr, "rsi_gain": g_arr, "rsi_loss": l_arr}


def indicators_frame(series: pl.DataFrame, context: pl.DataFrame) -> pl.DataFrame:
    """Indicators for every bar of `series` (exchange, product, bar_start, close), per product,
    from `context` (the same columns plus the RSI state, the bars before each product's first)."""
    frames = []
    for part in series.sort("exchange", "product", "bar_start").partition_by(["exchange", "product"], maintain_order=True):
        ex, prod = part["exchange"][0], part["product"][0]
        ctx = context.filter((pl.col("exchange") == ex) & (pl.col("product") == prod)).sort("bar_start")
        ind = product_indicators(part["close"].cast(pl.Float64).to_numpy(), ctx)
        frames.append(part.select("exchange", "product", "bar_start").with_columns(
            *(pl.Series(k, v).fill_nan(None) for k, v in ind.items() if k != "rsi_n"),
            rsi_n=pl.Series(ind["rsi_n"], dtype=pl.Int32)))
    if not frames:
        return pl.DataFrame()
    return pl.concat(frames).select("exchange", "product", "bar_start", *INDICATOR_COLUMNS)


__all__ = ["BB_K", "BB_PERIOD", "RSI_PERIOD", "INDICATOR_COLUMNS", "bollinger", "indicators_frame", "product_indicators"]
