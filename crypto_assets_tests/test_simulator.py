"""The market simulator: realistic, learnable, deterministic paths; malformed-message injection;
end-to-end sends into the embedded broker."""

from __future__ import annotations

import json
import math
import threading
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pytest

from crypto_assets.durations import parse_duration
from crypto_assets.kafka.tick_contract import (
    COINS_BY_ID,
    DEFAULT_COIN_IDS,
    FIELDS,
    MAX_MESSAGE_BYTES,
    REQUIRED_FIELDS,
)
from crypto_assets.producers.simulator.bad_messages import BAD_KINDS, make_bad_message
from crypto_assets.producers.simulator.config import SimulatorConfig
from crypto_assets.producers.simulator.messages import generate_messages, generate_ticks
from crypto_assets.producers.simulator.prices import SUPPLY, simulate_paths
from crypto_assets.producers.simulator.run import run_simulator
from crypto_assets_tests.helpers import topic_size
from crypto_assets_tests.topic_helpers import read_topic

START = datetime(2025, 12, 1, tzinfo=UTC)
WEEK_MINUTES = 7 * 24 * 60


def consume_all(kafka, expected: int) -> list:
    """Every message on the raw topic (all partitions, from offset 0, up to the high watermarks:
    see topic_helpers.read_topic), which must be exactly `expected` messages."""
    messages = read_topic(kafka.bootstrap(), kafka.raw_topic, whole=True)
    assert len(messages) == expected, (len(messages), expected)
    return messages


def assert_contract(tick: dict) -> None:
    assert set(tick) == set(FIELDS)
    for name in REQUIRED_FIELDS:
        assert tick[name] is not None, name
    types = {"int": int, "float": float, "str": str}
    for name, kind in FIELDS.items():
        if tick[name] is not None:
            assert isinstance(tick[name], types[kind]), (name, tick[name])
    assert tick["price_usd"] > 0
    for name in ("last_updated_at", "ingestion_timestamp"):
        assert tick[name].endswith("Z")
        datetime.fromisoformat(tick[name])


@pytest.fixture(scope="module")
def week():
    """7 days of 1-minute paths for the 10 default coins (numpy arrays)."""
    return simulate_paths(SimulatorConfig(seed=11), WEEK_MINUTES, START, "60s")


def test_parse_duration():
    assert parse_duration("7d") == timedelta(days=7)
    assert parse_duration("12h") == timedelta(hours=12)
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("60s") == timedelta(seconds=60)
    assert parse_duration("90") == timedelta(seconds=90)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("250ms") == timedelta(milliseconds=250)
    assert parse_duration(timedelta(hours=1)) == timedelta(hours=1)
    for bad in ("", "abc", "7x", "5 days", "1h5"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_config_validation():
    with pytest.raises(ValueError):
        SimulatorConfig(bad_ratio=1.0)
    with pytest.raises(ValueError):
        SimulatorConfig(bad_ratio=-0.1)
    # strings are parsed in __post_init__ (documented), though the fields are annotated timedelta
    cfg = SimulatorConfig(history="2h", interval="30s")  # pyright: ignore[reportArgumentType]
    assert cfg.history == timedelta(hours=2) and cfg.interval == timedelta(seconds=30)


def test_same_seed_same_ticks_and_other_seed_differs():
    a = generate_ticks(SimulatorConfig(seed=5), 300, START, "60s")
    b = generate_ticks(SimulatorConfig(seed=5), 300, START, "60s")
    c = generate_ticks(SimulatorConfig(seed=6), 300, START, "60s")
    assert a == b
    assert [t["price_usd"] for t in a] != [t["price_usd"] for t in c]
    # batching only changes float rounding, not the paths
    d = generate_ticks(SimulatorConfig(seed=5), 300, START, "60s", batch_steps=37)
    assert [(t["coin_id"], t["last_updated_at"]) for t in a] == [
        (t["coin_id"], t["last_updated_at"]) for t in d
    ]
    np.testing.assert_allclose(
        [t["price_usd"] for t in a], [t["price_usd"] for t in d], rtol=1e-6
    )


def test_ticks_follow_contract_and_cover_the_window():
    ticks = generate_ticks(SimulatorConfig(seed=3), 2 * 24 * 60, START, timedelta(minutes=1))
    assert len(ticks) == 2 * 24 * 60 * 10
    by_coin: dict[str, list[dict]] = {}
    for t in ticks:
        assert_contract(t)
        assert t["source"] == "simulator"
        assert t["symbol"] == COINS_BY_ID[t["coin_id"]].symbol
        by_coin.setdefault(t["coin_id"], []).append(t)
    assert set(by_coin) == set(DEFAULT_COIN_IDS)
    for coin_id, rows in by_coin.items():
        times = [datetime.fromisoformat(r["last_updated_at"]) for r in rows]
        assert times[0] == START
        assert times[-1] == START + timedelta(minutes=2 * 24 * 60 - 1)
        assert {b - a for a, b in zip(times, times[1:], strict=False)} == {timedelta(minutes=1)}
        # change_24h is null for the first day, then present; change_7d never within 2 days
        assert all(r["change_24h_pct"] is None for r in rows[: 24 * 60])
        assert all(r["change_24h_pct"] is not None for r in rows[24 * 60 :])
        assert all(r["change_7d_pct"] is None for r in rows)
        day_later = rows[24 * 60]
        expected = 100 * (day_later["price_usd"] / rows[0]["price_usd"] - 1)
        assert day_later["change_24h_pct"] == pytest.approx(expected, abs=1e-3)
        # market cap = price x fixed supply
        for r in rows[::500]:
            assert r["market_cap_usd"] == pytest.approx(r["price_usd"] * SUPPLY[coin_id], rel=1e-5)


def test_price_levels_volume_and_correlation(week):
    ref = np.array([COINS_BY_ID[c].ref_price for c in DEFAULT_COIN_IDS])
    ref_volume = np.array([COINS_BY_ID[c].ref_volume for c in DEFAULT_COIN_IDS])
    assert week.price.shape == (WEEK_MINUTES, 10)
    assert (week.price > 0).all()
    assert np.isfinite(week.price).all()
    ratio = week.price / ref
    assert ratio.min() > 0.6 and ratio.max() < 1.6
    vol_ratio = np.median(week.volume_24h, axis=0) / ref_volume
    assert (vol_ratio > 0.6).all() and (vol_ratio < 1.6).all()

    # realised daily volatility in the right ballpark of annual_vol
    returns = np.diff(np.log(week.price), axis=0)
    annual = np.array([COINS_BY_ID[c].annual_vol for c in DEFAULT_COIN_IDS])
    daily = returns.std(axis=0) * math.sqrt(1440)
    assert (daily > 0.3 * annual / math.sqrt(365)).all()
    assert (daily < 2.0 * annual / math.sqrt(365)).all()

    corr = np.corrcoef(returns.T)
    mean_pair = (corr.sum() - 10) / 90
    assert mean_pair > 0.3, mean_pair


def test_volume_spikes_exist_and_last_a_few_ticks(week):
    v = week.volume_24h
    baseline = np.median(v, axis=0)
    spiking = v > 3 * baseline
    assert spiking.any(axis=0).sum() >= 8  # nearly every coin spikes within a week
    assert week.volume_spike[spiking].all()  # no >3x volume outside a spike
    # spikes are short runs of consecutive ticks
    runs = []
    for j in range(v.shape[1]):
        col = week.volume_spike[:, j].astype(int)
        edges = np.diff(np.concatenate([[0], col, [0]]))
        runs.extend((np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist())
    assert runs and np.median(runs) >= 3 and max(runs) <= 30
    assert week.jump.sum() > 20


def test_momentum_is_learnable(week):
    """Past 15-minute direction predicts the next 15 minutes better than a coin flip."""
    lp = np.log(week.price)
    returns = np.diff(lp, axis=0)
    lag1 = np.mean([np.corrcoef(returns[:-1, j], returns[1:, j])[0, 1] for j in range(10)])
    assert lag1 > 0.01, lag1
    past = lp[15:-15:15] - lp[:-30:15]
    future = lp[30::15] - lp[15:-15:15]
    agreement = float(np.mean(np.sign(past) == np.sign(future)))
    assert agreement > 0.54, agreement
    # and it is not just a trend: up and down moves are both common
    up = float(np.mean(future > 0))
    assert 0.35 < up < 0.65


def _valid_tick() -> dict:
    return generate_ticks(SimulatorConfig(seed=1, coins=["bitcoin"]), 1, START, 60)[0]


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_each_bad_kind_is_malformed_as_intended(kind):
    tick = _valid_tick()
    for seed in range(6):  # several variants per kind
        key, value = make_bad_message(kind, np.random.default_rng(seed), tick)
        assert isinstance(key, bytes) and isinstance(value, bytes)
        if kind == "invalid_json":
            value.decode("utf-8")
            with pytest.raises(ValueError):
                json.loads(value)
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(value)
            continue
        if kind == "non_utf8":
            with pytest.raises(UnicodeDecodeError):
                value.decode("utf-8")
            with pytest.raises(ValueError):
                json.loads(value)
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(value)
            continue
        if kind == "oversized":
            assert len(value) > MAX_MESSAGE_BYTES
        if kind in ("nan_price", "infinite_price"):
            word = b"NaN" if kind == "nan_price" else b"Infinity"
            assert b'"price_usd":' + word in value
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(value)  # strict JSON parsers reject it
            doc = json.loads(value)  # Python's lenient parser reads it
            assert not math.isfinite(doc["price_usd"])
            continue
        doc = json.loads(value)
        if kind == "not_object":
            assert not isinstance(doc, dict)
            continue
        assert isinstance(doc, dict)
        if kind == "missing_field":
            assert set(REQUIRED_FIELDS) - set(doc)
        elif kind == "string_price":
            assert isinstance(doc["price_usd"], str) and float(doc["price_usd"]) == tick["price_usd"]
        elif kind == "string_schema_version":
            assert doc["schema_version"] == "1"
        elif kind == "zero_price":
            assert doc["price_usd"] == 0
        elif kind == "negative_price":
            assert doc["price_usd"] < 0
        elif kind == "ancient_timestamp":
            assert doc["last_updated_at"][:4] in ("1970", "1900")
        elif kind == "future_timestamp":
            assert doc["last_updated_at"].startswith("2200")
        elif kind == "unknown_coin":
            assert doc["coin_id"] not in DEFAULT_COIN_IDS and key == doc["coin_id"].encode()
        elif kind == "duplicate":
            assert doc == tick and value == orjson.dumps(tick)
        if kind != "unknown_coin":
            assert key == b"bitcoin"


def test_make_bad_message_rejects_unknown_kind():
    with pytest.raises(ValueError):
        make_bad_message("gremlins", np.random.default_rng(0), _valid_tick())


def test_bad_ratio_mixes_every_kind_without_touching_valid_ticks():
    clean = generate_messages(SimulatorConfig(seed=9), 200, START, 60)
    noisy = generate_messages(SimulatorConfig(seed=9, bad_ratio=0.1), 200, START, 60)
    again = generate_messages(SimulatorConfig(seed=9, bad_ratio=0.1), 200, START, 60)
    assert noisy == again
    assert all(kind is None for kind, _, _ in clean)
    assert [m for m in noisy if m[0] is None] == clean  # same valid ticks, in order
    kinds = [kind for kind, _, _ in noisy if kind is not None]
    assert set(kinds) == set(BAD_KINDS)
    share = len(kinds) / len(noisy)
    assert 0.07 < share < 0.13, share
    # a duplicate is a byte-exact re-send of a valid message sent before it
    sent: set[bytes] = set()
    for kind, _, value in noisy:
        if kind is None:
            sent.add(value)
        elif kind == "duplicate":
            assert value in sent


def test_run_simulator_history_into_the_broker(kafka):
    config = SimulatorConfig(
        seed=4, history=timedelta(hours=3), interval=timedelta(minutes=1), bad_ratio=0.05
    )
    chunks: list[dict] = []
    logs: list[str] = []
    result = run_simulator(kafka, config, log=logs.append, chunk_size=500, chunk_callback=chunks.append)

    assert result["mode"] == "history"
    assert result["valid_sent"] == 180 * 10
    assert result["sent"] == result["valid_sent"] + result["bad_total"]
    assert result["bad_total"] == sum(result["bad_sent"].values()) > 0
    assert result["rate_msgs_s"] > 0 and logs
    # flushed in chunks of at most chunk_size, the callback seeing the running count
    assert len(chunks) == math.ceil(result["sent"] / 500) == result["chunks"]
    assert [c["sent"] for c in chunks[:-1]] == [500 * (i + 1) for i in range(len(chunks) - 1)]
    assert chunks[-1]["sent"] == result["sent"]

    messages = consume_all(kafka, result["sent"])
    assert len(messages) == result["sent"]
    valid = []
    for msg in messages:
        assert msg.value is not None  # no tombstones: every message has a body, bad ones too
        try:
            doc = orjson.loads(msg.value)
        except orjson.JSONDecodeError:
            continue
        # the valid ones are exactly those a strict contract check accepts
        if (
            isinstance(doc, dict)
            and set(doc) == set(FIELDS)
            and doc["coin_id"] in DEFAULT_COIN_IDS
            and doc["schema_version"] == 1
            and isinstance(doc["price_usd"], float)
            and doc["price_usd"] > 0
            and doc["last_updated_at"][:4] not in ("1900", "1970", "2200")
        ):
            assert msg.key == doc["coin_id"].encode()
            assert_contract(doc)
            valid.append(doc)
    unique = {(d["coin_id"], d["last_updated_at"]) for d in valid}
    assert len(unique) == 1800
    assert len(valid) == 1800 + result["bad_sent"]["duplicate"]
    # the window ends now, one tick per coin per minute
    last = max(datetime.fromisoformat(d["last_updated_at"]) for d in valid)
    first = min(datetime.fromisoformat(d["last_updated_at"]) for d in valid)
    now = datetime.now(UTC)
    assert timedelta(0) <= now - last < timedelta(minutes=2)
    assert last - first == timedelta(minutes=179)
    assert result["first_event_time"] == first.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_run_simulator_live_rate(kafka):
    config = SimulatorConfig(seed=2, rate=1000, count=120, coins=["bitcoin", "ethereum", "solana"])
    before = datetime.now(UTC)
    result = run_simulator(kafka, config, log=lambda _: None)
    assert result["mode"] == "live" and result["sent"] == 120
    # paced per step (one tick per coin): the step starting at message k is not sent before
    # k / rate seconds (sleeps never end early), so the 40th step of 3 starts at >= 117 / 1000 s;
    # a lower bound only, however slow the machine
    assert result["elapsed_s"] >= 0.117
    messages = consume_all(kafka, 120)
    docs = [orjson.loads(m.value or b"") for m in messages]
    assert {d["coin_id"] for d in docs} == {"bitcoin", "ethereum", "solana"}
    for d in docs:
        assert_contract(d)
        assert datetime.fromisoformat(d["last_updated_at"]) >= before - timedelta(seconds=1)
    per_coin_times = [d["last_updated_at"] for d in docs if d["coin_id"] == "bitcoin"]
    assert len(set(per_coin_times)) == len(per_coin_times) == 40


def _run_in_thread(kafka, config, stop, **kw) -> tuple[threading.Thread, dict]:
    result: dict = {}
    t = threading.Thread(target=lambda: result.update(run_simulator(kafka, config, stop_event=stop,
                                                                     log=lambda _: None, **kw)))
    t.start()
    return t, result


def test_run_simulator_live_stops_on_event_before_the_next_message(kafka):
    """Unthrottled and unbounded, the run only ends because of the stop event: set when 50
    messages were flushed (the chunk callback), it ends the run before the next message; the
    one whose send triggered that flush is the last."""
    stop = threading.Event()

    def on_chunk(counters: dict) -> None:
        if counters["sent"] >= 50:
            stop.set()

    config = SimulatorConfig(seed=2, rate=0, coins=["bitcoin"], bad_ratio=0.0)
    t, result = _run_in_thread(kafka, config, stop, chunk_size=25, chunk_callback=on_chunk)
    t.join(60)
    assert not t.is_alive(), "the stop event did not end the live run"
    assert result["mode"] == "live" and result["sent"] == 51 and result["valid_sent"] == 51
    docs = [orjson.loads(m.value or b"") for m in consume_all(kafka, 51)]
    assert {d["coin_id"] for d in docs} == {"bitcoin"}
    assert len({d["last_updated_at"] for d in docs}) == 51


def test_run_simulator_stop_ends_a_pacing_wait(kafka):
    """At 0.01 msg/s the second message is due 100 s after the first: a stop set once the first
    is on the topic ends the wait at once (the run is joined within 30 s, far below 100 s)."""
    stop = threading.Event()
    config = SimulatorConfig(seed=2, rate=0.01, coins=["bitcoin"], bad_ratio=0.0)
    t, result = _run_in_thread(kafka, config, stop)
    try:
        deadline = time.monotonic() + 30
        while topic_size(kafka) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
    t.join(30)
    assert not t.is_alive(), "the stop event did not end the pacing wait"
    assert result["sent"] == 1
    (msg,) = consume_all(kafka, 1)
    assert orjson.loads(msg.value or b"")["coin_id"] == "bitcoin"
