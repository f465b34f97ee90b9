"""Asset-check rules: plain functions of a DuckDB connection, tested directly, evaluated by the
incremental step on the rows a pass wrote (crypto_assets/defs/incremental.py).

Every rule takes an optional scope: the sequence numbers its asset stamped on rows
(`clean_seq`, `feature_seq`, `candle_seq`) that the assets downstream have not consumed yet (so
a blocking check that failed keeps failing until the rows are repaired, and nothing consumes
them meanwhile), or the raw batch ids a pass committed. A scoped rule
reads only those rows plus the look-back it needs, so a check costs in proportion to the new
data, not to the history (a month at 100 msg/s is ~260M ticks). Properties of the whole table
hold by construction and are checked where they can break: uniqueness, for instance, can only
be broken by rows the pass inserted, so the new keys are looked up in the table within their
own time range. Unscoped (scope None) a rule audits the whole table, as the tests do.
Not-null is not a check: the DDL declares NOT NULL and DuckDB enforces it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import dagster as dg
import duckdb

from crypto_assets.defs.metadata import markdown_table

WARN = dg.AssetCheckSeverity.WARN
ERROR = dg.AssetCheckSeverity.ERROR
OFFENDERS = 10  # offending rows named in a failed check's metadata


@dataclass
class Verdict:
    passed: bool
    metadata: dict = field(default_factory=dict)
    description: str = ""


def _n(conn: duckdb.DuckDBPyConnection, sql: str, params=None) -> int:
    rows = conn.sql(sql, params=params).fetchall() if params else conn.sql(sql).fetchall()
    return int(rows[0][0] or 0)


Seqs = int | tuple[int, int] | None  # one sequence number, (after, up to and including), or all rows


def _scope(column: str, seq: Seqs) -> str:
    if seq is None:
        return "TRUE"
    if isinstance(seq, tuple):
        return f"({column} > {int(seq[0])} AND {column} <= {int(seq[1])})"
    return f"{column} = {int(seq)}"


def _offenders(conn, sql: str, columns: list[str]) -> str:
    """A markdown table of the first offending rows, so a failed check says where to look."""
    return markdown_table(conn.sql(f"{sql} LIMIT {OFFENDERS}").fetchall(), columns)


# ----------------------------------------------------------------------------- silver
def unique_ticks(conn, seq: Seqs = None) -> Verdict:
    """(coin_id, event_time) unique: the keys this pass inserted, looked up in the table."""
    if seq is None:
        dups_sql = "SELECT coin_id, event_time, count(*) AS n FROM clean_ticks GROUP BY ALL HAVING count(*) > 1"
    else:
        dups_sql = f"""
            WITH n AS (SELECT coin_id, event_time FROM clean_ticks WHERE {_scope('clean_seq', seq)})
            SELECT c.coin_id, c.event_time, count(*) AS n FROM clean_ticks c SEMI JOIN n USING (coin_id, event_time)
            WHERE c.event_time >= (SELECT min(event_time) FROM n) AND c.event_time <= (SELECT max(event_time) FROM n)
            GROUP BY ALL HAVING count(*) > 1"""
    dups = _n(conn, f"SELECT count(*) FROM ({dups_sql})")
    md: dict = {"duplicate_keys": dups}
    if dups:
        md["offending_rows"] = dg.MetadataValue.md(_offenders(conn, dups_sql + " ORDER BY 2", ["coin_id", "event_time", "copies"]))
    return Verdict(dups == 0, md, f"{dups} duplicated (coin_id, event_time) keys")


def positive_prices(conn, seq: Seqs = None) -> Verdict:
    where = f"{_scope('clean_seq', seq)} AND (NOT (price_usd > 0) OR NOT isfinite(price_usd) OR volume_24h_usd < 0)"
    bad = _n(conn, f"SELECT count(*) FROM clean_ticks WHERE {where}")
    md: dict = {"bad_rows": bad}
    if bad:
        md["offending_rows"] = dg.MetadataValue.md(_offenders(
            conn, f"SELECT coin_id, event_time, price_usd, volume_24h_usd, kafka_partition, kafka_offset "
                  f"FROM clean_ticks WHERE {where} ORDER BY event_time",
            ["coin_id", "event_time", "price_usd", "volume_24h_usd", "partition", "offset"]))
    return Verdict(bad == 0, md, f"{bad} rows with price <= 0, non-finite price or negative volume")


def freshness(conn, max_age_minutes: float, now: datetime | None = None) -> Verdict:
    """Age of the newest tick, from the per-coin state clean_ticks keeps (one row per coin)."""
    now = now or datetime.now(UTC)
    newest = conn.sql("SELECT max(max_event_time) FROM clean_coin_state").fetchall()[0][0]
    if newest is None:
        return Verdict(False, {"newest_tick": "none"}, "no ticks at all")
    age_min = (now - newest).total_seconds() / 60
    return Verdict(age_min <= max_age_minutes, {"newest_tick_age_minutes": round(age_min, 2),
                                                  "max_age_minutes": max_age_minutes})


def reconciliation(conn, batches: tuple[int, int] | None = None) -> Verdict:
    """raw = clean + quarantined for every raw batch clean_ticks processed (in this pass)."""
    if batches is None:
        rng = "batch_id <= (SELECT coalesce(max(hwm), 0) FROM asset_state WHERE asset = 'clean_ticks')"
    else:
        rng = f"batch_id BETWEEN {int(batches[0])} AND {int(batches[1])}"
    rows = conn.sql(
        f"""
        WITH r AS (SELECT batch_id, count(*) AS raw FROM raw_ticks WHERE {rng} GROUP BY 1),
        c AS (SELECT raw_batch_id AS batch_id, count(*) AS clean FROM clean_ticks
              WHERE {rng.replace('batch_id', 'raw_batch_id')} GROUP BY 1),
        q AS (SELECT batch_id, count(*) AS quarantined FROM quarantine WHERE stage = 'clean_ticks' AND {rng} GROUP BY 1)
        SELECT r.batch_id, r.raw, coalesce(c.clean, 0), coalesce(q.quarantined, 0)
        FROM r LEFT JOIN c USING (batch_id) LEFT JOIN q USING (batch_id)
        WHERE r.raw <> coalesce(c.clean, 0) + coalesce(q.quarantined, 0)
        ORDER BY 1
        """
    ).fetchall()
    md: dict = {"unbalanced_batches": len(rows)}
    if rows:
        md["offending_batches"] = dg.MetadataValue.md(markdown_table(rows[:OFFENDERS], ["batch_id", "raw", "clean", "quarantined"]))
    return Verdict(not rows, md,
                   "raw = clean + quarantined for every cleaned batch" if not rows else f"{len(rows)} batches do not balance")


# ----------------------------------------------------------------------------- bronze
def quarantine_rate(conn, threshold: float, last_batches: int = 20) -> Verdict:
    row = conn.sql(
        """
        SELECT sum(messages), sum(quarantined) FROM ingest_batches
        WHERE batch_id > (SELECT coalesce(max(batch_id), 0) FROM ingest_batches) - ?
        """,
        params=[last_batches],
    ).fetchall()[0]
    total, q = int(row[0] or 0), int(row[1] or 0)
    rate = q / total if total else 0.0
    return Verdict(rate <= threshold, {"quarantine_rate": round(rate, 5), "threshold": threshold,
                                        "messages": total, "quarantined": q})


def offset_contiguity(conn, batches: tuple[int, int] | None = None) -> Verdict:
    """Each committed batch starts where the previous batch of its partition ended (or says why
    not). Scoped: the batches of this pass against each partition's last batch before them."""
    lo = 0 if batches is None else int(batches[0])
    hi_filter = "" if batches is None else f"AND batch_id <= {int(batches[1])}"
    before = "" if batches is None else f"""
        UNION ALL
        SELECT o.* FROM ingest_offsets o JOIN (
            SELECT kafka_topic, kafka_partition, max(batch_id) AS batch_id FROM ingest_offsets
            WHERE batch_id < {lo} AND batch_id >= {lo} - 1000 GROUP BY 1, 2) p USING (kafka_topic, kafka_partition, batch_id)"""
    rows_sql = f"SELECT * FROM ingest_offsets WHERE batch_id >= {lo} {hi_filter}{before}"
    gaps = conn.sql(
        f"""
        SELECT kafka_topic, kafka_partition, batch_id, from_offset, prev_next FROM (
            SELECT *, lag(next_offset) OVER (PARTITION BY kafka_topic, kafka_partition ORDER BY batch_id) AS prev_next
            FROM ({rows_sql}))
        WHERE prev_next IS NOT NULL AND from_offset <> prev_next AND reset_reason IS NULL AND batch_id >= {lo}
        ORDER BY batch_id
        """
    ).fetchall()
    scope = f"batch_id >= {lo} {hi_filter}"
    bad_counts = _n(conn, f"SELECT count(*) FROM ingest_offsets WHERE {scope} AND next_offset - from_offset <> message_count")
    resets = _n(conn, f"SELECT count(*) FROM ingest_offsets WHERE {scope} AND reset_reason IS NOT NULL")
    md: dict = {"gaps": len(gaps), "inconsistent_batches": bad_counts, "explained_resets": resets}
    if gaps:
        md["offending_batches"] = dg.MetadataValue.md(markdown_table(
            gaps[:OFFENDERS], ["topic", "partition", "batch_id", "from_offset", "previous next_offset"]))
    return Verdict(not gaps and bad_counts == 0, md)


# ----------------------------------------------------------------------------- gold
FEATURE_NUMERIC = ("return_pct", "log_return", "sma_1m", "sma_5m", "sma_15m", "ema_20", "volatility_15m",
                   "zscore_15m", "volume_change_pct")


def features_finite(conn, seq: Seqs = None) -> Verdict:
    bad_expr = " OR ".join(f"({c} IS NOT NULL AND NOT isfinite({c}))" for c in FEATURE_NUMERIC)
    scope = _scope("feature_seq", seq)
    counts_sql = ", ".join(f"count(*) FILTER ({c} IS NOT NULL AND NOT isfinite({c}))" for c in FEATURE_NUMERIC)
    row = conn.sql(f"SELECT {counts_sql}, count(*) FILTER (volatility_15m < 0) FROM market_features WHERE {scope}").fetchall()[0]
    counts = dict(zip(FEATURE_NUMERIC, (int(v) for v in row[:-1]), strict=True))
    neg_vol = int(row[-1])
    bad = {c: n for c, n in counts.items() if n}
    md: dict = {"non_finite_counts": counts, "negative_volatility": neg_vol}
    if bad or neg_vol:
        md["offending_rows"] = dg.MetadataValue.md(_offenders(
            conn, f"SELECT coin_id, event_time, price_usd, {', '.join(bad) or 'volatility_15m'} FROM market_features "
                  f"WHERE {scope} AND ({bad_expr} OR volatility_15m < 0) ORDER BY event_time",
            ["coin_id", "event_time", "price_usd", *(bad or ["volatility_15m"])]))
    return Verdict(not bad and neg_vol == 0, md, f"NaN/Inf in {bad}" if bad else "all defined values finite")


def rsi_in_range(conn, seq: Seqs = None) -> Verdict:
    scope = _scope("candle_seq", seq)
    bad_rsi = "rsi_14 IS NOT NULL AND (NOT isfinite(rsi_14) OR rsi_14 < 0 OR rsi_14 > 100)"
    bad_bb = "bb_upper < bb_lower OR NOT isfinite(bb_middle)"
    bad_ohlc = "NOT (low <= open AND open <= high AND low <= close AND close <= high)"
    out, bb, ohlc = conn.sql(
        f"SELECT count(*) FILTER ({bad_rsi}), count(*) FILTER ({bad_bb}), count(*) FILTER ({bad_ohlc}) "
        f"FROM ohlcv_1m WHERE {scope}").fetchall()[0]
    md: dict = {"rsi_out_of_range": int(out), "bad_bollinger": int(bb), "bad_ohlc": int(ohlc)}
    if out or bb or ohlc:
        md["offending_rows"] = dg.MetadataValue.md(_offenders(
            conn, f"SELECT coin_id, minute, open, high, low, close, rsi_14 FROM ohlcv_1m "
                  f"WHERE {scope} AND (({bad_rsi}) OR ({bad_bb}) OR ({bad_ohlc})) ORDER BY minute",
            ["coin_id", "minute", "open", "high", "low", "close", "rsi_14"]))
    return Verdict(out == 0 and bb == 0 and ohlc == 0, md)


# ----------------------------------------------------------------------------- specs
# The checks of the incremental assets, evaluated inside their asset's step (check_specs of the
# incremental multi-asset): one step per run instead of one per check.
CLEAN_UNIQUE = dg.AssetCheckSpec("clean_ticks_unique", asset="clean_ticks", blocking=True,
                                 description="(coin_id, event_time) is unique (the keys each pass inserted)")
CLEAN_POSITIVE = dg.AssetCheckSpec("clean_ticks_positive_price", asset="clean_ticks", blocking=True,
                                   description="price > 0 and finite, volume >= 0 (the rows each pass inserted)")
FRESHNESS = dg.AssetCheckSpec("clean_ticks_freshness", asset="clean_ticks", description="the newest tick is recent")
RECONCILIATION = dg.AssetCheckSpec("clean_ticks_reconciliation", asset="clean_ticks",
                                   description="raw = clean + quarantined for every raw batch cleaned")
QUARANTINE_RATE = dg.AssetCheckSpec("raw_ticks_quarantine_rate", asset="raw_ticks",
                                    description="share of quarantined messages in recent batches")
OFFSET_CONTIGUITY = dg.AssetCheckSpec("raw_ticks_offset_contiguity", asset="raw_ticks",
                                      description="committed batches leave no offset gaps")
FEATURES_FINITE = dg.AssetCheckSpec("market_features_finite", asset="market_features", blocking=True,
                                    description="no NaN/Inf where a value is defined (the rows each pass wrote)")
RSI_RANGE = dg.AssetCheckSpec("ohlcv_1m_rsi_range", asset="ohlcv_1m", blocking=True,
                              description="RSI in [0, 100], sane OHLC and bands (the candles each pass wrote)")
SEVERITY = {QUARANTINE_RATE.key: WARN, FRESHNESS.key: WARN}
INCREMENTAL_CHECKS = [QUARANTINE_RATE, OFFSET_CONTIGUITY, CLEAN_UNIQUE, CLEAN_POSITIVE, FRESHNESS, RECONCILIATION,
                      FEATURES_FINITE, RSI_RANGE]



def schema_matches(conn, table: str) -> Verdict:
    """The table's columns (DESCRIBE) are the ones the code declares: the declared schema is
    the assets' definition metadata, so no run has to store it to detect drift."""
    from crypto_assets.warehouse.tables import TABLES

    actual = [(r[0], r[1]) for r in conn.sql(f"DESCRIBE {table}").fetchall()]
    declared = TABLES[table].declared_columns()
    missing = [f"{n} {t}" for n, t in declared if (n, t) not in actual]
    extra = [f"{n} {t}" for n, t in actual if (n, t) not in declared]
    return Verdict(not missing and not extra, {"missing_or_changed": ", ".join(missing) or "none",
                                               "not_declared": ", ".join(extra) or "none"},
                   "columns match the declared schema" if not (missing or extra) else "the table drifted from the code")


SCHEMA_CHECKED = ["raw_ticks", "clean_ticks", "market_features", "ohlcv_1m", "ohlcv_1h", "hourly_stats", "anomalies"]
