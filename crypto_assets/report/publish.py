"""Writing the report to disk: every figure and report.md into a new timestamped directory, a copy
of it as `latest/`, pruning of old reports and the sweep of what a crashed run left.

Layout on disk (`write_report`)::

    <CRYPTO_HOME>/reports/<YYYYmmddTHHMMSSZ>/   one report, never modified after it appears
        report.md  overview.png  candles_<coin>.png ...  trades_<exchange>_<product>.png ...
        correlations.png  models.png
    <CRYPTO_HOME>/reports/latest/               a copy of the newest report

A report is written into a hidden temp directory and renamed into place (the helpers of
crypto_assets.warehouse.atomic_files), so a timestamped directory is either complete or absent;
`latest/` is replaced by renaming a complete copy over it.
"""

from __future__ import annotations

import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from logging import Logger
from pathlib import Path

import duckdb
import polars as pl

from crypto_assets.report.markdown import Figures, render_markdown
from crypto_assets.report.market_data import MarketData, load_market
from crypto_assets.report.model_history import ModelSeries, load_model_history
from crypto_assets.report.model_plot import plot_model_performance
from crypto_assets.report.plots import DEFAULT_DPI, data_uri, plot_candles, plot_correlations, plot_overview, save_figure
from crypto_assets.report.trade_data import TradeData, load_trades
from crypto_assets.report.trade_plots import plot_trade_candles
from crypto_assets.resources.mlflow import MlflowResource
from crypto_assets.warehouse.atomic_files import link_or_copy, publish_dir, staged_dir

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"
STAMP_RE = re.compile(r"^\d{8}T\d{6}Z(-\d+)?$")  # a timestamped report directory's name


@dataclass
class ReportResult:
    report_dir: Path
    latest_dir: Path
    markdown_path: Path
    market: MarketData
    trades: TradeData
    series: list[ModelSeries]
    figures: Figures
    model_note: str | None
    preview_uri: str | None
    removed: list[str]


def write_report(
    conn: duckdb.DuckDBPyConnection,
    mlf: MlflowResource,
    root: Path,
    *,
    hours: float = 6.0,
    dpi: int = DEFAULT_DPI,
    coin_order: list[str] | None = None,
    keep_reports: int = 0,
    now: datetime | None = None,
    logger: Logger | None = None,
) -> ReportResult:
    """Render every figure and report.md into `root/reports/<stamp>/` (via a temp dir and a
    rename) and refresh `root/reports/latest/`. MLflow trouble never fails the report: the model
    figure says what went wrong instead."""
    now = now or datetime.now(UTC)
    reports = Path(root) / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    sweep_stale(reports)
    market = load_market(conn, hours, coin_order)
    trades = load_trades(conn, hours, coin_order)

    model_note = None
    try:
        series = load_model_history(mlf)
    except Exception as exc:  # noqa: BLE001 - a report without models beats no report
        series = []
        model_note = f"MLflow could not be read: {type(exc).__name__}: {exc}"[:300]
        if logger is not None:
            logger.warning(model_note)

    stamp = now.astimezone(UTC).strftime(STAMP_FORMAT)
    figures = Figures()
    preview_uri = None
    with staged_dir(reports, f".tmp-{stamp}-") as tmp:
        fig = plot_overview(market, dpi)
        figures.overview = save_figure(fig, tmp / "overview.png").name
        preview_uri = data_uri(fig, dpi=max(24, dpi * 2 // 5))
        for coin in market.coins:
            if market.candles.filter(pl.col("coin_id") == coin).height == 0:
                continue
            name = f"candles_{_safe(coin)}.png"
            save_figure(plot_candles(market, coin, dpi), tmp / name)
            figures.candles[coin] = name
        for product in trades.products:
            name = f"trades_{_safe(product.exchange)}_{_safe(product.product)}.png"
            save_figure(plot_trade_candles(trades, product.key, dpi), tmp / name)
            figures.trades[product.key] = name
        figures.correlations = save_figure(plot_correlations(market, dpi), tmp / "correlations.png").name
        figures.models = save_figure(plot_model_performance(series, dpi, model_note), tmp / "models.png").name
        (tmp / "report.md").write_text(render_markdown(market, series, figures, now, model_note, trades), encoding="utf-8")
        final = publish_dir(tmp, _free_name(reports, stamp))
    latest = publish_latest(final, reports / "latest")
    removed = prune_reports(reports, keep_reports) if keep_reports > 0 else []
    return ReportResult(final, latest, final / "report.md", market, trades, series, figures, model_note, preview_uri, removed)


def publish_latest(src: Path, latest: Path) -> Path:
    """Replace `latest` with a copy of `src`: the copy (hard links where possible) is built in a
    temp dir beside it, then renamed over; readers see the old or the new report, never a mix."""
    parent = latest.parent
    with staged_dir(parent, ".tmp-latest-") as tmp:
        shutil.copytree(src, tmp, copy_function=link_or_copy, dirs_exist_ok=True)
    old = None
    if latest.is_symlink() or latest.is_file():
        latest.unlink()
    elif latest.exists():
        old = parent / f".old-latest-{uuid.uuid4().hex[:8]}"
        os.rename(latest, old)  # a directory cannot be renamed over a non-empty one
    publish_dir(tmp, latest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return latest


def prune_reports(reports: Path, keep: int) -> list[str]:
    """Delete all but the newest `keep` timestamped report directories."""
    stamps = sorted(p.name for p in reports.iterdir() if p.is_dir() and STAMP_RE.match(p.name))
    doomed = stamps[:-keep] if keep > 0 else []
    for name in doomed:
        shutil.rmtree(reports / name, ignore_errors=True)
    return doomed


def sweep_stale(reports: Path, max_age_s: float = 3600.0) -> None:
    """Restore `latest/` if a crash between the two renames of `publish_latest` left only the old
    copy, and delete temp dirs left by a crashed run (older than an hour, so a concurrent run is
    never hit)."""
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


def _free_name(reports: Path, stamp: str) -> Path:
    final = reports / stamp
    k = 2
    while final.exists():
        final = reports / f"{stamp}-{k}"
        k += 1
    return final


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
