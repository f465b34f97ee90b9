"""The simulator's trade mode: Poisson arrivals, log-normal sizes, taker sides, exact decimals,
consecutive ids, the same price path as the ticks, determinism, malformed trades, and runs into
the embedded broker (history in `both` mode, live in `trades` mode)."""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import orjson
import pytest

from crypto_assets import rejections as R
from crypto_assets.ingest.pull import pull_raw_trades
from crypto_assets.kafka.tick_contract import COINS_BY_ID, MAX_MESSAGE_BYTES
from crypto_assets.kafka.trade_contract import (
    COIN_BY_BASE,
    SIDES,
    TRADE_FIELDS,
    TRADE_REQUIRED_FIELDS,
    TRADE_SCHEMA_VERSION,
    exact_decimal,
    split_product,
    trade_key,
)
from crypto_assets.producers.simulator.config import SimulatorConfig
from crypto_assets.producers.simulator.messages import generate_ticks, price_decimals
from crypto_assets.producers.simulator.prices import MarketSimulator
from crypto_assets.producers.simulator.run import run_simulator
from crypto_assets.producers.simulator.trade_bad_messages import TRADE_BAD_KINDS, make_bad_trade
from crypto_assets.producers.simulator.trades import SIZE_LOG_STD, TradeTape, generate_trades, product_for
from crypto_assets_tests.topic_helpers import read_topic

START = datetime(2025, 12, 1, tzinfo=UTC)
COINS = ["bitcoin", "ethereum", "cardano"]
DECIMAL_RE = re.compile(r"[0-9]{1,10}(\.[0-9]{1,8})?")  # what DECIMAL(18,8) holds exactly


def contract_problem(doc: object) -> str | None:
    """Why a decoded message is not a valid v1 trade of the simulator (None: valid)."""
    if not isinstance(doc, dict):
        return "not an object"
    if set(doc) != set(TRADE_FIELDS):
        return f"fields {sorted(set(doc) ^ set(TRADE_FIELDS))}"
    types = {"int": int, "str": str}
    for name in TRADE_REQUIRED_FIELDS:
        if not isinstance(doc[name], types[TRADE_FIELDS[name]]) or isinstance(doc[name], bool):
            return f"{name} type"
    if doc["schema_version"] != TRADE_SCHEMA_VERSION or doc["trade_id"] < 0:
        return "schema_version or trade_id"
    for name in ("price", "size"):
        if not DECIMAL_RE.fullmatch(doc[name]) or Decimal(exact_decimal(doc[name])) <= 0:
            return f"{name} {doc[name]!r}"
    if doc["side"] not in SIDES or doc["origin"] != "simulator" or doc["exchange"] != "simulator":
        return "side, origin or exchange"
    base, quote = split_product(doc["exchange"], doc["product"])
    if (base, quote) != (doc["base_currency"], doc["quote_currency"]) or COIN_BY_BASE.get(base) != doc["coin_id"]:
        return "product / coin"
    t = datetime.fromisoformat(doc["trade_time"])
    if not doc["trade_time"].endswith("Z") or not datetime(2009, 1, 3, tzinfo=UTC) < t < datetime(2100, 1, 1, tzinfo=UTC):
        return "trade_time"
    return None


def by_product(trades: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for t in trades:
        out[t["product"]].append(t)
    return out


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@pytest.fixture(scope="module")
def day():
    """A day of trades at 0.5/s per product on 60 s steps, and the ticks of the same path."""
    cfg = SimulatorConfig(coins=COINS, seed=5, mode="both", trade_rate=0.5)
    return cfg, generate_trades(cfg, 1441, START, "60s"), generate_ticks(cfg, 1441, START, "60s")


def test_config_validation():
    for bad in ({"mode": "candles"}, {"trade_rate": 0}, {"trade_imbalance": 1.0}, {"trade_size_usd": -1},
                {"trade_bad_ratio": 1.0}):
        with pytest.raises(ValueError):
            SimulatorConfig(**bad)  # type: ignore[arg-type]
    assert SimulatorConfig().mode == "ticks"  # the default stays what it was
    assert SimulatorConfig(trade_window="6h").trade_window == timedelta(hours=6)


def test_poisson_arrivals_at_the_configured_rate():
    """Without the volume modulation, counts per product are Poisson(rate * T) and the
    inter-arrival times exponential (mean 1/rate, coefficient of variation 1)."""
    rate, steps = 2.0, 721
    cfg = SimulatorConfig(coins=COINS, seed=9, mode="trades", trade_rate=rate, trade_follow_volume=False)
    trades = generate_trades(cfg, steps, START, "60s")
    span = (steps - 1) * 60.0
    for product, rows in by_product(trades).items():
        n = len(rows)
        assert abs(n - rate * span) < 4 * (rate * span) ** 0.5, (product, n)
        gaps = np.diff([epoch(r["trade_time"]) for r in rows])
        assert abs(gaps.mean() * rate - 1) < 0.03, product
        assert abs(gaps.std() / gaps.mean() - 1) < 0.05, product
        per_minute = np.bincount(((np.array([epoch(r["trade_time"]) for r in rows]) - START.timestamp()) // 60).astype(int))
        assert abs(per_minute.var() / per_minute.mean() - 1) < 0.15, product  # Poisson: variance = mean


def test_rate_follows_the_volume_path():
    """With the modulation the expected count is rate * dt * volume / ref_volume per step, and a
    step's trade count tracks that intensity."""
    coins = [COINS_BY_ID[c] for c in COINS]
    sim = MarketSimulator(coins, 3)
    tape = TradeTape(sim, SimulatorConfig(coins=COINS, seed=3, trade_rate=1.0))
    batch = sim.advance(START.timestamp() + 60.0 * np.arange(1441), 60.0)
    trades = tape.advance(batch)
    lam = 1.0 * 60.0 * batch.volume_24h[1:] / np.array([k.ref_volume for k in coins])
    assert abs(len(trades) - lam.sum()) < 4 * lam.sum() ** 0.5
    step = (trades.time_us // 60_000_000 - int(START.timestamp()) // 60).astype(int)
    counts = np.zeros_like(lam)
    np.add.at(counts, (step, trades.coin), 1)
    assert np.corrcoef(counts.ravel(), lam.ravel())[0, 1] > 0.3  # spikes (3.5-6x) bring more trades
    assert lam.max() > 3 * np.median(lam)


def test_trades_follow_the_contract_with_exact_decimals(day):
    cfg, trades, _ = day
    coins = cfg.resolved_coins()
    decimals = dict(zip([product_for(k) for k in coins], price_decimals(coins), strict=True))
    assert {t["product"] for t in trades} == {"BTC-USD", "ETH-USD", "ADA-USD"}
    for t in trades:
        assert contract_problem(t) is None, (contract_problem(t), t)
        # prices carry exactly the coin's tick decimals, sizes 8: the string IS the value
        assert len(t["price"].split(".")[1]) == decimals[t["product"]], t["price"]
        assert len(t["size"].split(".")[1]) == 8 and Decimal(t["size"]) >= Decimal("0.00000001")
        assert t["received_at"] == t["trade_time"]


def test_ids_consecutive_and_in_time_order(day):
    _, trades, _ = day
    send_times = [epoch(t["trade_time"]) for t in trades]
    assert send_times == sorted(send_times)  # sent in event-time order over all products
    for product, rows in by_product(trades).items():
        ids = [r["trade_id"] for r in rows]
        assert ids == list(range(ids[0], ids[0] + len(ids))), product
        assert ids[0] == int(START.timestamp() * 1000)  # first id: the first step in epoch ms
        times = [epoch(r["trade_time"]) for r in rows]
        assert times == sorted(times)


def test_sides_and_sizes():
    cfg = SimulatorConfig(coins=COINS, seed=2, mode="trades", trade_rate=2.0, trade_imbalance=0.4,
                          trade_size_usd=400.0)
    trades = generate_trades(cfg, 361, START, "60s")
    buys = np.mean([t["side"] == "buy" for t in trades])
    assert abs(buys - 0.7) < 4 * (0.21 / len(trades)) ** 0.5  # (1 + imbalance) / 2
    log_notional = np.log([float(t["price"]) * float(t["size"]) for t in trades])
    assert abs(np.exp(np.median(log_notional)) / 400.0 - 1) < 0.05  # log-normal around the median
    assert abs(log_notional.std() / SIZE_LOG_STD - 1) < 0.05


def test_trade_candles_agree_with_the_ticks(day):
    """Trades between two ticks bridge their prices: the last trade before a tick is within a
    few basis points of it, and 1-minute candles get real bodies and wicks."""
    _, trades, ticks = day
    tick_price = {(t["coin_id"], epoch(t["last_updated_at"])): t["price_usd"] for t in ticks}
    start = START.timestamp()
    last_in_minute: dict[tuple[str, float], float] = {}
    bars: dict[tuple[str, float], list[float]] = defaultdict(list)
    for t in trades:
        minute = start + (epoch(t["trade_time"]) - start) // 60 * 60
        last_in_minute[(t["coin_id"], minute + 60)] = float(t["price"])
        bars[(t["coin_id"], minute)].append(float(t["price"]))
    rel = np.array([abs(p / tick_price[k] - 1) for k, p in last_in_minute.items()])
    assert np.median(rel) < 4e-4 and np.quantile(rel, 0.99) < 3e-3
    ohlc = [(p[0], max(p), min(p), p[-1]) for p in bars.values() if len(p) >= 10]
    assert len(ohlc) > 1000
    assert np.mean([o != c for o, _, _, c in ohlc]) > 0.9  # bodies
    assert np.mean([h > max(o, c) and lo < min(o, c) for o, h, lo, c in ohlc]) > 0.5  # wicks on both sides


def test_deterministic_independent_of_batching_and_ticks_unchanged(day):
    cfg, trades, ticks = day
    again = generate_trades(cfg, 1441, START, "60s", batch_steps=97)
    assert [(t["product"], t["trade_id"], t["trade_time"], t["side"], t["size"]) for t in again] == [
        (t["product"], t["trade_id"], t["trade_time"], t["side"], t["size"]) for t in trades]
    # the bridge's float sums depend on the batch; a price may differ by at most one tick
    assert all(abs(Decimal(a["price"]) - Decimal(b["price"])) <= Decimal(10) ** -price_decimals(
        [COINS_BY_ID[a["coin_id"]]])[0] for a, b in zip(again, trades, strict=True))
    assert generate_trades(cfg, 1441, START, "60s")[:500] == trades[:500]
    other = generate_trades(SimulatorConfig(coins=COINS, seed=6, trade_rate=0.5), 61, START, "60s")
    assert [t["price"] for t in other[:50]] != [t["price"] for t in trades[:50]]
    # the trade streams never touch the path's: ticks are those of a ticks-only config
    assert generate_ticks(SimulatorConfig(coins=COINS, seed=5), 1441, START, "60s") == ticks


def test_trade_window_limits_history_trades():
    cfg = SimulatorConfig(coins=COINS, seed=1, mode="both", trade_window="30m")
    trades = generate_trades(cfg, 181, START, "60s")
    first = min(epoch(t["trade_time"]) for t in trades)
    assert START.timestamp() + 150 * 60 <= first < START.timestamp() + 152 * 60


def _valid_trade() -> dict:
    return generate_trades(SimulatorConfig(coins=["bitcoin"], seed=1, trade_rate=1.0), 3, START, "60s")[0]


@pytest.mark.parametrize("kind", TRADE_BAD_KINDS)
def test_each_bad_trade_kind_is_malformed(kind):
    rng = np.random.default_rng(0)
    valid = _valid_trade()
    assert contract_problem(valid) is None
    key, value = make_bad_trade(kind, rng, valid)
    assert key == trade_key("simulator", "BTC-USD").encode()
    if kind == "duplicate":
        assert value == orjson.dumps(valid)
        return
    if kind == "oversized":
        assert len(value) > MAX_MESSAGE_BYTES
        return
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        assert kind in ("invalid_json", "non_utf8")
        return
    assert kind not in ("invalid_json", "non_utf8")
    assert contract_problem(doc) is not None, kind


def test_make_bad_trade_rejects_unknown_kind():
    with pytest.raises(ValueError, match="unknown bad trade kind"):
        make_bad_trade("nope", np.random.default_rng(0), _valid_trade())


def test_run_simulator_both_modes_into_the_broker(kafka):
    """History in `both` mode: ticks on the raw topic exactly as a ticks-only run sends them,
    trades (and 5 % malformed ones) on the trades topic, the valid ones exactly generate_trades'."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    cfg = SimulatorConfig(coins=COINS, seed=4, history="1h", interval="60s", start_time=start, mode="both",
                          trade_rate=0.5, trade_bad_ratio=0.05)
    chunks: list[dict] = []
    result = run_simulator(kafka, cfg, log=lambda _: None, chunk_size=500, chunk_callback=chunks.append)
    assert result["streams"] == "both" and result["valid_sent"] == 60 * 3
    assert result["sent"] == result["valid_sent"] + result["trades_sent"] + result["trade_bad_total"]
    assert result["trade_bad_total"] == sum(result["trade_bad_sent"].values()) > 0
    assert result["products"] == ["BTC-USD", "ETH-USD", "ADA-USD"]
    assert len(chunks) == result["chunks"] and all(c["sent"] % 500 == 0 for c in chunks[:-1])

    ticks = [orjson.loads(m.value or b"") for m in read_topic(kafka.bootstrap(), kafka.raw_topic, whole=True)]
    expected_ticks = generate_ticks(SimulatorConfig(coins=COINS, seed=4), 60, start, "60s")
    assert sorted((t["coin_id"], t["last_updated_at"], t["price_usd"]) for t in ticks) == sorted(
        (t["coin_id"], t["last_updated_at"], t["price_usd"]) for t in expected_ticks)

    records = read_topic(kafka.bootstrap(), kafka.trades_topic, whole=True)
    assert len(records) == result["trades_sent"] + result["trade_bad_total"]
    valid: list[dict] = []
    per_key: dict[str, list[int]] = defaultdict(list)
    for rec in records:
        doc = _decode(rec.value)
        if doc is not None and contract_problem(doc) is None:
            assert rec.text_key() == trade_key("simulator", doc["product"])
            valid.append(doc)
            per_key[rec.text_key()].append(doc["trade_id"])
    dupes = result["trade_bad_sent"]["duplicate"]
    assert len(valid) == result["trades_sent"] + dupes  # every other malformed kind fails the contract
    expected = generate_trades(cfg, 60, start, "60s")

    def key(t: dict) -> tuple[str, int]:
        return t["product"], t["trade_id"]

    unique = {key(t): {k: v for k, v in t.items() if k != "received_at"} for t in valid}
    assert sorted(unique.values(), key=key) == sorted(
        ({k: v for k, v in t.items() if k != "received_at"} for t in expected), key=key)
    # one partition per product: each product's trades arrive in id order (a duplicate re-sends an earlier id)
    for ids in per_key.values():
        firsts = list(dict.fromkeys(ids))
        assert firsts == sorted(firsts)


def _decode(value: bytes | None) -> dict | None:
    """The message as a dict, None when it is not a JSON object."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def test_run_simulator_live_trades(kafka):
    """Live `trades` mode: trades stamped at the wall clock, paced per one-second step."""
    cfg = SimulatorConfig(coins=["bitcoin", "ethereum"], seed=8, mode="trades", trade_rate=20.0, count=80)
    before = time.time()
    result = run_simulator(kafka, cfg, log=lambda _: None)
    took = time.time() - before
    assert result["mode"] == "live" and result["trades_sent"] == result["sent"] == 80 and result["valid_sent"] == 0
    # 80 trades at ~40/s over both products need about 2 s of steps: paced, not a burst
    assert 1.0 < took < 10.0, took
    docs = [orjson.loads(m.value or b"") for m in read_topic(kafka.bootstrap(), kafka.trades_topic, whole=True)]
    assert len(docs) == 80 and all(contract_problem(d) is None for d in docs)
    for product, rows in by_product(docs).items():
        ids = [r["trade_id"] for r in rows]
        assert ids == list(range(ids[0], ids[0] + len(ids))), product
    times = [epoch(d["trade_time"]) for d in docs]
    assert before - 1.0 <= min(times) and max(times) <= time.time()


# The bronze reason each malformed kind gets (crypto_assets.rejections; missing_field names its field).
EXPECTED_REASON = {
    "invalid_json": R.INVALID_JSON, "non_utf8": R.NOT_UTF8, "not_object": R.NOT_OBJECT,
    "schema_version": R.UNSUPPORTED_SCHEMA_VERSION, "negative_trade_id": R.INVALID_TRADE_ID,
    "float_price": R.WRONG_TYPE, "inexact_price": R.INVALID_PRICE, "zero_price": R.INVALID_PRICE,
    "negative_size": R.INVALID_SIZE, "invalid_side": R.INVALID_SIDE, "coin_mismatch": R.COIN_MISMATCH,
    "ancient_time": R.TIMESTAMP_TOO_OLD, "future_time": R.TIMESTAMP_IN_FUTURE, "oversized": R.OVERSIZED,
}


def test_simulated_trades_through_bronze(kafka, lakehouse):
    """What the demo does: a `both` history with malformed trades, pulled into raw_trades: every
    valid trade stored once with its exact values, no gap, each malformed one quarantined with its
    reason, the duplicates dropped and counted."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    cfg = SimulatorConfig(coins=COINS, seed=12, history="30m", interval="60s", start_time=start, mode="trades",
                          trade_rate=0.5, trade_bad_ratio=0.08)
    sent = run_simulator(kafka, cfg, log=lambda _: None)
    bad = {k: n for k, n in sent["trade_bad_sent"].items() if n}
    assert set(bad) == set(TRADE_BAD_KINDS)  # every kind shows up
    r = pull_raw_trades(kafka, lakehouse)
    assert r.messages == sent["sent"] and r.rows_written == sent["trades_sent"]
    assert r.extra["duplicates"] == bad["duplicate"] and r.extra["gaps_found"] == 0
    assert r.quarantined == sent["trade_bad_total"] - bad["duplicate"]
    with lakehouse.connect() as conn:
        reasons = Counter(dict(conn.sql("SELECT reason, count(*) FROM quarantine WHERE stage = 'raw_trades' "
                                        "GROUP BY 1").fetchall()))
        stored = conn.sql("SELECT product, trade_id, price, size, side FROM raw_trades").fetchall()
    expected = Counter()
    for kind, n in bad.items():
        if kind != "duplicate":
            expected[EXPECTED_REASON.get(kind, "missing")] += n
    missing = sum(n for reason, n in reasons.items() if reason.startswith(R.MISSING_PREFIX))
    assert missing == expected.pop("missing") and {k: v for k, v in reasons.items() if k in expected} == expected
    trades = generate_trades(cfg, 30, start, "60s")
    assert sorted(stored) == sorted(
        (t["product"], t["trade_id"], Decimal(t["price"]), Decimal(t["size"]), t["side"]) for t in trades)


def test_run_simulator_live_both(kafka):
    """Live `both` mode: each step sends the trades since the previous step, then one tick per
    coin stamped with the step's time; both streams come from one path and keep event-time order."""
    cfg = SimulatorConfig(coins=["bitcoin", "ethereum"], seed=8, mode="both", rate=20.0, trade_rate=5.0, count=120)
    before = time.time()
    result = run_simulator(kafka, cfg, log=lambda _: None)
    assert result["sent"] == 120 == result["valid_sent"] + result["trades_sent"]
    assert result["valid_sent"] > 20 and result["trades_sent"] > 10
    ticks = [orjson.loads(m.value or b"") for m in read_topic(kafka.bootstrap(), kafka.raw_topic, whole=True)]
    trades = [orjson.loads(m.value or b"") for m in read_topic(kafka.bootstrap(), kafka.trades_topic, whole=True)]
    assert len(ticks) == result["valid_sent"] and len(trades) == result["trades_sent"]
    tick_times = sorted({epoch(t["last_updated_at"]) for t in ticks})
    assert np.allclose(np.diff(tick_times), 0.1, atol=1e-3)  # one step = one tick per coin at 20 ticks/s
    assert before - 0.2 <= tick_times[0] and tick_times[-1] <= time.time() + 0.01
    assert all(contract_problem(t) is None for t in trades)
    assert max(epoch(t["trade_time"]) for t in trades) <= tick_times[-1]
    for product, rows in by_product(trades).items():
        ids = [r["trade_id"] for r in rows]
        assert ids == list(range(ids[0], ids[0] + len(ids))), product
