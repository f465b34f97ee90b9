"""`correlations` (README: Pearson correlation of 1-minute returns for every coin pair over the
last 24 h and 7 d) against numpy's corrcoef over the same returns, computed here from the ticks.

7.5 days of one tick a minute for three coins: ethereum's price is a constant multiple of
bitcoin's (identical returns: correlation 1), solana's returns are 0.6 x bitcoin's plus noise
and it skips some minutes (its return then spans the gap, and only minutes where both coins
have a candle pair up). History arrives in three batches, so the hourly buckets are built once
and then updated."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import cast

import numpy as np
import polars as pl
import pytest

from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.chain import run_incremental
from crypto_assets_tests.silver_helpers import insert_raw_batch

COINS = ["bitcoin", "ethereum", "solana"]
MINUTES = int(7.5 * 1440) + 37  # the newest candle is not on an hour: each window has a partial hour
ETH_PER_BTC = 0.0345


def _ticks() -> pl.DataFrame:
    rng = np.random.default_rng(42)
    # the first minute of the history, whole minutes before now (the data is anchored on itself)
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=MINUTES + 60)
    times = [start + timedelta(minutes=i, seconds=30) for i in range(MINUTES)]
    r_btc = rng.normal(0, 0.001, MINUTES)
    btc = 90_000.0 * np.cumprod(1 + r_btc)
    sol = 140.0 * np.cumprod(1 + 0.6 * r_btc + 0.8 * rng.normal(0, 0.001, MINUTES))
    sol_keep = np.arange(MINUTES) % 23 != 5
    frames = [
        ("bitcoin", "btc", btc, np.ones(MINUTES, bool)),
        ("ethereum", "eth", btc * ETH_PER_BTC, np.ones(MINUTES, bool)),
        ("solana", "sol", sol, sol_keep),
    ]
    out = []
    for coin, sym, prices, keep in frames:
        n = int(keep.sum())
        out.append(pl.DataFrame({
            "coin_id": [coin] * n, "symbol": [sym] * n,
            "last_updated_at": [t for t, k in zip(times, keep, strict=True) if k],
            "price_usd": prices[keep], "volume_24h_usd": [1e8] * n,
        }))
    return pl.concat(out).sort("last_updated_at")


def _expected(ticks: pl.DataFrame) -> dict[tuple[str, str, str], tuple[float, int, datetime]]:
    """Independently of the pipeline: each coin's 1-minute close (its last tick in the minute),
    the return against its previous candle, the minutes both coins of a pair have a return, in
    the window (end - span, end] before the newest candle; then numpy's Pearson coefficient."""
    closes = (ticks.with_columns(minute=pl.col("last_updated_at").dt.truncate("1m"))
              .sort("last_updated_at").group_by("coin_id", "minute", maintain_order=True).last()
              .sort("coin_id", "minute"))
    returns = closes.with_columns(
        ret=(pl.col("price_usd") / pl.col("price_usd").shift(1).over("coin_id") - 1.0) * 100.0
    ).drop_nulls("ret")
    end = cast(datetime, closes["minute"].max())
    out = {}
    for w, span in (("24h", timedelta(hours=24)), ("7d", timedelta(days=7))):
        inside = returns.filter(pl.col("minute") > end - span)
        for i, a in enumerate(COINS):
            for b in COINS[i + 1:]:
                pair = (inside.filter(pl.col("coin_id") == a).select("minute", x="ret")
                        .join(inside.filter(pl.col("coin_id") == b).select("minute", y="ret"), on="minute"))
                corr = float(np.corrcoef(pair["x"].to_numpy(), pair["y"].to_numpy())[0, 1])
                out[(a, b, w)] = (corr, pair.height, end)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    ticks = _ticks()
    t0 = cast(datetime, ticks["last_updated_at"].min())
    cuts = [t0 + timedelta(days=5), t0 + timedelta(days=7, hours=3),
            cast(datetime, ticks["last_updated_at"].max()) + timedelta(seconds=1)]
    lh = LakehouseResource(home=str(tmp_path_factory.mktemp("corr") / "var"), coins=COINS)
    out = []
    lo = t0
    with lh.connect() as conn:
        for hi in cuts:
            batch = ticks.filter((pl.col("last_updated_at") >= lo) & (pl.col("last_updated_at") < hi))
            insert_raw_batch(conn, batch)
            assert run_incremental(conn, COINS)["clean_ticks"].quarantined == 0
            got = {(a, b, w): (c, n, e) for a, b, w, e, c, n in
                   conn.sql("SELECT coin_a, coin_b, window_name, window_end, corr, n FROM correlations").fetchall()}
            out.append((got, _expected(ticks.filter(pl.col("last_updated_at") < hi))))
            lo = hi
    return out


def _compare(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for key, (corr, n, end) in want.items():
        g_corr, g_n, g_end = got[key]
        assert (g_n, g_end) == (n, end), key
        assert math.isclose(g_corr, corr, rel_tol=1e-9), (key, g_corr, corr)


def test_correlations_equal_numpy_after_every_batch(runs):
    for got, want in runs:
        _compare(got, want)


def test_known_correlations(runs):
    got, want = runs[-1]
    for w in ("24h", "7d"):
        # proportional prices: the same returns, correlation 1
        assert math.isclose(got[("bitcoin", "ethereum", w)][0], 1.0, rel_tol=1e-9)
        # 0.6 x bitcoin's returns + 0.8 x independent noise of the same size: about 0.6
        assert 0.5 < got[("bitcoin", "solana", w)][0] < 0.7
    # the windows really differ: one day of minutes and seven days of minutes
    assert got[("bitcoin", "ethereum", "24h")][1] == 1440
    assert got[("bitcoin", "ethereum", "7d")][1] == 7 * 1440
    n_sol_7d = got[("bitcoin", "solana", "7d")][1]
    assert n_sol_7d < 7 * 1440  # solana's skipped minutes do not pair
    assert got[("bitcoin", "solana", "7d")][0] != got[("bitcoin", "solana", "24h")][0]


def test_the_correlations_mirror_is_published_whole(tmp_path):
    """The one-file mirror (lake/gold/correlations/correlations.parquet) holds exactly the table's
    rows after each refresh, is replaced by renaming a complete file over it (no temporary file
    left beside it), and a write that fails leaves the previous file as it was."""
    import duckdb

    from crypto_assets.defs.incremental import _write_single_file
    from crypto_assets.warehouse.tables import TABLES

    lh = LakehouseResource(home=str(tmp_path / "var"), coins=COINS)
    table = TABLES["correlations"]
    final = lh.lake_path / "gold" / "correlations" / "correlations.parquet"
    rows = [("bitcoin", "ethereum", "24h", datetime(2025, 1, 2, tzinfo=UTC), 0.9, 1440),
            ("bitcoin", "solana", "7d", datetime(2025, 1, 2, tzinfo=UTC), None, 10)]
    with lh.connect() as conn:
        for i, row in enumerate(rows):
            conn.execute("INSERT INTO correlations VALUES (?, ?, ?, ?, ?, ?)", list(row))
            _write_single_file(conn, lh.lake_path, table)
            got = conn.execute(f"SELECT coin_a, coin_b, window_name, corr, n FROM '{final}' ORDER BY ALL").fetchall()
            assert got == sorted((a, b, w, c, n) for a, b, w, _, c, n in rows[:i + 1])
            assert sorted(p.name for p in final.parent.iterdir()) == ["correlations.parquet"]
        before = final.read_bytes()
        conn.execute("ALTER TABLE correlations RENAME TO correlations_gone")
        with pytest.raises(duckdb.CatalogException):
            _write_single_file(conn, lh.lake_path, table)
        conn.execute("ALTER TABLE correlations_gone RENAME TO correlations")
    assert final.read_bytes() == before
    assert sorted(p.name for p in final.parent.iterdir()) == ["correlations.parquet"]
