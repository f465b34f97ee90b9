"""The two bronze contracts the one pull serves: ticks (`crypto_raw` -> raw_ticks) and trades
(`crypto_trades` -> raw_trades). What differs between them is here; everything else is
crypto_assets.ingest.pull."""

from __future__ import annotations

from crypto_assets.ingest.contract import BronzeContract
from crypto_assets.ingest.tick_rows import write_tick_rows
from crypto_assets.ingest.trade_rows import write_trade_rows
from crypto_assets.kafka.tick_contract import FIELDS
from crypto_assets.kafka.trade_contract import TRADE_FIELDS

TICKS = BronzeContract(table="raw_ticks", fields=FIELDS, topic_setting="raw_topic", dlq_setting="dlq_topic",
                       write_rows=write_tick_rows)
TRADES = BronzeContract(table="raw_trades", fields=TRADE_FIELDS, topic_setting="trades_topic",
                        dlq_setting="trades_dlq_topic", write_rows=write_trade_rows, strict_strings=("price", "size"))
