"""A run launcher that forks run workers from a warm forkserver.

Dagster's DefaultRunLauncher asks the code server to *spawn* a fresh interpreter for every run,
which then imports dagster, DuckDB, polars, pyarrow, MLflow, Spark's Python side, ... before the
first step starts: 8-20 s on a 2-core machine, for an incremental run whose compute is ~2 s. That
launch cost, not the compute, decided how fresh `market_features` could be (bench/freshness.py).

This launcher keeps one `multiprocessing` forkserver per launching process (the daemon, the
webserver) with those third-party libraries imported once; each run is a fork of it, so a run
worker is up in well under a second. The project's own code is NOT preloaded: every run imports
`crypto_assets` afresh in its fork, so a reloaded code location takes effect exactly as with
the default launcher.

What a worker runs is Dagster's own worker contract, the one its container launchers (docker,
k8s, ECS) hand their workers: the command `ExecuteRunArgs(...).get_command_args()` builds,
`dagster api execute_run <serialized ExecuteRunArgs>`, here executed by the `dagster` CLI inside
the fork instead of a new interpreter. No private Dagster function is called; if a Dagster
release changes the command's shape, launching fails with a message saying so
(crypto_assets_tests/test_launcher.py checks the contract).

Configured in dagster.yaml (local / live mode). The compose stack keeps the default launcher.
"""

import multiprocessing
import os
import runpy
import signal
import socket
import sys
import threading
from collections.abc import Mapping, Sequence
from multiprocessing.process import BaseProcess
from typing import Any

import dagster as dg
from dagster import Array, Field, Noneable, StringSource
from dagster._core.launcher import (
    CheckRunHealthResult,
    LaunchRunContext,
    RunLauncher,
    WorkerStatus,
)
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData

from crypto_assets.ops.processes import pid_alive

PID_TAG = "crypto_assets/run_worker_pid"
HOST_TAG = "crypto_assets/run_worker_host"

# Imported once in the forkserver. Third-party only: our own modules must load per run.
DEFAULT_PRELOAD = (
    "dagster",
    "dagster._cli.api",
    # what DagsterInstance.from_ref imports for sqlite storage (alembic, sqlalchemy, daemon
    # modules): ~2.5 s per run when left to the worker
    "dagster._core.instance.factory",
    "dagster._core.storage.sqlite_storage",
    "dagster._core.storage.runs.sqlite",
    "dagster._core.storage.event_log.sqlite",
    "dagster._core.storage.schedules.sqlite",
    "dagster._core.storage.root",
    "dagster._daemon.controller",
    "alembic.script",
    "alembic.runtime.migration",
    "dagster._core.storage.migration",
    "upath",
    "fsspec",
    "dagster_duckdb",
    "dagster_pyspark",
    "duckdb",
    "polars",
    "pyarrow",
    "pyarrow.parquet",
    "numpy",
    "pandas",
    "orjson",
    "confluent_kafka",
    "mlflow",
)

_forkserver_lock = threading.Lock()


EXECUTE_RUN = ("api", "execute_run")


class LaunchContractError(RuntimeError):
    """The installed Dagster no longer builds `dagster api execute_run <args>` worker commands."""


def execute_run_cli_args(command: Sequence[str]) -> list[str]:
    """The `dagster` CLI arguments of a worker command from `ExecuteRunArgs.get_command_args()`:
    `api execute_run <serialized ExecuteRunArgs>` after the entry point (`dagster`, or
    `<python> -m dagster`), which is this process's Dagster in a fork."""
    command = list(command)
    entry, cli = command[:-3], command[-3:]
    dagster_entry = entry[-2:] == ["-m", "dagster"] or (len(entry) == 1 and os.path.basename(entry[0]) == "dagster")
    if not dagster_entry or tuple(cli[:2]) != EXECUTE_RUN:
        raise LaunchContractError(
            "ForkserverRunLauncher runs Dagster's worker command `dagster api execute_run <ExecuteRunArgs>`, "
            f"but dagster {dg.__version__} builds {[*command[:-1], '<args>'] if command else command}: set "
            "run_launcher to DefaultRunLauncher in dagster.yaml, or adapt crypto_assets/ops/launcher.py"
        )
    return cli


def worker_cli_args(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    """What a worker for `run` executes: the `dagster` CLI arguments Dagster's launchers pass."""
    if run.job_code_origin is None:
        raise dg.DagsterInvariantViolationError(f"run {run.run_id} has no job code origin")
    args = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=instance.get_ref())
    return execute_run_cli_args(args.get_command_args())


def run_worker(cli_args: Sequence[str]) -> None:
    """Body of a forked run worker: `python -m dagster <cli_args>`, in this process (the CLI
    exits the process with its status)."""
    sys.argv = ["dagster", *cli_args]
    # alter_sys=False: __main__ stays the forkserver's (see crypto_assets/ml/spark_import_guard.py)
    runpy.run_module("dagster", run_name="__main__")


class ForkserverRunLauncher(RunLauncher, ConfigurableClass):
    """Launch each run in a fork of a preloaded forkserver (see module docstring)."""

    def __init__(self, preload: Sequence[str] | None = None, inst_data: ConfigurableClassData | None = None):
        self._inst_data = inst_data
        self._preload = list(DEFAULT_PRELOAD if preload is None else preload)
        self._ctx: Any = None
        self._processes: dict[str, BaseProcess] = {}
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> Mapping[str, Field]:
        return {
            "preload": Field(
                Noneable(Array(StringSource)),
                is_required=False,
                description="Modules the forkserver imports once (default: dagster and the heavy "
                "third-party libraries the assets use).",
            )
        }

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]):
        return cls(preload=config_value.get("preload"), inst_data=inst_data)

    def _context(self):
        with _forkserver_lock:
            if self._ctx is None:
                ctx = multiprocessing.get_context("forkserver")
                ctx.set_forkserver_preload(self._preload)
                self._ctx = ctx
            return self._ctx

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        cli_args = worker_cli_args(self._instance, run)
        # forget finished workers (the forkserver reaps them; a live session launches thousands)
        self._processes = {rid: p for rid, p in self._processes.items() if p.is_alive()}
        process = self._context().Process(
            target=run_worker,
            args=(cli_args,),
            name=f"dagster-run-{run.run_id[:8]}",
        )
        process.start()
        self._processes[run.run_id] = process
        self._instance.add_run_tags(run.run_id, {PID_TAG: str(process.pid), HOST_TAG: socket.gethostname()})

    def _worker_pid(self, run: dg.DagsterRun) -> int | None:
        if run.tags.get(HOST_TAG) != socket.gethostname() or PID_TAG not in run.tags:
            return None
        return int(run.tags[PID_TAG])

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if not run or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        pid = self._worker_pid(run)
        if pid is None or not pid_alive(pid):
            self._instance.report_engine_event(
                f"Run worker for {run_id} is not running on this host; cannot interrupt it.", run, cls=self.__class__
            )
            return False
        # What the code server's CancelExecution does: an interrupt the worker turns into a clean stop.
        os.kill(pid, signal.SIGINT)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        pid = self._worker_pid(run)
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "run worker was not launched on this host")
        if pid_alive(pid):
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.FAILED, f"run worker process {pid} is gone")

    def join(self, timeout: int = 30) -> None:
        for process in list(self._processes.values()):
            process.join(timeout)

    def dispose(self) -> None:
        multiprocessing.active_children()
