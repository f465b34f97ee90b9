"""Processes of the stack test: started in their own process group, logged to a file each,
recorded in a pid file (so scripts/stack_test.sh's EXIT trap can stop them even when the driver
dies), and stopped by their own ids only, never by name."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_ok(url: str, timeout_s: float = 3.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as r:
            return 200 <= r.status < 300
    except OSError:
        return False


def http_json(url: str, timeout_s: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout_s) as r:
        return json.loads(r.read())


@dataclass
class Service:
    name: str
    proc: subprocess.Popen
    log: Path
    stop_signal: int = signal.SIGTERM

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Supervisor:
    """Starts services, waits for them, stops them in reverse order."""

    root: Path
    services: list[Service] = field(default_factory=list)

    @property
    def pid_file(self) -> Path:
        return self.root / "pids"

    def start(self, name: str, cmd: Sequence[str], env: Mapping[str, str], *, cwd: Path | None = None,
              user: str | None = None, stop_signal: int = signal.SIGTERM) -> Service:
        log = self.root / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        out = open(log, "ab")
        kwargs = {"user": user, "group": _group_of(user), "extra_groups": []} if user else {}
        proc = subprocess.Popen(list(cmd), env=dict(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, **kwargs)
        out.close()
        svc = Service(name, proc, log, stop_signal)
        self.services.append(svc)
        with open(self.pid_file, "a") as f:
            f.write(f"{proc.pid} {name}\n")
        return svc

    def wait_for(self, svc: Service, ready: Callable[[], bool], timeout_s: float, what: str) -> float:
        """Seconds until `ready()`; raises with the log's tail if the process exits or time runs out."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if svc.proc.poll() is not None:
                raise RuntimeError(f"{svc.name} exited with code {svc.proc.returncode} before {what}:\n{svc.tail()}")
            if ready():
                return time.monotonic() - t0
            time.sleep(0.5)
        raise RuntimeError(f"{svc.name}: no {what} after {timeout_s:.0f}s:\n{svc.tail()}")

    def stop_all(self, timeout_s: float = 20.0) -> None:
        for svc in reversed(self.services):
            stop_group(svc.proc, svc.stop_signal, timeout_s)
        self.services.clear()
        self.pid_file.write_text("")  # all stopped: nothing left for scripts/stack_test.sh's trap


def stop_group(proc: subprocess.Popen, first: int = signal.SIGTERM, timeout_s: float = 20.0) -> None:
    """Signal the process group this process leads (its workers too), escalating to SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, wait in ((first, timeout_s), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            break
        except subprocess.TimeoutExpired:
            continue
    try:  # what the leader left behind in its group (run workers, server workers)
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _group_of(user: str | None) -> int | None:
    if user is None:
        return None
    import pwd

    return pwd.getpwnam(user).pw_gid
