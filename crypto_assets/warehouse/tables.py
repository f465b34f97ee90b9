"""DDL of the warehouse tables this package owns. Idempotent: run on every connect."""

from __future__ import annotations

import re

import duckdb

from crypto_assets.warehouse.sql import transaction

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

# Where each partition's next pull starts: one row per (topic, partition), moved in the same
# transaction as ingest_offsets, so a pull reads it in O(partitions) rather than scanning the
# offsets history (one row per partition per batch: ~350k rows a day in live mode).
INGEST_POSITIONS_DDL = """
CREATE TABLE IF NOT EXISTS ingest_positions (
    kafka_topic     VARCHAR NOT NULL,
    kafka_partition INTEGER NOT NULL,
    next_offset     BIGINT NOT NULL,
    cluster_id      VARCHAR,
    batch_id        BIGINT NOT NULL,        -- the batch that moved it
    PRIMARY KEY (kafka_topic, kafka_partition)
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

# Parquet files whose DuckDB rows changed and must be (re)exported: one per (dataset, UTC hour,
# symbol), i.e. one part-HH.parquet file. Written in the same transaction as the rows, cleared
# only after the file is in place: a crash during export leaves the marker behind and the next
# run redoes the export. (Replaces lake_dirty, which marked whole days: see _migrate_lake_dirty.)
LAKE_PENDING_DDL = """
CREATE TABLE IF NOT EXISTS lake_pending (
    dataset     VARCHAR NOT NULL,
    hour        TIMESTAMPTZ NOT NULL,
    symbol      VARCHAR NOT NULL,
    PRIMARY KEY (dataset, hour, symbol)
)
"""

# An outbox send in progress (crypto_assets.kafka.outbox): where each partition of the target topic
# ended before the send. Deleted in the transaction that marks the rows sent; a row still here
# means the send was interrupted, and the next publish reads the topic from these offsets to find
# what it already holds.
OUTBOX_SENDS_DDL = """
CREATE TABLE IF NOT EXISTS outbox_sends (
    outbox          VARCHAR NOT NULL,       -- alerts, predictions, or dlq:<source topic>
    topic           VARCHAR NOT NULL,       -- the topic the send writes to
    kafka_partition INTEGER NOT NULL,       -- -1: the topic did not exist yet (read it from its start)
    start_offset    BIGINT NOT NULL,        -- the partition's high watermark before the send
    started_at      TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (outbox, kafka_partition)
)
"""

ALL_DDL = (RAW_TICKS_DDL, QUARANTINE_DDL, INGEST_OFFSETS_DDL, INGEST_POSITIONS_DDL, INGEST_BATCHES_DDL,
           LAKE_PENDING_DDL, OUTBOX_SENDS_DDL)


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    """Create missing tables. Every DDL is `CREATE TABLE IF NOT EXISTS`, a no-op when the table
    exists, so when one query that binds every table succeeds (~2-3 ms) the 13 DDL statements
    (~12-17 ms on every connect) are skipped. (A duckdb_tables() lookup costs more than the DDL.)
    Call it outside a transaction (LakehouseResource.connect does, on a fresh connection): a
    failed probe aborts an open transaction."""
    try:
        conn.execute(_PROBE).fetchall()
        return
    except duckdb.CatalogException:
        pass
    for ddl in ALL_DDL:
        conn.execute(ddl)
    _migrate_lake_dirty(conn)


def _migrate_lake_dirty(conn: duckdb.DuckDBPyConnection) -> None:
    """Warehouses from before hourly Parquet files mark whole days in lake_dirty: carry each
    marked day over as its 24 hours (the export then also replaces the day's old part-0 file)."""
    from crypto_assets.warehouse.lake_export import mark_whole_days  # lake_export.py reads these tables: import at use

    if not conn.sql("SELECT 1 FROM duckdb_tables() WHERE schema_name = 'main' AND table_name = 'lake_dirty'").fetchall():
        return
    with transaction(conn):
        mark_whole_days(conn, "SELECT dataset, day, symbol FROM lake_dirty")
        conn.execute("DROP TABLE lake_dirty")


# ------------------------------------------------------------------ silver / gold (issue 3)
ASSET_STATE_DDL = """
CREATE TABLE IF NOT EXISTS asset_state (
    asset       VARCHAR PRIMARY KEY,
    hwm         BIGINT NOT NULL,        -- last upstream sequence number processed
    seq         BIGINT NOT NULL,        -- this asset's own run sequence (stamped on rows it writes)
    updated_at  TIMESTAMPTZ NOT NULL
)
"""

CLEAN_TICKS_DDL = """
CREATE TABLE IF NOT EXISTS clean_ticks (
    coin_id             VARCHAR NOT NULL,
    symbol              VARCHAR NOT NULL,
    source              VARCHAR NOT NULL,
    event_time          TIMESTAMPTZ NOT NULL,
    price_usd           DOUBLE NOT NULL,
    market_cap_usd      DOUBLE,
    volume_24h_usd      DOUBLE,
    change_24h_pct      DOUBLE,
    change_7d_pct       DOUBLE,
    ingestion_timestamp TIMESTAMPTZ,
    kafka_partition     INTEGER NOT NULL,
    kafka_offset        BIGINT NOT NULL,
    raw_batch_id        BIGINT NOT NULL,
    clean_seq           BIGINT NOT NULL
)
"""

MARKET_FEATURES_DDL = """
CREATE TABLE IF NOT EXISTS market_features (
    coin_id            VARCHAR NOT NULL,
    symbol             VARCHAR NOT NULL,
    event_time         TIMESTAMPTZ NOT NULL,
    price_usd          DOUBLE NOT NULL,
    volume_24h_usd     DOUBLE,
    return_pct         DOUBLE,   -- simple return vs the previous tick, in %
    log_return         DOUBLE,
    sma_1m             DOUBLE,   -- mean price over (t - 1 min, t] of event time
    sma_5m             DOUBLE,
    sma_15m            DOUBLE,
    ema_20             DOUBLE,   -- 20-tick EMA, alpha = 2/21, seeded with the first price
    volatility_15m     DOUBLE,   -- population std of log returns over (t - 15 min, t]
    zscore_15m         DOUBLE,   -- (price - sma_15m) / population std of price over the window
    volume_change_pct  DOUBLE,   -- 24h volume vs the previous tick, in %
    ticks_15m          INTEGER,
    feature_seq        BIGINT NOT NULL
)
"""

OHLCV_1M_DDL = """
CREATE TABLE IF NOT EXISTS ohlcv_1m (
    coin_id       VARCHAR NOT NULL,
    symbol        VARCHAR NOT NULL,
    minute        TIMESTAMPTZ NOT NULL,
    open          DOUBLE NOT NULL,
    high          DOUBLE NOT NULL,
    low           DOUBLE NOT NULL,
    close         DOUBLE NOT NULL,
    volume        DOUBLE,    -- last 24h USD volume seen in the minute (the feed carries no trade volume)
    tick_count    INTEGER NOT NULL,
    return_pct    DOUBLE,    -- close vs previous candle's close, in %
    rsi_14        DOUBLE,    -- Wilder RSI(14) on closes (TA-Lib definition)
    bb_middle     DOUBLE,    -- Bollinger(20, 2): SMA of 20 closes
    bb_upper      DOUBLE,
    bb_lower      DOUBLE,
    rsi_n         INTEGER NOT NULL,  -- state: price changes seen so far (capped at 14)
    rsi_gain      DOUBLE,            -- state: running sum while seeding, then Wilder average
    rsi_loss      DOUBLE,
    candle_seq    BIGINT NOT NULL
)
"""

OHLCV_1H_DDL = """
CREATE TABLE IF NOT EXISTS ohlcv_1h (
    coin_id     VARCHAR NOT NULL,
    symbol      VARCHAR NOT NULL,
    hour        TIMESTAMPTZ NOT NULL,
    open        DOUBLE NOT NULL,
    high        DOUBLE NOT NULL,
    low         DOUBLE NOT NULL,
    close       DOUBLE NOT NULL,
    volume      DOUBLE,
    tick_count  INTEGER NOT NULL,
    candle_seq  BIGINT NOT NULL
)
"""

HOURLY_STATS_DDL = """
CREATE TABLE IF NOT EXISTS hourly_stats (
    coin_id      VARCHAR NOT NULL,
    symbol       VARCHAR NOT NULL,
    hour         TIMESTAMPTZ NOT NULL,
    avg_price    DOUBLE NOT NULL,
    min_price    DOUBLE NOT NULL,
    max_price    DOUBLE NOT NULL,
    stddev_price DOUBLE,        -- population std
    avg_volume   DOUBLE,
    tick_count   INTEGER NOT NULL,
    stats_seq    BIGINT NOT NULL
)
"""

CORRELATIONS_DDL = """
CREATE TABLE IF NOT EXISTS correlations (
    coin_a      VARCHAR NOT NULL,
    coin_b      VARCHAR NOT NULL,
    window_name VARCHAR NOT NULL,    -- '24h' or '7d'
    window_end  TIMESTAMPTZ NOT NULL,
    corr        DOUBLE,
    n           INTEGER NOT NULL,
    PRIMARY KEY (coin_a, coin_b, window_name)
)
"""

# Per (coin pair, UTC hour): sums over the minutes where both coins have a 1-minute return, so a
# window's Pearson correlation is a sum over at most 169 buckets plus one partial hour of minute
# rows, however long the history (transforms/anomalies.py correlations_refresh).
CORR_BUCKETS_DDL = """
CREATE TABLE IF NOT EXISTS corr_buckets (
    coin_a  VARCHAR NOT NULL,
    coin_b  VARCHAR NOT NULL,
    hour    TIMESTAMPTZ NOT NULL,
    n       BIGINT NOT NULL,
    sx      DOUBLE NOT NULL,   -- sum of coin_a's returns
    sy      DOUBLE NOT NULL,
    sxx     DOUBLE NOT NULL,
    syy     DOUBLE NOT NULL,
    sxy     DOUBLE NOT NULL,
    PRIMARY KEY (coin_a, coin_b, hour)
)
"""

ANOMALIES_DDL = """
CREATE TABLE IF NOT EXISTS anomalies (
    anomaly_id    VARCHAR PRIMARY KEY,   -- md5(coin_id | event_time | rule): re-runs never duplicate
    coin_id       VARCHAR NOT NULL,
    symbol        VARCHAR NOT NULL,
    event_time    TIMESTAMPTZ NOT NULL,
    rule          VARCHAR NOT NULL,      -- price_zscore | volume_spike
    severity      VARCHAR NOT NULL,      -- warning | critical
    value         DOUBLE NOT NULL,       -- the z-score or the volume change %
    threshold     DOUBLE NOT NULL,
    price_usd     DOUBLE NOT NULL,
    volume_24h_usd DOUBLE,
    detected_at   TIMESTAMPTZ NOT NULL,
    published_at  TIMESTAMPTZ            -- outbox marker for crypto_alerts
)
"""

ALL_DDL = ALL_DDL + (
    ASSET_STATE_DDL,
    CLEAN_TICKS_DDL,
    MARKET_FEATURES_DDL,
    OHLCV_1M_DDL,
    OHLCV_1H_DDL,
    HOURLY_STATS_DDL,
    CORRELATIONS_DDL,
    CORR_BUCKETS_DDL,
    ANOMALIES_DDL,
)

# One query that binds every table (see ensure_schema); built once, from the final ALL_DDL.
_TABLES = [re.search(r"CREATE TABLE IF NOT EXISTS (\w+)", ddl).group(1) for ddl in ALL_DDL]
_PROBE = " UNION ALL ".join(f"(SELECT 1 FROM main.{name} LIMIT 0)" for name in _TABLES)

# ------------------------------------------------------------------ declared column schemas
_COLUMN = re.compile(r"^\s*(\w+)\s+([A-Z]+(?:\([^)]*\))?)([^,-]*?)\s*,?\s*(?:--\s*(.*))?$")


def _parse_columns(ddl: str) -> list[tuple[str, str, bool, str | None]]:
    """(name, type, not null, comment) per column line of a CREATE TABLE statement."""
    body = ddl[ddl.index("(") + 1: ddl.rindex(")")]
    out = []
    for line in body.splitlines():
        m = _COLUMN.match(line)
        if m and m.group(1).upper() not in ("PRIMARY", "UNIQUE", "CHECK"):
            out.append((m.group(1), m.group(2), "NOT NULL" in m.group(3), (m.group(4) or "").strip() or None))
    return out


DDL_BY_TABLE = {name: ddl for name, ddl in zip(_TABLES, ALL_DDL)}


def declared_columns(table: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) as the DDL declares them, for comparing with DESCRIBE."""
    alias = {"TIMESTAMPTZ": "TIMESTAMP WITH TIME ZONE"}
    return [(n, alias.get(t, t)) for n, t, _nn, _c in _parse_columns(DDL_BY_TABLE[table])]


def column_schema(table: str, descriptions: dict[str, str] | None = None):
    """The table's columns as a Dagster TableSchema (types, NOT NULL, the DDL's comments as
    descriptions): definition metadata, so the catalog shows it without any run storing it."""
    import dagster as dg

    descriptions = descriptions or {}
    return dg.TableSchema(columns=[
        dg.TableColumn(name=n, type=t, description=descriptions.get(n) or c,
                       constraints=dg.TableColumnConstraints(nullable=not nn))
        for n, t, nn, c in _parse_columns(DDL_BY_TABLE[table])
    ])
