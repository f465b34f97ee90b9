"""Keep `pyspark.sql.connect` importable in Dagster's run workers.

pyspark 4's `pyspark.sql.connect.utils.check_dependencies` takes a `__main__` module with
neither `__spec__` nor `__file__` for a doctest run and calls `sys.exit(0)`. A run the daemon
launches runs in a multiprocessing forkserver child, whose `__main__` is exactly that, and
`mlflow.spark.log_model` imports `pyspark.ml.connect` (to tell Connect models apart): every
model step of a scheduled retrain then ended in `SystemExit: 0`, while the same steps passed
under pytest, the CLI and the demo (their `__main__` has a file). Giving such a `__main__` a
`__file__` is the smallest change that keeps pyspark's check as it is for everyone else; the
test (test_spark_import_guard.py) fails loudly if pyspark changes the check.

The `__file__` given is this module's own path, a real file: multiprocessing's spawn and
forkserver start methods re-run a parent's `__main__` file in the child, and a made-up name made
every later forkserver start in that process fail with FileNotFoundError. Re-running this file
there only defines the function below.
"""

from __future__ import annotations

import sys

PLACEHOLDER = __file__


def guard_spark_connect_import() -> bool:
    """Give a file-less `__main__` this module's file as its `__file__`; True if it had to."""
    main = sys.modules.get("__main__")
    if main is None or getattr(main, "__spec__", None) is not None or hasattr(main, "__file__") or hasattr(sys, "ps1"):
        return False
    main.__file__ = PLACEHOLDER
    return True
