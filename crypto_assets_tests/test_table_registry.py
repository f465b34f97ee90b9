"""The table registry (crypto_assets.warehouse.tables) is the warehouse, column for column, and
the catalog describes every column of every table asset from it; the incremental protocol
(crypto_assets.warehouse.incremental_table) moves rows, Parquet markers and state together or
not at all; the anomalies transform marks the gold/anomalies hours it changes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import timedelta

import polars as pl
import pytest

from crypto_assets.faults import ENV_VAR
from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.chain import run_incremental
from crypto_assets.transforms.clean import CleanConfig
from crypto_assets.warehouse.incremental_table import incremental_table
from crypto_assets.warehouse.tables import TABLES
from crypto_assets.warehouse.watermarks import get_state, set_state
from crypto_assets_tests.lake_helpers import assert_mirror_equals_table, export_registered
from crypto_assets_tests.silver_helpers import T0, insert_raw_batch, make_ticks

COINS = ["bitcoin", "ethereum"]
TABLE_ASSETS = {"raw_ticks", "raw_trades", "clean_ticks", "market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats", "correlations",
                "anomalies", "predictions", "klines_1m", "trade_bars_1s", "trade_bars_1m", "trade_bars_1h"}


def _main_tables(conn) -> set[str]:
    return {r[0] for r in conn.sql("SELECT table_name FROM duckdb_tables() WHERE schema_name = 'main' "
                                   "AND NOT temporary").fetchall()}


def test_the_registry_is_the_warehouse_column_for_column(tmp_path):
    """After a run, every table in the warehouse is registered and DESCRIBE of each is what its
    registry entry declares (names, order, types): nothing is declared anywhere else."""
    lh = LakehouseResource(home=str(tmp_path / "w"), coins=COINS)
    with lh.connect() as conn:
        insert_raw_batch(conn, make_ticks(60, COINS))
        run_incremental(conn, COINS)
        conn.execute(TABLES["predictions"].ddl)  # created by the predictions asset on first use
        assert _main_tables(conn) == set(TABLES)
        for name, t in TABLES.items():
            described = [(r[0], r[1]) for r in conn.sql(f"DESCRIBE {name}").fetchall()]
            assert described == t.declared_columns(), name
            nullable = {r[0]: r[2] == "YES" for r in conn.sql(f"DESCRIBE {name}").fetchall()}
            assert {c.name: c.constraints.nullable for c in t.column_schema().columns} == nullable, name


def test_every_table_asset_describes_every_column_in_the_catalog():
    from crypto_assets.definitions import defs

    with_schema = {spec.key.to_user_string(): spec.metadata for spec in defs.resolve_all_asset_specs()
                   if "dagster/column_schema" in spec.metadata}
    assert set(with_schema) == TABLE_ASSETS
    for name, md in with_schema.items():
        schema = md["dagster/column_schema"]
        columns = getattr(schema, "schema", schema).columns  # a TableSchemaMetadataValue once normalized
        assert [c.name for c in columns] == TABLES[name].column_names, name
        assert [c.description for c in columns] == [TABLES[name].description(c.name) for c in columns], name
        assert all(c.description and c.description.strip() for c in columns), name
        assert md["dagster/table_name"] == f"warehouse.main.{name}"


def _seed_upstream(conn, seq: int) -> None:
    set_state(conn, "clean_ticks", 0, seq)


def test_nothing_new_opens_no_transaction_and_writes_nothing(tmp_path):
    with LakehouseResource(home=str(tmp_path / "w")).connect() as conn:
        with incremental_table(conn, "ohlcv_1h", upstream="clean_ticks") as inc:
            assert inc.nothing_new and (inc.hwm, inc.seq, inc.upstream) == (0, 0, 0)
            with pytest.raises(RuntimeError, match="outside the increment's transaction"):
                inc.mark_touched("SELECT TIMESTAMPTZ '2026-01-01 10:30:00+00' AS event_time, 'btc' AS symbol")
            conn.execute("BEGIN TRANSACTION")  # fails if the manager had opened one
            conn.execute("ROLLBACK")
        assert conn.sql("SELECT * FROM asset_state").fetchall() == []
        assert conn.sql("SELECT * FROM lake_pending").fetchall() == []


def test_new_rows_commit_with_their_markers_and_state(tmp_path):
    with LakehouseResource(home=str(tmp_path / "w")).connect() as conn:
        _seed_upstream(conn, 3)
        set_state(conn, "ohlcv_1h", 1, 5)
        with incremental_table(conn, "ohlcv_1h", upstream="clean_ticks") as inc:
            assert not inc.nothing_new and (inc.hwm, inc.seq, inc.upstream, inc.new_seq) == (1, 5, 3, 6)
            assert inc.window == "clean_seq > 1 AND clean_seq <= 3"
            inc.mark_touched("SELECT TIMESTAMPTZ '2026-01-01 10:30:00+00' AS event_time, 'btc' AS symbol")
            inc.mark_touched("SELECT TIMESTAMPTZ '2026-01-01 11:05:00+00' AS event_time, 'eth' AS symbol", "market_features")
        assert get_state(conn, "ohlcv_1h") == (3, 6)
        assert sorted(conn.sql("SELECT dataset, hour::VARCHAR, symbol FROM lake_pending").fetchall()) == [
            ("gold/market_features", "2026-01-01 11:00:00+00", "eth"), ("gold/ohlcv_1h", "2026-01-01 10:00:00+00", "btc")]


def test_an_exception_rolls_back_rows_markers_and_state(tmp_path):
    with LakehouseResource(home=str(tmp_path / "w")).connect() as conn:
        _seed_upstream(conn, 2)
        with pytest.raises(RuntimeError, match="boom"):
            with incremental_table(conn, "hourly_stats", upstream="clean_ticks") as inc:
                inc.mark_touched("SELECT TIMESTAMPTZ '2026-01-01 10:30:00+00' AS event_time, 'btc' AS symbol")
                conn.execute("INSERT INTO quarantine (stage, reason, quarantined_at) VALUES ('x', 'y', now())")
                raise RuntimeError("boom")
        assert get_state(conn, "hourly_stats") == (0, 0)
        assert conn.sql("SELECT count(*) FROM lake_pending").fetchall() == [(0,)]
        assert conn.sql("SELECT count(*) FROM quarantine").fetchall() == [(0,)]


def test_raw_ticks_upstream_is_the_newest_batch_and_keep_state_commits_rows_only(tmp_path):
    with LakehouseResource(home=str(tmp_path / "w"), coins=COINS).connect() as conn:
        insert_raw_batch(conn, make_ticks(3, COINS))
        second = insert_raw_batch(conn, make_ticks(3, COINS, start=T0 + timedelta(hours=1)))
        with incremental_table(conn, "clean_ticks", upstream="raw_ticks") as inc:
            assert (inc.hwm, inc.upstream) == (0, second) and inc.window == f"batch_id > 0 AND batch_id <= {second}"
        assert get_state(conn, "clean_ticks") == (second, 1)
        # a repair (no upstream): its own sequence moves, the high-water mark stays
        with incremental_table(conn, "clean_ticks", upstream=None) as inc:
            assert not inc.nothing_new and inc.new_seq == 2
        assert get_state(conn, "clean_ticks") == (second, 2)
        with incremental_table(conn, "clean_ticks", upstream=None) as inc:
            conn.execute("INSERT INTO quarantine (stage, reason, quarantined_at) VALUES ('x', 'y', now())")
            inc.keep_state()
        assert get_state(conn, "clean_ticks") == (second, 2)
        assert conn.sql("SELECT stage, reason FROM quarantine").fetchall() == [("x", "y")]


_CHILD = """
import sys
from crypto_assets.resources import LakehouseResource
from crypto_assets.warehouse.incremental_table import incremental_table
with LakehouseResource(home=sys.argv[1]).connect() as conn:
    with incremental_table(conn, "ohlcv_1m", upstream="clean_ticks", before_commit="probe_before_commit") as inc:
        inc.mark_touched("SELECT TIMESTAMPTZ '2026-01-01 10:30:00+00' AS event_time, 'btc' AS symbol")
"""


def test_a_kill_between_state_and_commit_leaves_neither(tmp_path):
    """SIGKILL after the state update, before COMMIT: the marker and the state are both gone."""
    home = tmp_path / "w"
    with LakehouseResource(home=str(home)).connect() as conn:
        _seed_upstream(conn, 4)
    env = {**os.environ, ENV_VAR: "probe_before_commit"}
    killed = subprocess.run([sys.executable, "-c", _CHILD, str(home)], env=env, capture_output=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    with LakehouseResource(home=str(home)).connect() as conn:
        assert get_state(conn, "ohlcv_1m") == (0, 0)
        assert conn.sql("SELECT count(*) FROM lake_pending").fetchall() == [(0,)]
    env.pop(ENV_VAR)
    done = subprocess.run([sys.executable, "-c", _CHILD, str(home)], env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    with LakehouseResource(home=str(home)).connect() as conn:
        assert get_state(conn, "ohlcv_1m") == (4, 1)
        assert conn.sql("SELECT dataset, symbol FROM lake_pending").fetchall() == [("gold/ohlcv_1m", "btc")]


def _volume_ticks(volumes: list[float], offsets_s: list[int]) -> pl.DataFrame:
    return pl.DataFrame({"coin_id": ["bitcoin"] * len(volumes), "symbol": ["btc"] * len(volumes),
                         "last_updated_at": [T0 + timedelta(seconds=s) for s in offsets_s],
                         "price_usd": [90_000.0] * len(volumes), "volume_24h_usd": volumes})


LATE_OK = CleanConfig(lateness=timedelta(hours=2))  # the late tick below is cleaned, not quarantined


def _export_anomalies(conn, lake) -> None:
    export_registered(conn, lake, "anomalies")


def test_the_anomalies_mirror_follows_the_table(tmp_path):
    """The anomalies transform marks the hours it changes, so the export (as the incremental step
    runs it) mirrors exactly the table: a new spike appears in the lake, and an unpublished one
    that a late tick takes back disappears from it."""
    lh = LakehouseResource(home=str(tmp_path / "w"), coins=["bitcoin"])
    with lh.connect() as conn:
        # 1e8 -> 4e8 at 20 s: +300 %, a volume_spike; a second one in the next hour
        insert_raw_batch(conn, _volume_ticks([1e8, 1e8, 4e8, 4e8, 2e9], [0, 10, 20, 3600, 3610]))
        run_incremental(conn, ["bitcoin"], LATE_OK)
        spikes = conn.sql("SELECT event_time FROM anomalies WHERE rule = 'volume_spike' ORDER BY 1").fetchall()
        assert [t for (t,) in spikes] == [T0 + timedelta(seconds=20), T0 + timedelta(seconds=3610)]
        _export_anomalies(conn, lh.lake_path)
        assert_mirror_equals_table(conn, lh.lake_path, "gold/anomalies", "anomalies")
        # a late tick at 15 s with 3e8: 1e8 -> 3e8 is +200 % (not more) and 3e8 -> 4e8 only +33 %
        insert_raw_batch(conn, _volume_ticks([3e8], [15]), ingested_at=T0 + timedelta(seconds=3620))
        run_incremental(conn, ["bitcoin"], LATE_OK)
        assert conn.sql("SELECT count(*) FROM quarantine").fetchall() == [(0,)]
        spikes = conn.sql("SELECT event_time FROM anomalies WHERE rule = 'volume_spike' ORDER BY 1").fetchall()
        assert [t for (t,) in spikes] == [T0 + timedelta(seconds=3610)]
        _export_anomalies(conn, lh.lake_path)
        assert_mirror_equals_table(conn, lh.lake_path, "gold/anomalies", "anomalies")


def test_a_warehouse_an_older_release_created_gains_the_columns_added_since(tmp_path):
    """Upgrading in place: anomalies written before `source` existed (NOT NULL DEFAULT 'ticks')
    get the column with its default on the next connect, the drift check passes, and a column
    that cannot be added in place (NOT NULL, no default) is left for the drift check to report."""
    import duckdb

    from crypto_assets.defs.schema_checks import schema_matches

    lh = LakehouseResource(home=str(tmp_path / "w"), coins=COINS)
    lines = [ln for ln in TABLES["anomalies"].body.splitlines() if not ln.strip().startswith("source ")]
    old = "CREATE TABLE anomalies (" + "\n".join(lines) + "\n)"
    old = old.replace("published_at    TIMESTAMPTZ,", "published_at    TIMESTAMPTZ")
    lh.root.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(lh.duckdb_path)) as raw:
        raw.execute(old)
        raw.execute("INSERT INTO anomalies VALUES ('a1', 'bitcoin', 'btc', now(), 'price_zscore', 'warning', 5, 4, 1, "
                    "NULL, now(), NULL)")
    with lh.connect() as conn:
        assert conn.sql("SELECT anomaly_id, source FROM anomalies").fetchall() == [("a1", "ticks")]
        assert schema_matches(conn, "anomalies").passed
    # from nothing: only the nullable and defaulted columns can be added in place
    stmts = TABLES["anomalies"].add_column_ddl(set())
    added = [s.split("ADD COLUMN ")[1].split()[0] for s in stmts]
    assert added == ["volume_24h_usd", "published_at", "source"]
