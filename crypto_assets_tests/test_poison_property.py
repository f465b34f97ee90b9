"""No single bad tick may stop the pipeline: property-based, over the whole float64 range.

Valid streams (random walks of several coins at very different price levels, some with a 50 %
crash or a 2x rally in one tick) get poison ticks mixed in: prices and 24h volumes drawn from
every float64 (subnormals, 5e-324, 1.7e308, NaN, +-inf, negatives, values one ulp around the
bounds, many-orders-of-magnitude jumps). The arrival sequence is cut into random batches and
run through clean_increment + features_increment (the functions the assets call) on a real
DuckDB file. Then: nothing raised; every tick is in clean_ticks or in quarantine with a reason
and a detail; every feature of every clean tick is finite and defined where it must be, and
equals a from-scratch recomputation; the same sequence in one batch gives the same verdicts;
valid ticks are kept and poison is quarantined with the reason its value calls for.
"""

from __future__ import annotations

import itertools
import math
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.clean import CleanConfig, clean_increment
from crypto_assets.transforms.features import FEATURE_COLUMNS, compute_features, features_increment
from crypto_assets_tests.silver_helpers import T0, insert_raw_batch

CFG = CleanConfig()
FEATURES = [c for c in FEATURE_COLUMNS if c not in ("coin_id", "symbol", "event_time", "ticks_15m")]
COINS = {"bitcoin": 9e4, "cardano": 0.45, "solana": 140.0, "polygon": 2e-8}  # start prices
TINY, HUGE = 5e-324, 1.7976931348623157e308
EDGES = [
    TINY, 1e-320, 2.2250738585072014e-308, 1e-300, 1e-200, 1e-20, 1.7e308, HUGE, 1e300, 1e200, 1e20,
    0.0, -0.0, -1.0, -HUGE, math.nan, math.inf, -math.inf,
    *(x for b in (CFG.min_price_usd, CFG.max_price_usd, CFG.min_positive_volume_usd, CFG.max_volume_usd)
      for x in (math.nextafter(b, 0.0), b, math.nextafter(b, math.inf))),
]
ANY_FLOAT = st.one_of(
    st.sampled_from(EDGES),
    st.floats(min_value=TINY, max_value=HUGE),  # every positive finite float, subnormals included
    st.floats(allow_nan=True, allow_infinity=True),
)
# A poison price: any float, or the walk's price times 10^k (a unit error, a dropped decimal).
POISON_PRICE = st.one_of(ANY_FLOAT.map(lambda x: ("abs", x)), st.integers(-15, 15).filter(lambda k: abs(k) >= 2).map(lambda k: ("jump", k)))


@st.composite
def scenario(draw):
    coins = draw(st.lists(st.sampled_from(list(COINS)), min_size=2, max_size=4, unique=True))
    walks = {}
    for coin in coins:
        n = draw(st.integers(3, 30))
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        steps = rng.uniform(-0.05, 0.05, n)  # |step| <= 5 %: the last 5 ticks always agree within 10x
        steps[0] = 0.0
        shock = draw(st.sampled_from([None, 0.5, 2.0]))  # a 50 % crash or a 2x rally in one tick
        if shock is not None:
            steps[draw(st.integers(1, n - 1))] += math.log(shock)
        vol = np.where(rng.random(n) < 0.1, 0.0, 1e7 * np.exp(np.cumsum(rng.normal(0, 0.3, n))))
        walks[coin] = (COINS[coin] * np.exp(np.cumsum(steps)), vol.tolist())
    poison = draw(st.lists(
        st.tuples(st.sampled_from(coins), st.integers(0, 30), st.sampled_from(["price", "volume", "both"]),
                  POISON_PRICE, ANY_FLOAT),
        max_size=12))
    cuts = draw(st.lists(st.integers(1, 200), max_size=3))
    return walks, poison, cuts


def _arrivals(walks, poison) -> pl.DataFrame:
    """The arrival sequence: valid ticks every 10 s per coin; each poison tick 5 s after the
    valid tick it follows (its own event time: never a duplicate)."""
    rows = []
    for k, (coin, (prices, vols)) in enumerate(walks.items()):
        for i, (p, v) in enumerate(zip(prices, vols, strict=True)):
            rows.append((coin, T0 + timedelta(seconds=10 * i + k), float(p), v, True))
    for j, (coin, pos, kind, (how, x), v) in enumerate(poison):
        prices, vols = walks[coin]
        i = min(pos, len(prices) - 1)
        k = list(walks).index(coin)
        price = float(prices[i]) * 10.0**x if how == "jump" else x
        p, vol = (price, vols[i]) if kind == "price" else (float(prices[i]), v) if kind == "volume" else (price, v)
        rows.append((coin, T0 + timedelta(seconds=10 * i + k + 5, microseconds=j), p, vol, False))
    rows.sort(key=lambda r: r[1])
    return pl.DataFrame(rows, schema={"coin_id": pl.String, "last_updated_at": pl.Datetime("us", "UTC"),
                                      "price_usd": pl.Float64, "volume_24h_usd": pl.Float64, "valid": pl.Boolean},
                        orient="row").with_columns(symbol=pl.col("coin_id").str.slice(0, 4),
                                                   kafka_offset=pl.int_range(pl.len(), dtype=pl.Int64))


def _expected_reason(p: float, v: float | None) -> str | None:
    """The bound rules, restated: None for a tick in bounds (the jump guard may still reject it)."""
    if not (math.isfinite(p) and p > 0):
        return "invalid_price"
    if not CFG.min_price_usd <= p <= CFG.max_price_usd:
        return "price_out_of_range"
    if v is not None and not (math.isfinite(v) and v >= 0):
        return "invalid_volume"
    if v is not None and (v > CFG.max_volume_usd or 0 < v < CFG.min_positive_volume_usd):
        return "volume_out_of_range"
    return None


def _run(home: Path, arrivals: pl.DataFrame, cuts: list[int]) -> dict:
    lh = LakehouseResource(home=str(home), coins=list(COINS))
    bounds = sorted({c for c in cuts if c < arrivals.height}) + [arrivals.height]
    with lh.connect() as conn:
        start = 0
        for end in bounds:
            insert_raw_batch(conn, arrivals.slice(start, end - start).drop("valid", "kafka_offset"))
            clean_increment(conn, list(COINS), CFG)
            features_increment(conn)
            start = end
        return {
            "clean": conn.sql("SELECT * FROM clean_ticks ORDER BY coin_id, event_time").pl(),
            "quarantine": conn.sql("SELECT kafka_offset, reason, detail FROM quarantine WHERE stage = 'clean_ticks'").pl(),
            "features": conn.sql("SELECT * FROM market_features ORDER BY coin_id, event_time").pl(),
        }


def _check_features(clean: pl.DataFrame, feats: pl.DataFrame) -> None:
    assert feats.select("coin_id", "event_time").equals(clean.select("coin_id", "event_time"))
    for c in FEATURES:
        assert feats[c].drop_nulls().is_finite().all(), (c, feats.filter(~pl.col(c).is_finite()))
    first = pl.col("event_time") == pl.col("event_time").min().over("coin_id")
    prev_v = pl.col("volume_24h_usd").shift(1).over("coin_id")
    f = feats.with_columns(first=first, vc_defined=prev_v.is_not_null() & pl.col("volume_24h_usd").is_not_null() & (prev_v > 0))
    for c in ("sma_1m", "sma_5m", "sma_15m", "ema_20"):
        assert f[c].null_count() == 0, c
    for c in ("return_pct", "log_return", "volatility_15m"):
        assert (f[c].is_null() == f["first"]).all(), c
    assert (f["volume_change_pct"].is_not_null() == f["vc_defined"]).all()
    # incremental runs = one computation over all clean ticks
    ticks = clean.select("coin_id", "symbol", "event_time", "price_usd", "volume_24h_usd").with_columns(is_target=True)
    scratch = compute_features(ticks, {}).sort("coin_id", "event_time")
    assert_frame_equal(feats.drop("feature_seq"), scratch, check_exact=False, rel_tol=1e-9, abs_tol=1e-12, check_dtypes=False)


_example = itertools.count()


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(scenario())
def test_no_tick_stops_the_pipeline(lakehouse, case):
    walks, poison, cuts = case
    arrivals = _arrivals(walks, poison)
    root = Path(lakehouse.home) / f"example-{next(_example)}"
    try:
        inc = _run(root / "inc", arrivals, cuts)
        one = _run(root / "one", arrivals, []) if cuts else inc
    finally:
        shutil.rmtree(root, ignore_errors=True)
    clean, q = inc["clean"], inc["quarantine"]
    # every tick exactly once, by identity (its offset), with a reason and a detail when quarantined
    kept = set(clean["kafka_offset"].to_list())
    rejected = dict(zip(q["kafka_offset"].to_list(), q["reason"].to_list(), strict=True))
    assert len(kept) == clean.height and len(rejected) == q.height and not kept & set(rejected)
    assert kept | set(rejected) == set(range(arrivals.height))
    assert q["detail"].null_count() == 0 and (q["detail"].str.len_chars() > 0).all()
    _check_features(clean, inc["features"])
    # the same arrival sequence in one batch judges every tick the same way
    assert one["clean"]["kafka_offset"].sort().equals(clean["kafka_offset"].sort())
    assert dict(zip(one["quarantine"]["kafka_offset"], one["quarantine"]["reason"], strict=True)) == rejected

    window = {coin: [] for coin in walks}  # candidates in arrival order: (is valid, price)
    for off, coin, p, v, valid in arrivals.select("kafka_offset", "coin_id", "price_usd", "volume_24h_usd", "valid").iter_rows():
        want = None if valid else _expected_reason(p, v)
        if want is not None:
            assert rejected.get(off) == want, (off, p, v, rejected.get(off))
            continue
        prev = window[coin][-CFG.jump_window:]  # all within jump_max_age here
        if valid and sum(not ok for ok, _ in prev) <= 1:
            assert off in kept, (off, p, prev, rejected.get(off))  # at most one poison in its window: kept
        far = [abs(math.log(p / x)) > math.log(CFG.max_jump_ratio) for _, x in prev]
        if not valid and len(prev) >= 2 and all(ok for ok, _ in prev) and all(far):
            assert rejected.get(off) == "price_jump", (off, p, prev)  # far from >= 2 real ticks
        if off in rejected:
            assert rejected[off] == "price_jump"
        window[coin].append((valid, p))


FINITE_POSITIVE = st.one_of(st.sampled_from([TINY, 1e-320, 2.2250738585072014e-308, 1.7e308, HUGE]),
                            st.floats(min_value=TINY, max_value=HUGE))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(FINITE_POSITIVE, st.one_of(st.none(), st.just(0.0), FINITE_POSITIVE), st.integers(1, 400)),
                min_size=1, max_size=25),
       st.booleans(), st.integers(0, 24))
def test_compute_features_is_finite_for_any_finite_input(rows, seeded, seed_pick):
    """The second line of defence, without clean_ticks' bounds: any positive finite prices and
    any finite volumes (one coin, gaps of 1-400 s) give finite features, and SMAs and the EMA
    are always defined (the EMA seed is one of the coin's prices, as a real EMA state is a mix of them)."""
    t, times = T0, []
    for _, _, gap in rows:
        t += timedelta(seconds=gap)
        times.append(t)
    prices = [p for p, _, _ in rows]
    frame = pl.DataFrame({"coin_id": "x", "symbol": "x", "event_time": times, "price_usd": prices,
                          "volume_24h_usd": pl.Series([v for _, v, _ in rows], dtype=pl.Float64), "is_target": True})
    state = {"x": prices[seed_pick % len(prices)]} if seeded else {}
    f = compute_features(frame, state)
    assert f.height == len(rows)
    for c in FEATURES:
        assert f[c].drop_nulls().is_finite().all(), (c, f[c].to_list())
    for c in ("sma_1m", "sma_5m", "sma_15m", "ema_20"):
        assert f[c].null_count() == 0, c
    for c in ("log_return", "volatility_15m"):  # a return % beyond float64 (1e308 after 1e-308) is null
        assert f[c][0] is None and f[c].slice(1).null_count() == 0, c
