"""Training + batch-inference benchmark: training set, four Spark MLlib models, MLflow, scoring.

    .venv/bin/python bench/training.py [--rows 1000000] [--step-s 60] [--batch 500000]
                                       [--asset-path-rows 200000] [--keep] [--strict]

A benchmark, not a test: it prints numbers and PASS/FAIL against the targets; it exits non-zero
only when a correctness check fails (numpy and Spark disagree on a linear model), or with
--strict when a target is missed.

SETUP (timed and printed, not part of any target). A temporary CRYPTO_HOME with the 10 default
coins, opened through the package's LakehouseResource (DuckDB 2 threads, 4 GB). Prices and
volumes come from the simulator's own vectorised path generator
(`crypto_assets.producers.simulator.MarketSimulator.advance`, the engine behind `simulate_paths` /
`generate_ticks`, without the per-tick dicts): market factor, regime drifts and ~20 min
momentum, so the direction of the next 15 minutes is partly learnable; jumps and volume spikes,
so anomalies fire. --rows / 10 time steps per coin, every --step-s seconds (default 60 s:
1M rows = 100,000 minutes = 69.4 days, so 1h/4h/24h forward labels exist for all but the last
day), ending at END (2026-11-01 00:00 UTC). The ticks are appended to raw_ticks in raw batches of
--batch rows (a registered Arrow table plus its ingest_batches row: bench/_warehouse.py's
Loader), with `run_incremental(conn, coins)` after every batch; then a CHECKPOINT.

MEASURED (the target is (a) + (b) + (c) <= 120 s; Spark session start-up is reported apart):
  (a) `build_training_set(conn, <tmp>/lake/training)` on a fresh LakehouseResource connection
      (the training_set asset's call), with a per-statement breakdown (DuckDB connection proxy).
  (b) on a local[2] SparkSession built from `crypto_assets.settings.spark_config({})`, reading
      the Parquet training set as the model assets do: `train_trend` (the asset's defaults:
      15 min horizon, 50 iterations, reg 0.001), `train_anomaly` (100 trees, depth 10, 20
      negatives per positive), `train_price` for 1h/4h/24h (each horizon that has enough rows),
      `train_clusters` (k=3).
  (c) per model, what the asset does after training before it returns: `load_champion` (a
      registry lookup; there is no champion in a fresh store), `data_window` (min/max/count
      of the training set: a Spark job at first, now the Parquet event_time column via pyarrow),
      the MLflow input dataset (`crypto_assets.ml.lineage.training_dataset`) and
      `crypto_assets.ml.registry.log_model` (params, metrics, lineage tags, input dataset, JSON
      artifacts, `mlflow.spark.log_model` + registration) into a temporary sqlite MLflow
      (`MlflowResource(home=<tmp>)`). The champion gates (`gate_and_promote`) run after that and
      are timed as information, outside the target.
  Timing wrappers on pyspark's and mlflow's public classes and functions (bench/_training_profile.py;
  no crypto_assets name is patched) attribute the time of (b) and (c) to estimator fits (per
  stage: Pipeline > StandardScaler > LogisticRegression), evaluators, DataFrame actions (labelled
  file:line of the caller in crypto_assets) and MLflow calls; Spark jobs and tasks per model
  come from the status tracker (one job group per model).

INFERENCE (target >= 100,000 predictions/s), on the N training-set rows (all of them by
default), features as the predictions asset sees them:
  (i)  numpy `score_linear` with the exported `linear_coefficients` of the trend and price
       models, from a polars frame already in memory (median of 3 runs);
  (ii) Spark `model.transform` of the same linear models, on the Parquet training set: as a JVM
       only pass (transform + `noop` sink) and collected to the driver (one double column,
       Arrow); the collected values are compared with numpy: max abs diff must be <= 1e-9;
  (iii) the RandomForest anomaly model via Spark, the same two ways, plus the predictions
       asset's first scoring code (polars -> pandas -> `spark.createDataFrame` -> transform ->
       `toPandas` of the probability vectors -> per-row Python) and its current one (Arrow both
       ways and p[1] as one double column, `vector_to_array`, as defs/predictions.py does now),
       on --asset-path-rows rows; the two must give identical values.
  The feature extraction of a prediction run (`feature_rows`, the DuckDB query of the
  predictions asset) over the same N rows is timed as information.

Also printed: the model metrics next to their baselines (so the timings are for models that
learn something), peak RSS of the Python process (ru_maxrss, and VmHWM per phase) and of the
Spark driver JVM (VmHWM of the java child process).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")

from bench._common import keep_or_remove, print_errors, reset_hwm, status_kb  # noqa: E402
from bench._training_inference import inference, timed  # noqa: E402
from bench._training_models import gates, run_models  # noqa: E402
from bench._training_profile import DuckTimer, Profiler  # noqa: E402
from bench._training_report import report  # noqa: E402
from bench._training_setup import build_warehouse, jvm_pid, jvm_xmx, start_spark  # noqa: E402
from crypto_assets.kafka.tick_contract import DEFAULT_COIN_IDS  # noqa: E402
from crypto_assets.ml.training_set import build_training_set, feature_rows  # noqa: E402
from crypto_assets.resources import LakehouseResource  # noqa: E402
from crypto_assets.resources.mlflow import MlflowResource  # noqa: E402
from crypto_assets.warehouse.watermarks import get_state  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="market_features rows (all coins)")
    ap.add_argument("--step-s", type=float, default=60.0, help="seconds between two ticks of one coin")
    ap.add_argument("--batch", type=int, default=500_000, help="raw batch size while building the warehouse")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--score-rows", type=int, default=0, help="rows to score (0: the whole training set)")
    ap.add_argument("--asset-path-rows", type=int, default=200_000,
                    help="rows for the predictions asset's anomaly path (pandas -> Spark -> per-row Python)")
    ap.add_argument("--skip-feature-rows", action="store_true", help="do not time feature_rows() over all rows")
    ap.add_argument("--keep", action="store_true", help="keep the temporary CRYPTO_HOME (path printed)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args()

    t_start = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="bench-training-"))
    home = root / "home"
    lh = LakehouseResource(home=str(home), coins=list(DEFAULT_COIN_IDS))
    mlf = MlflowResource(home=str(home))
    import crypto_assets as pkg

    print(f"package {Path(pkg.__file__).parent}; CRYPTO_HOME {home}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, {os.cpu_count()} CPUs", flush=True)
    errors: list[str] = []
    hwm: dict[str, int | None] = {}
    timings: dict = {}
    prof = Profiler()
    spark = None
    try:
        # ---------------------------------------------------------------- setup
        reset_hwm()
        print(f"setup: {args.rows:,} ticks (10 coins, 1 tick / {args.step_s:g} s / coin) in raw batches of {args.batch:,}",
              flush=True)
        setup = build_warehouse(lh, args.rows, args.step_s, args.batch, args.seed)
        t = time.perf_counter()
        mlf.client().search_registered_models()  # creates the sqlite store (a deployment has one already)
        setup["times"]["mlflow store init"] = time.perf_counter() - t
        hwm["setup"] = status_kb("VmHWM")
        gc.collect()

        # ---------------------------------------------------------------- (a) training set
        reset_hwm()
        out_dir = lh.lake_path / "training"
        with lh.connect() as conn:
            proxy = DuckTimer(conn)
            c0 = time.process_time()
            t = time.perf_counter()
            info = build_training_set(proxy.as_connection(), out_dir)
            timings["training_set"] = time.perf_counter() - t
            timings["cpu training_set"] = time.process_time() - c0
            timings["_duck"] = proxy.times
            upstream = get_state(conn, "market_features")[1]
        hwm["training_set"] = status_kb("VmHWM")
        path = str(info.path)
        print(f"    (a) build_training_set {timings['training_set']:.2f} s: {info.rows:,} rows, "
              f"{info.path.stat().st_size / 2**20:.0f} MB Parquet", flush=True)

        # ---------------------------------------------------------------- Spark start
        t = time.perf_counter()
        spark = start_spark()
        timings["spark_start"] = time.perf_counter() - t
        jvm = jvm_pid()
        print(f"    Spark {spark.version} session start {timings['spark_start']:.2f} s "
              f"(master {spark.sparkContext.master}, driver JVM pid {jvm}, -Xmx{jvm_xmx(jvm)})", flush=True)
        prof.install()

        # ---------------------------------------------------------------- (b) + (c)
        reset_hwm()
        if jvm:
            reset_hwm(jvm)
        load0 = os.getloadavg()
        trained, logged = run_models(spark, mlf, path, prof, timings)
        timings["load"] = (load0, os.getloadavg())
        timings["log_total"] = sum(v for k, v in timings.items() if k.startswith("log ") and isinstance(v, float))
        hwm["models"] = status_kb("VmHWM")
        hwm["models_jvm"] = status_kb("VmHWM", jvm) if jvm else None
        timings["gates"], gate_lines = gates(mlf, logged)
        prof.uninstall()

        # ---------------------------------------------------------------- inference
        reset_hwm()
        if jvm:
            reset_hwm(jvm)
        results: dict = {}
        print("inference:", flush=True)
        inference(spark, path, trained, args.score_rows, args.asset_path_rows, results, errors)
        if not args.skip_feature_rows:
            with lh.connect() as conn:
                fr, s_fr, _ = timed(lambda: feature_rows(conn, 0, upstream, 1e9))
            results["feature_rows"] = (s_fr, fr.height)
            del fr
        hwm["inference"] = status_kb("VmHWM")
        hwm["inference_jvm"] = status_kb("VmHWM", jvm) if jvm else None
        report(args, setup, info, timings, prof, trained, logged, gate_lines, results, hwm, jvm, t_start)
    finally:
        prof.uninstall()
        if spark is not None:
            spark.stop()
        keep_or_remove(root, args.keep)
    if print_errors(errors):
        return 2
    ok = timings.get("_ok", True)
    return 1 if (args.strict and not ok) else 0


if __name__ == "__main__":
    sys.exit(main())
