"""`crypto-assets live` starts broker + simulator + dagster dev and stops all of them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_live_mode_starts_and_stops_cleanly_on_sigint(tmp_path):
    home = tmp_path / "live"
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DAGSTER_HOME")}
    env["SENSOR_INTERVAL_SECONDS"] = "2"
    proc = subprocess.Popen(
        [sys.executable, "-m", "crypto_assets.cli", "live", "--home", str(home), "--port", str(port), "--rate", "50"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        up = False
        while time.monotonic() < deadline and not up:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    up = True
            except OSError:
                time.sleep(1)
        assert up, "dagster dev did not come up"
        assert (home / "broker.json").exists()
        time.sleep(15)  # let the sensor see the backlog
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, out
    assert "stopped" in out
    assert not (home / "broker.json").exists()
    # nothing of the group survives: dagster dev, its webserver/daemon/code servers
    left = subprocess.run(["pgrep", "-g", str(proc.pid)], capture_output=True, text=True).stdout.strip()
    assert left == "", left
    dev = subprocess.run(["pgrep", "-f", f"dagster dev -p {port}"], capture_output=True, text=True).stdout.strip()
    assert dev == "", f"dagster dev still running: {dev}"
    web = subprocess.run(["pgrep", "-f", f"--port {port}"], capture_output=True, text=True).stdout.strip()
    assert web == "", f"webserver still running: {web}"
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, "the UI port is still served"
