"""The history tables: `klines_1m`, the exchanges' own 1-minute candles loaded a UTC day at a
time by the `klines_1m` asset (crypto_assets.defs.history), and `kline_gaps`, its gap report
(minutes of each day and product the exchange had no candle for).

`klines_1m` starts with the trade bars' columns (exchange, product, coin_id, bar_start, OHLC,
volumes, vwap, trade_count, buy/sell volume), so the `bars_1m` view can put the two side by side.
"""

from __future__ import annotations

from crypto_assets.warehouse.table_spec import Table

KLINES_1M = Table("klines_1m", """
    exchange      VARCHAR NOT NULL,        -- exchange the candle comes from: coinbase or binance
    product       VARCHAR NOT NULL,        -- the exchange's product id, e.g. BTC-USD (Coinbase), BTCUSDT (Binance)
    coin_id       VARCHAR NOT NULL,        -- coin of the base currency (CoinGecko style), joins raw_ticks
    bar_start     TIMESTAMPTZ NOT NULL,    -- start of the UTC minute
    open          DECIMAL(18,8) NOT NULL,  -- price of the minute's first trade, as the exchange reports it
    high          DECIMAL(18,8) NOT NULL,  -- highest trade price in the minute
    low           DECIMAL(18,8) NOT NULL,  -- lowest trade price in the minute
    close         DECIMAL(18,8) NOT NULL,  -- price of the minute's last trade
    base_volume   DECIMAL(38,8) NOT NULL,  -- traded quantity in base currency
    quote_volume  DECIMAL(38,8),           -- traded value in quote currency (NULL: Coinbase does not give it)
    vwap          DOUBLE,                  -- quote_volume / base_volume (NULL when unknown or no volume)
    trade_count   BIGINT,                  -- trades in the minute (NULL: Coinbase does not give it)
    buy_volume    DECIMAL(38,8),           -- base volume of taker buys (Binance takerBuyBase; NULL on Coinbase)
    sell_volume   DECIMAL(38,8),           -- base volume of taker sells: base_volume - buy_volume (NULL on Coinbase)
    loaded_at     TIMESTAMPTZ NOT NULL,    -- when the partition run that wrote the row committed
    PRIMARY KEY (exchange, product, bar_start)
""")

KLINE_GAPS = Table("kline_gaps", """
    day              DATE NOT NULL,         -- the UTC day (the klines_1m partition)
    exchange         VARCHAR NOT NULL,      -- exchange of the product
    product          VARCHAR NOT NULL,      -- product the day was loaded for
    loaded_minutes   INTEGER NOT NULL,      -- minutes of the day with a candle
    missing_minutes  INTEGER NOT NULL,      -- minutes of the day without one (1440 - loaded_minutes)
    missing_ranges   VARCHAR,               -- the first 20 runs of missing minutes, HH:MM-HH:MM UTC (NULL: none)
    loaded_at        TIMESTAMPTZ NOT NULL,  -- when the partition run that measured it committed
    PRIMARY KEY (day, exchange, product)
""")

KLINE_TABLES = (KLINES_1M, KLINE_GAPS)

# The trade bars' columns (SCHEMA.md order) that both sides of bars_1m select.
BAR_COLUMNS = ("exchange", "product", "coin_id", "bar_start", "open", "high", "low", "close", "base_volume",
               "quote_volume", "vwap", "trade_count", "buy_volume", "sell_volume")
BARS_1M_REQUIRES = ("trade_bars_1m", "klines_1m")
_COLS = ", ".join(BAR_COLUMNS)

# Trade bars where a minute has one; the exchange's kline for every other minute (the backfilled
# past, a disconnect the healing could not close, a product without a trade feed).
BARS_1M_VIEW = f"""CREATE OR REPLACE VIEW bars_1m AS
SELECT {_COLS}, 'trades' AS source FROM trade_bars_1m
UNION ALL
SELECT {", ".join("k." + c for c in BAR_COLUMNS)}, 'klines' AS source FROM klines_1m k
WHERE NOT EXISTS (SELECT 1 FROM trade_bars_1m t
                  WHERE t.exchange = k.exchange AND t.product = k.product AND t.bar_start = k.bar_start)"""
