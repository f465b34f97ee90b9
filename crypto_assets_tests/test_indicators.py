"""Indicator definitions checked against independent, deliberately naive reference computations.

Every reference here is written from the textbook / TA-Lib definition with plain numpy, pandas
and Python loops (O(n^2) window scans, explicit recursions); none of it calls the package's
helpers. The package is exercised through its pure functions (`compute_features`,
`rsi_with_state`) and, for the SQL-built tables, through the real incremental functions on a
temporary DuckDB warehouse into which clean_ticks rows are inserted directly.

Data is deterministic (seeded), irregularly spaced (gaps of 1-90 whole seconds, so window
boundaries t - w are hit exactly and the (t - w, t] convention is exercised), has a flat price
stretch longer than 15 minutes (zero-std windows), zero and null volumes, and several coins.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest

from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.candles import candles_1m_increment, hourly_increment, rsi_with_state
from crypto_assets.transforms.features import compute_features, features_increment
from crypto_assets.warehouse.watermarks import set_state

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


def to_polars(ticks: pd.DataFrame, is_target=True) -> pl.DataFrame:
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
        lr = [log_ret[j] for j in idx15 if log_ret[j] is not None]
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
            ok = v0 is not None and v1 is not None and v0 > 0
            r["volume_change_pct"].append((v1 - v0) / v0 * 100.0 if ok else None)
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
    t["vol"] = pd.to_numeric(t["volume_24h_usd"], errors="coerce").astype(float)
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


# ----------------------------------------------------------------------------- 1-3, 7: features


@pytest.fixture(scope="module")
def ticks() -> pd.DataFrame:
    return make_ticks(seed=7, n=400)


@pytest.fixture(scope="module")
def ref(ticks) -> pd.DataFrame:
    return ref_features(ticks)


def test_reference_data_has_the_edge_cases(ticks, ref):
    """Guard for the data itself: boundaries hit exactly, zero-std windows, 0 / null volumes."""
    for _, g in ticks.groupby("coin_id"):
        t = g["t_us"].to_numpy()
        assert np.isin(t - 60 * US, t).any() and np.isin(t - 900 * US, t).any()
    assert ref["zscore_15m"].isna().sum() > 3 * 10  # first tick + the flat stretch, per coin
    assert (ref["volatility_15m"] == 0).any()
    assert ref["volume_change_pct"].isna().sum() > 3


def test_features_match_brute_force(ticks, ref):
    """1, 2 and 3: time-window SMAs, volatility, z-score, returns, volume change and EMA(20)
    from scratch, all coins in one shuffled frame."""
    shuffled = ticks.sample(frac=1.0, random_state=3).reset_index(drop=True)
    got = compute_features(to_polars(shuffled), {})
    check_features(got, ticks, ref)


@pytest.mark.parametrize("split", [1, 5, 37, 200, 399])
def test_ema_seeded_from_state_continues_the_recursion(ticks, ref, split):
    """3: targets = ticks from index `split` on, ema_state = reference EMA of the tick before;
    context = the previous 15 minutes plus one tick (what features_increment reads). Every
    feature of the targets must equal the from-scratch computation."""
    parts, state = [], {}
    for coin, g in ticks.sort_values(["coin_id", "t_us"]).groupby("coin_id"):
        g = g.reset_index(drop=True)
        t = g["t_us"].to_numpy()
        t_min = t[split]
        before = np.nonzero(t <= t_min - W15_US)[0]
        ctx_start = t[before[-1]] if len(before) else t_min - W15_US
        g = g[g["t_us"] >= ctx_start]
        parts.append((g, g["t_us"] >= t_min))
        state[coin] = ref_ema(ticks[ticks.coin_id == coin].sort_values("t_us")["price_usd"])[split - 1]
    frame = pl.concat([to_polars(g, list(is_t)) for g, is_t in parts])
    got = compute_features(frame, state)
    exp = pd.concat(
        [ref[(ref.coin_id == c) & (ref.t_us >= g["t_us"][is_t].min())] for (g, is_t), c in zip(parts, state, strict=True)]
    )
    assert got.height == len(exp)
    check_features(got, ticks, exp)


def test_ema_none_state_starts_fresh(ticks):
    got = compute_features(to_polars(ticks[ticks.coin_id == "solana"]), {"solana": None})
    p = ticks[ticks.coin_id == "solana"].sort_values("t_us")["price_usd"]
    assert_close(got["ema_20"], ref_ema(p), "ema_20")
    assert got["ema_20"][0] == p.iloc[0]


def test_features_extreme_magnitudes():
    """7: 1e-8 and 1e6 prices in the same frame keep full relative precision."""
    t = make_ticks(seed=11, n=300, coins=EXTREME)
    check_features(compute_features(to_polars(t), {}), t)


def test_features_tiny_relative_moves():
    """Stablecoin-like prices (relative moves ~1e-6): z-scores and volatility are ratios of
    small differences, where a sum-of-squares variance would lose most of its digits."""
    t = make_ticks(seed=5, n=250, coins={"tether": ("usdt", 1.0001), "bignum": ("huge", 1e6)}, sigma=1e-6)
    check_features(compute_features(to_polars(t), {}), t)


# ----------------------------------------------------------------------------- 4, 7: RSI


def _closes(seed: int, n: int, p0: float = 100.0, sigma: float = 0.01) -> np.ndarray:
    rng = np.random.default_rng(seed)
    steps = rng.normal(0.0, sigma, n) * (rng.random(n) > 0.2)  # some unchanged closes
    return p0 * np.exp(np.cumsum(steps))


RSI_SERIES = {
    "walk": _closes(1, 120),
    "tiny": _closes(2, 120, p0=1e-8),
    "huge": _closes(3, 120, p0=1e6),
    "flat_then_walk": np.concatenate([np.full(20, 42.0), _closes(4, 60, p0=42.0)]),
    "rising": np.linspace(1.0, 2.0, 40),
    "falling": np.linspace(2.0, 1.0, 40),
}


@pytest.mark.parametrize("name", list(RSI_SERIES))
def test_rsi_from_scratch(name):
    closes = RSI_SERIES[name]
    rsi, n, gain, loss = rsi_with_state(closes, None, 0, 0.0, 0.0)
    exp = ref_rsi(closes)
    assert np.isnan(rsi[:RSI_N]).all() and not np.isnan(rsi[RSI_N:]).any()
    assert_close(rsi, exp, f"rsi[{name}]", rel=0.0, abs_=1e-9)
    assert list(n) == [min(i, RSI_N) for i in range(len(closes))]
    if name == "flat_then_walk":
        assert rsi[RSI_N] == 0.0  # no gains, no losses
    if name == "rising":
        assert_close(rsi[RSI_N:], np.full(len(closes) - RSI_N, 100.0), "rising", rel=0, abs_=1e-9)
    if name == "falling":
        assert (rsi[RSI_N:] == 0.0).all()


@pytest.mark.parametrize("name", ["walk", "tiny", "huge", "flat_then_walk"])
@pytest.mark.parametrize("split", [1, 2, 5, 13, 14, 15, 16, 30, 119])
def test_rsi_split_carrying_state(name, split):
    """Two calls, the second continuing from the first's last (n, gain, loss) and last close,
    equal one call; splits inside the seeding phase, right at n = 14, and after."""
    closes = RSI_SERIES[name][:120]
    split = min(split, len(closes) - 1)
    a = rsi_with_state(closes[:split], None, 0, 0.0, 0.0)
    n0, g0, l0 = int(a[1][-1]), a[2][-1], a[3][-1]
    g0 = 0.0 if np.isnan(g0) else g0  # what candles_1m_increment does with a NULL state
    l0 = 0.0 if np.isnan(l0) else l0
    b = rsi_with_state(closes[split:], float(closes[split - 1]), n0, g0, l0)
    rsi = np.concatenate([a[0], b[0]])
    assert_close(rsi, ref_rsi(closes), f"rsi[{name}] split at {split}", rel=0.0, abs_=1e-9)
    whole = rsi_with_state(closes, None, 0, 0.0, 0.0)
    assert list(np.concatenate([a[1], b[1]])) == list(whole[1])


def test_rsi_three_way_split_inside_seeding():
    closes = RSI_SERIES["walk"]
    rsi, state = [], (None, 0, 0.0, 0.0)
    for lo, hi in [(0, 5), (5, 9), (9, 40), (40, 120)]:
        r, n, g, loss = rsi_with_state(closes[lo:hi], *state)
        rsi.append(r)
        state = (float(closes[hi - 1]), int(n[-1]), float(g[-1]), float(loss[-1]))
    assert_close(np.concatenate(rsi), ref_rsi(closes), "rsi 3-way", rel=0.0, abs_=1e-9)


# ----------------------------------------------------------------------------- 5, 6: candles on DuckDB


def _insert_clean(conn, ticks: pd.DataFrame, seq: int) -> None:
    df = to_polars(ticks).drop("is_target").with_columns(
        source=pl.lit("test"), market_cap_usd=pl.lit(None, dtype=pl.Float64),
        change_24h_pct=pl.lit(None, dtype=pl.Float64), change_7d_pct=pl.lit(None, dtype=pl.Float64),
        ingestion_timestamp=pl.col("event_time"), kafka_partition=pl.lit(0, dtype=pl.Int32),
        kafka_offset=pl.int_range(pl.len(), dtype=pl.Int64), raw_batch_id=pl.lit(seq, dtype=pl.Int64),
        clean_seq=pl.lit(seq, dtype=pl.Int64),
    )
    conn.register("ins_clean", df.to_arrow())
    conn.execute(
        "INSERT INTO clean_ticks SELECT coin_id, symbol, source, event_time, price_usd, market_cap_usd, "
        "volume_24h_usd, change_24h_pct, change_7d_pct, ingestion_timestamp, kafka_partition, kafka_offset, "
        "raw_batch_id, clean_seq FROM ins_clean"
    )
    conn.unregister("ins_clean")
    set_state(conn, "clean_ticks", seq, seq)


def _run_gold(conn) -> None:
    candles_1m_increment(conn)
    hourly_increment(conn, "ohlcv_1h")
    hourly_increment(conn, "hourly_stats")
    features_increment(conn)


def _batches(ticks: pd.DataFrame) -> list[pd.DataFrame]:
    """Three clean_ticks batches: coin-specific cut points (bitcoin's inside the RSI seeding,
    after ~6 minutes), and late ticks (event time before the previous batch's newest tick of the
    coin, inside an already-written minute) in batches 2 and 3."""
    t = ticks.sort_values(["coin_id", "t_us"]).reset_index(drop=True)
    cut1 = {"bitcoin": 8, "ethereum": 150, "solana": 301}
    cut2 = {"bitcoin": 200, "ethereum": 260, "solana": 350}
    b1, b2, b3 = [], [], []
    for coin, g in t.groupby("coin_id"):
        g = g.reset_index(drop=True)
        late1 = g.index.isin([cut1[coin] - 3, cut1[coin] - 2])  # held back into batch 2
        late2 = g.index.isin([cut2[coin] - 1])  # held back into batch 3
        i = g.index.to_numpy()
        b1.append(g[(i < cut1[coin]) & ~late1])
        b2.append(g[((i >= cut1[coin]) & (i < cut2[coin]) & ~late2) | late1])
        b3.append(g[(i >= cut2[coin]) | late2])
    return [pd.concat(b, ignore_index=True) for b in (b1, b2, b3)]


def _lake(tmp_path: Path) -> LakehouseResource:
    return LakehouseResource(home=str(tmp_path / "var"))


def _check_minute_candles(conn, ticks: pd.DataFrame) -> None:
    got = conn.sql("SELECT *, epoch_us(minute) AS b FROM ohlcv_1m ORDER BY coin_id, minute").df()
    exp = ref_minute_indicators(ref_candles(ticks, 60 * US))
    assert list(got["coin_id"]) == list(exp["coin_id"]) and list(got["b"]) == list(exp["bucket"])
    keys = [f"{c}@min{(b - T0_US // (60 * US) * 60 * US) // (60 * US)}" for c, b in zip(exp["coin_id"], exp["bucket"], strict=True)]
    assert list(got["tick_count"]) == list(exp["tick_count"])
    assert list(got["symbol"]) == list(exp["symbol"])
    for col in ["open", "high", "low", "close", "volume", "bb_middle", "bb_upper", "bb_lower"]:
        assert_close(got[col], exp[col], f"ohlcv_1m.{col}", keys=keys)
    assert_close(got["return_pct"], exp["return_pct"], "ohlcv_1m.return_pct", abs_=1e-9, keys=keys)
    assert_close(got["rsi_14"], exp["rsi_14"], "ohlcv_1m.rsi_14", rel=0.0, abs_=1e-9, keys=keys)
    assert exp["bb_middle"].notna().sum() > 100 and exp["rsi_14"].notna().sum() > 100


def _check_hourly(conn, ticks: pd.DataFrame) -> None:
    exp = ref_candles(ticks, 3600 * US)
    h = conn.sql("SELECT *, epoch_us(hour) AS b FROM ohlcv_1h ORDER BY coin_id, hour").df()
    s = conn.sql("SELECT *, epoch_us(hour) AS b FROM hourly_stats ORDER BY coin_id, hour").df()
    for got in (h, s):
        assert list(got["coin_id"]) == list(exp["coin_id"]) and list(got["b"]) == list(exp["bucket"])
        assert list(got["tick_count"]) == list(exp["tick_count"])
    for col in ["open", "high", "low", "close", "volume"]:
        assert_close(h[col], exp[col], f"ohlcv_1h.{col}")
    for col, ecol in [("avg_price", "avg_price"), ("min_price", "low"), ("max_price", "high"),
                      ("avg_volume", "avg_volume")]:
        assert_close(s[col], exp[ecol], f"hourly_stats.{col}")
    assert_close(s["stddev_price"], exp["stddev_price"], "hourly_stats.stddev_price")


def _check_features_table(conn, ticks: pd.DataFrame) -> None:
    got = conn.sql("SELECT * FROM market_features ORDER BY coin_id, event_time").pl()
    check_features(got, ticks)


@pytest.fixture(scope="module")
def candle_ticks() -> pd.DataFrame:
    # ~5 h per coin (~300 minute candles); ethereum pauses 4 days and solana 2 hours right
    # before the first tick of the third batch (see _batches): the context searches that look
    # past the 1-day (features) and 3-day (candles) bounds, and empty hours.
    return make_ticks(seed=23, n=420, pauses={"ethereum": (259, 4 * 86400), "solana": (349, 7200)})


def test_candles_hourly_and_features_on_duckdb_one_batch(tmp_path, candle_ticks):
    """5 and 6: the real incremental functions over one clean_ticks batch."""
    with _lake(tmp_path).connect() as conn:
        _insert_clean(conn, candle_ticks, 1)
        _run_gold(conn)
        _check_minute_candles(conn, candle_ticks)
        _check_hourly(conn, candle_ticks)
        _check_features_table(conn, candle_ticks)


def test_candles_hourly_and_features_on_duckdb_incremental(tmp_path, candle_ticks):
    """Same tables built over three batches with late ticks: RSI state (seeding sums for
    bitcoin), Bollinger context and EMA state are carried through the warehouse."""
    with _lake(tmp_path).connect() as conn:
        for seq, batch in enumerate(_batches(candle_ticks), start=1):
            _insert_clean(conn, batch, seq)
            _run_gold(conn)
        _check_minute_candles(conn, candle_ticks)
        _check_hourly(conn, candle_ticks)
        _check_features_table(conn, candle_ticks)


def test_candles_extreme_magnitudes_on_duckdb(tmp_path):
    """7: Bollinger bands, RSI, hourly stats and features at 1e-8 and 1e6 prices, incrementally."""
    t = make_ticks(seed=29, n=420, coins={"bitcoin": ("tiny", 1e-8), "ethereum": ("huge", 1e6)})
    with _lake(tmp_path).connect() as conn:
        for seq, batch in enumerate(_batches(t), start=1):
            _insert_clean(conn, batch, seq)
            _run_gold(conn)
        _check_minute_candles(conn, t)
        _check_hourly(conn, t)
        _check_features_table(conn, t)


# ----------------------------------------------------------------------------- TA-Lib cross-check


def test_references_agree_with_talib():
    """The references above (and the package) against TA-Lib itself, when it is installed.
    (TA-Lib's EMA seeds with an SMA, not the first price, so EMA(20) is not compared.)"""
    talib = pytest.importorskip("talib")
    for name in RSI_SERIES:
        closes = np.ascontiguousarray(RSI_SERIES[name], dtype=float)
        ta = talib.RSI(closes, timeperiod=RSI_N)
        assert_close(ta, ref_rsi(closes), f"talib RSI vs reference [{name}]", rel=0.0, abs_=1e-9)
        assert_close(rsi_with_state(closes, None, 0, 0.0, 0.0)[0], ta, f"package RSI vs talib [{name}]",
                     rel=0.0, abs_=1e-9)
        up, mid, lo = talib.BBANDS(closes, timeperiod=BB_N, nbdevup=BB_K, nbdevdn=BB_K, matype=0)
        s = pd.Series(closes)
        sd = s.rolling(BB_N).std(ddof=0)
        assert_close(mid, s.rolling(BB_N).mean(), f"talib BB middle [{name}]")
        assert_close(up, s.rolling(BB_N).mean() + BB_K * sd, f"talib BB upper [{name}]")
        assert_close(lo, s.rolling(BB_N).mean() - BB_K * sd, f"talib BB lower [{name}]")
