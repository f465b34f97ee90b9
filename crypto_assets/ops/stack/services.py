"""The docker-compose services as local processes on 127.0.0.1: PostgreSQL from the Debian
package, the MLflow tracking server, a Spark standalone master and worker (pyspark's
spark-class), the embedded broker in place of Kafka, and Dagster's code server, webserver and
daemon on a Postgres instance with the default run launcher. Each starter returns once its
service answers on its real protocol."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from crypto_assets.ops.home import REPO_ROOT
from crypto_assets.ops.stack.procs import Supervisor, free_port, http_json, http_ok

PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
VENV_BIN = Path(sys.executable).parent
# The roles and databases of resources/postgres/init-databases.sh (docker-compose.yml's defaults).
DB_ENV = {"DAGSTER_POSTGRES_DB": "dagster", "DAGSTER_POSTGRES_USER": "dagster", "DAGSTER_POSTGRES_PASSWORD": "dagster",
          "MLFLOW_POSTGRES_DB": "mlflow", "MLFLOW_POSTGRES_USER": "mlflow", "MLFLOW_POSTGRES_PASSWORD": "mlflow"}


@dataclass
class Ports:
    postgres: int
    mlflow: int
    spark: int
    spark_ui: int
    spark_worker_ui: int
    code_server: int
    webserver: int

    @classmethod
    def pick(cls) -> Ports:
        return cls(*(free_port() for _ in range(7)))


def base_env(root: Path) -> dict[str, str]:
    """The environment every child gets: this checkout first on the path, Spark on 127.0.0.1."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "KAFKA_", "MLFLOW_", "SPARK_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env["SPARK_LOCAL_IP"] = "127.0.0.1"
    env["PATH"] = os.pathsep.join((str(VENV_BIN), env.get("PATH", "")))
    env.pop("CRYPTO_AUTOMATION", None)  # sensors and schedules stay stopped: the driver launches the runs
    return env


# ------------------------------------------------------------------------------------ Postgres
def _pg_user() -> str | None:
    """initdb and postgres refuse to run as root: then they run as `nobody`."""
    return "nobody" if os.geteuid() == 0 else None


def start_postgres(sup: Supervisor, ports: Ports, env: dict[str, str]) -> None:
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(f"PostgreSQL not found under {PG_BIN} (scripts/stack_test.sh installs Debian's postgresql)")
    user = _pg_user()
    pg = sup.root / "postgres"
    data, sock = pg / "data", pg / "sock"
    sock.mkdir(parents=True)
    if user:
        info = pwd.getpwnam(user)
        for d in (pg, sock):
            os.chown(d, info.pw_uid, info.pw_gid)
    kw = {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []} if user else {}
    subprocess.run([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust",
                    "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-instructions"],
                   check=True, env=env, cwd=pg, stdout=subprocess.DEVNULL, **kw)
    # fsync off: a throwaway cluster that lives for one test
    svc = sup.start("postgres", [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(ports.postgres), "-k", str(sock),
                                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200"],
                    env, cwd=pg, user=user, stop_signal=2)  # SIGINT: fast shutdown

    def ready() -> bool:
        probe = [str(PG_BIN / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(ports.postgres)]
        return subprocess.run(probe, env=env).returncode == 0

    sup.wait_for(svc, ready, 30, "connections")
    init_env = {**env, **DB_ENV, "POSTGRES_USER": "postgres", "PGHOST": str(sock), "PGPORT": str(ports.postgres)}
    # the compose file's own init script creates the roles and databases
    subprocess.run(["bash", str(REPO_ROOT / "resources/postgres/init-databases.sh")], check=True, env=init_env,
                   stdout=subprocess.DEVNULL)


# -------------------------------------------------------------------------------------- MLflow
def start_mlflow(sup: Supervisor, ports: Ports, env: dict[str, str]) -> str:
    artifacts = sup.root / "mlartifacts"
    artifacts.mkdir()
    backend = f"postgresql+psycopg2://mlflow:mlflow@127.0.0.1:{ports.postgres}/mlflow"
    svc = sup.start("mlflow", [str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(ports.mlflow),
                               "--backend-store-uri", backend, "--serve-artifacts",
                               "--artifacts-destination", str(artifacts), "--workers", "1"],
                    {**env, "MLFLOW_SERVER_ALLOWED_HOSTS": "localhost:*,127.0.0.1:*"})
    url = f"http://127.0.0.1:{ports.mlflow}"
    sup.wait_for(svc, lambda: http_ok(f"{url}/health"), 120, "/health")
    return url


# --------------------------------------------------------------------------------------- Spark
def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent


def start_spark(sup: Supervisor, ports: Ports, env: dict[str, str], cores: int = 2, memory: str = "2g") -> str:
    home = spark_home()
    spark_env = {**env, "SPARK_HOME": str(home), "SPARK_LOG_DIR": str(sup.root / "logs"),
                 "SPARK_WORKER_DIR": str(sup.root / "spark-work")}
    master = sup.start("spark-master", [str(home / "bin/spark-class"), "org.apache.spark.deploy.master.Master",
                                        "--host", "127.0.0.1", "--port", str(ports.spark),
                                        "--webui-port", str(ports.spark_ui)], spark_env)
    ui = f"http://127.0.0.1:{ports.spark_ui}/json/"
    sup.wait_for(master, lambda: http_ok(ui), 60, "web UI")
    url = f"spark://127.0.0.1:{ports.spark}"
    worker = sup.start("spark-worker", [str(home / "bin/spark-class"), "org.apache.spark.deploy.worker.Worker", url,
                                        "--host", "127.0.0.1", "--webui-port", str(ports.spark_worker_ui),
                                        "--cores", str(cores), "--memory", memory], spark_env)
    sup.wait_for(worker, lambda: http_json(ui).get("aliveworkers", 0) >= 1, 60, "registration with the master")
    return url


# -------------------------------------------------------------------------------------- broker
def start_broker(sup: Supervisor, env: dict[str, str], home: Path) -> str:
    svc = sup.start("broker", [str(VENV_BIN / "crypto-assets"), "broker", "--home", str(home)], env)
    path = home / "broker.json"
    sup.wait_for(svc, path.exists, 60, "broker.json")
    return json.loads(path.read_text())["bootstrap_servers"]


# ------------------------------------------------------------------------------------- Dagster
def write_instance(root: Path, ports: Ports) -> Path:
    """resources/dagster/dagster.yaml (Postgres storage, queued runs, DefaultRunLauncher) with
    this host's port and directories; returns DAGSTER_HOME."""
    cfg = yaml.safe_load((REPO_ROOT / "resources/dagster/dagster.yaml").read_text())
    if cfg["run_launcher"]["class"] != "DefaultRunLauncher":
        raise RuntimeError("resources/dagster/dagster.yaml no longer uses the DefaultRunLauncher")
    cfg["storage"]["postgres"]["postgres_db"]["port"] = ports.postgres
    cfg["local_artifact_storage"]["config"]["base_dir"] = str(root / "data/dagster/storage")
    cfg["compute_logs"]["config"]["base_dir"] = str(root / "data/dagster/logs")
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    workspace = {"load_from": [{"grpc_server": {"host": "127.0.0.1", "port": ports.code_server,
                                                "location_name": "crypto_assets"}}]}
    (home / "workspace.yaml").write_text(yaml.safe_dump(workspace))
    return home


def start_dagster(sup: Supervisor, ports: Ports, app_env: dict[str, str], dagster_home: Path) -> str:
    workspace = str(dagster_home / "workspace.yaml")
    code = sup.start("code-server", [str(VENV_BIN / "dagster"), "code-server", "start", "-h", "127.0.0.1",
                                     "-p", str(ports.code_server), "-m", "crypto_assets.definitions",
                                     "--location-name", "crypto_assets"], app_env, cwd=REPO_ROOT)

    def grpc_ok() -> bool:
        import socket

        from dagster._grpc.client import DagsterGrpcClient

        try:  # a closed port first: the gRPC client prints every refused connection
            socket.create_connection(("127.0.0.1", ports.code_server), timeout=2).close()
        except OSError:
            return False
        try:
            return DagsterGrpcClient(port=ports.code_server, host="127.0.0.1").health_check_query() == "SERVING"
        except Exception:  # noqa: BLE001 - not up yet
            return False

    sup.wait_for(code, grpc_ok, 180, "gRPC health SERVING")
    web = sup.start("webserver", [str(VENV_BIN / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(ports.webserver),
                                  "-w", workspace], app_env, cwd=REPO_ROOT)
    sup.start("daemon", [str(VENV_BIN / "dagster-daemon"), "run", "-w", workspace], app_env, cwd=REPO_ROOT)
    url = f"http://127.0.0.1:{ports.webserver}"
    sup.wait_for(web, lambda: http_ok(f"{url}/server_info"), 120, "/server_info")
    return url
