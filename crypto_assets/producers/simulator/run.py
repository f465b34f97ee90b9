"""Sending a simulation to Kafka: `run_simulator` (history and live modes) and its chunked
sender.

Modes of `run_simulator`:

* **history** (`SimulatorConfig.history` set, e.g. 7 days, with `interval`, e.g. 60 s): for each
  coin one tick per interval over the past window ending now (or starting at `start_time`),
  sent in event-time order as fast as the broker takes them (>= 50k msgs/s on one core);
  with `follow=True` the same paths then continue live.
* **live**: `rate` messages per second with event time = now, `count` messages in total or
  until `stop_event` is set.

Malformed messages are mixed in by `bad_messages.BadInjector` (see `SimulatorConfig.bad_ratio`).

`SimulatorConfig.mode` picks what is written: `ticks` (the raw topic), `trades` (exchange trades
on the trades topic, trades.py) or `both`, from one price path; trade_run.py sends the trades.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from crypto_assets.kafka.tick_contract import iso_utc
from crypto_assets.producers.simulator.bad_messages import BAD_KINDS, BadInjector
from crypto_assets.producers.simulator.config import SimulatorConfig, epoch_seconds
from crypto_assets.producers.simulator.messages import TickRows, history_batches, iso_many, price_decimals
from crypto_assets.producers.simulator.prices import MarketSimulator
from crypto_assets.producers.simulator.trade_bad_messages import TradeBadInjector
from crypto_assets.producers.simulator.trade_run import TradeEmitter, run_live_steps, trade_counters
from crypto_assets.producers.simulator.trades import TradeTape, trade_window_start

if TYPE_CHECKING:
    from crypto_assets.resources.kafka import KafkaResource


class _Sender:
    """Counts messages, flushes every `chunk_size` and calls the chunk callback."""

    def __init__(
        self,
        producer: Any,
        chunk_size: int,
        callback: Callable[[dict], None] | None,
        counters: dict,
        log: Callable[[str], Any],
        trade_producer: Any = None,
    ) -> None:
        self.producer = producer
        self.trade_producer = trade_producer
        self.chunk_size = max(1, int(chunk_size))
        self.callback = callback
        self.counters = counters
        self.in_chunk = 0
        self.log = log
        self.t0 = time.monotonic()

    def end_chunk(self) -> None:
        if not self.in_chunk:
            return
        self.producer.flush()
        if self.trade_producer is not None:
            self.trade_producer.flush()
        self.in_chunk = 0
        self.counters["chunks"] += 1
        elapsed = time.monotonic() - self.t0
        self.counters["elapsed_s"] = round(elapsed, 3)
        self.counters["rate_msgs_s"] = round(self.counters["sent"] / elapsed, 1) if elapsed > 0 else 0.0
        if self.callback is not None:
            self.callback(dict(self.counters, bad_sent=dict(self.counters["bad_sent"])))

    def tick(self, tick: dict) -> None:
        if self.in_chunk >= self.chunk_size:
            self.end_chunk()
        self.producer.send(tick)
        self.in_chunk += 1
        self.counters["sent"] += 1
        self.counters["valid_sent"] += 1

    def bad(self, kind: str, key: bytes, value: bytes) -> None:
        if self.in_chunk >= self.chunk_size:
            self.end_chunk()
        self.producer.send_raw(key, value)
        self.in_chunk += 1
        self.counters["sent"] += 1
        self.counters["bad_sent"][kind] += 1
        self.counters["bad_total"] += 1

    def _room(self) -> None:
        if self.in_chunk >= self.chunk_size:
            self.end_chunk()
        self.in_chunk += 1
        self.counters["sent"] += 1

    def trade(self, key: bytes, trade: dict) -> None:
        self._room()
        self.trade_producer.send_raw(key, orjson.dumps(trade))
        self.counters["trades_sent"] += 1

    def bad_trade(self, kind: str, key: bytes, value: bytes) -> None:
        self._room()
        self.trade_producer.send_raw(key, value)
        self.counters["trade_bad_sent"][kind] += 1
        self.counters["trade_bad_total"] += 1


def _history_start(config: SimulatorConfig, n_steps: int, dt: float) -> float:
    if config.start_time is not None:
        return epoch_seconds(config.start_time)
    end = math.floor(time.time() / dt) * dt
    return end - (n_steps - 1) * dt


def run_simulator(
    kafka: KafkaResource,
    config: SimulatorConfig,
    stop_event: threading.Event | None = None,
    log: Callable[[str], Any] = print,
    *,
    chunk_size: int = 20_000,
    chunk_callback: Callable[[dict], None] | None = None,
) -> dict:
    """Send simulated ticks (and injected bad messages) to `kafka.raw_topic`, and/or trades to
    `kafka.trades_topic` (`config.mode`); returns counters.

    Messages go through `TickProducer` (`send` for ticks, `send_raw` for bad messages and trades).
    The producers are flushed after every chunk of at most `chunk_size` messages (both topics
    together) and `chunk_callback(counters)` is called then. Use it to drain the topics between
    chunks when the broker keeps less than the whole run: the embedded broker (librdkafka mock
    cluster) retains only ~5 MB per partition and drops older messages, i.e. about 70k contract
    messages on the 4-partition raw topic, so a 7-day x 60 s x 10-coin history (100k ticks) must
    be ingested in chunks (e.g. 20,000) as it is produced, or its oldest part is lost.

    Returns {"mode", "streams", "sent", "valid_sent", "bad_sent": {kind: n}, "bad_total",
    "chunks", "elapsed_s", "rate_msgs_s", "first_event_time", "last_event_time", "topic", "coins",
    "seed", "interrupted"}; with trades also {"trades_sent", "trade_bad_sent", "trade_bad_total",
    "trades_topic", "products"}. `sent` counts every message on both topics.
    """
    from crypto_assets.kafka.producer import TickProducer

    coins = config.resolved_coins()
    c = len(coins)
    sim = MarketSimulator(coins, config.seed)
    bad = BadInjector(sim.rng, config.bad_ratio)
    decimals = price_decimals(coins)
    counters: dict[str, Any] = {
        "mode": "history" if config.history is not None else "live",
        "streams": config.mode,
        "sent": 0,
        "valid_sent": 0,
        "bad_sent": {k: 0 for k in BAD_KINDS},
        "bad_total": 0,
        "chunks": 0,
        "elapsed_s": 0.0,
        "rate_msgs_s": 0.0,
        "first_event_time": None,
        "last_event_time": None,
        "topic": kafka.raw_topic,
        "coins": [k.coin_id for k in coins],
        "seed": config.seed,
        "interrupted": False,
    }
    limit = config.count
    stopped = (lambda: stop_event.is_set()) if stop_event is not None else (lambda: False)
    producer = TickProducer(kafka)  # idempotent, acks=all; flush raises if Kafka refuses
    trade_producer = TickProducer(kafka, topic=kafka.trades_topic) if config.trades else None
    sender = _Sender(producer, chunk_size, chunk_callback, counters, log, trade_producer)
    t0 = time.monotonic()

    def full() -> bool:
        return limit is not None and counters["sent"] >= limit

    def done() -> bool:
        return full() or stopped()

    def emit(ticks: list[dict], counts: list[int] | None, offset: int) -> bool:
        """Send one step's ticks; False when the run must stop."""
        for i, tick in enumerate(ticks):
            if full():
                return False
            sender.tick(tick)
            if counts is not None:
                bad.recent.append(tick)
                for _ in range(counts[offset + i]):
                    if full():
                        return False
                    sender.bad(*bad.next(tick))
        return True

    tape: TradeTape | None = None
    trades: TradeEmitter | None = None
    dt = config.interval.total_seconds()
    n_steps = int(config.history.total_seconds() // dt) if config.history is not None else 0
    start_t = _history_start(config, n_steps, dt) if config.history is not None else 0.0
    if config.trades:
        since = trade_window_start(config, start_t + dt * (n_steps - 1)) if config.history is not None else None
        tape = TradeTape(sim, config, since=since)
        trades = TradeEmitter(tape, TradeBadInjector(tape.rng, config.trade_bad_ratio), sender, full)
        counters.update(trade_counters(kafka, tape))
    last_sim_t: float | None = None
    try:
        if config.history is not None:
            batch_steps = max(1, chunk_size // c)
            if config.trades:  # keep a batch's trades within about one chunk
                batch_steps = max(1, min(batch_steps, int(chunk_size / (c * config.trade_rate * dt))))
            log(
                f"simulator: history {config.history} every {config.interval} for {c} coins "
                f"({n_steps * c} ticks, bad_ratio={config.bad_ratio}, mode={config.mode}) -> "
                + ", ".join(t for t, on in ((kafka.raw_topic, config.ticks), (kafka.trades_topic, config.trades)) if on)
            )
            going = True
            for batch in history_batches(sim, start_t, dt, n_steps, batch_steps):
                if not going or done():
                    break
                rows = TickRows(batch, coins, decimals, config.source) if config.ticks else None
                now = datetime.now(UTC)
                ingested = iso_utc(now)
                stamps = iso_many(batch.times)
                counts = bad.counts(len(batch) * c) if config.ticks else None
                if tape is not None and trades is not None:
                    trades.load(tape.advance(batch), batch.times, now)
                if counters["first_event_time"] is None:
                    counters["first_event_time"] = stamps[0]
                for s, ts in enumerate(stamps):
                    counters["last_event_time"] = ts
                    if (trades is not None and not trades.step(s)) or (
                        rows is not None and not emit(rows.step(s, ts, ingested), counts, s * c)
                    ) or stopped():
                        going = False
                        break
                last_sim_t = float(batch.times[-1])
                elapsed = time.monotonic() - t0
                log(
                    f"simulator: {counters['sent']} msgs up to {counters['last_event_time']} "
                    f"({counters['sent'] / max(elapsed, 1e-9):,.0f} msgs/s)"
                )
        if (config.history is None or config.follow) and not done():
            counters["mode"] = "live" if config.history is None else "history+live"
            if tape is not None and trades is not None:
                run_live_steps(config, sim, tape, trades, emit if config.ticks else None, bad.counts, counters,
                               done, stop_event, last_sim_t, log)
            else:
                _run_live(config, sim, coins, decimals, bad, counters, emit, done, stop_event, last_sim_t, log)
    except KeyboardInterrupt:
        counters["interrupted"] = True
    except BaseException:
        for p in (producer, trade_producer):
            if p is not None:
                p.__exit__(*sys.exc_info())  # best-effort flush; the error is what matters
        raise
    sender.end_chunk()  # flushes (raises BrokerUnavailable if Kafka did not take everything)
    producer.flush()
    if trade_producer is not None:
        trade_producer.flush()
    elapsed = time.monotonic() - t0
    counters["elapsed_s"] = round(elapsed, 3)
    counters["rate_msgs_s"] = round(counters["sent"] / elapsed, 1) if elapsed > 0 else 0.0
    trade_note = (f" incl. {counters['trades_sent']} trades ({counters['trade_bad_total']} malformed) to "
                  f"{kafka.trades_topic}") if config.trades else ""
    log(
        f"simulator: sent {counters['sent']} messages ({counters['bad_total']} malformed) to "
        f"{kafka.raw_topic}{trade_note} in {counters['elapsed_s']:.2f}s ({counters['rate_msgs_s']:,.0f} msgs/s)"
    )
    return counters


def _run_live(config, sim, coins, decimals, bad, counters, emit, done, stop_event, last_sim_t, log) -> None:
    c = len(coins)
    rate = float(config.rate or 0.0)
    dt = c / rate if rate > 0 else 1.0
    batch_steps = max(1, math.ceil(rate * 0.5 / c)) if rate > 0 else 256
    sim_t = (last_sim_t + dt) if last_sim_t is not None else time.time()
    log(f"simulator: live at {rate:g} msgs/s for {c} coins -> {counters['topic']}")
    start_sent = counters["sent"]
    t0 = time.monotonic()
    last_ms = 0
    while not done():
        times = sim_t + dt * np.arange(batch_steps)
        sim_t = float(times[-1]) + dt
        batch = sim.advance(times, dt)
        rows = TickRows(batch, coins, decimals, config.source)
        counts = bad.counts(batch_steps * c)
        for s in range(batch_steps):
            if rate > 0:
                delay = t0 + (counters["sent"] - start_sent) / rate - time.monotonic()
                if delay > 0:
                    if stop_event is not None:
                        if stop_event.wait(delay):
                            return
                    else:
                        time.sleep(delay)
            now_ms = max(int(time.time() * 1000), last_ms + 1)
            last_ms = now_ms
            ts = iso_utc(datetime.fromtimestamp(now_ms / 1000, tz=UTC))
            if counters["first_event_time"] is None:
                counters["first_event_time"] = ts
            counters["last_event_time"] = ts
            if not emit(rows.step(s, ts, ts), counts, s * c):
                return
            if done():
                return
