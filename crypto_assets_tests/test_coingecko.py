"""CoinGecko poller: mapping, retry/backoff, request shape, and end-to-end into Kafka.

HTTP goes to a local pytest-httpserver, never the internet; Kafka is the session's embedded
broker. Injected `sleep`/`random` keep the retry tests instant.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from werkzeug import Request, Response

from crypto_assets.kafka.tick_contract import FIELDS, REQUIRED_FIELDS, SCHEMA_VERSION, coins_for
from crypto_assets.producers.coingecko import filter_changed, map_markets, run_coingecko
from crypto_assets.producers.coingecko_client import (
    DEMO_KEY_HEADER,
    PRO_KEY_HEADER,
    CoinGeckoClient,
    CoinGeckoRequestError,
    CoinGeckoUnavailable,
    parse_retry_after,
)
from crypto_assets_tests import helpers

MARKETS = "/api/v3/coins/markets"
INGESTED = datetime(2025, 12, 20, 15, 30, 5, tzinfo=UTC)


def _item(cg_id: str, symbol: str, name: str, price, last_updated, **over) -> dict:
    """One /coins/markets row with CoinGecko's real field set (price_change_percentage=24h,7d)."""
    item = {
        "id": cg_id,
        "symbol": symbol,
        "name": name,
        "image": f"https://coin-images.coingecko.com/coins/images/1/large/{cg_id}.png?1696501400",
        "current_price": price,
        "market_cap": 854123456789,
        "market_cap_rank": 1,
        "fully_diluted_valuation": 914000000000,
        "total_volume": 28456789012,
        "high_24h": 44012.5,
        "low_24h": 42011.0,
        "price_change_24h": 995.12,
        "price_change_percentage_24h": 2.34,
        "market_cap_change_24h": 19876543210.0,
        "market_cap_change_percentage_24h": 2.38,
        "circulating_supply": 19600000.0,
        "total_supply": 21000000.0,
        "max_supply": 21000000.0,
        "ath": 126080,
        "ath_change_percentage": -65.5,
        "ath_date": "2025-10-06T18:57:42.558Z",
        "atl": 67.81,
        "atl_change_percentage": 64100.2,
        "atl_date": "2013-07-06T00:00:00.000Z",
        "roi": None,
        "last_updated": last_updated,
        "price_change_percentage_24h_in_currency": 2.34,
        "price_change_percentage_7d_in_currency": -1.23,
    }
    item.update(over)
    return item


def realistic_payload(btc_updated: str = "2025-12-20T15:30:00.123Z") -> list[dict]:
    return [
        _item("bitcoin", "BTC", "Bitcoin", 43521.87, btc_updated),
        _item(
            "ethereum",
            "eth",
            "Ethereum",
            3101.5,
            "2025-12-20T15:29:58.000Z",
            market_cap=373000000000,
            total_volume=18000000000,
            price_change_percentage_24h=-0.51,
            price_change_percentage_7d_in_currency=4.2,
            max_supply=None,
        ),
        # CoinGecko's id for Avalanche is avalanche-2; nulls where CoinGecko gives nulls.
        _item(
            "avalanche-2",
            "avax",
            "Avalanche",
            15.12,
            "2025-12-20T15:29:41.512Z",
            market_cap=None,
            fully_diluted_valuation=None,
            total_volume=None,
            price_change_percentage_24h=None,
            price_change_percentage_7d_in_currency=None,
            max_supply=None,
            total_supply=None,
        ),
    ]


COIN_IDS = ["bitcoin", "ethereum", "avalanche"]


def assert_contract(tick: dict) -> None:
    assert set(tick) == set(FIELDS)
    assert tick["schema_version"] == SCHEMA_VERSION
    assert tick["source"] == "coingecko"
    for name in REQUIRED_FIELDS:
        assert tick[name] is not None, name
    for name, kind in FIELDS.items():
        value = tick[name]
        if value is None:
            continue
        expected = {"int": int, "float": (int, float), "str": str}[kind]
        assert isinstance(value, expected) and not isinstance(value, bool), (name, value)
    for name in ("last_updated_at", "ingestion_timestamp"):
        assert tick[name].endswith("Z")
        datetime.fromisoformat(tick[name])


def fast_client(base_url: str, sleeps: list[float] | None = None, **kw) -> CoinGeckoClient:
    sleeps = [] if sleeps is None else sleeps
    kw.setdefault("random", lambda: 1.0)
    return CoinGeckoClient(base_url, sleep=sleeps.append, **kw)


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
# HTTP: request shape
# --------------------------------------------------------------------------------------------


def test_request_query_and_demo_key_header(httpserver):
    httpserver.expect_request(
        MARKETS,
        query_string={
            "vs_currency": "usd",
            "ids": "bitcoin,ethereum,avalanche-2",
            "price_change_percentage": "24h,7d",
            "per_page": "3",
            "page": "1",
        },
        headers={DEMO_KEY_HEADER: "CG-secret"},
    ).respond_with_json(realistic_payload())
    client = fast_client(httpserver.url_for("/api/v3"), api_key="CG-secret")
    ids = [c.coingecko_id for c in coins_for(COIN_IDS)]
    assert client.fetch_markets(ids) == realistic_payload()
    (req, _), = httpserver.log
    assert req.args["vs_currency"] == "usd"
    assert req.args["ids"].split(",") == ["bitcoin", "ethereum", "avalanche-2"]
    assert PRO_KEY_HEADER not in req.headers


@pytest.mark.parametrize(
    "kw, header",
    [({"pro": True}, PRO_KEY_HEADER), ({"api_key_header": "x-custom-key"}, "x-custom-key")],
)
def test_pro_and_custom_key_header(httpserver, kw, header):
    httpserver.expect_request(MARKETS, headers={header: "k"}).respond_with_json([])
    client = fast_client(httpserver.url_for("/api/v3"), api_key="k", **kw)
    assert client.fetch_markets(["bitcoin"]) == []
    (req, _), = httpserver.log
    assert DEMO_KEY_HEADER not in req.headers


def test_no_key_header_without_api_key(httpserver):
    httpserver.expect_request(MARKETS).respond_with_json([])
    fast_client(httpserver.url_for("/api/v3")).fetch_markets(["bitcoin"])
    (req, _), = httpserver.log
    assert DEMO_KEY_HEADER not in req.headers and PRO_KEY_HEADER not in req.headers


# --------------------------------------------------------------------------------------------
# HTTP: retries
# --------------------------------------------------------------------------------------------


def scripted(httpserver, *responses):
    """Serve the given Responses (or callables) in order; the last one repeats."""
    calls = {"n": 0}

    def handler(request: Request) -> Response:
        i = min(calls["n"], len(responses) - 1)
        calls["n"] += 1
        r = responses[i]
        return r if isinstance(r, Response) else r(request)

    httpserver.expect_request(MARKETS).respond_with_handler(handler)
    return calls


def ok() -> Response:
    return Response(json.dumps(realistic_payload()), status=200, content_type="application/json")


def test_429_retry_after_seconds_is_honoured(httpserver):
    calls = scripted(httpserver, Response("slow down", status=429, headers={"Retry-After": "7"}), ok())
    sleeps: list[float] = []
    client = fast_client(httpserver.url_for("/api/v3"), sleeps)
    assert len(client.fetch_markets(["bitcoin"])) == 3
    assert sleeps == [7.0]
    assert calls["n"] == 2 and client.retries == 1


def test_429_retry_after_http_date_is_honoured(httpserver):
    # 600 s ahead (whole seconds): the client waits the time left until then, i.e. at most
    # 600 s, and more than 570 s unless the request took half a minute
    when = (datetime.now(UTC) + timedelta(seconds=600)).replace(microsecond=0)
    date = format_datetime(when, usegmt=True)
    scripted(httpserver, Response("", status=429, headers={"Retry-After": date}), ok())
    sleeps: list[float] = []
    fast_client(httpserver.url_for("/api/v3"), sleeps, max_retry_after_s=900).fetch_markets(["bitcoin"])
    assert len(sleeps) == 1 and 570.0 < sleeps[0] <= 600.0, sleeps


def test_429_without_retry_after_backs_off(httpserver):
    scripted(httpserver, Response("", status=429), ok())
    sleeps: list[float] = []
    fast_client(httpserver.url_for("/api/v3"), sleeps, base_delay_s=0.5).fetch_markets(["bitcoin"])
    assert sleeps == [0.5]


def test_429_retry_after_too_long_gives_up_with_retry_after(httpserver):
    scripted(httpserver, Response("", status=429, headers={"Retry-After": "3600"}))
    sleeps: list[float] = []
    client = fast_client(httpserver.url_for("/api/v3"), sleeps, max_retry_after_s=60)
    with pytest.raises(CoinGeckoUnavailable, match="3600") as info:
        client.fetch_markets(["bitcoin"])
    assert info.value.retry_after == 3600.0 and sleeps == []


def test_5xx_exponential_backoff_capped(httpserver):
    calls = scripted(
        httpserver,
        Response("", status=500),
        Response("", status=502),
        Response("", status=503),
        Response("", status=503),
        ok(),
    )
    sleeps: list[float] = []
    client = fast_client(
        httpserver.url_for("/api/v3"), sleeps, max_attempts=5, base_delay_s=1.0, max_delay_s=5.0
    )
    assert len(client.fetch_markets(["bitcoin"])) == 3
    # random() == 1.0 shows the envelope: 1, 2, 4, then capped at max_delay_s
    assert sleeps == [1.0, 2.0, 4.0, 5.0]
    assert calls["n"] == 5 and client.retries == 4


def test_5xx_backoff_full_jitter(httpserver):
    scripted(httpserver, Response("", status=503), Response("", status=503), Response("", status=503), ok())
    draws = iter([0.5, 0.25, 0.0])
    sleeps: list[float] = []
    client = fast_client(
        httpserver.url_for("/api/v3"),
        sleeps,
        random=lambda: next(draws),
        base_delay_s=2.0,
        max_delay_s=6.0,
    )
    client.fetch_markets(["bitcoin"])
    # random() * min(max, base * 2**n): 0.5*2, 0.25*4, 0.0*6 (cap 6 < 8)
    assert sleeps == [1.0, 1.0, 0.0]


@pytest.fixture
def threaded_httpserver():
    """A server that answers the retry while the timed-out handler is still sleeping (the
    session `httpserver` is single-threaded and would queue it behind the slow one)."""
    from pytest_httpserver import HTTPServer

    server = HTTPServer(threaded=True)
    server.start()
    yield server
    server.clear()
    server.stop()


def test_timeout_is_retried(threaded_httpserver):
    """The first request's handler blocks until the test releases it: the client gives up on it
    after its timeout and its retry returns the data while that handler is still blocked."""
    release = threading.Event()
    answered = threading.Event()

    def slow(_request: Request) -> Response:
        release.wait(120.0)  # far beyond the 2 s client timeout: only the test ends it
        answered.set()
        return ok()

    calls = scripted(threaded_httpserver, slow, ok())
    sleeps: list[float] = []
    client = fast_client(
        threaded_httpserver.url_for("/api/v3"), sleeps, timeout_s=2.0, base_delay_s=0.01
    )
    try:
        assert len(client.fetch_markets(["bitcoin"])) == 3
        assert not answered.is_set()  # the data came from the retry, not the timed-out request
    finally:
        release.set()
    assert sleeps == [0.01] and calls["n"] == 2 and client.retries == 1


def test_connection_error_is_retried_then_exhausted():
    sleeps: list[float] = []  # port 1 (tcpmux): nothing listens there, connections are refused
    client = fast_client("http://127.0.0.1:1/api/v3", sleeps, max_attempts=3, timeout_s=1.0)
    with pytest.raises(CoinGeckoUnavailable, match="connection error") as info:
        client.fetch_markets(["bitcoin"])
    assert info.value.attempts == 3 and len(sleeps) == 2


def test_401_raises_without_retry(httpserver):
    calls = scripted(httpserver, Response('{"error":"invalid api key"}', status=401), ok())
    sleeps: list[float] = []
    client = fast_client(httpserver.url_for("/api/v3"), sleeps, api_key="bad")
    with pytest.raises(CoinGeckoRequestError, match="HTTP 401.*API key") as info:
        client.fetch_markets(["bitcoin"])
    assert info.value.status == 401
    assert calls["n"] == 1 and sleeps == [] and client.retries == 0


def test_exhausted_attempts_give_clear_error(httpserver):
    calls = scripted(httpserver, Response("", status=503))
    sleeps: list[float] = []
    client = fast_client(httpserver.url_for("/api/v3"), sleeps, max_attempts=3)
    with pytest.raises(CoinGeckoUnavailable, match=r"3 attempt\(s\).*HTTP 503") as info:
        client.fetch_markets(["bitcoin"])
    assert info.value.attempts == 3
    assert calls["n"] == 3 and len(sleeps) == 2


def test_non_list_payload_is_an_error(httpserver):
    httpserver.expect_request(MARKETS).respond_with_json({"status": {"error_code": 0}})
    with pytest.raises(CoinGeckoUnavailable, match="expected a list"):
        fast_client(httpserver.url_for("/api/v3")).fetch_markets(["bitcoin"])


# --------------------------------------------------------------------------------------------
# End to end: local HTTP server -> run_coingecko -> embedded Kafka
# --------------------------------------------------------------------------------------------


def read_topic(kafka, topic: str) -> list:
    """All messages of `topic` (4 partitions), from offset 0 on every partition up to the high
    watermarks (helpers.read_topic)."""
    from confluent_kafka import Consumer

    probe = Consumer(kafka.consumer_config(**{"group.id": f"{kafka.consumer_group}.probe"}))
    try:
        assert len(probe.list_topics(topic=topic, timeout=10).topics[topic].partitions) == 4
    finally:
        probe.close()
    return helpers.read_topic(kafka, topic)


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
    msgs = read_topic(kafka, kafka.raw_topic)
    assert len(msgs) == 3  # the second poll, same last_updated, added nothing
    by_coin = {}
    for m in msgs:
        tick = json.loads(m.value())
        assert_contract(tick)
        assert m.key().decode() == tick["coin_id"]
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
    ticks = [json.loads(m.value()) for m in read_topic(kafka, kafka.raw_topic)]
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
    ticks = [json.loads(m.value()) for m in read_topic(kafka, kafka.raw_topic)]
    assert sorted(t["coin_id"] for t in ticks) == ["avalanche", "bitcoin", "ethereum"]
