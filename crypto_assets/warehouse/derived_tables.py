"""The tables derived from raw_ticks: silver (clean ticks and the clean step's own state), gold
(features, candles, hourly stats, correlations, anomalies) and the model predictions."""

from __future__ import annotations

from crypto_assets.warehouse.table_spec import Table


def _candle_columns(unit: str) -> str:
    """The columns every candle table starts with: one row per coin and UTC `unit`, OHLC of its ticks."""
    return f"""
    coin_id     VARCHAR NOT NULL,      -- coin identifier (CoinGecko style), e.g. bitcoin
    symbol      VARCHAR NOT NULL,      -- ticker symbol, e.g. btc
    {unit:<10}  TIMESTAMPTZ NOT NULL,  -- start of the UTC {unit}
    open        DOUBLE NOT NULL,       -- price of the {unit}'s first tick
    high        DOUBLE NOT NULL,       -- highest price in the {unit}
    low         DOUBLE NOT NULL,       -- lowest price in the {unit}
    close       DOUBLE NOT NULL,       -- price of the {unit}'s last tick
    volume      DOUBLE,                -- last 24h USD volume seen in the {unit} (the feed carries no trade volume)
    tick_count  INTEGER NOT NULL,      -- clean ticks in the {unit}"""


CLEAN_TICKS = Table("clean_ticks", """
    coin_id              VARCHAR NOT NULL,      -- coin identifier (CoinGecko style), e.g. bitcoin
    symbol               VARCHAR NOT NULL,      -- ticker symbol, e.g. btc
    source               VARCHAR NOT NULL,      -- producer that sent the tick: simulator, coingecko or replay
    event_time           TIMESTAMPTZ NOT NULL,  -- event time of the tick (raw last_updated_at)
    price_usd            DOUBLE NOT NULL,       -- price in USD
    market_cap_usd       DOUBLE,                -- market capitalisation in USD
    volume_24h_usd       DOUBLE,                -- 24 h traded volume in USD: 0 or within the plausible bounds
    change_24h_pct       DOUBLE,                -- price change over the last 24 h in %, as the source reports it
    change_7d_pct        DOUBLE,                -- price change over the last 7 days in %, as the source reports it
    ingestion_timestamp  TIMESTAMPTZ,           -- when the producer fetched or generated the tick
    kafka_partition      INTEGER NOT NULL,      -- Kafka partition of the raw message
    kafka_offset         BIGINT NOT NULL,       -- Kafka offset of the raw message
    raw_batch_id         BIGINT NOT NULL,       -- raw_ticks batch the tick came from
    clean_seq            BIGINT NOT NULL        -- clean_ticks run that wrote (or re-stamped) the row
""",
    dataset="silver/clean_ticks", time_column="event_time", seq_column="clean_seq",
    export_order="coin_id, event_time")

# The clean step's lateness reference: each coin's newest accepted event time.
CLEAN_COIN_STATE = Table("clean_coin_state", """
    coin_id         VARCHAR PRIMARY KEY,   -- coin
    max_event_time  TIMESTAMPTZ NOT NULL   -- newest accepted event time of the coin
""", on_connect=False)

# The jump guard's reference (transforms/plausibility.py): each coin's last candidate ticks.
CLEAN_PRICE_WINDOW = Table("clean_price_window", """
    coin_id          VARCHAR NOT NULL,      -- coin
    batch_id         BIGINT NOT NULL,       -- arrival order: (batch_id, kafka_partition, kafka_offset)
    kafka_partition  INTEGER NOT NULL,      -- Kafka partition of the tick
    kafka_offset     BIGINT NOT NULL,       -- Kafka offset of the tick
    event_time       TIMESTAMPTZ NOT NULL,  -- event time of the tick
    price_usd        DOUBLE NOT NULL        -- price in USD
""", on_connect=False)

MARKET_FEATURES = Table("market_features", """
    coin_id            VARCHAR NOT NULL,      -- coin identifier (CoinGecko style), e.g. bitcoin
    symbol             VARCHAR NOT NULL,      -- ticker symbol, e.g. btc
    event_time         TIMESTAMPTZ NOT NULL,  -- event time of the tick (raw last_updated_at)
    price_usd          DOUBLE NOT NULL,       -- price in USD
    volume_24h_usd     DOUBLE,                -- traded volume over the last 24 h in USD
    return_pct         DOUBLE,                -- simple return vs the previous tick, in %
    log_return         DOUBLE,                -- log return vs the previous tick
    sma_1m             DOUBLE,                -- mean price over (t - 1 min, t] of event time
    sma_5m             DOUBLE,                -- mean price over (t - 5 min, t] of event time
    sma_15m            DOUBLE,                -- mean price over (t - 15 min, t] of event time
    ema_20             DOUBLE,                -- 20-tick EMA, alpha = 2/21, seeded with the first price
    volatility_15m     DOUBLE,                -- population std of log returns over (t - 15 min, t]
    zscore_15m         DOUBLE,                -- (price - sma_15m) / population std of price over the window
    volume_change_pct  DOUBLE,                -- 24h volume vs the previous tick, in %
    ticks_15m          INTEGER,               -- ticks in (t - 15 min, t]
    feature_seq        BIGINT NOT NULL        -- market_features run that wrote the row
""",
    dataset="gold/market_features", time_column="event_time", seq_column="feature_seq",
    export_order="coin_id, event_time")

OHLCV_1M = Table("ohlcv_1m", _candle_columns("minute") + """
    return_pct  DOUBLE,                -- close vs previous candle's close, in %
    rsi_14      DOUBLE,                -- Wilder RSI(14) on closes (TA-Lib definition)
    bb_middle   DOUBLE,                -- Bollinger(20, 2): SMA of 20 closes
    bb_upper    DOUBLE,                -- Bollinger(20, 2): bb_middle + 2 population std of 20 closes
    bb_lower    DOUBLE,                -- Bollinger(20, 2): bb_middle - 2 population std of 20 closes
    rsi_n       INTEGER NOT NULL,      -- RSI state: price changes seen so far (capped at 14)
    rsi_gain    DOUBLE,                -- RSI state: running sum of gains while seeding, then Wilder average
    rsi_loss    DOUBLE,                -- RSI state: running sum of losses while seeding, then Wilder average
    candle_seq  BIGINT NOT NULL        -- ohlcv_1m run that wrote the row
""",
    dataset="gold/ohlcv_1m", by_date=True, time_column="minute", seq_column="candle_seq",
    export_order="coin_id, minute")

OHLCV_1H = Table("ohlcv_1h", _candle_columns("hour") + """
    candle_seq  BIGINT NOT NULL        -- ohlcv_1h run that wrote the row
""",
    dataset="gold/ohlcv_1h", by_date=True, time_column="hour", seq_column="candle_seq",
    export_order="coin_id, hour")

HOURLY_STATS = Table("hourly_stats", """
    coin_id       VARCHAR NOT NULL,      -- coin identifier (CoinGecko style), e.g. bitcoin
    symbol        VARCHAR NOT NULL,      -- ticker symbol, e.g. btc
    hour          TIMESTAMPTZ NOT NULL,  -- start of the UTC hour
    avg_price     DOUBLE NOT NULL,       -- mean price of the hour's ticks
    min_price     DOUBLE NOT NULL,       -- lowest price in the hour
    max_price     DOUBLE NOT NULL,       -- highest price in the hour
    stddev_price  DOUBLE,                -- population std of the hour's prices
    avg_volume    DOUBLE,                -- mean 24h USD volume of the hour's ticks
    tick_count    INTEGER NOT NULL,      -- clean ticks in the hour
    stats_seq     BIGINT NOT NULL        -- hourly_stats run that wrote the row
""",
    dataset="gold/hourly_stats", by_date=True, time_column="hour", seq_column="stats_seq",
    export_order="coin_id, hour")

CORRELATIONS = Table("correlations", """
    coin_a       VARCHAR NOT NULL,      -- first coin of the pair (coin_a < coin_b)
    coin_b       VARCHAR NOT NULL,      -- second coin of the pair
    window_name  VARCHAR NOT NULL,      -- '24h' or '7d'
    window_end   TIMESTAMPTZ NOT NULL,  -- the newest candle: the window is the 24 h or 7 d before it
    corr         DOUBLE,                -- Pearson correlation of the pair's 1-minute returns (NULL: a constant series)
    n            INTEGER NOT NULL,      -- minutes where both coins have a return
    PRIMARY KEY (coin_a, coin_b, window_name)
""",
    dataset="gold/correlations", single_file=True, time_column="window_end",
    export_order="window_name, coin_a, coin_b")

# Per (coin pair, UTC hour): sums over the minutes where both coins have a 1-minute return, so a
# window's Pearson correlation is a sum over at most 169 buckets plus one partial hour of minute
# rows, however long the history (transforms/anomalies.py correlations_refresh).
CORR_BUCKETS = Table("corr_buckets", """
    coin_a  VARCHAR NOT NULL,      -- first coin of the pair (coin_a < coin_b)
    coin_b  VARCHAR NOT NULL,      -- second coin of the pair
    hour    TIMESTAMPTZ NOT NULL,  -- UTC hour summed over
    n       BIGINT NOT NULL,       -- minutes where both coins have a return
    sx      DOUBLE NOT NULL,       -- sum of coin_a's returns
    sy      DOUBLE NOT NULL,       -- sum of coin_b's returns
    sxx     DOUBLE NOT NULL,       -- sum of coin_a's squared returns
    syy     DOUBLE NOT NULL,       -- sum of coin_b's squared returns
    sxy     DOUBLE NOT NULL,       -- sum of the products of the two returns
    PRIMARY KEY (coin_a, coin_b, hour)
""")

ANOMALIES = Table("anomalies", """
    anomaly_id      VARCHAR PRIMARY KEY,   -- md5(coin_id | event_time | rule), trade rules md5(source | ...): never duplicated
    coin_id         VARCHAR NOT NULL,      -- coin identifier (CoinGecko style), e.g. bitcoin
    symbol          VARCHAR NOT NULL,      -- ticker symbol, e.g. btc
    event_time      TIMESTAMPTZ NOT NULL,  -- event time of the feature row that fired
    rule            VARCHAR NOT NULL,      -- price_zscore | volume_spike | trade_return_zscore | trade_volume_spike
    severity        VARCHAR NOT NULL,      -- warning | critical
    value           DOUBLE NOT NULL,       -- the z-score, or the volume change % (vs the previous tick / trailing mean)
    threshold       DOUBLE NOT NULL,       -- the rule's threshold the value exceeded
    price_usd       DOUBLE NOT NULL,       -- price in USD
    volume_24h_usd  DOUBLE,                -- traded volume over the last 24 h in USD
    detected_at     TIMESTAMPTZ NOT NULL,  -- when the anomalies run found it
    published_at    TIMESTAMPTZ,           -- outbox marker for crypto_alerts: NULL until sent
    source          VARCHAR NOT NULL DEFAULT 'ticks'  -- ticks (tick features) or trades:<exchange>:<product> (trade bars)
""", dataset="gold/anomalies", by_date=True, time_column="event_time", export_order="event_time")

PREDICTIONS = Table("predictions", """
    coin_id                VARCHAR NOT NULL,      -- coin identifier (CoinGecko style), e.g. bitcoin
    symbol                 VARCHAR NOT NULL,      -- ticker symbol, e.g. btc
    event_time             TIMESTAMPTZ NOT NULL,  -- event time of the feature row scored
    price_usd              DOUBLE NOT NULL,       -- price in USD
    trend_prob_up          DOUBLE,                -- trend model: probability of a rise over the direction horizon
    trend_model_version    VARCHAR,               -- trend model version that scored the row
    anomaly_prob           DOUBLE,                -- anomaly model: probability of a large move in the next 15 min
    anomaly_model_version  VARCHAR,               -- anomaly model version that scored the row
    forecast_return_1h     DOUBLE,                -- price model: forecast return over the next hour
    forecast_return_4h     DOUBLE,                -- price model: forecast return over the next 4 hours
    forecast_return_24h    DOUBLE,                -- price model: forecast return over the next 24 hours
    price_model_versions   VARCHAR,               -- price model versions per horizon, e.g. 1h:v3,4h:v2
    predicted_at           TIMESTAMPTZ NOT NULL,  -- when the row was scored
    published_at           TIMESTAMPTZ,           -- outbox marker for crypto_predictions: NULL until sent
    PRIMARY KEY (coin_id, event_time)
""", dataset="gold/predictions", by_date=True, time_column="event_time", export_order="coin_id, event_time",
    on_connect=False)  # mirrored for the read API (crypto_assets/api); published_at as of the export

DERIVED_TABLES = (CLEAN_TICKS, CLEAN_COIN_STATE, CLEAN_PRICE_WINDOW, MARKET_FEATURES, OHLCV_1M, OHLCV_1H, HOURLY_STATS,
                  CORRELATIONS, CORR_BUCKETS, ANOMALIES, PREDICTIONS)
