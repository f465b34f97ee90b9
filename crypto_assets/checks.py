"""Asset checks. Blocking ones stop downstream steps of the same run when bad data would flow
on; the others report with a severity. Each rule is a plain function of a DuckDB connection
(tested directly) wrapped in a Dagster check."""

import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone

import dagster as dg
import duckdb

from crypto_assets.resources import LakehouseResource

WARN = dg.AssetCheckSeverity.WARN
ERROR = dg.AssetCheckSeverity.ERROR


@dataclass
class Verdict:
    passed: bool
    metadata: dict = field(default_factory=dict)
    description: str = ""


def _n(conn: duckdb.DuckDBPyConnection, sql: str, params=None) -> int:
    rows = conn.sql(sql, params=params).fetchall() if params else conn.sql(sql).fetchall()
    return int(rows[0][0] or 0)


# ----------------------------------------------------------------------------- rules
def unique_ticks(conn) -> Verdict:
    dups = _n(conn, "SELECT count(*) FROM (SELECT coin_id, event_time FROM clean_ticks GROUP BY ALL HAVING count(*) > 1)")
    return Verdict(dups == 0, {"duplicate_keys": dups}, f"{dups} duplicated (coin_id, event_time) keys")


CLEAN_REQUIRED = ("coin_id", "symbol", "source", "event_time", "price_usd", "kafka_partition", "kafka_offset")


def not_null_ticks(conn) -> Verdict:
    nulls = {c: _n(conn, f"SELECT count(*) FROM clean_ticks WHERE {c} IS NULL") for c in CLEAN_REQUIRED}
    bad = {c: n for c, n in nulls.items() if n}
    return Verdict(not bad, {"null_counts": nulls}, f"nulls in required columns: {bad}" if bad else "no nulls")


def positive_prices(conn) -> Verdict:
    bad = _n(conn, "SELECT count(*) FROM clean_ticks WHERE NOT (price_usd > 0) OR NOT isfinite(price_usd)")
    vol = _n(conn, "SELECT count(*) FROM clean_ticks WHERE volume_24h_usd < 0")
    return Verdict(bad == 0 and vol == 0, {"non_positive_prices": bad, "negative_volumes": vol})


FEATURE_NUMERIC = ("return_pct", "log_return", "sma_1m", "sma_5m", "sma_15m", "ema_20", "volatility_15m",
                   "zscore_15m", "volume_change_pct")


def features_finite(conn) -> Verdict:
    counts = {c: _n(conn, f"SELECT count(*) FROM market_features WHERE {c} IS NOT NULL AND NOT isfinite({c})")
              for c in FEATURE_NUMERIC}
    bad = {c: n for c, n in counts.items() if n}
    neg_vol = _n(conn, "SELECT count(*) FROM market_features WHERE volatility_15m < 0")
    return Verdict(not bad and neg_vol == 0, {"non_finite_counts": counts, "negative_volatility": neg_vol},
                   f"NaN/Inf in {bad}" if bad else "all defined values finite")


def rsi_in_range(conn) -> Verdict:
    out = _n(conn, "SELECT count(*) FROM ohlcv_1m WHERE rsi_14 IS NOT NULL AND (NOT isfinite(rsi_14) OR rsi_14 < 0 OR rsi_14 > 100)")
    bb = _n(conn, "SELECT count(*) FROM ohlcv_1m WHERE bb_upper < bb_lower OR NOT isfinite(bb_middle)")
    ohlc = _n(conn, "SELECT count(*) FROM ohlcv_1m WHERE NOT (low <= open AND open <= high AND low <= close AND close <= high)")
    return Verdict(out == 0 and bb == 0 and ohlc == 0, {"rsi_out_of_range": out, "bad_bollinger": bb, "bad_ohlc": ohlc})


def freshness(conn, max_age_minutes: float, now: datetime | None = None) -> Verdict:
    now = now or datetime.now(timezone.utc)
    newest = conn.sql("SELECT max(event_time) FROM clean_ticks").fetchall()[0][0]
    if newest is None:
        return Verdict(False, {"newest_tick": "none"}, "no ticks at all")
    age_min = (now - newest).total_seconds() / 60
    return Verdict(age_min <= max_age_minutes, {"newest_tick_age_minutes": round(age_min, 2),
                                                  "max_age_minutes": max_age_minutes})


def quarantine_rate(conn, threshold: float, last_batches: int = 20) -> Verdict:
    row = conn.sql(
        """
        SELECT sum(messages), sum(quarantined) FROM (
            SELECT messages, quarantined FROM ingest_batches ORDER BY batch_id DESC LIMIT ?)
        """,
        params=[last_batches],
    ).fetchall()[0]
    total, q = int(row[0] or 0), int(row[1] or 0)
    rate = q / total if total else 0.0
    return Verdict(rate <= threshold, {"quarantine_rate": round(rate, 5), "threshold": threshold,
                                        "messages": total, "quarantined": q})


def offset_contiguity(conn) -> Verdict:
    gaps = conn.sql(
        """
        SELECT kafka_topic, kafka_partition, batch_id, from_offset, prev_next FROM (
            SELECT *, lag(next_offset) OVER (PARTITION BY kafka_topic, kafka_partition ORDER BY batch_id) AS prev_next
            FROM ingest_offsets)
        WHERE prev_next IS NOT NULL AND from_offset <> prev_next AND reset_reason IS NULL
        """
    ).fetchall()
    bad_counts = _n(conn, "SELECT count(*) FROM ingest_offsets WHERE next_offset - from_offset <> message_count")
    resets = _n(conn, "SELECT count(*) FROM ingest_offsets WHERE reset_reason IS NOT NULL")
    return Verdict(not gaps and bad_counts == 0,
                   {"gaps": len(gaps), "inconsistent_batches": bad_counts, "explained_resets": resets,
                    "first_gaps": str(gaps[:5])})


def reconciliation(conn) -> Verdict:
    rows = conn.sql(
        """
        WITH hwm AS (SELECT coalesce(max(hwm), 0) AS h FROM asset_state WHERE asset = 'clean_ticks'),
        r AS (SELECT batch_id, count(*) AS raw FROM raw_ticks WHERE batch_id <= (SELECT h FROM hwm) GROUP BY 1),
        c AS (SELECT raw_batch_id AS batch_id, count(*) AS clean FROM clean_ticks GROUP BY 1),
        q AS (SELECT batch_id, count(*) AS quarantined FROM quarantine WHERE stage = 'clean_ticks' GROUP BY 1)
        SELECT r.batch_id, r.raw, coalesce(c.clean, 0), coalesce(q.quarantined, 0)
        FROM r LEFT JOIN c USING (batch_id) LEFT JOIN q USING (batch_id)
        WHERE r.raw <> coalesce(c.clean, 0) + coalesce(q.quarantined, 0)
        ORDER BY 1
        """
    ).fetchall()
    return Verdict(not rows, {"unbalanced_batches": len(rows), "first": str(rows[:5])},
                   "raw = clean + quarantined for every cleaned batch" if not rows else f"{len(rows)} batches do not balance")


# ----------------------------------------------------------------------------- dagster checks
# Checks that read the same tables share one step (one DuckDB connection, one step's overhead):
# each is still its own check in the UI. Incremental runs are a few seconds long, so a step
# saved is freshness gained.
GATE = {"dagster/priority": "5"}  # the clean_ticks gate runs before the other gold steps


def _result(v: Verdict, severity=ERROR, spec: dg.AssetCheckSpec | None = None) -> dg.AssetCheckResult:
    where = {"check_name": spec.name, "asset_key": spec.asset_key} if spec is not None else {}
    return dg.AssetCheckResult(passed=v.passed, metadata=v.metadata, severity=severity,
                               description=v.description or None, **where)


CLEAN_GATE = [
    (dg.AssetCheckSpec("clean_ticks_unique", asset="clean_ticks", blocking=True,
                       description="(coin_id, event_time) is unique"), unique_ticks),
    (dg.AssetCheckSpec("clean_ticks_not_null", asset="clean_ticks", blocking=True,
                       description="required columns are never null"), not_null_ticks),
    (dg.AssetCheckSpec("clean_ticks_positive_price", asset="clean_ticks", blocking=True,
                       description="price > 0 and finite, volume >= 0"), positive_prices),
]


@dg.multi_asset_check(specs=[spec for spec, _ in CLEAN_GATE], name="clean_ticks_gate", op_tags=GATE)
def clean_ticks_gate(lakehouse: LakehouseResource):
    """Blocking: market_features and the candles read clean_ticks only after these pass."""
    with lakehouse.connect() as conn:
        for spec, rule in CLEAN_GATE:
            yield _result(rule(conn), ERROR, spec)


class IngestHealthConfig(dg.Config):
    max_age_minutes: float = 15.0  # clean_ticks_freshness
    threshold: float = 0.05  # raw_ticks_quarantine_rate: share of quarantined messages
    last_batches: int = 20  # raw_ticks_quarantine_rate: over this many recent batches


FRESHNESS = dg.AssetCheckSpec("clean_ticks_freshness", asset="clean_ticks", description="the newest tick is recent")
RECONCILIATION = dg.AssetCheckSpec("clean_ticks_reconciliation", asset="clean_ticks",
                                   description="raw = clean + quarantined for every cleaned raw batch")
QUARANTINE_RATE = dg.AssetCheckSpec("raw_ticks_quarantine_rate", asset="raw_ticks",
                                    description="share of quarantined messages in recent batches")
OFFSET_CONTIGUITY = dg.AssetCheckSpec("raw_ticks_offset_contiguity", asset="raw_ticks",
                                      description="committed batches leave no offset gaps")


@dg.multi_asset_check(specs=[FRESHNESS, RECONCILIATION, QUARANTINE_RATE, OFFSET_CONTIGUITY],
                      name="ingest_health", can_subset=True)
def ingest_health(context: dg.AssetCheckExecutionContext, config: IngestHealthConfig, lakehouse: LakehouseResource):
    """Non-blocking: warnings and bookkeeping errors that do not stop the run."""
    rules = [
        (FRESHNESS, lambda c: freshness(c, config.max_age_minutes), WARN),
        (RECONCILIATION, reconciliation, ERROR),
        (QUARANTINE_RATE, lambda c: quarantine_rate(c, config.threshold, config.last_batches), WARN),
        (OFFSET_CONTIGUITY, offset_contiguity, ERROR),
    ]
    selected = context.selected_asset_check_keys
    with lakehouse.connect() as conn:
        for spec, rule, severity in rules:
            if spec.key in selected:
                yield _result(rule(conn), severity, spec)


@dg.asset_check(asset="market_features", blocking=True, description="no NaN/Inf where a value is defined")
def market_features_finite(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    with lakehouse.connect() as conn:
        return _result(features_finite(conn))


@dg.asset_check(asset="ohlcv_1m", blocking=True, description="RSI in [0, 100], sane OHLC and bands")
def ohlcv_1m_rsi_range(lakehouse: LakehouseResource) -> dg.AssetCheckResult:
    with lakehouse.connect() as conn:
        return _result(rsi_in_range(conn))


SCHEMA_CHECKED = ["raw_ticks", "clean_ticks", "market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats", "anomalies"]
with warnings.catch_warnings():
    warnings.simplefilter("ignore", category=dg.BetaWarning)
    schema_change_checks = dg.build_column_schema_change_checks(assets=SCHEMA_CHECKED, severity=WARN)

ALL_CHECKS = [
    clean_ticks_gate,
    ingest_health,
    market_features_finite,
    ohlcv_1m_rsi_range,
    *schema_change_checks,
]
