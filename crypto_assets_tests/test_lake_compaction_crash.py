"""Compaction and the export under kill -9 and side by side in two processes: after every kill
the lake read through `list_dataset_files` already holds exactly the DuckDB rows, and a re-run
leaves the same files with the same rows as an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest

from crypto_assets.faults import ENV_VAR
from crypto_assets.resources import LakehouseResource
from crypto_assets.warehouse.lake_compaction import compact_lake
from crypto_assets.warehouse.lake_layout import DAY_FILE, HOUR_FILE_RE, dataset_glob, leaf_dir, leaf_pattern, read_lock
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

pytestmark = pytest.mark.slow

NOW = T0 + timedelta(days=4, hours=1, seconds=1)  # days 0-3 closed, day 4 open
# the fault-point tests run on both layouts: a leaf per (day, symbol) and a leaf per day
LAYOUTS = pytest.mark.parametrize("dataset", [DATASET, BY_DATE_DATASET], ids=["by-symbol", "by-date"])


def _child(*args: str, fault: str | None = None, kill_after: float | None = None) -> tuple[int, str, str]:
    env = dict(os.environ)
    env.pop(ENV_VAR, None)
    if fault:
        env[ENV_VAR] = fault
    proc = subprocess.Popen([sys.executable, "-m", "crypto_assets_tests.lake_child", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if kill_after is not None:
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out.decode(), err.decode()


def _hour_lake(lakehouse: LakehouseResource, days: int = 5, dataset: str = DATASET) -> None:
    with lakehouse.connect() as conn:
        insert_rows(conn, T0, hours=24 * days, dataset=dataset)
        export(conn, lakehouse.lake_path, dataset)


def _expected(lakehouse: LakehouseResource):
    with lakehouse.connect() as conn:
        return table_rows(conn)


def _reference_compaction(lakehouse: LakehouseResource, tmp_path: Path, now=NOW, dataset: str = DATASET) -> dict:
    """The state an uninterrupted compaction leaves, computed on a copy of the lake."""
    ref = tmp_path / "reference-lake"
    shutil.copytree(lakehouse.lake_path, ref)
    compact_lake(ref, now=now)
    return lake_state(ref, dataset)


def _assert_final(lakehouse: LakehouseResource, expected, reference: dict, dataset: str = DATASET) -> None:
    root = lakehouse.lake_path
    assert lake_rows(root, dataset) == expected
    assert lake_state(root, dataset) == reference  # same files, each with the same rows in the same order
    assert list((root / ".staging").glob("*")) == []
    for leaf in (root / dataset).glob(leaf_pattern(dataset)):
        names = os.listdir(leaf)
        assert DAY_FILE not in names or names == [DAY_FILE], leaf


# a kill at each step; a chain is a kill during the recovery of an earlier kill
COMPACTION_CRASHES = [
    ["compact_staged"],                    # merged file left in staging, nothing renamed
    ["compact_day_file_in_place"],         # day file in place, all 24 hour files still beside it
    ["compact_hour_files_partly_deleted"],  # one hour file deleted, 23 left
    ["compact_day_done"],                  # one day done, the others not started
    ["compact_day_file_in_place", "leftovers_partly_deleted"],  # killed again while removing leftovers
    ["compact_staged", "compact_staged"],  # a second staging file left behind
]


@LAYOUTS
@pytest.mark.parametrize("faults", COMPACTION_CRASHES, ids=lambda f: "+".join(f))
def test_compaction_killed_at_a_fault_point_then_rerun(lakehouse, tmp_path, faults, dataset):
    _hour_lake(lakehouse, dataset=dataset)
    expected = _expected(lakehouse)
    reference = _reference_compaction(lakehouse, tmp_path, dataset=dataset)
    for fault in faults:
        code, out, err = _child("compact", str(lakehouse.lake_path), NOW.isoformat(), fault=fault)
        assert code == -signal.SIGKILL, (fault, code, out, err)
        assert lake_rows(lakehouse.lake_path, dataset) == expected  # a reader is right even before the re-run
    code, out, err = _child("compact", str(lakehouse.lake_path), NOW.isoformat())
    assert code == 0, err
    _assert_final(lakehouse, expected, reference, dataset)


def test_compaction_killed_at_random_moments(lakehouse, tmp_path):
    _hour_lake(lakehouse, days=12)
    now = T0 + timedelta(days=13, hours=2)  # all 24 (day, symbol) closed: a run takes seconds
    expected = _expected(lakehouse)
    reference = _reference_compaction(lakehouse, tmp_path, now)
    rng = random.Random(11)
    for _ in range(4):
        _child("compact", str(lakehouse.lake_path), now.isoformat(), kill_after=rng.uniform(0.5, 3.0))
        assert lake_rows(lakehouse.lake_path) == expected
    code, out, err = _child("compact", str(lakehouse.lake_path), now.isoformat())
    assert code == 0, err
    _assert_final(lakehouse, expected, reference)


EXPORT_CRASHES = ["export_day_file_replaced", "leftovers_partly_deleted", "during_parquet_export"]


@LAYOUTS
@pytest.mark.parametrize("fault", EXPORT_CRASHES)
def test_export_into_day_files_killed_then_rerun(lakehouse, tmp_path, fault, dataset):
    _hour_lake(lakehouse, dataset=dataset)
    root = lakehouse.lake_path
    compact_lake(root, now=NOW - timedelta(days=1))  # days 0-2 compacted
    # a compaction killed after its first day file (day 3 / btc): its hour files stay as leftovers
    code, _, err = _child("compact", str(root), NOW.isoformat(), fault="compact_day_file_in_place")
    assert code == -signal.SIGKILL, err
    assert len(os.listdir(leaf_dir(root / dataset, dataset, (T0 + timedelta(days=3)).date(), "btc"))) == 25
    with lakehouse.connect() as conn:
        # late ticks for every closed day (day files, one with leftovers) and for the open day
        for day in range(5):
            insert_rows(conn, T0 + timedelta(days=day, hours=6, minutes=5), hours=1, step_min=60, tag=f"late{day}",
                        dataset=dataset)
        expected = table_rows(conn)
    ref_home = tmp_path / "reference-home"
    shutil.copytree(lakehouse.root, ref_home)
    ref = LakehouseResource(home=str(ref_home))
    with ref.connect() as conn:
        export(conn, ref.lake_path, dataset)
    reference = lake_state(ref.lake_path, dataset)

    code, out, err = _child("export", str(lakehouse.root), dataset, fault=fault)
    assert code == -signal.SIGKILL, (code, out, err)
    code, out, err = _child("export", str(lakehouse.root), dataset)
    assert code == 0, err
    with lakehouse.connect() as conn:
        assert conn.sql("SELECT count(*) FROM lake_pending").fetchall() == [(0,)]
    _assert_final(lakehouse, expected, reference, dataset)


def test_compaction_and_export_in_two_processes(lakehouse, tmp_path):
    """A compaction loop in a child process while this process writes new days and late rows,
    exports them and reads the lake under the shared lock after every export."""
    root = lakehouse.lake_path
    _hour_lake(lakehouse, days=2)
    stop = tmp_path / "stop"
    started = Path(f"{stop}.started")  # the child touches it after its first pass
    far_future = T0 + timedelta(days=400)  # every day in this test is closed
    child = subprocess.Popen([sys.executable, "-m", "crypto_assets_tests.lake_child", "compact", str(root),
                              far_future.isoformat(), str(stop)],
                             env={k: v for k, v in os.environ.items() if k != ENV_VAR},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not started.exists():
            assert child.poll() is None and time.monotonic() < deadline, child.communicate()
            time.sleep(0.05)
        with lakehouse.connect() as conn:
            for k in range(2, 14):
                insert_rows(conn, T0 + timedelta(days=k), hours=24, step_min=30, tag=f"day{k}")  # a whole new day
                insert_rows(conn, T0 + timedelta(days=k - 1, hours=k, minutes=17), hours=1, step_min=60, tag=f"late{k}")
                export(conn, root)
                with read_lock(root, [DATASET]):
                    for leaf in (root / DATASET).glob("date=*/symbol=*"):
                        names = os.listdir(leaf)
                        assert DAY_FILE not in names or names == [DAY_FILE], (leaf, names)
                    assert lake_rows(root) == table_rows(conn)
                    glob_rows = query_rows(f"SELECT count(*) FROM read_parquet('{dataset_glob(root, DATASET)}')")[0][0]
                    assert glob_rows == sum(table_rows(conn).values())
            expected = table_rows(conn)
    finally:
        stop.touch()
        out, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    report = json.loads(out.decode().strip().splitlines()[-1])
    assert report["passes"] >= 1
    compact_lake(root, now=far_future)
    assert lake_rows(root) == expected
    for leaf in (root / DATASET).glob("date=*/symbol=*"):
        assert os.listdir(leaf) == [DAY_FILE]
    assert not any(HOUR_FILE_RE.fullmatch(p.name) for p in (root / DATASET).rglob("*.parquet"))
