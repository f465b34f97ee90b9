"""Simulated paths -> contract ticks: per-message dicts (`TickRows`), ISO event times, and the
whole message stream of a history run without Kafka (`generate_ticks`, `generate_messages`).

Everything up to `TickRows` is whole numpy arrays per batch of time steps; only the final
encoding (dict -> JSON bytes, orjson) is per message.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta

import numpy as np
import orjson

from crypto_assets.kafka.tick_contract import SCHEMA_VERSION, Coin
from crypto_assets.producers.simulator.bad_messages import BadInjector
from crypto_assets.producers.simulator.config import SimulatorConfig, epoch_seconds, step_seconds
from crypto_assets.producers.simulator.prices import MarketSimulator, PathBatch

# ---- encoding -----------------------------------------------------------------------------


def iso_many(times: np.ndarray) -> list[str]:
    """Epoch seconds -> contract ISO strings ('Z', seconds or milliseconds), vectorised."""
    ms = np.round(np.asarray(times) * 1000.0).astype(np.int64)
    unit = "s" if not np.any(ms % 1000) else "ms"
    return [s + "Z" for s in np.datetime_as_string(ms.astype("datetime64[ms]"), unit=unit)]


def price_decimals(coins: Sequence[Coin]) -> list[int]:
    """Decimals each coin's price is rounded to in its ticks."""
    # ~7 significant digits, at least 2 decimals (90000.12, 3100.123, 0.4512345)
    return [max(2, 6 - math.floor(math.log10(k.ref_price))) for k in coins]


class TickRows:
    """A PathBatch rounded and turned into Python lists, ready for per-message dicts."""

    __slots__ = ("ids", "symbols", "price", "mcap", "volume", "ch24", "ch7", "ok24", "ok7", "source")

    def __init__(self, batch: PathBatch, coins: Sequence[Coin], decimals: list[int], source: str) -> None:
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
        """The ticks (one per coin) of step `s`, stamped with these event/ingestion times."""
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
            for j, (coin_id, sym) in enumerate(zip(self.ids, self.symbols, strict=True))
        ]


# ---- generation without Kafka -------------------------------------------------------------


def history_batches(
    sim: MarketSimulator, start_t: float, dt: float, n_steps: int, batch_steps: int
) -> Iterator[PathBatch]:
    """`n_steps` steps of `dt` seconds from `start_t`, advanced `batch_steps` at a time."""
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
    decimals = price_decimals(coins)
    dt = step_seconds(step)
    out: list[dict] = []
    for batch in history_batches(sim, epoch_seconds(start), dt, n_steps, batch_steps):
        rows = TickRows(batch, coins, decimals, config.source)
        for s, ts in enumerate(iso_many(batch.times)):
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
    bad = BadInjector(sim.rng, config.bad_ratio)
    decimals = price_decimals(coins)
    dt = step_seconds(step)
    out: list[tuple[str | None, bytes, bytes]] = []
    for batch in history_batches(sim, epoch_seconds(start), dt, n_steps, batch_steps):
        rows = TickRows(batch, coins, decimals, config.source)
        ticks = [t for s, ts in enumerate(iso_many(batch.times)) for t in rows.step(s, ts, ts)]
        counts = bad.counts(len(ticks))
        for i, tick in enumerate(ticks):
            out.append((None, tick["coin_id"].encode(), orjson.dumps(tick)))
            if counts is not None:
                bad.recent.append(tick)
                for _ in range(counts[i]):
                    out.append(bad.next(tick))
    return out
