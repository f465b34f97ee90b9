"""The training set is built from the Parquet gold mirrors, never from warehouse.duckdb, and is
the same set the warehouse tables give."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from typing import cast

import dagster as dg
import duckdb
import polars as pl
import pyarrow.parquet as pq

from crypto_assets.defs import training_data
from crypto_assets.ml.training_set import build_training_set
from crypto_assets.producers.simulator.config import SimulatorConfig
from crypto_assets.producers.simulator.messages import generate_ticks
from crypto_assets.resources import LakehouseResource
from crypto_assets.resources.priority import ComputePriorityResource
from crypto_assets.transforms.chain import run_incremental
from crypto_assets.transforms.trade_bars import trade_bars_increment
from crypto_assets.warehouse.lake_views import lake_reader, lake_views
from crypto_assets_tests.silver_helpers import export_gold_mirrors, insert_raw_batch
from crypto_assets_tests.trade_bar_helpers import insert_batch, make_trades

COINS = ["bitcoin", "ethereum", "solana"]


def _warehouse(lh: LakehouseResource, days: float = 1.2, trade_hours: float = 6.0) -> None:
    """Ticks of `days`, and bitcoin's exchange trades over the last `trade_hours` of them (the
    training set's trade-bar features: a coin and a stretch with them, the rest without)."""
    start = datetime(2026, 10, 1, tzinfo=UTC)
    ticks = generate_ticks(SimulatorConfig(coins=tuple(COINS), seed=5), int(days * 1440), start, "60s")
    df = pl.DataFrame(ticks, infer_schema_length=None).select(
        "coin_id", "symbol", pl.col("last_updated_at").str.to_datetime(time_zone="UTC"), "price_usd", "volume_24h_usd")
    trades = make_trades(int(trade_hours * 360), seed=2, start=start + timedelta(days=days, hours=-trade_hours),
                         mean_gap_ms=10_000, products=(("coinbase", "BTC-USD", "bitcoin", 60_000.0),))
    with lh.connect() as conn:
        insert_raw_batch(conn, df)
        run_incremental(conn, COINS)
        insert_batch(conn, trades)
        trade_bars_increment(conn)
        export_gold_mirrors(conn, lh.lake_path)


def _columns(conn, table: str) -> list[tuple]:
    return [(r[0], r[1]) for r in conn.sql(f"DESCRIBE {table}").fetchall()]


def test_views_have_the_tables_columns_and_rows(tmp_path):
    lh = LakehouseResource(home=str(tmp_path / "w"), coins=COINS)
    _warehouse(lh, days=0.3)
    lake = lh.lake_path
    # a compacted day file and an hour file side by side (any *.parquet in the symbol directory)
    btc = next((lake / "gold" / "market_features").glob("date=*/symbol=btc"))
    hours = sorted(btc.glob("part-*.parquet"))
    day = pl.concat([pl.read_parquet(p) for p in hours])  # a compacted day: one file for all its hours
    day.write_parquet(btc / "day.parquet")
    for p in hours:
        p.unlink()
    # an older file without a column added since: the column reads as NULL (ohlcv_1m is
    # partitioned by date only: its files hold every coin, with `symbol` a column)
    assert not list((lake / "gold" / "ohlcv_1m").glob("date=*/symbol=*"))
    old = sorted((lake / "gold" / "ohlcv_1m").glob("date=*/*.parquet"))[0]
    pl.read_parquet(old).drop("bb_lower").write_parquet(old)
    with lh.connect() as wh:
        want = {t: _columns(wh, t) for t in (d.rsplit("/", 1)[-1] for d in training_data.TRAINING_INPUTS)}
        wh_rows = {t: wh.sql(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in ("market_features",)}
        wh_candles = wh.sql("SELECT coin_id, minute, close FROM ohlcv_1m ORDER BY ALL").fetchall()
        old_minutes = wh.sql(f"SELECT coin_id, minute FROM read_parquet('{old}')").fetchall()
    with lake_reader(lake, training_data.TRAINING_INPUTS) as (conn, files):
        for t in want:
            assert [c[0] for c in _columns(conn, t)] == [c[0] for c in want[t]], t
            assert [c[1] for c in _columns(conn, t)] == [c[1] for c in want[t]], t
        assert files["market_features"] == sum(1 for _ in (lake / "gold" / "market_features").rglob("*.parquet"))
        for t, rows in wh_rows.items():
            assert conn.sql(f"SELECT * FROM {t} ORDER BY ALL").fetchall() == rows, t
        assert conn.sql("SELECT coin_id, minute, close FROM ohlcv_1m ORDER BY ALL").fetchall() == wh_candles
        nulls = conn.sql("SELECT coin_id, minute FROM ohlcv_1m WHERE bb_lower IS NULL").fetchall()
        assert len({c for c, _ in old_minutes}) == len(COINS) and set(old_minutes) <= set(nulls)


def test_a_dataset_without_files_is_an_empty_view_of_its_table(tmp_path):
    conn = duckdb.connect()
    assert lake_views(conn, tmp_path / "lake", ["gold/anomalies"]) == {"anomalies": 0}
    assert conn.sql("SELECT count(*) FROM anomalies").fetchall() == [(0,)]
    assert [c[0] for c in _columns(conn, "anomalies")][:4] == ["anomaly_id", "coin_id", "symbol", "event_time"]


def test_training_set_from_the_lake_equals_the_warehouse_one(tmp_path):
    lh = LakehouseResource(home=str(tmp_path / "w"), coins=COINS)
    _warehouse(lh)
    with lh.connect() as conn:
        ref = build_training_set(conn, tmp_path / "ref")
    # a home with the lake only: the asset must not need (nor create) warehouse.duckdb
    lake_only = LakehouseResource(home=str(tmp_path / "l"), coins=COINS)
    shutil.copytree(lh.lake_path, lake_only.lake_path)
    res = dg.materialize([training_data.training_set],
                         resources={"lakehouse": lake_only, "compute_priority": ComputePriorityResource(nice=0)})
    assert res.success
    assert not lake_only.duckdb_path.exists()
    md = res.asset_materializations_for_node("training_set")[0].metadata
    assert md["dagster/row_count"].value == ref.rows
    assert cast(dict, md["lake_files_read"].value)["ohlcv_1m"] > 0
    assert cast(dict, md["lake_files_read"].value)["trade_bars_1m"] > 0
    got = pq.read_table(lake_only.lake_path / "training" / "training_set.parquet")
    want = pq.read_table(ref.path)
    assert got.schema == want.schema
    assert got.equals(want)  # the same rows in the same order, value for value
    assert ref.labelled["24h"] > 0
    assert 0 < (ref.large_move_rate or 0) < 1  # the large-move labels are exercised: both classes
    has = got.column("has_trade_bars").to_pylist()
    assert 0 < sum(has) < len(has)  # the trade-bar features too: with bars and without


def test_a_long_read_does_not_hold_the_export(tmp_path):
    """The reader links a snapshot under the shared lock and reads it without the lock: the
    export (exclusive lock) and the compaction proceed meanwhile, and the reader's rows stay those
    of its snapshot even when the files it read are replaced or deleted under their names."""
    from crypto_assets.warehouse.lake_layout import dataset_lock, list_dataset_files

    lh = LakehouseResource(home=str(tmp_path / "w"), coins=["bitcoin", "ethereum"])
    _warehouse(lh)
    lake = lh.lake_path
    with lake_reader(lake, ["gold/market_features"]) as (conn, files):
        q = "SELECT coin_id, event_time, price_usd FROM market_features ORDER BY ALL"
        before = conn.sql(q).fetchall()
        with dataset_lock(lake, "gold/market_features", exclusive=True, timeout_s=2):  # no wait for the reader
            for p in list_dataset_files(lake, "gold/market_features"):
                p.unlink()  # as an export replacing every file would
        assert conn.sql(q).fetchall() == before
        assert len(before) > 0 and files["market_features"] > 0
    assert not any((lake / ".snapshots").iterdir())  # the reader removed its snapshot


def test_a_training_window_reads_its_days_and_equals_the_whole_set_cut_to_it(tmp_path):
    """window_days bounds the files read (the window plus the days its lookbacks reach) and the
    rows built, and each row is the same as in the training set over the whole history: its
    lookbacks (24 h of past returns) reach before the window, its labels past it."""
    lh = LakehouseResource(home=str(tmp_path / "w"), coins=COINS)
    _warehouse(lh, days=5.5)  # 2026-10-01 .. 10-06 12:00
    with lh.connect() as conn:
        full = build_training_set(conn, tmp_path / "full")
        cut = build_training_set(conn, tmp_path / "cut", window_days=1.0)
        newest = conn.sql("SELECT max(event_time) FROM market_features").fetchall()[0][0]
    want = pl.read_parquet(full.path).filter(pl.col("event_time") >= newest - timedelta(days=1))
    got = pl.read_parquet(cut.path)
    assert 0 < got.height < pl.read_parquet(full.path).height
    assert got.equals(want)
    assert got["past_return_24h"].is_not_null().all()  # lookbacks reached the day before the window

    res = dg.materialize([training_data.training_set], run_config={"ops": {"training_set": {"config": {"window_days": 1.0}}}},
                         resources={"lakehouse": lh, "compute_priority": ComputePriorityResource(nice=0)})
    md = res.asset_materializations_for_node("training_set")[0].metadata
    assert md["lake_files_since"].value == "2026-10-03"  # newest day 10-06, minus 1 + 2 lookback days
    assert md["dagster/row_count"].value == got.height
    every_day = sum(1 for _ in (lh.lake_path / "gold" / "market_features").rglob("*.parquet"))
    assert cast(dict, md["lake_files_read"].value)["market_features"] < every_day
    assert pl.read_parquet(lh.lake_path / "training" / "training_set.parquet").equals(got)
