"""What every bench needs and none owns: the repo paths, percentiles and number formatting, the
load average, process memory from /proc (VmRSS/VmHWM and its reset, RSS of a process tree) and
directory sizes. No crypto_assets import: a bench imports this before the package."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS_ROOT = REPO / "var" / "bench" / "runs"  # bench homes (same file system as the cache: hard links)
MB = 1024 * 1024


def use_checkout() -> None:
    """Put the checkout this bench lives in first on sys.path (the package and `bench.*`)."""
    if str(REPO) not in sys.path[:1]:
        sys.path.insert(0, str(REPO))


# ----------------------------------------------------------------------------- numbers
def pct(values, q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    v = sorted(x for x in values if x is not None and x == x)
    if not v:
        return math.nan
    return v[max(0, min(len(v) - 1, math.ceil(q / 100.0 * len(v)) - 1))]


def med(values) -> float:
    """Median of the values that are neither None nor nan; nan for none."""
    v = [x for x in values if x is not None and x == x]
    return statistics.median(v) if v else math.nan


def fmt(x: float | None, w: int = 6, d: int = 2) -> str:
    return f"{x:{w}.{d}f}" if x is not None and x == x else f"{'-':>{w}}"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def load_avg() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} {b:.2f} {c:.2f} (1/5/15 min; {os.cpu_count()} CPUs)"


# ----------------------------------------------------------------------------- memory
def status_kb(field: str, pid: int | str = "self") -> int | None:
    """A kB field of /proc/<pid>/status (VmRSS, VmHWM, ...); None when unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_hwm(pid: int | str = "self") -> bool:
    """Reset the kernel's peak RSS (VmHWM) of a process to its current RSS."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def mb_kb(kb: int | None) -> str:
    return f"{kb / 1024:,.0f} MB" if kb else "n/a"


def tree_rss(pid: int) -> int:
    """RSS of a process and all its descendants, bytes (0 when it is gone)."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for q in procs:
        with contextlib.suppress(psutil.Error):
            total += q.memory_info().rss
    return total


# ----------------------------------------------------------------------------- files
def dir_stats(path: Path) -> tuple[int, int]:
    """(bytes, files) under path; files that vanish while walking are skipped."""
    total = files = 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            try:
                total += os.lstat(os.path.join(root, n)).st_size
                files += 1
            except FileNotFoundError:
                pass
    return total, files


def db_bytes(home: Path) -> int:
    """warehouse.duckdb plus its WAL."""
    return sum(p.stat().st_size for p in home.glob("warehouse.duckdb*") if p.is_file())


def keep_or_remove(path: Path, keep: bool) -> None:
    """--keep: say where the bench's files are; else delete them."""
    if keep:
        print(f"kept {path}")
    else:
        shutil.rmtree(path, ignore_errors=True)


def print_errors(errors: list[str]) -> bool:
    """Print the correctness errors (if any); True when there were some."""
    if errors:
        print("\nCORRECTNESS ERRORS:")
        for e in errors:
            print("  " + e)
    return bool(errors)
