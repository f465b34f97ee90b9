"""The market report: figures and a markdown page under <CRYPTO_HOME>/reports/, refreshed by its
own schedule (report_schedule, every 15 min by default, running in live mode and compose).

A schedule of a one-asset job, not AutomationCondition.on_cron: on_cron waits until ALL of the
report's deps updated since the tick, and the four models update only hourly (or never while no
retrain runs), so the 15-minute report would come out hourly at best. The report is meant to
show the freshest candles and anomalies with whatever models exist, so it runs on the clock.
"""

import dagster as dg
from pydantic import Field

from crypto_assets.defs.automation import build_schedule
from crypto_assets.defs.code_versions import source_version
from crypto_assets.resources import LakehouseResource
from crypto_assets.resources.mlflow import MlflowResource

REPORT_CODE = ("crypto_assets.report",)  # imported when the asset runs, never at code load


class MarketReportConfig(dg.Config):
    hours: float = Field(default=6.0, gt=0, description="candlestick window: hours before the newest candle")
    dpi: int = Field(default=100, ge=40, le=300, description="PNG resolution (pixels = figure inches * dpi)")
    keep_reports: int = Field(default=0, ge=0, description="keep only the newest N timestamped reports; 0 keeps all")


def _market_report(context: dg.AssetExecutionContext, config: MarketReportConfig, lakehouse: LakehouseResource,
                  mlflow: MlflowResource) -> dg.MaterializeResult:
    """PNG figures and report.md under `reports/<UTC timestamp>/`, mirrored to `reports/latest/`:
    per-coin 1-minute candles with Bollinger bands, anomaly markers and RSI(14); per traded product
    1-minute candles from trades with VWAP and buy/sell volume (trade_bars_1m); the 24 h / 7 d
    correlation heat-maps; each model's primary metric vs its baseline per MLflow run with the
    champion marked; the key numbers per coin, top correlations and champions in markdown."""
    # Imported here: matplotlib costs ~2 s, which every run worker would pay at code load.
    from crypto_assets.report.key_figures import headline, key_figures
    from crypto_assets.report.markdown import coin_table, correlation_table, model_table, trade_table
    from crypto_assets.report.publish import write_report

    with lakehouse.connect() as conn:
        res = write_report(
            conn, mlflow, lakehouse.root, hours=config.hours, dpi=config.dpi,
            coin_order=list(lakehouse.coins), keep_reports=config.keep_reports, logger=context.log,
        )
    m = res.market
    files = "\n".join(f"- `{res.report_dir / f}`" for f in ["report.md", *res.figures.all()])
    summary = "\n\n".join([
        headline(m, res.series),
        f"**Data up to** {m.window_end:%Y-%m-%d %H:%M} UTC · candle window {m.hours:g} h" if m.window_end else "**No market data yet**",
        coin_table(m) if m.snapshots else "",
        "**Trades**\n\n" + trade_table(res.trades),
        "**Top correlations**\n\n" + correlation_table(m, 3),
        "**Models**\n\n" + model_table(res.series, res.model_note),
        f"**Files** (also in `{res.latest_dir}`)\n\n{files}",
    ])
    md: dict = {
        "summary": dg.MetadataValue.md(summary),
        "report_dir": dg.MetadataValue.path(str(res.report_dir)),
        "latest_dir": dg.MetadataValue.path(str(res.latest_dir)),
        "report_md": dg.MetadataValue.path(str(res.markdown_path)),
        "figures": res.figures.all(),
        **key_figures(m, res.series),
        "trades_in_window": res.trades.trades,
        "trade_bars_in_window": res.trades.bar_count,
        "trade_products": len(res.trades.products),
        "models_with_runs": len(res.series),
        "champions": {s.name: s.champion_version or "none" for s in res.series},
    }
    if m.window_end is not None:
        md["data_up_to"] = dg.MetadataValue.timestamp(m.window_end)
        md["data_up_to_utc"] = f"{m.window_end:%Y-%m-%d %H:%M} UTC"
    if res.preview_uri:
        md["preview"] = dg.MetadataValue.md(f"![overview]({res.preview_uri})")
    if res.removed:
        md["pruned_reports"] = res.removed
    if res.model_note:
        context.log.warning(res.model_note)
    context.log.info(f"report written to {res.report_dir} ({len(res.figures.all())} figures)")
    return dg.MaterializeResult(metadata=md)


# Decorated here, not with @, so that its code version can hash the function's own source and
# the report builder it runs (crypto_assets.report, read as files: see defs/code_versions.py).
market_report = dg.asset(
    deps=["ohlcv_1m", "trade_bars_1m", "correlations", "anomalies", "market_features",
          "trend_model", "anomaly_model", "price_model", "coin_clusters"],
    group_name="report",
    kinds={"duckdb", "mlflow", "matplotlib"},
    owners=["team:data-eng"],
    name="market_report",
    code_version=source_version(_market_report, MarketReportConfig, unimported=REPORT_CODE),
)(_market_report)


report_job = dg.define_asset_job(
    "report_job",
    selection=dg.AssetSelection.assets("market_report"),
    description="Rebuild the market report from what the warehouse and MLflow hold now.",
    executor_def=dg.in_process_executor,
)


def report_run_config(keep_reports: int) -> dict:
    """A scheduled report keeps the newest `keep_reports` (a refresh every 15 min would otherwise
    pile up ~100 directories a day)."""
    return {"ops": {"market_report": {"config": {"keep_reports": int(keep_reports)}}}}


def build_report_schedule(cron: str = "*/15 * * * *", default_on: bool = False,
                          keep_reports: int = 96) -> dg.ScheduleDefinition:
    return build_schedule("report_schedule", report_job, cron, default_on,
                          "Refresh market_report (figures, report.md, key figures in the UI) on the clock.",
                          run_config=report_run_config(keep_reports))
