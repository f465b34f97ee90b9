"""A CRYPTO_HOME with N ticks of history, built once and cached, for the month-scale benches.

    from bench._history import build_history
    hist = build_history(home, 20_000_000)   # copies the cached home into `home` (builds it first if needed)

WHAT IS BUILT. raw_ticks holds N ticks of `coins` coins (default 10), one tick per second per
coin (coin k offset by k/coins s, so every (coin_id, event_time) is unique), ending `lead_s`
(default 1 h) before the build time, so that a bench can continue it for up to that long without
producing ticks from the future (clean_ticks rejects those): tick i is at end - (N - i) * (1 s / coins).
Prices are geometric random walks at each coin's annual volatility, 24h volumes a slow random walk with rare x4 spikes (so anomalies fire).
The raw rows are generated in DuckDB SQL (range(), hash-based normals, a windowed cumsum per
coin), in raw batches of `batch_ticks` (default 500: about what a live incremental run at 100
msg/s pulls, so ingest_batches / ingest_offsets grow like a month of live runs) under the
historical topic `crypto_raw_history`, with contiguous per-partition offsets (coin k on
partition k % 4), one ingest_batches row per batch and one ingest_offsets row per batch and
partition, exactly what ingest/write.py commits. A live pull reads `crypto_raw`, which has no
stored offsets, so it starts fresh on the new broker and continues the batch ids.

Everything derived comes from the package itself: after every chunk of `chunk_ticks` raw rows
(default 1,000,000; whole batches) `run_incremental(conn, coins)` advances clean_ticks,
market_features, the candles, hourly_stats, correlations and anomalies with their asset_state,
then `lake.export_dirty` writes the touched hourly Parquet files of every dataset (bronze
included), so memory stays bounded by the chunk. Anomalies are marked published (as if the
alerts had been sent; otherwise the first live run would publish a month of them at once). At
the end the correlations Parquet file is written as the correlations asset writes it and the
database is checkpointed.

CACHE. var/bench/cache/history-<N>/ holds one built home plus meta.json with the key: the
parameters, this file's and the imported crypto_assets package's source hash. A different key
rebuilds in place (so one home per N on disk). `build_history` copies the cached home into the
bench's own home: warehouse.duckdb is copied, the lake files are hard-linked (export_dirty
always writes a new file and renames it into place, so the cached files are never modified).
The cache is locked (flock) while it is built or copied. The history ends when it was built:
a bench using an older cache sees a longer gap between the history and its live ticks (printed).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from crypto_assets.warehouse.table_spec import Table
from crypto_assets.warehouse.tables import HOURLY_MIRRORED

REPO = Path(__file__).resolve().parent.parent
CACHE_ROOT = REPO / "var" / "bench" / "cache"
HISTORY_TOPIC = "crypto_raw_history"
CLUSTER_ID = "history-builder"
BUILDER_VERSION = 1
PARTITIONS = 4  # the embedded broker's crypto_raw has 4 partitions
VOLUME_SIGMA = 0.001  # per tick, of log 24h volume
SPIKE_P = 2e-4  # share of ticks whose 24h volume jumps x4
# The 24h volume's log walks freely but is squashed into +-VOLUME_BAND around the coin's reference
# volume (tanh): a free walk drifts past any plausible volume within weeks of ticks, and the
# pipeline (rightly) quarantines a 24h volume above 1e13 USD.
VOLUME_BAND = 1.5
SEC_PER_YEAR = 365 * 24 * 3600



def _export_args(t: Table) -> tuple[str, str, str, str]:
    """(dataset, table, time column, order by) of an hour-file mirror, as export_dirty takes them."""
    if t.dataset is None or t.time_column is None or t.export_order is None:
        raise ValueError(f"{t.name}: an hour-file mirror needs a dataset, a time column and an export order")
    return t.dataset, t.name, t.time_column, t.export_order


# (dataset, table, time column, order by) of every hour-file mirror, from the table registry, as
# the assets call export_dirty (ingest/pull.py, defs/incremental.py)
EXPORTS = tuple(_export_args(t) for t in HOURLY_MIRRORED)


@dataclass
class History:
    """Where the history ends and how to continue it (tick i >= ticks is at start_us + i * step_us)."""

    home: Path  # the bench's copy
    ticks: int
    coin_ids: list[str]
    symbols: list[str]
    start_us: int
    step_us: float
    last_price: list[float]
    last_volume: list[float]
    build_s: float | None  # None: taken from the cache
    copy_s: float
    built_at: float

    @property
    def end_us(self) -> int:
        return int(self.start_us + self.ticks * self.step_us)  # where tick #ticks would be

    def describe(self) -> str:
        age = time.time() - self.built_at
        how = f"built in {self.build_s:.1f} s" if self.build_s is not None else f"from the cache (built {age / 60:.0f} min ago)"
        how += f"; ends {(time.time() - self.end_us / 1e6) / 60:.0f} min before now"
        return (f"history of {self.ticks:,} ticks x {len(self.coin_ids)} coins ({self.ticks * self.step_us / 86400e6:.1f} days "
                f"to {datetime.fromtimestamp(self.end_us / 1e6, UTC):%Y-%m-%d %H:%M:%S} UTC), {how}"
                + (f", copied in {self.copy_s:.1f} s" if self.copy_s else ""))


# The modules that decide what a history holds (rows, state, lake layout): a change elsewhere in
# the package (assets, checks, sensors, docs) keeps the cached 20M history valid.
SHAPING = ("transforms", "ingest", "warehouse", "kafka/tick_contract.py")


def code_hash() -> str:
    """Source hash of the package modules that shape a history, and of this builder."""
    import crypto_assets

    h = hashlib.sha256(Path(__file__).read_bytes())
    pkg = Path(crypto_assets.__file__).resolve().parent
    shaping = [p for p in sorted(pkg.rglob("*.py"))
               if p.relative_to(pkg).parts[0] in SHAPING or p.relative_to(pkg).as_posix() in SHAPING]
    for p in shaping:
        h.update(str(p.relative_to(pkg)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build_history(home: Path | None, ticks: int = 20_000_000, coins: int = 10, batch_ticks: int = 500,
                  chunk_ticks: int = 1_000_000, seed: int = 7, lead_s: int = 3600, rebuild: bool = False,
                  log=print) -> History:
    """Copy a cached history home of `ticks` ticks into `home` (an empty or missing directory),
    building the cache first when it is missing or its key differs. home=None: only make sure the
    cache exists (History.home is then the cache itself: do not write to it)."""
    chunk_ticks = max(batch_ticks, chunk_ticks // batch_ticks * batch_ticks)
    params = {"ticks": ticks, "coins": coins, "batch_ticks": batch_ticks, "chunk_ticks": chunk_ticks, "seed": seed,
              "lead_s": lead_s, "builder": BUILDER_VERSION}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12] + "-" + code_hash()
    cache = CACHE_ROOT / f"history-{ticks}"
    build_s = None
    with _locked(CACHE_ROOT / f"history-{ticks}.lock"):
        meta_path = cache / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
        if rebuild or meta is None or meta.get("key") != key:
            log(f"building history of {ticks:,} ticks into {cache} "
                f"({'rebuild asked' if rebuild else 'no cache' if meta is None else 'cache key changed'})", flush=True)
            tmp = cache.with_name(cache.name + ".building")
            shutil.rmtree(tmp, ignore_errors=True)
            t0 = time.perf_counter()
            meta = _build(tmp, params, log)
            build_s = time.perf_counter() - t0
            meta.update(key=key, build_s=round(build_s, 1))
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
            shutil.rmtree(cache, ignore_errors=True)
            os.replace(tmp, cache)
            log(f"history built in {build_s:.1f} s", flush=True)
        t0 = time.perf_counter()
        if home is not None:
            copy_home(cache, home)
        copy_s = time.perf_counter() - t0
    return History(home or cache, meta["ticks"], meta["coin_ids"], meta["symbols"], meta["start_us"], meta["step_us"],
                   meta["last_price"], meta["last_volume"], build_s, copy_s, meta["built_at"])


def copy_home(src: Path, dst: Path) -> None:
    """Copy the DuckDB file(s), hard-link the lake (files there are only ever replaced, never edited)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in os.listdir(src):
        if name.startswith("warehouse.duckdb") or name == "meta.json":
            shutil.copyfile(src / name, dst / name)
    lake = src / "lake"
    for root, _dirs, files in os.walk(lake):
        out = dst / "lake" / Path(root).relative_to(lake)
        out.mkdir(parents=True, exist_ok=True)
        for f in files:
            try:
                os.link(Path(root) / f, out / f)
            except OSError:
                shutil.copyfile(Path(root) / f, out / f)


_UNIT = "((hash(i, ({s})::BIGINT) >> 11)::DOUBLE + 0.5) / 9007199254740992.0"  # uniform in (0, 1)

CHUNK_SQL = f"""
CREATE OR REPLACE TEMP TABLE hist_chunk AS
WITH g AS (
    SELECT i, (i % $n)::INTEGER AS k, i // $n AS j,
           sqrt(-2 * ln({_UNIT.format(s='$seed')})) * cos(2 * pi() * {_UNIT.format(s='$seed + 1')}) AS zp,
           sqrt(-2 * ln({_UNIT.format(s='$seed + 2')})) * cos(2 * pi() * {_UNIT.format(s='$seed + 3')}) AS zv,
           {_UNIT.format(s='$seed + 4')} AS u
    FROM range($i0, $i1) t(i)
)
SELECT i, k, j, u, $syms[k + 1] AS symbol,
       $logp0[k + 1] + $sigma[k + 1] * sum(zp) OVER (PARTITION BY k ORDER BY i) AS logp,
       $logv0[k + 1] + {VOLUME_SIGMA} * sum(zv) OVER (PARTITION BY k ORDER BY i) AS logv,
       make_timestamp(($start_us + i * $step_us)::BIGINT)::TIMESTAMPTZ AS t,
       (k % {PARTITIONS})::INTEGER AS p,
       j * $per_part[k % {PARTITIONS} + 1] + k // {PARTITIONS} AS off,
       i // $bt + 1 AS batch_id,
       make_timestamp(($start_us + least((i // $bt + 1) * $bt - 1, $total - 1) * $step_us)::BIGINT + 1000000)::TIMESTAMPTZ
           AS committed
FROM g
"""

RAW_SQL = f"""
INSERT INTO raw_ticks
SELECT $ids[k + 1], symbol, 'history', 1, exp(logp), exp(logp) * $supply[k + 1],
       exp($logref[k + 1] + {VOLUME_BAND} * tanh(logv / {VOLUME_BAND})) * CASE WHEN u < {SPIKE_P} THEN 4 ELSE 1 END,
       NULL, NULL,
       t, t + INTERVAL 200 MILLISECOND, '{HISTORY_TOPIC}', p, off, t + INTERVAL 300 MILLISECOND, batch_id, committed
FROM hist_chunk ORDER BY i
"""

BATCHES_SQL = f"""
INSERT INTO ingest_batches
SELECT batch_id, 'history', '{HISTORY_TOPIC}', '{CLUSTER_ID}', count(*), count(*), 0, count(*) * 300,
       min(t), max(t), min(committed) - INTERVAL 500 MILLISECOND, min(committed)
FROM hist_chunk GROUP BY batch_id ORDER BY batch_id
"""

OFFSETS_SQL = f"""
INSERT INTO ingest_offsets
SELECT batch_id, '{HISTORY_TOPIC}', p, min(off), max(off) + 1, count(*), '{CLUSTER_ID}', NULL, min(committed)
FROM hist_chunk GROUP BY batch_id, p ORDER BY batch_id, p
"""


def _build(root: Path, params: dict, log) -> dict:
    """Build a history home into `root` (see the module docstring); returns its meta."""
    from crypto_assets.kafka.tick_contract import DEFAULT_COINS
    from crypto_assets.resources import LakehouseResource
    from crypto_assets.transforms.chain import run_incremental
    from crypto_assets.warehouse.lake_export import export_dirty, mark_dirty
    from crypto_assets.warehouse.sql import transaction

    n_ticks, n = params["ticks"], params["coins"]
    if not 1 <= n <= len(DEFAULT_COINS):
        raise ValueError(f"coins must be 1..{len(DEFAULT_COINS)} (the default coin universe)")
    coins = DEFAULT_COINS[:n]
    step_us = 1e6 / n
    built_at = time.time()
    end_us = (int(built_at) - params["lead_s"]) * 1_000_000
    start_us = int(end_us - n_ticks * step_us)
    logp = [math.log(c.ref_price) for c in coins]
    logv = [0.0 for _ in coins]  # the unsquashed volume walk (see VOLUME_BAND)
    logref = [math.log(c.ref_volume) for c in coins]
    fixed = {
        "n": n, "total": n_ticks, "seed": params["seed"], "bt": params["batch_ticks"], "start_us": start_us, "step_us": step_us,
        "sigma": [c.annual_vol * math.sqrt(1.0 / SEC_PER_YEAR) for c in coins],
        "per_part": [len(range(p, n, PARTITIONS)) for p in range(PARTITIONS)], "syms": [c.symbol for c in coins],
    }
    lh = LakehouseResource(home=str(root), coins=[c.coin_id for c in coins])
    t_gen = t_inc = t_exp = 0.0
    t_start = time.perf_counter()
    with lh.connect() as conn:
        conn.execute("SET enable_progress_bar = false")  # DuckDB draws one for statements > 2 s, even into a file
        for i0 in range(0, n_ticks, params["chunk_ticks"]):
            i1 = min(i0 + params["chunk_ticks"], n_ticks)
            t0 = time.perf_counter()
            with transaction(conn):  # one commit per chunk: rows, batches, offsets, bronze markers
                conn.execute(CHUNK_SQL, {**fixed, "i0": i0, "i1": i1, "logp0": logp, "logv0": logv})
                conn.execute(RAW_SQL, {"ids": [c.coin_id for c in coins], "logref": logref,
                                       "supply": [c.ref_volume * 30 / c.ref_price for c in coins]})
                conn.execute(BATCHES_SQL)
                conn.execute(OFFSETS_SQL)
                mark_dirty(conn, "bronze/raw_ticks", "SELECT t AS event_time, symbol FROM hist_chunk")
            for k, lp, lv in conn.sql("SELECT k, arg_max(logp, i), arg_max(logv, i) FROM hist_chunk GROUP BY k").fetchall():
                logp[k], logv[k] = lp, lv
            conn.execute("DROP TABLE hist_chunk")
            t1 = time.perf_counter()
            run_incremental(conn, [c.coin_id for c in coins])
            t2 = time.perf_counter()
            with transaction(conn):  # as the anomalies asset does, with the alerts counted as sent
                mark_dirty(conn, "gold/anomalies", "SELECT event_time, symbol FROM anomalies WHERE published_at IS NULL")
                conn.execute("UPDATE anomalies SET published_at = detected_at WHERE published_at IS NULL")
            for dataset, table, col, order in EXPORTS:
                export_dirty(conn, lh.lake_path, dataset, table, col, order)
            t3 = time.perf_counter()
            t_gen, t_inc, t_exp = t_gen + t1 - t0, t_inc + t2 - t1, t_exp + t3 - t2
            elapsed = time.perf_counter() - t_start
            log(f"  {i1:>12,} / {n_ticks:,} ticks  {elapsed:7.1f} s  (raw SQL {t_gen:.1f} s, run_incremental "
                f"{t_inc:.1f} s, Parquet {t_exp:.1f} s; eta {elapsed / i1 * (n_ticks - i1):.0f} s)", flush=True)
        out = lh.lake_path / "gold" / "correlations"  # as the correlations asset writes it
        out.mkdir(parents=True, exist_ok=True)
        conn.execute(f"COPY (SELECT * FROM correlations ORDER BY window_name, coin_a, coin_b) TO "
                     f"'{out / 'correlations.parquet.tmp'}' (FORMAT parquet)")
        os.replace(out / "correlations.parquet.tmp", out / "correlations.parquet")
        counts = {t: conn.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in
                  ("raw_ticks", "clean_ticks", "market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats",
                   "correlations", "anomalies", "quarantine", "ingest_batches", "ingest_offsets", "lake_pending")}
        state = dict(conn.sql("SELECT asset, hwm FROM asset_state").fetchall())
        conn.execute("CHECKPOINT")
    # as the maintenance job leaves a lake that has been running: closed days in day files
    from crypto_assets.warehouse.lake_compaction import compact_lake

    t0 = time.perf_counter()
    res = compact_lake(lh.lake_path).metadata()
    log(f"  lake compacted in {time.perf_counter() - t0:.1f} s: {res['days_compacted']} days, "
        f"{res['dataset_files']} files in the lake", flush=True)
    if counts["raw_ticks"] != n_ticks or counts["clean_ticks"] != n_ticks or counts["market_features"] != n_ticks \
            or counts["quarantine"] or counts["lake_pending"]:
        raise RuntimeError(f"history build is inconsistent: {counts}")
    log(f"  rows: {', '.join(f'{k} {v:,}' for k, v in counts.items())}; asset_state hwm {state}", flush=True)
    return {
        "ticks": n_ticks, "coin_ids": [c.coin_id for c in coins], "symbols": [c.symbol for c in coins],
        "start_us": start_us, "step_us": step_us, "last_price": [math.exp(x) for x in logp],
        "last_volume": [math.exp(r + VOLUME_BAND * math.tanh(x / VOLUME_BAND)) for r, x in zip(logref, logv, strict=False)],
        "built_at": built_at, "params": params, "counts": counts,
    }
