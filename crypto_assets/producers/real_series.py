"""A real price series as ticks, so that the models can be evaluated on real prices offline.

The series is the one pmdarima ships inside its wheel (a dev dependency; the package's licence is
MIT, per its wheel metadata `License-Expression: MIT`): `pmdarima.datasets.load_msft()`, the
daily Microsoft (MSFT) prices and volumes from 1986-03-13 to 2017-11-10, 7,983 trading days.
pmdarima's docstring gives its provenance as "part of the Kaggle stock dataset"
(kaggle.com/borismarjanovic/price-volume-data-for-all-us-stocks-etfs, the "Huge Stock Market
Dataset") and states no licence of the data beyond the package's own. The closes are split-
adjusted (0.067 USD in 1986). It is a stock, not a coin: the one real crypto series found in a
package (backtesting.py's BTCUSD) is 156 monthly bars under the AGPL, too short for any horizon.

The clock is compressed: one trading day per simulated minute (`STEP`), ending at `end`. That
keeps the pipeline's geometry as it is live (one tick a minute, as the 60 s feed): every feature
window holds as many ticks as on the live feed (the 15-minute volatility 15 closes, momentum_60m
60) and every label looks as many ticks ahead, so the direction label is the sign of the next 15
trading days, the price horizons 1h/4h/24h are 60/240/1440 trading days ahead. Trading days are
consecutive ticks (weekends and holidays are not gaps). A day's 24h volume is its dollar volume
(close x shares traded).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl

STEP = timedelta(minutes=1)  # one real trading day per simulated minute
MSFT_DAYS = 7983  # rows of load_msft() (pmdarima 2.1.1)


@dataclass(frozen=True)
class RealSeries:
    """Daily closes and volumes of one real instrument, oldest first."""

    name: str
    source: str
    licence: str
    frame: pl.DataFrame  # date (Date), close (Float64, USD), volume (Float64, shares)

    @property
    def days(self) -> int:
        return self.frame.height


def load_msft() -> RealSeries:
    """pmdarima's daily MSFT series (offline: the data is inside the wheel). Importing pmdarima
    imports scikit-learn and statsmodels (several seconds), hence the import here."""
    from pmdarima.datasets import load_msft as _load

    pdf = _load()
    frame = pl.DataFrame({
        "date": pl.Series(pdf["Date"].astype(str).tolist()).str.to_date("%Y-%m-%d"),
        "close": pdf["Close"].astype(float).to_numpy(),
        "volume": pdf["Volume"].astype(float).to_numpy(),
    })
    return RealSeries(
        name="MSFT daily 1986-03-13..2017-11-10",
        source="pmdarima.datasets.load_msft (pmdarima 2.1.1; Kaggle 'Huge Stock Market Dataset')",
        licence="pmdarima: MIT; the data's own licence is not stated by pmdarima",
        frame=frame,
    )


def series_ticks(series: RealSeries, coin_id: str = "msft", symbol: str = "msft",
                 end: datetime | None = None, step: timedelta = STEP, days: int | None = None) -> pl.DataFrame:
    """Raw ticks (coin_id, symbol, last_updated_at, price_usd, volume_24h_usd) of the last `days`
    trading days (all by default): one a `step`, the last at `end` (default: now, to the minute;
    clean_ticks rejects ticks more than a year older than their ingestion), price = the day's
    close, 24h volume = close x shares traded that day."""
    f = series.frame if days is None else series.frame.tail(days)
    if f.height == 0:
        raise ValueError("no trading days to replay")
    if (f["close"] <= 0).any():
        raise ValueError("a close <= 0 is not a price")
    end = (end or datetime.now(UTC)).astimezone(UTC).replace(second=0, microsecond=0)
    n = f.height
    step_us = int(step / timedelta(microseconds=1))
    end_us = int(end.timestamp() * 1_000_000)
    return pl.DataFrame({
        "coin_id": [coin_id] * n,
        "symbol": [symbol] * n,
        "last_updated_at": pl.Series((pl.int_range(n, eager=True) - (n - 1)) * step_us + end_us)
                           .cast(pl.Datetime("us", "UTC")),
        "price_usd": f["close"],
        "volume_24h_usd": f["close"] * f["volume"],
    })
