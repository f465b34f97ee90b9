"""The trade tables: bronze `raw_trades` as pulled from `crypto_trades` (crypto_assets.kafka.
trade_contract), `trade_gaps`, the holes in each product's trade-id sequence and whether a
later arrival (a REST heal, a late message) closed them, and `trade_id_ranges`, the runs of
consecutive trade ids already stored, which dedupe and gap detection read instead of raw_trades
(crypto_assets.ingest.trade_ranges: a batch costs its own size, not the history's).

Prices and sizes are DECIMAL(18, 8): exact, as the exchanges send them (Coinbase and Binance
quote at most 8 decimals), stored as 64-bit integers so sums and products stay exact and fast.
"""

from __future__ import annotations

from crypto_assets.warehouse.table_spec import Table

RAW_TRADES = Table("raw_trades", """
    exchange         VARCHAR NOT NULL,        -- exchange that executed the trade: coinbase, binance or simulator
    product          VARCHAR NOT NULL,        -- the exchange's product id, e.g. BTC-USD (Coinbase), BTCUSDT (Binance)
    base_currency    VARCHAR NOT NULL,        -- currency bought or sold, e.g. BTC
    quote_currency   VARCHAR NOT NULL,        -- currency the price is in, e.g. USD or USDT
    coin_id          VARCHAR NOT NULL,        -- coin of the base currency (CoinGecko style), joins raw_ticks
    trade_id         BIGINT NOT NULL,         -- the exchange's trade id, +1 per trade of the product
    price            DECIMAL(18,8) NOT NULL,  -- trade price in quote currency, exact
    size             DECIMAL(18,8) NOT NULL,  -- traded quantity in base currency, exact
    side             VARCHAR NOT NULL,        -- taker side: buy (lifted the ask) or sell (hit the bid)
    trade_time       TIMESTAMPTZ NOT NULL,    -- event time: when the exchange matched the trade
    received_at      TIMESTAMPTZ,             -- when the source received it
    origin           VARCHAR NOT NULL,        -- how it arrived: ws (live stream), rest (gap heal) or simulator
    schema_version   INTEGER NOT NULL,        -- version of the trade message contract
    kafka_topic      VARCHAR NOT NULL,        -- Kafka topic the message was read from
    kafka_partition  INTEGER NOT NULL,        -- Kafka partition the message was read from
    kafka_offset     BIGINT NOT NULL,         -- offset of the message in its partition
    kafka_timestamp  TIMESTAMPTZ,             -- timestamp of the Kafka message
    batch_id         BIGINT NOT NULL,         -- pull batch that wrote the row (ingest_batches)
    ingested_at      TIMESTAMPTZ NOT NULL     -- when the pull committed the batch to DuckDB
""",
    # Mirrored by date only, exchange and product columns in the files (sorted by them, so row
    # group statistics prune by product): the lake's second directory level is `symbol`.
    dataset="bronze/raw_trades", by_date=True, time_column="trade_time", seq_column="batch_id",
    export_order="exchange, product, trade_id")

TRADE_GAPS = Table("trade_gaps", """
    exchange       VARCHAR NOT NULL,      -- exchange of the product
    product        VARCHAR NOT NULL,      -- product whose trade ids jumped
    first_missing  BIGINT NOT NULL,       -- first trade id missing when the gap was found
    last_missing   BIGINT NOT NULL,       -- last trade id missing when the gap was found
    missing        BIGINT NOT NULL,       -- trade ids of the range still missing (0 = healed)
    detected_at    TIMESTAMPTZ NOT NULL,  -- when a pull first saw the jump
    detected_batch BIGINT NOT NULL,       -- the pull batch that saw it
    healed_at      TIMESTAMPTZ,           -- when the last missing id arrived (NULL while open)
    PRIMARY KEY (exchange, product, first_missing)
""")

# One row per run of consecutive trade ids of a product that raw_trades holds: one per product
# plus one per hole still open, so it stays as small as the gaps. Replaced per touched product
# in each pull batch's transaction (no key: the batch deletes and re-inserts its products' runs).
TRADE_ID_RANGES = Table("trade_id_ranges", """
    exchange  VARCHAR NOT NULL,  -- exchange of the product
    product   VARCHAR NOT NULL,  -- the exchange's product id
    first_id  BIGINT NOT NULL,   -- first trade id of a run of consecutive ids in raw_trades
    last_id   BIGINT NOT NULL    -- last trade id of the run
""")

TRADE_TABLES = (RAW_TRADES, TRADE_GAPS, TRADE_ID_RANGES)
