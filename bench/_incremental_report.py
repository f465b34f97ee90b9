"""The printed result of bench/incremental.py: per-step medians small vs large history and their
ratios, the target, the full-recompute baseline, the SQL profile and peak RSS."""

from __future__ import annotations

import os
import resource
import time
from collections import defaultdict

from bench._common import med
from bench._incremental_phases import EXPORTS, STEPS, Warehouse
from bench._warehouse import TICK_S
from crypto_assets.kafka.tick_contract import DEFAULT_COIN_IDS

TARGET_RATIO = 1.5


def ms(x: float) -> str:
    return f"{x * 1000:9.1f}"


def report(small: Warehouse, large: Warehouse, args, n_new_per_rep: int, t_start: float) -> bool:
    print()
    print("=" * 100)
    print(f"INCREMENTAL BENCHMARK  (duckdb threads=2, memory_limit=4GB via LakehouseResource; "
          f"{len(DEFAULT_COIN_IDS)} coins, 1 tick / {TICK_S} s / coin)")
    print("=" * 100)
    print("\nSetup (not measured):")
    for wh in (small, large):
        st = wh.setup_times
        span_days = wh.per_coin * TICK_S / 86400
        print(f"  {wh.label:>5}: {wh.history:>10,} ticks of history ({span_days:.1f} days), {wh.setup_batches} raw batches; "
              f"total {st['total']:.1f} s = generate {st['generate']:.1f} + insert {st['insert raw']:.1f} + "
              f"run_incremental {st['run_incremental']:.1f} + export {st['parquet export (all)']:.1f} "
              f"({wh.setup_parts} partitions) + checkpoint {st['checkpoint']:.1f}; "
              f"db {wh.db_size / 2**20:,.0f} MB, lake {wh.lake_size / 2**20:,.0f} MB")

    print(f"\nOne increment = {n_new_per_rep:,} new ticks ({n_new_per_rep // len(DEFAULT_COIN_IDS)} per coin) in one raw batch; "
          f"median of {args.reps} (ms):")
    hdr = f"  {'step':<34}{'small':>10}{'large':>10}{'large/small':>13}"
    print(hdr)
    print("  " + "-" * (len(hdr) - 2))
    rows = []
    for s in STEPS:
        rows.append((f"run_incremental: {s}", med([r.get(s, 0.0) for r in small.runs]), med([r.get(s, 0.0) for r in large.runs])))
    rows.append(("run_incremental: hourly (1h+stats)",
                 med([r.get("hourly_1h", 0) + r.get("hourly_stats", 0) for r in small.runs]),
                 med([r.get("hourly_1h", 0) + r.get("hourly_stats", 0) for r in large.runs])))
    rows.append(("RUN_INCREMENTAL TOTAL", med([r["total"] for r in small.runs]), med([r["total"] for r in large.runs])))
    for name, a, b in rows:
        print(f"  {name:<34}{ms(a)}{ms(b)}{b / a if a > 0 else float('nan'):>12.2f}x")
    print("  " + "-" * (len(hdr) - 2))
    for dataset, *_ in EXPORTS:
        a, b = med([e[dataset] for e in small.exports]), med([e[dataset] for e in large.exports])
        print(f"  {'export ' + dataset:<34}{ms(a)}{ms(b)}{b / a if a > 0 else float('nan'):>12.2f}x")
    ea, eb = med([e["total"] for e in small.exports]), med([e["total"] for e in large.exports])
    print(f"  {'PARQUET EXPORT TOTAL':<34}{ms(ea)}{ms(eb)}{eb / ea:>12.2f}x"
          f"   (partitions per increment: {small.export_parts[0]} / {large.export_parts[0]})")
    ra, rb = med([r["total"] for r in small.runs]), med([r["total"] for r in large.runs])
    ta = med([r["total"] + e["total"] for r, e in zip(small.runs, small.exports, strict=False)])
    tb = med([r["total"] + e["total"] for r, e in zip(large.runs, large.exports, strict=False)])
    print(f"  {'RUN + EXPORT':<34}{ms(ta)}{ms(tb)}{tb / ta:>12.2f}x")
    print("  " + "-" * (len(hdr) - 2))
    ca_run, cb_run = med([r["cpu"] for r in small.runs]), med([r["cpu"] for r in large.runs])
    ca_ex, cb_ex = med([e["cpu"] for e in small.exports]), med([e["cpu"] for e in large.exports])
    print(f"  {'(info) run_incremental CPU time':<34}{ms(ca_run)}{ms(cb_run)}{cb_run / ca_run:>12.2f}x"
          "   (process CPU, all threads: less sensitive to other load)")
    print(f"  {'(info) export CPU time':<34}{ms(ca_ex)}{ms(cb_ex)}{cb_ex / ca_ex:>12.2f}x")
    ia, ib = med(small.inserts), med(large.inserts)
    ca, cb = med(small.checkpoints), med(large.checkpoints)
    print(f"  {'(info) raw batch insert':<34}{ms(ia)}{ms(ib)}{ib / ia:>12.2f}x")
    print(f"  {'(info) CHECKPOINT after increment':<34}{ms(ca)}{ms(cb)}{cb / ca:>12.2f}x")
    print("\n  all reps, in run order (run_incremental / export, ms):")
    for wh in (small, large):
        print(f"    {wh.label:>5}: " + ", ".join(f"{r['total'] * 1000:.1f} / {e['total'] * 1000:.1f}"
                                           for r, e in zip(wh.runs, wh.exports, strict=False)))
    print(f"  load average after the measured increments: {' '.join(f'{x:.2f}' for x in args.load_after)} "
          f"({os.cpu_count()} CPUs; anything else running on the machine shows up as noise)")

    ratio = rb / ra
    ok = ratio <= TARGET_RATIO
    ratio_all = tb / ta
    print(f"\nTarget: run_incremental total large/small = {ratio:.2f} (<= {TARGET_RATIO})  "
          f"{'PASS' if ok else 'FAIL'}")
    print(f"        (run_incremental + Parquet export: {ratio_all:.2f}  "
          f"{'PASS' if ratio_all <= TARGET_RATIO else 'FAIL'} against the same bound, informational)")

    print("\nNaive baseline: full recomputation of market_features (delete + hwm reset + features_increment):")
    for wh in (small, large):
        b = wh.baseline
        if not b:
            continue
        inc = med([r.get("features", 0.0) for r in wh.runs])
        print(f"  {wh.label:>5}: {b['rows']:,} rows: full {b['features_full'] * 1000:,.1f} ms "
              f"(+ delete/reset {b['delete_reset'] * 1000:,.1f} ms) vs incremental features step {inc * 1000:,.1f} ms "
              f"-> {b['features_full'] / inc:,.0f}x; full vs incremental table: "
              f"{'same rows' if b['same_keys'] else 'ROWS DIFFER'}, worst column {b['worst'][0]} "
              f"(max abs diff {b['worst'][1][0]:.1e}, max rel diff {b['worst'][1][1]:.1e}); "
              f"{b['over_tol']} values outside rel/abs tol 1e-9")
        if args.verbose_diff:
            for c, (d, r, o) in b["per_col"].items():
                print(f"           {c:<18} max abs {d:.2e}  max rel {r:.2e}  over tol {o}")

    if small.sql_profile and large.sql_profile:
        n = len(large.sql_profile["run_total"])
        print(f"\nSQL profile: {n} extra increments per warehouse through a timing proxy (median ms per increment).")
        for part in ("run", "export"):
            ps, pg = small.sql_profile[part], large.sql_profile[part]
            by_caller: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
            for k, v in ps.items():
                by_caller[k[0]][0] += med(v)
            for k, v in pg.items():
                by_caller[k[0]][1] += med(v)
            print(f"  [{part}] wall small {med(small.sql_profile[part + '_total']) * 1000:.1f}, "
                  f"large {med(large.sql_profile[part + '_total']) * 1000:.1f}; SQL time "
                  f"{sum(v[0] for v in by_caller.values()) * 1000:.1f} / {sum(v[1] for v in by_caller.values()) * 1000:.1f}"
                  f" in {med(small.sql_profile[part + '_calls']):.0f} / {med(large.sql_profile[part + '_calls']):.0f} statements; "
                  "by calling function (small, large):")
            for caller, (a, b) in sorted(by_caller.items(), key=lambda kv: -kv[1][1]):
                print(f"      {a * 1000:8.1f} {b * 1000:8.1f}  {caller}")
            keys = set(ps) | set(pg)
            diffs = sorted(keys, key=lambda k: med(pg.get(k, [0.0])) - med(ps.get(k, [0.0])), reverse=True)
            print("    statements whose time grows most with history (small, large):")
            for k in diffs[: args.profile_top]:
                caller, sql = k
                print(f"      {med(ps.get(k, [0.0])) * 1000:8.1f} {med(pg.get(k, [0.0])) * 1000:8.1f}  {caller}: {sql[:140]}")

    rusage_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    ph = {k: (f"{v / 1024:,.0f} MB" if v else "n/a") for k, v in args.phase_hwm.items()}
    print(f"\nPeak RSS: whole process {rusage_kb / 1024:,.0f} MB (ru_maxrss); per phase (VmHWM reset at each phase start): "
          f"setup {ph.get('setup')}, measured increments {ph.get('measure')}, baseline {ph.get('baseline')}")
    print(f"Wall time of the benchmark: {time.perf_counter() - t_start:.1f} s")
    return ok
