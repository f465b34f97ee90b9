"""The stack bench/freshness.py measures, set up in its temporary CRYPTO_HOME: the copied
dagster.yaml with the experiment knobs, dagster dev's environment and command (or the loop
worker's), the ticks it produces, and the loop worker itself (--mode loop)."""

from __future__ import annotations

import math
import os
import random
import re
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import yaml

from bench._common import REPO
from bench._freshness_runs import LOOP_JOB
from bench._live import TickFn
from bench._stack import dagster_dev_cmd, free_port

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def write_dagster_yaml(args, dagster_home: Path) -> tuple[object, str]:
    """<dagster_home>/dagster.yaml: the repo's, with --dequeue-interval and --pool-granularity
    applied to the copy; returns (dequeue interval, run launcher class) in effect."""
    yaml_text = (REPO / "dagster.yaml").read_text()
    if args.dequeue_interval is not None:
        if "run_queue:\n  dequeue_interval_seconds:" not in yaml_text:
            raise SystemExit("dagster.yaml has no 'run_queue: dequeue_interval_seconds' to override")
        yaml_text = re.sub(r"(run_queue:\n  dequeue_interval_seconds:) *\d+", rf"\g<1> {args.dequeue_interval}", yaml_text)
    effective = yaml.safe_load(yaml_text)
    dequeue = (effective.get("run_queue") or {}).get("dequeue_interval_seconds", "default (5)")
    launcher = (effective.get("run_launcher") or {}).get("class", "DefaultRunLauncher")
    if args.pool_granularity:
        if "    granularity: run\n" not in yaml_text:
            raise SystemExit("dagster.yaml has no '    granularity: run' line to override")
        extra = f"\n    op_granularity_run_buffer: {args.op_run_buffer}" if args.op_run_buffer is not None else ""
        yaml_text = yaml_text.replace("    granularity: run\n", f"    granularity: {args.pool_granularity}{extra}\n")
    (dagster_home / "dagster.yaml").write_text(yaml_text)
    return dequeue, launcher


def stack_env(args, home: Path, dagster_home: Path, bootstrap: str, cron_env: dict[str, str]) -> dict[str, str]:
    """dagster dev's environment: live-mode automation with the sensor knobs of the command line."""
    env = dict(os.environ)
    env.update({
        "CRYPTO_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "CRYPTO_AUTOMATION": "on",
        "SENSOR_INTERVAL_SECONDS": str(args.sensor_interval),
        "BACKLOG_MIN_MESSAGES": str(args.min_messages),
        "BACKLOG_MAX_WAIT_SECONDS": str(args.max_wait),
        "SPARK_LOCAL_IP": "127.0.0.1",
    })
    if args.pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(Path(args.pythonpath).resolve()), env.get("PYTHONPATH")) if p)
    env.update(cron_env)
    return env


def stack_command(args, home: Path, script: Path) -> tuple[list[str], Path, int]:
    """(command, working directory, port): dagster dev, or with --mode loop `script --loop-worker`."""
    port = free_port()
    cmd, cwd = dagster_dev_cmd(port), REPO
    if args.pythonpath:
        # The code server puts its working directory first on sys.path (default: the cwd, which
        # would shadow PYTHONPATH with the checkout): point it at the patched copy explicitly.
        cwd = Path(args.pythonpath).resolve()
        ws = home / "workspace.yaml"
        ws.write_text("load_from:\n  - python_module:\n      module_name: crypto_assets.definitions\n"
                      f"      location_name: crypto_assets\n      working_directory: {cwd}\n")
        cmd = dagster_dev_cmd(port, ws)
    if args.mode == "loop":
        cmd = [sys.executable, str(script), "--loop-worker", "--min-messages", str(args.min_messages)]
        if args.loop_assets:
            cmd += ["--loop-assets", args.loop_assets]
    return cmd, cwd, port


def freshness_ticks(rate: float, seed: int) -> TickFn:
    """Contract ticks round-robin over the 10 default coins, prices and volumes random walks from
    their reference values, event time = the producer's ms."""
    from crypto_assets.kafka.tick_contract import DEFAULT_COINS, make_tick

    coins = DEFAULT_COINS
    rng = random.Random(seed)
    prices = {c.coin_id: c.ref_price for c in coins}
    volumes = {c.coin_id: c.ref_volume for c in coins}
    dt = 1.0 / rate * len(coins) / (365 * 24 * 3600)  # years between this coin's ticks

    def tick(i: int, ms: int) -> tuple[str, bytes]:
        coin = coins[i % len(coins)]
        prices[coin.coin_id] *= math.exp(coin.annual_vol * math.sqrt(dt) * rng.gauss(0, 1))
        volumes[coin.coin_id] *= math.exp(0.002 * rng.gauss(0, 1))
        ts = EPOCH + timedelta(milliseconds=ms)
        return coin.coin_id, orjson.dumps(make_tick(
            source="bench", coin_id=coin.coin_id, symbol=coin.symbol, price_usd=prices[coin.coin_id],
            last_updated_at=ts, market_cap_usd=prices[coin.coin_id] * 1e9, volume_24h_usd=volumes[coin.coin_id],
            change_24h_pct=0.0, change_7d_pct=0.0, ingestion_timestamp=ts))

    return tick


def loop_worker(min_messages: int, loop_assets: str | None) -> int:
    """--mode loop: one long-lived process runs incremental_job back to back with
    execute_in_process (same job, resources, checks and instance; no sensor, queue or per-run
    process), whenever the backlog is >= min_messages. Shows what the per-run launch costs."""
    import dagster as dg

    from crypto_assets.definitions import defs
    from crypto_assets.kafka.lag import measure_backlog
    from crypto_assets.settings import kafka_resource

    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())  # Dagster captures it inside a run (that run fails)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))  # the bench's second signal: leave now
    if loop_assets:  # a narrower job (with the selected assets' checks), e.g. only the freshness path
        sub = dg.define_asset_job(LOOP_JOB, selection=dg.AssetSelection.assets(*loop_assets.split(",")),
                                  executor_def=dg.in_process_executor)
        job = dg.Definitions.merge(defs, dg.Definitions(jobs=[sub])).resolve_job_def(LOOP_JOB)
    else:
        job = defs.resolve_job_def("incremental_job")
    kafka = kafka_resource()
    stop_file = Path(os.environ["CRYPTO_HOME"]) / "loop.stop"
    with dg.DagsterInstance.get() as instance:
        while not stop.is_set() and not stop_file.exists():
            try:
                lag = measure_backlog(kafka, timeout_s=2.0, with_age=False).lag
            except Exception as exc:  # noqa: BLE001 - broker not up yet / going away
                print(f"backlog: {exc}", flush=True)
                stop.wait(0.5)
                continue
            if lag < max(min_messages, 1):
                stop.wait(0.2)
                continue
            job.execute_in_process(instance=instance, tags={"lag": str(lag), "trigger": "bench_loop"},
                                   raise_on_error=False)
    return 0
