"""The four models on a real price series, next to a simulated market of the same length.

    .venv/bin/python bench/models.py [--days N] [--sim-seed 11] [--trees 20] [--keep]

A benchmark, not a test: it prints, per model and horizon, the model's walk-forward metric (pooled
over the folds, and per fold), every naive baseline candidate's, the strongest one (the bench's
baseline: the ratio model / baseline is measured in the same run), the lift over it with its
block-bootstrap interval, and the champion gate's outcome and reason, all read back from the
run's materialization metadata, its MLflow runs and its check results. It exits 1 only when a
run fails (a skipped model is not a failure).

REAL: pmdarima's `load_msft()` (a dev dependency, MIT; shipped in its wheel, so offline): daily
Microsoft closes and volumes 1986-03-13..2017-11-10, 7,983 trading days, which the package
cites as part of the Kaggle "Huge Stock Market Dataset" (crypto_assets/producers/real_series.py).
One trading day per simulated minute, so the pipeline's windows keep their tick counts: the
15-minute direction label is the sign of the next 15 trading days, the 1h/4h/24h price
horizons are 60/240/1440 trading days. One instrument: coin_clusters (which needs 3 coins) is
skipped, with its reason. Expect no model to beat a random walk's baselines on real daily
closes; the point is that the gates say so instead of promoting noise.

SIMULATED: the simulator's one-coin market (60 s ticks, regime drifts and ~20 min momentum,
jumps), as many ticks as the real series: the same pipeline where there is something to learn.

Both markets run through the real pipeline: one raw_ticks batch, run_incremental, the Parquet
mirrors, then the training_set asset and the four model assets in one `dg.materialize`, each
market with its own temporary CRYPTO_HOME and sqlite MLflow store (removed unless --keep).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")

from bench._common import keep_or_remove, load_avg  # noqa: E402
from bench._models_data import build, default_end, real_market, simulated_market, train  # noqa: E402
from bench._models_report import print_rows, rows, summary  # noqa: E402
from crypto_assets.producers.real_series import load_msft  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--days", type=int, default=None, help="the last N trading days of the real series (default: all)")
    ap.add_argument("--sim-seed", type=int, default=11, help="the simulated market's seed")
    ap.add_argument("--trees", type=int, default=20, help="anomaly model trees (depth 6)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary homes (paths printed)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    print(f"load average at start: {load_avg()}", flush=True)
    root = Path(tempfile.mkdtemp(prefix="bench-models-"))
    ops = {"anomaly_model": {"config": {"num_trees": args.trees, "max_depth": 6}}}
    end = default_end()
    series = load_msft()
    real = real_market(series, end, args.days)
    markets = [real, simulated_market(real.ticks.height, end, args.sim_seed)]
    all_rows = []
    failed = False
    try:
        for i, market in enumerate(markets):
            home = root / f"market{i}"
            resources, times = build(market, home)
            print(f"\n{market.label}: {market.ticks.height:,} ticks loaded, run_incremental {times['run_incremental']:.1f} s, "
                  f"Parquet mirrors {times['parquet export']:.1f} s, quarantined {times['quarantined']:.0f}; home {home}",
                  flush=True)
            result, seconds = train(resources, ops)
            failed |= not result.success
            rs = rows(market.label.split(":")[0], result, resources["mlflow"])
            print_rows(market.label, market.note, rs, seconds)
            all_rows.extend(rs)
        summary(all_rows)
    finally:
        keep_or_remove(root, args.keep)
    print(f"\nload average at end: {load_avg()}; total {time.perf_counter() - t0:.0f} s")
    if failed:
        print("a run FAILED (see above)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
