"""A volume spike becomes exactly one message on crypto_alerts, also after re-runs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg
import orjson
import polars as pl
from confluent_kafka import Consumer, TopicPartition

from crypto_assets.assets import incremental
from crypto_assets.resources import LakehouseResource
from crypto_assets_tests.silver_helpers import insert_raw_batch


def _ticks(start: datetime, n: int, spike_at: int | None = None) -> pl.DataFrame:
    times = [start + timedelta(seconds=30 * i) for i in range(n)]
    vol = [1e8 * (1 + 0.001 * i) for i in range(n)]
    if spike_at is not None:
        vol[spike_at] = vol[spike_at - 1] * 5  # +400 %
    return pl.DataFrame(
        {
            "coin_id": ["bitcoin"] * n,
            "symbol": ["btc"] * n,
            "last_updated_at": times,
            "price_usd": [90_000.0 * (1 + 0.0001 * ((i * 7) % 5)) for i in range(n)],
            "volume_24h_usd": vol,
        }
    )


def _alerts(kafka) -> list[dict]:
    c = Consumer({"bootstrap.servers": kafka.bootstrap(), "group.id": "alerts-check", "enable.auto.commit": False})
    md = c.list_topics(kafka.alerts_topic, timeout=5)
    c.assign([TopicPartition(kafka.alerts_topic, p, 0) for p in md.topics[kafka.alerts_topic].partitions])
    out, idle = [], 0
    while idle < 3:
        batch = [m for m in c.consume(100, timeout=0.5) if m.error() is None]
        idle = idle + 1 if not batch else 0
        out.extend(batch)
    c.close()
    return [orjson.loads(m.value()) | {"_key": m.key().decode()} for m in out]


def test_spike_alerts_exactly_once(tmp_path, kafka):
    lh = LakehouseResource(home=str(tmp_path / "a"), coins=["bitcoin"])
    start = datetime.now(timezone.utc) - timedelta(hours=1)
    with lh.connect() as conn:
        insert_raw_batch(conn, _ticks(start, 60, spike_at=40))
    assets = [incremental.incremental]
    res = {"lakehouse": lh, "kafka": kafka}
    assert dg.materialize(assets, resources=res, selection=["clean_ticks", "market_features", "anomalies"]).success
    first = _alerts(kafka)
    spikes = [a for a in first if a["rule"] == "volume_spike"]
    assert len(spikes) == 1
    assert spikes[0]["_key"] == "bitcoin" and spikes[0]["value"] > 200 and spikes[0]["severity"] == "warning"

    # re-run with nothing new, then with new calm data: still exactly one alert for that spike
    assert dg.materialize(assets, resources=res, selection=["clean_ticks", "market_features", "anomalies"]).success
    with lh.connect() as conn:
        insert_raw_batch(conn, _ticks(start + timedelta(minutes=30), 20))
    assert dg.materialize(assets, resources=res, selection=["clean_ticks", "market_features", "anomalies"]).success
    again = _alerts(kafka)
    assert [a["anomaly_id"] for a in again if a["rule"] == "volume_spike"] == [spikes[0]["anomaly_id"]]
    with lh.connect() as conn:
        assert conn.sql("SELECT count(*) FROM anomalies WHERE published_at IS NULL").fetchall()[0][0] == 0
