"""The stack test's driver: start the services, produce simulated ticks, launch the incremental
job and one training run through the Dagster webserver (GraphQL) so the daemon dequeues them and
the code server starts their run workers, wait for success, check what each service holds, then
stop everything. `python -m crypto_assets.ops.stack` (scripts/stack_test.sh) runs it."""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from crypto_assets.ops.home import REPO_ROOT
from crypto_assets.ops.stack import services as s
from crypto_assets.ops.stack.procs import Supervisor, http_json
from crypto_assets.ops.ui_check import look_at_dagster

COINS = "bitcoin,ethereum,solana,cardano,litecoin"
# Small models: the test is about the services talking, not about model quality.
TRAINING_CONFIG = {"ops": {"price_model": {"config": {"horizons": ["1h", "4h"], "bootstrap_resamples": 50}},
                           "anomaly_model": {"config": {"num_trees": 10, "max_depth": 5, "bootstrap_resamples": 50}},
                           "trend_model": {"config": {"bootstrap_resamples": 50}}}}
# what training registers with TRAINING_CONFIG: one price model per horizon
MODELS = ["trend_model", "anomaly_model", "price_model_1h", "price_model_4h", "coin_clusters"]


def app_env(env: dict[str, str], root: Path, ports: s.Ports, *, home: Path, bootstrap: str, mlflow: str,
            spark: str, dagster_home: Path) -> dict[str, str]:
    """docker-compose.yml's x-app-env + x-dagster-db + the code server's Spark settings, for 127.0.0.1."""
    tmp = home / "tmp"
    (tmp / "mlflow").mkdir(parents=True, exist_ok=True)
    return {**env, "CRYPTO_HOME": str(home), "KAFKA_BOOTSTRAP_SERVERS": bootstrap, "COINS": COINS,
            "MLFLOW_TRACKING_URI": mlflow, "DAGSTER_HOME": str(dagster_home),
            "DAGSTER_POSTGRES_HOST": "127.0.0.1", "DAGSTER_POSTGRES_DB": "dagster",
            "DAGSTER_POSTGRES_USER": "dagster", "DAGSTER_POSTGRES_PASSWORD": "dagster",
            "SPARK_MASTER": spark, "SPARK_DRIVER_MEMORY": "1g", "SPARK_SHUFFLE_PARTITIONS": "4",
            "MLFLOW_DFS_TMP": str(tmp / "mlflow"), "TMPDIR": str(tmp), "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


def launch_and_wait(web_port: int, job: str, run_config: dict, timeout_s: float) -> tuple[str, float]:
    """Submit through the webserver's GraphQL API; the queued run is the daemon's to start."""
    from dagster import DagsterRunStatus
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=web_port)
    t0 = time.monotonic()
    run_id = client.submit_job_execution(job, repository_location_name="crypto_assets", run_config=run_config)
    while time.monotonic() - t0 < timeout_s:
        status = client.get_run_status(run_id)
        if status == DagsterRunStatus.SUCCESS:
            return run_id, time.monotonic() - t0
        if status in (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED):
            raise RuntimeError(f"{job} run {run_id} ended {status.value}")
        time.sleep(1.0)
    raise RuntimeError(f"{job} run {run_id} not done after {timeout_s:.0f}s")


def check_results(ports: s.Ports, env: dict[str, str], run_ids: list[str]) -> dict[str, Any]:
    """What each service holds after the two runs; raises AssertionError naming what is missing."""
    import duckdb
    import psycopg2
    from mlflow.tracking import MlflowClient

    home = Path(env["CRYPTO_HOME"])
    with duckdb.connect(str(home / "warehouse.duckdb"), read_only=True) as conn:
        rows = {t: conn.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                for t in ("raw_ticks", "clean_ticks", "market_features", "ohlcv_1m", "anomalies")}
    assert all(n > 0 for n in rows.values()), f"empty warehouse tables: {rows}"
    with psycopg2.connect(host="127.0.0.1", port=ports.postgres, dbname="dagster", user="dagster",
                          password="dagster") as pg, pg.cursor() as cur:
        cur.execute("SELECT run_id, status FROM runs WHERE run_id = ANY(%s)", (run_ids,))
        runs = dict(cur.fetchall())
        cur.execute("SELECT count(*) FROM event_logs WHERE run_id = ANY(%s) AND dagster_event_type = "
                    "'ASSET_MATERIALIZATION'", (run_ids,))
        materializations = cur.fetchone()[0]  # type: ignore[index]
    assert runs == {r: "SUCCESS" for r in run_ids}, f"runs in Postgres: {runs}"
    assert materializations > 0, "no materializations in the Postgres event log"
    client = MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    registered = {m.name: max(int(v.version) for v in client.search_model_versions(f"name = '{m.name}'"))
                  for m in client.search_registered_models()}
    missing = [m for m in MODELS if f"crypto_assets.{m}" not in registered]
    assert not missing, f"models not registered in the MLflow server: {missing} (registered: {registered})"
    stored = sum(1 for p in (Path(env["_ARTIFACTS"])).rglob("*") if p.is_file())
    assert stored > 0, "no artifacts under the server's --artifacts-destination (proxied upload)"
    master = http_json(f"http://127.0.0.1:{ports.spark_ui}/json/")
    apps = [a for a in master.get("completedapps", []) + master.get("activeapps", []) if a.get("name") == "crypto_assets"]
    assert apps, f"no crypto_assets application on the standalone master: {master}"
    return {"rows": rows, "runs": runs, "materializations": materializations, "models": registered,
            "artifact_files": stored, "spark_apps": [(a["id"], a["state"], a.get("cores")) for a in apps]}


def run(root: Path, keep: bool = False) -> int:
    sup = Supervisor(root)
    timings: dict[str, float] = {}
    t_all = time.monotonic()

    def step(name: str, t0: float) -> None:
        timings[name] = round(time.monotonic() - t0, 1)
        print(f"  {name}: {timings[name]}s", flush=True)

    ports = s.Ports.pick()
    env = s.base_env(root)
    home = root / "data"
    home.mkdir(parents=True)
    try:
        print(f"stack under {root}", flush=True)
        t = time.monotonic()
        s.start_postgres(sup, ports, env)
        step("postgres", t)
        t = time.monotonic()
        mlflow = s.start_mlflow(sup, ports, env)
        step("mlflow server", t)
        t = time.monotonic()
        spark = s.start_spark(sup, ports, env)
        step("spark master + worker", t)
        t = time.monotonic()
        bootstrap = s.start_broker(sup, {**env, "CRYPTO_HOME": str(home)}, home)
        step("embedded broker", t)
        dagster_home = s.write_instance(root, ports)
        aenv = app_env(env, root, ports, home=home, bootstrap=bootstrap, mlflow=mlflow, spark=spark,
                       dagster_home=dagster_home)
        t = time.monotonic()
        s.start_dagster(sup, ports, aenv, dagster_home)
        step("dagster code server + webserver + daemon", t)
        t = time.monotonic()
        subprocess.run([str(s.VENV_BIN / "crypto-assets"), "produce", "--source", "simulate", "--history", "1.5d",
                        "--interval", "60s", "--seed", "7"], check=True, env=aenv, stdout=subprocess.DEVNULL)
        step("produce 1.5 days of ticks", t)
        run_ids = []
        for job, cfg, timeout in (("incremental_job", {}, 300), ("training_job", TRAINING_CONFIG, 900)):
            run_id, secs = launch_and_wait(ports.webserver, job, cfg, timeout)
            run_ids.append(run_id)
            timings[job] = round(secs, 1)
            print(f"  {job} {run_id[:8]} SUCCESS in {secs:.1f}s", flush=True)
        time.sleep(2)  # the driver's application leaves the master's active list when its JVM exits
        results = check_results(ports, {**aenv, "_ARTIFACTS": str(root / "mlartifacts")}, run_ids)
        t = time.monotonic()
        shots = look_at_dagster(f"http://127.0.0.1:{ports.webserver}", REPO_ROOT / "var" / "stack-test" / "ui",
                                row_count=results["rows"]["clean_ticks"])
        results["screenshots"] = [f"{shot.png} ({shot.seconds}s)" for shot in shots]
        step("the UI in headless Chromium", t)
        for k, v in results.items():
            print(f"  {k}: {v}", flush=True)
        print("stack test passed", flush=True)
        return 0
    except (RuntimeError, AssertionError, subprocess.CalledProcessError) as exc:
        print(f"stack test FAILED: {exc}", file=sys.stderr, flush=True)
        print(f"logs: {root / 'logs'}", file=sys.stderr)
        return 1
    finally:
        t = time.monotonic()
        sup.stop_all(timeout_s=10.0)
        step("stop", t)
        print(f"total {time.monotonic() - t_all:.1f}s", flush=True)
        if not keep:
            subprocess.run(["rm", "-rf", str(root)], check=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m crypto_assets.ops.stack", description=__doc__)
    p.add_argument("--root", help="directory for every service's data and logs (default: a new temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the directory (logs, data) afterwards")
    args = p.parse_args(argv)
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="crypto-stack-"))
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # postgres runs as another user when we are root: it must reach its directory
    return run(root.resolve(), keep=args.keep)
