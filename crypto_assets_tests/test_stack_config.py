"""The stack test's fast parts (the stack itself is `make stack-test`, minutes long): the Dagster
instance it derives from resources/dagster/dagster.yaml is valid and keeps the default run
launcher and Postgres storage, its app environment carries every setting docker-compose.yml
gives the code server, and its supervisor stops a service's whole process group."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import yaml

from crypto_assets.ops.home import REPO_ROOT
from crypto_assets.ops.processes import pid_alive
from crypto_assets.ops.stack import driver
from crypto_assets.ops.stack import services as s
from crypto_assets.ops.stack.procs import Supervisor


def _ports() -> s.Ports:
    return s.Ports(postgres=15432, mlflow=15000, spark=17077, spark_ui=18080, spark_worker_ui=18081,
                   code_server=14000, webserver=13000)


def test_the_derived_instance_is_valid_with_postgres_storage_and_the_default_launcher(tmp_path, monkeypatch):
    for k, v in driver.app_env({}, tmp_path, _ports(), home=tmp_path / "data", bootstrap="", mlflow="", spark="",
                               dagster_home=tmp_path).items():
        monkeypatch.setenv(k, v)  # what the stack's Dagster processes get: the env vars the yaml reads
    from dagster._config import process_config
    from dagster._core.instance.config import dagster_instance_config_schema

    home = s.write_instance(tmp_path, _ports())
    cfg = yaml.safe_load((home / "dagster.yaml").read_text())
    result = process_config(dagster_instance_config_schema(), cfg)
    assert result.success, result.errors
    assert cfg["run_launcher"] == {"module": "dagster._core.launcher", "class": "DefaultRunLauncher"}
    assert cfg["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert cfg["storage"]["postgres"]["postgres_db"]["port"] == 15432
    assert cfg["compute_logs"]["config"]["base_dir"].startswith(str(tmp_path))
    workspace = yaml.safe_load((home / "workspace.yaml").read_text())
    assert workspace["load_from"][0]["grpc_server"] == {"host": "127.0.0.1", "port": 14000, "location_name": "crypto_assets"}


def test_the_app_env_has_every_setting_compose_gives_the_code_server(tmp_path):
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    code_server = compose["services"]["code-server"]["environment"]
    # host name / sensors: see app_env; settings empty by default (`${X:-}`, e.g. webhook URLs) are
    # optional and stay unset in the stack
    optional = {k for k, v in code_server.items() if isinstance(v, str) and v == f"${{{k}:-}}"}
    wanted = set(code_server) - {"SPARK_LOCAL_HOSTNAME", "CRYPTO_AUTOMATION"} - optional
    wanted |= set(compose["x-app-env"]) | set(compose["x-dagster-db"])
    env = driver.app_env({}, tmp_path, _ports(), home=tmp_path / "data", bootstrap="127.0.0.1:1",
                         mlflow="http://127.0.0.1:15000", spark="spark://127.0.0.1:17077", dagster_home=tmp_path / "dh")
    assert wanted <= set(env), sorted(wanted - set(env))
    assert env["DAGSTER_POSTGRES_HOST"] == "127.0.0.1" and env["SPARK_MASTER"].startswith("spark://127.0.0.1:")
    assert Path(env["MLFLOW_DFS_TMP"]).is_dir()


def test_base_env_drops_the_callers_service_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "elsewhere:9092")
    monkeypatch.setenv("DAGSTER_HOME", "/elsewhere")
    monkeypatch.setenv("CRYPTO_AUTOMATION", "on")
    env = s.base_env(tmp_path)
    assert "KAFKA_BOOTSTRAP_SERVERS" not in env and "DAGSTER_HOME" not in env and "CRYPTO_AUTOMATION" not in env
    assert env["PYTHONPATH"].split(":")[0] == str(REPO_ROOT) and env["SPARK_LOCAL_IP"] == "127.0.0.1"


def test_stop_all_stops_the_group_including_children_and_empties_the_pid_file(tmp_path):
    sup = Supervisor(tmp_path)
    child_pid_file = tmp_path / "child"
    # a leader that ignores SIGTERM and has a child: SIGKILL escalation and the group sweep
    code = ("import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
            f"open({str(child_pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)")
    svc = sup.start("stubborn", [sys.executable, "-c", code], {"PATH": "/usr/bin:/bin"})
    sup.wait_for(svc, child_pid_file.exists, 20, "its child")
    time.sleep(0.2)
    child = int(child_pid_file.read_text())
    assert f"{svc.proc.pid} stubborn" in sup.pid_file.read_text()
    t0 = time.monotonic()
    sup.stop_all(timeout_s=1.0)
    assert svc.proc.poll() == -signal.SIGKILL
    deadline = time.monotonic() + 5
    while pid_alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pid_alive(child)
    assert time.monotonic() - t0 < 8
    assert sup.pid_file.read_text() == ""
