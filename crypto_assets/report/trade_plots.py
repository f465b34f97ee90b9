"""The report's trade figure: per product, 1-minute candles from trades (`trade_bars_1m`: real
bodies and wicks, since a bar holds every trade of its minute) with the bar VWAP and the window's
running VWAP above, and the traded volume split into taker buys and sells below.

Drawn like the tick candles (plots.py: explicit Figure on an Agg canvas, no pyplot)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from crypto_assets.kafka.trade_contract import ProductError, split_product
from crypto_assets.report.formatting import fmt_price
from crypto_assets.report.plots import (
    DEFAULT_DPI,
    DOWN,
    UP,
    draw_candles,
    message_figure,
    naive_utc,
    new_figure,
    price_axis,
    time_axis,
)
from crypto_assets.report.trade_data import TradeData

TRADE_CANDLES_SIZE = (14.0, 8.0)
VWAP, RUNNING_VWAP = "#ff8f00", "#37474f"


def plot_trade_candles(trades: TradeData, key: str, dpi: int = DEFAULT_DPI) -> Figure:
    """Candles, bar VWAP and running VWAP of product `key` ("exchange:product"); buy/sell volume below."""
    b = trades.bars_of(key)
    summary = next((p for p in trades.products if p.key == key), None)
    title = f"{key} — 1-minute candles from trades, last {trades.hours:g} h"
    if b.height == 0 or summary is None:
        return message_figure(TRADE_CANDLES_SIZE, title, f"no trade bars in the last {trades.hours:g} h", dpi)
    try:
        base_ccy, quote_ccy = split_product(summary.exchange, summary.product)
    except ProductError:
        base_ccy, quote_ccy = "base", "quote"
    fig = new_figure(TRADE_CANDLES_SIZE, dpi)
    gs = fig.add_gridspec(2, 1, height_ratios=[3, 1])
    ax = fig.add_subplot(gs[0])
    ax_vol = fig.add_subplot(gs[1], sharex=ax)

    x = naive_utc(b["bar_start"]) + 0.5 / 1440.0  # a bar is drawn at the middle of its minute
    width = 0.7 / 1440.0
    span = draw_candles(ax, x, *(b[k].to_numpy() for k in ("open", "high", "low", "close")), width=width)
    ax.plot(x, b["vwap"].to_numpy(), color=VWAP, linewidth=1.0, alpha=0.9, zorder=4)
    base, quote = b["base_volume"].to_numpy(), b["quote_volume"].to_numpy()
    running = np.cumsum(quote) / np.maximum(np.cumsum(base), 1e-300)
    ax.plot(x, running, color=RUNNING_VWAP, linewidth=1.2, linestyle="--", zorder=4)
    handles = [
        Patch(facecolor=UP, label="up candle"),
        Patch(facecolor=DOWN, label="down candle"),
        Line2D([], [], color=VWAP, label="bar VWAP"),
        Line2D([], [], color=RUNNING_VWAP, linestyle="--", label="VWAP since window start"),
    ]
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=9, frameon=False,
              ncol=len(handles), borderaxespad=0.3)
    price_axis(ax, span)
    ax.margins(y=0.05)
    ax.set_ylabel(f"price ({quote_ccy})")
    ax.grid(True, alpha=0.25)
    ax.tick_params(labelbottom=False)
    buy_pct = "–" if summary.buy_share is None else f"{summary.buy_share * 100:.0f} %"
    fig.suptitle(
        f"{title}   ·   last {fmt_price(summary.close)}   ·   {summary.change_pct:+.2f} %   ·   "
        f"{summary.trades:,} trades   ·   taker buys {buy_pct}",
        fontsize=13, fontweight="bold", x=0.01, ha="left",
    )

    buys, sells = b["buy_volume"].to_numpy(), b["sell_volume"].to_numpy()
    _bars(ax_vol, x, np.zeros_like(buys), buys, width, UP)
    _bars(ax_vol, x, buys, buys + sells, width, DOWN)
    ax_vol.set_ylim(0, float(np.nanmax(buys + sells)) * 1.08 or 1.0)
    ax_vol.set_ylabel(f"traded volume ({base_ccy})")
    ax_vol.legend(handles=[Patch(facecolor=UP, label="taker buys"), Patch(facecolor=DOWN, label="taker sells")],
                  loc="upper left", fontsize=8, ncol=2, frameon=False)
    ax_vol.grid(True, alpha=0.25)
    time_axis(ax_vol)
    ax_vol.set_xlabel("time (UTC)")
    ax.set_xlim(x.min() - width, x.max() + width)
    return fig


def _bars(ax, x: np.ndarray, bottom: np.ndarray, top: np.ndarray, width: float, color: str) -> None:
    """Vertical bars from `bottom` to `top` as one collection (a patch per bar is slow to draw)."""
    left, right = x - width / 2, x + width / 2
    quads = np.stack([np.column_stack([left, bottom]), np.column_stack([left, top]),
                      np.column_stack([right, top]), np.column_stack([right, bottom])], axis=1)
    ax.add_collection(PolyCollection(cast(Any, quads), facecolors=color, edgecolors="none", zorder=2))
