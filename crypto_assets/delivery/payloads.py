"""What a webhook receives: a generic JSON document (optionally HMAC-signed) or a
Slack-compatible {"text", "blocks"} message, for an anomaly or a failed run.

Anomalies arrive as the JSON the anomalies outbox publishes (crypto_assets/transforms/
anomalies.py); `Notice` is the one shape both kinds take here, so the sender and the ledger
need not know which kind they carry.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field
from typing import Any

import orjson

SIGNATURE_HEADER = "X-Crypto-Assets-Signature-256"  # "sha256=<hex>" of the raw body
DELIVERY_HEADER = "X-Crypto-Assets-Delivery"  # the notice id: receivers may dedupe on it too


@dataclass(frozen=True)
class Notice:
    """One thing to tell people about; `delivery_id` keys the ledger (per webhook)."""

    delivery_id: str
    kind: str  # "anomaly" | "run_failure"
    generic: dict[str, Any]
    title: str
    fields: list[tuple[str, str]] = field(default_factory=list)


def anomaly_notice(message: dict[str, Any]) -> Notice:
    """The notice of one crypto_alerts message (KeyError when it lacks an anomaly_id)."""
    aid = str(message["anomaly_id"])
    generic = {
        "kind": "anomaly",
        "anomaly_id": aid,
        "coin": message.get("coin_id"),
        "symbol": message.get("symbol"),
        "rule": message.get("rule"),
        "severity": message.get("severity"),
        "value": message.get("value"),
        "threshold": message.get("threshold"),
        "event_time": message.get("event_time"),
        "price": message.get("price_usd"),
        "source": message.get("source"),
    }
    sev = str(generic["severity"] or "info")
    title = f"{sev.upper()}: {generic['rule']} on {generic['coin']}"
    fields = [
        ("Coin", f"{generic['coin']} ({generic['symbol']})"),
        ("Rule", str(generic["rule"])),
        ("Value", _num(generic["value"])),
        ("Threshold", _num(generic["threshold"])),
        ("Price (USD)", _num(generic["price"])),
        ("Event time", str(generic["event_time"])),
    ]
    return Notice(aid, "anomaly", generic, title, fields)


def run_failure_notice(run_id: str, job: str, error: str, failed_checks: list[str]) -> Notice:
    """The notice of a failed Dagster run, naming the blocking checks that failed in it."""
    generic = {"kind": "run_failure", "run_id": run_id, "job": job, "error": error, "failed_checks": failed_checks}
    fields = [("Job", job), ("Run", run_id)]
    if failed_checks:
        fields.append(("Failed blocking checks", ", ".join(failed_checks)))
    fields.append(("Error", error[:1500] or "(no message)"))
    return Notice(f"run:{run_id}", "run_failure", generic, f"Dagster run failed: {job}", fields)


def _num(v: Any) -> str:
    return f"{v:,.6g}" if isinstance(v, int | float) else str(v)


def generic_body(notice: Notice) -> bytes:
    return orjson.dumps(notice.generic, option=orjson.OPT_SORT_KEYS)


def slack_body(notice: Notice) -> bytes:
    """Slack's incoming-webhook format: `text` is the notification fallback, `blocks` the layout."""
    lines = " · ".join(f"{k}: {v}" for k, v in notice.fields[:4])
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": notice.title[:150]}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{v}"[:2000]} for k, v in notice.fields[:10]]},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"id `{notice.delivery_id}`"}]},
    ]
    return orjson.dumps({"text": f"{notice.title} — {lines}", "blocks": blocks})


def signature(body: bytes, secret: str) -> str:
    """HMAC-SHA256 of the exact body bytes, as `sha256=<hex>` (GitHub's convention)."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: str, header_value: str) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    return hmac.compare_digest(signature(body, secret), header_value)
