"""Simulated OHLCV bars, and the replay sample file written from them.

`ohlcv_frame` aggregates a simulated path into bars; `write_ohlcv_sample` / `main` write the sample
replay file `resources/sample_data/ohlcv_sample.csv`, by
`python -m crypto_assets.producers.simulator --write-sample resources/sample_data/ohlcv_sample.csv`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from crypto_assets.producers.simulator.config import SimulatorConfig, epoch_seconds, step_seconds
from crypto_assets.producers.simulator.messages import iso_many, price_decimals
from crypto_assets.producers.simulator.prices import DAY_S, MarketSimulator

if TYPE_CHECKING:
    import polars as pl


def ohlcv_frame(
    config: SimulatorConfig,
    start: datetime,
    bar: timedelta | str = "1h",
    n_bars: int = 36,
    ticks_per_bar: int = 60,
) -> pl.DataFrame:
    """Simulated OHLCV bars (polars DataFrame): timestamp = bar close time (ISO, 'Z'), symbol in
    upper case, open/high/low/close and per-bar USD `volume`."""
    import polars as pl

    coins = config.resolved_coins()
    bar_s = step_seconds(bar)
    dt = bar_s / ticks_per_bar
    n = n_bars * ticks_per_bar
    sim = MarketSimulator(coins, config.seed)
    batch = sim.advance(epoch_seconds(start) + dt * np.arange(1, n + 1), dt)
    price = batch.price.reshape(n_bars, ticks_per_bar, len(coins))
    volume = batch.volume_24h.reshape(n_bars, ticks_per_bar, len(coins)).mean(axis=1) * bar_s / DAY_S
    decimals = price_decimals(coins)
    closes = iso_many(batch.times[ticks_per_bar - 1 :: ticks_per_bar])
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
        SimulatorConfig(seed=seed), datetime(2025, 12, 18, tzinfo=UTC), "1h", 36
    )
    frame.write_csv(path)
    return frame.height


def main(argv: Sequence[str] | None = None) -> int:
    """`--write-sample PATH [--seed N]`; 0 when written, 2 (with help) without a command."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m crypto_assets.producers.simulator", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument("--write-sample", metavar="PATH", help="write the OHLCV replay sample CSV")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    if args.write_sample:
        rows = write_ohlcv_sample(args.write_sample, seed=args.seed)
        print(f"wrote {rows} rows to {args.write_sample}")
        return 0
    parser.print_help()
    return 2
