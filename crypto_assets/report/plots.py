"""The report's market figures (per-coin candles, the overview, the correlation heat-maps) and the
figure plumbing every report figure shares.

Everything draws on explicit `Figure` objects with the Agg canvas; pyplot is never imported, so
no global figure state survives a call (safe in long-lived Dagster processes). A figure's PNG is
exactly its size times its dpi in pixels (tests check it)."""

from __future__ import annotations

import base64
import io
import math
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
from matplotlib import dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter

from crypto_assets.report.formatting import fmt_price, fmt_time, span_label
from crypto_assets.report.market_data import MarketData

# Figure sizes (inches); pixel size = size * dpi (the model figure's is in model_plot).
CANDLES_SIZE = (14.0, 8.0)
CORR_SIZE = (14.0, 6.5)
OVERVIEW_SIZE = (14.0, 5.0)
DEFAULT_DPI = 100

UP, DOWN = "#26a69a", "#ef5350"
BAND = "#1f77b4"
RULE_STYLE: dict[str, dict[str, Any]] = {
    "price_zscore": {"marker": "D", "color": "#8e24aa", "label": "price z-score |z|>3"},
    "volume_spike": {"marker": "^", "color": "#fb8c00", "label": "24h-volume spike >200%"},
}
_FALLBACK_MARKERS = ["s", "P", "X", "*", "h"]


def new_figure(size: tuple[float, float], dpi: int = DEFAULT_DPI) -> Figure:
    """A constrained-layout figure on its own Agg canvas (no pyplot)."""
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path, dpi: int | None = None) -> Path:
    """PNG at exactly figsize * dpi pixels (no tight bbox cropping)."""
    fig.savefig(path, format="png", dpi=dpi or fig.dpi, facecolor="white")
    return path


def price_axis(ax, span: float) -> None:
    """Plain prices with thousands separators; decimals follow the visible range (BTC 0, ADA 4)."""
    decimals = int(min(8, max(0, 2 - math.floor(math.log10(span))))) if span > 0 else 2
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.{decimals}f}"))


def time_axis(ax) -> None:
    loc = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def naive_utc(s: pl.Series) -> np.ndarray:
    if isinstance(s.dtype, pl.Datetime) and s.dtype.time_zone is not None:
        s = s.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return mdates.date2num(s.to_numpy())


def message_figure(size: tuple[float, float], title: str, message: str, dpi: int) -> Figure:
    """A figure that says why there is nothing to draw, at the size the real one would have."""
    fig = new_figure(size, dpi)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title, fontsize=16, fontweight="bold")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, color="#555555", wrap=True,
            bbox={"boxstyle": "round,pad=1", "facecolor": "#f5f5f5", "edgecolor": "#cccccc"})
    return fig


def draw_candles(ax, x: np.ndarray, o: np.ndarray, h: np.ndarray, lo: np.ndarray, cl: np.ndarray,
                 width: float) -> float:
    """Candles on `ax` (wicks high-low, bodies open-close, up green / down red); returns the
    price span drawn. A flat candle gets a hairline body so it stays visible."""
    colors = np.where(cl >= o, UP, DOWN)
    span = float(np.nanmax(h) - np.nanmin(lo)) or float(np.nanmax(h)) * 1e-3 or 1.0
    body = np.maximum(np.abs(cl - o), span * 0.002)
    ax.vlines(x, lo, h, colors=cast(Any, colors), linewidth=0.8, zorder=2)
    bottom = np.minimum(o, cl)
    left, right = x - width / 2, x + width / 2
    bodies = np.stack([np.column_stack([left, bottom]), np.column_stack([left, bottom + body]),
                       np.column_stack([right, bottom + body]), np.column_stack([right, bottom])], axis=1)
    # one collection instead of a patch per candle: same picture, a fraction of the draw time
    ax.add_collection(PolyCollection(cast(Any, bodies), facecolors=colors, edgecolors=colors, linewidths=0.3, zorder=3))
    return span


def plot_candles(market: MarketData, coin_id: str, dpi: int = DEFAULT_DPI) -> Figure:
    """1-minute candles with Bollinger(20, 2) and anomaly markers above, RSI(14) below."""
    c = market.candles.filter(pl.col("coin_id") == coin_id)
    sym = market.symbol(coin_id).upper()
    snap = next((s for s in market.snapshots if s.coin_id == coin_id), None)
    if c.height == 0:
        return message_figure(CANDLES_SIZE, f"{sym} ({coin_id})", f"no 1-minute candles in the last {market.hours:g} h", dpi)
    fig = new_figure(CANDLES_SIZE, dpi)
    gs = fig.add_gridspec(2, 1, height_ratios=[3, 1])
    ax = fig.add_subplot(gs[0])
    ax_rsi = fig.add_subplot(gs[1], sharex=ax)

    x = naive_utc(c["minute"])
    width = 0.7 / 1440.0
    span = draw_candles(ax, x, *(c[k].to_numpy() for k in ("open", "high", "low", "close")), width=width)

    bb_u, bb_m, bb_l = (c[k].cast(pl.Float64).to_numpy() for k in ("bb_upper", "bb_middle", "bb_lower"))
    if np.isfinite(bb_m).any():
        ax.fill_between(x, bb_l, bb_u, color=BAND, alpha=0.08, linewidth=0, zorder=1)
        ax.plot(x, bb_u, color=BAND, linewidth=1.0, alpha=0.8, zorder=2)
        ax.plot(x, bb_l, color=BAND, linewidth=1.0, alpha=0.8, zorder=2)
        ax.plot(x, bb_m, color=BAND, linewidth=1.0, linestyle="--", alpha=0.8, zorder=2)

    handles: list[Any] = [
        Patch(facecolor=UP, label="up candle"),
        Patch(facecolor=DOWN, label="down candle"),
        Line2D([], [], color=BAND, label="Bollinger(20, 2σ) upper/lower"),
        Line2D([], [], color=BAND, linestyle="--", label="Bollinger middle (SMA 20)"),
    ]
    a = market.anomalies.filter(pl.col("coin_id") == coin_id)
    if a.height:
        for k, (rule, grp) in enumerate(sorted(a.group_by("rule"), key=lambda g: str(g[0][0]))):
            rule = rule[0]
            style = RULE_STYLE.get(rule, {"marker": _FALLBACK_MARKERS[k % len(_FALLBACK_MARKERS)], "color": "#424242", "label": rule})
            crit = (grp["severity"] == "critical").to_numpy()
            ax.scatter(naive_utc(grp["event_time"]), grp["price_usd"].to_numpy(), marker=style["marker"],
                       s=np.where(crit, 110, 55), color=style["color"], edgecolors=cast(Any, np.where(crit, "black", "white")),
                       linewidths=cast(Any, np.where(crit, 1.4, 0.6)), zorder=5)
            handles.append(Line2D([], [], marker=style["marker"], color=style["color"], linestyle="",
                                  markersize=8, label=f"{style['label']} ({grp.height})"))
        handles.append(Line2D([], [], marker="o", color="white", markeredgecolor="black", markeredgewidth=1.4,
                              linestyle="", markersize=8, label="black edge: critical"))
    # above the plot, so it never hides a candle or a marker
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=9, frameon=False,
              ncol=min(len(handles), 4), borderaxespad=0.3)
    price_axis(ax, span)
    ax.margins(y=0.05)
    ax.set_ylabel("price (USD)")
    ax.grid(True, alpha=0.25)
    ax.tick_params(labelbottom=False)

    title = f"{sym} ({coin_id}) — 1-minute candles, last {market.hours:g} h"
    if snap is not None and snap.last_price is not None:
        title += f"   ·   last {fmt_price(snap.last_price)} USD"
        if snap.change_24h_pct is not None:
            title += f"   ·   {span_label(snap)} change {snap.change_24h_pct:+.2f} %"
    fig.suptitle(title, fontsize=14, fontweight="bold", x=0.01, ha="left")

    rsi = c["rsi_14"].cast(pl.Float64).to_numpy()
    ax_rsi.axhspan(30, 70, color="#9e9e9e", alpha=0.08)
    ax_rsi.axhline(70, color=DOWN, linestyle="--", linewidth=1)
    ax_rsi.axhline(30, color=UP, linestyle="--", linewidth=1)
    ax_rsi.plot(x, rsi, color="#5e35b1", linewidth=1.3)
    ax_rsi.fill_between(x, rsi, 70, where=np.nan_to_num(rsi) > 70, color=DOWN, alpha=0.3, interpolate=True)
    ax_rsi.fill_between(x, rsi, 30, where=np.nan_to_num(rsi, nan=50) < 30, color=UP, alpha=0.3, interpolate=True)
    ax_rsi.set_ylim(0, 100)
    ax_rsi.set_yticks([0, 30, 50, 70, 100])
    ax_rsi.set_ylabel("RSI(14)")
    ax_rsi.text(1.0, 1.02, "70 overbought / 30 oversold", transform=ax_rsi.transAxes, ha="right", va="bottom",
                fontsize=8, color="#616161")
    ax_rsi.grid(True, alpha=0.25)
    time_axis(ax_rsi)
    ax_rsi.set_xlabel("time (UTC)")
    ax.set_xlim(x.min() - width, x.max() + width)
    return fig


def correlation_matrix(corr: pl.DataFrame, window: str, coins: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(corr, n) square matrices in `coins` order; NaN where the pair has no value."""
    idx = {c: i for i, c in enumerate(coins)}
    m = np.full((len(coins), len(coins)), np.nan)
    n = np.zeros((len(coins), len(coins)), dtype=int)
    for a, b, v, k in corr.filter(pl.col("window_name") == window).select("coin_a", "coin_b", "corr", "n").iter_rows():
        if a in idx and b in idx:
            val = np.nan if v is None else float(v)
            m[idx[a], idx[b]] = m[idx[b], idx[a]] = val
            n[idx[a], idx[b]] = n[idx[b], idx[a]] = int(k)
    for i in range(len(coins)):
        m[i, i] = 1.0
    return m, n


def plot_correlations(market: MarketData, dpi: int = DEFAULT_DPI) -> Figure:
    """24 h and 7 d correlation of 1-minute returns side by side, with values in the cells."""
    corr = market.correlations
    in_table = set(corr["coin_a"].to_list()) | set(corr["coin_b"].to_list())
    coins = [c for c in market.coins if c in in_table] + sorted(in_table - set(market.coins))
    if corr.height == 0 or len(coins) < 2:
        return message_figure(CORR_SIZE, "Correlation of 1-minute returns", "no correlations yet (needs two coins with candles)", dpi)
    labels = [market.symbol(c).upper() for c in coins]
    fig = new_figure(CORR_SIZE, dpi)
    axes = fig.subplots(1, 2)
    end = cast(datetime, corr["window_end"].max())
    im = None
    for ax, window in zip(axes, ("24h", "7d"), strict=True):
        m, n = correlation_matrix(corr, window, coins)
        diag = np.eye(len(coins), dtype=bool)
        # the diagonal (always 1) is drawn neutral so it does not drown the pairs in colour
        im = ax.imshow(np.ma.masked_where(diag | np.isnan(m), m), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.imshow(np.ma.masked_where(~diag, np.ones_like(m)), cmap="Greys", vmin=0, vmax=4)
        ax.set_facecolor("#e0e0e0")
        ax.set_xticks(range(len(coins)), labels, rotation=45 if len(coins) > 6 else 0)
        ax.set_yticks(range(len(coins)), labels)
        fs = 11 if len(coins) <= 6 else (9 if len(coins) <= 10 else 7)
        for i in range(len(coins)):
            for j in range(len(coins)):
                v = m[i, j]
                txt = "" if i == j else ("–" if np.isnan(v) else f"{v:+.2f}")
                ax.text(j, i, txt, ha="center", va="center", fontsize=fs,
                        color="white" if not np.isnan(v) and abs(v) > 0.6 else "black")
        off = n[~np.eye(len(coins), dtype=bool)]
        n_txt = f"n = {off.min()}–{off.max()} paired minutes" if off.size and off.max() > 0 else "no paired minutes"
        ax.set_title(f"last {window}   ({n_txt})", fontsize=12)
    fig.suptitle(f"Correlation of 1-minute returns (Pearson), window ending {fmt_time(end)}", fontsize=14, fontweight="bold")
    assert im is not None  # both windows drew one
    fig.colorbar(im, ax=list(axes), shrink=0.85, label="correlation")
    return fig


def plot_overview(market: MarketData, dpi: int = DEFAULT_DPI, size: tuple[float, float] = OVERVIEW_SIZE) -> Figure:
    """Every coin's close as % change from the start of the window, anomalies as dots."""
    if market.candles.height == 0:
        return message_figure(size, "Market overview", "no candles yet", dpi)
    fig = new_figure(size, dpi)
    ax = fig.add_subplot()
    for coin in market.coins:
        c = market.candles.filter(pl.col("coin_id") == coin)
        if c.height == 0:
            continue
        x = naive_utc(c["minute"])
        base = c["close"][0]
        y = (c["close"].to_numpy() / base - 1.0) * 100.0
        (line,) = ax.plot(x, y, linewidth=1.5, label=market.symbol(coin).upper())
        ax.annotate(f"{market.symbol(coin).upper()} {y[-1]:+.1f}%", (x[-1], y[-1]), textcoords="offset points",
                    xytext=(4, 0), va="center", fontsize=9, color=line.get_color(), fontweight="bold")
        a = market.anomalies.filter(pl.col("coin_id") == coin)
        if a.height:
            ax.scatter(naive_utc(a["event_time"]), (a["price_usd"].to_numpy() / base - 1.0) * 100.0, s=14,
                       color=line.get_color(), edgecolors="black", linewidths=0.4, zorder=4)
    ax.axhline(0, color="#9e9e9e", linewidth=0.8)
    ax.set_ylabel("% change since window start")
    ax.set_title(f"Price change over the last {market.hours:g} h (dots: anomalies), up to {fmt_time(market.window_end)}",
                 fontsize=13, fontweight="bold", loc="left")
    ax.grid(True, alpha=0.25)
    time_axis(ax)
    ax.legend(loc="upper left", ncol=min(len(market.coins), 8), fontsize=9)
    ax.margins(x=0.08)
    return fig


def data_uri(fig: Figure, dpi: int = 40, colours: int = 64) -> str:
    """A small PNG of `fig` as a data: URI (for inline metadata previews), palette-quantised
    to keep it to a few tens of KB."""
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    buf.seek(0)
    out = io.BytesIO()
    with Image.open(buf) as im:
        im.convert("RGB").quantize(colours).save(out, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode("ascii")

