"""Replay an OHLCV / price file (CSV or Parquet) onto `crypto_raw` as contract ticks.

The accepted columns and how rows are normalised are in `replay_reader.py`.

Each valid row becomes one tick with source "replay", last_updated_at = the row's timestamp
(shifted so the last row is "now" when `shift_to_now=True`) and ingestion_timestamp = the
time it is sent. Rows go out ordered by timestamp (file order among equal timestamps); before
each new timestamp the replay waits (delta t / speed), minus the time spent sending since the
previous wait; speed 0 or inf sends as fast as the broker takes them. Rows whose timestamp
cannot be parsed, or whose price is missing, not a number or not > 0, or whose coin is empty
are counted under `invalid` in the result and never sent.

`resources/sample_data/ohlcv_sample.csv` (10 coins x 36 hourly bars, simulated; timestamp = bar
close time) is a small file to try it with.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import polars as pl

from crypto_assets.kafka.tick_contract import SCHEMA_VERSION, iso_utc
from crypto_assets.producers.replay_reader import INVALID_REASONS, load_replay_frame

if TYPE_CHECKING:
    from crypto_assets.resources.kafka import KafkaResource

SOURCE = "replay"


def _iso_expr(col: str) -> pl.Expr:
    ts = pl.col(col)
    return (
        pl.when(ts.dt.microsecond() == 0)
        .then(ts.dt.strftime("%Y-%m-%dT%H:%M:%SZ"))
        .otherwise(ts.dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ"))
    )


def run_replay(
    kafka: KafkaResource,
    path: str | Path,
    speed: float = 1.0,
    shift_to_now: bool = False,
    limit: int | None = None,
    stop_event: threading.Event | None = None,
    sleep: Callable[[float], Any] = time.sleep,
    log: Callable[[str], Any] = print,
    *,
    chunk_size: int = 20_000,
    chunk_callback: Callable[[dict], None] | None = None,
) -> dict:
    """Send the file's valid rows to `kafka.raw_topic` as ticks (key = coin_id); returns counters.

    speed: N x real time (the wait before a new timestamp is delta t / speed); 0 or inf = no waits.
    shift_to_now: move the whole series so its last row's event time is now (whole seconds).
    limit: send at most this many valid rows (the earliest ones).
    sleep: the wait function (injectable for tests); with the default and a stop_event, waits
    end early when the event is set.
    chunk_size / chunk_callback: the producer is flushed every chunk_size messages and
    chunk_callback(counters) called, so a caller can drain a broker with small retention (the
    embedded broker keeps ~5 MB per partition).

    Returns {"path", "rows", "sent", "invalid": {reason: n}, "invalid_total", "skipped_limit",
    "coins": {coin_id: n}, "first_event_time", "last_event_time", "shifted_by_s", "speed",
    "slept_s", "elapsed_s", "rate_msgs_s", "stopped", "topic"}.
    """
    from crypto_assets.kafka.producer import TickProducer

    if speed is None or speed < 0 or (isinstance(speed, float) and math.isnan(speed)):
        raise ValueError(f"speed must be >= 0 (0 or inf = as fast as possible), got {speed}")
    pace = 0 < speed < math.inf
    frame = load_replay_frame(path)
    invalid = frame.filter(pl.col("invalid_reason").is_not_null())
    valid = frame.filter(pl.col("invalid_reason").is_null())
    counts = dict(invalid.group_by("invalid_reason").len().iter_rows())
    counters: dict[str, Any] = {
        "path": str(path),
        "rows": frame.height,
        "sent": 0,
        "invalid": {r: int(counts.get(r, 0)) for r in INVALID_REASONS},
        "invalid_total": invalid.height,
        "skipped_limit": 0,
        "coins": {},
        "first_event_time": None,
        "last_event_time": None,
        "shifted_by_s": 0.0,
        "speed": speed,
        "slept_s": 0.0,
        "elapsed_s": 0.0,
        "rate_msgs_s": 0.0,
        "stopped": False,
        "topic": kafka.raw_topic,
        "chunks": 0,
    }
    if invalid.height:
        examples = invalid.head(3).select("row", "invalid_reason").rows()
        log(f"replay: {invalid.height} invalid row(s) skipped {counters['invalid']} e.g. {examples}")
    if limit is not None and valid.height > limit:
        counters["skipped_limit"] = valid.height - limit
        valid = valid.head(limit)
    if shift_to_now and valid.height:
        now = datetime.now(UTC).replace(microsecond=0)
        shift = now - cast(datetime, valid["timestamp"].max())
        counters["shifted_by_s"] = shift.total_seconds()
        valid = valid.with_columns(pl.col("timestamp") + shift)

    rows = valid.select(
        (pl.col("timestamp").dt.epoch("us") / 1e6).alias("t"),
        _iso_expr("timestamp").alias("iso"),
        "coin_id",
        "symbol",
        "price_usd",
        "market_cap_usd",
        "volume_24h_usd",
        "change_24h_pct",
        "change_7d_pct",
    ).rows()
    log(
        f"replay: {len(rows)} ticks from {path} at "
        f"{'max speed' if not pace else f'{speed:g}x'} -> {kafka.raw_topic}"
    )

    producer = TickProducer(kafka)
    coins: dict[str, int] = {}
    wait_fn = sleep
    if stop_event is not None and sleep is time.sleep:
        wait_fn = stop_event.wait
    t0 = time.monotonic()
    mark = t0
    prev_t: float | None = None
    in_chunk = 0
    ingested = iso_utc(datetime.now(UTC))
    try:
        for i, (t, iso, coin_id, symbol, price, mcap, vol, c24, c7) in enumerate(rows):
            if stop_event is not None and stop_event.is_set():
                counters["stopped"] = True
                break
            if prev_t is not None and t > prev_t and pace:
                wait = (t - prev_t) / speed - (time.monotonic() - mark)
                if wait > 0:
                    counters["slept_s"] += wait
                    wait_fn(wait)
                    if stop_event is not None and stop_event.is_set():
                        counters["stopped"] = True
                        break
                mark = time.monotonic()
            if pace or i % 1000 == 0:
                ingested = iso_utc(datetime.now(UTC))
            prev_t = t
            if in_chunk >= chunk_size:
                producer.flush()
                in_chunk = 0
                counters["chunks"] += 1
                counters["coins"] = dict(coins)
                if chunk_callback is not None:
                    chunk_callback(dict(counters))
            producer.send(
                {
                    "schema_version": SCHEMA_VERSION,
                    "source": SOURCE,
                    "coin_id": coin_id,
                    "symbol": symbol,
                    "price_usd": price,
                    "market_cap_usd": mcap,
                    "volume_24h_usd": None if vol is None else round(vol, 2),
                    "change_24h_pct": c24,
                    "change_7d_pct": c7,
                    "last_updated_at": iso,
                    "ingestion_timestamp": ingested,
                }
            )
            in_chunk += 1
            counters["sent"] += 1
            coins[coin_id] = coins.get(coin_id, 0) + 1
            if counters["first_event_time"] is None:
                counters["first_event_time"] = iso
            counters["last_event_time"] = iso
    except KeyboardInterrupt:
        counters["stopped"] = True
    finally:
        producer.flush()
    if in_chunk:
        counters["chunks"] += 1
    counters["coins"] = coins
    elapsed = time.monotonic() - t0
    counters["elapsed_s"] = round(elapsed, 3)
    counters["rate_msgs_s"] = round(counters["sent"] / elapsed, 1) if elapsed > 0 else 0.0
    counters["slept_s"] = round(counters["slept_s"], 3)
    if in_chunk and chunk_callback is not None:
        chunk_callback(dict(counters))
    log(
        f"replay: sent {counters['sent']} ticks ({counters['invalid_total']} invalid rows skipped) "
        f"in {counters['elapsed_s']:.2f}s"
    )
    return counters
