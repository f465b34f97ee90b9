"""The anomaly rules on 1-minute trade bars, into the same `anomalies` table and alert outbox as the
tick rules (crypto_assets.transforms.anomalies), for the products that have a trade feed.

- `trade_return_zscore`: the bar's log return against the log returns of the bars in the
  trailing `window_minutes` before it (mean and population std; at least `min_bars` of them).
- `trade_volume_spike`: the bar's traded base volume against the mean volume of the bars in
  the trailing `window_minutes` (at least `min_bars` of them): a real traded-volume spike, not a
  change of CoinGecko's 24-hour total.

Windows are ranges of event time, so a bar's verdict depends only on the bars before it, and a
run reads the stamped bars plus one window before them. Rows carry `source` = trades:<exchange>:
<product>; ids are md5(source | bar_start | rule), so a re-run or a recomputation after a late
trade never duplicates one, and an alert is published once (the outbox marks it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import duckdb

from crypto_assets.warehouse.lake_export import mark_dirty
from crypto_assets.warehouse.sql import transaction
from crypto_assets.warehouse.watermarks import get_state, position, set_state

STATE = "trade_anomalies"  # its asset_state row: the trade_bars_1m sequence processed
DATASET = "gold/anomalies"


@dataclass(frozen=True)
class TradeAnomalyConfig:
    window_minutes: int = 60
    min_bars: int = 20  # bars the window needs before a bar is judged
    zscore_threshold: float = 3.0
    zscore_critical: float = 5.0
    volume_spike_pct: float = 400.0  # +400 %: five times the trailing mean
    volume_critical_pct: float = 900.0


def _found_sql(cfg: TradeAnomalyConfig) -> str:
    w = f"INTERVAL {int(cfg.window_minutes)} MINUTE"
    return f"""
        WITH b AS (
            SELECT t.exchange, t.product, t.coin_id, t.bar_start, t.close::DOUBLE AS price, t.log_return,
                   t.base_volume::DOUBLE AS volume, t.bar_start >= r.t_min AS is_target
            FROM trade_bars_1m t JOIN ta_range r USING (exchange, product)
            WHERE t.bar_start >= r.t_min - {w} AND t.bar_start >= (SELECT min(t_min) FROM ta_range) - {w}
        ), s AS (
            SELECT *,
                   avg(log_return) OVER win AS ret_mean, stddev_pop(log_return) OVER win AS ret_std,
                   count(log_return) OVER win AS ret_n, avg(volume) OVER win AS vol_mean, count(volume) OVER win AS vol_n,
                   'trades:' || exchange || ':' || product AS source
            FROM b
            WINDOW win AS (PARTITION BY exchange, product ORDER BY bar_start
                           RANGE BETWEEN {w} PRECEDING AND INTERVAL 1 MICROSECOND PRECEDING)
        ), v AS (
            SELECT *, CASE WHEN ret_n >= {int(cfg.min_bars)} AND ret_std > 0 THEN (log_return - ret_mean) / ret_std END AS z,
                   CASE WHEN vol_n >= {int(cfg.min_bars)} AND vol_mean > 0 THEN (volume / vol_mean - 1) * 100 END AS vol_pct
            FROM s WHERE is_target
        )
        SELECT md5(source || '|' || strftime(bar_start, '%Y-%m-%dT%H:%M:%S.%fZ') || '|trade_return_zscore') AS anomaly_id,
               coin_id, lower(product) AS symbol, bar_start AS event_time, 'trade_return_zscore' AS rule,
               CASE WHEN abs(z) > {cfg.zscore_critical} THEN 'critical' ELSE 'warning' END AS severity,
               z AS value, {cfg.zscore_threshold} AS threshold, price AS price_usd, NULL::DOUBLE AS volume_24h_usd, source
        FROM v WHERE abs(z) > {cfg.zscore_threshold}
        UNION ALL
        SELECT md5(source || '|' || strftime(bar_start, '%Y-%m-%dT%H:%M:%S.%fZ') || '|trade_volume_spike'),
               coin_id, lower(product), bar_start, 'trade_volume_spike',
               CASE WHEN vol_pct > {cfg.volume_critical_pct} THEN 'critical' ELSE 'warning' END,
               vol_pct, {cfg.volume_spike_pct}, price, NULL::DOUBLE, source
        FROM v WHERE vol_pct > {cfg.volume_spike_pct}"""


def trade_anomalies_increment(conn: duckdb.DuckDBPyConnection, cfg: TradeAnomalyConfig | None = None) -> dict:
    """Judge the minute bars stamped since the last run (and re-judge those after a recomputed
    one). Unpublished trade anomalies of a recomputed range are re-derived; published ones stay
    as they were sent. Returns {"new": n, "skipped": bool}."""
    cfg = cfg or TradeAnomalyConfig()
    hwm, seq = get_state(conn, STATE)
    up = position(conn, "trade_bars_1m")
    if up <= hwm:
        return {"new": 0, "skipped": True}
    now = datetime.now(UTC)
    with transaction(conn):
        conn.execute(f"""
            CREATE OR REPLACE TEMP TABLE ta_range AS
            SELECT exchange, product, min(bar_start) AS t_min FROM trade_bars_1m
            WHERE bar_seq > {int(hwm)} AND bar_seq <= {int(up)} GROUP BY ALL""")
        conn.execute(f"CREATE OR REPLACE TEMP TABLE ta_found AS {_found_sql(cfg)}")
        stale = """SELECT a.event_time, a.symbol FROM anomalies a JOIN ta_range r
                   ON a.source = 'trades:' || r.exchange || ':' || r.product AND a.event_time >= r.t_min
                   WHERE a.published_at IS NULL"""
        mark_dirty(conn, DATASET, f"SELECT event_time, symbol FROM ta_found UNION ALL {stale}")
        conn.execute("""
            DELETE FROM anomalies USING ta_range r
            WHERE anomalies.source = 'trades:' || r.exchange || ':' || r.product AND anomalies.event_time >= r.t_min
              AND anomalies.published_at IS NULL""")
        new = conn.execute("""
            INSERT INTO anomalies BY NAME
            SELECT f.*, $now AS detected_at, NULL AS published_at FROM ta_found f
            WHERE f.anomaly_id NOT IN (SELECT anomaly_id FROM anomalies
                                       WHERE event_time >= (SELECT min(t_min) FROM ta_range))
            ORDER BY event_time""", {"now": now}).fetchall()[0][0]
        set_state(conn, STATE, up, seq + 1)
    return {"new": int(new), "skipped": False}


def trade_anomaly_counts(conn: duckdb.DuckDBPyConnection, since: datetime) -> list[tuple]:
    """(rule, severity, count) of the trade anomalies detected since `since`."""
    return conn.sql("SELECT rule, severity, count(*) FROM anomalies WHERE detected_at >= $t AND source <> 'ticks' "
                    "GROUP BY ALL ORDER BY ALL", params={"t": since}).fetchall()

