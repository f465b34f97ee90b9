"""Every check passes on good data and fails on data built to break it; a failing blocking
check stops downstream assets in the same run."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

import dagster as dg
import pytest

from crypto_assets.defs import bronze, gold, incremental, silver
from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.chain import run_incremental
from crypto_assets_tests.silver_helpers import insert_raw_batch, make_ticks

COINS = ["bitcoin", "ethereum"]


@pytest.fixture
def good(tmp_path):
    lh = LakehouseResource(home=str(tmp_path / "g"), coins=COINS)
    ticks = make_ticks(300, COINS, start=datetime.now(UTC) - timedelta(hours=2), seed=2)
    with lh.connect() as conn:
        insert_raw_batch(conn, ticks)
        conn.execute(
            "INSERT INTO ingest_offsets VALUES (1, 'crypto_raw', 0, 0, 600, 600, 'c', NULL, now()),"
            " (2, 'crypto_raw', 0, 600, 700, 100, 'c', NULL, now())"
        )
        run_incremental(conn, COINS)
    return lh


RULES = {
    "unique_ticks": (silver.unique_ticks, "INSERT INTO clean_ticks SELECT * FROM clean_ticks LIMIT 1"),
    "positive_prices": (silver.positive_prices, "UPDATE clean_ticks SET price_usd = 0 WHERE rowid = 5"),
    "features_finite": (gold.features_finite, "UPDATE market_features SET zscore_15m = 'NaN'::DOUBLE WHERE rowid = 7"),
    "rsi_in_range": (gold.rsi_in_range, "UPDATE ohlcv_1m SET rsi_14 = 101 WHERE rowid = 40"),
    "reconciliation": (silver.reconciliation, "DELETE FROM clean_ticks WHERE rowid = 9"),
    "offset_contiguity": (bronze.offset_contiguity,
                          "INSERT INTO ingest_offsets VALUES (3, 'crypto_raw', 0, 750, 800, 50, 'c', NULL, now())"),
    "quarantine_rate": (lambda c: bronze.quarantine_rate(c, 0.05),
                        "INSERT INTO ingest_batches VALUES (99, 'r', 'crypto_raw', 'c', 100, 50, 50, 1, NULL, NULL, now(), now())"),
    "freshness": (lambda c: silver.freshness(c, 60.0),
                  # the newest tick per coin is kept in clean_coin_state: as if none had come for 90 min
                  "UPDATE clean_coin_state SET max_event_time = now() - INTERVAL 90 MINUTE"),
}


@pytest.mark.parametrize("rule", list(RULES))
def test_rule_passes_on_good_data_and_fails_on_bad(good, rule):
    fn, breaker = RULES[rule]
    with good.connect() as conn:
        ok = fn(conn)
        assert ok.passed, (rule, ok.metadata)
        conn.execute(breaker)
        bad = fn(conn)
        assert not bad.passed, (rule, bad.metadata)


def test_offset_reset_with_reason_is_not_a_gap(good):
    with good.connect() as conn:
        conn.execute(
            "INSERT INTO ingest_offsets VALUES (3, 'crypto_raw', 0, 0, 10, 10, 'c2', 'cluster id changed', now())"
        )
        assert bronze.offset_contiguity(conn).passed


def _defs(lh, kafka):
    return dg.Definitions(
        assets=[incremental.incremental],
        resources={"lakehouse": lh, "kafka": kafka},
    )


def test_failing_blocking_check_stops_downstream_in_same_run(tmp_path, kafka):
    lh = LakehouseResource(home=str(tmp_path / "b"), coins=COINS)
    ticks = make_ticks(200, COINS, start=datetime.now(UTC) - timedelta(hours=1), seed=4)
    with lh.connect() as conn:
        insert_raw_batch(conn, ticks)
        run_incremental(conn, COINS)
        # a bad silver row among the rows of the next pass (as a broken validation would write it),
        # so the blocking check on that pass's rows fails, and give clean_ticks something new to do
        next_seq = conn.sql("SELECT seq + 1 FROM asset_state WHERE asset = 'clean_ticks'").fetchall()[0][0]
        conn.execute("INSERT INTO clean_ticks SELECT * REPLACE (-1.0 AS price_usd, ? AS clean_seq, "
                     "event_time - INTERVAL 1 DAY AS event_time) FROM clean_ticks WHERE rowid = 1", [next_seq])
        insert_raw_batch(conn, make_ticks(20, COINS, start=datetime.now(UTC) - timedelta(minutes=5), seed=5))
        features_before = conn.sql("SELECT count(*) FROM market_features").fetchall()[0][0]
    defs = _defs(lh, kafka)
    job = dg.define_asset_job(
        "t", selection=dg.AssetSelection.assets("clean_ticks", "market_features", "anomalies")
    ).resolve(asset_graph=defs.resolve_asset_graph())
    result = job.execute_in_process(resources={"lakehouse": lh, "kafka": kafka}, raise_on_error=False)
    evals = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evals["clean_ticks_positive_price"] is False
    materialized = {
        e.step_materialization_data.materialization.asset_key.to_user_string()
        for e in result.get_asset_materialization_events()
    }
    assert "clean_ticks" in materialized
    assert "market_features" not in materialized and "anomalies" not in materialized
    with lh.connect() as conn:
        assert conn.sql("SELECT count(*) FROM market_features").fetchall()[0][0] == features_before


def test_failed_blocking_check_holds_until_the_rows_are_repaired(tmp_path, kafka):
    """The clean_ticks checks judge the rows no downstream asset has consumed yet: a later run with
    nothing new fails again and still computes nothing from them; once the bad row is gone, the
    next run passes and catches up."""
    lh = LakehouseResource(home=str(tmp_path / "h"), coins=COINS)
    with lh.connect() as conn:
        insert_raw_batch(conn, make_ticks(200, COINS, start=datetime.now(UTC) - timedelta(hours=1), seed=4))
        run_incremental(conn, COINS)
        next_seq = conn.sql("SELECT seq + 1 FROM asset_state WHERE asset = 'clean_ticks'").fetchall()[0][0]
        conn.execute("INSERT INTO clean_ticks SELECT * REPLACE (-1.0 AS price_usd, ? AS clean_seq, "
                     "event_time - INTERVAL 1 DAY AS event_time) FROM clean_ticks WHERE rowid = 1", [next_seq])
        insert_raw_batch(conn, make_ticks(20, COINS, start=datetime.now(UTC) - timedelta(minutes=5), seed=5))
        features_before = conn.sql("SELECT count(*) FROM market_features").fetchall()[0][0]
    res = {"lakehouse": lh, "kafka": kafka}
    selection = ["clean_ticks", "market_features", "anomalies"]
    for _ in range(2):  # the second run has nothing new to clean: the pending rows fail again
        result = dg.materialize([incremental.incremental], resources=res, selection=selection, raise_on_error=False)
        evals = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert evals["clean_ticks_positive_price"].passed is False and not result.success
        assert "-1" in cast(str, evals["clean_ticks_positive_price"].metadata["offending_rows"].value)
        with lh.connect() as conn:
            assert conn.sql("SELECT count(*) FROM market_features").fetchall()[0][0] == features_before
    with lh.connect() as conn:
        conn.execute("DELETE FROM clean_ticks WHERE price_usd < 0")  # the repair (quarantine-ticks does it properly)
    result = dg.materialize([incremental.incremental], resources=res, selection=selection)
    assert result.success
    with lh.connect() as conn:
        clean = set(conn.sql("SELECT coin_id, event_time FROM clean_ticks").fetchall())
        assert set(conn.sql("SELECT coin_id, event_time FROM market_features").fetchall()) == clean
        assert len(clean) > features_before
