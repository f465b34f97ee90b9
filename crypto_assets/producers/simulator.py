"""Simulated market ticks for the default coins (or any configured coin list).

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

Modes of `run_simulator`:

* **history** (`SimulatorConfig.history` set, e.g. 7 days, with `interval`, e.g. 60 s): for each
  coin one tick per interval over the past window ending now (or starting at `start_time`),
  sent in event-time order as fast as the broker takes them (>= 50k msgs/s on one core);
  with `follow=True` the same paths then continue live.
* **live**: `rate` messages per second with event time = now, `count` messages in total or
  until `stop_event` is set.

Malformed messages (`bad_ratio`, see `BAD_KINDS` / `make_bad_message`) are injected *between*
valid ticks: after each valid tick, Geometric(1 - bad_ratio) - 1 bad messages follow, so bad
messages make up `bad_ratio` of the stream on average while the valid ticks stay exactly the
ones a run with `bad_ratio=0` would send. Kinds rotate through shuffled rounds of `BAD_KINDS`, so
every kind shows up once per `len(BAD_KINDS)` bad messages.

The sample replay file `resources/sample_data/ohlcv_sample.csv` is written by
`python -m crypto_assets.producers.simulator --write-sample resources/sample_data/ohlcv_sample.csv`.
"""

from __future__ import annotations

import json
import math
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

from crypto_assets.kafka.tick_contract import (
    DEFAULT_COIN_IDS,
    MAX_MESSAGE_BYTES,
    REQUIRED_FIELDS,
    SCHEMA_VERSION,
    Coin,
    coins_for,
    iso_utc,
)

if TYPE_CHECKING:
    from crypto_assets.resources.kafka import KafkaResource

SOURCE = "simulator"

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

UNKNOWN_COINS: tuple[tuple[str, str], ...] = (
    ("dogwifsim", "wifs"),
    ("not-a-coin", "nac"),
    ("zz-unlisted-token", "zzz"),
)

BAD_KINDS: tuple[str, ...] = (
    "invalid_json",  # truncated / single-quoted / trailing-comma JSON
    "non_utf8",  # bytes that are not UTF-8
    "not_object",  # JSON array, number, null, string or bool
    "missing_field",  # a REQUIRED_FIELDS key removed
    "string_price",  # "price_usd": "123.4"
    "string_schema_version",  # "schema_version": "1"
    "zero_price",
    "negative_price",
    "nan_price",  # the bytes NaN, as Python's json.dumps writes them
    "infinite_price",  # the bytes Infinity
    "ancient_timestamp",  # 1970 / 1900
    "future_timestamp",  # 2200
    "oversized",  # valid JSON object larger than contract.MAX_MESSAGE_BYTES
    "unknown_coin",  # coin_id not in the configured coins
    "duplicate",  # exact re-send of an earlier valid message
)

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


# ---- configuration ------------------------------------------------------------------------

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d|w)?", re.IGNORECASE)
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": DAY_S, "w": 7 * DAY_S}


def parse_duration(text: str | float | int | timedelta) -> timedelta:
    """'7d', '12h', '30m', '60s', '250ms', '1h30m', '90' (seconds) -> timedelta."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, (int, float)):
        return timedelta(seconds=float(text))
    s = str(text).strip().replace(" ", "")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_RE.match(s, pos)
        if m is None or m.end() == pos:
            raise ValueError(f"cannot parse duration {text!r}: use e.g. 7d, 12h, 30m, 60s or 90")
        unit = (m.group(2) or "s").lower()
        if m.group(2) is None and (pos != 0 or m.end() != len(s)):
            raise ValueError(f"cannot parse duration {text!r}: a unit is missing")
        total += float(m.group(1)) * _UNIT_S[unit]
        pos = m.end()
    if not s:
        raise ValueError("empty duration")
    return timedelta(seconds=total)


@dataclass
class SimulatorConfig:
    """What to simulate and how fast.

    coins: coin ids (unknown ids get a neutral profile, see contract.coins_for) or Coin objects.
    seed: makes the price/volume paths and the bad-message mix reproducible.
    rate: live mode, messages per second over all coins (<= 0: unthrottled).
    count: total messages (valid + bad) to send; None = whole history / until stop_event.
    bad_ratio: expected share of malformed messages in the stream, 0 <= bad_ratio < 1.
    history: history mode when set: the window to fill (timedelta or "7d").
    interval: history mode tick spacing per coin (timedelta or "60s").
    start_time: history mode: event time of the first tick (default: window ends now).
    follow: history mode: continue live (same paths) after the history is sent.
    """

    coins: Sequence[str | Coin] = DEFAULT_COIN_IDS
    seed: int = 42
    rate: float = 50.0
    count: int | None = None
    bad_ratio: float = 0.0
    history: timedelta | None = None
    interval: timedelta = timedelta(seconds=60)
    start_time: datetime | None = None
    follow: bool = False
    source: str = SOURCE

    def __post_init__(self) -> None:
        if self.history is not None and not isinstance(self.history, timedelta):
            self.history = parse_duration(self.history)
        if not isinstance(self.interval, timedelta):
            self.interval = parse_duration(self.interval)
        if not 0.0 <= self.bad_ratio < 1.0:
            raise ValueError(f"bad_ratio must be in [0, 1), got {self.bad_ratio}")
        if self.interval.total_seconds() <= 0:
            raise ValueError("interval must be positive")
        if self.history is not None and self.history < self.interval:
            raise ValueError("history must be at least one interval")
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0")
        if not self.coins:
            raise ValueError("no coins to simulate")

    def resolved_coins(self) -> tuple[Coin, ...]:
        if all(isinstance(c, Coin) for c in self.coins):
            return tuple(self.coins)  # type: ignore[arg-type]
        return coins_for([c.coin_id if isinstance(c, Coin) else str(c) for c in self.coins])


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
        self.rng = {name: np.random.default_rng(s) for name, s in zip(_STREAMS, seqs)}
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


# ---- encoding -----------------------------------------------------------------------------


def _iso_many(times: np.ndarray) -> list[str]:
    """Epoch seconds -> contract ISO strings ('Z', seconds or milliseconds), vectorised."""
    ms = np.round(np.asarray(times) * 1000.0).astype(np.int64)
    unit = "s" if not np.any(ms % 1000) else "ms"
    return [s + "Z" for s in np.datetime_as_string(ms.astype("datetime64[ms]"), unit=unit)]


def _price_decimals(coins: Sequence[Coin]) -> list[int]:
    # ~7 significant digits, at least 2 decimals (90000.12, 3100.123, 0.4512345)
    return [max(2, 6 - math.floor(math.log10(k.ref_price))) for k in coins]


class _Rows:
    """A PathBatch rounded and turned into Python lists, ready for per-message dicts."""

    __slots__ = ("ids", "symbols", "price", "mcap", "volume", "ch24", "ch7", "ok24", "ok7", "source")

    def __init__(self, batch: PathBatch, coins: Sequence[Coin], decimals: list[int], source: str):
        price = np.empty_like(batch.price)
        for j, d in enumerate(decimals):
            price[:, j] = np.round(batch.price[:, j], d)
        self.ids = [k.coin_id for k in coins]
        self.symbols = [k.symbol for k in coins]
        self.source = source
        self.price = price.tolist()
        self.mcap = np.round(batch.market_cap).tolist()
        self.volume = np.round(batch.volume_24h).tolist()
        self.ok24 = (~np.isnan(batch.change_24h[:, 0])).tolist()
        self.ok7 = (~np.isnan(batch.change_7d[:, 0])).tolist()
        self.ch24 = np.round(np.nan_to_num(batch.change_24h), 4).tolist()
        self.ch7 = np.round(np.nan_to_num(batch.change_7d), 4).tolist()

    def step(self, s: int, event: str, ingested: str) -> list[dict]:
        ok24, ok7 = self.ok24[s], self.ok7[s]
        p, mc, vol, c24, c7 = self.price[s], self.mcap[s], self.volume[s], self.ch24[s], self.ch7[s]
        src = self.source
        return [
            {
                "schema_version": SCHEMA_VERSION,
                "source": src,
                "coin_id": coin_id,
                "symbol": sym,
                "price_usd": p[j],
                "market_cap_usd": mc[j],
                "volume_24h_usd": vol[j],
                "change_24h_pct": c24[j] if ok24 else None,
                "change_7d_pct": c7[j] if ok7 else None,
                "last_updated_at": event,
                "ingestion_timestamp": ingested,
            }
            for j, (coin_id, sym) in enumerate(zip(self.ids, self.symbols))
        ]


# ---- malformed messages -------------------------------------------------------------------


def make_bad_message(kind: str, rng: np.random.Generator, valid_tick: dict) -> tuple[bytes, bytes]:
    """One malformed message of `kind` derived from `valid_tick` -> (key bytes, value bytes).

    For "duplicate", `valid_tick` must be the earlier valid tick to re-send (exact bytes).
    """
    tick = dict(valid_tick)
    key = str(tick.get("coin_id", "")).encode()
    if kind == "invalid_json":
        raw = orjson.dumps(tick)
        variant = int(rng.integers(3))
        if variant == 0:
            value = raw[: int(rng.integers(1, len(raw) - 1))]  # truncated: object never closed
        elif variant == 1:
            value = repr(tick).encode()  # Python repr: single quotes, None
        else:
            value = raw[:-1] + b",}"  # trailing comma
    elif kind == "non_utf8":
        marker = "__NON_UTF8__"
        raw = orjson.dumps({**tick, "symbol": marker})
        value = raw.replace(marker.encode(), str(tick.get("symbol", "")).encode() + b"\xff\xfe\xc3(")
    elif kind == "not_object":
        variant = int(rng.integers(5))
        value = (
            orjson.dumps(list(tick.values())),
            orjson.dumps(tick.get("price_usd")),
            b"null",
            orjson.dumps(str(tick.get("coin_id"))),
            b"true",
        )[variant]
    elif kind == "missing_field":
        tick.pop(str(rng.choice(REQUIRED_FIELDS)), None)
        value = orjson.dumps(tick)
    elif kind == "string_price":
        tick["price_usd"] = repr(float(tick["price_usd"]))
        value = orjson.dumps(tick)
    elif kind == "string_schema_version":
        tick["schema_version"] = str(tick["schema_version"])
        value = orjson.dumps(tick)
    elif kind == "zero_price":
        tick["price_usd"] = 0.0
        value = orjson.dumps(tick)
    elif kind == "negative_price":
        tick["price_usd"] = -abs(float(tick["price_usd"])) or -1.0
        value = orjson.dumps(tick)
    elif kind == "nan_price":
        tick["price_usd"] = float("nan")
        value = json.dumps(tick, separators=(",", ":")).encode()
    elif kind == "infinite_price":
        tick["price_usd"] = float("inf")
        value = json.dumps(tick, separators=(",", ":")).encode()
    elif kind == "ancient_timestamp":
        year = (1970, 1900)[int(rng.integers(2))]
        ts = datetime(year, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=int(rng.integers(0, 86_400)))
        tick["last_updated_at"] = iso_utc(ts)
        value = orjson.dumps(tick)
    elif kind == "future_timestamp":
        ts = datetime(2200, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=int(rng.integers(0, 365 * 86_400)))
        tick["last_updated_at"] = iso_utc(ts)
        value = orjson.dumps(tick)
    elif kind == "oversized":
        tick["padding"] = "x" * (MAX_MESSAGE_BYTES + int(rng.integers(1, 4096)))
        value = orjson.dumps(tick)
    elif kind == "unknown_coin":
        coin_id, symbol = UNKNOWN_COINS[int(rng.integers(len(UNKNOWN_COINS)))]
        tick["coin_id"], tick["symbol"] = coin_id, symbol
        key = coin_id.encode()
        value = orjson.dumps(tick)
    elif kind == "duplicate":
        value = orjson.dumps(tick)
    else:
        raise ValueError(f"unknown bad message kind {kind!r}; expected one of {BAD_KINDS}")
    return key, value


class _BadInjector:
    """Decides how many bad messages follow each valid tick and which kinds they are."""

    def __init__(self, rng: dict[str, np.random.Generator], ratio: float) -> None:
        self.ratio = ratio
        self.rng_counts = rng["bad_counts"]
        self.rng_kinds = rng["bad_kinds"]
        self.rng_content = rng["bad_content"]
        self._round: list[str] = []
        self.recent: deque[dict] = deque(maxlen=64)

    def counts(self, n: int) -> list[int] | None:
        if self.ratio <= 0:
            return None
        return (self.rng_counts.geometric(1.0 - self.ratio, n) - 1).tolist()

    def next(self, template: dict) -> tuple[str, bytes, bytes]:
        if not self._round:
            self._round = [BAD_KINDS[i] for i in self.rng_kinds.permutation(len(BAD_KINDS))]
        kind = self._round.pop()
        source = template
        if kind == "duplicate" and self.recent:
            source = self.recent[int(self.rng_content.integers(len(self.recent)))]
        key, value = make_bad_message(kind, self.rng_content, source)
        return kind, key, value


# ---- generation without Kafka -------------------------------------------------------------


def _epoch(ts: datetime) -> float:
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.timestamp()


def _seconds(step: timedelta | float | str) -> float:
    return parse_duration(step).total_seconds()


def simulate_paths(
    config: SimulatorConfig, n_steps: int, start: datetime, step: timedelta | float | str
) -> PathBatch:
    """The raw numpy paths for `n_steps` steps from `start` (for analysis and tests)."""
    dt = _seconds(step)
    sim = MarketSimulator(config.resolved_coins(), config.seed)
    return sim.advance(_epoch(start) + dt * np.arange(n_steps), dt)


def _history_batches(sim: MarketSimulator, start_t: float, dt: float, n_steps: int, batch_steps: int):
    for k0 in range(0, n_steps, batch_steps):
        times = start_t + dt * np.arange(k0, min(k0 + batch_steps, n_steps))
        yield sim.advance(times, dt)


def generate_ticks(
    config: SimulatorConfig,
    n_steps: int,
    start: datetime,
    step: timedelta | float | str,
    batch_steps: int = 4096,
) -> list[dict]:
    """Valid contract ticks (dicts) for `n_steps` steps x coins, event-time order, no Kafka.

    ingestion_timestamp equals last_updated_at, so the output depends only on the arguments.
    """
    coins = config.resolved_coins()
    sim = MarketSimulator(coins, config.seed)
    decimals = _price_decimals(coins)
    dt = _seconds(step)
    out: list[dict] = []
    for batch in _history_batches(sim, _epoch(start), dt, n_steps, batch_steps):
        rows = _Rows(batch, coins, decimals, config.source)
        for s, ts in enumerate(_iso_many(batch.times)):
            out.extend(rows.step(s, ts, ts))
    return out


def generate_messages(
    config: SimulatorConfig,
    n_steps: int,
    start: datetime,
    step: timedelta | float | str,
    batch_steps: int = 4096,
) -> list[tuple[str | None, bytes, bytes]]:
    """What run_simulator would send in history mode, as (bad kind or None, key, value)."""
    coins = config.resolved_coins()
    sim = MarketSimulator(coins, config.seed)
    bad = _BadInjector(sim.rng, config.bad_ratio)
    decimals = _price_decimals(coins)
    dt = _seconds(step)
    out: list[tuple[str | None, bytes, bytes]] = []
    for batch in _history_batches(sim, _epoch(start), dt, n_steps, batch_steps):
        rows = _Rows(batch, coins, decimals, config.source)
        ticks = [t for s, ts in enumerate(_iso_many(batch.times)) for t in rows.step(s, ts, ts)]
        counts = bad.counts(len(ticks))
        for i, tick in enumerate(ticks):
            out.append((None, tick["coin_id"].encode(), orjson.dumps(tick)))
            if counts is not None:
                bad.recent.append(tick)
                for _ in range(counts[i]):
                    out.append(bad.next(tick))
    return out


# ---- OHLCV sample for replay --------------------------------------------------------------


def ohlcv_frame(
    config: SimulatorConfig,
    start: datetime,
    bar: timedelta | str = "1h",
    n_bars: int = 36,
    ticks_per_bar: int = 60,
):
    """Simulated OHLCV bars (polars DataFrame): timestamp = bar close time (ISO, 'Z'), symbol in
    upper case, open/high/low/close and per-bar USD `volume`."""
    import polars as pl

    coins = config.resolved_coins()
    bar_s = _seconds(bar)
    dt = bar_s / ticks_per_bar
    n = n_bars * ticks_per_bar
    sim = MarketSimulator(coins, config.seed)
    batch = sim.advance(_epoch(start) + dt * np.arange(1, n + 1), dt)
    price = batch.price.reshape(n_bars, ticks_per_bar, len(coins))
    volume = batch.volume_24h.reshape(n_bars, ticks_per_bar, len(coins)).mean(axis=1) * bar_s / DAY_S
    decimals = _price_decimals(coins)
    closes = _iso_many(batch.times[ticks_per_bar - 1 :: ticks_per_bar])
    rows = []
    for b in range(n_bars):
        for j, coin in enumerate(coins):
            d = decimals[j]
            rows.append(
                {
                    "timestamp": closes[b],
                    "symbol": coin.symbol.upper(),
                    "open": round(float(price[b, 0, j]), d),
                    "high": round(float(price[b, :, j].max()), d),
                    "low": round(float(price[b, :, j].min()), d),
                    "close": round(float(price[b, -1, j]), d),
                    "volume": round(float(volume[b, j]), 2),
                }
            )
    return pl.DataFrame(rows)


def write_ohlcv_sample(path: str, seed: int = 7) -> int:
    """Write the small replay sample (10 coins x 36 hourly bars); returns the row count."""
    frame = ohlcv_frame(
        SimulatorConfig(seed=seed), datetime(2025, 12, 18, tzinfo=timezone.utc), "1h", 36
    )
    frame.write_csv(path)
    return frame.height


# ---- sending ------------------------------------------------------------------------------


class _Sender:
    """Counts messages, flushes every `chunk_size` and calls the chunk callback."""

    def __init__(
        self,
        producer: Any,
        chunk_size: int,
        callback: Callable[[dict], None] | None,
        counters: dict,
        log: Callable[[str], Any],
    ) -> None:
        self.producer = producer
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


def _history_start(config: SimulatorConfig, n_steps: int, dt: float) -> float:
    if config.start_time is not None:
        return _epoch(config.start_time)
    end = math.floor(time.time() / dt) * dt
    return end - (n_steps - 1) * dt


def run_simulator(
    kafka: "KafkaResource",
    config: SimulatorConfig,
    stop_event: threading.Event | None = None,
    log: Callable[[str], Any] = print,
    *,
    chunk_size: int = 20_000,
    chunk_callback: Callable[[dict], None] | None = None,
) -> dict:
    """Send simulated ticks (and injected bad messages) to `kafka.raw_topic`; returns counters.

    Messages go through `TickProducer` (`send` for ticks, `send_raw` for bad messages). The
    producer is flushed after every chunk of at most `chunk_size` messages and
    `chunk_callback(counters)` is called then. Use it to drain the topic between chunks when the
    broker keeps less than the whole run: the embedded broker (librdkafka mock cluster) retains
    only ~5 MB per partition and drops older messages, i.e. about 70k contract messages on the
    4-partition raw topic, so a 7-day x 60 s x 10-coin history (100k ticks) must be ingested in
    chunks (e.g. 20,000) as it is produced, or its oldest part is lost.

    Returns {"mode", "sent", "valid_sent", "bad_sent": {kind: n}, "bad_total", "chunks",
    "elapsed_s", "rate_msgs_s", "first_event_time", "last_event_time", "topic", "coins",
    "seed", "interrupted"}.
    """
    from crypto_assets.kafka.producer import TickProducer

    coins = config.resolved_coins()
    c = len(coins)
    sim = MarketSimulator(coins, config.seed)
    bad = _BadInjector(sim.rng, config.bad_ratio)
    decimals = _price_decimals(coins)
    counters: dict[str, Any] = {
        "mode": "history" if config.history is not None else "live",
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
    sender = _Sender(producer, chunk_size, chunk_callback, counters, log)
    t0 = time.monotonic()

    def done() -> bool:
        return (limit is not None and counters["sent"] >= limit) or stopped()

    def emit(ticks: list[dict], counts: list[int] | None, offset: int) -> bool:
        """Send one step's ticks; False when the run must stop."""
        for i, tick in enumerate(ticks):
            if limit is not None and counters["sent"] >= limit:
                return False
            sender.tick(tick)
            if counts is not None:
                bad.recent.append(tick)
                for _ in range(counts[offset + i]):
                    if limit is not None and counters["sent"] >= limit:
                        return False
                    sender.bad(*bad.next(tick))
        return True

    last_sim_t: float | None = None
    try:
        if config.history is not None:
            dt = config.interval.total_seconds()
            n_steps = int(config.history.total_seconds() // dt)
            start_t = _history_start(config, n_steps, dt)
            batch_steps = max(1, chunk_size // c)
            log(
                f"simulator: history {config.history} every {config.interval} for {c} coins "
                f"({n_steps * c} ticks, bad_ratio={config.bad_ratio}) -> {kafka.raw_topic}"
            )
            going = True
            for batch in _history_batches(sim, start_t, dt, n_steps, batch_steps):
                if not going or done():
                    break
                rows = _Rows(batch, coins, decimals, config.source)
                ingested = iso_utc(datetime.now(timezone.utc))
                stamps = _iso_many(batch.times)
                counts = bad.counts(len(batch) * c)
                if counters["first_event_time"] is None:
                    counters["first_event_time"] = stamps[0]
                for s, ts in enumerate(stamps):
                    counters["last_event_time"] = ts
                    if not emit(rows.step(s, ts, ingested), counts, s * c) or stopped():
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
            _run_live(config, sim, coins, decimals, bad, counters, emit, done, stop_event, last_sim_t, log)
    except KeyboardInterrupt:
        counters["interrupted"] = True
    except BaseException:
        producer.__exit__(*sys.exc_info())  # best-effort flush; the error is what matters
        raise
    sender.end_chunk()  # flushes (raises BrokerUnavailable if Kafka did not take everything)
    producer.flush()
    elapsed = time.monotonic() - t0
    counters["elapsed_s"] = round(elapsed, 3)
    counters["rate_msgs_s"] = round(counters["sent"] / elapsed, 1) if elapsed > 0 else 0.0
    log(
        f"simulator: sent {counters['sent']} messages ({counters['bad_total']} malformed) to "
        f"{kafka.raw_topic} in {counters['elapsed_s']:.2f}s ({counters['rate_msgs_s']:,.0f} msgs/s)"
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
        rows = _Rows(batch, coins, decimals, config.source)
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
            ts = iso_utc(datetime.fromtimestamp(now_ms / 1000, tz=timezone.utc))
            if counters["first_event_time"] is None:
                counters["first_event_time"] = ts
            counters["last_event_time"] = ts
            if not emit(rows.step(s, ts, ts), counts, s * c):
                return
            if done():
                return


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--write-sample", metavar="PATH", help="write the OHLCV replay sample CSV")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.write_sample:
        rows = write_ohlcv_sample(args.write_sample, seed=args.seed)
        print(f"wrote {rows} rows to {args.write_sample}")
        return 0
    parser.print_help()
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
