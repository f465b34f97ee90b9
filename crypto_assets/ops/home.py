"""The data root the operator commands share: $CRYPTO_HOME (./var by default) with the Dagster
instance under it, set up the same way by `demo`, `live` and the tests."""

import os
import shutil
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def prepare_home(home: Path) -> Path:
    """Point Dagster at <home>/dagster with the repo's instance config (dagster.yaml)."""
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    src = REPO_ROOT / "dagster.yaml"
    if src.exists():
        shutil.copyfile(src, dagster_home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    return dagster_home
