"""What every engine of the engines bench computes, stated once: the bar widths, the output
columns, the indicator definitions (as the project's ohlcv_1m: TA-Lib RSI(14) with Wilder
smoothing seeded by the mean of the first 14 changes, Bollinger(20, 2) with the population std,
both over a product's consecutive 1-minute bars; VWAP = the unrounded quote volume / base volume), and the pandas Wilder RSI that the pandas
engine and Spark's applyInPandas share (no project code: the bench checks the project against
independent implementations)."""

from __future__ import annotations

import numpy as np
import pandas as pd

WIDTHS = {"1s": 1_000_000, "1m": 60_000_000, "1h": 3_600_000_000}  # bar width in microseconds
RSI_N = 14
BB_N, BB_K = 20, 2.0

KEY = ["exchange", "product", "bar_start"]
EXACT = ["open", "high", "low", "close", "base_volume", "quote_volume", "buy_volume", "sell_volume",
         "trade_count", "first_trade_id", "last_trade_id"]
FLOATS = ["vwap"]
FEATURES = ["rsi_14", "bb_middle", "bb_upper", "bb_lower"]  # 1m only
PRICE_COLS = ["open", "high", "low", "close"]  # DECIMAL(18,8)
VOLUME_COLS = ["base_volume", "quote_volume", "buy_volume", "sell_volume"]  # DECIMAL(38,8)


def columns(width: str) -> list[str]:
    return KEY + EXACT + FLOATS + (FEATURES if width == "1m" else [])


def wilder_rsi(changes: np.ndarray) -> np.ndarray:
    """RSI per bar from the close-to-close changes of one product (changes[0] is NaN: no
    previous bar). NaN until 14 changes were seen; 0 when gains and losses are both 0."""
    m = len(changes)
    out = np.full(m, np.nan)
    if m <= RSI_N:
        return out
    gains = np.where(changes > 0, changes, 0.0)
    losses = np.where(changes < 0, -changes, 0.0)
    avg = []
    for x in (gains, losses):
        seeded = np.concatenate([[x[1:RSI_N + 1].mean()], x[RSI_N + 1:]])
        avg.append(pd.Series(seeded).ewm(alpha=1.0 / RSI_N, adjust=False).mean().to_numpy())
    g, lo = avg
    tot = g + lo
    with np.errstate(invalid="ignore", divide="ignore"):
        out[RSI_N:] = np.where(tot > 0, 100.0 * g / tot, 0.0)
    return out
