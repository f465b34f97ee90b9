"""Replaying an OHLCV/price file onto the raw topic: parsing, mapping, pacing, bad rows."""

from __future__ import annotations

import math
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import orjson
import polars as pl
import pytest

from crypto_assets.kafka.tick_contract import DEFAULT_COIN_IDS, FIELDS
from crypto_assets.producers.replay import run_replay
from crypto_assets.producers.replay_reader import load_replay_frame
from crypto_assets_tests.helpers import topic_size
from crypto_assets_tests.test_simulator import assert_contract, consume_all

SAMPLE = Path(__file__).resolve().parents[1] / "resources" / "sample_data" / "ohlcv_sample.csv"


def quiet(_msg: str) -> None:
    pass


def write(tmp_path: Path, text: str, name: str = "prices.csv") -> Path:
    path = tmp_path / name
    path.write_text(text.strip() + "\n")
    return path


def test_sample_file_loads_clean():
    frame = load_replay_frame(SAMPLE)
    assert frame.height == 360
    assert frame["invalid_reason"].null_count() == 360
    assert set(frame["coin_id"]) == set(DEFAULT_COIN_IDS)
    assert frame["timestamp"].n_unique() == 36
    assert frame["timestamp"].is_sorted()
    assert frame["timestamp"].dtype == pl.Datetime("us", "UTC")
    assert (frame["price_usd"] > 0).all()
    # hourly bars: 24h changes from the second day on, computed from the file's own closes
    btc = frame.filter(pl.col("coin_id") == "bitcoin")
    assert btc["change_24h_pct"][:24].null_count() == 24
    assert btc["change_24h_pct"][24:].null_count() == 0
    expected = (btc["price_usd"][30] / btc["price_usd"][6] - 1) * 100
    assert btc["change_24h_pct"][30] == pytest.approx(expected, abs=1e-3)
    # per-bar volume became a 24h volume of the right order of magnitude
    assert 1e10 < cast(float, btc["volume_24h_usd"].median()) < 1e11


def test_replay_sample_at_full_speed(kafka):
    raw = pl.read_csv(SAMPLE)
    result = run_replay(kafka, SAMPLE, speed=0, log=quiet)
    assert result["sent"] == 360 and result["invalid_total"] == 0
    assert result["slept_s"] == 0
    assert result["coins"] == {c: 36 for c in DEFAULT_COIN_IDS}
    assert result["first_event_time"] == raw["timestamp"][0]
    assert result["last_event_time"] == raw["timestamp"][-1]

    messages = consume_all(kafka, 360)
    assert len(messages) == 360
    docs = []
    for msg in messages:
        doc = orjson.loads(msg.value or b"")
        assert_contract(doc)
        assert msg.key == doc["coin_id"].encode()
        assert doc["source"] == "replay"
        docs.append(doc)
    expected = {
        (ts, sym.lower(), close)
        for ts, sym, close in raw.select("timestamp", "symbol", "close").iter_rows()
    }
    assert {(d["last_updated_at"], d["symbol"], d["price_usd"]) for d in docs} == expected
    eth = sorted((d for d in docs if d["coin_id"] == "ethereum"), key=lambda d: d["last_updated_at"])
    assert eth[0]["change_24h_pct"] is None and eth[-1]["change_24h_pct"] is not None
    assert all(d["market_cap_usd"] is None and d["volume_24h_usd"] > 0 for d in docs)


def test_pacing_waits_delta_t_over_speed(kafka, tmp_path):
    path = write(
        tmp_path,
        """
timestamp,coin_id,price,volume_24h_usd,market_cap_usd
2025-12-20T10:00:00Z,bitcoin,43000,2.5e10,8.5e11
2025-12-20T10:00:00Z,ethereum,3000,1.2e10,
2025-12-20T10:01:00Z,bitcoin,43010,2.5e10,8.5e11
2025-12-20T10:01:00Z,ethereum,3001,1.2e10,
2025-12-20T10:03:00Z,bitcoin,43020,2.6e10,8.6e11
2025-12-20T10:03:30Z,ethereum,3002,1.3e10,
""",
    )
    sleeps: list[float] = []
    # real time (speed 1) with an injected sleep that returns at once: one wait per new
    # timestamp, delta t minus the time spent sending since the previous wait, so each wait is at
    # most delta t and (sending 2 messages takes far less than 5 s) more than delta t - 5 s
    result = run_replay(kafka, path, speed=1, sleep=sleeps.append, log=quiet)
    assert result["sent"] == 6
    assert len(sleeps) == 3
    for waited, delta_t in zip(sleeps, [60.0, 120.0, 30.0], strict=True):
        assert delta_t - 5.0 < waited <= delta_t, (waited, delta_t)
    assert math.isclose(result["slept_s"], sum(sleeps), rel_tol=1e-3)
    docs = [orjson.loads(m.value or b"") for m in consume_all(kafka, 6)]
    btc = sorted((d for d in docs if d["coin_id"] == "bitcoin"), key=lambda d: d["last_updated_at"])
    assert [d["last_updated_at"] for d in btc] == [
        "2025-12-20T10:00:00Z",
        "2025-12-20T10:01:00Z",
        "2025-12-20T10:03:00Z",
    ]
    assert btc[0]["volume_24h_usd"] == 2.5e10 and btc[0]["market_cap_usd"] == 8.5e11
    assert btc[0]["symbol"] == "btc"


def test_bad_rows_are_counted_not_sent(kafka, tmp_path):
    path = write(
        tmp_path,
        """
timestamp,symbol,close,volume
2025-12-20T15:30:00Z,BTCUSDT,43000.5,100
1766244660,ETH,3000,50
1766244660000,eth-usd,3001,50
2025-12-20 15:32:00+01:00,SOL,140,10
not-a-time,BTC,43000,1
,BTC,43000,1
2025-12-20T15:33:00Z,BTC,,1
2025-12-20T15:33:00Z,BTC,n/a,1
2025-12-20T15:33:00Z,BTC,-5,1
2025-12-20T15:33:00Z,BTC,0,1
2025-12-20T15:33:00Z,,5,1
""",
    )
    frame = load_replay_frame(path)
    assert frame.filter(pl.col("invalid_reason").is_null())["coin_id"].to_list() == [
        "solana",  # 15:32+01:00 is 14:32 UTC
        "bitcoin",
        "ethereum",
        "ethereum",
    ]
    logs: list[str] = []
    result = run_replay(kafka, path, speed=0, log=logs.append)
    assert result["rows"] == 11 and result["sent"] == 4
    assert result["invalid"] == {"bad_timestamp": 2, "missing_coin": 1, "missing_price": 2, "bad_price": 2}
    assert result["invalid_total"] == 7
    assert any("invalid" in line for line in logs)
    docs = [orjson.loads(m.value or b"") for m in consume_all(kafka, 4)]
    assert len(docs) == 4
    assert sorted(d["last_updated_at"] for d in docs) == [
        "2025-12-20T14:32:00Z",
        "2025-12-20T15:30:00Z",
        "2025-12-20T15:31:00Z",
        "2025-12-20T15:31:00Z",
    ]


def test_shift_to_now_limit_and_parquet(kafka, tmp_path):
    raw = pl.read_csv(SAMPLE).with_columns(
        pl.col("timestamp").str.to_datetime(time_zone="UTC").dt.epoch("ms").alias("timestamp")
    )
    path = tmp_path / "sample.parquet"
    raw.write_parquet(path)
    frame = load_replay_frame(path)
    assert frame.height == 360 and frame["invalid_reason"].null_count() == 360

    before = datetime.now(UTC).replace(microsecond=0)
    result = run_replay(kafka, path, speed=0, shift_to_now=True, limit=100, log=quiet)
    assert result["sent"] == 100 and result["skipped_limit"] == 260
    last = datetime.fromisoformat(result["last_event_time"])
    assert before - timedelta(seconds=1) <= last <= datetime.now(UTC)
    docs = [orjson.loads(m.value or b"") for m in consume_all(kafka, 100)]
    assert len(docs) == 100
    assert set(docs[0]) == set(FIELDS)
    times = sorted({d["last_updated_at"] for d in docs})
    assert len(times) == 10  # the first 10 hourly bars, still an hour apart
    gaps = {
        datetime.fromisoformat(b) - datetime.fromisoformat(a) for a, b in zip(times, times[1:], strict=False)
    }
    assert gaps == {timedelta(hours=1)}


def test_stop_event_ends_a_paced_replay_at_the_next_wait(kafka):
    """With an injected sleep the replay checks the stop event after each wait: a stop set
    during the first wait (between the sample's first and second hourly bar) leaves exactly the
    first bar's 10 ticks sent."""
    stop = threading.Event()
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        stop.set()

    result = run_replay(kafka, SAMPLE, speed=3600 / 5, stop_event=stop, sleep=sleep, log=quiet)  # 5 s per bar
    assert result["stopped"] is True and result["sent"] == 10 and len(waits) == 1
    assert 0 < waits[0] <= 5.0
    first_bar = pl.read_csv(SAMPLE).head(10)
    docs = [orjson.loads(m.value or b"") for m in consume_all(kafka, 10)]
    assert {(d["last_updated_at"], d["symbol"]) for d in docs} == {
        (ts, sym.lower()) for ts, sym in first_bar.select("timestamp", "symbol").iter_rows()
    }


def test_stop_event_interrupts_a_real_wait(kafka):
    """With the default sleep a set stop event ends a wait early: at 100 s per bar the replay,
    stopped once the first bar is on the topic, returns within 30 s with that bar only."""
    stop = threading.Event()
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(
        run_replay(kafka, SAMPLE, speed=3600 / 100, stop_event=stop, log=quiet)))
    t.start()
    try:
        deadline = time.monotonic() + 30
        while topic_size(kafka) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
    t.join(30)
    assert not t.is_alive(), "the stop event did not end the wait"
    assert result["stopped"] is True and result["sent"] == 10
    assert len(consume_all(kafka, 10)) == 10


def test_missing_columns_and_bad_speed(tmp_path, kafka):
    path = write(tmp_path, "time,symbol\n2025-01-01,BTC")
    with pytest.raises(ValueError, match="close"):
        load_replay_frame(path)
    with pytest.raises(ValueError, match="unsupported"):
        load_replay_frame(tmp_path / "prices.json")
    with pytest.raises(ValueError):
        run_replay(kafka, SAMPLE, speed=-1, log=quiet)
