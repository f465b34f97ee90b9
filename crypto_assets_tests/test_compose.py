"""docker-compose.yml cannot be started here (no engine); check it structurally, and with
`docker-compose config -q` when that binary exists, so a broken file fails the suite."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from crypto_assets.topics import TOPICS

REPO = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def test_compose_structure():
    doc = _compose()
    services = doc["services"]
    for required in ("kafka", "kafka-ui", "kafka-init", "producer"):
        assert required in services, required
    named_volumes = set(doc.get("volumes", {}))
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        image = svc.get("image", "")
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin the image tag"
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            assert cond["condition"] in {"service_healthy", "service_completed_successfully", "service_started"}
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} needs a healthcheck"
        for vol in svc.get("volumes", []) or []:
            src = vol.split(":")[0]
            if not src.startswith((".", "/")):
                assert src in named_volumes, f"{name}: volume {src} not declared"
        for port in svc.get("ports", []) or []:
            assert port.startswith("${BIND_ADDRESS:-127.0.0.1}:"), f"{name}: publish on loopback by default"
    kafka = services["kafka"]["environment"]
    assert "controller" in kafka["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert kafka["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"  # topics come from the spec
    assert services["kafka-init"]["command"][:2] == ["crypto-assets", "topics"]


def test_compose_env_matches_settings():
    """Every env var the app services set is one settings.py reads."""
    settings_src = (REPO / "crypto_assets" / "settings.py").read_text()
    cli_src = (REPO / "crypto_assets" / "cli.py").read_text()
    read = set(re.findall(r'env\.get\("([A-Z_]+)"', settings_src)) | set(re.findall(r'environ\.get\("([A-Z_]+)"', cli_src))
    read |= {"CRYPTO_HOME", "COINS"}
    for name, svc in _compose()["services"].items():
        if svc.get("image", "").startswith("crypto-assets"):
            for var in svc.get("environment", {}):
                assert var in read, f"{name}: {var} is not read by the code"
    assert (REPO / "resources" / "docker" / "Dockerfile").exists()


def test_topic_spec_is_the_single_source():
    names = [t.name for t in TOPICS]
    assert names == ["crypto_raw", "crypto_raw_dlq", "crypto_alerts", "crypto_predictions"]
    assert all(t.partitions >= 1 and int(t.config()["retention.ms"]) > 0 for t in TOPICS)


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose binary not installed")
def test_compose_config_validates():
    out = subprocess.run(
        ["docker-compose", "-f", str(REPO / "docker-compose.yml"), "config", "-q"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
