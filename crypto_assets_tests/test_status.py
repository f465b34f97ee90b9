"""`crypto-assets status` as a user runs it (a subprocess): exit 0 on a healthy home, 1 after a
failed ERROR-severity check and on an unreadable warehouse (README "Running it live").

The Dagster state it reads is recorded by real runs of the `incremental` step on an instance in
$CRYPTO_HOME/dagster configured with the repo's dagster.yaml, as `crypto-assets demo` sets it up.
"""

import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from crypto_assets.defs import incremental
from crypto_assets_tests.helpers import produce, tick

REPO = Path(__file__).resolve().parents[1]
COINS = ("bitcoin", "ethereum", "solana")
INCREMENTAL_ASSETS = set(incremental.KEYS)


def _ticks(n: int, start: int, base: datetime) -> list[dict]:
    return [tick(i, COINS[i % len(COINS)], base=base) for i in range(start, start + n)]


def _instance_home(home: Path, monkeypatch) -> Path:
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(dagster_home))
    return dagster_home


def _run_incremental(dagster_home: Path, kafka, lakehouse, run_config: dict | None = None) -> dg.ExecuteInProcessResult:
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        return dg.materialize(
            [incremental.incremental], instance=instance, resources={"kafka": kafka, "lakehouse": lakehouse},
            run_config=run_config or {}, raise_on_error=False,
        )


def _status(home: Path, bootstrap: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "KAFKA_", "CRYPTO_"))}
    env.update(CRYPTO_HOME=str(home), KAFKA_BOOTSTRAP_SERVERS=bootstrap, DAGSTER_HOME=str(home / "dagster"))
    return subprocess.run([sys.executable, "-m", "crypto_assets.ops.cli", "status"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=180)


def _asset_lines(out: str) -> dict[str, tuple[str, str]]:
    """asset key -> (when, check summary) from the `asset ...` lines."""
    rows = {}
    for m in re.finditer(r"^asset +(\S+) +materialized (never|[\d,]+s ago) *(.*)$", out, re.M):
        rows[m.group(1)] = (m.group(2), m.group(3).strip())
    return rows


def _newest_per_coin(messages: list[dict]) -> dict[str, str]:
    newest: dict[str, datetime] = defaultdict(lambda: datetime.min.replace(tzinfo=UTC))
    for m in messages:
        t = datetime.fromisoformat(m["last_updated_at"])
        newest[m["coin_id"]] = max(newest[m["coin_id"]], t)
    return {c: f"{t:%Y-%m-%d %H:%M:%S}Z" for c, t in newest.items()}


@pytest.fixture
def healthy(broker, kafka, lakehouse, home, monkeypatch):
    """A home after one successful incremental run over 60 fresh ticks (every check passed)."""
    dagster_home = _instance_home(home, monkeypatch)
    base = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    messages = _ticks(60, 0, base)
    assert produce(kafka, messages) == 60
    result = _run_incremental(dagster_home, kafka, lakehouse)
    assert result.success
    evals = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert evals and all(evals.values()), evals
    return dagster_home, messages, base


def _assert_common_lines(out: str, home: Path, bootstrap: str, messages: list[dict]) -> None:
    lines = out.splitlines()
    assert f"CRYPTO_HOME  {home.resolve()}" in lines, out
    assert f"broker       OK   {bootstrap}" in lines, out
    assert f"table        raw_ticks    {len(messages)} rows" in lines, out
    assert "table        quarantine   0 rows" in lines, out
    assert "table        raw_trades   0 rows" in lines and "trade gaps   0 open, 0 trades missing" in lines, out
    assert any(line.startswith("topic        crypto_trades: lag 0") for line in lines), out
    newest = {m.group(1): m.group(2) for m in re.finditer(r"^newest tick  (\S+) +(\S+ \S+Z)  age ", out, re.M)}
    assert newest == _newest_per_coin(messages), out


def test_status_exits_0_on_a_healthy_home(broker, healthy, home):
    _, messages, _ = healthy
    st = _status(home, broker.bootstrap_servers)
    assert st.returncode == 0, st.stdout + st.stderr
    _assert_common_lines(st.stdout, home, broker.bootstrap_servers, messages)
    assets = _asset_lines(st.stdout)
    # every asset of the code location has a line; exactly the incremental ones were materialized
    from crypto_assets.definitions import defs

    every = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert set(assets) == every, st.stdout
    assert {k for k, (when, _) in assets.items() if when != "never"} == INCREMENTAL_ASSETS, st.stdout
    for key in ("raw_ticks", "clean_ticks", "market_features", "ohlcv_1m"):
        assert assets[key][1] == "checks OK", (key, st.stdout)
    assert "FAILED" not in st.stdout
    assert "mlflow       no models yet" in st.stdout.splitlines()
    assert st.stdout.splitlines()[-1] == "status       HEALTHY"


def test_status_exits_1_after_a_failed_error_check_but_0_after_a_failed_warn_check(
    broker, kafka, lakehouse, home, healthy
):
    dagster_home, messages, base = healthy
    # 1) a non-blocking (WARN) check fails for real: the newest tick is ~4 min old, the limit 1 min
    more = _ticks(15, 60, base)
    produce(kafka, more)
    messages = messages + more
    warn = _run_incremental(dagster_home, kafka, lakehouse,
                            {"ops": {"incremental": {"config": {"freshness_max_age_minutes": 1.0}}}})
    assert warn.success
    assert {e.check_name for e in warn.get_asset_check_evaluations() if not e.passed} == {"clean_ticks_freshness"}
    st = _status(home, broker.bootstrap_servers)
    assert st.returncode == 0, st.stdout + st.stderr
    assert _asset_lines(st.stdout)["clean_ticks"][1] == "FAILED: clean_ticks_freshness(WARN)", st.stdout
    assert st.stdout.splitlines()[-1] == "status       HEALTHY"

    # 2) a blocking (ERROR) check fails for real: a hand-edited clean tick with a negative price
    # among the rows the next pass stamps (README "When a blocking check fails")
    with lakehouse.connect() as conn:
        next_seq = conn.sql("SELECT seq + 1 FROM asset_state WHERE asset = 'clean_ticks'").fetchall()[0][0]
        conn.execute("INSERT INTO clean_ticks SELECT * REPLACE (-1.0 AS price_usd, ? AS clean_seq, "
                     "event_time - INTERVAL 1 DAY AS event_time) FROM clean_ticks WHERE coin_id = 'bitcoin' "
                     "ORDER BY event_time LIMIT 1", [next_seq])
    more = _ticks(15, 75, base)
    produce(kafka, more)
    messages = messages + more
    bad = _run_incremental(dagster_home, kafka, lakehouse)
    assert not bad.success
    assert {e.check_name for e in bad.get_asset_check_evaluations() if not e.passed} == {"clean_ticks_positive_price"}
    st = _status(home, broker.bootstrap_servers)
    assert st.returncode == 1, st.stdout + st.stderr
    _assert_common_lines(st.stdout, home, broker.bootstrap_servers, messages)
    assets = _asset_lines(st.stdout)
    assert assets["clean_ticks"][1] == "FAILED: clean_ticks_positive_price(ERROR)", st.stdout
    assert [k for k, (_, s) in assets.items() if "FAILED" in s] == ["clean_ticks"], st.stdout
    assert "DOWN" not in st.stdout and "UNREADABLE" not in st.stdout
    assert st.stdout.splitlines()[-1] == "status       UNHEALTHY"


def test_status_exits_1_on_a_corrupt_warehouse(broker, lakehouse, home):
    with lakehouse.connect() as conn:  # a real warehouse (schema and all) ...
        conn.execute("CHECKPOINT")
    path = lakehouse.duckdb_path
    with open(path, "r+b") as f:  # ... whose header is then destroyed
        f.write(b"\0" * 4096)
    with pytest.raises(duckdb.Error):
        duckdb.connect(str(path), read_only=True).close()
    st = _status(home, broker.bootstrap_servers)
    assert st.returncode == 1, st.stdout + st.stderr
    lines = st.stdout.splitlines()
    assert f"broker       OK   {broker.bootstrap_servers}" in lines, st.stdout
    bad = [line for line in lines if line.startswith("warehouse    UNREADABLE ")]
    assert len(bad) == 1 and str(path) in bad[0], st.stdout
    assert "dagster      no instance yet (run the demo or `make ui`)" in lines, st.stdout
    assert lines[-1] == "status       UNHEALTHY"
    assert "Traceback" not in st.stdout + st.stderr
