"""Load and freshness for the live benches (freshness.py, soak.py): a thread producing contract
ticks at a fixed rate through the package's TickProducer, every Nth one kept as a Sample, and a
read-only poller that stamps a sample VISIBLE when its row is in market_features."""

from __future__ import annotations

import gc
import math
import random
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crypto_assets.kafka.tick_contract import Coin

TickFn = Callable[[int, int], tuple[str, bytes]]  # (tick number, event time in epoch ms) -> (key, value)


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

    def step(self, i: int, dt_s: float) -> tuple[Coin, float, float]:
        k = i % len(self.coins)
        c = self.coins[k]
        self.price[k] *= math.exp(c.annual_vol * math.sqrt(dt_s / (365 * 24 * 3600)) * self.rng.gauss(0, 1))
        self.volume[k] *= math.exp(0.001 * self.rng.gauss(0, 1))
        return c, self.price[k], self.volume[k]


def walk_ticks(walk: Walk, rate: float) -> TickFn:
    """Ticks continuing `walk` round-robin over its coins at `rate` msg/s, event time = ms."""
    dt_coin = len(walk.coins) / rate

    def tick(i: int, ms: int) -> tuple[str, bytes]:
        coin, price, vol = walk.step(i, dt_coin)
        return coin.coin_id, tick_bytes(coin, price, vol, datetime.fromtimestamp(ms / 1000, UTC))

    return tick


@dataclass
class Sample:
    coin_id: str
    ms: int  # event time, epoch ms
    produced: float  # wall time just before produce()
    acked: float | None = None  # delivery report (with track_acks)
    visible: float | None = None
    phase: str = "warmup"  # the producer's phase when it was produced (freshness.py)
    run_id: str | None = None  # the run that ingested it (freshness.py, after the stop)


class Producer(threading.Thread):
    """Ticks from `tick` at `rate` msg/s, event time = wall clock (ms, strictly increasing); every
    `sample_every`th tick is a Sample stamped with the current `phase`. With track_acks the
    delivery report's wall time is kept too (a callback of the package's TickProducer)."""

    def __init__(self, kafka, tick: TickFn, rate: float, sample_every: int, track_acks: bool = False) -> None:
        super().__init__(name="bench-producer", daemon=True)
        from crypto_assets.kafka.producer import TickProducer

        self.tick, self.rate, self.sample_every = tick, rate, max(1, sample_every)
        self.samples: list[Sample] = []
        self.stop_event = threading.Event()
        self.phase = "warmup"  # set by the main thread
        self.sent = 0
        self.error: BaseException | None = None
        self._acks: dict[bytes, Sample] | None = {} if track_acks else None
        self._taken = 0
        self.tp = TickProducer(kafka, on_delivery=self._on_delivery if track_acks else None)

    def _on_delivery(self, err, msg) -> None:
        if err is None and self._acks:
            s = self._acks.pop(msg.value(), None)
            if s is not None:
                s.acked = time.time()

    def run(self) -> None:
        try:
            interval, nxt, last_ms, i = 1.0 / self.rate, time.monotonic(), 0, 0
            while not self.stop_event.is_set():
                now = time.monotonic()
                if now < nxt:
                    self.tp.poll(min(nxt - now, 0.05))  # serve delivery reports while pacing
                    continue
                ms = max(int(time.time() * 1000), last_ms + 1)
                last_ms = ms
                key, value = self.tick(i, ms)
                if i % self.sample_every == 0:
                    s = Sample(key, ms, time.time(), phase=self.phase)
                    if self._acks is not None:
                        self._acks[value] = s
                    self.samples.append(s)
                    s.produced = time.time()
                self.tp.send_raw(key, value)
                self.sent += 1
                i += 1
                nxt += interval
                if nxt < now - 1.0:  # fell behind by more than a second: do not burst
                    nxt = now
            self.tp.flush(10.0)
        except BaseException as exc:  # noqa: BLE001 - surfaced by the main thread
            self.error = exc

    def move_new_samples(self, pending: dict[tuple[str, int], Sample]) -> None:
        """Samples produced since the last call into `pending`, keyed (coin_id, ms)."""
        snap = self.samples
        while self._taken < len(snap):
            s = snap[self._taken]
            pending[(s.coin_id, s.ms)] = s
            self._taken += 1


def stop_producer(producer: Producer | None) -> None:
    """Stop the thread and destroy its client before the broker goes away (no reconnect noise)."""
    if producer is None:
        return
    producer.stop_event.set()
    producer.join(15)
    del producer.tp  # the client goes with the collection below
    gc.collect()


def stack_exit(interrupted: threading.Event, proc: subprocess.Popen, producer: Producer, log_path: Path,
               name: str = "dagster dev") -> int | None:
    """The exit code once the bench must stop (130 interrupted, 1 the stack died), else None;
    a failed producer raises."""
    if interrupted.is_set():
        print("interrupted", flush=True)
        return 130
    if proc.poll() is not None:
        print(f"{name} exited with code {proc.returncode}; see {log_path}", file=sys.stderr)
        return 1
    if producer.error is not None:
        raise RuntimeError(f"producer failed: {producer.error!r}")
    return None


class Poller:
    """Read-only looks for pending samples in market_features: a connection lives for one range
    query and is closed at once; a file locked by a step is retried after 0.1 s."""

    def __init__(self, db_path: Path, interval: float = 0.5) -> None:
        self.db_path, self.interval = db_path, interval
        self.polls = self.lock_fail = self.other_fail = 0
        self.hold_ms: list[float] = []  # how long each successful connection was held
        self.next_at = 0.0

    def poll(self, pending: dict[tuple[str, int], Sample]) -> int:
        """One look; returns how many pending samples became visible (and pops them)."""
        import duckdb

        now = time.time()
        if not pending or now < self.next_at:
            return 0
        if not self.db_path.exists():
            self.next_at = now + self.interval
            return 0
        t0 = time.time()
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
        except duckdb.CatalogException:  # no market_features yet
            rows = []
        except duckdb.Error:
            self.other_fail += 1
            rows = []
        finally:
            con.close()
            self.hold_ms.append((time.time() - t0) * 1000)
        self.polls += 1
        self.next_at = t_vis + self.interval
        found = 0
        for coin, ms in rows:
            s = pending.pop((coin, int(ms)), None)
            if s is not None:
                s.visible = t_vis
                found += 1
        return found
