"""`crypto-assets status`: the one screen to check first; exits non-zero when unhealthy."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from crypto_assets import settings
from crypto_assets.kafka.errors import BrokerUnavailable
from crypto_assets.kafka.lag import measure_backlog


def _dagster_section(home) -> bool:
    """Last materialization and latest check results per asset from the Dagster instance."""
    import os
    from pathlib import Path

    dagster_home = settings.dagster_home(Path(home))
    if not (dagster_home / "dagster.yaml").exists() and not (dagster_home / "storage").exists():
        print("dagster      no instance yet (run the demo or `make ui`)")
        return True
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    import dagster as dg

    from crypto_assets.definitions import defs

    ok = True
    with dg.DagsterInstance.get() as instance:
        graph = defs.resolve_asset_graph()
        now = datetime.now(UTC).timestamp()
        for key in sorted(graph.get_all_asset_keys(), key=lambda k: k.to_user_string()):
            ev = instance.get_latest_materialization_event(key)
            when = f"{now - ev.timestamp:,.0f}s ago" if ev else "never"
            failed = []
            checks = [c for c in graph.get_check_keys_for_assets({key})] if hasattr(graph, "get_check_keys_for_assets") else []
            for ck in checks:
                rec = instance.event_log_storage.get_latest_asset_check_execution_by_key([ck]).get(ck)
                if rec is None or rec.event is None:
                    continue
                data = rec.event.dagster_event.event_specific_data if rec.event.dagster_event else None
                if data is not None and getattr(data, "passed", True) is False:
                    sev = getattr(data, "severity", None)
                    failed.append(f"{ck.name}({sev.value if sev else 'ERROR'})")
                    if sev is None or sev.value == "ERROR":
                        ok = False
            status = "checks OK" if not failed else "FAILED: " + ", ".join(failed)
            print(f"asset        {key.to_user_string():<16} materialized {when:<14} {status if checks else ''}")
    return ok


def _mlflow_section() -> None:
    try:
        from crypto_assets.ml.registry import model_summary, summary_baseline, summary_lift, summary_number
        from crypto_assets.settings import mlflow_resource

        mlf = mlflow_resource()
        if not mlf.tracking_uri and not (mlf.artifact_root.parent / "mlflow.db").exists():
            print("mlflow       no models yet")
            return
        for m in model_summary(mlf):
            champ = f"v{m['champion_version']}" if m["champion_version"] else "none"
            print(f"model        {m['model']:<16} champion {champ:<5} latest v{m['latest_version']} gate {m['gate']:<8} "
                  f"{m['metric']} {summary_number(m['value'])} vs {summary_baseline(m)}, lift {summary_lift(m)}")
    except Exception as exc:  # noqa: BLE001 - status must always print something
        print(f"mlflow       unreadable: {exc}")


def cmd_status(args) -> int:
    if getattr(args, "home", None):
        import os
        from pathlib import Path

        os.environ["CRYPTO_HOME"] = str(Path(args.home).resolve())
    kafka = settings.kafka_resource()
    lakehouse = settings.lakehouse_resource()
    healthy = True
    print(f"CRYPTO_HOME  {lakehouse.root}")
    try:
        address = kafka.bootstrap()
        backlog = measure_backlog(kafka, timeout_s=3.0, with_age=False)
        print(f"broker       OK   {address}")
        print(f"topic        {kafka.raw_topic}: lag {backlog.lag} "
              + " ".join(f"p{p}={v[2]}" for p, v in sorted(backlog.partitions.items())))
        trades = measure_backlog(kafka, timeout_s=3.0, with_age=False, topic=kafka.trades_topic)
        print(f"topic        {kafka.trades_topic}: lag {trades.lag} "
              + " ".join(f"p{p}={v[2]}" for p, v in sorted(trades.partitions.items())))
    except BrokerUnavailable as exc:
        healthy = False
        print(f"broker       DOWN {exc}")
    if lakehouse.duckdb_path.exists():
        try:
            with lakehouse.connect(read_only=True) as conn:
                tables = {r[0] for r in conn.sql("SELECT table_name FROM information_schema.tables").fetchall()}
                for t in ("raw_ticks", "raw_trades", "quarantine"):
                    if t in tables:
                        n = conn.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                        print(f"table        {t:<12} {n} rows")
                if "trade_gaps" in tables:
                    gaps, missing = conn.sql("SELECT count(*), coalesce(sum(missing), 0) FROM trade_gaps "
                                             "WHERE missing > 0").fetchall()[0]
                    print(f"trade gaps   {gaps} open, {missing} trades missing")
                if "raw_ticks" in tables:
                    now = datetime.now(UTC)
                    for coin, newest in conn.sql(
                        "SELECT coin_id, max(last_updated_at) FROM raw_ticks GROUP BY 1 ORDER BY 1"
                    ).fetchall():
                        age = (now - newest).total_seconds()
                        print(f"newest tick  {coin:<10} {newest:%Y-%m-%d %H:%M:%S}Z  age {age:,.0f}s")
        except Exception as exc:  # noqa: BLE001 - a locked or broken warehouse is a status finding
            print(f"warehouse    UNREADABLE {exc}")
            healthy = False
    else:
        print("warehouse    not created yet (run `crypto-assets demo` or materialize raw_ticks)")
    healthy &= _dagster_section(lakehouse.root)
    _mlflow_section()
    print("status       " + ("HEALTHY" if healthy else "UNHEALTHY"))
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(cmd_status(None))
