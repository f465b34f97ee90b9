"""docker-compose.yml cannot be started here (no engine); check it structurally, and with
`docker-compose config -q` (scripts/test.sh installs the binary; without it these tests fail), so a
broken file fails the suite.

The validator is crypto_assets_tests/compose_checks.py: the mutation tests below break a copy and
check it notices, so it cannot pass vacuously. The versions the images use: test_lock.py."""

from __future__ import annotations

import copy
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from crypto_assets.kafka.topics import TOPICS
from crypto_assets_tests.compose_checks import (
    MLFLOW_ENV_NAMES,
    REPO,
    RES,
    THIRD_PARTY_ENV,
    code_env_reads,
    compose_doc,
    compose_problems,
    dagster_yaml_env,
    load_yaml,
)


def test_compose_matches_the_design():
    assert compose_problems(compose_doc()) == []


def _drop_service(doc, name):
    del doc["services"][name]


def _drop_dependency(doc, name, dep):
    del doc["services"][name]["depends_on"][dep]


def _set(doc, name, *path_and_value):
    *path, value = path_and_value
    node = doc["services"][name]
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


MUTATIONS = {
    "service removed": (lambda d: _drop_service(d, "spark-worker"), "service spark-worker is missing"),
    "dependency removed": (lambda d: _drop_dependency(d, "code-server", "mlflow"), "code-server must depend on mlflow"),
    "dependency on an unknown service": (
        lambda d: _set(d, "producer", "depends_on", "zookeeper", {"condition": "service_started"}),
        "producer depends on unknown service zookeeper",
    ),
    "condition weakened": (
        lambda d: _set(d, "producer", "depends_on", "kafka-init", {"condition": "service_started"}),
        "producer depends on kafka-init with service_started",
    ),
    "healthcheck removed": (
        lambda d: d["services"]["spark-master"].pop("healthcheck"),
        "spark-worker waits for spark-master to be healthy but spark-master has no healthcheck",
    ),
    "unpinned image": (
        lambda d: _set(d, "kafka", "image", "apache/kafka:latest"), "image apache/kafka:latest is not pinned"
    ),
    "untagged image": (lambda d: _set(d, "postgres", "image", "postgres"), "image postgres is not pinned"),
    "port on all interfaces": (lambda d: _set(d, "mlflow", "ports", ["5000:5000"]), "must be published on"),
    "internal port published": (
        lambda d: _set(d, "kafka", "ports", ["${BIND_ADDRESS:-127.0.0.1}:29092:29092"]), "kafka: publishes"
    ),
    "undeclared volume": (lambda d: d["volumes"].pop("crypto-data"), "volume crypto-data is not declared"),
    "env var the code does not read": (
        lambda d: _set(d, "code-server", "environment", "SPARK_MASTER_URL", "spark://x:7077"),
        "SPARK_MASTER_URL is not read by the code",
    ),
    "spark master mismatch": (
        lambda d: _set(d, "code-server", "environment", "SPARK_MASTER", "local[2]"), "SPARK_MASTER must be spark://spark-master:7077"
    ),
    "worker without /data": (lambda d: _set(d, "spark-worker", "volumes", []), "spark-worker: mount the data volume"),
    "artifacts not proxied": (
        lambda d: _set(
            d, "mlflow", "command", [c for c in d["services"]["mlflow"]["command"] if c != "--serve-artifacts"]
        ),
        "--serve-artifacts",
    ),
    "mlflow backend without the psycopg2 driver": (
        lambda d: _set(d, "mlflow", "environment", "MLFLOW_BACKEND_STORE_URI", "postgresql://mlflow:x@postgres:5432/mlflow"),
        "is not the mlflow database",
    ),
    "dagster storage credentials missing": (
        lambda d: d["services"]["dagster-daemon"]["environment"].pop("DAGSTER_POSTGRES_PASSWORD"),
        "dagster-daemon: dagster.yaml needs DAGSTER_POSTGRES_PASSWORD",
    ),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_validator_reports_a_broken_file(mutation):
    doc = copy.deepcopy(compose_doc())
    mutate, expected = MUTATIONS[mutation]
    mutate(doc)
    problems = compose_problems(doc)
    assert any(expected in msg for msg in problems), problems


def test_env_vars_are_read_by_someone():
    """The library-read vars are really read there (grep the installed sources, no import)."""
    read = code_env_reads()
    for var in ("CRYPTO_HOME", "KAFKA_BOOTSTRAP_SERVERS", "COINS", "MLFLOW_TRACKING_URI", "SPARK_MASTER",
                "SPARK_DRIVER_MEMORY", "SPARK_SHUFFLE_PARTITIONS", "COINGECKO_API_KEY"):
        assert var in read, var
    assert not set(THIRD_PARTY_ENV) & read, "listed as third-party but the code reads it"
    spec = importlib.util.find_spec("mlflow")
    assert spec is not None and spec.origin is not None, "mlflow is not installed"
    mlflow_dir = Path(spec.origin).parent
    mlflow_env = (mlflow_dir / "environment_variables.py").read_text()
    for var in MLFLOW_ENV_NAMES:
        assert f'"{var}"' in mlflow_env, f"mlflow no longer reads {var}"


def test_postgres_dagster_yaml():
    """The compose instance config: Postgres storage from env, queued runs, the duckdb_writer
    pool limited to 1 like the root dagster.yaml, and it passes Dagster's own schema."""
    from crypto_assets.settings import DUCKDB_POOL  # the pool every warehouse writer uses

    path = RES / "dagster" / "dagster.yaml"
    cfg = load_yaml(path)
    root = load_yaml(REPO / "dagster.yaml")
    assert DUCKDB_POOL == "duckdb_writer" and "duckdb_writer" in path.read_text()
    assert cfg["concurrency"]["pools"]["default_limit"] == 1 == root["concurrency"]["pools"]["default_limit"]
    assert cfg["concurrency"] == root["concurrency"]
    assert set(cfg["storage"]) == {"postgres"}
    assert cfg["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"  # see the mlflow URI
    assert dagster_yaml_env() == {
        "DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_DB", "DAGSTER_POSTGRES_USER", "DAGSTER_POSTGRES_PASSWORD"
    }
    assert cfg["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert cfg["run_launcher"]["class"] == "DefaultRunLauncher"
    for key in ("local_artifact_storage", "compute_logs"):
        assert cfg[key]["config"]["base_dir"].startswith("/data/"), key  # shared with the webserver

    import importlib

    from dagster._core.instance.config import dagster_instance_config

    value, _ = dagster_instance_config(str(path.parent))
    assert value["concurrency"]["pools"]["default_limit"] == 1
    for key in ("run_coordinator", "run_launcher", "local_artifact_storage", "compute_logs"):
        assert getattr(importlib.import_module(cfg[key]["module"]), cfg[key]["class"]), key


def test_topic_spec_is_the_single_source():
    names = [t.name for t in TOPICS]
    assert names == ["crypto_raw", "crypto_trades", "crypto_raw_dlq", "crypto_trades_dlq", "crypto_alerts",
                     "crypto_predictions"]
    assert all(t.partitions >= 1 and int(t.config()["retention.ms"]) > 0 for t in TOPICS)


def _compose_config(path: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("docker-compose")
    assert exe, ("the docker-compose binary is not installed: scripts/test.sh installs Debian's docker-compose "
                 "package (apt-get install docker-compose); these tests validate docker-compose.yml with it")
    return subprocess.run(
        [exe, "--project-directory", str(REPO), "-f", str(path), "config", "-q"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )


def test_compose_config_validates():
    out = _compose_config(REPO / "docker-compose.yml")
    assert out.returncode == 0, out.stderr


def test_compose_config_rejects_a_broken_file(tmp_path):
    doc = compose_doc()
    doc["services"]["code-server"]["depends_on"]["zookeeper"] = {"condition": "service_healthy"}
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(doc))
    out = _compose_config(broken)
    assert out.returncode != 0 and "zookeeper" in out.stderr
