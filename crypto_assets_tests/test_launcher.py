"""ForkserverRunLauncher: runs execute in forks of a warm forkserver, with the same events,
status, cancellation and health checks as Dagster's default launcher; what a fork runs is
Dagster's public worker contract (`dagster api execute_run <serialized ExecuteRunArgs>`), and
these tests fail if that contract changes."""

import ast
import importlib
import inspect
import os
import socket
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.launcher import WorkerStatus
from dagster._grpc.types import ExecuteRunArgs

from crypto_assets.ops import launcher as launcher_module
from crypto_assets.ops.launcher import (
    DEFAULT_PRELOAD,
    HOST_TAG,
    PID_TAG,
    ForkserverRunLauncher,
    LaunchContractError,
    execute_run_cli_args,
    worker_cli_args,
)
from crypto_assets_tests import launcher_jobs

REPO = Path(__file__).resolve().parents[1]


def test_repo_dagster_yaml_uses_the_forkserver_launcher(tmp_path, monkeypatch):
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_launcher, ForkserverRunLauncher)
        coordinator = instance.run_coordinator
        assert isinstance(coordinator, dg.QueuedRunCoordinator)
        assert coordinator.dequeue_interval_seconds == 1  # short runs: poll the queue often


def test_our_code_is_never_preloaded():
    # a code-location reload must reach the next run: only third-party modules live in the forkserver
    assert not [m for m in DEFAULT_PRELOAD if m.split(".")[0] in ("crypto_assets", "crypto_assets_tests")]


def _run(tags: dict) -> dg.DagsterRun:
    return dg.DagsterRun(job_name="j", run_id="r1", tags=tags)


def test_worker_health_from_the_pid_tag(tmp_path):
    launcher = ForkserverRunLauncher()
    host = socket.gethostname()
    alive = _run({PID_TAG: str(os.getpid()), HOST_TAG: host})
    assert launcher.check_run_worker_health(alive).status == WorkerStatus.RUNNING
    gone = os.fork()
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)
    res = launcher.check_run_worker_health(_run({PID_TAG: str(gone), HOST_TAG: host}))
    assert res.status == WorkerStatus.FAILED and str(gone) in (res.msg or "")
    assert launcher.check_run_worker_health(_run({PID_TAG: "1", HOST_TAG: "elsewhere"})).status == WorkerStatus.UNKNOWN
    assert launcher.check_run_worker_health(_run({})).status == WorkerStatus.UNKNOWN


@pytest.fixture
def instance(tmp_path, monkeypatch):
    home = tmp_path / "dagster"
    home.mkdir()
    cfg = yaml.safe_load((REPO / "dagster.yaml").read_text())
    cfg.pop("run_queue", None)
    cfg["run_coordinator"] = {"module": "dagster._core.run_coordinator", "class": "DefaultRunCoordinator"}
    (home / "dagster.yaml").write_text(yaml.safe_dump(cfg))
    monkeypatch.setenv("LAUNCHER_TEST_OUT", str(tmp_path / "pids.txt"))
    monkeypatch.setenv("DAGSTER_HOME", str(home))  # the consolidated event log lives in $DAGSTER_HOME
    with dg.DagsterInstance.from_config(str(home)) as inst:
        yield inst


def _create(instance: dg.DagsterInstance, job: dg.JobDefinition) -> dg.DagsterRun:
    recon = dg.reconstructable(job)
    return instance.create_run_for_job(job_def=job, job_code_origin=recon.get_python_origin())


def _launch(instance: dg.DagsterInstance, job: dg.JobDefinition) -> str:
    run = _create(instance, job)
    instance.launch_run(run.run_id, workspace=None)  # pyright: ignore[reportArgumentType]  (needs none)
    return run.run_id


def _wait(instance, run_id: str, statuses, timeout: float = 120.0) -> dg.DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run.status in statuses:
            return run
        if PID_TAG in run.tags and instance.run_launcher.check_run_worker_health(run).status == WorkerStatus.FAILED:
            run = instance.get_run_by_id(run_id)  # it may have finished just before exiting
            if run.status in statuses:
                return run
            raise AssertionError(
                f"the run worker {run.tags[PID_TAG]} exited with run {run_id} still {run.status}: "
                "`dagster api execute_run <ExecuteRunArgs>` did not run it (see the worker's stderr above)"
            )
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {instance.get_run_by_id(run_id).status} after {timeout}s")


def test_worker_command_is_dagsters_execute_run_contract(instance):
    """A fork runs what Dagster's container launchers run: `api execute_run` and the serialized
    ExecuteRunArgs of this run, on this instance. Fails if Dagster changes that contract."""
    run = _create(instance, launcher_jobs.pid_job)
    cli = worker_cli_args(instance, run)
    assert cli[:2] == ["api", "execute_run"] and len(cli) == 3
    args = dg.deserialize_value(cli[2], ExecuteRunArgs)
    assert args.run_id == run.run_id
    assert args.instance_ref == instance.get_ref()
    assert args.job_origin == run.job_code_origin
    # the whole command Dagster builds is its CLI (`dagster` or `<python> -m dagster`) with them
    assert run.job_code_origin is not None
    full = ExecuteRunArgs(job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=instance.get_ref())
    command = list(full.get_command_args())
    assert command[-3:] == cli and command[:-3] in (["dagster"], [sys.executable, "-m", "dagster"]), command[:-1]


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        (["/venv/bin/python", "-m", "dagster", "api", "execute_run", "{...}"], ["api", "execute_run", "{...}"]),
        (["dagster", "api", "execute_run", "{...}"], ["api", "execute_run", "{...}"]),
        (["/venv/bin/dagster", "api", "execute_run", "{...}"], ["api", "execute_run", "{...}"]),
        (["dagster", "api", "execute_run_v2", "{...}"], None),  # renamed command
        (["dagster", "api", "execute_run", "{...}", "--extra"], None),  # more arguments
        (["dagster-cloud", "api", "execute_run", "{...}"], None),  # another CLI
        (["dagster", "api", "execute_run"], None),  # no payload
        ([], None),
    ],
)
def test_a_changed_worker_command_fails_loudly(command, expected):
    if expected is not None:
        assert execute_run_cli_args(command) == expected
        return
    with pytest.raises(LaunchContractError, match="DefaultRunLauncher") as err:
        execute_run_cli_args(command)
    assert f"dagster {dg.__version__} builds" in str(err.value)


def test_launcher_calls_no_private_dagster_function():
    """Only classes come from Dagster's underscore modules (the launcher extension points), no
    function; and nothing private is reached through the public `dagster` module."""
    tree = ast.parse(inspect.getsource(launcher_module))
    imported: list[tuple[str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "dagster":
            imported += [(node.module or "", alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            assert not [a.name for a in node.names if a.name.startswith("dagster._")], ast.dump(node)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "dg":
            assert not node.attr.startswith("_") or node.attr.startswith("__"), f"dg.{node.attr}"
    assert ("dagster._grpc.types", "ExecuteRunArgs") in imported
    for module, name in imported:
        obj = getattr(importlib.import_module(module), name)
        assert not name.startswith("_"), (module, name)
        if "._" in module:
            assert inspect.isclass(obj), f"{module}.{name} is not a class"


@pytest.mark.slow
def test_runs_execute_in_forked_workers_and_can_be_cancelled(instance, tmp_path):
    out = tmp_path / "pids.txt"
    first = _launch(instance, launcher_jobs.pid_job)
    run = _wait(instance, first, {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE})
    assert run.status == dg.DagsterRunStatus.SUCCESS
    worker = int(run.tags[PID_TAG])
    assert worker != os.getpid() and out.read_text().split() == [str(worker)]
    messages = [e.message for e in instance.all_logs(first)]
    assert f"Started process for run (pid: {worker})." in messages

    # a second run from the same (now warm) forkserver is another, separate worker
    second = _launch(instance, launcher_jobs.pid_job)
    run2 = _wait(instance, second, {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE})
    assert run2.status == dg.DagsterRunStatus.SUCCESS and int(run2.tags[PID_TAG]) not in (worker, os.getpid())

    # cancellation interrupts the worker; the run ends CANCELED and the process goes away
    slow = _launch(instance, launcher_jobs.sleepy_job)
    deadline = time.monotonic() + 60
    while len(out.read_text().split()) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert instance.run_launcher.terminate(slow)
    ended = {dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS}
    run3 = _wait(instance, slow, ended, 60)
    assert run3.status == dg.DagsterRunStatus.CANCELED
    pid = int(run3.tags[PID_TAG])
    deadline = time.monotonic() + 20
    health = instance.run_launcher.check_run_worker_health
    while health(run3).status == WorkerStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.2)
    assert health(run3).status == WorkerStatus.FAILED, f"worker {pid} still alive"
    assert not instance.run_launcher.terminate(slow)  # finished runs cannot be terminated again
