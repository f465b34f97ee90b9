"""History backfill (group `history`): the exchanges' 1-minute klines, one UTC day per partition.

`klines_1m` is daily-partitioned from KLINES_START_DATE (default 2025-01-01) to yesterday:
only complete UTC days are partitions (end offset 0), so a partition, once loaded, never has
minutes that simply had not happened yet; today's minutes come from the live trade bars. A
backfill of 90 partitions from the UI (or `dagster job backfill -j klines_backfill_job`) loads
90 days.

The step is in the pool `exchange_history` (one slot in dagster.yaml), so a backfill fetches one
day at a time within the exchanges' rate limits, however many runs it queues. It is not in the
`duckdb_writer` pool: that slot is held by the draining incremental step for minutes, and this
step writes once, in one short transaction after all HTTP is done, waiting for DuckDB's file
lock like the predictions step does (LakehouseResource). The write replaces the day's rows of
the configured products and their gap report together (crypto_assets.transforms.kline_days), so
re-running a partition is idempotent.

`klines_1m_complete` (WARN) lists each product with minutes missing that day. On Binance a
missing minute is an exchange outage; on Coinbase the candles API omits a minute with no trade,
so a thin product has genuinely empty minutes: they stay missing (no bar is invented), are
counted in `kline_gaps`, and the check warns without failing the run.
"""

import time
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Any

import dagster as dg
import polars as pl

from crypto_assets.defs.check_verdicts import WARN
from crypto_assets.defs.metadata import markdown_table, table_definition_metadata
from crypto_assets.producers.exchanges.klines import binance_day, binance_symbol, coinbase_day, empty_klines
from crypto_assets.producers.exchanges.rest_http import ExchangeRestClient, RestError
from crypto_assets.resources import LakehouseResource
from crypto_assets.resources.exchanges import ExchangeRestResource
from crypto_assets.settings import EXCHANGE_HISTORY_POOL, exchange_settings
from crypto_assets.transforms.kline_days import day_gaps, replace_day
from crypto_assets.warehouse.sql import first

KLINES_PARTITIONS = dg.DailyPartitionsDefinition(start_date=exchange_settings().klines_start_date,
                                                 timezone="UTC", end_offset=0)
COMPLETE = dg.AssetCheckSpec("klines_1m_complete", asset="klines_1m",
                             description="every minute of the day has a kline for every configured product "
                             "(WARN: Coinbase omits minutes without trades)")


def _fetch(client: ExchangeRestClient, fetch: Callable[[ExchangeRestClient, str, date], pl.DataFrame],
           exchange: str, product: str, day: date, stats: dict[str, dict[str, Any]],
           failed: dict[str, str]) -> pl.DataFrame:
    requests_before = client.stats.requests
    t0 = time.perf_counter()
    try:
        frame = fetch(client, product, day)
    except (RestError, ValueError) as exc:  # a bad product or a malformed answer: the others still load
        failed[f"{exchange}:{product}"] = str(exc)
        frame = empty_klines()
    stats[f"{exchange}:{product}"] = {"rows": frame.height, "requests": client.stats.requests - requests_before,
                                      "seconds": round(time.perf_counter() - t0, 2)}
    return frame


@dg.asset(
    name="klines_1m",
    deps=["coinbase_exchange", "binance_exchange"],  # external source assets (defs/sources.py)
    group_name="history",
    partitions_def=KLINES_PARTITIONS,
    pool=EXCHANGE_HISTORY_POOL,
    check_specs=[COMPLETE],
    metadata=table_definition_metadata("klines_1m"),
    kinds={"duckdb"},
    description="The exchanges' own 1-minute candles of the configured products for one UTC day "
    "(Binance /api/v3/klines, Coinbase /products/{id}/candles), replacing the day's rows; gap report in kline_gaps.",
)
def klines_1m(context: dg.AssetExecutionContext, exchanges: ExchangeRestResource,
              lakehouse: LakehouseResource) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    day = datetime.strptime(context.partition_key, "%Y-%m-%d").date()
    stats: dict[str, dict[str, Any]] = {}
    failed: dict[str, str] = {}
    frames: list[pl.DataFrame] = []
    clients = []
    with exchanges.binance_client() as binance, exchanges.coinbase_client() as coinbase:
        clients = [binance, coinbase]
        for symbol in exchanges.binance_symbols:
            frames.append(_fetch(binance, binance_day, "binance", binance_symbol(symbol), day, stats, failed))
        for product in exchanges.coinbase_products:
            frames.append(_fetch(coinbase, coinbase_day, "coinbase", product, day, stats, failed))
    loaded = [k.split(":", 1) for k in stats if k not in failed]
    products = pl.DataFrame(loaded, schema=["exchange", "product"], orient="row")
    frame = pl.concat(frames) if frames else empty_klines()
    with lakehouse.connect() as conn:
        replace_day(conn, frame, products, day, datetime.now(UTC))
        gaps = day_gaps(conn, day)
        total = int(first(conn, "SELECT count(*) FROM klines_1m")[0])
    if failed:
        context.log.error("klines_1m %s: not loaded: %s", day, failed)
        raise dg.Failure(description=f"{len(failed)} of {len(stats)} products failed for {day} (the others are "
                         "loaded; re-run the partition)", metadata={"failed": dg.MetadataValue.json(failed)})
    gap_of = {f"{e}:{p}": (missing, ranges) for e, p, _loaded, missing, ranges in gaps}
    per_product = [(k, s["rows"], gap_of.get(k, (0, None))[0], s["requests"], s["seconds"]) for k, s in stats.items()]
    yield dg.MaterializeResult(asset_key="klines_1m", metadata={
        "day": str(day),
        "rows": frame.height,
        "dagster/row_count": total,
        "rows_per_product": dg.MetadataValue.json({k: s["rows"] for k, s in stats.items()}),
        "missing_minutes_per_product": dg.MetadataValue.json({k: gap_of.get(k, (0, None))[0] for k in stats}),
        "products": dg.MetadataValue.md(markdown_table(per_product, ["product", "rows", "missing minutes",
                                                                     "requests", "seconds"])),
        "requests": sum(c.stats.requests for c in clients),
        "retries": sum(c.stats.retries for c in clients),
        "rate_limit_waits": sum(c.stats.rate_limited + c.stats.weight_waits for c in clients),
        "rate_limit_waited_s": round(sum(c.stats.waited_s for c in clients), 2),
    })
    incomplete = [(e, p, missing, ranges) for e, p, _loaded, missing, ranges in gaps if missing]
    yield dg.AssetCheckResult(
        asset_key="klines_1m", check_name="klines_1m_complete", passed=not incomplete, severity=WARN,
        description=(f"{len(incomplete)} products with minutes missing on {day}" if incomplete
                     else f"every minute of {day} loaded for {len(gaps)} products"),
        metadata={"day": str(day), "missing_minutes": sum(m for *_x, m, _r in incomplete),
                  "incomplete": dg.MetadataValue.md(markdown_table(incomplete, ["exchange", "product",
                                                                                 "missing minutes", "first ranges"]))},
    )
