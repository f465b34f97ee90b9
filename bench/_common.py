"""Helpers shared by bench/incremental_run.py and bench/soak.py: machine load, process-tree RSS,
directory sizes, percentiles, the embedded broker, a `dagster dev` stack in its own process
group, a sampling tick producer, a read-only visibility poller and per-run timings read from a
Dagster instance. Public package functions only."""

from __future__ import annotations

import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RUNS_ROOT = REPO / "var" / "bench" / "runs"  # bench homes (same file system as the cache: hard links)
MB = 1024 * 1024


# ----------------------------------------------------------------------------- numbers
def pct(values, q: float) -> float:
    """Nearest-rank percentile (q in 0..100); nan for no values."""
    v = sorted(x for x in values if x is not None and x == x)
    if not v:
        return math.nan
    return v[max(0, min(len(v) - 1, math.ceil(q / 100.0 * len(v)) - 1))]


def med(values) -> float:
    v = [x for x in values if x is not None and x == x]
    return statistics.median(v) if v else math.nan


def fmt(x: float, w: int = 6, d: int = 2) -> str:
    return f"{x:{w}.{d}f}" if x is not None and x == x else f"{'-':>{w}}"


def load_avg() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f} {b:.2f} {c:.2f} (1/5/15 min; {os.cpu_count()} CPUs)"


def dir_stats(path: Path) -> tuple[int, int]:
    """(bytes, files) under path; files that vanish while walking are skipped."""
    total = files = 0
    for root, _dirs, names in os.walk(path):
        for n in names:
            try:
                total += os.lstat(os.path.join(root, n)).st_size
                files += 1
            except FileNotFoundError:
                pass
    return total, files


def db_bytes(home: Path) -> int:
    """warehouse.duckdb plus its WAL."""
    return sum(p.stat().st_size for p in home.glob("warehouse.duckdb*") if p.is_file())


# ----------------------------------------------------------------------------- processes
def tree_rss(pid: int) -> int:
    """RSS of a process and all its descendants, bytes (0 when it is gone)."""
    import psutil

    try:
        p = psutil.Process(pid)
        procs = [p, *p.children(recursive=True)]
    except psutil.Error:
        return 0
    total = 0
    for q in procs:
        with __import__("contextlib").suppress(psutil.Error):
            total += q.memory_info().rss
    return total


def stack_roles(root_pid: int) -> dict[str, list[int]]:
    """The processes of a `dagster dev` tree by role, from their command lines."""
    import psutil

    roles: dict[str, list[int]] = {}
    try:
        procs = [psutil.Process(root_pid), *psutil.Process(root_pid).children(recursive=True)]
    except psutil.Error:
        return roles
    for p in procs:
        try:
            cmd, parent = " ".join(p.cmdline()), " ".join(p.parent().cmdline()) if p.parent() else ""
        except psutil.Error:
            continue
        role = ("dev" if p.pid == root_pid else "daemon" if "dagster-daemon" in cmd or "daemon run" in cmd
                else "webserver" if "dagster-webserver" in cmd or "dagster_webserver" in cmd
                else "code_server" if "grpc" in cmd or "code-server" in cmd
                else "run_worker" if "forkserver" in cmd and "forkserver" in parent  # a fork keeps the cmdline
                else "forkserver" if "forkserver" in cmd else "resource_tracker" if "resource_tracker" in cmd
                else "other")
        roles.setdefault(role, []).append(p.pid)
    return roles


def role_rss(root_pid: int) -> dict[str, int]:
    """RSS per role (own RSS of its processes, not their children), plus 'total' of the tree."""
    import psutil

    out: dict[str, int] = {}
    for role, pids in stack_roles(root_pid).items():
        for pid in pids:
            try:
                out[role] = out.get(role, 0) + psutil.Process(pid).memory_info().rss
            except psutil.Error:
                pass
    out["total"] = tree_rss(root_pid)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare_dagster_home(home: Path) -> Path:
    """<home>/dagster with a copy of the repo's dagster.yaml; pays a fresh warehouse's one-time
    first-write checkpoint (~1 s on 20M rows, once in a database's life) as setup, not run."""
    if (home / "warehouse.duckdb").exists():
        subprocess.run([sys.executable, "-c", f"import duckdb; duckdb.connect({str(home / 'warehouse.duckdb')!r}).execute("
                        "\"UPDATE asset_state SET updated_at = updated_at WHERE asset = 'clean_ticks'\").close()"], check=True)
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO / "dagster.yaml", dagster_home / "dagster.yaml")
    return dagster_home


def start_broker(home: Path):
    """An in-process EmbeddedBroker with broker.json in `home` (stop it with stop_broker)."""
    from crypto_assets.kafka.embedded_broker import EmbeddedBroker, write_broker_file

    broker = EmbeddedBroker()
    broker.start()
    write_broker_file(home, broker)
    return broker


def stop_broker(home: Path, broker) -> None:
    from crypto_assets.kafka.embedded_broker import remove_broker_file

    remove_broker_file(home)
    broker.stop()


def launch_dagster_dev(home: Path, env: dict[str, str], log_path: Path) -> tuple[subprocess.Popen, int]:
    """`dagster dev -w workspace.yaml` from the repo root, in its own process group (a background
    `dagster dev` without job control ignores SIGINT, so it is stopped through the group)."""
    port = free_port()
    workspace = REPO / "workspace.yaml"
    cmd = [str(Path(sys.executable).parent / "dagster"), "dev", "-p", str(port)]
    cmd += ["-w", str(workspace)] if workspace.exists() else ["-m", "crypto_assets.definitions"]
    log = open(log_path, "ab")
    try:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, env=env)
    finally:
        log.close()  # the child has its own descriptor
    return proc, port


def stop_group(proc: subprocess.Popen, sigint_wait: float = 20.0) -> str:
    """SIGINT, then SIGTERM, then SIGKILL to the process group; returns the last signal it took."""
    try:
        pgid = os.getpgid(proc.pid)
    except ProcessLookupError:
        return "already exited"
    used = "already exited"
    for sig, wait in ((signal.SIGINT, sigint_wait), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)  # also reaches children left behind by an exited leader
        except ProcessLookupError:
            return used
        used = sig.name
        try:
            proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:  # the leader is gone: wait for the rest of the group
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return used
            time.sleep(0.2)
    return used


# ----------------------------------------------------------------------------- ticks
def tick_bytes(coin, price: float, volume: float, ts: datetime, source: str = "bench") -> bytes:
    import orjson

    from crypto_assets.kafka.tick_contract import make_tick

    return orjson.dumps(make_tick(source=source, coin_id=coin.coin_id, symbol=coin.symbol, price_usd=price,
                                  last_updated_at=ts, market_cap_usd=price * coin.ref_volume * 30 / coin.ref_price,
                                  volume_24h_usd=volume, change_24h_pct=0.0, change_7d_pct=0.0, ingestion_timestamp=ts))


class Walk:
    """Random-walk prices per coin, starting where a history ended (one step = 1/rate s per tick)."""

    def __init__(self, coin_ids: list[str], prices: list[float], volumes: list[float], seed: int) -> None:
        from crypto_assets.kafka.tick_contract import COINS_BY_ID

        self.coins = [COINS_BY_ID[c] for c in coin_ids]
        self.price, self.volume = list(prices), list(volumes)
        self.rng = random.Random(seed)

    def step(self, i: int, dt_s: float) -> tuple[object, float, float]:
        k = i % len(self.coins)
        c = self.coins[k]
        self.price[k] *= math.exp(c.annual_vol * math.sqrt(dt_s / (365 * 24 * 3600)) * self.rng.gauss(0, 1))
        self.volume[k] *= math.exp(0.001 * self.rng.gauss(0, 1))
        return c, self.price[k], self.volume[k]


@dataclass
class Sample:
    coin_id: str
    ms: int  # event time, epoch ms
    produced: float  # wall time just before produce()
    visible: float | None = None


class Producer(threading.Thread):
    """Contract ticks at `rate` msg/s round-robin over the coins, event time = wall clock (ms,
    strictly increasing); every `sample_every`th tick is a Sample."""

    def __init__(self, kafka, walk: Walk, rate: float, sample_every: int) -> None:
        super().__init__(name="bench-producer", daemon=True)
        from crypto_assets.kafka.producer import TickProducer

        self.tp = TickProducer(kafka)
        self.walk, self.rate, self.sample_every = walk, rate, max(1, sample_every)
        self.samples: list[Sample] = []
        self.stop_event = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            interval, nxt, last_ms, i = 1.0 / self.rate, time.monotonic(), 0, 0
            dt_coin = len(self.walk.coins) / self.rate
            while not self.stop_event.is_set():
                now = time.monotonic()
                if now < nxt:
                    self.tp._producer.poll(min(nxt - now, 0.05))  # serve delivery reports while pacing
                    continue
                ms = max(int(time.time() * 1000), last_ms + 1)
                last_ms = ms
                coin, price, vol = self.walk.step(i, dt_coin)
                value = tick_bytes(coin, price, vol, datetime.fromtimestamp(ms / 1000, timezone.utc))
                if i % self.sample_every == 0:
                    self.samples.append(Sample(coin.coin_id, ms, time.time()))
                self.tp.send_raw(coin.coin_id, value)
                self.sent += 1
                i += 1
                nxt += interval
                if nxt < now - 1.0:  # fell behind by more than a second: do not burst
                    nxt = now
            self.tp.flush(10.0)
        except BaseException as exc:  # surfaced by the main thread
            self.error = exc


class Poller:
    """Read-only looks for pending samples in market_features: a connection lives for one range
    query and is closed at once; a file locked by a step is retried after 0.1 s."""

    def __init__(self, db_path: Path, interval: float = 0.5) -> None:
        self.db_path, self.interval = db_path, interval
        self.polls = self.lock_fail = self.other_fail = 0
        self.next_at = 0.0

    def poll(self, pending: dict[tuple[str, int], Sample]) -> int:
        import duckdb

        now = time.time()
        if not pending or now < self.next_at:
            return 0
        try:
            con = duckdb.connect(str(self.db_path), read_only=True, config={"threads": 1})
        except duckdb.Error as exc:
            locked = "lock" in str(exc).lower()
            self.lock_fail += locked
            self.other_fail += not locked
            self.next_at = time.time() + (0.1 if locked else self.interval)
            return 0
        t_vis = time.time()
        lo, hi = min(k[1] for k in pending), max(k[1] for k in pending)
        try:
            rows = con.execute("SELECT coin_id, epoch_ms(event_time) FROM market_features "
                               "WHERE event_time >= make_timestamp(? * 1000)::TIMESTAMPTZ "
                               "AND event_time <= make_timestamp(? * 1000)::TIMESTAMPTZ", [lo, hi]).fetchall()
        except duckdb.Error:
            self.other_fail += 1
            rows = []
        finally:
            con.close()
        self.polls += 1
        self.next_at = t_vis + self.interval
        found = 0
        for coin, ms in rows:
            s = pending.pop((coin, int(ms)), None)
            if s is not None:
                s.visible = t_vis
                found += 1
        return found


# ----------------------------------------------------------------------------- Dagster runs
@dataclass
class RunStats:
    run_id: str
    job: str
    status: str
    start: float | None
    end: float | None
    steps: dict[str, float] = field(default_factory=dict)  # step_key -> STEP_START..STEP_SUCCESS/FAILURE (s)
    assets: dict[str, float] = field(default_factory=dict)  # asset -> materialization metadata duration_s
    checks: dict[str, float] = field(default_factory=dict)  # asset:check -> check metadata duration_s
    check_steps: set[str] = field(default_factory=set)  # steps that evaluated checks and materialized nothing
    passes: int = 1  # micro-batch passes of a draining incremental run (materialization metadata "passes")

    @property
    def duration(self) -> float:
        return self.end - self.start if self.start is not None and self.end is not None else math.nan

    @property
    def busy_per_pass(self) -> float:  # compute (assets + checks) per pass: a drain lasts its drain time anyway
        return (sum(self.assets.values()) + sum(self.checks.values())) / self.passes if self.assets else math.nan

    @property
    def check_time(self) -> float:
        """Check metadata duration_s where checks carry it, else the time of the check-only steps."""
        if self.checks:
            return sum(self.checks.values())
        return sum(self.steps.get(k, 0.0) for k in self.check_steps) if self.check_steps else math.nan


def _seconds(v) -> float | None:
    v = getattr(v, "value", v)
    return float(v) if isinstance(v, (int, float)) else None


def run_stats(instance, run_id: str) -> RunStats:
    """Per-step and per-asset/check timings of one run from its event log."""
    import dagster as dg

    E = dg.DagsterEventType
    run = instance.get_run_by_id(run_id)
    rs = RunStats(run_id, run.job_name, run.status.value, None, None)
    starts: dict[str, float] = {}
    materialized: set[str] = set()
    checked: set[str] = set()
    types = {E.RUN_START, E.RUN_SUCCESS, E.RUN_FAILURE, E.RUN_CANCELED, E.STEP_START, E.STEP_SUCCESS, E.STEP_FAILURE,
             E.ASSET_MATERIALIZATION, E.ASSET_CHECK_EVALUATION}
    for rec in instance.get_records_for_run(run_id, of_type=types, limit=100_000).records:
        e = rec.event_log_entry
        t = e.dagster_event.event_type
        if t == E.RUN_START:
            rs.start = e.timestamp
        elif t in (E.RUN_SUCCESS, E.RUN_FAILURE, E.RUN_CANCELED):
            rs.end = e.timestamp
        elif t == E.STEP_START:
            starts[e.step_key] = e.timestamp
        elif t in (E.STEP_SUCCESS, E.STEP_FAILURE) and e.step_key in starts:
            rs.steps[e.step_key] = e.timestamp - starts[e.step_key]
        elif t == E.ASSET_MATERIALIZATION:
            materialized.add(e.step_key)
            m = e.asset_materialization
            d = _seconds(m.metadata.get("duration_s")) if m else None
            if d is not None:
                rs.assets[m.asset_key.to_user_string()] = d
            p = _seconds(m.metadata.get("passes")) if m else None
            if p:
                rs.passes = max(rs.passes, int(p))
        elif t == E.ASSET_CHECK_EVALUATION:
            checked.add(e.step_key)
            c = e.asset_check_evaluation
            d = _seconds(c.metadata.get("duration_s")) if c else None
            if d is not None:
                rs.checks[f"{c.asset_check_key.asset_key.to_user_string()}:{c.asset_check_key.name}"] = d
    rs.check_steps = checked - materialized
    return rs
