"""The ledger's at-most-once rules with the real consumer and a real receiver: a POST a dead
process had in flight is never re-sent, a POST without an answer is not retried, final rows are
pruned after the retention and unfinished ones never, and the CLI's healthcheck follows the
consumer's heartbeat."""

from __future__ import annotations

import time

from crypto_assets.delivery.ledger import Ledger
from crypto_assets.delivery.payloads import anomaly_notice
from crypto_assets.delivery.sender import RetryPolicy, deliver
from crypto_assets.ops import cli
from crypto_assets.settings import Webhook
from crypto_assets_tests.test_delivery import _alert, _cfg, _ids, _produce, _run
from crypto_assets_tests.webhook_receiver import Receiver


def test_in_flight_row_found_at_start_is_not_resent(kafka, home):
    rx = Receiver()
    try:
        cfg = _cfg(home, [Webhook("ops", rx.url("/ops"))])
        with Ledger(cfg.ledger_path) as ledger:  # what a process killed during its POST of a0001 leaves
            assert ledger.claim("ops", "a0001", "anomaly") == 1
        _produce(kafka, [_alert(1), _alert(2)])
        assert _run(kafka, cfg) == {"skipped": 1, "delivered": 1}
        assert _ids(rx.on("/ops")) == {"a0002": 1}
        with Ledger(cfg.ledger_path) as ledger:
            assert ledger.state("ops", "a0001") == "unknown"
            assert [(d["delivery_id"], d["reason"]) for d in ledger.dead_letters()] == [("a0001", "unknown")]
            assert ledger.recover() == []  # only once
    finally:
        rx.stop()


def test_no_answer_is_not_retried(home):
    rx = Receiver(delay_s=1.0)
    try:
        with Ledger(home / "l.sqlite") as ledger:
            state = deliver(Webhook("slow", rx.url("/slow")), anomaly_notice(_alert(1)), ledger,
                            RetryPolicy(max_attempts=5, base_s=0.01, timeout_s=0.3), None)
            assert state == "unknown" and len(rx.on("/slow")) == 1  # it may have arrived: never twice
            (dead,) = ledger.dead_letters()
            assert dead["reason"] == "unknown" and "no answer" in dead["last_error"]
    finally:
        rx.stop()


def test_prune_keeps_what_is_not_final(home):
    with Ledger(home / "l.sqlite") as ledger:
        for i, state in enumerate(["delivered", "dead", "retrying"]):
            ledger.claim("ops", f"a{i}", "anomaly")
            if state == "delivered":
                ledger.delivered("ops", f"a{i}", 200)
            elif state == "dead":
                ledger.give_up("ops", f"a{i}", "dead", "exhausted", 500, "HTTP 500", b"{}")
            else:
                ledger.will_retry("ops", f"a{i}", 500, "HTTP 500")
        assert ledger.prune(35) == 0
        assert ledger.prune(35, now=time.time() + 36 * 86400) == 3  # two final rows and the dead letter
        assert ledger.counts() == {"retrying": 1} and ledger.dead_letters() == []


def test_healthcheck_follows_the_heartbeat(kafka, home, capsys):
    args = ["alerts", "--home", str(home), "--healthcheck", "60"]
    assert cli.main(args) == 1
    rx = Receiver()
    _produce(kafka, [_alert(1)])  # the consumer waits for its topic to exist
    try:
        _run(kafka, _cfg(home, [Webhook("ops", rx.url("/ops"))]), idle_s=0.3)
    finally:
        rx.stop()
    assert cli.main(args) == 0
    assert cli.main(["alerts", "--home", str(home), "--dead-letters"]) == 0
    assert '"dead_letters": []' in capsys.readouterr().out
