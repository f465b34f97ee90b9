"""CoinGecko poller: `/coins/markets` -> contract ticks on `crypto_raw`.

CoinGecko is a shared public API with tight rate limits and occasional outages, so the poller
is deliberately patient: it honours `429 Retry-After`, backs off exponentially with full jitter
on 5xx / connection errors / timeouts, and a poll that still fails is logged and skipped rather
than ending the loop. CoinGecko refreshes a coin roughly once a minute, so ticks whose
`last_updated` has not moved since the previous poll are suppressed instead of being sent again.

Split for testability: `map_markets` is pure (payload -> ticks), `CoinGeckoClient` does HTTP
with retries (sleep/random injectable), `run_coingecko` is the polling loop that writes Kafka.
"""

from __future__ import annotations

import logging
import math
import random as _random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from crypto_assets.kafka.tick_contract import Coin, coins_for, make_tick
from crypto_assets.resources.kafka import KafkaResource
from crypto_assets.kafka.producer import TickProducer

SOURCE = "coingecko"
DEFAULT_BASE_URL = "https://api.coingecko.com/api/v3"
DEMO_KEY_HEADER = "x-cg-demo-api-key"
PRO_KEY_HEADER = "x-cg-pro-api-key"
MARKETS_PATH = "/coins/markets"

logger = logging.getLogger(__name__)

LogFn = Callable[[str], Any]


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
# Pure mapping
# --------------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    """Optional numeric field -> float, or None for null / non-numeric / non-finite values."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def parse_last_updated(value: Any) -> datetime | None:
    """CoinGecko's `last_updated` ("2025-12-20T15:30:00.123Z") -> aware UTC datetime, or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        ts = datetime.fromisoformat(value)
    except ValueError:
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=timezone.utc)
    return ts.astimezone(timezone.utc)


def map_markets(
    payload: list[dict],
    coins: Iterable[Coin],
    ingestion_time: datetime,
    *,
    warn: LogFn | None = None,
) -> list[dict]:
    """Map a `/coins/markets` response to contract ticks, keyed by OUR coin ids.

    CoinGecko ids differ from ours for some coins (avalanche-2 -> avalanche), so items are
    matched through `Coin.coingecko_id`. Items that cannot make a usable tick (unknown id,
    null/missing/invalid `current_price` or `last_updated`) are skipped with a warning: one bad
    row must not block the others, and the contract requires price and timestamp.
    """
    warn = warn or logger.warning
    by_cg_id = {c.coingecko_id: c for c in coins}
    ticks: list[dict] = []
    for item in payload:
        if not isinstance(item, Mapping):
            warn(f"coingecko: skipping non-object item in /coins/markets payload: {item!r:.100}")
            continue
        cg_id = item.get("id")
        coin = by_cg_id.get(cg_id)  # type: ignore[arg-type]
        if coin is None:
            warn(f"coingecko: skipping unknown id {cg_id!r} (not among the requested coins)")
            continue
        price = _num(item.get("current_price"))
        if price is None:
            warn(f"coingecko: skipping {coin.coin_id}: current_price is {item.get('current_price')!r}")
            continue
        last_updated = parse_last_updated(item.get("last_updated"))
        if last_updated is None:
            warn(f"coingecko: skipping {coin.coin_id}: last_updated is {item.get('last_updated')!r}")
            continue
        symbol = item.get("symbol")
        symbol = symbol.lower() if isinstance(symbol, str) and symbol else coin.symbol
        ticks.append(
            make_tick(
                source=SOURCE,
                coin_id=coin.coin_id,
                symbol=symbol,
                price_usd=price,
                last_updated_at=last_updated,
                market_cap_usd=_num(item.get("market_cap")),
                volume_24h_usd=_num(item.get("total_volume")),
                change_24h_pct=_num(item.get("price_change_percentage_24h")),
                change_7d_pct=_num(item.get("price_change_percentage_7d_in_currency")),
                ingestion_timestamp=ingestion_time,
            )
        )
    return ticks


def filter_changed(ticks: Iterable[dict], last_seen: dict[str, str]) -> tuple[list[dict], int]:
    """Keep only ticks whose `last_updated_at` is newer than the last one sent for that coin.

    Returns (fresh ticks, number suppressed). "Newer", not merely "different": CoinGecko's
    edge caches can briefly serve an older snapshot, and re-sending it would duplicate an
    already-sent (coin_id, last_updated_at). `last_seen` is NOT updated here; the caller
    commits it only after Kafka took the ticks. Timestamps are compared as datetimes, not as
    text: "...:00Z" sorts after "...:00.123Z" as a string.
    """
    fresh: list[dict] = []
    suppressed = 0
    for tick in ticks:
        prev = last_seen.get(tick["coin_id"])
        if prev is not None:
            prev_ts = parse_last_updated(prev)
            cur_ts = parse_last_updated(tick["last_updated_at"])
            if prev_ts is not None and cur_ts is not None and cur_ts <= prev_ts:
                suppressed += 1
                continue
        fresh.append(tick)
    return fresh, suppressed


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
            when = when.replace(tzinfo=timezone.utc)
        now = now or datetime.now(timezone.utc)
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

    def __enter__(self) -> "CoinGeckoClient":
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


# --------------------------------------------------------------------------------------------
# Polling loop
# --------------------------------------------------------------------------------------------


def run_coingecko(
    kafka: KafkaResource,
    coin_ids: list[str],
    interval_s: float = 60.0,
    base_url: str = DEFAULT_BASE_URL,
    api_key: str | None = None,
    max_polls: int | None = None,
    stop_event: threading.Event | None = None,
    log: LogFn = print,
    *,
    pro: bool = False,
    api_key_header: str | None = None,
    timeout_s: float = 10.0,
    client: CoinGeckoClient | None = None,
) -> dict:
    """Poll CoinGecko every `interval_s` and write new ticks to the raw topic until stopped.

    Runs until `max_polls` polls were made or `stop_event` is set (forever otherwise). Polls are
    scheduled at a fixed rate from the start of each poll. A poll that fails after its retries
    is logged, counted in `errors`, and the loop carries on: an outage of CoinGecko must not
    stop the producer. A rejected request (e.g. 401 bad key) and Kafka delivery failures are
    raised, since waiting will not fix them. Pass `client` to control retry/backoff settings.

    Returns counters: polls, ticks_sent, skipped_unchanged, retries, errors.
    """
    coins = coins_for(coin_ids)
    cg_ids = [c.coingecko_id for c in coins]
    stop = stop_event or threading.Event()
    owns_client = client is None
    if client is None:
        client = CoinGeckoClient(
            base_url,
            api_key,
            pro=pro,
            api_key_header=api_key_header,
            timeout_s=timeout_s,
            sleep=stop.wait,  # backoff ends early when asked to stop
            stop_event=stop,
        )
    retries_before = client.retries
    counters = {"polls": 0, "ticks_sent": 0, "skipped_unchanged": 0, "retries": 0, "errors": 0}
    last_seen: dict[str, str] = {}
    producer = TickProducer(kafka)
    try:
        while not stop.is_set() and (max_polls is None or counters["polls"] < max_polls):
            started = time.monotonic()
            counters["polls"] += 1
            wait_at_least = 0.0
            try:
                payload = client.fetch_markets(cg_ids)
            except CoinGeckoUnavailable as exc:
                counters["errors"] += 1
                log(f"coingecko: poll {counters['polls']} failed, will try again next poll: {exc}")
                wait_at_least = exc.retry_after or 0.0
            else:
                ticks = map_markets(
                    payload, coins, datetime.now(timezone.utc), warn=lambda m: log(f"WARNING {m}")
                )
                fresh, unchanged = filter_changed(ticks, last_seen)
                for tick in fresh:
                    producer.send(tick)
                producer.flush(timeout_s=max(10.0, kafka.timeout_s * 3))
                for tick in fresh:
                    last_seen[tick["coin_id"]] = tick["last_updated_at"]
                counters["ticks_sent"] += len(fresh)
                counters["skipped_unchanged"] += unchanged
                log(
                    f"coingecko: poll {counters['polls']}: {len(fresh)} tick(s) sent to "
                    f"{producer.topic}, {unchanged} unchanged, {len(payload) - len(ticks)} skipped"
                )
            counters["retries"] = client.retries - retries_before
            if max_polls is not None and counters["polls"] >= max_polls:
                break
            remaining = max(interval_s - (time.monotonic() - started), wait_at_least)
            if remaining > 0:
                stop.wait(remaining)
    finally:
        counters["retries"] = client.retries - retries_before
        if owns_client:
            client.close()
    return counters
