"""The two anomaly rules at their thresholds (README: `price_zscore` |z| > 3, critical > 5;
`volume_spike` > 200 % vs the previous tick, critical > 500 %; id = md5(coin, time, rule)).

Each price coin gets a quiet 15-minute background and then one tick whose z-score against its
window (t - 15 min, t] is chosen just inside or just outside a threshold; the volume coin has a
flat price and volume steps of known size. The anomalies table must hold exactly the expected
ids, rules, severities and values, nothing else."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.chain import run_incremental
from crypto_assets_tests.silver_helpers import insert_raw_batch

BACKGROUND = 39  # ticks before the probe, 10 s apart: all inside the probe's 15-minute window
# coin -> (z-score of its last tick, expected severity or None for no anomaly)
Z_PROBES = {
    "bitcoin": (2.999, None),
    "ethereum": (3.001, "warning"),
    "solana": (4.999, "warning"),
    "cardano": (5.001, "critical"),
    "polygon": (-3.001, "warning"),  # |z|: a drop counts as well
    "chainlink": (-5.001, "critical"),
    "avalanche": (-2.999, None),
}
# volume steps on litecoin (flat price): ratio to the previous tick -> expected severity
VOLUME_STEPS = [
    (2.999, None),  # +199.9 %
    (3.0, None),  # +200 % exactly: not more than 200 %
    (3.001, "warning"),  # +200.1 %
    (5.999, "warning"),  # +499.9 %
    (6.0, "warning"),  # +500 % exactly: not more than 500 %
    (6.001, "critical"),  # +500.1 %
]
COINS = [*Z_PROBES, "litecoin"]


def _anomaly_id(coin: str, t: datetime, rule: str) -> str:
    stamp = t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "Z"
    return hashlib.md5(f"{coin}|{stamp}|{rule}".encode()).hexdigest()


def _zscore_window(prices: np.ndarray) -> float:
    """z of the last price against all of them (population std): the definition, in numpy."""
    return float((prices[-1] - prices.mean()) / prices.std())


def _probe_price(background: np.ndarray, z: float) -> float:
    """The price x whose z-score over background + [x] is z. With n values, background mean m
    and population std s: z = sqrt((n-1)/n) d / sqrt(s^2 + d^2/n) for d = x - m, so
    d = z s sqrt(n / (n - 1 - z^2))."""
    n = len(background) + 1
    m, s = background.mean(), background.std()
    return float(m + math.copysign(abs(z) * s * math.sqrt(n / (n - 1 - z * z)), z))


@pytest.fixture(scope="module")
def market(tmp_path_factory):
    start = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    frames, probes = [], {}
    for k, (coin, (z, _)) in enumerate(Z_PROBES.items()):
        level = 100.0 * (k + 1)
        background = level + np.where(np.arange(BACKGROUND) % 2 == 0, 0.01, -0.01) * level
        x = _probe_price(background, z)
        prices = np.append(background, x)
        assert math.isclose(_zscore_window(prices), z, rel_tol=1e-12)
        # a fractional second on the probe: the id renders microseconds
        times = [start + timedelta(seconds=10 * i) for i in range(BACKGROUND)] + [
            start + timedelta(seconds=10 * BACKGROUND, microseconds=250_000 + k)]
        probes[coin] = (times[-1], prices)
        n = len(times)
        frames.append(pl.DataFrame({"coin_id": [coin] * n, "symbol": [coin[:4]] * n, "last_updated_at": times,
                                    "price_usd": prices, "volume_24h_usd": [1e8] * n}))
    base = 2e8
    vols, steps = [base], {}
    for ratio, _ in VOLUME_STEPS:
        vols += [base * ratio, base]  # the step, then back (a fall is no spike)
    vt = [start + timedelta(seconds=20 * i) for i in range(len(vols))]
    for j, (ratio, sev) in enumerate(VOLUME_STEPS):
        steps[vt[1 + 2 * j]] = (ratio, sev)
    frames.append(pl.DataFrame({"coin_id": ["litecoin"] * len(vt), "symbol": ["ltc"] * len(vt), "last_updated_at": vt,
                                "price_usd": [85.0] * len(vt), "volume_24h_usd": vols}))
    lh = LakehouseResource(home=str(tmp_path_factory.mktemp("anomalies") / "var"), coins=COINS)
    with lh.connect() as conn:
        insert_raw_batch(conn, pl.concat(frames).sort("last_updated_at"))
        out = run_incremental(conn, COINS)
        assert out["clean_ticks"].quarantined == 0
        anomalies = conn.sql("SELECT anomaly_id, coin_id, event_time, rule, severity, value, threshold FROM anomalies").fetchall()
        z = dict(conn.sql("SELECT coin_id, zscore_15m FROM market_features WHERE coin_id <> 'litecoin' "
                          "QUALIFY row_number() OVER (PARTITION BY coin_id ORDER BY event_time DESC) = 1").fetchall())
        max_bg = conn.sql("SELECT max(abs(zscore_15m)) FROM (SELECT * FROM market_features WHERE coin_id <> 'litecoin' "
                          "QUALIFY row_number() OVER (PARTITION BY coin_id ORDER BY event_time DESC) > 1)").fetchall()[0][0]
    return {"anomalies": anomalies, "probes": probes, "steps": steps, "vols": vols, "vt": vt, "z": z, "max_bg": max_bg}


def test_price_zscore_thresholds_and_severity(market):
    assert market["max_bg"] < 2  # the background itself raises nothing
    got = {a[0]: a[1:] for a in market["anomalies"] if a[3] == "price_zscore"}
    want = {}
    for coin, (_z, sev) in Z_PROBES.items():
        t, prices = market["probes"][coin]
        # the stored z-score is the definition's, computed here over the same window
        assert math.isclose(market["z"][coin], _zscore_window(prices), rel_tol=1e-9), coin
        if sev is not None:
            want[_anomaly_id(coin, t, "price_zscore")] = (coin, t, "price_zscore", sev)
    assert {k: v[:4] for k, v in got.items()} == want
    for coin, _t, _rule, _sev, value, threshold in got.values():
        assert math.isclose(value, Z_PROBES[coin][0], rel_tol=1e-9) and threshold == 3.0


def test_volume_spike_thresholds_and_severity(market):
    got = {a[0]: a[1:] for a in market["anomalies"] if a[3] == "volume_spike"}
    want = {_anomaly_id("litecoin", t, "volume_spike"): ("litecoin", t, "volume_spike", sev)
            for t, (_ratio, sev) in market["steps"].items() if sev is not None}
    assert {k: v[:4] for k, v in got.items()} == want
    for _aid, (_coin, t, _rule, _sev, value, threshold) in got.items():
        ratio = market["steps"][t][0]
        assert math.isclose(value, (ratio - 1.0) * 100.0, rel_tol=1e-9) and threshold == 200.0


def test_no_other_anomalies(market):
    rules = {(a[1], a[3]) for a in market["anomalies"]}
    assert rules <= {(c, "price_zscore") for c in Z_PROBES} | {("litecoin", "volume_spike")}
    assert len(market["anomalies"]) == len({a[0] for a in market["anomalies"]})
