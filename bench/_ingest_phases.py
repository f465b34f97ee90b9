"""The measured phases of bench/ingest.py other than the pull itself: realistic contract ticks,
(a) the consume-only ceiling, (c) the naive per-message INSERT baseline, RSS sampling during a
call, and the fresh-process memory probes of one pull."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, cast

import duckdb
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from bench._common import REPO
from crypto_assets.kafka.tick_contract import DEFAULT_COINS, make_tick
from crypto_assets.resources import KafkaResource
from crypto_assets.warehouse.tables import TABLES

if TYPE_CHECKING:
    import psutil


class TickStream:
    """Contract ticks for the 10 default coins: each coin ticks once a second, coins staggered by
    100 ms, so event times strictly increase and (coin_id, last_updated_at) is unique. Prices
    follow a geometric random walk at each coin's annual volatility; market cap, 24h volume and
    changes move with them. Event times end about an hour before now (never "in the future")."""

    STEP_MS = 100

    def __init__(self, total: int, seed: int = 42) -> None:
        self.rng = random.Random(seed)
        self.coins = DEFAULT_COINS
        span = timedelta(milliseconds=self.STEP_MS * total)
        base = datetime.now(UTC) - span - timedelta(hours=1)
        self.base = base.replace(minute=0, second=0, microsecond=0)
        self.i = 0
        sec_per_year = 365 * 24 * 3600
        self.state = [
            {
                "price": c.ref_price,
                "open_24h": c.ref_price,
                "open_7d": c.ref_price * (1 + self.rng.uniform(-0.05, 0.05)),
                "supply": 1.9e7 * 90_000 / c.ref_price if c.coin_id == "bitcoin" else c.ref_volume * 30 / c.ref_price,
                "volume": c.ref_volume,
                "sigma": c.annual_vol / math.sqrt(sec_per_year),
            }
            for c in self.coins
        ]

    def take(self, n: int) -> list[tuple[str, bytes]]:
        out = []
        rng, coins, state, base, step = self.rng, self.coins, self.state, self.base, self.STEP_MS
        for _ in range(n):
            j = self.i
            self.i += 1
            k = j % len(coins)
            c, s = coins[k], state[k]
            s["price"] *= math.exp(s["sigma"] * rng.gauss(0.0, 1.0))
            s["volume"] = max(s["volume"] * (1 + rng.gauss(0.0, 0.002)), 1.0)
            price = float(f"{s['price']:.6g}")
            ts = base + timedelta(milliseconds=step * j)
            tick = make_tick(
                source="bench",
                coin_id=c.coin_id,
                symbol=c.symbol,
                price_usd=price,
                market_cap_usd=round(price * s["supply"]),
                volume_24h_usd=round(s["volume"], 2),
                change_24h_pct=round((price / s["open_24h"] - 1) * 100, 4),
                change_7d_pct=round((price / s["open_7d"] - 1) * 100, 4),
                last_updated_at=ts,
                ingestion_timestamp=ts + timedelta(milliseconds=rng.randint(150, 900)),
            )
            out.append((c.coin_id, orjson.dumps(tick)))
        return out


class RssSampler:
    """psutil RSS sampling in a thread while active (cross-check of VmHWM)."""

    def __init__(self, interval_s: float = 0.005) -> None:
        try:
            import psutil

            self._proc = psutil.Process()
        except ImportError:
            self._proc = None
        self.interval_s = interval_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self._proc is not None

    def _run(self, proc: psutil.Process) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, proc.memory_info().rss)
            self._stop.wait(self.interval_s)

    @contextlib.contextmanager
    def active(self):
        if self._proc is None:
            yield
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(self._proc,), daemon=True)
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join()


def watermarks(consumer, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
    return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10, cached=False) for p in partitions}


@dataclass
class ConsumeOnly:
    total_s: float = 0.0
    loop_s: float = 0.0
    messages: int = 0
    bytes: int = 0
    per_round: list[float] = field(default_factory=list)  # loop seconds per round
    cpu_s: float = 0.0  # process CPU time (all threads) during the loops


def consume_only(kafka: KafkaResource, topic: str, start: dict[int, int], high: dict[int, int], acc: ConsumeOnly) -> None:
    """(a): assign() from the round's start offsets, consume(10000) until every partition
    reaches its high watermark, touching each value. Same consumer config as the pull."""
    t0 = time.perf_counter()
    c = Consumer(kafka.consumer_config(**{"group.id": "bench.consume_only", "auto.offset.reset": "error"}))
    todo = {p for p in start if start[p] < high[p]}
    c.assign([TopicPartition(topic, p, start[p]) for p in todo])
    t1 = time.perf_counter()
    c1 = time.process_time()
    n = nbytes = 0
    idle_since = time.monotonic()
    while todo:
        msgs = c.consume(10_000, timeout=0.5)
        if not msgs:
            if time.monotonic() - idle_since > 15:
                raise RuntimeError(f"consume-only: no progress on partitions {sorted(todo)}")
            continue
        idle_since = time.monotonic()
        for m in msgs:
            err = m.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(err)
            value, p, offset = m.value(), m.partition(), m.offset()
            if value is None or p is None or offset is None:  # a consumed tick has all three
                raise RuntimeError(f"consume-only: a message without a value, partition or offset: {m}")
            nbytes += len(value)
            n += 1
            if offset + 1 >= high[p]:
                todo.discard(p)
    t2 = time.perf_counter()
    acc.cpu_s += time.process_time() - c1
    c.close()
    t3 = time.perf_counter()
    acc.total_s += t3 - t0
    acc.loop_s += t2 - t1
    acc.per_round.append(t2 - t1)
    acc.messages += n
    acc.bytes += nbytes


NAIVE_INSERT = """
INSERT INTO naive_ticks VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""


def naive_baseline(kafka: KafkaResource, home: Path, topic: str, start: dict[int, int], limit: int) -> tuple[int, float]:
    """(c): per message json.loads + one single-row parameterised INSERT (all inside ONE DuckDB
    transaction, which is the generous version of naive), offsets written in the same
    transaction and committed to the Kafka group at the end. Returns (messages, seconds)."""
    conn = duckdb.connect(str(home / "naive.duckdb"), config={"threads": 2, "memory_limit": "4GB"})
    conn.execute("SET TimeZone = 'UTC'")
    conn.execute(TABLES["raw_ticks"].ddl.replace("raw_ticks", "naive_ticks"))
    conn.execute(
        "CREATE TABLE IF NOT EXISTS naive_offsets (kafka_topic VARCHAR, kafka_partition INTEGER, next_offset BIGINT)"
    )
    c = Consumer(kafka.consumer_config(**{"group.id": "bench.naive", "auto.offset.reset": "error"}))
    c.assign([TopicPartition(topic, p, o) for p, o in start.items()])
    n = 0
    next_off: dict[int, int] = {}
    utc = UTC
    t0 = time.perf_counter()
    conn.execute("BEGIN TRANSACTION")
    while n < limit:
        msgs = c.consume(min(10_000, limit - n), timeout=1.0)
        for m in msgs:
            if m.error() is not None:
                raise KafkaException(m.error())
            d = json.loads(cast(bytes, m.value()))
            conn.execute(
                NAIVE_INSERT,
                [
                    d["coin_id"], d["symbol"], d["source"], d["schema_version"], d["price_usd"],
                    d.get("market_cap_usd"), d.get("volume_24h_usd"), d.get("change_24h_pct"),
                    d.get("change_7d_pct"), d["last_updated_at"], d.get("ingestion_timestamp"),
                    topic, m.partition(), m.offset(),
                    datetime.fromtimestamp(m.timestamp()[1] / 1000, utc), 1, datetime.now(utc),
                ],
            )
            next_off[cast(int, m.partition())] = cast(int, m.offset()) + 1
            n += 1
    for p, o in next_off.items():
        conn.execute("INSERT INTO naive_offsets VALUES (?, ?, ?)", [topic, p, o])
    conn.execute("COMMIT")
    c.commit(offsets=[TopicPartition(topic, p, o) for p, o in next_off.items()], asynchronous=False)
    elapsed = time.perf_counter() - t0
    c.close()
    got = conn.sql("SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)) FROM naive_ticks").fetchall()[0]
    conn.close()
    if got != (n, n):
        raise RuntimeError(f"naive baseline wrote {got}, expected {n} rows")
    return n, elapsed


_PROBE = r"""
import json, os, sys
def kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
bootstrap, home, max_messages, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
os.environ["CRYPTO_HOME"] = home
import pyarrow  # noqa: F401  (the pull imports it on its first batch; count it in the baseline)
from crypto_assets.ingest.pull import PullConfig, pull_raw_ticks
from crypto_assets.resources import KafkaResource, LakehouseResource
kafka = KafkaResource(bootstrap_servers=bootstrap, home=home, consumer_group="bench.memprobe")
lake = LakehouseResource(home=home)
with lake.connect() as conn:
    conn.sql("SELECT count(*) FROM raw_ticks").fetchall()
rss0 = kb("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
res = pull_raw_ticks(kafka, lake, PullConfig(max_messages=max_messages, batch_size=batch_size,
                                             export_parquet=False, publish_dlq=False))
print(json.dumps({"name": sys.argv[5], "rss0_kb": rss0, "hwm_kb": kb("VmHWM"), "messages": res.messages,
                  "batches": len(res.batches), "batch_size": batch_size, "max_messages": max_messages}))
"""


def memory_probe(bootstrap: str, root: Path, name: str, batch_size: int, max_messages: int) -> dict:
    """Peak RSS of one pull in a fresh process (reads from the earliest offset still in the log
    into a fresh warehouse under the temp root): the pull's working set, and how it follows
    batch_size rather than the number of messages read."""
    home = root / f"memprobe_{name}"
    home.mkdir()
    env = {**os.environ, "CRYPTO_HOME": str(home),  # the checkout's package, as in this process
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, bootstrap, str(home), str(max_messages), str(batch_size), name],
        capture_output=True, text=True, timeout=300, env=env,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"name": name, "batch_size": batch_size, "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1])


@dataclass
class PullAcc:
    name: str
    total_s: float = 0.0
    messages: int = 0
    per_round: list[float] = field(default_factory=list)
    cpu_s: float = 0.0
    peak_hwm_kb: int = 0
    peak_delta_kb: int = 0
    base_kb: int = 0
