"""Poison ticks (positive, finite, unusable prices and volumes) are quarantined with their own
reason; the jump guard's reference never gets stuck; state moves with the rows (any split of
the input, a kill -9 and a re-run give the same result); the real assets keep running."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from crypto_assets.defs import incremental, silver
from crypto_assets.faults import ENV_VAR
from crypto_assets.ops import cli
from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.chain import run_incremental
from crypto_assets.transforms.clean import CleanConfig, clean_increment
from crypto_assets.transforms.features import features_increment
from crypto_assets_tests.helpers import produce, tick
from crypto_assets_tests.silver_helpers import T0, TABLE_KEYS, insert_raw_batch, make_ticks, table

CFG = CleanConfig()


def _frame(coin: str, prices: list[float], start: datetime = T0, gap_s: float = 20.0, volumes=None) -> pl.DataFrame:
    n = len(prices)
    return pl.DataFrame(
        {
            "coin_id": [coin] * n,
            "symbol": [coin[:4]] * n,
            "last_updated_at": [start + timedelta(seconds=gap_s * i) for i in range(n)],
            "price_usd": [float(p) for p in prices],
            "volume_24h_usd": pl.Series(volumes if volumes is not None else [1e8 + i for i in range(n)], dtype=pl.Float64),
        }
    )


def _clean(home, batches: list[pl.DataFrame], coins=("bitcoin",), features=True) -> tuple[set[int], dict[int, tuple[str, str]]]:
    """Each frame as one raw batch, cleaned (and featurised) after it; (kept offsets, offset ->
    (reason, detail))."""
    lh = LakehouseResource(home=str(home), coins=list(coins))
    with lh.connect() as conn:
        for b in batches:
            insert_raw_batch(conn, b)
            clean_increment(conn, list(coins))
            if features:
                features_increment(conn)
        kept = {r[0] for r in conn.sql("SELECT kafka_offset FROM clean_ticks").fetchall()}
        q = conn.sql("SELECT kafka_offset, reason, detail FROM quarantine WHERE stage = 'clean_ticks'").fetchall()
    return kept, {o: (r, d) for o, r, d in q}


def test_real_moves_pass_and_each_poison_gets_its_reason(tmp_path):
    prices = [9e4, 9.1e4, 9.05e4, 9e4, 4.5e4, 4.6e4, 9.2e4, 9.1e4, 9e4, 9e4, 9.1e4, 9e4, 9e4, 9e4]
    #         0                        4: -50 %      6: 2x rally
    poison = {8: 90.0, 9: 9e7, 10: 9e12, 11: 5e-324, 12: 1.7976931348623157e308}
    volumes = [1e8] * len(prices)
    volumes[13] = 1e300
    volumes[1] = 5e-324
    kept, q = _clean(tmp_path, [_frame("bitcoin", [poison.get(i, p) for i, p in enumerate(prices)], volumes=volumes)])
    assert {o: r for o, (r, _) in q.items()} == {
        1: "volume_out_of_range", 8: "price_jump", 9: "price_jump", 10: "price_out_of_range",
        11: "price_out_of_range", 12: "price_out_of_range", 13: "volume_out_of_range",
    }
    assert kept == {0, 2, 3, 4, 5, 6, 7}  # the crash and the rally are kept
    assert q[8][1].startswith("price_usd 90 is more than 10x away from 5 of the coin's 5 recent prices")
    assert "outside [1e-12, 1e+09] USD" in q[10][1] and "neither 0 nor within [1e-06, 1e+13]" in q[13][1]


def test_a_bad_first_tick_does_not_stick(tmp_path):
    """Nothing can refute a coin's first tick, but it cannot make the real ticks after it look
    like jumps: it is one disagreeing vote among the next ticks' predecessors, then it is gone."""
    real = [0.45, 0.46, 0.45, 0.44, 0.45, 0.45, 0.46, 0.45]
    kept, q = _clean(tmp_path / "one", [_frame("cardano", [4.5e-9] + real + [4.4e-9])], coins=["cardano"])
    assert kept == set(range(9)) and {o: r for o, (r, _) in q.items()} == {9: "price_jump"}
    # two consistent bad ticks first: one real tick is outvoted, the next ones are kept
    kept, q = _clean(tmp_path / "two", [_frame("cardano", [4.5e-9, 4.6e-9] + real)], coins=["cardano"])
    assert {o: r for o, (r, _) in q.items()} == {2: "price_jump"} and kept == {0, 1} | set(range(3, 10))


def test_a_real_level_change_recovers(tmp_path):
    """A 100x move: within jump_max_age the new level is accepted from its 3rd tick (window 5);
    after a pause longer than jump_max_age, from its first."""
    old, new = [1.0] * 6, [100.0, 101.0, 99.0, 100.0, 102.0]
    kept, q = _clean(tmp_path / "near", [_frame("bitcoin", old), _frame("bitcoin", new, start=T0 + timedelta(minutes=5))])
    assert {o: r for o, (r, _) in q.items()} == {6: "price_jump", 7: "price_jump"} and kept == set(range(11)) - {6, 7}
    pause = T0 + CFG.jump_max_age + timedelta(minutes=5)
    kept, q = _clean(tmp_path / "far", [_frame("bitcoin", old), _frame("bitcoin", new, start=pause)])
    assert q == {} and kept == set(range(11))


def _mixed_stream() -> pl.DataFrame:
    prices = [9e4 * (1 + 0.01 * ((i * 7) % 5)) for i in range(40)]
    for i, bad in {3: 9e-3, 11: 2e9, 17: 9e7, 18: 9.1e7, 30: 1e-15}.items():  # 17-18: a burst
        prices[i] = bad
    return pl.concat([_frame("bitcoin", prices), _frame("ethereum", [3e3] * 20 + [3e-2] + [3e3] * 5, start=T0 + timedelta(seconds=3))])


def _state(home) -> dict:
    with LakehouseResource(home=str(home)).connect() as conn:
        return {t: conn.sql(f"SELECT * EXCLUDE (clean_seq) FROM {t} ORDER BY ALL").fetchall() if t == "clean_ticks"
                else conn.sql(f"SELECT * FROM {t} ORDER BY ALL").fetchall()
                for t in ("clean_ticks", "clean_price_window")} | {
            "quarantine": conn.sql("SELECT reason, detail, kafka_offset FROM quarantine ORDER BY ALL").fetchall(),
            "asset_state": conn.sql("SELECT asset, hwm, seq FROM asset_state ORDER BY ALL").fetchall()}


def test_any_split_gives_the_same_verdicts_and_the_window_stays_bounded(tmp_path):
    ticks = _mixed_stream().sort("last_updated_at")
    coins = ["bitcoin", "ethereum"]
    one = _clean(tmp_path / "one", [ticks], coins)
    each = _clean(tmp_path / "each", [ticks.slice(i, 1) for i in range(ticks.height)], coins, features=False)
    assert one == each
    assert {r for r, _ in one[1].values()} == {"price_jump", "price_out_of_range"}
    # tick by tick the raw batch ids differ, so compare the window by its arrival offsets and prices
    with LakehouseResource(home=str(tmp_path / "one")).connect() as a, LakehouseResource(home=str(tmp_path / "each")).connect() as b:
        q = "SELECT coin_id, kafka_offset, event_time, price_usd FROM clean_price_window ORDER BY ALL"
        assert a.sql(q).fetchall() == b.sql(q).fetchall()
        per_coin = "SELECT max(n) FROM (SELECT count(*) AS n FROM clean_price_window GROUP BY coin_id)"
        assert a.sql(per_coin).fetchall() == [(CFG.jump_window,)]


_CHILD = """
import sys
from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.clean import clean_increment
with LakehouseResource(home=sys.argv[1]).connect() as conn:
    clean_increment(conn, ["bitcoin", "ethereum"])
"""


def test_kill_before_the_clean_commit_then_rerun_is_exact(tmp_path):
    """SIGKILL after rows, quarantine and the jump-guard window are written, before COMMIT:
    nothing of the run remains, and the re-run produces exactly what an uninterrupted run does."""
    ticks = _mixed_stream().sort("last_updated_at")
    for name in ("killed", "clean"):
        with LakehouseResource(home=str(tmp_path / name)).connect() as conn:
            insert_raw_batch(conn, ticks.slice(0, 25))
            clean_increment(conn, ["bitcoin", "ethereum"])
            insert_raw_batch(conn, ticks.slice(25))
    before = _state(tmp_path / "killed")
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    killed = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "killed")], env={**env, ENV_VAR: "clean_before_commit"},
                            capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert _state(tmp_path / "killed") == before
    done = subprocess.run([sys.executable, "-c", _CHILD, str(tmp_path / "killed")], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    with LakehouseResource(home=str(tmp_path / "clean")).connect() as conn:
        clean_increment(conn, ["bitcoin", "ethereum"])
    after = _state(tmp_path / "clean")
    assert _state(tmp_path / "killed") == after != before
    assert len(after["quarantine"]) == 6


def test_poison_ticks_through_the_dagster_assets(tmp_path, kafka):
    """Real broker, real pull, real assets and checks: poison mixed into two runs' worth of
    ticks; both runs succeed, market_features_finite passes, each poison is quarantined once."""
    lh = LakehouseResource(home=str(tmp_path / "w"), coins=["bitcoin", "ethereum", "cardano"])
    base = (datetime.now(UTC) - timedelta(minutes=10)).replace(microsecond=0)  # fresh: every check can pass
    defs = dg.Definitions(assets=[incremental.incremental],
                          resources={"lakehouse": lh, "kafka": kafka})
    job = dg.define_asset_job(
        "poison", selection=dg.AssetSelection.assets("raw_ticks", "clean_ticks", "market_features")
    ).resolve(asset_graph=defs.resolve_asset_graph())
    want: dict[tuple[str, int], str] = {}
    for run, start in enumerate((0, 300)):
        good = [tick(start + i, coin, base=base) for i in range(100) for coin in ("bitcoin", "ethereum", "cardano")]
        bad = {
            1e-300: "price_out_of_range", 5e-324: "price_out_of_range", 1.7976931348623157e308: "price_out_of_range",
            9e4 * 1e-6: "price_jump", 9e4 * 1e4: "price_jump",
        }
        poison = [tick(start + 200 + k, "bitcoin", price=p, base=base) for k, p in enumerate(bad)]
        poison.append(tick(start + 210, "ethereum", base=base) | {"volume_24h_usd": 1e300})
        poison.append(tick(start + 211, "cardano", base=base) | {"volume_24h_usd": 5e-324})
        reasons = [*bad.values(), "volume_out_of_range", "volume_out_of_range"]
        messages = good[:150] + poison[:4] + good[150:] + poison[4:]
        produce(kafka, messages)
        result = job.execute_in_process(resources={"lakehouse": lh, "kafka": kafka}, raise_on_error=False)
        assert result.success, run
        evals = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
        assert evals["market_features_finite"] is True and all(evals.values()), evals
        for t, reason in zip(poison, reasons, strict=True):
            want[(t["coin_id"], t["last_updated_at"])] = reason
    with lh.connect() as conn:
        q = conn.sql("SELECT coin_id, strftime(last_updated_at, '%Y-%m-%dT%H:%M:%SZ'), reason FROM quarantine").fetchall()
        counts = conn.sql("SELECT (SELECT count(*) FROM clean_ticks), (SELECT count(*) FROM market_features)").fetchall()
    assert {(c, t): r for c, t, r in q} == want and len(q) == len(want)
    assert counts == [(600, 600)]


@pytest.mark.parametrize("where", ["first", "middle"])
def test_quarantining_accepted_ticks_by_hand_equals_never_having_them(tmp_path, where):
    """A bad first tick (nothing can refute it) or, with the guard off, a bad tick in the middle:
    `crypto-assets quarantine-ticks` takes it out, and the next incremental run leaves every
    derived table exactly as if the tick had never arrived."""
    coins = ["bitcoin", "ethereum"]
    good = make_ticks(200, coins, seed=3)
    btc = good.filter(pl.col("coin_id") == "bitcoin")
    t_bad = btc["last_updated_at"][0] - timedelta(seconds=5) if where == "first" else btc["last_updated_at"][100] + timedelta(seconds=1)
    bad = btc.head(1).with_columns(last_updated_at=pl.lit(t_bad).cast(btc["last_updated_at"].dtype), price_usd=pl.lit(9e-8))
    cfg = CleanConfig(jump_window=0 if where == "middle" else CFG.jump_window)
    homes = {}
    for name, ticks in (("fixed", pl.concat([good, bad]).sort("last_updated_at")), ("never", good)):
        homes[name] = LakehouseResource(home=str(tmp_path / name), coins=coins)
        with homes[name].connect() as conn:
            insert_raw_batch(conn, ticks.head(300))
            run_incremental(conn, coins, cfg)
            insert_raw_batch(conn, ticks.slice(300))
            run_incremental(conn, coins, cfg)
    with homes["fixed"].connect() as conn:
        assert conn.sql("SELECT count(*) FROM clean_ticks WHERE price_usd = 9e-8").fetchall() == [(1,)]  # it got in
    code = cli.main(["quarantine-ticks", "--home", str(tmp_path / "fixed"), "--coin", "bitcoin",
                     "--from", t_bad.isoformat(), "--detail", "bad first tick"])
    assert code == 0
    with homes["fixed"].connect() as conn:
        run_incremental(conn, coins, cfg)
        got = {t: table(conn, t) for t in TABLE_KEYS}
        q = conn.sql("SELECT reason, detail, coin_id, last_updated_at FROM quarantine WHERE reason = 'manual'").fetchall()
        assert silver.reconciliation(conn).passed
    with homes["never"].connect() as conn:
        want = {t: table(conn, t) for t in TABLE_KEYS}
    for t in TABLE_KEYS:
        assert_frame_equal(got[t], want[t], check_exact=False, rel_tol=1e-9, abs_tol=1e-9)
    assert q == [("manual", "bad first tick", "bitcoin", t_bad)]
