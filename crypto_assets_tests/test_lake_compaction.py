"""Compaction of closed days: one sorted file per leaf (dataset, day[, symbol]), the export still exact
after it (late rows rewrite the day file), and the lake locks."""

from __future__ import annotations

import glob
import os
from datetime import timedelta
from typing import cast

import dagster as dg
import pytest

from crypto_assets.defs.maintenance import compact_lake as compact_lake_op
from crypto_assets.warehouse.lake_compaction import compact_lake, is_closed
from crypto_assets.warehouse.lake_export import mark_dirty
from crypto_assets.warehouse.lake_layout import (
    DAY_FILE,
    LakeLockTimeout,
    dataset_glob,
    duckdb_source,
    hour_file,
    list_dataset_files,
    read_lock,
)
from crypto_assets_tests.lake_helpers import (
    BY_DATE_DATASET,
    DATASET,
    T0,
    export,
    insert_rows,
    lake_rows,
    lake_state,
    query_rows,
    table_rows,
)

NOW = T0 + timedelta(days=2, hours=1, seconds=1)  # days 0 and 1 closed (day 1 ends at T0+2d, 1 h grace), day 2 open


def _leaf(root, day: int, symbol: str):
    return root / DATASET / f"date={(T0 + timedelta(days=day)).date()}" / f"symbol={symbol}"


def _file_rows(path) -> list[tuple]:
    return query_rows(f"SELECT * FROM read_parquet('{path}', hive_partitioning = false)")


def _stats(res):
    return next(d for d in res.datasets if d.dataset == DATASET)


def test_is_closed_boundaries():
    day = T0.date()
    assert not is_closed(day, T0 + timedelta(hours=23, minutes=59))
    assert not is_closed(day, T0 + timedelta(days=1, hours=1))  # end + grace is not yet *before* now
    assert is_closed(day, T0 + timedelta(days=1, hours=1, microseconds=1))
    assert is_closed(day, T0 + timedelta(days=1, microseconds=1), grace=timedelta(0))
    assert not is_closed(day, T0 + timedelta(days=1, hours=5), grace=timedelta(hours=6))


def test_closed_days_become_one_sorted_file_and_rerun_changes_nothing(lakehouse):
    root = lakehouse.lake_path
    with lakehouse.connect() as conn:
        insert_rows(conn, T0, hours=72)
        export(conn, root)
        expected = table_rows(conn)
    closed = [_leaf(root, d, s) for d in (0, 1) for s in ("btc", "eth")]
    hours_concat = {leaf: [r for h in range(24) for r in _file_rows(leaf / hour_file(h))] for leaf in closed}
    sizes = sum(p.stat().st_size for leaf in closed for p in leaf.iterdir())

    res = compact_lake(root, now=NOW)
    st = _stats(res)
    assert (st.days_compacted, st.files_before, st.files_after, st.rows) == (4, 96, 4, 4 * 144)
    assert st.bytes_before == sizes and st.bytes_after == sum((leaf / DAY_FILE).stat().st_size for leaf in closed)
    for leaf in closed:
        assert os.listdir(leaf) == [DAY_FILE]
        rows = _file_rows(leaf / DAY_FILE)
        assert rows == hours_concat[leaf] == sorted(rows, key=lambda r: (r[0], r[1]))  # coin_id, event_time
    for s in ("btc", "eth"):  # the open day keeps its hour files
        assert sorted(os.listdir(_leaf(root, 2, s))) == [hour_file(h) for h in range(24)]
    assert lake_rows(root) == expected
    files = list_dataset_files(root, DATASET)
    assert st.dataset_files == len(files) == 4 + 48
    assert sorted(glob.glob(dataset_glob(root, DATASET))) == [str(p) for p in files]
    assert res.total("days_compacted") == 4  # the other datasets have no files here

    before = lake_state(root)
    mtimes = {p: p.stat().st_mtime_ns for p in files}
    again = compact_lake(root, now=NOW)
    assert again.total("days_compacted") == 0 and again.total("leftovers_removed") == 0
    assert lake_state(root) == before and {p: p.stat().st_mtime_ns for p in files} == mtimes


def test_late_rows_for_a_compacted_day_rewrite_its_day_file(lakehouse):
    root = lakehouse.lake_path
    with lakehouse.connect() as conn:
        insert_rows(conn, T0, hours=72)
        export(conn, root)
        compact_lake(root, now=NOW)
        # a late tick for day 0, a row of day 1 deleted, a late tick for the open day 2
        insert_rows(conn, T0 + timedelta(hours=5, minutes=3), hours=1, step_min=60, tag="late0")
        conn.execute("BEGIN TRANSACTION")
        eth_row = f"symbol = 'eth' AND event_time = '{(T0 + timedelta(days=1, hours=7)).isoformat()}'"
        mark_dirty(conn, DATASET, f"SELECT event_time, symbol FROM t WHERE {eth_row}")
        conn.execute(f"DELETE FROM t WHERE {eth_row}")
        conn.execute("COMMIT")
        insert_rows(conn, T0 + timedelta(days=2, hours=3, minutes=1), hours=1, step_min=60, tag="late2")
        res = export(conn, root)
        assert res.partitions == 2 + 1 + 2
        for leaf in (_leaf(root, 0, "btc"), _leaf(root, 0, "eth"), _leaf(root, 1, "eth")):
            assert os.listdir(leaf) == [DAY_FILE]  # merged into the day file, no hour file beside it
            rows = _file_rows(leaf / DAY_FILE)
            assert rows == sorted(rows, key=lambda r: (r[0], r[1]))
        assert len(_file_rows(_leaf(root, 0, "btc") / DAY_FILE)) == 145
        assert lake_rows(root) == table_rows(conn)
        assert conn.sql("SELECT count(*) FROM lake_pending").fetchall() == [(0,)]

        # every row of a compacted day gone: its day file goes too
        conn.execute("BEGIN TRANSACTION")
        mark_dirty(conn, DATASET,
                   f"SELECT event_time, symbol FROM t WHERE symbol = 'btc' AND CAST(event_time AS DATE) = DATE '{T0.date()}'")
        conn.execute(f"DELETE FROM t WHERE symbol = 'btc' AND CAST(event_time AS DATE) = DATE '{T0.date()}'")
        conn.execute("COMMIT")
        export(conn, root)
        assert os.listdir(_leaf(root, 0, "btc")) == []
        assert lake_rows(root) == table_rows(conn)


def test_marker_pending_across_compaction_still_reaches_the_day_file(lakehouse):
    root = lakehouse.lake_path
    with lakehouse.connect() as conn:
        insert_rows(conn, T0, hours=72)
        export(conn, root)
        insert_rows(conn, T0 + timedelta(days=1, hours=22, minutes=7), hours=1, step_min=60, tag="late")  # not exported yet
        compact_lake(root, now=NOW)  # merges the hour files as they are: the lake lags by the marker
        assert sum(table_rows(conn).values()) - sum(lake_rows(root).values()) == 2
        export(conn, root)
        assert os.listdir(_leaf(root, 1, "btc")) == [DAY_FILE]
        assert lake_rows(root) == table_rows(conn)


def test_writers_wait_for_readers_and_readers_share(lakehouse):
    root = lakehouse.lake_path
    with lakehouse.connect() as conn:
        insert_rows(conn, T0, hours=72)
        export(conn, root)
        before = lake_state(root)
        insert_rows(conn, T0 + timedelta(days=2, hours=5, minutes=1), hours=1, step_min=60, tag="late")
        with read_lock(root):
            with read_lock(root, [DATASET]):  # a second reader: shared locks do not conflict
                assert sum(lake_rows(root).values()) == 2 * 432
            with pytest.raises(LakeLockTimeout):
                compact_lake(root, now=NOW, lock_timeout_s=0.2)
            with pytest.raises(LakeLockTimeout):
                export(conn, root, lock_timeout_s=0.2)
            assert lake_state(root) == before  # nothing touched while the reader holds the lock
            assert conn.sql("SELECT count(*) FROM lake_pending").fetchall() == [(2,)]
        assert _stats(compact_lake(root, now=NOW, lock_timeout_s=0.2)).days_compacted == 4
        export(conn, root, lock_timeout_s=0.2)
        assert lake_rows(root) == table_rows(conn)


def test_compact_lake_op_reports_its_numbers(lakehouse):
    root = lakehouse.lake_path
    with lakehouse.connect() as conn:
        insert_rows(conn, T0, hours=72)
        export(conn, root)
        expected = table_rows(conn)

    @dg.job
    def maintenance():
        compact_lake_op()

    def run(config: dict):
        return maintenance.execute_in_process(run_config={"ops": {"compact_lake": {"config": config}}},
                                              resources={"lakehouse": lakehouse}, raise_on_error=False)

    # grace 24 h: day 0 is closed at NOW, day 1 not yet
    first = run({"grace_hours": 24.0, "as_of": NOW.isoformat()})
    assert first.success
    out = first.output_for_node("compact_lake")
    assert (out["days_compacted"], out["files_before"], out["files_after"], out["rows"]) == (2, 48, 2, 288)
    assert out["per_dataset"][DATASET]["dataset_files"] == 2 + 96
    [event] = [e for e in first.all_events if e.event_type_value == "STEP_OUTPUT"]
    md = event.step_output_data.metadata
    assert md["days_compacted"].value == 2 and md["bytes_after"].value == out["bytes_after"] > 0
    assert cast(dict, md["per_dataset"].value)[DATASET]["files_before"] == 48

    second = run({"as_of": NOW.isoformat(), "datasets": [DATASET]})  # default grace 1 h
    assert second.output_for_node("compact_lake")["days_compacted"] == 2
    assert second.output_for_node("compact_lake")["dataset_files"] == 52
    assert lake_rows(root) == expected
    assert not run({"datasets": ["gold/nope"]}).success


def test_a_date_only_dataset_holds_every_coin_in_one_file_per_day(lakehouse):
    """The small gold datasets: one leaf per day with `symbol` in the files, so a closed day is
    one file for all coins; readers still see `symbol`, typed VARCHAR."""
    root = lakehouse.lake_path
    with lakehouse.connect() as conn:
        insert_rows(conn, T0, hours=72, dataset=BY_DATE_DATASET)
        export(conn, root, BY_DATE_DATASET)
        expected = table_rows(conn)
    day0 = root / BY_DATE_DATASET / f"date={T0.date()}"
    assert sorted(os.listdir(day0)) == [hour_file(h) for h in range(24)]
    assert {r[1] for r in _file_rows(day0 / hour_file(0))} == {"btc", "eth"}  # column 1: symbol
    res = compact_lake(root, now=NOW)
    assert next(d for d in res.datasets if d.dataset == BY_DATE_DATASET).files_after == 2  # days 0 and 1
    assert os.listdir(day0) == [DAY_FILE]
    assert lake_rows(root, BY_DATE_DATASET) == expected
    with read_lock(root, [BY_DATE_DATASET]):
        types = query_rows(f"DESCRIBE SELECT symbol, date FROM {duckdb_source(root, BY_DATE_DATASET)}")
    assert [t[1] for t in types] == ["VARCHAR", "DATE"]
