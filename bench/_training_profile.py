"""Where bench/training.py's time goes: the DuckDB statements of build_training_set (a timing
connection proxy handed to it) and, for model training and MLflow logging, wall time per call
path of Estimator.fit (nested per pipeline stage), Evaluator.evaluate, DataFrame actions
(labelled by the calling crypto_assets file:line) and MLflow's logging calls. The Profiler wraps
those public pyspark / mlflow names for a phase and restores them; no crypto_assets name is
patched."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from itertools import islice

from bench._sql_timing import TimedConnection, package_frames


def _duck_label(sql: str) -> str:
    s = " ".join(sql.split())
    if "CREATE OR REPLACE TEMP TABLE training_rows" in s:
        return "CREATE TEMP TABLE training_rows AS SELECT ... FROM (feature_sql) ORDER BY event_time, coin_id"
    if s.startswith("COPY"):
        return "COPY training_rows TO parquet (zstd)"
    if "count(label_up)" in s:
        return "stats query"
    if "GROUP BY 1" in s:
        return "rows per coin"
    return s[:60]


class DuckTimer(TimedConnection):
    """Connection proxy timing execute() and the fetch of sql() relations: times = [(label, s)]."""

    def __init__(self, conn) -> None:
        self.times: list[tuple[str, float]] = []
        super().__init__(conn, _duck_label, self._add, fetches=("fetchall", "pl", "arrow", "fetchone", "df"))

    def _add(self, label, kind: str, dt: float) -> None:
        if kind != "register":
            self.times.append((label + " (plan)" if kind == "plan" else label, dt))


class Profiler:
    """Wall time per (phase, call path). Wrapped from the outside: Estimator.fit (every stage,
    nested under Pipeline.fit), Evaluator.evaluate, the DataFrame actions the training code calls
    (labelled by the calling crypto_assets file:line), and MLflow's logging calls."""

    def __init__(self) -> None:
        self.times: dict[str, dict[tuple[str, ...], float]] = defaultdict(lambda: defaultdict(float))
        self.calls: dict[str, dict[tuple[str, ...], int]] = defaultdict(lambda: defaultdict(int))
        self.phase: str | None = None
        self.stack: list[str] = []
        self._orig: list[tuple[object, str, object]] = []

    @contextlib.contextmanager
    def in_phase(self, name: str):
        prev, self.phase = self.phase, name
        try:
            yield
        finally:
            self.phase = prev

    @staticmethod
    def _caller() -> str:
        """module.function:line of the innermost crypto_assets frame on the stack."""
        for stem, name, line in islice(package_frames(), 1):
            return f"{stem}.{name}:{line}"
        return "?"

    def _wrap(self, owner, attr: str, label, action: bool = False) -> None:
        orig = getattr(owner, attr)
        prof = self

        def timed(*a, **kw):
            if prof.phase is None or (action and prof.stack and prof.stack[-1].startswith("action ")):
                return orig(*a, **kw)
            name = label(*a, **kw)
            prof.stack.append(name)
            key = tuple(prof.stack)
            t = time.perf_counter()
            try:
                return orig(*a, **kw)
            finally:
                prof.times[prof.phase][key] += time.perf_counter() - t
                prof.calls[prof.phase][key] += 1
                prof.stack.pop()

        timed.__wrapped__ = orig
        self._orig.append((owner, attr, orig))
        setattr(owner, attr, timed)

    def install(self) -> None:
        from pyspark.ml.base import Estimator
        from pyspark.ml.evaluation import Evaluator
        try:  # pyspark >= 4: the classic (non-Connect) implementation overrides the actions
            from pyspark.sql.classic.dataframe import DataFrame
        except ImportError:
            from pyspark.sql import DataFrame

        self._wrap(Estimator, "fit", lambda self_, *a, **k: f"fit {type(self_).__name__}")
        self._wrap(Evaluator, "evaluate",
                   lambda self_, *a, **k: f"evaluate {type(self_).__name__}({self_.getOrDefault('metricName')})"
                   if self_.hasParam("metricName") else f"evaluate {type(self_).__name__}")
        for meth in ("first", "count", "collect", "toPandas"):
            self._wrap(DataFrame, meth, lambda *a, _m=meth, **k: f"action {_m} @ {Profiler._caller()}", action=True)
        import mlflow
        import mlflow.data
        import mlflow.spark as mlflow_spark

        for mod, fn in ((mlflow, "log_params"), (mlflow, "log_metrics"), (mlflow, "set_tags"), (mlflow, "log_input"),
                        (mlflow, "log_artifact"), (mlflow, "start_run"), (mlflow_spark, "log_model"),
                        (mlflow.data, "from_spark")):
            label = f"mlflow.{mod.__name__.split('.')[-1]}.{fn}" if mod is not mlflow else f"mlflow.{fn}"
            self._wrap(mod, fn, lambda *a, _n=label, **k: _n)

    def uninstall(self) -> None:
        for owner, attr, orig in reversed(self._orig):
            setattr(owner, attr, orig)
        self._orig.clear()

    def report(self, phase: str, total: float, indent: str = "      ", top: int = 14) -> None:
        times, calls = self.times.get(phase, {}), self.calls.get(phase, {})
        tops = sorted((k for k in times if len(k) == 1), key=lambda k: -times[k])
        for k in tops[:top]:
            n = calls[k]
            print(f"{indent}{times[k]:7.2f} s  {k[0]}" + (f"  (x{n})" if n > 1 else ""))
            kids = sorted((c for c in times if len(c) == 2 and c[0] == k[0]), key=lambda c: -times[c])
            for c in kids:
                n = calls[c]
                print(f"{indent}{times[c]:7.2f} s    > {c[1]}" + (f"  (x{n})" if n > 1 else ""))
        rest = sum(times[k] for k in tops[top:])
        if rest:
            print(f"{indent}{rest:7.2f} s  ({len(tops) - top} more)")
        tracked = sum(times[k] for k in tops)
        print(f"{indent}{total - tracked:7.2f} s  untracked (lazy plan building, sampleBy, cache/unpersist, py4j, Python)")
