"""CoinGecko HTTP: `CoinGeckoClient` fetches `/coins/markets` with rate-limit-aware retries.

CoinGecko is a shared public API with tight rate limits and occasional outages, so the client
is deliberately patient: it honours `429 Retry-After` (`parse_retry_after`), backs off
exponentially with full jitter on 5xx / connection errors / timeouts, and raises
`CoinGeckoUnavailable` when a fetch's retries are spent (the poller in `coingecko.py` logs that
and carries on) or `CoinGeckoRequestError` for a 4xx that retrying cannot fix. `sleep` and
`random` are injectable so the behaviour can be tested without waiting.
"""

from __future__ import annotations

import logging
import math
import random as _random
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

DEFAULT_BASE_URL = "https://api.coingecko.com/api/v3"
DEMO_KEY_HEADER = "x-cg-demo-api-key"
PRO_KEY_HEADER = "x-cg-pro-api-key"
MARKETS_PATH = "/coins/markets"

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------


class CoinGeckoError(RuntimeError):
    """Base class for everything the poller raises about CoinGecko itself."""


class CoinGeckoRequestError(CoinGeckoError):
    """A 4xx other than 429 (bad API key, bad parameters): retrying cannot help, so we don't."""

    def __init__(self, status: int, url: str, body: str) -> None:
        self.status = status
        self.url = url
        self.body = body
        hint = ""
        if status in (401, 403):
            hint = (
                " (check the API key and whether it is a demo or pro key: demo keys use "
                f"header {DEMO_KEY_HEADER} on api.coingecko.com, pro keys {PRO_KEY_HEADER} on "
                "pro-api.coingecko.com)"
            )
        super().__init__(f"CoinGecko rejected the request with HTTP {status}{hint}: {body[:300]}")


class CoinGeckoUnavailable(CoinGeckoError):
    """Transient failure that outlived the retry budget of one poll (or a malformed payload).

    `retry_after` is set when CoinGecko asked us to wait longer than we are willing to block
    inside one poll; the polling loop then waits at least that long before the next poll.
    """

    def __init__(self, message: str, *, attempts: int = 0, retry_after: float | None = None) -> None:
        self.attempts = attempts
        self.retry_after = retry_after
        super().__init__(message)


# --------------------------------------------------------------------------------------------
# HTTP client with retries
# --------------------------------------------------------------------------------------------


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """`Retry-After` as seconds (delta-seconds or HTTP-date), or None when absent/unparseable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        now = now or datetime.now(UTC)
        return max(0.0, (when - now).total_seconds())
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class CoinGeckoClient:
    """Fetches `/coins/markets` with CoinGecko-appropriate retries.

    Per `fetch_markets` call at most `max_attempts` requests are made. 429 waits `Retry-After`
    (or backs off when absent); 5xx, connection errors and timeouts back off with full jitter,
    `random() * min(max_delay_s, base_delay_s * 2**n)`, so many pollers restarting together do
    not hit the API in lock-step. Other 4xx raise `CoinGeckoRequestError` at once. `sleep` and
    `random` are injectable so the behaviour can be tested without waiting.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        *,
        pro: bool = False,
        api_key_header: str | None = None,
        timeout_s: float = 10.0,
        max_attempts: int = 5,
        base_delay_s: float = 1.0,
        max_delay_s: float = 30.0,
        max_retry_after_s: float = 120.0,
        sleep: Callable[[float], Any] = time.sleep,
        random: Callable[[], float] = _random.random,
        session: requests.Session | None = None,
        stop_event: threading.Event | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.max_retry_after_s = max_retry_after_s
        self._sleep = sleep
        self._random = random
        self._stop = stop_event
        self.session = session or requests.Session()
        self.session.headers.update(
            {"Accept": "application/json", "User-Agent": "crypto_assets-coingecko-poller/1"}
        )
        if api_key:
            header = api_key_header or (PRO_KEY_HEADER if pro else DEMO_KEY_HEADER)
            self.session.headers[header] = api_key
        # Cumulative number of retries (requests beyond the first of each fetch), for metrics.
        self.retries = 0

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> CoinGeckoClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def backoff_delay(self, retry_index: int) -> float:
        """Full-jitter delay before retry number `retry_index` (0-based)."""
        cap = min(self.max_delay_s, self.base_delay_s * (2.0**retry_index))
        return self._random() * cap

    def markets_params(self, coingecko_ids: Sequence[str]) -> dict[str, str]:
        return {
            "vs_currency": "usd",
            "ids": ",".join(coingecko_ids),
            "price_change_percentage": "24h,7d",
            "per_page": str(min(250, max(1, len(coingecko_ids)))),
            "page": "1",
        }

    def fetch_markets(self, coingecko_ids: Sequence[str]) -> list[dict]:
        """GET /coins/markets for these CoinGecko ids, retrying transient failures."""
        url = self.base_url + MARKETS_PATH
        params = self.markets_params(coingecko_ids)
        last_problem = "no attempt made"
        for attempt in range(self.max_attempts):
            retry_after: float | None = None
            try:
                resp = self.session.get(url, params=params, timeout=self.timeout_s)
            except requests.Timeout as exc:
                last_problem = f"timeout after {self.timeout_s}s ({type(exc).__name__})"
            except requests.ConnectionError as exc:
                last_problem = f"connection error: {exc}"
            else:
                status = resp.status_code
                if 200 <= status < 300:
                    return self._decode(resp)
                if status == 429:
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                    last_problem = f"HTTP 429 rate limited (Retry-After={resp.headers.get('Retry-After')!r})"
                    if retry_after is not None and retry_after > self.max_retry_after_s:
                        # Blocking a poll for minutes helps nobody; let the loop wait instead.
                        raise CoinGeckoUnavailable(
                            f"CoinGecko rate limit: asked to wait {retry_after:.0f}s "
                            f"(> max_retry_after_s={self.max_retry_after_s:.0f}s)",
                            attempts=attempt + 1,
                            retry_after=retry_after,
                        )
                elif status >= 500:
                    last_problem = f"HTTP {status} server error"
                else:
                    raise CoinGeckoRequestError(status, resp.url, resp.text)
            if attempt + 1 >= self.max_attempts:
                break
            delay = retry_after if retry_after is not None else self.backoff_delay(attempt)
            logger.warning(
                "coingecko: attempt %d/%d failed (%s); retrying in %.2fs",
                attempt + 1,
                self.max_attempts,
                last_problem,
                delay,
            )
            self.retries += 1
            self._sleep(delay)
            if self._stop is not None and self._stop.is_set():
                raise CoinGeckoUnavailable(
                    f"stopped while retrying CoinGecko ({last_problem})", attempts=attempt + 1
                )
        raise CoinGeckoUnavailable(
            f"CoinGecko unavailable: {self.max_attempts} attempt(s) to {url} failed; "
            f"last: {last_problem}",
            attempts=self.max_attempts,
        )

    @staticmethod
    def _decode(resp: requests.Response) -> list[dict]:
        try:
            payload = resp.json()
        except ValueError as exc:
            raise CoinGeckoUnavailable(
                f"CoinGecko returned HTTP {resp.status_code} with a non-JSON body: {resp.text[:200]!r}"
            ) from exc
        if not isinstance(payload, list):
            raise CoinGeckoUnavailable(
                f"CoinGecko /coins/markets returned {type(payload).__name__}, expected a list: "
                f"{str(payload)[:200]}"
            )
        return payload
