"""End-to-end freshness benchmark: how long from producing a tick to its row in market_features?

    .venv/bin/python bench/freshness.py [--rate 100] [--duration 180] [--sensor-interval 5]
                                        [--min-messages 1] [--max-wait 1] [--sample-every 20]
                                        [--dequeue-interval N] [--pool-granularity op --op-run-buffer 1]
                                        [--pythonpath DIR] [--mode loop [--loop-assets a,b,c]] [--keep]
                                        [--retrain-cron "*/3 * * * *"] [--predictions-cron "*/1 * * * *"]

About 4-5 minutes per run (dagster dev start-up + warm-up + --duration + drain).

A benchmark, not a test: it prints numbers and PASS/FAIL against the targets (p95 <= 15 s,
stretch p95 <= 5 s); it exits non-zero only if the stack fails (dagster dev dies, nothing is
ever visible), or with --strict when the target is missed.

STACK. Like `crypto-assets live`, in a temporary CRYPTO_HOME: an in-process EmbeddedBroker
(librdkafka mock cluster; broker.json written), and `dagster dev -w workspace.yaml` as a
subprocess in its own process group (start_new_session) with CRYPTO_AUTOMATION=on and the sensor
knobs in the environment (SENSOR_INTERVAL_SECONDS, BACKLOG_MIN_MESSAGES,
BACKLOG_MAX_WAIT_SECONDS). DAGSTER_HOME=<home>/dagster holds a copy of the repo's dagster.yaml;
--dequeue-interval N appends `run_queue: {dequeue_interval_seconds: N}` to that COPY (the repo
file is not touched) to measure the queued run coordinator's polling. The retraining schedule
and the predictions cron are pushed to 1 January (RETRAIN_CRON / PREDICTIONS_CRON env) so a
training or predictions run cannot take the duckdb_writer pool mid-benchmark; --keep-automation
leaves them at their defaults; --retrain-cron / --predictions-cron CRON set them (e.g. "*/3 * * * *")
so retraining (training_job) and predictions run inside the measured window, to measure what they
cost the freshness path (their runs are counted under "other runs"). The process group is always stopped at the end (SIGINT, then
SIGTERM, then SIGKILL), also on errors and Ctrl-C.

PRODUCER. Instead of the simulator, this process produces contract ticks itself (TickProducer,
the package's idempotent producer, acks=all, linger 20 ms) at --rate msg/s round-robin over the 10
default coins, event time = wall clock now, in milliseconds, strictly increasing (so every
(coin_id, event_time) is unique). Every --sample-every'th tick is a SAMPLE: its (coin_id, event
time) and two wall times are kept: PRODUCED (time.time() just before produce()) and ACKED (the
delivery callback). Freshness is measured from PRODUCED; ack latency is printed separately.

VISIBILITY. The main thread polls the warehouse every --poll-interval s (0.5) with
duckdb.connect(path, read_only=True) while samples are pending; the connection lives only for
one range query over market_features (event_time between the oldest and newest pending sample)
and is closed at once, so a pipeline step that wants the write lock waits at most that long
(LakehouseResource retries). If the file is locked by a running step the poll is retried after
0.1 s. A sample is VISIBLE at the wall time the successful connect returned. Freshness =
visible - produced. Detection granularity is up to one poll interval (plus however long steps
hold the lock: a reader cannot open the file while a step has it open).

PHASES. Warm-up lasts from the start of `dagster dev` until the first sample is visible (the
first run pays code-location loading, a cold run worker, and a backlog). Samples produced in it
are reported apart. The measured window is the next --duration s; samples produced in it are
the result. Production continues during a drain of up to --drain s, until all measured samples
are visible (or the drain times out; the rest count as unseen).

ATTRIBUTION. After dagster dev is stopped: raw_ticks JOIN ingest_batches gives each sample's
ingesting run_id. From the Dagster instance (DagsterInstance.from_config(DAGSTER_HOME)): the
kafka_backlog_sensor's ticks (cadence, evaluation time, skip reasons, and which tick requested
which run), and for every incremental_job run the RUN_ENQUEUED, RUN_STARTING, "Started process
for run" engine event, RUN_START, STEP_START/STEP_SUCCESS per step and RUN_SUCCESS times. Per
sample, freshness is split along its run's timeline (each boundary clipped to the produce time,
so a tick produced while its run was already launching pays only the rest of it):
    wait_prev_run       the previous run is still queued/running (the sensor skips meanwhile)
    sensor_wait         -> start of the sensor tick that requested the run (sensor cadence)
    sensor_eval+create  -> RUN_ENQUEUED (Kafka watermarks, then create_run with planned events)
    queue               -> RUN_STARTING (queued run coordinator picks it up, launcher called)
    spawn+dagster       -> worker process up (multiprocessing spawn, import dagster, instance)
    load_code           -> RUN_START (import crypto_assets.definitions in the worker, build the job)
    to_features         -> market_features STEP_SUCCESS (raw, clean, ... in the executor's order)
    detect              -> visible here (poll granularity; can be < 0: the row is committed
                           before the step reports success)
which add up to the freshness exactly. Grouped: waiting for a run (first two), Dagster launch
overhead (next four), compute (last two).

EXPERIMENT KNOBS (nothing in the checkout is modified; all go to the temp home / subprocess env):
  --dequeue-interval N      run_queue.dequeue_interval_seconds in the temp dagster.yaml
  --pool-granularity op     concurrency.pools.granularity (with --op-run-buffer N:
                            op_granularity_run_buffer), to let a run launch while another holds the
                            duckdb_writer pool
  --pythonpath DIR          dagster dev (code server and run workers) imports crypto_assets from DIR,
                            a patched copy of the package: a temp workspace.yaml sets
                            working_directory DIR, because the code server puts its working directory
                            first on sys.path (the checkout would shadow PYTHONPATH)
  --mode loop               no dagster dev, sensor or queue: one long-lived subprocess runs
                            incremental_job back to back with execute_in_process (same job, resources,
                            checks and DagsterInstance) while measure_backlog() finds a backlog. The
                            floor without per-run launch cost. In its report the 'sensor' columns
                            mean: idle = the loop's backlog check; the launch phases are 0.
  --loop-assets a,b,c       with --mode loop: materialize only these assets (and their checks) per
                            iteration, e.g. raw_ticks,clean_ticks,market_features

Load average is printed at start and end (2-core machine; other sessions may share it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import keep_or_remove, load_avg  # noqa: E402
from bench._freshness_report import print_result  # noqa: E402
from bench._freshness_runs import attribute, read_instance  # noqa: E402
from bench._freshness_stack import freshness_ticks, loop_worker, stack_command, stack_env, write_dagster_yaml  # noqa: E402
from bench._live import Poller, Producer, Sample, stack_exit, stop_producer  # noqa: E402
from bench._stack import interrupt_flag, launch_group, start_broker, stop_broker, stop_group  # noqa: E402

NEVER_CRON = "0 0 1 1 *"


def cron_arg(value: str) -> str:
    """argparse type: a cron string Dagster accepts (5 fields)."""
    import dagster as dg

    try:
        dg.AutomationCondition.cron_tick_passed(value)
    except Exception as exc:  # noqa: BLE001 - dagster raises a CheckError for an invalid schedule
        raise argparse.ArgumentTypeError(f"not a cron schedule: {value!r}") from exc
    return value


def automation_env(retrain_cron: str | None, predictions_cron: str | None, keep_automation: bool) -> dict[str, str]:
    """RETRAIN_CRON / PREDICTIONS_CRON for dagster dev: the given cron, else the package default
    with --keep-automation, else parked on 1 January (no training or predictions run at all)."""
    env = {}
    for var, cron in (("RETRAIN_CRON", retrain_cron), ("PREDICTIONS_CRON", predictions_cron)):
        if cron:
            env[var] = cron
        elif not keep_automation:
            env[var] = NEVER_CRON
    return env


def automation_note(env: dict[str, str]) -> str:
    parts = [f"{k}={'parked' if v == NEVER_CRON else repr(v)}" for k, v in env.items()]
    return "; " + " ".join(parts) if parts else "; retrain/predictions crons at their defaults"


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=100.0, help="ticks per second (all coins)")
    ap.add_argument("--duration", type=float, default=180.0, help="measured window after warm-up (s)")
    ap.add_argument("--sensor-interval", type=int, default=2, help="SENSOR_INTERVAL_SECONDS")
    ap.add_argument("--min-messages", type=int, default=1, help="BACKLOG_MIN_MESSAGES")
    ap.add_argument("--max-wait", type=float, default=1.0, help="BACKLOG_MAX_WAIT_SECONDS")
    ap.add_argument("--sample-every", type=int, default=20, help="every Nth tick is a sample")
    ap.add_argument("--poll-interval", type=float, default=0.5, help="DuckDB poll interval (s)")
    ap.add_argument("--drain", type=float, default=90.0, help="max wait for measured samples after the window (s)")
    ap.add_argument("--warmup-timeout", type=float, default=420.0, help="give up if nothing is visible by then (s)")
    ap.add_argument("--dequeue-interval", type=int, default=None,
                    help="append run_queue.dequeue_interval_seconds to the temp dagster.yaml (default: repo file as is)")
    ap.add_argument("--pythonpath", default=None,
                    help="prepend DIR to dagster dev's PYTHONPATH (to measure a patched copy of crypto_assets "
                         "without touching the checkout)")
    ap.add_argument("--pool-granularity", choices=["run", "op"], default=None,
                    help="override concurrency.pools.granularity in the temp dagster.yaml")
    ap.add_argument("--op-run-buffer", type=int, default=None,
                    help="with --pool-granularity op: pools.op_granularity_run_buffer (runs launched while the "
                         "pool is full, their steps waiting for a slot)")
    ap.add_argument("--mode", choices=["dagster-dev", "loop"], default="dagster-dev",
                    help="loop: instead of dagster dev + sensor, one long-lived process runs incremental_job back to "
                         "back (execute_in_process) while there is a backlog: the floor without per-run launch")
    ap.add_argument("--loop-assets", default=None,
                    help="--mode loop: materialize only these assets (comma list, with their checks) per iteration "
                         "instead of incremental_job, e.g. raw_ticks,clean_ticks,market_features")
    ap.add_argument("--loop-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--keep-automation", action="store_true", help="leave RETRAIN_CRON/PREDICTIONS_CRON at their defaults")
    ap.add_argument("--retrain-cron", type=cron_arg, default=None,
                    help="RETRAIN_CRON for the run, e.g. '*/3 * * * *': retraining inside the measured window")
    ap.add_argument("--predictions-cron", type=cron_arg, default=None,
                    help="PREDICTIONS_CRON for the run, e.g. '*/1 * * * *': predictions inside the measured window")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the temp CRYPTO_HOME (path printed)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when p95 > 15 s")
    return ap


def measure(args, dev: subprocess.Popen, producer: Producer, poller: Poller, interrupted, log_path: Path,
            t0: float) -> tuple[int, float | None, float | None]:
    """Warm-up until the first sample is visible, the measured window, the drain; returns
    (exit code so far, end of warm-up, end of the window)."""
    pending: dict[tuple[str, int], Sample] = {}
    warm_end = win_end = drain_end = None
    last_report = time.time()
    while True:
        code = stack_exit(interrupted, dev, producer, log_path, "dagster dev")
        if code is not None:
            return code, warm_end, win_end
        producer.move_new_samples(pending)
        if poller.poll(pending) and warm_end is None:
            warm_end = time.time()
            win_end = warm_end + args.duration
            producer.phase = "measure"
            print(f"  warm-up over at +{warm_end - t0:.1f} s (first sample visible); measuring {args.duration:g} s",
                  flush=True)
        now = time.time()
        if warm_end is None and now - t0 > args.warmup_timeout:
            print(f"nothing visible after {args.warmup_timeout:g} s; see {log_path}", file=sys.stderr)
            return 1, warm_end, win_end
        if win_end is not None and now >= win_end and drain_end is None:
            producer.phase = "drain"
            drain_end = now + args.drain
        if drain_end is not None:
            if not any(s.phase == "measure" for s in pending.values()) or now >= drain_end:
                return 0, warm_end, win_end
        if now - last_report >= 30:
            snap = producer.samples
            seen = sum(1 for s in snap if s.visible is not None)
            print(f"  +{now - t0:5.0f} s  produced {producer.sent}  samples seen {seen}/{len(snap)}  "
                  f"load {os.getloadavg()[0]:.2f}", flush=True)
            last_report = now
        time.sleep(0.02)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.loop_worker:
        return loop_worker(args.min_messages, args.loop_assets)
    cron_env = automation_env(args.retrain_cron, args.predictions_cron, args.keep_automation)

    load_start = load_avg()
    home = Path(tempfile.mkdtemp(prefix="crypto-freshness-"))
    dagster_home = home / "dagster"
    dagster_home.mkdir()
    dequeue, launcher = write_dagster_yaml(args, dagster_home)
    os.environ["CRYPTO_HOME"] = str(home)
    os.environ["DAGSTER_HOME"] = str(dagster_home)
    os.environ.pop("KAFKA_BOOTSTRAP_SERVERS", None)

    print("freshness benchmark: produce -> visible in market_features (DuckDB), via kafka_backlog_sensor + incremental_job")
    print(f"  rate {args.rate:g} msg/s, 1 sample per {args.sample_every} ticks, measured window {args.duration:g} s, "
          f"DuckDB poll every {args.poll_interval:g} s")
    print(f"  SENSOR_INTERVAL_SECONDS={args.sensor_interval} BACKLOG_MIN_MESSAGES={args.min_messages} "
          f"BACKLOG_MAX_WAIT_SECONDS={args.max_wait:g} dequeue_interval_seconds={dequeue} run_launcher={launcher}"
          f"{automation_note(cron_env)}"
          f"{f'; pools.granularity={args.pool_granularity}' if args.pool_granularity else ''}"
          f"{f' op_granularity_run_buffer={args.op_run_buffer}' if args.op_run_buffer is not None else ''}"
          f"{f'; dagster dev PYTHONPATH={args.pythonpath}' if args.pythonpath else ''}"
          f"{'; MODE loop (no dagster dev)' if args.mode == 'loop' else ''}"
          f"{f' assets {args.loop_assets}' if args.loop_assets else ''}")
    print(f"  CRYPTO_HOME {home}")
    print(f"  load average at start: {load_start}")

    broker = start_broker(home)
    bootstrap = broker.bootstrap_servers
    if bootstrap is None:  # start() sets it or raises
        raise RuntimeError("the embedded broker has no address after its start")
    os.environ["KAFKA_BOOTSTRAP_SERVERS"] = bootstrap
    env = stack_env(args, home, dagster_home, bootstrap, cron_env)
    cmd, cwd, port = stack_command(args, home, Path(__file__).resolve())
    log_path = home / "dagster-dev.log"

    dev = producer = poller = None
    code, stop_how, warm_end, win_end = 0, "", None, None
    with interrupt_flag() as interrupted:
        try:
            from crypto_assets.settings import kafka_resource

            t0 = time.time()
            dev = launch_group(cmd, env, log_path, cwd)
            print(f"  {'dagster dev' if args.mode != 'loop' else 'loop worker (execute_in_process)'} pid {dev.pid} "
                  f"(own process group), port {port}, log {log_path}", flush=True)
            producer = Producer(kafka_resource(), freshness_ticks(args.rate, args.seed), args.rate, args.sample_every,
                                track_acks=True)
            producer.start()
            poller = Poller(home / "warehouse.duckdb", args.poll_interval)
            code, warm_end, win_end = measure(args, dev, producer, poller, interrupted, log_path, t0)
        finally:
            stop_producer(producer)
            if dev is not None:
                # loop mode stops through a file first; a SIGINT would land inside execute_in_process
                # (Dagster captures it and fails that run) and the worker only leaves on SIGTERM
                if args.mode == "loop" and dev.poll() is None:
                    (home / "loop.stop").touch()  # the worker finishes its current run and exits
                    try:
                        dev.wait(20)
                    except subprocess.TimeoutExpired:
                        pass
                stop_how = stop_group(dev, sigint_wait=20.0 if args.mode != "loop" else 3.0)
            stop_broker(home, broker)
    t_end = time.time()
    load_end = load_avg()

    try:
        samples = producer.samples if producer else []
        stuck = attribute(home / "warehouse.duckdb", samples)
        runs, ticks, other_jobs = read_instance(dagster_home)
        if code and not any(s.visible for s in samples):
            print("dagster dev log (tail):")
            print("\n".join(log_path.read_text(errors="replace").splitlines()[-40:]))
            return code
        sent = producer.sent if producer else 0
        ok, n_seen = print_result(args, samples, stuck, runs, ticks, other_jobs, poller, sent, stop_how,
                                  t0, t_end, load_end, warm_end, win_end)
        if code == 0 and args.strict and not ok:
            code = 1
        if not n_seen:
            code = code or 1
    finally:
        keep_or_remove(home, args.keep)
    return code


if __name__ == "__main__":
    sys.exit(main())
