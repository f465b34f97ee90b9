"""The pandas engine: groupby over floored timestamps, exact arithmetic on scaled int64.

pandas has no exact decimal type of its own (read_parquet turns DECIMAL into Python Decimal
objects, one per value), so prices and sizes become int64 in 10^-8 units and the quote value
of a trade (16 decimals) is carried as two int64s: whole 10^-8 units and the remainder below,
summed separately and rounded half-up to 8 decimals at the end. 1-second bars come from the
trades (sorted by (trade_time, trade_id) so first/last are open/close); 1-minute and 1-hour
bars roll the 1-second bars up; RSI and Bollinger via ewm/rolling per product.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from bench._engines_data import SCALE, decimal_array, scaled_int64
from bench._engines_features import BB_K, BB_N, PRICE_COLS, VOLUME_COLS, WIDTHS, columns, wilder_rsi

HALF = SCALE // 2


def _quote_parts(p: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """price × size in 10^-8 units, exactly: (whole units, remainder in 10^-16 units)."""
    ph, pl = np.divmod(p, SCALE)
    sh, sl = np.divmod(s, SCALE)
    lo_hi, lo = np.divmod(pl * sl, SCALE)  # pl, sl < 10^8: the product fits in int64
    return ph * sh * SCALE + ph * sl + pl * sh + lo_hi, lo


def _trades(path: Path) -> pd.DataFrame:
    t = pq.read_table(path, columns=["exchange", "product", "trade_id", "price", "size", "side", "trade_time"],
                      read_dictionary=["exchange", "product", "side"])
    p, s = scaled_int64(t["price"]), scaled_int64(t["size"])
    qh, ql = _quote_parts(p, s)
    buy = t["side"].to_pandas().to_numpy() == "buy"
    return pd.DataFrame({
        "exchange": t["exchange"].to_pandas(), "product": t["product"].to_pandas(),
        "trade_id": t["trade_id"].to_numpy(), "t_us": t["trade_time"].cast(pa.int64()).to_numpy(),
        "price": p, "size": s, "qh": qh, "ql": ql, "buy": np.where(buy, s, 0), "sell": np.where(buy, 0, s),
    })


def _rollup(df: pd.DataFrame, bucket: np.ndarray, agg: dict) -> pd.DataFrame:
    g = df.assign(bucket=bucket).groupby(["exchange", "product", "bucket"], observed=True, sort=True)
    return g.agg(**agg).reset_index()


def _finish(b: pd.DataFrame, width: str) -> pa.Table:
    """Round the quote volume, add VWAP (and the 1m features), to Arrow with exact decimals."""
    carry, rem = np.divmod(b["ql"].to_numpy(), SCALE)
    quote = b["qh"].to_numpy() + carry + (rem >= HALF)
    base = b["base_volume"].to_numpy()
    out = {"exchange": pa.array(b["exchange"].astype(str)), "product": pa.array(b["product"].astype(str)),
           "bar_start": pa.array(b["bucket"].to_numpy() * WIDTHS[width], pa.timestamp("us", tz="UTC"))}
    for c in PRICE_COLS:
        out[c] = decimal_array(b[c].to_numpy(), 18)
    vols = {"base_volume": base, "quote_volume": quote, "buy_volume": b["buy_volume"].to_numpy(),
            "sell_volume": b["sell_volume"].to_numpy()}
    for c in VOLUME_COLS:
        out[c] = decimal_array(vols[c], 38)
    for c in ("trade_count", "first_trade_id", "last_trade_id"):
        out[c] = pa.array(b[c].to_numpy(), pa.int64())
    out["vwap"] = pa.array((b["qh"].to_numpy() + b["ql"].to_numpy() / SCALE) / base)  # the exact quote, unrounded
    if width == "1m":
        close = b["close"].to_numpy()
        prod = b.groupby(["exchange", "product"], observed=True, sort=False).ngroup().to_numpy()
        changes = np.diff(close, prepend=close[:1]).astype(np.float64) / SCALE
        changes[np.r_[True, prod[1:] != prod[:-1]]] = np.nan
        closes = pd.Series(close / SCALE)
        by = closes.groupby(prod, sort=False)
        mid = by.transform(lambda x: x.rolling(BB_N).mean()).to_numpy()
        std = by.transform(lambda x: x.rolling(BB_N).std(ddof=0)).to_numpy()
        rsi = pd.Series(changes).groupby(prod, sort=False).transform(lambda x: pd.Series(wilder_rsi(x.to_numpy()), x.index))
        out["rsi_14"] = pa.array(rsi.to_numpy(), from_pandas=True)
        out["bb_middle"] = pa.array(mid, from_pandas=True)
        out["bb_upper"] = pa.array(mid + BB_K * std, from_pandas=True)
        out["bb_lower"] = pa.array(mid - BB_K * std, from_pandas=True)
    return pa.table({c: out[c] for c in columns(width)})


def run(path: Path) -> dict[str, pa.Table]:
    """The three bar tables (and the 1m features) from the trades file."""
    df = _trades(path).sort_values(["t_us", "trade_id"], kind="stable")
    sec = df["t_us"].to_numpy() // WIDTHS["1s"]
    b1s = _rollup(df, sec, {
        "open": ("price", "first"), "high": ("price", "max"), "low": ("price", "min"), "close": ("price", "last"),
        "base_volume": ("size", "sum"), "qh": ("qh", "sum"), "ql": ("ql", "sum"),
        "buy_volume": ("buy", "sum"), "sell_volume": ("sell", "sum"), "trade_count": ("price", "size"),
        "first_trade_id": ("trade_id", "first"), "last_trade_id": ("trade_id", "last")})
    del df
    result = {"1s": _finish(b1s, "1s")}
    up = {"open": ("open", "first"), "high": ("high", "max"), "low": ("low", "min"), "close": ("close", "last"),
          "base_volume": ("base_volume", "sum"), "qh": ("qh", "sum"), "ql": ("ql", "sum"),
          "buy_volume": ("buy_volume", "sum"), "sell_volume": ("sell_volume", "sum"),
          "trade_count": ("trade_count", "sum"), "first_trade_id": ("first_trade_id", "first"),
          "last_trade_id": ("last_trade_id", "last")}
    for width in ("1m", "1h"):
        bucket = b1s["bucket"].to_numpy() // (WIDTHS[width] // WIDTHS["1s"])
        result[width] = _finish(_rollup(b1s, bucket, up), width)
    return result
