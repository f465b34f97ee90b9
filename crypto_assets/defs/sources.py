"""External assets: the market-data sources and the Kafka topics, so the asset graph in the UI
starts where the data comes from and ends where results leave the pipeline:

    coingecko_api ──▶ crypto_raw ──▶ raw_ticks ─▶ … ─▶ anomalies ──▶ crypto_alerts
    coinbase_exchange, binance_exchange ──▶ crypto_trades ──▶ raw_trades ─▶ …
    coinbase_exchange, binance_exchange ──▶ klines_1m (their REST klines)
    raw_ticks ──▶ crypto_raw_dlq, raw_trades ──▶ crypto_trades_dlq, predictions ──▶ crypto_predictions

Nothing here is materialised by Dagster (the producers, `crypto-assets produce`, write the topics
and the outboxes of the incremental step and `predictions` publish to the output topics); they
exist for lineage and descriptions. Topic names are those of crypto_assets/kafka/topics.py (the
defaults of KafkaResource); a deployment that renames a topic keeps these keys.
"""

from __future__ import annotations

import dagster as dg

from crypto_assets.kafka.topics import (
    ALERTS_TOPIC,
    DLQ_TOPIC,
    PREDICTIONS_TOPIC,
    RAW_TOPIC,
    TRADES_DLQ_TOPIC,
    TRADES_TOPIC,
)

SOURCES_GROUP = "sources"
TOPICS_GROUP = "topics"

COINGECKO = dg.AssetSpec(
    "coingecko_api", group_name=SOURCES_GROUP, kinds={"api"}, owners=["team:data-eng"],
    description="CoinGecko's /coins/markets (public or Pro API): prices, market caps and 24 h volumes that "
    "`crypto-assets produce --source coingecko` polls into crypto_raw (the simulator writes the same contract).",
)
COINBASE = dg.AssetSpec(
    "coinbase_exchange", group_name=SOURCES_GROUP, kinds={"api"}, owners=["team:data-eng"],
    description="Coinbase Exchange: the matches channel of its websocket feed (trades, "
    "`produce --source coinbase`) and its REST candles (klines_1m backfill).",
)
BINANCE = dg.AssetSpec(
    "binance_exchange", group_name=SOURCES_GROUP, kinds={"api"}, owners=["team:data-eng"],
    description="Binance: the trade streams of its websocket API (`produce --source binance`) and its REST "
    "/api/v3/klines (klines_1m backfill).",
)


def _topic(name: str, deps: list, description: str) -> dg.AssetSpec:
    return dg.AssetSpec(name, deps=deps, group_name=TOPICS_GROUP, kinds={"kafka"}, owners=["team:data-eng"],
                        metadata={"topic": name}, description=description)


TICKS_TOPIC = _topic(RAW_TOPIC, [COINGECKO], "Market ticks (JSON, keyed by coin) from CoinGecko or the simulator; "
                     "raw_ticks pulls them exactly once.")
TRADES = _topic(TRADES_TOPIC, [COINBASE, BINANCE], "Exchange trades keyed exchange:product; raw_trades pulls "
                "them exactly once.")
TICKS_DLQ = _topic(DLQ_TOPIC, ["raw_ticks"], "Ticks raw_ticks quarantined, as they arrived, with the reason.")
TRADES_DLQ = _topic(TRADES_DLQ_TOPIC, ["raw_trades"], "Trades raw_trades quarantined, as they arrived.")
ALERTS = _topic(ALERTS_TOPIC, ["anomalies"], "Each anomaly once (the anomalies outbox); `crypto-assets alerts` "
                "delivers them to the webhooks.")
PREDICTIONS = _topic(PREDICTIONS_TOPIC, ["predictions"], "Each prediction once, with its model version (the "
                     "predictions outbox).")

SPECS = [COINGECKO, COINBASE, BINANCE, TICKS_TOPIC, TRADES, TICKS_DLQ, TRADES_DLQ, ALERTS, PREDICTIONS]
