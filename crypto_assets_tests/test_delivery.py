"""Alert delivery (crypto_assets/delivery) against the embedded broker and a real local HTTP
receiver: once per anomaly per webhook, retries through an outage, dead letters for a receiver
that keeps failing, no redelivery after a restart or a kill -9, Slack shape, HMAC signature."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import orjson
from confluent_kafka import Producer

from crypto_assets.delivery.consumer import run_alerts
from crypto_assets.delivery.ledger import Ledger
from crypto_assets.delivery.payloads import DELIVERY_HEADER, SIGNATURE_HEADER, anomaly_notice, slack_body, verify
from crypto_assets.delivery.sender import Attempt, RetryPolicy, post, retry_after_seconds
from crypto_assets.settings import AlertSettings, Webhook, alert_settings
from crypto_assets_tests.webhook_receiver import Receiver, free_port

SECRET = "s3cret"


def _alert(i: int) -> dict:
    """A message as the anomalies outbox publishes it (crypto_assets/transforms/anomalies.py)."""
    return {"anomaly_id": f"a{i:04d}", "coin_id": "bitcoin", "symbol": "btc", "event_time": "2026-12-03T10:00:00Z",
            "rule": "volume_spike", "severity": "warning", "value": 400.0 + i, "threshold": 200.0,
            "price_usd": 90_000.5, "volume_24h_usd": 1e9, "source": None}


def _produce(kafka, alerts: list[dict], raw: tuple[bytes, ...] = ()) -> None:
    p = Producer({"bootstrap.servers": kafka.bootstrap()})
    for a in alerts:
        p.produce(kafka.alerts_topic, orjson.dumps(a), key=a["coin_id"], headers=[("anomaly_id", a["anomaly_id"].encode())])
    for value in raw:
        p.produce(kafka.alerts_topic, value)
    assert p.flush(10) == 0


def _cfg(home: Path, hooks: list[Webhook], **kw) -> AlertSettings:
    return AlertSettings(webhooks=tuple(hooks), secret=SECRET, ledger_path=home / "alerts" / "deliveries.sqlite",
                         max_attempts=kw.pop("max_attempts", 20), backoff_base_s=0.05, backoff_cap_s=0.3,
                         timeout_s=5.0, **kw)


def _run(kafka, cfg, idle_s: float = 1.0, group: str = "g") -> dict:
    return run_alerts(kafka, cfg, threading.Event(), group=group, idle_exit_s=idle_s, say=lambda _line: None)


def _ids(reqs) -> Counter:
    return Counter(r.headers.get(DELIVERY_HEADER) or r.json()["blocks"][-1]["elements"][0]["text"].split("`")[1]
                   for r in reqs)


def test_payloads_signature_and_backoff():
    n = anomaly_notice(_alert(7))
    assert n.delivery_id == "a0007" and n.generic == {
        "kind": "anomaly", "anomaly_id": "a0007", "coin": "bitcoin", "symbol": "btc", "rule": "volume_spike",
        "severity": "warning", "value": 407.0, "threshold": 200.0, "event_time": "2026-12-03T10:00:00Z",
        "price": 90_000.5, "source": None}
    slack = orjson.loads(slack_body(n))
    assert set(slack) == {"text", "blocks"} and "WARNING: volume_spike on bitcoin" in slack["text"]
    assert [b["type"] for b in slack["blocks"]] == ["header", "section", "context"]
    assert {"type": "mrkdwn", "text": "*Threshold*\n200"} in slack["blocks"][1]["fields"]
    assert not verify(b"{}", SECRET, "sha256=" + "0" * 64)
    assert retry_after_seconds("7") == 7.0 and retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert abs(retry_after_seconds("Thu, 03 Dec 2026 10:00:30 GMT", now=1796292000.0) - 30) < 1e-6  # type: ignore[operator]
    p, rng = RetryPolicy(base_s=1, cap_s=8), random.Random(1)
    waits = [p.wait_s(k, Attempt("refused"), rng) for k in range(1, 7)]
    assert all(0.5 * min(8, 2 ** (k - 1)) <= w <= min(8, 2 ** (k - 1)) for k, w in enumerate(waits, 1))
    assert p.wait_s(1, Attempt("rejected", 429, retry_after_s=5), rng) == 5  # Retry-After is a floor
    assert p.wait_s(1, Attempt("rejected", 503, retry_after_s=500), rng) == 8  # ... capped
    cfg = alert_settings({"ALERT_WEBHOOKS": "ops=http://h/ops, http://h/x", "SLACK_WEBHOOK_URL": "https://hooks/s",
                          "CRYPTO_HOME": "/tmp/h"})
    assert cfg.webhooks == (Webhook("ops", "http://h/ops"), Webhook("webhook2", "http://h/x"),
                            Webhook("slack", "https://hooks/s", "slack"))
    assert cfg.ledger_path == Path("/tmp/h/alerts/deliveries.sqlite") and cfg.secret is None


def test_each_anomaly_once_per_webhook_then_restart(kafka, home):
    rx = Receiver()
    try:
        hooks = [Webhook("ops", rx.url("/ops")), Webhook("audit", rx.url("/audit")),
                 Webhook("slack", rx.url("/slack"), "slack")]
        cfg = _cfg(home, hooks)
        alerts = [_alert(i) for i in range(6)]
        _produce(kafka, alerts, raw=(b"not json",))
        _produce(kafka, alerts[:2])  # the same anomalies published again: still one delivery each
        stats = _run(kafka, cfg)
        want = Counter(a["anomaly_id"] for a in alerts)
        for path in ("/ops", "/audit", "/slack"):
            assert _ids(rx.on(path)) == want, path
        assert stats == {"delivered": 18, "skipped": 6, "poison": 1}
        for r in rx.on("/ops"):
            assert verify(r.body, SECRET, r.headers[SIGNATURE_HEADER])
            assert r.json()["anomaly_id"] == r.headers[DELIVERY_HEADER]
        assert all(SIGNATURE_HEADER not in r.headers and set(r.json()) == {"text", "blocks"} for r in rx.on("/slack"))
        with Ledger(cfg.ledger_path) as ledger:
            assert ledger.counts() == {"delivered": 18}
            assert [d["reason"] for d in ledger.dead_letters()] == ["poison"]

        # restart (same group: offsets committed) and a new group reading from the start (offsets
        # lost): the ledger keeps both from re-delivering anything
        assert _run(kafka, cfg, idle_s=0.5) == {}
        assert _run(kafka, cfg, idle_s=0.5, group="g2") == {"skipped": 24, "poison": 1}
        assert len(rx.requests) == 18
    finally:
        rx.stop()


def test_receiver_down_for_a_while_then_up(kafka, home):
    port = free_port()
    cfg = _cfg(home, [Webhook("ops", f"http://127.0.0.1:{port}/ops")])
    _produce(kafka, [_alert(1), _alert(2)])
    rx: list[Receiver] = []
    threading.Timer(1.5, lambda: rx.append(Receiver(port=port))).start()
    t0 = time.monotonic()
    try:
        assert _run(kafka, cfg) == {"delivered": 2}
        assert time.monotonic() - t0 > 1.5
        assert _ids(rx[0].on("/ops")) == Counter(["a0001", "a0002"])
        with Ledger(cfg.ledger_path) as ledger:
            attempts = ledger._db.execute("SELECT attempts FROM deliveries WHERE delivery_id = 'a0001'").fetchone()[0]
        assert attempts > 3  # refused several times, then delivered
    finally:
        for r in rx:
            r.stop()


def test_receiver_answering_500_dead_letters_and_goes_on(kafka, home):
    rx = Receiver(statuses={"/broken": [500], "/gone": [404]})
    try:
        cfg = _cfg(home, [Webhook("broken", rx.url("/broken")), Webhook("gone", rx.url("/gone")),
                          Webhook("ok", rx.url("/ok"))], max_attempts=3)
        _produce(kafka, [_alert(1), _alert(2)])
        assert _run(kafka, cfg) == {"dead": 4, "delivered": 2}
        assert _ids(rx.on("/broken")) == Counter({"a0001": 3, "a0002": 3})  # retried, then given up
        assert _ids(rx.on("/gone")) == Counter({"a0001": 1, "a0002": 1})  # 404: a retry cannot help
        assert _ids(rx.on("/ok")) == Counter(["a0001", "a0002"])
        with Ledger(cfg.ledger_path) as ledger:
            dead = {(d["webhook"], d["delivery_id"]): (d["reason"], d["attempts"], d["last_status"])
                    for d in ledger.dead_letters()}
        assert dead == {("broken", "a0001"): ("exhausted", 3, 500), ("broken", "a0002"): ("exhausted", 3, 500),
                        ("gone", "a0001"): ("rejected", 1, 404), ("gone", "a0002"): ("rejected", 1, 404)}
        assert _run(kafka, replace(cfg, max_attempts=10), idle_s=0.5, group="g3") == {"skipped": 6}  # dead stays dead
    finally:
        rx.stop()


def test_retry_after_is_honoured(home):
    rx = Receiver(statuses={"/busy": [429, 200]}, headers={"/busy": {"Retry-After": "1"}})
    try:
        from crypto_assets.delivery.sender import deliver

        with Ledger(home / "l.sqlite") as ledger:
            state = deliver(Webhook("busy", rx.url("/busy")), anomaly_notice(_alert(1)), ledger,
                            RetryPolicy(base_s=0.01, cap_s=5), None)
        first, second = rx.on("/busy")
        assert state == "delivered" and second.at - first.at >= 1.0
        assert post(f"http://127.0.0.1:{free_port()}/", b"{}", {}, 1.0).outcome == "refused"
    finally:
        rx.stop()


def test_kill_9_mid_stream_then_restart(kafka, home):
    """kill -9 while deliveries are under way, restart: no id reaches the receiver twice, and
    every id is either received or dead-lettered as "unknown" (the in-flight POST, at most one)."""
    rx = Receiver(delay_s=0.03)
    ids = [f"a{i:04d}" for i in range(60)]
    _produce(kafka, [_alert(i) for i in range(60)])
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap(), "CRYPTO_HOME": str(home),
           "ALERT_WEBHOOKS": f"ops={rx.url('/ops')}", "ALERT_BACKOFF_BASE_SECONDS": "0.05"}
    cmd = [sys.executable, "-m", "crypto_assets.ops.cli", "alerts", "--topic", kafka.alerts_topic, "--group", "k9"]
    try:
        child = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        rx.wait_for("/ops", 15, timeout_s=60)
        child.send_signal(signal.SIGKILL)
        child.wait(10)
        got_before = len(rx.on("/ops"))
        assert 15 <= got_before < 60, got_before
        # the restart, stopped by SIGTERM once it has caught up: a clean exit with its counts
        again = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        with Ledger(home / "alerts" / "deliveries.sqlite") as ledger:
            deadline = time.monotonic() + 90
            while sum(v for k, v in ledger.counts().items() if k != "sending") < 60 and time.monotonic() < deadline:
                time.sleep(0.1)
        again.send_signal(signal.SIGTERM)
        out, _ = again.communicate(timeout=30)
        assert again.returncode == 0, out
        received = _ids(rx.on("/ops"))
        assert set(received.values()) == {1}  # nothing delivered twice
        with Ledger(home / "alerts" / "deliveries.sqlite") as ledger:
            unknown = {d["delivery_id"] for d in ledger.dead_letters() if d["reason"] == "unknown"}
            states = ledger.counts()
        assert len(unknown) <= 1 and set(received) | unknown == set(ids)
        assert states == {"delivered": 60 - len(unknown), **({"unknown": 1} if unknown else {})}
    finally:
        rx.stop()


def test_run_failure_sensor_delivers_failed_run_with_blocking_check(home, monkeypatch):
    """A real failing run (a blocking check fails) evaluated by the real run-failure sensor:
    delivered once to the webhook, naming the check; a second evaluation delivers nothing."""
    import dagster as dg

    from crypto_assets.defs.run_alerts import build_run_failure_sensor

    sensor = build_run_failure_sensor(default_on=True)  # as crypto_assets.definitions registers it

    @dg.asset(check_specs=[dg.AssetCheckSpec("positive", asset="prices", blocking=True)])
    def prices():
        yield dg.Output(1)
        yield dg.AssetCheckResult(check_name="positive", passed=False, severity=dg.AssetCheckSeverity.ERROR)

    @dg.asset
    def downstream(prices):
        return prices

    rx = Receiver()
    monkeypatch.setenv("CRYPTO_HOME", str(home))
    monkeypatch.setenv("ALERT_WEBHOOKS", f"ops={rx.url('/ops')}")
    monkeypatch.setenv("ALERT_WEBHOOK_SECRET", SECRET)
    try:
        with dg.instance_for_test() as instance:
            result = dg.materialize([prices, downstream], instance=instance, raise_on_error=False)
            assert not result.success
            failure = next(e for e in result.all_events if e.event_type == dg.DagsterEventType.RUN_FAILURE)
            run = instance.get_run_by_id(result.run_id)
            assert run is not None
            for _ in range(2):
                ctx = dg.build_run_status_sensor_context(
                    sensor_name=sensor.name, dagster_event=failure, dagster_instance=instance,
                    dagster_run=run).for_run_failure()
                sensor(ctx)  # type: ignore[call-arg]
        (req,) = rx.on("/ops")
        body = req.json()
        assert body["kind"] == "run_failure" and body["run_id"] == result.run_id
        assert body["failed_checks"] == ["prices:positive"] and body["job"] == "__ephemeral_asset_job__"
        assert verify(req.body, SECRET, req.headers[SIGNATURE_HEADER])
        assert req.headers[DELIVERY_HEADER] == f"run:{result.run_id}"
    finally:
        rx.stop()
