"""Bronze layer: raw_ticks and raw_trades, the exactly-once pulls from Kafka into DuckDB (+ Parquet).

The assets are materialized by the incremental step (crypto_assets/defs/incremental.py), which
runs the pulls at the start of every pass; this module holds their specs, their checks (their
rules and specs) and what one pull reports.
"""

from __future__ import annotations

from typing import Any

import dagster as dg

from crypto_assets.defs.check_verdicts import OFFENDERS, WARN, Verdict, count_of
from crypto_assets.defs.code_versions import source_version
from crypto_assets.defs.metadata import markdown_table, table_definition_metadata
from crypto_assets.ingest.config import PullConfig
from crypto_assets.ingest.pull import pull_raw_ticks, pull_raw_trades
from crypto_assets.ingest.results import PullResult
from crypto_assets.kafka.topics import RAW_TOPIC, TRADES_TOPIC

RAW_TICKS = dg.AssetSpec(
    "raw_ticks",
    deps=[RAW_TOPIC],  # the external topic asset (crypto_assets/defs/sources.py)
    group_name="bronze",
    kinds={"kafka", "duckdb", "parquet"},
    owners=["team:data-eng"],
    tags={"layer": "bronze"},
    code_version=source_version(pull_raw_ticks, PullConfig),
    skippable=True,
    metadata=table_definition_metadata("raw_ticks"),
    description="Contract-valid ticks pulled from `crypto_raw` in bounded micro-batches, exactly once. Rows and "
    "offsets commit in one DuckDB transaction; unusable messages go to `quarantine` and `crypto_raw_dlq` with "
    "their reason and never stop the batch.",
)
QUARANTINE_RATE = dg.AssetCheckSpec("raw_ticks_quarantine_rate", asset="raw_ticks",
                                    description="share of quarantined messages in recent batches")
OFFSET_CONTIGUITY = dg.AssetCheckSpec("raw_ticks_offset_contiguity", asset="raw_ticks",
                                      description="committed batches leave no offset gaps")
RAW_TRADES = dg.AssetSpec(
    "raw_trades",
    deps=[TRADES_TOPIC],
    group_name="bronze",
    kinds={"kafka", "duckdb", "parquet"},
    owners=["team:data-eng"],
    tags={"layer": "bronze"},
    code_version=source_version(pull_raw_trades, PullConfig),
    skippable=True,
    metadata=table_definition_metadata("raw_trades"),
    description="Exchange trades pulled from `crypto_trades` exactly once, deduplicated on (exchange, product, "
    "trade_id): rows, offsets, trade-id runs and gaps commit in one DuckDB transaction; unusable messages go to "
    "`quarantine` and `crypto_trades_dlq` with their reason. A trade-id jump is recorded in `trade_gaps` until "
    "later trades fill it.",
)
TRADE_GAPS = dg.AssetCheckSpec("raw_trades_gaps", asset="raw_trades",
                               description="per product: trade-id gaps found, healed and still open (warns while any is open)")
CHECKS = [QUARANTINE_RATE, OFFSET_CONTIGUITY, TRADE_GAPS]
SEVERITY = {QUARANTINE_RATE.key: WARN, TRADE_GAPS.key: WARN}  # the others fail as errors


def pull_numbers(result: PullResult) -> dict[str, Any]:
    """What one pull adds to the run's totals (summed over passes); the trade pull adds its
    counters (duplicates, gaps_found, gaps_healed, trades_missing_found, trades_healed)."""
    return {
        "pulls": 1,  # summed: how many passes pulled this topic (a draining pass skips a topic with nothing new)
        "messages_read": result.messages,
        "rows_written": result.rows_written,
        "quarantined": result.quarantined,
        "bytes_read": result.bytes,
        "dlq_published": result.dlq_published,
        "offsets_lost_to_retention": sum(result.offsets_lost.values()),
        **result.extra,
        **{f"quarantine_reasons/{k}": v for k, v in result.reasons.items()},
    }


def pull_last(result: PullResult) -> dict[str, Any]:
    """What the newest pull says (kept from the last pass)."""
    offsets_md = "| partition | next offset | remaining lag |\n|---|---|---|\n" + "\n".join(
        f"| {p.partition} | {p.next_offset} | {p.lag} |" for p in result.plans
    )
    return {
        "offsets": dg.MetadataValue.md(offsets_md),
        "remaining_lag": sum(result.remaining_lag.values()),
        "cluster_id": result.cluster_id or "",
        "bootstrap_servers": result.bootstrap,
    }


def batch_range(result: PullResult) -> tuple[int, int] | None:
    ids = [b.batch_id for b in result.batches]
    return (min(ids), max(ids)) if ids else None


def quarantine_rate(conn, threshold: float, last_batches: int = 20, topic: str | None = None) -> Verdict:
    """Share of quarantined messages in the last batches (those of `topic` among them, when
    given: the tick and trade pulls share the batch sequence)."""
    row = conn.sql(
        f"""
        SELECT sum(messages), sum(quarantined) FROM ingest_batches
        WHERE batch_id > (SELECT coalesce(max(batch_id), 0) FROM ingest_batches) - $n
          {"" if topic is None else "AND kafka_topic = $topic"}
        """,
        params={"n": last_batches} | ({} if topic is None else {"topic": topic}),
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
    bad_counts = count_of(conn, f"SELECT count(*) FROM ingest_offsets WHERE {scope} AND next_offset - from_offset <> message_count")
    resets = count_of(conn, f"SELECT count(*) FROM ingest_offsets WHERE {scope} AND reset_reason IS NOT NULL")
    md: dict = {"gaps": len(gaps), "inconsistent_batches": bad_counts, "explained_resets": resets}
    if gaps:
        md["offending_batches"] = dg.MetadataValue.md(markdown_table(
            gaps[:OFFENDERS], ["topic", "partition", "batch_id", "from_offset", "previous next_offset"]))
    return Verdict(not gaps and bad_counts == 0, md)


def trade_gaps(conn) -> Verdict:
    """Per product: trade-id gaps found, healed and still open (with the trades still missing).
    Fails (a warning) while any gap is open: the tape has a hole no REST heal or late message
    has filled yet. trade_gaps holds one row per gap ever found, a small table."""
    rows = conn.sql(
        """
        SELECT exchange, product, count(*) AS found, count(healed_at) AS healed,
               count(*) FILTER (WHERE missing > 0) AS open, coalesce(sum(missing), 0) AS missing,
               min(first_missing) FILTER (WHERE missing > 0) AS oldest_open_from
        FROM trade_gaps GROUP BY ALL ORDER BY open DESC, exchange, product
        """
    ).fetchall()
    open_gaps = sum(r[4] for r in rows)
    md: dict[str, Any] = {
        "gaps_found": sum(r[2] for r in rows), "gaps_healed": sum(r[3] for r in rows), "gaps_open": open_gaps,
        "trades_missing": sum(int(r[5]) for r in rows), "products_with_gaps": len(rows),
    }
    if rows:
        md["per_product"] = dg.MetadataValue.md(markdown_table(
            rows[:50], ["exchange", "product", "found", "healed", "open", "trades missing", "oldest open gap from id"]))
    what = f"{open_gaps} trade-id gap(s) open" if open_gaps else "no open trade-id gap"
    return Verdict(open_gaps == 0, md, what)


def trades_metadata(conn, new_rows: str) -> dict[str, Any]:
    """What a run's raw_trades materialization adds: its rows per product (count, trade-id and
    time range) and the gaps open now. `new_rows` selects the run's rows by batch id (zone maps
    prune to the newest row groups)."""
    per_product = conn.sql(
        f"""
        SELECT exchange, product, count(*), min(trade_id), max(trade_id), min(trade_time), max(trade_time)
        FROM raw_trades WHERE {new_rows} GROUP BY ALL ORDER BY ALL
        """
    ).fetchall()
    open_gaps, missing = conn.sql("SELECT count(*), coalesce(sum(missing), 0) FROM trade_gaps WHERE missing > 0").fetchall()[0]
    return {
        "rows_per_product": dg.MetadataValue.md(markdown_table(
            per_product, ["exchange", "product", "rows", "first trade_id", "last trade_id", "first time", "last time"])),
        "products": len(per_product),
        "gaps_open": int(open_gaps),
        "trades_missing": int(missing),
    }
