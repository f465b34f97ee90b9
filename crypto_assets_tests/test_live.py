"""`crypto-assets live` (README "Running it live"): broker + simulator + `dagster dev`; the backlog
sensor's runs ingest the simulated ticks, and Ctrl-C (SIGINT) stops everything it started."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from datetime import datetime
from pathlib import Path
from typing import cast

import duckdb
import psutil
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from crypto_assets.ops.processes import pid_alive
from crypto_assets.ops.ui_check import look_at_dagster

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
RAW_TOPIC = "crypto_raw"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Live:
    """One `crypto-assets live` process and every process it started (tracked by pid and start
    time while it runs, so the check after shutdown cannot be fooled by a reused pid)."""

    def __init__(self, home: Path, out: Path, port: int) -> None:
        self.home, self.out, self.port = home, out, port
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("KAFKA_", "DAGSTER_", "CRYPTO_", "BACKLOG_", "INCREMENTAL_", "MLFLOW_"))}
        env["SENSOR_INTERVAL_SECONDS"] = "2"
        with open(out, "wb") as f:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "crypto_assets.ops.cli", "live", "--home", str(home), "--port", str(port),
                 "--rate", "20"],
                env=env, cwd=REPO, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own group, as in a terminal; dagster dev has another
            )
        self.dev_pid: int | None = None
        self.seen: dict[int, tuple[float, str]] = {}  # pid -> (start time, command line)

    def output(self) -> str:
        return self.out.read_text(errors="replace")

    def dev_log(self) -> str:
        p = self.home / "dagster-dev.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def track(self) -> list[psutil.Process]:
        """Record the live process tree and everything in its two process groups."""
        if self.dev_pid is None:
            m = re.search(r"dagster dev \(pid (\d+)\)", self.output())
            self.dev_pid = int(m.group(1)) if m else None
        procs = []
        try:
            root = psutil.Process(self.proc.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
        procs += [p for p in self._in_groups() if p.pid not in {q.pid for q in procs}]
        for p in procs:
            try:
                if p.pid not in self.seen:
                    self.seen[p.pid] = (p.create_time(), " ".join(p.cmdline()))
            except psutil.NoSuchProcess:
                pass
        return procs

    def _groups(self) -> set[int]:
        return {self.proc.pid} | ({self.dev_pid} if self.dev_pid else set())

    def _in_groups(self) -> list[psutil.Process]:
        out = []
        for p in psutil.process_iter():
            try:
                if os.getpgid(p.pid) in self._groups() and pid_alive(p.pid):
                    out.append(p)
            except (ProcessLookupError, psutil.NoSuchProcess):
                pass
        return out

    def serving(self) -> bool:
        """True once a process of dagster dev's tree listens on the port: our webserver, not
        whatever else might hold that port."""
        for p in self.track():
            try:
                if any(c.status == psutil.CONN_LISTEN and c.laddr.port == self.port
                       for c in p.net_connections(kind="inet")):
                    return True
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return False

    def survivors(self) -> list[str]:
        left = []
        for pid, (created, cmd) in self.seen.items():
            try:
                if psutil.Process(pid).create_time() == created and pid_alive(pid):
                    left.append(f"{pid} {cmd[:200]}")
            except psutil.NoSuchProcess:
                pass
        left += [f"{p.pid} (in group {os.getpgid(p.pid)})" for p in self._in_groups()]
        return left

    def kill(self) -> None:
        for pgid in self._groups():
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(10)


def _start_live(tmp_path: Path, deadline_s: float = 240.0) -> Live:
    """Start live mode (fresh CRYPTO_HOME) on a free port; if another process takes the port
    between the probe and the webserver's bind (live mode then stops, saying so), retry on a
    fresh port."""
    for attempt in range(3):
        live = Live(tmp_path / f"live-{attempt}", tmp_path / f"live-{attempt}.out", _free_port())
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            if live.serving():
                return live
            if live.proc.poll() is not None:
                break
            time.sleep(0.5)
        if live.proc.poll() is None:
            live.kill()
            raise AssertionError(f"dagster dev did not serve port {live.port} within {deadline_s:.0f}s:\n"
                                 f"{live.output()}\n{live.dev_log()[-5000:]}")
        live.kill()
        if "address already in use" not in live.output():
            raise AssertionError(f"live mode exited with {live.proc.returncode}:\n{live.output()}\n"
                                 f"{live.dev_log()[-5000:]}")
    raise AssertionError("three ports in a row were taken before the webserver bound them")


def _produced_ticks(bootstrap: str, at_least: int, deadline: float) -> dict[tuple[int, int], tuple[str, datetime]]:
    """(partition, offset) -> (coin_id, last_updated_at) of the first messages the simulator wrote,
    read back from the broker: the ticks the warehouse must end up with."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"live-test-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False, "enable.partition.eof": True})
    try:
        parts = sorted(c.list_topics(topic=RAW_TOPIC, timeout=10).topics[RAW_TOPIC].partitions)
        while True:
            highs = {p: c.get_watermark_offsets(TopicPartition(RAW_TOPIC, p), timeout=5)[1] for p in parts}
            if sum(highs.values()) >= at_least:
                break
            assert time.monotonic() < deadline, f"the simulator produced only {highs}"
            time.sleep(0.5)
        c.assign([TopicPartition(RAW_TOPIC, p, OFFSET_BEGINNING) for p in parts if highs[p] > 0])
        got: dict[tuple[int, int], tuple[str, datetime]] = {}
        want = sum(highs.values())
        while len(got) < want:
            assert time.monotonic() < deadline, f"read back {len(got)} of {want} messages"
            msg = c.poll(1.0)
            if msg is None or msg.error():
                continue
            p, o = msg.partition(), msg.offset()
            assert p is not None and o is not None  # a consumed message has both
            if o < highs[p]:
                tick = json.loads(cast(bytes, msg.value()))  # the simulator's ticks all have a value
                got[(p, o)] = (tick["coin_id"], datetime.fromisoformat(tick["last_updated_at"]))
        return got
    finally:
        c.close()


def _warehouse_rows(path: Path, table: str, keys) -> dict[tuple[int, int], tuple[str, datetime]] | None:
    """(partition, offset) -> (coin_id, event time) of `table` rows among `keys`, or None while the
    file is missing or a writer holds its lock (read-only, held for one query)."""
    if not path.exists():
        return None
    try:
        conn = duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            return None
        raise
    try:
        conn.execute("SET TimeZone = 'UTC'")
        found = conn.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [table]).fetchone()
        assert found is not None  # count(*) is one row
        if not found[0]:
            return None
        when = "last_updated_at" if table == "raw_ticks" else "event_time"
        topic = f"AND kafka_topic = '{RAW_TOPIC}'" if table == "raw_ticks" else ""
        rows = conn.execute(f"SELECT kafka_partition, kafka_offset, coin_id, {when} FROM {table} "
                            f"WHERE kafka_offset <= {max(o for _, o in keys)} {topic}").fetchall()
    finally:
        conn.close()
    return {(p, o): (c, t) for p, o, c, t in rows if (p, o) in keys}


def test_live_mode_ingests_ticks_then_stops_cleanly_on_sigint(tmp_path):
    live = _start_live(tmp_path)
    home = live.home
    try:
        info = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{live.port}/server_info", timeout=10).read())
        assert "dagster_webserver_version" in info, info
        broker = json.loads((home / "broker.json").read_text())
        deadline = time.monotonic() + 180
        produced = _produced_ticks(broker["bootstrap_servers"], at_least=40, deadline=deadline)
        warehouse = home / "warehouse.duckdb"
        raw = clean = None
        while time.monotonic() < deadline:
            live.track()
            assert live.proc.poll() is None, live.output()
            raw = _warehouse_rows(warehouse, "raw_ticks", produced)
            clean = _warehouse_rows(warehouse, "clean_ticks", produced) if raw == produced else None
            if clean == produced:
                break
            time.sleep(1.0)
        assert raw == produced, (f"{len(raw or {})} of {len(produced)} simulated ticks reached raw_ticks in time",
                                 live.dev_log()[-5000:])
        assert clean == produced, f"{len(clean or {})} of {len(produced)} simulated ticks reached clean_ticks in time"
        # what a person opening the UI meanwhile sees, in headless Chromium: the asset graph and
        # clean_ticks' page (blank or error pages fail; its run is still draining, so no row count yet)
        shots = look_at_dagster(f"http://127.0.0.1:{live.port}", tmp_path / "ui")
        assert [shot.png.name for shot in shots] == ["asset_graph.png", "asset_clean_ticks.png"]
        live.track()
        live.proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        live.proc.wait(90)
    finally:
        if live.proc.poll() is None:
            live.kill()
    out = live.output()
    assert live.proc.returncode == 0, out
    assert "stopped" in out.splitlines(), out
    assert not (home / "broker.json").exists()
    # nothing it started survives: dagster dev, its webserver, daemon, code servers, run workers
    commands = [cmd for _, cmd in live.seen.values()]
    assert live.dev_pid in live.seen and " dev -p " in live.seen[live.dev_pid][1], live.seen
    for part in ("dagster_webserver", "dagster._daemon"):
        assert any(part in cmd for cmd in commands), (part, commands)
    assert live.survivors() == []
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", live.port)) != 0, "the UI port is still served"


def test_live_mode_on_a_taken_port_says_so_and_stops_everything(tmp_path):
    """The webserver cannot bind a port someone else listens on (and then stays up without
    serving): live mode must say so and stop, not run on without a UI."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        live = Live(tmp_path / "home", tmp_path / "live.out", taken.getsockname()[1])
        try:
            deadline = time.monotonic() + 240
            while live.proc.poll() is None and time.monotonic() < deadline:
                live.track()
                time.sleep(0.5)
        finally:
            if live.proc.poll() is None:
                live.kill()
    out = live.output()
    assert live.proc.returncode == 1, out
    assert f"the Dagster UI cannot listen on port {live.port}: address already in use" in out, out
    assert "stopped" in out.splitlines(), out
    assert not (live.home / "broker.json").exists()
    assert live.dev_pid in live.seen, live.seen
    assert live.survivors() == []
