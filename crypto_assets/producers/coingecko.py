"""CoinGecko poller: `/coins/markets` -> contract ticks on `crypto_raw`.

A poll that still fails after the client's retries (`coingecko_client.py`) is logged and skipped
rather than ending the loop. CoinGecko refreshes a coin roughly once a minute, so ticks whose
`last_updated` has not moved since the previous poll are suppressed instead of being sent again.

Split for testability: `map_markets` is pure (payload -> ticks), `CoinGeckoClient` (in
`coingecko_client.py`) does HTTP with retries (sleep/random injectable), `run_coingecko` is the
polling loop that writes Kafka.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from crypto_assets.kafka.producer import TickProducer
from crypto_assets.kafka.tick_contract import Coin, coins_for, make_tick
from crypto_assets.producers.coingecko_client import DEFAULT_BASE_URL, CoinGeckoClient, CoinGeckoUnavailable
from crypto_assets.resources.kafka import KafkaResource

SOURCE = "coingecko"

logger = logging.getLogger(__name__)

LogFn = Callable[[str], Any]


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
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


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
                    payload, coins, datetime.now(UTC), warn=lambda m: log(f"WARNING {m}")
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
