"""ForkserverRunLauncher: runs execute in forks of a warm forkserver, with the same events,
status, cancellation and health checks as Dagster's default launcher."""

import os
import socket
import time
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._core.launcher import WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun

from crypto_assets.ops.launcher import DEFAULT_PRELOAD, HOST_TAG, PID_TAG, ForkserverRunLauncher
from crypto_assets_tests import launcher_jobs

REPO = Path(__file__).resolve().parents[1]


def test_repo_dagster_yaml_uses_the_forkserver_launcher(tmp_path, monkeypatch):
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert isinstance(instance.run_launcher, ForkserverRunLauncher)
        assert instance.run_coordinator.dequeue_interval_seconds == 1  # short runs: poll the queue often


def test_our_code_is_never_preloaded():
    # a code-location reload must reach the next run: only third-party modules live in the forkserver
    assert not [m for m in DEFAULT_PRELOAD if m.split(".")[0] in ("crypto_assets", "crypto_assets_tests")]


def _run(tags: dict) -> DagsterRun:
    return DagsterRun(job_name="j", run_id="r1", tags=tags)


def test_worker_health_from_the_pid_tag(tmp_path):
    launcher = ForkserverRunLauncher()
    host = socket.gethostname()
    assert launcher.check_run_worker_health(_run({PID_TAG: str(os.getpid()), HOST_TAG: host})).status == WorkerStatus.RUNNING
    gone = os.fork()
    if gone == 0:
        os._exit(0)
    os.waitpid(gone, 0)
    res = launcher.check_run_worker_health(_run({PID_TAG: str(gone), HOST_TAG: host}))
    assert res.status == WorkerStatus.FAILED and str(gone) in res.msg
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


def _launch(instance: dg.DagsterInstance, job: dg.JobDefinition) -> str:
    recon = dg.reconstructable(job)
    run = instance.create_run_for_job(job_def=job, job_code_origin=recon.get_python_origin())
    instance.launch_run(run.run_id, workspace=None)
    return run.run_id


def _wait(instance, run_id: str, statuses, timeout: float = 120.0) -> DagsterRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run.status in statuses:
            return run
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} still {instance.get_run_by_id(run_id).status} after {timeout}s")


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
    run3 = _wait(instance, slow, {dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.SUCCESS}, 60)
    assert run3.status == dg.DagsterRunStatus.CANCELED
    pid = int(run3.tags[PID_TAG])
    deadline = time.monotonic() + 20
    while instance.run_launcher.check_run_worker_health(run3).status == WorkerStatus.RUNNING and time.monotonic() < deadline:
        time.sleep(0.2)
    assert instance.run_launcher.check_run_worker_health(run3).status == WorkerStatus.FAILED, f"worker {pid} still alive"
    assert not instance.run_launcher.terminate(slow)  # finished runs cannot be terminated again
