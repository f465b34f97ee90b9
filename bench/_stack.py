"""The processes of a live bench: the embedded broker, a DAGSTER_HOME with the repo's dagster.yaml,
`dagster dev` (or any command) in its own process group and its orderly stop, the roles and RSS
of a `dagster dev` tree, and SIGINT/SIGTERM turned into a flag while a bench runs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench._common import REPO, tree_rss


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_dagster_home(home: Path) -> Path:
    """<home>/dagster with a copy of the repo's dagster.yaml; pays a fresh warehouse's one-time
    first-write checkpoint (~1 s on 20M rows, once in a database's life) as setup, not run."""
    if (home / "warehouse.duckdb").exists():
        subprocess.run([sys.executable, "-c", f"import duckdb; duckdb.connect({str(home / 'warehouse.duckdb')!r}).execute("
                        "\"UPDATE asset_state SET updated_at = updated_at WHERE asset = 'clean_ticks'\").close()"], check=True)
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    return dagster_home


def start_broker(home: Path):
    """An in-process EmbeddedBroker with broker.json in `home` (stop it with stop_broker)."""
    from crypto_assets.kafka.embedded_broker import EmbeddedBroker, write_broker_file

    broker = EmbeddedBroker()
    broker.start()
    write_broker_file(home, broker)
    return broker


def stop_broker(home: Path, broker) -> None:
    from crypto_assets.kafka.embedded_broker import remove_broker_file

    remove_broker_file(home)
    broker.stop()


def dagster_dev_cmd(port: int, workspace: Path | None = None) -> list[str]:
    """`dagster dev -p PORT -w WORKSPACE` (the repo's workspace.yaml by default)."""
    workspace = workspace or REPO / "workspace.yaml"
    cmd = [str(Path(sys.executable).parent / "dagster"), "dev", "-p", str(port)]
    return cmd + (["-w", str(workspace)] if workspace.exists() else ["-m", "crypto_assets.definitions"])


def launch_group(cmd: list[str], env: dict[str, str], log_path: Path, cwd: Path = REPO) -> subprocess.Popen:
    """`cmd` in its own process group (a background `dagster dev` without job control ignores
    SIGINT, so it is stopped through the group), stdout and stderr appended to log_path."""
    log = open(log_path, "ab")
    try:
        return subprocess.Popen(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    finally:
        log.close()  # the child has its own descriptor


def launch_dagster_dev(home: Path, env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, int]:
    """`dagster dev -w workspace.yaml` from the repo root in its own process group."""
    port = free_port()
    return launch_group(dagster_dev_cmd(port), env, log_path), port


def stop_group(proc: subprocess.Popen, sigint_wait: float = 20.0) -> str:
    """SIGINT, then SIGTERM, then SIGKILL to the process group; returns the last signal it took."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return "already exited"
    used = "already exited"
    for sig, wait in ((signal.SIGINT, sigint_wait), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)  # also reaches children left behind by an exited leader
        except ProcessLookupError:
            return used
        used = sig.name
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:  # the leader is gone: wait for the rest of the group
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return used
            time.sleep(0.2)
    return used


@contextmanager
def interrupt_flag() -> Iterator[threading.Event]:
    """SIGINT and SIGTERM set the yielded event instead of raising (the bench then stops its stack
    in order); the previous handlers are restored on exit."""
    flag = threading.Event()
    old = {sig: signal.signal(sig, lambda *_: flag.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def stack_roles(root_pid: int) -> dict[str, list[int]]:
    """The processes of a `dagster dev` tree by role, from their command lines."""
    import psutil

    roles: dict[str, list[int]] = {}
    try:
        procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    except psutil.Error:
        return roles
    for p in procs:
        try:
            parent_proc = p.parent()
            cmd, parent = " ".join(p.cmdline()), " ".join(parent_proc.cmdline()) if parent_proc else ""
        except psutil.Error:
            continue
        role = ("dev" if p.pid == root_pid else "daemon" if "dagster-daemon" in cmd or "daemon run" in cmd
                else "webserver" if "dagster-webserver" in cmd or "dagster_webserver" in cmd
                else "code_server" if "grpc" in cmd or "code-server" in cmd
                else "run_worker" if "forkserver" in cmd and "forkserver" in parent  # a fork keeps the cmdline
                else "forkserver" if "forkserver" in cmd else "resource_tracker" if "resource_tracker" in cmd
                else "other")
        roles.setdefault(role, []).append(p.pid)
    return roles


def role_rss(root_pid: int) -> dict[str, int]:
    """RSS per role (own RSS of its processes, not their children), plus 'total' of the tree."""
    import psutil

    out: dict[str, int] = {}
    for role, pids in stack_roles(root_pid).items():
        for pid in pids:
            try:
                out[role] = out.get(role, 0) + psutil.Process(pid).memory_info().rss
            except psutil.Error:
                pass
    out["total"] = tree_rss(root_pid)
    return out
