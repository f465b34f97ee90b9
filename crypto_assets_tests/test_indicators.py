"""Indicator definitions checked against independent, deliberately naive reference computations.

Every reference (indicator_references.py) is written from the textbook / TA-Lib definition with plain numpy, pandas
and Python loops (O(n^2) window scans, explicit recursions); none of it calls the package's
helpers. The package is exercised through its pure functions (`compute_features`,
`rsi_with_state`) and, for the SQL-built tables, through the real incremental functions on a
temporary DuckDB warehouse into which clean_ticks rows are inserted directly.

Data is deterministic (seeded), irregularly spaced (gaps of 1-90 whole seconds, so window
boundaries t - w are hit exactly and the (t - w, t] convention is exercised), has a flat price
stretch longer than 15 minutes (zero-std windows), zero and null volumes, and several coins.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import numpy as np
import pandas as pd
import polars as pl
import pytest

from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.candles import candles_1m_increment, hourly_increment, rsi_with_state
from crypto_assets.transforms.features import compute_features, features_increment
from crypto_assets.warehouse.watermarks import set_state
from crypto_assets_tests.indicator_references import (
    BB_K,
    BB_N,
    EXTREME,
    RSI_N,
    T0_US,
    US,
    W15_US,
    assert_close,
    check_features,
    make_ticks,
    ref_candles,
    ref_ema,
    ref_features,
    ref_minute_indicators,
    ref_rsi,
    to_polars,
)

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
    # compute_features takes a None state (features.py tests for it) but is annotated dict[str, float]
    got = compute_features(to_polars(ticks[ticks.coin_id == "solana"]), {"solana": None})  # pyright: ignore[reportArgumentType]
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
    for key, g in t.groupby("coin_id"):
        coin = cast(str, key)
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
