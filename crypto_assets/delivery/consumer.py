"""`crypto-assets alerts`: a consumer of crypto_alerts that delivers each anomaly to every
configured webhook, then commits the message's offset to its Kafka consumer group.

It assigns itself every partition at the group's committed offsets rather than subscribing:
the ledger has one owner (ledger.py), so a second member taking half the partitions is not
wanted, and a restart after kill -9 would otherwise wait out the dead member's session (45 s
on Kafka; the embedded broker ignores LeaveGroup too, so every restart waited that long). The
committed offsets are still the group's, so lag shows in the usual tools.

Order per message: deliver to each webhook (the ledger records every attempt before it is
made, see ledger.py), then commit the offset synchronously. The ledger, not the offset, is what
keeps a notice from being delivered twice; the offset only spares re-reading. SIGTERM (or the
stop event) ends the loop between messages, or during a backoff wait, in which case the
message's offset stays uncommitted and the next start resumes its "retrying" deliveries.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from crypto_assets.delivery.ledger import Ledger
from crypto_assets.delivery.payloads import anomaly_notice
from crypto_assets.delivery.sender import RetryPolicy, deliver
from crypto_assets.resources.kafka import KafkaResource
from crypto_assets.settings import AlertSettings

log = logging.getLogger(__name__)

DEFAULT_GROUP = "crypto_assets.alerts"
HEARTBEAT = "heartbeat"  # touched every few seconds in the ledger's directory: the compose healthcheck
PRUNE_EVERY_S = 3600.0


def heartbeat_path(cfg: AlertSettings) -> Path:
    return cfg.ledger_path.parent / HEARTBEAT


def heartbeat_age_s(cfg: AlertSettings) -> float | None:
    try:
        return time.time() - heartbeat_path(cfg).stat().st_mtime
    except OSError:
        return None


class _Beat:
    def __init__(self, path: Path, every_s: float = 5.0) -> None:
        self.path, self.every_s, self.last = path, every_s, 0.0

    def __call__(self) -> None:
        if time.monotonic() - self.last >= self.every_s:
            self.path.touch()
            self.last = time.monotonic()


def run_alerts(kafka: KafkaResource, cfg: AlertSettings, stop: threading.Event, *, topic: str | None = None,
               group: str = DEFAULT_GROUP, idle_exit_s: float | None = None,
               say: Callable[[str], None] = print) -> dict:
    """Consume until `stop` (or, with `idle_exit_s`, until nothing arrived for that long).
    Returns how many deliveries reached each final state in this run ("skipped": the ledger
    already had them; "poison": messages that are no alert)."""
    topic = topic or kafka.alerts_topic
    stats: Counter[str] = Counter()
    with Ledger(cfg.ledger_path) as ledger:
        beat = _Beat(heartbeat_path(cfg))
        for w, d in ledger.recover():
            say(f"webhook {w}: delivery {d} was in flight when the last consumer died: outcome unknown, "
                f"not re-sent (dead-lettered)")
        pruned = ledger.prune(cfg.retention_days)
        if pruned:
            say(f"pruned {pruned} ledger row(s) older than {cfg.retention_days:g} days")
        if not cfg.webhooks:
            say("no webhooks configured (ALERT_WEBHOOKS, SLACK_WEBHOOK_URL): not consuming " + topic)
            while not stop.wait(1.0):
                beat()
            return dict(stats)
        say(f"delivering {topic} (group {group}) to {', '.join(w.name for w in cfg.webhooks)}")
        consumer = Consumer(kafka.consumer_config(**{"group.id": group, "enable.auto.commit": False,
                                                     "enable.auto.offset.store": False}))
        try:
            if _assign(consumer, kafka, topic, stop, beat):
                _loop(consumer, ledger, cfg, stop, stats, beat, idle_exit_s, say)
        finally:
            consumer.close()
    return dict(stats)


def _assign(consumer: Consumer, kafka: KafkaResource, topic: str, stop: threading.Event, beat: _Beat) -> bool:
    """Assign every partition of `topic` at the group's committed offset (the beginning when
    none); waits for the topic to exist. False when stopped first."""
    while not stop.is_set():
        beat()
        try:
            md = consumer.list_topics(topic=topic, timeout=kafka.timeout_s).topics.get(topic)
            if md is not None and md.error is None and md.partitions:
                tps = [TopicPartition(topic, p) for p in sorted(md.partitions)]
                committed = consumer.committed(tps, timeout=kafka.timeout_s)
                consumer.assign([TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_BEGINNING)
                                 for tp in committed])
                return True
        except KafkaException as exc:
            log.warning("waiting for %s: %s", topic, exc)
        stop.wait(1.0)
    return False


def _loop(consumer: Consumer, ledger: Ledger, cfg: AlertSettings, stop: threading.Event, stats: Counter,
          beat: _Beat, idle_exit_s: float | None, say: Callable[[str], None]) -> None:
    policy = RetryPolicy.of(cfg)
    last_msg = time.monotonic()
    last_prune = time.monotonic()
    while not stop.is_set():
        beat()
        if time.monotonic() - last_prune > PRUNE_EVERY_S:
            ledger.prune(cfg.retention_days)
            last_prune = time.monotonic()
        m = consumer.poll(0.2)
        if m is None:
            if idle_exit_s is not None and time.monotonic() - last_msg > idle_exit_s:
                return
            continue
        if (err := m.error()) is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                say(f"consumer error: {err}")
            continue
        last_msg = time.monotonic()
        if not _handle(m, ledger, cfg, policy, stop, stats, say, beat):
            return  # stopped during a backoff wait: leave the offset uncommitted
        try:
            consumer.commit(message=m, asynchronous=False)
        except KafkaException as exc:  # harmless: a re-read finds the ledger rows final
            say(f"offset commit failed ({exc}); the ledger keeps the message from being re-delivered")


def _handle(m: Message, ledger: Ledger, cfg: AlertSettings, policy: RetryPolicy, stop: threading.Event,
            stats: Counter, say: Callable[[str], None], beat: Callable[[], None]) -> bool:
    """Deliver one message to every webhook; False when stopped before all were final."""
    value = m.value()
    try:
        notice = anomaly_notice(orjson.loads(value or b""))
    except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
        where = f"{m.topic()}[{m.partition()}]@{m.offset()}"
        ledger.poison(where, f"not an alert: {type(exc).__name__}: {exc}", value)
        say(f"{where}: not an alert message, dead-lettered")
        stats["poison"] += 1
        return True
    for webhook in cfg.webhooks:
        state = deliver(webhook, notice, ledger, policy, cfg.secret, stop, tick=beat)
        if state is None:
            return False
        stats[state] += 1
        if state != "delivered":
            say(f"webhook {webhook.name}: anomaly {notice.delivery_id} {state}")
    return True
