"""bench/engines.py at a small size: the project's trade bars, PySpark and pandas give equal
bars and features on the same ~20k generated trades, the comparison catches a one-unit
difference, the exact-decimal helpers round-trip, and the bench's arguments parse."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import _engines_compare as compare
from bench import _engines_data as data
from bench import _engines_ours as ours
from bench import _engines_pandas as pandas_engine
from bench import _engines_spark as spark_engine
from bench import engines
from bench._engines_features import WIDTHS, wilder_rsi

N = 20_000
DAYS = 0.25  # 6 hours: every product has a bar in most minutes, so the rolling windows fill


@pytest.fixture(scope="module")
def tape(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("engines") / "trades.parquet"
    pq.write_table(data.generate(N, DAYS, seed=5), path)
    return path


@pytest.fixture(scope="module")
def outputs(tape: Path, spark) -> dict[str, Path]:
    root = tape.parent
    out = {e: root / e for e in engines.ENGINES}
    ours.run(root / "warehouse.duckdb", tape, out["ours"])
    spark_engine.run(spark, tape, out["spark"])
    for width, table in pandas_engine.run(tape).items():
        (out["pandas"] / f"bars_{width}").mkdir(parents=True)
        pq.write_table(table, out["pandas"] / f"bars_{width}" / "part-0.parquet")
    return out


def test_the_tape_is_deterministic_and_exact():
    a, b = data.generate(3000, 0.1, seed=9), data.generate(3000, 0.1, seed=9)
    assert a.equals(b)
    assert a.num_rows == 3000 and a.schema.field("price").type == pa.decimal128(18, 8)
    assert not a.equals(data.generate(3000, 0.1, seed=10))
    ids = a.select(["product", "trade_id"]).to_pandas().groupby("product")["trade_id"]
    assert (ids.diff().dropna() == 1).all()  # +1 per product: no gap
    assert (a["side"].to_pandas().isin(["buy", "sell"])).all()
    scaled = data.scaled_int64(a["price"])
    assert scaled.dtype == np.int64 and data.decimal_array(scaled, 18).equals(a["price"].combine_chunks())


def test_decimal_round_trip_keeps_negative_and_large_values():
    v = np.array([0, 1, -1, 123_456_789_012_345_678, -(10**17)], dtype=np.int64)
    arr = data.decimal_array(v, 38)
    assert [str(x) for x in arr.to_pylist()] == ["0E-8", "1E-8", "-1E-8", "1234567890.12345678", "-1000000000.00000000"]
    assert np.array_equal(data.scaled_int64(arr), v)


def test_all_three_engines_give_equal_bars_and_features(outputs: dict[str, Path]):
    for width in WIDTHS:
        assert compare.rows(outputs["ours"], width) > 0
    assert compare.rows(outputs["ours"], "1h") == 6 * len(data.PRODUCTS)
    assert compare.compare_all(outputs["ours"], {"spark": outputs["spark"], "pandas": outputs["pandas"]}) == []
    m = pq.read_table(next((outputs["spark"] / "bars_1m").glob("*.parquet"))).to_pandas()
    assert m["rsi_14"].notna().sum() > 1000 and m["bb_upper"].notna().sum() > 1000  # the features were compared


def test_the_comparison_sees_a_single_unit_and_a_missing_bar(outputs: dict[str, Path], tmp_path: Path):
    t = pq.read_table(outputs["pandas"] / "bars_1m" / "part-0.parquet")
    vol = data.scaled_int64(t["quote_volume"]).copy()
    vol[7] += 1  # 0.00000001 more quote volume in one bar
    rsi = t["rsi_14"].to_numpy(zero_copy_only=False).copy()
    rsi[500] *= 1 + 1e-7
    changed = t.set_column(t.schema.get_field_index("quote_volume"), "quote_volume", data.decimal_array(vol, 38))
    changed = changed.set_column(changed.schema.get_field_index("rsi_14"), "rsi_14", pa.array(rsi))
    for width in WIDTHS:
        shutil.copytree(outputs["pandas"] / f"bars_{width}", tmp_path / f"bars_{width}")
    pq.write_table(changed.slice(1), tmp_path / "bars_1m" / "part-0.parquet")  # and the first bar dropped
    assert compare.differences(outputs["ours"], tmp_path, "1m") == {"only_a": 1, "quote_volume": 1, "rsi_14": 1}
    assert compare.differences(outputs["ours"], tmp_path, "1h") == {}


def test_wilder_rsi_matches_the_textbook_loop():
    rng = np.random.default_rng(3)
    closes = 100 + np.cumsum(rng.normal(0, 1, 60))
    changes = np.r_[np.nan, np.diff(closes)]
    got = wilder_rsi(changes)
    g = np.where(changes > 0, changes, 0.0)
    lo = np.where(changes < 0, -changes, 0.0)
    ag, al = g[1:15].mean(), lo[1:15].mean()
    want = [100 * ag / (ag + al)]
    for i in range(15, 60):
        ag, al = (ag * 13 + g[i]) / 14, (al * 13 + lo[i]) / 14
        want.append(100 * ag / (ag + al))
    assert np.isnan(got[:14]).all()
    np.testing.assert_allclose(got[14:], want, rtol=1e-12)


def test_bench_args_parse():
    a = engines.build_parser().parse_args([])
    assert (a.trades, a.rounds, a.engines, a.days) == (10_000_000, 3, ["ours", "spark", "pandas"], 3.0)
    a = engines.build_parser().parse_args(["--trades", "20000", "--engines", "spark,ours", "--rounds", "1", "--strict"])
    assert (a.trades, a.engines, a.rounds, a.strict) == (20_000, ["spark", "ours"], 1, True)
    for bad in (["--engines", "ours,dask"], ["--engines", "ours,ours"], ["--trades", "0"], ["--rounds", "-1"]):
        with pytest.raises(SystemExit):
            engines.build_parser().parse_args(bad)


def test_quiet_file_is_held_and_released(tmp_path: Path):
    q = tmp_path / "QUIET"
    with engines.Quiet(q) as held:
        assert q.exists() and held.held
    assert not q.exists()
    with engines.Quiet(tmp_path / "no-such-dir" / "QUIET") as held:  # nobody to pause: no wait, nothing held
        assert not held.held
