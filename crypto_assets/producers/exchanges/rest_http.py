"""One REST client for the exchanges' public market-data APIs (Coinbase Exchange, Binance Spot).

Gap healing (`/products/{id}/trades`, `/api/v3/historicalTrades`) and history backfill
(`/products/{id}/candles`, `/api/v3/klines`) page through thousands of requests, so the client
keeps each exchange's published limits instead of discovering them by being banned:

- Binance counts request *weight* per IP and minute and reports the running total in
  `X-MBX-USED-WEIGHT-1M`. Before a request whose weight would take the total over
  `weight_limit_1m`, the client waits for the next minute. A 429 carries `Retry-After`; a 418
  (IP banned for ignoring 429s) too: both are waited out when short, else `RestRateLimited`.
- Coinbase allows about 10 public requests per second per IP: `min_interval_s` spaces requests,
  and its 429s are waited out like Binance's.
- 5xx, timeouts and refused connections back off with full jitter; other 4xx raise
  `RestRequestError` at once (a bad product id does not get better by asking again).

`sleep`, `clock` and `random` are injectable so the behaviour is tested against a local HTTP
server without waiting.
"""

from __future__ import annotations

import logging
import random as _random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests

from crypto_assets.producers.coingecko_client import parse_retry_after

logger = logging.getLogger(__name__)

BINANCE_WEIGHT_HEADER = "X-MBX-USED-WEIGHT-1M"


class RestError(RuntimeError):
    """Base class of what the exchange REST client raises."""


class RestRequestError(RestError):
    """A 4xx other than 429/418: the request itself is wrong, retrying cannot help."""

    def __init__(self, status: int, url: str, body: str) -> None:
        self.status, self.url, self.body = status, url, body
        super().__init__(f"HTTP {status} from {url}: {body[:300]}")


class RestUnavailable(RestError):
    """Transient failures (5xx, timeouts, refused connections) outlived the retry budget."""


class RestRateLimited(RestError):
    """The exchange asked us to wait longer than `max_retry_after_s` (429 or a 418 ban)."""

    def __init__(self, status: int, url: str, retry_after: float) -> None:
        self.status, self.url, self.retry_after = status, url, retry_after
        what = "IP banned (418)" if status == 418 else "rate limited (429)"
        super().__init__(f"{url}: {what}, asked to wait {retry_after:.0f}s")


@dataclass
class RestStats:
    """Counters for the stats lines and materialization metadata."""

    requests: int = 0
    retries: int = 0
    rate_limited: int = 0  # 429/418 answers waited out
    weight_waits: int = 0  # pauses before a request because the minute's weight was nearly used
    waited_s: float = 0.0
    last_used_weight: int | None = None


class ExchangeRestClient:
    """GET JSON from one exchange's REST base URL within its rate limits (see the module doc)."""

    def __init__(
        self,
        base_url: str,
        *,
        name: str = "exchange",
        weight_limit_1m: int | None = None,
        min_interval_s: float = 0.0,
        timeout_s: float = 10.0,
        max_attempts: int = 5,
        base_delay_s: float = 0.5,
        max_delay_s: float = 20.0,
        max_retry_after_s: float = 120.0,
        sleep: Callable[[float], Any] = time.sleep,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = _random.random,
        session: requests.Session | None = None,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.base_url = base_url.rstrip("/")
        self.name = name
        self.weight_limit_1m = weight_limit_1m
        self.min_interval_s = min_interval_s
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.base_delay_s = base_delay_s
        self.max_delay_s = max_delay_s
        self.max_retry_after_s = max_retry_after_s
        self._sleep, self._clock, self._random = sleep, clock, random
        self.session = session or requests.Session()
        self.session.headers.update({"Accept": "application/json", "User-Agent": "crypto_assets/1"})
        self.stats = RestStats()
        self._last_request_at: float | None = None
        self._weight_minute: int | None = None  # the minute the last weight header belongs to

    @classmethod
    def binance(cls, base_url: str, **kw: Any) -> ExchangeRestClient:
        """Binance Spot: 6,000 weight per minute and IP; keep a margin for other clients."""
        kw.setdefault("weight_limit_1m", 4800)
        return cls(base_url, name="binance", **kw)

    @classmethod
    def coinbase(cls, base_url: str, **kw: Any) -> ExchangeRestClient:
        """Coinbase Exchange public endpoints: about 10 requests per second per IP."""
        kw.setdefault("min_interval_s", 0.12)
        return cls(base_url, name="coinbase", **kw)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> ExchangeRestClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self.stats.waited_s += seconds
            self._sleep(seconds)

    def _before_request(self, weight: int) -> None:
        now = self._clock()
        if self._last_request_at is not None and self.min_interval_s > 0:
            self._wait(self.min_interval_s - (now - self._last_request_at))
        used = self.stats.last_used_weight
        if (self.weight_limit_1m is not None and used is not None
                and self._weight_minute == int(self._clock() // 60)
                and used + weight > self.weight_limit_1m):
            pause = 60.0 - (self._clock() % 60.0) + 0.05
            self.stats.weight_waits += 1
            logger.warning("%s: %d of %d request weight used this minute, waiting %.1fs",
                           self.name, used, self.weight_limit_1m, pause)
            self._wait(pause)
        self._last_request_at = self._clock()

    def _backoff(self, retry_index: int) -> float:
        return self._random() * min(self.max_delay_s, self.base_delay_s * (2.0 ** retry_index))

    def get_json(self, path: str, params: Mapping[str, Any] | None = None, *, weight: int = 1,
                 parse_float: Callable[[str], Any] | None = None) -> Any:
        """GET `base_url + path` and decode its JSON body, within the rate limits. `parse_float`
        (e.g. `Decimal`) decodes JSON numbers with a fraction from their text, for APIs that send
        prices as numbers (Coinbase candles) whose digits must not pass through a float."""
        body, _ = self.get(path, params, weight=weight, parse_float=parse_float)
        return body

    def get(self, path: str, params: Mapping[str, Any] | None = None, *, weight: int = 1,
            parse_float: Callable[[str], Any] | None = None) -> tuple[Any, Mapping[str, str]]:
        """Like `get_json`, with the response headers (Coinbase pages with `CB-AFTER`)."""
        url = self.base_url + path
        problem = "no attempt made"
        for attempt in range(self.max_attempts):
            if attempt:
                self.stats.retries += 1
            self._before_request(weight)
            self.stats.requests += 1
            try:
                resp = self.session.get(url, params=dict(params or {}), timeout=self.timeout_s)
            except requests.Timeout:
                problem = f"timeout after {self.timeout_s}s"
            except requests.ConnectionError as exc:
                problem = f"connection error: {exc}"
            else:
                self._note_weight(resp.headers)
                status = resp.status_code
                if 200 <= status < 300:
                    try:
                        decoded = resp.json(parse_float=parse_float) if parse_float else resp.json()
                        return decoded, resp.headers
                    except ValueError as exc:
                        raise RestUnavailable(f"{url}: HTTP {status} with a body that is not JSON: "
                                              f"{resp.text[:200]!r}") from exc
                if status in (429, 418):
                    wait = parse_retry_after(resp.headers.get("Retry-After"))
                    wait = self._backoff(attempt) if wait is None else wait
                    if wait > self.max_retry_after_s or attempt + 1 == self.max_attempts:
                        # too long to block on, or no attempt left to spend after the wait
                        raise RestRateLimited(status, url, wait)
                    self.stats.rate_limited += 1
                    logger.warning("%s: HTTP %d from %s, waiting %.1fs as asked", self.name, status, path, wait)
                    self._wait(wait)
                    continue
                if 400 <= status < 500:
                    raise RestRequestError(status, url, resp.text)
                problem = f"HTTP {status}"
            if attempt + 1 < self.max_attempts:
                delay = self._backoff(attempt)
                logger.warning("%s: %s from %s, retry %d in %.2fs", self.name, problem, path, attempt + 1, delay)
                self._wait(delay)
        raise RestUnavailable(f"{url}: {problem} after {self.max_attempts} attempts")

    def _note_weight(self, headers: Mapping[str, str]) -> None:
        raw = headers.get(BINANCE_WEIGHT_HEADER)
        if raw is None:
            return
        try:
            self.stats.last_used_weight = int(raw)
        except ValueError:
            return
        self._weight_minute = int(self._clock() // 60)
