"""The public timing hooks the benchmarks use instead of patching the package: the pull's phase
timings, run_incremental's per-step timings, TickProducer's delivery callback and poll()."""

from __future__ import annotations

from crypto_assets.ingest.pull import pull_raw_ticks
from crypto_assets.kafka.producer import TickProducer
from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.chain import run_incremental
from crypto_assets_tests.helpers import produce, ticks
from crypto_assets_tests.silver_helpers import insert_raw_batch, make_ticks

PULL_PHASES = {"consumer_open", "metadata", "watermarks", "consume", "consume_fetch", "parse", "write",
               "group_commit", "dlq", "export", "consumer_close"}


def test_a_pull_reports_the_time_of_each_phase(kafka, lakehouse):
    assert produce(kafka, ticks(30)) == 30
    res = pull_raw_ticks(kafka, lakehouse)
    assert res.rows_written == 30
    assert set(res.timings) == PULL_PHASES
    assert all(v >= 0 for v in res.timings.values())
    # the nested phases are parts of their parents, and the top-level ones of the whole call
    assert res.timings["consume_fetch"] <= res.timings["consume"]
    assert res.timings["parse"] <= res.timings["write"]
    top = sum(v for k, v in res.timings.items() if k not in ("consume_fetch", "parse"))
    assert top <= res.duration_s * 1.05


def test_run_incremental_adds_each_steps_time(tmp_path):
    coins = ["bitcoin", "ethereum"]
    with LakehouseResource(home=str(tmp_path / "h"), coins=coins).connect() as conn:
        insert_raw_batch(conn, make_ticks(50, coins=tuple(coins)))
        timings: dict[str, float] = {}
        out = run_incremental(conn, coins, timings=timings)
        assert set(timings) == set(out)
        first = dict(timings)
        run_incremental(conn, coins, timings=timings)  # adds to what is there
        assert all(timings[k] > first[k] > 0 for k in first)


def test_the_delivery_callback_sees_every_message(kafka):
    seen: list[tuple[object, bytes]] = []
    tp = TickProducer(kafka, on_delivery=lambda err, msg: seen.append((err, msg.value())))
    values = [f"v{i}".encode() for i in range(5)]
    for v in values:
        tp.send_raw(b"k", v)
    stats = tp.flush(10.0)
    assert sorted(v for _, v in seen) == values
    assert [e for e, _ in seen] == [None] * 5
    assert stats.delivered == 5
    assert tp.poll(0.0) == 0  # nothing left to serve
