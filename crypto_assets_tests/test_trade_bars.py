"""Trade candles (crypto_assets.transforms.trade_bars) on a real DuckDB warehouse fed with raw_trades
rows: every width equals a naive Decimal computation over the trades; increments over random
batches (shuffled, duplicates dropped as bronze drops them, late arrivals) equal one full
recomputation exactly, indicators included; late trades are quarantined and change no bar."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.trade_bars import ID_LIMIT, TradeBarsConfig, trade_bars_full, trade_bars_increment
from crypto_assets.warehouse.tables import TABLES
from crypto_assets.warehouse.watermarks import get_state
from crypto_assets_tests.trade_bar_helpers import T0, Trade, insert_batch, make_trades, reference_bars, stored_bars

WIDTHS = {"trade_bars_1s": 1, "trade_bars_1m": 60, "trade_bars_1h": 3600}


def _conn(tmp_path, name="w"):
    return LakehouseResource(home=str(tmp_path / name)).connect()


def _all_rows(conn, table: str) -> list[tuple]:
    cols = [c for c in TABLES[table].column_names if c != "bar_seq"]
    return conn.sql(f"SELECT {', '.join(cols)} FROM {table} ORDER BY exchange, product, bar_start").fetchall()


def _assert_matches_reference(conn, trades: list[Trade]) -> None:
    for table, seconds in WIDTHS.items():
        got, exp = stored_bars(conn, table), reference_bars(trades, seconds)
        assert set(got) == set(exp), f"{table}: bar keys differ"
        for key, row in exp.items():
            g, e = dict(got[key]), dict(row)
            # VWAP: a double of the exact quotient, within a few ulps of the correctly rounded one
            assert g.pop("vwap") == pytest.approx(e.pop("vwap"), rel=1e-14), f"{table} {key} vwap"
            assert g == e, f"{table} {key}"


def test_bars_of_every_width_equal_the_decimal_reference(tmp_path):
    trades = make_trades(3000, seed=3)
    with _conn(tmp_path) as conn:
        insert_batch(conn, trades)
        res = trade_bars_increment(conn)
        _assert_matches_reference(conn, trades)
        assert res.late == 0 and res.products == 3
        assert res.bars["trade_bars_1s"] == len(reference_bars(trades, 1))
        assert res.bars["trade_bars_1h"] == len(reference_bars(trades, 3600))
        # a second run with nothing new writes nothing
        again = trade_bars_increment(conn)
        assert not again.changed and again.seqs == res.seqs


def test_open_and_close_follow_trade_time_then_trade_id(tmp_path):
    """Trades in one microsecond are ordered by trade id, whatever order they arrive in; ids at
    or above 2^43 take the struct-keyed path and give the same bars."""
    t = T0 + timedelta(seconds=5, microseconds=250)
    for base_id in (10, ID_LIMIT + 10):
        trades = [Trade("coinbase", "BTC-USD", "bitcoin", base_id + i, p, s, "buy", t)
                  for i, (p, s) in enumerate([(d("101"), d("1")), (d("99"), d("2")), (d("100.5"), d("0.5"))])]
        later = Trade("coinbase", "BTC-USD", "bitcoin", base_id - 5, d("98"), d("1"), "sell", t + timedelta(microseconds=1))
        with _conn(tmp_path, f"w{base_id}") as conn:
            insert_batch(conn, [trades[2], later, trades[0], trades[1]])
            trade_bars_increment(conn)
            row = conn.sql("SELECT open, close, first_trade_id, last_trade_id, trade_count, buy_volume, sell_volume, "
                           "vwap FROM trade_bars_1s").fetchall()
            assert row[0][:7] == (d("101"), d("98"), base_id, base_id - 5, 4, d("3.5"), d("1"))
            assert row[0][7] == pytest.approx(float((d("101") + d("198") + d("50.25") + d("98")) / d("4.5")), rel=1e-15)


def test_a_late_trade_is_quarantined_and_changes_no_bar(tmp_path):
    trades = make_trades(400, seed=5, mean_gap_ms=5000)  # ~33 minutes per product
    newest = max(t.trade_time for t in trades if t.product == "BTC-USD")
    old = Trade("coinbase", "BTC-USD", "bitcoin", 99_999, d("1.5"), d("7"), "buy", newest - timedelta(minutes=11))
    inside = Trade("coinbase", "BTC-USD", "bitcoin", 99_998, d("2.5"), d("3"), "sell", newest - timedelta(minutes=9))
    with _conn(tmp_path) as conn:
        insert_batch(conn, trades)
        trade_bars_increment(conn)
        before = {t: _all_rows(conn, t) for t in WIDTHS}
        insert_batch(conn, [old])
        res = trade_bars_increment(conn)
        assert res.late == 1 and not res.changed
        assert {t: _all_rows(conn, t) for t in WIDTHS} == before
        q = conn.sql("SELECT stage, reason, detail, kafka_offset, coin_id, last_updated_at FROM quarantine").fetchall()
        assert len(q) == 1 and q[0][:2] == ("trade_bars_1s", "late") and "lateness" in q[0][2]
        assert q[0][4:] == ("bitcoin", old.trade_time)
        # inside the window: its second, minute and hour are recomputed, and the indicators after it
        insert_batch(conn, [inside])
        res = trade_bars_increment(conn)
        assert res.late == 0 and res.bars["trade_bars_1s"] == 1 and res.bars["trade_bars_1h"] >= 1
        minute = inside.trade_time.replace(second=0, microsecond=0)
        n_after = conn.sql("SELECT count(*) FROM trade_bars_1m WHERE product = 'BTC-USD' AND bar_start >= $m",
                           params={"m": minute}).fetchall()[0][0]
        assert res.bars["trade_bars_1m"] == n_after
        _assert_matches_reference(conn, [*trades, inside])
        # the full recomputation agrees, the late trade still out
        incremental = {t: _all_rows(conn, t) for t in WIDTHS}
        trade_bars_full(conn)
        assert {t: _all_rows(conn, t) for t in WIDTHS} == incremental
        assert conn.sql("SELECT count(*) FROM quarantine WHERE reason = 'late'").fetchall() == [(1,)]


def test_lateness_is_configurable(tmp_path):
    trades = make_trades(50, seed=2, mean_gap_ms=20_000)
    newest = max(t.trade_time for t in trades if t.product == "ETH-USD")
    old = Trade("coinbase", "ETH-USD", "ethereum", 5, d("3000"), d("1"), "buy", newest - timedelta(minutes=5))
    with _conn(tmp_path) as conn:
        insert_batch(conn, trades)
        insert_batch(conn, [old])  # two batches in one run: the second is judged against the first
        res = trade_bars_increment(conn, TradeBarsConfig(lateness=timedelta(minutes=2)))
        assert res.late == 1
        _assert_matches_reference(conn, trades)


def test_batches_of_ticks_only_move_the_state(tmp_path):
    with _conn(tmp_path) as conn:
        insert_batch(conn, make_trades(20, seed=1))
        trade_bars_increment(conn)
        conn.execute("INSERT INTO ingest_batches VALUES (2, NULL, 'crypto_raw', NULL, 1, 1, 0, 0, NULL, NULL, now(), now())")
        res = trade_bars_increment(conn)
        assert not res.changed and get_state(conn, "trade_bars_1s")[0] == 2


def d(x: str):
    from decimal import Decimal

    return Decimal(x)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), n_batches=st.integers(2, 7), runs=st.integers(1, 4),
       late_share=st.sampled_from([0.0, 0.05, 0.2]))
def test_random_batches_applied_incrementally_equal_a_full_recomputation(tmp_path_factory, seed, n_batches, runs,
                                                                         late_share):
    """Trades arrive shuffled over batches, some twice (bronze keeps the first), some far
    behind their product's tape (late or just inside the window); the batches are processed in
    `runs` increments of random size. The increments equal one full recomputation exactly
    (every column of every width, indicators included) and the same trades are quarantined."""
    rng = random.Random(seed)
    trades = make_trades(120, seed=seed, mean_gap_ms=4000)  # ~8 minutes, several minutes and hours edges
    order = trades[:]
    rng.shuffle(order)
    order.sort(key=lambda t: t.trade_time + timedelta(seconds=rng.uniform(-30, 30)))  # roughly in time
    for _ in range(int(len(order) * late_share)):  # move some trades far later in the stream
        t = order.pop(rng.randrange(len(order) // 2))
        order.insert(rng.randrange(len(order) // 2, len(order)), t)
    dupes = rng.sample(order, 10)
    cuts = sorted(rng.sample(range(1, len(order)), n_batches - 1))
    batches = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True)]
    batches[-1] = batches[-1] + dupes
    cfg = TradeBarsConfig(lateness=timedelta(minutes=1))
    home = tmp_path_factory.mktemp("prop")
    with LakehouseResource(home=str(home)).connect() as conn:
        seen: set[tuple] = set()
        ids = []
        for b in batches:
            fresh = []
            for t in b:  # bronze keeps the first arrival of a (exchange, product, trade_id)
                if (t.exchange, t.product, t.trade_id) not in seen:
                    seen.add((t.exchange, t.product, t.trade_id))
                    fresh.append(t)
            if fresh:
                ids.append(insert_batch(conn, fresh))
        stops = sorted(rng.sample(ids, min(runs, len(ids))))
        if stops[-1] != ids[-1]:
            stops.append(ids[-1])
        for upto in stops:
            trade_bars_increment(conn, cfg, upto_batch=upto)
        incremental = {t: _all_rows(conn, t) for t in WIDTHS}
        late_inc = sorted(conn.sql("SELECT kafka_offset FROM quarantine WHERE reason = 'late'").fetchall())
        trade_bars_full(conn, cfg)
        assert {t: _all_rows(conn, t) for t in WIDTHS} == incremental
        assert sorted(conn.sql("SELECT kafka_offset FROM quarantine WHERE reason = 'late'").fetchall()) == late_inc
        late_keys = set(conn.sql("SELECT exchange, product, trade_id FROM raw_trades r SEMI JOIN quarantine q "
                                 "ON r.kafka_offset = q.kafka_offset AND q.reason = 'late'").fetchall())
        assert len(late_keys) == len(late_inc)
        kept = [t for t in trades if (t.exchange, t.product, t.trade_id) not in late_keys]
        _assert_matches_reference(conn, kept)


@pytest.mark.parametrize("width", ["trade_bars_1s", "trade_bars_1m", "trade_bars_1h"])
def test_the_mirror_hours_are_marked(tmp_path, width):
    with _conn(tmp_path) as conn:
        insert_batch(conn, make_trades(30, seed=4))
        trade_bars_increment(conn)
        marked = conn.sql("SELECT count(*) FROM lake_pending WHERE dataset = $d", params={"d": f"gold/{width}"}).fetchall()[0][0]
        assert marked >= 1
