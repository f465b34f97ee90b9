"""What a simulation run is asked to do (`SimulatorConfig`), and the time conventions the
simulator modules share: a step given as a duration -> seconds, a datetime -> epoch seconds
(naive = UTC).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Generic, TypeVar

from crypto_assets.durations import parse_duration
from crypto_assets.kafka.tick_contract import DEFAULT_COIN_IDS, Coin, coins_for

SOURCE = "simulator"
MODES = ("ticks", "trades", "both")  # what a run writes: CoinGecko-style ticks, exchange trades, or both

_T = TypeVar("_T", bound="timedelta | None")


class _Duration(Generic[_T]):
    """A dataclass field given as a timedelta, a duration string ("7d", "60s") or seconds, and
    read as a timedelta: parse_duration runs once, when the field is set, so nothing downstream
    sees a string (type checkers take the __init__ parameter's type from __set__, the
    attribute's from __get__)."""

    def __init__(self, default: _T) -> None:
        self._default = default

    def __set_name__(self, owner: type, name: str) -> None:
        self._attr = f"_{name}"

    def __get__(self, obj: object, owner: Any = None) -> _T:
        return self._default if obj is None else getattr(obj, self._attr)

    def __set__(self, obj: object, value: _T | str | float) -> None:
        setattr(obj, self._attr, None if value is None else parse_duration(value))


@dataclass
class SimulatorConfig:
    """What to simulate and how fast.

    coins: coin ids (unknown ids get a neutral profile, see contract.coins_for) or Coin objects.
    seed: makes the price/volume paths and the bad-message mix reproducible.
    rate: live mode, messages per second over all coins (<= 0: unthrottled).
    count: total messages (valid + bad) to send; None = whole history / until stop_event.
    bad_ratio: expected share of malformed messages in the stream, 0 <= bad_ratio < 1.
    history: history mode when set: the window to fill (timedelta, "7d" or seconds; read as a timedelta).
    interval: history mode tick spacing per coin (timedelta, "60s" or seconds; read as a timedelta).
    start_time: history mode: event time of the first tick (default: window ends now).
    follow: history mode: continue live (same paths) after the history is sent.
    mode: "ticks" (the raw topic only, the default), "trades" (the trades topic only) or "both";
      trades follow the same price path as the ticks (see trades.py).
    trade_rate: mean trades per second per product (Poisson arrivals).
    trade_imbalance: expected (buys - sells) / trades of the taker sides, in (-1, 1).
    trade_size_usd: median trade notional in USD (sizes are log-normal).
    trade_bad_ratio: expected share of malformed messages on the trades topic, like bad_ratio.
    trade_window: history mode: trades only in this last part of the window (None: all of it).
    trade_follow_volume: the trade rate follows the path's volume (a volume spike = more trades).
    """

    coins: Sequence[str | Coin] = DEFAULT_COIN_IDS
    seed: int = 42
    rate: float = 50.0
    count: int | None = None
    bad_ratio: float = 0.0
    history: _Duration[timedelta | None] = _Duration(None)
    interval: _Duration[timedelta] = _Duration(timedelta(seconds=60))
    start_time: datetime | None = None
    follow: bool = False
    source: str = SOURCE
    mode: str = "ticks"
    trade_rate: float = 1.0
    trade_imbalance: float = 0.0
    trade_size_usd: float = 250.0
    trade_bad_ratio: float = 0.0
    trade_window: _Duration[timedelta | None] = _Duration(None)
    trade_follow_volume: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if not self.trade_rate > 0:
            raise ValueError(f"trade_rate must be > 0 trades per second, got {self.trade_rate}")
        if not -1.0 < self.trade_imbalance < 1.0:
            raise ValueError(f"trade_imbalance must be in (-1, 1), got {self.trade_imbalance}")
        if not self.trade_size_usd > 0:
            raise ValueError(f"trade_size_usd must be > 0, got {self.trade_size_usd}")
        if not 0.0 <= self.trade_bad_ratio < 1.0:
            raise ValueError(f"trade_bad_ratio must be in [0, 1), got {self.trade_bad_ratio}")
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

    @property
    def ticks(self) -> bool:
        return self.mode in ("ticks", "both")

    @property
    def trades(self) -> bool:
        return self.mode in ("trades", "both")

    def resolved_coins(self) -> tuple[Coin, ...]:
        if all(isinstance(c, Coin) for c in self.coins):
            return tuple(self.coins)  # type: ignore[arg-type]
        return coins_for([c.coin_id if isinstance(c, Coin) else str(c) for c in self.coins])


def epoch_seconds(ts: datetime) -> float:
    """A datetime as epoch seconds; a naive one is taken as UTC."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return ts.timestamp()


def step_seconds(step: timedelta | float | str) -> float:
    """A step given as timedelta, seconds or a duration string (see parse_duration) -> seconds."""
    return parse_duration(step).total_seconds()
