"""The trade candles (crypto_assets.transforms.trade_bars): one row per (exchange, product,
bar_start) at 1 second, 1 minute and 1 hour, built from `raw_trades`, and the per-product
reference that judges a trade late.

Prices and volumes are exact decimals. Prices stay DECIMAL(18, 8) as traded; volumes are sums,
DECIMAL(38, 8). The quote volume of a trade (price × size) has 16 decimals, so every width
also keeps that sum unrounded (`quote_volume_exact`): a coarser bar sums it exactly, and its
`quote_volume` is the same rounding of the same number as a recomputation from the trades.
"""

from __future__ import annotations

from crypto_assets.warehouse.table_spec import Table


def _bar_columns(width: str) -> str:
    """The columns every trade-bar table starts with (SCHEMA.md's agreed order)."""
    return f"""
    exchange            VARCHAR NOT NULL,        -- exchange that executed the trades: coinbase, binance or simulator
    product             VARCHAR NOT NULL,        -- the exchange's product id, e.g. BTC-USD, BTCUSDT
    coin_id             VARCHAR NOT NULL,        -- coin of the base currency (CoinGecko style), joins ticks and candles
    bar_start           TIMESTAMPTZ NOT NULL,    -- start of the UTC {width}
    open                DECIMAL(18,8) NOT NULL,  -- price of the {width}'s first trade by (trade_time, trade_id)
    high                DECIMAL(18,8) NOT NULL,  -- highest trade price in the {width}
    low                 DECIMAL(18,8) NOT NULL,  -- lowest trade price in the {width}
    close               DECIMAL(18,8) NOT NULL,  -- price of the {width}'s last trade by (trade_time, trade_id)
    base_volume         DECIMAL(38,8) NOT NULL,  -- traded quantity in base currency (sum of sizes)
    quote_volume        DECIMAL(38,8) NOT NULL,  -- traded value in quote currency: quote_volume_exact rounded to 8 decimals
    vwap                DOUBLE NOT NULL,         -- volume-weighted average price: quote_volume_exact / base_volume, in double
    trade_count         BIGINT NOT NULL,         -- trades in the {width}
    buy_volume          DECIMAL(38,8) NOT NULL,  -- base volume of trades whose taker bought (lifted the ask)
    sell_volume         DECIMAL(38,8) NOT NULL,  -- base volume of trades whose taker sold (hit the bid)
    first_trade_id      BIGINT NOT NULL,         -- trade id of the {width}'s first trade
    last_trade_id       BIGINT NOT NULL,         -- trade id of the {width}'s last trade
    quote_volume_exact  DECIMAL(38,16) NOT NULL, -- sum of price × size, unrounded (what coarser bars add up)"""


TRADE_BARS_1S = Table("trade_bars_1s", _bar_columns("second") + """
    bar_seq             BIGINT NOT NULL          -- trade_bars_1s run that wrote the row
""",
    dataset="gold/trade_bars_1s", by_date=True, time_column="bar_start", seq_column="bar_seq",
    export_order="exchange, product, bar_start")

TRADE_BARS_1M = Table("trade_bars_1m", _bar_columns("minute") + """
    return_pct          DOUBLE,                  -- close vs the previous bar's close, in %
    log_return          DOUBLE,                  -- ln(close / previous bar's close): what the return z-score rule uses
    rsi_14              DOUBLE,                  -- Wilder RSI(14) on closes (TA-Lib definition, as ohlcv_1m)
    bb_middle           DOUBLE,                  -- Bollinger(20, 2): SMA of 20 closes
    bb_upper            DOUBLE,                  -- Bollinger(20, 2): bb_middle + 2 population std of 20 closes
    bb_lower            DOUBLE,                  -- Bollinger(20, 2): bb_middle - 2 population std of 20 closes
    rsi_n               INTEGER NOT NULL,        -- RSI state: price changes seen so far (capped at 14)
    rsi_gain            DOUBLE,                  -- RSI state: running sum of gains while seeding, then Wilder average
    rsi_loss            DOUBLE,                  -- RSI state: running sum of losses while seeding, then Wilder average
    bar_seq             BIGINT NOT NULL          -- trade_bars_1m run that wrote the row
""",
    dataset="gold/trade_bars_1m", by_date=True, time_column="bar_start", seq_column="bar_seq",
    export_order="exchange, product, bar_start")

TRADE_BARS_1H = Table("trade_bars_1h", _bar_columns("hour") + """
    bar_seq             BIGINT NOT NULL          -- trade_bars_1h run that wrote the row
""",
    dataset="gold/trade_bars_1h", by_date=True, time_column="bar_start", seq_column="bar_seq",
    export_order="exchange, product, bar_start")

# Per product, the newest trade time of the batches the bars have processed: a trade of a later
# batch older than this minus the lateness window is late. Moved with the 1-second bars.
TRADE_BAR_STATE = Table("trade_bar_state", """
    exchange        VARCHAR NOT NULL,      -- exchange of the product
    product         VARCHAR NOT NULL,      -- the exchange's product id
    max_trade_time  TIMESTAMPTZ NOT NULL,  -- newest trade time of the product in the batches processed
    PRIMARY KEY (exchange, product)
""")

TRADE_BAR_TABLES = (TRADE_BARS_1S, TRADE_BARS_1M, TRADE_BARS_1H, TRADE_BAR_STATE)
