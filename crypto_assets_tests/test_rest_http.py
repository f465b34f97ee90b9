"""The exchange REST client against a local HTTP server: Binance weight headers, 429/418 with
Retry-After, 5xx back-off, 4xx errors and the Coinbase request spacing."""

from __future__ import annotations

import json

import pytest
from werkzeug import Request, Response

from crypto_assets.producers.exchanges.rest_http import (
    BINANCE_WEIGHT_HEADER,
    ExchangeRestClient,
    RestRateLimited,
    RestRequestError,
    RestUnavailable,
)
from crypto_assets_tests.exchange_rest_server import FakeTime


def serve(httpserver, path: str, *responses: Response) -> dict:
    calls = {"n": 0, "args": []}

    def handler(request: Request) -> Response:
        i = min(calls["n"], len(responses) - 1)
        calls["n"] += 1
        calls["args"].append(dict(request.args))
        return responses[i]

    httpserver.expect_request(path).respond_with_handler(handler)
    return calls


def body(obj: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(obj), status=status, content_type="application/json", headers=headers or {})


def client(httpserver, t: FakeTime, kind: str = "binance", **kw) -> ExchangeRestClient:
    make = ExchangeRestClient.binance if kind == "binance" else ExchangeRestClient.coinbase
    return make(httpserver.url_for(""), sleep=t.sleep, clock=t.clock, random=lambda: 1.0, **kw)


def test_json_and_params(httpserver) -> None:
    calls = serve(httpserver, "/api/v3/klines", body([[1, "2"]], headers={BINANCE_WEIGHT_HEADER: "2"}))
    t = FakeTime()
    c = client(httpserver, t)
    assert c.get_json("/api/v3/klines", {"symbol": "BTCUSDT", "limit": 1000}, weight=2) == [[1, "2"]]
    assert calls["args"] == [{"symbol": "BTCUSDT", "limit": "1000"}]
    assert c.stats.last_used_weight == 2 and c.stats.requests == 1 and t.sleeps == []


def test_binance_waits_for_the_next_minute_when_the_weight_is_nearly_used(httpserver) -> None:
    serve(httpserver, "/w", body([], headers={BINANCE_WEIGHT_HEADER: "4790"}))
    t = FakeTime(start=60 * 1000 + 20.0)  # 20 s into a minute
    c = client(httpserver, t)
    c.get_json("/w", weight=5)
    assert t.sleeps == []  # no header seen yet
    c.get_json("/w", weight=25)  # 4790 + 25 > 4800: wait out the minute
    assert c.stats.weight_waits == 1
    assert t.sleeps == [pytest.approx(40.05)]


@pytest.mark.parametrize("status", [429, 418])
def test_retry_after_is_honoured(httpserver, status: int) -> None:
    calls = serve(httpserver, "/t", body({"code": -1003}, status, {"Retry-After": "7"}), body(["ok"]))
    t = FakeTime()
    c = client(httpserver, t)
    assert c.get_json("/t") == ["ok"]
    assert calls["n"] == 2 and t.sleeps == [7.0] and c.stats.rate_limited == 1


def test_a_long_ban_raises_instead_of_blocking(httpserver) -> None:
    serve(httpserver, "/t", body({"code": -1003}, 418, {"Retry-After": "3600"}))
    with pytest.raises(RestRateLimited, match="IP banned .*3600s"):
        client(httpserver, FakeTime()).get_json("/t")


def test_5xx_backs_off_then_gives_up_with_a_clear_error(httpserver) -> None:
    calls = serve(httpserver, "/t", body({"message": "busy"}, 503))
    t = FakeTime()
    with pytest.raises(RestUnavailable, match="HTTP 503 after 3 attempts"):
        client(httpserver, t, max_attempts=3, base_delay_s=0.5).get_json("/t")
    assert calls["n"] == 3 and t.sleeps == [0.5, 1.0]


def test_4xx_is_not_retried(httpserver) -> None:
    calls = serve(httpserver, "/t", body({"message": "NotFound"}, 404))
    with pytest.raises(RestRequestError, match="HTTP 404"):
        client(httpserver, FakeTime(), kind="coinbase").get_json("/t")
    assert calls["n"] == 1


def test_coinbase_requests_are_spaced(httpserver) -> None:
    serve(httpserver, "/t", body([]))
    t = FakeTime()
    c = client(httpserver, t, kind="coinbase")
    c.get_json("/t")
    c.get_json("/t")
    assert t.sleeps == [pytest.approx(0.12)]


def test_a_refused_connection_is_unavailable() -> None:
    t = FakeTime()
    c = ExchangeRestClient("http://127.0.0.1:9", sleep=t.sleep, clock=t.clock, max_attempts=2, timeout_s=1)
    with pytest.raises(RestUnavailable, match="connection error"):
        c.get_json("/t")


def test_a_429_on_the_last_attempt_says_rate_limited(httpserver) -> None:
    calls = serve(httpserver, "/t", body({"code": -1003}, 429, {"Retry-After": "3"}))
    t = FakeTime()
    with pytest.raises(RestRateLimited, match=r"rate limited \(429\), asked to wait 3s"):
        client(httpserver, t, max_attempts=2).get_json("/t")
    assert calls["n"] == 2 and t.sleeps == [3.0]
