#!/usr/bin/env python
"""Mutation check (issue 11): do the tests notice when the code that makes the README's promises
is broken on purpose?

Each mutation is a list of literal search/replace edits, each of which must match exactly once
in the current source (the script stops at once if the code moved on). For every mutation the
repository is copied to a temporary directory (the working tree is never touched), the edits are
applied to the copy, and the tests chosen for that mutation run there with this interpreter and
PYTHONPATH=<copy>. A mutation is killed when at least one of those tests fails; the script prints
mutation -> killed/survived with the failing tests and exits 1 if any mutation survived.

    .venv/bin/python scripts/mutation_check.py              # baseline, then every mutation
    .venv/bin/python scripts/mutation_check.py --only b_offsets_before_rows --no-baseline
    .venv/bin/python scripts/mutation_check.py --list

Before the mutations, the union of their tests runs once on an unmodified copy (the baseline):
a test that fails there would "kill" every mutation and prove nothing, so the script stops.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns(".git", ".venv", "var", "__pycache__", "*.pyc", ".pytest_cache", "*.egg-info",
                                "build", "dist", "mlruns", "spark-warehouse", "metastore_db", "derby.log",
                                ".ruff_cache", ".mypy_cache")
T = "crypto_assets_tests/"


@dataclass
class Mutation:
    name: str
    what: str
    file: str
    edits: list[tuple[str, ...]]  # (old, new) in `file`, or (other file, old, new)
    tests: list[str]


# --- (b) the offsets block of write.write_batch, moved in front of the rows and committed alone
_OFFSETS_BLOCK = """        ranges: dict[int, tuple[int, int]] = {}
        counts: dict[int, int] = {}
        if n:
            rng = (
                staged.select("kafka_partition", "kafka_offset")
                .vstack(rejects.select("kafka_partition", "kafka_offset"))
                .group_by("kafka_partition")
                .agg(pl.col("kafka_offset").min().alias("lo"), pl.col("kafka_offset").max().alias("hi"), pl.len())
            )
            for p, lo_, hi_, cnt in rng.iter_rows():
                ranges[int(p)] = (int(lo_), int(hi_) + 1)
                counts[int(p)] = int(cnt)
        offset_rows = []
        for plan in plans:
            if plan.partition in ranges:
                lo_, nxt = ranges[plan.partition]
                from_offset = plan.next_offset
                if lo_ != from_offset:
                    raise RuntimeError(
                        f"partition {plan.partition}: read started at {lo_}, expected {from_offset}"
                    )
                count = counts[plan.partition]
            elif plan.reset_reason and plan.start == plan.next_offset:
                from_offset = nxt = plan.start  # record the reset even if nothing was read (once: it is stored)
                count = 0
            else:
                continue
            offset_rows.append(
                [
                    batch_id, topic, plan.partition, from_offset, nxt, count, cluster_id,
                    plan.reset_reason if plan.start == plan.next_offset else None, now,
                ]
            )
        if offset_rows:
            conn.executemany("INSERT INTO ingest_offsets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", offset_rows)
            conn.executemany(
                \"\"\"
                INSERT INTO ingest_positions VALUES (?, ?, ?, ?, ?)
                ON CONFLICT (kafka_topic, kafka_partition) DO UPDATE SET next_offset = excluded.next_offset,
                    cluster_id = excluded.cluster_id, batch_id = excluded.batch_id
                \"\"\",
                [[r[1], r[2], r[4], r[6], r[0]] for r in offset_rows],
            )
"""
_BATCH_ID = """        batch_id = scalar(conn, "SELECT coalesce(max(batch_id), 0) + 1 FROM ingest_batches")
        outcome = contract.write_rows(BatchRows(conn, topic, batch_id, now, staged.height, vals, keys, coins, cfg))
"""
_BATCH_ID_THEN_OFFSETS = (
    _BATCH_ID.splitlines(keepends=True)[0]
    + _OFFSETS_BLOCK
    + '        conn.execute("COMMIT")  # MUTATION: the offsets commit on their own, before the rows\n'
    + '        conn.execute("BEGIN TRANSACTION")\n'
    + _BATCH_ID.splitlines(keepends=True)[1]
)

WRITE = "crypto_assets/ingest/write.py"
TICK_ROWS = "crypto_assets/ingest/tick_rows.py"
VALIDATE = "crypto_assets/ingest/validate.py"
CLEAN = "crypto_assets/transforms/clean.py"
TRADE_ROWS = "crypto_assets/ingest/trade_rows.py"
TRADE_RANGES = "crypto_assets/ingest/trade_ranges.py"
TRADE_TESTS = [T + "test_trades_pull.py"]
REGISTRY = "crypto_assets/ml/registry.py"
PULL_TESTS = [T + "test_pull.py", T + "test_crash_recovery.py::test_kill_at_fault_point_then_rerun",
              T + "test_pull_atomicity.py"]
GATE_TESTS = [T + "test_gate.py"]

MUTATIONS = [
    Mutation(
        "a_skip_offset_write", "the pull stores no ingest_offsets / ingest_positions rows", WRITE,
        [("        if offset_rows:\n            conn.executemany(\"INSERT INTO ingest_offsets",
          "        if False:  # MUTATION\n            conn.executemany(\"INSERT INTO ingest_offsets")],
        PULL_TESTS,
    ),
    Mutation(
        "b_offsets_before_rows", "offsets recorded and committed in a transaction of their own, before the rows",
        WRITE, [(_OFFSETS_BLOCK, ""), (_BATCH_ID, _BATCH_ID_THEN_OFFSETS)],
        [T + "test_crash_recovery.py", T + "test_pull_atomicity.py"],
    ),
    Mutation(
        "c1_no_raw_dedupe", "raw_ticks keeps repeated (coin_id, last_updated_at) messages", TICK_ROWS,
        [("    if dups:\n        return None\n", "    if False:  # MUTATION\n        return None\n"),
         (VALIDATE, 'return _JUDGE_SQL.format(verdict=_IN_BATCH_DUPLICATE_VERDICT if in_batch_dups else "r.reason")',
          'return _JUDGE_SQL.format(verdict="r.reason")  # MUTATION'),
         ("WHERE judged.verdict IS NULL AND judged.coin_id = r.coin_id",
          "WHERE false AND judged.verdict IS NULL AND judged.coin_id = r.coin_id")],
        [T + "test_bad_input.py", T + "test_pull.py"],
    ),
    Mutation(
        "c2_no_clean_dedupe", "clean_ticks keeps repeated (coin_id, event_time) ticks", CLEAN,
        [("WHEN i.dup_rank > 1 THEN 'duplicate'", "WHEN false THEN 'duplicate'"),
         ("WHERE (clean_judged.verdict IS NULL OR clean_judged.verdict = 'late') AND clean_judged.coin_id = c.coin_id",
          "WHERE false AND clean_judged.coin_id = c.coin_id")],
        [T + "test_incremental.py", T + "test_checks.py"],
    ),
    Mutation(
        "c3_no_trade_dedupe", "raw_trades keeps every copy of a trade (no in-batch rank, no lookup in the id runs)",
        TRADE_ROWS, [("SELECT r.*, r.reason IS NULL AND (@in_batch OR h.first_id IS NOT NULL) AS seen",
                      "SELECT r.*, FALSE AS seen  -- MUTATION")], TRADE_TESTS,
    ),
    Mutation(
        "c4_gaps_never_heal", "a later arrival inside a trade gap does not lower its missing count", TRADE_RANGES,
        [("HAVING still < was", "HAVING FALSE  -- MUTATION")], TRADE_TESTS,
    ),
    Mutation(
        "c5_gap_on_every_hole", "every hole between a product's runs is recorded as a new gap, old or new", TRADE_RANGES,
        [("WHERE h.last_missing IS NOT NULL AND (s.old_min IS NULL OR", "WHERE h.last_missing IS NOT NULL AND (TRUE OR")],
        TRADE_TESTS,
    ),
    Mutation(
        "d1_gate_champion_flipped", "the gate promotes a version worse than the champion and rejects a better one",
        REGISTRY, [("    if diff < 0:\n", "    if diff > 0:  # MUTATION\n")], GATE_TESTS,
    ),
    Mutation(
        "d2_gate_baseline_flipped", "higher-is-better metrics: the gate passes versions that do not beat the baseline",
        REGISTRY, [("beats = value >= base + margin if higher_is_better",
                    "beats = value <= base + margin if higher_is_better")], GATE_TESTS,
    ),
    Mutation(
        "d3_gate_error_baseline_flipped", "lower-is-better metrics (rmse): the baseline comparison is reversed",
        REGISTRY, [("else value <= base * (1 - margin)", "else value >= base * (1 - margin)")], GATE_TESTS,
    ),
]


def apply(m: Mutation, root: Path) -> None:
    for i, edit in enumerate(m.edits):
        file, old, new = edit if len(edit) == 3 else (m.file, *edit)
        path = root / file
        text = path.read_text()
        n = text.count(old)
        if n != 1:
            raise SystemExit(f"mutation {m.name}: edit {i + 1} matches {n} times in {file} (expected exactly once); "
                             f"the source changed, update the mutation:\n{old}")
        path.write_text(text.replace(old, new))


def copy_tree(dest_parent: Path, label: str) -> Path:
    dest = dest_parent / label
    shutil.copytree(REPO, dest, ignore=IGNORE)
    return dest


def run_tests(root: Path, tests: list[str], python: str, timeout_s: float) -> tuple[int, list[str], float]:
    """(pytest exit code, failed test ids, seconds) for `tests` run in the copy at `root`."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("KAFKA_BOOTSTRAP_SERVERS", "DAGSTER_HOME", "CRYPTO_HOME", "CRYPTO_ASSETS_FAULT")}
    env.update(PYTHONPATH=str(root), SPARK_LOCAL_IP=env.get("SPARK_LOCAL_IP", "127.0.0.1"), PYTHONDONTWRITEBYTECODE="1")
    where = subprocess.run([python, "-c", "import crypto_assets; print(crypto_assets.__file__)"], env=env, cwd=root,
                           capture_output=True, text=True, check=True).stdout.strip()
    if not Path(where).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"{python} imports crypto_assets from {where}, not from the copy {root}")
    xml = root / "junit.xml"
    started = time.monotonic()
    try:
        proc = subprocess.run([python, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={xml}", *tests],
                              env=env, cwd=root, capture_output=True, text=True, timeout=timeout_s)
        code, tail = proc.returncode, proc.stdout[-3000:] + proc.stderr[-2000:]
    except subprocess.TimeoutExpired:
        return -1, [f"(timed out after {timeout_s:.0f}s)"], time.monotonic() - started
    elapsed = time.monotonic() - started
    failed = []
    if xml.exists():
        for case in ET.parse(xml).getroot().iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                failed.append(f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}")
    if code not in (0, 1) and not failed:
        failed.append(f"(pytest exit {code}: {tail.strip().splitlines()[-1] if tail.strip() else 'no output'})")
    return code, failed, elapsed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
    ap.add_argument("--no-baseline", action="store_true", help="skip the run on an unmodified copy")
    ap.add_argument("--list", action="store_true", help="list the mutations and their tests")
    ap.add_argument("--python", default=sys.executable, help="interpreter with the project's dependencies")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per pytest run")
    args = ap.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.only and len(chosen) != len(args.only):
        raise SystemExit(f"unknown mutation(s): {sorted(set(args.only) - {m.name for m in MUTATIONS})}")
    if args.list:
        for m in chosen:
            print(f"{m.name:<32} {m.file}: {m.what}\n{'':<32} tests: {' '.join(m.tests)}")
        return 0
    with tempfile.TemporaryDirectory(prefix="mutation-check-") as tmp:
        tmp = Path(tmp)
        for m in chosen:  # every edit must still match before anything runs
            apply(m, copy_tree(tmp, f"preflight-{m.name}"))
        if not args.no_baseline:
            tests = list(dict.fromkeys(t for m in chosen for t in m.tests))
            code, failed, secs = run_tests(copy_tree(tmp, "baseline"), tests, args.python, args.timeout)
            print(f"baseline (unmodified copy, {len(tests)} test selections): exit {code} in {secs:.0f}s", flush=True)
            if code != 0:
                print("the tests fail without any mutation; fix that first:\n  " + "\n  ".join(failed))
                return 2
        rows = []
        for m in chosen:
            root = copy_tree(tmp, m.name)
            apply(m, root)
            code, failed, secs = run_tests(root, m.tests, args.python, args.timeout)
            verdict = "killed" if code != 0 else "SURVIVED"
            rows.append((m.name, verdict, secs, failed))
            print(f"{m.name:<32} {verdict:<8} {secs:5.0f}s  {', '.join(failed) or '-'}", flush=True)
            shutil.rmtree(root, ignore_errors=True)
    print()
    print("| mutation | verdict | seconds | failing tests |")
    print("|---|---|---|---|")
    for name, verdict, secs, failed in rows:
        print(f"| {name} | {verdict} | {secs:.0f} | {'<br>'.join(failed) or '-'} |")
    survived = [r[0] for r in rows if r[1] != "killed"]
    if survived:
        print(f"\n{len(survived)} mutation(s) survived: {', '.join(survived)}")
        return 1
    print(f"\nall {len(rows)} mutations killed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
