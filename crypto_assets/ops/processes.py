"""Process helpers with no heavy imports (the run launcher loads this inside the daemon)."""

import os
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie waiting to be reaped."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs: existence is all we can tell
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


class RotatingLogPump:
    """Copy a child's output into `path`, rotating at `max_bytes` (path.1 .. path.<keep>): a
    `dagster dev` left running for weeks logs every sensor tick, and an append-only file would
    grow without bound."""

    def __init__(self, path: Path, max_bytes: int = 10 * 1024 * 1024, keep: int = 3) -> None:
        self.path, self.max_bytes, self.keep = Path(path), max_bytes, keep
        self._out = open(self.path, "ab")

    def _rotate(self) -> None:
        self._out.close()
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._out = open(self.path, "ab")

    def write(self, data: bytes) -> None:
        if self._out.tell() + len(data) > self.max_bytes and self._out.tell() > 0:
            self._rotate()
        self._out.write(data)
        self._out.flush()

    def pump(self, stream) -> None:
        """Read `stream` line by line until EOF (run it in a thread)."""
        for line in iter(stream.readline, b""):
            self.write(line)
        self._out.close()
