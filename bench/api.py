"""Latency and throughput of the read API's /candles over 30 days of 1-minute bars.

    .venv/bin/python bench/api.py [--coins 5] [--days 30] [--seconds 10] [--concurrency 4] [--keep]

A measurement, not a test; it exits non-zero only when an answer is wrong (a page whose rows are
not the bars asked for), never on a slow number.

SETUP. A temporary CRYPTO_HOME whose lake holds gold/ohlcv_1m as the pipeline leaves it: --days
days of 1-minute bars for --coins coins, every closed day one compacted day.parquet (all coins,
sorted by coin_id, minute), the newest day 24 hour files part-HH.parquet; the rows have the
table's exact columns and types (its DDL). `crypto-assets serve` runs in its own process
(uvicorn, one worker, 127.0.0.1); the load comes from this process.

MEASURED. For a 1-day range (limit 1440: the whole day in one page) and a 30-day range (limit
5000, the page cap: its first page; and separately the time to page through all 30 days):
  - one client, requests back to back: p50/p95 latency;
  - --concurrency clients (threads, one HTTP connection each) for --seconds: requests/s, p50/p95;
  - the baseline: the same query (same SQL, files, parameters) straight on an in-process DuckDB
    cursor, back to back; ratio = API p50 / DuckDB p50 is the API's overhead (HTTP, validation,
    JSON of the rows, the listing cache). The load average is printed at start and end.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import fmt, keep_or_remove, load_avg, pct  # noqa: E402

END = datetime(2026, 12, 1, tzinfo=UTC)  # the lake's last day is the one before


def build_lake(lake: Path, coins: list[tuple[str, str]], days: int) -> int:
    """gold/ohlcv_1m of `days` days ending at END: day files, the newest day in hour files."""
    import duckdb

    from crypto_assets.warehouse.tables import TABLES

    t = TABLES["ohlcv_1m"]
    conn = duckdb.connect()
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute(t.ddl)
    values = ", ".join(f"('{c}', '{s}', {100.0 * (i + 1)})" for i, (c, s) in enumerate(coins))
    conn.execute(f"""
        INSERT INTO ohlcv_1m
        SELECT coin_id, symbol, minute, p, p * 1.001, p * 0.999, p * 1.0002, 1e8, 3, 0.02, 50 + 20 * sin(k / 97.0),
               p, p * 1.01, p * 0.99, 14, 0.1, 0.1, 1
        FROM (SELECT coin_id, symbol, minute, k, base * (1 + 0.05 * sin(k / 600.0) + 0.01 * sin(k / 7.0)) AS p
              FROM (VALUES {values}) c(coin_id, symbol, base),
                   (SELECT g AS minute, row_number() OVER (ORDER BY g) AS k
                    FROM generate_series(?::TIMESTAMPTZ, ?::TIMESTAMPTZ - INTERVAL 1 MINUTE, INTERVAL 1 MINUTE) s(g)))
    """, [END - timedelta(days=days), END])
    order = t.export_order
    for d in range(days):
        day = END - timedelta(days=days - d)
        leaf = lake / "gold/ohlcv_1m" / f"date={day.date().isoformat()}"
        leaf.mkdir(parents=True)
        last = d == days - 1
        for h in range(24) if last else [None]:
            lo = day + timedelta(hours=h or 0)
            hi = lo + (timedelta(hours=1) if last else timedelta(days=1))
            name = f"part-{h:02d}.parquet" if last else "day.parquet"
            conn.execute(f"COPY (SELECT * FROM ohlcv_1m WHERE minute >= $lo AND minute < $hi ORDER BY {order}) "
                         f"TO '{leaf / name}' (FORMAT parquet)", {"lo": lo, "hi": hi})
    n = int(conn.sql("SELECT count(*) FROM ohlcv_1m").fetchall()[0][0])
    conn.close()
    return n


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, port: int, coins: list[str]) -> subprocess.Popen:
    import httpx2

    env = {**os.environ, "COINS": ",".join(coins)}
    proc = subprocess.Popen([sys.executable, "-m", "crypto_assets.ops.cli", "serve", "--home", str(home),
                             "--port", str(port), "--log-level", "warning"], env=env, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            httpx2.get(f"http://127.0.0.1:{port}/coins", timeout=2).raise_for_status()
            return proc
        except httpx2.TransportError:
            if proc.poll() is not None:
                raise SystemExit(f"the API exited with {proc.returncode}") from None
            time.sleep(0.2)
    proc.terminate()
    raise SystemExit("the API did not answer within 120 s")


def ranges(coins: list[str], days_back: int, n: int, seed: int, days: int) -> list[tuple[str, datetime, datetime]]:
    """n (coin, start, end) of `days_back` days each, start on a random minute of the lake's `days`."""
    rng = random.Random(seed)
    total = days * 1440
    out = []
    for _ in range(n):
        span = days_back * 1440
        off = rng.randrange(0, max(1, total - span + 1)) if span < total else 0
        start = END - timedelta(days=days) + timedelta(minutes=off)
        out.append((rng.choice(coins), start, start + timedelta(days=days_back)))
    return out


def check(body: dict, coin: str, start: datetime, limit: int) -> None:
    items = body["items"]
    if not items or body["coin_id"] != coin or len(items) != limit:
        raise SystemExit(f"wrong page for {coin} from {start}: {len(items)} rows, wanted {limit}")
    if datetime.fromisoformat(items[0]["time"]) != start:
        raise SystemExit(f"page for {coin} starts at {items[0]['time']}, wanted {start}")


def api_serial(base: str, work: list, limit: int) -> list[float]:
    import httpx2

    lat = []
    with httpx2.Client(base_url=base, timeout=60) as c:
        for coin, start, end in work:
            t0 = time.perf_counter()
            r = c.get("/candles", params={"coin": coin, "interval": "1m", "start": start.isoformat(),
                                          "end": end.isoformat(), "limit": limit})
            lat.append(time.perf_counter() - t0)
            r.raise_for_status()
            check(r.json(), coin, start, limit)
    return lat


def api_concurrent(base: str, work: list, limit: int, clients: int, seconds: float) -> tuple[list[float], float]:
    """Latencies and requests/s of `clients` threads looping over `work` for `seconds`."""
    import httpx2

    lat: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def run(k: int) -> None:
        mine = []
        with httpx2.Client(base_url=base, timeout=60) as c:
            i = k
            while time.monotonic() < stop:
                coin, start, end = work[i % len(work)]
                t0 = time.perf_counter()
                r = c.get("/candles", params={"coin": coin, "interval": "1m", "start": start.isoformat(),
                                              "end": end.isoformat(), "limit": limit})
                mine.append(time.perf_counter() - t0)
                r.raise_for_status()
                i += clients
        with lock:
            lat.extend(mine)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=run, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return lat, len(lat) / (time.perf_counter() - t0)


def duckdb_serial(lake: Path, work: list, limit: int) -> list[float]:
    """The API's query for the same inputs straight on DuckDB (files listed once, as the cache does)."""
    from crypto_assets.api import queries
    from crypto_assets.api.lake_source import LakeSource

    src = LakeSource(lake, ttl_s=3600)
    lat = []
    for coin, start, end in work:
        t0 = time.perf_counter()
        page = queries.candles(src, coin, "1m", start, end, limit, None)
        lat.append(time.perf_counter() - t0)
        if len(page.items) != limit:
            raise SystemExit("DuckDB baseline returned a short page")
    src.close()
    return lat


def page_through(base: str, coin: str) -> tuple[float, int, int]:
    import httpx2

    t0, rows, pages, cursor = time.perf_counter(), 0, 0, None
    with httpx2.Client(base_url=base, timeout=60) as c:
        while True:
            params = {"coin": coin, "interval": "1m", "limit": 5000, **({"cursor": cursor} if cursor else {})}
            body = c.get("/candles", params=params).raise_for_status().json()
            rows, pages, cursor = rows + len(body["items"]), pages + 1, body["next_cursor"]
            if cursor is None:
                return time.perf_counter() - t0, rows, pages


def main() -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--coins", type=int, default=5)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seconds", type=float, default=10.0, help="duration of each concurrent load")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--requests", type=int, default=100, help="back-to-back requests per serial measurement")
    ap.add_argument("--keep", action="store_true", help="keep the temporary CRYPTO_HOME")
    args = ap.parse_args()

    from crypto_assets.kafka.tick_contract import DEFAULT_COINS

    coins = [(c.coin_id, c.symbol) for c in DEFAULT_COINS[: args.coins]]
    ids = [c for c, _ in coins]
    print(f"load average at start: {load_avg()}")
    home = Path(tempfile.mkdtemp(prefix="bench-api-"))
    proc = None
    try:
        t0 = time.perf_counter()
        n = build_lake(home / "lake", coins, args.days)
        print(f"lake: {n:,} 1-minute bars ({args.coins} coins x {args.days} days), "
              f"{args.days - 1} day files + 24 hour files, built in {time.perf_counter() - t0:.1f} s")
        port = free_port()
        proc = start_server(home, port, ids)
        base = f"http://127.0.0.1:{port}"
        api_serial(base, ranges(ids, 1, 5, 0, args.days), 1440)  # warm-up: imports, first listing
        print(f"\n{'range':<8} {'limit':>5} | {'API p50':>8} {'p95':>8} | {'DuckDB p50':>10} {'p95':>8} | "
              f"{'ratio':>5} | {args.concurrency} clients: {'req/s':>6} {'p50':>8} {'p95':>8}   (ms)")
        for days_back, limit in ((1, 1440), (args.days, min(5000, args.days * 1440))):
            work = ranges(ids, days_back, args.requests, days_back, args.days)
            api = api_serial(base, work, limit)
            db = duckdb_serial(home / "lake", work, limit)
            conc, rps = api_concurrent(base, work, limit, args.concurrency, args.seconds)
            ms = [1000 * x for x in api], [1000 * x for x in db], [1000 * x for x in conc]
            print(f"{days_back:>3} day{'s' if days_back > 1 else ' '}  {limit:>5} | {fmt(pct(ms[0], 50), 8)} "
                  f"{fmt(pct(ms[0], 95), 8)} | {fmt(pct(ms[1], 50), 10)} {fmt(pct(ms[1], 95), 8)} | "
                  f"{fmt(pct(ms[0], 50) / pct(ms[1], 50), 5)} | {'':>{len(str(args.concurrency)) + 9}}"
                  f"{fmt(rps, 6, 1)} {fmt(pct(ms[2], 50), 8)} {fmt(pct(ms[2], 95), 8)}")
        secs, rows, pages = page_through(base, ids[0])
        print(f"\npaging through {ids[0]}'s {args.days} days: {rows:,} bars in {pages} pages of <= 5000, "
              f"{secs:.2f} s ({rows / secs:,.0f} bars/s)")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(20)
        print(f"load average at end: {load_avg()}")
        keep_or_remove(home, args.keep)
    return 0


if __name__ == "__main__":
    sys.exit(main())
