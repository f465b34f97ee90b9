"""Cross-coin correlations and anomaly detection (with the alert outbox)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import duckdb
import orjson

from crypto_assets.kafka.outbox import Outbox, OutboxMessage, header, held, publish
from crypto_assets.resources.kafka import KafkaResource
from crypto_assets.warehouse.incremental_table import incremental_table
from crypto_assets.warehouse.sql import first

ZSCORE_THRESHOLD = 3.0
ZSCORE_CRITICAL = 5.0
VOLUME_SPIKE_PCT = 200.0
VOLUME_SPIKE_CRITICAL_PCT = 500.0
WINDOWS = {"24h": "24 HOUR", "7d": "7 DAY"}
WINDOW_SPANS = {"24h": timedelta(hours=24), "7d": timedelta(days=7)}


def _ts(t: datetime) -> str:
    return f"TIMESTAMPTZ '{t.astimezone(UTC).isoformat()}'"


_PAIRS_SQL = """
    SELECT a.coin_id AS coin_a, b.coin_id AS coin_b, {group}
           count(*) AS n, sum(a.return_pct) AS sx, sum(b.return_pct) AS sy,
           sum(a.return_pct * a.return_pct) AS sxx, sum(b.return_pct * b.return_pct) AS syy,
           sum(a.return_pct * b.return_pct) AS sxy
    FROM m a JOIN m b ON a.minute = b.minute AND a.coin_id < b.coin_id
    GROUP BY ALL
"""


def _minutes(where: str) -> str:
    return f"WITH m AS (SELECT coin_id, minute, return_pct FROM ohlcv_1m WHERE return_pct IS NOT NULL AND {where})"


def correlations_refresh(conn: duckdb.DuckDBPyConnection) -> dict:
    """Pearson correlation of 1-minute close-to-close returns for every coin pair, over the 24 h
    and 7 d before the newest candle. Kept incrementally: per (pair, hour) sums in corr_buckets
    are recomputed only for the hours whose candles changed; a window adds up its whole hours and
    reads the minutes of its one partial (oldest) hour, so a refresh costs the same on a week of
    history as on a month."""
    with incremental_table(conn, "correlations", upstream="ohlcv_1m") as inc:
        if inc.nothing_new:
            return {"rows": 0, "skipped": True}
        end = first(conn, "SELECT max(minute) FROM ohlcv_1m")[0]
        if end is None:
            return {"rows": 0, "window_end": None, "skipped": False}
        # bounds as literals, so DuckDB prunes row groups by their minute zone maps
        horizon = _ts(end - timedelta(days=7, hours=1))  # buckets older than this are not needed
        rebuild = first(conn, "SELECT count(*) = 0 FROM corr_buckets")[0]  # first refresh: every hour of the window
        touched = "" if rebuild else f"AND candle_seq > {int(inc.hwm)}"
        conn.execute(f"""CREATE OR REPLACE TEMP TABLE corr_hours AS SELECT DISTINCT date_trunc('hour', minute) AS hour
                         FROM ohlcv_1m WHERE minute > {horizon} {touched}""")
        lo, hi = first(conn, "SELECT min(hour), max(hour) FROM corr_hours")
        conn.execute("DELETE FROM corr_buckets WHERE hour IN (SELECT hour FROM corr_hours)")
        if lo is not None:
            conn.execute(
                f"""INSERT INTO corr_buckets
                    {_minutes(f"minute >= {_ts(lo)} AND minute < {_ts(hi + timedelta(hours=1))} AND minute > {horizon} "
                              "AND date_trunc('hour', minute) IN (SELECT hour FROM corr_hours)")}
                    {_PAIRS_SQL.format(group="date_trunc('hour', a.minute) AS hour,")}""")
        conn.execute(f"DELETE FROM corr_buckets WHERE hour <= {horizon}")
        conn.execute("DELETE FROM correlations")
        parts = []
        for name, span in WINDOW_SPANS.items():
            start = end - span
            start_hour = start.replace(minute=0, second=0, microsecond=0)
            edge = f"minute > {_ts(start)} AND minute < {_ts(start_hour + timedelta(hours=1))}"
            parts.append(f"""
                SELECT coin_a, coin_b, '{name}' AS window_name, n, sx, sy, sxx, syy, sxy FROM corr_buckets
                WHERE hour > {_ts(start_hour)} AND hour <= {_ts(end)}
                UNION ALL
                SELECT * FROM ({_minutes(edge)} {_PAIRS_SQL.format(group=f"'{name}' AS window_name,")})""")
        conn.execute(
            f"""
            INSERT INTO correlations
            WITH s AS (SELECT coin_a, coin_b, window_name, sum(n) AS n, sum(sx) AS sx, sum(sy) AS sy,
                              sum(sxx) AS sxx, sum(syy) AS syy, sum(sxy) AS sxy
                       FROM ({' UNION ALL '.join(parts)}) GROUP BY ALL)
            SELECT coin_a, coin_b, window_name, {_ts(end)},
                   CASE WHEN (n * sxx - sx * sx) > 0 AND (n * syy - sy * sy) > 0
                        THEN least(1.0, greatest(-1.0, (n * sxy - sx * sy) / sqrt((n * sxx - sx * sx) * (n * syy - sy * sy))))
                   END,
                   n::INTEGER
            FROM s WHERE n > 0
            """
        )
        rows = first(conn, "SELECT count(*) FROM correlations")[0]
    return {"rows": int(rows), "window_end": end, "skipped": False}


def anomalies_increment(conn: duckdb.DuckDBPyConnection) -> dict:
    """Flag |z| > 3 and volume spikes > 200 % in feature rows written since the last run.

    Ids are md5(coin|event_time|rule), so a re-run or a recomputation after a late tick never
    duplicates an anomaly. Unpublished anomalies of a recomputed range are re-derived (values
    follow the recomputed features; ones that no longer qualify disappear); published ones are
    kept as they were sent. The Parquet hours of the anomalies found and of those deleted are
    marked for re-export."""
    now = datetime.now(UTC)
    with incremental_table(conn, "anomalies", upstream="market_features") as inc:
        if inc.nothing_new:
            return {"new": 0, "skipped": True}
        conn.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE anom_range AS
            SELECT coin_id, min(event_time) AS t_min FROM market_features
            WHERE {inc.window} GROUP BY 1
            """
        )
        conn.execute(
            f"""
            CREATE OR REPLACE TEMP TABLE anom_found AS
            WITH f AS (
                SELECT m.* FROM market_features m JOIN anom_range r USING (coin_id)
                WHERE m.event_time >= r.t_min AND m.event_time >= (SELECT min(t_min) FROM anom_range)
            )
            SELECT md5(coin_id || '|' || strftime(event_time, '%Y-%m-%dT%H:%M:%S.%fZ') || '|price_zscore') AS anomaly_id,
                   coin_id, symbol, event_time, 'price_zscore' AS rule,
                   CASE WHEN abs(zscore_15m) > {ZSCORE_CRITICAL} THEN 'critical' ELSE 'warning' END AS severity,
                   zscore_15m AS value, {ZSCORE_THRESHOLD} AS threshold, price_usd, volume_24h_usd
            FROM f WHERE abs(zscore_15m) > {ZSCORE_THRESHOLD}
            UNION ALL
            SELECT md5(coin_id || '|' || strftime(event_time, '%Y-%m-%dT%H:%M:%S.%fZ') || '|volume_spike'),
                   coin_id, symbol, event_time, 'volume_spike',
                   CASE WHEN volume_change_pct > {VOLUME_SPIKE_CRITICAL_PCT} THEN 'critical' ELSE 'warning' END,
                   volume_change_pct, {VOLUME_SPIKE_PCT}, price_usd, volume_24h_usd
            FROM f WHERE volume_change_pct > {VOLUME_SPIKE_PCT}
            """
        )
        inc.mark_touched(
            """
            SELECT event_time, symbol FROM anom_found
            UNION ALL
            SELECT a.event_time, a.symbol FROM anomalies a JOIN anom_range r
              ON a.coin_id = r.coin_id AND a.event_time >= r.t_min AND a.published_at IS NULL AND a.source = 'ticks'
            """
        )
        conn.execute(
            """
            DELETE FROM anomalies USING anom_range r
            WHERE anomalies.coin_id = r.coin_id AND anomalies.event_time >= r.t_min
              AND anomalies.published_at IS NULL AND anomalies.source = 'ticks'
            """
        )
        conn.execute(
            """
            INSERT INTO anomalies BY NAME
            SELECT a.*, $now AS detected_at, NULL AS published_at FROM anom_found a
            WHERE a.anomaly_id NOT IN (SELECT anomaly_id FROM anomalies WHERE event_time >= (SELECT min(t_min) FROM anom_range))
            ORDER BY event_time
            """,
            {"now": now},
        )
        new = first(conn, "SELECT count(*) FROM anomalies WHERE detected_at = $now", {"now": now})[0]
    return {"new": int(new), "skipped": False}


ALERTS_OUTBOX = "alerts"


def publish_alerts(conn: duckdb.DuckDBPyConnection, kafka: KafkaResource, limit: int = 50_000) -> int:
    """Outbox: send unpublished anomalies to crypto_alerts (key = coin_id), then mark them; exactly
    once also across a kill (crypto_assets.kafka.outbox). Returns how many were sent by this call."""
    return publish(kafka, alerts_outbox(kafka), held(conn), limit)


def alerts_outbox(kafka: KafkaResource) -> Outbox:
    """The alerts: a JSON message per anomaly, identified by its `anomaly_id` header."""
    return Outbox(
        name=ALERTS_OUTBOX,
        topic=kafka.alerts_topic,
        pending=_pending_alerts,
        mark_sent=_mark_alerts_sent,
        identity=lambda message: header(message, "anomaly_id"),
        half_sent_fault="alerts_half_sent",
        before_mark_fault="before_alert_mark",
    )


def _pending_alerts(conn: duckdb.DuckDBPyConnection, limit: int) -> list[OutboxMessage]:
    rows = conn.sql(
        """
        SELECT anomaly_id, coin_id, symbol, event_time, rule, severity, value, threshold, price_usd, volume_24h_usd, source
        FROM anomalies WHERE published_at IS NULL ORDER BY event_time LIMIT ?
        """,
        params=[limit],
    ).fetchall()
    return [
        OutboxMessage(
            aid,
            coin,
            orjson.dumps(
                {
                    "anomaly_id": aid, "coin_id": coin, "symbol": sym,
                    "event_time": t.astimezone(UTC).isoformat().replace("+00:00", "Z"),
                    "rule": rule, "severity": sev, "value": value, "threshold": thr,
                    "price_usd": price, "volume_24h_usd": vol, "source": source,
                }
            ),
            [("anomaly_id", aid.encode())],
        )
        for aid, coin, sym, t, rule, sev, value, thr, price, vol, source in rows
    ]


def _mark_alerts_sent(conn: duckdb.DuckDBPyConnection, ids: list[str]) -> None:
    conn.execute(
        "UPDATE anomalies SET published_at = now() WHERE published_at IS NULL AND anomaly_id IN (SELECT unnest($ids))",
        {"ids": ids},
    )
