"""Incremental = full: many small runs produce exactly the tables one big run produces."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import cast

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.chain import run_incremental
from crypto_assets.transforms.clean import CleanConfig
from crypto_assets_tests.silver_helpers import TABLE_KEYS, insert_raw_batch, make_ticks, table

COINS = ["bitcoin", "ethereum", "solana", "cardano"]
TABLES = list(TABLE_KEYS)


def _run(tmp_path, name, batches, coins=COINS, cfg=None):
    lh = LakehouseResource(home=str(tmp_path / name), coins=coins)
    results = []
    with lh.connect() as conn:
        for b in batches:
            if b is not None:
                insert_raw_batch(conn, b)
            results.append(run_incremental(conn, coins, cfg))
        tables = {t: table(conn, t) for t in TABLES}
    return tables, results


REL_TOL = 1e-9
# Values that are truly ~0 (a return, a z-score or a correlation near 0) get an absolute floor,
# itself relative: 1e-12 of the largest magnitude of the column for that coin. A coin priced at
# 1e-8 USD has a price floor of ~1e-20, so a 10 % error in its prices or averages fails.
FLOOR = 1e-12


def _group_column(df: pl.DataFrame) -> str | None:
    return next((c for c in ("coin_id", "coin_a") if c in df.columns), None)


def _assert_close(name: str, got: pl.Series, want: pl.Series, groups: np.ndarray | None,
                  scale: float = 1.0) -> None:
    """got ~= scale * want, element by element, relative to the magnitude (see FLOOR)."""
    x, y = got.to_numpy().astype(float), want.to_numpy().astype(float) * scale
    assert np.array_equal(np.isnan(x), np.isnan(y)), f"{name}: nulls differ"
    assert np.array_equal(np.isinf(x), np.isinf(y)) and np.array_equal(x[np.isinf(x)], y[np.isinf(y)]), name
    groups = np.zeros(len(y)) if groups is None else groups
    for g in np.unique(groups):
        m = (groups == g) & np.isfinite(y)
        if not m.any():
            continue
        tol = REL_TOL * np.abs(y[m]) + FLOOR * np.abs(y[m]).max()
        err = np.abs(x[m] - y[m])
        worst = int(np.argmax(err - tol))
        assert (err <= tol).all(), f"{name} [{g}]: {x[m][worst]!r} vs {y[m][worst]!r} (tolerance {tol[worst]:g})"


def _assert_same(a: dict, b: dict):
    for t in TABLES:
        x, y = a[t], b[t]
        assert x.columns == y.columns and x.height == y.height, t
        floats = [c for c, d in x.schema.items() if d.is_float()]
        assert_frame_equal(x.drop(floats), y.drop(floats), check_exact=True)
        group = _group_column(x)
        groups = None if group is None else y[group].to_numpy()
        for c in floats:
            _assert_close(f"{t}.{c}", x[c], y[c], groups)


def _split(df: pl.DataFrame, sizes: list[int]) -> list[pl.DataFrame]:
    out, i = [], 0
    for s in sizes:
        out.append(df.slice(i, s))
        i += s
    out.append(df.slice(i))
    return out


def test_many_small_batches_equal_one_batch(tmp_path):
    ticks = make_ticks(900, COINS, seed=3)
    full, _ = _run(tmp_path, "full", [ticks])
    sizes = [1, 2, 7, 50, 133, 400, 3, 999, 1]
    inc, _ = _run(tmp_path, "inc", _split(ticks, sizes))
    _assert_same(full, inc)
    assert full["market_features"].height == ticks.height
    assert full["ohlcv_1m"]["rsi_14"].drop_nulls().len() > 100


def test_out_of_order_within_lateness_recomputes_windows(tmp_path):
    ticks = make_ticks(600, COINS, seed=5)
    # deliver each batch with some ticks held back and sent in the next batch (a few minutes late)
    batches = []
    rest = ticks
    held = ticks.head(0)
    while rest.height:
        chunk, rest = rest.head(150), rest.slice(150)
        late = chunk.filter(pl.int_range(pl.len()) % 13 == 5)
        on_time = chunk.filter(pl.int_range(pl.len()) % 13 != 5)
        batches.append(pl.concat([on_time, held]))
        held = late
    batches.append(held)
    # keep lateness generous enough for the held-back ticks
    cfg = CleanConfig(lateness=timedelta(hours=2))
    inc, results = _run(tmp_path, "inc", batches, cfg=cfg)
    full, _ = _run(tmp_path, "full", [ticks], cfg=cfg)
    assert sum(r["clean_ticks"].quarantined for r in results) == 0
    _assert_same(full, inc)


def test_rerun_with_no_new_input_changes_nothing(tmp_path):
    ticks = make_ticks(200, COINS, seed=9)
    lh = LakehouseResource(home=str(tmp_path / "x"), coins=COINS)
    with lh.connect() as conn:
        insert_raw_batch(conn, ticks)
        run_incremental(conn, COINS)
        before = {t: conn.sql(f"SELECT * FROM {t}").pl() for t in TABLES}
        state_before = conn.sql("SELECT asset, hwm, seq FROM asset_state ORDER BY 1").fetchall()
        again = run_incremental(conn, COINS)
        after = {t: conn.sql(f"SELECT * FROM {t}").pl() for t in TABLES}
        assert conn.sql("SELECT asset, hwm, seq FROM asset_state ORDER BY 1").fetchall() == state_before
    assert again["clean_ticks"].raw_batches is None
    for t in TABLES:
        assert before[t].equals(after[t]), t


def test_empty_batches_single_tick_and_one_coin(tmp_path):
    one = make_ticks(1, ["bitcoin"], seed=1)
    tables, results = _run(tmp_path, "one", [one.head(0), one, one.head(0)], coins=["bitcoin"])
    assert tables["clean_ticks"].height == 1
    f = tables["market_features"].row(0, named=True)
    assert f["sma_1m"] == f["price_usd"] and f["return_pct"] is None and f["zscore_15m"] is None
    assert tables["ohlcv_1m"].height == 1 and tables["ohlcv_1m"]["rsi_14"][0] is None
    assert tables["correlations"].height == 0


def test_coin_that_stops_and_restarts(tmp_path):
    a = make_ticks(300, ["bitcoin", "ethereum"], seed=2)
    gap_start = cast(datetime, a["last_updated_at"].max())
    b = make_ticks(300, ["bitcoin"], start=gap_start + timedelta(days=4), seed=4)  # bitcoin pauses 4 days
    c = make_ticks(200, ["bitcoin", "ethereum"], start=gap_start + timedelta(days=5), seed=6)
    ticks = pl.concat([a, b, c]).sort("last_updated_at")
    full, _ = _run(tmp_path, "full", [ticks], coins=["bitcoin", "ethereum"])
    inc, _ = _run(tmp_path, "inc", [a, b, c], coins=["bitcoin", "ethereum"])
    _assert_same(full, inc)
    # after the pause, only a few candles arrive before the next batch: the indicator context
    # must still reach back across the pause (Bollinger needs 19 earlier candles)
    inc2, _ = _run(tmp_path, "inc2", [a, b.head(6), b.slice(6), c], coins=["bitcoin", "ethereum"])
    _assert_same(full, inc2)


# Columns in USD per coin unit: they scale with the price; every other float column is scale-free
# (returns, log returns, volatility of log returns, z-scores, RSI, volume and volume changes).
PRICE_COLUMNS = {
    "market_features": ["price_usd", "sma_1m", "sma_5m", "sma_15m", "ema_20"],
    "ohlcv_1m": ["open", "high", "low", "close", "bb_middle", "bb_upper", "bb_lower", "rsi_gain", "rsi_loss"],
    "ohlcv_1h": ["open", "high", "low", "close"],
    "hourly_stats": ["avg_price", "min_price", "max_price", "stddev_price"],
    "anomalies": ["price_usd"],
}


def test_extreme_magnitudes(tmp_path):
    coins = ["bitcoin", "ethereum"]
    ticks = make_ticks(400, coins, seed=8, price_scale={"bitcoin": 1e6, "ethereum": 1e-8})
    full, _ = _run(tmp_path, "full", [ticks], coins=coins)
    inc, _ = _run(tmp_path, "inc", _split(ticks, [100, 100, 100]), coins=coins)
    _assert_same(full, inc)
    eth = full["market_features"].filter(pl.col("coin_id") == "ethereum")
    assert eth.height == 400
    assert eth["price_usd"].to_list() == ticks.filter(pl.col("coin_id") == "ethereum")["price_usd"].to_list()
    # Scale invariance: the same random walk priced at 1 USD (same seed, same draws) gives the
    # same scale-free values and the USD values times 1e-8, to REL_TOL.
    unit_ticks = make_ticks(400, coins, seed=8, price_scale={"bitcoin": 1e6, "ethereum": 1.0})
    unit, _ = _run(tmp_path, "unit", [unit_ticks], coins=coins)
    for t in PRICE_COLUMNS:
        small = full[t].filter(pl.col("coin_id") == "ethereum")
        one = unit[t].filter(pl.col("coin_id") == "ethereum")
        assert small.height == one.height and (small.height > 0 or t == "anomalies"), t
        floats = [c for c, d in small.schema.items() if d.is_float()]
        assert_frame_equal(small.drop(floats), one.drop(floats), check_exact=True)  # same ids, times, counts
        for c in floats:
            _assert_close(f"{t}.{c}", small[c], one[c], None, 1e-8 if c in PRICE_COLUMNS[t] else 1.0)


def test_duplicates_late_and_invalid_rows_are_quarantined(tmp_path):
    ticks = make_ticks(100, ["bitcoin"], seed=11)
    lh = LakehouseResource(home=str(tmp_path / "q"), coins=["bitcoin"])
    with lh.connect() as conn:
        insert_raw_batch(conn, ticks)
        run_incremental(conn, ["bitcoin"])
        last = cast(datetime, ticks["last_updated_at"].max())
        batch2 = pl.concat(
            [
                ticks.head(3),  # duplicates of cleaned rows
                ticks.head(1).with_columns(pl.lit(last - timedelta(hours=1)).alias("last_updated_at")),  # very late
                ticks.head(1).with_columns(pl.lit(last + timedelta(seconds=30)).alias("last_updated_at"),
                                           pl.lit("dogecoin").alias("coin_id")),  # unknown coin
                ticks.head(1).with_columns(pl.lit(last + timedelta(minutes=2)).alias("last_updated_at"),
                                           pl.lit(-1.0).alias("price_usd")),  # invalid price
                ticks.head(1).with_columns(pl.lit(last + timedelta(minutes=3)).alias("last_updated_at")),  # valid
            ]
        )
        insert_raw_batch(conn, batch2)
        r = run_incremental(conn, ["bitcoin"])["clean_ticks"]
        assert r.rows_out == 1
        assert r.reasons == {"duplicate": 3, "late": 1, "unknown_coin": 1, "invalid_price": 1}
        q = conn.sql("SELECT reason, detail FROM quarantine WHERE stage = 'clean_ticks'").fetchall()
        assert len(q) == 6 and all(d for _, d in q)
