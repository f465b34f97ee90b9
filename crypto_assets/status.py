"""`crypto-assets status`: the one screen to check first; exits non-zero when unhealthy."""

from __future__ import annotations

import sys
from datetime import datetime, timezone

from crypto_assets import settings
from crypto_assets.resources.kafka import BrokerUnavailable


def kafka_lag(kafka, timeout_s: float = 3.0) -> dict[int, tuple[int, int, int]]:
    """partition -> (committed, high, lag) from the consumer group's committed offsets."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    c = Consumer(kafka.consumer_config(**{"socket.timeout.ms": int(timeout_s * 1000)}))
    try:
        try:
            md = c.list_topics(topic=kafka.raw_topic, timeout=timeout_s)
        except KafkaException as exc:
            raise BrokerUnavailable(f"Kafka broker at {kafka.bootstrap()} is unreachable: {exc}") from exc
        parts = sorted(md.topics[kafka.raw_topic].partitions)
        committed = c.committed([TopicPartition(kafka.raw_topic, p) for p in parts], timeout=timeout_s)
        out = {}
        for tp in committed:
            lo, hi = c.get_watermark_offsets(TopicPartition(kafka.raw_topic, tp.partition), timeout=timeout_s)
            pos = tp.offset if tp.offset >= 0 else lo
            out[tp.partition] = (pos, hi, max(hi - pos, 0))
        return out
    finally:
        c.close()


def cmd_status(args) -> int:
    if getattr(args, "home", None):
        import os
        from pathlib import Path

        os.environ["CRYPTO_HOME"] = str(Path(args.home).resolve())
    kafka = settings.kafka_resource()
    lakehouse = settings.lakehouse_resource()
    healthy = True
    print(f"CRYPTO_HOME  {lakehouse.root}")
    try:
        address = kafka.bootstrap()
        lag = kafka_lag(kafka)
        total = sum(v[2] for v in lag.values())
        print(f"broker       OK   {address}")
        print(f"topic        {kafka.raw_topic}: lag {total} "
              + " ".join(f"p{p}={v[2]}" for p, v in sorted(lag.items())))
    except BrokerUnavailable as exc:
        healthy = False
        print(f"broker       DOWN {exc}")
    if lakehouse.duckdb_path.exists():
        try:
            with lakehouse.connect(read_only=True) as conn:
                tables = {r[0] for r in conn.sql("SELECT table_name FROM information_schema.tables").fetchall()}
                for t in ("raw_ticks", "quarantine"):
                    if t in tables:
                        n = conn.sql(f"SELECT count(*) FROM {t}").fetchall()[0][0]
                        print(f"table        {t:<12} {n} rows")
                if "raw_ticks" in tables:
                    now = datetime.now(timezone.utc)
                    for coin, newest in conn.sql(
                        "SELECT coin_id, max(last_updated_at) FROM raw_ticks GROUP BY 1 ORDER BY 1"
                    ).fetchall():
                        age = (now - newest).total_seconds()
                        print(f"newest tick  {coin:<10} {newest:%Y-%m-%d %H:%M:%S}Z  age {age:,.0f}s")
        except Exception as exc:  # noqa: BLE001 - a locked or broken warehouse is a status finding
            print(f"warehouse    UNREADABLE {exc}")
            healthy = False
    else:
        print("warehouse    not created yet (run `crypto-assets demo` or materialize raw_ticks)")
    print("status       " + ("HEALTHY" if healthy else "UNHEALTHY"))
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(cmd_status(None))
