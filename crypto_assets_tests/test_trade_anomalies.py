"""The anomaly rules on 1-minute trade bars (crypto_assets.transforms.trade_anomalies): the return
z-score and the traded-volume spike against a naive computation over the bars, beside the tick
rules in one table without touching them, and each trade anomaly published once to crypto_alerts
by the incremental step, also after re-runs and a late trade's recomputation."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import dagster as dg
import polars as pl
import pytest

from crypto_assets.defs import incremental
from crypto_assets.resources import LakehouseResource
from crypto_assets.transforms.anomalies import anomalies_increment
from crypto_assets.transforms.clean import clean_increment
from crypto_assets.transforms.features import features_increment
from crypto_assets.transforms.trade_anomalies import TradeAnomalyConfig, trade_anomalies_increment
from crypto_assets.transforms.trade_bars import trade_bars_increment
from crypto_assets_tests.silver_helpers import insert_raw_batch
from crypto_assets_tests.topic_helpers import read_topic
from crypto_assets_tests.trade_bar_helpers import Trade, insert_batch

START = (datetime.now(UTC) - timedelta(hours=3)).replace(second=0, microsecond=0)
JUMP, SPIKE, BIG_SPIKE = 90, 70, 100  # minutes of the planted anomalies


def _trades(minutes: int = 120, product: str = "BTC-USD", start: datetime = START) -> list[Trade]:
    """Two trades a minute (seconds 10 and 40) on a gently oscillating price; a +5 % close at
    JUMP, seven and twenty times the usual size at SPIKE and BIG_SPIKE."""
    out = []
    for m in range(minutes):
        close = Decimal(100 * (1 + 0.001 * math.sin(m * 1.3)) * (1.05 if m >= JUMP else 1.0)).quantize(Decimal("1e-8"))
        size = Decimal(7 if m == SPIKE else 20 if m == BIG_SPIKE else 1)
        t = start + timedelta(minutes=m)
        out.append(Trade("coinbase", product, "bitcoin", 2 * m, close - Decimal("0.01"), size, "buy", t + timedelta(seconds=10)))
        out.append(Trade("coinbase", product, "bitcoin", 2 * m + 1, close, size, "sell", t + timedelta(seconds=40)))
    return out


def _naive(conn, cfg: TradeAnomalyConfig) -> dict[tuple, tuple[str, float]]:
    """Per (bar_start, rule): (severity, value), from a Python loop over the stored minute bars."""
    bars = conn.sql("SELECT bar_start, log_return, base_volume::DOUBLE FROM trade_bars_1m ORDER BY bar_start").fetchall()
    out = {}
    w = timedelta(minutes=cfg.window_minutes)
    for t, r, vol in bars:
        win = [(rr, vv) for tt, rr, vv in bars if t - w <= tt < t]
        rets = [rr for rr, _ in win if rr is not None]
        if len(rets) >= cfg.min_bars and r is not None:
            mean = sum(rets) / len(rets)
            std = math.sqrt(sum((x - mean) ** 2 for x in rets) / len(rets))
            z = (r - mean) / std if std > 0 else 0.0
            if abs(z) > cfg.zscore_threshold:
                out[(t, "trade_return_zscore")] = ("critical" if abs(z) > cfg.zscore_critical else "warning", z)
        mean_vol = sum(vv for _, vv in win) / len(win) if len(win) >= cfg.min_bars else 0.0
        if mean_vol > 0 and (vol / mean_vol - 1) * 100 > cfg.volume_spike_pct:
            pct = (vol / mean_vol - 1) * 100
            out[(t, "trade_volume_spike")] = ("critical" if pct > cfg.volume_critical_pct else "warning", pct)
    return out


def _stored(conn) -> dict[tuple, tuple[str, float]]:
    rows = conn.sql("SELECT event_time, rule, severity, value FROM anomalies WHERE source <> 'ticks'").fetchall()
    return {(t, rule): (sev, v) for t, rule, sev, v in rows}


def test_rules_match_a_naive_computation_and_find_the_planted_anomalies(tmp_path):
    cfg = TradeAnomalyConfig()
    with LakehouseResource(home=str(tmp_path / "w")).connect() as conn:
        trades = _trades()
        insert_batch(conn, trades[:130])  # two runs: the second continues the windows of the first
        trade_bars_increment(conn)
        assert trade_anomalies_increment(conn)["skipped"] is False
        insert_batch(conn, trades[130:])
        trade_bars_increment(conn)
        trade_anomalies_increment(conn)
        got, exp = _stored(conn), _naive(conn, cfg)
        assert set(got) == set(exp)
        for k, (sev, v) in exp.items():
            assert got[k][0] == sev and got[k][1] == pytest.approx(v, rel=1e-9), k
        minute = {m: START + timedelta(minutes=m) for m in (JUMP, SPIKE, BIG_SPIKE)}
        assert got[(minute[JUMP], "trade_return_zscore")][0] == "critical"
        assert got[(minute[SPIKE], "trade_volume_spike")][0] == "warning"  # +600 %
        assert got[(minute[BIG_SPIKE], "trade_volume_spike")][0] == "critical"  # +1900 %
        assert conn.sql("SELECT DISTINCT source, symbol, coin_id FROM anomalies").fetchall() == [
            ("trades:coinbase:BTC-USD", "btc-usd", "bitcoin")]
        assert trade_anomalies_increment(conn) == {"new": 0, "skipped": True}


def test_thresholds_are_configurable(tmp_path):
    strict = TradeAnomalyConfig(volume_spike_pct=1000.0, volume_critical_pct=5000.0, zscore_threshold=1e9,
                                zscore_critical=2e9)
    with LakehouseResource(home=str(tmp_path / "w")).connect() as conn:
        insert_batch(conn, _trades())
        trade_bars_increment(conn)
        trade_anomalies_increment(conn, strict)
        assert set(_stored(conn)) == {(START + timedelta(minutes=BIG_SPIKE), "trade_volume_spike")}
        assert set(_stored(conn)) == set(_naive(conn, strict))


def test_tick_rules_and_trade_rules_share_the_table_without_touching_each_other(tmp_path):
    with LakehouseResource(home=str(tmp_path / "w"), coins=["bitcoin", "solana"]).connect() as conn:
        insert_batch(conn, _trades())
        trade_bars_increment(conn)
        trade_anomalies_increment(conn)
        trade_rows = _stored(conn)
        n = 40
        vols = [1e8] * n
        vols[20] = 5e8  # +400 % on a coin without a trade feed, and on bitcoin too
        times = [START + timedelta(seconds=30 * i) for i in range(n)]
        for coin, sym in (("solana", "sol"), ("bitcoin", "btc")):
            insert_raw_batch(conn, pl.DataFrame({"coin_id": [coin] * n, "symbol": [sym] * n, "last_updated_at": times,
                                                 "price_usd": [150.0] * n, "volume_24h_usd": vols}))
        clean_increment(conn, ["bitcoin", "solana"])
        features_increment(conn)
        assert anomalies_increment(conn)["new"] == 2
        ticks = conn.sql("SELECT coin_id, rule FROM anomalies WHERE source = 'ticks' ORDER BY 1").fetchall()
        assert ticks == [("bitcoin", "volume_spike"), ("solana", "volume_spike")]
        assert _stored(conn) == trade_rows  # the tick run re-derived bitcoin's range but left the trade rows alone


def _alerts(kafka) -> list[dict]:
    return [r.json() for r in read_topic(kafka.bootstrap(), kafka.alerts_topic)]


def test_each_trade_anomaly_is_published_once_by_the_incremental_step(tmp_path, kafka):
    lh = LakehouseResource(home=str(tmp_path / "w"), coins=["bitcoin"])
    step = ["trade_bars_1s", "trade_bars_1m", "trade_bars_1h", "anomalies"]
    with lh.connect() as conn:
        insert_batch(conn, _trades()[:150])
    result = dg.materialize([incremental.incremental], resources={"lakehouse": lh, "kafka": kafka}, selection=step)
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"trade_bars_sane": True}
    mats = {e.materialization.asset_key.to_user_string(): e.materialization.metadata
            for e in result.get_asset_materialization_events()}
    assert mats["trade_bars_1m"]["bars_written"].value == 75 and mats["trade_bars_1m"]["products"].value == 1
    assert mats["trade_bars_1s"]["bars_written"].value == 150 and "preview" in mats["trade_bars_1s"]
    first = _alerts(kafka)
    assert [(a["source"], a["rule"]) for a in first] == [("trades:coinbase:BTC-USD", "trade_volume_spike")]  # minute 70
    # more trades, then a late one inside the window (recomputes minutes already judged)
    with lh.connect() as conn:
        insert_batch(conn, _trades()[150:])
        insert_batch(conn, [Trade("coinbase", "BTC-USD", "bitcoin", 10_000, Decimal("100"), Decimal("0.5"), "buy",
                                  START + timedelta(minutes=112, seconds=20))])
    assert dg.materialize([incremental.incremental], resources={"lakehouse": lh, "kafka": kafka}, selection=step).success
    assert dg.materialize([incremental.incremental], resources={"lakehouse": lh, "kafka": kafka}, selection=step).success
    alerts = _alerts(kafka)
    with lh.connect() as conn:
        ids = [r[0] for r in conn.sql("SELECT anomaly_id FROM anomalies ORDER BY event_time").fetchall()]
        assert conn.sql("SELECT count(*) FROM anomalies WHERE published_at IS NULL").fetchall() == [(0,)]
    assert sorted(a["anomaly_id"] for a in alerts) == sorted(ids)  # every anomaly exactly once
    assert len({a["anomaly_id"] for a in alerts}) == len(alerts)
