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
