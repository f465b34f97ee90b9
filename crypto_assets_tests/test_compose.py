"""docker-compose.yml cannot be started here (no engine); check it structurally, and with
`docker-compose config -q` (scripts/test.sh installs the binary; without it these tests fail), so a
broken file fails the suite.

`compose_problems()` is the validator: it returns every way the file departs from the stack
the README describes (services, dependencies and their health conditions, env vars the code
reads, volumes, loopback-only UIs, pinned images, the Spark/MLflow/Dagster wiring). The
mutation tests break a copy and check the validator notices, so it cannot pass vacuously."""

from __future__ import annotations

import copy
import functools
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from crypto_assets.kafka.topics import TOPICS

REPO = Path(__file__).resolve().parents[1]
RES = REPO / "resources"
LOOPBACK = "${BIND_ADDRESS:-127.0.0.1}:"
APP_IMAGE = "crypto-assets:"
SPARK_MASTER_URL = "spark://spark-master:7077"
MLFLOW_URL = "http://mlflow:5000"

# service -> {dependency: condition} the stack needs (extra dependencies are allowed).
REQUIRED_DEPENDENCIES: dict[str, dict[str, str]] = {
    "kafka": {},
    "kafka-init": {"kafka": "service_healthy"},
    "kafka-ui": {"kafka": "service_healthy"},
    "producer": {"kafka-init": "service_completed_successfully"},
    "postgres": {},
    "mlflow": {"postgres": "service_healthy"},
    "spark-master": {},
    "spark-worker": {"spark-master": "service_healthy"},
    "code-server": {
        "postgres": "service_healthy",
        "kafka-init": "service_completed_successfully",
        "mlflow": "service_healthy",
        "spark-master": "service_healthy",
    },
    "dagster-webserver": {"postgres": "service_healthy", "code-server": "service_healthy"},
    "dagster-daemon": {"postgres": "service_healthy", "code-server": "service_healthy"},
}
ONE_SHOT = {"kafka-init"}  # runs to completion; everything else stays up with a healthcheck
NO_HEALTHCHECK_NEEDED = ONE_SHOT | {"producer"}  # nothing waits on the producer
# The only published ports: UIs, on loopback unless BIND_ADDRESS says otherwise.
PUBLISHED = {"dagster-webserver": "3000", "mlflow": "5000", "kafka-ui": "8080", "spark-master": "8081"}
# Services that need CRYPTO_HOME's volume at /data: the code server runs the steps (with the
# DefaultRunLauncher), the webserver reads compute logs, Spark executors read/write the paths
# the driver hands them.
DATA_MOUNTS = {"code-server", "dagster-webserver", "dagster-daemon", "spark-worker"}
# Env vars an app service may set that crypto_assets does not read itself, and who reads them.
THIRD_PARTY_ENV = {
    "MLFLOW_DFS_TMP": "mlflow.spark: where executors save a Spark model before it is logged",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "mlflow: no progress bars in run logs",
    "TMPDIR": "Python tempfile: mlflow downloads champions there for executors to read",
    "SPARK_LOCAL_HOSTNAME": "Spark: the name the driver advertises to executors",
}
MLFLOW_ENV_NAMES = {"MLFLOW_DFS_TMP", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"}


# ----------------------------------------------------------------------------- helpers
def _load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _compose() -> dict:
    return _load(REPO / "docker-compose.yml")


def _env(svc: dict) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def _deps(svc: dict) -> dict[str, str]:
    deps = svc.get("depends_on") or {}
    if isinstance(deps, list):  # short form: no condition, i.e. service_started
        return {d: "service_started" for d in deps}
    return {d: (c or {}).get("condition", "service_started") for d, c in deps.items()}


def _command(svc: dict) -> str:
    cmd = svc.get("command") or ""
    return cmd if isinstance(cmd, str) else " ".join(map(str, cmd))


def _volume_targets(svc: dict) -> dict[str, str]:
    """container path -> source, for short-form volume entries."""
    out = {}
    for vol in svc.get("volumes") or []:
        parts = vol.split(":") if isinstance(vol, str) else [vol.get("source", ""), vol.get("target", "")]
        if len(parts) >= 2:
            out[parts[1]] = parts[0]
    return out


def _is_app(svc: dict) -> bool:
    return str(svc.get("image", "")).startswith(APP_IMAGE)


def _pinned(ref: str) -> bool:
    """name:tag with a real tag (or a digest), never latest, and no variable in the name."""
    if "@sha256:" in ref:
        return True
    name, _, tag = ref.rpartition(":")
    return bool(name) and "/" not in tag and bool(tag) and tag != "latest" and "$" not in ref


def _dockerfile_bases(path: Path) -> list[str]:
    stages, bases = set(), []
    for line in path.read_text().splitlines():
        m = re.match(r"\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            if m.group(1) not in stages:
                bases.append(m.group(1))
            if m.group(2):
                stages.add(m.group(2))
    return bases


def _constraints() -> dict[str, str]:
    out = {}
    for line in (RES / "docker" / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            out[name.strip().lower()] = version.strip()
    return out


def _env_refs(node) -> set[str]:
    """Every `{env: NAME}` in a Dagster yaml."""
    if isinstance(node, dict):
        if set(node) == {"env"}:
            return {node["env"]}
        return set().union(*(_env_refs(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_env_refs(v) for v in node)) if node else set()
    return set()


@functools.cache
def code_env_reads() -> frozenset[str]:
    """Env vars crypto_assets reads (settings.py and the CLI in practice: assets get resources),
    found by grepping the package the way a reviewer would."""
    patterns = [
        r'env\.get\("([A-Z][A-Z0-9_]+)"', r'environ\.get\("([A-Z][A-Z0-9_]+)"', r'environ\["([A-Z][A-Z0-9_]+)"\]',
        r'getenv\("([A-Z][A-Z0-9_]+)"', r'EnvVar\("([A-Z][A-Z0-9_]+)"\)',
    ]
    read: set[str] = set()
    for path in (REPO / "crypto_assets").rglob("*.py"):
        src = path.read_text()
        for pat in patterns:
            read |= set(re.findall(pat, src))
    return frozenset(read)


@functools.cache
def dagster_yaml_env() -> frozenset[str]:
    return frozenset(_env_refs(_load(RES / "dagster" / "dagster.yaml")))


# --------------------------------------------------------------------------- validator
def compose_problems(doc: dict) -> list[str]:
    """Everything wrong with a docker-compose document; [] when it is the stack we designed."""
    problems: list[str] = []
    services: dict = doc.get("services") or {}
    named_volumes = set(doc.get("volumes") or {})
    allowed_env = code_env_reads() | dagster_yaml_env() | set(THIRD_PARTY_ENV)

    for name, required in REQUIRED_DEPENDENCIES.items():
        if name not in services:
            problems.append(f"service {name} is missing")
            continue
        deps = _deps(services[name])
        for dep, cond in required.items():
            if dep not in deps:
                problems.append(f"{name} must depend on {dep} ({cond})")
            elif deps[dep] != cond:
                problems.append(f"{name} depends on {dep} with {deps[dep]}, expected {cond}")

    for name, svc in services.items():
        svc = svc or {}
        # images: pinned, and a built image's bases pinned too
        image = str(svc.get("image", ""))
        if not image:
            problems.append(f"{name}: name the image (with a tag) so builds are reused")
        elif not _pinned(image):
            problems.append(f"{name}: image {image} is not pinned")
        if "build" in svc:
            build = svc["build"] if isinstance(svc["build"], dict) else {"context": svc["build"]}
            dockerfile = REPO / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
            if not dockerfile.exists():
                problems.append(f"{name}: {dockerfile.relative_to(REPO)} does not exist")
            else:
                for base in _dockerfile_bases(dockerfile):
                    if not _pinned(base):
                        problems.append(f"{name}: base image {base} in {dockerfile.name} is not pinned")
        # dependencies exist, and health conditions have a healthcheck to wait on
        for dep, cond in _deps(svc).items():
            if dep not in services:
                problems.append(f"{name} depends on unknown service {dep}")
                continue
            if cond not in {"service_healthy", "service_completed_successfully", "service_started"}:
                problems.append(f"{name}: unknown condition {cond} on {dep}")
            if cond == "service_healthy" and not (services[dep] or {}).get("healthcheck", {}).get("test"):
                problems.append(f"{name} waits for {dep} to be healthy but {dep} has no healthcheck")
            if cond == "service_completed_successfully" and (services[dep] or {}).get("restart", "no") not in ("no", False):
                problems.append(f"{name} waits for {dep} to complete but {dep} restarts")
        if name not in NO_HEALTHCHECK_NEEDED and not svc.get("healthcheck", {}).get("test"):
            problems.append(f"{name}: long-running service without a healthcheck")
        # volumes: named ones declared
        for target, src in _volume_targets(svc).items():
            if not src.startswith((".", "/", "$")) and src not in named_volumes:
                problems.append(f"{name}: volume {src} is not declared")
            if src.startswith("./") and not (REPO / src).exists():
                problems.append(f"{name}: bind mount {src} does not exist")
        # ports: only the UIs, on loopback by default
        for port in svc.get("ports") or []:
            port = str(port)
            if not port.startswith(LOOPBACK):
                problems.append(f"{name}: port {port} must be published on {LOOPBACK}... (loopback by default)")
            host_port = port[len(LOOPBACK):].split(":")[0] if port.startswith(LOOPBACK) else port.split(":")[0]
            if PUBLISHED.get(name) != host_port:
                problems.append(f"{name}: publishes {port}; only the UIs are published ({PUBLISHED})")
        # env: app services set only what the code (or a named library) reads
        if _is_app(svc):
            for var in _env(svc):
                if var not in allowed_env:
                    problems.append(f"{name}: {var} is not read by the code, dagster.yaml or a listed library")
    for name, port in PUBLISHED.items():
        if name in services and not any(str(p).startswith(f"{LOOPBACK}{port}:") for p in services[name].get("ports") or []):
            problems.append(f"{name}: UI port {port} is not published")

    problems += _wiring_problems(services, named_volumes)
    return problems


def _wiring_problems(services: dict, named_volumes: set[str]) -> list[str]:
    """How the services find each other: Spark, MLflow, Dagster storage, Kafka, /data."""
    p: list[str] = []
    get = lambda n: services.get(n) or {}  # noqa: E731
    code = _env(get("code-server"))
    if code.get("SPARK_MASTER") != SPARK_MASTER_URL:
        p.append(f"code-server: SPARK_MASTER must be {SPARK_MASTER_URL}, got {code.get('SPARK_MASTER')}")
    master_cmd = _command(get("spark-master"))
    if "deploy.master.Master" not in master_cmd or "--host spark-master" not in master_cmd or "--port 7077" not in master_cmd:
        p.append(f"spark-master does not serve {SPARK_MASTER_URL}: {master_cmd}")
    if SPARK_MASTER_URL not in _command(get("spark-worker")):
        p.append(f"spark-worker does not register with {SPARK_MASTER_URL}")
    if code.get("SPARK_LOCAL_HOSTNAME") != "code-server":
        p.append("code-server: SPARK_LOCAL_HOSTNAME=code-server, or executors cannot reach the driver")
    for var in ("MLFLOW_DFS_TMP", "TMPDIR"):
        if not code.get(var, "").startswith("/data/"):
            p.append(f"code-server: {var} must be on the shared /data volume")
    for name in ("code-server", "dagster-webserver", "dagster-daemon", "kafka-init", "producer"):
        env = _env(get(name))
        if name in services and env.get("CRYPTO_HOME") != "/data":
            p.append(f"{name}: CRYPTO_HOME must be /data")
        if name in services and env.get("KAFKA_BOOTSTRAP_SERVERS") != "kafka:9092":
            p.append(f"{name}: KAFKA_BOOTSTRAP_SERVERS must be kafka:9092")
    data_sources = set()
    for name in DATA_MOUNTS:
        src = _volume_targets(get(name)).get("/data")
        if name in services and not src:
            p.append(f"{name}: mount the data volume at /data")
        data_sources.add(src)
    if len(data_sources - {None}) > 1 or not (data_sources - {None}) <= named_volumes:
        p.append(f"/data must be one declared named volume everywhere, got {data_sources}")
    # MLflow: the app's tracking URI is this server, which proxies artifacts and uses Postgres
    if code.get("MLFLOW_TRACKING_URI") != MLFLOW_URL:
        p.append(f"code-server: MLFLOW_TRACKING_URI must be {MLFLOW_URL}")
    ml = get("mlflow")
    ml_cmd, ml_env = _command(ml), _env(ml)
    if "--port=5000" not in ml_cmd and "--port 5000" not in ml_cmd:
        p.append("mlflow: serve on port 5000")
    if "--serve-artifacts" not in ml_cmd or "--no-serve-artifacts" in ml_cmd:
        p.append("mlflow: --serve-artifacts, so clients need no shared artifact filesystem")
    pg_env = _env(get("postgres"))
    uri = ml_env.get("MLFLOW_BACKEND_STORE_URI", "")
    # +psycopg2 explicitly: SQLAlchemy 2.1 maps plain postgresql:// to psycopg 3, not in the image
    m = re.match(r"postgresql\+psycopg2://([^:@/]+)(?::[^@]*)?@postgres(?::5432)?/(\w+)$", uri)
    if not m or (m.group(1), m.group(2)) != (pg_env.get("MLFLOW_POSTGRES_USER"), pg_env.get("MLFLOW_POSTGRES_DB")):
        p.append(f"mlflow: backend store {uri!r} is not the mlflow database the postgres init script creates")
    if "mlflow" not in ml_env.get("MLFLOW_SERVER_ALLOWED_HOSTS", ""):
        p.append("mlflow: allow the Host header mlflow:5000 (MLFLOW_SERVER_ALLOWED_HOSTS)")
    # Postgres: the init script gets the names it uses; Dagster services use the same database
    script = RES / "postgres" / "init-databases.sh"
    if str(_volume_targets(get("postgres")).get("/docker-entrypoint-initdb.d/10-init-databases.sh", "")).lstrip("./") \
            != str(script.relative_to(REPO)):
        p.append("postgres: mount resources/postgres/init-databases.sh into /docker-entrypoint-initdb.d")
    for var in set(re.findall(r'"\$([A-Z_]+)"', script.read_text())) - {"POSTGRES_USER"}:
        if var not in pg_env:
            p.append(f"postgres: the init script needs {var}")
    for name in ("code-server", "dagster-webserver", "dagster-daemon"):
        env = _env(get(name))
        for var in sorted(dagster_yaml_env()):
            if var not in env:
                p.append(f"{name}: dagster.yaml needs {var}")
        for var in ("DAGSTER_POSTGRES_DB", "DAGSTER_POSTGRES_USER"):
            if var in env and env[var] != pg_env.get(var):
                p.append(f"{name}: {var}={env[var]} but postgres creates {pg_env.get(var)}")
        if env.get("DAGSTER_POSTGRES_HOST", "postgres") != "postgres":
            p.append(f"{name}: DAGSTER_POSTGRES_HOST must be postgres")
    # Dagster: webserver and daemon load the code server that the workspace names
    ws = _load(RES / "dagster" / "workspace.yaml")["load_from"]
    grpc = [e["grpc_server"] for e in ws if "grpc_server" in e]
    if len(grpc) != 1 or grpc[0].get("host") not in services or str(grpc[0].get("port")) not in _command(get("code-server")):
        p.append(f"workspace.yaml must load the code server's gRPC endpoint, got {ws}")
    for name in ("dagster-webserver", "dagster-daemon"):
        if "/opt/dagster/workspace.yaml" not in _command(get(name)):
            p.append(f"{name}: load -w /opt/dagster/workspace.yaml")
    if "code-server start" not in _command(get("code-server")) or "crypto_assets.definitions" not in _command(get("code-server")):
        p.append("code-server: serve crypto_assets.definitions over gRPC")
    # Kafka: KRaft, topics only from the spec
    kafka = _env(get("kafka"))
    if "controller" not in kafka.get("KAFKA_PROCESS_ROLES", ""):
        p.append("kafka: KRaft (process.roles broker,controller), no ZooKeeper")
    if kafka.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE") != "false":
        p.append("kafka: topics come from crypto_assets/kafka/topics.py, not auto-creation")
    if not _command(get("kafka-init")).startswith("crypto-assets topics"):
        p.append("kafka-init: run `crypto-assets topics`")
    if not _command(get("producer")).startswith("crypto-assets produce --source coingecko"):
        p.append("producer: run `crypto-assets produce --source coingecko`")
    return p


# ------------------------------------------------------------------------------- tests
def test_compose_matches_the_design():
    assert compose_problems(_compose()) == []


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
    "unpinned image": (lambda d: _set(d, "kafka", "image", "apache/kafka:latest"), "image apache/kafka:latest is not pinned"),
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
        lambda d: _set(d, "mlflow", "command", [c for c in d["services"]["mlflow"]["command"] if c != "--serve-artifacts"]),
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
    doc = copy.deepcopy(_compose())
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
    mlflow_dir = Path(importlib.util.find_spec("mlflow").origin).parent
    mlflow_env = (mlflow_dir / "environment_variables.py").read_text()
    for var in MLFLOW_ENV_NAMES:
        assert f'"{var}"' in mlflow_env, f"mlflow no longer reads {var}"


def test_images_agree_on_versions():
    """The driver's pyspark is the cluster's Spark; the MLflow client is the server's version."""
    pins = _constraints()
    spark_base = _dockerfile_bases(RES / "spark" / "Dockerfile")[0]
    assert spark_base.startswith("apache/spark:") and spark_base.split(":")[1].split("-")[0] == pins["pyspark"]
    mlflow_base = _dockerfile_bases(RES / "mlflow" / "Dockerfile")[0]
    assert mlflow_base == f"ghcr.io/mlflow/mlflow:v{pins['mlflow']}"
    services = _compose()["services"]
    assert services["mlflow"]["image"].endswith(":" + pins["mlflow"])
    assert services["spark-master"]["image"].endswith(":" + pins["pyspark"])
    assert "psycopg2" in (RES / "mlflow" / "Dockerfile").read_text()  # Postgres backend driver
    app_dockerfile = (RES / "docker" / "Dockerfile").read_text()
    assert "-c constraints.txt" in app_dockerfile and "dagster-postgres" in app_dockerfile
    assert "SPARK_LOCAL_IP=0.0.0.0" not in app_dockerfile  # the driver would advertise 0.0.0.0
    ignore = (RES / "docker" / "Dockerfile.dockerignore").read_text().split()
    for copied in re.findall(r"^COPY (?!--from)(\S+)", app_dockerfile, re.M):
        assert f"!{copied}" in ignore or f"!{copied}/" in ignore, f"{copied} is excluded from the build context"


def test_postgres_dagster_yaml():
    """The compose instance config: Postgres storage from env, queued runs, the duckdb_writer
    pool limited to 1 like the root dagster.yaml, and it passes Dagster's own schema."""
    from crypto_assets.defs.bronze import DUCKDB_POOL  # the pool every warehouse writer uses

    path = RES / "dagster" / "dagster.yaml"
    cfg = _load(path)
    root = _load(REPO / "dagster.yaml")
    assert DUCKDB_POOL == "duckdb_writer" and "duckdb_writer" in path.read_text()
    assert cfg["concurrency"]["pools"]["default_limit"] == 1 == root["concurrency"]["pools"]["default_limit"]
    assert cfg["concurrency"] == root["concurrency"]
    assert set(cfg["storage"]) == {"postgres"}
    assert cfg["storage"]["postgres"]["postgres_db"]["scheme"] == "postgresql+psycopg2"  # see the mlflow URI
    assert dagster_yaml_env() == {"DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_DB", "DAGSTER_POSTGRES_USER", "DAGSTER_POSTGRES_PASSWORD"}
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
    assert names == ["crypto_raw", "crypto_raw_dlq", "crypto_alerts", "crypto_predictions"]
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
    doc = _compose()
    doc["services"]["code-server"]["depends_on"]["zookeeper"] = {"condition": "service_healthy"}
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(yaml.safe_dump(doc))
    out = _compose_config(broken)
    assert out.returncode != 0 and "zookeeper" in out.stderr
