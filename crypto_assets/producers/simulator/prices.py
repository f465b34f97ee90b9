"""The simulated market: price and volume paths for a set of coins, as numpy arrays.

The price of each coin follows a geometric Brownian motion with

* a shared **market factor** (every coin loads `MARKET_LOADING` on one market shock, so returns
  are positively correlated, as crypto returns are);
* **Poisson jumps** (per coin and market-wide) that usually come with a volume spike;
* a **hidden drift regime** per coin and for the whole market (bear / flat / bull), a
  continuous-time Markov chain whose segments last hours, plus a short-term **momentum** term
  (an Ornstein-Uhlenbeck drift with a ~20 minute memory) - so the direction of the 15-minute-ahead
  return is partly predictable from recent returns and moving averages, and a model can beat
  the majority-class baseline (on 7 days of 1-minute ticks, the sign of the past 15-minute
  return agrees with the next 15-minute return about 59% of the time);
* a weak mean reversion of the log price towards the coin's `ref_price` (10 day time constant)
  so long runs stay at plausible levels.

`volume_24h_usd` wanders around the coin's `ref_volume` (slow log-OU + a daily cycle peaking at
15:00 UTC) and spikes to 3.5-6x for a few ticks now and then. `market_cap_usd` is the price times
a fixed circulating supply. `change_24h_pct` / `change_7d_pct` come from the simulated path and
are null until the simulation has 24 hours / 7 days of history.

Everything is generated as whole numpy arrays per batch of time steps; only the final encoding
(dict -> JSON bytes, orjson) is per message. A simulation is deterministic for a given `seed`:
each random ingredient draws from its own stream, so the valid ticks do not depend on
`bad_ratio` nor (up to float rounding) on how the steps are batched.

`MarketSimulator.advance` is the engine; `simulate_paths` returns one batch of raw paths for
analysis and tests. Turning paths into contract messages is `messages.py`'s job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np

from crypto_assets.kafka.tick_contract import Coin
from crypto_assets.producers.simulator.config import SimulatorConfig, epoch_seconds, step_seconds

DAY_S = 86_400.0
SECONDS_PER_YEAR = 365.0 * DAY_S

# ---- model parameters (documented in the module docstring) -------------------------------
MARKET_LOADING = 0.78  # weight of the shared market shock; pairwise return correlation ~ 0.6
# Drift sizes are in units of the 15-minute diffusion volatility; all components are scaled
# together (see _volatility_scale) so that the long-run volatility equals the coin's annual_vol.
TREND_SNR_15M = 0.25  # trend-regime drift over 15 min (a full-strength coin or market trend)
MOMENTUM_SNR_15M = 1.0  # stationary std of the OU momentum drift over 15 min
MOMENTUM_TAU_S = 20 * 60.0
MEAN_REVERSION_TAU_S = 10 * DAY_S
MARKET_REGIME_WEIGHT = 0.7
COIN_REGIME_WEIGHT = 0.7
# next-state probabilities for (bear, flat, bull) from each state, and mean durations
REGIME_TRANSITIONS: dict[int, tuple[float, float, float]] = {
    -1: (0.15, 0.50, 0.35),
    0: (0.50, 0.00, 0.50),
    1: (0.35, 0.50, 0.15),
}
REGIME_MEAN_DURATION_S: dict[int, float] = {-1: 3 * 3600.0, 0: 2 * 3600.0, 1: 3 * 3600.0}
REGIME_STRENGTH = (0.6, 1.4)
JUMPS_PER_DAY = 1.5  # per coin
MARKET_JUMPS_PER_DAY = 0.5
JUMP_STD_HOURLY_VOLS = 1.0  # jump size std in units of the coin's 1-hour volatility
VOLUME_SPIKES_PER_DAY = 1.5  # per coin, besides the ones jumps trigger
JUMP_VOLUME_SPIKE_PROB = 0.8
VOLUME_SPIKE_FACTOR = (3.5, 6.0)
VOLUME_SPIKE_TICKS = (3, 8)  # inclusive range of ticks a spike lasts
VOLUME_TAU_S = 6 * 3600.0
VOLUME_LOG_STD = 0.15
VOLUME_DIURNAL_AMPLITUDE = 0.12
VOLUME_PEAK_UTC_HOUR = 15.0
LEDGER_RESOLUTION_S = 60.0  # price history kept for change_24h/7d at this resolution

# Approximate circulating supply (late 2025) for market_cap = price x supply.
SUPPLY: dict[str, float] = {
    "bitcoin": 19.95e6,
    "ethereum": 120.7e6,
    "solana": 560e6,
    "cardano": 36.5e9,
    "polygon": 10.6e9,
    "chainlink": 678e6,
    "avalanche": 425e6,
    "polkadot": 1.6e9,
    "uniswap": 630e6,
    "litecoin": 76.5e6,
}

_STREAMS = (
    "noise",
    "volume",
    "jump_arrival",
    "jump_size",
    "spike_arrival",
    "spike_trigger",
    "spike_factor",
    "spike_ticks",
    "regimes",
    "bad_counts",
    "bad_kinds",
    "bad_content",
)


# ---- numerics -----------------------------------------------------------------------------


def _ar1(x: np.ndarray, a: float, y0: np.ndarray, block: int = 256) -> np.ndarray:
    """y[t] = a * y[t-1] + x[t] along axis 0 (y[-1] = y0), vectorised in blocks.

    Within a block the recursion is a lower-triangular Toeplitz matmul; only the carry between
    blocks is a (short) Python loop.
    """
    n, k = x.shape
    if n == 0:
        return x.copy()
    b = min(block, n)
    nb = -(-n // b)
    pad = nb * b - n
    xb = np.concatenate([x, np.zeros((pad, k))]) if pad else x
    xb = xb.reshape(nb, b, k)
    j = np.arange(b)
    diff = j[:, None] - j[None, :]
    lower = np.where(diff >= 0, a ** np.maximum(diff, 0).astype(float), 0.0)
    local = np.matmul(lower, xb)  # (nb, b, k)
    powers = (a ** (j + 1.0))[:, None]
    carry = np.asarray(y0, dtype=float)
    for i in range(nb):
        local[i] += powers * carry
        carry = local[i, -1]
    return local.reshape(nb * b, k)[:n]


class _RegimeChain:
    """A continuous-time Markov chain over (bear, flat, bull) with random strength per segment."""

    def __init__(self, rng: np.random.Generator, duration_scale: float = 1.0) -> None:
        self.rng = rng
        self.scale = duration_scale
        self.ends: list[float] = []
        self.values: list[float] = []
        self._state = 0

    def _segment(self, state: int, start: float) -> None:
        mean = REGIME_MEAN_DURATION_S[state] * self.scale
        duration = self.rng.exponential(mean)
        strength = self.rng.uniform(*REGIME_STRENGTH)
        self._state = state
        self.ends.append(start + duration)
        self.values.append(state * strength)

    def sample(self, times: np.ndarray) -> np.ndarray:
        if not self.ends:
            state = int(self.rng.choice((-1, 0, 1), p=(0.3, 0.4, 0.3)))
            self._segment(state, float(times[0]))
        last = float(times[-1])
        while self.ends[-1] < last:
            probs = REGIME_TRANSITIONS[self._state]
            state = int(self.rng.choice((-1, 0, 1), p=probs))
            self._segment(state, self.ends[-1])
        # forget segments that ended before this batch
        drop = int(np.searchsorted(self.ends, float(times[0]), side="left"))
        if drop:
            del self.ends[:drop]
            del self.values[:drop]
        idx = np.searchsorted(np.asarray(self.ends), times, side="left")
        return np.asarray(self.values)[idx]


@dataclass
class PathBatch:
    """Simulated values for n time steps x c coins (numpy arrays, NaN where a change is null)."""

    times: np.ndarray  # (n,) epoch seconds
    price: np.ndarray  # (n, c)
    market_cap: np.ndarray
    volume_24h: np.ndarray
    change_24h: np.ndarray
    change_7d: np.ndarray
    volume_spike: np.ndarray  # (n, c) bool: tick inside a volume spike
    jump: np.ndarray  # (n, c) bool: a price jump happened at this step
    drift: np.ndarray  # (n, c) regime drift per second (the hidden state)

    def __len__(self) -> int:
        return len(self.times)


def _volatility_scale() -> float:
    """Factor on every component so the long-run variance rate equals annual_vol**2.

    Per unit of diffusion variance rate, the model adds: the integrated OU momentum
    (2 s^2 tau), the regime drifts (renewal approximation E[(v L)^2] / E[L] per chain) and the
    jumps (rate x size^2).
    """
    mom = 2.0 * (MOMENTUM_SNR_15M**2 / 900.0) * MOMENTUM_TAU_S
    lo, hi = REGIME_STRENGTH
    strength2 = (lo * lo + lo * hi + hi * hi) / 3.0  # E[U(lo, hi)^2]
    # stationary shares of segments: flat is entered from trends half the time -> 1/3 each
    mean_len = sum(REGIME_MEAN_DURATION_S.values()) / 3.0
    trend_len = REGIME_MEAN_DURATION_S[1]
    per_chain = (2.0 / 3.0) * strength2 * 2.0 * trend_len**2 / mean_len  # seconds
    mu2 = TREND_SNR_15M**2 / 900.0
    regimes = mu2 * per_chain * (COIN_REGIME_WEIGHT**2 + MARKET_REGIME_WEIGHT**2 * 1.3)
    jumps = (JUMPS_PER_DAY + MARKET_JUMPS_PER_DAY) / DAY_S * JUMP_STD_HOURLY_VOLS**2 * 3600.0
    return 1.0 / math.sqrt(1.0 + mom + regimes + jumps)


class MarketSimulator:
    """Stateful path generator: `advance(times, dt)` continues every coin's path."""

    def __init__(self, coins: Sequence[Coin], seed: int) -> None:
        self.coins = tuple(coins)
        c = len(self.coins)
        seqs = np.random.SeedSequence(seed).spawn(len(_STREAMS))
        self.rng = {name: np.random.default_rng(s) for name, s in zip(_STREAMS, seqs, strict=True)}
        # diffusion volatility per sqrt(second); drifts and jumps are expressed relative to it
        self.sigma = (
            _volatility_scale()
            * np.array([k.annual_vol for k in self.coins])
            / math.sqrt(SECONDS_PER_YEAR)
        )
        self.mu = TREND_SNR_15M * self.sigma / math.sqrt(900.0)
        self.mom_std = MOMENTUM_SNR_15M * self.sigma / math.sqrt(900.0)
        self.jump_std = JUMP_STD_HOURLY_VOLS * self.sigma * math.sqrt(3600.0)
        self.log_ref = np.log([k.ref_price for k in self.coins])
        self.log_ref_volume = np.log([k.ref_volume for k in self.coins])
        self.supply = np.array(
            [SUPPLY.get(k.coin_id, 50.0 * k.ref_volume / k.ref_price) for k in self.coins]
        )
        # one stream per chain, so chains never interleave their draws
        chain_seqs = seqs[_STREAMS.index("regimes")].spawn(c + 1)
        self.market_chain = _RegimeChain(np.random.default_rng(chain_seqs[0]), duration_scale=1.3)
        self.coin_chains = [_RegimeChain(np.random.default_rng(s)) for s in chain_seqs[1:]]
        self.x = np.zeros(c)  # log price - log ref
        self.m = np.zeros(c)  # momentum drift
        self.v = np.zeros(c)  # volume log deviation
        self.spike_left = np.zeros(c, dtype=np.int64)
        self.spike_factor = np.ones(c)
        self._ledger_t = np.empty(0)
        self._ledger_p = np.empty((0, c))
        self._first_time: float | None = None
        self._last_bucket = -math.inf

    def _regime_drift(self, times: np.ndarray) -> np.ndarray:
        market = self.market_chain.sample(times)
        coin = np.column_stack([ch.sample(times) for ch in self.coin_chains])
        return self.mu * (MARKET_REGIME_WEIGHT * market[:, None] + COIN_REGIME_WEIGHT * coin)

    def advance(self, times: np.ndarray, dt: float) -> PathBatch:
        times = np.asarray(times, dtype=float)
        n, c = len(times), len(self.coins)
        rng = self.rng
        if self._first_time is None:
            self._first_time = float(times[0])

        noise = rng["noise"].standard_normal((n, 2 * c + 1))
        z_market, z_coin, z_mom = noise[:, :1], noise[:, 1 : c + 1], noise[:, c + 1 :]

        a_m = math.exp(-dt / MOMENTUM_TAU_S)
        m = _ar1(self.mom_std * math.sqrt(1 - a_m * a_m) * z_mom, a_m, self.m)
        drift = self._regime_drift(times)

        diffusion = self.sigma * math.sqrt(dt) * (
            MARKET_LOADING * z_market + math.sqrt(1 - MARKET_LOADING**2) * z_coin
        )

        p_jump = -np.expm1(-dt * np.array([MARKET_JUMPS_PER_DAY] + [JUMPS_PER_DAY] * c) / DAY_S)
        arrivals = rng["jump_arrival"].random((n, c + 1)) < p_jump
        sizes = np.zeros((n, c + 1))
        sizes[arrivals] = rng["jump_size"].standard_normal(int(arrivals.sum()))
        jumps = (sizes[:, :1] + sizes[:, 1:]) * self.jump_std
        jump_mask = arrivals[:, :1] | arrivals[:, 1:]

        incr = (drift + m) * dt + diffusion + jumps - 0.5 * self.sigma**2 * dt
        a_x = math.exp(-dt / MEAN_REVERSION_TAU_S)
        x = _ar1(incr, a_x, self.x)
        log_price = self.log_ref + x

        # volume: slow log-OU + daily cycle + spikes
        a_v = math.exp(-dt / VOLUME_TAU_S)
        zv = rng["volume"].standard_normal((n, c))
        v = _ar1(VOLUME_LOG_STD * math.sqrt(1 - a_v * a_v) * zv, a_v, self.v)
        hour = (times % DAY_S) / 3600.0
        diurnal = VOLUME_DIURNAL_AMPLITUDE * np.cos(2 * math.pi * (hour - VOLUME_PEAK_UTC_HOUR) / 24.0)
        spike_mult, spike_mask = self._spikes(n, dt, jump_mask)
        volume = np.exp(self.log_ref_volume + v + diurnal[:, None]) * spike_mult

        change_24h, change_7d = self._changes(times, log_price)

        self.x, self.m, self.v = x[-1].copy(), m[-1].copy(), v[-1].copy()
        price = np.exp(log_price)
        return PathBatch(
            times=times,
            price=price,
            market_cap=price * self.supply,
            volume_24h=volume,
            change_24h=change_24h,
            change_7d=change_7d,
            volume_spike=spike_mask,
            jump=jump_mask,
            drift=drift,
        )

    def _spikes(self, n: int, dt: float, jump_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = len(self.coins)
        rng = self.rng
        p = -math.expm1(-dt * VOLUME_SPIKES_PER_DAY / DAY_S)
        spontaneous = rng["spike_arrival"].random((n, c)) < p
        triggered = jump_mask & (rng["spike_trigger"].random((n, c)) < JUMP_VOLUME_SPIKE_PROB)
        starts = spontaneous | triggered
        k = int(starts.sum())
        factor = np.zeros((n, c))
        ticks = np.zeros((n, c), dtype=np.int64)
        factor[starts] = rng["spike_factor"].uniform(*VOLUME_SPIKE_FACTOR, k)
        lo, hi = VOLUME_SPIKE_TICKS
        ticks[starts] = rng["spike_ticks"].integers(lo, hi + 1, k)
        idx = np.arange(n)[:, None]
        last = np.maximum.accumulate(np.where(starts, idx, -1), axis=0)
        has = last >= 0
        lc = np.maximum(last, 0)
        cols = np.arange(c)[None, :]
        end = np.where(has, lc + ticks[lc, cols] - 1, self.spike_left - 1)
        fac = np.where(has, factor[lc, cols], self.spike_factor)
        active = idx <= end
        self.spike_left = np.maximum(end[-1] - (n - 1), 0)
        self.spike_factor = fac[-1].copy()
        return np.where(active, fac, 1.0), active

    def _changes(self, times: np.ndarray, log_price: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        all_t = np.concatenate([self._ledger_t, times])
        all_p = np.concatenate([self._ledger_p, log_price])
        out = []
        for horizon in (DAY_S, 7 * DAY_S):
            j = np.searchsorted(all_t, times - horizon + 1e-6, side="right") - 1
            ok = j >= 0
            ref = all_p[np.maximum(j, 0)]
            out.append(np.where(ok[:, None], 100.0 * np.expm1(log_price - ref), np.nan))
        # keep one point per LEDGER_RESOLUTION_S for later look-ups, forget beyond 7 days
        buckets = np.floor(times / LEDGER_RESOLUTION_S)
        keep = np.empty(len(times), dtype=bool)
        keep[0] = buckets[0] != self._last_bucket
        keep[1:] = buckets[1:] != buckets[:-1]
        self._last_bucket = float(buckets[-1])
        lt = np.concatenate([self._ledger_t, times[keep]])
        lp = np.concatenate([self._ledger_p, log_price[keep]])
        step = float(times[1] - times[0]) if len(times) > 1 else 0.0
        horizon_keep = times[-1] - 7 * DAY_S - 2 * max(LEDGER_RESOLUTION_S, step)
        first = max(0, int(np.searchsorted(lt, horizon_keep, side="left")) - 1)
        self._ledger_t, self._ledger_p = lt[first:], lp[first:]
        return out[0], out[1]


def simulate_paths(
    config: SimulatorConfig, n_steps: int, start: datetime, step: timedelta | float | str
) -> PathBatch:
    """The raw numpy paths for `n_steps` steps from `start` (for analysis and tests)."""
    dt = step_seconds(step)
    sim = MarketSimulator(config.resolved_coins(), config.seed)
    return sim.advance(epoch_seconds(start) + dt * np.arange(n_steps), dt)
