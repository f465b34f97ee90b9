"""uv.lock is the one set of versions: pyproject.toml's floors, this environment, the app image
(which installs the lock) and the Spark / MLflow images docker-compose.yml builds all agree on it."""

from __future__ import annotations

import functools
import importlib.metadata
import re
import tomllib

import pytest

from crypto_assets_tests.compose_checks import REPO, RES, compose_doc, dockerfile_bases


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.cache
def _lock() -> dict:
    return tomllib.loads((REPO / "uv.lock").read_text())


def _locked() -> dict[str, str]:
    """package -> version in uv.lock (one version each: the lock is for one environment)."""
    out: dict[str, str] = {}
    for pkg in _lock()["package"]:
        assert out.setdefault(_norm(pkg["name"]), pkg["version"]) == pkg["version"], pkg["name"]
    return out


def _requirements() -> list[str]:
    """pyproject.toml's dependencies and every extra's."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]


def _floor(requirement: str) -> tuple[str, str]:
    """(name, lowest allowed version) of a `name[extra]>=x,<y` or `name==x` requirement."""
    m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^]]*\])?\s*(>=|==)\s*([^,;\s]+)", requirement)
    assert m, f"{requirement!r}: give it a floor (>=) or a pin (==)"
    return _norm(m.group(1)), m.group(3)


def _pip_pin(text: str, name: str) -> str | None:
    m = re.search(rf"\b{re.escape(name)}==([\w.]+)", text)
    return m.group(1) if m else None


def test_images_agree_on_versions():
    """The driver's pyspark is the cluster's Spark; the MLflow client is the server's version."""
    pins = _locked()
    spark_base = dockerfile_bases(RES / "spark" / "Dockerfile")[0]
    assert spark_base.startswith("apache/spark:") and spark_base.split(":")[1].split("-")[0] == pins["pyspark"]
    mlflow_base = dockerfile_bases(RES / "mlflow" / "Dockerfile")[0]
    assert mlflow_base == f"ghcr.io/mlflow/mlflow:v{pins['mlflow']}"
    services = compose_doc()["services"]
    assert services["mlflow"]["image"].endswith(":" + pins["mlflow"])
    assert services["spark-master"]["image"].endswith(":" + pins["pyspark"])
    assert "psycopg2" in (RES / "mlflow" / "Dockerfile").read_text()  # Postgres backend driver
    app_dockerfile = (RES / "docker" / "Dockerfile").read_text()
    # the app image installs the lock as it is, with the postgres extra (dagster-postgres)
    assert "uv sync --frozen" in app_dockerfile and "--extra postgres" in app_dockerfile
    assert "pip install --no-cache-dir \"uv==${UV_VERSION}\"" in app_dockerfile
    uv_version = re.search(r"^ARG UV_VERSION=(\S+)$", app_dockerfile, re.M)
    assert uv_version and uv_version.group(1) == pins["uv"]
    assert "SPARK_LOCAL_IP=0.0.0.0" not in app_dockerfile  # the driver would advertise 0.0.0.0
    ignore = (RES / "docker" / "Dockerfile.dockerignore").read_text().split()
    copies = re.findall(r"^COPY (?!--from)(.+)$", app_dockerfile, re.M)
    assert "uv.lock" in " ".join(copies)
    for copied in (src for line in copies for src in line.split()[:-1]):
        assert f"!{copied}" in ignore or f"!{copied}/" in ignore, f"{copied} is excluded from the build context"


def test_pins_agree_with_the_lock():
    """uv.lock is the one set of versions: pyproject's floors are the locked (tested) versions,
    this environment runs them, the compose images are tagged with them, and every package
    comes from the public index (none from a directory of this machine)."""
    locked = _locked()
    for req in _requirements():
        name, floor = _floor(req)
        assert locked[name] == floor, f"pyproject.toml says {req!r}, uv.lock has {name} {locked[name]}"
    for req in _requirements():
        name, _ = _floor(req)
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # an extra this environment does not have (postgres is the compose image's)
        assert installed == locked[name], (
            f"{name} {installed} installed, uv.lock has {locked[name]}: run scripts/bootstrap.sh"
        )
    for pkg in _lock()["package"]:
        source = pkg["source"]
        assert source.get("registry") == "https://pypi.org/simple" or source == {"editable": "."}, (pkg["name"], source)
    # dagster's packages are released together: the core ones at its version, the libraries at
    # 0.(minor+16).patch
    major, minor, patch = locked["dagster"].split(".")
    for core in ("dagster-webserver", "dagster-pipes", "dagster-graphql", "dagster-shared"):
        assert locked[core] == locked["dagster"], (core, locked[core], locked["dagster"])
    for lib in ("dagster-duckdb", "dagster-pyspark", "dagster-spark", "dagster-postgres"):
        assert major == "1" and locked[lib] == f"0.{int(minor) + 16}.{patch}", (lib, locked[lib], locked["dagster"])
    # the images docker-compose.yml builds
    services = compose_doc()["services"]
    for name in ("spark-master", "spark-worker"):
        assert services[name]["image"] == f"crypto-assets-spark:{locked['pyspark']}", name
    assert services["mlflow"]["image"] == f"crypto-assets-mlflow:{locked['mlflow']}"
    assert services["code-server"]["image"] == f"crypto-assets:{locked['crypto-assets']}"
    mlflow_dockerfile = (RES / "mlflow" / "Dockerfile").read_text()
    assert _pip_pin(mlflow_dockerfile, "psycopg2-binary") == locked["psycopg2-binary"]  # what dagster-postgres uses
    spark_base = dockerfile_bases(RES / "spark" / "Dockerfile")[0]
    assert spark_base == f"apache/spark:{locked['pyspark']}-scala2.13-java17-ubuntu"


def test_lock_checks_catch_a_drift():
    """The parsers the checks above rely on see floors, pins and their absence."""
    assert _floor("polars>=1.20") == ("polars", "1.20") != ("polars", _locked()["polars"])
    assert _floor("pyright[nodejs]==1.1.414") == ("pyright", "1.1.414")
    assert _floor("TA-Lib>=0.8.2,<0.9") == ("ta-lib", "0.8.2")
    with pytest.raises(AssertionError, match="give it a floor"):
        _floor("requests")
    assert _pip_pin("RUN pip install psycopg2-binary==2.9.1 x", "psycopg2-binary") == "2.9.1"
    assert _pip_pin("RUN pip install psycopg2-binary", "psycopg2-binary") is None
