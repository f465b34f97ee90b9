"""Sending simulated trades (trades.py) beside or instead of the ticks: `TradeEmitter` writes a
step's trades and their injected bad messages through the run's chunked sender, and
`run_live_steps` is the live loop of the `trades` and `both` modes.

Ticks of step s and the trades between steps s-1 and s are sent together, trades first, so both
topics advance in event-time order. The live loop paces whole steps against the wall clock (one
wait per step, never per trade): trades-only steps are `LIVE_TRADE_STEP_S` long, in `both` mode a
step is one tick per coin at `rate` ticks per second.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from crypto_assets.kafka.tick_contract import iso_utc
from crypto_assets.producers.simulator.config import SimulatorConfig
from crypto_assets.producers.simulator.messages import TickRows, iso_many, price_decimals
from crypto_assets.producers.simulator.prices import MarketSimulator
from crypto_assets.producers.simulator.trade_bad_messages import TRADE_BAD_KINDS, TradeBadInjector
from crypto_assets.producers.simulator.trades import TradeBatch, TradeTape

LIVE_TRADE_STEP_S = 1.0


class TradeEmitter:
    """One batch's trades, sent step by step through `sender` (run._Sender)."""

    def __init__(self, tape: TradeTape, bad: TradeBadInjector, sender: Any, full: Callable[[], bool]) -> None:
        self.tape, self.bad, self.sender, self.full = tape, bad, sender, full
        self._msgs: list[dict] = []
        self._keys: list[bytes] = []
        self._counts: list[int] | None = None
        self._ends: list[int] = []
        self._pos = 0

    def load(self, trades: TradeBatch, step_times: np.ndarray, received: datetime | None) -> None:
        """Take the trades of a batch whose steps are at `step_times` (epoch seconds)."""
        self._msgs = self.tape.messages(trades, received)
        self._keys = [self.tape.keys[j] for j in trades.coin.tolist()]
        self._counts = self.bad.counts(len(trades))
        step_us = np.round(np.asarray(step_times) * 1e6).astype(np.int64)
        self._ends = np.searchsorted(trades.time_us, step_us, side="right").tolist()
        self._ends[-1] = len(trades)
        self._pos = 0

    def step(self, s: int) -> bool:
        """Send the trades up to step `s`; False when the run's message limit is reached."""
        end = self._ends[s]
        for i in range(self._pos, end):
            if self.full():
                return False
            msg = self._msgs[i]
            self.sender.trade(self._keys[i], msg)
            self._pos = i + 1
            if self._counts is not None:
                self.bad.recent.append(msg)
                for _ in range(self._counts[i]):
                    if self.full():
                        return False
                    self.sender.bad_trade(*self.bad.next(msg))
        return True


def trade_counters(kafka: Any, tape: TradeTape) -> dict[str, Any]:
    """The trade entries of run_simulator's counters."""
    return {
        "trades_sent": 0,
        "trade_bad_sent": {k: 0 for k in TRADE_BAD_KINDS},
        "trade_bad_total": 0,
        "trades_topic": kafka.trades_topic,
        "products": list(tape.products),
    }


def run_live_steps(
    config: SimulatorConfig,
    sim: MarketSimulator,
    tape: TradeTape,
    trades: TradeEmitter,
    emit_ticks: Callable[[list[dict], list[int] | None, int], bool] | None,
    bad_counts: Callable[[int], list[int] | None],
    counters: dict,
    done: Callable[[], bool],
    stop_event: threading.Event | None,
    last_sim_t: float | None,
    log: Callable[[str], Any],
) -> None:
    """Live `trades`/`both`: steps at the wall clock, each sending the trades since the previous
    step and (both) one tick per coin stamped with the step's time."""
    coins = sim.coins
    c = len(coins)
    rate = float(config.rate or 0.0)
    dt = c / rate if emit_ticks is not None and rate > 0 else LIVE_TRADE_STEP_S
    batch_steps = max(1, math.ceil(0.5 / dt))
    sim_t = (last_sim_t + dt) if last_sim_t is not None else time.time()
    decimals = price_decimals(coins)
    log(f"simulator: live trades at {config.trade_rate:g}/s per product for {c} products -> {counters['trades_topic']}"
        + (f", ticks at {rate:g} msgs/s -> {counters['topic']}" if emit_ticks is not None else ""))
    while not done():
        times = sim_t + dt * np.arange(batch_steps)
        sim_t = float(times[-1]) + dt
        batch = sim.advance(times, dt)
        trades.load(tape.advance(batch), times, None)  # received_at = trade time: sent at its step
        rows = TickRows(batch, coins, decimals, config.source) if emit_ticks is not None else None
        counts = bad_counts(batch_steps * c) if emit_ticks is not None else None
        stamps = iso_many(times)
        for s, ts in enumerate(stamps):
            delay = float(times[s]) - time.time()
            if delay > 0:
                if stop_event is not None:
                    if stop_event.wait(delay):
                        return
                else:
                    time.sleep(delay)
            if counters["first_event_time"] is None:
                counters["first_event_time"] = ts
            counters["last_event_time"] = ts
            if not trades.step(s):
                return
            if rows is not None and emit_ticks is not None:
                if not emit_ticks(rows.step(s, ts, iso_utc(datetime.now(UTC))), counts, s * c):
                    return
            if done():
                return
