"""raw_trades inside the incremental step (dg.materialize, the real embedded broker and DuckDB):
its materialization metadata, the non-blocking `raw_trades_gaps` check (warns while a gap is
open, passes once it is healed), a run without trades, the sensor on trade lag alone, and a
broker that is down."""

from __future__ import annotations

import time
from typing import Any, cast

import dagster as dg

from crypto_assets.defs import incremental
from crypto_assets.defs.automation import build_backlog_sensor, incremental_job
from crypto_assets.ingest.pull import pull_raw_trades
from crypto_assets.resources import KafkaResource
from crypto_assets_tests.helpers import evaluate_sensor, produce, ticks
from crypto_assets_tests.trade_helpers import produce_trades, trade


def _run(kafka, lakehouse, selection=("raw_trades",), **kw) -> dg.ExecuteInProcessResult:
    return dg.materialize([incremental.incremental], resources={"kafka": kafka, "lakehouse": lakehouse},
                          selection=list(selection), **kw)


def _materialization(result, key: str) -> dict[str, Any]:
    (mat,) = [e.step_materialization_data.materialization for e in result.get_asset_materialization_events()
              if e.asset_key == dg.AssetKey(key)]
    return {k: v.value for k, v in mat.metadata.items()}


def _gap_checks(result) -> list:
    return [e for e in result.get_asset_check_evaluations() if e.check_name == "raw_trades_gaps"]


def test_raw_trades_materialization_metadata_and_the_gaps_check(kafka, lakehouse):
    produce_trades(kafka, [trade(i) for i in range(1, 31) if i not in (11, 12, 13)]
                   + [trade(i, "binance", "SOLUSDT") for i in range(500, 520)]
                   + [trade(5), (b"coinbase:BTC-USD", b"{bad")])
    result = _run(kafka, lakehouse)
    assert result.success
    md = _materialization(result, "raw_trades")
    assert (md["messages_read"], md["rows_written"], md["quarantined"], md["duplicates"]) == (49, 47, 1, 1)
    assert (md["gaps_found"], md["gaps_healed"], md["gaps_open"], md["trades_missing"]) == (1, 0, 1, 3)
    assert md["quarantine_reasons/invalid_json"] == 1 and md["dlq_published"] == 1
    assert md["dagster/row_count"] == 47 and md["products"] == 2
    per_product = md["rows_per_product"].md if hasattr(md["rows_per_product"], "md") else md["rows_per_product"]
    assert "| binance | SOLUSDT | 20 | 500 | 519 |" in per_product and "| coinbase | BTC-USD | 27 | 1 | 30 |" in per_product
    assert md["min_time"] <= md["max_time"]
    assert str(md["parquet_path"]).endswith("bronze/raw_trades")
    (check,) = _gap_checks(result)
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN  # non-blocking: the run succeeded
    cmd = {k: v.value for k, v in check.metadata.items()}
    assert (cmd["gaps_found"], cmd["gaps_healed"], cmd["gaps_open"], cmd["trades_missing"]) == (1, 0, 1, 3)
    assert "| coinbase | BTC-USD | 1 | 0 | 1 | 3 | 11 |" in cast(str, cmd["per_product"])
    assert check.description == "1 trade-id gap(s) open"

    # the heal arrives: the next run's check passes, per product found 1 / healed 1 / open 0
    produce_trades(kafka, [trade(i, origin="rest") for i in (11, 12, 13)])
    result = _run(kafka, lakehouse)
    md = _materialization(result, "raw_trades")
    assert (md["rows_written"], md["gaps_healed"], md["trades_healed"], md["gaps_open"]) == (3, 1, 3, 0)
    (check,) = _gap_checks(result)
    assert check.passed and check.description == "no open trade-id gap"
    assert "| coinbase | BTC-USD | 1 | 1 | 0 | 0 | None |" in cast(str, check.metadata["per_product"].value)


def test_a_run_without_trades_costs_nothing_and_judges_nothing(kafka, lakehouse):
    produce(kafka, ticks(20))
    result = _run(kafka, lakehouse, selection=("raw_ticks", "raw_trades"))
    assert result.success and _gap_checks(result) == []
    md = _materialization(result, "raw_trades")
    assert md["messages_read"] == 0 and md["dagster/row_count"] == 0 and "rows_per_product" not in md
    assert _materialization(result, "raw_ticks")["rows_written"] == 20
    # the trade pull of an empty topic: no batch, no transaction, a few milliseconds of round trips
    t0 = time.perf_counter()
    r = pull_raw_trades(kafka, lakehouse)
    assert r.batches == [] and time.perf_counter() - t0 < 2.0
    with lakehouse.connect() as conn:
        assert conn.sql("SELECT count(*) FROM ingest_batches WHERE kafka_topic = ?", params=[kafka.trades_topic]
                        ).fetchall()[0][0] == 0


def test_the_backlog_sensor_launches_a_run_when_only_trades_lag(kafka, lakehouse):
    sensor = build_backlog_sensor(incremental_job, min_messages=5, max_wait_seconds=3600, drain_seconds=1.0)
    with dg.DagsterInstance.ephemeral() as instance:
        def tick(cursor=None):
            return evaluate_sensor(sensor, dg.build_sensor_context(instance=instance, cursor=cursor,
                                                                   resources={"kafka": kafka}))

        assert "no backlog" in tick().skip_message
        produce_trades(kafka, [trade(i) for i in range(1, 8)])
        r = tick()
        (req,) = r.run_requests
        assert req.tags["lag"] == "7" and "-trades-" in (req.run_key or "")
        assert "already requested" in tick(r.cursor).skip_message  # the same backlog once
        # the run it launches drains the trades; then there is no backlog
        result = dg.materialize([incremental.incremental], resources={"kafka": kafka, "lakehouse": lakehouse},
                                run_config=req.run_config, selection=["raw_trades"])
        assert result.success and _materialization(result, "raw_trades")["rows_written"] == 7
        assert "no backlog" in tick(r.cursor).skip_message


def test_broker_down_fails_the_run_saying_so(kafka, lakehouse, home):
    produce_trades(kafka, [trade(i) for i in range(1, 6)])
    down = KafkaResource(bootstrap_servers="127.0.0.1:1", home=str(home), timeout_s=2, trades_topic=kafka.trades_topic)
    result = _run(down, lakehouse, raise_on_error=False)
    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    messages, error = [], failure.step_failure_data.error
    while error is not None:  # Dagster's wrapper, then the error the pull raised
        messages.append(error.message)
        error = error.cause
    message = "\n".join(messages)
    assert "127.0.0.1:1 is unreachable" in message and "no offsets were advanced" in message
    with lakehouse.connect() as conn:
        assert conn.sql("SELECT count(*) FROM ingest_positions").fetchall()[0][0] == 0
        assert conn.sql("SELECT count(*) FROM raw_trades").fetchall()[0][0] == 0


def test_a_draining_run_pulls_only_the_topics_with_new_messages(kafka, lakehouse):
    """Ticks and trades at the start; then a burst of ticks only, then of trades only: each later
    pass pulls only the topic the probe saw grow, and everything arrives exactly once."""
    import threading

    from crypto_assets.defs.automation import incremental_run_config

    produce(kafka, ticks(30))
    produce_trades(kafka, [trade(i) for i in range(1, 21)])

    def count(table: str) -> int:
        with lakehouse.connect() as conn:
            return conn.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]

    def wait_for(table: str, n: int) -> None:
        deadline = time.monotonic() + 30
        while count(table) < n and time.monotonic() < deadline:
            time.sleep(0.2)

    def later():
        wait_for("raw_trades", 20)
        produce(kafka, ticks(30, start=30))
        wait_for("raw_ticks", 60)
        produce_trades(kafka, [trade(i) for i in range(21, 41)])

    t = threading.Thread(target=later)
    t.start()
    result = dg.materialize([incremental.incremental], resources={"kafka": kafka, "lakehouse": lakehouse},
                            selection=["raw_ticks", "raw_trades"], run_config=incremental_run_config(drain_seconds=8))
    t.join()
    assert result.success
    trades_md, ticks_md = _materialization(result, "raw_trades"), _materialization(result, "raw_ticks")
    assert (trades_md["rows_written"], ticks_md["rows_written"]) == (40, 60)
    assert trades_md["passes"] >= 3
    assert trades_md["pulls"] == 2 and ticks_md["pulls"] == 2  # the first pass, then one each
    assert count("raw_trades") == 40 and count("raw_ticks") == 60
