"""What a raw_trades batch costs against a long history: the dedupe and gap bookkeeping read the
per-product trade-id runs (crypto_assets.ingest.trade_ranges), never raw_trades, so a batch of
new trades (with copies of OLD ids, which no time window could prune) should cost the same
with thousands or millions of stored trades. Also: what a pull that finds no trade costs.

    python bench/trades_dedupe.py [--small 30000] [--history 1000000] [--batch 20000] [--repeats 3]

Each history size gets its own warehouse under var/bench/runs/; the history is inserted with SQL
(trade ids 1..n per product, a day before the batch) with the runs the pull would have left.
The batch goes through the real pull from the embedded broker. Prints seconds per phase.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import RUNS_ROOT  # noqa: E402
from crypto_assets.ingest.config import PullConfig  # noqa: E402
from crypto_assets.ingest.pull import pull_raw_trades  # noqa: E402
from crypto_assets.kafka.embedded_broker import EmbeddedBroker  # noqa: E402
from crypto_assets.kafka.producer import TickProducer  # noqa: E402
from crypto_assets.kafka.trade_contract import coin_id_for, make_trade, split_product, trade_key  # noqa: E402
from crypto_assets.resources import KafkaResource, LakehouseResource  # noqa: E402

PRODUCTS = (("coinbase", "BTC-USD"), ("coinbase", "ETH-USD"), ("binance", "SOLUSDT"))


def trade(trade_id: int, exchange: str, product: str, t0: datetime, origin: str = "ws") -> dict:
    t = t0 + timedelta(microseconds=trade_id * 1000)
    return make_trade(exchange=exchange, product=product, trade_id=trade_id, price=f"{90000 + trade_id % 97}.5",
                      size="0.001", side="buy" if trade_id % 3 else "sell", trade_time=t, received_at=t, origin=origin)


def produce_trades(kafka: KafkaResource, trades: list[dict]) -> None:
    import orjson

    with TickProducer(kafka, topic=kafka.trades_topic) as p:
        for m in trades:
            p.send_raw(trade_key(m["exchange"], m["product"]), orjson.dumps(m))


def _history(lakehouse: LakehouseResource, n: int, t0: datetime) -> int:
    """n trades (n/3 per product, ids 1..n/3), a day before t0, and their runs."""
    per = n // len(PRODUCTS)
    if not per:
        return 0
    values = ", ".join(f"('{ex}', '{p}', '{split_product(ex, p)[0]}', '{split_product(ex, p)[1]}', "
                       f"'{coin_id_for(split_product(ex, p)[0])}')" for ex, p in PRODUCTS)
    with lakehouse.connect() as conn:
        conn.execute(f"""
            INSERT INTO raw_trades
            SELECT ex, prod, base, quote, coin, i, 90000.5 + (i % 97), 0.001, 'buy',
                   $t0 - INTERVAL 1 DAY + to_microseconds(i * 1000), NULL, 'ws', 1, 'history', 0, i, NULL, 0, now()
            FROM (VALUES {values}) v(ex, prod, base, quote, coin), range(1, {per} + 1) r(i)
        """, {"t0": t0})
        conn.execute(f"INSERT INTO trade_id_ranges SELECT ex, prod, 1, {per} FROM (VALUES {values}) v(ex, prod, b, q, c)")
        conn.execute("CHECKPOINT")
    return per


def _batch(per: int, size: int, rng: random.Random, t0: datetime) -> list[dict]:
    """`size` trades: new ids after the history, 5 % of them copies of random OLD ids."""
    out = []
    new = size - size // 20
    for k in range(new):
        ex, prod = PRODUCTS[k % len(PRODUCTS)]
        out.append(trade(per + 1 + k // len(PRODUCTS), ex, prod, t0))
    for _ in range(size // 20):
        ex, prod = rng.choice(PRODUCTS)
        out.append(trade(rng.randint(1, max(per, 1)), ex, prod, t0, origin="rest"))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="raw_trades batch cost: small vs large history")
    ap.add_argument("--small", type=int, default=30_000)
    ap.add_argument("--history", type=int, default=1_000_000)
    ap.add_argument("--batch", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    rng = random.Random(7)
    t0 = (datetime.now(UTC) - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    broker = EmbeddedBroker()
    broker.start(topics=[])
    try:
        print(f"{'history':>10} {'batch':>7} {'pull s':>8} {'write s':>8} {'parse s':>8} {'rows':>7} {'dups':>6}")
        results: dict[int, float] = {}
        for history in (args.small, args.small, args.history):  # the first round warms up (imports, caches)
            writes = []
            for rep in range(args.repeats):
                home = RUNS_ROOT / f"trades_dedupe-{history}-{rep}-{uuid.uuid4().hex[:6]}"
                home.mkdir(parents=True)
                kafka = KafkaResource(bootstrap_servers=broker.bootstrap_servers, home=str(home),
                                      trades_topic=f"bench_trades_{uuid.uuid4().hex[:8]}",
                                      trades_dlq_topic=f"bench_trades_dlq_{uuid.uuid4().hex[:8]}")
                lakehouse = LakehouseResource(home=str(home))
                per = _history(lakehouse, history, t0)
                produce_trades(kafka, _batch(per, args.batch, rng, t0))
                t = time.perf_counter()
                r = pull_raw_trades(kafka, lakehouse, PullConfig(batch_size=args.batch, export_parquet=False))
                total = time.perf_counter() - t
                writes.append(r.timings.get("write", 0.0))
                print(f"{history:>10} {args.batch:>7} {total:>8.3f} {r.timings.get('write', 0):>8.3f} "
                      f"{r.timings.get('parse', 0):>8.3f} {r.rows_written:>7} {r.skipped:>6}")
                if history and rep == args.repeats - 1:
                    idle = []
                    for _ in range(20):
                        t = time.perf_counter()
                        pull_raw_trades(kafka, lakehouse, PullConfig(export_parquet=False))
                        idle.append(time.perf_counter() - t)
                    print(f"a pull that finds no new trade: median {statistics.median(idle) * 1000:.1f} ms "
                          f"(p max {max(idle) * 1000:.1f} ms) over 20")
            results[history] = statistics.median(writes)
        small, large = results[args.small], results[args.history]
        print(f"median write of a {args.batch}-trade batch (5 % copies of old ids): {small:.3f} s with "
              f"{args.small:,} stored trades, {large:.3f} s with {args.history:,} (x{large / small:.2f})")
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
