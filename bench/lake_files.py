"""How many files does the Parquet lake hold for 35 days x 10 coins, before and after compaction?

    .venv/bin/python bench/lake_files.py [--ticks 3000000] [--batch 500000] [--keep]

A measurement with a correctness check, not a test: it exits non-zero when any dataset's files
do not hold exactly the DuckDB table's rows (compared by identity: EXCEPT ALL both ways over
every column, `symbol` from the directory name). PASS/FAIL against --max-files is printed.

SETUP. A temporary CRYPTO_HOME with the 10 default coins (LakehouseResource). --ticks ticks from
bench/_warehouse.py's TickGen (each coin every 10 s: 3M ticks = 34.7 days, ending at
2026-12-01 12:00 UTC), appended in raw batches of --batch ticks; after every batch the bronze
rows are marked dirty (as the pull does), `run_incremental` derives silver and gold, new
anomalies are marked and stamped published (as the anomalies asset does, without Kafka), and
all seven hour-file datasets are exported (export_dirty, as the assets call it); then the
correlations file: the mirror as a pipeline running through those 35 days leaves it.

MEASURED. Files per dataset (and bytes) after the export; then `compact_lake` at now = the
newest tick (the last day, 12 hours of it, stays open) and again at now = the day after (every
day closed); the time of each compaction; the identity check after each step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import keep_or_remove  # noqa: E402
from bench._history import EXPORTS  # noqa: E402  (dataset, table, time column, order by), as the assets export
from bench._incremental_phases import EXPORTS as INCREMENTAL_EXPORTS  # noqa: E402
from bench._warehouse import HIST_END, Loader, TickGen  # noqa: E402
from crypto_assets.kafka.tick_contract import DEFAULT_COIN_IDS  # noqa: E402
from crypto_assets.resources import LakehouseResource  # noqa: E402
from crypto_assets.transforms.chain import run_incremental  # noqa: E402
from crypto_assets.warehouse.lake_compaction import compact_lake  # noqa: E402
from crypto_assets.warehouse.lake_export import export_dirty, mark_dirty  # noqa: E402
from crypto_assets.warehouse.lake_layout import duckdb_source, list_dataset_files, read_lock  # noqa: E402


def lake_files(lake: Path) -> dict[str, tuple[int, int]]:
    """Data files and bytes per dataset directory (every *.parquet outside .staging/.locks)."""
    out: dict[str, tuple[int, int]] = {}
    for p in lake.rglob("*.parquet"):
        rel = p.relative_to(lake).parts
        if rel[0].startswith("."):
            continue
        key = "/".join(rel[:2])
        n, b = out.get(key, (0, 0))
        out[key] = (n + 1, b + p.stat().st_size)
    return out


def check_identity(conn, lake: Path) -> list[str]:
    errors = []
    with read_lock(lake):
        for dataset, table, *_ in EXPORTS:
            cols = ", ".join(f'"{c[0]}"' for c in conn.sql(f"DESCRIBE {table}").fetchall())
            try:
                src = duckdb_source(lake, dataset)
            except FileNotFoundError:  # no file: the table must be empty
                rows = conn.sql(f"SELECT count(*) FROM {table}").fetchall()[0][0]
                if rows:
                    errors.append(f"{dataset}: no file for {rows} table rows")
                continue
            missing = conn.sql(f"SELECT count(*) FROM (SELECT {cols} FROM {table} EXCEPT ALL SELECT {cols} FROM {src})").fetchall()[0][0]
            extra = conn.sql(f"SELECT count(*) FROM (SELECT {cols} FROM {src} EXCEPT ALL SELECT {cols} FROM {table})").fetchall()[0][0]
            if missing or extra:
                errors.append(f"{dataset}: {missing} table rows missing from the lake, {extra} lake rows not in the table")
    return errors


# the five datasets bench/incremental.py exports (silver and gold without anomalies)
INCREMENTAL_FIVE = tuple(dataset for dataset, *_ in INCREMENTAL_EXPORTS)


def report(label: str, lake: Path) -> int:
    files = lake_files(lake)
    total = sum(n for n, _ in files.values())
    five = sum(files.get(k, (0, 0))[0] for k in INCREMENTAL_FIVE)
    print(f"  {label}: {total:,} files, {sum(b for _, b in files.values()) / 1e6:,.1f} MB "
          f"({five:,} in the five datasets of bench/incremental.py)")
    for k in sorted(files):
        print(f"      {k:24s} {files[k][0]:7,d} files {files[k][1] / 1e6:9.1f} MB")
    return total


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ticks", type=int, default=3_000_000)
    ap.add_argument("--batch", type=int, default=500_000)
    ap.add_argument("--max-files", type=int, default=2_000)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="lake_files_"))
    lh = LakehouseResource(home=str(root), coins=list(DEFAULT_COIN_IDS))
    coins = list(DEFAULT_COIN_IDS)
    per_coin = args.ticks // len(coins)
    gen = TickGen(per_coin, seed=5)
    errors: list[str] = []
    try:
        with lh.connect() as conn:
            loader, left, t0 = Loader(conn), per_coin, time.perf_counter()
            export_s = 0.0
            while left > 0:
                n = min(args.batch // len(coins), left)
                batch = loader.append(gen.take(n))
                mark_dirty(conn, "bronze/raw_ticks",
                           f"SELECT last_updated_at AS event_time, symbol FROM raw_ticks WHERE batch_id = {batch}")
                run_incremental(conn, coins)
                # what the anomalies asset does around publish_alerts (marks, then stamps the rows)
                mark_dirty(conn, "gold/anomalies", "SELECT event_time, symbol FROM anomalies WHERE published_at IS NULL")
                conn.execute("UPDATE anomalies SET published_at = now() WHERE published_at IS NULL")
                t = time.perf_counter()
                for dataset, table, tcol, order in EXPORTS:
                    export_dirty(conn, lh.lake_path, dataset, table, tcol, order)
                export_s += time.perf_counter() - t
                left -= n
            corr = lh.lake_path / "gold" / "correlations"  # the one-file dataset, as its asset writes it
            corr.mkdir(parents=True, exist_ok=True)
            conn.execute(f"COPY (SELECT * FROM correlations ORDER BY window_name, coin_a, coin_b) "
                         f"TO '{corr / 'correlations.parquet'}' (FORMAT parquet)")
            span = conn.sql("SELECT min(last_updated_at), max(last_updated_at), count(*) FROM raw_ticks").fetchall()[0]
            print(f"{span[2]:,} ticks from {span[0]} to {span[1]}; pipeline + mirror {time.perf_counter() - t0:.0f} s "
                  f"(export {export_s:.0f} s)")
            report("hour files only (the mirror before this change)", lh.lake_path)
            errors += check_identity(conn, lh.lake_path)

            newest = span[1]
            for label, now in (("now = newest tick (last day open)", newest + timedelta(seconds=1)),
                               ("now = the next day 01:00:01 (every day closed)",
                                HIST_END.replace(hour=0) + timedelta(days=1, hours=1, seconds=1))):
                t = time.perf_counter()
                res = compact_lake(lh.lake_path, now=now)
                dt = time.perf_counter() - t
                md = res.metadata()
                print(f"compact_lake at {now.isoformat()} ({label}): {dt:.1f} s, {md['days_compacted']} days, "
                      f"{md['files_before']:,} -> {md['files_after']:,} files, {md['rows']:,} rows, "
                      f"{md['bytes_before'] / 1e6:.1f} -> {md['bytes_after'] / 1e6:.1f} MB")
                total = report(f"after compaction, {label}", lh.lake_path)
                errors += check_identity(conn, lh.lake_path)
                files = sum(len(list_dataset_files(lh.lake_path, d)) for d, *_ in EXPORTS)
                print(f"  hour-file datasets: {files:,} files; target <= {args.max_files:,}: "
                      f"{'PASS' if total <= args.max_files else 'FAIL'} ({total:,} in the whole lake)")
    finally:
        keep_or_remove(root, args.keep)
    for e in errors:
        print("ERROR", e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
