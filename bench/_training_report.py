"""The printed result of bench/training.py: set-up, (a) + (b) + (c) against the training target
with their breakdowns, model metrics beside their baselines, inference rates against the
scoring target, peak RSS of the Python process and of the Spark driver JVM."""

from __future__ import annotations

import os
import resource
import time
from collections import defaultdict

from bench._common import mb_kb, verdict
from bench._training_inference import AGREE_TOL
from bench._training_setup import jvm_xmx
from crypto_assets.settings import spark_config

TARGET_TRAIN_S = 120.0
TARGET_RATE = 100_000.0


def rate(n: int, s: float) -> str:
    return f"{n / s:>12,.0f}/s" if s > 0 else "         inf/s"


def report(args, setup, info, timings, prof, trained, logged, gate_lines, results, hwm, jvm, t_start) -> None:
    W = 100
    print()
    print("=" * W)
    print(f"TRAINING BENCHMARK  ({len(setup['coins'])} coins, 1 tick / {args.step_s:g} s / coin; Spark "
          f"{spark_config({})['spark.master']}, shuffle partitions {spark_config({})['spark.sql.shuffle.partitions']}, "
          f"driver memory {spark_config({})['spark.driver.memory']}; DuckDB 2 threads / 4 GB; {os.cpu_count()} CPUs)")
    print("=" * W)
    st = setup["times"]
    c = setup["counts"]
    print(f"\nSetup (not measured): {setup['n_steps'] * len(setup['coins']):,} ticks = {setup['span_days']:.1f} days, "
          f"{setup['batches']} raw batches; total {st['total']:.1f} s = simulator {st['generate (simulator)']:.1f} + "
          f"insert {st['insert raw']:.1f} + run_incremental {st['run_incremental']:.1f} + checkpoint {st['checkpoint']:.1f}; "
          f"MLflow sqlite store creation {st['mlflow store init']:.1f} s")
    print(f"  market_features {c['market_features']:,} rows, ohlcv_1m {c['ohlcv_1m']:,}, anomalies {c['anomalies']:,} "
          f"({c['anomalous rows']:,} distinct anomalous rows)")
    print(f"  training set: {info.rows:,} rows, labelled {info.labelled}, positive rate {info.positive_rate:.4f}, "
          f"large-move rate {info.large_move_rate:.5f}")

    # ------------------------------------------------------------------ training times
    print(f"\nTraining pipeline (target: (a) + (b) + (c) <= {TARGET_TRAIN_S:.0f} s)")
    a = timings["training_set"]
    print(f"  (a) build_training_set (DuckDB)                          {a:8.2f} s   (cpu {timings['cpu training_set']:.1f} s)")
    agg: dict[str, float] = defaultdict(float)
    cnt: dict[str, int] = defaultdict(int)
    for label, s in timings.get("_duck", []):
        agg[label] += s
        cnt[label] += 1
    for label, s in sorted(agg.items(), key=lambda kv: -kv[1]):
        if s >= 0.005:
            print(f"        {s:7.2f} s  {label}")
    print(f"        {a - sum(agg.values()):7.2f} s  outside DuckDB statements (Python, Arrow/numpy work between them)")
    b = sum(v for k, v in timings.items() if k.startswith("train ") and isinstance(v, float))
    print(f"  (b) model training (Spark MLlib)                          {b:8.2f} s")
    for k, v in timings.items():
        if k.startswith("train ") and isinstance(v, float):
            name = k.split(" ", 1)[1]
            jobs, tasks = timings[f"jobs {k}"]
            cp, cj = timings[f"cpu {k}"]
            t = trained[name]
            extra = "skipped: not enough rows" if isinstance(t, ValueError) else \
                f"{t.split.train_rows:,} train / {t.split.test_rows:,} test rows"
            print(f"      {name:<10} {v:7.2f} s   cpu {cp + cj:.1f} s (py {cp:.1f}, jvm/workers {cj:.1f}); "
                  f"{jobs} Spark jobs, {tasks} tasks; {extra}")
            prof.report(k, v, indent="          ")
    cc = timings["log_total"]
    print(f"  (c) MLflow: champion lookup, data window, dataset, log_model + registration {cc:8.2f} s")
    for k, v in timings.items():
        if k.startswith("log ") and not k.startswith("log parts") and isinstance(v, float):
            name = k.split(" ", 1)[1]
            parts = timings[f"log parts {name}"]
            cp, cj = timings[f"cpu {k}"]
            print(f"      {name:<10} {v:7.2f} s   cpu {cp + cj:.1f} s; " + ", ".join(f"{p} {s:.2f}" for p, s in parts.items()))
            prof.report(k, v, indent="          ", top=8)
    total = a + b + cc
    ok = total <= TARGET_TRAIN_S
    timings["_ok"] = ok
    print(f"  TOTAL (a)+(b)+(c)                                         {total:8.2f} s   target <= {TARGET_TRAIN_S:.0f} s  "
          f"{verdict(ok)}")
    print(f"  (not included) Spark session start-up {timings['spark_start']:.2f} s; champion gates (gate_and_promote, "
          f"after the run) {timings['gates']:.2f} s")
    print(f"  (info) with Spark start-up: {total + timings['spark_start']:.2f} s")
    cpu_total = timings["cpu training_set"] + sum(sum(v) for k, v in timings.items() if k.startswith("cpu ") and
                                                  isinstance(v, tuple))
    (l0, l1) = timings["load"]
    print(f"  (info) CPU time of (a)+(b)+(c), this process + JVM + Python workers: {cpu_total:.1f} s on "
          f"{os.cpu_count()} CPUs; load average {l0[0]:.2f} before (b), {l1[0]:.2f} after (c)"
          + ("  -- OTHER LOAD ON THE MACHINE: wall times are inflated" if max(l0[0], l1[0]) > 0.75 * (os.cpu_count() or 1)
             else ""))
    if "cached" in timings:
        n_c, mem, disk = timings["cached"]
        print(f"  (info) still cached in Spark after the four models (one session, as training_job runs them): {n_c} "
              f"RDDs/DataFrames, {mem / 2**20:,.0f} MB in memory, {disk / 2**20:,.0f} MB on disk"
              + ("  -- train/test splits are never unpersisted" if mem + disk > 50 * 2**20 else ""))

    # ------------------------------------------------------------------ metrics
    print("\nModel metrics on the time-split holdout (vs the baselines the gates use):")
    for name, t in trained.items():
        if isinstance(t, ValueError):
            print(f"  {name:<10} skipped: {t}")
            continue
        base = t.extra["baseline"]
        if name in ("trend", "anomaly"):
            print(f"  {name:<10} AUC-ROC {t.metrics['auc_roc']:.4f} (baseline {base['auc_roc']:.4f}), "
                  f"PR-AUC {t.metrics['pr_auc']:.4f} (baseline {base['pr_auc']:.4f}), "
                  f"accuracy {t.metrics['accuracy']:.4f} (majority {base['accuracy']:.4f})"
                  + (f"; train positives {t.extra['train_positives']:,}, negatives used {t.extra['train_negatives_used']:,}"
                     if name == "anomaly" else ""))
        elif name == "clusters":
            print(f"  {name:<10} silhouette {t.metrics['silhouette']:.4f} (random clusters {base['silhouette']:.4f}); "
                  f"assignment {t.extra['assignment']}")
        else:
            print(f"  {name:<10} RMSE {t.metrics['rmse']:.6f} (persistence {base['rmse_persistence']:.6f}, "
                  f"zero return {base['rmse_zero']:.6f}), MAE {t.metrics['mae']:.6f} (persistence "
                  f"{base['mae_persistence']:.6f}, zero {base['mae_zero']:.6f})")
    print("  gates: " + "\n         ".join(gate_lines))

    # ------------------------------------------------------------------ inference
    n = results["n"]
    print(f"\nBatch inference on {n:,} training-set rows (target >= {TARGET_RATE:,.0f} predictions/s):")
    print(f"  {'model':<10} {'path':<52} {'time':>9} {'rate':>14}")
    all_ok = True
    for k in results:
        if not k.startswith("numpy "):
            continue
        name = k.split(" ", 1)[1]
        med_s, all_s = results[k]
        s_noop, s_collect = results[f"spark {name}"]
        rows_, diff, nanm = results[f"agree {name}"]
        ok_np = n / med_s >= TARGET_RATE
        all_ok &= ok_np
        print(f"  {name:<10} {'(i)  numpy score_linear (median of 3)':<52} {med_s:8.3f}s {rate(n, med_s)}  {verdict(ok_np)}")
        print(f"  {'':<10} {'(ii) Spark transform -> noop sink (JVM only)':<52} {s_noop:8.2f}s {rate(n, s_noop)}  "
              f"{verdict(n / s_noop >= TARGET_RATE)}")
        print(f"  {'':<10} {'(ii) Spark transform -> toPandas (1 double col, Arrow)':<52} {s_collect:8.2f}s "
              f"{rate(n, s_collect)}  {verdict(n / s_collect >= TARGET_RATE)}")
        print(f"  {'':<10} numpy vs Spark: {rows_:,} rows matched on (coin_id, event_time), max abs diff {diff:.2e}, "
              f"NaN mismatches {nanm}  {verdict(rows_ == n and nanm == 0 and diff <= AGREE_TOL)} (tol {AGREE_TOL:g})")
    if "spark anomaly" in results:
        s_noop, s_collect, s_asset, s_arrow, n_asset, same = results["spark anomaly"]
        ok_rf = n / s_collect >= TARGET_RATE
        all_ok &= ok_rf
        print(f"  {'anomaly':<10} {'(iii) RF Spark transform -> noop sink (JVM only)':<52} {s_noop:8.2f}s {rate(n, s_noop)}  "
              f"{verdict(n / s_noop >= TARGET_RATE)}")
        print(f"  {'':<10} {'(iii) RF Spark transform -> toPandas (p[1], Arrow)':<52} {s_collect:8.2f}s {rate(n, s_collect)}  "
              f"{verdict(ok_rf)}")
        print(f"  {'':<10} {f'(iii) first predictions asset code, {n_asset:,} rows':<52} {s_asset:8.2f}s {rate(n_asset, s_asset)}  "
              f"{verdict(n_asset / s_asset >= TARGET_RATE)}")
        print(f"  {'':<10}   (polars -> pandas -> createDataFrame -> transform -> toPandas of VectorUDT -> per-row p[1])")
        print(f"  {'':<10} {'(iii) same rows, Arrow both ways (the asset now)':<52} {s_arrow:8.2f}s "
              f"{rate(n_asset, s_arrow)}  {verdict(n_asset / s_arrow >= TARGET_RATE)}  (identical values: {same})")
    if "feature_rows" in results:
        s_fr, n_fr = results["feature_rows"]
        print(f"  (info) feature_rows() (predictions asset's DuckDB feature query) for {n_fr:,} rows: {s_fr:.2f} s "
              f"{rate(n_fr, s_fr)}")
    print(f"  inference targets (numpy linear + RF collected): {verdict(all_ok)}")

    # ------------------------------------------------------------------ memory
    ru = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"\nPeak RSS: Python process {ru / 1024:,.0f} MB (ru_maxrss); per phase (VmHWM reset at phase start): "
          f"setup {mb_kb(hwm.get('setup'))}, training set {mb_kb(hwm.get('training_set'))}, models (b)+(c) "
          f"{mb_kb(hwm.get('models'))}, inference {mb_kb(hwm.get('inference'))}")
    print(f"          Spark driver JVM (pid {jvm}, -Xmx{jvm_xmx(jvm)}): VmHWM during (b)+(c) {mb_kb(hwm.get('models_jvm'))}, "
          f"during inference {mb_kb(hwm.get('inference_jvm'))}")
    print(f"Wall time of the benchmark: {time.perf_counter() - t_start:.1f} s")
