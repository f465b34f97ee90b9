"""pyspark.sql.connect exits the process on import when __main__ has no file (Dagster's
forkserver run workers); the guard in crypto_assets.ml.registry keeps it importable."""

from __future__ import annotations

import subprocess
import sys

# `python -c` gives __main__ neither __spec__ nor __file__, like a forkserver child
# (the import may raise ImportError for grpc packages Connect needs: mlflow catches that; the bug
# is the SystemExit, which ends the run worker's step)
TRY = ("\ntry:\n    import pyspark.ml.connect\nexcept ImportError:\n    pass\n"
       "import sys\nprint('after', getattr(sys.modules['__main__'], '__file__', '-'))")
BARE = TRY
GUARDED = "import crypto_assets.ml.registry" + TRY


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_pyspark_connect_still_exits_without_the_guard():
    """If this fails, pyspark dropped its doctest check and the guard can go."""
    r = _run(BARE)
    assert r.returncode == 0 and "after" not in r.stdout, (r.stdout, r.stderr)


def test_the_guard_keeps_pyspark_connect_importable():
    from crypto_assets.ml.spark_import_guard import PLACEHOLDER

    r = _run(GUARDED)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["after", PLACEHOLDER]


FORK_AFTER_GUARD = """
import multiprocessing as mp
import crypto_assets.ml.registry
def main():
    for method in ("forkserver", "spawn"):
        with mp.get_context(method).Pool(1) as pool:
            print(method, pool.apply(abs, (-7,)))
main()
"""


def test_multiprocessing_children_start_after_the_guard():
    """The guarded __main__ is re-run by spawn/forkserver children (Dagster's run launcher starts
    a forkserver from processes that may have imported the models): they must start."""
    r = _run(FORK_AFTER_GUARD)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["forkserver", "7", "spawn", "7"]
