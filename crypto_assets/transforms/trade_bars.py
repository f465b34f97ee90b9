"""raw_trades → trade_bars_1s → trade_bars_1m (+ RSI(14), Bollinger(20, 2)) → trade_bars_1h.

Each width is its own increment (crypto_assets.warehouse.incremental_table): the 1-second bars
read the raw_trades batches past their high-water mark, the 1-minute bars the 1-second bars
stamped since theirs, the hour bars the minute bars; so a kill between two widths is finished by
the next run. A bar touched by a new trade is recomputed whole from its trades (a late trade
recomputes its second, that second's minute and hour, and the minute indicators after it), so
incremental runs equal one run over everything, exactly.

Lateness: a trade is late when it is older than the newest trade of its product in the EARLIER
batches minus `lateness` (the ticks' 10 minutes by default). Late trades stay in raw_trades,
get a quarantine row (stage trade_bars_1s, reason `late`) and count in no bar. The verdict
depends only on the batches, not on how runs group them, so a full recomputation gives the same.

Speed (10M trades: ~2M 1-second bars): the 1-second step is one DuckDB aggregate whose
open/close are arg_min/arg_max over one BIGINT key, the microsecond inside the second times
2^43 plus the trade id (exact order by (trade_time, trade_id) for trade ids below 2^43, else
the (trade_time, trade_id) struct); seconds are grouped as epoch integers (date_trunc on
TIMESTAMPTZ goes through the time-zone library); the rows go straight into the table with INSERT
… SELECT. Minutes are built from the 1-second bars and hours from the minutes, never from the
trades again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

import duckdb

from crypto_assets import rejections as R
from crypto_assets.transforms.clean import CleanConfig
from crypto_assets.transforms.trade_bar_rollups import bar_rows, bars_1h_increment, bars_1m_increment
from crypto_assets.warehouse.incremental_table import Increment, incremental_table
from crypto_assets.warehouse.sql import first, scalar
from crypto_assets.warehouse.tables import ensure_schema

LATE_STAGE = "trade_bars_1s"
ID_LIMIT = 1 << 43  # trade ids below this share one BIGINT order key with the microsecond (2^20 > 1e6)
WIDTHS = ("trade_bars_1s", "trade_bars_1m", "trade_bars_1h")

@dataclass(frozen=True)
class TradeBarsConfig:
    lateness: timedelta = CleanConfig.lateness  # older than the product's newest trade of earlier batches minus this


@dataclass
class TradeBarsResult:
    """What one run wrote: bars per table, late trades, the bars' products and time range."""

    bars: dict[str, int] = field(default_factory=lambda: dict.fromkeys(WIDTHS, 0))
    seqs: dict[str, int] = field(default_factory=dict)
    late: int = 0
    products: int = 0
    first_bar: datetime | None = None
    last_bar: datetime | None = None

    @property
    def changed(self) -> bool:
        return any(self.bars.values())


def _order_key(conn: duckdb.DuckDBPyConnection, source: str) -> tuple[str, bool]:
    """The (trade_time, trade_id) order inside a second: one BIGINT, the microsecond times 2^43
    plus the trade id, when every id fits (then the ids are the key modulo 2^43); else the
    struct. Returns (key, packed)."""
    top = scalar(conn, f"SELECT max(trade_id) FROM {source}")
    if top is not None and top >= ID_LIMIT:
        return "(trade_time, trade_id)", False
    return f"(epoch_us(trade_time) % 1000000) * {ID_LIMIT} + trade_id", True


def _aggregate_sql(source: str, key: str, packed: bool) -> str:
    """One 1-second bar per (exchange, product, second) of the trades `source` selects.

    The quote volume is split by the whole and fractional parts of price (pi, pf) and size (si,
    sf): pi·size + pf·si has at most 8 decimals, exact; only pf·sf (< 1 per trade) has 16, and
    its sum is rounded once. So quote_volume = round(Σ price·size, 8) costs one rounding of a
    small number per bar instead of a 128-bit division (DuckDB's slow path for large values), and
    the VWAP's double is the sum of two doubles that convert on the fast path."""
    ids = (f"min({key}) % {ID_LIMIT} AS first_trade_id, max({key}) % {ID_LIMIT} AS last_trade_id" if packed else
           f"arg_min(trade_id, {key}) AS first_trade_id, arg_max(trade_id, {key}) AS last_trade_id")
    return bar_rows(f"""
        SELECT *, quote_whole + quote_frac AS quote_volume_exact, quote_whole + quote_frac::DECIMAL(38,8) AS quote_volume
        FROM (
            SELECT exchange, product, epoch_us(trade_time) // 1000000 AS sec, any_value(coin_id) AS coin_id,
                   arg_min(price, {key}) AS open, max(price) AS high, min(price) AS low, arg_max(price, {key}) AS close,
                   sum(size) AS base_volume, sum(pi::DECIMAL(38,0) * size + pf::DECIMAL(38,8) * si) AS quote_whole,
                   sum(pf::DECIMAL(38,8) * sf) AS quote_frac, count(*) AS trade_count,
                   coalesce(sum(size) FILTER (WHERE side = 'buy'), 0) AS buy_volume, {ids}
            FROM (SELECT *, trunc(price) AS pi, price - trunc(price) AS pf, trunc(size) AS si, size - trunc(size) AS sf
                  FROM {source})
            GROUP BY exchange, product, sec
        )""", quote_double="quote_whole::DOUBLE + quote_frac::DOUBLE")


def _judge_lateness(conn: duckdb.DuckDBPyConnection, inc: Increment, cfg: TradeBarsConfig) -> int:
    """Per (product, batch) of the window, the cut-off for lateness: the product's newest trade
    in the earlier batches (stored state + earlier batches of the window) minus the lateness.
    Quarantines the late trades, moves the per-product state; returns how many were late."""
    conn.execute(f"""
        CREATE OR REPLACE TEMP TABLE tb_batches AS
        SELECT exchange, product, batch_id, min(trade_time) AS t_min, max(trade_time) AS t_max
        FROM raw_trades WHERE {inc.window} GROUP BY ALL""")
    conn.execute("""
        CREATE OR REPLACE TEMP TABLE tb_cut AS
        SELECT b.exchange, b.product, b.batch_id, b.t_min, b.t_max,
               greatest(s.max_trade_time, max(b.t_max) OVER (PARTITION BY b.exchange, b.product ORDER BY b.batch_id
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)) AS reference,
               reference - $lateness AS cutoff
        FROM tb_batches b LEFT JOIN trade_bar_state s USING (exchange, product)""", {"lateness": cfg.lateness})
    conn.execute("""
        INSERT INTO trade_bar_state
        SELECT exchange, product, max(t_max) FROM tb_batches GROUP BY ALL
        ON CONFLICT (exchange, product) DO UPDATE SET max_trade_time = greatest(max_trade_time, excluded.max_trade_time)""")
    if not scalar(conn, "SELECT count(*) FROM tb_cut WHERE t_min < cutoff"):
        return 0
    late = conn.execute(f"""
        INSERT INTO quarantine (stage, reason, detail, kafka_topic, kafka_partition, kafka_offset, raw_size, coin_id,
                                last_updated_at, batch_id, quarantined_at)
        SELECT '{LATE_STAGE}', '{R.LATE}',
               printf('%s %s trade %d at %s is older than the product''s newest trade of earlier batches %s minus the '
                      'lateness %s', r.exchange, r.product, r.trade_id, r.trade_time, c.reference, $lateness),
               r.kafka_topic, r.kafka_partition, r.kafka_offset, NULL, r.coin_id, r.trade_time, r.batch_id, now()
        FROM raw_trades r JOIN tb_cut c USING (exchange, product, batch_id)
        WHERE {inc.window} AND c.t_min < c.cutoff AND r.trade_time < c.cutoff""", {"lateness": cfg.lateness})
    return int(late.fetchall()[0][0])


def _late_filter(conn: duckdb.DuckDBPyConnection, lo: datetime, hi: datetime) -> str:
    """An ANTI JOIN that drops the trades quarantined as late with times in [lo, hi), or ''."""
    n = scalar(conn, "SELECT count(*) FROM quarantine WHERE stage = $s AND reason = $r AND last_updated_at >= $lo "
                     "AND last_updated_at < $hi", {"s": LATE_STAGE, "r": R.LATE, "lo": lo, "hi": hi})
    if not n:
        return ""
    return (f"ANTI JOIN (SELECT kafka_topic, kafka_partition, kafka_offset FROM quarantine WHERE stage = '{LATE_STAGE}' "
            f"AND reason = '{R.LATE}' AND last_updated_at >= '{lo.isoformat()}' AND last_updated_at < '{hi.isoformat()}') q "
            "ON r.kafka_topic = q.kafka_topic AND r.kafka_partition = q.kafka_partition AND r.kafka_offset = q.kafka_offset")


def _bars_1s(conn: duckdb.DuckDBPyConnection, cfg: TradeBarsConfig, upto: int | None, out: TradeBarsResult) -> None:
    with incremental_table(conn, "trade_bars_1s", upstream="raw_trades", upstream_position=upto) as inc:
        out.seqs["trade_bars_1s"] = inc.seq
        if inc.nothing_new:
            return
        out.seqs["trade_bars_1s"] = inc.new_seq
        out.late = _judge_lateness(conn, inc, cfg)
        lo, hi = first(conn, "SELECT min(t_min), max(t_max) FROM tb_batches")
        if lo is None:  # the window's batches hold no trades (tick batches): only the state moves
            return
        # the window's trades that are not late (the cut-off per product and batch)
        conn.execute(f"""
            CREATE OR REPLACE TEMP VIEW tb_window AS
            SELECT r.* FROM raw_trades r {"JOIN tb_cut c USING (exchange, product, batch_id)" if out.late else ""}
            WHERE {inc.window} {"AND (c.cutoff IS NULL OR r.trade_time >= c.cutoff)" if out.late else ""}""")
        fresh = inc.hwm == 0 and not first(conn, "SELECT 1 FROM trade_bars_1s LIMIT 1")
        if fresh:  # nothing stored yet: every bar of the window is new and complete
            key, packed = _order_key(conn, "tb_window")
            # no ORDER BY: sorting ~2M bars of 10M trades costs a quarter of the step; later passes
            # append in time order, and the bars' reads go by bar_seq (zone maps) first
            conn.execute(f"INSERT INTO trade_bars_1s SELECT *, {inc.new_seq} FROM ({_aggregate_sql('tb_window', key, packed)})")
        else:
            conn.execute("""
                CREATE OR REPLACE TEMP TABLE tb_keys AS
                SELECT DISTINCT exchange, product, epoch_us(trade_time) // 1000000 AS sec FROM tb_window""")
            s_lo, s_hi = first(conn, "SELECT to_timestamp(min(sec)), to_timestamp(max(sec) + 1) FROM tb_keys")
            conn.execute(f"""
                CREATE OR REPLACE TEMP TABLE tb_trades AS
                SELECT r.* FROM raw_trades r
                SEMI JOIN tb_keys k ON r.exchange = k.exchange AND r.product = k.product
                                    AND epoch_us(r.trade_time) // 1000000 = k.sec
                {_late_filter(conn, s_lo, s_hi)}
                WHERE r.trade_time >= $lo AND r.trade_time < $hi AND r.batch_id <= $upto""",
                {"lo": s_lo, "hi": s_hi, "upto": inc.upstream})
            conn.execute("""
                DELETE FROM trade_bars_1s USING tb_keys k
                WHERE trade_bars_1s.exchange = k.exchange AND trade_bars_1s.product = k.product
                  AND trade_bars_1s.bar_start = to_timestamp(k.sec)
                  AND trade_bars_1s.bar_start >= $lo AND trade_bars_1s.bar_start < $hi""", {"lo": s_lo, "hi": s_hi})
            key, packed = _order_key(conn, "tb_trades")
            conn.execute(f"INSERT INTO trade_bars_1s SELECT *, {inc.new_seq} FROM ({_aggregate_sql('tb_trades', key, packed)}) "
                         "ORDER BY bar_start")
        _account(conn, inc, "trade_bars_1s", out)


def _account(conn: duckdb.DuckDBPyConnection, inc: Increment, table: str, out: TradeBarsResult) -> None:
    """Mark the Parquet hours of the rows this run stamped and add them to the result."""
    stamped = f"SELECT bar_start AS event_time, product AS symbol FROM {table} WHERE bar_seq = {inc.new_seq}"
    inc.mark_touched(f"SELECT DISTINCT date_trunc('hour', event_time) AS event_time, symbol FROM ({stamped})"
                     if table == "trade_bars_1s" else stamped)
    n, products, t0, t1 = first(conn, f"SELECT count(*), count(DISTINCT (exchange, product)), min(bar_start), "
                                      f"max(bar_start) FROM {table} WHERE bar_seq = {inc.new_seq}")
    out.bars[table] = int(n)
    if table == "trade_bars_1s":
        out.products, out.first_bar, out.last_bar = int(products), t0, t1


def trade_bars_increment(conn: duckdb.DuckDBPyConnection, cfg: TradeBarsConfig | None = None,
                         upto_batch: int | None = None, widths: tuple[str, ...] = WIDTHS) -> TradeBarsResult:
    """The raw_trades batches past the bars' high-water mark (up to `upto_batch`, default the
    newest) into the 1-second, 1-minute and 1-hour bars (those of `widths`: each width
    consumes what the finer one stamped, whenever it runs)."""
    cfg = cfg or TradeBarsConfig()
    out = TradeBarsResult()
    if "trade_bars_1s" in widths:
        _bars_1s(conn, cfg, upto_batch, out)
    if "trade_bars_1m" in widths:
        out.bars["trade_bars_1m"], out.seqs["trade_bars_1m"] = bars_1m_increment(conn)
    if "trade_bars_1h" in widths:
        out.bars["trade_bars_1h"], out.seqs["trade_bars_1h"] = bars_1h_increment(conn)
    return out


def trade_bars_full(conn: duckdb.DuckDBPyConnection, cfg: TradeBarsConfig | None = None) -> TradeBarsResult:
    """Every bar recomputed from all of raw_trades (the tables are emptied first): what the
    increments must equal, and what a benchmark times. `conn` needs only a raw_trades table; the
    other tables are created when missing."""
    ensure_schema(conn)
    conn.execute("BEGIN TRANSACTION")
    for t in (*WIDTHS, "trade_bar_state"):
        conn.execute(f"DELETE FROM {t}")
    conn.execute("DELETE FROM asset_state WHERE asset IN (SELECT unnest($w))", {"w": list(WIDTHS)})
    conn.execute("DELETE FROM quarantine WHERE stage = $s", {"s": LATE_STAGE})
    conn.execute("COMMIT")
    upto = scalar(conn, "SELECT coalesce(max(batch_id), 0) FROM raw_trades")
    return trade_bars_increment(conn, cfg, upto_batch=int(upto))
