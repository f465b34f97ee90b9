"""DDL of the warehouse tables this package owns. Idempotent: run on every connect."""

from __future__ import annotations

import duckdb

RAW_TICKS_DDL = """
CREATE TABLE IF NOT EXISTS raw_ticks (
    coin_id              VARCHAR NOT NULL,
    symbol               VARCHAR NOT NULL,
    source               VARCHAR NOT NULL,
    schema_version       INTEGER NOT NULL,
    price_usd            DOUBLE NOT NULL,
    market_cap_usd       DOUBLE,
    volume_24h_usd       DOUBLE,
    change_24h_pct       DOUBLE,
    change_7d_pct        DOUBLE,
    last_updated_at      TIMESTAMPTZ NOT NULL,
    ingestion_timestamp  TIMESTAMPTZ,
    kafka_topic          VARCHAR NOT NULL,
    kafka_partition      INTEGER NOT NULL,
    kafka_offset         BIGINT NOT NULL,
    kafka_timestamp      TIMESTAMPTZ,
    batch_id             BIGINT NOT NULL,
    ingested_at          TIMESTAMPTZ NOT NULL
)
"""

QUARANTINE_DDL = """
CREATE TABLE IF NOT EXISTS quarantine (
    stage            VARCHAR NOT NULL,      -- which asset rejected it: raw_ticks, clean_ticks, ...
    reason           VARCHAR NOT NULL,      -- machine-readable rule, e.g. invalid_json, missing:price_usd
    detail           VARCHAR,               -- human-readable explanation
    kafka_topic      VARCHAR,
    kafka_partition  INTEGER,
    kafka_offset     BIGINT,
    message_key      BLOB,
    raw_value        BLOB,                  -- original bytes (truncated past max_stored_bytes)
    raw_size         BIGINT,
    coin_id          VARCHAR,
    last_updated_at  TIMESTAMPTZ,
    batch_id         BIGINT,
    quarantined_at   TIMESTAMPTZ NOT NULL,
    dlq_published_at TIMESTAMPTZ            -- outbox marker: NULL until sent to the DLQ topic
)
"""

INGEST_OFFSETS_DDL = """
CREATE TABLE IF NOT EXISTS ingest_offsets (
    batch_id        BIGINT NOT NULL,
    kafka_topic     VARCHAR NOT NULL,
    kafka_partition INTEGER NOT NULL,
    from_offset     BIGINT NOT NULL,        -- first offset read in this batch
    next_offset     BIGINT NOT NULL,        -- first offset NOT read: where the next batch starts
    message_count   BIGINT NOT NULL,
    cluster_id      VARCHAR,
    reset_reason    VARCHAR,                -- set when the batch did not start where the last ended
    committed_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kafka_topic, kafka_partition, batch_id)
)
"""

INGEST_BATCHES_DDL = """
CREATE TABLE IF NOT EXISTS ingest_batches (
    batch_id        BIGINT PRIMARY KEY,
    run_id          VARCHAR,
    kafka_topic     VARCHAR NOT NULL,
    cluster_id      VARCHAR,
    messages        BIGINT NOT NULL,
    rows_written    BIGINT NOT NULL,
    quarantined     BIGINT NOT NULL,
    bytes           BIGINT NOT NULL,
    min_event_time  TIMESTAMPTZ,
    max_event_time  TIMESTAMPTZ,
    started_at      TIMESTAMPTZ NOT NULL,
    committed_at    TIMESTAMPTZ NOT NULL
)
"""

# Parquet partitions whose DuckDB rows changed and must be (re)exported. Written in the same
# transaction as the rows, cleared only after the Parquet file is in place: a crash during
# export leaves the marker behind and the next run redoes the export.
LAKE_DIRTY_DDL = """
CREATE TABLE IF NOT EXISTS lake_dirty (
    dataset     VARCHAR NOT NULL,
    day         DATE NOT NULL,
    symbol      VARCHAR NOT NULL,
    PRIMARY KEY (dataset, day, symbol)
)
"""

ALL_DDL = (RAW_TICKS_DDL, QUARANTINE_DDL, INGEST_OFFSETS_DDL, INGEST_BATCHES_DDL, LAKE_DIRTY_DDL)


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    for ddl in ALL_DDL:
        conn.execute(ddl)
