"""A sensor-launched incremental run drains the backlog pass after pass: messages that arrive
while it runs are ingested by the same run, which reports one materialization per asset and one
result per check, summed over its passes."""

from __future__ import annotations

import threading
import time
from datetime import UTC
from typing import cast

import dagster as dg

from crypto_assets.defs import incremental
from crypto_assets.defs.automation import incremental_run_config
from crypto_assets_tests.helpers import produce, tick

COINS = ("bitcoin", "ethereum", "solana")


def _keys(conn) -> set[tuple[str, object]]:
    return set(conn.sql("SELECT coin_id, event_time FROM clean_ticks").fetchall())


def test_one_run_drains_messages_that_arrive_while_it_runs(kafka, lakehouse):
    from datetime import datetime, timedelta

    base = datetime.now(UTC) - timedelta(hours=1)
    bursts = [[tick(b * 100 + i, COINS[i % 3], base=base) for i in range(60)] for b in range(3)]
    expected = {(t["coin_id"], datetime.fromisoformat(t["last_updated_at"].replace("Z", "+00:00"))) for b in bursts for t in b}
    produce(kafka, bursts[0])
    seen_bursts: list[int] = []

    def producer():
        # each next burst only once the previous one is visible: it needs a pass of its own
        for i, burst in enumerate(bursts[1:], start=1):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with lakehouse.connect() as conn:
                    if len(_keys(conn)) >= 60 * i:
                        break
                time.sleep(0.2)
            seen_bursts.append(i)
            produce(kafka, burst)

    t = threading.Thread(target=producer)
    t.start()
    result = dg.materialize([incremental.incremental], resources={"kafka": kafka, "lakehouse": lakehouse},
                            run_config=incremental_run_config(drain_seconds=12))
    t.join()
    assert result.success and seen_bursts == [1, 2]
    with lakehouse.connect() as conn:
        assert _keys(conn) == expected
        offsets = conn.sql("SELECT kafka_partition, kafka_offset FROM raw_ticks ORDER BY ALL").fetchall()
        assert len(offsets) == len(set(offsets)) == 180
    mats = [e.step_materialization_data.materialization for e in result.get_asset_materialization_events()]
    assert sorted(m.asset_key.to_user_string() for m in mats) == sorted(incremental.KEYS)
    raw = next(m for m in mats if m.asset_key == dg.AssetKey("raw_ticks"))
    assert raw.metadata["messages_read"].value == 180
    assert cast(int, raw.metadata["passes"].value) >= 3
    clean = next(m for m in mats if m.asset_key == dg.AssetKey("clean_ticks"))
    assert clean.metadata["rows_written"].value == 180 and clean.metadata["dagster/row_count"].value == 180
    evals = result.get_asset_check_evaluations()
    # every check of the step except the trade checks (gaps, bar sanity): those are judged only on
    # what a run pulled or wrote, and this run had no trades
    trade_checks = {"raw_trades_gaps", "trade_bars_sane"}
    assert sorted(e.check_name for e in evals) == sorted(s.name for s in incremental.CHECK_SPECS
                                                         if s.name not in trade_checks)
    assert all(e.passed for e in evals if e.check_name != "clean_ticks_freshness")


def test_selected_alone_a_member_runs_once(kafka, lakehouse):
    produce(kafka, [tick(i, COINS[i % 3]) for i in range(30)])
    result = dg.materialize([incremental.incremental], resources={"kafka": kafka, "lakehouse": lakehouse},
                            selection=["raw_ticks"])
    assert result.success
    mats = [e.step_materialization_data.materialization.asset_key.to_user_string() for e in result.get_asset_materialization_events()]
    assert mats == ["raw_ticks"]
    with lakehouse.connect() as conn:
        assert conn.sql("SELECT count(*) FROM raw_ticks").fetchall()[0][0] == 30
        assert conn.sql("SELECT count(*) FROM clean_ticks").fetchall()[0][0] == 0
