"""RSI(14) and Bollinger(20, 2) on 1-minute trade bars: TA-Lib's values, the naive references of
indicator_references.py, and bit-identical results whether a series is computed whole or as a
tail continued from its context (what an increment does)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import polars as pl
import pytest

from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.bar_indicators import bollinger, product_indicators
from crypto_assets.transforms.trade_bars import trade_bars_increment
from crypto_assets_tests.indicator_references import BB_K, BB_N, assert_close, ref_rsi
from crypto_assets_tests.trade_bar_helpers import insert_batch, make_trades

talib = pytest.importorskip("talib")


def _closes(seed: int, n: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    c = 100 * np.exp(np.cumsum(rng.normal(0, 2e-3, n)))
    c[30:60] = c[30]  # a flat stretch: zero gains and losses, zero std
    return np.round(c, 4)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_indicators_match_talib(seed):
    closes = _closes(seed, 300)
    ind = product_indicators(closes, pl.DataFrame())
    assert_close(ind["rsi_14"], talib.RSI(closes, timeperiod=14), "RSI vs TA-Lib", rel=0.0, abs_=1e-9)
    assert_close(ind["rsi_14"], ref_rsi(closes), "RSI vs reference", rel=0.0, abs_=1e-9)
    up, mid, lo = talib.BBANDS(closes, timeperiod=BB_N, nbdevup=BB_K, nbdevdn=BB_K, matype=0)
    # TA-Lib's running sums leave ~1e-13 relative noise, and its std of a flat window is ~1e-6, not 0
    assert_close(ind["bb_middle"], mid, "BB middle vs TA-Lib", rel=1e-9)
    assert_close(ind["bb_upper"], up, "BB upper vs TA-Lib", rel=1e-9)
    assert_close(ind["bb_lower"], lo, "BB lower vs TA-Lib", rel=1e-9)
    s = pd.Series(closes)
    assert_close(ind["bb_upper"], s.rolling(BB_N).mean() + BB_K * s.rolling(BB_N).std(ddof=0), "BB upper vs pandas")
    ret = (closes[1:] / closes[:-1] - 1) * 100
    assert_close(ind["return_pct"][1:], ret, "return vs numpy", rel=1e-12)
    assert np.isnan(ind["return_pct"][0]) and np.isnan(ind["log_return"][0])


@pytest.mark.parametrize("split", [1, 5, 13, 14, 15, 19, 20, 21, 100, 299])
def test_a_tail_continued_from_its_context_is_bit_identical(split):
    closes = _closes(7, 300)
    whole = product_indicators(closes, pl.DataFrame())
    ctx = pl.DataFrame({"close": closes[:split], "rsi_n": whole["rsi_n"][:split],
                        "rsi_gain": whole["rsi_gain"][:split], "rsi_loss": whole["rsi_loss"][:split]})
    ctx = ctx.with_columns(pl.col("rsi_gain", "rsi_loss").fill_nan(None)).tail(BB_N - 1)
    tail = product_indicators(closes[split:], ctx)
    for k, v in tail.items():
        np.testing.assert_array_equal(v, whole[k][split:], err_msg=k)


def test_bollinger_needs_a_full_window():
    mid, up, lo = bollinger(np.arange(1.0, 20.0), np.empty(0))
    assert np.isnan(mid).all()
    mid, up, lo = bollinger(np.array([20.0]), np.arange(1.0, 20.0))
    assert mid[0] == 10.5 and up[0] - mid[0] == pytest.approx(2 * np.std(np.arange(1.0, 21.0)))


def test_minute_bars_in_duckdb_carry_talib_indicators(tmp_path):
    trades = make_trades(2500, seed=11, mean_gap_ms=2000)  # ~83 minutes per product
    with LakehouseResource(home=str(tmp_path / "w")).connect() as conn:
        half = len(trades) // 2
        insert_batch(conn, trades[:half])
        trade_bars_increment(conn)
        insert_batch(conn, trades[half:])
        trade_bars_increment(conn)
        for (product,) in conn.sql("SELECT DISTINCT product FROM trade_bars_1m").fetchall():
            df = conn.sql("SELECT close::DOUBLE AS close, rsi_14, bb_middle, bb_upper, bb_lower FROM trade_bars_1m "
                          "WHERE product = $p ORDER BY bar_start", params={"p": product}).pl()
            closes = df["close"].to_numpy()
            assert len(closes) > 60
            assert_close(df["rsi_14"], talib.RSI(closes, timeperiod=14), f"{product} RSI", rel=0.0, abs_=1e-9)
            up, mid, lo = talib.BBANDS(closes, timeperiod=BB_N, nbdevup=BB_K, nbdevdn=BB_K, matype=0)
            assert_close(df["bb_middle"], mid, f"{product} BB middle", rel=1e-9)
            assert_close(df["bb_upper"], up, f"{product} BB upper", rel=1e-9)
            assert_close(df["bb_lower"], lo, f"{product} BB lower", rel=1e-9)
