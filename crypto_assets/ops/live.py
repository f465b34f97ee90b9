"""`crypto-assets live`: embedded broker + a steady simulator + `dagster dev` with the sensors
on, stopped together on Ctrl-C.

`dagster dev` runs in its own process group (a background `dagster dev` without job control
ignores SIGINT/SIGTERM), so shutdown signals the whole group and escalates to SIGKILL.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from crypto_assets import settings
from crypto_assets.ops.home import REPO_ROOT, prepare_home
from crypto_assets.ops.processes import RotatingLogPump


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", help="data root (default $CRYPTO_HOME or ./var)")
    p.add_argument("--rate", type=float, default=20.0, help="simulated ticks per second (all coins)")
    p.add_argument("--port", type=int, default=3000, help="Dagster UI port")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--duration", type=float, default=None, help="stop after this many seconds (default: until Ctrl-C)")


class _DevLog(RotatingLogPump):
    """The `dagster dev` log, noticing when the webserver cannot bind its port (it then stays up
    without serving, so dagster dev never exits on its own)."""

    bind_failed = False

    def write(self, data: bytes) -> None:
        if b"error while attempting to bind" in data and b"address already in use" in data:
            self.bind_failed = True
        super().write(data)


def _stop_group(proc: subprocess.Popen, timeout_s: float = 20.0) -> None:
    if proc.poll() is not None:
        return
    pgid = os.getpgid(proc.pid)
    for sig, wait in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def cmd_live(args) -> int:
    home = Path(args.home).resolve() if args.home else settings.crypto_home()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["CRYPTO_HOME"] = str(home)
    os.environ["CRYPTO_AUTOMATION"] = "on"  # sensors and schedules start RUNNING
    # Live mode favours freshness: any lag starts a run. Runs still batch, because the sensor
    # waits while one is queued or running; set these in the environment to batch more.
    os.environ.setdefault("BACKLOG_MIN_MESSAGES", "1")
    os.environ.setdefault("BACKLOG_MAX_WAIT_SECONDS", "1")
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    prepare_home(home)

    from crypto_assets.kafka.embedded_broker import EmbeddedBroker, remove_broker_file, write_broker_file
    from crypto_assets.producers.simulator.config import SimulatorConfig
    from crypto_assets.producers.simulator.run import run_simulator
    from crypto_assets.settings import kafka_resource

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    broker = None
    if not settings.kafka_bootstrap_override():
        broker = EmbeddedBroker()
        broker.start()
        write_broker_file(home, broker)
        assert broker.bootstrap_servers is not None  # set by start()
        os.environ["KAFKA_BOOTSTRAP_SERVERS"] = broker.bootstrap_servers
        print(f"embedded Kafka broker on {broker.bootstrap_servers}", flush=True)
    producer = threading.Thread(
        target=run_simulator,
        args=(kafka_resource(), SimulatorConfig(seed=args.seed, rate=args.rate)),
        kwargs={"stop_event": stop, "log": lambda m: None},
        name="simulator",
        daemon=True,
    )
    producer.start()
    print(f"simulator producing {args.rate:g} ticks/s to crypto_raw", flush=True)
    dagster = Path(sys.executable).parent / "dagster"
    log_path = home / "dagster-dev.log"
    log = _DevLog(log_path)
    repo = REPO_ROOT
    workspace = repo / "workspace.yaml"
    cmd = [str(dagster), "dev", "-p", str(args.port)]
    cmd += ["-w", str(workspace)] if workspace.exists() else ["-m", "crypto_assets.definitions"]
    dev = subprocess.Popen(cmd, cwd=repo if workspace.exists() else None, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           stdin=subprocess.DEVNULL, start_new_session=True, env=dict(os.environ))
    pump = threading.Thread(target=log.pump, args=(dev.stdout,), name="dagster-dev-log", daemon=True)
    pump.start()
    print(f"dagster dev (pid {dev.pid}) on http://127.0.0.1:{args.port} — log {log_path}", flush=True)
    print("kafka_backlog_sensor launches incremental runs as ticks arrive; Ctrl-C stops everything", flush=True)
    started = time.monotonic()
    code = 0
    try:
        while not stop.is_set():
            if dev.poll() is not None:
                print(f"dagster dev exited with code {dev.returncode}; see {log_path}", file=sys.stderr)
                code = 1
                break
            if log.bind_failed:  # the webserver then lives on without serving: no UI at all
                print(f"the Dagster UI cannot listen on port {args.port}: address already in use "
                      f"(pass another --port); see {log_path}", file=sys.stderr)
                code = 1
                break
            if args.duration is not None and time.monotonic() - started >= args.duration:
                break
            stop.wait(0.5)
    finally:
        stop.set()
        print("stopping: dagster dev, simulator, broker ...", flush=True)
        _stop_group(dev)
        producer.join(10)
        if broker is not None:
            remove_broker_file(home)
            broker.stop()
        pump.join(5)
        print("stopped", flush=True)
    return code
