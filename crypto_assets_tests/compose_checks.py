"""The structural validator of docker-compose.yml, shared by the compose and lock tests.

`compose_problems()` returns every way the file departs from the stack the README describes
(services, dependencies and their health conditions, env vars the code reads, volumes,
loopback-only UIs, pinned images, the Spark/MLflow/Dagster wiring). crypto_assets_tests/
test_compose.py runs it on the real file and on broken copies, so it cannot pass vacuously.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import yaml

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
    "alerts": {"kafka-init": "service_completed_successfully"},
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
# The only published ports: the UIs and the read API, on loopback unless BIND_ADDRESS says otherwise.
PUBLISHED = {"dagster-webserver": "3000", "mlflow": "5000", "kafka-ui": "8080", "spark-master": "8081", "api": "8000"}
# Services that need CRYPTO_HOME's volume at /data: the code server runs the steps (with the
# DefaultRunLauncher), the webserver reads compute logs, Spark executors read/write the paths
# the driver hands them; the read API reads the lake.
DATA_MOUNTS = {"code-server", "dagster-webserver", "dagster-daemon", "spark-worker", "api"}  # api: reads /data/lake
# Env vars an app service may set that crypto_assets does not read itself, and who reads them.
THIRD_PARTY_ENV = {
    "MLFLOW_DFS_TMP": "mlflow.spark: where executors save a Spark model before it is logged",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "mlflow: no progress bars in run logs",
    "TMPDIR": "Python tempfile: mlflow downloads champions there for executors to read",
    "SPARK_LOCAL_HOSTNAME": "Spark: the name the driver advertises to executors",
}
MLFLOW_ENV_NAMES = {"MLFLOW_DFS_TMP", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"}


# ----------------------------------------------------------------------------- helpers
def load_yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def compose_doc() -> dict:
    return load_yaml(REPO / "docker-compose.yml")


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


def dockerfile_bases(path: Path) -> list[str]:
    stages, bases = set(), []
    for line in path.read_text().splitlines():
        m = re.match(r"\s*FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", line, re.I)
        if m:
            if m.group(1) not in stages:
                bases.append(m.group(1))
            if m.group(2):
                stages.add(m.group(2))
    return bases


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
    return frozenset(_env_refs(load_yaml(RES / "dagster" / "dagster.yaml")))


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
                for base in dockerfile_bases(dockerfile):
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
            restarts = (services[dep] or {}).get("restart", "no") not in ("no", False)
            if cond == "service_completed_successfully" and restarts:
                problems.append(f"{name} waits for {dep} to complete but {dep} restarts")
        if name not in NO_HEALTHCHECK_NEEDED and not svc.get("healthcheck", {}).get("test"):
            problems.append(f"{name}: long-running service without a healthcheck")
        # volumes: named ones declared
        for src in _volume_targets(svc).values():
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
        ports = services[name].get("ports") or [] if name in services else []
        if name in services and not any(str(p).startswith(f"{LOOPBACK}{port}:") for p in ports):
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
    if not all(part in master_cmd for part in ("deploy.master.Master", "--host spark-master", "--port 7077")):
        p.append(f"spark-master does not serve {SPARK_MASTER_URL}: {master_cmd}")
    if SPARK_MASTER_URL not in _command(get("spark-worker")):
        p.append(f"spark-worker does not register with {SPARK_MASTER_URL}")
    if code.get("SPARK_LOCAL_HOSTNAME") != "code-server":
        p.append("code-server: SPARK_LOCAL_HOSTNAME=code-server, or executors cannot reach the driver")
    for var in ("MLFLOW_DFS_TMP", "TMPDIR"):
        if not code.get(var, "").startswith("/data/"):
            p.append(f"code-server: {var} must be on the shared /data volume")
    for name in ("code-server", "dagster-webserver", "dagster-daemon", "kafka-init", "producer", "alerts"):
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
    ws = load_yaml(RES / "dagster" / "workspace.yaml")["load_from"]
    grpc = [e["grpc_server"] for e in ws if "grpc_server" in e]
    code_cmd = _command(get("code-server"))
    if len(grpc) != 1 or grpc[0].get("host") not in services or str(grpc[0].get("port")) not in code_cmd:
        p.append(f"workspace.yaml must load the code server's gRPC endpoint, got {ws}")
    for name in ("dagster-webserver", "dagster-daemon"):
        if "/opt/dagster/workspace.yaml" not in _command(get(name)):
            p.append(f"{name}: load -w /opt/dagster/workspace.yaml")
    if "code-server start" not in code_cmd or "crypto_assets.definitions" not in code_cmd:
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
