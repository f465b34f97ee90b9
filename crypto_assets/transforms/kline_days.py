"""Writing one UTC day of klines: the day's rows of the loaded products replaced, and their gap
report measured, in ONE DuckDB transaction, so a partition re-run (or a run killed halfway and
re-run) leaves exactly one row per (exchange, product, minute) and a gap report that matches it.
"""

from __future__ import annotations

from datetime import date, datetime

import duckdb
import polars as pl

from crypto_assets.producers.exchanges.klines import KLINE_SCHEMA, MINUTES_PER_DAY, day_bounds
from crypto_assets.warehouse.kline_tables import KLINES_1M

MAX_RANGES = 20
_COLUMNS = ", ".join(KLINES_1M.column_names)

# Every minute of the day per loaded product, without a kline -> runs of consecutive minutes.
_GAPS_SQL = f"""
WITH minutes AS (
    SELECT unnest(generate_series($start::TIMESTAMPTZ, $end::TIMESTAMPTZ - INTERVAL 1 MINUTE,
                                  INTERVAL 1 MINUTE)) AS minute
), missing AS (
    SELECT p.exchange, p.product, m.minute FROM _kline_products p CROSS JOIN minutes m
    ANTI JOIN klines_1m k ON k.exchange = p.exchange AND k.product = p.product AND k.bar_start = m.minute
), runs AS (
    SELECT exchange, product, min(minute) AS first, max(minute) AS last
    FROM (SELECT *, minute - to_minutes(row_number() OVER (PARTITION BY exchange, product ORDER BY minute)::BIGINT)
                    AS run FROM missing)
    GROUP BY exchange, product, run
), ranked AS (
    SELECT *, row_number() OVER (PARTITION BY exchange, product ORDER BY first) AS n FROM runs
), per_product AS (
    SELECT exchange, product, sum(datediff('minute', first, last) + 1)::INTEGER AS missing_minutes,
           string_agg(CASE WHEN n <= {MAX_RANGES} THEN strftime(first, '%H:%M') || '-' || strftime(last, '%H:%M') END,
                      ', ' ORDER BY first) AS missing_ranges
    FROM ranked GROUP BY exchange, product
)
SELECT $day::DATE, p.exchange, p.product, {MINUTES_PER_DAY} - coalesce(g.missing_minutes, 0),
       coalesce(g.missing_minutes, 0), g.missing_ranges, $loaded_at::TIMESTAMPTZ
FROM _kline_products p LEFT JOIN per_product g USING (exchange, product)
"""


def replace_day(conn: duckdb.DuckDBPyConnection, frame: pl.DataFrame, products: pl.DataFrame, day: date,
                loaded_at: datetime) -> None:
    """Replace `day`'s klines and gap rows of every (exchange, product) in `products` by `frame`
    (klines_1m columns but loaded_at), in one transaction. A product in `products` without a row
    in `frame` had no candle that day: its old rows go and its gap row says 1440 minutes."""
    start, end = day_bounds(day)
    conn.register("_klines", frame.select(list(KLINE_SCHEMA)).with_columns(loaded_at=pl.lit(loaded_at)))
    conn.register("_kline_products", products.select("exchange", "product").unique())
    conn.execute("BEGIN TRANSACTION")
    try:
        conn.execute("DELETE FROM klines_1m WHERE bar_start >= $start AND bar_start < $end AND (exchange, product) IN "
                     "(SELECT (exchange, product) FROM _kline_products)", {"start": start, "end": end})
        conn.execute(f"INSERT INTO klines_1m ({_COLUMNS}) SELECT {_COLUMNS} FROM _klines")
        conn.execute("DELETE FROM kline_gaps WHERE day = $day AND (exchange, product) IN "
                     "(SELECT (exchange, product) FROM _kline_products)", {"day": day})
        conn.execute("INSERT INTO kline_gaps " + _GAPS_SQL,
                     {"start": start, "end": end, "day": day, "loaded_at": loaded_at})
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.unregister("_klines")
        conn.unregister("_kline_products")


def day_gaps(conn: duckdb.DuckDBPyConnection, day: date) -> list[tuple[str, str, int, int, str | None]]:
    """(exchange, product, loaded, missing, ranges) of the day, most missing first."""
    return conn.execute("SELECT exchange, product, loaded_minutes, missing_minutes, missing_ranges FROM kline_gaps "
                        "WHERE day = $day ORDER BY missing_minutes DESC, exchange, product", {"day": day}).fetchall()
