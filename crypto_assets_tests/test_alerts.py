"""A volume spike becomes exactly one message on crypto_alerts, also after re-runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
import pytest

from crypto_assets.defs import incremental
from crypto_assets.faults import ENV_VAR
from crypto_assets.resources import LakehouseResource
from crypto_assets_tests.silver_helpers import insert_raw_batch
from crypto_assets_tests.topic_helpers import read_topic

STEP = ["clean_ticks", "market_features", "anomalies"]


def _ticks(start: datetime, n: int, spike_at: int | None = None, spikes: tuple[int, ...] = ()) -> pl.DataFrame:
    times = [start + timedelta(seconds=30 * i) for i in range(n)]
    vol = [1e8 * (1 + 0.001 * i) for i in range(n)]
    for at in ((spike_at,) if spike_at is not None else ()) + spikes:
        vol[at] = vol[at - 1] * 5  # +400 %
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
    """Every message on the alerts topic (read to its high watermarks), with its key and id header."""
    return [r.json() | {"_key": r.text_key(), "_header_id": r.header("anomaly_id")}
            for r in read_topic(kafka.bootstrap(), kafka.alerts_topic)]


def test_spike_alerts_exactly_once(tmp_path, kafka):
    lh = LakehouseResource(home=str(tmp_path / "a"), coins=["bitcoin"])
    start = datetime.now(UTC) - timedelta(hours=1)
    with lh.connect() as conn:
        insert_raw_batch(conn, _ticks(start, 60, spike_at=40))
    assets = [incremental.incremental]
    res = {"lakehouse": lh, "kafka": kafka}
    assert dg.materialize(assets, resources=res, selection=STEP).success
    first = _alerts(kafka)
    spikes = [a for a in first if a["rule"] == "volume_spike"]
    assert len(spikes) == 1
    assert spikes[0]["_key"] == "bitcoin" and spikes[0]["value"] > 200 and spikes[0]["severity"] == "warning"

    # re-run with nothing new, then with new calm data: still exactly one alert for that spike
    assert dg.materialize(assets, resources=res, selection=STEP).success
    with lh.connect() as conn:
        insert_raw_batch(conn, _ticks(start + timedelta(minutes=30), 20))
    assert dg.materialize(assets, resources=res, selection=STEP).success
    again = _alerts(kafka)
    assert [a["anomaly_id"] for a in again if a["rule"] == "volume_spike"] == [spikes[0]["anomaly_id"]]
    with lh.connect() as conn:
        assert conn.sql("SELECT count(*) FROM anomalies WHERE published_at IS NULL").fetchall()[0][0] == 0


def _anomalies(lh) -> list[dict]:
    with lh.connect() as conn:
        rel = conn.sql("SELECT * FROM anomalies ORDER BY event_time, rule")
        return [dict(zip(rel.columns, row, strict=True)) for row in rel.fetchall()]


def _as_published(a: dict) -> dict:
    """The message publish_alerts sends for an anomalies row."""
    return {
        "anomaly_id": a["anomaly_id"], "coin_id": a["coin_id"], "symbol": a["symbol"],
        "event_time": a["event_time"].astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "rule": a["rule"], "severity": a["severity"], "value": a["value"], "threshold": a["threshold"],
        "price_usd": a["price_usd"], "volume_24h_usd": a["volume_24h_usd"], "source": a["source"],
        "_key": a["coin_id"], "_header_id": a["anomaly_id"],
    }


@pytest.mark.parametrize("fault", ["before_alert_mark", "alerts_half_sent"])
def test_kill_while_publishing_alerts_then_rerun(tmp_path, kafka, fault):
    """kill -9 after every alert was sent but none marked (before_alert_mark), or after half of
    them were sent (alerts_half_sent); the re-run (the incremental step) leaves every anomaly on
    crypto_alerts exactly once, as the README says ("each new one is published once"), all marked."""
    lh = LakehouseResource(home=str(tmp_path / "a"), coins=["bitcoin"])
    start = datetime.now(UTC) - timedelta(hours=1)
    with lh.connect() as conn:
        insert_raw_batch(conn, _ticks(start, 60, spikes=(15, 30, 45)))
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR} | {ENV_VAR: fault}
    child = subprocess.run(
        [sys.executable, "-m", "crypto_assets_tests.pull_child", "alerts",
         json.dumps(kafka.model_dump(exclude_none=True)), json.dumps(lh.model_dump(exclude_none=True))],
        env=env, capture_output=True, timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, (child.returncode, child.stdout, child.stderr[-2000:])
    rows = _anomalies(lh)
    ids = [a["anomaly_id"] for a in rows]
    assert len(ids) >= 3 and {a["rule"] for a in rows} >= {"volume_spike"}
    assert all(a["published_at"] is None for a in rows)  # the kill came before the mark
    sent = Counter(a["anomaly_id"] for a in _alerts(kafka))
    if fault == "before_alert_mark":
        assert sent == Counter(ids)
    else:
        assert set(sent) < set(ids) and len(sent) == len(ids) // 2 and set(sent.values()) == {1}

    assert dg.materialize([incremental.incremental], resources={"lakehouse": lh, "kafka": kafka},
                          selection=STEP).success
    rows = _anomalies(lh)
    assert [a["anomaly_id"] for a in rows] == ids  # the re-run found nothing new
    alerts = _alerts(kafka)
    assert Counter(a["anomaly_id"] for a in alerts) == Counter(ids)  # each exactly once
    by_id = {a["anomaly_id"]: a for a in alerts}
    assert [by_id[a["anomaly_id"]] for a in rows] == [_as_published(a) for a in rows]
    assert all(a["published_at"] is not None for a in rows)
    # and a further run sends nothing again
    assert dg.materialize([incremental.incremental], resources={"lakehouse": lh, "kafka": kafka},
                          selection=STEP).success
    assert Counter(a["anomaly_id"] for a in _alerts(kafka)) == Counter(ids)
