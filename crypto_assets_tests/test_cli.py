"""The dagster CLI and the crypto-assets CLI, as a user runs them (subprocesses)."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from crypto_assets.warehouse.lake_layout import dataset_glob
from crypto_assets_tests.helpers import produce, ticks
from crypto_assets_tests.topic_helpers import read_topic

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


def _env(home: Path, bootstrap: str, topic_env: dict | None = None) -> dict:
    env = dict(os.environ)
    env.update(
        {
            "CRYPTO_HOME": str(home),
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "DAGSTER_HOME": str(home / "dagster"),
        }
    )
    (home / "dagster").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster" / "dagster.yaml")
    return env


def _ids(batch: list[dict]) -> set[tuple[str, datetime]]:
    return {(t["coin_id"], datetime.fromisoformat(t["last_updated_at"].replace("Z", "+00:00"))) for t in batch}


def test_dagster_asset_materialize_cli(home):
    """The CLI uses the default topic names: a broker of its own makes them private to this
    test, so bronze must hold exactly the 250 ticks produced, each once, at every offset."""
    from crypto_assets.kafka.embedded_broker import EmbeddedBroker
    from crypto_assets.resources import KafkaResource

    batch = ticks(250)
    with EmbeddedBroker() as b:
        assert b.bootstrap_servers is not None  # started on entering
        kafka = KafkaResource(bootstrap_servers=b.bootstrap_servers, home=str(home))
        assert produce(kafka, batch) == 250
        offsets = {(m.partition, m.offset) for m in read_topic(kafka.bootstrap(), kafka.raw_topic, whole=True)}
        dagster = Path(sys.executable).parent / "dagster"
        proc = subprocess.run(
            [str(dagster), "asset", "materialize", "-m", "crypto_assets.definitions", "--select", "raw_ticks"],
            env=_env(home, b.bootstrap_servers),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=180,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RUN_SUCCESS" in proc.stderr + proc.stdout
    import duckdb

    conn = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    rows = conn.sql("SELECT coin_id, last_updated_at, kafka_partition, kafka_offset FROM raw_ticks").fetchall()
    conn.close()
    assert len(rows) == 250
    assert {(c, t) for c, t, _, _ in rows} == _ids(batch)
    assert {(p, o) for _, _, p, o in rows} == offsets and len(offsets) == 250


def test_produce_and_status_cli(home):
    from crypto_assets.kafka.embedded_broker import EmbeddedBroker
    from crypto_assets.resources import KafkaResource

    exe = [sys.executable, "-m", "crypto_assets.ops.cli"]
    with EmbeddedBroker() as b:  # the CLI writes the default topic: private to this test on its own broker
        assert b.bootstrap_servers is not None  # started on entering
        env = _env(home, b.bootstrap_servers)
        out = subprocess.run(
            exe + ["produce", "--source", "simulate", "--count", "120", "--rate", "0", "--seed", "3"],
            env=env, capture_output=True, text=True, timeout=120,
        )
        assert out.returncode == 0, out.stderr[-2000:]
        stats = json.loads(out.stdout[out.stdout.index("{"):])
        assert stats["sent"] == 120
        kafka = KafkaResource(bootstrap_servers=b.bootstrap_servers)
        docs = [orjson.loads(m.value or b"") for m in read_topic(kafka.bootstrap(), kafka.raw_topic, whole=True)]
        assert len(docs) == 120 and len(_ids(docs)) == 120  # 120 distinct ticks, each once
        assert {d["source"] for d in docs} == {"simulator"}
        st = subprocess.run(exe + ["status"], env=env, capture_output=True, text=True, timeout=60)
        assert "broker       OK" in st.stdout, st.stdout + st.stderr
    down = dict(env, KAFKA_BOOTSTRAP_SERVERS="127.0.0.1:1")
    st = subprocess.run(exe + ["status"], env=down, capture_output=True, text=True, timeout=60)
    assert st.returncode == 1 and "DOWN" in st.stdout


def test_broker_background_and_stop(tmp_path):
    home = tmp_path / "h"
    exe = [sys.executable, "-m", "crypto_assets.ops.cli", "broker", "--home", str(home)]
    env = {k: v for k, v in os.environ.items() if k != "KAFKA_BOOTSTRAP_SERVERS"}
    out = subprocess.run(exe + ["--background"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    address = out.stdout.strip().splitlines()[-1]
    assert address.startswith("127.0.0.1:")
    info = json.loads((home / "broker.json").read_text())
    assert info["bootstrap_servers"] == address
    stop = subprocess.run(exe + ["--stop"], capture_output=True, text=True, timeout=60, env=env)
    assert stop.returncode == 0 and "stopped" in stop.stdout
    assert not (home / "broker.json").exists()


def test_demo_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DAGSTER_HOME")}
    home = tmp_path / "demo"
    out = subprocess.run(
        [sys.executable, "-m", "crypto_assets.ops.cli", "demo", "--home", str(home), "--history", "6h"],
        env=env, capture_output=True, text=True, timeout=600, cwd=REPO,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "bronze rows" in out.stdout and "SUCCESS" in out.stdout
    assert (home / "dagster" / "dagster.yaml").exists()
    assert not (home / "broker.json").exists()
    assert "asset checks" in out.stdout and "FAILED" not in out.stdout
    import duckdb

    conn = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    for table, dataset in [("raw_ticks", "bronze/raw_ticks"), ("clean_ticks", "silver/clean_ticks"),
                           ("market_features", "gold/market_features"), ("ohlcv_1m", "gold/ohlcv_1m"),
                           ("hourly_stats", "gold/hourly_stats")]:
        n = conn.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        files = glob.glob(dataset_glob(home / "lake", dataset))
        assert n > 0 and files, table
        pq = conn.sql(f"SELECT count(*) FROM read_parquet('{dataset_glob(home / 'lake', dataset)}')").fetchall()[0][0]
        assert pq == n, (table, pq, n)
    # the simulated trades of the last 3 h (0.2/s per product) reach bronze and the trade candles
    trades, bars, products, in_bars = conn.sql(
        "SELECT (SELECT count(*) FROM raw_trades), count(*), count(DISTINCT product), sum(trade_count) FROM trade_bars_1m"
    ).fetchall()[0]
    conn.close()
    assert products == 10 and in_bars == trades > 10 * 3 * 3600 * 0.2 * 0.9 and bars > 10 * 170, (trades, bars, products)
    assert "trades produced" in out.stdout and f"raw_trades {trades:,}" in out.stdout
    latest = home / "reports" / "latest"
    assert (latest / "trades_simulator_BTC-USD.png").stat().st_size > 10_000
    assert "simulator:BTC-USD" in (latest / "report.md").read_text()


def test_two_concurrent_runs_both_succeed(tmp_path):
    """Two overlapping runs that both write warehouse.duckdb: the second waits (pool / file
    lock) instead of failing, and ingestion stays exactly once."""
    from crypto_assets.kafka.embedded_broker import EmbeddedBroker
    from crypto_assets.resources import KafkaResource

    home = tmp_path / "conc"
    home.mkdir()
    with EmbeddedBroker() as b:
        assert b.bootstrap_servers is not None  # started on entering
        kafka = KafkaResource(bootstrap_servers=b.bootstrap_servers, home=str(home))
        batch = ticks(3000)
        assert produce(kafka, batch) == 3000
        env = _env(home, b.bootstrap_servers)
        dagster = Path(sys.executable).parent / "dagster"
        # The instance exists before runs overlap (as in any deployment): two processes creating
        # a fresh sqlite instance at once race on its schema migration.
        subprocess.run([str(dagster), "instance", "migrate"], env=env, check=True, capture_output=True, timeout=120)
        cmd = [str(dagster), "asset", "materialize", "-m", "crypto_assets.definitions",
               "--select", "raw_ticks,clean_ticks,market_features,ohlcv_1m"]
        procs = [subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
        outs = [p.communicate(timeout=300)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], "\n".join(o[-2000:] for o in outs)
    import duckdb

    conn = duckdb.connect(str(home / "warehouse.duckdb"), read_only=True)
    assert conn.sql("SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM raw_ticks").fetchall() == [(3000, 3000)]
    assert set(conn.sql("SELECT coin_id, last_updated_at FROM raw_ticks").fetchall()) == _ids(batch)
    features = conn.sql("SELECT coin_id, event_time FROM market_features").fetchall()
    assert len(features) == 3000 and set(features) == _ids(batch)  # every tick cleaned and featured once
    conn.close()
