"""Ingest throughput benchmark: Kafka (embedded broker) -> DuckDB, the `raw_ticks` pull.

    .venv/bin/python bench/ingest.py [--messages N] [--chunk C] [--naive-messages K]
                                     [--batch-size B] [--no-export-per-round] [--cprofile [FILE]]
                                     [--strict]

A benchmark, not a test: it prints numbers and PASS/FAIL against targets; it exits non-zero
only when the correctness check fails (or with --strict, when a target is missed).

Everything happens in this process and under a temporary CRYPTO_HOME: an in-process embedded
broker (librdkafka's mock cluster, `crypto_assets.kafka.embedded_broker.EmbeddedBroker`), temporary DuckDB
files and Parquet trees, all deleted at the end.

ROUNDS. The embedded broker keeps only ~5 MB per partition (the limit counts the stored, i.e.
lz4-compressed, batches) and silently drops older messages, like retention. So the N messages
are not produced up front: they are produced and measured in rounds of C messages (default
150,000: the busiest of the 4 partitions gets 4 of the 10 coins, i.e. 60,000 messages a round,
and the log keeps ~73,000 of them). Each round
  1. produces C contract ticks (10 default coins, key = coin_id, event times increasing,
     (coin_id, last_updated_at) unique) through the project's idempotent TickProducer,
  2. checks that the whole round is still in the log (low watermark <= round start),
  3. measures, on that same round's messages:
     (a) consume-only: a confluent-kafka Consumer (the pull's consumer config) with assign()
         from the round's start offsets to the high watermarks, consume(10000) loops, touching
         every value (sum of len(value)) -- the ceiling;
     (b) the real pull: `pull_raw_ticks(kafka, lakehouse, PullConfig(batch_size=..,
         export_parquet=False))`, one call per round, reading from the offsets stored in DuckDB
         up to the watermarks -- pure ingest, broker -> DuckDB (rows + offsets in one
         transaction) + consumer-group commit;
     (b') the same pull into a second warehouse with export_parquet=True (the production
         default): ingest + re-export of the touched Parquet partitions every round;
     (c) round 1 only: a naive baseline on the first K (default 20,000) messages: per-message
         json.loads + one single-row parameterised INSERT per message into a DuckDB table with
         the raw_ticks columns, inside one transaction, offsets written and committed to Kafka
         at the end. Its rate is extrapolated to N (it is far too slow to run on all of N).
Times are summed over rounds; rates are N / summed time. Production and tick generation are
not measured (only reported). After the last round, the Parquet export of the export-off
warehouse is timed once on its own (one-shot export of all N rows), and correctness is checked:
raw_ticks count == N and distinct (kafka_partition, kafka_offset) == N in both warehouses,
nothing quarantined, and the Parquet mirrors hold N rows.

Peak RSS during (b): the kernel's VmHWM is reset (/proc/self/clear_refs) before each (b) call
and read after it; psutil (if installed) also samples RSS every 5 ms as a cross-check. Here one
call is one batch of min(C, batch_size) messages. Because this long-lived process reuses memory
freed by earlier phases, three fresh-process probes also run one pull each (batch_size B reading
B; B/10 reading B; B/10 reading B/10) to show the working set per message of a batch, i.e. what
batch_size bounds and what it does not.

CPU time (time.process_time, all threads of this process, which include the in-process broker)
is printed next to wall time: on a shared machine it is the less load-sensitive figure.

Where (b)'s time goes is measured by wrapping the pull module's functions and the consumer /
DuckDB connection from this script (the package itself is not modified).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gc
import io
import json
import math
import os
import platform
import pstats
import random
import re
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

try:  # installed (editable) in the venv; fall back to the checkout this script lives in
    import crypto_assets  # noqa: F401
except ImportError:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb  # noqa: E402
import orjson  # noqa: E402
import polars as pl  # noqa: E402
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition  # noqa: E402

import crypto_assets.ingest.consumer as consumer_mod  # noqa: E402
import crypto_assets.ingest.pull as pull_mod  # noqa: E402
import crypto_assets.ingest.write as write_mod  # noqa: E402
from crypto_assets.kafka.embedded_broker import EmbeddedBroker  # noqa: E402
from crypto_assets.kafka.tick_contract import DEFAULT_COINS, make_tick  # noqa: E402
from crypto_assets.ingest.config import BRONZE_DATASET, PullConfig  # noqa: E402
from crypto_assets.ingest.pull import pull_raw_ticks  # noqa: E402
from crypto_assets.resources import KafkaResource, LakehouseResource  # noqa: E402
from crypto_assets.kafka.producer import TickProducer  # noqa: E402
from crypto_assets.kafka.topics import DLQ_TOPIC, RAW_TOPIC  # noqa: E402
from crypto_assets.warehouse.tables import RAW_TICKS_DDL  # noqa: E402

TARGET_B_RATE = 100_000  # msgs/s
TARGET_B_OVER_A = 0.60
TARGET_B_OVER_C = 20.0


# --------------------------------------------------------------------------------------------
# Realistic ticks
# --------------------------------------------------------------------------------------------


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
        base = datetime.now(timezone.utc) - span - timedelta(hours=1)
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


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


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

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval_s)

    @contextlib.contextmanager
    def active(self):
        if self._proc is None:
            yield
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join()


MB = 1024 * 1024


# --------------------------------------------------------------------------------------------
# Instrumentation of the pull, done from outside the package
# --------------------------------------------------------------------------------------------


class Timers:
    def __init__(self) -> None:
        self.t: dict[str, float] = defaultdict(float)
        self.n: dict[str, int] = defaultdict(int)

    def add(self, key: str, dt: float) -> None:
        self.t[key] += dt
        self.n[key] += 1


SINK: Timers | None = None  # where the wrappers record; None = not recording


def _rec(key: str, dt: float) -> None:
    if SINK is not None:
        SINK.add(key, dt)


_SQL_LABELS = [
    (r"^CREATE OR REPLACE TEMP TABLE judged", "sql: judge (typing, validation, in-batch dedupe)"),
    (r"^UPDATE judged", "sql: dedupe against history (anti-join raw_ticks)"),
    (r"^INSERT INTO raw_ticks", "sql: INSERT INTO raw_ticks"),
    (r"^INSERT INTO lake_pending", "sql: mark Parquet partitions dirty"),
    (r"^INSERT INTO quarantine", "sql: INSERT INTO quarantine"),
    (r"^INSERT INTO ingest_offsets", "sql: INSERT INTO ingest_offsets"),
    (r"^INSERT INTO ingest_batches", "sql: INSERT INTO ingest_batches"),
    (r"^COMMIT", "sql: COMMIT"),
    (r"^BEGIN", "sql: BEGIN"),
    (r"^SELECT kafka_partition, next_offset", "setup: read stored offsets"),
    (r"^SELECT kafka_partition, kafka_offset, message_key", "dlq: look for unsent quarantine rows"),
    (r"^COPY", "export: COPY ... TO parquet"),
    (r"lake_pending", "export: lake_pending bookkeeping"),
    (r"read_parquet", "export: count exported rows"),
]


def _label(sql: str) -> str:
    s = " ".join(sql.split())
    for pat, label in _SQL_LABELS:
        if re.search(pat, s):
            return label
    return "sql: other small queries (batch id, counts, min/max, reasons)"


class _TimedRelation:
    def __init__(self, rel, label: str) -> None:
        self._rel, self._label = rel, label

    def _timed(self, name):
        fn = getattr(self._rel, name)

        def call(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                _rec(self._label, time.perf_counter() - t)

        return call

    def __getattr__(self, name):
        if name in ("fetchall", "fetchone", "pl", "arrow", "df", "fetchnumpy"):
            return self._timed(name)
        return getattr(self._rel, name)


class _TimedConn:
    """Delegates to a DuckDB connection, timing every statement by what it does."""

    def __init__(self, conn) -> None:
        self._conn = conn

    def execute(self, sql, *a, **k):
        t = time.perf_counter()
        try:
            return self._conn.execute(sql, *a, **k)
        finally:
            _rec(_label(sql), time.perf_counter() - t)

    def sql(self, sql, *a, **k):
        t = time.perf_counter()
        try:
            return _TimedRelation(self._conn.sql(sql, *a, **k), _label(sql))
        finally:
            _rec(_label(sql), time.perf_counter() - t)

    def register(self, *a, **k):
        t = time.perf_counter()
        try:
            return self._conn.register(*a, **k)
        finally:
            _rec("write: register Arrow views", time.perf_counter() - t)

    def __getattr__(self, name):
        return getattr(self._conn, name)


class BenchLakehouse(LakehouseResource):
    """The project's LakehouseResource; connect() additionally times opening (incl. schema DDL)
    and closing, and hands the pull a statement-timing proxy of the connection."""

    @contextlib.contextmanager
    def connect(self, read_only: bool = False):
        t = time.perf_counter()
        cm = super().connect(read_only=read_only)
        conn = cm.__enter__()
        _rec("setup: open DuckDB + ensure schema", time.perf_counter() - t)
        try:
            yield _TimedConn(conn)
        except BaseException:
            if not cm.__exit__(*sys.exc_info()):
                raise
        else:
            t = time.perf_counter()
            cm.__exit__(None, None, None)
            _rec("teardown: close DuckDB (checkpoint)", time.perf_counter() - t)


class _TimedConsumer:
    def __init__(self, consumer) -> None:
        self._c = consumer

    def consume(self, *a, **k):
        t = time.perf_counter()
        try:
            return self._c.consume(*a, **k)
        finally:
            _rec("consume: Consumer.consume() (fetch + Message objects)", time.perf_counter() - t)

    def commit(self, *a, **k):
        t = time.perf_counter()
        try:
            return self._c.commit(*a, **k)
        finally:
            _rec("kafka: commit offsets to consumer group", time.perf_counter() - t)

    def __getattr__(self, name):
        return getattr(self._c, name)


def _wrap(key: str, fn):
    def wrapper(*a, **k):
        t = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            _rec(key, time.perf_counter() - t)

    wrapper.__wrapped__ = fn
    return wrapper


@contextlib.contextmanager
def instrument_pull():
    """Monkeypatch the pull's modules (crypto_assets.ingest.*) for the duration (restored afterwards)."""
    cls = consumer_mod.RawConsumer
    patched = {  # (module, name looked up there) -> label
        (pull_mod, "consume_batch"): "consume: consume_batch total",
        (write_mod, "parse_values"): "parse: parse_values (NDJSON -> polars)",
        (pull_mod, "write_batch"): "write: write_batch total (incl. parse)",
        (pull_mod, "_commit_group_offsets"): "kafka: _commit_group_offsets total",
        (pull_mod, "publish_dlq"): "dlq: publish_dlq (nothing to send)",
        (pull_mod, "export_dirty"): "export: export_dirty total",
    }
    saved_mod = {(mod, name): getattr(mod, name) for mod, name in patched}
    saved_cls = {name: getattr(cls, name) for name in ("__init__", "metadata", "watermarks", "close")}
    orig_init = saved_cls["__init__"]

    def init(self, kafka):
        t = time.perf_counter()
        orig_init(self, kafka)
        self.consumer = _TimedConsumer(self.consumer)
        _rec("setup: create Consumer", time.perf_counter() - t)

    try:
        for (mod, name), label in patched.items():
            setattr(mod, name, _wrap(label, saved_mod[(mod, name)]))
        cls.__init__ = init
        cls.metadata = _wrap("setup: metadata (list_topics)", saved_cls["metadata"])
        cls.watermarks = _wrap("setup: watermarks", saved_cls["watermarks"])
        cls.close = _wrap("teardown: close Consumer", saved_cls["close"])
        yield
    finally:
        for (mod, name), fn in saved_mod.items():
            setattr(mod, name, fn)
        for name, fn in saved_cls.items():
            setattr(cls, name, fn)


def breakdown(t: Timers, total: float) -> list[tuple[str, float]]:
    """Exclusive time per category (parents minus their instrumented children)."""
    g = t.t.get
    consume_total = g("consume: consume_batch total", 0.0)
    consume_c = g("consume: Consumer.consume() (fetch + Message objects)", 0.0)
    write_total = g("write: write_batch total (incl. parse)", 0.0)
    parse = g("parse: parse_values (NDJSON -> polars)", 0.0)
    sql_in_write = sum(
        v for k, v in t.t.items()
        if k.startswith("sql:") or k == "write: register Arrow views"
    )
    commit_total = g("kafka: _commit_group_offsets total", 0.0)
    export_total = g("export: export_dirty total", 0.0)
    export_sql = sum(v for k, v in t.t.items() if k.startswith("export:") and k != "export: export_dirty total")
    rows: list[tuple[str, float]] = []
    for k in sorted(t.t):
        if k.startswith("setup:") or k.startswith("teardown:"):
            rows.append((k, t.t[k]))
    rows.append(("consume: Consumer.consume() (librdkafka fetch + Message objects)", consume_c))
    rows.append(("consume: Python glue (m.value()/offset()/... lists, bookkeeping)", consume_total - consume_c))
    rows.append(("parse: parse_values (NDJSON -> polars, contract schema)", parse))
    rows.append(("write: polars glue (meta frame, join, rejects, to_arrow)", write_total - parse - sql_in_write))
    for k in sorted(t.t):
        if k.startswith("sql:") or k == "write: register Arrow views":
            rows.append((k.replace("sql:", "duckdb:"), t.t[k]))
    rows.append(("kafka: commit offsets to consumer group", commit_total))
    rows.append(("dlq: publish_dlq (query, nothing to send)", g("dlq: publish_dlq (nothing to send)", 0.0)
                 - g("dlq: look for unsent quarantine rows", 0.0)))
    rows.append(("dlq: look for unsent quarantine rows (sql)", g("dlq: look for unsent quarantine rows", 0.0)))
    if export_total:
        for k in sorted(t.t):
            if k.startswith("export:") and k != "export: export_dirty total":
                rows.append((k, t.t[k]))
        rows.append(("export: file moves, staging, Python", export_total - export_sql))
    accounted = sum(v for _, v in rows)
    rows.append(("unaccounted (pull_raw_ticks itself, planning, logging)", total - accounted))
    return rows


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


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
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(m.error())
            nbytes += len(m.value())
            n += 1
            if m.offset() + 1 >= high[m.partition()]:
                todo.discard(m.partition())
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
    conn.execute(RAW_TICKS_DDL.replace("raw_ticks", "naive_ticks"))
    conn.execute(
        "CREATE TABLE IF NOT EXISTS naive_offsets (kafka_topic VARCHAR, kafka_partition INTEGER, next_offset BIGINT)"
    )
    c = Consumer(kafka.consumer_config(**{"group.id": "bench.naive", "auto.offset.reset": "error"}))
    c.assign([TopicPartition(topic, p, o) for p, o in start.items()])
    n = 0
    next_off: dict[int, int] = {}
    utc = timezone.utc
    t0 = time.perf_counter()
    conn.execute("BEGIN TRANSACTION")
    while n < limit:
        msgs = c.consume(min(10_000, limit - n), timeout=1.0)
        for m in msgs:
            if m.error() is not None:
                raise KafkaException(m.error())
            d = json.loads(m.value())
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
            next_off[m.partition()] = m.offset() + 1
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


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


_PROBE = r"""
import json, os, sys
def kb(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])
bootstrap, home, max_messages, batch_size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
os.environ["CRYPTO_HOME"] = home
import pyarrow  # noqa: F401  (the pull imports it on its first batch; count it in the baseline)
from crypto_assets.ingest.config import PullConfig
from crypto_assets.ingest.pull import pull_raw_ticks
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
    import subprocess

    home = root / f"memprobe_{name}"
    home.mkdir()
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, bootstrap, str(home), str(max_messages), str(batch_size), name],
        capture_output=True, text=True, timeout=300, env={**os.environ, "CRYPTO_HOME": str(home)},
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
    export_s: float = 0.0
    peak_hwm_kb: int = 0
    peak_delta_kb: int = 0
    base_kb: int = 0


def fmt_rate(r: float) -> str:
    return f"{r:,.0f} msg/s"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--messages", type=int, default=1_000_000, help="N, total messages (default 1,000,000)")
    ap.add_argument("--chunk", type=int, default=150_000, help="C, messages per round (default 150,000)")
    ap.add_argument("--batch-size", type=int, default=PullConfig.batch_size,
                    help=f"PullConfig.batch_size (default {PullConfig.batch_size:,})")
    ap.add_argument("--naive-messages", type=int, default=20_000, help="subset for the naive baseline (default 20,000)")
    ap.add_argument("--no-export-per-round", action="store_true", help="skip (b'), the export-on pull")
    ap.add_argument("--cprofile", nargs="?", const="-", default=None, metavar="FILE",
                    help="also cProfile the (b) calls: print the top functions (and dump stats to FILE)")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = ap.parse_args(argv)
    if args.messages <= 0 or args.chunk <= 0 or args.batch_size <= 0:
        ap.error("--messages, --chunk and --batch-size must be positive")
    tmp = tempfile.TemporaryDirectory(prefix="crypto_bench_")
    broker = EmbeddedBroker()
    try:
        return run(args, Path(tmp.name), broker)
    finally:
        gc.collect()  # destroy the clients (run()'s locals) before the cluster they talk to
        broker.stop()
        tmp.cleanup()


def run(args: argparse.Namespace, root: Path, broker: EmbeddedBroker) -> int:
    global SINK
    N, C = args.messages, args.chunk
    load_start = os.getloadavg()[0]
    naive_n = min(args.naive_messages, C, N)
    os.environ["CRYPTO_HOME"] = str(root / "var")  # belt and braces: nothing resolves ./var
    home_a, home_b = root / "var", root / "var_export"
    for h in (home_a, home_b):
        h.mkdir(parents=True)

    print("=" * 96)
    print(f"crypto_assets ingest benchmark: N={N:,} messages in rounds of C={C:,}")
    print(
        f"python {platform.python_version()}, duckdb {duckdb.__version__}, polars {pl.__version__}, "
        f"librdkafka {__import__('confluent_kafka').libversion()[0]}, orjson {orjson.__version__}, "
        f"{os.cpu_count()} CPUs"
    )
    print(f"temp CRYPTO_HOME: {root}")
    print(f"load average (1 min) at start: {load_start:.2f} on {os.cpu_count()} CPUs"
          + ("  <-- WARNING: other work is running; timings will be pessimistic" if load_start > 0.5 else ""))
    print(
        "NOTE: the embedded (librdkafka mock) broker keeps only ~5 MB per partition and drops older\n"
        "      messages, so messages are produced and measured in rounds of C: each round produces C\n"
        "      messages, then (a), (b), (b') run on exactly that round's messages; times are summed\n"
        "      over rounds. (c) runs once, on the first round, and is extrapolated."
    )
    print("=" * 96)

    broker.start(topics=[RAW_TOPIC, DLQ_TOPIC])
    # One-off library import cost kept out of the timings: the pull's first to_arrow() imports
    # pyarrow (and numpy), which takes ~0.4 s here (PYTHONDONTWRITEBYTECODE=1 => no .pyc cache).
    t = time.perf_counter()
    import pyarrow  # noqa: F401

    import_s = time.perf_counter() - t
    kafka_a = KafkaResource(bootstrap_servers=broker.bootstrap_servers, home=str(home_a),
                            consumer_group="bench.pull")
    kafka_b = KafkaResource(bootstrap_servers=broker.bootstrap_servers, home=str(home_b),
                            consumer_group="bench.pull_export")
    lake_a = BenchLakehouse(home=str(home_a))
    lake_b = BenchLakehouse(home=str(home_b))
    topic = kafka_a.raw_topic
    cfg_b = PullConfig(batch_size=args.batch_size, export_parquet=False)
    cfg_b2 = PullConfig(batch_size=args.batch_size, export_parquet=True)
    print(f"broker {broker.bootstrap_servers}, topic {topic}; lakehouse duckdb threads={lake_a.duckdb_threads}, "
          f"memory_limit={lake_a.duckdb_memory_limit}; PullConfig(batch_size={cfg_b.batch_size:,}, "
          f"consume_chunk={cfg_b.consume_chunk:,})")

    # A plain consumer's metadata request does not auto-create a topic on the mock cluster
    # (allow.auto.create.topics defaults to false for consumers), so ask for creation here.
    probe = Consumer({"bootstrap.servers": broker.bootstrap_servers, "group.id": "bench.probe",
                      "allow.auto.create.topics": True})
    partitions = sorted(probe.list_topics(topic=topic, timeout=10).topics[topic].partitions)
    if not partitions:
        print(f"ERROR: topic {topic} has no partitions on the embedded broker")
        return 2

    stream = TickStream(N)
    acc_a = ConsumeOnly()
    acc_b = PullAcc("b")
    acc_b2 = PullAcc("b'")
    timers_b, timers_b2 = Timers(), Timers()
    gen_s = prod_s = 0.0
    naive: tuple[int, float] | None = None
    sampler = RssSampler()
    hwm_ok = True
    prof = cProfile.Profile() if args.cprofile else None
    per_partition = defaultdict(int)
    value_bytes = 0

    done = 0
    rnd = 0
    hdr_b2 = "(b') ms"
    print(f"{'round':>5} {'msgs':>7} {'(a) ms':>8} {'(b) ms':>8} {hdr_b2:>8} {'(b) peak RSS':>13}  log offsets")
    while done < N:
        rnd += 1
        n_r = min(C, N - done)
        start = {p: hi for p, (_lo, hi) in watermarks(probe, topic, partitions).items()}

        t = time.perf_counter()
        batch = stream.take(n_r)
        gen_s += time.perf_counter() - t
        value_bytes += sum(len(v) for _, v in batch)
        t = time.perf_counter()
        with TickProducer(kafka_a) as producer:
            for key, value in batch:
                producer.send_raw(key, value)
        prod_s += time.perf_counter() - t
        del batch

        wm = watermarks(probe, topic, partitions)
        high = {p: hi for p, (_lo, hi) in wm.items()}
        lost = {p: (start[p], lo) for p, (lo, _hi) in wm.items() if lo > start[p]}
        if lost:
            print(f"ERROR: retention dropped part of round {rnd} before it was read "
                  f"(partition: (round start, low watermark)) {lost}; use a smaller --chunk")
            return 2
        produced = sum(high[p] - start[p] for p in partitions)
        if produced != n_r:
            print(f"ERROR: round {rnd}: {produced} new offsets for {n_r} produced messages")
            return 2
        for p in partitions:
            per_partition[p] += high[p] - start[p]

        # (a) consume-only ceiling
        gc.collect()
        a_before = acc_a.loop_s
        consume_only(kafka_a, topic, start, high, acc_a)
        a_ms = (acc_a.loop_s - a_before) * 1000

        # (b) the real pull, Parquet export off
        gc.collect()
        base_kb = _status_kb("VmRSS") or 0
        hwm_ok = _reset_hwm() and hwm_ok
        SINK = timers_b
        with instrument_pull(), sampler.active():
            if prof:
                prof.enable()
            c0 = time.process_time()
            t = time.perf_counter()
            res = pull_raw_ticks(kafka_a, lake_a, cfg_b)
            dt = time.perf_counter() - t
            acc_b.cpu_s += time.process_time() - c0
            if prof:
                prof.disable()
        SINK = None
        hwm_kb = _status_kb("VmHWM") or 0
        if res.messages != n_r or res.rows_written != n_r or res.quarantined:
            print(f"ERROR: round {rnd}: pull read {res.messages}, wrote {res.rows_written}, "
                  f"quarantined {res.quarantined} (expected {n_r}); notices: {res.notices}")
            return 2
        acc_b.total_s += dt
        acc_b.messages += res.messages
        acc_b.per_round.append(dt)
        if hwm_kb > acc_b.peak_hwm_kb:
            acc_b.peak_hwm_kb, acc_b.base_kb = hwm_kb, base_kb
        acc_b.peak_delta_kb = max(acc_b.peak_delta_kb, hwm_kb - base_kb)

        # (b') the real pull with Parquet export every round (production default)
        dt2 = float("nan")
        if not args.no_export_per_round:
            gc.collect()
            SINK = timers_b2
            with instrument_pull():
                t = time.perf_counter()
                res2 = pull_raw_ticks(kafka_b, lake_b, cfg_b2)
                dt2 = time.perf_counter() - t
            SINK = None
            if res2.messages != n_r or res2.rows_written != n_r:
                print(f"ERROR: round {rnd} (export on): pull read {res2.messages}, wrote {res2.rows_written}")
                return 2
            acc_b2.total_s += dt2
            acc_b2.messages += res2.messages
            acc_b2.per_round.append(dt2)

        # (c) naive baseline, first round only
        if rnd == 1:
            gc.collect()
            naive = naive_baseline(kafka_a, root, topic, start, naive_n)

        done += n_r
        print(f"{rnd:>5} {n_r:>7,} {a_ms:>8.0f} {dt * 1000:>8.0f} {dt2 * 1000:>8.0f} "
              f"{hwm_kb / 1024:>10.0f} MB  " + " ".join(f"p{p}:{wm[p][0]}..{wm[p][1]}" for p in partitions))

    # One-shot Parquet export of everything the export-off warehouse ingested.
    timers_x = Timers()
    SINK = timers_x
    gc.collect()
    with instrument_pull():
        t = time.perf_counter()
        res_x = pull_raw_ticks(kafka_a, lake_a, PullConfig(batch_size=args.batch_size, export_parquet=True))
        export_once_s = time.perf_counter() - t
    SINK = None
    export_once_inner = timers_x.t.get("export: export_dirty total", 0.0)

    # ---------------------------------------------------------------- correctness
    problems: list[str] = []

    def check(lake: BenchLakehouse, label: str) -> dict:
        with duckdb.connect(str(lake.duckdb_path), read_only=True) as conn:
            cnt, dist, dist_key = conn.sql(
                "SELECT count(*), count(DISTINCT (kafka_partition, kafka_offset)), "
                "count(DISTINCT (coin_id, last_updated_at)) FROM raw_ticks"
            ).fetchall()[0]
            q = conn.sql("SELECT count(*) FROM quarantine").fetchall()[0][0]
            files = sorted(str(p) for p in (lake.lake_path / BRONZE_DATASET).rglob("*.parquet"))
            pq = conn.sql(f"SELECT count(*) FROM read_parquet({files!r})").fetchall()[0][0] if files else 0
            nxt = conn.sql(
                "SELECT kafka_partition, max(next_offset) FROM ingest_offsets GROUP BY 1 ORDER BY 1"
            ).fetchall()
        if cnt != N:
            problems.append(f"{label}: raw_ticks count {cnt:,} != N {N:,}")
        if dist != N:
            problems.append(f"{label}: distinct (kafka_partition, kafka_offset) {dist:,} != N {N:,}")
        if dist_key != N:
            problems.append(f"{label}: distinct (coin_id, last_updated_at) {dist_key:,} != N {N:,}")
        if q:
            problems.append(f"{label}: {q} quarantined rows (expected 0)")
        if pq != N:
            problems.append(f"{label}: Parquet mirror holds {pq:,} rows != N {N:,}")
        return {"count": cnt, "distinct_offsets": dist, "distinct_keys": dist_key, "quarantine": q,
                "parquet_rows": pq, "parquet_files": len(files), "offsets": nxt}

    chk_a = check(lake_a, "warehouse (b)")
    chk_b = check(lake_b, "warehouse (b')") if not args.no_export_per_round else None
    load_end = os.getloadavg()[0]
    small = max(args.batch_size // 10, 1)
    mem_probes = [
        memory_probe(broker.bootstrap_servers, root, "big", args.batch_size, min(N, args.batch_size)),
        memory_probe(broker.bootstrap_servers, root, "small_many", small, min(N, args.batch_size)),
        memory_probe(broker.bootstrap_servers, root, "small_one", small, min(N, small)),
    ]
    probe.close()
    del producer

    # ---------------------------------------------------------------- report
    rate_a = N / acc_a.loop_s
    rate_a_total = N / acc_a.total_s
    rate_b = N / acc_b.total_s
    n_naive, t_naive = naive
    rate_c = n_naive / t_naive
    ratio_ba = rate_b / rate_a
    ratio_bc = rate_b / rate_c
    rusage_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    print()
    print("-" * 96)
    print(f"load average (1 min) at end: {load_end:.2f} (this run itself contributes 1-2; more means contention)")
    print(f"one-off: importing pyarrow (done before timing; a fresh Dagster run pays it on its first pull): {import_s:.2f} s")
    print(f"input: {N:,} messages, {value_bytes / MB:,.1f} MB of JSON values (avg {value_bytes / N:.0f} B), "
          f"{rnd} rounds of <= {C:,}")
    print("       per partition (key = coin_id, 10 coins on 4 partitions): "
          + ", ".join(f"p{p}={per_partition[p]:,}" for p in partitions))
    print(f"       (not measured) tick generation {N / gen_s:,.0f} msg/s, produce (TickProducer, idempotent, lz4) "
          f"{N / prod_s:,.0f} msg/s")
    print()
    print(f"(a) consume-only ceiling        {fmt_rate(rate_a):>16}   {acc_a.loop_s:7.2f} s  "
          f"(assign + consume(10000) loop; {fmt_rate(rate_a_total)} incl. consumer create/close)")
    print(f"(b) pull_raw_ticks, export off  {fmt_rate(rate_b):>16}   {acc_b.total_s:7.2f} s  "
          f"({rnd} calls, broker -> DuckDB rows + offsets, 1 txn per call, + group commit)")
    print(f"    per call: first {acc_b.per_round[0] * 1000:.0f} ms, median "
          f"{sorted(acc_b.per_round)[len(acc_b.per_round) // 2] * 1000:.0f} ms, last {acc_b.per_round[-1] * 1000:.0f} ms")
    if not args.no_export_per_round:
        rate_b2 = N / acc_b2.total_s
        exp2 = timers_b2.t.get("export: export_dirty total", 0.0)
        print(f"(b') pull_raw_ticks, export on  {fmt_rate(rate_b2):>16}   {acc_b2.total_s:7.2f} s  "
              f"(production default: re-export touched Parquet partitions every call;")
        print(f"     of which export_dirty {exp2:.2f} s = {exp2 / rnd * 1000:.0f} ms/call; first call "
              f"{acc_b2.per_round[0] * 1000:.0f} ms, last {acc_b2.per_round[-1] * 1000:.0f} ms)")
    print(f"     Parquet export cost, one-shot: exporting all {N:,} rows of (b)'s warehouse once took "
          f"{export_once_s:.2f} s (export_dirty {export_once_inner:.2f} s, "
          f"{res_x.export.partitions if res_x.export else 0} partitions) = {N / export_once_inner:,.0f} rows/s")
    print(f"    CPU time (all threads of this process, incl. the in-process broker and the sampler): "
          f"(a) {acc_a.cpu_s / N * 1e6:.2f} us/msg, (b) {acc_b.cpu_s / N * 1e6:.2f} us/msg "
          f"(wall: (a) {acc_a.loop_s / N * 1e6:.2f}, (b) {acc_b.total_s / N * 1e6:.2f} us/msg)")
    full = [i for i in range(rnd) if i < rnd - 1 or N % C == 0]  # rounds of exactly C messages
    if len(full) >= 3:
        med = statistics.median
        ma = med([acc_a.per_round[i] for i in full])
        mb = med([acc_b.per_round[i] for i in full])
        line = f"    median round (less sensitive to bursts of other load): (a) {C / ma:,.0f}, (b) {C / mb:,.0f}"
        if not args.no_export_per_round:
            line += f", (b') {C / med([acc_b2.per_round[i] for i in full]):,.0f}"
        print(line + f" msg/s; b/a {ma / mb:.2f}")
    print(f"(c) naive baseline              {fmt_rate(rate_c):>16}   {t_naive:7.2f} s for the first {n_naive:,} "
          f"messages of round 1 (json.loads + 1-row INSERT each, one txn)")
    print(f"    extrapolated to N={N:,}: {N / rate_c:,.0f} s ({N / rate_c / 60:.1f} min) -- EXTRAPOLATED, not run")
    print()
    print(f"b/a = {ratio_ba:.2f}   (b vs consume-only; {rate_b / rate_a_total:.2f} vs (a) incl. consumer create/close)")
    print(f"b/c = {ratio_bc:.1f}")
    print()
    print("memory:")
    if hwm_ok:
        print(f"  peak RSS during (b) (VmHWM reset before each call): {acc_b.peak_hwm_kb / 1024:,.0f} MB "
              f"(RSS before that call {acc_b.base_kb / 1024:,.0f} MB; largest rise during one call "
              f"{acc_b.peak_delta_kb / 1024:,.0f} MB)")
    if sampler.available:
        print(f"  peak RSS during (b), psutil 5 ms sampling: {sampler.peak / MB:,.0f} MB")
    print(f"  ru_maxrss of the whole process (all phases, incl. producing): {rusage_kb / 1024:,.0f} MB")
    print("  (in this long-lived process the allocator re-uses memory freed by earlier phases, so the rise\n"
          "   during a call understates the pull's working set; the fresh-process probes below measure it)")
    for mp in mem_probes:
        if "error" in mp:
            print(f"  fresh-process probe batch_size={mp['batch_size']:,}: failed: {mp['error']}")
            continue
        print(f"  fresh-process probe ({mp['name']}): pull_raw_ticks(max_messages={mp['max_messages']:,}, batch_size={mp['batch_size']:,}) "
              f"read {mp['messages']:,} msgs in {mp['batches']} txn(s): RSS {mp['rss0_kb'] / 1024:,.0f} MB before "
              f"(imports + DuckDB opened), peak {mp['hwm_kb'] / 1024:,.0f} MB => +{(mp['hwm_kb'] - mp['rss0_kb']) / 1024:,.0f} MB")
    ok_probes = {mp["name"]: mp for mp in mem_probes if "error" not in mp}
    if {"big", "small_one", "small_many"} <= set(ok_probes) and ok_probes["big"]["messages"] > ok_probes["small_one"]["messages"]:
        rise = {k: (v["hwm_kb"] - v["rss0_kb"]) / 1024 for k, v in ok_probes.items()}
        dn = ok_probes["big"]["messages"] - ok_probes["small_one"]["messages"]
        per_msg_b = (rise["big"] - rise["small_one"]) * MB / dn
        print(f"  => working set ~ {rise['small_one']:,.0f} MB + {per_msg_b:,.0f} B per message of the batch "
              f"({per_msg_b * args.batch_size / MB:,.0f} MB at batch_size={args.batch_size:,}); reading "
              f"{ok_probes['small_many']['messages']:,} messages as {ok_probes['small_many']['batches']} small "
              f"transactions peaks at +{rise['small_many']:,.0f} MB:")
        print("     batch_size bounds the per-transaction part; reading more messages in more transactions still\n"
              "     adds some (librdkafka's prefetch queue, up to queued.max.messages.kbytes=256 MB in\n"
              "     KafkaResource.consumer_config, plus allocator arenas), but far less than one big batch")
    print(f"  in (b) above each call reads one round, i.e. min(C, batch_size)={min(C, cfg_b.batch_size):,} messages")
    print()
    print(f"where (b)'s time goes ({acc_b.total_s:.2f} s over {rnd} calls, instrumented from the bench script):")
    for key, v in breakdown(timers_b, acc_b.total_s):
        if abs(v) < 0.0005 and not key.startswith("unaccounted"):
            continue
        print(f"  {key:<66} {v:7.3f} s {v / acc_b.total_s * 100:5.1f}%")
    print()
    print("targets:")
    ok1 = rate_b >= TARGET_B_RATE
    ok2 = ratio_ba >= TARGET_B_OVER_A
    ok3 = ratio_bc >= TARGET_B_OVER_C
    print(f"  (b) >= {TARGET_B_RATE:,} msg/s : {rate_b:>12,.0f}   {verdict(ok1)}")
    print(f"  b/a >= {TARGET_B_OVER_A:.2f}          : {ratio_ba:>12.2f}   {verdict(ok2)}")
    print(f"  b/c >= {TARGET_B_OVER_C:.0f}            : {ratio_bc:>12.1f}   {verdict(ok3)}")
    print()
    print("correctness:")
    for label, chk in (("(b) export off", chk_a), ("(b') export on", chk_b)):
        if chk is None:
            continue
        print(f"  {label}: raw_ticks={chk['count']:,}, distinct (partition, offset)={chk['distinct_offsets']:,}, "
              f"distinct (coin_id, last_updated_at)={chk['distinct_keys']:,}, quarantine={chk['quarantine']}, "
              f"parquet rows={chk['parquet_rows']:,} in {chk['parquet_files']} files")
    print(f"  stored next offsets (b): {dict(chk_a['offsets'])}")
    print(f"  correctness: {'PASS' if not problems else 'FAIL'}")
    for p in problems:
        print(f"    - {p}")

    if prof:
        print()
        print("cProfile of the (b) calls, top 25 by internal time:")
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("tottime").print_stats(25)
        print(s.getvalue())
        if args.cprofile != "-":
            prof.dump_stats(args.cprofile)
            print(f"profile written to {args.cprofile} (python -m pstats {args.cprofile})")

    if problems:
        return 1
    if args.strict and not (ok1 and ok2 and ok3):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
