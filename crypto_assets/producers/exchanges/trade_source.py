"""`produce --source coinbase|binance`: one exchange's trade stream into `crypto_trades`.

Builds the feed from the exchange settings, the REST gap healer (`healing.GapHealer`, at
COINBASE_REST_URL / BINANCE_REST_URL), and the project's idempotent
producer (key `exchange:product`, so a product's trades stay in order in one partition), and
runs `trade_stream.TradeStream` until a stop condition. The producer is flushed on every stats
line and on stop, so a clean stop leaves nothing undelivered.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import orjson

from crypto_assets.kafka.producer import TickProducer
from crypto_assets.kafka.trade_contract import trade_key
from crypto_assets.producers.exchanges.binance_ws import BinanceFeed
from crypto_assets.producers.exchanges.coinbase_ws import CoinbaseFeed
from crypto_assets.producers.exchanges.trade_resume import resume_points
from crypto_assets.producers.exchanges.trade_stream import (
    Backoff,
    ExchangeFeed,
    LogFn,
    TradeHealer,
    TradeStream,
)
from crypto_assets.resources.kafka import KafkaResource
from crypto_assets.settings import ExchangeSettings

SOURCES = ("coinbase", "binance")


def feed_for(source: str, cfg: ExchangeSettings, products: Sequence[str] | None = None) -> ExchangeFeed:
    """The feed of `source`; `products` (Coinbase product ids or Binance symbols) default to
    the configured ones."""
    if source == "coinbase":
        return CoinbaseFeed(cfg.coinbase_ws_url, tuple(products or cfg.coinbase_products))
    if source == "binance":
        return BinanceFeed(cfg.binance_ws_url, tuple(products or cfg.binance_symbols))
    raise ValueError(f"unknown trade source {source!r}; expected one of {SOURCES}")


def run_trade_source(
    kafka: KafkaResource,
    feed: ExchangeFeed,
    *,
    healer: TradeHealer | None,
    topic: str | None = None,
    stop_event: threading.Event | None = None,
    max_trades: int | None = None,
    duration_s: float | None = None,
    stats_every_s: float = 60.0,
    backoff: Backoff | None = None,
    log: LogFn = print,
    resume: bool = True,
) -> dict:
    """Stream `feed` into the trades topic until stopped; returns the stream's counters. With
    `resume`, each product continues after the newest trade of it on the topic
    (`trade_resume.py`), so the trades missed while the source was down are healed."""
    producer = TickProducer(kafka, topic=topic or kafka.trades_topic)
    points = resume_points(kafka, producer.topic, feed.exchange) if resume else {}
    for product, last_id in sorted(points.items()):
        log(f"{feed.exchange}: resuming {product} after trade {last_id} (the newest on {producer.topic})")
    flush_s = max(10.0, kafka.timeout_s * 3)

    def sink(trade: dict) -> None:
        producer.send_raw(trade_key(trade["exchange"], trade["product"]), orjson.dumps(trade))

    stream = TradeStream(feed, sink, healer=healer, stop_event=stop_event, max_trades=max_trades,
                         duration_s=duration_s, stats_every_s=stats_every_s,
                         flush=lambda: producer.flush(timeout_s=flush_s), backoff=backoff, log=log,
                         resume=points)
    try:
        stream.run()
    finally:
        producer.flush(timeout_s=flush_s)
    return stream.summary() | {"topic": producer.topic, "delivered": producer.stats.delivered}
