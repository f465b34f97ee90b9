"""The simulator's trade mode: exchange trades (kafka/trade_contract.py) on the SAME price path as
the simulated ticks, so trade candles and CoinGecko-style ticks agree.

Between two consecutive steps of the path (t0, log p0) -> (t1, log p1) of a coin, trades arrive
as a **Poisson process** (`trade_rate` per second, times the path's volume relative to the coin's
reference volume when `trade_follow_volume`, so a volume spike brings more trades). Their mid
price is a **Brownian bridge** from log p0 to log p1 with the coin's diffusion volatility, so a
1-minute candle gets a real body (the path's move) and wicks (the excursions within the minute);
the taker pays half a spread (`SPREAD_BPS`): buys print above the mid, sells below. Taker sides
are buy with probability (1 + `trade_imbalance`) / 2; notionals are **log-normal** around
`trade_size_usd`. Prices are rounded to the coin's tick decimals, sizes to 8 decimals, and both
travel as exact decimal strings.

Products are `<SYMBOL>-USD` on exchange `simulator`. Trade ids rise by one per product; the first
is the run's first step time in epoch milliseconds, so a later run continues above an earlier one
(while a product trades less than 1,000 times a second) instead of reusing its ids.

Everything is numpy over a whole batch of steps; only the final `make_trade` dict is per trade.
The draws come from streams of their own (seeded from `SimulatorConfig.seed`), never from the
ones the path uses, so adding trades leaves the ticks unchanged, and each ingredient is drawn in
(step, coin) order, so the trades do not depend on how the steps are batched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from crypto_assets.kafka.tick_contract import Coin
from crypto_assets.kafka.trade_contract import make_trade, trade_key
from crypto_assets.producers.simulator.config import SimulatorConfig, epoch_seconds, step_seconds
from crypto_assets.producers.simulator.messages import history_batches, price_decimals
from crypto_assets.producers.simulator.prices import MarketSimulator, PathBatch

TRADE_EXCHANGE = "simulator"
SPREAD_BPS = 2.0  # full bid-ask spread; the taker pays half of it
SIZE_LOG_STD = 1.0  # of the log notional
SIZE_DECIMALS = 8
TRADE_STREAMS = (
    "counts", "times", "bridge", "bridge_end", "sides", "sizes", "bad_counts", "bad_kinds", "bad_content",
)
_STREAM_TAG = 0x7472616465  # "trade": the trade streams' seed entropy is (seed, tag), apart from the path's


def product_for(coin: Coin) -> str:
    """The simulator's product id of a coin: `BTC-USD`."""
    return f"{coin.symbol.upper()}-USD"


@dataclass
class TradeBatch:
    """Trades of a batch of steps in send order (time, then coin), as numpy arrays."""

    coin: np.ndarray  # (m,) index into the tape's coins
    time_us: np.ndarray  # (m,) int64 epoch microseconds
    trade_id: np.ndarray  # (m,) int64
    price: np.ndarray  # (m,) float, rounded to the coin's decimals
    size: np.ndarray  # (m,) float, rounded to SIZE_DECIMALS
    buy: np.ndarray  # (m,) bool: the taker bought

    def __len__(self) -> int:
        return len(self.time_us)

    def slice(self, lo: int, hi: int) -> TradeBatch:
        return TradeBatch(self.coin[lo:hi], self.time_us[lo:hi], self.trade_id[lo:hi], self.price[lo:hi],
                          self.size[lo:hi], self.buy[lo:hi])


class TradeTape:
    """Stateful trade generator: `advance(batch)` returns the trades up to the batch's last step."""

    def __init__(self, sim: MarketSimulator, config: SimulatorConfig, since: float | None = None) -> None:
        self.coins = sim.coins
        self.sigma = sim.sigma  # diffusion volatility per sqrt(second), per coin
        self.ref_volume = np.array([k.ref_volume for k in self.coins])
        self.products = [product_for(k) for k in self.coins]
        self.keys = [trade_key(TRADE_EXCHANGE, p).encode() for p in self.products]
        decimals = price_decimals(self.coins)
        self.scale = 10.0 ** np.array(decimals, dtype=float)
        self.price_formats = [f"%.{d}f" for d in decimals]
        self.rate = float(config.trade_rate)
        self.buy_p = (1.0 + float(config.trade_imbalance)) / 2.0
        self.size_usd = float(config.trade_size_usd)
        self.follow_volume = bool(config.trade_follow_volume)
        self.since = since  # no trades at or before this time (history mode's trade_window)
        seqs = np.random.SeedSequence([int(config.seed), _STREAM_TAG]).spawn(len(TRADE_STREAMS))
        self.rng = {name: np.random.default_rng(s) for name, s in zip(TRADE_STREAMS, seqs, strict=True)}
        self.next_id: np.ndarray | None = None
        self._t: float | None = None
        self._lp: np.ndarray | None = None

    def advance(self, batch: PathBatch) -> TradeBatch:
        """The trades between the previous step and each step of `batch` (the first step of a
        tape only anchors the path)."""
        times = np.asarray(batch.times, dtype=float)
        lp = np.log(batch.price)
        if self._t is None or self._lp is None:
            t0, lp0 = times[:-1], lp[:-1]
            t1, lp1, vol = times[1:], lp[1:], batch.volume_24h[1:]
            self.next_id = np.full(len(self.coins), int(times[0] * 1000), dtype=np.int64)
        else:
            t0, lp0 = np.concatenate([[self._t], times[:-1]]), np.vstack([self._lp, lp[:-1]])
            t1, lp1, vol = times, lp, batch.volume_24h
        self._t, self._lp = float(times[-1]), lp[-1].copy()
        return self._between(t0, t1, lp0, lp1, vol)

    def _between(self, t0: np.ndarray, t1: np.ndarray, lp0: np.ndarray, lp1: np.ndarray,
                 vol: np.ndarray) -> TradeBatch:
        rng, c = self.rng, len(self.coins)
        n = len(t0)
        dt = t1 - t0
        lam = self.rate * dt[:, None] * (vol / self.ref_volume if self.follow_volume else np.ones((n, c)))
        if self.since is not None:
            lam = np.where((t1 <= self.since)[:, None], 0.0, lam)
        counts = rng["counts"].poisson(lam).ravel()  # segment s = step k * c + coin j
        m = int(counts.sum())
        seg = np.repeat(np.arange(n * c), counts)
        k, j = seg // c, seg % c
        # arrival offsets within the step, sorted within each segment (seg is already sorted)
        offset = (rng["times"].random(m) * dt[k])
        offset = offset[np.lexsort((offset, seg))]
        # Brownian bridge from 0 at t0 to 0 at t1 through the sorted offsets
        first = np.r_[True, seg[1:] != seg[:-1]] if m else np.zeros(0, dtype=bool)
        prev = np.where(first, 0.0, np.r_[0.0, offset[:-1]])
        inc = self.sigma[j] * np.sqrt(np.maximum(offset - prev, 0.0)) * rng["bridge"].standard_normal(m)
        walk = np.cumsum(inc)
        start_idx = (np.cumsum(counts) - counts)[seg]
        walk = walk - (walk[start_idx] - inc[start_idx])
        nonempty = np.flatnonzero(counts)
        last = np.cumsum(counts)[nonempty] - 1
        ks, js = nonempty // c, nonempty % c
        end = walk[last] + self.sigma[js] * np.sqrt(np.maximum(dt[ks] - offset[last], 0.0)) * (
            rng["bridge_end"].standard_normal(len(nonempty))
        )
        end_of = np.zeros(n * c)
        end_of[nonempty] = end
        frac = offset / np.where(dt[k] > 0, dt[k], 1.0)
        log_mid = lp0[k, j] + frac * (lp1[k, j] - lp0[k, j]) + walk - frac * end_of[seg]

        buy = rng["sides"].random(m) < self.buy_p
        price = np.exp(log_mid) * (1.0 + np.where(buy, 0.5, -0.5) * SPREAD_BPS * 1e-4)
        price = np.maximum(np.round(price * self.scale[j]), 1.0) / self.scale[j]
        notional = self.size_usd * np.exp(SIZE_LOG_STD * rng["sizes"].standard_normal(m))
        size = np.maximum(np.round(notional / price, SIZE_DECIMALS), 10.0**-SIZE_DECIMALS)
        time_us = np.round((t0[k] + offset) * 1e6).astype(np.int64)

        # ids per product in time order (the current order), then send in time order over products
        per_coin = np.bincount(j, minlength=c)
        by_coin = np.argsort(j, kind="stable")
        rank = np.empty(m, dtype=np.int64)
        rank[by_coin] = np.arange(m) - np.repeat(np.cumsum(per_coin) - per_coin, per_coin)
        assert self.next_id is not None
        ids = self.next_id[j] + rank
        self.next_id = self.next_id + per_coin
        order = np.lexsort((j, time_us))
        return TradeBatch(j[order], time_us[order], ids[order], price[order], size[order], buy[order])

    def messages(self, trades: TradeBatch, received: datetime | None = None) -> list[dict]:
        """Contract messages (dicts) of `trades`; received_at = `received`, else the trade time."""
        times = trades.time_us.astype("datetime64[us]").tolist()
        fmt, products = self.price_formats, self.products
        size_fmt = f"%.{SIZE_DECIMALS}f"
        return [
            make_trade(exchange=TRADE_EXCHANGE, product=products[j], trade_id=tid, price=fmt[j] % p,
                       size=size_fmt % s, side="buy" if b else "sell", trade_time=t,
                       received_at=received or t, origin="simulator")
            for j, t, tid, p, s, b in zip(trades.coin.tolist(), times, trades.trade_id.tolist(),
                                          trades.price.tolist(), trades.size.tolist(), trades.buy.tolist(),
                                          strict=True)
        ]


def trade_window_start(config: SimulatorConfig, end_t: float) -> float | None:
    """History mode: the time after which trades are generated (None: the whole window)."""
    return None if config.trade_window is None else end_t - config.trade_window.total_seconds()


def generate_trades(
    config: SimulatorConfig,
    n_steps: int,
    start: datetime,
    step: timedelta | float | str,
    batch_steps: int = 4096,
    coins: Sequence[Coin] | None = None,
) -> list[dict]:
    """The valid trades (contract dicts, send order) a history run of `n_steps` steps from
    `start` writes, without Kafka; received_at = trade_time, so they depend only on the
    arguments."""
    coins = tuple(coins) if coins is not None else config.resolved_coins()
    sim = MarketSimulator(coins, config.seed)
    dt = step_seconds(step)
    start_t = epoch_seconds(start)
    tape = TradeTape(sim, config, since=trade_window_start(config, start_t + dt * (n_steps - 1)))
    out: list[dict] = []
    for batch in history_batches(sim, start_t, dt, n_steps, batch_steps):
        out.extend(tape.messages(tape.advance(batch)))
    return out
