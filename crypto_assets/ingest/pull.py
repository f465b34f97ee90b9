"""The bounded, exactly-once micro-batch pull from Kafka into a bronze table, one code path for
every contract (crypto_assets.ingest.contracts: `crypto_raw` -> raw_ticks, `crypto_trades` ->
raw_trades; crypto_assets.ingest.contract says what differs).

DuckDB is the system of record for offsets. A pull
  1. snapshots the high watermarks (the batch never chases new data),
  2. reconciles the offsets stored in `ingest_positions` with the broker's log (restarted embedded
     broker, recreated topic, retention) and says what it found,
  3. reads with `assign()` from the stored offsets (no consumer-group rebalance),
  4. parses in bulk, and writes rows, quarantine rows, per-partition offsets and Parquet dirty
     markers in ONE transaction per batch,
  5. only then commits offsets to the Kafka consumer group (for lag monitoring only),
  6. publishes newly quarantined messages to the DLQ (an outbox, exactly once: crypto_assets.kafka.outbox), and
  7. re-exports the touched Parquet partitions.
A kill at any point leaves DuckDB with all of a batch or none of it; the next pull re-reads
exactly what was not committed.

This module is the orchestration; the steps live beside it: offsets.py (2), consumer.py and
consume.py (1, 3), parse.py and write.py (4) with the contract's rows (tick_rows.py +
validate.py, trade_rows.py + trade_validate.py + trade_ranges.py), dlq.py (6).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import TopicPartition

from crypto_assets.faults import fault_point
from crypto_assets.ingest.config import PullConfig
from crypto_assets.ingest.consume import consume_batch
from crypto_assets.ingest.consumer import RawConsumer
from crypto_assets.ingest.contract import BronzeContract
from crypto_assets.ingest.contracts import TICKS, TRADES
from crypto_assets.ingest.dlq import publish_dlq
from crypto_assets.ingest.offsets import lost_offsets_notice, plan_partitions, stored_offsets
from crypto_assets.ingest.results import PartitionPlan, PullResult, add_time
from crypto_assets.ingest.write import write_batch
from crypto_assets.resources.kafka import KafkaResource
from crypto_assets.resources.lakehouse import LakehouseResource
from crypto_assets.warehouse.lake_export import export_dirty
from crypto_assets.warehouse.tables import TABLES

log = logging.getLogger(__name__)


def pull_raw_ticks(
    kafka: KafkaResource,
    lakehouse: LakehouseResource,
    cfg: PullConfig | None = None,
    run_id: str | None = None,
    logger: logging.Logger | Any | None = None,
) -> PullResult:
    """One bounded pull of `crypto_raw` into raw_ticks."""
    return pull_bronze(TICKS, kafka, lakehouse, cfg, run_id, logger)


def pull_raw_trades(
    kafka: KafkaResource,
    lakehouse: LakehouseResource,
    cfg: PullConfig | None = None,
    run_id: str | None = None,
    logger: logging.Logger | Any | None = None,
) -> PullResult:
    """One bounded pull of `crypto_trades` into raw_trades (deduplicated, gaps recorded)."""
    return pull_bronze(TRADES, kafka, lakehouse, cfg, run_id, logger)


def pull_bronze(
    contract: BronzeContract,
    kafka: KafkaResource,
    lakehouse: LakehouseResource,
    cfg: PullConfig | None = None,
    run_id: str | None = None,
    logger: logging.Logger | Any | None = None,
) -> PullResult:
    """Run one bounded pull (possibly several committed batches) of the contract's topic and
    return what happened."""
    cfg = cfg or PullConfig()
    if not logger:
        logger = log
    t0 = time.monotonic()
    started_at = datetime.now(UTC)
    topic = contract.topic(kafka)
    table = TABLES[contract.table]
    timings: dict[str, float] = {}
    t = time.perf_counter()
    client = RawConsumer(kafka)
    add_time(timings, "consumer_open", t)
    result = PullResult(topic=topic, bootstrap=client.bootstrap, cluster_id=None, timings=timings)
    try:
        t = time.perf_counter()
        cluster_id, partitions = client.metadata(topic)
        add_time(timings, "metadata", t)
        result.cluster_id = cluster_id
        if not partitions:
            result.notices.append(f"topic {topic} does not exist yet on {client.bootstrap}: nothing to read")
            return result
        t = time.perf_counter()
        watermarks = client.watermarks(topic, partitions)
        add_time(timings, "watermarks", t)
        with lakehouse.connect() as conn:
            plans = plan_partitions(watermarks, stored_offsets(conn, topic), cluster_id)
            result.plans = plans
            summary = lost_offsets_notice(plans)
            for notice in [p.reset_reason for p in plans if p.reset_reason] + ([summary] if summary else []):
                result.notices.append(notice)
                logger.warning(notice)
            budget = cfg.max_messages
            first = True
            while True:
                limit = min(cfg.batch_size, budget)
                t = time.perf_counter()
                consumed = consume_batch(client, topic, plans, limit, cfg, timings)
                add_time(timings, "consume", t)
                if not consumed[1] and not (first and any(p.reset_reason for p in plans)):
                    break
                t = time.perf_counter()
                stats = write_batch(
                    conn, contract, topic, cluster_id, run_id, plans, consumed, list(lakehouse.coins), cfg, started_at,
                    timings,
                )
                add_time(timings, "write", t)
                first = False
                result.batches.append(stats)
                seen = f", {stats.skipped} seen before" if stats.skipped else ""
                logger.info(
                    f"batch {stats.batch_id}: {stats.messages} messages -> {stats.rows_written} rows, "
                    f"{stats.quarantined} quarantined{seen} ({contract.table})"
                )
                fault_point("after_duckdb_commit")
                t = time.perf_counter()
                result.kafka_commit_ok &= _commit_group_offsets(client, topic, plans)
                add_time(timings, "group_commit", t)
                budget -= stats.messages
                if budget <= 0 or not consumed[1]:
                    break
            if cfg.publish_dlq:
                t = time.perf_counter()
                result.dlq_published = publish_dlq(conn, kafka, topic, stage=contract.table,
                                                   dlq_topic=contract.dlq_topic(kafka))
                add_time(timings, "dlq", t)
            if cfg.export_parquet:
                t = time.perf_counter()
                assert table.dataset and table.time_column and table.export_order, table.name  # bronze is mirrored
                result.export = export_dirty(
                    conn, lakehouse.lake_path, table.dataset, table.name, table.time_column, table.export_order,
                )
                add_time(timings, "export", t)
        result.remaining_lag = {p.partition: p.lag for p in plans}
    finally:
        t = time.perf_counter()
        client.close()
        add_time(timings, "consumer_close", t)
        result.duration_s = time.monotonic() - t0
    return result


def _commit_group_offsets(client: RawConsumer, topic: str, plans: list[PartitionPlan]) -> bool:
    """Mirror DuckDB's offsets into the consumer group; only lag monitoring reads them."""
    offsets = [TopicPartition(topic, p.partition, p.next_offset) for p in plans if p.next_offset > 0]
    if not offsets:
        return True
    try:
        client.consumer.commit(offsets=offsets, asynchronous=False)
        return True
    except Exception as exc:  # noqa: BLE001 - the DuckDB offsets are the truth; lag will catch up
        log.warning("committing offsets to the consumer group failed (monitoring only): %s", exc)
        return False
