"""The market report: PNG figures and a markdown page a person reads instead of tables.

Everything here draws on explicit `Figure` objects with the Agg canvas; pyplot is never
imported, so no global figure state survives a call (safe in long-lived Dagster processes).

Layout on disk (`write_report`)::

    <CRYPTO_HOME>/reports/<YYYYmmddTHHMMSSZ>/   one report, never modified after it appears
        report.md  overview.png  candles_<coin>.png ...  correlations.png  models.png
    <CRYPTO_HOME>/reports/latest/               a copy of the newest report

A report is written into a hidden temp directory and renamed into place, so a timestamped
directory is either complete or absent; `latest/` is replaced by renaming a complete copy over it.
"""

from __future__ import annotations

import base64
import io
import math
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
from matplotlib import dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from crypto_assets.ml.registry import CHAMPION, PRIMARY_METRIC

# Figure sizes (inches); pixel size = size * dpi.
CANDLES_SIZE = (14.0, 8.0)
CORR_SIZE = (14.0, 6.5)
MODELS_SIZE = (14.0, 9.0)
OVERVIEW_SIZE = (14.0, 5.0)
DEFAULT_DPI = 100

UP, DOWN = "#26a69a", "#ef5350"
BAND = "#1f77b4"
RULE_STYLE: dict[str, dict[str, Any]] = {
    "price_zscore": {"marker": "D", "color": "#8e24aa", "label": "price z-score |z|>3"},
    "volume_spike": {"marker": "^", "color": "#fb8c00", "label": "24h-volume spike >200%"},
}
_FALLBACK_MARKERS = ["s", "P", "X", "*", "h"]

REPORT_MODELS = ("trend_model", "anomaly_model", "price_model", "coin_clusters")
LOWER_IS_BETTER = {"rmse", "mae"}
STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
_STAMP_RE = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")


# ----------------------------------------------------------------------------------- data
@dataclass
class CoinSnapshot:
    coin_id: str
    symbol: str
    last_time: datetime | None
    last_price: float | None
    change_24h_pct: float | None
    change_span_hours: float | None  # < 24 when the history is shorter than a day
    volatility_15m: float | None  # std of log returns over 15 min (fraction)
    rsi_14: float | None
    anomalies_24h: int = 0
    anomalies_by_rule: dict[str, int] = field(default_factory=dict)


@dataclass
class MarketData:
    window_end: datetime | None
    window_start: datetime | None
    hours: float
    candles: pl.DataFrame  # ohlcv_1m rows in the window
    anomalies: pl.DataFrame  # anomalies rows in the window
    correlations: pl.DataFrame  # the whole correlations table
    snapshots: list[CoinSnapshot]

    @property
    def coins(self) -> list[str]:
        return [s.coin_id for s in self.snapshots]

    def symbol(self, coin_id: str) -> str:
        for s in self.snapshots:
            if s.coin_id == coin_id:
                return s.symbol
        return coin_id


def load_market(conn: duckdb.DuckDBPyConnection, hours: float, coin_order: list[str] | None = None) -> MarketData:
    """Candles and anomalies of the last `hours` before the newest candle, the correlations and
    one snapshot per coin. The window is anchored on the data, not the wall clock."""
    end = conn.sql("SELECT max(minute) FROM ohlcv_1m").fetchall()[0][0]
    corr = conn.sql("SELECT coin_a, coin_b, window_name, window_end, corr, n FROM correlations").pl()
    if end is None:
        empty = conn.sql("SELECT * FROM ohlcv_1m LIMIT 0").pl()
        anom = conn.sql("SELECT * FROM anomalies LIMIT 0").pl()
        return MarketData(None, None, hours, empty, anom, corr, [])
    start = end - timedelta(hours=hours)
    candles = conn.sql(
        "SELECT coin_id, symbol, minute, open, high, low, close, rsi_14, bb_upper, bb_middle, bb_lower "
        "FROM ohlcv_1m WHERE minute > $start ORDER BY coin_id, minute",
        params={"start": start},
    ).pl()
    anomalies = conn.sql(
        "SELECT coin_id, symbol, event_time, rule, severity, value, price_usd FROM anomalies "
        "WHERE event_time > $start ORDER BY event_time",
        params={"start": start},
    ).pl()
    snap_rows = conn.sql(
        """
        WITH last AS (   -- aggregates, not a window over the whole table: no sort
            SELECT coin_id, arg_max(symbol, event_time) AS symbol, max(event_time) AS event_time,
                   arg_max(price_usd, event_time) AS price_usd, arg_max(volatility_15m, event_time) AS volatility_15m
            FROM market_features GROUP BY coin_id
        ), ref AS (   -- the last price at or before 24 h ago, else the oldest one within the day
            SELECT m.coin_id,
                   arg_max(m.price_usd, m.event_time) FILTER (m.event_time <= l.event_time - INTERVAL 24 HOUR) AS p_old,
                   max(m.event_time) FILTER (m.event_time <= l.event_time - INTERVAL 24 HOUR) AS t_old,
                   arg_min(m.price_usd, m.event_time) FILTER (m.event_time > l.event_time - INTERVAL 24 HOUR) AS p_first,
                   min(m.event_time) FILTER (m.event_time > l.event_time - INTERVAL 24 HOUR) AS t_first
            FROM market_features m JOIN last l USING (coin_id)
            WHERE m.event_time >= l.event_time - INTERVAL 25 HOUR
            GROUP BY 1
        ), rsi AS (
            SELECT coin_id, arg_max(rsi_14, minute) AS rsi_14 FROM ohlcv_1m WHERE rsi_14 IS NOT NULL GROUP BY coin_id
        )
        SELECT l.coin_id, l.symbol, l.event_time, l.price_usd,
               coalesce(r.p_old, r.p_first), coalesce(r.t_old, r.t_first), l.volatility_15m, s.rsi_14
        FROM last l LEFT JOIN ref r USING (coin_id) LEFT JOIN rsi s USING (coin_id)
        """
    ).fetchall()
    anom_24h = conn.sql(
        """
        SELECT a.coin_id, a.rule, count(*) FROM anomalies a
        JOIN (SELECT coin_id, max(event_time) AS t FROM market_features GROUP BY 1) l USING (coin_id)
        WHERE a.event_time > l.t - INTERVAL 24 HOUR GROUP BY ALL
        """
    ).fetchall()
    by_coin: dict[str, dict[str, int]] = {}
    for coin, rule, n in anom_24h:
        by_coin.setdefault(coin, {})[rule] = int(n)
    snaps = []
    for coin, sym, t, price, p_ref, t_ref, vol, rsi in snap_rows:
        change = span = None
        if p_ref and t_ref is not None and t_ref < t:
            change = (price / p_ref - 1.0) * 100.0
            span = (t - t_ref).total_seconds() / 3600.0
        rules = by_coin.get(coin, {})
        snaps.append(CoinSnapshot(coin, sym, t, price, change, span, vol, rsi, sum(rules.values()), rules))
    order = {c: i for i, c in enumerate(coin_order or [])}
    snaps.sort(key=lambda s: (order.get(s.coin_id, len(order)), s.coin_id))
    return MarketData(end, start, hours, candles, anomalies, corr, snaps)


@dataclass
class ModelPoint:
    run_id: str
    time: datetime
    value: float
    baseline: float | None
    version: str | None = None
    gate: str | None = None


@dataclass
class ModelSeries:
    name: str  # registered short name: trend_model, price_model_1h, ...
    experiment: str  # experiment short name: price_model for every horizon
    metric: str
    points: list[ModelPoint]
    champion_version: str | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER

    @property
    def champion(self) -> ModelPoint | None:
        return next((p for p in self.points if p.version is not None and p.version == self.champion_version), None)

    @property
    def latest(self) -> ModelPoint | None:
        return self.points[-1] if self.points else None


def load_model_history(mlf, models: tuple[str, ...] = REPORT_MODELS, max_runs: int = 500) -> list[ModelSeries]:
    """Every run of the experiments `<prefix>/<model>` with its primary metric and baseline, in
    start-time order, joined to registered versions (gate tag, champion alias) where they exist.
    Runs need no registered model: a run with the metric is a point. A default (sqlite) store
    that does not exist yet means no runs: it is not created just to be found empty."""
    if not mlf.tracking_uri and not (Path(mlf.home).resolve() / "mlflow" / "mlflow.db").exists():
        return []
    client = mlf.client()
    out: list[ModelSeries] = []
    for model in models:
        exp = client.get_experiment_by_name(f"{mlf.experiment_prefix}/{model}")
        if exp is None:
            continue
        metric = PRIMARY_METRIC.get(model, "auc_roc")
        runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"], max_results=max_runs)
        series: dict[str, ModelSeries] = {}
        for r in runs:
            value = r.data.metrics.get(metric)
            if value is None or r.info.status == "FAILED":
                continue
            name = model
            if model == "price_model":
                horizon = r.data.tags.get("horizon") or r.data.params.get("horizon")
                name = f"price_model_{horizon}" if horizon else model
            t = datetime.fromtimestamp((r.info.start_time or 0) / 1000.0, tz=timezone.utc)
            s = series.setdefault(name, ModelSeries(name, model, metric, []))
            s.points.append(ModelPoint(r.info.run_id, t, float(value), r.data.metrics.get(f"baseline_{metric}")))
        for name, s in sorted(series.items()):
            _attach_versions(client, mlf.registered_name(name), s)
            s.points.sort(key=lambda p: p.time)
            out.append(s)
    return out


def _attach_versions(client, registered_name: str, s: ModelSeries) -> None:
    try:
        versions = client.search_model_versions(f"name='{registered_name}'")
    except Exception:  # noqa: BLE001 - never registered
        return
    by_run = {v.run_id: v for v in versions}
    for p in s.points:
        v = by_run.get(p.run_id)
        if v is not None:
            p.version = str(v.version)
            p.gate = (v.tags or {}).get("gate")
    try:
        s.champion_version = str(client.get_model_version_by_alias(registered_name, CHAMPION).version)
    except Exception:  # noqa: BLE001 - no alias yet
        s.champion_version = None


# ------------------------------------------------------------------------------- plotting
def new_figure(size: tuple[float, float], dpi: int = DEFAULT_DPI) -> Figure:
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path, dpi: int | None = None) -> Path:
    """PNG at exactly figsize * dpi pixels (no tight bbox cropping)."""
    fig.savefig(path, format="png", dpi=dpi or fig.dpi, facecolor="white")
    return path


def _price_axis(ax, span: float) -> None:
    """Plain prices with thousands separators; decimals follow the visible range (BTC 0, ADA 4)."""
    decimals = int(min(8, max(0, 2 - math.floor(math.log10(span))))) if span > 0 else 2
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.{decimals}f}"))


def _time_axis(ax) -> None:
    loc = mdates.AutoDateLocator(minticks=4, maxticks=10)
    ax.xaxis.set_major_locator(loc)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))


def _naive_utc(s: pl.Series) -> np.ndarray:
    if isinstance(s.dtype, pl.Datetime) and s.dtype.time_zone is not None:
        s = s.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return mdates.date2num(s.to_numpy())


def fmt_price(p: float | None) -> str:
    if p is None:
        return "–"
    if abs(p) >= 1000:
        return f"{p:,.0f}"
    if abs(p) >= 1:
        return f"{p:,.2f}"
    return f"{p:.4g}"


def _message_figure(size: tuple[float, float], title: str, message: str, dpi: int) -> Figure:
    fig = new_figure(size, dpi)
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title, fontsize=16, fontweight="bold")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, color="#555555", wrap=True,
            bbox={"boxstyle": "round,pad=1", "facecolor": "#f5f5f5", "edgecolor": "#cccccc"})
    return fig


def plot_candles(market: MarketData, coin_id: str, dpi: int = DEFAULT_DPI) -> Figure:
    """1-minute candles with Bollinger(20, 2) and anomaly markers above, RSI(14) below."""
    c = market.candles.filter(pl.col("coin_id") == coin_id)
    sym = market.symbol(coin_id).upper()
    snap = next((s for s in market.snapshots if s.coin_id == coin_id), None)
    if c.height == 0:
        return _message_figure(CANDLES_SIZE, f"{sym} ({coin_id})", f"no 1-minute candles in the last {market.hours:g} h", dpi)
    fig = new_figure(CANDLES_SIZE, dpi)
    gs = fig.add_gridspec(2, 1, height_ratios=[3, 1])
    ax = fig.add_subplot(gs[0])
    ax_rsi = fig.add_subplot(gs[1], sharex=ax)

    x = _naive_utc(c["minute"])
    o, h, lo, cl = (c[k].to_numpy() for k in ("open", "high", "low", "close"))
    up = cl >= o
    colors = np.where(up, UP, DOWN)
    width = 0.7 / 1440.0
    span = float(np.nanmax(h) - np.nanmin(lo)) or float(np.nanmax(h)) * 1e-3 or 1.0
    body = np.maximum(np.abs(cl - o), span * 0.002)
    ax.vlines(x, lo, h, colors=colors, linewidth=0.8, zorder=2)
    bottom = np.minimum(o, cl)
    left, right = x - width / 2, x + width / 2
    bodies = np.stack([np.column_stack([left, bottom]), np.column_stack([left, bottom + body]),
                       np.column_stack([right, bottom + body]), np.column_stack([right, bottom])], axis=1)
    # one collection instead of a patch per candle: same picture, a fraction of the draw time
    ax.add_collection(PolyCollection(bodies, facecolors=colors, edgecolors=colors, linewidths=0.3, zorder=3))

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
            ax.scatter(_naive_utc(grp["event_time"]), grp["price_usd"].to_numpy(), marker=style["marker"],
                       s=np.where(crit, 110, 55), color=style["color"], edgecolors=np.where(crit, "black", "white"),
                       linewidths=np.where(crit, 1.4, 0.6), zorder=5)
            handles.append(Line2D([], [], marker=style["marker"], color=style["color"], linestyle="",
                                  markersize=8, label=f"{style['label']} ({grp.height})"))
        handles.append(Line2D([], [], marker="o", color="white", markeredgecolor="black", markeredgewidth=1.4,
                              linestyle="", markersize=8, label="black edge: critical"))
    # above the plot, so it never hides a candle or a marker
    ax.legend(handles=handles, loc="lower left", bbox_to_anchor=(0.0, 1.0), fontsize=9, frameon=False,
              ncol=min(len(handles), 4), borderaxespad=0.3)
    _price_axis(ax, span)
    ax.margins(y=0.05)
    ax.set_ylabel("price (USD)")
    ax.grid(True, alpha=0.25)
    ax.tick_params(labelbottom=False)

    title = f"{sym} ({coin_id}) — 1-minute candles, last {market.hours:g} h"
    if snap is not None and snap.last_price is not None:
        title += f"   ·   last {fmt_price(snap.last_price)} USD"
        if snap.change_24h_pct is not None:
            title += f"   ·   {_span_label(snap)} change {snap.change_24h_pct:+.2f} %"
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
    _time_axis(ax_rsi)
    ax_rsi.set_xlabel("time (UTC)")
    ax.set_xlim(x.min() - width, x.max() + width)
    return fig


def _span_label(s: CoinSnapshot) -> str:
    if s.change_span_hours is None or s.change_span_hours >= 23.9:
        return "24h"
    return f"{s.change_span_hours:.1f}h"


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
        return _message_figure(CORR_SIZE, "Correlation of 1-minute returns", "no correlations yet (needs two coins with candles)", dpi)
    labels = [market.symbol(c).upper() for c in coins]
    fig = new_figure(CORR_SIZE, dpi)
    axes = fig.subplots(1, 2)
    end = corr["window_end"].max()
    im = None
    for ax, window in zip(axes, ("24h", "7d")):
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
    fig.suptitle(f"Correlation of 1-minute returns (Pearson), window ending {_ts(end)}", fontsize=14, fontweight="bold")
    fig.colorbar(im, ax=list(axes), shrink=0.85, label="correlation")
    return fig


def plot_model_performance(series: list[ModelSeries], dpi: int = DEFAULT_DPI, note: str | None = None) -> Figure:
    """One panel per model: each MLflow run's primary metric (solid) and its naive baseline
    (dashed) in run order, labelled with the registered version and the run's start time; the
    champion is a gold star, versions the gate rejected are hollow."""
    if not series:
        return _message_figure(MODELS_SIZE, "Model performance vs baseline",
                               note or "No MLflow model runs yet.\nTrain the models (training_job) to see them here.", dpi)
    by_exp: dict[str, list[ModelSeries]] = {}
    for s in series:
        by_exp.setdefault(s.experiment, []).append(s)
    n = len(by_exp)
    ncols = 1 if n == 1 else 2
    nrows = (n + ncols - 1) // ncols
    fig = new_figure(MODELS_SIZE, dpi)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    palette = ["#1565c0", "#2e7d32", "#c62828", "#6a1b9a", "#ef6c00"]
    for ax, (exp, group) in zip(axes, by_exp.items()):
        metric = group[0].metric
        # x is the run's position in the experiment (runs can be seconds or days apart)
        order = sorted({(p.time, p.run_id) for s in group for p in s.points})
        pos = {rid: i for i, (_, rid) in enumerate(order)}
        for k, s in enumerate(group):
            color = palette[k % len(palette)]
            x = np.array([pos[p.run_id] for p in s.points], dtype=float)
            v = np.array([p.value for p in s.points])
            b = np.array([np.nan if p.baseline is None else p.baseline for p in s.points])
            label = s.name.replace("price_model_", "") if exp == "price_model" else "model"
            ax.plot(x, v, color=color, linewidth=1.8, label=f"{label} {metric}", zorder=3)
            rejected = np.array([p.gate == "rejected" for p in s.points])
            ax.scatter(x[~rejected], v[~rejected], color=color, s=40, zorder=4)
            if rejected.any():
                ax.scatter(x[rejected], v[rejected], facecolors="white", edgecolors=color, s=40, linewidths=1.5, zorder=4)
            if np.isfinite(b).any():
                ax.plot(x, b, color=color, linestyle="--", linewidth=1.2, alpha=0.6, marker=".",
                        label=f"{label} baseline", zorder=2)
            if len(s.points) <= 25:
                for p, xi in zip(s.points, x):
                    if p.version:
                        ax.annotate(f"v{p.version}", (xi, p.value), textcoords="offset points", xytext=(0, 7),
                                    ha="center", fontsize=8, color=color)
            champ = s.champion
            if champ is not None:
                cx = pos[champ.run_id]
                ax.scatter(cx, champ.value, marker="*", s=320, color="#fdd835", edgecolors="black", linewidths=1.0, zorder=6)
                ax.annotate(f"champion v{champ.version}", (cx, champ.value), textcoords="offset points",
                            xytext=(10, -14), fontsize=9, fontweight="bold", zorder=7)
        better = "higher" if group[0].higher_is_better else "lower"
        ax.set_title(f"{exp} — {metric} ({better} is better)", fontsize=12, fontweight="bold", loc="left")
        ax.set_ylabel(metric)
        ax.grid(True, alpha=0.25)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=8, integer=True))
        ax.xaxis.set_major_formatter(FuncFormatter(
            lambda val, _pos, order=order: order[int(val)][0].strftime("%m-%d\n%H:%M") if 0 <= val < len(order) and val == int(val) else ""))
        ax.set_xlim(-0.5, max(len(order) - 0.5, 1.5))
        ax.margins(y=0.15)
        extra = [Line2D([], [], marker="*", color="#fdd835", markeredgecolor="black", linestyle="", markersize=14, label="champion"),
                 Line2D([], [], marker="o", color="grey", markerfacecolor="white", linestyle="", label="gate rejected")]
        h, _ = ax.get_legend_handles_labels()
        ax.legend(handles=h + extra, fontsize=8, loc="best", framealpha=0.85)
    for ax in axes[len(by_exp):]:
        ax.set_axis_off()
    missing = [m for m in REPORT_MODELS if m not in by_exp]
    sub = "Model performance vs naive baseline, per MLflow run (x: run start, UTC)"
    if missing:
        sub += f"   ·   no runs yet: {', '.join(missing)}"
    fig.suptitle(sub, fontsize=13, fontweight="bold")
    return fig


def plot_overview(market: MarketData, dpi: int = DEFAULT_DPI, size: tuple[float, float] = OVERVIEW_SIZE) -> Figure:
    """Every coin's close as % change from the start of the window, anomalies as dots."""
    if market.candles.height == 0:
        return _message_figure(size, "Market overview", "no candles yet", dpi)
    fig = new_figure(size, dpi)
    ax = fig.add_subplot()
    for coin in market.coins:
        c = market.candles.filter(pl.col("coin_id") == coin)
        if c.height == 0:
            continue
        x = _naive_utc(c["minute"])
        base = c["close"][0]
        y = (c["close"].to_numpy() / base - 1.0) * 100.0
        (line,) = ax.plot(x, y, linewidth=1.5, label=market.symbol(coin).upper())
        ax.annotate(f"{market.symbol(coin).upper()} {y[-1]:+.1f}%", (x[-1], y[-1]), textcoords="offset points",
                    xytext=(4, 0), va="center", fontsize=9, color=line.get_color(), fontweight="bold")
        a = market.anomalies.filter(pl.col("coin_id") == coin)
        if a.height:
            ax.scatter(_naive_utc(a["event_time"]), (a["price_usd"].to_numpy() / base - 1.0) * 100.0, s=14,
                       color=line.get_color(), edgecolors="black", linewidths=0.4, zorder=4)
    ax.axhline(0, color="#9e9e9e", linewidth=0.8)
    ax.set_ylabel("% change since window start")
    ax.set_title(f"Price change over the last {market.hours:g} h (dots: anomalies), up to {_ts(market.window_end)}",
                 fontsize=13, fontweight="bold", loc="left")
    ax.grid(True, alpha=0.25)
    _time_axis(ax)
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


# ------------------------------------------------------------------------------- markdown
def _ts(t: datetime | None) -> str:
    if t is None:
        return "–"
    return t.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _num(v: float | None, fmt: str) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, fmt)


def coin_table(market: MarketData) -> str:
    rows = ["| coin | last price (USD) | 24h change | 15m volatility | RSI(14) | anomalies 24h |", "|---|---:|---:|---:|---:|---|"]
    for s in market.snapshots:
        change = "–" if s.change_24h_pct is None else f"{s.change_24h_pct:+.2f} %" + (
            "" if _span_label(s) == "24h" else f" (over {_span_label(s)})")
        vol = "–" if s.volatility_15m is None else f"{s.volatility_15m * 100:.3f} %"
        rules = ", ".join(f"{r} {n}" for r, n in sorted(s.anomalies_by_rule.items()))
        rows.append(f"| {s.symbol.upper()} ({s.coin_id}) | {fmt_price(s.last_price)} | {change} | {vol} | "
                    f"{_num(s.rsi_14, '.1f')} | {s.anomalies_24h}" + (f" ({rules})" if rules else "") + " |")
    return "\n".join(rows)


def top_correlations(market: MarketData, limit: int = 5) -> list[tuple[str, str, float | None, float | None, int]]:
    """(coin_a, coin_b, corr 24h, corr 7d, n 24h) by |corr 24h| (7d when 24h is missing)."""
    corr = market.correlations
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    for a, b, w, v, n in corr.select("coin_a", "coin_b", "window_name", "corr", "n").iter_rows():
        d = pairs.setdefault((a, b), {})
        d[w] = v
        d[f"n_{w}"] = n
    rows = [(a, b, d.get("24h"), d.get("7d"), int(d.get("n_24h") or 0)) for (a, b), d in pairs.items()]
    rows = [r for r in rows if r[2] is not None or r[3] is not None]
    rows.sort(key=lambda r: -abs(r[2] if r[2] is not None else r[3]))
    return rows[:limit]


def correlation_table(market: MarketData, limit: int = 5) -> str:
    top = top_correlations(market, limit)
    if not top:
        return "(no correlations yet)"
    rows = ["| pair | 24h corr | 7d corr | paired minutes (24h) |", "|---|---:|---:|---:|"]
    for a, b, c24, c7, n in top:
        rows.append(f"| {market.symbol(a).upper()} / {market.symbol(b).upper()} | {_num(c24, '+.3f')} | {_num(c7, '+.3f')} | {n} |")
    return "\n".join(rows)


def model_table(series: list[ModelSeries], note: str | None = None) -> str:
    if not series:
        return note or "(no MLflow model runs yet)"
    rows = ["| model | metric | champion | champion value vs baseline | latest run | latest value vs baseline | runs |",
            "|---|---|---|---|---|---|---:|"]
    for s in series:
        c, latest = s.champion, s.latest
        champ = f"v{s.champion_version}" if s.champion_version else "none"

        def vs(p: ModelPoint | None) -> str:
            if p is None:
                return "–"
            base = "–" if p.baseline is None else f"{p.baseline:.4g}"
            verdict = ""
            if p.baseline is not None:
                beats = p.value > p.baseline if s.higher_is_better else p.value < p.baseline
                verdict = " ✓" if beats else " ✗"
            return f"{p.value:.4g} vs {base}{verdict}"

        latest_label = "–" if latest is None else (f"v{latest.version}" if latest.version else "unregistered") + (
            f" ({latest.gate})" if latest is not None and latest.gate else "")
        rows.append(f"| {s.name} | {s.metric} | {champ} | {vs(c)} | {latest_label} | {vs(latest)} | {len(s.points)} |")
    return "\n".join(rows)


@dataclass
class Figures:
    overview: str | None = None
    candles: dict[str, str] = field(default_factory=dict)  # coin_id -> file name
    correlations: str | None = None
    models: str | None = None

    def all(self) -> list[str]:
        return [f for f in (self.overview, *self.candles.values(), self.correlations, self.models) if f]


def render_markdown(market: MarketData, series: list[ModelSeries], figures: Figures, generated_at: datetime,
                    model_note: str | None = None) -> str:
    """report.md: key numbers first, then the figures (relative links, so the page works from
    the timestamped directory and from latest/ alike)."""
    out = [
        "# Crypto market report",
        "",
        f"Generated {_ts(generated_at)} · data up to {_ts(market.window_end)} · candle window {market.hours:g} h",
        "",
        "## Coins",
        "",
        coin_table(market) if market.snapshots else "(no market data yet)",
        "",
        "## Top correlations (1-minute returns)",
        "",
        correlation_table(market),
        "",
        "## Models (primary metric vs naive baseline)",
        "",
        model_table(series, model_note),
        "",
        "## Figures",
        "",
    ]
    if figures.overview:
        out += [f"![overview]({figures.overview})", ""]
    for coin, f in figures.candles.items():
        out += [f"### {market.symbol(coin).upper()} ({coin})", "", f"![{coin} candles]({f})", ""]
    if figures.correlations:
        out += ["### Correlations", "", f"![correlations]({figures.correlations})", ""]
    if figures.models:
        out += ["### Model performance", "", f"![model performance]({figures.models})", ""]
    return "\n".join(out)


# ------------------------------------------------------------------------------- writing
@dataclass
class ReportResult:
    report_dir: Path
    latest_dir: Path
    markdown_path: Path
    market: MarketData
    series: list[ModelSeries]
    figures: Figures
    model_note: str | None
    preview_uri: str | None
    removed: list[str]


def write_report(
    conn: duckdb.DuckDBPyConnection,
    mlf,
    root: Path,
    *,
    hours: float = 6.0,
    dpi: int = DEFAULT_DPI,
    coin_order: list[str] | None = None,
    keep_reports: int = 0,
    now: datetime | None = None,
    logger=None,
) -> ReportResult:
    """Render every figure and report.md into `root/reports/<stamp>/` (via a temp dir and a
    rename) and refresh `root/reports/latest/`. MLflow trouble never fails the report: the model
    figure says what went wrong instead."""
    now = now or datetime.now(timezone.utc)
    reports = Path(root) / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    _sweep_stale(reports)
    market = load_market(conn, hours, coin_order)

    model_note = None
    try:
        series = load_model_history(mlf)
    except Exception as exc:  # noqa: BLE001 - a report without models beats no report
        series = []
        model_note = f"MLflow could not be read: {type(exc).__name__}: {exc}"[:300]
        if logger is not None:
            logger.warning(model_note)

    stamp = now.astimezone(timezone.utc).strftime(STAMP_FORMAT)
    tmp = reports / f".tmp-{stamp}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    figures = Figures()
    preview_uri = None
    try:
        fig = plot_overview(market, dpi)
        figures.overview = save_figure(fig, tmp / "overview.png").name
        preview_uri = data_uri(fig, dpi=max(24, dpi * 2 // 5))
        for coin in market.coins:
            if market.candles.filter(pl.col("coin_id") == coin).height == 0:
                continue
            name = f"candles_{_safe(coin)}.png"
            save_figure(plot_candles(market, coin, dpi), tmp / name)
            figures.candles[coin] = name
        figures.correlations = save_figure(plot_correlations(market, dpi), tmp / "correlations.png").name
        figures.models = save_figure(plot_model_performance(series, dpi, model_note), tmp / "models.png").name
        (tmp / "report.md").write_text(render_markdown(market, series, figures, now, model_note), encoding="utf-8")
        final = _free_name(reports, stamp)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    latest = publish_latest(final, reports / "latest")
    removed = prune_reports(reports, keep_reports) if keep_reports > 0 else []
    return ReportResult(final, latest, final / "report.md", market, series, figures, model_note, preview_uri, removed)


def publish_latest(src: Path, latest: Path) -> Path:
    """Replace `latest` with a copy of `src`: the copy (hard links where possible) is built in a
    temp dir beside it, then renamed over; readers see the old or the new report, never a mix."""
    parent = latest.parent
    tmp = parent / f".tmp-latest-{uuid.uuid4().hex[:8]}"
    try:
        shutil.copytree(src, tmp, copy_function=_link_or_copy)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if latest.is_symlink() or latest.is_file():
        latest.unlink()
    elif latest.exists():
        old = parent / f".old-latest-{uuid.uuid4().hex[:8]}"
        os.rename(latest, old)  # a directory cannot be renamed over a non-empty one
    os.rename(tmp, latest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return latest


def prune_reports(reports: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` timestamped report directories."""
    stamps = sorted(p.name for p in reports.iterdir() if p.is_dir() and _STAMP_RE.match(p.name))
    doomed = stamps[:-keep] if keep > 0 else []
    for name in doomed:
        shutil.rmtree(reports / name, ignore_errors=True)
    return doomed


def _link_or_copy(src: str, dst: str) -> str:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def _free_name(reports: Path, stamp: str) -> Path:
    final = reports / stamp
    k = 2
    while final.exists():
        final = reports / f"{stamp}-{k}"
        k += 1
    return final


def _sweep_stale(reports: Path, max_age_s: float = 3600.0) -> None:
    """Temp dirs left by a crashed run (older than an hour, so a concurrent run is never hit)."""
    if not (reports / "latest").exists():
        # a crash between the two renames of publish_latest: the old copy is still complete
        olds = sorted((p for p in reports.iterdir() if p.name.startswith(".old-latest-")), key=lambda p: p.stat().st_mtime)
        if olds:
            os.rename(olds[-1], reports / "latest")
    cutoff = time.time() - max_age_s
    for p in reports.iterdir():
        if p.name.startswith((".tmp-", ".old-latest-")) and p.is_dir():
            try:
                if p.stat().st_mtime < cutoff:
                    shutil.rmtree(p, ignore_errors=True)
            except OSError:
                pass


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
