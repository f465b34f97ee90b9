"""One webhook delivery: POST attempts with exponential backoff and jitter, Retry-After
honoured on 429/503, every attempt recorded in the ledger before it is made.

An attempt ends in one of four ways, and only two of them allow another attempt:
- accepted: a 2xx answer;
- refused: no connection could be made (DNS, connection refused, connect timeout), so
  nothing was sent: safe to retry;
- rejected: the receiver answered non-2xx, i.e. said it did not take the notice: retried on
  408/425/429/5xx, final (dead letter) on other 4xx, which a retry cannot fix;
- unknown: the request went out but no answer came (read timeout, reset): it may have been
  delivered, so at-most-once forbids a retry; dead-lettered as "unknown".
http.client (stdlib) rather than urllib because it separates connecting from sending, which is
exactly the refused/unknown line above.
"""

from __future__ import annotations

import email.utils
import http.client
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from crypto_assets.delivery.ledger import Ledger
from crypto_assets.delivery.payloads import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    Notice,
    generic_body,
    signature,
    slack_body,
)
from crypto_assets.settings import AlertSettings, Webhook

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
RETRY_AFTER_STATUS = frozenset({429, 503})


@dataclass(frozen=True)
class Attempt:
    outcome: str  # accepted | refused | rejected | unknown
    status: int | None = None
    error: str | None = None
    retry_after_s: float | None = None

    @property
    def retryable(self) -> bool:
        return self.outcome == "refused" or (self.outcome == "rejected" and self.status in RETRYABLE_STATUS)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_s: float = 1.0
    cap_s: float = 60.0
    timeout_s: float = 10.0

    @classmethod
    def of(cls, s: AlertSettings) -> RetryPolicy:
        return cls(s.max_attempts, s.backoff_base_s, s.backoff_cap_s, s.timeout_s)

    def wait_s(self, attempt: int, result: Attempt, rng: random.Random) -> float:
        """Equal jitter: half of min(cap, base * 2^(n-1)) plus a random part of the other half
        (waits grow, and receivers coming back up are not hit by every sender at once). A
        Retry-After on 429/503 is a floor, capped at `cap_s`."""
        step = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        wait = step / 2 + rng.uniform(0, step / 2)
        if result.retry_after_s is not None:
            wait = max(wait, min(result.retry_after_s, self.cap_s))
        return wait


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP-date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def post(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> Attempt:
    """One POST; never raises for network trouble (it becomes the Attempt's outcome)."""
    parts = urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    kwargs = {"context": ssl.create_default_context()} if parts.scheme == "https" else {}
    conn = cls(parts.hostname or "", parts.port, timeout=timeout_s, **kwargs)  # type: ignore[arg-type]
    try:
        try:
            conn.connect()
        except (OSError, ssl.SSLError) as exc:
            return Attempt("refused", error=f"connect: {type(exc).__name__}: {exc}")
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            conn.request("POST", path, body=body, headers={"Content-Type": "application/json",
                                                            "Content-Length": str(len(body)), **headers})
            resp = conn.getresponse()
            status = resp.status
            resp.read(64 * 1024)
        except (OSError, http.client.HTTPException) as exc:  # TimeoutError is an OSError
            return Attempt("unknown", error=f"no answer after sending: {type(exc).__name__}: {exc}")
        if 200 <= status < 300:
            return Attempt("accepted", status=status)
        after = retry_after_seconds(resp.getheader("Retry-After")) if status in RETRY_AFTER_STATUS else None
        return Attempt("rejected", status=status, error=f"HTTP {status} {resp.reason}", retry_after_s=after)
    finally:
        conn.close()


def request_for(webhook: Webhook, notice: Notice, secret: str | None) -> tuple[bytes, dict[str, str]]:
    """The body and headers this webhook gets: Slack's format, or the generic JSON (signed
    when a secret is configured)."""
    if webhook.kind == "slack":
        return slack_body(notice), {}
    body = generic_body(notice)
    headers = {DELIVERY_HEADER: notice.delivery_id}
    if secret:
        headers[SIGNATURE_HEADER] = signature(body, secret)
    return body, headers


def deliver(webhook: Webhook, notice: Notice, ledger: Ledger, policy: RetryPolicy, secret: str | None,
            stop: threading.Event | None = None, rng: random.Random | None = None,
            poster: Callable[[str, bytes, dict[str, str], float], Attempt] = post,
            tick: Callable[[], None] | None = None) -> str | None:
    """Deliver `notice` to `webhook` at most once. Returns the final ledger state it reached
    (delivered, dead, unknown), "skipped" when the ledger already had a final (or in-flight)
    row, or None when `stop` was set during a backoff wait (the row stays "retrying": a later
    run resumes it). `tick` is called before each attempt and every few seconds of a wait (the
    consumer's heartbeat, so a long backoff does not look like a hung process)."""
    rng = rng or random.Random()
    stop = stop or threading.Event()
    body, headers = request_for(webhook, notice, secret)
    while True:
        if tick is not None:
            tick()
        attempt_no = ledger.claim(webhook.name, notice.delivery_id, notice.kind)
        if attempt_no is None:
            return "skipped"
        result = poster(webhook.url, body, headers, policy.timeout_s)
        if result.outcome == "accepted":
            ledger.delivered(webhook.name, notice.delivery_id, result.status)
            return "delivered"
        if result.outcome == "unknown":
            ledger.give_up(webhook.name, notice.delivery_id, "unknown", "unknown", result.status, result.error, body)
            return "unknown"
        if not result.retryable or attempt_no >= policy.max_attempts:
            reason = "exhausted" if result.retryable else "rejected"
            ledger.give_up(webhook.name, notice.delivery_id, "dead", reason, result.status, result.error, body)
            return "dead"
        ledger.will_retry(webhook.name, notice.delivery_id, result.status, result.error)
        until = time.monotonic() + policy.wait_s(attempt_no, result, rng)
        while (left := until - time.monotonic()) > 0:
            if stop.wait(min(left, 5.0)):
                return None
            if tick is not None:
                tick()
