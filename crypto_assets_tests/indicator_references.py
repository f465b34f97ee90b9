"""Naive reference computations of the indicators (textbook / TA-Lib definitions in plain numpy,
pandas and Python loops, none of the package's helpers), the deterministic tick data they run
on, and the comparison helpers: what test_indicators.py checks the package against.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import cast

import numpy as np
import pandas as pd
import polars as pl

US = 1_000_000  # microseconds per second
T0_US = int(datetime(2026, 11, 1, 0, 0, 7, tzinfo=UTC).timestamp()) * US
SMA_WINDOWS_US = {"sma_1m": 60 * US, "sma_5m": 300 * US, "sma_15m": 900 * US}
W15_US = 900 * US
EMA_ALPHA = 2.0 / 21.0
RSI_N = 14
BB_N, BB_K = 20, 2.0

COINS = {"bitcoin": ("btc", 65_000.0), "ethereum": ("eth", 3_200.0), "solana": ("sol", 150.0)}
EXTREME = {"shib": ("tiny", 1e-8), "bignum": ("huge", 1e6)}

FEATURE_CHECKS = ["sma_1m", "sma_5m", "sma_15m", "ema_20", "volatility_15m", "zscore_15m",
                  "return_pct", "log_return", "volume_change_pct"]


# ----------------------------------------------------------------------------- data


def make_ticks(
    seed: int,
    n: int,
    coins: dict[str, tuple[str, float]] = COINS,
    sigma: float = 1e-3,
    pauses: dict[str, tuple[int, int]] | None = None,
) -> pd.DataFrame:
    """Per coin: a geometric random walk with ~30 % unchanged steps and one flat stretch of 40
    ticks spanning > 15 min (zero-std 15 m windows), irregular 1-90 s gaps, some 0 / null volumes;
    `pauses[coin] = (i, seconds)` makes the gap before tick i that long (a coin that stops).
    Columns: coin_id, symbol, t_us (epoch microseconds), price_usd, volume_24h_usd (object)."""
    rng = np.random.default_rng(seed)
    frames = []
    for k, (coin, (sym, p0)) in enumerate(coins.items()):
        gaps = rng.integers(1, 91, n).astype(np.int64)
        gaps[0] = 13 * k  # coins start at different offsets
        steps = rng.normal(0.0, sigma, n) * (rng.random(n) > 0.3)
        steps[0] = 0.0
        if n > 150:
            gaps[61:100] = rng.integers(30, 91, 39)  # 39 gaps >= 30 s: the flat part lasts > 15 min
            steps[60:100] = 0.0
        if pauses and coin in pauses:
            gaps[pauses[coin][0]] = pauses[coin][1]
        t_us = T0_US + np.cumsum(gaps) * US
        price = p0 * np.exp(np.cumsum(steps))
        vol = list(1e9 * np.exp(rng.normal(0.0, 0.05, n)))
        picks = rng.choice(np.arange(1, n), size=min(6, n - 1), replace=False)
        for j in picks[:3]:
            vol[j] = 0.0
        for j in picks[3:]:
            vol[j] = None
        frames.append(pd.DataFrame({"coin_id": coin, "symbol": sym, "t_us": t_us, "price_usd": price,
                                    "volume_24h_usd": pd.Series(vol, dtype=object)}))
    return pd.concat(frames, ignore_index=True)


def to_polars(ticks: pd.DataFrame, is_target: bool | list[bool] = True) -> pl.DataFrame:
    """The frame compute_features expects (event_time as Datetime(us, UTC), as DuckDB yields)."""
    vol = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
           for v in ticks["volume_24h_usd"]]
    target = is_target if not isinstance(is_target, bool) else [is_target] * len(ticks)
    return pl.DataFrame(
        {
            "coin_id": list(ticks["coin_id"]),
            "symbol": list(ticks["symbol"]),
            "event_time": pl.Series(ticks["t_us"].to_numpy(), dtype=pl.Int64)
            .cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
            "price_usd": pl.Series(ticks["price_usd"].to_numpy(), dtype=pl.Float64),
            "volume_24h_usd": pl.Series(vol, dtype=pl.Float64),
            "is_target": pl.Series(list(target), dtype=pl.Boolean),
        }
    )


# ----------------------------------------------------------------------------- references


def _pop_std(xs: list[float]) -> float:
    """Two-pass population standard deviation (exactly 0 when all values are equal)."""
    if all(x == xs[0] for x in xs):
        return 0.0
    m = math.fsum(xs) / len(xs)
    return math.sqrt(math.fsum((x - m) ** 2 for x in xs) / len(xs))


def ref_ema(prices, seed: float | None = None) -> list[float]:
    """EMA(20), adjust=False: e_0 = p_0 (or alpha*p_0 + (1-alpha)*seed), e_t = alpha*p_t + (1-alpha)*e_{t-1}."""
    out, e = [], seed
    for p in prices:
        e = p if e is None else EMA_ALPHA * p + (1.0 - EMA_ALPHA) * e
        out.append(e)
    return out


def ref_features_coin(t_us: np.ndarray, price: np.ndarray, vol: list) -> dict[str, list]:
    """Brute force, one coin sorted by time: every window is rescanned from scratch."""
    n = len(t_us)
    r: dict[str, list] = {c: [] for c in FEATURE_CHECKS + ["ticks_15m"]}
    log_ret = [None] + [math.log(price[i] / price[i - 1]) for i in range(1, n)]
    for i in range(n):
        for name, w in SMA_WINDOWS_US.items():  # scan every tick of the coin, every time
            win = price[(t_us > t_us[i] - w) & (t_us <= t_us[i])].tolist()
            r[name].append(math.fsum(win) / len(win))
        idx15 = np.nonzero((t_us > t_us[i] - W15_US) & (t_us <= t_us[i]))[0].tolist()
        r["ticks_15m"].append(len(idx15))
        lr = [x for x in (log_ret[j] for j in idx15) if x is not None]
        r["volatility_15m"].append(_pop_std(lr) if lr else None)
        pw = [float(price[j]) for j in idx15]
        sd = _pop_std(pw)
        r["zscore_15m"].append(None if sd == 0 else (price[i] - math.fsum(pw) / len(pw)) / sd)
        if i == 0:
            r["return_pct"].append(None)
            r["log_return"].append(None)
            r["volume_change_pct"].append(None)
        else:
            r["return_pct"].append((price[i] - price[i - 1]) / price[i - 1] * 100.0)
            r["log_return"].append(log_ret[i])
            v0, v1 = vol[i - 1], vol[i]
            r["volume_change_pct"].append((v1 - v0) / v0 * 100.0 if v0 is not None and v1 is not None and v0 > 0 else None)
    r["ema_20"] = ref_ema(price)
    return r


def ref_features(ticks: pd.DataFrame) -> pd.DataFrame:
    out = []
    for coin, g in ticks.sort_values(["coin_id", "t_us"]).groupby("coin_id", sort=True):
        vol = [None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)
               for v in g["volume_24h_usd"]]
        r = ref_features_coin(g["t_us"].to_numpy(), g["price_usd"].to_numpy(), vol)
        out.append(pd.DataFrame({"coin_id": coin, "t_us": g["t_us"].to_numpy(), **r}))
    return pd.concat(out, ignore_index=True)


def ref_rsi(closes) -> np.ndarray:
    """TA-Lib RSI(14): first averages = simple means of the first 14 gains / losses, then
    avg = (prev * 13 + x) / 14; RSI = 100 * g / (g + l), 0 when both are 0; first value at 14."""
    closes = [float(c) for c in closes]
    out = np.full(len(closes), np.nan)
    if len(closes) <= RSI_N:
        return out
    ch = [closes[i] - closes[i - 1] for i in range(1, len(closes))]
    g = math.fsum(max(c, 0.0) for c in ch[:RSI_N]) / RSI_N
    lo = math.fsum(max(-c, 0.0) for c in ch[:RSI_N]) / RSI_N

    def rsi(g, lo):
        return 0.0 if g + lo == 0 else 100.0 * g / (g + lo)

    out[RSI_N] = rsi(g, lo)
    for i in range(RSI_N + 1, len(closes)):
        c = ch[i - 1]
        g = (g * (RSI_N - 1) + max(c, 0.0)) / RSI_N
        lo = (lo * (RSI_N - 1) + max(-c, 0.0)) / RSI_N
        out[i] = rsi(g, lo)
    return out


def ref_candles(ticks: pd.DataFrame, bucket_us: int) -> pd.DataFrame:
    """pandas groupby: open/close = first/last price by time, high/low, last (non-null) 24h
    volume, tick count, mean price, population std of price, mean volume."""
    t = ticks.sort_values(["coin_id", "t_us"]).copy()
    t["bucket"] = t["t_us"] // bucket_us * bucket_us
    t["vol"] = cast(pd.Series, pd.to_numeric(t["volume_24h_usd"], errors="coerce")).astype(float)
    g = t.groupby(["coin_id", "bucket"], sort=True)
    c = g.agg(
        symbol=("symbol", "first"), open=("price_usd", "first"), high=("price_usd", "max"),
        low=("price_usd", "min"), close=("price_usd", "last"), volume=("vol", "last"),
        tick_count=("price_usd", "size"), avg_price=("price_usd", "mean"),
        stddev_price=("price_usd", lambda s: float(np.std(s.to_numpy(), ddof=0))),
        avg_volume=("vol", "mean"),
    ).reset_index()
    return c


def ref_minute_indicators(c1m: pd.DataFrame) -> pd.DataFrame:
    out = []
    for _, c in c1m.groupby("coin_id", sort=True):
        c = c.sort_values("bucket").copy()
        close = c["close"]
        c["return_pct"] = (close - close.shift(1)) / close.shift(1) * 100.0
        c["rsi_14"] = ref_rsi(close.to_numpy())
        mid = close.rolling(BB_N).mean()
        sd = close.rolling(BB_N).std(ddof=0)
        c["bb_middle"], c["bb_upper"], c["bb_lower"] = mid, mid + BB_K * sd, mid - BB_K * sd
        out.append(c)
    return pd.concat(out, ignore_index=True)


# ----------------------------------------------------------------------------- comparison


def _arr(x) -> np.ndarray:
    if isinstance(x, pl.Series):
        return x.cast(pl.Float64).to_numpy()
    return np.array([np.nan if v is None else v for v in list(x)], dtype=float)


def assert_close(got, exp, what: str, rel: float = 1e-9, abs_: float = 0.0, keys=None) -> None:
    g, e = _arr(got), _arr(exp)
    assert g.shape == e.shape, f"{what}: {g.shape} rows vs expected {e.shape}"
    gn, en = np.isnan(g), np.isnan(e)
    bad_null = np.nonzero(gn != en)[0]
    assert not len(bad_null), (
        f"{what}: null mismatch at {len(bad_null)} rows, first #{bad_null[0]} "
        f"{'' if keys is None else keys[bad_null[0]]}: got {g[bad_null[0]]!r}, expected {e[bad_null[0]]!r}"
    )
    m = ~en
    err = np.abs(g[m] - e[m])
    tol = np.maximum(rel * np.abs(e[m]), abs_)
    bad = np.nonzero(err > tol)[0]
    if len(bad):
        idx = np.nonzero(m)[0][bad]
        i = idx[np.argmax(err[bad] / np.maximum(tol[bad], 1e-300))]
        raise AssertionError(
            f"{what}: {len(bad)} of {int(m.sum())} values off; worst #{i} "
            f"{'' if keys is None else keys[i]}: got {g[i]!r}, expected {e[i]!r}, "
            f"abs err {abs(g[i] - e[i]):.3e}, rel err {abs(g[i] - e[i]) / max(abs(e[i]), 1e-300):.3e}"
        )


# Absolute floors only for dimensionless quantities that can sit arbitrarily close to 0, where
# the cancellation in (p - mean) or (p / p_prev - 1) is inherent: never for price-scaled values.
ABS_FLOOR = {"zscore_15m": 1e-9, "return_pct": 1e-9, "volume_change_pct": 1e-9, "log_return": 1e-12}


def check_features(got: pl.DataFrame, ticks: pd.DataFrame, expected: pd.DataFrame | None = None) -> None:
    got = got.sort("coin_id", "event_time")
    exp = (expected if expected is not None else ref_features(ticks)).sort_values(["coin_id", "t_us"])
    exp = exp.reset_index(drop=True)
    got_t = got["event_time"].dt.epoch("us").to_numpy()
    assert list(got["coin_id"]) == list(exp["coin_id"]) and (got_t == exp["t_us"].to_numpy()).all()
    keys = [f"{c}@{(t - T0_US) / US:.0f}s" for c, t in zip(exp["coin_id"], exp["t_us"], strict=True)]
    for col in FEATURE_CHECKS:
        assert got[col].is_nan().sum() == 0, f"{col}: NaN where a null (or a number) belongs"
        assert_close(got[col], exp[col], col, abs_=ABS_FLOOR.get(col, 0.0), keys=keys)
    assert got["ticks_15m"].to_list() == list(exp["ticks_15m"])
