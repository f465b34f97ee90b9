"""`make ui` builds the market report once at start when the latest one is missing or older than
the warehouse, so the UI shows a current report (inline key figures, Markdown preview) without a
demo run or a running schedule. Recorded in the Dagster instance ($DAGSTER_HOME) as a run of market_report.

Run as `python -m crypto_assets.ops.report_once` with CRYPTO_HOME and DAGSTER_HOME set."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from crypto_assets import settings


def report_state(home: Path) -> str:
    """`no-warehouse` (nothing to report on), `current` (latest report newer than the warehouse
    file) or `stale` (missing or older: build one)."""
    warehouse = home / "warehouse.duckdb"
    if not warehouse.exists():
        return "no-warehouse"
    latest = home / "reports" / "latest" / "report.md"
    if latest.exists() and latest.stat().st_mtime >= warehouse.stat().st_mtime:
        return "current"
    return "stale"


def ensure_report(home: Path) -> str:
    """Materialise market_report (report_job) into the current Dagster instance when stale."""
    state = report_state(home)
    if state != "stale":
        return state
    import dagster as dg

    from crypto_assets.defs.report import market_report

    env = dict(os.environ, CRYPTO_HOME=str(home))
    resources = {"lakehouse": settings.lakehouse_resource(env), "mlflow": settings.mlflow_resource(env)}
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    with instance:  # entered: definitions then load against this instance's state storage
        result = dg.materialize([market_report], resources=resources, instance=instance,
                                tags={"trigger": "make_ui"}, raise_on_error=False)
    return "built" if result.success else "failed"


def main() -> int:
    home = settings.crypto_home()
    state = ensure_report(home)
    print({
        "no-warehouse": f"market report: no warehouse under {home} yet (`make demo` or `crypto-assets live` fills it)",
        "current": f"market report: {home / 'reports' / 'latest'} is current",
        "built": f"market report: built into {home / 'reports' / 'latest'}",
        "failed": "market report: the report run failed (see its run in the UI)",
    }[state], flush=True)
    return 0  # the UI starts either way


if __name__ == "__main__":
    sys.exit(main())
