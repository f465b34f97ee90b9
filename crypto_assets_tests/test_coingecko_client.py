"""The CoinGecko HTTP client against a local pytest-httpserver: request shape, API-key headers,
Retry-After, backoff with jitter, timeouts and errors. Injected `sleep`/`random` keep the retry
tests instant.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from werkzeug import Request, Response

from crypto_assets.kafka.tick_contract import coins_for
from crypto_assets.producers.coingecko_client import (
    DEMO_KEY_HEADER,
    PRO_KEY_HEADER,
    CoinGeckoRequestError,
    CoinGeckoUnavailable,
)
from crypto_assets_tests.coingecko_helpers import (
    COIN_IDS,
    MARKETS,
    fast_client,
    ok,
    realistic_payload,
    scripted,
)

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
