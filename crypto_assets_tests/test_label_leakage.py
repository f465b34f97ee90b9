"""No feature sees the future, no label is in the features.

A simulated market goes through the real transforms (raw ticks -> market_features, ohlcv_1m;
exchange trades -> trade_bars_1m); then every input after a time T is perturbed (prices,
volumes, trade bars, every derived column; some rows dropped) and the training set rebuilt:
each feature (and each backward baseline) of every row at or before T must come out bit for
bit the same, while some label of a row before T must change (the control that the
perturbation reaches what a leak would carry). The same over raw ticks and trades through the
whole chain, and for the predictions' bounded feature query. Last: no single feature
determines the large-move label, a check that does flag the old circular label.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import polars as pl
import pytest

from crypto_assets.defs import training_data
from crypto_assets.ml.training_set import FEATURES, build_training_set, feature_rows
from crypto_assets.producers.simulator.config import SimulatorConfig
from crypto_assets.producers.simulator.messages import generate_ticks
from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.anomalies import ZSCORE_THRESHOLD
from crypto_assets.transforms.chain import run_incremental
from crypto_assets.transforms.trade_bars import trade_bars_increment
from crypto_assets_tests.silver_helpers import insert_raw_batch
from crypto_assets_tests.trade_bar_helpers import Trade, insert_batch, make_trades

COINS = ["bitcoin", "ethereum", "solana"]
START = datetime(2026, 10, 1, tzinfo=UTC)
HOURS = 12
T = START + timedelta(hours=8, seconds=30)  # the cut: a row at or before it must not see what follows
BACKWARD = [*FEATURES, "past_return_h", "past_large_move", "past_return_1h", "past_return_4h", "past_return_24h",
            "coin_id", "symbol", "event_time", "price_usd"]
LABELS = ["label_large_move", "label_up", "fwd_return_h", "fwd_return_1h", "fwd_return_4h"]


def _ticks(seed: int = 5) -> pl.DataFrame:
    ticks = generate_ticks(SimulatorConfig(coins=tuple(COINS), seed=seed), HOURS * 60, START, "60s")
    return pl.DataFrame(ticks, infer_schema_length=None).select(
        "coin_id", "symbol", pl.col("last_updated_at").str.to_datetime(time_zone="UTC"), "price_usd", "volume_24h_usd")


def _perturb_ticks(df: pl.DataFrame) -> pl.DataFrame:
    """After T: prices and volumes moved by up to +-10%, every 5th tick dropped."""
    rng = np.random.default_rng(9)
    after = df["last_updated_at"] > T
    f = pl.Series(np.exp(rng.normal(0, 0.05, df.height)))
    out = df.with_columns(
        price_usd=pl.when(after).then(pl.col("price_usd") * f).otherwise(pl.col("price_usd")),
        volume_24h_usd=pl.when(after).then(pl.col("volume_24h_usd") * f.reverse()).otherwise(pl.col("volume_24h_usd")))
    return out.filter(~after | (pl.int_range(pl.len()) % 5 != 0))


# exchange trades for bitcoin (two exchanges, summed per minute) and solana; ethereum has none
PRODUCTS = (("coinbase", "BTC-USD", "bitcoin", 60_000.0), ("binance", "BTCUSDT", "bitcoin", 60_000.0),
            ("binance", "SOLUSDT", "solana", 150.0))


def _trades() -> list[Trade]:
    return make_trades(HOURS * 900, seed=4, start=START, mean_gap_ms=4000, products=PRODUCTS)  # ~12 h each


def _perturb_trades(trades: list[Trade]) -> list[Trade]:
    """After T: prices up 3%, sizes doubled, sides flipped; every 4th trade dropped."""
    out = []
    for i, t in enumerate(trades):
        if t.trade_time <= T:
            out.append(t)
        elif i % 4:
            out.append(replace(t, price=(t.price * Decimal("1.03")).quantize(Decimal("0.01")), size=t.size * 2,
                               side="sell" if t.side == "buy" else "buy"))
    return out


def _warehouse(home, ticks: pl.DataFrame, trades: list[Trade]) -> LakehouseResource:
    lh = LakehouseResource(home=str(home), coins=COINS)
    with lh.connect() as conn:
        insert_raw_batch(conn, ticks)
        run_incremental(conn, COINS)
        insert_batch(conn, trades)
        trade_bars_increment(conn)
    return lh


def _training_rows(conn, out_dir) -> pl.DataFrame:
    return pl.read_parquet(build_training_set(conn, out_dir).path)


# numeric input columns of the gold tables the training set reads, and each table's time column
_GOLD = {"market_features": ("event_time", ["price_usd", "volume_24h_usd", "return_pct", "log_return", "sma_1m", "sma_5m",
                                            "sma_15m", "ema_20", "volatility_15m", "zscore_15m", "volume_change_pct"]),
         "ohlcv_1m": ("minute", ["open", "high", "low", "close", "volume", "return_pct", "rsi_14", "bb_middle",
                                 "bb_upper", "bb_lower"]),
         "trade_bars_1m": ("bar_start", ["open", "high", "low", "close", "base_volume", "quote_volume", "vwap",
                                         "buy_volume", "sell_volume", "quote_volume_exact", "rsi_14"])}


def _perturb_gold(conn) -> None:
    """Every numeric input column of every row that holds data after T, scaled by a factor that
    varies row to row, and every 7th such tick deleted: the future made different in every way."""
    t = f"TIMESTAMPTZ '{T.isoformat()}'"
    after = {"market_features": f"event_time > {t}",
             # a candle or bar holds data after T unless it ended by T
             "ohlcv_1m": f"minute + INTERVAL 1 MINUTE > {t}", "trade_bars_1m": f"bar_start + INTERVAL 1 MINUTE > {t}"}
    for table, (time_col, names) in _GOLD.items():
        sets = ", ".join(f"{c} = {c} * (1.03 + 0.05 * sin(epoch({time_col})))" for c in names)
        conn.execute(f"UPDATE {table} SET {sets} WHERE {after[table]}")
    conn.execute(f"UPDATE market_features SET ticks_15m = ticks_15m + 3 WHERE {after['market_features']}")
    conn.execute(f"UPDATE trade_bars_1m SET trade_count = 2 * trade_count + 1, buy_volume = sell_volume, "
                 f"sell_volume = buy_volume WHERE {after['trade_bars_1m']}")
    conn.execute(f"DELETE FROM trade_bars_1m WHERE {after['trade_bars_1m']} AND minute(bar_start) % 3 = 0")
    conn.execute(f"DELETE FROM market_features WHERE {after['market_features']} AND epoch(event_time)::BIGINT % 7 = 0")


def _copy(lh: LakehouseResource, home) -> LakehouseResource:
    """A second warehouse with the same tables (a file copy: the base stays as it was)."""
    with lh.connect() as conn:
        conn.execute("CHECKPOINT")  # everything in the file, nothing left in its WAL
    copy = LakehouseResource(home=str(home), coins=COINS)
    copy.duckdb_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(lh.duckdb_path, copy.duckdb_path)
    return copy


def _before_t(df: pl.DataFrame) -> pl.DataFrame:
    return df.filter(pl.col("event_time") <= T).sort("coin_id", "event_time")


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    """The base market's training rows, and the warehouse they came from."""
    home = tmp_path_factory.mktemp("leak")
    lh = _warehouse(home / "w", _ticks(), _trades())
    with lh.connect() as conn:
        base = _training_rows(conn, home / "base")
    return {"home": home, "lh": lh, "base": base}


def test_the_market_exercises_the_trade_bar_features(market):
    """Covered coins have trade features (both exchanges of bitcoin summed), ethereum none."""
    df = market["base"]
    has = dict(df.group_by("coin_id").agg(pl.col("has_trade_bars").mean()).iter_rows())
    assert has["ethereum"] == 0 and has["bitcoin"] > 0.9 and has["solana"] > 0.9
    eth = df.filter(pl.col("coin_id") == "ethereum")
    assert (eth.select("trade_imbalance", "r_vwap", "log_trade_count").to_numpy() == 0).all()
    btc = df.filter(pl.col("has_trade_bars") == 1)
    assert btc["trade_imbalance"].std() > 0 and btc["log_trade_count"].min() > 0 and btc["r_vwap"].std() > 0


def _assert_causal(base: pl.DataFrame, other: pl.DataFrame) -> None:
    a, b = _before_t(base), _before_t(other)
    assert a.height > 1000 and a.height == b.height
    for c in BACKWARD:
        assert a[c].equals(b[c], null_equal=True), f"{c} of a row at or before T changed with data after T"
    # the control: the perturbation reaches the rows whose label windows cross T
    changed = [c for c in LABELS if not a[c].equals(b[c], null_equal=True)]
    assert {"label_large_move", "fwd_return_h", "fwd_return_1h"} <= set(changed), changed


def test_features_of_rows_up_to_t_ignore_every_gold_input_after_t(market, tmp_path):
    lh: LakehouseResource = market["lh"]
    copy = _copy(lh, tmp_path / "copy")
    with copy.connect() as conn:
        _perturb_gold(conn)
        assert conn.sql(f"SELECT count(*) FROM market_features WHERE event_time > TIMESTAMPTZ '{T.isoformat()}'"
                        ).fetchall()[0][0] > 500
        other = _training_rows(conn, tmp_path / "t")
    _assert_causal(market["base"], other)


def test_features_of_rows_up_to_t_ignore_raw_ticks_after_t(market, tmp_path):
    """Through the whole chain: cleaning, candles, trade bars and features of the past do not move either."""
    lh = _warehouse(tmp_path / "w", _perturb_ticks(_ticks()), _perturb_trades(_trades()))
    with lh.connect() as conn:
        other = _training_rows(conn, tmp_path / "t")
    _assert_causal(market["base"], other)


def test_the_predictions_feature_query_is_causal_too(market, tmp_path):
    """feature_rows (bounded lookups, the live scoring path): the same features as the training
    set for the same rows, and unmoved by the future."""
    copy = _copy(market["lh"], tmp_path / "copy")
    got = {}
    for name, lh in (("base", market["lh"]), ("perturbed", copy)):
        with lh.connect() as conn:
            if name == "perturbed":
                _perturb_gold(conn)
            got[name] = _before_t(feature_rows(conn, 0, 10**12, HOURS + 1.0))
    a, b = got["base"], got["perturbed"]
    assert a.height > 1000 and a.height == b.height
    for c in BACKWARD:
        assert a[c].equals(b[c], null_equal=True), c
    train = _before_t(market["base"])
    for c in FEATURES:
        assert a[c].equals(train[c], null_equal=True), f"{c}: scoring and training compute it differently"


def _best_stump(x: np.ndarray, y: np.ndarray) -> float:
    """Best balanced accuracy of one threshold on x (either direction): 1.0 when y is a step
    function of x, ~0.5 when x says nothing about y."""
    order = np.argsort(x, kind="mergesort")
    xs, ys = x[order], y[order]
    pos, neg = ys.sum(), len(ys) - ys.sum()
    tp_left = np.cumsum(ys)  # positives at or below each cut
    cut = np.r_[np.flatnonzero(xs[1:] != xs[:-1]), len(xs) - 1]  # cut only between distinct values
    tpr = tp_left[cut] / pos  # predicting 1 at or below the cut
    tnr = 1 - (cut + 1 - tp_left[cut]) / neg
    below = (tpr + tnr) / 2
    return float(np.max(np.maximum(below, 1 - below)))


def test_no_single_feature_determines_the_label(market):
    """A forest that re-learns a threshold on one input scores ~1.0 here: the old label (the
    anomaly rule fired on this tick: |zscore_15m| > 3) does, and must; the large-move label,
    which is about the price after t, must not come close for any feature or baseline. (A real
    predictor may score well: momentum_60m reaches 0.82 on this market's ~20 positives, the
    simulator's momentum drift making a large move likelier after a strong hour, and the best
    of ~1400 thresholds is optimistic on 20 positives; determinism is 1.0.)"""
    df = market["base"].filter(pl.col("label_large_move").is_not_null())
    y = df["label_large_move"].to_numpy().astype(np.int64)
    assert 10 < y.sum() < len(y) - 10
    for c in [*FEATURES, "past_large_move", "past_return_h"]:
        x = df[c].fill_null(0.0).to_numpy().astype(np.float64)
        for v in (x, np.abs(x)):
            assert _best_stump(v, y) < 0.95, f"{c} separates label_large_move"
    # the control: the circular label of old is a threshold on one feature
    z = df["zscore_15m"].to_numpy().astype(np.float64)
    old = (np.abs(z) > ZSCORE_THRESHOLD).astype(np.int64)
    assert old.sum() > 0 and _best_stump(np.abs(z), old) == 1.0


def test_the_training_set_reads_no_output_of_the_anomaly_rule(market):
    assert not any("anomal" in d for d in training_data.TRAINING_INPUTS)
    deps = {k.to_user_string() for k in training_data.training_set.asset_deps[training_data.training_set.key]}
    assert "anomalies" not in deps and {"market_features", "ohlcv_1m"} <= deps
    cols = set(market["base"].columns)
    assert not cols & {"label_anomaly", "anomaly_id", "rule", "severity", "threshold", "value"}
    assert not [c for c in FEATURES if c.startswith(("label_", "fwd_"))]
