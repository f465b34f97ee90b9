"""The bronze table and the bookkeeping tables: raw ticks as pulled from Kafka, what was rejected,
where each partition's pull stands, what each batch held, which Parquet hours are stale, which
outbox send is in flight, and each derived table's incremental state."""

from __future__ import annotations

from crypto_assets.warehouse.table_spec import Table

RAW_TICKS = Table("raw_ticks", """
    coin_id              VARCHAR NOT NULL,      -- coin identifier (CoinGecko style), e.g. bitcoin
    symbol               VARCHAR NOT NULL,      -- ticker symbol, e.g. btc
    source               VARCHAR NOT NULL,      -- producer that sent the tick: simulator, coingecko or replay
    schema_version       INTEGER NOT NULL,      -- version of the tick message contract
    price_usd            DOUBLE NOT NULL,       -- price in USD
    market_cap_usd       DOUBLE,                -- market capitalisation in USD, as the source reports it
    volume_24h_usd       DOUBLE,                -- traded volume over the last 24 h in USD, as the source reports it
    change_24h_pct       DOUBLE,                -- price change over the last 24 h in %, as the source reports it
    change_7d_pct        DOUBLE,                -- price change over the last 7 days in %, as the source reports it
    last_updated_at      TIMESTAMPTZ NOT NULL,  -- event time: when the source last updated the price
    ingestion_timestamp  TIMESTAMPTZ,           -- when the producer fetched or generated the tick
    kafka_topic          VARCHAR NOT NULL,      -- Kafka topic the message was read from
    kafka_partition      INTEGER NOT NULL,      -- Kafka partition the message was read from
    kafka_offset         BIGINT NOT NULL,       -- offset of the message in its partition
    kafka_timestamp      TIMESTAMPTZ,           -- timestamp of the Kafka message
    batch_id             BIGINT NOT NULL,       -- pull batch that wrote the row (ingest_batches), clean_ticks' hwm
    ingested_at          TIMESTAMPTZ NOT NULL   -- when the pull committed the batch to DuckDB
""",
    dataset="bronze/raw_ticks", time_column="last_updated_at", seq_column="batch_id",
    export_order="coin_id, last_updated_at")

QUARANTINE = Table("quarantine", """
    stage             VARCHAR NOT NULL,      -- which asset rejected it: raw_ticks, raw_trades, clean_ticks, ...
    reason            VARCHAR NOT NULL,      -- machine-readable rule, e.g. invalid_json, missing:price_usd
    detail            VARCHAR,               -- human-readable explanation, with the offending value
    kafka_topic       VARCHAR,               -- Kafka topic the message was read from
    kafka_partition   INTEGER,               -- Kafka partition the message was read from
    kafka_offset      BIGINT,                -- offset of the message in its partition
    message_key       BLOB,                  -- key of the Kafka message (bronze stages only)
    raw_value         BLOB,                  -- original bytes (truncated past max_stored_bytes; bronze stages only)
    raw_size          BIGINT,                -- size of the original message in bytes
    coin_id           VARCHAR,               -- coin of the tick or trade, where it could be read
    last_updated_at   TIMESTAMPTZ,           -- event time of the tick (a trade's trade_time), where it could be read
    batch_id          BIGINT,                -- pull batch the message arrived in
    quarantined_at    TIMESTAMPTZ NOT NULL,  -- when it was rejected
    dlq_published_at  TIMESTAMPTZ            -- outbox marker: NULL until sent to the DLQ topic
""")

INGEST_OFFSETS = Table("ingest_offsets", """
    batch_id         BIGINT NOT NULL,       -- pull batch
    kafka_topic      VARCHAR NOT NULL,      -- topic read
    kafka_partition  INTEGER NOT NULL,      -- partition read
    from_offset      BIGINT NOT NULL,       -- first offset read in this batch
    next_offset      BIGINT NOT NULL,       -- first offset NOT read: where the next batch starts
    message_count    BIGINT NOT NULL,       -- messages read from the partition in this batch
    cluster_id       VARCHAR,               -- id of the Kafka cluster read (a change means a new cluster)
    reset_reason     VARCHAR,               -- set when the batch did not start where the last ended
    committed_at     TIMESTAMPTZ NOT NULL,  -- when the batch committed
    PRIMARY KEY (kafka_topic, kafka_partition, batch_id)
""")

# Where each partition's next pull starts: one row per (topic, partition), moved in the same
# transaction as ingest_offsets, so a pull reads it in O(partitions) rather than scanning the
# offsets history (one row per partition per batch: ~350k rows a day in live mode).
INGEST_POSITIONS = Table("ingest_positions", """
    kafka_topic      VARCHAR NOT NULL,  -- topic
    kafka_partition  INTEGER NOT NULL,  -- partition
    next_offset      BIGINT NOT NULL,   -- where the next pull of the partition starts
    cluster_id       VARCHAR,           -- id of the Kafka cluster the offset belongs to
    batch_id         BIGINT NOT NULL,   -- the batch that moved it
    PRIMARY KEY (kafka_topic, kafka_partition)
""")

INGEST_BATCHES = Table("ingest_batches", """
    batch_id        BIGINT PRIMARY KEY,    -- pull batch: one DuckDB transaction of raw rows, offsets and quarantine
    run_id          VARCHAR,               -- Dagster run that pulled it
    kafka_topic     VARCHAR NOT NULL,      -- topic read
    cluster_id      VARCHAR,               -- id of the Kafka cluster read
    messages        BIGINT NOT NULL,       -- messages read
    rows_written    BIGINT NOT NULL,       -- rows written to the topic's bronze table (raw_ticks, raw_trades)
    quarantined     BIGINT NOT NULL,       -- messages quarantined (the rest of a trade batch: trades seen before)
    bytes           BIGINT NOT NULL,       -- message bytes read
    min_event_time  TIMESTAMPTZ,           -- oldest event time written
    max_event_time  TIMESTAMPTZ,           -- newest event time written
    started_at      TIMESTAMPTZ NOT NULL,  -- when the batch's read started
    committed_at    TIMESTAMPTZ NOT NULL   -- when the batch committed
""")

# Parquet files whose DuckDB rows changed and must be (re)exported: one per (dataset, UTC hour,
# symbol), i.e. one part-HH.parquet file. Written in the same transaction as the rows, cleared
# only after the file is in place: a crash during export leaves the marker behind and the next
# run redoes the export.
LAKE_PENDING = Table("lake_pending", """
    dataset  VARCHAR NOT NULL,      -- Parquet dataset, e.g. gold/ohlcv_1m
    hour     TIMESTAMPTZ NOT NULL,  -- UTC hour of the file to rewrite
    symbol   VARCHAR NOT NULL,      -- symbol of the file to rewrite
    PRIMARY KEY (dataset, hour, symbol)
""")

# An outbox send in progress (crypto_assets.kafka.outbox): where each partition of the target topic
# ended before the send. Deleted in the transaction that marks the rows sent; a row still here
# means the send was interrupted, and the next publish reads the topic from these offsets to find
# what it already holds.
OUTBOX_SENDS = Table("outbox_sends", """
    outbox           VARCHAR NOT NULL,      -- alerts, or dlq:<source topic>
    topic            VARCHAR NOT NULL,      -- the topic the send writes to
    kafka_partition  INTEGER NOT NULL,      -- -1: the topic did not exist yet (read it from its start)
    start_offset     BIGINT NOT NULL,       -- the partition's high watermark before the send
    started_at       TIMESTAMPTZ NOT NULL,  -- when the send started
    PRIMARY KEY (outbox, kafka_partition)
""")

# Per derived table (crypto_assets.warehouse.incremental_table): what it has processed and its
# own run sequence, moved in the same transaction as its rows.
ASSET_STATE = Table("asset_state", """
    asset       VARCHAR PRIMARY KEY,   -- the derived table (asset)
    hwm         BIGINT NOT NULL,       -- last upstream sequence number processed
    seq         BIGINT NOT NULL,       -- this asset's own run sequence (stamped on rows it writes)
    updated_at  TIMESTAMPTZ NOT NULL   -- when the state last moved
""")

INGEST_TABLES = (RAW_TICKS, QUARANTINE, INGEST_OFFSETS, INGEST_POSITIONS, INGEST_BATCHES, LAKE_PENDING, OUTBOX_SENDS,
                 ASSET_STATE)
