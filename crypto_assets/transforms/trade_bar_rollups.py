"""trade_bars_1s → trade_bars_1m (with RSI and Bollinger) → trade_bars_1h: coarser bars rolled up
from the finer ones (open = the first bar's open, close = the last one's, sums of the volumes,
of the exact quote volume and of the counts), never from the trades again.

Each width recomputes the buckets of the finer bars stamped since its last run. The minute
indicators are then recomputed per product from its first recomputed minute to its newest,
continuing RSI's state and Bollinger's window from the minutes before (bar_indicators).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import polars as pl

from crypto_assets.transforms.bar_indicators import BB_PERIOD, INDICATOR_COLUMNS, indicators_frame
from crypto_assets.warehouse.incremental_table import Increment, incremental_table
from crypto_assets.warehouse.sql import first
from crypto_assets.warehouse.trade_bar_tables import TRADE_BARS_1H

BAR_COLUMNS = [c for c in TRADE_BARS_1H.column_names if c != "bar_seq"]  # the columns every width shares
CONTEXT_DAYS = 3  # context for the minute indicators is searched this far back first
CONTEXT_SCHEMA = {"exchange": pl.String, "product": pl.String, "bar_start": pl.Datetime("us", "UTC"), "close": pl.Float64,
                  "rsi_n": pl.Int32, "rsi_gain": pl.Float64, "rsi_loss": pl.Float64}


def bar_rows(inner: str, quote_double: str = "quote_volume_exact::DOUBLE") -> str:
    """The bar columns in table order from an aggregate `inner` that yields exchange, product,
    sec (the bar's start in epoch seconds), coin_id, open, high, low, close, base_volume,
    quote_volume_exact, quote_volume (rounded to 8 decimals), trade_count, buy_volume,
    first_trade_id, last_trade_id. VWAP is the exact quote volume over the base volume in double
    precision (`quote_double`: the exact quote volume as a double), never the rounded quote volume:
    rounding a tiny trade's value to 8 decimals could move it outside [low, high]."""
    return f"""
        SELECT exchange, product, coin_id, to_timestamp(sec) AS bar_start, open, high, low, close, base_volume,
               quote_volume,
               CASE WHEN base_volume > 0 THEN ({quote_double}) / base_volume::DOUBLE ELSE close::DOUBLE END AS vwap,
               trade_count::BIGINT AS trade_count, buy_volume, base_volume - buy_volume AS sell_volume,
               first_trade_id, last_trade_id, quote_volume_exact
        FROM ({inner})"""


def _rollup_sql(source: str, seconds: int) -> str:
    """Bars of `seconds` from the finer bars `source` selects."""
    return bar_rows(f"""SELECT *, quote_volume_exact::DECIMAL(38,8) AS quote_volume FROM (
        SELECT exchange, product, epoch_us(bar_start) // {seconds * 1_000_000} * {seconds} AS sec,
               any_value(coin_id) AS coin_id, arg_min(open, bar_start) AS open, max(high) AS high, min(low) AS low,
               arg_max(close, bar_start) AS close, sum(base_volume) AS base_volume,
               sum(quote_volume_exact) AS quote_volume_exact, sum(trade_count) AS trade_count,
               sum(buy_volume) AS buy_volume, arg_min(first_trade_id, bar_start) AS first_trade_id,
               arg_max(last_trade_id, bar_start) AS last_trade_id
        FROM {source} GROUP BY exchange, product, sec)""")


def _source(conn: duckdb.DuckDBPyConnection, inc: Increment, finer: str, seconds: int, fresh: bool) -> str | None:
    """The finer bars of every bucket a bar stamped in the window falls in. On a first run the
    window is every finer bar; else the buckets' keys go to `roll_keys` and their bars are read
    within the keys' time range (zone maps prune the rest). None: no finer bar was stamped (the
    finer run judged only late trades)."""
    if fresh:
        return f"(SELECT * FROM {finer} WHERE {inc.window})"
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE roll_keys AS
        SELECT DISTINCT exchange, product, epoch_us(bar_start) // {seconds * 1_000_000} AS bk
        FROM {finer} WHERE {inc.window}""")
    lo, hi = first(conn, f"SELECT to_timestamp(min(bk) * {seconds}), to_timestamp((max(bk) + 1) * {seconds}) FROM roll_keys")
    if lo is None:
        return None
    return f"""(SELECT f.* FROM {finer} f SEMI JOIN roll_keys k ON f.exchange = k.exchange AND f.product = k.product
                  AND epoch_us(f.bar_start) // {seconds * 1_000_000} = k.bk
                WHERE f.bar_start >= '{lo.isoformat()}' AND f.bar_start < '{hi.isoformat()}')"""


def _mark(inc: Increment, table: str) -> int:
    inc.mark_touched(f"SELECT bar_start AS event_time, product AS symbol FROM {table} WHERE bar_seq = {inc.new_seq}")
    return int(first(inc.conn, f"SELECT count(*) FROM {table} WHERE bar_seq = {inc.new_seq}")[0])


def _context(conn: duckdb.DuckDBPyConnection, m0_min: datetime) -> pl.DataFrame:
    """Per product, the BB_PERIOD - 1 minutes before its first recomputed one (the last carries
    the RSI state), searched within CONTEXT_DAYS first, then without bound for the products
    that have fewer there (a product back after a pause)."""
    def query(where: str):
        return conn.sql(f"""
            SELECT t.exchange, t.product, t.bar_start, t.close::DOUBLE AS close, t.rsi_n, t.rsi_gain, t.rsi_loss
            FROM trade_bars_1m t JOIN m_start s ON t.exchange = s.exchange AND t.product = s.product AND t.bar_start < s.m0
            WHERE {where}
            QUALIFY row_number() OVER (PARTITION BY t.exchange, t.product ORDER BY t.bar_start DESC) <= {BB_PERIOD - 1}
        """).pl()

    ctx = query(f"t.bar_start >= '{(m0_min - timedelta(days=CONTEXT_DAYS)).isoformat()}'")
    have = ctx.group_by("exchange", "product").len()
    short = conn.sql("SELECT exchange, product FROM m_start").pl().join(have, on=["exchange", "product"], how="left")
    short = short.filter(pl.col("len").fill_null(0) < BB_PERIOD - 1)
    if short.height:
        conn.register("m_short", short.select("exchange", "product").to_arrow())
        more = query("(t.exchange, t.product) IN (SELECT (exchange, product) FROM m_short)")
        conn.unregister("m_short")
        keep = ctx.join(short.select("exchange", "product"), on=["exchange", "product"], how="anti")
        ctx = pl.concat([keep, more])
    return ctx


def bars_1m_increment(conn: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """The minutes of the 1-second bars stamped since the last run, and the indicators of every
    minute from each product's first recomputed one on. Returns (rows written, seq)."""
    with incremental_table(conn, "trade_bars_1m", upstream="trade_bars_1s") as inc:
        if inc.nothing_new:
            return 0, inc.seq
        fresh = inc.hwm == 0 and not first(conn, "SELECT 1 FROM trade_bars_1m LIMIT 1")
        source = _source(conn, inc, "trade_bars_1s", 60, fresh)
        if source is None:
            return 0, inc.new_seq
        conn.execute(f"CREATE OR REPLACE TEMP TABLE m_new AS {_rollup_sql(source, 60)}")
        conn.execute("CREATE OR REPLACE TEMP TABLE m_start AS SELECT exchange, product, min(bar_start) AS m0 "
                     "FROM m_new GROUP BY ALL")
        m0_min = first(conn, "SELECT min(m0) FROM m_start")[0]
        if m0_min is None:
            return 0, inc.new_seq
        if fresh:
            conn.execute("CREATE OR REPLACE TEMP TABLE m_series AS SELECT * FROM m_new")
            ctx = pl.DataFrame(schema=CONTEXT_SCHEMA)
        else:
            # the stored minutes after each product's first recomputed one keep their OHLCV,
            # their indicators change with it
            conn.execute(f"""
                CREATE OR REPLACE TEMP TABLE m_series AS
                SELECT * FROM m_new
                UNION ALL
                SELECT {", ".join(f"t.{c}" for c in BAR_COLUMNS)} FROM trade_bars_1m t
                JOIN m_start s ON t.exchange = s.exchange AND t.product = s.product AND t.bar_start >= s.m0
                ANTI JOIN m_new n ON t.exchange = n.exchange AND t.product = n.product AND t.bar_start = n.bar_start
                WHERE t.bar_start >= '{m0_min.isoformat()}'""")
            ctx = _context(conn, m0_min)
        series = conn.sql("SELECT exchange, product, bar_start, close::DOUBLE AS close FROM m_series").pl()
        ind = indicators_frame(series, ctx)
        conn.register("m_ind", ind.to_arrow())
        conn.execute(f"""
            DELETE FROM trade_bars_1m USING m_start s
            WHERE trade_bars_1m.exchange = s.exchange AND trade_bars_1m.product = s.product
              AND trade_bars_1m.bar_start >= s.m0 AND trade_bars_1m.bar_start >= '{m0_min.isoformat()}'""")
        conn.execute(f"""
            INSERT INTO trade_bars_1m
            SELECT {", ".join(f"m.{c}" for c in BAR_COLUMNS)}, {", ".join(f"i.{c}" for c in INDICATOR_COLUMNS)}, {inc.new_seq}
            FROM m_series m JOIN m_ind i USING (exchange, product, bar_start) ORDER BY m.bar_start""")
        conn.unregister("m_ind")
        return _mark(inc, "trade_bars_1m"), inc.new_seq


def bars_1h_increment(conn: duckdb.DuckDBPyConnection) -> tuple[int, int]:
    """The hours of the minute bars stamped since the last run. Returns (rows written, seq)."""
    with incremental_table(conn, "trade_bars_1h", upstream="trade_bars_1m") as inc:
        if inc.nothing_new:
            return 0, inc.seq
        fresh = inc.hwm == 0 and not first(conn, "SELECT 1 FROM trade_bars_1h LIMIT 1")
        source = _source(conn, inc, "trade_bars_1m", 3600, fresh)
        if source is None:
            return 0, inc.new_seq
        if not fresh:
            conn.execute("""
                DELETE FROM trade_bars_1h USING roll_keys k
                WHERE trade_bars_1h.exchange = k.exchange AND trade_bars_1h.product = k.product
                  AND trade_bars_1h.bar_start = to_timestamp(k.bk * 3600)""")
        conn.execute(f"INSERT INTO trade_bars_1h SELECT *, {inc.new_seq} FROM ({_rollup_sql(source, 3600)}) ORDER BY bar_start")
        return _mark(inc, "trade_bars_1h"), inc.new_seq
