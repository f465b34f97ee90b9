"""CoinGecko poller: mapping the /coins/markets payload to contract ticks, and end to end into
Kafka (the HTTP client's request shape and retries: test_coingecko_client.py).

HTTP goes to a local pytest-httpserver, never the internet; Kafka is the session's embedded
broker.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from datetime import UTC, datetime

import pytest
from werkzeug import Response

from crypto_assets.kafka.tick_contract import coins_for
from crypto_assets.producers.coingecko import filter_changed, map_markets, run_coingecko
from crypto_assets.producers.coingecko_client import (
    CoinGeckoRequestError,
    parse_retry_after,
)
from crypto_assets_tests.coingecko_helpers import (
    COIN_IDS,
    INGESTED,
    MARKETS,
    _item,
    assert_contract,
    fast_client,
    realistic_payload,
    scripted,
)
from crypto_assets_tests.topic_helpers import read_topic, watermarks

# --------------------------------------------------------------------------------------------
# Pure mapping
# --------------------------------------------------------------------------------------------


def test_map_markets_realistic_response():
    ticks = map_markets(realistic_payload(), coins_for(COIN_IDS), INGESTED)
    assert [t["coin_id"] for t in ticks] == ["bitcoin", "ethereum", "avalanche"]
    for t in ticks:
        assert_contract(t)
    btc, eth, avax = ticks
    assert btc == {
        "schema_version": 1,
        "source": "coingecko",
        "coin_id": "bitcoin",
        "symbol": "btc",  # lowercased
        "price_usd": 43521.87,
        "market_cap_usd": 854123456789.0,
        "volume_24h_usd": 28456789012.0,
        "change_24h_pct": 2.34,
        "change_7d_pct": -1.23,
        "last_updated_at": "2025-12-20T15:30:00.123Z",
        "ingestion_timestamp": "2025-12-20T15:30:05Z",
    }
    assert eth["change_24h_pct"] == -0.51 and eth["change_7d_pct"] == 4.2
    assert eth["last_updated_at"] == "2025-12-20T15:29:58Z"
    # avalanche-2 -> our id, optional nulls pass through as nulls
    assert avax["coin_id"] == "avalanche" and avax["symbol"] == "avax"
    assert avax["price_usd"] == 15.12
    assert avax["market_cap_usd"] is None
    assert avax["volume_24h_usd"] is None
    assert avax["change_24h_pct"] is None
    assert avax["change_7d_pct"] is None
    json.dumps(ticks)  # JSON-serialisable as-is


def test_map_markets_skip_rules_warn_and_keep_the_rest():
    good = _item("bitcoin", "btc", "Bitcoin", 43521.87, "2025-12-20T15:30:00.000Z")
    null_price = _item("ethereum", "eth", "Ethereum", None, "2025-12-20T15:30:00.000Z")
    missing_price = _item("solana", "sol", "Solana", 1.0, "2025-12-20T15:30:00.000Z")
    del missing_price["current_price"]
    null_updated = _item("cardano", "ada", "Cardano", 0.45, None)
    missing_updated = _item("chainlink", "link", "Chainlink", 14.0, "x")
    del missing_updated["last_updated"]
    bad_updated = _item("polkadot", "dot", "Polkadot", 2.5, "not a date")
    unknown = _item("dogecoin", "doge", "Dogecoin", 0.1, "2025-12-20T15:30:00.000Z")
    payload = [null_price, missing_price, good, null_updated, missing_updated, bad_updated, unknown]
    warnings: list[str] = []
    ticks = map_markets(
        payload,
        coins_for(["bitcoin", "ethereum", "solana", "cardano", "chainlink", "polkadot"]),
        INGESTED,
        warn=warnings.append,
    )
    assert [t["coin_id"] for t in ticks] == ["bitcoin"]
    assert len(warnings) == 6
    joined = "\n".join(warnings)
    for coin in ("ethereum", "solana", "cardano", "chainlink", "polkadot", "dogecoin"):
        assert coin in joined
    assert "current_price" in joined and "last_updated" in joined and "unknown id" in joined


def test_map_markets_warns_through_logging_by_default(caplog):
    item = _item("bitcoin", "btc", "Bitcoin", None, "2025-12-20T15:30:00.000Z")
    with caplog.at_level("WARNING", logger="crypto_assets.producers.coingecko"):
        assert map_markets([item], coins_for(["bitcoin"]), INGESTED) == []
    assert "current_price" in caplog.text


def test_filter_changed_only_newer_ticks():
    ticks = map_markets(realistic_payload(), coins_for(COIN_IDS), INGESTED)
    last_seen = {t["coin_id"]: t["last_updated_at"] for t in ticks}
    fresh, suppressed = filter_changed(ticks, last_seen)
    assert fresh == [] and suppressed == 3
    newer = map_markets(
        realistic_payload(btc_updated="2025-12-20T15:31:00Z"), coins_for(COIN_IDS), INGESTED
    )
    fresh, suppressed = filter_changed(newer, last_seen)
    assert [t["coin_id"] for t in fresh] == ["bitcoin"] and suppressed == 2
    # An older snapshot (stale edge cache) is not re-sent; "...:00Z" vs "...:00.123Z" compare as time.
    older = map_markets(
        realistic_payload(btc_updated="2025-12-20T15:30:00Z"), coins_for(COIN_IDS), INGESTED
    )
    fresh, _ = filter_changed(older, last_seen)
    assert fresh == []


def test_parse_retry_after_seconds_and_http_date():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = datetime(2025, 12, 20, 15, 30, 0, tzinfo=UTC)
    assert parse_retry_after("Sat, 20 Dec 2025 15:30:30 GMT", now=now) == 30.0
    assert parse_retry_after("Sat, 20 Dec 2025 15:29:00 GMT", now=now) == 0.0


# --------------------------------------------------------------------------------------------
# End to end: local HTTP server -> run_coingecko -> embedded Kafka
# --------------------------------------------------------------------------------------------


def test_run_coingecko_end_to_end_suppresses_unchanged(httpserver, kafka):
    httpserver.expect_request(MARKETS).respond_with_json(realistic_payload())
    logs: list[str] = []
    counters = run_coingecko(
        kafka,
        COIN_IDS,
        interval_s=0,
        base_url=httpserver.url_for("/api/v3"),
        max_polls=2,
        log=logs.append,
    )
    assert counters == {
        "polls": 2,
        "ticks_sent": 3,
        "skipped_unchanged": 3,
        "retries": 0,
        "errors": 0,
    }
    assert len(httpserver.log) == 2
    for req, _ in httpserver.log:
        assert req.args["vs_currency"] == "usd"
        assert req.args["ids"] == "bitcoin,ethereum,avalanche-2"
    assert len(watermarks(kafka.bootstrap(), kafka.raw_topic)) == 4
    msgs = read_topic(kafka.bootstrap(), kafka.raw_topic, whole=True)
    assert len(msgs) == 3  # the second poll, same last_updated, added nothing
    by_coin = {}
    for m in msgs:
        tick = json.loads(m.value or b"")
        assert_contract(tick)
        assert m.key == tick["coin_id"].encode()
        by_coin[tick["coin_id"]] = tick
    assert set(by_coin) == {"bitcoin", "ethereum", "avalanche"}
    assert by_coin["avalanche"]["market_cap_usd"] is None
    assert by_coin["bitcoin"]["last_updated_at"] == "2025-12-20T15:30:00.123Z"
    assert any("3 tick(s) sent" in line for line in logs)
    assert any("0 tick(s) sent" in line and "3 unchanged" in line for line in logs)


def test_run_coingecko_survives_failed_poll_and_sends_only_changes(httpserver, kafka):
    payload2 = realistic_payload()
    payload3 = copy.deepcopy(payload2)
    payload3[0]["last_updated"] = "2025-12-20T15:31:00.456Z"
    payload3[0]["current_price"] = 43600.0
    payload3.append(_item("dogecoin", "doge", "Dogecoin", 0.1, "2025-12-20T15:31:00Z"))

    def json_resp(p):
        return Response(json.dumps(p), status=200, content_type="application/json")

    # poll 1: both attempts 503 (poll fails, loop continues); poll 2: data; poll 3: btc moved.
    scripted(
        httpserver,
        Response("", status=503),
        Response("", status=503),
        json_resp(payload2),
        json_resp(payload3),
    )
    sleeps: list[float] = []
    client = fast_client(httpserver.url_for("/api/v3"), sleeps, max_attempts=2)
    logs: list[str] = []
    counters = run_coingecko(
        kafka, COIN_IDS, interval_s=0, max_polls=3, log=logs.append, client=client
    )
    assert counters == {
        "polls": 3,
        "ticks_sent": 4,
        "skipped_unchanged": 2,
        "retries": 1,
        "errors": 1,
    }
    assert any("poll 1 failed" in line and "503" in line for line in logs)
    assert any("WARNING" in line and "dogecoin" in line for line in logs)
    assert len(watermarks(kafka.bootstrap(), kafka.raw_topic)) == 4
    ticks = [json.loads(m.value or b"") for m in read_topic(kafka.bootstrap(), kafka.raw_topic, whole=True)]
    btc = sorted(t["last_updated_at"] for t in ticks if t["coin_id"] == "bitcoin")
    assert btc == ["2025-12-20T15:30:00.123Z", "2025-12-20T15:31:00.456Z"]
    assert len(ticks) == 4


def test_run_coingecko_raises_on_rejected_key(httpserver, kafka):
    httpserver.expect_request(MARKETS).respond_with_data("unauthorized", status=401)
    with pytest.raises(CoinGeckoRequestError):
        run_coingecko(
            kafka,
            COIN_IDS,
            interval_s=0,
            base_url=httpserver.url_for("/api/v3"),
            api_key="bad",
            max_polls=5,
            log=lambda _m: None,
        )
    assert len(httpserver.log) == 1


def test_run_coingecko_stops_on_event(httpserver, kafka):
    httpserver.expect_request(MARKETS).respond_with_json(realistic_payload())
    stop = threading.Event()
    result: dict = {}

    def target() -> None:
        result.update(
            run_coingecko(
                kafka,
                COIN_IDS,
                interval_s=3600.0,
                base_url=httpserver.url_for("/api/v3"),
                stop_event=stop,
                log=lambda _m: None,
            )
        )

    t = threading.Thread(target=target)
    t.start()
    deadline = time.monotonic() + 30
    while not httpserver.log and time.monotonic() < deadline:
        time.sleep(0.02)
    stop.set()
    # the next poll is an hour away: the stop ends that wait at once
    t.join(30)
    assert not t.is_alive()
    assert len(httpserver.log) == 1
    assert result["polls"] == 1 and result["ticks_sent"] == 3
    assert len(watermarks(kafka.bootstrap(), kafka.raw_topic)) == 4
    ticks = [json.loads(m.value or b"") for m in read_topic(kafka.bootstrap(), kafka.raw_topic, whole=True)]
    assert sorted(t["coin_id"] for t in ticks) == ["avalanche", "bitcoin", "ethereum"]
