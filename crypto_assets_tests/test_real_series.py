"""The real series (pmdarima's daily MSFT) as ticks: one tick per trading day, a minute apart,
ending at the given time, prices the real closes (crypto_assets.producers.real_series)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from crypto_assets.producers.real_series import MSFT_DAYS, STEP, RealSeries, load_msft, series_ticks

END = datetime(2026, 12, 3, 12, 0, 30, tzinfo=UTC)  # seconds are dropped: the last tick is at 12:00


@pytest.fixture(scope="module")
def msft() -> RealSeries:
    return load_msft()


def test_the_series_is_the_one_pmdarima_ships(msft):
    from pmdarima.datasets import load_msft as pmdarima_msft

    raw = pmdarima_msft()
    assert msft.days == MSFT_DAYS == len(raw)
    assert msft.frame["date"][0].isoformat() == "1986-03-13" and msft.frame["date"][-1].isoformat() == "2017-11-10"
    assert np.array_equal(msft.frame["close"].to_numpy(), raw["Close"].to_numpy(dtype=float))
    assert (msft.frame["date"].diff().drop_nulls().dt.total_days() > 0).all()  # strictly increasing trading days


def test_one_tick_per_trading_day_a_minute_apart_prices_the_real_closes(msft):
    ticks = series_ticks(msft, end=END)
    assert ticks.height == MSFT_DAYS and ticks["coin_id"].unique().to_list() == ["msft"]
    times = ticks["last_updated_at"]
    assert times[-1] == END.replace(second=0) and times[0] == END.replace(second=0) - (MSFT_DAYS - 1) * STEP
    gaps = times.diff().drop_nulls().unique().to_list()
    assert gaps == [timedelta(minutes=1)]  # monotonic, regular: trading days are consecutive ticks
    assert np.array_equal(ticks["price_usd"].to_numpy(), msft.frame["close"].to_numpy())
    np.testing.assert_allclose(ticks["volume_24h_usd"].to_numpy(),
                               msft.frame["close"].to_numpy() * msft.frame["volume"].to_numpy())


def test_the_last_days_on_another_step(msft):
    ticks = series_ticks(msft, coin_id="bitcoin", symbol="btc", end=END, step=timedelta(minutes=15), days=100)
    assert ticks.height == 100 and set(ticks["symbol"]) == {"btc"}
    assert ticks["last_updated_at"].diff().drop_nulls().unique().to_list() == [timedelta(minutes=15)]
    assert np.array_equal(ticks["price_usd"].to_numpy(), msft.frame["close"].tail(100).to_numpy())
    with pytest.raises(ValueError, match="no trading days"):
        series_ticks(msft, days=0)
